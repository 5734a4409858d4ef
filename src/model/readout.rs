//! The linear readout `z = W_ro flat(s_n) + b_ro` on the last layer of the last block and
//! the gradients of the cross-entropy through it.

use super::config::CostKind;
use super::params::{Model, Synapse};
use crate::core::dense::{linear, linear_transposed, linear_weight_grad};
use crate::core::loss::{
    cross_entropy_grad, softmax_cross_entropy, squared_error, squared_error_grad, CrossEntropy,
    Losses,
};
use crate::core::ops::{flatten_chw, unflatten_chw};
use crate::core::Tensor;
use anyhow::Result;

/// `flat(s)`: channels-last maps are flattened C-major (PyTorch order); dense layers as is.
pub fn flatten_state(s: &Tensor) -> Result<Tensor> {
    if s.shape().len() == 4 {
        let mut f = Tensor::default();
        flatten_chw(s, &mut f)?;
        Ok(f)
    } else {
        Ok(s.clone())
    }
}

/// Reshapes a flat `[B, F]` tensor like `like` (the inverse of [`flatten_state`]).
pub fn unflatten_like(flat: Tensor, like: &Tensor) -> Result<Tensor> {
    if like.shape().len() == 4 {
        let s = like.shape();
        let mut out = Tensor::default();
        unflatten_chw(&flat, [s[0], s[1], s[2], s[3]], &mut out)?;
        Ok(out)
    } else {
        Ok(flat)
    }
}

/// `z = W_ro flat(s) + b_ro`.
pub fn logits(readout: &Synapse, s_last: &Tensor) -> Result<Tensor> {
    let mut z = Tensor::default();
    linear(
        &flatten_state(s_last)?,
        &readout.weight,
        readout.bias.as_ref().map(|b| b.data()),
        &mut z,
    )?;
    Ok(z)
}

/// The loss at `s_last` and `∂(scale·Σ_b ℓ_b)/∂s_last = scale · W_roᵀ (softmax(z) − onehot(y))`.
pub fn loss_and_state_grad(
    readout: &Synapse,
    s_last: &Tensor,
    labels: &[u32],
    scale: f32,
) -> Result<(CrossEntropy, Tensor)> {
    let z = logits(readout, s_last)?;
    let ce = softmax_cross_entropy(&z, labels)?;
    let mut gz = Tensor::default();
    cross_entropy_grad(&ce, labels, scale, &mut gz);
    let mut gflat = Tensor::default();
    linear_transposed(&gz, &readout.weight, &mut gflat)?;
    Ok((ce, unflatten_like(gflat, s_last)?))
}

/// Accumulates `scale · ∂(Σ_b ℓ_b)/∂(W_ro, b_ro)` at `s_last` into `(g_w, g_b)`; returns the loss.
pub fn accumulate_readout_grads(
    readout: &Synapse,
    s_last: &Tensor,
    labels: &[u32],
    scale: f32,
    g_w: &mut Tensor,
    g_b: &mut Tensor,
) -> Result<CrossEntropy> {
    let flat = flatten_state(s_last)?;
    let mut z = Tensor::default();
    linear(
        &flat,
        &readout.weight,
        readout.bias.as_ref().map(|b| b.data()),
        &mut z,
    )?;
    let ce = softmax_cross_entropy(&z, labels)?;
    let mut gz = Tensor::default();
    cross_entropy_grad(&ce, labels, 1.0, &mut gz);
    linear_weight_grad(&flat, &gz, scale, true, g_w)?;
    crate::core::conv::channel_sum(&gz, scale, true, g_b);
    Ok(ce)
}

/// The model's output scores for `s_last`: the readout's logits, or the last layer itself
/// (flattened) with the squared-error cost.
pub fn model_logits(model: &Model, s_last: &Tensor) -> Result<Tensor> {
    match &model.readout {
        Some(r) => logits(r, s_last),
        None => flatten_state(s_last),
    }
}

/// Per-sample losses of the model's cost from its output scores.
pub fn model_losses(model: &Model, scores: &Tensor, labels: &[u32]) -> Result<Losses> {
    match model.config.cost {
        CostKind::CrossEntropy => Ok(Losses {
            losses: softmax_cross_entropy(scores, labels)?.losses,
        }),
        CostKind::SquaredError => squared_error(scores, labels),
    }
}

/// The losses at `s_last` and `∂(scale·Σ_b ℓ_b)/∂s_last` for the model's cost.
pub fn model_loss_and_state_grad(
    model: &Model,
    s_last: &Tensor,
    labels: &[u32],
    scale: f32,
) -> Result<(Losses, Tensor)> {
    match &model.readout {
        Some(r) => {
            let (ce, g) = loss_and_state_grad(r, s_last, labels, scale)?;
            Ok((Losses { losses: ce.losses }, g))
        }
        None => {
            let flat = flatten_state(s_last)?;
            let losses = squared_error(&flat, labels)?;
            let mut g = Tensor::default();
            squared_error_grad(&flat, labels, scale, &mut g);
            Ok((losses, unflatten_like(g, s_last)?))
        }
    }
}
