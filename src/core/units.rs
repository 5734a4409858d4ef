//! Kernels of layers whose units differ from one another (per-unit nonlinearity variability of
//! an analog circuit, see [`crate::analog`]):
//!
//! * [`unit_sigmoid`]: the hard sigmoid with a slope per unit, `s_i = clamp(α_i·Σ_t b_{t,i},
//!   0, 1)` — the exact minimiser of `Σ_i s_i²/(2α_i) − Σ_i b_i s_i` on `[0, 1]`;
//!   [`unit_sigmoid_backward`] its adjoint;
//! * [`unit_slopes`], [`scaled_draws`]: the per-unit parameters from their device draws `ξ`.
//!
//! The diode bound per unit lives with the other projections
//! ([`super::quadratic::Projection::DiodeBounds`]).

use super::ops::{update_rows, UpdateStats};
use super::tensor::{ShapeError, Tensor};

/// Smallest relative slope of a varied unit: `α_i = α·max(1 + σ·ξ_i, SLOPE_FLOOR)`, so every
/// unit keeps a positive slope (and a finite self-energy `s²/(2α_i)`).
pub const SLOPE_FLOOR: f32 = 0.01;

/// Checks that `t` holds one value per unit of a layer of width `f`.
fn per_unit(op: &'static str, t: &Tensor, f: usize) -> Result<(), ShapeError> {
    if t.len() == f {
        return Ok(());
    }
    Err(ShapeError::new(
        op,
        "slopes",
        t.shape(),
        format!("{f} values"),
    ))
}

/// `α_i = α·max(1 + σ·ξ_i, SLOPE_FLOOR)` for every unit.
pub fn unit_slopes(xi: &Tensor, alpha: f32, sigma: f32) -> Tensor {
    let mut out = xi.clone();
    out.data_mut()
        .iter_mut()
        .for_each(|v| *v = alpha * (1.0 + sigma * *v).max(SLOPE_FLOOR));
    out
}

/// `σ·ξ_i` for every unit (offsets and diode thresholds).
pub fn scaled_draws(xi: &Tensor, sigma: f32) -> Tensor {
    let mut out = xi.clone();
    out.data_mut().iter_mut().for_each(|v| *v *= sigma);
    out
}

/// `out[b] = row` for every sample `b` of `like` (`row` holds one value per unit, `[F]` or the
/// layer's unbatched shape).
pub fn tile_rows(row: &Tensor, like: &Tensor, out: &mut Tensor) -> Result<(), ShapeError> {
    let f = like.row_len().max(1);
    if row.len() != f {
        return Err(ShapeError::new(
            "tile_rows",
            "per-unit values",
            row.shape(),
            format!("{f} values"),
        ));
    }
    out.ensure_shape(like.shape());
    for r in out.data_mut().chunks_mut(f) {
        r.copy_from_slice(row.data());
    }
    Ok(())
}

/// `s ← clamp(α ⊙ Σ_t terms_t, 0, 1)` per sample (`alpha` has one value per unit, `[F]`);
/// stores `α ⊙ Σ_t terms_t` in `record` when given; samples with `frozen[b]` keep their
/// state. Returns the change statistics.
pub fn unit_sigmoid(
    terms: &[&Tensor],
    alpha: &Tensor,
    s: &mut Tensor,
    mut record: Option<&mut Tensor>,
    frozen: Option<&[bool]>,
) -> Result<UpdateStats, ShapeError> {
    let f = s.row_len().max(1);
    per_unit("unit_sigmoid", alpha, f)?;
    for t in terms {
        t.expect_shape("unit_sigmoid", "linear coefficient", s.shape())?;
    }
    if let Some(r) = record.as_deref_mut() {
        r.ensure_shape(s.shape());
    }
    let (data, a): (Vec<&[f32]>, &[f32]) = (terms.iter().map(|t| t.data()).collect(), alpha.data());
    let row = |n: usize, srow: &mut [f32], mut rrow: Option<&mut [f32]>| -> (f64, f64) {
        let keep = frozen.is_some_and(|fr| fr[n]);
        let (mut d2, mut o2) = (0.0f64, 0.0f64);
        for i in 0..f {
            let mut b = 0.0f32;
            for t in &data {
                b += t[n * f + i];
            }
            let z = a[i] * b;
            if let Some(r) = rrow.as_deref_mut() {
                r[i] = z;
            }
            let old = srow[i];
            o2 += (old as f64) * (old as f64);
            if !keep {
                // clamp keeps NaN, so divergence stays visible in the statistics
                let new = z.clamp(0.0, 1.0);
                d2 += ((new - old) as f64).powi(2);
                srow[i] = new;
            }
        }
        (d2, o2)
    };
    Ok(update_rows(s, record, f, row))
}

/// Backward of [`unit_sigmoid`] at the stored `z = α ⊙ b`: `ḡ_b = ḡ_s·α_i·1[0 ≤ z ≤ 1]`
/// (inclusive at the kinks, like PyTorch's clamp).
pub fn unit_sigmoid_backward(
    z: &Tensor,
    alpha: &Tensor,
    g_s: &Tensor,
    g_pre: &mut Tensor,
) -> Result<(), ShapeError> {
    let f = z.row_len().max(1);
    per_unit("unit_sigmoid_backward", alpha, f)?;
    g_s.expect_shape("unit_sigmoid_backward", "adjoint", z.shape())?;
    g_pre.ensure_shape(z.shape());
    for (j, (o, (&g, &x))) in g_pre
        .data_mut()
        .iter_mut()
        .zip(g_s.data().iter().zip(z.data()))
        .enumerate()
    {
        *o = if (0.0..=1.0).contains(&x) {
            alpha.data()[j % f] * g
        } else {
            0.0
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_unit_slopes_clamp_and_gate_the_adjoint() {
        let b = Tensor::from_vec(&[2, 3], vec![1.0, -1.0, 4.0, 0.5, 2.0, 1.0]).unwrap();
        let alpha = Tensor::from_vec(&[3], vec![0.5, 0.25, 0.2]).unwrap();
        let (mut s, mut z) = (Tensor::zeros(&[2, 3]), Tensor::default());
        unit_sigmoid(&[&b], &alpha, &mut s, Some(&mut z), None).unwrap();
        assert_eq!(z.data(), &[0.5, -0.25, 0.8, 0.25, 0.5, 0.2]);
        assert_eq!(s.data(), &[0.5, 0.0, 0.8, 0.25, 0.5, 0.2]);
        let g = Tensor::full(&[2, 3], 2.0);
        let mut gp = Tensor::default();
        unit_sigmoid_backward(&z, &alpha, &g, &mut gp).unwrap();
        assert_eq!(gp.data(), &[1.0, 0.0, 0.4, 1.0, 0.5, 0.4]);
        // frozen samples keep their state
        let mut s2 = Tensor::zeros(&[2, 3]);
        unit_sigmoid(&[&b], &alpha, &mut s2, None, Some(&[false, true])).unwrap();
        assert_eq!(&s2.data()[3..], &[0.0, 0.0, 0.0]);
    }

    #[test]
    fn slopes_are_floored_positive() {
        let xi = Tensor::from_vec(&[3], vec![0.0, 1.0, -50.0]).unwrap();
        let a = unit_slopes(&xi, 0.5, 0.1);
        assert_eq!(a.data()[0], 0.5);
        assert!((a.data()[1] - 0.55).abs() < 1e-7);
        assert_eq!(a.data()[2], 0.5 * SLOPE_FLOOR);
        assert_eq!(scaled_draws(&xi, 0.1).data()[2], -5.0);
    }
}
