//! Kernels of the analog non-ideality models ([`crate::analog`]): uniform quantizers (DAC,
//! ADC, weight storage levels), Gaussian noise and multiplicative device factors.
//!
//! Quantizer convention (aihwkit's resolution `res = 1/(2^b − 2)` of the full range
//! `[−bound, bound]`): the step is `Δ = 2·bound/(2^b − 2)`, values are clipped to
//! `[−bound, bound]` and rounded to the nearest multiple of `Δ` (ties away from zero), which
//! gives the `2^b − 1` levels `k·Δ`, `|k| ≤ 2^(b−1) − 1`, zero included.

use super::tensor::{ShapeError, Tensor};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// Step `Δ = 2·bound/(2^bits − 2)` of a `bits`-bit quantizer of `[−bound, bound]`.
pub fn quantizer_step(bits: u32, bound: f32) -> f32 {
    2.0 * bound / ((2f64.powi(bits as i32) - 2.0) as f32)
}

/// `q(v) = Δ·round(clip(v, −bound, bound)/Δ)`.
#[inline]
fn quantize_one(v: f32, step: f32, bound: f32) -> f32 {
    // NaN stays NaN (clamp keeps it), so a diverged state is still reported downstream
    step * (v.clamp(-bound, bound) / step).round()
}

/// Quantizes every element with `bits` bits over `[−bound, bound]`.
pub fn quantize(x: &mut Tensor, bits: u32, bound: f32) {
    let step = quantizer_step(bits, bound);
    x.data_mut()
        .iter_mut()
        .for_each(|v| *v = quantize_one(*v, step, bound));
}

/// Straight-through adjoint of [`quantize`] (the rounding is taken as the identity, the
/// clipping is not): `g_i ← g_i` where `|v_i| ≤ bound`, `0` where `v` (before conversion) was
/// clipped.
pub fn quantize_adjoint(v: &Tensor, bound: f32, g: &mut Tensor) -> Result<(), ShapeError> {
    g.expect_shape("quantize_adjoint", "adjoint", v.shape())?;
    g.data_mut()
        .iter_mut()
        .zip(v.data())
        .filter(|(_, v)| v.abs() > bound)
        .for_each(|(g, _)| *g = 0.0);
    Ok(())
}

/// Quantizes each sample (row of `x`, first dimension) with `bits` bits over its own range
/// `[−m_b, m_b]`, `m_b = max_i |x_{b,i}|` (aihwkit's `abs_max` noise management: the converter
/// sees the sample scaled to its full range, the digital side scales it back). A sample of
/// zeros stays zero.
pub fn quantize_abs_max(x: &mut Tensor, bits: u32) {
    let row = x.row_len().max(1);
    for r in x.data_mut().chunks_mut(row) {
        let m = r.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        if m > 0.0 && m.is_finite() {
            let step = quantizer_step(bits, m);
            r.iter_mut().for_each(|v| *v = quantize_one(*v, step, m));
        }
    }
}

