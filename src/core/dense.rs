//! Dense (fully connected) maps with PyTorch's weight layout `W: [F_out, F_in]`.
//!
//! * forward    `y = x Wᵀ + b`            (`x: [B, F_in]`, `y: [B, F_out]`)
//! * transposed `x̄ = ȳ W`                 (the adjoint, no bias)
//! * weight gradient `W̄ (+)= s · ȳᵀ x`, bias gradient `b̄ (+)= s · Σ_b ȳ_b`.
//!
//! [`PackedDense`] keeps `W` and `Wᵀ` contiguous (the gemm crate is 2-3x slower on a
//! strided transposed operand), with the input columns permuted to the memory order of a
//! channels-last map when the input is one: the model's C-major flatten then costs nothing.

use super::matmul::{matmul, MatMut, MatRef, Par};
use super::tensor::{dims2, ShapeError, Tensor};

fn check_x(op: &'static str, x: &Tensor, fin: usize) -> Result<usize, ShapeError> {
    let [b, f] = dims2(op, "input", x)?;
    if f != fin {
        return Err(ShapeError::new(
            op,
            "input",
            x.shape(),
            format!("[B, {fin}]"),
        ));
    }
    Ok(b)
}

/// `y = x Wᵀ + b`; `y` is resized.
pub fn linear(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&[f32]>,
    y: &mut Tensor,
) -> Result<(), ShapeError> {
    let [fout, fin] = dims2("linear", "weight", w)?;
    let b = check_x("linear", x, fin)?;
    if let Some(bias) = bias {
        if bias.len() != fout {
            return Err(ShapeError::new(
                "linear",
                "bias",
                &[bias.len()],
                format!("[{fout}]"),
            ));
        }
    }
    y.ensure_shape(&[b, fout]);
    if let Some(bias) = bias {
        for row in y.data_mut().chunks_mut(fout) {
            row.copy_from_slice(bias);
        }
    }
    matmul(
        MatMut::row_major(y.data_mut(), b, fout),
        MatRef::row_major(x.data(), b, fin),
        MatRef::row_major(w.data(), fout, fin).t(),
        bias.is_some(),
        1.0,
        Par::Pool,
    );
    Ok(())
}

/// `x̄ = ȳ W`; `x̄` is resized to `[B, F_in]`.
pub fn linear_transposed(dy: &Tensor, w: &Tensor, dx: &mut Tensor) -> Result<(), ShapeError> {
    let [fout, fin] = dims2("linear_transposed", "weight", w)?;
    let b = check_x("linear_transposed", dy, fout)?;
    dx.ensure_shape(&[b, fin]);
    matmul(
        MatMut::row_major(dx.data_mut(), b, fin),
        MatRef::row_major(dy.data(), b, fout),
        MatRef::row_major(w.data(), fout, fin),
        false,
        1.0,
        Par::Pool,
    );
    Ok(())
}

/// `W̄ (+)= scale · ȳᵀ x` into `dw: [F_out, F_in]`.
pub fn linear_weight_grad(
    x: &Tensor,
    dy: &Tensor,
    scale: f32,
    accumulate: bool,
    dw: &mut Tensor,
) -> Result<(), ShapeError> {
    let [b, fin] = dims2("linear_weight_grad", "input", x)?;
    let [b2, fout] = dims2("linear_weight_grad", "output gradient", dy)?;
    if b != b2 {
        return Err(ShapeError::new(
            "linear_weight_grad",
            "output gradient",
            dy.shape(),
            format!("[{b}, F_out]"),
        ));
    }
    if accumulate {
        dw.expect_shape("linear_weight_grad", "weight gradient", &[fout, fin])?;
    } else {
        dw.ensure_shape(&[fout, fin]);
    }
    matmul(
        MatMut::row_major(dw.data_mut(), fout, fin),
        MatRef::row_major(dy.data(), b, fout).t(),
        MatRef::row_major(x.data(), b, fin),
        accumulate,
        scale,
        Par::Pool,
    );
    Ok(())
}

