//! Per-unit nonlinearity variability (`analog.slope_std`, `offset_std`, `threshold_std`): the
//! varied layers' updates are the exact minimisers of the varied energy (brute force); the
//! draws have the claimed statistics, follow the seed and survive a checkpoint; EP on the
//! varied circuit agrees with ID-exact on it, offsets form = full-state form; bad settings
//! name their key.

use crate::common;
use common::*;
use ffebm::analog::{AnalogConfig, Circuit, UnitProperty};
use ffebm::core::Tensor;
use ffebm::energy::{EnergyBlock, LayerKind};
use ffebm::grad::*;
use ffebm::model::feedforward::{ff_forward, BnMode, FfCache};
use ffebm::model::{prepare, presets::preset, Model, ModelConfig, ParamId};
use ffebm::relax::{relax, BlockState, Order, Relaxation, Schedule};

/// A Hopfield block with a dense layer, and a clamped last layer (every layer a hard sigmoid).
const HOPFIELD: &str = "input = [2, 4, 4]\nclasses = 3\nalpha = 0.5\ninit_v = 0.5\n\n[[blocks]]\nchannels = [2, 2, 3]\npools = \"--\"\nfc = [4]\nclamp_last = true\n";

/// One resistive block with a pooled feedforward conv.
const DRN: &str = "input = [2, 4, 4]\nclasses = 3\nalpha = 0.5\ninit_v = 0.5\ncost = \"squared-error\"\n\n[[blocks]]\nkind = \"resistive\"\nchannels = [2, 3]\npools = \"m\"\nnorm = \"none\"\nfc = [6, 3]\ngain = 2.0\n";

fn analog(text: &str) -> AnalogConfig {
    toml::from_str(text).unwrap()
}

fn model(toml: &str, seed: u64) -> Model {
    Model::new(ModelConfig::from_toml(toml).unwrap(), seed).unwrap()
}

fn physical(m: &Model, cfg: &str, seed: u64) -> (Circuit, Model) {
    let c = Circuit::new(&analog(cfg), m, seed).unwrap();
    let p = c.physical(m).unwrap().expect("a varied circuit");
    (c, p)
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    (
        mean,
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt(),
    )
}

/// For every layer of block 0 of the physical circuit `m`: after a backward sweep from zeros
/// (every layer off its own minimiser), the update of the layer is the minimiser of the
/// block's energy along it, found by a 1-D grid per unit (`grid(l, i, f)`).
fn check_updates_minimise(m: &Model, grid: &dyn Fn(&LayerKind, usize, usize) -> Vec<f32>) {
    let kern = prepare(m).unwrap();
    let eb = EnergyBlock::all(m, &kern).remove(0);
    let (x, _) = batch(m, 1, 4);
    let u = ff_forward(
        &m.blocks[0],
        kern[0].ff.as_ref(),
        &x,
        BnMode::Train,
        &mut FfCache::default(),
    )
    .unwrap();
    let mut r = Relaxation::new(
        &eb,
        &u,
        BlockState::zeros(&m.blocks[0].layout.layers, 1),
        "test",
    );
    r.sweep(Order::Backward, None, None, None).unwrap();
    let start = r.into_state();
    let energy = |s: &BlockState| eb.energy(&u, s, None).unwrap()[0];
    assert!(
        energy(&start).is_finite(),
        "the start is inside every domain"
    );
    let mut moved = 0;
    for l in 0..start.layers.len() {
        let mut r = Relaxation::new(&eb, &u, start.clone(), "test");
        r.update(l, None).unwrap();
        let updated = r.into_state();
        let e_upd = energy(&updated);
        let f = updated.layers[l].len();
        for i in 0..f {
            let mut best = (f64::INFINITY, 0.0f32);
            for v in grid(&eb.kinds[l], i, f) {
                let mut s = updated.clone();
                s.layers[l].data_mut()[i] = v;
                let e = energy(&s);
                if e < best.0 {
                    best = (e, v);
                }
            }
            let got = updated.layers[l].data()[i];
            moved += (got != start.layers[l].data()[i]) as usize;
            assert!(
                best.0 >= e_upd - 1e-6 * e_upd.abs().max(1.0),
                "layer {l} unit {i}: the grid value {} has energy {} < {e_upd} at the update's {got}",
                best.1,
                best.0
            );
            assert!(
                (best.1 - got).abs() <= 2e-3 * got.abs().max(1.0),
                "layer {l} unit {i}: grid minimiser {} vs update {got}",
                best.1
            );
        }
    }
    assert!(moved > 0, "some update moved a unit");
}

