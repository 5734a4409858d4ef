//! `ffebm grad` end to end: a TOML model, a batch file, reference key names in and out,
//! errors naming the key, and agreement with the library.

use crate::common;
use common::*;
use ffebm::core::tensor::nhwc_to_nchw;
use ffebm::grad::{compute_gradients, AlgoConfig, Algorithm};
use ffebm::io::tensors::{read_tensor_file, write_tensor_file, Stored};
use ffebm::io::weights::{model_tensors, KeyStyle};
use ffebm::model::{prepare, Model};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const MODEL: &str = TINY_MODEL_TOML;
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ffebm-cli-grad-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ffebm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ffebm"))
        .args(args)
        .output()
        .unwrap()
}

fn p(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn grad_writes_reference_names_and_matches_the_library() {
    let d = dir("ok");
    let model_path = d.join("model.toml");
    std::fs::write(&model_path, MODEL).unwrap();
    let model = Model::new(ffebm::model::ModelConfig::from_toml(MODEL).unwrap(), 5).unwrap();
    // a "reference" weights file with both names of the feedforward conv
    let wpath = d.join("weights.safetensors");
    write_tensor_file(
        &wpath,
        &model_tensors(
            &model,
            &KeyStyle {
                synapse0: true,
                feedforward0: true,
            },
        ),
        HashMap::new(),
    )
    .unwrap();
    let (x, y) = batch(&model, 3, 2);
    let bpath = d.join("batch.safetensors");
    write_batch(&bpath, &x, &y);
    let out = d.join("grads.safetensors");
    let o = ffebm(&[
        "grad",
        "--model",
        p(&model_path),
        "--weights",
        p(&wpath),
        "--input",
        p(&bpath),
        "--algo",
        "ep",
        "--beta",
        "0.05",
        "--t1",
        "40",
        "--t2",
        "20",
        "--out",
        p(&out),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("blocks.0.synapses.1.weight") && stdout.contains("loss "),
        "{stdout}"
    );
    let f = read_tensor_file(&out).unwrap();
    let cfg = AlgoConfig::ep(40, 20, 0.05);
    let want = compute_gradients(
        &model,
        &prepare(&model).unwrap(),
        &x,
        &y,
        &cfg.with(Algorithm::Ep),
    )
    .unwrap();
    for (id, g) in &want.grads.entries {
        assert_eq!(
            f.f32(&model.param_name(*id), &out).unwrap(),
            g,
            "{}",
            model.param_name(*id)
        );
    }
    // the alias of the feedforward conv is written too, and nothing else but loss/logits/state
    assert_eq!(
        f.f32("blocks.0.feedforward.0.weight", &out).unwrap(),
        want.grads.get(ffebm::model::ParamId::Synapse {
            block: 0,
            index: 0,
            bias: false
        })
    );
    assert_eq!(f.f32("logits", &out).unwrap().shape(), &[3, 5]);
    assert!((f.f32("loss", &out).unwrap().data()[0] - want.loss).abs() < 1e-7);
    assert!(f
        .tensors
        .contains_key("state_after.blocks.0.feedforward.2.running_mean"));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn grad_errors_name_the_problem() {
    let d = dir("err");
    let model_path = d.join("model.toml");
    std::fs::write(&model_path, MODEL).unwrap();
    let model = Model::new(ffebm::model::ModelConfig::from_toml(MODEL).unwrap(), 5).unwrap();
    let wpath = d.join("weights.safetensors");
    let mut t = model_tensors(&model, &KeyStyle::default());
    t.retain(|(n, _)| n != "blocks.1.synapses.1.bias");
    write_tensor_file(&wpath, &t, HashMap::new()).unwrap();
    let (x, _) = batch(&model, 2, 2);
    let bpath = d.join("batch.safetensors");
    let bad_y = vec![
        ("x".to_string(), Stored::F32(nhwc_to_nchw(&x).unwrap())),
        (
            "y".to_string(),
            Stored::I64 {
                shape: vec![2],
                data: vec![1, 9],
            },
        ),
    ];
    write_tensor_file(&bpath, &bad_y, HashMap::new()).unwrap();
    let out = d.join("g.safetensors");
    let base = [
        "grad",
        "--model",
        p(&model_path),
        "--input",
        p(&bpath),
        "--beta",
        "0.1",
        "--t1",
        "5",
        "--t2",
        "5",
        "--out",
        p(&out),
    ];
    let o = ffebm(&[&base[..], &["--weights", p(&wpath)]].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("missing key `blocks.1.synapses.1.bias`"),
        "{err}"
    );
    let o = ffebm(&base);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("label 9 of sample 1 is outside 0..5"),
        "{err}"
    );
    assert!(!out.exists(), "no output on failure");
    let o = ffebm(&[
        "grad",
        "--preset",
        "splitting_smal_2block",
        "--input",
        p(&bpath),
        "--out",
        p(&out),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("did you mean `splitting_small_2block`"));
    let o = ffebm(&[
        "grad",
        "--preset",
        "splitting_small_2block",
        "--input",
        p(&bpath),
        "--out",
        p(&out),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("the model expects [B, 32, 32, 3]"), "{err}");
    std::fs::remove_dir_all(&d).unwrap();
}
