//! ffebm's DRN blocks against energy-based-learning's own code run in float64
//! (`tests/fixtures/drn_ebl`, made by `tools/reference/make_drn_fixtures.py`): `drn_xs` with
//! seeded conductances on 4 raw MNIST images, free phase from zero, centered EP (β 1) and
//! truncated BPTT (ebl's `Backprop`, ffebm's `id-exact`), both from the free state. Through
//! the command line (ebl's names in, ebl's names and shapes out) and the library. Plus the
//! errors: ebl names on a model they cannot describe, and negative conductances.
//!
//! The fixture keeps ebl's gradients of `DenseWeight_0` only on 64 of its 1568 rows (input
//! nodes: 24 lit and 8 dark pixels, both channels; all 100 hidden columns) and stores the
//! conductances in float16 (exact in float32 and float64), to stay under 0.5 MB; every other
//! tensor is whole. `make_drn_fixtures.py --compare` checks whole tensors (same errors).
//!
//! Tolerances (relative L2 error per tensor against ebl's float64 run, stored rounded to
//! float32, which adds ≤ 6e-8): ffebm runs in float32; each bound is about 5× the error
//! measured (on a 2-core x86-64, `--threads` 1 or 2): free states ≤ 7.3e-7, loss 0; EP
//! `Bias_1` 1.1e-5, `Bias_2` 1.1e-6, `DenseWeight_0` 1.2e-5, `DenseWeight_1` 2.7e-6; ID-exact
//! 2.2e-7, 2.1e-7, 2.4e-7, 8.1e-7. The bounds can fail: the fixture's output conductances are
//! large enough that one sweep more or less moves the float64 numbers by 1e-5 … 1e-2
//! (`summary.json`), which the library test checks against the bounds, and scaling one
//! output conductance by 1.01 breaks them (checked by hand: `Bias_2` 17× its bound); and
//! ebl's own float32 EP is 1.7e-3 off on `DenseWeight_0`, because it contrasts ½(V_i − v_j)²
//! at two states (cancellation), while ffebm contrasts differences and must stay ≥ 20×
//! closer.

use crate::common::rel_err;
use crate::common::{ffebm, path_str as p};
use ffebm::core::tensor::nchw_to_nhwc;
use ffebm::core::Tensor;
use ffebm::grad::{compute_gradients, AlgoConfig, Algorithm};
use ffebm::io::ebl::{ebl_params, load_ebl_tensors};
use ffebm::io::tensors::{read_tensor_file, write_tensor_file, Stored, TensorFile};
use ffebm::io::weights::{load_model_tensors, load_weights, model_tensors, KeyStyle, Naming};
use ffebm::model::presets::preset;
use ffebm::model::{prepare, Model, ModelConfig};
use ffebm::relax::Order;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// (tensor, bound on its relative L2 error against ebl's float64 run); measured in the header.
const EP_BOUNDS: [(&str, f64); 4] = [
    ("Bias_1", 6e-5),
    ("Bias_2", 6e-6),
    ("DenseWeight_0", 6e-5),
    ("DenseWeight_1", 1.5e-5),
];
const BP_BOUNDS: [(&str, f64); 4] = [
    ("Bias_1", 1.2e-6),
    ("Bias_2", 1.2e-6),
    ("DenseWeight_0", 1.2e-6),
    ("DenseWeight_1", 4e-6),
];
/// Free states and the loss.
const STATE_BOUND: f64 = 4e-6;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/drn_ebl")
        .join(name)
}

fn dir(name: &str) -> PathBuf {
    crate::common::temp_dir("drn-ref", name)
}

fn tensor<'a>(f: &'a TensorFile, key: &str) -> &'a Tensor {
    match f.tensors.get(key) {
        Some(Stored::F32(t)) => t,
        other => panic!("`{key}`: {other:?}"),
    }
}

