//! Static gradient analysis (SPEC §2.4; the paper's Figs. 3–5): for one batch at fixed
//! weights, EP against ID (both variants) per parameter tensor, and the transient curves
//! — the EP estimate after t = 0..T2 nudged sweeps against ID truncated to t unrolled
//! sweeps, block by block from the output.

use crate::core::Tensor;
use crate::grad::ep::{ep_gradients, ep_gradients_and_currents, feedforward_backward};
use crate::grad::id::id_from_block;
use crate::grad::{free_phase, FreePhase};
use crate::model::feedforward::BnMode;
use crate::model::readout::accumulate_readout_grads;
use crate::model::{Grads, Model, ParamId, PreparedBlock};
use crate::relax::{Nudge, Order, Relaxation, Schedule};
use anyhow::Result;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// EP against one ID variant on one tensor.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    pub cosine: f64,
    /// `‖g_EP − g_ID‖ / ‖g_ID‖`.
    pub rel_error: f64,
    /// `‖g_EP‖ / ‖g_ID‖`.
    pub norm_ratio: f64,
    /// Fraction of coordinates where both have the same sign (zeros count as agreeing).
    pub sign_agreement: f64,
}

/// Compares two gradient tensors.
pub fn agreement(ep: &Tensor, id: &Tensor) -> Agreement {
    let (mut dot, mut ne, mut ni, mut nd, mut same) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0usize);
    for (&a, &b) in ep.data().iter().zip(id.data()) {
        let (a, b) = (a as f64, b as f64);
        dot += a * b;
        ne += a * a;
        ni += b * b;
        nd += (a - b) * (a - b);
        if a.signum() == b.signum() || a == 0.0 || b == 0.0 {
            same += 1;
        }
    }
    let ni_s = ni.sqrt().max(1e-300);
    Agreement {
        cosine: dot / (ne.sqrt() * ni.sqrt()).max(1e-300),
        rel_error: nd.sqrt() / ni_s,
        norm_ratio: ne.sqrt() / ni_s,
        sign_agreement: same as f64 / ep.len().max(1) as f64,
    }
}

/// Relative error over all tensors at once, `‖g_EP − g_ID‖ / ‖g_ID‖`.
pub fn total_rel_error(ep: &Grads, id: &Grads) -> f64 {
    let (mut d, mut n) = (0.0f64, 0.0f64);
    for ((_, a), (_, b)) in ep.entries.iter().zip(&id.entries) {
        for (&x, &y) in a.data().iter().zip(b.data()) {
            d += (x as f64 - y as f64).powi(2);
            n += (y as f64).powi(2);
        }
    }
    (d / n.max(1e-300)).sqrt()
}

/// One parameter tensor's results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TensorReport {
    pub name: String,
    pub block: usize,
    /// Layer (synapse index) within the block; readout: `None`.
    pub synapse: Option<usize>,
    pub is_weight: bool,
    pub vs_id_exact: Agreement,
    pub vs_id_reference: Agreement,
    /// Flat indices of the tracked coordinates.
    pub coords: Vec<usize>,
    /// `ep[t][j]`: EP estimate of coordinate `coords[j]` after `t` nudged sweeps.
    pub ep: Vec<Vec<f64>>,
    /// `id_exact[t][j]`, `id_reference[t][j]`: ID truncated to `t` unrolled sweeps.
    pub id_exact: Vec<Vec<f64>>,
    pub id_reference: Vec<Vec<f64>>,
}

/// The whole analysis.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GddReport {
    pub beta: f32,
    pub t1: usize,
    pub t2: usize,
    pub batch: usize,
    pub loss: f32,
    pub tensors: Vec<TensorReport>,
    /// Relative EP–ID error over all tensors.
    pub total_rel_error_exact: f64,
    pub total_rel_error_reference: f64,
}

/// Settings of [`analyse`].
#[derive(Clone, Debug)]
pub struct GddConfig {
    pub t1: usize,
    pub t2: usize,
    pub beta: f32,
    /// Coordinates tracked per tensor in the transient curves.
    pub coords: usize,
    pub seed: u64,
    /// Compute the transient curves (the costly part).
    pub transients: bool,
}

