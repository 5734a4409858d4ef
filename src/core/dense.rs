//! Dense (fully connected) maps with PyTorch's weight layout `W: [F_out, F_in]`.
//!
//! * forward    `y = x Wᵀ + b`            (`x: [B, F_in]`, `y: [B, F_out]`)
//! * transposed `x̄ = ȳ W`                 (the adjoint, no bias)
//! * weight gradient `W̄ (+)= s · ȳᵀ x`, bias gradient `b̄ (+)= s · Σ_b ȳ_b`.

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
}
