//! Stride-1 2-D convolution on channels-last feature maps: forward, transposed (input
//! gradient), weight gradient, and the pooled couplings' fused variants.
//!
//! With `x: [B,H,W,C_in]`, OIHW weights `W: [C_out,C_in,k,k]` and padding `p`:
//!
//! * forward    `y[b,i,j,o] = bias[o] + Σ_{c,u,v} W[o,c,u,v] · x[b, i+u-p, j+v-p, c]`
//!   (cross-correlation, PyTorch `conv2d`), output `H+2p-k+1`;
//! * transposed `x̄[b,i,j,c] = Σ_{o,u,v} W[o,c,u,v] · ȳ[b, i-u+p, j-v+p, o]` (PyTorch
//!   `conv_transpose2d` with the same padding = the adjoint of the forward map);
//! * weight gradient `W̄[o,c,u,v] = Σ_{b,i,j} ȳ[b,i,j,o] · x[b, i+u-p, j+v-p, c]`.
//!
//! Algorithms (chosen per shape with [`ConvAlgo::Auto`]; every path is tested against
//! naive f64 loops):
//! * 3x3/pad-1 convolutions of maps of at least 4x4 with at least
//!   [`MIN_WINOGRAD_CHANNELS`] channels in and out: Winograd F(4x4,3x3)
//!   ([`super::winograd`]), including the weight gradient;
//! * tiny maps (`H·W·OH·OW <= 2k²`, e.g. 2x2 or 1x1): one product per pair of pixels a
//!   tap connects, skipping the padding (`smallmap`);
//! * otherwise im2col + gemm (`im2col`); transposed convs with few output
//!   channels (128→3) as gemm + col2im; weight gradients tap by tap without the
//!   padding zeros (`taps`).
//!
//! The pooled variants fuse the 2x2 max-pool into the conv output (and the unpooling into
//! the transposed conv's input) with exactly the values and argmax codes of
//! [`maxpool2x2`](super::pool::maxpool2x2) / [`unpool2x2`](super::pool::unpool2x2).
//! Work is split in chunks fixed by the shape, so results are bit-identical for any
//! number of threads.

use super::im2col::{self, Out};
pub use super::packed::PackedConv;
use super::pixels::{DenseMap, PixelLoad, UnpooledMap};
use super::pool::PoolIndex;
use super::scratch::with_scratch;
use super::smallmap;
use super::taps;
use super::tensor::{dims4, ShapeError, Tensor};
use super::winograd;
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
    /// The fastest exact-up-to-rounding algorithm per shape (see the module docs).
    #[default]
    Auto,
    /// Always im2col + gemm (the plain sum of products).
    Direct,
}

/// Fewest input and output channels for which the Winograd path pays off (below it the
/// transforms cost more than the products they save: the 3→128 first layer).
pub const MIN_WINOGRAD_CHANNELS: usize = 16;

/// Gemm + col2im for convs with few output channels (fewer than the input channels).
fn use_col2im(g: ConvGeom) -> bool {
    g.cout < MIN_WINOGRAD_CHANNELS && g.cout < g.cin
}

fn use_winograd(h: usize, w: usize) -> bool {
    h >= 4 && w >= 4
}

