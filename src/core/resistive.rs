//! Kernels of resistive (conductance) layers: row and column sums of a conductance matrix,
//! per-unit batch dot products, rank-one broadcasts into a weight gradient, and the
//! duplicated input voltages `gain·[x, −x]` with their adjoint.

use super::tensor::{dims2, ShapeError, Tensor};

/// Row sums `[F_out]` and column sums `[F_in]` of `G: [F_out, F_in]`.
pub fn row_col_sums(g: &Tensor) -> Result<(Tensor, Tensor), ShapeError> {
    let [fout, fin] = dims2("row_col_sums", "conductances", g)?;
    let mut rows = vec![0.0f32; fout];
    let mut cols = vec![0.0f64; fin];
    const LANES: usize = 8;
    for (r, row) in rows.iter_mut().zip(g.data().chunks(fin.max(1))) {
        // eight independent partial row sums, so the loop vectorises instead of waiting
        // on one f64 addition per conductance
        let mut lanes = [0.0f64; LANES];
        let mut col_chunks = cols.chunks_exact_mut(LANES);
        let mut row_chunks = row.chunks_exact(LANES);
        for (cs, vs) in (&mut col_chunks).zip(&mut row_chunks) {
            for k in 0..LANES {
                lanes[k] += vs[k] as f64;
                cs[k] += vs[k] as f64;
            }
        }
        let mut s: f64 = lanes.iter().sum();
        for (c, &v) in col_chunks
            .into_remainder()
            .iter_mut()
            .zip(row_chunks.remainder())
        {
            s += v as f64;
            *c += v as f64;
        }
        *r = s as f32;
    }
    Ok((
        Tensor::from_vec(&[fout], rows)?,
        Tensor::from_vec(&[fin], cols.into_iter().map(|v| v as f32).collect())?,
    ))
}

/// `Σ_b a[b, j] · c[b, j]` per unit `j` (`a`, `c`: `[B, F]`), accumulated in f64.
pub fn column_dots(a: &Tensor, c: &Tensor) -> Result<Vec<f64>, ShapeError> {
    let [_, f] = dims2("column_dots", "first operand", a)?;
    c.expect_shape("column_dots", "second operand", a.shape())?;
    let mut out = vec![0.0f64; f];
    for (ra, rc) in a.data().chunks(f.max(1)).zip(c.data().chunks(f.max(1))) {
        for ((o, x), y) in out.iter_mut().zip(ra).zip(rc) {
            *o += *x as f64 * *y as f64;
        }
    }
    Ok(out)
}

/// `Σ_b a[b, j]` per unit `j`, in f64.
pub fn column_sums(a: &Tensor) -> Result<Vec<f64>, ShapeError> {
    let [_, f] = dims2("column_sums", "operand", a)?;
    let mut out = vec![0.0f64; f];
    for r in a.data().chunks(f.max(1)) {
        for (o, x) in out.iter_mut().zip(r) {
            *o += *x as f64;
        }
    }
    Ok(out)
}

/// `dw[j, i] += scale · (rows[j] + cols[i])` for `dw: [F_out, F_in]` (either vector optional).
pub fn add_row_col(
    dw: &mut Tensor,
    rows: Option<&[f64]>,
    cols: Option<&[f64]>,
    scale: f64,
) -> Result<(), ShapeError> {
    let [fout, fin] = dims2("add_row_col", "weight gradient", dw)?;
    if rows.is_some_and(|r| r.len() != fout) || cols.is_some_and(|c| c.len() != fin) {
        return Err(ShapeError::new(
            "add_row_col",
            "row/column vector",
            &[rows.map_or(0, <[f64]>::len), cols.map_or(0, <[f64]>::len)],
            format!("[{fout}] and [{fin}]"),
        ));
    }
    for (j, row) in dw.data_mut().chunks_mut(fin.max(1)).enumerate() {
        let r = rows.map_or(0.0, |r| r[j]);
        for (i, v) in row.iter_mut().enumerate() {
            let c = cols.map_or(0.0, |c| c[i]);
            *v = (*v as f64 + scale * (r + c)) as f32;
        }
    }
    Ok(())
}

