//! Softmax cross-entropy and top-k accuracy on logits `z: [B, C]`.
//!
//! Per sample, `ℓ_b = −log softmax(z_b)[y_b]` and `∂ℓ_b/∂z_b = softmax(z_b) − onehot(y_b)`.

use super::tensor::{dims2, Tensor};

/// A label outside `0..classes`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label {label} of sample {sample} is outside 0..{classes}")]
pub struct LabelError {
    pub sample: usize,
    pub label: u32,
    pub classes: usize,
}

/// Per-sample losses and the softmax probabilities.
#[derive(Clone, Debug)]
pub struct CrossEntropy {
    pub losses: Vec<f32>,
    pub probs: Tensor,
}

impl CrossEntropy {
    /// Mean loss over the batch.
    pub fn mean(&self) -> f32 {
        (self.losses.iter().map(|&l| l as f64).sum::<f64>() / self.losses.len().max(1) as f64)
            as f32
    }
}

/// Softmax cross-entropy of `logits: [B, C]` against `labels` (one per sample).
pub fn softmax_cross_entropy(logits: &Tensor, labels: &[u32]) -> anyhow::Result<CrossEntropy> {
    let [b, c] = dims2("softmax_cross_entropy", "logits", logits)?;
    anyhow::ensure!(
        labels.len() == b,
        "softmax_cross_entropy: {} labels for a batch of {b}",
        labels.len()
    );
    let mut probs = Tensor::zeros(&[b, c]);
    let mut losses = Vec::with_capacity(b);
    for (n, (row, prow)) in logits
        .data()
        .chunks(c)
        .zip(probs.data_mut().chunks_mut(c))
        .enumerate()
    {
        let y = labels[n];
        if y as usize >= c {
            return Err(LabelError {
                sample: n,
                label: y,
                classes: c,
            }
            .into());
        }
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
        let mut z = 0.0f64;
        for (p, &v) in prow.iter_mut().zip(row) {
            let e = ((v - m) as f64).exp();
            *p = e as f32;
            z += e;
        }
        prow.iter_mut().for_each(|p| *p = (*p as f64 / z) as f32);
        losses.push((z.ln() - (row[y as usize] - m) as f64) as f32);
    }
    Ok(CrossEntropy { losses, probs })
}

/// Per-sample losses.
#[derive(Clone, Debug, PartialEq)]
pub struct Losses {
    pub losses: Vec<f32>,
}

impl Losses {
    /// Mean loss over the batch.
    pub fn mean(&self) -> f32 {
        (self.losses.iter().map(|&l| l as f64).sum::<f64>() / self.losses.len().max(1) as f64)
            as f32
    }
}

/// `ℓ_b = ½‖o_b − onehot(y_b)‖²` of `outputs: [B, C]`.
pub fn squared_error(outputs: &Tensor, labels: &[u32]) -> anyhow::Result<Losses> {
    let [b, c] = dims2("squared_error", "outputs", outputs)?;
    anyhow::ensure!(
        labels.len() == b,
        "squared_error: {} labels for a batch of {b}",
        labels.len()
    );
    let mut losses = Vec::with_capacity(b);
    for (n, row) in outputs.data().chunks(c).enumerate() {
        let y = labels[n] as usize;
        if y >= c {
            return Err(LabelError {
                sample: n,
                label: labels[n],
                classes: c,
            }
            .into());
        }
        let l: f64 = row
            .iter()
            .enumerate()
            .map(|(j, &v)| (v as f64 - if j == y { 1.0 } else { 0.0 }).powi(2))
            .sum();
        losses.push((0.5 * l) as f32);
    }
    Ok(Losses { losses })
}

/// `out = scale · (o − onehot(y))`: the gradient of `scale · Σ_b ½‖o_b − onehot(y_b)‖²`.
pub fn squared_error_grad(outputs: &Tensor, labels: &[u32], scale: f32, out: &mut Tensor) {
    out.assign(outputs);
    let c = outputs.row_len().max(1);
    for (n, row) in out.data_mut().chunks_mut(c).enumerate() {
        row[labels[n] as usize] -= 1.0;
        row.iter_mut().for_each(|v| *v *= scale);
    }
}

/// `out = scale · (softmax − onehot)`: the gradient of `scale · Σ_b ℓ_b` w.r.t. the logits.
pub fn cross_entropy_grad(ce: &CrossEntropy, labels: &[u32], scale: f32, out: &mut Tensor) {
    out.assign(&ce.probs);
    let c = ce.probs.shape()[1];
    for (n, row) in out.data_mut().chunks_mut(c).enumerate() {
        row[labels[n] as usize] -= 1.0;
        row.iter_mut().for_each(|v| *v *= scale);
    }
}

/// Number of samples whose label is among the `k` largest logits (ties counted against).
pub fn topk_correct(logits: &Tensor, labels: &[u32], k: usize) -> usize {
    let c = logits.shape()[1];
    logits
        .data()
        .chunks(c)
        .zip(labels)
        .filter(|(row, &y)| {
            let target = row[y as usize];
            let larger = row
                .iter()
                .enumerate()
                .filter(|&(j, &v)| v > target || (v == target && j < y as usize))
                .count();
            larger < k
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_gradient_matches_finite_differences() {
        let z = Tensor::from_vec(&[2, 3], vec![0.5, -1.0, 2.0, 0.0, 0.0, 0.0]).unwrap();
        let y = [2u32, 1];
        let ce = softmax_cross_entropy(&z, &y).unwrap();
        assert!((ce.losses[1] - 3f32.ln()).abs() < 1e-6);
        let mut g = Tensor::zeros(&[0]);
        cross_entropy_grad(&ce, &y, 1.0, &mut g);
        for i in 0..6 {
            let (mut zp, mut zm) = (z.clone(), z.clone());
            zp.data_mut()[i] += 1e-3;
            zm.data_mut()[i] -= 1e-3;
            let lp: f32 = softmax_cross_entropy(&zp, &y).unwrap().losses.iter().sum();
            let lm: f32 = softmax_cross_entropy(&zm, &y).unwrap().losses.iter().sum();
            assert!(((lp - lm) / 2e-3 - g.data()[i]).abs() < 1e-3);
        }
        let e = softmax_cross_entropy(&z, &[3, 0]).unwrap_err();
        assert!(
            e.to_string()
                .contains("label 3 of sample 0 is outside 0..3"),
            "{e}"
        );
    }

    #[test]
    fn topk() {
        let z = Tensor::from_vec(&[2, 4], vec![0.1, 0.9, 0.5, 0.2, 1.0, 1.0, 0.0, 0.0]).unwrap();
        assert_eq!(topk_correct(&z, &[1, 0], 1), 2);
        assert_eq!(topk_correct(&z, &[2, 1], 1), 0);
        assert_eq!(topk_correct(&z, &[2, 1], 2), 2);
    }
}