pub(crate) fn conv_out_shape(
    op: &'static str,
    x: &Tensor,
    g: ConvGeom,
) -> Result<[usize; 4], ShapeError> {
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

fn check_bias(op: &'static str, bias: Option<&[f32]>, cout: usize) -> Result<(), ShapeError> {
    match bias {
        Some(b) if b.len() != cout => {
            Err(ShapeError::new(op, "bias", &[b.len()], format!("[{cout}]")))
        }
        _ => Ok(()),
    }
}

/// Whether the forward conv of an `h × w` map runs on the Winograd path.
pub(crate) fn forward_is_winograd(w: &PackedConv, h: usize, wd: usize) -> bool {
    !w.tiny(h, wd) && w.winograd() && use_winograd(h, wd)
}

/// Forward conv of `src` into `out` by the algorithm of the shape.
pub(crate) fn forward<L: PixelLoad>(src: L, w: &PackedConv, bias: Option<&[f32]>, out: Out<'_>) {
    let [_, h, wd, _] = src.dims();
    if w.tiny(h, wd) {
        return smallmap::forward(src, w.geom(), w.fwd(), bias, out);
    }
    if !forward_is_winograd(w, h, wd) {
        return im2col::conv(src, w.geom(), w.fwd(), bias, out);
    }
    let u = w.wino_fwd();
    match out {
        Out::Map(y) => winograd::conv_map(src, u, bias, y),
        Out::Pool { y, codes } => winograd::conv_pool(src, u, bias, y, codes),
        Out::Gather { y, codes } => {
            debug_assert!(bias.is_none());
            winograd::conv_gather(src, u, y, codes)
        }
    }
}

/// Transposed conv of `src` (a map of the forward conv's output shape) into `dx`.
pub(crate) fn transposed<L: PixelLoad>(src: L, w: &PackedConv, dx: &mut Tensor) {
    let [_, h, wd, _] = dx.shape().try_into().expect("rank 4");
    let tg = w.geom().transposed();
    if w.tiny(h, wd) {
        return smallmap::transposed(src, w.geom(), w.tr(), h, wd, dx.data_mut());
    }
    let [_, sh, sw, _] = src.dims();
    if w.winograd() && use_winograd(sh, sw) {
        winograd::conv_map(src, w.wino_tr(), None, dx.data_mut())
    } else if w.algo() == ConvAlgo::Auto && use_col2im(tg) {
        im2col::conv_col2im(src, tg, w.col2im(), dx.data_mut())
    } else {
        im2col::conv(src, tg, w.tr(), None, Out::Map(dx.data_mut()))
    }
}

/// Forward convolution `y = bias + W ⋆ x` (see the module docs); `y` is resized.
pub fn conv2d(
    x: &Tensor,
    w: &PackedConv,
    bias: Option<&[f32]>,
    y: &mut Tensor,
) -> Result<(), ShapeError> {
    let shape = conv_out_shape("conv2d", x, w.geom())?;
    check_bias("conv2d", bias, w.geom().cout)?;
    y.ensure_shape(&shape);
    let dims = dims4("conv2d", "input", x)?;
    forward(
        DenseMap { x: x.data(), dims },
        w,
        bias,
        Out::Map(y.data_mut()),
    );
    Ok(())
}

/// Transposed convolution `x̄ = Wᵀ ⋆ ȳ` (adjoint of [`conv2d`] without bias); `x̄` is
/// resized.
pub fn conv2d_transposed(dy: &Tensor, w: &PackedConv, dx: &mut Tensor) -> Result<(), ShapeError> {
    let tg = w.geom().transposed();
    let shape = conv_out_shape("conv2d_transposed", dy, tg)?;
    dx.ensure_shape(&shape);
    let dims = dims4("conv2d_transposed", "output gradient", dy)?;
    transposed(DenseMap { x: dy.data(), dims }, w, dx);
    Ok(())
}

/// Bottom-up drive through a pooled conv coupling:
/// `y = maxpool2x2(bias + W ⋆ x)`, recording the argmax positions in `idx`.
///
/// The pool is fused into the conv (no full-resolution temporary); values and codes are
/// bit-identical to [`conv2d`] followed by [`maxpool2x2`](super::pool::maxpool2x2) (bias
/// added before comparing, first maximum in row-major window order on ties, NaN wins,
/// odd sizes floored).
pub fn conv2d_pool(
    x: &Tensor,
    w: &PackedConv,
    bias: Option<&[f32]>,
    y: &mut Tensor,
    idx: &mut PoolIndex,
) -> Result<(), ShapeError> {
    let full = conv_out_shape("conv2d_pool", x, w.geom())?;
    check_bias("conv2d_pool", bias, w.geom().cout)?;
    let [b, oh, ow, co] = full;
    if oh < 2 || ow < 2 {
        return Err(ShapeError::new(
            "conv2d_pool",
            "input",
            x.shape(),
            "a map whose conv output is at least 2x2",
        ));
    }
    y.ensure_shape(&[b, oh / 2, ow / 2, co]);
    let codes = idx.prepare(full);
    let dims = dims4("conv2d_pool", "input", x)?;
    forward(
        DenseMap { x: x.data(), dims },
        w,
        bias,
        Out::Pool {
            y: y.data_mut(),
            codes,
        },
    );
    Ok(())
}

/// `y = gather2x2(W ⋆ x, idx)`: the conv (no bias) read only at the argmax positions of
/// a 2x2 max-pool of its output (the adjoint of [`conv2d_transposed_unpool`], used to
/// backpropagate through a pooled top-down term), without a full-resolution temporary.
/// Bit-identical to [`conv2d`] followed by [`gather2x2`](super::pool::gather2x2).
pub fn conv2d_gather(
    x: &Tensor,
    w: &PackedConv,
    idx: &PoolIndex,
    y: &mut Tensor,
) -> Result<(), ShapeError> {
    let full = conv_out_shape("conv2d_gather", x, w.geom())?;
    if idx.input_shape() != full {
        return Err(ShapeError::new(
            "conv2d_gather",
            "pool index",
            idx.input_shape(),
            format!("{full:?} (the conv output)"),
        ));
    }
    y.ensure_shape(&idx.pooled_shape());
    let dims = dims4("conv2d_gather", "input", x)?;
    forward(
        DenseMap { x: x.data(), dims },
        w,
        None,
        Out::Gather {
            y: y.data_mut(),
            codes: idx.codes(),
        },
    );
    Ok(())
}

/// Top-down drive through a pooled conv coupling: `x̄ = Wᵀ ⋆ unpool(s, idx)`, reading the
/// pooled `s` and the codes directly (no full-resolution temporary).
pub fn conv2d_transposed_unpool(
    s: &Tensor,
    idx: &PoolIndex,
    w: &PackedConv,
    dx: &mut Tensor,
) -> Result<(), ShapeError> {
    s.expect_shape(
        "conv2d_transposed_unpool",
        "pooled map",
        &idx.pooled_shape(),
    )?;
    let full: [usize; 4] = idx.input_shape().try_into().map_err(|_| {
        ShapeError::new(
            "conv2d_transposed_unpool",
            "pool index",
            idx.input_shape(),
            "a rank-4 shape",
        )
    })?;
    let tg = w.geom().transposed();
    if full[3] != tg.cin {
        return Err(ShapeError::new(
            "conv2d_transposed_unpool",
            "pool index",
            idx.input_shape(),
            format!("[B, H, W, {}] (the conv output)", tg.cin),
        ));
    }
    let (h, wd) = tg.out_hw(full[1], full[2]).ok_or_else(|| {
        ShapeError::new(
            "conv2d_transposed_unpool",
            "pool index",
            idx.input_shape(),
            "a conv output shape",
        )
    })?;
    dx.ensure_shape(&[full[0], h, wd, tg.cout]);
    transposed(
        UnpooledMap {
            s: s.data(),
            codes: idx.codes(),
            dims: full,
        },
        w,
        dx,
    );
    Ok(())
}

/// Weight gradient `W̄[o,c,u,v] (+)= scale · Σ_{b,i,j} ȳ[b,i,j,o] · x[b,i+u-p,j+v-p,c]`,
/// written in OIHW into `dw` (`[C_out, C_in, k, k]`); accumulates when `accumulate`.
/// Uses the fastest algorithm for the shape ([`ConvAlgo::Auto`]).
pub fn conv2d_weight_grad(
    x: &Tensor,
    dy: &Tensor,
    g: ConvGeom,
    scale: f32,
    accumulate: bool,
    dw: &mut Tensor,
) -> Result<(), ShapeError> {
    conv2d_weight_grad_with(x, dy, g, ConvAlgo::Auto, scale, accumulate, dw)
}

/// [`conv2d_weight_grad`] with a chosen algorithm (`Direct`: no Winograd).
pub fn conv2d_weight_grad_with(
    x: &Tensor,
    dy: &Tensor,
    g: ConvGeom,
    algo: ConvAlgo,
    scale: f32,
    accumulate: bool,
    dw: &mut Tensor,
) -> Result<(), ShapeError> {
    let out = conv_out_shape("conv2d_weight_grad", x, g)?;
    dy.expect_shape("conv2d_weight_grad", "output gradient", &out)?;
    let dims = dims4("conv2d_weight_grad", "input", x)?;
    prepare_dw("conv2d_weight_grad", g, accumulate, dw)?;
    weight_grad(
        DenseMap { x: x.data(), dims },
        DenseMap {
            x: dy.data(),
            dims: out,
        },
        g,
        algo,
        scale,
        accumulate,
        dw.data_mut(),
    );
    Ok(())
}

/// Weight gradient of a pooled coupling, `W̄ (+)= scale · corr(unpool(s, idx), x)`
/// (as [`conv2d_weight_grad`] of `x` and `unpool2x2(s, idx)`, without building the latter).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_weight_grad_unpool(
    x: &Tensor,
    s: &Tensor,
    idx: &PoolIndex,
    g: ConvGeom,
    scale: f32,
    accumulate: bool,
    dw: &mut Tensor,
) -> Result<(), ShapeError> {
    let out = conv_out_shape("conv2d_weight_grad_unpool", x, g)?;
    if idx.input_shape() != out {
        return Err(ShapeError::new(
            "conv2d_weight_grad_unpool",
            "pool index",
            idx.input_shape(),
            format!("{out:?} (the conv output)"),
        ));
    }
    s.expect_shape(
        "conv2d_weight_grad_unpool",
        "pooled map",
        &idx.pooled_shape(),
    )?;
    let dims = dims4("conv2d_weight_grad_unpool", "input", x)?;
    prepare_dw("conv2d_weight_grad_unpool", g, accumulate, dw)?;
    weight_grad(
        DenseMap { x: x.data(), dims },
        UnpooledMap {
            s: s.data(),
            codes: idx.codes(),
            dims: out,
        },
        g,
        ConvAlgo::Auto,
        scale,
        accumulate,
        dw.data_mut(),
    );
    Ok(())
}

