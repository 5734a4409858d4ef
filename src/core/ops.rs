//! Element-wise maps, reductions and layout moves used by the model and algorithms.
//! Every function checks shapes and names the operand on mismatch.

use super::tensor::{dims4, ShapeError, Tensor};
use rayon::prelude::*;

const PAR_MIN: usize = 1 << 15;

fn same(op: &'static str, a: &Tensor, b: &Tensor) -> Result<(), ShapeError> {
    if a.shape() != b.shape() {
        return Err(ShapeError::new(
            op,
            "second operand",
            b.shape(),
            format!("{:?} (same as the first)", a.shape()),
        ));
    }
    Ok(())
}

/// `y += alpha · x`.
pub fn axpy(y: &mut Tensor, alpha: f32, x: &Tensor) -> Result<(), ShapeError> {
    same("axpy", y, x)?;
    let f = |(yv, xv): (&mut f32, &f32)| *yv += alpha * xv;
    if y.len() >= PAR_MIN {
        y.data_mut()
            .par_iter_mut()
            .zip(x.data().par_iter())
            .for_each(f);
    } else {
        y.data_mut().iter_mut().zip(x.data()).for_each(f);
    }
    Ok(())
}

/// `x *= alpha`.
pub fn scale(x: &mut Tensor, alpha: f32) {
    x.data_mut().iter_mut().for_each(|v| *v *= alpha);
}

/// `out = alpha · a + beta · b` (out is resized).
pub fn lin_comb(
    out: &mut Tensor,
    alpha: f32,
    a: &Tensor,
    beta: f32,
    b: &Tensor,
) -> Result<(), ShapeError> {
    same("lin_comb", a, b)?;
    out.ensure_shape(a.shape());
    for ((o, x), y) in out.data_mut().iter_mut().zip(a.data()).zip(b.data()) {
        *o = alpha * x + beta * y;
    }
    Ok(())
}

/// `x ← max(x, lo)` element-wise.
pub fn clamp_min(x: &mut Tensor, lo: f32) {
    x.data_mut().iter_mut().for_each(|v| *v = v.max(lo));
}

/// `Σ x²` in f64.
pub fn sum_sq(x: &Tensor) -> f64 {
    x.data().iter().map(|&v| (v as f64) * (v as f64)).sum()
}

/// Copies the rows (samples, the first dimension) of `src` with `mask[b]` into `dst`.
pub fn copy_rows(src: &Tensor, dst: &mut Tensor, mask: &[bool]) -> Result<(), ShapeError> {
    same("copy_rows", dst, src)?;
    let per = src.row_len().max(1);
    dst.data_mut()
        .par_chunks_mut(per)
        .zip(src.data().par_chunks(per))
        .zip(mask.par_iter())
        .for_each(|((d, s), &m)| {
            if m {
                d.copy_from_slice(s);
            }
        });
    Ok(())
}

/// `Σ a·b` in f64.
pub fn dot(a: &Tensor, b: &Tensor) -> Result<f64, ShapeError> {
    same("dot", a, b)?;
    Ok(a.data()
        .iter()
        .zip(b.data())
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum())
}

/// Index of the first NaN or infinite element.
///
/// Scans blocks of 16 without branching (`v·0` is 0 for a finite `v` and NaN otherwise,
/// and a NaN survives the sum), so the common all-finite case vectorises; only a block
/// whose sum is not finite is searched element by element.
pub fn first_non_finite(x: &Tensor) -> Option<usize> {
    const LANES: usize = 16;
    let data = x.data();
    let mut blocks = data.chunks_exact(LANES);
    for (b, block) in (&mut blocks).enumerate() {
        let mut acc = [0.0f32; LANES];
        for (a, v) in acc.iter_mut().zip(block) {
            *a += v * 0.0;
        }
        if acc.iter().any(|a| *a != 0.0 || a.is_nan()) {
            return block
                .iter()
                .position(|v| !v.is_finite())
                .map(|i| b * LANES + i);
        }
    }
    let rest = blocks.remainder();
    let base = data.len() - rest.len();
    rest.iter().position(|v| !v.is_finite()).map(|i| base + i)
}

