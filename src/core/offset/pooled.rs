//! A 2x2 max-pooled coupling evaluated in offsets `d = s − s*` from a base state, exact
//! where the argmax moves, and the convolutions fused with it:
//!
//! * [`pool_offset`] / [`conv2d_pool_offset`]: `Δ = P(Y* + W⋆d) − P(Y*)` and the argmax of
//!   `Y* + W⋆d`, from a stored `W⋆d` or from `d` (the pooling then done in the Winograd
//!   output transform, so that `W⋆d` is never stored);
//! * [`unpool_offset`] / [`conv2d_transposed_unpool_offset`]:
//!   `M = unpool(s* + d, idx) − unpool(s*, idx*)`, stored or read on the fly by `Wᵀ ⋆ M`;
//! * [`unpool_diff`]: `unpool(s_b, idx_b) − unpool(s_a, idx_a)` on a common base.
//!
//! Loops run over channels (contiguous in `[B,H,W,C]` maps), in parallel over pooled rows
//! in chunks fixed by the shape, so results do not depend on the thread count.

use crate::core::conv::{conv_out_shape, forward, forward_is_winograd, transposed, PackedConv};
use crate::core::im2col::Out;
use crate::core::pixels::{get16, put16, simd_fn, DenseMap, PixelLoad, V16};
use crate::core::pool::{samples_per_task, PoolIndex};
use crate::core::scratch::with_scratch;
use crate::core::tensor::{dims4, ShapeError, Tensor};
use crate::core::winograd::{self, codes16, offset_argmax4};
use rayon::prelude::*;

/// Pooled rows (of `row_in` full-resolution floats each) per parallel task.
fn rows_per_task(row_in: usize) -> usize {
    samples_per_task(row_in)
}

/// Pooled rows `row0..` of [`pool_offset`] into `delta`/`codes` (whole rows of `pw·C`).
#[inline(always)]
fn pool_offset_rows_impl(
    wd: &[f32],
    y: &[f32],
    old: &[u8],
    delta: &mut [f32],
    codes: &mut [u8],
    dims: [usize; 4],
    row0: usize,
) {
    let [_, h, w, c] = dims;
    let (ph, pw) = (h / 2, w / 2);
    let per = pw * c;
    for (r, (drow, crow)) in delta
        .chunks_exact_mut(per)
        .zip(codes.chunks_exact_mut(per))
        .enumerate()
    {
        let (n, i) = ((row0 + r) / ph, (row0 + r) % ph);
        let orow = &old[(row0 + r) * per..(row0 + r + 1) * per];
        let top = (n * h + 2 * i) * w * c;
        for j in 0..pw {
            let p = [
                top + 2 * j * c,
                top + (2 * j + 1) * c,
                top + (w + 2 * j) * c,
                top + (w + 2 * j + 1) * c,
            ];
            let ys = p.map(|p| &y[p..p + c]);
            let ws = p.map(|p| &wd[p..p + c]);
            let (dd, cc, oo) = (
                &mut drow[j * c..(j + 1) * c],
                &mut crow[j * c..(j + 1) * c],
                &orow[j * c..(j + 1) * c],
            );
            for ch in 0..c {
                (dd[ch], cc[ch]) = offset_argmax4(
                    [ys[0][ch], ys[1][ch], ys[2][ch], ys[3][ch]],
                    [ws[0][ch], ws[1][ch], ws[2][ch], ws[3][ch]],
                    oo[ch],
                );
            }
        }
    }
}

simd_fn! {
    /// [`pool_offset_rows_impl`] for the widest vector unit.
    fn pool_offset_rows(
        wd: &[f32], y: &[f32], old: &[u8], delta: &mut [f32], codes: &mut [u8],
        dims: [usize; 4], row0: usize,
    ) = pool_offset_rows_impl;
}

/// [`pool_offset`] on raw maps of full-resolution `dims`, parallel over pooled rows.
fn pool_offset_map(
    wd: &[f32],
    y: &[f32],
    old: &[u8],
    delta: &mut [f32],
    codes: &mut [u8],
    dims: [usize; 4],
) {
    let [_, _, w, c] = dims;
    let per = (w / 2) * c;
    if per == 0 || delta.is_empty() {
        return;
    }
    let rpt = rows_per_task(2 * w * c);
    delta
        .par_chunks_mut(rpt * per)
        .zip(codes.par_chunks_mut(rpt * per))
        .enumerate()
        .for_each(|(t, (dc, cc))| pool_offset_rows(wd, y, old, dc, cc, dims, t * rpt));
}