/// `got` as `run` stores its reference `key`, and that reference: whole, except the gradients
/// of `DenseWeight_0` (`(2, 28, 28, 100)`), of which the fixture keeps the rows `rows` of their
/// `(1568, 100)` view under `<key>.rows`.
fn comparable(run: &TensorFile, key: &str, got: &Tensor) -> (Tensor, Tensor) {
    if let Some(Stored::F32(want)) = run.tensors.get(key) {
        return (got.clone(), want.clone());
    }
    let want = tensor(run, &format!("{key}.rows"));
    let Some(Stored::I64 { data: rows, .. }) = run.tensors.get("rows") else {
        panic!("the fixture has neither `{key}` nor `rows`")
    };
    let cols = *got.shape().last().unwrap();
    let picked: Vec<f32> = rows
        .iter()
        .flat_map(|&r| {
            got.data()[r as usize * cols..(r as usize + 1) * cols]
                .iter()
                .copied()
        })
        .collect();
    (
        Tensor::from_vec(&[rows.len(), cols], picked).unwrap(),
        want.clone(),
    )
}

/// `rel_err(got, want)` after checking the shapes agree.
fn check(what: &str, got: &Tensor, want: &Tensor, bound: f64) -> f64 {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let e = rel_err(got, want);
    eprintln!("{what:<40} rel. L2 error {e:.3e} (bound {bound:.1e})");
    assert!(e <= bound, "{what}: relative error {e:.3e} > {bound:.1e}");
    e
}