#[test]
fn varied_unit_updates_are_the_exact_minimisers_of_the_varied_energy() {
    // hard sigmoids with per-unit slopes and offsets
    let m = model(HOPFIELD, 1);
    let (_, p) = physical(&m, "slope_std = 0.3\noffset_std = 0.5", 2);
    let (mut slopes, mut offsets) = (0, 0);
    for l in 0..p.blocks[0].layout.layers.len() {
        let u = &p.blocks[0].units[l];
        slopes += u.slope.is_some() as usize;
        offsets += u.offset.is_some() as usize;
    }
    assert_eq!((slopes, offsets), (3, 3), "every hard-sigmoid layer varies");
    check_updates_minimise(&p, &|kind, _, _| {
        assert!(matches!(kind, LayerKind::VariedSigmoid { .. }), "{kind:?}");
        (0..=2000).map(|k| k as f32 / 2000.0).collect()
    });
    // diodes with per-unit bounds t_i (the grid starts exactly at the bound)
    let m = model(DRN, 2);
    let (_, p) = physical(&m, "threshold_std = 0.3", 3);
    check_updates_minimise(&p, &|kind, i, f| {
        let r = (0..=4000).map(|k| k as f32 / 500.0);
        match kind {
            LayerKind::VariedDiode { bounds } => {
                let t = bounds.data()[i];
                if i < f / 2 {
                    r.map(|v| t + v).collect()
                } else {
                    r.map(|v| t - v).collect()
                }
            }
            LayerKind::Linear => (-4000..=4000).map(|k| k as f32 / 500.0).collect(),
            other => panic!("{other:?}"),
        }
    });
}

/// The physical values are `α·(1 + σξ)`, `σξ`, `σξ` with `ξ` the saved draws, and the draws
/// have mean 0 / std 1 within sampling error.
#[test]
fn unit_draws_have_the_configured_spread_and_follow_the_seed() {
    let p = preset("mnist_mlp", None).unwrap();
    let m = Model::new(p.model.clone(), 0).unwrap();
    let alpha = m.blocks[0].layout.alpha as f64;
    let cfg = "slope_std = 0.1\noffset_std = 0.05";
    let (c, phys) = physical(&m, cfg, 1);
    let (c2, _) = physical(&m, cfg, 1);
    let (c3, _) = physical(&m, cfg, 2);
    assert_eq!(c, c2);
    assert_ne!(c.units, c3.units);
    for (prop, sigma) in [(UnitProperty::Slope, 0.1), (UnitProperty::Offset, 0.05)] {
        let mut rel = Vec::new();
        for d in c.units.iter().filter(|d| d.property == prop) {
            let u = &phys.blocks[d.block].units[d.layer];
            let v = match prop {
                UnitProperty::Slope => u.slope.as_ref(),
                _ => u.offset.as_ref(),
            }
            .unwrap();
            for (&pv, &x) in v.data().iter().zip(d.xi.data()) {
                let r = match prop {
                    UnitProperty::Slope => pv as f64 / alpha - 1.0,
                    _ => pv as f64,
                };
                assert!((r - sigma * x as f64).abs() < 1e-6, "{prop:?}: {r} vs σξ");
                rel.push(r);
            }
        }
        let n = rel.len() as f64;
        assert!(n >= 500.0, "{prop:?}: {n} units");
        let (mean, std) = mean_std(&rel);
        eprintln!("{prop:?}: {n} units, mean {mean:.5}, std {std:.5} (σ {sigma})");
        assert!(mean.abs() < 4.0 * sigma / n.sqrt(), "{prop:?} mean {mean}");
        assert!(
            (std - sigma).abs() < 4.0 * sigma / (2.0 * n).sqrt(),
            "{prop:?} std {std}"
        );
    }
    // diode bounds of drn_xs: t_i = σξ_i
    let p = preset("drn_xs", None).unwrap();
    let m = Model::new(p.model.clone(), 0).unwrap();
    let (c, phys) = physical(&m, "threshold_std = 0.2", 5);
    let t: Vec<f64> = c
        .units
        .iter()
        .flat_map(|d| {
            let b = phys.blocks[d.block].units[d.layer].bound.clone().unwrap();
            assert_eq!(d.property, UnitProperty::Threshold);
            b.data().iter().map(|v| *v as f64).collect::<Vec<_>>()
        })
        .collect();
    let (mean, std) = mean_std(&t);
    let n = t.len() as f64;
    assert_eq!(n, 100.0, "one bound per hidden unit");
    assert!(mean.abs() < 4.0 * 0.2 / n.sqrt(), "mean {mean}");
    assert!(
        (std - 0.2).abs() < 4.0 * 0.2 / (2.0 * n).sqrt(),
        "std {std}"
    );
}