/// Squared change of one layer update, `Σ (s_new − s_old)²` and `Σ s_old²`, over the whole
/// batch and per sample.
#[derive(Clone, Debug, Default)]
pub struct UpdateStats {
    pub diff_sq: f64,
    pub old_sq: f64,
    pub per_sample: Vec<(f64, f64)>,
}

impl UpdateStats {
    /// The totals of per-sample `(Σ (new − old)², Σ old²)` (summed in sample order).
    pub fn from_rows(per_sample: Vec<(f64, f64)>) -> Self {
        let mut stats = UpdateStats {
            per_sample,
            ..Default::default()
        };
        for &(d2, o2) in &stats.per_sample {
            stats.diff_sq += d2;
            stats.old_sq += o2;
        }
        stats
    }
}

/// Runs `row(n, s_n, record_n)` on every sample `n` of `s` (rows of `f` values) in parallel,
/// with the matching row of `record` when given, and collects the rows' change statistics.
pub(crate) fn update_rows(
    s: &mut Tensor,
    record: Option<&mut Tensor>,
    f: usize,
    row: impl Fn(usize, &mut [f32], Option<&mut [f32]>) -> (f64, f64) + Sync,
) -> UpdateStats {
    let rows: Vec<(f64, f64)> = match record {
        Some(r) => s
            .data_mut()
            .par_chunks_mut(f)
            .zip(r.data_mut().par_chunks_mut(f))
            .enumerate()
            .map(|(n, (srow, rrow))| row(n, srow, Some(rrow)))
            .collect(),
        None => s
            .data_mut()
            .par_chunks_mut(f)
            .enumerate()
            .map(|(n, srow)| row(n, srow, None))
            .collect(),
    };
    UpdateStats::from_rows(rows)
}

/// The layer activation of SPEC §1.2, applied to `pre = terms[0] + terms[1] + …` (summed in
/// that order, e.g. bottom-up then top-down): `s ← clamp(α·pre, 0, 1)` when `clamped`, else
/// `s ← pre`. Also stores `α·pre` (or `pre`) in `v` when given (for backpropagation) and
/// returns the change statistics. Samples with `frozen[b]` keep their old state.
pub fn activate(
    terms: &[&Tensor],
    alpha: f32,
    clamped: bool,
    s: &mut Tensor,
    mut v: Option<&mut Tensor>,
    frozen: Option<&[bool]>,
) -> Result<UpdateStats, ShapeError> {
    let Some((first, rest)) = terms.split_first() else {
        return Err(ShapeError::new(
            "activate",
            "terms",
            &[0],
            "at least one term",
        ));
    };
    same("activate", s, first)?;
    for t in rest {
        same("activate", first, t)?;
    }
    if let Some(v) = v.as_deref_mut() {
        v.ensure_shape(s.shape());
    }
    let per = s.row_len().max(1);
    let b = s.dim0();
    let data: Vec<&[f32]> = terms.iter().map(|t| t.data()).collect();
    let row = |n: usize, srow: &mut [f32], vrow: Option<&mut [f32]>| {
        activate_row(
            &data,
            n * per,
            alpha,
            clamped,
            srow,
            vrow,
            frozen.is_some_and(|f| f[n]),
        )
    };
    let stats = update_rows(s, v, per, row);
    debug_assert_eq!(stats.per_sample.len(), b);
    Ok(stats)
}

