//! Energies and their minimisers: a layer update is the exact minimiser of the block's energy
//! along that layer (checked by brute force), a resistive block's energy never increases over
//! a half-sweep, DRN gradients (ID-exact against finite differences, EP against ID, the EP
//! variants' orders in β), and the guards of resistive blocks.

use crate::common;
use common::*;
use ffebm::core::Tensor;
use ffebm::energy::{EnergyBlock, Interaction, Nudge};
use ffebm::grad::id::id_from_block;
use ffebm::grad::*;
use ffebm::model::feedforward::{ff_forward, BnMode, FfCache};
use ffebm::model::{prepare, Model, ModelConfig};
use ffebm::relax::{BlockState, Order, Relaxation, Schedule};

/// One resistive block with a pooled feedforward conv.
const DRN: &str = "input = [2, 4, 4]\nclasses = 3\nalpha = 0.5\ninit_v = 0.5\ncost = \"squared-error\"\n\n[[blocks]]\nkind = \"resistive\"\nchannels = [2, 3]\npools = \"m\"\nnorm = \"none\"\nfc = [6, 3]\ngain = 2.0\n";

/// A Hopfield conv block chained into a resistive block fed directly by its last layer.
const CHAIN: &str = "input = [2, 4, 4]\nclasses = 3\nalpha = 0.5\ninit_v = 0.5\ncost = \"squared-error\"\n\n[[blocks]]\nchannels = [2, 4, 4]\npools = \"m-\"\nnorm = \"batchnorm\"\nclamp_last = true\n\n[[blocks]]\nkind = \"resistive\"\nchannels = [4]\npools = \"\"\nnorm = \"none\"\nfc = [8, 3]\ngain = 3.0\n";

/// A Hopfield block without pools (every coupling bilinear).
const HOPFIELD: &str = "input = [2, 4, 4]\nclasses = 3\nalpha = 0.5\ninit_v = 0.5\n\n[[blocks]]\nchannels = [2, 2, 3]\npools = \"--\"\nfc = [4]\n";

fn model(toml: &str, seed: u64) -> Model {
    Model::new(ModelConfig::from_toml(toml).unwrap(), seed).unwrap()
}

/// The model with small random biases: with zero biases, units fed only by exactly-zero
/// states sit exactly on a diode or hard-sigmoid kink (`z = 0`), where EP's finite nudges
/// and ID's one-sided derivative legitimately differ.
fn off_kinks(mut m: Model) -> Model {
    for id in m.param_ids() {
        if let ffebm::model::ParamId::Synapse { bias: true, .. } = id {
            let r = ffebm::core::testutil::random_tensor(m.param(id).shape(), 77);
            let p = m.param_mut(id);
            p.data_mut()
                .iter_mut()
                .zip(r.data())
                .for_each(|(v, q)| *v += 0.05 * q);
        }
    }
    m
}

/// The drive of block 0 and a random state inside every layer's domain.
fn setup(m: &Model, b: usize, seed: u64) -> (Tensor, BlockState) {
    let kern = prepare(m).unwrap();
    let (x, _) = batch(m, b, seed);
    let u = ff_forward(
        &m.blocks[0],
        kern[0].ff.as_ref(),
        &x,
        BnMode::Train,
        &mut FfCache::default(),
    )
    .unwrap();
    let mut s = BlockState::zeros(&m.blocks[0].layout.layers, b);
    let n = s.layers.len();
    for (l, t) in s.layers.iter_mut().enumerate() {
        let f = t.row_len();
        let r = ffebm::core::testutil::random_tensor(t.shape(), seed + 10 + l as u64);
        for (i, (v, rv)) in t.data_mut().iter_mut().zip(r.data()).enumerate() {
            *v = match m.blocks[0].layout.kind {
                ffebm::model::BlockKind::Hopfield if l + 1 < n => rv.abs().min(1.0),
                ffebm::model::BlockKind::Resistive if l + 1 < n => {
                    if i % f < f / 2 {
                        rv.abs()
                    } else {
                        -rv.abs()
                    }
                }
                _ => *rv,
            };
        }
    }
    (u, s)
}