#[test]
fn the_saved_unit_draws_reload_into_the_same_circuit_bit_for_bit() {
    let m = Model::new(two_block_config(0.5, 0.5), 3).unwrap();
    let cfg = "slope_std = 0.2\noffset_std = 0.1\nweight_std = 0.05";
    let (a, pa) = physical(&m, cfg, 4);
    let (c, _) = physical(&m, cfg, 5);
    let dir = temp_dir("analog_units", "ckpt");
    let path = dir.join("c.safetensors");
    let opt = ffebm::train::optim::Optimizer::new(Default::default(), &m);
    ffebm::train::checkpoint::save_checkpoint_with(
        &path,
        &m,
        &opt,
        &Default::default(),
        "seed = 4\n",
        None,
        a.tensors(&m),
    )
    .unwrap();
    let mut d = c.clone();
    let n = ffebm::train::checkpoint::load_circuit_devices(&path, &m, &mut d, true).unwrap();
    assert_eq!(n, a.device_tensors());
    assert_eq!((&d.devices, &d.units), (&a.devices, &a.units));
    let pd = d.physical(&m).unwrap().unwrap();
    assert_eq!(pd, pa);
    let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for (x, y) in pa.blocks.iter().zip(&pd.blocks) {
        for (u, v) in x.units.iter().zip(&y.units) {
            for (p, q) in [(&u.slope, &v.slope), (&u.offset, &v.offset)] {
                assert_eq!(p.as_ref().map(bits), q.as_ref().map(bits));
            }
        }
    }
    // a checkpoint of a circuit without unit draws is refused when they are required
    let plain = dir.join("plain.safetensors");
    let (w, _) = physical(&m, "weight_std = 0.05", 4);
    ffebm::train::checkpoint::save_checkpoint_with(
        &plain,
        &m,
        &opt,
        &Default::default(),
        "seed = 4\n",
        None,
        w.tensors(&m),
    )
    .unwrap();
    let mut e = c.clone();
    let err = ffebm::train::checkpoint::load_circuit_devices(&plain, &m, &mut e, true).unwrap_err();
    assert!(format!("{err:#}").contains("analog.slope_xi."), "{err:#}");
}

