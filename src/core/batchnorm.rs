//! Batch normalisation over all but the last (channel) axis: `[B,H,W,C]` (BatchNorm2d on
//! channels-last maps) or `[B,C]`.
//!
//! Training mode: `x̂ = (x − μ_c) / √(σ²_c + ε)` with the batch mean `μ_c` and the **biased**
//! batch variance `σ²_c`, `y = γ_c x̂ + β_c`; the backward pass includes the batch coupling:
//! `x̄ = γ_c/√(σ²_c+ε) · (ȳ − mean(ȳ) − x̂ · mean(ȳ x̂))`.
//! Running statistics follow PyTorch: `r_μ ← (1−m) r_μ + m μ`,
//! `r_σ² ← (1−m) r_σ² + m σ² n/(n−1)` (unbiased), where `n` is the count per channel.
//! Evaluation mode uses the running statistics.
//!
//! A batch split over several processes (data-parallel training) normalises with the
//! statistics of the whole batch (synchronised BatchNorm): every per-channel sum above —
//! `Σx`, `Σ(x−μ)²` and the count in the forward pass, `Σȳ` and `Σȳx̂` in the backward pass —
//! is summed over the parts by a [`BatchSums`] before it is used, so each part computes what
//! one process holding the whole batch computes (up to the order of the f64 sums).

use super::tensor::{ShapeError, Tensor};

/// Sums per-channel batch statistics over the parts of a batch split across processes
/// (synchronised BatchNorm). Every part calls [`BatchSums::sum_parts`] the same number of
/// times in the same order with buffers of the same length.
pub trait BatchSums: Sync {
    /// Replaces every element of `sums` by its sum over all parts of the batch.
    fn sum_parts(&self, sums: &mut ChannelSums);
}

/// The whole batch is here: sums need no reduction.
#[derive(Clone, Copy, Debug, Default)]
pub struct WholeBatch;

impl BatchSums for WholeBatch {
    fn sum_parts(&self, _sums: &mut ChannelSums) {}
}

/// Per-channel f64 partial sums handed to a [`BatchSums`] (one or more statistics of `C`
/// channels laid end to end, then optional scalars).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChannelSums(Vec<f64>);

impl ChannelSums {
    /// The values, for the reduction (e.g. an MPI all-reduce) to sum in place.
    pub fn values_mut(&mut self) -> &mut [f64] {
        &mut self.0
    }
}

/// Batch statistics of one training-mode forward pass (needed by the backward pass).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BnBatchStats {
    pub mean: Vec<f32>,
    /// Biased batch variance.
    pub var: Vec<f32>,
    pub inv_std: Vec<f32>,
    /// Values per channel (`B·H·W`).
    pub count: usize,
}

fn channels(op: &'static str, x: &Tensor, c: usize) -> Result<usize, ShapeError> {
    match x.shape().last() {
        Some(&last) if last == c && x.shape().len() >= 2 => Ok(x.len() / c),
        _ => Err(ShapeError::new(
            op,
            "input",
            x.shape(),
            format!("[.., {c}] (channels last)"),
        )),
    }
}

/// Training-mode forward: `y = γ x̂ + β` with batch statistics; stores `x̂` and the stats.
pub fn batchnorm_train(
    x: &Tensor,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    y: &mut Tensor,
    xhat: &mut Tensor,
    stats: &mut BnBatchStats,
) -> Result<(), ShapeError> {
    batchnorm_train_shared(x, gamma, beta, eps, y, xhat, stats, &WholeBatch)
}

/// [`batchnorm_train`] on one part of a batch, with the statistics of the whole batch
/// (`parts` sums them; `stats.count` is the whole batch's count per channel).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_train_shared(
    x: &Tensor,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    y: &mut Tensor,
    xhat: &mut Tensor,
    stats: &mut BnBatchStats,
    parts: &dyn BatchSums,
) -> Result<(), ShapeError> {
    let c = gamma.len();
    let local = channels("batchnorm_train", x, c)?;
    // Σx per channel, then the count
    let mut sums = ChannelSums(vec![0.0f64; c + 1]);
    for row in x.data().chunks(c) {
        for (m, v) in sums.0.iter_mut().zip(row) {
            *m += *v as f64;
        }
    }
    sums.0[c] = local as f64;
    parts.sum_parts(&mut sums);
    let n = sums.0[c] as usize;
    let mean: Vec<f64> = sums.0[..c].iter().map(|m| m / n as f64).collect();
    let mut sq = ChannelSums(vec![0.0f64; c]);
    for row in x.data().chunks(c) {
        for ((s, v), m) in sq.0.iter_mut().zip(row).zip(&mean) {
            let d = *v as f64 - m;
            *s += d * d;
        }
    }
    parts.sum_parts(&mut sq);
    let var: Vec<f64> = sq.0.iter().map(|s| s / n as f64).collect();
    stats.mean = mean.iter().map(|&m| m as f32).collect();
    stats.var = var.iter().map(|&v| v as f32).collect();
    stats.inv_std = var
        .iter()
        .map(|&v| (1.0 / (v + eps as f64).sqrt()) as f32)
        .collect();
    stats.count = n;
    xhat.ensure_shape(x.shape());
    y.ensure_shape(x.shape());
    for ((xr, hr), yr) in x
        .data()
        .chunks(c)
        .zip(xhat.data_mut().chunks_mut(c))
        .zip(y.data_mut().chunks_mut(c))
    {
        for ch in 0..c {
            let h = (xr[ch] - stats.mean[ch]) * stats.inv_std[ch];
            hr[ch] = h;
            yr[ch] = gamma[ch] * h + beta[ch];
        }
    }
    Ok(())
}

