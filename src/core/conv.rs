//! Stride-1 2-D convolution on channels-last feature maps: forward, transposed (input
//! gradient) and weight gradient, by im2col + `gemm`, parallel over row chunks.
//!
//! With `x: [B,H,W,C_in]`, OIHW weights `W: [C_out,C_in,k,k]` and padding `p`:
//!
//! * forward    `y[b,i,j,o] = bias[o] + Σ_{c,u,v} W[o,c,u,v] · x[b, i+u-p, j+v-p, c]`
//!   (cross-correlation, PyTorch `conv2d`), output `H+2p-k+1`;
//! * transposed `x̄[b,i,j,c] = Σ_{o,u,v} W[o,c,u,v] · ȳ[b, i-u+p, j-v+p, o]` (PyTorch
//!   `conv_transpose2d` with the same padding = the adjoint of the forward map);
//! * weight gradient `W̄[o,c,u,v] = Σ_{b,i,j} ȳ[b,i,j,o] · x[b, i+u-p, j+v-p, c]`.
//!
//! 3x3/pad-1 convolutions of maps of at least 4x4 take the Winograd path of
//! [`super::winograd`] when the packed weights carry it.

use super::matmul::{matmul, MatMut, MatRef, Par};
use super::pool::{maxpool2x2, unpool2x2, PoolIndex};
use super::scratch::with_scratch;
use super::tensor::{dims4, ShapeError, Tensor};
use super::winograd::WinogradWeights;
use rayon::prelude::*;

/// Shape of a stride-1 convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub pad: usize,
}

impl ConvGeom {
    /// Output size of the forward convolution of an `h × w` map.
    pub fn out_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let oh = (h + 2 * self.pad + 1).checked_sub(self.k)?;
        let ow = (w + 2 * self.pad + 1).checked_sub(self.k)?;
        (oh > 0 && ow > 0).then_some((oh, ow))
    }

    /// The geometry of the transposed convolution seen as a forward one:
    /// channels swapped, kernel flipped, padding `k-1-p`.
    pub fn transposed(&self) -> ConvGeom {
        ConvGeom {
            cin: self.cout,
            cout: self.cin,
            k: self.k,
            pad: self.k - 1 - self.pad,
        }
    }

    /// Multiply-accumulates of one forward pass over `b` maps of `h × w` (output size).
    pub fn macs(&self, b: usize, oh: usize, ow: usize) -> u64 {
        (b * oh * ow) as u64 * (self.cin * self.cout * self.k * self.k) as u64
    }
}

/// Which algorithm the convolutions of a [`PackedConv`] use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvAlgo {
    /// Winograd F(4x4,3x3) for 3x3/pad-1 convs on maps of at least 4x4, im2col otherwise.
    #[default]
    Auto,
    /// Always im2col + gemm (the plain sum of products).
    Direct,
}

/// Conv weights prepared for the kernels; rebuild whenever the OIHW weights change.
#[derive(Clone, Debug)]
pub struct PackedConv {
    geom: ConvGeom,
    /// `[(u,v,c), o]`: the forward weights as a `k²C_in × C_out` matrix.
    fwd: Vec<f32>,
    /// `[(u,v,o), c]`: flipped weights for the transposed conv, `k²C_out × C_in`.
    tr: Vec<f32>,
    wino: Option<(WinogradWeights, WinogradWeights)>,
}