#[test]
fn zero_unit_spreads_are_the_ideal_code_path_bit_for_bit() {
    let m = Model::new(two_block_config(0.5, 0.5), 3).unwrap();
    let kern = prepare(&m).unwrap();
    let (x, y) = batch(&m, 3, 5);
    let cfg = analog("slope_std = 0.0\noffset_std = 0.0\nthreshold_std = 0.0");
    assert!(!cfg.is_off());
    let circuit = Circuit::new(&cfg, &m, 0).unwrap();
    assert!(circuit.units.is_empty() && circuit.physical(&m).unwrap().is_none());
    let rt = circuit.runtime(1);
    for algo in [Algorithm::Ep, Algorithm::IdExact] {
        let a = AlgoConfig::ep(8, 5, 0.1).with(algo);
        let want = compute_gradients(&m, &kern, &x, &y, &a).unwrap();
        let got = compute_gradients_on(&m, &kern, &x, &y, &a, None, Some(&rt)).unwrap();
        assert_eq!(want.grads, got.grads, "{algo}");
        assert_eq!(want.free.logits, got.free.logits);
    }
}

/// EP vs ID-exact on the varied circuit and on the nominal twin, per weight tensor: returns
/// the worst cosines (physical, twin).
fn ep_vs_id(m: &Model, cfg: &str, algo: &AlgoConfig, b: usize) -> (f64, f64) {
    let (_, phys) = physical(m, cfg, 0);
    let (x, y) = batch(m, b, 1);
    let (kp, kn) = (prepare(&phys).unwrap(), prepare(m).unwrap());
    let ep = compute_gradients(&phys, &kp, &x, &y, &algo.with(Algorithm::Ep)).unwrap();
    let id = compute_gradients(&phys, &kp, &x, &y, &algo.with(Algorithm::IdExact)).unwrap();
    let twin = compute_gradients(m, &kn, &x, &y, &algo.with(Algorithm::IdExact)).unwrap();
    let (mut worst_phys, mut worst_twin) = (1.0f64, 1.0f64);
    for (pid, g) in &ep.grads.entries {
        if matches!(
            pid,
            ParamId::Synapse { bias: false, .. } | ParamId::Readout { bias: false }
        ) {
            let name = m.param_name(*pid);
            let c = cosine(g, id.grads.get(*pid));
            let t = cosine(g, twin.grads.get(*pid));
            eprintln!(
                "[{cfg}] {name}: cos(EP, ID physical) {c:.5}  cos(EP, ID nominal twin) {t:.5}"
            );
            assert!(
                c >= 0.99,
                "{name}: EP vs ID-exact on the varied circuit, cosine {c}"
            );
            worst_phys = worst_phys.min(c);
            worst_twin = worst_twin.min(t);
        }
    }
    (worst_phys, worst_twin)
}

/// The static-variability claim for the units: EP on a circuit with varied hard sigmoids
/// (`static_gradient_analysis`, batch 2, β 0.02) or varied diode bounds (`drn_xs`) agrees with
/// ID-exact on the same circuit (cos ≥ 0.99 per tensor), better than with the nominal twin.
#[test]
fn ep_on_a_circuit_with_varied_units_agrees_with_id_on_the_same_circuit() {
    let p = preset("static_gradient_analysis", None).unwrap();
    let m = Model::new(p.model.clone(), 0).unwrap();
    let (phys, twin) = ep_vs_id(
        &m,
        "slope_std = 0.1\noffset_std = 0.1",
        &AlgoConfig::ep(15, 20, 0.02),
        2,
    );
    assert!(
        twin < phys,
        "the nominal twin should agree less ({twin} vs {phys})"
    );
    let p = preset("drn_xs", None).unwrap();
    let m = Model::new(p.model.clone(), 0).unwrap();
    // (the preset's 4 sweeps and β 1 are a training setting; the comparison wants the
    // equilibria and a small nudge)
    let algo = AlgoConfig {
        nudged_order: p.algo.nudged_order,
        ..AlgoConfig::ep(30, 30, 0.1)
    };
    let (phys, twin) = ep_vs_id(&m, "threshold_std = 0.5", &algo, 4);
    assert!(
        twin < phys,
        "the nominal twin should agree less ({twin} vs {phys})"
    );
}