/// The change of a max-pooled coupling's value between `Y* = W⋆s* + b` and `Y* + W⋆d`
/// (`wd = W⋆d`, both full-resolution): `idx_new` = argmax of `Y* + W⋆d` (first maximum,
/// strict `>`, NaN wins, as [`maxpool2x2`](crate::core::pool::maxpool2x2)), and
///
/// ```text
/// Δ = (W⋆d)[k*]                         where the argmax did not move (k = k*)
/// Δ = (Y*[k] − Y*[k*]) + (W⋆d)[k]       where it did
/// ```
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
    let dims = [shape[0], shape[1], shape[2], shape[3]];
    delta.ensure_shape(&idx_star.pooled_shape());
    let codes = idx_new.prepare(dims);
    let (w, y, old) = (wd.data(), y_star.data(), idx_star.codes());
    pool_offset_map(w, y, old, delta.data_mut(), codes, dims);
    Ok(())
}

/// [`pool_offset`] of `W⋆d` (no bias) computed from the offsets `d`:
/// `Δ = P(Y* + W⋆d) − P(Y*)` with `Y*` the stored base map (`[B,H,W,C_out]`, the conv
/// output's shape) and `idx_star` its argmax. On the Winograd path the pooling happens in
/// the output transform and `W⋆d` is never stored; bit-identical to [`conv2d`] followed by
/// [`pool_offset`] on every path.
///
/// [`conv2d`]: crate::core::conv::conv2d
pub fn conv2d_pool_offset(
    d: &Tensor,
    w: &PackedConv,
    y_star: &Tensor,
    idx_star: &PoolIndex,
    delta: &mut Tensor,
    idx_new: &mut PoolIndex,
) -> Result<(), ShapeError> {
    let full = conv_out_shape("conv2d_pool_offset", d, w.geom())?;
    y_star.expect_shape("conv2d_pool_offset", "Y*", &full)?;
    if idx_star.input_shape() != full {
        return Err(ShapeError::new(
            "conv2d_pool_offset",
            "base pool index",
            idx_star.input_shape(),
            format!("{full:?} (the conv output)"),
        ));
    }
    delta.ensure_shape(&idx_star.pooled_shape());
    let codes = idx_new.prepare(full);
    let dims = dims4("conv2d_pool_offset", "offsets", d)?;
    let src = DenseMap { x: d.data(), dims };
    let (y, old) = (y_star.data(), idx_star.codes());
    if forward_is_winograd(w, dims[1], dims[2]) {
        winograd::conv_pool_offset(src, w.wino_fwd(), y, old, delta.data_mut(), codes);
    } else {
        with_scratch(y.len(), |wd| {
            forward(src, w, None, Out::Map(wd));
            pool_offset_map(wd, y, old, delta.data_mut(), codes, full);
        });
    }
    Ok(())
}

/// The pooled operands of an offset unpooling, per channel `(same, new, old)`: the value
/// at the argmax where it did not move, and at the new and the old argmax where it did.
pub(crate) trait Operands: Copy + Send + Sync {
    /// `(same, new, old)` of channels `o..o+n` (`n <= 16`) of the pooled maps, zero past `n`.
    fn load16(&self, o: usize, n: usize) -> [V16; 3];
}

/// `unpool(s* + d, idx) − unpool(s*, idx*)`: `(d, s* + d, −s*)`.
#[derive(Clone, Copy)]
pub(crate) struct OffsetOperands<'a> {
    pub d: &'a [f32],
    pub s: &'a [f32],
}

impl Operands for OffsetOperands<'_> {
    #[inline(always)]
    fn load16(&self, o: usize, n: usize) -> [V16; 3] {
        let (d, s) = (get16(&self.d[o..], n), get16(&self.s[o..], n));
        let (mut new, mut old) = ([0.0f32; 16], [0.0f32; 16]);
        for l in 0..16 {
            new[l] = s[l] + d[l];
            old[l] = -s[l];
        }
        [d, new, old]
    }
}

/// `unpool(s_b, idx_b) − unpool(s_a, idx_a)` with `s = s* + d`: `(d_b − d_a, s_b, −s_a)`.
#[derive(Clone, Copy)]
pub(crate) struct DiffOperands<'a> {
    pub s_a: &'a [f32],
    pub d_a: &'a [f32],
    pub s_b: &'a [f32],
    pub d_b: &'a [f32],
}

impl Operands for DiffOperands<'_> {
    #[inline(always)]
    fn load16(&self, o: usize, n: usize) -> [V16; 3] {
        let (da, db) = (get16(&self.d_a[o..], n), get16(&self.d_b[o..], n));
        let (sa, sb) = (get16(&self.s_a[o..], n), get16(&self.s_b[o..], n));
        let (mut same, mut old) = ([0.0f32; 16], [0.0f32; 16]);
        for l in 0..16 {
            same[l] = db[l] - da[l];
            old[l] = -sa[l];
        }
        [same, sb, old]
    }
}