/// One sample of [`activate`]: 16-lane chunks (vectorised), partial sums in f32 lanes
/// folded into f64 per chunk. Returns `(Σ(new−old)², Σ old²)`.
fn activate_row(
    terms: &[&[f32]],
    offset: usize,
    alpha: f32,
    clamped: bool,
    s: &mut [f32],
    mut v: Option<&mut [f32]>,
    keep: bool,
) -> (f64, f64) {
    const L: usize = 16;
    let (mut d2, mut o2) = (0.0f64, 0.0f64);
    let per = s.len();
    let mut start = 0;
    while start < per {
        let n = L.min(per - start);
        let mut pre = [0.0f32; L];
        let at = offset + start;
        pre[..n].copy_from_slice(&terms[0][at..at + n]);
        for t in &terms[1..] {
            for (p, t) in pre.iter_mut().zip(&t[at..at + n]) {
                *p += t;
            }
        }
        if clamped {
            for p in pre.iter_mut() {
                *p *= alpha;
            }
        }
        if let Some(v) = v.as_deref_mut() {
            v[start..start + n].copy_from_slice(&pre[..n]);
        }
        let (mut dl, mut ol) = ([0.0f32; L], [0.0f32; L]);
        let srow = &mut s[start..start + n];
        for i in 0..n {
            // clamp keeps NaN, so divergence stays visible in the statistics
            let new = if clamped {
                pre[i].clamp(0.0, 1.0)
            } else {
                pre[i]
            };
            let old = srow[i];
            ol[i] = old * old;
            if !keep {
                let d = new - old;
                dl[i] = d * d;
                srow[i] = new;
            }
        }
        d2 += dl.iter().map(|&x| x as f64).sum::<f64>();
        o2 += ol.iter().map(|&x| x as f64).sum::<f64>();
        start += n;
    }
    (d2, o2)
}

/// Backward of [`activate`]: `ḡ_pre = ḡ_s · α · 1[0 ≤ v ≤ 1]` (clamped; PyTorch's inclusive
/// clamp derivative) or `ḡ_pre = ḡ_s` (identity), with `v = α·pre` as stored by `activate`.
pub fn activate_backward(
    v: &Tensor,
    alpha: f32,
    clamped: bool,
    g_s: &Tensor,
    g_pre: &mut Tensor,
) -> Result<(), ShapeError> {
    same("activate_backward", v, g_s)?;
    g_pre.ensure_shape(v.shape());
    for ((o, g), x) in g_pre.data_mut().iter_mut().zip(g_s.data()).zip(v.data()) {
        *o = if !clamped {
            *g
        } else if (0.0..=1.0).contains(x) {
            alpha * g
        } else {
            0.0
        };
    }
    Ok(())
}

/// Flattens channels-last maps `[B,H,W,C]` to `[B, C·H·W]` in PyTorch's C-major order
/// (index `c·H·W + h·W + w`).
pub fn flatten_chw(x: &Tensor, out: &mut Tensor) -> Result<(), ShapeError> {
    let [b, h, w, c] = dims4("flatten_chw", "input", x)?;
    out.ensure_shape(&[b, c * h * w]);
    let (xs, os) = (x.data(), out.data_mut());
    for n in 0..b {
        for p in 0..h * w {
            for ch in 0..c {
                os[n * c * h * w + ch * h * w + p] = xs[(n * h * w + p) * c + ch];
            }
        }
    }
    Ok(())
}

/// Inverse of [`flatten_chw`]: `[B, C·H·W]` to channels-last `shape = [B,H,W,C]`.
pub fn unflatten_chw(flat: &Tensor, shape: [usize; 4], out: &mut Tensor) -> Result<(), ShapeError> {
    let [b, h, w, c] = shape;
    flat.expect_shape("unflatten_chw", "flat input", &[b, c * h * w])?;
    out.ensure_shape(&shape);
    let (fs, os) = (flat.data(), out.data_mut());
    for n in 0..b {
        for p in 0..h * w {
            for ch in 0..c {
                os[(n * h * w + p) * c + ch] = fs[n * c * h * w + ch * h * w + p];
            }
        }
    }
    Ok(())
}

