//! The feedforward transform `F_k` of a block (SPEC §1.1) and its vector–Jacobian product.
//!
//! * `norm = batchnorm`: `u = BN(P₀(conv₀(x)))` (no conv bias);
//! * `norm_pool`: `u = P₀(BN(conv₀(x)))`;
//! * `norm = none`: `u = P₀(conv₀(x) + b₀)`;
//!
//! where `P₀` is the optional 2x2 max-pool. In training mode BN uses the batch statistics
//! and the VJP flows through them; a batch split over processes uses the statistics of the
//! whole batch (the `_shared` functions, synchronised BatchNorm).

use super::config::Norm;
use super::params::{BatchNorm, Block};
use crate::core::batchnorm::{
    batchnorm_backward_shared, batchnorm_eval, batchnorm_train_shared, BatchSums, BnBatchStats,
    WholeBatch,
};
use crate::core::conv::{channel_sum, conv2d, conv2d_pool, conv2d_transposed, conv2d_weight_grad};
use crate::core::pool::{maxpool2x2, unpool2x2};
use crate::core::{PackedConv, PoolIndex, Tensor};
use anyhow::Result;

/// BatchNorm behaviour of a forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnMode {
    /// Batch statistics (training).
    Train,
    /// Running statistics (evaluation).
    Eval,
}

/// What the VJP of `F` needs from its forward pass.
#[derive(Clone, Debug, Default)]
pub struct FfCache {
    pub input: Tensor,
    pool: Option<PoolIndex>,
    bn_xhat: Tensor,
    /// Batch statistics of the BN (training mode), for the backward pass and running stats.
    pub bn_stats: Option<BnBatchStats>,
}

/// Gradients of `F`'s parameters, accumulated by [`ff_vjp`].
pub struct FfGrads<'a> {
    pub weight: &'a mut Tensor,
    pub bias: Option<&'a mut Tensor>,
    pub bn_gamma: Option<&'a mut Tensor>,
    pub bn_beta: Option<&'a mut Tensor>,
}

fn bn_forward(
    bn: &BatchNorm,
    mode: BnMode,
    x: &Tensor,
    y: &mut Tensor,
    cache: &mut FfCache,
    parts: &dyn BatchSums,
) -> Result<()> {
    match mode {
        BnMode::Train => {
            let mut stats = BnBatchStats::default();
            batchnorm_train_shared(
                x,
                bn.gamma.data(),
                bn.beta.data(),
                BatchNorm::EPS,
                y,
                &mut cache.bn_xhat,
                &mut stats,
                parts,
            )?;
            cache.bn_stats = Some(stats);
        }
        BnMode::Eval => {
            batchnorm_eval(
                x,
                bn.gamma.data(),
                bn.beta.data(),
                bn.running_mean.data(),
                bn.running_var.data(),
                BatchNorm::EPS,
                y,
            )?;
            cache.bn_stats = None;
        }
    }
    Ok(())
}

/// `u = F(x)` for channels-last `x`; fills `cache` for [`ff_vjp`]. Without a conv (`conv =
/// None`, a resistive block fed directly) `F` is the identity.
pub fn ff_forward(
    block: &Block,
    conv: Option<&PackedConv>,
    x: &Tensor,
    mode: BnMode,
    cache: &mut FfCache,
) -> Result<Tensor> {
    ff_forward_shared(block, conv, x, mode, cache, &WholeBatch)
}