impl PackedConv {
    /// Packs OIHW weights `[C_out, C_in, k, k]` for convolutions with padding `pad`.
    pub fn new(w: &Tensor, pad: usize, algo: ConvAlgo) -> Result<Self, ShapeError> {
        let [cout, cin, k, k2] = dims4("PackedConv::new", "weight", w)?;
        if k != k2 || k == 0 || pad >= k {
            return Err(ShapeError::new(
                "PackedConv::new",
                "weight",
                w.shape(),
                format!("a square kernel with padding {pad} < k"),
            ));
        }
        let geom = ConvGeom { cin, cout, k, pad };
        let src = w.data();
        let kk = k * k;
        let mut fwd = vec![0.0f32; kk * cin * cout];
        let mut tr = vec![0.0f32; kk * cin * cout];
        for o in 0..cout {
            for c in 0..cin {
                for u in 0..k {
                    for v in 0..k {
                        let x = src[((o * cin + c) * k + u) * k + v];
                        fwd[((u * k + v) * cin + c) * cout + o] = x;
                        let (fu, fv) = (k - 1 - u, k - 1 - v);
                        tr[((fu * k + fv) * cout + o) * cin + c] = x;
                    }
                }
            }
        }
        let wino = (algo == ConvAlgo::Auto && k == 3 && pad == 1).then(|| {
            (
                WinogradWeights::from_oihw(src, cout, cin, false),
                WinogradWeights::from_oihw(src, cout, cin, true),
            )
        });
        Ok(PackedConv {
            geom,
            fwd,
            tr,
            wino,
        })
    }

    pub fn geom(&self) -> ConvGeom {
        self.geom
    }
}

fn conv_out_shape(op: &'static str, x: &Tensor, g: ConvGeom) -> Result<[usize; 4], ShapeError> {
    let [b, h, w, c] = dims4(op, "input", x)?;
    if c != g.cin {
        return Err(ShapeError::new(
            op,
            "input",
            x.shape(),
            format!("[B, H, W, {}] (channels-last)", g.cin),
        ));
    }
    let (oh, ow) = g.out_hw(h, w).ok_or_else(|| {
        ShapeError::new(
            op,
            "input",
            x.shape(),
            format!(
                "a map of at least {}x{} pixels",
                g.k - 2 * g.pad.min(g.k / 2),
                g.k - 2 * g.pad.min(g.k / 2)
            ),
        )
    })?;
    Ok([b, oh, ow, g.cout])
}

/// Forward convolution `y = bias + W ⋆ x` (see the module docs); `y` is resized.
pub fn conv2d(
    x: &Tensor,
    w: &PackedConv,
    bias: Option<&[f32]>,
    y: &mut Tensor,
) -> Result<(), ShapeError> {
    let shape = conv_out_shape("conv2d", x, w.geom)?;
    check_bias("conv2d", bias, w.geom.cout)?;
    y.ensure_shape(&shape);
    match &w.wino {
        Some((fwd, _)) if use_winograd(x) => super::winograd::conv3x3(x, fwd, bias, y),
        _ => im2col_conv(x, w.geom, &w.fwd, bias, y),
    }
    Ok(())
}

/// Transposed convolution `x̄ = Wᵀ ⋆ ȳ` (adjoint of [`conv2d`] without bias); `x̄` is resized.
pub fn conv2d_transposed(dy: &Tensor, w: &PackedConv, dx: &mut Tensor) -> Result<(), ShapeError> {
    let tg = w.geom.transposed();
    let shape = conv_out_shape("conv2d_transposed", dy, tg)?;
    dx.ensure_shape(&shape);
    match &w.wino {
        Some((_, tr)) if use_winograd(dy) => super::winograd::conv3x3(dy, tr, None, dx),
        _ => im2col_conv(dy, tg, &w.tr, None, dx),
    }
    Ok(())
}

/// Bottom-up drive through a pooled conv coupling:
/// `y = maxpool2x2(bias + W ⋆ x)`, recording the argmax positions in `idx`.
pub fn conv2d_pool(
    x: &Tensor,
    w: &PackedConv,
    bias: Option<&[f32]>,
    y: &mut Tensor,
    idx: &mut PoolIndex,
) -> Result<(), ShapeError> {
    let mut full = Tensor::zeros(&[0]);
    conv2d(x, w, bias, &mut full)?;
    maxpool2x2(&full, y, idx)
}

/// Top-down drive through a pooled conv coupling: `x̄ = Wᵀ ⋆ unpool(s, idx)`.
pub fn conv2d_transposed_unpool(
    s: &Tensor,
    idx: &PoolIndex,
    w: &PackedConv,
    dx: &mut Tensor,
) -> Result<(), ShapeError> {
    let mut full = Tensor::zeros(&[0]);
    unpool2x2(s, idx, &mut full)?;
    conv2d_transposed(&full, w, dx)
}

