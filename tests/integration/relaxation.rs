//! The cached asynchronous relaxation against a naive one that recomputes every term from
//! a snapshot; tolerance stopping rules; NaN detection.

use crate::common;
use common::*;
use ffebm::core::conv::{conv2d, conv2d_transposed};
use ffebm::core::dense::{dense_forward, dense_transposed};
use ffebm::core::ops::activate;
use ffebm::core::pool::{maxpool2x2, unpool2x2};
use ffebm::core::{ConvAlgo, PoolIndex, Tensor};
use ffebm::energy::EnergyBlock;
use ffebm::grad::free_phase;
use ffebm::model::feedforward::{ff_forward, BnMode, FfCache};
use ffebm::model::{prepare, Block, CouplingKind, Model, Norm, PreparedBlock};
use ffebm::relax::{relax, BlockState, Order, Relaxation, Schedule};

/// `P(W_i ⋆ s + b_i)` (or the dense map) and its pool indices, computed from scratch.
fn forward(
    block: &Block,
    kern: &PreparedBlock,
    i: usize,
    s: &Tensor,
) -> (Tensor, Option<PoolIndex>) {
    let syn = &block.couplings[i - 1];
    let bias = syn.bias.as_ref().map(|b| b.data());
    match block.layout.couplings[i - 1] {
        CouplingKind::Conv { pool, .. } => {
            let mut full = Tensor::default();
            conv2d(s, kern.couplings[i - 1].conv(), bias, &mut full).unwrap();
            if pool {
                let (mut y, mut idx) = (Tensor::default(), PoolIndex::default());
                maxpool2x2(&full, &mut y, &mut idx).unwrap();
                (y, Some(idx))
            } else {
                (full, None)
            }
        }
        CouplingKind::Dense { .. } => {
            let mut y = Tensor::default();
            dense_forward(s, kern.couplings[i - 1].dense(), bias, &mut y).unwrap();
            (y, None)
        }
        CouplingKind::Resistive { .. } => unreachable!("hopfield blocks only"),
    }
}

/// One sweep where each parity group is computed from a snapshot, then assigned.
fn naive_sweep(block: &Block, kern: &PreparedBlock, u: &Tensor, s: &mut BlockState, order: Order) {
    let n = s.layers.len();
    let first = if order == Order::EvenFirst { 0 } else { 1 };
    for parity in [first, 1 - first] {
        let snap = s.clone();
        for l in (parity..n).step_by(2) {
            let bu = if l == 0 {
                u.clone()
            } else {
                forward(block, kern, l, &snap.layers[l - 1]).0
            };
            let td = (l + 1 < n).then(|| match block.layout.couplings[l] {
                CouplingKind::Conv { .. } => {
                    let (_, idx) = forward(block, kern, l + 1, &snap.layers[l]);
                    let src = match idx {
                        Some(idx) => {
                            let mut full = Tensor::default();
                            unpool2x2(&snap.layers[l + 1], &idx, &mut full).unwrap();
                            full
                        }
                        None => snap.layers[l + 1].clone(),
                    };
                    let mut td = Tensor::default();
                    conv2d_transposed(&src, kern.couplings[l].conv(), &mut td).unwrap();
                    td
                }
                CouplingKind::Dense { .. } => {
                    let mut td = Tensor::default();
                    let shape = snap.layers[l].shape();
                    dense_transposed(
                        &snap.layers[l + 1],
                        kern.couplings[l].dense(),
                        shape,
                        &mut td,
                    )
                    .unwrap();
                    td
                }
                CouplingKind::Resistive { .. } => unreachable!("hopfield blocks only"),
            });
            let clamped = l + 1 < n || block.layout.clamp_last;
            let terms: Vec<&Tensor> = std::iter::once(&bu).chain(td.as_ref()).collect();
            activate(
                &terms,
                block.layout.alpha,
                clamped,
                &mut s.layers[l],
                None,
                None,
            )
            .unwrap();
        }
    }
}

fn deep_block_model() -> Model {
    let mut c = two_block_config(0.5, 0.5);
    c.conv_algo = ConvAlgo::Direct;
    // block 0: 4 layers mixing pooled and unpooled convs; block 1: conv then two dense layers
    c.input = [3, 16, 16];
    c.blocks = vec![
        block(&[3, 4, 5, 6, 5], "m-m-", &[], Norm::Batchnorm, true),
        block(&[5, 6], "-", &[7, 4], Norm::None, false),
    ];
    Model::new(c, 21).unwrap()
}

