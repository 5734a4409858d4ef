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

use super::phi::accumulate_coupling_contrast;
use super::{with_block, FreePhase};
use crate::core::ops::{lin_comb, scale};
use crate::core::Tensor;
use crate::model::feedforward::{ff_vjp, FfCache, FfGrads};
use crate::model::readout::accumulate_readout_grads;
use crate::model::{Grads, Model, ParamId, PreparedBlock};
use crate::relax::{relax, Nudge, Order, Relaxation, Schedule, Tape};
use anyhow::{ensure, Result};

/// Relaxes block `k` from its free state under `nudge` for `t2` sweeps (odd layers first).
pub fn relax_nudged<'a>(
    model: &'a Model,
    kernels: &'a [PreparedBlock],
    free: &'a FreePhase,
    k: usize,
    nudge: &Nudge<'_>,
    t2: usize,
    tape: Option<&mut Tape>,
) -> Result<Relaxation<'a>> {
    let mut r = Relaxation::new(
        &model.blocks[k],
        &kernels[k],
        &free.drives[k],
        free.states[k].clone(),
        "nudged phase",
    );
    relax(
        &mut r,
        Order::OddFirst,
        Some(nudge),
        Schedule::fixed(t2),
        tape,
    )
    .map_err(|e| with_block(e, k))?;
    Ok(r)
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
    Ok(ep_gradients_and_currents(model, kernels, free, labels, beta, t2)?.0)
}

/// EP gradients and, per block, the error current `δ_{k+1}` that nudged it (`None` for the
/// last block, nudged by the loss).
pub fn ep_gradients_and_currents(
    model: &Model,
    kernels: &[PreparedBlock],
    free: &FreePhase,
    labels: &[u32],
    beta: f32,
    t2: usize,
) -> Result<(Grads, Vec<Option<Tensor>>)> {
    ensure!(
        beta != 0.0 && beta.is_finite(),
        "EP needs a non-zero, finite β (got {beta})"
    );
    let mut grads = model.zero_grads();
    let b = labels.len() as f32;
    let kk = model.blocks.len();
    let c = 1.0 / (2.0 * beta * b);
    let mut currents = vec![None; kk];
    let mut delta: Option<Tensor> = None;
    for k in (0..kk).rev() {
        let nudge =
            |sign: f32| Nudge::for_block(delta.as_ref(), sign * beta, &model.readout, labels);
        let mut rp = relax_nudged(model, kernels, free, k, &nudge(1.0), t2, None)?;
        let mut rm = relax_nudged(model, kernels, free, k, &nudge(-1.0), t2, None)?;
        // g = c · (∂Φ(s^−β) − ∂Φ(s^+β))
        accumulate_coupling_contrast(
            k,
            &model.blocks[k].layout.couplings,
            &mut rm,
            Some(&mut rp),
            c,
            &mut grads,
        )?;
        let ends = [rp.into_state(), rm.into_state()];
        if k + 1 == kk {
            let (gw, gb) = readout_grads(&mut grads);
            for end in &ends {
                accumulate_readout_grads(&model.readout, end.last(), labels, 0.5 / b, gw, gb)?;
            }
        }
        let (plus, minus) = (&ends[0], &ends[1]);
        let mut g_u = Tensor::default();
        lin_comb(&mut g_u, c, &minus.layers[0], -c, &plus.layers[0])?;
        currents[k] = delta.take();
        delta = feedforward_backward(model, kernels, k, &free.ff[k], &g_u, &mut grads)?.map(
            |mut dx| {
                scale(&mut dx, -b);
                dx
            },
        );
    }
    Ok((grads, currents))
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