fn use_winograd(x: &Tensor) -> bool {
    let s = x.shape();
    s[1] >= 4 && s[2] >= 4
}

fn check_bias(op: &'static str, bias: Option<&[f32]>, cout: usize) -> Result<(), ShapeError> {
    match bias {
        Some(b) if b.len() != cout => {
            Err(ShapeError::new(op, "bias", &[b.len()], format!("[{cout}]")))
        }
        _ => Ok(()),
    }
}

/// Rows of the im2col matrix per task: about 1 MiB of patches, at least 16 rows.
fn rows_per_chunk(kdim: usize, total: usize) -> usize {
    ((1 << 18) / kdim.max(1)).clamp(16, total.max(16))
}

/// Writes the patches of output pixels `m0..m0+rows` into `col` (`rows × k²C_in`).
#[allow(clippy::too_many_arguments)]
fn im2col_rows(
    x: &[f32],
    h: usize,
    w: usize,
    g: ConvGeom,
    oh: usize,
    ow: usize,
    m0: usize,
    rows: usize,
    col: &mut [f32],
) {
    let (c, k, p) = (g.cin, g.k, g.pad as isize);
    let kdim = k * k * c;
    for r in 0..rows {
        let m = m0 + r;
        let b = m / (oh * ow);
        let rem = m % (oh * ow);
        let (i, j) = ((rem / ow) as isize, (rem % ow) as isize);
        let dst = &mut col[r * kdim..(r + 1) * kdim];
        for u in 0..k {
            let iy = i + u as isize - p;
            for v in 0..k {
                let ix = j + v as isize - p;
                let d = &mut dst[(u * k + v) * c..(u * k + v + 1) * c];
                if iy >= 0 && (iy as usize) < h && ix >= 0 && (ix as usize) < w {
                    let s = ((b * h + iy as usize) * w + ix as usize) * c;
                    d.copy_from_slice(&x[s..s + c]);
                } else {
                    d.fill(0.0);
                }
            }
        }
    }
}

/// `y = bias + im2col(x) · wp` with `wp` a `k²C_in × C_out` matrix.
fn im2col_conv(x: &Tensor, g: ConvGeom, wp: &[f32], bias: Option<&[f32]>, y: &mut Tensor) {
    let [_, h, w, _] = dims4("im2col_conv", "input", x).expect("checked");
    let [b, oh, ow, co] = dims4("im2col_conv", "output", y).expect("checked");
    let kdim = g.k * g.k * g.cin;
    let total = b * oh * ow;
    let chunk = rows_per_chunk(kdim, total);
    let xs = x.data();
    y.data_mut()
        .par_chunks_mut(chunk * co)
        .enumerate()
        .for_each(|(ci, ychunk)| {
            let m0 = ci * chunk;
            let rows = ychunk.len() / co;
            if let Some(bias) = bias {
                for row in ychunk.chunks_mut(co) {
                    row.copy_from_slice(bias);
                }
            }
            with_scratch(rows * kdim, |col| {
                im2col_rows(xs, h, w, g, oh, ow, m0, rows, col);
                matmul(
                    MatMut::row_major(ychunk, rows, co),
                    MatRef::row_major(col, rows, kdim),
                    MatRef::row_major(wp, kdim, co),
                    bias.is_some(),
                    1.0,
                    Par::Seq,
                );
            });
        });
}

/// Number of partial sums of a weight gradient (fixed, so that results do not depend
/// on the thread count).
const WGRAD_GROUPS: usize = 4;