/// The flat input voltages `gain · [flat(x), −flat(x)]` (`[B, 2F]`; a channels-last map is
/// flattened C-major, as PyTorch flattens `cat((x, −x), 1)`), or `gain · flat(x)` without
/// duplication.
pub fn input_voltages(x: &Tensor, gain: f32, duplicate: bool) -> Result<Tensor, ShapeError> {
    let flat = flat_c_major(x)?;
    let (b, f) = (flat.dim0(), flat.row_len());
    let width = if duplicate { 2 * f } else { f };
    let mut out = vec![0.0f32; b * width];
    for (o, r) in out.chunks_mut(width).zip(flat.data().chunks(f.max(1))) {
        for (i, &v) in r.iter().enumerate() {
            o[i] = gain * v;
            if duplicate {
                o[f + i] = -gain * v;
            }
        }
    }
    Tensor::from_vec(&[b, width], out)
}

/// Adjoint of [`input_voltages`]: from `d = ∂/∂(voltages)` (`[B, 2F]` or `[B, F]`), the
/// derivative with respect to `x`, `gain · (d[:F] − d[F:])`, in `x`'s shape and layout.
pub fn fold_input_voltages(
    d: &Tensor,
    like: &Tensor,
    gain: f32,
    duplicate: bool,
) -> Result<Tensor, ShapeError> {
    let f = like.row_len();
    let b = like.dim0();
    let width = if duplicate { 2 * f } else { f };
    d.expect_shape("fold_input_voltages", "voltage adjoint", &[b, width])?;
    let mut flat = vec![0.0f32; b * f];
    for (o, r) in flat.chunks_mut(f.max(1)).zip(d.data().chunks(width.max(1))) {
        for i in 0..f {
            o[i] = if duplicate {
                gain * (r[i] - r[f + i])
            } else {
                gain * r[i]
            };
        }
    }
    let flat = Tensor::from_vec(&[b, f], flat)?;
    unflat_c_major(&flat, like)
}

fn flat_c_major(x: &Tensor) -> Result<Tensor, ShapeError> {
    if x.shape().len() == 4 {
        let mut f = Tensor::default();
        super::ops::flatten_chw(x, &mut f)?;
        Ok(f)
    } else {
        let b = x.dim0();
        x.clone().reshaped(&[b, x.row_len()])
    }
}

fn unflat_c_major(flat: &Tensor, like: &Tensor) -> Result<Tensor, ShapeError> {
    if like.shape().len() == 4 {
        let s = like.shape();
        let mut out = Tensor::default();
        super::ops::unflatten_chw(flat, [s[0], s[1], s[2], s[3]], &mut out)?;
        Ok(out)
    } else {
        flat.clone().reshaped(like.shape())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testutil::random_tensor;

    #[test]
    fn sums_broadcasts_and_voltages_match_naive_loops() {
        // rows shorter than the 8 accumulation lanes, and rows of whole lanes plus a rest
        for (fout, fin) in [(3, 5), (4, 21)] {
            let g = random_tensor(&[fout, fin], 1);
            let (r, c) = row_col_sums(&g).unwrap();
            for j in 0..fout {
                let s: f64 = (0..fin).map(|i| g.data()[j * fin + i] as f64).sum();
                assert!(
                    (r.data()[j] as f64 - s).abs() < 1e-6,
                    "row {j} of {fout}x{fin}"
                );
            }
            for i in 0..fin {
                let s: f64 = (0..fout).map(|j| g.data()[j * fin + i] as f64).sum();
                assert!(
                    (c.data()[i] as f64 - s).abs() < 1e-6,
                    "col {i} of {fout}x{fin}"
                );
            }
        }
        let mut dw = Tensor::zeros(&[3, 5]);
        add_row_col(
            &mut dw,
            Some(&[1.0, 2.0, 3.0]),
            Some(&[0.0, 10.0, 0.0, 0.0, 0.5]),
            2.0,
        )
        .unwrap();
        assert_eq!(dw.data()[5 + 1], 24.0);
        assert_eq!(dw.data()[2 * 5 + 4], 7.0);
        // a channels-last 2x2 map with 2 channels: C-major flatten, then the negated copy
        let x = Tensor::from_vec(&[1, 2, 2, 2], (0..8).map(|v| v as f32).collect()).unwrap();
        let v = input_voltages(&x, 10.0, true).unwrap();
        assert_eq!(
            v.data(),
            &[
                0., 20., 40., 60., 10., 30., 50., 70., -0., -20., -40., -60., -10., -30., -50.,
                -70.
            ]
        );
        let d = random_tensor(&[1, 16], 3);
        let back = fold_input_voltages(&d, &x, 10.0, true).unwrap();
        // <d, V(x)> = <fold(d), x> for the linear map V
        let lhs: f32 = d.data().iter().zip(v.data()).map(|(a, b)| a * b).sum();
        let rhs: f32 = back.data().iter().zip(x.data()).map(|(a, b)| a * b).sum();
        assert!(
            (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
    }
}