/// [`ff_forward`] on one part of a batch whose BatchNorm statistics `parts` sums over the
/// parts (synchronised BatchNorm).
pub fn ff_forward_shared(
    block: &Block,
    conv: Option<&PackedConv>,
    x: &Tensor,
    mode: BnMode,
    cache: &mut FfCache,
    parts: &dyn BatchSums,
) -> Result<Tensor> {
    let l = &block.layout;
    cache.input.assign(x);
    let (Some(conv), Some(ff)) = (conv, block.ff.as_ref()) else {
        cache.pool = None;
        cache.bn_stats = None;
        return Ok(x.clone());
    };
    let mut u = Tensor::default();
    let mut tmp = Tensor::default();
    let bias = ff.bias.as_ref().map(|b| b.data());
    match (l.norm, &block.bn) {
        (Norm::Batchnorm, Some(bn)) if l.norm_pool => {
            conv2d(x, conv, bias, &mut tmp)?;
            if l.ff_pool {
                let mut normed = Tensor::default();
                bn_forward(bn, mode, &tmp, &mut normed, cache, parts)?;
                let mut idx = PoolIndex::default();
                maxpool2x2(&normed, &mut u, &mut idx)?;
                cache.pool = Some(idx);
            } else {
                bn_forward(bn, mode, &tmp, &mut u, cache, parts)?;
                cache.pool = None;
            }
        }
        (Norm::Batchnorm, Some(bn)) => {
            pool_conv(x, conv, bias, l.ff_pool, &mut tmp, cache)?;
            bn_forward(bn, mode, &tmp, &mut u, cache, parts)?;
        }
        _ => {
            pool_conv(x, conv, bias, l.ff_pool, &mut u, cache)?;
            cache.bn_stats = None;
        }
    }
    Ok(u)
}

fn pool_conv(
    x: &Tensor,
    conv: &PackedConv,
    bias: Option<&[f32]>,
    pool: bool,
    y: &mut Tensor,
    cache: &mut FfCache,
) -> Result<()> {
    if pool {
        let mut idx = PoolIndex::default();
        conv2d_pool(x, conv, bias, y, &mut idx)?;
        cache.pool = Some(idx);
    } else {
        conv2d(x, conv, bias, y)?;
        cache.pool = None;
    }
    Ok(())
}

fn unpool_or_copy(g: &Tensor, idx: &Option<PoolIndex>) -> Result<Tensor> {
    match idx {
        Some(idx) => {
            let mut full = Tensor::default();
            unpool2x2(g, idx, &mut full)?;
            Ok(full)
        }
        None => Ok(g.clone()),
    }
}

/// Vector–Jacobian product of `F` at the cached input: given `ḡ_u`, accumulates parameter
/// gradients into `grads` (when given) and returns `x̄ = J_Fᵀ ḡ_u` when `want_dx`.
/// Requires a training-mode forward (`cache.bn_stats` set) when the block has BN.
pub fn ff_vjp(
    block: &Block,
    conv: Option<&PackedConv>,
    cache: &FfCache,
    g_u: &Tensor,
    want_dx: bool,
    grads: Option<FfGrads<'_>>,
) -> Result<Option<Tensor>> {
    ff_vjp_shared(block, conv, cache, g_u, want_dx, grads, &WholeBatch)
}

