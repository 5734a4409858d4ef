//! Analog non-idealities (`ffebm::analog`): the ideal settings are the ideal code path bit for
//! bit; device draws are seeded and survive a checkpoint; noise, converters and storage have
//! the statistics they claim; EP on a varied circuit agrees with ID-exact on the same circuit
//! (the static-variability claim); bad settings are refused naming the key.

use crate::common;
use common::*;
use ffebm::analog::{AnalogConfig, Circuit};
use ffebm::core::Tensor;
use ffebm::energy::EnergyBlock;
use ffebm::grad::*;
use ffebm::model::{prepare, presets::preset, Model, ParamId};
use ffebm::relax::{BlockState, Order, Relaxation};

fn analog(text: &str) -> AnalogConfig {
    toml::from_str(text).unwrap()
}

fn tiny() -> Model {
    Model::new(two_block_config(0.5, 0.5), 3).unwrap()
}

fn std_of(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn ideal_settings_are_the_ideal_code_path_bit_for_bit() {
    let model = tiny();
    let kern = prepare(&model).unwrap();
    let (x, y) = batch(&model, 3, 5);
    // explicit zeros, an unused 1-repeat measurement: a runtime that is there but ideal
    let cfg = analog(
        "weight_std = 0.0\nupdate_noise = 0.0\nmeasure_noise = 0.0\nmeasure_repeats = 1\nslope_std = 0.0\noffset_std = 0.0\nthreshold_std = 0.0",
    );
    assert!(!cfg.is_off());
    let circuit = Circuit::new(&cfg, &model, 0).unwrap();
    assert!(circuit.is_ideal() && circuit.physical(&model).unwrap().is_none());
    let rt = circuit.runtime(11);
    for algo in [Algorithm::Ep, Algorithm::IdExact] {
        let a = AlgoConfig::ep(8, 5, 0.1).with(algo);
        let want = compute_gradients(&model, &kern, &x, &y, &a).unwrap();
        let got = compute_gradients_on(&model, &kern, &x, &y, &a, None, Some(&rt)).unwrap();
        assert_eq!(want.grads, got.grads, "{algo}");
        assert_eq!(want.loss.to_bits(), got.loss.to_bits());
        assert_eq!(want.free.logits, got.free.logits);
    }
}

#[test]
fn same_seed_same_devices_and_the_saved_circuit_reloads_bit_identically() {
    let model = tiny();
    let cfg = analog("weight_std = 0.1");
    let a = Circuit::new(&cfg, &model, 4).unwrap();
    let b = Circuit::new(&cfg, &model, 4).unwrap();
    let c = Circuit::new(&cfg, &model, 5).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.devices, c.devices);
    // one tensor per energy-based weight: a conv coupling in block 0, a dense one in block 1
    assert_eq!(a.devices.len(), 2);
    assert_eq!(a.physical(&model).unwrap(), b.physical(&model).unwrap());
    // through a checkpoint into a circuit drawn from another seed
    let dir = temp_dir("analog", "ckpt");
    let path = dir.join("c.safetensors");
    let opt = ffebm::train::optim::Optimizer::new(Default::default(), &model);
    ffebm::train::checkpoint::save_checkpoint_with(
        &path,
        &model,
        &opt,
        &Default::default(),
        "seed = 4\n",
        None,
        a.tensors(&model),
    )
    .unwrap();
    let mut m2 = tiny();
    let mut o2 = ffebm::train::optim::Optimizer::new(Default::default(), &m2);
    ffebm::train::checkpoint::load_checkpoint(&path, &mut m2, &mut o2).unwrap();
    let mut d = c.clone();
    let n = ffebm::train::checkpoint::load_circuit_devices(&path, &m2, &mut d, true).unwrap();
    assert_eq!(n, 2);
    assert_eq!(d.devices, a.devices);
    let (pa, pd) = (
        a.physical(&model).unwrap().unwrap(),
        d.physical(&m2).unwrap().unwrap(),
    );
    for id in model.param_ids() {
        let (u, v) = (pa.param(id).data(), pd.param(id).data());
        assert!(u.iter().zip(v).all(|(p, q)| p.to_bits() == q.to_bits()));
    }
    // a checkpoint without the draws: refused when they are required, else kept from the seed
    let plain = dir.join("plain.safetensors");
    ffebm::train::checkpoint::save_checkpoint(
        &plain,
        &model,
        &opt,
        &Default::default(),
        "seed = 4\n",
        None,
    )
    .unwrap();
    let mut e = c.clone();
    let err =
        ffebm::train::checkpoint::load_circuit_devices(&plain, &m2, &mut e, true).unwrap_err();
    assert!(format!("{err:#}").contains("analog.xi."), "{err:#}");
    assert_eq!(
        ffebm::train::checkpoint::load_circuit_devices(&plain, &m2, &mut e, false).unwrap(),
        0
    );
    assert_eq!(e, c);
}

