//! Differential pairs of pulsed conductances (`analog.device_pair = "differential"`,
//! `ffebm::analog::pair`): every weight equals `G⁺ − G⁻` bit for bit; updates pulse one
//! conductance up and never lower either; a due refresh rewrites exactly the pairs the
//! criterion names, keeps `w` within half a pulse and fires the pulses counted by hand; a
//! training run records update and refresh pulses apart, `ffebm cost --run` prices both, and
//! a resumed run is the same circuit bit for bit.

use crate::common;
use common::*;
use ffebm::analog::{AnalogConfig, Circuit};
use ffebm::model::Model;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn analog(text: &str) -> AnalogConfig {
    toml::from_str(text).unwrap()
}

fn tiny() -> Model {
    Model::new(two_block_config(0.5, 0.5), 3).unwrap()
}

const PAIR: &str = "device = \"constant-step\"\ndevice_pair = \"differential\"\ndw_min = 0.01\n\
                    dw_min_std = 0.0\nw_max = 0.2\nrefresh_every = 3\n";

fn assert_w_is_the_difference(c: &Circuit, model: &Model) {
    for p in &c.pairs {
        let w = model.param(p.id);
        for ((&v, &a), &b) in w.data().iter().zip(p.g_plus.data()).zip(p.g_minus.data()) {
            assert_eq!(v.to_bits(), (a - b).to_bits(), "{}", model.param_name(p.id));
        }
    }
}

/// Desired weights: the present ones plus `σ·ξ` on every pair-held weight.
fn desire(c: &Circuit, model: &mut Model, sigma: f32, rng: &mut ChaCha8Rng) {
    for p in &c.pairs {
        ffebm::core::analog::add_gaussian(model.param_mut(p.id), sigma, rng);
    }
}

#[test]
fn pairs_write_up_only_and_a_due_refresh_rewrites_what_the_criterion_names() {
    let mut model = tiny();
    let mut c = Circuit::new(&analog(PAIR), &model, 1).unwrap();
    assert!(c.steps.is_empty() && !c.pairs.is_empty() && c.programs());
    c.store(&mut model, &mut ChaCha8Rng::seed_from_u64(0));
    assert_w_is_the_difference(&c, &model);
    // G⁺ and G⁻ have their own device-to-device draws
    assert_ne!(c.pairs[0].dw_plus, c.pairs[0].dw_minus);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut refreshed = 0u64;
    for step in 1..=12u64 {
        desire(&c, &mut model, 0.03, &mut rng);
        let before = c.clone();
        // the same update without the refresh (step 3s + 1 is never due; pulses without
        // write noise draw nothing, so both runs see the same generator)
        let (mut c2, mut m2) = (c.clone(), model.clone());
        let mut r2 = rng.clone();
        let fired2 = c2
            .program(&mut m2, Vec::new(), 3 * step + 1, &mut r2)
            .unwrap();
        let fired = c.program(&mut model, Vec::new(), step, &mut rng).unwrap();
        assert_w_is_the_difference(&c, &model);
        assert_eq!(fired.update, fired2.update);
        assert!(fired2.refresh.values().all(|&n| n == 0));
        if step % 3 != 0 {
            assert_eq!(c, c2, "no refresh at step {step}");
            assert!(fired.refresh.values().all(|&n| n == 0));
        }
        let mut want_refresh = 0u64;
        for ((p, p0), p2) in c.pairs.iter().zip(&before.pairs).zip(&c2.pairs) {
            for i in 0..p.g_plus.len() {
                let (gp2, gm2) = (p2.g_plus.data()[i], p2.g_minus.data()[i]);
                // the update pulses one side up, the other is untouched
                let (gp0, gm0) = (p0.g_plus.data()[i], p0.g_minus.data()[i]);
                assert!(gp2 >= gp0 && gm2 >= gm0);
                assert!(gp2 == gp0 || gm2 == gm0);
                let (a, b) = (gp2 / 0.2, gm2 / 0.2);
                let due = step % 3 == 0
                    && if gp2 > gm2 {
                        a > 0.75 && b > 0.25
                    } else {
                        a > 0.25 && b > 0.75
                    };
                let (gp, gm) = (p.g_plus.data()[i], p.g_minus.data()[i]);
                if !due {
                    assert_eq!((gp, gm), (gp2, gm2));
                    continue;
                }
                let w = gp2 - gm2;
                let dw = if w > 0.0 {
                    p.dw_plus.data()[i]
                } else {
                    p.dw_minus.data()[i]
                };
                want_refresh += (w.abs() / dw).round() as u64;
                assert!(gp.min(gm) == 0.0, "one side reset and left at 0");
                assert!(
                    ((gp - gm) - w).abs() <= 0.5 * dw + 1e-6,
                    "{w} → {}",
                    gp - gm
                );
            }
        }
        let got: u64 = fired.refresh.values().sum();
        assert_eq!(got, want_refresh, "step {step}");
        refreshed += got;
    }
    assert!(refreshed > 0, "the test must see refreshes");
    // a `single` device pair is the default single-device circuit
    let single = analog("device = \"constant-step\"\ndevice_pair = \"single\"");
    let one = Circuit::new(&single, &model, 1).unwrap();
    assert!(one.pairs.is_empty());
    assert_eq!(
        one,
        Circuit::new(&analog("device = \"constant-step\""), &model, 1).unwrap()
    );
}