/// [`ff_vjp`] on one part of a batch whose forward pass was [`ff_forward_shared`] with the
/// same `parts`: `x̄` of this part, and this part's contributions to the parameter gradients.
pub fn ff_vjp_shared(
    block: &Block,
    conv: Option<&PackedConv>,
    cache: &FfCache,
    g_u: &Tensor,
    want_dx: bool,
    grads: Option<FfGrads<'_>>,
    parts: &dyn BatchSums,
) -> Result<Option<Tensor>> {
    let l = &block.layout;
    let Some(conv) = conv else {
        // the identity
        return Ok(want_dx.then(|| g_u.clone()));
    };
    let mut bn_g = block
        .bn
        .as_ref()
        .map(|bn| (vec![0.0f32; bn.gamma.len()], vec![0.0f32; bn.gamma.len()]));
    let bn_back = |g: &Tensor, bn: &BatchNorm, acc: &mut (Vec<f32>, Vec<f32>)| -> Result<Tensor> {
        let stats = cache.bn_stats.as_ref().ok_or_else(|| {
            anyhow::anyhow!("feedforward VJP needs a training-mode forward pass (batch statistics)")
        })?;
        let mut dx = Tensor::default();
        batchnorm_backward_shared(
            g,
            &cache.bn_xhat,
            bn.gamma.data(),
            stats,
            &mut dx,
            &mut acc.0,
            &mut acc.1,
            parts,
        )?;
        Ok(dx)
    };
    // cotangent on the conv output
    let g_conv = match (&block.bn, &mut bn_g) {
        (Some(bn), Some(acc)) if l.norm_pool => {
            let g = unpool_or_copy(g_u, &cache.pool)?;
            bn_back(&g, bn, acc)?
        }
        (Some(bn), Some(acc)) => {
            let g = bn_back(g_u, bn, acc)?;
            unpool_or_copy(&g, &cache.pool)?
        }
        _ => unpool_or_copy(g_u, &cache.pool)?,
    };
    if let Some(g) = grads {
        conv2d_weight_grad(&cache.input, &g_conv, conv.geom(), 1.0, true, g.weight)?;
        if let Some(db) = g.bias {
            channel_sum(&g_conv, 1.0, true, db);
        }
        if let (Some(acc), Some(gg), Some(gb)) = (&bn_g, g.bn_gamma, g.bn_beta) {
            for (d, s) in gg.data_mut().iter_mut().zip(&acc.0) {
                *d += s;
            }
            for (d, s) in gb.data_mut().iter_mut().zip(&acc.1) {
                *d += s;
            }
        }
    }
    if !want_dx {
        return Ok(None);
    }
    let mut dx = Tensor::default();
    conv2d_transposed(&g_conv, conv, &mut dx)?;
    Ok(Some(dx))
}

/// When BatchNorm running statistics are updated during a training step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BnUpdates {
    /// Once per batch, from the free-phase drive (SPEC §4).
    #[default]
    OncePerBatch,
    /// At every evaluation of the feedforward transform, as the reference does.
    ReferenceCompat,
}

/// Evaluations of block `block`'s transform in training mode with batch statistics `stats`
/// (`count` times: the reference implementation re-evaluates `F` at every sweep).
#[derive(Clone, Debug)]
pub struct TransformEvals {
    pub block: usize,
    pub stats: BnBatchStats,
    pub count: usize,
}

/// BatchNorm running-statistics updates owed by a step: `times` updates of block `block`
/// with `stats`.
#[derive(Clone, Debug)]
pub struct BnUpdate {
    pub block: usize,
    pub stats: BnBatchStats,
    pub times: usize,
}

/// The running-statistics updates of a training step under `policy`, from the transform
/// evaluations of the free phase (`free`, one entry per block with BN, in block order) and of
/// the gradient estimator (`estimator`).
pub fn running_stat_updates(
    policy: BnUpdates,
    free: &[TransformEvals],
    estimator: &[TransformEvals],
) -> Vec<BnUpdate> {
    match policy {
        BnUpdates::OncePerBatch => free
            .iter()
            .map(|e| BnUpdate {
                block: e.block,
                stats: e.stats.clone(),
                times: 1,
            })
            .collect(),
        BnUpdates::ReferenceCompat => {
            let mut out: Vec<BnUpdate> = Vec::new();
            for e in free.iter().chain(estimator) {
                // consecutive evaluations with the same statistics merge (same result)
                match out
                    .iter_mut()
                    .rev()
                    .find(|u| u.block == e.block)
                    .filter(|u| u.stats == e.stats)
                {
                    Some(u) => u.times += e.count,
                    None => out.push(BnUpdate {
                        block: e.block,
                        stats: e.stats.clone(),
                        times: e.count,
                    }),
                }
            }
            out.sort_by_key(|u| u.block);
            out
        }
    }
}

/// Applies the running-statistics updates of a training step to `model`.
pub fn apply_bn_updates(model: &mut super::Model, updates: &[BnUpdate]) {
    for u in updates {
        if let Some(bn) = model.blocks[u.block].bn.as_mut() {
            for _ in 0..u.times {
                crate::core::batchnorm::update_running_stats(
                    &u.stats,
                    BatchNorm::MOMENTUM,
                    bn.running_mean.data_mut(),
                    bn.running_var.data_mut(),
                );
                bn.num_batches_tracked += 1;
            }
        }
    }
}
