//! Kernels of relaxation in offsets from a base state (EP's nudged phases relaxed as
//! `d = s − s*` from the free equilibrium `s*`): round-off then scales with `|d|`, i.e. with
//! β, instead of with `|s|`.
//!
//! * [`force`]: the free residual `F = Σ_t b*_t − Q ⊙ s*` of a layer (`Q` its quadratic
//!   coefficient: `1/α`, `1`, or the conductance sums).
//! * [`offset_update`]: the new offset `d = proj(z* + Δz) − s*` computed as a projection of
//!   small quantities onto the shifted domain `[lo − s*, hi − s*]`.
//! * [`pool_offset`], [`unpool_offset`], [`unpool_diff`]: a max-pooled coupling evaluated
//!   in offsets, exact where the argmax moves.

use super::ops::UpdateStats;
use super::pool::PoolIndex;
use super::quadratic::QuadraticError;
use super::tensor::{ShapeError, Tensor};
use rayon::prelude::*;

/// Whether every element is zero (an offset not yet moved from its base).
pub fn is_zero(t: &Tensor) -> bool {
    t.data().iter().all(|v| *v == 0.0)
}

/// A layer's projection and quadratic coefficient `Q` in offset form.
#[derive(Clone, Debug, PartialEq)]
pub enum OffsetLayer {
    /// `Q = 1/α`, states in `[0, 1]`.
    HardSigmoid { alpha: f32 },
    /// `Q_i = 1/α_i` per unit (`[F]` slopes), states in `[0, 1]`.
    UnitSigmoid { alpha: Vec<f32> },
    /// `Q = 1`, unbounded.
    Identity,
    /// `Q` per unit (conductance sums); ideal diodes (first half `≥ 0`, second `≤ 0`) or
    /// linear.
    Quadratic { q: Vec<f32>, diode: bool },
    /// `Q` per unit; diodes with a bound `t_i` per unit (first half `≥ t_i`, second `≤ t_i`).
    DiodeBounds { q: Vec<f32>, bounds: Vec<f32> },
}

impl OffsetLayer {
    /// Checks the per-unit parameters (if any) against the layer width `f`.
    fn check_units(&self, f: usize) -> Result<(), ShapeError> {
        let n = match self {
            OffsetLayer::UnitSigmoid { alpha } => alpha.len(),
            OffsetLayer::DiodeBounds { bounds, q } if q.len() != f => q.len().min(bounds.len()),
            OffsetLayer::DiodeBounds { bounds, .. } => bounds.len(),
            _ => return Ok(()),
        };
        if n == f {
            return Ok(());
        }
        Err(ShapeError::new(
            "offset layer",
            "per-unit parameters",
            &[n],
            format!("[{f}]"),
        ))
    }
}

/// `F = Σ_t b*_t − Q ⊙ s*` (the force residual at the base state; ~0 at a fixed point).
pub fn force(lin: &[&Tensor], layer: &OffsetLayer, base: &Tensor) -> Result<Tensor, ShapeError> {
    for t in lin {
        t.expect_shape("offset force", "linear coefficient", base.shape())?;
    }
    let f = base.row_len().max(1);
    layer.check_units(f)?;
    let mut out = Tensor::zeros(base.shape());
    for (j, (o, &s)) in out.data_mut().iter_mut().zip(base.data()).enumerate() {
        let mut b = 0.0f32;
        for t in lin {
            b += t.data()[j];
        }
        let q = match layer {
            OffsetLayer::HardSigmoid { alpha } => 1.0 / alpha,
            OffsetLayer::UnitSigmoid { alpha } => 1.0 / alpha[j % f],
            OffsetLayer::Identity => 1.0,
            OffsetLayer::Quadratic { q, .. } | OffsetLayer::DiodeBounds { q, .. } => q[j % f],
        };
        *o = b - q * s;
    }
    Ok(out)
}