/// Weight gradient `W̄[o,c,u,v] (+)= scale · Σ_{b,i,j} ȳ[b,i,j,o] · x[b,i+u-p,j+v-p,c]`,
/// written in OIHW into `dw` (`[C_out, C_in, k, k]`); accumulates when `accumulate`.
pub fn conv2d_weight_grad(
    x: &Tensor,
    dy: &Tensor,
    g: ConvGeom,
    scale: f32,
    accumulate: bool,
    dw: &mut Tensor,
) -> Result<(), ShapeError> {
    let out = conv_out_shape("conv2d_weight_grad", x, g)?;
    dy.expect_shape("conv2d_weight_grad", "output gradient", &out)?;
    let wshape = [g.cout, g.cin, g.k, g.k];
    if accumulate {
        dw.expect_shape("conv2d_weight_grad", "weight gradient", &wshape)?;
    } else {
        dw.ensure_shape(&wshape);
    }
    let [_, h, w, _] = dims4("conv2d_weight_grad", "input", x)?;
    let [b, oh, ow, co] = out;
    let kdim = g.k * g.k * g.cin;
    let total = b * oh * ow;
    let chunk = rows_per_chunk(kdim, total);
    let nchunks = total.div_ceil(chunk);
    let per_group = nchunks.div_ceil(WGRAD_GROUPS);
    let (xs, dys) = (x.data(), dy.data());
    let partials: Vec<Vec<f32>> = (0..WGRAD_GROUPS.min(nchunks))
        .into_par_iter()
        .map(|gi| {
            let mut acc = vec![0.0f32; kdim * co];
            for ci in gi * per_group..((gi + 1) * per_group).min(nchunks) {
                let m0 = ci * chunk;
                let rows = chunk.min(total - m0);
                with_scratch(rows * kdim, |col| {
                    im2col_rows(xs, h, w, g, oh, ow, m0, rows, col);
                    matmul(
                        MatMut::row_major(&mut acc, kdim, co),
                        MatRef::row_major(col, rows, kdim).t(),
                        MatRef::row_major(&dys[m0 * co..(m0 + rows) * co], rows, co),
                        true,
                        1.0,
                        Par::Seq,
                    );
                });
            }
            acc
        })
        .collect();
    let mut sum = vec![0.0f32; kdim * co];
    for p in &partials {
        for (s, v) in sum.iter_mut().zip(p) {
            *s += v;
        }
    }
    // [(u,v,c), o] -> OIHW
    let k = g.k;
    let d = dw.data_mut();
    for o in 0..co {
        for c in 0..g.cin {
            for u in 0..k {
                for v in 0..k {
                    let val = scale * sum[((u * k + v) * g.cin + c) * co + o];
                    let dst = &mut d[((o * g.cin + c) * k + u) * k + v];
                    *dst = if accumulate { *dst + val } else { val };
                }
            }
        }
    }
    Ok(())
}