/// `out[b] += scale · ⟨x_b, y_b⟩` per sample, in f64.
pub fn sample_dots(x: &Tensor, y: &Tensor, scale: f64, out: &mut [f64]) -> Result<(), ShapeError> {
    same("sample_dots", x, y)?;
    let per = x.row_len().max(1);
    for (o, (a, b)) in out
        .iter_mut()
        .zip(x.data().chunks(per).zip(y.data().chunks(per)))
    {
        *o += scale
            * a.iter()
                .zip(b)
                .map(|(p, q)| *p as f64 * *q as f64)
                .sum::<f64>();
    }
    Ok(())
}

/// Per-sample sums over everything but the leading axis.
pub fn sample_sums(x: &Tensor) -> Vec<f64> {
    let per = x.row_len().max(1);
    x.data()
        .chunks(per)
        .map(|r| r.iter().map(|&v| v as f64).sum())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_non_finite_finds_the_first_nan_or_infinity_in_blocks_and_the_rest() {
        let n = 40; // two blocks of 16 and a remainder of 8
        let clean = Tensor::from_vec(&[n], (0..n).map(|v| v as f32 - 20.0).collect()).unwrap();
        assert_eq!(first_non_finite(&clean), None);
        for at in [0, 15, 16, 31, 32, 39] {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut x = clean.clone();
                x.data_mut()[at] = bad;
                if at + 3 < n {
                    x.data_mut()[at + 3] = f32::NAN; // a later one must not win
                }
                assert_eq!(first_non_finite(&x), Some(at), "{bad} at {at}");
            }
        }
        // huge finite values whose differences are exact zeros are not flagged
        let big = Tensor::from_vec(&[n], vec![f32::MAX; n]).unwrap();
        assert_eq!(first_non_finite(&big), None);
    }
    use crate::core::testutil::random_tensor;

    #[test]
    fn activate_clamps_and_reports_change() {
        let bu = Tensor::from_vec(&[2, 2], vec![-1.0, 0.5, 3.0, 0.25]).unwrap();
        let td = Tensor::from_vec(&[2, 2], vec![0.5, 0.5, 0.0, 0.25]).unwrap();
        let mut s = Tensor::from_vec(&[2, 2], vec![0.0, 0.0, 1.0, 1.0]).unwrap();
        let mut v = Tensor::zeros(&[0]);
        let st = activate(
            &[&bu, &td],
            0.5,
            true,
            &mut s,
            Some(&mut v),
            Some(&[false, true]),
        )
        .unwrap();
        assert_eq!(s.data(), &[0.0, 0.5, 1.0, 1.0]); // sample 1 frozen
        assert_eq!(v.data(), &[-0.25, 0.5, 1.5, 0.25]);
        assert_eq!(st.per_sample[0], (0.25, 0.0));
        assert_eq!(st.per_sample[1].0, 0.0);
        let mut g = Tensor::zeros(&[0]);
        activate_backward(&v, 0.5, true, &Tensor::full(&[2, 2], 2.0), &mut g).unwrap();
        assert_eq!(g.data(), &[0.0, 1.0, 0.0, 1.0]);
        let mut s2 = Tensor::zeros(&[2, 2]);
        activate(&[&bu], 0.5, false, &mut s2, None, None).unwrap();
        assert_eq!(s2, bu);
    }

    #[test]
    fn flatten_round_trip_in_c_major_order() {
        let x = random_tensor(&[2, 3, 2, 4], 9);
        let mut f = Tensor::zeros(&[0]);
        flatten_chw(&x, &mut f).unwrap();
        // (n=1, h=2, w=1, c=3) -> 3*6 + 2*2 + 1
        assert_eq!(
            f.data()[24 + 3 * 6 + 2 * 2 + 1],
            x.data()[((3 + 2) * 2 + 1) * 4 + 3]
        );
        let mut back = Tensor::zeros(&[0]);
        unflatten_chw(&f, [2, 3, 2, 4], &mut back).unwrap();
        assert_eq!(back, x);
    }
}
