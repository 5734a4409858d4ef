//! Kernels of relaxation in offsets from a base state (EP's nudged phases relaxed as
//! `d = s − s*` from the free equilibrium `s*`): round-off then scales with `|d|`, i.e. with
//! β, instead of with `|s|`.
//!
//! * [`force`]: the free residual `F = Σ_t b*_t − Q ⊙ s*` of a layer (`Q` its quadratic
//!   coefficient: `1/α`, `1`, or the conductance sums).
//! * [`offset_update`]: the new offset `d = proj(z* + Δz) − s*` computed as a projection of
//!   small quantities onto the shifted domain `[lo − s*, hi − s*]`.
//! * [`pool_offset`], [`unpool_offset`], [`unpool_diff`] and the fused
//!   [`conv2d_pool_offset`], [`conv2d_transposed_unpool_offset`]: a max-pooled coupling
//!   evaluated in offsets, exact where the argmax moves (see `pooled`).

mod pooled;
#[cfg(test)]
mod pooled_tests;

use super::ops::UpdateStats;
use super::quadratic::QuadraticError;
use super::tensor::{ShapeError, Tensor};
use rayon::prelude::*;

pub use pooled::{
    conv2d_pool_offset, conv2d_transposed_unpool_offset, pool_offset, unpool_diff, unpool_offset,
};

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
    let zeros;
    let qc = match cost_q {
        Some(c) => c.data(),
        None => {
            zeros = vec![0.0f32; if qt.is_some() { f } else { 0 }];
            &zeros
        }
    };
    let half = f / 2;
    let inputs = RowInputs {
        force: force.data(),
        deltas: &deltas.iter().map(|t| t.data()).collect::<Vec<_>>(),
        cost: cost.map(|c| c.data()),
        base: base.data(),
    };
    let (d, s) = (d.data_mut(), s.data_mut());
    let per_sample = match layer {
        OffsetLayer::HardSigmoid { alpha } => rows(&inputs, &Sigmoid::One(*alpha), f, d, s, frozen),
        OffsetLayer::UnitSigmoid { alpha } => {
            rows(&inputs, &Sigmoid::PerUnit(alpha), f, d, s, frozen)
        }
        OffsetLayer::Identity => rows(&inputs, &Linear, f, d, s, frozen),
        OffsetLayer::Quadratic { diode, .. } => {
            let (q, diode) = (qt.as_deref().expect("quadratic"), *diode);
            let rule = Diode { q, qc, half, diode };
            rows(&inputs, &rule, f, d, s, frozen)
        }
        OffsetLayer::DiodeBounds { bounds, .. } => {
            let q = qt.as_deref().expect("quadratic");
            let rule = BoundedDiode {
                q,
                qc,
                half,
                bounds,
            };
            rows(&inputs, &rule, f, d, s, frozen)
        }
    };
    Ok(UpdateStats::from_rows(per_sample))
}

/// The operands of [`offset_update`] (whole maps, rows of `f` units).
struct RowInputs<'a> {
    force: &'a [f32],
    deltas: &'a [&'a [f32]],
    cost: Option<&'a [f32]>,
    base: &'a [f32],
}

/// Lanes per block of [`row`]: the new offsets are computed a block at a time (vectorised),
/// then the statistics are summed in unit order.
const LANES: usize = 16;

type Lanes = [f32; LANES];

/// `params[i0..i0+m]` as lanes, zero past `m`.
#[inline(always)]
fn lanes(params: &[f32], i0: usize, m: usize) -> Lanes {
    if m == LANES {
        // a fixed-size copy (a variable-length one is a call to memcpy)
        return params[i0..i0 + LANES].try_into().expect("16 lanes");
    }
    let mut v = [0.0f32; LANES];
    for (a, b) in v.iter_mut().zip(&params[i0..i0 + m]) {
        *a = *b;
    }
    v
}

/// `dst[..m] = v[..m]`.
#[inline(always)]
fn store(dst: &mut [f32], v: &Lanes, m: usize) {
    if m == LANES {
        dst[..LANES].copy_from_slice(v);
    } else {
        dst[..m].iter_mut().zip(v).for_each(|(a, b)| *a = *b);
    }
}

/// A layer's offset update of units `i0..i0+m` (lanes; those past `m` are ignored):
/// `(d, s)` from `g` and the base state `s*`.
trait UnitRule: Sync {
    fn apply(&self, i0: usize, m: usize, g: &Lanes, sb: &Lanes) -> (Lanes, Lanes);
}

/// `d = clamp(α_i·g, −s*, 1 − s*)` with one slope or one per unit.
enum Sigmoid<'a> {
    One(f32),
    PerUnit(&'a [f32]),
}

impl UnitRule for Sigmoid<'_> {
    #[inline(always)]
    fn apply(&self, i0: usize, m: usize, g: &Lanes, sb: &Lanes) -> (Lanes, Lanes) {
        let alpha = match self {
            Sigmoid::One(a) => [*a; LANES],
            Sigmoid::PerUnit(a) => lanes(a, i0, m),
        };
        let (mut d, mut s) = ([0.0f32; LANES], [0.0f32; LANES]);
        for l in 0..LANES {
            // `f32::clamp` as selects (it keeps NaN)
            let (lo, hi) = (-sb[l], 1.0 - sb[l]);
            let mut x = alpha[l] * g[l];
            x = if x < lo { lo } else { x };
            x = if x > hi { hi } else { x };
            d[l] = x;
            s[l] = sb[l] + x;
        }
        (d, s)
    }
}