#[test]
fn differential_pairs_refuse_conductances_and_name_the_key() {
    let drn = ffebm::model::presets::preset("drn_xs", None).unwrap().model;
    let model = Model::new(drn, 0).unwrap();
    let e = Circuit::new(&analog(PAIR), &model, 0).unwrap_err();
    assert!(format!("{e:#}").contains("analog.device_pair"), "{e:#}");
}

/// A short MNIST run with differential pairs and refresh: update and refresh pulses recorded
/// apart, `cost --run` prices their sum, the checkpoint holds `G±` (with `w = G⁺ − G⁻`), and a
/// run resumed mid-epoch is the uninterrupted one bit for bit.
#[test]
fn pair_training_records_refresh_pulses_saves_conductances_and_resumes_exactly() {
    if common::shared_data().is_none() {
        return;
    }
    let cfg = || {
        small_mnist_config(&[
            "analog.preset=rram-constantstep",
            "analog.device_pair=differential",
            // small steps and bounds, so that pairs saturate within 20 steps
            "analog.dw_min=0.00005",
            "analog.w_max=0.02",
            "analog.refresh_every=2",
            "analog.refresh_upper_thres=0.5",
            "analog.refresh_lower_thres=0.01",
        ])
    };
    let run = |dir: &std::path::Path, resume: bool, stop: Option<u64>| {
        train_quietly(cfg(), dir, resume, stop)
    };
    let full_dir = temp_dir("analog_pair", "full");
    let _ = std::fs::remove_dir_all(&full_dir);
    let full = run(&full_dir, false, None);
    assert!(full.completed);
    let mut refresh = 0;
    for e in &full.epochs {
        assert!(e.pulses.as_ref().unwrap()["block0"] > 0);
        refresh += e.refresh_pulses.as_ref().expect("refresh pulses recorded")["block0"];
    }
    assert!(
        refresh > 0,
        "no refresh in the run: {:?}",
        full.epochs
            .iter()
            .map(|e| (&e.pulses, &e.refresh_pulses))
            .collect::<Vec<_>>()
    );
    // the checkpoint holds the conductances, and the weights are their differences
    let ck = full_dir.join("checkpoint_last.safetensors");
    let mut loaded = Circuit::new(&cfg().analog, &full.model, 99).unwrap();
    let n = ffebm::train::checkpoint::load_circuit_devices(&ck, &full.model, &mut loaded, true)
        .unwrap();
    assert_eq!(n, 4 * loaded.pairs.len());
    assert_w_is_the_difference(&loaded, &full.model);
    // cost reads update + refresh pulses
    let w = ffebm::cost::workload::Workload::from_run_dir(&full_dir).unwrap();
    for (plan, e) in w.epochs.iter().zip(&full.epochs) {
        let want =
            e.pulses.as_ref().unwrap()["block0"] + e.refresh_pulses.as_ref().unwrap()["block0"];
        assert_eq!(plan.pulses, Some(vec![want as f64]));
    }
    let out = common::ffebm(&["cost", "--run", common::path_str(&full_dir)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // interrupted mid-epoch, resumed: the same run and the same circuit
    let dir = temp_dir("analog_pair", "resumed");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!run(&dir, false, Some(7)).completed);
    let done = run(&dir, true, None);
    assert_eq!(done.model, full.model);
    let counts = |r: &ffebm::train::RunSummary| {
        r.epochs
            .iter()
            .map(|e| (e.pulses.clone(), e.refresh_pulses.clone(), e.test_top1))
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&done), counts(&full));
    let mut resumed = Circuit::new(&cfg().analog, &done.model, 98).unwrap();
    ffebm::train::checkpoint::load_circuit_devices(
        &dir.join("checkpoint_last.safetensors"),
        &done.model,
        &mut resumed,
        true,
    )
    .unwrap();
    assert_eq!(resumed.pairs, loaded.pairs);
    std::fs::remove_dir_all(full_dir).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}