#[test]
fn nudged_phases_as_offsets_equal_full_states_on_varied_units() {
    for (toml, cfg, beta) in [
        (HOPFIELD, "slope_std = 0.3\noffset_std = 0.3", 1.0f32),
        (DRN, "threshold_std = 0.3", 0.2),
    ] {
        let m = model(toml, 6);
        let (_, phys) = physical(&m, cfg, 7);
        let kern = prepare(&phys).unwrap();
        let (x, y) = batch(&phys, 3, 8);
        for order in [Order::OddFirst, Order::Synchronous] {
            let a = |form| AlgoConfig {
                nudged_form: form,
                nudged_order: order,
                ..AlgoConfig::ep(40, 40, beta)
            };
            let off = compute_gradients(&phys, &kern, &x, &y, &a(NudgedForm::Offsets)).unwrap();
            let full = compute_gradients(&phys, &kern, &x, &y, &a(NudgedForm::States)).unwrap();
            let e = total_rel_err(&off.grads, &full.grads);
            eprintln!("[{cfg}] {order:?}: offsets vs states {e:.2e}");
            assert!(
                e <= 1e-6,
                "[{cfg}] {order:?}: offsets vs states differ by {e:.2e}"
            );
            assert!(off
                .grads
                .entries
                .iter()
                .any(|(_, g)| g.data().iter().any(|v| *v != 0.0)));
        }
    }
}

/// A relaxation of a varied diode layer keeps every unit within its own bound, exactly: plain
/// sweeps, Anderson (its mixing projected back), and Anderson in offset form from a base.
#[test]
fn varied_diodes_stay_within_their_bounds() {
    use ffebm::relax::{AndersonParams, OffsetBase, Solver};
    let m = model(DRN, 2);
    let (_, p) = physical(&m, "threshold_std = 0.5", 9);
    let kern = prepare(&p).unwrap();
    let eb = EnergyBlock::all(&p, &kern).remove(0);
    let (x, y) = batch(&p, 2, 4);
    let u = ff_forward(
        &p.blocks[0],
        kern[0].ff.as_ref(),
        &x,
        BnMode::Train,
        &mut FfCache::default(),
    )
    .unwrap();
    let LayerKind::VariedDiode { bounds } = eb.kinds[0] else {
        panic!("{:?}", eb.kinds[0])
    };
    let check = |s: &BlockState, what: &str| {
        let f = bounds.len();
        let mut on = 0;
        for (j, v) in s.layers[0].data().iter().enumerate() {
            let (i, t) = (j % f, bounds.data()[j % f]);
            assert!(
                if i < f / 2 { *v >= t } else { *v <= t },
                "{what} unit {i}: {v} vs bound {t}"
            );
            on += (*v == t) as usize;
        }
        assert!(on > 0, "{what}: some unit sits on its bound");
    };
    let zeros = BlockState::zeros(&p.blocks[0].layout.layers, 2);
    let anderson = Schedule {
        solver: Solver::Anderson(AndersonParams::default()),
        ..Schedule::fixed(12)
    };
    let mut free = None;
    for (what, sched) in [("plain", Schedule::fixed(12)), ("anderson", anderson)] {
        let mut r = Relaxation::new(&eb, &u, zeros.clone(), "t");
        relax(&mut r, Order::EvenFirst, None, sched, None).unwrap();
        let s = r.into_state();
        check(&s, what);
        free = Some(s);
    }
    // nudged in offset form from the free state
    let n = p.blocks[0].layout.layers.len();
    let nudge = ffebm::energy::Nudge::squared_error(0.2, n - 1, &y, 3).unwrap();
    let base = OffsetBase::new(&eb, &u, free.unwrap()).unwrap();
    let mut r = Relaxation::from_base(&eb, &u, &base, "nudged");
    relax(&mut r, Order::OddFirst, Some(&nudge), anderson, None).unwrap();
    check(&r.into_state(), "anderson in offset form");
}

