//! Implicit differentiation by truncated BPTT (SPEC §2.3): from copies of the free states,
//! T2 more sweeps in every block (free-phase order, block k+1 fed by block k's updated last
//! layer through `F_{k+1}`), `L = mean_b CE(readout(s_K,n), y)`, and the exact reverse pass
//! through those sweeps and the feedforward transforms.
//!
//! Reverse pass of one update `s_l ← act(v)`, `v = α(bu_l + td_l)` with adjoint `ḡ`:
//! `ḡ_pre = act'(v) ḡ`, then through the bottom-up term `P(W_l ⋆ s_{l−1} + b_l)` (to
//! `s_{l−1}`, `W_l`, `b_l`, or to `u` for `l = 0`) and through the top-down term
//! `W_{l+1}ᵀ ⋆ unpool(s_{l+1}, idx)` (to `s_{l+1}` and, in the `exact` variant only, to
//! `W_{l+1}`; the pool indices are piecewise constant).

use super::ep::{feedforward_backward, readout_grads};
use super::{with_block, FreePhase};
use crate::core::batchnorm::BnBatchStats;
use crate::core::conv::{
    channel_sum, conv2d, conv2d_gather, conv2d_transposed, conv2d_transposed_unpool,
    conv2d_weight_grad, conv2d_weight_grad_unpool,
};
use crate::core::dense::{dense_forward, dense_transposed, linear_weight_grad};
use crate::core::ops::{activate_backward, axpy};
use crate::core::{ConvGeom, Tensor};
use crate::model::feedforward::{ff_forward, BnMode, FfCache};
use crate::model::readout::{flatten_state, loss_and_state_grad};
use crate::model::{CouplingKind, Grads, Model, ParamId, PreparedBlock};
use crate::relax::{relax, Order, Relaxation, Schedule, Tape};
use anyhow::Result;

/// ID gradients and the BN batch statistics of the re-evaluated feedforward transforms.
pub struct IdOutput {
    pub grads: Grads,
    /// Loss of the unrolled computation.
    pub loss: f32,
    /// Per block: batch statistics of `F_k` at its ID input (None without BN).
    pub bn_stats: Vec<Option<BnBatchStats>>,
    /// Adjoints of the starting (free) states of block `first`, layer by layer.
    pub state_grads: Vec<Tensor>,
}

/// Truncated-BPTT gradients of all parameters (mean loss).
pub fn id_gradients(
    model: &Model,
    kernels: &[PreparedBlock],
    free: &FreePhase,
    labels: &[u32],
    t2: usize,
    exact: bool,
) -> Result<IdOutput> {
    let sweeps = vec![t2; model.blocks.len()];
    id_from_block(model, kernels, free, labels, 0, &sweeps, exact)
}

/// BPTT from block `first` on (blocks before it are not re-run: `x_first` is the free-phase
/// input, a leaf), with `sweeps[k]` unrolled sweeps in block k. Gradients of parameters of
/// blocks before `first` are zero. Used with `sweeps[first] = t` for the transient curves.
pub fn id_from_block(
    model: &Model,
    kernels: &[PreparedBlock],
    free: &FreePhase,
    labels: &[u32],
    first: usize,
    sweeps: &[usize],
    exact: bool,
) -> Result<IdOutput> {
    let kk = model.blocks.len();
    let b = labels.len();
    // forward: unroll every block from its free state, recording the updates
    let mut tapes: Vec<Tape> = Vec::with_capacity(kk);
    let mut caches: Vec<FfCache> = Vec::with_capacity(kk);
    let mut bn_stats = vec![None; kk];
    for k in first..kk {
        let block = &model.blocks[k];
        // the drive is re-evaluated from the block input: x_first (a leaf) or the updated
        // last layer of the block below
        let input = match tapes.last() {
            None => free.ff[k].input.clone(),
            Some(prev) => prev
                .values
                .last()
                .expect("layers")
                .last()
                .expect("value")
                .clone(),
        };
        let mut cache = FfCache::default();
        let drive = ff_forward(block, &kernels[k].ff, &input, BnMode::Train, &mut cache)?;
        bn_stats[k] = cache.bn_stats.clone();
        let mut tape = Tape::new(&free.states[k]);
        {
            let mut r = Relaxation::new(
                block,
                &kernels[k],
                &drive,
                free.states[k].clone(),
                "ID unrolled sweeps",
            );
            relax(
                &mut r,
                Order::EvenFirst,
                None,
                Schedule::fixed(sweeps[k]),
                Some(&mut tape),
            )
            .map_err(|e| with_block(e, k))?;
        }
        tapes.push(tape);
        caches.push(cache);
    }
    // loss and its adjoint
    let mut grads = model.zero_grads();
    let last = tapes.last().expect("blocks").final_state();
    let (ce, mut g_out) = loss_and_state_grad(&model.readout, last.last(), labels, 1.0 / b as f32)?;
    {
        let (gw, gb) = readout_grads(&mut grads);
        crate::model::readout::accumulate_readout_grads(
            &model.readout,
            last.last(),
            labels,
            1.0 / b as f32,
            gw,
            gb,
        )?;
    }
    // reverse pass, block by block
    let mut state_grads = Vec::new();
    for k in (first..kk).rev() {
        let tape = &tapes[k - first];
        let (g_u, g_start) = block_backward(model, kernels, k, tape, g_out, &mut grads, exact)?;
        let dx = feedforward_backward(model, kernels, k, &caches[k - first], &g_u, &mut grads)?;
        if k == first {
            state_grads = g_start;
        }
        match dx {
            Some(dx) if k > first => g_out = dx,
            _ => g_out = Tensor::default(),
        }
    }
    Ok(IdOutput {
        grads,
        loss: ce.mean(),
        bn_stats,
        state_grads,
    })
}

