//! The exact layer update of resistive (quadratic-energy) layers and its backward:
//! `v = proj(Σ_t b_t / q)` with `q = Σ_t q_t + extra` per unit, where `proj` is the identity
//! or the ideal-diode projection (first half of the units onto `[0, ∞)`, second half onto
//! `(−∞, 0]`).

use super::ops::{update_rows, UpdateStats};
use super::tensor::{ShapeError, Tensor};

/// The projection applied after the division.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Projection<'a> {
    None,
    /// Units `i < F/2` clipped to `[0, ∞)`, the others to `(−∞, 0]`.
    Diode,
    /// Diodes with a bound `t_i` per unit (`[F]`): units `i < F/2` clipped to `[t_i, ∞)`, the
    /// others to `(−∞, t_i]`.
    DiodeBounds(&'a [f32]),
}

impl Projection<'_> {
    fn apply(self, i: usize, half: usize, z: f32) -> f32 {
        match self {
            Projection::None => z,
            Projection::Diode if i < half => z.max(0.0),
            Projection::Diode => z.min(0.0),
            Projection::DiodeBounds(t) if i < half => z.max(t[i]),
            Projection::DiodeBounds(t) => z.min(t[i]),
        }
    }

    /// Derivative of the projection at `z` (inclusive at the kink, like PyTorch's clamp).
    fn passes(self, i: usize, half: usize, z: f32) -> bool {
        match self {
            Projection::None => true,
            Projection::Diode if i < half => z >= 0.0,
            Projection::Diode => z <= 0.0,
            Projection::DiodeBounds(t) if i < half => z >= t[i],
            Projection::DiodeBounds(t) => z <= t[i],
        }
    }

    /// Checks a per-unit bound against the layer width `f`.
    fn check(self, f: usize) -> Result<(), ShapeError> {
        match self {
            Projection::DiodeBounds(t) if t.len() != f => Err(ShapeError::new(
                "quadratic_update",
                "diode bounds",
                &[t.len()],
                format!("[{f}]"),
            )),
            _ => Ok(()),
        }
    }
}

/// Why [`quadratic_update`] failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuadraticError {
    /// The total quadratic coefficient of `unit` is `value ≤ 0` (no minimum).
    #[error("unit {unit}: quadratic coefficient {value} is not positive")]
    NotPositive { unit: usize, value: f32 },
    #[error(transparent)]
    Shape(#[from] ShapeError),
}

/// `q = Σ quad + extra` per unit, checked positive.
pub fn total_quadratic(quad: &[&Tensor], extra: f32, f: usize) -> Result<Vec<f32>, QuadraticError> {
    let mut q = vec![0.0f32; f];
    for t in quad {
        t.expect_shape("quadratic_update", "quadratic coefficient", &[f])?;
        for (a, b) in q.iter_mut().zip(t.data()) {
            *a += b;
        }
    }
    for (unit, v) in q.iter_mut().enumerate() {
        *v += extra;
        if v.is_nan() || *v <= 0.0 {
            return Err(QuadraticError::NotPositive { unit, value: *v });
        }
    }
    Ok(q)
}

/// `s ← proj((Σ lin) / q)` for `s` of shape `[B, F]` (samples with `frozen[b]` keep their
/// state); stores `z = (Σ lin) / q` in `record` when given. Returns the change statistics.
pub fn quadratic_update(
    lin: &[&Tensor],
    quad: &[&Tensor],
    extra: f32,
    proj: Projection,
    s: &mut Tensor,
    mut record: Option<&mut Tensor>,
    frozen: Option<&[bool]>,
) -> Result<UpdateStats, QuadraticError> {
    let f = s.row_len().max(1);
    for t in lin {
        t.expect_shape("quadratic_update", "linear coefficient", s.shape())?;
    }
    let q = total_quadratic(quad, extra, f)?;
    proj.check(f)?;
    if let Some(r) = record.as_deref_mut() {
        r.ensure_shape(s.shape());
    }
    let half = f / 2;
    let data: Vec<&[f32]> = lin.iter().map(|t| t.data()).collect();
    let row = |n: usize, srow: &mut [f32], mut rrow: Option<&mut [f32]>| -> (f64, f64) {
        let keep = frozen.is_some_and(|fr| fr[n]);
        let (mut d2, mut o2) = (0.0f64, 0.0f64);
        for i in 0..f {
            let mut b = 0.0f32;
            for t in &data {
                b += t[n * f + i];
            }
            let z = b / q[i];
            if let Some(r) = rrow.as_deref_mut() {
                r[i] = z;
            }
            let old = srow[i];
            o2 += (old as f64) * (old as f64);
            if !keep {
                let new = proj.apply(i, half, z);
                d2 += ((new - old) as f64).powi(2);
                srow[i] = new;
            }
        }
        (d2, o2)
    };
    Ok(update_rows(s, record, f, row))
}