#[test]
fn varied_weights_follow_w_times_one_plus_sigma_xi() {
    let p = preset("mnist_mlp", None).unwrap();
    let model = Model::new(p.model.clone(), 0).unwrap();
    let circuit = Circuit::new(&analog("weight_std = 0.05"), &model, 1).unwrap();
    let phys = circuit.physical(&model).unwrap().unwrap();
    let mut ratios = Vec::new();
    for (id, xi) in &circuit.devices {
        for ((w, we), x) in model
            .param(*id)
            .data()
            .iter()
            .zip(phys.param(*id).data())
            .zip(xi.data())
        {
            if w.abs() > 1e-3 {
                let r = (*we as f64 / *w as f64 - 1.0) / 0.05;
                assert!((r - *x as f64).abs() < 1e-3, "{r} vs ξ {x}");
                ratios.push(r);
            }
        }
    }
    let n = ratios.len() as f64;
    let (mean, std) = std_of(&ratios);
    assert!(n > 50_000.0);
    assert!(mean.abs() < 5.0 / n.sqrt(), "mean {mean}");
    assert!((std - 1.0).abs() < 5.0 / (2.0 * n).sqrt(), "std {std}");
    // biases, feedforward and readout weights are not varied
    for id in model.param_ids() {
        if !circuit.devices.iter().any(|(d, _)| *d == id) {
            assert_eq!(model.param(id), phys.param(id));
        }
    }
}

/// Layer 0 of a relaxation from zero states, one sweep, with and without update noise: the
/// first layer updated reads nothing the noise touched, so the difference is the noise.
#[test]
fn update_noise_has_the_configured_std() {
    let model = tiny();
    let kern = prepare(&model).unwrap();
    let (x, y) = batch(&model, 64, 2);
    let chain = Chain::new(&model, &kern);
    let free = free_phase(
        &model,
        &kern,
        &x,
        ffebm::model::feedforward::BnMode::Train,
        ffebm::relax::Schedule::fixed(3),
    )
    .unwrap();
    let _ = y;
    let circuit = Circuit::new(&analog("update_noise = 0.2"), &model, 0).unwrap();
    let rt = circuit.runtime(3);
    let eb: &EnergyBlock = &chain.blocks[0];
    let zeros = BlockState::zeros(&eb.shapes, 64);
    let mut clean = Relaxation::new(eb, &free.drives[0], zeros.clone(), "test");
    let mut noisy = Relaxation::new(eb, &free.drives[0], zeros, "test");
    noisy.set_update_noise(rt.update_noise(0));
    clean.sweep(Order::EvenFirst, None, None, None).unwrap();
    noisy.sweep(Order::EvenFirst, None, None, None).unwrap();
    let d: Vec<f64> = noisy.state.layers[0]
        .data()
        .iter()
        .zip(clean.state.layers[0].data())
        .map(|(a, b)| (a - b) as f64)
        .collect();
    let n = d.len() as f64;
    let (mean, std) = std_of(&d);
    assert!(
        (std - 0.2).abs() < 5.0 * 0.2 / (2.0 * n).sqrt(),
        "std {std} over {n}"
    );
    assert!(mean.abs() < 5.0 * 0.2 / n.sqrt());
    // measurement noise, 4 repeats averaged: std σ/2, on the state and its offset alike
    let circuit = Circuit::new(
        &analog("measure_noise = 0.3\nmeasure_repeats = 4"),
        &model,
        0,
    )
    .unwrap();
    let rt = circuit.runtime(5);
    let before = clean.state.clone();
    rt.measure(0, &mut clean).unwrap();
    let d: Vec<f64> = clean
        .state
        .layers
        .iter()
        .zip(&before.layers)
        .flat_map(|(a, b)| {
            a.data()
                .iter()
                .zip(b.data())
                .map(|(p, q)| (p - q) as f64)
                .collect::<Vec<_>>()
        })
        .collect();
    let n = d.len() as f64;
    let (_, std) = std_of(&d);
    assert!(
        (std - 0.15).abs() < 5.0 * 0.15 / (2.0 * n).sqrt(),
        "std {std}"
    );
}

