//! Gradient correctness: ID against finite differences of the unrolled loss, EP against ID
//! (centered EP is O(β²)), determinism, and the caching of the relaxation against a naive
//! recomputation.

use crate::common;
use common::*;
use ffebm::core::Tensor;
use ffebm::grad::id;
use ffebm::grad::*;
use ffebm::model::feedforward::BnMode;
use ffebm::model::{prepare, Model, ParamId};
use ffebm::relax::Order;
use ffebm::relax::Schedule;

fn cfg(t1: usize, t2: usize, beta: f32) -> AlgoConfig {
    AlgoConfig::ep(t1, t2, beta)
}

/// ID from block `first` with `sweeps[k]` unrolled sweeps (free-phase order).
fn id_from_block(
    model: &Model,
    kern: &[ffebm::model::PreparedBlock],
    free: &FreePhase,
    y: &[u32],
    first: usize,
    sweeps: &[usize],
    exact: bool,
) -> anyhow::Result<id::IdOutput> {
    let chain = Chain::new(model, kern);
    id::id_from_block(&chain, free, y, first, sweeps, Order::EvenFirst, exact)
}

/// Loss of the unrolled computation (T2 sweeps from the fixed free states) at `model`.
fn unrolled_loss(model: &Model, free: &FreePhase, y: &[u32], t2: usize) -> f64 {
    let kern = prepare(model).unwrap();
    let sweeps = vec![t2; model.blocks.len()];
    id_from_block(model, &kern, free, y, 0, &sweeps, true)
        .unwrap()
        .loss as f64
}

#[test]
fn id_exact_matches_finite_differences_of_the_unrolled_loss() {
    let model = Model::new(two_block_config(0.5, 0.5), 11).unwrap();
    let kern = prepare(&model).unwrap();
    let (x, y) = batch(&model, 3, 5);
    let t2 = 4;
    let free = free_phase(&model, &kern, &x, BnMode::Train, Schedule::fixed(25)).unwrap();
    let sweeps = vec![t2; model.blocks.len()];
    let id = id_from_block(&model, &kern, &free, &y, 0, &sweeps, true).unwrap();
    // f32 finite differences carry ~1e-7·L/(2ε) of rounding noise, and a step large enough
    // to move a max-pool argmax makes the loss jump (ε ≥ 4e-3 does here): small ε, loose
    // single-coordinate checks and tight whole-tensor directional derivatives
    let eps = 1e-3f32;
    let fd = |dir: &dyn Fn(&mut Model, f32)| {
        let (mut plus, mut minus) = (model.clone(), model.clone());
        dir(&mut plus, eps);
        dir(&mut minus, -eps);
        (unrolled_loss(&plus, &free, &y, t2) - unrolled_loss(&minus, &free, &y, t2))
            / (2.0 * eps as f64)
    };
    let mut checked = 0;
    for id_ in model.param_ids() {
        let g = id.grads.get(id_).clone();
        let name = model.param_name(id_);
        let gnorm = g
            .data()
            .iter()
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let gmax = g.data().iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
        // direction: half along the gradient, half a fixed pseudo-random unit vector
        let r: Vec<f64> = (0..g.len())
            .map(|i| ((i * 7919 % 13) as f64) - 6.0)
            .collect();
        let rn = r.iter().map(|v| v * v).sum::<f64>().sqrt();
        let d: Vec<f32> = g
            .data()
            .iter()
            .zip(&r)
            .map(|(gv, rv)| ((*gv as f64 / gnorm + rv / rn) / 2f64.sqrt()) as f32)
            .collect();
        let want: f64 = g
            .data()
            .iter()
            .zip(&d)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        let got = fd(&|m: &mut Model, e: f32| {
            m.param_mut(id_)
                .data_mut()
                .iter_mut()
                .zip(&d)
                .for_each(|(p, dv)| *p += e * dv)
        });
        assert!(
            (got - want).abs() <= 1e-2 * want.abs() + 2e-4,
            "{name}: directional derivative {got:.6e} vs ID {want:.6e}"
        );
        let mut order: Vec<usize> = (0..g.len()).collect();
        order.sort_by(|&a, &b| g.data()[b].abs().total_cmp(&g.data()[a].abs()));
        for &i in order
            .iter()
            .take(3)
            .chain([g.len() / 2, g.len() - 1].iter())
        {
            let got = fd(&|m: &mut Model, e: f32| m.param_mut(id_).data_mut()[i] += e);
            let an = g.data()[i] as f64;
            assert!(
                (got - an).abs() <= 5e-3 * gmax + 5e-2 * an.abs() + 2e-4,
                "{name}[{i}]: finite difference {got:.6e} vs ID {an:.6e} (max |g| {gmax:.3e})"
            );
            checked += 1;
        }
    }
    assert!(checked >= 50);
}