/// Channels `o..o+n` of window position `q` (`2a + e`) of an offset unpooling whose argmax
/// moved from `ko` to `kn`: `same` at `kn = ko = q`, `new` at `kn = q ≠ ko`, `old` at
/// `ko = q ≠ kn`, zero elsewhere (and past `n`).
#[inline(always)]
fn value16<P: Operands>(ops: &P, kn: &[u8], ko: &[u8], o: usize, n: usize, q: u8) -> V16 {
    let [same, new, old] = ops.load16(o, n);
    let (kn, ko) = (codes16(kn, o, n), codes16(ko, o, n));
    let mut r = [0.0f32; 16];
    for l in 0..16 {
        r[l] = if q == kn[l] {
            if kn[l] == ko[l] {
                same[l]
            } else {
                new[l]
            }
        } else if q == ko[l] {
            old[l]
        } else {
            0.0
        };
    }
    r
}

/// The full-resolution map `unpool(new, kn) − unpool(old, ko)` of pooled [`Operands`]
/// (`dims` `[B,H,W,C]` of the unpooled map), read on the fly by the conv kernels.
#[derive(Clone, Copy)]
pub(crate) struct UnpoolOffsetMap<'a, P: Operands> {
    pub ops: P,
    pub kn: &'a [u8],
    pub ko: &'a [u8],
    pub dims: [usize; 4],
}

impl<P: Operands> UnpoolOffsetMap<'_, P> {
    /// Pixel `(b, iy, ix)`'s pooled offset (channel 0) and window code, `None` outside the
    /// pooled windows.
    #[inline(always)]
    fn window(&self, b: usize, iy: usize, ix: usize) -> Option<(usize, u8)> {
        let [_, h, w, c] = self.dims;
        let (ph, pw) = (h / 2, w / 2);
        let (py, px) = (iy / 2, ix / 2);
        (py < ph && px < pw).then(|| (((b * ph + py) * pw + px) * c, (2 * (iy % 2) + ix % 2) as u8))
    }
}

impl<P: Operands> PixelLoad for UnpoolOffsetMap<'_, P> {
    #[inline(always)]
    fn dims(&self) -> [usize; 4] {
        self.dims
    }

    #[inline(always)]
    fn load16(&self, b: usize, iy: isize, ix: isize, c0: usize, n: usize) -> V16 {
        if iy < 0 || ix < 0 {
            return [0.0; 16];
        }
        match self.window(b, iy as usize, ix as usize) {
            Some((o, q)) => value16(&self.ops, self.kn, self.ko, o + c0, n, q),
            None => [0.0; 16],
        }
    }

    #[inline(always)]
    fn load_run(&self, b: usize, iy: usize, ix: usize, dst: &mut [f32]) {
        let c = self.dims[3];
        for (k, px) in dst.chunks_exact_mut(c).enumerate() {
            match self.window(b, iy, ix + k) {
                Some((o, q)) => {
                    for (c0, d) in (0..c).step_by(16).zip(px.chunks_mut(16)) {
                        let v = value16(&self.ops, self.kn, self.ko, o + c0, d.len(), q);
                        put16(d, &v, d.len());
                    }
                }
                None => px.fill(0.0),
            }
        }
    }
}

/// Full-resolution rows of pooled rows `row0..` of `map` into `out` (whole 2-row bands of
/// `2·W·C` floats); the unpooled last column of odd widths is zeroed.
#[inline(always)]
fn unpool_bands_impl<P: Operands>(map: &UnpoolOffsetMap<'_, P>, out: &mut [f32], row0: usize) {
    let [_, h, w, c] = map.dims;
    let (ph, pw) = (h / 2, w / 2);
    for (r, band) in out.chunks_exact_mut(2 * w * c).enumerate() {
        let (n, i) = ((row0 + r) / ph, (row0 + r) % ph);
        let (top, bot) = band.split_at_mut(w * c);
        for j in 0..pw {
            let o = ((n * ph + i) * pw + j) * c;
            for c0 in (0..c).step_by(16) {
                let m = 16.min(c - c0);
                for q in 0..4u8 {
                    let row = if q < 2 { &mut *top } else { &mut *bot };
                    let at = (2 * j + (q % 2) as usize) * c + c0;
                    let v = value16(&map.ops, map.kn, map.ko, o + c0, m, q);
                    put16(&mut row[at..], &v, m);
                }
            }
        }
        top[2 * pw * c..].fill(0.0);
        bot[2 * pw * c..].fill(0.0);
    }
}