/// For every layer: the update's value is the minimiser of E along the layer, found by a
/// 1-D grid search per unit (the energy is separable within a layer) over `grid`.
fn check_layer_updates_minimise(m: &Model, grid: &dyn Fn(usize, usize, usize) -> Vec<f32>) {
    let kern = prepare(m).unwrap();
    let eb = EnergyBlock::all(m, &kern).remove(0);
    let (u, start) = setup(m, 1, 4);
    let energy = |s: &BlockState| eb.energy(&u, s, None).unwrap()[0];
    for l in 0..start.layers.len() {
        let mut r = Relaxation::new(&eb, &u, start.clone(), "test");
        r.update(l, None).unwrap();
        let updated = r.into_state();
        let e_upd = energy(&updated);
        let f = updated.layers[l].len();
        for i in 0..f {
            let mut best = (f64::INFINITY, 0.0f32);
            for v in grid(l, i, f) {
                let mut s = updated.clone();
                s.layers[l].data_mut()[i] = v;
                let e = energy(&s);
                if e < best.0 {
                    best = (e, v);
                }
            }
            let got = updated.layers[l].data()[i];
            // (the energy is evaluated from f32 states: equal to ~1e-7 relative)
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
}

#[test]
fn hopfield_layer_updates_are_the_exact_minimisers_within_the_box() {
    let m = model(HOPFIELD, 1);
    let n = m.blocks[0].layout.layers.len();
    check_layer_updates_minimise(&m, &|l, _, _| {
        if l + 1 < n {
            (0..=2000).map(|k| k as f32 / 2000.0).collect()
        } else {
            (-4000..=4000).map(|k| k as f32 / 1000.0).collect()
        }
    });
}

#[test]
fn resistive_layer_updates_are_the_exact_minimisers_within_the_diode_projection() {
    let m = model(DRN, 2);
    let n = m.blocks[0].layout.layers.len();
    check_layer_updates_minimise(&m, &|l, i, f| {
        let r = (0..=4000).map(|k| k as f32 / 500.0);
        match (l + 1 < n, i < f / 2) {
            (true, true) => r.collect(),
            (true, false) => r.map(|v| -v).collect(),
            (false, _) => (-4000..=4000).map(|k| k as f32 / 500.0).collect(),
        }
    });
}

#[test]
fn resistive_energy_never_increases_over_a_half_sweep() {
    for (toml, seed) in [(DRN, 3), (DRN, 5)] {
        let m = model(toml, seed);
        let kern = prepare(&m).unwrap();
        let eb = EnergyBlock::all(&m, &kern).remove(0);
        let (u, _) = setup(&m, 3, seed);
        let (_, y) = batch(&m, 3, seed);
        let n = m.blocks[0].layout.layers.len();
        let start = BlockState::zeros(&m.blocks[0].layout.layers, 3);
        // with and without a squared-error nudge
        for beta in [0.0f32, 0.3] {
            let nudge = Nudge::squared_error(beta, n - 1, &y, 3).unwrap();
            let cost: Option<&dyn Interaction> = (beta != 0.0).then_some(&nudge as _);
            let mut r = Relaxation::new(&eb, &u, start.clone(), "test");
            let mut e = eb.energy(&u, &r.state, cost).unwrap();
            for _ in 0..6 {
                for group in Order::EvenFirst.groups(n) {
                    for l in group {
                        r.update(l, cost).unwrap();
                    }
                    let e2 = eb.energy(&u, &r.state, cost).unwrap();
                    for (a, b) in e2.iter().zip(&e) {
                        assert!(*a <= *b + 1e-6 * b.abs().max(1.0), "energy rose {b} -> {a}");
                    }
                    e = e2;
                }
            }
        }
    }
}

fn ep_cfg(t: usize, beta: f32, variant: EpVariant) -> AlgoConfig {
    AlgoConfig {
        variant,
        ..AlgoConfig::ep(t, t, beta)
    }
}

#[test]
fn drn_id_exact_matches_finite_differences_of_the_unrolled_loss() {
    for toml in [DRN, CHAIN] {
        let m = model(toml, 7);
        let kern = prepare(&m).unwrap();
        let (x, y) = batch(&m, 3, 2);
        let free = free_phase(&m, &kern, &x, BnMode::Train, Schedule::fixed(40)).unwrap();
        let t2 = 5;
        let sweeps = vec![t2; m.blocks.len()];
        let loss = |mm: &Model| {
            let k = prepare(mm).unwrap();
            let chain = Chain::new(mm, &k);
            id_from_block(&chain, &free, &y, 0, &sweeps, Order::EvenFirst, true)
                .unwrap()
                .loss as f64
        };
        let chain = Chain::new(&m, &kern);
        let id = id_from_block(&chain, &free, &y, 0, &sweeps, Order::EvenFirst, true).unwrap();
        let eps = 1e-3f32;
        for pid in m.param_ids() {
            let g = id.grads.get(pid).clone();
            let name = m.param_name(pid);
            let gn = g
                .data()
                .iter()
                .map(|v| (*v as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            if gn == 0.0 {
                continue;
            }
            // along the normalised gradient: the directional derivative is ‖g‖
            let dir: Vec<f32> = g.data().iter().map(|v| (*v as f64 / gn) as f32).collect();
            let shifted = |e: f32| {
                let mut mm = m.clone();
                mm.param_mut(pid)
                    .data_mut()
                    .iter_mut()
                    .zip(&dir)
                    .for_each(|(p, d)| *p += e * d);
                loss(&mm)
            };
            let fd = (shifted(eps) - shifted(-eps)) / (2.0 * eps as f64);
            assert!(
                (fd - gn).abs() <= 2e-2 * gn + 2e-4,
                "{toml:.20}… {name}: finite difference {fd:.6e} vs ‖ID‖ {gn:.6e}"
            );
        }
    }
}

#[test]
fn drn_ep_matches_id_exact_and_its_error_shrinks_like_beta_squared() {
    for toml in [DRN, CHAIN] {
        let m = off_kinks(model(toml, 11));
        let kern = prepare(&m).unwrap();
        let (x, y) = batch(&m, 4, 6);
        let id = compute_gradients(
            &m,
            &kern,
            &x,
            &y,
            &ep_cfg(150, 0.1, EpVariant::Centered).with(Algorithm::IdExact),
        )
        .unwrap();
        let err = |beta: f32| {
            let ep = compute_gradients(&m, &kern, &x, &y, &ep_cfg(150, beta, EpVariant::Centered))
                .unwrap();
            (total_rel_err(&ep.grads, &id.grads), ep)
        };
        let (e_big, _) = err(0.1);
        let (e_small, ep) = err(0.01);
        for (pid, g) in &ep.grads.entries {
            let c = cosine(g, id.grads.get(*pid));
            assert!(c >= 0.999, "{}: EP/ID cosine {c}", m.param_name(*pid));
        }
        assert!(
            e_big / e_small >= 30.0,
            "centered EP error {e_big:.3e} at β 0.1 vs {e_small:.3e} at β 0.01"
        );
    }
}

#[test]
fn one_sided_ep_variants_converge_like_beta() {
    // a Hopfield model with pooled couplings and batch-norm, and a DRN chained to it
    let models = [
        off_kinks(Model::new(two_block_config(0.5, 0.5), 3).unwrap()),
        off_kinks(model(CHAIN, 4)),
    ];
    for m in models {
        let kern = prepare(&m).unwrap();
        let (x, y) = batch(&m, 4, 9);
        let t = 150;
        let id = compute_gradients(
            &m,
            &kern,
            &x,
            &y,
            &ep_cfg(t, 0.1, EpVariant::Centered).with(Algorithm::IdExact),
        )
        .unwrap();
        for variant in [EpVariant::Positive, EpVariant::Negative] {
            let err = |beta: f32| {
                let ep = compute_gradients(&m, &kern, &x, &y, &ep_cfg(t, beta, variant)).unwrap();
                total_rel_err(&ep.grads, &id.grads)
            };
            // in the small-β regime (below the nudges that move a unit across a kink; above
            // f32 round-off) an O(β) error halves with β, a centered one would quarter
            let (big, small) = (err(0.01), err(0.005));
            let ratio = big / small;
            assert!(
                (1.6..=2.6).contains(&ratio),
                "{variant:?}: error {big:.3e} at β 0.01 vs {small:.3e} at β 0.005 (ratio {ratio:.2}, O(β) means ~2)"
            );
        }
    }
}

#[test]
fn a_negative_nudge_larger_than_the_output_conductances_is_an_error_naming_the_unit() {
    let m = model(DRN, 1);
    let kern = prepare(&m).unwrap();
    let (x, y) = batch(&m, 2, 1);
    let e = compute_gradients(&m, &kern, &x, &y, &ep_cfg(10, 50.0, EpVariant::Centered))
        .expect_err("β = 50 exceeds every output conductance sum");
    let msg = format!("{e:#}");
    assert!(
        msg.contains("block 0")
            && msg.contains("unit")
            && msg.contains("layer 1")
            && msg.contains("smaller β"),
        "{msg}"
    );
}

#[test]
fn id_reference_is_refused_for_resistive_blocks() {
    let m = model(DRN, 1);
    let kern = prepare(&m).unwrap();
    let (x, y) = batch(&m, 2, 1);
    let e = compute_gradients(
        &m,
        &kern,
        &x,
        &y,
        &ep_cfg(10, 0.1, EpVariant::Centered).with(Algorithm::IdReference),
    )
    .expect_err("id-reference is a Hopfield approximation");
    assert!(format!("{e:#}").contains("id-exact"), "{e:#}");
}
