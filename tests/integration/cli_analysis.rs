//! `ffebm gdd` and `ffebm plot` end to end: tables, figures and sweeps are written.

use crate::common;
use common::*;
use ffebm::io::tensors::write_tensor_file;
use ffebm::io::weights::{model_tensors, KeyStyle};
use ffebm::model::{Model, ModelConfig};
use std::collections::HashMap;
use std::process::Command;

const MODEL: &str = TINY_MODEL_TOML;
fn png_size(path: &std::path::Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(
        &b[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    (
        u32::from_be_bytes(b[16..20].try_into().unwrap()),
        u32::from_be_bytes(b[20..24].try_into().unwrap()),
    )
}

#[test]
fn gdd_writes_tables_figures_and_sweeps_and_plot_draws_runs() {
    let d = std::env::temp_dir().join(format!("ffebm-cli-gdd-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("m.toml"), MODEL).unwrap();
    let model = Model::new(ModelConfig::from_toml(MODEL).unwrap(), 0).unwrap();
    let (x, y) = batch(&model, 2, 1);
    write_batch(&d.join("b.safetensors"), &x, &y);
    let out = d.join("gdd");
    let o = Command::new(env!("CARGO_BIN_EXE_ffebm"))
        .args([
            "gdd",
            "--model",
            d.join("m.toml").to_str().unwrap(),
            "--input",
            d.join("b.safetensors").to_str().unwrap(),
        ])
        .args([
            "--t1",
            "20",
            "--t2",
            "8",
            "--beta",
            "0.05",
            "--betas",
            "0.1,0.01",
            "--t2s",
            "2,8",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // progress of the transients as plain lines (stderr is not a terminal), ending at total
    let stderr = String::from_utf8_lossy(&o.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("transients: "))
        .unwrap_or_else(|| panic!("no progress lines in\n{stderr}"));
    let (done, total) = last["transients: ".len()..]
        .split_once(' ')
        .unwrap()
        .0
        .split_once('/')
        .unwrap();
    assert_eq!(done, total, "{last}");
    assert_eq!(total, (model.blocks.len() * 9).to_string(), "{last}");
    let rep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("gdd.json")).unwrap()).unwrap();
    assert_eq!(
        rep["tensors"].as_array().unwrap().len(),
        model.param_ids().len()
    );
    assert_eq!(rep["tensors"][1]["ep"].as_array().unwrap().len(), 9);
    let csv = std::fs::read_to_string(out.join("gdd.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + model.param_ids().len());
    assert_eq!(
        std::fs::read_to_string(out.join("beta_sweep.csv"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    assert_eq!(
        std::fs::read_to_string(out.join("t2_sweep.csv"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    for f in ["cosine", "transients", "beta_sweep", "t2_sweep"] {
        let (w, h) = png_size(&out.join(format!("{f}.png")));
        assert!(w >= 300 && h >= 200, "{f}: {w}x{h}");
        assert!(std::fs::read_to_string(out.join(format!("{f}.svg")))
            .unwrap()
            .contains("<svg"));
    }
    // --checkpoint W (weights of the seed-3 model) under --seed 0 analyses the same model
    // as --seed 3 without weights: identical reports
    let seeded = Model::new(ModelConfig::from_toml(MODEL).unwrap(), 3).unwrap();
    let wpath = d.join("w3.safetensors");
    write_tensor_file(
        &wpath,
        &model_tensors(
            &seeded,
            &KeyStyle {
                synapse0: true,
                feedforward0: true,
            },
        ),
        HashMap::new(),
    )
    .unwrap();
    let report = |extra: &[&str], dir: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_ffebm"))
            .args(["gdd", "--model", d.join("m.toml").to_str().unwrap()])
            .args(["--input", d.join("b.safetensors").to_str().unwrap()])
            .args([
                "--t1",
                "10",
                "--t2",
                "4",
                "--beta",
                "0.05",
                "--no-transients",
                "-q",
            ])
            .args(["--out", d.join(dir).to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(d.join(dir).join("gdd.csv")).unwrap()
    };
    let from_checkpoint = report(
        &["--seed", "0", "--checkpoint", wpath.to_str().unwrap()],
        "c",
    );
    assert_eq!(from_checkpoint, report(&["--seed", "3"], "s3"));
    assert_ne!(from_checkpoint, report(&["--seed", "0"], "s0"));
    // plot: a fake run directory with two epochs
    let run = d.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let rec = |e: u32| {
        format!("{{\"kind\":\"epoch\",\"epoch\":{e},\"step\":{},\"lr\":0.001,\"train_loss\":{},\"train_top1\":{},\"train_top5\":90.0,\"test_loss\":1.0,\"test_top1\":50.0,\"test_top5\":90.0,\"evals\":{{}},\"free_sweeps\":30.0,\"images_per_s\":1.0,\"epoch_time\":1.0,\"time\":1.0}}\n", e * 10, 2.0 / e as f64, 20.0 * e as f64)
    };
    std::fs::write(run.join("metrics.jsonl"), rec(1) + &rec(2)).unwrap();
    let png = d.join("curves.png");
    let o = Command::new(env!("CARGO_BIN_EXE_ffebm"))
        .args([
            "plot",
            run.to_str().unwrap(),
            "--out",
            png.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(png_size(&png).0 >= 400);
    std::fs::remove_dir_all(&d).unwrap();
}