/// Bias gradient `b̄[o] (+)= scale · Σ_{b,i,j} ȳ[b,i,j,o]` for a channels-last `ȳ`.
pub fn channel_sum(dy: &Tensor, scale: f32, accumulate: bool, db: &mut Tensor) {
    let c = *dy.shape().last().unwrap_or(&1);
    if !accumulate || db.len() != c {
        db.ensure_shape(&[c]);
        db.fill(0.0);
    }
    let mut sum = vec![0.0f64; c];
    for row in dy.data().chunks(c) {
        for (s, v) in sum.iter_mut().zip(row) {
            *s += *v as f64;
        }
    }
    for (d, s) in db.data_mut().iter_mut().zip(sum) {
        *d += scale * s as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::tensor::{nchw_to_nhwc, nhwc_to_nchw};
    use crate::core::testutil::{assert_close, naive_conv_nchw, random_tensor};

    #[allow(clippy::too_many_arguments)]
    fn check_forward(
        b: usize,
        cin: usize,
        cout: usize,
        h: usize,
        w: usize,
        k: usize,
        pad: usize,
        algo: ConvAlgo,
        seed: u64,
    ) {
        let x = random_tensor(&[b, cin, h, w], seed);
        let wt = random_tensor(&[cout, cin, k, k], seed + 1);
        let bias = random_tensor(&[cout], seed + 2);
        let want = naive_conv_nchw(&x, &wt, Some(bias.data()), pad);
        let packed = PackedConv::new(&wt, pad, algo).unwrap();
        let mut y = Tensor::zeros(&[0]);
        conv2d(
            &nchw_to_nhwc(&x).unwrap(),
            &packed,
            Some(bias.data()),
            &mut y,
        )
        .unwrap();
        assert_close(
            &nhwc_to_nchw(&y).unwrap(),
            &want,
            1e-4,
            &format!("conv2d b{b} {cin}->{cout} {h}x{w} k{k} p{pad} {algo:?}"),
        );
    }

    #[test]
    fn forward_matches_naive_on_odd_shapes() {
        for (i, &(b, cin, cout, h, w, k, pad)) in [
            (1, 1, 1, 1, 1, 1, 0),
            (1, 1, 1, 3, 3, 3, 1),
            (2, 3, 5, 7, 5, 3, 1),
            (3, 2, 4, 6, 6, 3, 0),
            (1, 4, 3, 9, 4, 5, 2),
            (2, 5, 7, 8, 8, 3, 1),
            (1, 1, 2, 5, 9, 3, 2),
            (2, 6, 3, 13, 11, 3, 1),
        ]
        .iter()
        .enumerate()
        {
            check_forward(b, cin, cout, h, w, k, pad, ConvAlgo::Direct, 10 * i as u64);
            check_forward(
                b,
                cin,
                cout,
                h,
                w,
                k,
                pad,
                ConvAlgo::Auto,
                10 * i as u64 + 5,
            );
        }
    }

    /// `<conv(x), ȳ> = <x, convᵀ(ȳ)>` and the transposed conv equals the naive formula.
    #[test]
    fn transposed_is_the_adjoint_and_matches_naive() {
        for (i, &(b, cin, cout, h, w, k, pad, algo)) in [
            (2, 3, 4, 5, 6, 3, 1, ConvAlgo::Direct),
            (1, 1, 1, 4, 4, 3, 1, ConvAlgo::Auto),
            (3, 5, 2, 9, 7, 3, 1, ConvAlgo::Auto),
            (2, 2, 3, 6, 6, 3, 0, ConvAlgo::Direct),
            (1, 4, 4, 5, 5, 5, 2, ConvAlgo::Direct),
        ]
        .iter()
        .enumerate()
        {
            let g = ConvGeom { cin, cout, k, pad };
            let (oh, ow) = g.out_hw(h, w).unwrap();
            let x = random_tensor(&[b, h, w, cin], 100 + i as u64);
            let dy = random_tensor(&[b, oh, ow, cout], 200 + i as u64);
            let wt = random_tensor(&[cout, cin, k, k], 300 + i as u64);
            let packed = PackedConv::new(&wt, pad, algo).unwrap();
            let mut y = Tensor::zeros(&[0]);
            conv2d(&x, &packed, None, &mut y).unwrap();
            let mut dx = Tensor::zeros(&[0]);
            conv2d_transposed(&dy, &packed, &mut dx).unwrap();
            assert_eq!(dx.shape(), x.shape());
            let lhs: f64 = y
                .data()
                .iter()
                .zip(dy.data())
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum();
            let rhs: f64 = x
                .data()
                .iter()
                .zip(dx.data())
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum();
            assert!(
                (lhs - rhs).abs() <= 1e-4 * lhs.abs().max(1.0),
                "adjoint {lhs} vs {rhs}"
            );
            // naive: x̄[c,i,j] = Σ W[o,c,u,v] ȳ[o,i-u+p,j-v+p]
            let dyn_ = nhwc_to_nchw(&dy).unwrap();
            let mut want = Tensor::zeros(&[b, cin, h, w]);
            for n in 0..b {
                for c in 0..cin {
                    for ii in 0..h {
                        for jj in 0..w {
                            let mut s = 0.0f64;
                            for o in 0..cout {
                                for u in 0..k {
                                    for v in 0..k {
                                        let (yi, yj) = (
                                            ii as isize - u as isize + pad as isize,
                                            jj as isize - v as isize + pad as isize,
                                        );
                                        if yi >= 0
                                            && yj >= 0
                                            && (yi as usize) < oh
                                            && (yj as usize) < ow
                                        {
                                            s += wt.data()[((o * cin + c) * k + u) * k + v] as f64
                                                * dyn_.data()[((n * cout + o) * oh + yi as usize)
                                                    * ow
                                                    + yj as usize]
                                                    as f64;
                                        }
                                    }
                                }
                            }
                            want.data_mut()[((n * cin + c) * h + ii) * w + jj] = s as f32;
                        }
                    }
                }
            }
            assert_close(
                &nhwc_to_nchw(&dx).unwrap(),
                &want,
                1e-4,
                "conv2d_transposed",
            );
        }
    }

    #[test]
    fn weight_grad_matches_naive_and_accumulates() {
        for (i, &(b, cin, cout, h, w, k, pad)) in [
            (2, 3, 4, 5, 6, 3, 1),
            (1, 1, 1, 3, 3, 3, 1),
            (3, 2, 5, 7, 4, 3, 0),
            (1, 2, 2, 6, 6, 5, 2),
        ]
        .iter()
        .enumerate()
        {
            let g = ConvGeom { cin, cout, k, pad };
            let (oh, ow) = g.out_hw(h, w).unwrap();
            let x = random_tensor(&[b, h, w, cin], 400 + i as u64);
            let dy = random_tensor(&[b, oh, ow, cout], 500 + i as u64);
            let mut dw = Tensor::zeros(&[0]);
            conv2d_weight_grad(&x, &dy, g, 0.5, false, &mut dw).unwrap();
            let (xn, dyn_) = (nhwc_to_nchw(&x).unwrap(), nhwc_to_nchw(&dy).unwrap());
            let mut want = Tensor::zeros(&[cout, cin, k, k]);
            for o in 0..cout {
                for c in 0..cin {
                    for u in 0..k {
                        for v in 0..k {
                            let mut s = 0.0f64;
                            for n in 0..b {
                                for ii in 0..oh {
                                    for jj in 0..ow {
                                        let (xi, xj) = (
                                            ii as isize + u as isize - pad as isize,
                                            jj as isize + v as isize - pad as isize,
                                        );
                                        if xi >= 0
                                            && xj >= 0
                                            && (xi as usize) < h
                                            && (xj as usize) < w
                                        {
                                            s += dyn_.data()[((n * cout + o) * oh + ii) * ow + jj]
                                                as f64
                                                * xn.data()[((n * cin + c) * h + xi as usize) * w
                                                    + xj as usize]
                                                    as f64;
                                        }
                                    }
                                }
                            }
                            want.data_mut()[((o * cin + c) * k + u) * k + v] = 0.5 * s as f32;
                        }
                    }
                }
            }
            assert_close(&dw, &want, 1e-4, "conv2d_weight_grad");
            conv2d_weight_grad(&x, &dy, g, 0.5, true, &mut dw).unwrap();
            let twice =
                Tensor::from_vec(want.shape(), want.data().iter().map(|v| 2.0 * v).collect())
                    .unwrap();
            assert_close(&dw, &twice, 1e-4, "conv2d_weight_grad accumulate");
        }
    }

    #[test]
    fn shape_errors_name_the_operand() {
        let packed = PackedConv::new(&Tensor::zeros(&[4, 3, 3, 3]), 1, ConvAlgo::Direct).unwrap();
        let mut y = Tensor::zeros(&[0]);
        let e = conv2d(&Tensor::zeros(&[2, 5, 5, 2]), &packed, None, &mut y).unwrap_err();
        assert!(
            e.to_string()
                .contains("conv2d: input has shape [2, 5, 5, 2]"),
            "{e}"
        );
        let e = conv2d(
            &Tensor::zeros(&[2, 5, 5, 3]),
            &packed,
            Some(&[0.0; 3]),
            &mut y,
        )
        .unwrap_err();
        assert!(e.to_string().contains("bias"), "{e}");
    }
}