/// Reverse pass through the recorded updates of block `k`, given the adjoint of its final
/// last layer. Returns the adjoint of its drive and of its starting states.
fn block_backward(
    model: &Model,
    kernels: &[PreparedBlock],
    k: usize,
    tape: &Tape,
    g_last: Tensor,
    grads: &mut Grads,
    exact: bool,
) -> Result<(Tensor, Vec<Tensor>)> {
    let block = &model.blocks[k];
    let n = tape.values.len();
    let mut g: Vec<Tensor> = tape
        .values
        .iter()
        .map(|v| Tensor::zeros(v[0].shape()))
        .collect();
    if !g_last.is_empty() {
        axpy(&mut g[n - 1], 1.0, &g_last)?;
    }
    let mut g_u = Tensor::zeros(tape.values[0][0].shape());
    let mut g_pre = Tensor::default();
    let mut tmp = Tensor::default();
    for e in tape.events.iter().rev() {
        let l = e.layer;
        let clamped = l + 1 < n || block.layout.clamp_last;
        activate_backward(&e.v, block.layout.alpha, clamped, &g[l], &mut g_pre)?;
        g[l].fill(0.0);
        // bottom-up
        if l == 0 {
            axpy(&mut g_u, 1.0, &g_pre)?;
        } else {
            let x = &tape.values[l - 1][e.prev_value.expect("layer below")];
            let (wid, bid) = (
                ParamId::Synapse {
                    block: k,
                    index: l,
                    bias: false,
                },
                ParamId::Synapse {
                    block: k,
                    index: l,
                    bias: true,
                },
            );
            match block.layout.couplings[l - 1] {
                CouplingKind::Conv { cin, cout, .. } => {
                    let packed = kernels[k].couplings[l - 1].conv();
                    let geom = ConvGeom {
                        cin,
                        cout,
                        k: block.layout.kernel,
                        pad: block.layout.padding,
                    };
                    let gw = grads.get_mut(wid);
                    match &e.bu_idx {
                        Some(idx) => {
                            conv2d_transposed_unpool(&g_pre, idx, packed, &mut tmp)?;
                            conv2d_weight_grad_unpool(x, &g_pre, idx, geom, 1.0, true, gw)?;
                        }
                        None => {
                            conv2d_transposed(&g_pre, packed, &mut tmp)?;
                            conv2d_weight_grad(x, &g_pre, geom, 1.0, true, gw)?;
                        }
                    }
                    axpy(&mut g[l - 1], 1.0, &tmp)?;
                }
                CouplingKind::Dense { .. } => {
                    dense_transposed(
                        &g_pre,
                        kernels[k].couplings[l - 1].dense(),
                        x.shape(),
                        &mut tmp,
                    )?;
                    axpy(&mut g[l - 1], 1.0, &tmp)?;
                    linear_weight_grad(&flatten_state(x)?, &g_pre, 1.0, true, grads.get_mut(wid))?;
                }
            }
            channel_sum(&g_pre, 1.0, true, grads.get_mut(bid));
        }
        // top-down
        if l + 1 < n {
            let s_next = &tape.values[l + 1][e.next_value.expect("layer above")];
            let wid = ParamId::Synapse {
                block: k,
                index: l + 1,
                bias: false,
            };
            match block.layout.couplings[l] {
                CouplingKind::Conv { cin, cout, .. } => {
                    let packed = kernels[k].couplings[l].conv();
                    let geom = ConvGeom {
                        cin,
                        cout,
                        k: block.layout.kernel,
                        pad: block.layout.padding,
                    };
                    match &e.td_idx {
                        Some(idx) => {
                            conv2d_gather(&g_pre, packed, idx, &mut tmp)?;
                            if exact {
                                conv2d_weight_grad_unpool(
                                    &g_pre,
                                    s_next,
                                    idx,
                                    geom,
                                    1.0,
                                    true,
                                    grads.get_mut(wid),
                                )?;
                            }
                        }
                        None => {
                            conv2d(&g_pre, packed, None, &mut tmp)?;
                            if exact {
                                conv2d_weight_grad(
                                    &g_pre,
                                    s_next,
                                    geom,
                                    1.0,
                                    true,
                                    grads.get_mut(wid),
                                )?;
                            }
                        }
                    }
                    axpy(&mut g[l + 1], 1.0, &tmp)?;
                }
                CouplingKind::Dense { .. } => {
                    dense_forward(&g_pre, kernels[k].couplings[l].dense(), None, &mut tmp)?;
                    axpy(&mut g[l + 1], 1.0, &tmp)?;
                    if exact {
                        linear_weight_grad(
                            &flatten_state(&g_pre)?,
                            s_next,
                            1.0,
                            true,
                            grads.get_mut(wid),
                        )?;
                    }
                }
            }
        }
    }
    Ok((g_u, g))
}