/// Updates the offsets `d` of a layer (and its state `s = s* + d`):
///
/// ```text
/// g = F + Σ Δb + b_c,   d ← clamp(α·g, −s*, 1 − s*)                 (hard sigmoid; α_i per unit)
///                       d ← g                                         (identity)
///                       d ← proj_{−s*}((g − q_c ⊙ s*) / (Q + q_c))    (quadratic)
/// ```
///
/// with `Δb` the interactions' changes of linear coefficient, `b_c`, `q_c` the cost term's
/// coefficients (evaluated at the full state) and `proj_{−s*}` the diode projection shifted
/// by `−s*` (with per-unit bounds `t_i`: onto `t_i − s*`, and a clipped unit's state set to
/// `t_i` exactly). Samples with `frozen[b]` keep their offsets. Returns the change statistics of
/// the offsets (`Σ (d_new − d_old)²` and `Σ d_old²`: the convergence measure of a phase
/// relaxed from `s*` is relative to the distance travelled from it).
#[allow(clippy::too_many_arguments)]
pub fn offset_update(
    force: &Tensor,
    deltas: &[&Tensor],
    cost: Option<&Tensor>,
    cost_q: Option<&Tensor>,
    layer: &OffsetLayer,
    base: &Tensor,
    d: &mut Tensor,
    s: &mut Tensor,
    frozen: Option<&[bool]>,
) -> Result<UpdateStats, QuadraticError> {
    let shape = base.shape().to_vec();
    for t in deltas.iter().chain(cost.iter()).chain([&force]) {
        t.expect_shape("offset_update", "coefficient", &shape)?;
    }
    d.expect_shape("offset_update", "offsets", &shape)?;
    s.expect_shape("offset_update", "state", &shape)?;
    let f = base.row_len().max(1);
    layer.check_units(f)?;
    // total quadratic coefficient per unit (quadratic layers), checked positive
    let qt: Option<Vec<f32>> = match layer {
        OffsetLayer::Quadratic { q, .. } | OffsetLayer::DiodeBounds { q, .. } => {
            let mut qt = q.clone();
            if let Some(c) = cost_q {
                c.expect_shape("offset_update", "cost quadratic coefficient", &[f])?;
                qt.iter_mut().zip(c.data()).for_each(|(a, b)| *a += b);
            }
            if let Some(unit) = qt.iter().position(|v| v.is_nan() || *v <= 0.0) {
                return Err(QuadraticError::NotPositive {
                    unit,
                    value: qt[unit],
                });
            }
            Some(qt)
        }
        _ => None,
    };
    let half = f / 2;
    let dl: Vec<&[f32]> = deltas.iter().map(|t| t.data()).collect();
    let (fd, bd, cd) = (force.data(), base.data(), cost.map(|c| c.data()));
    let qc = cost_q.map(|c| c.data());
    let row = |n: usize, drow: &mut [f32], srow: &mut [f32]| -> (f64, f64) {
        let keep = frozen.is_some_and(|fr| fr[n]);
        let (mut d2, mut o2) = (0.0f64, 0.0f64);
        for i in 0..f {
            let j = n * f + i;
            let old = drow[i];
            o2 += (old as f64) * (old as f64);
            if keep {
                continue;
            }
            let mut g = fd[j];
            for t in &dl {
                g += t[j];
            }
            if let Some(c) = cd {
                g += c[j];
            }
            let sb = bd[j];
            let new_d = match layer {
                OffsetLayer::HardSigmoid { alpha } => (alpha * g).clamp(-sb, 1.0 - sb),
                OffsetLayer::UnitSigmoid { alpha } => (alpha[i] * g).clamp(-sb, 1.0 - sb),
                OffsetLayer::Identity => g,
                OffsetLayer::DiodeBounds { bounds, .. } => {
                    let q = qt.as_ref().expect("quadratic")[i];
                    let t = (g - qc.map_or(0.0, |c| c[i]) * sb) / q;
                    let lim = bounds[i] - sb;
                    let clipped = if i < half { t < lim } else { t > lim };
                    if clipped {
                        // on the bound: the state is the bound itself, exactly
                        let diff = lim - drow[i];
                        d2 += (diff as f64) * (diff as f64);
                        drow[i] = lim;
                        srow[i] = bounds[i];
                        continue;
                    }
                    t
                }
                OffsetLayer::Quadratic { diode, .. } => {
                    let q = qt.as_ref().expect("quadratic")[i];
                    let t = (g - qc.map_or(0.0, |c| c[i]) * sb) / q;
                    match (diode, i < half) {
                        (false, _) => t,
                        (true, true) => t.max(-sb),
                        (true, false) => t.min(-sb),
                    }
                }
            };
            let diff = new_d - drow[i];
            d2 += (diff as f64) * (diff as f64);
            drow[i] = new_d;
            srow[i] = sb + new_d;
        }
        (d2, o2)
    };
    let per_sample: Vec<(f64, f64)> = d
        .data_mut()
        .par_chunks_mut(f)
        .zip(s.data_mut().par_chunks_mut(f))
        .enumerate()
        .map(|(n, (drow, srow))| row(n, drow, srow))
        .collect();
    Ok(UpdateStats::from_rows(per_sample))
}