#[test]
fn cli_gradients_under_ebl_names_match_ebl_float64() {
    let d = dir("cli");
    let f64_run = read_tensor_file(&fixture("ebl_float64.safetensors")).unwrap();
    for (algo, prefix, bounds) in [("ep", "ep", EP_BOUNDS), ("id-exact", "bp", BP_BOUNDS)] {
        let out = d.join(format!("{algo}.safetensors"));
        let o = ffebm(&[
            "grad",
            "--preset",
            "drn_xs",
            "--weights",
            p(&fixture("weights.safetensors")),
            "--input",
            p(&fixture("batch.safetensors")),
            "--algo",
            algo,
            "--out",
            p(&out),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            !String::from_utf8_lossy(&o.stderr).contains("warning"),
            "a raw [0,1] batch for drn_xs gives no warning: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let g = read_tensor_file(&out).unwrap();
        let (power, mut keys): (Vec<&str>, Vec<&str>) = g
            .order
            .iter()
            .map(String::as_str)
            .partition(|k| k.starts_with("power."));
        keys.sort();
        // the file stores tensors sorted by name
        let expected_power: &[&str] = if algo == "ep" {
            &[
                "power.block0.free",
                "power.block0.minus",
                "power.block0.plus",
            ]
        } else {
            &["power.block0.free"]
        };
        assert_eq!(
            power, expected_power,
            "the resistor power readout of the DRN block"
        );
        assert_eq!(
            keys,
            [
                "Bias_1",
                "Bias_2",
                "DenseWeight_0",
                "DenseWeight_1",
                "logits",
                "loss"
            ],
            "gradients under the weights file's (ebl's) names only"
        );
        for (name, bound) in bounds {
            let (got, want) = comparable(&f64_run, &format!("{prefix}.{name}"), tensor(&g, name));
            check(&format!("cli {algo} {name}"), &got, &want, bound);
        }
        check(
            &format!("cli {algo} logits (free output layer)"),
            tensor(&g, "logits"),
            tensor(&f64_run, "free.Layer_2"),
            STATE_BOUND,
        );
        check(
            &format!("cli {algo} loss"),
            tensor(&g, "loss"),
            tensor(&f64_run, "loss"),
            STATE_BOUND,
        );
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn library_free_states_and_gradients_match_ebl_float64_and_beat_ebl_float32() {
    let p = preset("drn_xs", None).unwrap();
    let mut model = Model::new(p.model.clone(), 0).unwrap();
    let wpath = fixture("weights.safetensors");
    let naming = load_weights(&mut model, &read_tensor_file(&wpath).unwrap(), &wpath).unwrap();
    assert_eq!(naming, Naming::Ebl);
    // the batch is raw pixels, which ffebm's `grad` reads as they are (no normalisation, no
    // padding to 32x32)
    let batch = read_tensor_file(&fixture("batch.safetensors")).unwrap();
    let x = nchw_to_nhwc(tensor(&batch, "x")).unwrap();
    let Some(Stored::I64 { data, .. }) = batch.tensors.get("y") else {
        panic!("y")
    };
    let y: Vec<u32> = data.iter().map(|&v| v as u32).collect();
    assert_eq!(x.shape(), &[4, 28, 28, 1]);
    assert!(x.data().iter().all(|v| (0.0..=1.0).contains(v)));
    let f64_run = read_tensor_file(&fixture("ebl_float64.safetensors")).unwrap();
    let f32_run = read_tensor_file(&fixture("ebl_float32.safetensors")).unwrap();
    let kernels = prepare(&model).unwrap();
    for (algo, prefix, bounds) in [
        (Algorithm::Ep, "ep", EP_BOUNDS),
        (Algorithm::IdExact, "bp", BP_BOUNDS),
    ] {
        let out = compute_gradients(&model, &kernels, &x, &y, &p.algo.with(algo)).unwrap();
        assert_eq!(out.free.sweeps, [4]);
        for (l, name) in ["free.Layer_1", "free.Layer_2"].iter().enumerate() {
            check(
                &format!("library {algo} {name}"),
                &out.free.states[0].layers[l],
                tensor(&f64_run, name),
                STATE_BOUND,
            );
        }
        let grads = naming.grad_tensors(&model, &out.grads).unwrap();
        for (name, bound) in bounds {
            let got = match &grads.iter().find(|(n, _)| n == name).unwrap().1 {
                Stored::F32(t) => t,
                other => panic!("{other:?}"),
            };
            let (got, want) = comparable(&f64_run, &format!("{prefix}.{name}"), got);
            let e = check(&format!("library {algo} {name}"), &got, &want, bound);
            if algo == Algorithm::Ep && name == "DenseWeight_0" {
                let ebl32 = rel_err(tensor(&f32_run, "ep.DenseWeight_0.rows"), &want);
                eprintln!("ebl float32 EP DenseWeight_0 rel. L2 error {ebl32:.3e}");
                assert!(
                    20.0 * e < ebl32,
                    "ffebm's float32 EP ({e:.2e}) is not 20x closer to float64 than ebl's own float32 EP ({ebl32:.2e})"
                );
            }
        }
    }
    // the bounds see modelling slips: one nudged or unrolled sweep fewer or more, one free
    // sweep fewer (seen in the free states: ID-exact unrolls t2 sweeps from the free state and
    // forgets where it started), the nudged phases in the other order
    let ep = p.algo.with(Algorithm::Ep);
    let id = p.algo.with(Algorithm::IdExact);
    let cases = [
        (
            "EP with t2 = 3",
            "ep",
            EP_BOUNDS,
            AlgoConfig {
                t2: 3,
                ..ep.clone()
            },
        ),
        (
            "EP with t2 = 5",
            "ep",
            EP_BOUNDS,
            AlgoConfig {
                t2: 5,
                ..ep.clone()
            },
        ),
        (
            "ID with t2 = 3",
            "bp",
            BP_BOUNDS,
            AlgoConfig {
                t2: 3,
                ..id.clone()
            },
        ),
        (
            "ID with t2 = 5",
            "bp",
            BP_BOUNDS,
            AlgoConfig {
                t2: 5,
                ..id.clone()
            },
        ),
        (
            "ID with t1 = 3",
            "bp",
            BP_BOUNDS,
            AlgoConfig { t1: 3, ..id },
        ),
        (
            "EP with the nudged phases odd layers first",
            "ep",
            EP_BOUNDS,
            AlgoConfig {
                nudged_order: Order::OddFirst,
                ..ep
            },
        ),
    ];
    for (what, prefix, bounds, cfg) in cases {
        let out = compute_gradients(&model, &kernels, &x, &y, &cfg).unwrap();
        let grads = naming.grad_tensors(&model, &out.grads).unwrap();
        let states = ["free.Layer_1", "free.Layer_2"]
            .iter()
            .enumerate()
            .map(|(l, name)| {
                rel_err(&out.free.states[0].layers[l], tensor(&f64_run, name)) / STATE_BOUND
            });
        let worst = bounds
            .iter()
            .map(|(name, bound)| {
                let Stored::F32(got) = &grads.iter().find(|(n, _)| n == name).unwrap().1 else {
                    panic!()
                };
                let (got, want) = comparable(&f64_run, &format!("{prefix}.{name}"), got);
                rel_err(&got, &want) / bound
            })
            .chain(states)
            .fold(0.0f64, f64::max);
        eprintln!("{what}: worst error / bound = {worst:.1}");
        assert!(worst > 3.0, "{what}: within 3x the bounds ({worst:.2})");
    }
}

/// The fixture's weights under ebl's names, as an editable list.
fn ebl_weights() -> Vec<(String, Stored)> {
    let f = read_tensor_file(&fixture("weights.safetensors")).unwrap();
    f.order
        .iter()
        .map(|k| (k.clone(), f.tensors[k].clone()))
        .collect()
}

fn with_value(t: &Stored, flat: usize, v: f32) -> Stored {
    let Stored::F32(t) = t else { panic!() };
    let mut t = t.clone();
    t.data_mut()[flat] = v;
    Stored::F32(t)
}

#[test]
fn ebl_names_on_a_model_they_cannot_describe_are_refused() {
    let d = dir("wrong-model");
    let weights = p(&fixture("weights.safetensors")).to_string();
    let batch = d.join("b.safetensors");
    // a resistive block behind a feedforward conv (and a two-block preset)
    let conv = "input = [1, 28, 28]\nclasses = 10\nalpha = 1.0\ninit_v = 8.351e-5\ncost = \"squared-error\"\n\n[[blocks]]\nkind = \"resistive\"\nchannels = [1, 2]\npools = \"m\"\nnorm = \"none\"\nfc = [100, 10]\ngain = 100.0\n";
    let mpath = d.join("conv.toml");
    std::fs::write(&mpath, conv).unwrap();
    let model = Model::new(ModelConfig::from_toml(conv).unwrap(), 0).unwrap();
    crate::common::write_batch(&batch, &Tensor::zeros(&[2, 28, 28, 1]), &[1, 2]);
    let o = ffebm(&[
        "grad",
        "--model",
        p(&mpath),
        "--weights",
        &weights,
        "--input",
        p(&batch),
        "--algo",
        "ep",
        "--t1",
        "2",
        "--t2",
        "2",
        "--beta",
        "0.5",
        "--out",
        p(&d.join("g.safetensors")),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("` is an energy-based-learning parameter name")
            && err.contains("feedforward conv"),
        "{err}"
    );
    assert!(!d.join("g.safetensors").exists(), "no output on error");
    assert!(model.blocks[0].ff.is_some());
    let file = read_tensor_file(&fixture("weights.safetensors")).unwrap();
    let path = fixture("weights.safetensors");
    for (name, why) in [
        ("cifar10_drn", "the model has 2 blocks"),
        ("mnist_mlp", "hopfield block"),
    ] {
        let mut m = Model::new(preset(name, None).unwrap().model, 0).unwrap();
        let before = m.clone();
        let e = load_weights(&mut m, &file, &path).unwrap_err().to_string();
        assert!(
            e.contains("` is an energy-based-learning parameter name") && e.contains(why),
            "{name}: {e}"
        );
        assert_eq!(m, before, "{name}: the model is untouched");
    }
    let mut cfg = preset("drn_xs", None).unwrap().model;
    cfg.blocks[0].duplicate = Some(false);
    let mut m = Model::new(cfg, 0).unwrap();
    let e = load_weights(&mut m, &file, &path).unwrap_err().to_string();
    assert!(e.contains("without duplication"), "{e}");
    // the reference loader does not half-read an ebl file
    let mut m = Model::new(preset("drn_xs", None).unwrap().model, 0).unwrap();
    let e = load_model_tensors(&mut m, &file, &path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("energy-based-learning parameter name"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn ebl_key_and_shape_errors_name_the_key() {
    let d = dir("keys");
    let path = d.join("w.safetensors");
    let drn = || Model::new(preset("drn_xs", None).unwrap().model, 0).unwrap();
    let load = |items: &[(String, Stored)]| {
        write_tensor_file(&path, items, HashMap::new()).unwrap();
        let mut m = drn();
        load_ebl_tensors(&mut m, &read_tensor_file(&path).unwrap(), &path)
            .unwrap_err()
            .to_string()
    };
    let base = ebl_weights();
    let mut t = base.clone();
    t.push(("Bias_0".into(), Stored::F32(Tensor::zeros(&[2, 28, 28]))));
    assert!(load(&t).contains("`Bias_0` is the bias of ebl's input layer"));
    let mut t = base.clone();
    t.push((
        "DenseWeight_2".into(),
        Stored::F32(Tensor::zeros(&[10, 10])),
    ));
    let e = load(&t);
    assert!(
        e.contains("unexpected key `DenseWeight_2`") && e.contains("fresh process"),
        "{e}"
    );
    let mut t = base.clone();
    t.push(("blocks.0.synapses.1.bias".into(), Stored::scalar(0.0)));
    let e = load(&t);
    assert!(
        e.contains("unexpected key `blocks.0.synapses.1.bias`"),
        "{e}"
    );
    let t: Vec<_> = base
        .iter()
        .filter(|(k, _)| k != "Bias_2")
        .cloned()
        .collect();
    let e = load(&t);
    assert!(e.contains("missing key `Bias_2` (shape (10,))"), "{e}");
    // ebl's DenseWeight_0 flattened to (1568, 100) is not ebl's shape
    let t: Vec<_> = base
        .iter()
        .map(|(k, v)| match (k.as_str(), v) {
            ("DenseWeight_0", Stored::F32(w)) => (
                k.clone(),
                Stored::F32(w.clone().reshaped(&[1568, 100]).unwrap()),
            ),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    let e = load(&t);
    assert!(
        e.contains("`DenseWeight_0` has shape (1568, 100), but ebl's network for this model has (2, 28, 28, 100)"),
        "{e}"
    );
    // the shapes ebl_params describes are the fixture's
    for prm in ebl_params(&drn()).unwrap() {
        let (_, v) = base.iter().find(|(k, _)| *k == prm.name).unwrap();
        assert_eq!(v.shape(), prm.shape.as_slice(), "{}", prm.name);
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_negative_conductance_is_refused_naming_key_index_and_value() {
    let d = dir("negative");
    // ebl names, through the command line: DenseWeight_0[1, 3, 27, 42]
    let wpath = d.join("w.safetensors");
    let flat = ((28 + 3) * 28 + 27) * 100 + 42;
    let t: Vec<_> = ebl_weights()
        .into_iter()
        .map(|(k, v)| {
            let v = if k == "DenseWeight_0" {
                with_value(&v, flat, -0.0125)
            } else {
                v
            };
            (k, v)
        })
        .collect();
    write_tensor_file(&wpath, &t, HashMap::new()).unwrap();
    let out = d.join("g.safetensors");
    let o = ffebm(&[
        "grad",
        "--preset",
        "drn_xs",
        "--weights",
        p(&wpath),
        "--input",
        p(&fixture("batch.safetensors")),
        "--out",
        p(&out),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("`DenseWeight_0`[1, 3, 27, 42] = -0.0125: conductances must be ≥ 0"),
        "{err}"
    );
    assert!(!out.exists());
    // ffebm's names (as in checkpoints): blocks.0.synapses.2.weight[3, 7], and NaN
    let model = Model::new(preset("drn_xs", None).unwrap().model, 0).unwrap();
    for (value, shown) in [(-2.5f32, "-2.5"), (f32::NAN, "NaN")] {
        let t: Vec<_> = model_tensors(&model, &KeyStyle::default())
            .into_iter()
            .map(|(k, v)| {
                let v = if k == "blocks.0.synapses.2.weight" {
                    with_value(&v, 3 * 100 + 7, value)
                } else {
                    v
                };
                (k, v)
            })
            .collect();
        write_tensor_file(&wpath, &t, HashMap::new()).unwrap();
        let mut m = Model::new(preset("drn_xs", None).unwrap().model, 1).unwrap();
        let e = load_weights(&mut m, &read_tensor_file(&wpath).unwrap(), &wpath)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(
                "`blocks.0.synapses.2.weight`[3, 7] = {shown}: conductances must be ≥ 0"
            )),
            "{e}"
        );
    }
    // biases may be negative
    let t: Vec<_> = model_tensors(&model, &KeyStyle::default())
        .into_iter()
        .map(|(k, v)| {
            let v = if k == "blocks.0.synapses.2.bias" {
                with_value(&v, 0, -1.0)
            } else {
                v
            };
            (k, v)
        })
        .collect();
    write_tensor_file(&wpath, &t, HashMap::new()).unwrap();
    let mut m = Model::new(preset("drn_xs", None).unwrap().model, 1).unwrap();
    load_weights(&mut m, &read_tensor_file(&wpath).unwrap(), &wpath).unwrap();
    std::fs::remove_dir_all(&d).unwrap();
}