/// Evaluation-mode forward with running statistics.
pub fn batchnorm_eval(
    x: &Tensor,
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    eps: f32,
    y: &mut Tensor,
) -> Result<(), ShapeError> {
    let c = gamma.len();
    channels("batchnorm_eval", x, c)?;
    let inv: Vec<f32> = running_var
        .iter()
        .map(|&v| 1.0 / (v + eps).sqrt())
        .collect();
    y.ensure_shape(x.shape());
    for (xr, yr) in x.data().chunks(c).zip(y.data_mut().chunks_mut(c)) {
        for ch in 0..c {
            yr[ch] = gamma[ch] * (xr[ch] - running_mean[ch]) * inv[ch] + beta[ch];
        }
    }
    Ok(())
}

/// Backward of [`batchnorm_train`]: `x̄` (overwritten) and `γ̄, β̄` (accumulated).
pub fn batchnorm_backward(
    dy: &Tensor,
    xhat: &Tensor,
    gamma: &[f32],
    stats: &BnBatchStats,
    dx: &mut Tensor,
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Result<(), ShapeError> {
    batchnorm_backward_shared(dy, xhat, gamma, stats, dx, dgamma, dbeta, &WholeBatch)
}

/// Backward of [`batchnorm_train_shared`] on one part of a batch: `x̄` of this part from the
/// whole batch's `mean(ȳ)` and `mean(ȳ x̂)` (summed by `parts`), and this part's own
/// contributions to `γ̄, β̄` (accumulated; summing them over the parts is the caller's).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_shared(
    dy: &Tensor,
    xhat: &Tensor,
    gamma: &[f32],
    stats: &BnBatchStats,
    dx: &mut Tensor,
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    parts: &dyn BatchSums,
) -> Result<(), ShapeError> {
    let c = gamma.len();
    channels("batchnorm_backward", dy, c)?;
    xhat.expect_shape("batchnorm_backward", "normalised input", dy.shape())?;
    // Σȳ in [..c], Σȳx̂ in [c..]
    let mut sums = ChannelSums(vec![0.0f64; 2 * c]);
    {
        let (sum_dy, sum_dy_xhat) = sums.0.split_at_mut(c);
        for (dr, hr) in dy.data().chunks(c).zip(xhat.data().chunks(c)) {
            for ch in 0..c {
                sum_dy[ch] += dr[ch] as f64;
                sum_dy_xhat[ch] += dr[ch] as f64 * hr[ch] as f64;
            }
        }
        for ch in 0..c {
            dgamma[ch] += sum_dy_xhat[ch] as f32;
            dbeta[ch] += sum_dy[ch] as f32;
        }
    }
    parts.sum_parts(&mut sums);
    let n = stats.count;
    let (sum_dy, sum_dy_xhat) = sums.0.split_at(c);
    let mean_dy: Vec<f32> = sum_dy.iter().map(|s| (s / n as f64) as f32).collect();
    let mean_dyx: Vec<f32> = sum_dy_xhat.iter().map(|s| (s / n as f64) as f32).collect();
    let k: Vec<f32> = (0..c).map(|ch| gamma[ch] * stats.inv_std[ch]).collect();
    dx.ensure_shape(dy.shape());
    for ((dr, hr), xr) in dy
        .data()
        .chunks(c)
        .zip(xhat.data().chunks(c))
        .zip(dx.data_mut().chunks_mut(c))
    {
        for ch in 0..c {
            xr[ch] = k[ch] * (dr[ch] - mean_dy[ch] - hr[ch] * mean_dyx[ch]);
        }
    }
    Ok(())
}