/// Visits every 2x2 window of a pooled map: `(full-map offsets of the 4 positions in
/// row-major window order, pooled offset)` per channel.
fn windows(shape: &[usize], mut f: impl FnMut([usize; 4], usize)) {
    let [b, h, w, c] = [shape[0], shape[1], shape[2], shape[3]];
    let (ph, pw) = (h / 2, w / 2);
    for n in 0..b {
        for i in 0..ph {
            for j in 0..pw {
                let at = |a: usize, e: usize| ((n * h + 2 * i + a) * w + 2 * j + e) * c;
                let o = ((n * ph + i) * pw + j) * c;
                for ch in 0..c {
                    f(
                        [at(0, 0) + ch, at(0, 1) + ch, at(1, 0) + ch, at(1, 1) + ch],
                        o + ch,
                    );
                }
            }
        }
    }
}

fn pool_codes(idx: &PoolIndex) -> &[u8] {
    idx.codes()
}

/// The change of a max-pooled coupling's value between `Y* = W⋆s* + b` and `Y* + W⋆d`
/// (`wd = W⋆d`, both full-resolution): `idx_new` = argmax of `Y* + W⋆d` (first maximum), and
/// `delta = (W⋆d)[idx*]` where the argmax did not move, `(Y*[new] − Y*[old]) + (W⋆d)[new]`
/// where it did.
pub fn pool_offset(
    wd: &Tensor,
    y_star: &Tensor,
    idx_star: &PoolIndex,
    delta: &mut Tensor,
    idx_new: &mut PoolIndex,
) -> Result<(), ShapeError> {
    let shape = idx_star.input_shape().to_vec();
    wd.expect_shape("pool_offset", "W⋆d", &shape)?;
    y_star.expect_shape("pool_offset", "Y*", &shape)?;
    let pooled = idx_star.pooled_shape();
    delta.ensure_shape(&pooled);
    let codes = idx_new.prepare([shape[0], shape[1], shape[2], shape[3]]);
    let (w, y, old) = (wd.data(), y_star.data(), pool_codes(idx_star));
    let out = delta.data_mut();
    windows(&shape, |pos, o| {
        let mut k = 0usize;
        let mut m = y[pos[0]] + w[pos[0]];
        for (code, &p) in pos.iter().enumerate().skip(1) {
            let v = y[p] + w[p];
            if v > m || v.is_nan() && !m.is_nan() {
                m = v;
                k = code;
            }
        }
        let ko = old[o] as usize;
        codes[o] = k as u8;
        out[o] = if k == ko {
            w[pos[k]]
        } else {
            (y[pos[k]] - y[pos[ko]]) + w[pos[k]]
        };
    });
    Ok(())
}

/// `M = unpool(s* + d, idx_new) − unpool(s*, idx*)` (full resolution) from the pooled
/// offsets `d` and base `s*`: `d` at the argmax where it did not move, `s* + d` at the new
/// and `−s*` at the old position where it did.
pub fn unpool_offset(
    d: &Tensor,
    s_star: &Tensor,
    idx_new: &PoolIndex,
    idx_star: &PoolIndex,
    out: &mut Tensor,
) -> Result<(), ShapeError> {
    let pooled = idx_star.pooled_shape();
    d.expect_shape("unpool_offset", "offsets", &pooled)?;
    s_star.expect_shape("unpool_offset", "base", &pooled)?;
    let shape = idx_star.input_shape().to_vec();
    out.ensure_shape(&shape);
    out.fill(0.0);
    let (dd, sd, new, old) = (
        d.data(),
        s_star.data(),
        pool_codes(idx_new),
        pool_codes(idx_star),
    );
    let o_data = out.data_mut();
    windows(&shape, |pos, o| {
        let (kn, ko) = (new[o] as usize, old[o] as usize);
        if kn == ko {
            o_data[pos[kn]] = dd[o];
        } else {
            o_data[pos[kn]] = sd[o] + dd[o];
            o_data[pos[ko]] = -sd[o];
        }
    });
    Ok(())
}