/// Every drive is on its sample's DAC levels, every block input on the ADC levels of the
/// block below, and EP runs through them (straight-through: no NaN, a finite loss).
#[test]
fn converters_put_drives_and_outputs_on_their_levels() {
    let model = tiny();
    let (x, y) = batch(&model, 4, 8);
    let circuit = Circuit::new(
        &analog("dac_bits = 4\nadc_bits = 3\nerror_bits = 5"),
        &model,
        0,
    )
    .unwrap();
    let rt = circuit.runtime(1);
    let kern = prepare(&model).unwrap();
    let a = AlgoConfig::ep(8, 5, 0.1);
    let out = compute_gradients_on(&model, &kern, &x, &y, &a, None, Some(&rt)).unwrap();
    let on_levels = |t: &Tensor, bits: u32| {
        for row in t.data().chunks(t.row_len()) {
            let m = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let step = 2.0 * m / ((1u32 << bits) - 2) as f32;
            for v in row {
                let k = v / step;
                assert!(
                    (k - k.round()).abs() < 1e-3,
                    "{v} not on a {bits}-bit level of ±{m}"
                );
            }
        }
    };
    on_levels(&out.free.drives[0], 4);
    on_levels(&out.free.drives[1], 4);
    on_levels(&out.free.ff[1].input, 3);
    assert!(out.loss.is_finite());
    assert!(out
        .grads
        .entries
        .iter()
        .all(|(_, g)| g.data().iter().all(|v| v.is_finite())));
    // the ideal step differs (the converters did something)
    let ideal = compute_gradients(&model, &kern, &x, &y, &a).unwrap();
    assert_ne!(ideal.free.logits, out.free.logits);
}

/// ID on a physical circuit runs its unrolled sweeps through the converters and
/// differentiates them straight through: fine, unclipped converters give (nearly) the ideal
/// gradient; an ADC that clips all of block 0's output leaves nothing of block 0 for the loss
/// to differentiate (its gradients are exactly zero, block 1's are not); a DAC that clips
/// block 1's drive does the same to block 0 and block 1's feedforward transform.
#[test]
fn id_on_a_physical_circuit_differentiates_its_converters_straight_through() {
    let model = tiny();
    let kern = prepare(&model).unwrap();
    let (x, y) = batch(&model, 3, 5);
    let a = AlgoConfig::ep(8, 5, 0.1).with(Algorithm::IdExact);
    let ideal = compute_gradients(&model, &kern, &x, &y, &a).unwrap();
    let on = |text: &str| {
        let circuit = Circuit::new(&analog(text), &model, 0).unwrap();
        let rt = circuit.converters_only(1);
        compute_gradients_on(&model, &kern, &x, &y, &a, None, Some(&rt)).unwrap()
    };
    let fine = on("dac_bits = 24\nadc_bits = 24");
    let e = total_rel_err(&fine.grads, &ideal.grads);
    assert!(e < 1e-4, "24-bit converters move ID by {e:.2e}");
    let block_of = |id: &ParamId| match *id {
        ParamId::Synapse { block, .. } | ParamId::Bn { block, .. } => Some(block),
        ParamId::Readout { .. } => None,
    };
    let is_zero = |g: &Tensor| g.data().iter().all(|v| *v == 0.0);
    let adc = on("[blocks.0]\nadc_bits = 8\nadc_bound = 1e-6");
    let dac = on("[blocks.1]\ndac_bits = 8\ndac_bound = 1e-6");
    for (id, g) in &ideal.grads.entries {
        let name = model.param_name(*id);
        assert!(
            !is_zero(g),
            "{name}: the ideal gradient is zero, the test shows nothing"
        );
        let (g_adc, g_dac) = (adc.grads.get(*id), dac.grads.get(*id));
        let ff1 = matches!(
            *id,
            ParamId::Synapse {
                block: 1,
                index: 0,
                ..
            } | ParamId::Bn { block: 1, .. }
        );
        match block_of(id) {
            Some(0) => assert!(
                is_zero(g_adc) && is_zero(g_dac),
                "{name}: clipped away, yet a gradient"
            ),
            _ if ff1 => assert!(is_zero(g_dac) && !is_zero(g_adc), "{name}"),
            _ => assert!(
                !is_zero(g_adc) && !is_zero(g_dac),
                "{name}: no gradient past the converters"
            ),
        }
    }
}