#[test]
fn ep_matches_id_exact_and_its_bias_shrinks_like_beta_squared() {
    let model = Model::new(two_block_config(0.5, 0.5), 1).unwrap();
    let kern = prepare(&model).unwrap();
    let (x, y) = batch(&model, 4, 3);
    let id = compute_gradients(
        &model,
        &kern,
        &x,
        &y,
        &cfg(200, 100, 0.1).with(Algorithm::IdExact),
    )
    .unwrap();
    let err = |beta: f32| {
        let ep = compute_gradients(
            &model,
            &kern,
            &x,
            &y,
            &cfg(200, 100, beta).with(Algorithm::Ep),
        )
        .unwrap();
        (total_rel_err(&ep.grads, &id.grads), ep)
    };
    let (e_big, _) = err(0.1);
    let (e_small, ep) = err(0.01);
    // block 0's parameters only receive their gradient through the error current of block 1
    for (pid, g) in &ep.grads.entries {
        let c = cosine(g, id.grads.get(*pid));
        assert!(c >= 0.999, "{}: EP/ID cosine {c}", model.param_name(*pid));
    }
    assert!(
        e_small < 3e-3,
        "EP-ID relative error at beta 0.01: {e_small}"
    );
    assert!(
        e_big / e_small > 30.0,
        "EP bias should shrink like beta^2: {e_big:.3e} at 0.1 vs {e_small:.3e} at 0.01"
    );
}

#[test]
fn same_seed_gives_bit_identical_gradients_and_threads_agree() {
    let model = Model::new(two_block_config(0.5, 0.5), 4).unwrap();
    let kern = prepare(&model).unwrap();
    let (x, y) = batch(&model, 4, 9);
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let a =
                    compute_gradients(&model, &kern, &x, &y, &cfg(30, 10, 0.1).with(Algorithm::Ep))
                        .unwrap();
                let b = compute_gradients(
                    &model,
                    &kern,
                    &x,
                    &y,
                    &cfg(30, 10, 0.1).with(Algorithm::IdExact),
                )
                .unwrap();
                (a.grads, b.grads)
            })
    };
    let (ep1, id1) = run(2);
    let (ep2, id2) = run(2);
    assert_eq!(ep1, ep2);
    assert_eq!(id1, id2);
    assert_eq!(Model::new(two_block_config(0.5, 0.5), 4).unwrap(), model);
    // thread count only changes float reassociation (tolerance 1e-5 relative)
    let (ep3, id3) = run(1);
    assert!(
        total_rel_err(&ep3, &ep1) < 1e-5,
        "EP 1 vs 2 threads: {}",
        total_rel_err(&ep3, &ep1)
    );
    assert!(
        total_rel_err(&id3, &id1) < 1e-5,
        "ID 1 vs 2 threads: {}",
        total_rel_err(&id3, &id1)
    );
}

#[test]
fn reference_variant_drops_only_the_top_down_weight_term() {
    // with a single-layer block (no couplings) both ID variants coincide exactly
    let mut c = two_block_config(0.5, 0.5);
    c.blocks = vec![block(
        &[3, 4],
        "m",
        &[],
        ffebm::model::Norm::Batchnorm,
        false,
    )];
    let model = Model::new(c, 2).unwrap();
    let kern = prepare(&model).unwrap();
    let (x, y) = batch(&model, 3, 1);
    let a = compute_gradients(
        &model,
        &kern,
        &x,
        &y,
        &cfg(20, 5, 0.1).with(Algorithm::IdExact),
    )
    .unwrap();
    let b = compute_gradients(
        &model,
        &kern,
        &x,
        &y,
        &cfg(20, 5, 0.1).with(Algorithm::IdReference),
    )
    .unwrap();
    assert_eq!(a.grads, b.grads);
    // with couplings, biases of the top coupling and the readout agree but weights with a
    // top-down use differ
    let model = Model::new(two_block_config(0.5, 0.5), 2).unwrap();
    let kern = prepare(&model).unwrap();
    let a = compute_gradients(
        &model,
        &kern,
        &x,
        &y,
        &cfg(20, 5, 0.1).with(Algorithm::IdExact),
    )
    .unwrap();
    let b = compute_gradients(
        &model,
        &kern,
        &x,
        &y,
        &cfg(20, 5, 0.1).with(Algorithm::IdReference),
    )
    .unwrap();
    let w = ParamId::Synapse {
        block: 0,
        index: 1,
        bias: false,
    };
    assert!(rel_err(b.grads.get(w), a.grads.get(w)) > 1e-3);
    assert_eq!(a.loss, b.loss);
    let _ = Tensor::default();
}