/// One PyTorch running-statistics update from batch statistics (momentum `m`).
pub fn update_running_stats(
    stats: &BnBatchStats,
    momentum: f32,
    running_mean: &mut [f32],
    running_var: &mut [f32],
) {
    let n = stats.count as f32;
    let unbias = if stats.count > 1 { n / (n - 1.0) } else { 1.0 };
    for ch in 0..running_mean.len() {
        running_mean[ch] = (1.0 - momentum) * running_mean[ch] + momentum * stats.mean[ch];
        running_var[ch] = (1.0 - momentum) * running_var[ch] + momentum * stats.var[ch] * unbias;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testutil::random_tensor;

    fn loss(x: &Tensor, gamma: &[f32], beta: &[f32], w: &Tensor) -> f64 {
        let (mut y, mut h, mut st) = (
            Tensor::zeros(&[0]),
            Tensor::zeros(&[0]),
            BnBatchStats::default(),
        );
        batchnorm_train(x, gamma, beta, 1e-5, &mut y, &mut h, &mut st).unwrap();
        y.data()
            .iter()
            .zip(w.data())
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum()
    }

    #[test]
    fn normalises_and_backward_matches_finite_differences() {
        let x = random_tensor(&[3, 2, 3, 4], 1);
        let w = random_tensor(&[3, 2, 3, 4], 2);
        let gamma = [1.0f32, 0.5, 2.0, -1.0];
        let beta = [0.0f32, 0.1, -0.2, 0.3];
        let (mut y, mut h, mut st) = (
            Tensor::zeros(&[0]),
            Tensor::zeros(&[0]),
            BnBatchStats::default(),
        );
        batchnorm_train(&x, &gamma, &[0.0; 4], 1e-5, &mut y, &mut h, &mut st).unwrap();
        // each channel of x̂ has mean 0 and biased variance ≈ 1
        for ch in 0..4 {
            let vals: Vec<f64> = h
                .data()
                .iter()
                .skip(ch)
                .step_by(4)
                .map(|v| *v as f64)
                .collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let v = vals.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / vals.len() as f64;
            assert!(
                m.abs() < 1e-6 && (v - 1.0).abs() < 1e-3,
                "channel {ch}: mean {m} var {v}"
            );
        }
        let mut dx = Tensor::zeros(&[0]);
        let (mut dg, mut db) = ([0.0f32; 4], [0.0f32; 4]);
        batchnorm_train(&x, &gamma, &beta, 1e-5, &mut y, &mut h, &mut st).unwrap();
        batchnorm_backward(&w, &h, &gamma, &st, &mut dx, &mut dg, &mut db).unwrap();
        let eps = 1e-3f32;
        for i in [0usize, 5, 17, 40, 71] {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp.data_mut()[i] += eps;
            xm.data_mut()[i] -= eps;
            let fd =
                (loss(&xp, &gamma, &beta, &w) - loss(&xm, &gamma, &beta, &w)) / (2.0 * eps as f64);
            assert!(
                (fd - dx.data()[i] as f64).abs() < 2e-2 * fd.abs().max(0.1),
                "x[{i}]: fd {fd} vs {}",
                dx.data()[i]
            );
        }
        for ch in 0..4 {
            let (mut gp, mut gm) = (gamma, gamma);
            gp[ch] += eps;
            gm[ch] -= eps;
            let fd = (loss(&x, &gp, &beta, &w) - loss(&x, &gm, &beta, &w)) / (2.0 * eps as f64);
            assert!(
                (fd - dg[ch] as f64).abs() < 1e-2 * fd.abs().max(0.1),
                "gamma[{ch}]: fd {fd} vs {}",
                dg[ch]
            );
            let sum_w: f64 = w.data().iter().skip(ch).step_by(4).map(|v| *v as f64).sum();
            assert!((sum_w - db[ch] as f64).abs() < 1e-4);
        }
    }

    #[test]
    fn running_stats_follow_pytorch_and_eval_uses_them() {
        let x = random_tensor(&[4, 3], 3);
        let (mut y, mut h, mut st) = (
            Tensor::zeros(&[0]),
            Tensor::zeros(&[0]),
            BnBatchStats::default(),
        );
        batchnorm_train(&x, &[1.0; 3], &[0.0; 3], 1e-5, &mut y, &mut h, &mut st).unwrap();
        let (mut rm, mut rv) = (vec![0.0f32; 3], vec![1.0f32; 3]);
        update_running_stats(&st, 0.1, &mut rm, &mut rv);
        for ch in 0..3 {
            let v: Vec<f32> = x.data().iter().skip(ch).step_by(3).copied().collect();
            let m = v.iter().sum::<f32>() / 4.0;
            let unb = v.iter().map(|a| (a - m) * (a - m)).sum::<f32>() / 3.0;
            assert!((rm[ch] - 0.1 * m).abs() < 1e-6);
            assert!((rv[ch] - (0.9 + 0.1 * unb)).abs() < 1e-6);
        }
        batchnorm_eval(&x, &[2.0; 3], &[1.0; 3], &rm, &rv, 1e-5, &mut y).unwrap();
        let want = 2.0 * (x.data()[4] - rm[1]) / (rv[1] + 1e-5).sqrt() + 1.0;
        assert!((y.data()[4] - want).abs() < 1e-6);
    }
}