simd_fn! {
    /// [`unpool_bands_impl`] for the widest vector unit.
    fn unpool_bands<P: Operands>(map: &UnpoolOffsetMap<'_, P>, out: &mut [f32], row0: usize)
        = unpool_bands_impl;
}

/// `out` = the full-resolution map of `map`, parallel over pooled rows.
fn unpool_map<P: Operands>(map: UnpoolOffsetMap<'_, P>, out: &mut Tensor) {
    let [_, h, w, c] = map.dims;
    let ph = h / 2;
    out.ensure_shape(&map.dims);
    let (per_in, band) = (h * w * c, 2 * w * c);
    if per_in == 0 {
        return;
    }
    let rpt = rows_per_task(band);
    out.data_mut()
        .par_chunks_mut(per_in)
        .enumerate()
        .for_each(|(n, s)| {
            let (bands, rest) = s.split_at_mut(ph * band);
            rest.fill(0.0);
            if bands.is_empty() {
                return;
            }
            bands
                .par_chunks_mut(rpt * band)
                .enumerate()
                .for_each(|(t, chunk)| unpool_bands(&map, chunk, n * ph + t * rpt));
        });
}

/// The dims of `idx`'s unpooled map.
fn unpooled_dims(op: &'static str, idx: &PoolIndex) -> Result<[usize; 4], ShapeError> {
    idx.input_shape()
        .try_into()
        .map_err(|_| ShapeError::new(op, "pool index", idx.input_shape(), "a rank-4 shape"))
}

/// `M = unpool(s* + d, idx_new) − unpool(s*, idx*)` (full resolution) from the pooled
/// offsets `d` and base `s*`:
///
/// ```text
/// M = d          at the argmax where it did not move
/// M = s* + d     at the new argmax,   M = −s*   at the old one, where it did
/// ```
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
    let dims = unpooled_dims("unpool_offset", idx_star)?;
    check_codes("unpool_offset", idx_new, dims)?;
    let ops = OffsetOperands {
        d: d.data(),
        s: s_star.data(),
    };
    unpool_map(
        UnpoolOffsetMap {
            ops,
            kn: idx_new.codes(),
            ko: idx_star.codes(),
            dims,
        },
        out,
    );
    Ok(())
}

fn check_codes(op: &'static str, idx: &PoolIndex, dims: [usize; 4]) -> Result<(), ShapeError> {
    if idx.input_shape() != dims {
        return Err(ShapeError::new(
            op,
            "pool index",
            idx.input_shape(),
            format!("{dims:?}"),
        ));
    }
    Ok(())
}

/// `x̄ = Wᵀ ⋆ [unpool(s* + d, idx_new) − unpool(s*, idx*)]`: the transposed conv of
/// [`unpool_offset`]'s map, read on the fly (no full-resolution temporary);
/// bit-identical to [`unpool_offset`] followed by
/// [`conv2d_transposed`](crate::core::conv::conv2d_transposed).
pub fn conv2d_transposed_unpool_offset(
    d: &Tensor,
    s_star: &Tensor,
    idx_new: &PoolIndex,
    idx_star: &PoolIndex,
    w: &PackedConv,
    dx: &mut Tensor,
) -> Result<(), ShapeError> {
    const OP: &str = "conv2d_transposed_unpool_offset";
    let pooled = idx_star.pooled_shape();
    d.expect_shape(OP, "offsets", &pooled)?;
    s_star.expect_shape(OP, "base", &pooled)?;
    let full = unpooled_dims(OP, idx_star)?;
    check_codes(OP, idx_new, full)?;
    let tg = w.geom().transposed();
    if full[3] != tg.cin {
        return Err(ShapeError::new(
            OP,
            "pool index",
            idx_star.input_shape(),
            format!("[B, H, W, {}] (the conv output)", tg.cin),
        ));
    }
    let (h, wd) = tg
        .out_hw(full[1], full[2])
        .ok_or_else(|| ShapeError::new(OP, "pool index", &full, "a conv output shape"))?;
    dx.ensure_shape(&[full[0], h, wd, tg.cout]);
    let ops = OffsetOperands {
        d: d.data(),
        s: s_star.data(),
    };
    let src = UnpoolOffsetMap {
        ops,
        kn: idx_new.codes(),
        ko: idx_star.codes(),
        dims: full,
    };
    transposed(src, w, dx);
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
    let dims = unpooled_dims("unpool_diff", idx_a)?;
    check_codes("unpool_diff", idx_b, dims)?;
    let ops = DiffOperands {
        s_a: s_a.data(),
        d_a: d_a.data(),
        s_b: s_b.data(),
        d_b: d_b.data(),
    };
    unpool_map(
        UnpoolOffsetMap {
            ops,
            kn: idx_b.codes(),
            ko: idx_a.codes(),
            dims,
        },
        out,
    );
    Ok(())
}