/// `d = g`.
struct Linear;

impl UnitRule for Linear {
    #[inline(always)]
    fn apply(&self, _: usize, _: usize, g: &Lanes, sb: &Lanes) -> (Lanes, Lanes) {
        let mut s = [0.0f32; LANES];
        for l in 0..LANES {
            s[l] = sb[l] + g[l];
        }
        (*g, s)
    }
}

/// `d = proj_{−s*}((g − q_c s*) / q)` (ideal diodes: first half `≥ −s*`, second `≤ −s*`), or
/// without the projection (linear).
struct Diode<'a> {
    q: &'a [f32],
    qc: &'a [f32],
    half: usize,
    diode: bool,
}

impl UnitRule for Diode<'_> {
    #[inline(always)]
    fn apply(&self, i0: usize, m: usize, g: &Lanes, sb: &Lanes) -> (Lanes, Lanes) {
        let (q, qc) = (lanes(self.q, i0, m), lanes(self.qc, i0, m));
        let (mut d, mut s) = ([0.0f32; LANES], [0.0f32; LANES]);
        for l in 0..LANES {
            let t = (g[l] - qc[l] * sb[l]) / q[l];
            d[l] = match (self.diode, i0 + l < self.half) {
                (false, _) => t,
                (true, true) => t.max(-sb[l]),
                (true, false) => t.min(-sb[l]),
            };
            s[l] = sb[l] + d[l];
        }
        (d, s)
    }
}

/// As [`Diode`] with a bound `t_i` per unit: a clipped unit's offset is `t_i − s*` and its
/// state `t_i` exactly.
struct BoundedDiode<'a> {
    q: &'a [f32],
    qc: &'a [f32],
    half: usize,
    bounds: &'a [f32],
}

impl UnitRule for BoundedDiode<'_> {
    #[inline(always)]
    fn apply(&self, i0: usize, m: usize, g: &Lanes, sb: &Lanes) -> (Lanes, Lanes) {
        let (q, qc) = (lanes(self.q, i0, m), lanes(self.qc, i0, m));
        let bounds = lanes(self.bounds, i0, m);
        let (mut d, mut s) = ([0.0f32; LANES], [0.0f32; LANES]);
        for l in 0..LANES {
            let t = (g[l] - qc[l] * sb[l]) / q[l];
            let lim = bounds[l] - sb[l];
            let clipped = if i0 + l < self.half { t < lim } else { t > lim };
            (d[l], s[l]) = if clipped {
                (lim, bounds[l])
            } else {
                (t, sb[l] + t)
            };
        }
        (d, s)
    }
}

/// One sample's update (row `n`): `g = F + Σ Δb + b_c` then `rule`; returns
/// `(Σ (d_new − d_old)², Σ d_old²)` summed in unit order. A `keep` row is not updated.
#[inline(always)]
fn row<R: UnitRule>(
    inp: &RowInputs<'_>,
    rule: &R,
    n: usize,
    keep: bool,
    drow: &mut [f32],
    srow: &mut [f32],
) -> (f64, f64) {
    let f = drow.len();
    let (mut d2, mut o2) = (0.0f64, 0.0f64);
    if keep {
        for &old in drow.iter() {
            o2 += (old as f64) * (old as f64);
        }
        return (d2, o2);
    }
    for i0 in (0..f).step_by(LANES) {
        let m = LANES.min(f - i0);
        let j0 = n * f + i0;
        let mut g = lanes(inp.force, j0, m);
        for t in inp.deltas {
            for (a, b) in g.iter_mut().zip(&t[j0..j0 + m]) {
                *a += b;
            }
        }
        if let Some(c) = inp.cost {
            for (a, b) in g.iter_mut().zip(&c[j0..j0 + m]) {
                *a += b;
            }
        }
        let sb = lanes(inp.base, j0, m);
        let (nd, ns) = rule.apply(i0, m, &g, &sb);
        let (dr, sr) = (&mut drow[i0..i0 + m], &mut srow[i0..i0 + m]);
        for l in 0..m {
            let old = dr[l];
            o2 += (old as f64) * (old as f64);
            let diff = nd[l] - old;
            d2 += (diff as f64) * (diff as f64);
        }
        store(dr, &nd, m);
        store(sr, &ns, m);
    }
    (d2, o2)
}

/// [`row`] over every sample (rows of `f` units), in parallel.
fn rows<R: UnitRule>(
    inp: &RowInputs<'_>,
    rule: &R,
    f: usize,
    d: &mut [f32],
    s: &mut [f32],
    frozen: Option<&[bool]>,
) -> Vec<(f64, f64)> {
    d.par_chunks_mut(f)
        .zip(s.par_chunks_mut(f))
        .enumerate()
        .map(|(n, (drow, srow))| {
            let keep = frozen.is_some_and(|fr| fr[n]);
            row(inp, rule, n, keep, drow, srow)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
