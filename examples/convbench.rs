//! Timing of the conv kernels on the shapes of the paper's models (not a test).
//!
//! `cargo run --release --example convbench [-- [--batch B]... [--shape NAME]... [--ms T]
//! [--direct] [--cpu] [--fwd-only]]`
//!
//! For each shape (3x3 kernels, padding 1) and batch size, prints the best time of
//! the forward conv, the transposed conv, the pooled forward (`conv2d_pool`), the
//! unpooled transposed (`conv2d_transposed_unpool`) and the weight gradient, each with
//! its "effective" GFLOP/s = 2·MACs of the direct convolution (SPEC §7:
//! `C_in·C_out·9·H·W·B` MACs) / seconds; and the cost of repacking the weights after an
//! update (`PackedConv::repack` of the layouts in use, measured with a forward and a
//! transposed conv after it, minus their usual time).

use ffebm::core::conv::{
    conv2d, conv2d_pool, conv2d_transposed, conv2d_transposed_unpool, conv2d_weight_grad,
};
use ffebm::core::testutil::random_tensor;
use ffebm::core::{ConvAlgo, PackedConv, PoolIndex, Tensor};
use std::time::{Duration, Instant};

const SHAPES: [(&str, usize, usize, usize); 6] = [
    ("3->128@32", 3, 128, 32),
    ("128->128@16", 128, 128, 16),
    ("128->256@16", 128, 256, 16),
    ("256->256@8", 256, 256, 8),
    ("512->512@4", 512, 512, 4),
    ("512->512@2", 512, 512, 2),
];

/// Nanoseconds this process has run on a CPU, summed over its threads (Linux
/// `/proc/self/task/*/schedstat`; 0 elsewhere).
fn cpu_ns() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Seconds per call of `f` over runs filling about `budget` (at least 3 runs): the
/// fastest wall-clock run (the least disturbed by other processes on a shared machine),
/// or with `cpu` the smallest CPU time of a run divided by the thread count (what the
/// wall time would be on an idle machine with perfect parallel efficiency).
fn time(budget: Duration, cpu: bool, mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::INFINITY;
    let mut runs = 0;
    let start = Instant::now();
    while runs < 3 || (start.elapsed() < budget && runs < 1000) {
        let (t, c) = (Instant::now(), if cpu { cpu_ns() } else { 0 });
        f();
        let s = if cpu {
            (cpu_ns() - c) as f64 * 1e-9 / rayon::current_num_threads() as f64
        } else {
            t.elapsed().as_secs_f64()
        };
        best = best.min(s);
        runs += 1;
    }
    best
}

fn main() {
    let mut batches = Vec::new();
    let mut only = Vec::new();
    let mut budget = Duration::from_millis(400);
    let mut algo = ConvAlgo::Auto;
    let mut cpu = false;
    let mut fwd_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--batch" => batches.push(args.next().and_then(|v| v.parse().ok()).expect("--batch N")),
            "--shape" => only.push(args.next().expect("--shape NAME")),
            "--ms" => {
                budget =
                    Duration::from_millis(args.next().and_then(|v| v.parse().ok()).expect("--ms T"))
            }
            "--direct" => algo = ConvAlgo::Direct,
            "--cpu" => cpu = true,
            "--fwd-only" => fwd_only = true,
            _ => {
                panic!("unknown argument {a}; use --batch B, --shape NAME, --ms T, --direct, --cpu")
            }
        }
    }
    if batches.is_empty() {
        batches = vec![16, 64];
    }
    let clock = if cpu {
        "CPU time / threads"
    } else {
        "best wall time"
    };
    println!(
        "threads: {}  algo: {algo:?}  timing: {clock}",
        rayon::current_num_threads()
    );
    println!(
        "{:<12} {:>3} | {:>16} | {:>16} | {:>16} | {:>16} | {:>16} | {:>8}",
        "shape",
        "B",
        "fwd ms GF/s",
        "transp ms GF/s",
        "pool-fwd ms GF/s",
        "tr-unpool ms GF/s",
        "wgrad ms GF/s",
        "repack ms"
    );
    for &b in &batches {
        for &(name, cin, cout, hw) in &SHAPES {
            if !only.is_empty() && !only.iter().any(|o| o == name) {
                continue;
            }
            let x = random_tensor(&[b, hw, hw, cin], 1);
            let w = random_tensor(&[cout, cin, 3, 3], 2);
            let w =
                Tensor::from_vec(w.shape(), w.data().iter().map(|v| v * 0.05).collect()).unwrap();
            let bias = random_tensor(&[cout], 3);
            let dy = random_tensor(&[b, hw, hw, cout], 4);
            let packed = PackedConv::new(&w, 1, algo).unwrap();
            let flop = 2.0 * (b * hw * hw * cin * cout * 9) as f64;
            let mut y = Tensor::zeros(&[0]);
            let mut dx = Tensor::zeros(&[0]);
            let mut pooled = Tensor::zeros(&[0]);
            let mut idx = PoolIndex::default();
            let mut dw = Tensor::zeros(&[0]);
            let t_fwd = time(budget, cpu, || {
                conv2d(&x, &packed, Some(bias.data()), &mut y).unwrap()
            });
            if fwd_only {
                let gf = flop / t_fwd / 1e9;
                println!("{name:<12} {b:>3} | {:>7.3} {gf:>8.1}", t_fwd * 1e3);
                continue;
            }
            let t_tr = time(budget, cpu, || {
                conv2d_transposed(&dy, &packed, &mut dx).unwrap()
            });
            // repacking after a weight update (PackedConv::repack, then the first forward
            // and transposed convs, which rebuild nothing but read fresh weights)
            let mut repacked = packed.clone();
            let t_repack = time(budget, cpu, || {
                repacked.repack(&w).unwrap();
                conv2d(&x, &repacked, Some(bias.data()), &mut y).unwrap();
                conv2d_transposed(&dy, &repacked, &mut dx).unwrap();
            }) - t_fwd
                - t_tr;
            let t_pool = time(budget, cpu, || {
                conv2d_pool(&x, &packed, Some(bias.data()), &mut pooled, &mut idx).unwrap()
            });
            let s = random_tensor(pooled.shape(), 5);
            let t_unpool = time(budget, cpu, || {
                conv2d_transposed_unpool(&s, &idx, &packed, &mut dx).unwrap()
            });
            let t_wg = time(budget, cpu, || {
                conv2d_weight_grad(&x, &dy, packed.geom(), 1.0, false, &mut dw).unwrap()
            });
            let cell = |t: f64| format!("{:>7.3} {:>8.1}", t * 1e3, flop / t / 1e9);
            println!(
                "{:<12} {:>3} | {} | {} | {} | {} | {} | {:>8.3}",
                name,
                b,
                cell(t_fwd),
                cell(t_tr),
                cell(t_pool),
                cell(t_unpool),
                cell(t_wg),
                t_repack.max(0.0) * 1e3
            );
        }
    }
}