#[test]
fn bad_unit_settings_are_refused_naming_the_key() {
    let resolve = |preset: &str, set: &str| {
        let sets = vec![set.to_string()];
        let cfg = ffebm::train::RunConfig::resolve(Some(preset), None, None, &sets, Some(0))
            .and_then(|c| {
                let m = Model::new(c.model.clone(), 0)?;
                Circuit::new(&c.analog, &m, 0).map(|_| ())
            });
        match cfg {
            Ok(_) => panic!("{set} accepted"),
            Err(e) => format!("{e:#}"),
        }
    };
    for (p, set, key) in [
        ("mnist_mlp", "analog.slope_std=-0.1", "analog.slope_std"),
        (
            "mnist_mlp",
            "analog.blocks.0.offset_std=-1",
            "analog.blocks.0.offset_std",
        ),
        (
            "drn_xs",
            "analog.threshold_std=-0.2",
            "analog.threshold_std",
        ),
        ("mnist_mlp", "analog.slope_sd=0.1", "analog.slope_sd"),
        // a spread with no such units in the model
        (
            "mnist_mlp",
            "analog.threshold_std=0.1",
            "analog.threshold_std",
        ),
        ("drn_xs", "analog.slope_std=0.1", "analog.slope_std"),
        (
            "drn_xs",
            "analog.blocks.0.offset_std=0.1",
            "analog.blocks.0.offset_std",
        ),
    ] {
        let e = resolve(p, set);
        assert!(e.contains(key), "{set}: {e}");
    }
    assert!(resolve("mnist_mlp", "analog.slope_sd=0.1").contains("slope_std"));
}

/// Training on varied units: the checkpoint holds the draws the config makes, a run
/// interrupted mid-epoch and resumed is the same run (the same circuit), and the varied
/// circuit trains differently from the nominal one.
#[test]
fn training_on_varied_units_saves_the_draws_and_resumes_exactly() {
    if common::shared_data().is_none() {
        return;
    }
    let cfg = || small_mnist_config(&["analog.slope_std=0.2", "analog.offset_std=0.2"]);
    let full_dir = temp_dir("analog_units", "full");
    let _ = std::fs::remove_dir_all(&full_dir);
    let full = train_quietly(cfg(), &full_dir, false, None);
    assert!(full.completed);
    assert!(
        full.epochs[1].test_top1 > 25.0,
        "{}",
        full.epochs[1].test_top1
    );
    let ck = full_dir.join("checkpoint_last.safetensors");
    let circuit = Circuit::new(&cfg().analog, &full.model, cfg().seed).unwrap();
    let mut loaded = Circuit::new(&cfg().analog, &full.model, 99).unwrap();
    assert_ne!(loaded.units, circuit.units);
    let n = ffebm::train::checkpoint::load_circuit_devices(&ck, &full.model, &mut loaded, true)
        .unwrap();
    assert_eq!(n, circuit.units.len());
    assert_eq!(loaded.units, circuit.units);
    let dir = temp_dir("analog_units", "resumed");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!train_quietly(cfg(), &dir, false, Some(7)).completed);
    let done = train_quietly(cfg(), &dir, true, None);
    assert_eq!(done.model, full.model);
    let top1 =
        |r: &ffebm::train::RunSummary| r.epochs.iter().map(|e| e.test_top1).collect::<Vec<_>>();
    assert_eq!(top1(&done), top1(&full));
    let nominal_dir = temp_dir("analog_units", "nominal");
    let _ = std::fs::remove_dir_all(&nominal_dir);
    let nominal = train_quietly(small_mnist_config(&[]), &nominal_dir, false, None);
    assert_ne!(
        nominal.model, full.model,
        "the varied units change the training"
    );
}
