//! Helpers for the kernel tests: seeded random tensors, naive reference loops and a
//! tolerance check that reports the worst element.

use super::tensor::Tensor;
use rand::{Rng, SeedableRng};

/// Uniform values in `[-1, 1)` from a seeded generator.
pub fn random_tensor(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    Tensor::from_vec(shape, (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()).expect("shape")
}

/// Naive NCHW cross-correlation, stride 1, zero padding `pad`, accumulated in f64.
pub fn naive_conv_nchw(x: &Tensor, w: &Tensor, bias: Option<&[f32]>, pad: usize) -> Tensor {
    let (b, cin, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (cout, k) = (w.shape()[0], w.shape()[2]);
    let (oh, ow) = (h + 2 * pad + 1 - k, wd + 2 * pad + 1 - k);
    let mut y = Tensor::zeros(&[b, cout, oh, ow]);
    let (xs, ws) = (x.data(), w.data());
    let yd = y.data_mut();
    for n in 0..b {
        for o in 0..cout {
            for i in 0..oh {
                for j in 0..ow {
                    let mut s = bias.map_or(0.0, |bb| bb[o] as f64);
                    for c in 0..cin {
                        for u in 0..k {
                            for v in 0..k {
                                let (yi, xj) = (
                                    i as isize + u as isize - pad as isize,
                                    j as isize + v as isize - pad as isize,
                                );
                                if yi >= 0 && xj >= 0 && (yi as usize) < h && (xj as usize) < wd {
                                    s += ws[((o * cin + c) * k + u) * k + v] as f64
                                        * xs[((n * cin + c) * h + yi as usize) * wd + xj as usize]
                                            as f64;
                                }
                            }
                        }
                    }
                    yd[((n * cout + o) * oh + i) * ow + j] = s as f32;
                }
            }
        }
    }
    y
}

/// Asserts equal shapes and `|a - b| <= tol · max(1, max|b|)` element-wise.
pub fn assert_close(a: &Tensor, b: &Tensor, tol: f32, ctx: &str) {
    assert_eq!(a.shape(), b.shape(), "{ctx}: shapes differ");
    let scale = b.data().iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let (mut worst, mut at) = (0.0f32, 0);
    for (i, (x, y)) in a.data().iter().zip(b.data()).enumerate() {
        let d = (x - y).abs();
        if d > worst || d.is_nan() {
            worst = d;
            at = i;
        }
    }
    assert!(
        worst <= tol * scale,
        "{ctx}: max |diff| {worst} at {at} ({} vs {}), allowed {}",
        a.data()[at],
        b.data()[at],
        tol * scale
    );
}