#[test]
fn storage_levels_hold_every_stored_weight() {
    let model = tiny();
    let circuit = Circuit::new(
        &analog("weight_levels = 9\nweight_bound = 0.5\nstochastic_rounding = true"),
        &model,
        0,
    )
    .unwrap();
    let mut m = model.clone();
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
    circuit.store(&mut m, &mut rng);
    for (k, b) in m.blocks.iter().enumerate() {
        for (i, s) in b.couplings.iter().enumerate() {
            for v in s.weight.data() {
                let pos = (v + 0.5) / 0.125;
                assert!(
                    (pos - pos.round()).abs() < 1e-4 && v.abs() <= 0.5,
                    "block {k} synapse {}: {v}",
                    i + 1
                );
            }
            // biases are not stored on levels
            assert_eq!(s.bias, model.blocks[k].couplings[i].bias);
        }
    }
}

/// The static-variability claim (issue 10): σ_w = 0.1 on `static_gradient_analysis` (β 0.02),
/// EP on the varied circuit agrees with ID-exact on the varied circuit (cos ≥ 0.99 per tensor);
/// ID-exact on the nominal twin is printed for comparison.
#[test]
fn ep_on_a_varied_circuit_agrees_with_id_on_the_same_circuit() {
    let p = preset("static_gradient_analysis", None).unwrap();
    let model = Model::new(p.model.clone(), 0).unwrap();
    let (x, y) = batch(&model, 2, 1);
    let cfg = AlgoConfig::ep(15, 20, 0.02);
    let circuit = Circuit::new(&analog("weight_std = 0.1"), &model, 0).unwrap();
    let phys = circuit.physical(&model).unwrap().unwrap();
    let (kp, kn) = (prepare(&phys).unwrap(), prepare(&model).unwrap());
    let ep = compute_gradients(&phys, &kp, &x, &y, &cfg.with(Algorithm::Ep)).unwrap();
    let id = compute_gradients(&phys, &kp, &x, &y, &cfg.with(Algorithm::IdExact)).unwrap();
    let twin = compute_gradients(&model, &kn, &x, &y, &cfg.with(Algorithm::IdExact)).unwrap();
    let (mut worst_phys, mut worst_twin) = (1.0f64, 1.0f64);
    for (pid, g) in &ep.grads.entries {
        if matches!(
            pid,
            ParamId::Synapse { bias: false, .. } | ParamId::Readout { bias: false }
        ) {
            let name = model.param_name(*pid);
            let c = cosine(g, id.grads.get(*pid));
            let t = cosine(g, twin.grads.get(*pid));
            eprintln!("{name}: cos(EP, ID physical) {c:.5}  cos(EP, ID nominal twin) {t:.5}");
            assert!(
                c >= 0.99,
                "{name}: EP vs ID-exact on the varied circuit, cosine {c}"
            );
            worst_phys = worst_phys.min(c);
            worst_twin = worst_twin.min(t);
        }
    }
    assert!(
        worst_twin < worst_phys,
        "the nominal twin should agree less ({worst_twin} vs {worst_phys})"
    );
}