/// Dense weights packed for the kernels; rebuild whenever the weights change.
#[derive(Clone, Debug)]
pub struct PackedDense {
    fout: usize,
    fin: usize,
    /// `W` with columns in the input's memory order, `[F_out, F_in]`. The forward product
    /// reads it through a transposed view: a transposed copy rebuilt on every optimiser
    /// step cost more than the strided reads it saves (measured on `drn_1h`, whose
    /// 1.6 M conductances are repacked per step).
    w: Vec<f32>,
}

impl PackedDense {
    /// Packs `W: [F_out, F_in]`. With `input_map = Some([H, W, C])` the input is a
    /// channels-last map whose PyTorch flatten index `c·H·W + h·W + w` maps to memory index
    /// `(h·W + w)·C + c`.
    pub fn new(w: &Tensor, input_map: Option<[usize; 3]>) -> Result<Self, ShapeError> {
        let [fout, fin] = dims2("PackedDense::new", "weight", w)?;
        let wp: Vec<f32> = match input_map {
            Some([h, wd, c]) => {
                if h * wd * c != fin {
                    return Err(ShapeError::new(
                        "PackedDense::new",
                        "weight",
                        w.shape(),
                        format!("[F_out, {}] for a {h}x{wd}x{c} input map", h * wd * c),
                    ));
                }
                // memory index m -> flatten index
                let perm: Vec<usize> = (0..fin).map(|m| (m % c) * h * wd + m / c).collect();
                w.data()
                    .chunks(fin.max(1))
                    .flat_map(|row| perm.iter().map(move |&f| row[f]))
                    .collect()
            }
            None => w.data().to_vec(),
        };
        Ok(PackedDense { fout, fin, w: wp })
    }

    pub fn fin(&self) -> usize {
        self.fin
    }

    pub fn fout(&self) -> usize {
        self.fout
    }
}

/// `y = x Wᵀ + b` for any `x` of `B × F_in` values per sample (a map in its memory order);
/// `y: [B, F_out]` is resized.
pub fn dense_forward(
    x: &Tensor,
    p: &PackedDense,
    bias: Option<&[f32]>,
    y: &mut Tensor,
) -> Result<(), ShapeError> {
    if x.row_len() != p.fin || x.shape().len() < 2 {
        return Err(ShapeError::new(
            "dense_forward",
            "input",
            x.shape(),
            format!("[B, ..] with {} values per sample", p.fin),
        ));
    }
    let b = x.dim0();
    y.ensure_shape(&[b, p.fout]);
    if let Some(bias) = bias {
        if bias.len() != p.fout {
            return Err(ShapeError::new(
                "dense_forward",
                "bias",
                &[bias.len()],
                format!("[{}]", p.fout),
            ));
        }
        for row in y.data_mut().chunks_mut(p.fout) {
            row.copy_from_slice(bias);
        }
    }
    matmul(
        MatMut::row_major(y.data_mut(), b, p.fout),
        MatRef::row_major(x.data(), b, p.fin),
        MatRef::row_major(&p.w, p.fout, p.fin).t(),
        bias.is_some(),
        1.0,
        Par::Pool,
    );
    Ok(())
}