/// `m = max_i |x_i|` over the whole tensor (0 for an empty or all-zero tensor; NaN
/// elements are ignored).
pub fn abs_max(x: &Tensor) -> f32 {
    x.data().iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Per-tensor symmetric fake quantization (digital QAT): with the scale `m = max_i |x_i|` of
/// this call, `q(x) = Δ·round(x/Δ)`, `Δ = 2m/(2^bits − 2)`: the `2^bits − 1` levels `k·Δ`,
/// `|k| ≤ 2^(bits−1) − 1`, the largest magnitude mapped to `±m`. A tensor of zeros (or a
/// non-finite scale) is left as it is.
pub fn quantize_tensor_abs_max(x: &mut Tensor, bits: u32) {
    let m = abs_max(x);
    if m > 0.0 && m.is_finite() {
        quantize(x, bits, m);
    }
}

/// `x += σ·ξ`, `ξ ~ N(0, 1)` i.i.d. per element.
pub fn add_gaussian(x: &mut Tensor, sigma: f32, rng: &mut impl Rng) {
    x.data_mut().iter_mut().for_each(|v| {
        let xi: f32 = StandardNormal.sample(rng);
        *v += sigma * xi;
    });
}

/// `x += σ·ξ` and `y += σ·ξ` with the same `ξ ~ N(0, 1)` per element (a state and its
/// offset from a base state moved together).
pub fn add_gaussian_pair(
    x: &mut Tensor,
    y: &mut Tensor,
    sigma: f32,
    rng: &mut impl Rng,
) -> Result<(), ShapeError> {
    if x.shape() != y.shape() {
        return Err(ShapeError::new(
            "add_gaussian_pair",
            "second operand",
            y.shape(),
            format!("{:?}", x.shape()),
        ));
    }
    for (a, b) in x.data_mut().iter_mut().zip(y.data_mut()) {
        let xi: f32 = StandardNormal.sample(rng);
        *a += sigma * xi;
        *b += sigma * xi;
    }
    Ok(())
}

/// The mean of `n` independent draws `σ·ξ_r`, `ξ_r ~ N(0, 1)`, per element, added to `x` and
/// to `y` (when given): an observation averaged over `n` repeated noisy measurements.
pub fn add_mean_gaussian(
    x: &mut Tensor,
    mut y: Option<&mut Tensor>,
    sigma: f32,
    n: usize,
    rng: &mut impl Rng,
) -> Result<(), ShapeError> {
    if let Some(y) = y.as_deref() {
        if x.shape() != y.shape() {
            return Err(ShapeError::new(
                "add_mean_gaussian",
                "second operand",
                y.shape(),
                format!("{:?}", x.shape()),
            ));
        }
    }
    let n = n.max(1);
    let scale = sigma / n as f32;
    for i in 0..x.len() {
        let mut s = 0.0f32;
        for _ in 0..n {
            let xi: f32 = StandardNormal.sample(rng);
            s += xi;
        }
        x.data_mut()[i] += scale * s;
        if let Some(y) = y.as_deref_mut() {
            y.data_mut()[i] += scale * s;
        }
    }
    Ok(())
}

/// `ξ ~ N(0, 1)` i.i.d., one per element of a tensor of shape `shape`.
pub fn standard_normal(shape: &[usize], rng: &mut impl Rng) -> Tensor {
    let mut t = Tensor::zeros(shape);
    t.data_mut()
        .iter_mut()
        .for_each(|v| *v = StandardNormal.sample(rng));
    t
}

/// `w_i ← w_i·(1 + σ·ξ_i)`, floored at 0 when `non_negative` (a conductance).
pub fn vary(w: &mut Tensor, xi: &Tensor, sigma: f32, non_negative: bool) -> Result<(), ShapeError> {
    if w.shape() != xi.shape() {
        return Err(ShapeError::new(
            "vary",
            "device draws",
            xi.shape(),
            format!("{:?} (the weight's)", w.shape()),
        ));
    }
    for (v, &x) in w.data_mut().iter_mut().zip(xi.data()) {
        *v *= 1.0 + sigma * x;
        if non_negative {
            *v = v.max(0.0);
        }
    }
    Ok(())
}

/// Uniform storage levels: `w` clipped to `[lo, hi]` and rounded to one of `levels` equally
/// spaced values `lo + k·(hi − lo)/(levels − 1)` — to the nearest, or stochastically (up
/// with probability equal to the fractional position between the two neighbours, so that
/// `E[q(w)] = w` inside the range).
pub fn store_levels(
    w: &mut Tensor,
    lo: f32,
    hi: f32,
    levels: usize,
    stochastic: Option<&mut dyn rand::RngCore>,
) {
    let step = (hi - lo) / (levels.max(2) - 1) as f32;
    match stochastic {
        None => w.data_mut().iter_mut().for_each(|v| {
            *v = lo + step * ((v.clamp(lo, hi) - lo) / step).round();
        }),
        Some(rng) => w.data_mut().iter_mut().for_each(|v| {
            let pos = (v.clamp(lo, hi) - lo) / step;
            let f = pos.floor();
            let up = rng.gen::<f32>() < pos - f;
            *v = (lo + step * (f + if up { 1.0 } else { 0.0 })).min(hi);
        }),
    }
}

/// Per-device pulse steps from draws `ξ`: `dw_i = dw_min·max(0, 1 + dtod·ξ_i)` (in place).
pub fn pulse_steps(xi: &mut Tensor, dw_min: f32, dtod: f32) {
    xi.data_mut()
        .iter_mut()
        .for_each(|v| *v = dw_min * (1.0 + dtod * *v).max(0.0));
}

/// `x ← clamp(x, lo, hi)` element-wise.
pub fn clip(x: &mut Tensor, lo: f32, hi: f32) {
    x.data_mut().iter_mut().for_each(|v| *v = v.clamp(lo, hi));
}

/// A pulsed device's response (aihwkit semantics): a pulse moves a weight by
/// `±dw·α_±·(1 + σ_c·ξ)` times the bound factor — `1` for ConstantStep, `1 − w/hi` up and
/// `1 − w/lo` down for SoftBounds — then clips it to `[lo, hi]`; `α_± = 1 ± up_down`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PulseResponse {
    pub soft_bounds: bool,
    pub lo: f32,
    pub hi: f32,
    pub up_down: f32,
    /// Cycle-to-cycle spread σ_c of a pulse's step.
    pub write_noise: f32,
    pub max_pulses: u32,
}