fn owner(id: ParamId, kk: usize) -> (usize, Option<usize>, bool) {
    match id {
        ParamId::Synapse { block, index, bias } => (block, Some(index), !bias),
        ParamId::Bn { block, bias } => (block, None, !bias),
        ParamId::Readout { bias } => (kk - 1, None, !bias),
    }
}

/// EP gradients of the parameters of block `k` (and the readout for the last block) after
/// each of `t = 0..=t2` nudged sweeps, given the error current `delta` from above.
fn ep_transient(
    (model, kernels, free, labels): (&Model, &[PreparedBlock], &FreePhase, &[u32]),
    k: usize,
    cfg: &GddConfig,
    delta: Option<&Tensor>,
) -> Result<Vec<Grads>> {
    let (beta, t2) = (cfg.beta, cfg.t2);
    let b = labels.len() as f32;
    let c = 1.0 / (2.0 * beta * b);
    let block = &model.blocks[k];
    let last = k + 1 == model.blocks.len();
    let mut traj: [Vec<crate::relax::BlockState>; 2] = [Vec::new(), Vec::new()];
    for (si, sign) in [1.0f32, -1.0].into_iter().enumerate() {
        let nudge = Nudge::for_block(delta, sign * beta, &model.readout, labels);
        let mut r = Relaxation::new(
            block,
            &kernels[k],
            &free.drives[k],
            free.states[k].clone(),
            "nudged phase",
        );
        traj[si].push(r.state.clone());
        for _ in 0..t2 {
            r.sweep(Order::OddFirst, Some(&nudge), None, None)?;
            traj[si].push(r.state.clone());
        }
    }
    let mut out = Vec::with_capacity(t2 + 1);
    for t in 0..=t2 {
        let mut g = model.zero_grads();
        let mut rp = Relaxation::new(
            block,
            &kernels[k],
            &free.drives[k],
            traj[0][t].clone(),
            "nudged phase",
        );
        let mut rm = Relaxation::new(
            block,
            &kernels[k],
            &free.drives[k],
            traj[1][t].clone(),
            "nudged phase",
        );
        crate::grad::phi::accumulate_coupling_contrast(
            k,
            &block.layout.couplings,
            &mut rm,
            Some(&mut rp),
            c,
            &mut g,
        )?;
        if last {
            let (gw, gb) = crate::grad::ep::readout_grads(&mut g);
            for s in &traj {
                accumulate_readout_grads(&model.readout, s[t].last(), labels, 0.5 / b, gw, gb)?;
            }
        }
        let mut g_u = Tensor::default();
        crate::core::ops::lin_comb(
            &mut g_u,
            c,
            &traj[1][t].layers[0],
            -c,
            &traj[0][t].layers[0],
        )?;
        feedforward_backward(model, kernels, k, &free.ff[k], &g_u, &mut g)?;
        out.push(g);
    }
    Ok(out)
}

