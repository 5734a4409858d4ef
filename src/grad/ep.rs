//! Equilibrium propagation chained with backprop (SPEC §2.2): for k = K…1, two nudged
//! relaxations of block k from its free state (±β, T2 sweeps, odd-first), then
//!
//! ```text
//! g_θ = (1/2β) · mean_b [∂_θΦ(u, s^{−β}) − ∂_θΦ(u, s^{+β})]          (couplings)
//! g_ro = ½ · mean_b [∂ℓ(s^{+β}) + ∂ℓ(s^{−β})]                         (readout, k = K)
//! g_ω = VJP_F( (s_0^{−β} − s_0^{+β}) / (2βB) )                        (feedforward)
//! δ_k = J_Fᵀ (s_0^{+β} − s_0^{−β}) / (2β)                             (error current)
//! ```
//!
//! and block k−1 is nudged by `+β δ_k` on its last layer.

use super::phi::accumulate_coupling_grads;
use super::{with_block, FreePhase};
use crate::core::ops::{lin_comb, scale};
use crate::core::Tensor;
use crate::model::feedforward::{ff_vjp, FfCache, FfGrads};
use crate::model::readout::accumulate_readout_grads;
use crate::model::{Grads, Model, ParamId, PreparedBlock};
use crate::relax::{relax, Nudge, Order, Relaxation, Schedule, Tape};
use anyhow::{ensure, Result};

/// Per-sign options of [`nudged_phase`].
pub struct NudgedPhase<'a> {
    pub nudge: Nudge<'a>,
    pub t2: usize,
    /// Record every update (for transient analyses).
    pub tape: Option<&'a mut Tape>,
}

/// Relaxes block `k` from its free state under `nudge` for `t2` sweeps (odd layers first)
/// and accumulates `c · ∂Φ/∂θ` of its couplings at the end state into `grads`.
pub fn nudged_phase(
    model: &Model,
    kernels: &[PreparedBlock],
    free: &FreePhase,
    k: usize,
    phase: NudgedPhase<'_>,
    c: f32,
    grads: &mut Grads,
) -> Result<crate::relax::BlockState> {
    let block = &model.blocks[k];
    let mut r = Relaxation::new(
        block,
        &kernels[k],
        &free.drives[k],
        free.states[k].clone(),
        "nudged phase",
    );
    relax(
        &mut r,
        Order::OddFirst,
        Some(&phase.nudge),
        Schedule::fixed(phase.t2),
        phase.tape,
    )
    .map_err(|e| with_block(e, k))?;
    accumulate_coupling_grads(k, &block.layout.couplings, &mut r, c, grads)?;
    Ok(r.into_state())
}

/// Feedforward gradients of block `k` for the cotangent `g_u` on its drive (forward pass
/// cached in `cache`); returns the input cotangent `J_Fᵀ g_u` when `k > 0`.
pub fn feedforward_backward(
    model: &Model,
    kernels: &[PreparedBlock],
    k: usize,
    cache: &FfCache,
    g_u: &Tensor,
    grads: &mut Grads,
) -> Result<Option<Tensor>> {
    let block = &model.blocks[k];
    let ids = (
        ParamId::Synapse {
            block: k,
            index: 0,
            bias: false,
        },
        ParamId::Synapse {
            block: k,
            index: 0,
            bias: true,
        },
        ParamId::Bn {
            block: k,
            bias: false,
        },
        ParamId::Bn {
            block: k,
            bias: true,
        },
    );
    // take the tensors out to hand out several &mut at once
    let mut w = std::mem::take(grads.get_mut(ids.0));
    let mut b = block
        .ff
        .bias
        .as_ref()
        .map(|_| std::mem::take(grads.get_mut(ids.1)));
    let mut gamma = block
        .bn
        .as_ref()
        .map(|_| std::mem::take(grads.get_mut(ids.2)));
    let mut beta = block
        .bn
        .as_ref()
        .map(|_| std::mem::take(grads.get_mut(ids.3)));
    let dx = ff_vjp(
        block,
        &kernels[k].ff,
        cache,
        g_u,
        k > 0,
        Some(FfGrads {
            weight: &mut w,
            bias: b.as_mut(),
            bn_gamma: gamma.as_mut(),
            bn_beta: beta.as_mut(),
        }),
    )?;
    *grads.get_mut(ids.0) = w;
    if let Some(b) = b {
        *grads.get_mut(ids.1) = b;
    }
    if let (Some(g), Some(bt)) = (gamma, beta) {
        *grads.get_mut(ids.2) = g;
        *grads.get_mut(ids.3) = bt;
    }
    Ok(dx)
}

/// EP gradient estimates of every parameter (mean loss over the batch).
pub fn ep_gradients(
    model: &Model,
    kernels: &[PreparedBlock],
    free: &FreePhase,
    labels: &[u32],
    beta: f32,
    t2: usize,
) -> Result<Grads> {
    ensure!(
        beta != 0.0 && beta.is_finite(),
        "EP needs a non-zero, finite β (got {beta})"
    );
    let mut grads = model.zero_grads();
    let b = labels.len() as f32;
    let kk = model.blocks.len();
    let mut delta: Option<Tensor> = None;
    for k in (0..kk).rev() {
        let c = 1.0 / (2.0 * beta * b);
        let mut ends = Vec::with_capacity(2);
        for sign in [1.0f32, -1.0] {
            let nudge = match &delta {
                None => Nudge::Loss {
                    beta: sign * beta,
                    readout: &model.readout,
                    labels,
                },
                Some(d) => Nudge::Current {
                    beta: sign * beta,
                    delta: d,
                },
            };
            // +β state enters with −c, −β state with +c
            let end = nudged_phase(
                model,
                kernels,
                free,
                k,
                NudgedPhase {
                    nudge,
                    t2,
                    tape: None,
                },
                -sign * c,
                &mut grads,
            )?;
            if k + 1 == kk {
                let (gw, gb) = readout_grads(&mut grads);
                accumulate_readout_grads(&model.readout, end.last(), labels, 0.5 / b, gw, gb)?;
            }
            ends.push(end);
        }
        let (plus, minus) = (&ends[0], &ends[1]);
        let mut g_u = Tensor::default();
        lin_comb(&mut g_u, c, &minus.layers[0], -c, &plus.layers[0])?;
        delta = feedforward_backward(model, kernels, k, &free.ff[k], &g_u, &mut grads)?.map(
            |mut dx| {
                scale(&mut dx, -b);
                dx
            },
        );
    }
    Ok(grads)
}

/// The two readout gradient tensors, borrowed together.
pub(crate) fn readout_grads(grads: &mut Grads) -> (&mut Tensor, &mut Tensor) {
    let mut w = None;
    let mut b = None;
    for (id, t) in grads.entries.iter_mut() {
        match id {
            ParamId::Readout { bias: false } => w = Some(t),
            ParamId::Readout { bias: true } => b = Some(t),
            _ => {}
        }
    }
    (w.expect("readout weight"), b.expect("readout bias"))
}