fn prepare_dw(
    op: &'static str,
    g: ConvGeom,
    accumulate: bool,
    dw: &mut Tensor,
) -> Result<(), ShapeError> {
    let wshape = [g.cout, g.cin, g.k, g.k];
    if accumulate {
        dw.expect_shape(op, "weight gradient", &wshape)
    } else {
        dw.ensure_shape(&wshape);
        Ok(())
    }
}

/// Whether the weight gradient takes the Winograd path.
fn winograd_wgrad(g: ConvGeom, h: usize, w: usize, algo: ConvAlgo) -> bool {
    algo == ConvAlgo::Auto
        && g.k == 3
        && g.pad == 1
        && use_winograd(h, w)
        && g.cin.min(g.cout) >= MIN_WINOGRAD_CHANNELS
}

/// The weight gradient by the algorithm of the shape, into OIHW `dw`.
fn weight_grad<D: PixelLoad>(
    x: DenseMap<'_>,
    dy: D,
    g: ConvGeom,
    algo: ConvAlgo,
    scale: f32,
    accumulate: bool,
    dw: &mut [f32],
) {
    let [_, h, w, _] = x.dims;
    if winograd_wgrad(g, h, w, algo) {
        return winograd::weight_grad3x3_from(x, dy, scale, accumulate, dw);
    }
    let kk = g.k * g.k;
    if g.cin >= MIN_WINOGRAD_CHANNELS {
        with_scratch(kk * g.cin * g.cout, |sum| {
            taps::weight_grad_taps(x, dy, g, sum);
            write_oihw(
                g,
                scale,
                accumulate,
                dw,
                |uv, c, o| (uv * g.cout + o) * g.cin + c,
                sum,
            );
        });
    } else {
        with_scratch(kk * g.cin * g.cout, |sum| {
            im2col::weight_grad(x, dy, g, sum);
            write_oihw(
                g,
                scale,
                accumulate,
                dw,
                |uv, c, o| (uv * g.cin + c) * g.cout + o,
                sum,
            );
        });
    }
}

/// `dw[o,c,u,v] (+)= scale · sum[at(uv, c, o)]`.
fn write_oihw(
    g: ConvGeom,
    scale: f32,
    accumulate: bool,
    dw: &mut [f32],
    at: impl Fn(usize, usize, usize) -> usize + Sync,
    sum: &[f32],
) {
    let kk = g.k * g.k;
    let per_o = g.cin * kk;
    dw.par_chunks_mut(16 * per_o)
        .enumerate()
        .for_each(|(blk, d)| {
            for (ol, dro) in d.chunks_exact_mut(per_o).enumerate() {
                let o = blk * 16 + ol;
                for uv in 0..kk {
                    for c in 0..g.cin {
                        let val = scale * sum[at(uv, c, o)];
                        let dst = &mut dro[c * kk + uv];
                        *dst = if accumulate { *dst + val } else { val };
                    }
                }
            }
        });
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