/// `x̄ = ȳ W` (the adjoint of [`dense_forward`] without bias), written with `shape` (whose
/// per-sample size must be `F_in`; a map shape gets its memory order).
pub fn dense_transposed(
    dy: &Tensor,
    p: &PackedDense,
    shape: &[usize],
    dx: &mut Tensor,
) -> Result<(), ShapeError> {
    let b = check_x("dense_transposed", dy, p.fout)?;
    if shape.first() != Some(&b) || shape.iter().skip(1).product::<usize>() != p.fin {
        return Err(ShapeError::new(
            "dense_transposed",
            "output shape",
            shape,
            format!("[{b}, ..] with {} values per sample", p.fin),
        ));
    }
    dx.ensure_shape(shape);
    matmul(
        MatMut::row_major(dx.data_mut(), b, p.fin),
        MatRef::row_major(dy.data(), b, p.fout),
        MatRef::row_major(&p.w, p.fout, p.fin),
        false,
        1.0,
        Par::Pool,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testutil::{assert_close, random_tensor};

    #[test]
    fn forward_transposed_and_weight_grad_match_naive() {
        let (b, fin, fout) = (3, 7, 5);
        let x = random_tensor(&[b, fin], 1);
        let w = random_tensor(&[fout, fin], 2);
        let bias = random_tensor(&[fout], 3);
        let dy = random_tensor(&[b, fout], 4);
        let mut y = Tensor::zeros(&[0]);
        linear(&x, &w, Some(bias.data()), &mut y).unwrap();
        let mut want = Tensor::zeros(&[b, fout]);
        for n in 0..b {
            for o in 0..fout {
                want.data_mut()[n * fout + o] = bias.data()[o]
                    + (0..fin)
                        .map(|i| x.data()[n * fin + i] * w.data()[o * fin + i])
                        .sum::<f32>();
            }
        }
        assert_close(&y, &want, 1e-5, "linear");
        let mut dx = Tensor::zeros(&[0]);
        linear_transposed(&dy, &w, &mut dx).unwrap();
        let mut want = Tensor::zeros(&[b, fin]);
        for n in 0..b {
            for i in 0..fin {
                want.data_mut()[n * fin + i] = (0..fout)
                    .map(|o| dy.data()[n * fout + o] * w.data()[o * fin + i])
                    .sum::<f32>();
            }
        }
        assert_close(&dx, &want, 1e-5, "linear_transposed");
        let mut dw = Tensor::zeros(&[0]);
        linear_weight_grad(&x, &dy, 2.0, false, &mut dw).unwrap();
        let mut want = Tensor::zeros(&[fout, fin]);
        for o in 0..fout {
            for i in 0..fin {
                want.data_mut()[o * fin + i] = 2.0
                    * (0..b)
                        .map(|n| dy.data()[n * fout + o] * x.data()[n * fin + i])
                        .sum::<f32>();
            }
        }
        assert_close(&dw, &want, 1e-5, "linear_weight_grad");
        assert!(linear(&random_tensor(&[2, 6], 0), &w, None, &mut y)
            .unwrap_err()
            .to_string()
            .contains("[B, 7]"));
    }

    #[test]
    fn packed_dense_on_maps_equals_flatten_then_linear() {
        use crate::core::ops::{flatten_chw, unflatten_chw};
        let (b, h, wd, c, fout) = (3, 2, 3, 4, 5);
        let x = random_tensor(&[b, h, wd, c], 7);
        let w = random_tensor(&[fout, h * wd * c], 8);
        let bias = random_tensor(&[fout], 9);
        let p = PackedDense::new(&w, Some([h, wd, c])).unwrap();
        let (mut flat, mut want, mut got) =
            (Tensor::default(), Tensor::default(), Tensor::default());
        flatten_chw(&x, &mut flat).unwrap();
        linear(&flat, &w, Some(bias.data()), &mut want).unwrap();
        dense_forward(&x, &p, Some(bias.data()), &mut got).unwrap();
        assert_close(&got, &want, 1e-5, "dense_forward on a map");
        let dy = random_tensor(&[b, fout], 10);
        let (mut dflat, mut dwant, mut dgot) =
            (Tensor::default(), Tensor::default(), Tensor::default());
        linear_transposed(&dy, &w, &mut dflat).unwrap();
        unflatten_chw(&dflat, [b, h, wd, c], &mut dwant).unwrap();
        dense_transposed(&dy, &p, &[b, h, wd, c], &mut dgot).unwrap();
        assert_close(&dgot, &dwant, 1e-5, "dense_transposed to a map");
        let plain = PackedDense::new(&w, None).unwrap();
        dense_forward(&flat, &plain, None, &mut got).unwrap();
        linear(&flat, &w, None, &mut want).unwrap();
        assert_close(&got, &want, 1e-5, "dense_forward on vectors");
        assert!(PackedDense::new(&w, Some([2, 2, 2])).is_err());
    }
}
