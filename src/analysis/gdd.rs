//! Static gradient analysis (SPEC §2.4; the paper's Figs. 3–5): for one batch at fixed
//! weights, EP against ID (both variants) per parameter tensor, and the transient curves
//! — the EP estimate after t = 0..T2 nudged sweeps against ID truncated to t unrolled
//! sweeps, block by block from the output.

use crate::core::Tensor;
use crate::grad::ep::Ep;
use crate::grad::{
    free_phase_kernels, free_phase_with, AlgoConfig, Algorithm, Chain, FreePhase,
    GradientEstimator, Id,
};
use crate::model::feedforward::BnMode;
use crate::model::{Grads, Model, ParamId, PreparedBlock};
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
    /// T1, T2, β, the EP variant and the update orders.
    pub algo: AlgoConfig,
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

/// The free phase of `algo` in training mode (as in a training step), on the convolutions
/// `algo` relaxes it with (direct for EP at small β, see [`free_phase_kernels`]).
fn free_of(chain: &Chain<'_>, x: &Tensor, algo: &AlgoConfig) -> Result<FreePhase> {
    let exact = free_phase_kernels(chain.model, algo)?;
    let exact_chain = exact.as_deref().map(|k| chain.on_kernels(k));
    free_phase_with(
        exact_chain.as_ref().unwrap_or(chain),
        x,
        BnMode::Train,
        algo.free_schedule(),
        algo.free_order,
        None,
    )
}

/// The free states EP at `beta` and ID start from, each as a training step with `algo`
/// computes it (`grad --algo …` gives the same): one state when both use the same
/// convolutions, else EP's on direct ones (see [`crate::grad::FreeConvs`]).
struct Frees {
    ep: FreePhase,
    id: FreePhase,
}

impl Frees {
    fn new(chain: &Chain<'_>, x: &Tensor, algo: &AlgoConfig, beta: f32) -> Result<Self> {
        let ep_cfg = AlgoConfig {
            beta,
            ..algo.with(Algorithm::Ep)
        };
        let id_cfg = algo.with(Algorithm::IdExact);
        let ep = free_of(chain, x, &ep_cfg)?;
        let id = if ep_cfg.exact_free_phase() == id_cfg.exact_free_phase() {
            ep.clone()
        } else {
            free_of(chain, x, &id_cfg)?
        };
        Ok(Frees { ep, id })
    }
}

/// ID with `algo`'s T2 and order.
fn id(algo: &AlgoConfig, exact: bool) -> Id {
    Id {
        t2: algo.t2,
        exact,
        order: algo.free_order,
    }
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
    let algo = &cfg.algo;
    let chain = Chain::new(model, kernels);
    let frees = Frees::new(&chain, x, algo, algo.beta)?;
    let kk = model.blocks.len();
    let ep_est = Ep::from_config(algo);
    let (id_exact, id_ref) = (id(algo, true), id(algo, false));
    let ep = ep_est.gradients(&chain, &frees.ep, labels)?.grads;
    let exact = id_exact.gradients(&chain, &frees.id, labels)?.grads;
    let reference = id_ref.gradients(&chain, &frees.id, labels)?.grads;
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
                vs_id_exact: agreement(g, exact.get(*id)),
                vs_id_reference: agreement(g, reference.get(*id)),
                coords,
                ep: Vec::new(),
                id_exact: Vec::new(),
                id_reference: Vec::new(),
            }
        })
        .collect();
    if cfg.transients {
        let ids: Vec<ParamId> = ep.entries.iter().map(|(id, _)| *id).collect();
        // the truncated ID runs are the costly part: progress counts (exact, reference) pairs
        let total = kk * (algo.t2 + 1);
        let mut visits = 0usize;
        let estimators: [(&dyn GradientEstimator, &FreePhase, usize); 3] = [
            (&ep_est, &frees.ep, 0),
            (&id_exact, &frees.id, 1),
            (&id_ref, &frees.id, 2),
        ];
        for (est, free, which) in estimators {
            est.transients(&chain, free, labels, &mut |k, _t, g: &Grads| {
                for (tr, id) in tensors.iter_mut().zip(&ids) {
                    if tr.block != k {
                        continue;
                    }
                    let picked = tr
                        .coords
                        .iter()
                        .map(|&c| g.get(*id).data()[c] as f64)
                        .collect();
                    match which {
                        0 => tr.ep.push(picked),
                        1 => tr.id_exact.push(picked),
                        _ => tr.id_reference.push(picked),
                    }
                }
                if which > 0 {
                    visits += 1;
                    progress(visits.div_ceil(2), total);
                }
                Ok(())
            })?;
        }
    }
    Ok(GddReport {
        beta: algo.beta,
        t1: algo.t1,
        t2: algo.t2,
        batch: labels.len(),
        loss: frees.ep.loss(labels)?.mean(),
        total_rel_error_exact: total_rel_error(&ep, &exact),
        total_rel_error_reference: total_rel_error(&ep, &reference),
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
    algo: &AlgoConfig,
    betas: &[f32],
) -> Result<Vec<BetaRow>> {
    let chain = Chain::new(model, kernels);
    let smallest = betas.iter().fold(f32::INFINITY, |m, b| m.min(b.abs()));
    let frees = Frees::new(&chain, x, algo, smallest)?;
    let id = id(algo, true).gradients(&chain, &frees.id, labels)?.grads;
    let mut out = Vec::new();
    for &beta in betas {
        let ep_est = Ep {
            beta,
            ..Ep::from_config(algo)
        };
        let ep = ep_est.gradients(&chain, &frees.ep, labels)?.grads;
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
    algo: &AlgoConfig,
    t2s: &[usize],
) -> Result<Vec<(usize, f64, f64)>> {
    let chain = Chain::new(model, kernels);
    let frees = Frees::new(&chain, x, algo, algo.beta)?;
    let mut out = Vec::new();
    for &t2 in t2s {
        let a = AlgoConfig { t2, ..algo.clone() };
        let ep = Ep::from_config(&a)
            .gradients(&chain, &frees.ep, labels)?
            .grads;
        let id_at = |exact| id(&a, exact).gradients(&chain, &frees.id, labels);
        let e = total_rel_error(&ep, &id_at(true)?.grads);
        let r = total_rel_error(&ep, &id_at(false)?.grads);
        out.push((t2, e, r));
    }
    Ok(out)
}