/// Runs the analysis on one batch (BN in training mode, as in a training step).
/// `progress(done, total)` is called after each truncated ID pair of the transients
/// (`total` = blocks × (T2 + 1)), the costly part.
pub fn analyse(
    model: &Model,
    kernels: &[PreparedBlock],
    x: &Tensor,
    labels: &[u32],
    cfg: &GddConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<GddReport> {
    let free = free_phase(model, kernels, x, BnMode::Train, Schedule::fixed(cfg.t1))?;
    let kk = model.blocks.len();
    let (ep, deltas) = ep_gradients_and_currents(model, kernels, &free, labels, cfg.beta, cfg.t2)?;
    let sweeps = vec![cfg.t2; kk];
    let id_exact = id_from_block(model, kernels, &free, labels, 0, &sweeps, true)?;
    let id_ref = id_from_block(model, kernels, &free, labels, 0, &sweeps, false)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut tensors: Vec<TensorReport> = ep
        .entries
        .iter()
        .map(|(id, g)| {
            let (block, synapse, is_weight) = owner(*id, kk);
            let coords = (0..cfg.coords.min(g.len()))
                .map(|_| rng.gen_range(0..g.len()))
                .collect();
            TensorReport {
                name: model.param_name(*id),
                block,
                synapse,
                is_weight,
                vs_id_exact: agreement(g, id_exact.grads.get(*id)),
                vs_id_reference: agreement(g, id_ref.grads.get(*id)),
                coords,
                ep: Vec::new(),
                id_exact: Vec::new(),
                id_reference: Vec::new(),
            }
        })
        .collect();
    if cfg.transients {
        for k in (0..kk).rev() {
            let ep_t = ep_transient((model, kernels, &free, labels), k, cfg, deltas[k].as_ref())?;
            let mut id_t: [Vec<Grads>; 2] = [Vec::new(), Vec::new()];
            for t in 0..=cfg.t2 {
                let mut s = sweeps.clone();
                s[k] = t;
                id_t[0].push(id_from_block(model, kernels, &free, labels, k, &s, true)?.grads);
                id_t[1].push(id_from_block(model, kernels, &free, labels, k, &s, false)?.grads);
                progress((kk - 1 - k) * (cfg.t2 + 1) + t + 1, kk * (cfg.t2 + 1));
            }
            for (tr, (id, _)) in tensors.iter_mut().zip(&ep.entries) {
                if tr.block != k {
                    continue;
                }
                let pick = |g: &Grads| {
                    tr.coords
                        .iter()
                        .map(|&c| g.get(*id).data()[c] as f64)
                        .collect::<Vec<f64>>()
                };
                tr.ep = ep_t.iter().map(pick).collect();
                tr.id_exact = id_t[0].iter().map(pick).collect();
                tr.id_reference = id_t[1].iter().map(pick).collect();
            }
        }
    }
    Ok(GddReport {
        beta: cfg.beta,
        t1: cfg.t1,
        t2: cfg.t2,
        batch: labels.len(),
        loss: free.loss(labels)?.mean(),
        total_rel_error_exact: total_rel_error(&ep, &id_exact.grads),
        total_rel_error_reference: total_rel_error(&ep, &id_ref.grads),
        tensors,
    })
}

/// One β of [`beta_sweep`]: the EP–ID-exact relative error over all tensors and per
/// coupling weight.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BetaRow {
    pub beta: f32,
    pub total: f64,
    pub per_weight: Vec<(String, f64)>,
}

/// EP–ID relative error (all tensors, and per weight tensor vs ID-exact) for each β.
pub fn beta_sweep(
    model: &Model,
    kernels: &[PreparedBlock],
    x: &Tensor,
    labels: &[u32],
    t1: usize,
    t2: usize,
    betas: &[f32],
) -> Result<Vec<BetaRow>> {
    let free = free_phase(model, kernels, x, BnMode::Train, Schedule::fixed(t1))?;
    let id = id_from_block(
        model,
        kernels,
        &free,
        labels,
        0,
        &vec![t2; model.blocks.len()],
        true,
    )?
    .grads;
    let mut out = Vec::new();
    for &beta in betas {
        let ep = ep_gradients(model, kernels, &free, labels, beta, t2)?;
        let per = ep
            .entries
            .iter()
            .filter(|(i, _)| matches!(i, ParamId::Synapse { bias: false, .. }))
            .map(|(i, g)| (model.param_name(*i), agreement(g, id.get(*i)).rel_error))
            .collect();
        out.push(BetaRow {
            beta,
            total: total_rel_error(&ep, &id),
            per_weight: per,
        });
    }
    Ok(out)
}

/// EP–ID relative error (all tensors) for each T2 (both estimators use that T2).
pub fn t2_sweep(
    model: &Model,
    kernels: &[PreparedBlock],
    x: &Tensor,
    labels: &[u32],
    t1: usize,
    beta: f32,
    t2s: &[usize],
) -> Result<Vec<(usize, f64, f64)>> {
    let free = free_phase(model, kernels, x, BnMode::Train, Schedule::fixed(t1))?;
    let mut out = Vec::new();
    for &t2 in t2s {
        let ep = ep_gradients(model, kernels, &free, labels, beta, t2)?;
        let sweeps = vec![t2; model.blocks.len()];
        let e = total_rel_error(
            &ep,
            &id_from_block(model, kernels, &free, labels, 0, &sweeps, true)?.grads,
        );
        let r = total_rel_error(
            &ep,
            &id_from_block(model, kernels, &free, labels, 0, &sweeps, false)?.grads,
        );
        out.push((t2, e, r));
    }
    Ok(out)
}