/// Programs `w` towards `target` by pulses: `n = min(round(|target − w|/dw), max_pulses)`
/// pulses in the direction of the difference, each with the device's own step `dw` (one per
/// weight) and response. Returns the number of pulses fired.
pub fn program_pulses(
    w: &mut Tensor,
    target: &Tensor,
    dw: &Tensor,
    r: &PulseResponse,
    rng: &mut impl Rng,
) -> Result<u64, ShapeError> {
    for (t, name) in [(target, "target"), (dw, "device steps")] {
        if t.shape() != w.shape() {
            return Err(ShapeError::new(
                "program_pulses",
                name,
                t.shape(),
                format!("{:?} (the weight's)", w.shape()),
            ));
        }
    }
    let mut fired = 0u64;
    for ((v, &t), &d) in w.data_mut().iter_mut().zip(target.data()).zip(dw.data()) {
        if d <= 0.0 {
            continue;
        }
        let n = ((t - *v).abs() / d).round().min(r.max_pulses as f32) as u32;
        fire(v, n, t > *v, d, r, rng);
        fired += n as u64;
    }
    Ok(fired)
}

/// Fires `n` pulses of step `d` on one device holding `v`, up or down: each moves it by
/// `±d·α_±·(1 + σ_c·ξ)·bound` and clips it to `[lo, hi]` (see [`PulseResponse`]).
#[inline]
pub(crate) fn fire(v: &mut f32, n: u32, up: bool, d: f32, r: &PulseResponse, rng: &mut impl Rng) {
    let alpha = if up { 1.0 + r.up_down } else { 1.0 - r.up_down };
    for _ in 0..n {
        let xi: f32 = if r.write_noise > 0.0 {
            StandardNormal.sample(rng)
        } else {
            0.0
        };
        let bound = match (r.soft_bounds, up) {
            (false, _) => 1.0,
            (true, true) => 1.0 - *v / r.hi,
            (true, false) => 1.0 - *v / r.lo,
        };
        let step = d * alpha * (1.0 + r.write_noise * xi) * bound.max(0.0);
        *v = (if up { *v + step } else { *v - step }).clamp(r.lo, r.hi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn quantizer_levels_and_clipping_are_exact() {
        // 3 bits over [−1, 1]: Δ = 2/6, levels k/3 for |k| ≤ 3 (7 levels)
        let mut x =
            Tensor::from_vec(&[8], vec![-5.0, -1.0, -0.5, -0.1, 0.1, 0.2, 0.9, 7.0]).unwrap();
        quantize(&mut x, 3, 1.0);
        let third = 1.0f32 / 3.0;
        let want = [-1.0, -1.0, -2.0 * third, 0.0, 0.0, third, 1.0, 1.0];
        for (a, b) in x.data().iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{:?}", x.data());
        }
        // 8 bits: every value lands on one of 255 levels
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut y = standard_normal(&[10000], &mut rng);
        quantize(&mut y, 8, 2.0);
        let step = quantizer_step(8, 2.0);
        let mut levels = std::collections::BTreeSet::new();
        for &v in y.data() {
            let k = v / step;
            assert!((k - k.round()).abs() < 1e-3 && v.abs() <= 2.0 + 1e-6);
            levels.insert(k.round() as i64);
        }
        assert!(levels.len() <= 255 && levels.contains(&127) && levels.contains(&-127));
    }

    #[test]
    fn abs_max_quantizer_uses_each_samples_range() {
        let mut x = Tensor::from_vec(&[2, 3], vec![0.5, -0.2, 0.1, 4.0, 1.0, 0.0]).unwrap();
        quantize_abs_max(&mut x, 2); // Δ = m: levels −m, 0, m
        assert_eq!(x.data(), &[0.5, -0.0, 0.0, 4.0, 0.0, 0.0]);
    }

    #[test]
    fn per_tensor_quantizer_uses_the_tensors_abs_max() {
        // 3 bits, m = 1.5: Δ = 2·1.5/6 = 0.5, levels 0, ±0.5, ±1, ±1.5 (hand-computed)
        let mut x = Tensor::from_vec(&[2, 3], vec![0.2, -0.3, 0.74, 1.5, -1.1, 0.26]).unwrap();
        assert_eq!(abs_max(&x), 1.5);
        quantize_tensor_abs_max(&mut x, 3);
        assert_eq!(x.data(), &[0.0, -0.5, 0.5, 1.5, -1.0, 0.5]);
        // one scale for the whole tensor, unlike `quantize_abs_max` (per sample): 2 bits,
        // m = 4: levels 0, ±4
        let mut y = Tensor::from_vec(&[2, 2], vec![1.9, -2.1, 4.0, 0.5]).unwrap();
        quantize_tensor_abs_max(&mut y, 2);
        assert_eq!(y.data(), &[0.0, -4.0, 4.0, 0.0]);
        // zeros stay zeros; 8 bits: 255 levels, the extremes exact
        let mut z = Tensor::zeros(&[3]);
        quantize_tensor_abs_max(&mut z, 8);
        assert_eq!(z.data(), &[0.0, 0.0, 0.0]);
        let mut w = Tensor::from_vec(&[3], vec![-0.8, 0.001, 0.8]).unwrap();
        quantize_tensor_abs_max(&mut w, 8);
        assert_eq!(w.data()[1], 0.0);
        assert!((w.data()[0] + 0.8).abs() < 1e-6 && (w.data()[2] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn noise_std_within_sampling_error() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let n = 200_000usize;
        let mut x = Tensor::zeros(&[n]);
        add_gaussian(&mut x, 0.3, &mut rng);
        let mean = x.data().iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = x
            .data()
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n as f64;
        // std of the sample std ≈ σ/√(2n) = 4.7e-4
        assert!((var.sqrt() - 0.3).abs() < 5.0 * 0.3 / (2.0 * n as f64).sqrt());
        assert!(mean.abs() < 5.0 * 0.3 / (n as f64).sqrt());
        // the mean of 4 draws has std σ/2
        let mut y = Tensor::zeros(&[n]);
        add_mean_gaussian(&mut y, None, 0.3, 4, &mut rng).unwrap();
        let var = y.data().iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64;
        assert!((var.sqrt() - 0.15).abs() < 5.0 * 0.15 / (2.0 * n as f64).sqrt());
    }

    #[test]
    fn storage_levels_nearest_and_stochastic_rounding() {
        let mut w = Tensor::from_vec(&[5], vec![-3.0, -0.26, 0.1, 0.3, 2.0]).unwrap();
        store_levels(&mut w, -1.0, 1.0, 5, None); // levels −1, −0.5, 0, 0.5, 1
        assert_eq!(w.data(), &[-1.0, -0.5, 0.0, 0.5, 1.0]);
        // stochastic rounding of 0.1 between 0 and 0.5: up with probability 0.2, unbiased
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = 100_000;
        let mut w = Tensor::full(&[n], 0.1);
        store_levels(&mut w, -1.0, 1.0, 5, Some(&mut rng));
        let ups = w.data().iter().filter(|&&v| v == 0.5).count();
        assert!(w.data().iter().all(|&v| v == 0.0 || v == 0.5));
        let p = ups as f64 / n as f64;
        assert!(
            (p - 0.2).abs() < 5.0 * (0.2f64 * 0.8 / n as f64).sqrt(),
            "{p}"
        );
    }
    #[test]
    fn pulses_follow_the_device_model() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let cs = PulseResponse {
            soft_bounds: false,
            lo: -1.0,
            hi: 1.0,
            up_down: 0.2,
            write_noise: 0.0,
            max_pulses: 31,
        };
        let dw = Tensor::full(&[4], 0.01);
        // 0.05 up = 5 pulses of 0.012; 0.05 down = 5 pulses of 0.008; 1.0 up: capped at 31,
        // then clipped at the bound; 0.004 rounds to no pulse
        let mut w = Tensor::from_vec(&[4], vec![0.0, 0.0, 0.9, 0.5]).unwrap();
        let t = Tensor::from_vec(&[4], vec![0.05, -0.05, 1.9, 0.504]).unwrap();
        let n = program_pulses(&mut w, &t, &dw, &cs, &mut rng).unwrap();
        assert_eq!(n, 5 + 5 + 31);
        let want = [0.06, -0.04, 1.0, 0.5];
        for (a, b) in w.data().iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{:?}", w.data());
        }
        // SoftBounds: the up step shrinks as 1 − w/hi, the down step as 1 − w/lo
        let sb = PulseResponse {
            soft_bounds: true,
            up_down: 0.0,
            ..cs
        };
        let mut w = Tensor::from_vec(&[2], vec![0.5, 0.5]).unwrap();
        let t = Tensor::from_vec(&[2], vec![0.51, 0.49]).unwrap();
        program_pulses(&mut w, &t, &Tensor::full(&[2], 0.01), &sb, &mut rng).unwrap();
        assert!((w.data()[0] - 0.505).abs() < 1e-6 && (w.data()[1] - 0.485).abs() < 1e-6);
        // write noise: the step spread has std σ_c·dw over many one-pulse updates
        let noisy = PulseResponse {
            write_noise: 0.3,
            up_down: 0.0,
            ..cs
        };
        let n = 100_000;
        let mut w = Tensor::zeros(&[n]);
        let fired = program_pulses(
            &mut w,
            &Tensor::full(&[n], 0.01),
            &Tensor::full(&[n], 0.01),
            &noisy,
            &mut rng,
        )
        .unwrap();
        assert_eq!(fired, n as u64);
        let steps: Vec<f64> = w.data().iter().map(|&v| v as f64 / 0.01).collect();
        let mean = steps.iter().sum::<f64>() / n as f64;
        let sd = (steps.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        assert!((mean - 1.0).abs() < 5.0 * 0.3 / (n as f64).sqrt(), "{mean}");
        assert!(
            (sd - 0.3).abs() < 5.0 * 0.3 / (2.0 * n as f64).sqrt(),
            "{sd}"
        );
    }
}
