//! Shared helpers for the integration tests: tiny models, inputs and comparisons.
#![allow(dead_code)]

use ffebm::core::{testutil::random_tensor, Tensor};
use ffebm::model::{BlockConfig, Grads, Model, ModelConfig, Norm};

pub fn block(
    channels: &[usize],
    pools: &str,
    fc: &[usize],
    norm: Norm,
    clamp_last: bool,
) -> BlockConfig {
    BlockConfig::new(channels, pools, fc, norm, clamp_last)
}

/// The same two-block model as a TOML description (for the command-line tests).
pub const TINY_MODEL_TOML: &str = "input = [3, 8, 8]\nclasses = 5\nalpha = 0.5\ninit_v = 0.5\n\n[[blocks]]\nchannels = [3, 4, 6]\npools = \"mm\"\nclamp_last = true\n\n[[blocks]]\nchannels = [6, 5]\npools = \"-\"\nfc = [7]\n";

/// Writes a batch file (`x` NCHW float32, `y` int64) for the command line.
pub fn write_batch(path: &std::path::Path, x: &Tensor, y: &[u32]) {
    use ffebm::io::tensors::{write_tensor_file, Stored};
    let items = vec![
        (
            "x".to_string(),
            Stored::F32(ffebm::core::tensor::nhwc_to_nchw(x).unwrap()),
        ),
        (
            "y".to_string(),
            Stored::I64 {
                shape: vec![y.len()],
                data: y.iter().map(|&v| v as i64).collect(),
            },
        ),
    ];
    write_tensor_file(path, &items, Default::default()).unwrap();
}

/// Two blocks, 8x8 input, BN and pooling in block 1, a dense layer in block 2.
pub fn two_block_config(alpha: f32, v: f32) -> ModelConfig {
    ModelConfig {
        input: [3, 8, 8],
        classes: 5,
        alpha,
        init_v: v,
        blocks: vec![
            block(&[3, 4, 6], "mm", &[], Norm::Batchnorm, true),
            block(&[6, 5], "-", &[7], Norm::Batchnorm, false),
        ],
        conv_algo: Default::default(),
        cost: Default::default(),
    }
}

/// A batch (channels-last) and labels.
pub fn batch(model: &Model, b: usize, seed: u64) -> (Tensor, Vec<u32>) {
    let [c, h, w] = model.config.input;
    let x = random_tensor(&[b, h, w, c], seed);
    let y = (0..b)
        .map(|i| ((i as u64 * 7 + seed) % model.config.classes as u64) as u32)
        .collect();
    (x, y)
}

pub fn cosine(a: &Tensor, b: &Tensor) -> f64 {
    let dot: f64 = a
        .data()
        .iter()
        .zip(b.data())
        .map(|(x, y)| *x as f64 * *y as f64)
        .sum();
    let na: f64 = a
        .data()
        .iter()
        .map(|x| (*x as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let nb: f64 = b
        .data()
        .iter()
        .map(|x| (*x as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    dot / (na * nb).max(1e-30)
}

/// ‖a − b‖ / ‖b‖.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let d: f64 = a
        .data()
        .iter()
        .zip(b.data())
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let nb: f64 = b
        .data()
        .iter()
        .map(|x| (*x as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    d / nb.max(1e-30)
}

/// Relative error over all tensors at once.
pub fn total_rel_err(a: &Grads, b: &Grads) -> f64 {
    let (mut d, mut n) = (0.0, 0.0);
    for ((_, x), (_, y)) in a.entries.iter().zip(&b.entries) {
        for (p, q) in x.data().iter().zip(y.data()) {
            d += (*p as f64 - *q as f64).powi(2);
            n += (*q as f64).powi(2);
        }
    }
    (d / n).sqrt()
}

/// The real-data root `$FFEBM_DATA`, or `None` after printing the skip notice.
pub fn shared_data() -> Option<std::path::PathBuf> {
    match std::env::var_os("FFEBM_DATA") {
        Some(d) if !d.is_empty() => Some(std::path::PathBuf::from(d)),
        _ => {
            eprintln!("skipping: FFEBM_DATA not set");
            None
        }
    }
}

/// A fresh folder `ffebm-{tag}-{name}-{pid}` in the system's temporary folder.
pub fn temp_dir(tag: &str, name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ffebm-{tag}-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the `ffebm` binary with `args`.
pub fn ffebm(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ffebm"))
        .args(args)
        .output()
        .unwrap()
}

/// A path as a command-line argument.
pub fn path_str(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// `mnist_mlp` on a small MNIST subset (320 train / 200 test images, batch 32, T1 6, T2 4,
/// 2 epochs, seed 7) with the `--set` strings `extra` on top.
pub fn small_mnist_config(extra: &[&str]) -> ffebm::train::RunConfig {
    let sets: Vec<String> = [
        "data.train_limit=320",
        "data.test_limit=200",
        "data.batch_size=32",
        "algorithm.t1=6",
        "algorithm.t2=4",
        "train.epochs=2",
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    ffebm::train::RunConfig::resolve(Some("mnist_mlp"), None, None, &sets, Some(7)).unwrap()
}

/// Trains `cfg` quietly into `dir` (resuming the run there, or stopping after `stop` steps).
pub fn train_quietly(
    cfg: ffebm::train::RunConfig,
    dir: &std::path::Path,
    resume: bool,
    stop: Option<u64>,
) -> ffebm::train::RunSummary {
    ffebm::train::train(
        cfg,
        ffebm::train::TrainOptions {
            run_dir: dir.to_path_buf(),
            resume,
            quiet: true,
            stop_after_steps: stop,
            ..Default::default()
        },
    )
    .unwrap()
}