#[test]
fn cached_relaxation_equals_naive_recomputation() {
    let model = deep_block_model();
    let kern = prepare(&model).unwrap();
    let (x, _) = batch(&model, 3, 2);
    let mut input = x.clone();
    for (k, (block, kb)) in model.blocks.iter().zip(&kern).enumerate() {
        let eb = EnergyBlock::hopfield(&model, &kern, k);
        let u = ff_forward(
            block,
            kb.ff.as_ref(),
            &input,
            BnMode::Train,
            &mut FfCache::default(),
        )
        .unwrap();
        let start = BlockState::zeros(&block.layout.layers, 3);
        let mut naive = start.clone();
        let mut r = Relaxation::new(&eb, &u, start, "test");
        for t in 0..12 {
            let order = if t < 8 {
                Order::EvenFirst
            } else {
                Order::OddFirst
            };
            naive_sweep(block, kb, &u, &mut naive, order);
            r.sweep(order, None, None, None).unwrap();
            for (a, b) in r.state.layers.iter().zip(&naive.layers) {
                assert_eq!(a, b, "sweep {t}");
            }
        }
        // one forward per coupling and sweep (plus the first sweep and the order switch)
        let couplings = block.layout.couplings.len();
        assert!(
            r.forward_evals() <= couplings * (12 + 2),
            "{} forward evaluations",
            r.forward_evals()
        );
        input = r.into_state().last().clone();
    }
}

#[test]
fn batch_tolerance_stops_at_the_first_sweep_below_tol() {
    let model = deep_block_model();
    let kern = prepare(&model).unwrap();
    let (x, _) = batch(&model, 4, 3);
    let block = &model.blocks[0];
    let u = ff_forward(
        block,
        kern[0].ff.as_ref(),
        &x,
        BnMode::Train,
        &mut FfCache::default(),
    )
    .unwrap();
    let tol = 1e-3;
    let eb = EnergyBlock::hopfield(&model, &kern, 0);
    let mut r = Relaxation::new(&eb, &u, BlockState::zeros(&block.layout.layers, 4), "test");
    let rep = relax(
        &mut r,
        Order::EvenFirst,
        None,
        Schedule {
            sweeps: 500,
            tol: Some(tol),
            ..Schedule::fixed(500)
        },
        None,
    )
    .unwrap();
    assert!(
        rep.converged && rep.sweeps < 500 && rep.final_measure < tol as f64,
        "{rep:?}"
    );
    // the sweep before did not meet the tolerance
    let mut r2 = Relaxation::new(&eb, &u, BlockState::zeros(&block.layout.layers, 4), "test");
    relax(
        &mut r2,
        Order::EvenFirst,
        None,
        Schedule::fixed(rep.sweeps - 2),
        None,
    )
    .unwrap();
    assert!(
        r2.sweep(Order::EvenFirst, None, None, None)
            .unwrap()
            .measure
            >= tol as f64
    );
    assert_eq!(
        r2.sweep(Order::EvenFirst, None, None, None)
            .unwrap()
            .measure,
        rep.final_measure
    );
    assert_eq!(r2.state, r.state);
}

#[test]
fn per_sample_tolerance_freezes_each_sample_at_its_own_sweep() {
    let model = deep_block_model();
    let kern = prepare(&model).unwrap();
    let (x, _) = batch(&model, 5, 4);
    let block = &model.blocks[0];
    let u = ff_forward(
        block,
        kern[0].ff.as_ref(),
        &x,
        BnMode::Train,
        &mut FfCache::default(),
    )
    .unwrap();
    let eb = EnergyBlock::hopfield(&model, &kern, 0);
    let mut r = Relaxation::new(&eb, &u, BlockState::zeros(&block.layout.layers, 5), "test");
    let rep = relax(
        &mut r,
        Order::EvenFirst,
        None,
        Schedule {
            sweeps: 400,
            tol: Some(1e-3),
            per_sample: true,
            ..Schedule::fixed(400)
        },
        None,
    )
    .unwrap();
    assert_eq!(rep.sample_sweeps.len(), 5);
    assert!(rep.converged);
    // each sample's state equals a fixed relaxation of its own length (samples are independent)
    for (i, &t) in rep.sample_sweeps.iter().enumerate() {
        let mut f = Relaxation::new(&eb, &u, BlockState::zeros(&block.layout.layers, 5), "test");
        relax(&mut f, Order::EvenFirst, None, Schedule::fixed(t), None).unwrap();
        for (a, b) in r.state.layers.iter().zip(&f.state.layers) {
            assert_eq!(
                a.rows(i..i + 1),
                b.rows(i..i + 1),
                "sample {i} stopped at sweep {t}"
            );
        }
    }
}

#[test]
fn nan_in_the_input_is_reported_with_block_layer_and_sweep() {
    let model = deep_block_model();
    let kern = prepare(&model).unwrap();
    let (mut x, _) = batch(&model, 2, 5);
    x.data_mut()[7] = f32::NAN;
    let mut c = model.config.clone();
    c.blocks[0].norm = Norm::None;
    let m2 = Model::new(c, 1).unwrap();
    let k2 = prepare(&m2).unwrap();
    let e = free_phase(&m2, &k2, &x, BnMode::Train, Schedule::fixed(5)).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("block 0 diverged") && msg.contains("layer 0 at sweep 1 of the free phase"),
        "{msg}"
    );
    let _ = kern;
}