/// Backward of [`quadratic_update`] at the stored `z`, for the total coefficient `q`:
/// `ḡ_z = ḡ_s ⊙ proj'(z)`, `g_lin = ḡ_z / q` and `g_quad = −ḡ_z ⊙ z / q` (per sample).
pub fn quadratic_update_backward(
    z: &Tensor,
    q: &Tensor,
    proj: Projection,
    g_s: &Tensor,
    g_lin: &mut Tensor,
    mut g_quad: Option<&mut Tensor>,
) -> Result<(), ShapeError> {
    let f = z.row_len().max(1);
    g_s.expect_shape("quadratic_update_backward", "adjoint", z.shape())?;
    q.expect_shape("quadratic_update_backward", "quadratic coefficient", &[f])?;
    proj.check(f)?;
    g_lin.ensure_shape(z.shape());
    if let Some(gq) = g_quad.as_deref_mut() {
        gq.ensure_shape(z.shape());
    }
    let half = f / 2;
    for (j, ((gl, &g), &zv)) in g_lin
        .data_mut()
        .iter_mut()
        .zip(g_s.data())
        .zip(z.data())
        .enumerate()
    {
        let i = j % f;
        let gz = if proj.passes(i, half, zv) { g } else { 0.0 };
        *gl = gz / q.data()[i];
        if let Some(gq) = g_quad.as_deref_mut() {
            gq.data_mut()[j] = -gz * zv / q.data()[i];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divides_projects_and_guards_the_coefficient() {
        let a =
            Tensor::from_vec(&[2, 4], vec![2.0, -2.0, 2.0, -2.0, 1.0, 1.0, -1.0, -1.0]).unwrap();
        let q = Tensor::from_vec(&[4], vec![1.0, 2.0, 4.0, 0.5]).unwrap();
        let mut s = Tensor::zeros(&[2, 4]);
        let mut z = Tensor::default();
        quadratic_update(
            &[&a],
            &[&q],
            0.0,
            Projection::Diode,
            &mut s,
            Some(&mut z),
            None,
        )
        .unwrap();
        assert_eq!(z.data(), &[2.0, -1.0, 0.5, -4.0, 1.0, 0.5, -0.25, -2.0]);
        assert_eq!(s.data(), &[2.0, 0.0, 0.0, -4.0, 1.0, 0.5, -0.25, -2.0]);
        let e = quadratic_update(&[&a], &[&q], -0.75, Projection::None, &mut s, None, None)
            .unwrap_err();
        assert_eq!(
            e,
            QuadraticError::NotPositive {
                unit: 3,
                value: -0.25
            }
        );
        let mut gl = Tensor::default();
        let mut gq = Tensor::default();
        let ones = Tensor::full(&[2, 4], 1.0);
        quadratic_update_backward(&z, &q, Projection::Diode, &ones, &mut gl, Some(&mut gq))
            .unwrap();
        assert_eq!(gl.data(), &[1.0, 0.0, 0.0, 2.0, 1.0, 0.5, 0.25, 2.0]);
        assert_eq!(gq.data()[0], -2.0);
        assert_eq!(gq.data()[3], 8.0);
    }

    #[test]
    fn per_unit_diode_bounds_project_and_gate_the_adjoint() {
        let a = Tensor::from_vec(&[1, 4], vec![0.2, 3.0, -1.0, 1.0]).unwrap();
        let q = Tensor::from_vec(&[4], vec![1.0, 2.0, 1.0, 1.0]).unwrap();
        let t = [0.5f32, 1.0, -0.5, 0.25];
        let proj = Projection::DiodeBounds(&t);
        let (mut s, mut z) = (Tensor::zeros(&[1, 4]), Tensor::default());
        quadratic_update(&[&a], &[&q], 0.0, proj, &mut s, Some(&mut z), None).unwrap();
        assert_eq!(z.data(), &[0.2, 1.5, -1.0, 1.0]);
        // excitatory: max(z, t); inhibitory: min(z, t)
        assert_eq!(s.data(), &[0.5, 1.5, -1.0, 0.25]);
        let g = Tensor::full(&[1, 4], 1.0);
        let mut gl = Tensor::default();
        quadratic_update_backward(&z, &q, proj, &g, &mut gl, None).unwrap();
        assert_eq!(gl.data(), &[0.0, 0.5, 1.0, 0.0]);
        let short = [0.0f32; 3];
        assert!(quadratic_update(
            &[&a],
            &[&q],
            0.0,
            Projection::DiodeBounds(&short),
            &mut s,
            None,
            None
        )
        .is_err());
    }
}
