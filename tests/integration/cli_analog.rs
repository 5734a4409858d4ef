//! `ffebm robustness` and `ffebm grad --analog` end to end on a tiny model.

use crate::common::*;
use crate::common::{ffebm, path_str as p};
use ffebm::analysis::robustness::RobustnessReport;
use ffebm::model::Model;

/// The tiny model (seed 0), its description and a 2-sample batch written into `d`.
fn tiny_model_and_batch(d: &std::path::Path) -> (Model, std::path::PathBuf, std::path::PathBuf) {
    let model_path = d.join("model.toml");
    std::fs::write(&model_path, TINY_MODEL_TOML).unwrap();
    let model = Model::new(
        ffebm::model::ModelConfig::from_toml(TINY_MODEL_TOML).unwrap(),
        0,
    )
    .unwrap();
    let (x, y) = batch(&model, 2, 4);
    let bpath = d.join("batch.safetensors");
    write_batch(&bpath, &x, &y);
    (model, model_path, bpath)
}

#[test]
fn robustness_writes_tables_and_figures_and_zero_strength_is_the_twin() {
    let d = temp_dir("cli-analog", "robust");
    let (model, model_path, bpath) = tiny_model_and_batch(&d);
    let out = d.join("out");
    let o = ffebm(&[
        "robustness",
        "--model",
        p(&model_path),
        "--input",
        p(&bpath),
        "--beta",
        "0.02",
        "--t1",
        "30",
        "--t2",
        "30",
        "--sweep",
        "weight_std",
        "--values",
        "0,0.3",
        "--out",
        p(&out),
        "-q",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep: RobustnessReport =
        serde_json::from_str(&std::fs::read_to_string(out.join("robustness.json")).unwrap())
            .unwrap();
    let csv = std::fs::read_to_string(out.join("robustness.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + rep.rows.len());
    assert_eq!(rep.rows.len(), 2 * model.param_ids().len());
    for r in &rep.rows {
        if r.value == 0.0 {
            // no variability: the physical circuit is the nominal twin
            assert_eq!(r.cos_physical, r.cos_twin, "{}", r.tensor);
        }
    }
    // σ_w = 0.3: EP still agrees with ID on its own circuit better than with the twin
    let w = |f: fn(&ffebm::analysis::robustness::RobustnessRow) -> f64| {
        rep.rows
            .iter()
            .filter(|r| {
                r.value == 0.3
                    && r.tensor.ends_with("weight")
                    && !r.tensor.contains("synapses.0")
                    && !r.tensor.contains("feedforward")
            })
            .map(f)
            .fold(f64::INFINITY, f64::min)
    };
    assert!(w(|r| r.cos_physical) > w(|r| r.cos_twin), "{rep:?}");
    for f in ["robustness_physical.png", "robustness_twin.png"] {
        let bytes = std::fs::read(out.join(f)).unwrap();
        assert_eq!(&bytes[..4], b"\x89PNG", "{f}");
    }
    // a bad sweep names the key before any work
    let o = ffebm(&[
        "robustness",
        "--model",
        p(&model_path),
        "--input",
        p(&bpath),
        "--t1",
        "5",
        "--t2",
        "5",
        "--beta",
        "0.1",
        "--sweep",
        "adc_bits",
        "--values",
        "8,0",
        "--out",
        p(&out),
        "-q",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("analog.adc_bits"));
}

#[test]
fn grad_on_a_physical_circuit_differs_and_bad_settings_name_the_key() {
    let d = temp_dir("cli-analog", "grad");
    let (_model, model_path, bpath) = tiny_model_and_batch(&d);
    let run = |extra: &[&str], out: &str| {
        let o = d.join(out);
        let mut args = vec![
            "grad",
            "--model",
            p(&model_path),
            "--input",
            p(&bpath),
            "--beta",
            "0.1",
            "--t1",
            "10",
            "--t2",
            "5",
            "--out",
            p(&o),
            "-q",
        ];
        args.extend_from_slice(extra);
        (ffebm(&args), o)
    };
    let (a, ideal) = run(&[], "ideal.safetensors");
    let (b, zero) = run(&["--analog", "weight_std=0"], "zero.safetensors");
    let (c, varied) = run(
        &[
            "--analog",
            "preset=aihwkit-pcm",
            "--analog",
            "update_noise=0.01",
        ],
        "varied.safetensors",
    );
    for o in [&a, &b, &c] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let read = |p: &std::path::Path| ffebm::io::tensors::read_tensor_file(p).unwrap().tensors;
    assert_eq!(
        read(&ideal),
        read(&zero),
        "an ideal analog setting changed the gradients"
    );
    assert_ne!(read(&ideal), read(&varied));
    let (e, _) = run(&["--analog", "device=memristor"], "bad.safetensors");
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("analog.device"));
}

/// The default batch of an analysis follows the preset's data pipeline: `drn_xs` takes raw
/// 28x28 MNIST pixels (it used to get them padded to 32x32 and normalised, and failed).
#[test]
fn robustness_on_a_drn_preset_takes_its_default_batch_as_the_preset_feeds_it() {
    let Some(root) = shared_data() else { return };
    let d = temp_dir("cli-analog", "drn-default-batch");
    let out = d.join("out");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ffebm"))
        .args(["robustness", "--preset", "drn_xs", "--sweep", "weight_std"])
        .args(["--values", "0.1", "-q", "--out", p(&out)])
        .env("FFEBM_DATA", root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep: RobustnessReport =
        serde_json::from_str(&std::fs::read_to_string(out.join("robustness.json")).unwrap())
            .unwrap();
    assert!(!rep.rows.is_empty() && rep.rows.iter().all(|r| r.cos_physical.is_finite()));
}

/// `--sweep digital.weight_bits`: the quantized feedforward blocks' widths are a swept
/// non-ideality too (EP and ID-exact on the quantized chain, against the float twin); an
/// impossible width is refused naming the key before any work.
#[test]
fn robustness_sweeps_the_digital_widths() {
    let d = temp_dir("cli-analog", "digital-sweep");
    let (model, model_path, bpath) = tiny_model_and_batch(&d);
    let out = d.join("out");
    let run = |values: &str| {
        ffebm(&[
            "robustness",
            "--model",
            p(&model_path),
            "--input",
            p(&bpath),
            "--t1",
            "20",
            "--t2",
            "20",
            "--beta",
            "0.05",
            "--sweep",
            "digital.weight_bits",
            "--values",
            values,
            "--digital",
            "activation_bits=16",
            "--out",
            p(&out),
            "-q",
        ])
    };
    let o = run("24,2");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep: RobustnessReport =
        serde_json::from_str(&std::fs::read_to_string(out.join("robustness.json")).unwrap())
            .unwrap();
    assert_eq!(rep.rows.len(), 2 * model.param_ids().len());
    assert_eq!(rep.config.digital, vec!["activation_bits=16".to_string()]);
    // 24 bits is float to round-off: EP agrees with the float twin as with its own chain
    let at = |v: f64| rep.rows.iter().filter(move |r| r.value == v);
    for r in at(24.0) {
        assert!((r.cos_twin - r.cos_physical).abs() < 1e-3, "{r:?}");
    }
    // 2-bit feedforward weights move the gradient away from the float twin's
    let ff_twin = |v: f64| {
        at(v)
            .filter(|r| r.tensor.contains("feedforward") || r.tensor.contains("synapses.0"))
            .map(|r| r.cos_twin)
            .fold(f64::INFINITY, f64::min)
    };
    assert!(ff_twin(2.0) < ff_twin(24.0) - 1e-3, "{rep:?}");
    let o = run("8,1");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("digital.weight_bits"), "{err}");
}