#[test]
fn bad_analog_settings_are_refused_naming_the_key() {
    let resolve = |set: &str| {
        let sets = vec![set.to_string()];
        match ffebm::train::RunConfig::resolve(Some("mnist_mlp"), None, None, &sets, Some(0)) {
            Ok(_) => panic!("{set} accepted"),
            Err(e) => format!("{e:#}"),
        }
    };
    for (set, key) in [
        ("analog.weight_std=-0.1", "analog.weight_std"),
        ("analog.update_noise=-1", "analog.update_noise"),
        ("analog.adc_bits=0", "analog.adc_bits"),
        ("analog.blocks.0.dac_bits=0", "analog.blocks.0.dac_bits"),
        ("analog.preset=rram-x", "analog.preset"),
        ("analog.blocks.3.adc_bits=8", "analog.blocks.3"),
        ("analog.weight_sd=0.1", "analog.weight_sd"),
    ] {
        let e = resolve(set);
        assert!(e.contains(key), "{set}: {e}");
    }
    assert!(resolve("analog.weight_sd=0.1").contains("weight_std"));
    // and on the command line of `grad`
    let e = AnalogConfig::from_sets(&["measure_repeats=0".into()])
        .and_then(|c| c.resolve(1).map(|_| ()))
        .unwrap_err();
    assert!(format!("{e:#}").contains("analog.measure_repeats"));
    assert!(format!(
        "{:#}",
        AnalogConfig::from_sets(&["devise=x".into()]).unwrap_err()
    )
    .contains("devise"));
}

/// A short MNIST run on a noisy, converted, varied circuit with ConstantStep devices: it
/// records pulses per block, saves the devices, resumes bit-exactly mid-epoch and learns.
#[test]
fn analog_training_records_pulses_saves_devices_and_resumes_exactly() {
    if common::shared_data().is_none() {
        return;
    }
    let cfg = || {
        small_mnist_config(&[
            "analog.preset=ideal-8bit",
            "analog.weight_std=0.05",
            "analog.update_noise=0.001",
            "analog.measure_noise=0.001",
            "analog.device=constant-step",
        ])
    };
    let run = |dir: &std::path::Path, resume: bool, stop: Option<u64>| {
        train_quietly(cfg(), dir, resume, stop)
    };
    let full_dir = temp_dir("analog", "full");
    let _ = std::fs::remove_dir_all(&full_dir);
    let full = run(&full_dir, false, None);
    assert!(full.completed);
    for e in &full.epochs {
        let p = e.pulses.as_ref().expect("pulse counts recorded");
        assert!(p["block0"] > 0, "{p:?}");
        assert_eq!(p.len(), 1);
    }
    assert!(
        full.epochs[1].test_top1 > 25.0,
        "{}",
        full.epochs[1].test_top1
    );
    // the checkpoint holds the circuit the config draws
    let ck = full_dir.join("checkpoint_last.safetensors");
    let circuit = Circuit::new(&cfg().analog, &full.model, 7).unwrap();
    let mut loaded = Circuit::new(&cfg().analog, &full.model, 99).unwrap();
    assert_ne!(loaded, circuit);
    let n = ffebm::train::checkpoint::load_circuit_devices(&ck, &full.model, &mut loaded, true)
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        (&loaded.devices, &loaded.steps),
        (&circuit.devices, &circuit.steps)
    );
    // interrupted mid-epoch, resumed: the same run
    let dir = temp_dir("analog", "resumed");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!run(&dir, false, Some(7)).completed);
    let done = run(&dir, true, None);
    assert_eq!(done.model, full.model);
    let pulses = |r: &ffebm::train::RunSummary| {
        r.epochs
            .iter()
            .map(|e| e.pulses.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(pulses(&done), pulses(&full));
    assert_eq!(
        done.epochs.iter().map(|e| e.test_top1).collect::<Vec<_>>(),
        full.epochs.iter().map(|e| e.test_top1).collect::<Vec<_>>()
    );
}