/// `unpool(s_b, idx_b) − unpool(s_a, idx_a)` for two states on a common base (`s = s* + d`):
/// `d_b − d_a` where the argmaxes agree, `s_b` and `−s_a` at their own positions where not.
pub fn unpool_diff(
    (s_a, d_a, idx_a): (&Tensor, &Tensor, &PoolIndex),
    (s_b, d_b, idx_b): (&Tensor, &Tensor, &PoolIndex),
    out: &mut Tensor,
) -> Result<(), ShapeError> {
    let pooled = idx_a.pooled_shape();
    for t in [s_a, d_a, s_b, d_b] {
        t.expect_shape("unpool_diff", "pooled map", &pooled)?;
    }
    let shape = idx_a.input_shape().to_vec();
    out.ensure_shape(&shape);
    out.fill(0.0);
    let (ca, cb) = (pool_codes(idx_a), pool_codes(idx_b));
    let o_data = out.data_mut();
    windows(&shape, |pos, o| {
        let (ka, kb) = (ca[o] as usize, cb[o] as usize);
        if ka == kb {
            o_data[pos[ka]] = d_b.data()[o] - d_a.data()[o];
        } else {
            o_data[pos[kb]] = s_b.data()[o];
            o_data[pos[ka]] = -s_a.data()[o];
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::pool::{maxpool2x2, unpool2x2};
    use crate::core::testutil::random_tensor;

    #[test]
    fn pooled_offsets_equal_differences_of_plain_evaluations() {
        let y = random_tensor(&[2, 4, 6, 3], 1);
        let mut wd = random_tensor(&[2, 4, 6, 3], 2);
        // small offsets leave most argmaxes in place; make a few large to move some
        for (i, v) in wd.data_mut().iter_mut().enumerate() {
            *v *= if i % 7 == 0 { 1.0 } else { 1e-3 };
        }
        let (mut p0, mut i0) = (Tensor::default(), PoolIndex::default());
        maxpool2x2(&y, &mut p0, &mut i0).unwrap();
        let mut full = y.clone();
        full.data_mut()
            .iter_mut()
            .zip(wd.data())
            .for_each(|(a, b)| *a += b);
        let (mut p1, mut i1) = (Tensor::default(), PoolIndex::default());
        maxpool2x2(&full, &mut p1, &mut i1).unwrap();
        let (mut delta, mut inew) = (Tensor::default(), PoolIndex::default());
        pool_offset(&wd, &y, &i0, &mut delta, &mut inew).unwrap();
        assert_eq!(inew, i1);
        assert!(i0 != i1, "some argmax should move");
        for ((dv, a), b) in delta.data().iter().zip(p1.data()).zip(p0.data()) {
            assert!((dv - (a - b)).abs() < 1e-6, "{dv} vs {}", a - b);
        }
        // unpool_offset = unpool(s* + d, new) − unpool(s*, old)
        let s = random_tensor(p0.shape(), 3);
        let d = random_tensor(p0.shape(), 4);
        let mut m = Tensor::default();
        unpool_offset(&d, &s, &i1, &i0, &mut m).unwrap();
        let mut sd = s.clone();
        sd.data_mut()
            .iter_mut()
            .zip(d.data())
            .for_each(|(a, b)| *a += b);
        let (mut u1, mut u0) = (Tensor::default(), Tensor::default());
        unpool2x2(&sd, &i1, &mut u1).unwrap();
        unpool2x2(&s, &i0, &mut u0).unwrap();
        for ((mv, a), b) in m.data().iter().zip(u1.data()).zip(u0.data()) {
            assert!((mv - (a - b)).abs() < 1e-6);
        }
        // unpool_diff between two offset states
        let d2 = random_tensor(p0.shape(), 5);
        let mut sd2 = s.clone();
        sd2.data_mut()
            .iter_mut()
            .zip(d2.data())
            .for_each(|(a, b)| *a += b);
        let mut diff = Tensor::default();
        unpool_diff((&sd, &d, &i1), (&sd2, &d2, &i0), &mut diff).unwrap();
        let mut u2 = Tensor::default();
        unpool2x2(&sd2, &i0, &mut u2).unwrap();
        for ((v, a), b) in diff.data().iter().zip(u2.data()).zip(u1.data()) {
            assert!((v - (a - b)).abs() < 1e-6);
        }
    }

    #[test]
    fn offset_updates_match_plain_updates_and_the_box_exactly() {
        // base state with units at both bounds and inside
        let base = Tensor::from_vec(&[1, 4], vec![0.0, 1.0, 0.3, 0.7]).unwrap();
        let alpha = 0.5;
        // b* such that the free update reproduces the base where inside the box
        let bstar = Tensor::from_vec(&[1, 4], vec![-0.4, 3.0, 0.6, 1.4]).unwrap();
        let f = force(&[&bstar], &OffsetLayer::HardSigmoid { alpha }, &base).unwrap();
        assert_eq!(f.data()[2], 0.0);
        let delta = Tensor::from_vec(&[1, 4], vec![-0.5, -1.0, 0.2, 1.0]).unwrap();
        let (mut d, mut s) = (Tensor::zeros(&[1, 4]), base.clone());
        offset_update(
            &f,
            &[&delta],
            None,
            None,
            &OffsetLayer::HardSigmoid { alpha },
            &base,
            &mut d,
            &mut s,
            None,
        )
        .unwrap();
        // plain: clamp(α (b* + Δb), 0, 1)
        let plain: Vec<f32> = bstar
            .data()
            .iter()
            .zip(delta.data())
            .map(|(b, db)| (alpha * (b + db)).clamp(0.0, 1.0))
            .collect();
        for ((sv, pv), (dv, bv)) in s
            .data()
            .iter()
            .zip(&plain)
            .zip(d.data().iter().zip(base.data()))
        {
            assert!((sv - pv).abs() < 1e-6, "{sv} vs {pv}");
            assert!((dv - (pv - bv)).abs() < 1e-6);
        }
        // the unit at 0 pushed further down stays exactly at 0 (offset exactly 0)
        assert_eq!(d.data()[0], 0.0);
    }

    #[test]
    fn per_unit_offset_updates_match_plain_updates_and_sit_exactly_on_the_bounds() {
        // hard sigmoid with a slope per unit: clamp(α_i (b* + Δb), 0, 1)
        let base = Tensor::from_vec(&[1, 4], vec![0.0, 1.0, 0.3, 0.7]).unwrap();
        let alpha = vec![0.5, 0.25, 0.8, 0.4];
        let layer = OffsetLayer::UnitSigmoid {
            alpha: alpha.clone(),
        };
        let bstar = Tensor::from_vec(&[1, 4], vec![-0.4, 5.0, 0.375, 1.75]).unwrap();
        let f = force(&[&bstar], &layer, &base).unwrap();
        assert_eq!(f.data()[2], 0.0);
        let delta = Tensor::from_vec(&[1, 4], vec![-0.5, -1.0, 0.2, 1.0]).unwrap();
        let (mut d, mut s) = (Tensor::zeros(&[1, 4]), base.clone());
        offset_update(
            &f,
            &[&delta],
            None,
            None,
            &layer,
            &base,
            &mut d,
            &mut s,
            None,
        )
        .unwrap();
        for (i, a) in alpha.iter().enumerate() {
            let plain = (a * (bstar.data()[i] + delta.data()[i])).clamp(0.0, 1.0);
            assert!(
                (s.data()[i] - plain).abs() < 1e-6,
                "{i}: {} vs {plain}",
                s.data()[i]
            );
        }
        assert_eq!(d.data()[0], 0.0);
        // diodes with per-unit bounds: proj_t(b / q), a clipped unit exactly on its bound
        let base = Tensor::from_vec(&[1, 4], vec![0.3, 0.9, -0.2, -0.6]).unwrap();
        let (q, bounds) = (vec![2.0, 1.0, 4.0, 0.5], vec![0.1, 0.7, 0.05, -0.3]);
        let layer = OffsetLayer::DiodeBounds {
            q: q.clone(),
            bounds: bounds.clone(),
        };
        let bstar = Tensor::from_vec(&[1, 4], vec![0.6, 0.9, -0.8, -0.3]).unwrap();
        let f = force(&[&bstar], &layer, &base).unwrap();
        let delta = Tensor::from_vec(&[1, 4], vec![-1.0, 0.4, 1.2, -0.1]).unwrap();
        let (mut d, mut s) = (Tensor::zeros(&[1, 4]), base.clone());
        offset_update(
            &f,
            &[&delta],
            None,
            None,
            &layer,
            &base,
            &mut d,
            &mut s,
            None,
        )
        .unwrap();
        for i in 0..4 {
            let z = (bstar.data()[i] + delta.data()[i]) / q[i];
            let plain = if i < 2 {
                z.max(bounds[i])
            } else {
                z.min(bounds[i])
            };
            assert!(
                (s.data()[i] - plain).abs() < 1e-6,
                "{i}: {} vs {plain}",
                s.data()[i]
            );
        }
        // units 0 and 2 are pushed past their bounds: exactly on them
        assert_eq!((s.data()[0], s.data()[2]), (0.1, 0.05));
        // a layer width that does not match the per-unit parameters is an error
        let short = OffsetLayer::UnitSigmoid {
            alpha: vec![0.5; 3],
        };
        assert!(force(&[&bstar], &short, &base).is_err());
    }
}
