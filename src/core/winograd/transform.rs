//! The tile transforms of Winograd F(4x4, 3x3), vectorised over channels (16 at a time,
//! kept in registers through both passes of a transform).
//!
//! * input:  `V = Bᵀ d B` (6x6 input patch `d` → 6x6), per channel;
//! * output: `Y = Aᵀ M A` (6x6 → 4x4 output tile), per channel, handed to a [`TileSink`];
//! * output adjoint (weight gradient): `D = A Ȳ Aᵀ` (4x4 output-gradient tile → 6x6).
//!
//! Transformed tiles live in buffers laid out `[ξ][tile][channel]` (ξ = 6·row + col of
//! the 6x6 domain), so that each ξ is a row-major `tiles × channels` matrix.

use crate::core::pixels::{get16, put16, simd_fn, PixelLoad, SendPtr, V16};

const Z: V16 = [0.0; 16];

/// The 4x4 output tiles of a `[B,H,W,·]` map in raster order `(b, tile row, tile col)`.
/// The grid starts at pixel (0,0), so every 2x2 pooling window lies inside one tile.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TileGrid {
    pub b: usize,
    pub h: usize,
    ty: usize,
    tx: usize,
}

impl TileGrid {
    pub fn new(b: usize, h: usize, w: usize) -> Self {
        TileGrid {
            b,
            h,
            ty: h.div_ceil(4),
            tx: w.div_ceil(4),
        }
    }

    pub fn tiles(&self) -> usize {
        self.b * self.ty * self.tx
    }

    /// `(sample, first output row, first output column)` of tile `t`.
    #[inline(always)]
    pub fn origin(&self, t: usize) -> (usize, usize, usize) {
        let per = self.ty * self.tx;
        let r = t % per;
        (t / per, r / self.tx * 4, r % self.tx * 4)
    }
}

/// `Bᵀ d` along one axis (6 → 6), lane-wise.
#[inline(always)]
fn bt6(d: &[V16; 6]) -> [V16; 6] {
    let mut r = [Z; 6];
    for c in 0..16 {
        let (a0, a1, a2, a3, a4, a5) = (d[0][c], d[1][c], d[2][c], d[3][c], d[4][c], d[5][c]);
        r[0][c] = 4.0 * a0 - 5.0 * a2 + a4;
        r[1][c] = -4.0 * (a1 + a2) + a3 + a4;
        r[2][c] = 4.0 * (a1 - a2) - a3 + a4;
        r[3][c] = 2.0 * (a3 - a1) - a2 + a4;
        r[4][c] = 2.0 * (a1 - a3) - a2 + a4;
        r[5][c] = 4.0 * a1 - 5.0 * a3 + a5;
    }
    r
}

/// `Aᵀ m` along one axis (6 → 4), lane-wise.
#[inline(always)]
fn at6(m: &[V16; 6]) -> [V16; 4] {
    let mut y = [Z; 4];
    for c in 0..16 {
        let (p12, m12) = (m[1][c] + m[2][c], m[1][c] - m[2][c]);
        let (p34, m34) = (m[3][c] + m[4][c], m[3][c] - m[4][c]);
        y[0][c] = m[0][c] + p12 + p34;
        y[1][c] = m12 + 2.0 * m34;
        y[2][c] = p12 + 4.0 * p34;
        y[3][c] = m12 + 8.0 * m34 + m[5][c];
    }
    y
}

/// `A y` along one axis (4 → 6), lane-wise: the adjoint of [`at6`].
#[inline(always)]
fn a6(y: &[V16; 4]) -> [V16; 6] {
    let mut r = [Z; 6];
    for c in 0..16 {
        let (a, b, e, f) = (y[0][c], y[1][c], y[2][c], y[3][c]);
        let (pe, pf) = (a + e, b + f);
        let (q, s) = (a + 4.0 * e, 2.0 * b + 8.0 * f);
        r[0][c] = a;
        r[1][c] = pe + pf;
        r[2][c] = pe - pf;
        r[3][c] = q + s;
        r[4][c] = q - s;
        r[5][c] = f;
    }
    r
}

/// `Bᵀ` along j of the six pixels `(iy, x0..x0+6)` (zero rows outside the map).
#[inline(always)]
fn input_row<L: PixelLoad>(
    src: &L,
    b: usize,
    iy: isize,
    x0: isize,
    g0: usize,
    n: usize,
    h: usize,
) -> [V16; 6] {
    if iy < 0 || iy as usize >= h {
        return [Z; 6];
    }
    bt6(&[
        src.load16(b, iy, x0, g0, n),
        src.load16(b, iy, x0 + 1, g0, n),
        src.load16(b, iy, x0 + 2, g0, n),
        src.load16(b, iy, x0 + 3, g0, n),
        src.load16(b, iy, x0 + 4, g0, n),
        src.load16(b, iy, x0 + 5, g0, n),
    ])
}

/// `A` along e of the four pixels `(iy, ox..ox+4)` of an output-gradient tile.
#[inline(always)]
fn grad_row<L: PixelLoad>(
    dy: &L,
    b: usize,
    iy: usize,
    ox: usize,
    g0: usize,
    n: usize,
    h: usize,
) -> [V16; 6] {
    if iy >= h {
        return [Z; 6];
    }
    let (iy, ox) = (iy as isize, ox as isize);
    a6(&[
        dy.load16(b, iy, ox, g0, n),
        dy.load16(b, iy, ox + 1, g0, n),
        dy.load16(b, iy, ox + 2, g0, n),
        dy.load16(b, iy, ox + 3, g0, n),
    ])
}

/// `Aᵀ` along i of column `j` of a tile's transformed outputs: the six values of rows
/// `i = 0..6` sit at `m[at + i·stride..]`.
#[inline(always)]
fn output_col(m: &[f32], at: usize, stride: usize, n: usize) -> [V16; 4] {
    at6(&[
        get16(&m[at..], n),
        get16(&m[at + stride..], n),
        get16(&m[at + 2 * stride..], n),
        get16(&m[at + 3 * stride..], n),
        get16(&m[at + 4 * stride..], n),
        get16(&m[at + 5 * stride..], n),
    ])
}

/// `Aᵀ` along j of row `a` of the column-transformed tile.
#[inline(always)]
fn output_row(cols: &[[V16; 4]; 6], a: usize) -> [V16; 4] {
    at6(&[
        cols[0][a], cols[1][a], cols[2][a], cols[3][a], cols[4][a], cols[5][a],
    ])
}

/// Input transform of tiles `t0..t1` of the chunk that starts at tile `base` and holds
/// `nt` tiles: `V[ξ][t-base][c] = (Bᵀ d_{t,c} B)_ξ` with `d` the 6x6 patch of `src` at
/// (tile origin − 1), zero outside the map.
///
/// # Safety
/// `v` points to a `36·nt·C` buffer; the call writes rows `t0-base..t1-base` of every ξ,
/// which no other live reference may overlap.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn input_tiles_impl<L: PixelLoad>(
    src: &L,
    grid: &TileGrid,
    base: usize,
    nt: usize,
    t0: usize,
    t1: usize,
    v: SendPtr<f32>,
) {
    let [_, h, _, cin] = src.dims();
    debug_assert_eq!(grid.h, h);
    for tile in t0..t1 {
        let (b, oy, ox) = grid.origin(tile);
        let (y0, x0) = (oy as isize - 1, ox as isize - 1);
        let lt = tile - base;
        for g0 in (0..cin).step_by(16) {
            let n = 16.min(cin - g0);
            // rows: t[i] = Bᵀ along j of input row i
            let t = [
                input_row(src, b, y0, x0, g0, n, h),
                input_row(src, b, y0 + 1, x0, g0, n, h),
                input_row(src, b, y0 + 2, x0, g0, n, h),
                input_row(src, b, y0 + 3, x0, g0, n, h),
                input_row(src, b, y0 + 4, x0, g0, n, h),
                input_row(src, b, y0 + 5, x0, g0, n, h),
            ];
            // columns
            for jj in 0..6 {
                let o = bt6(&[t[0][jj], t[1][jj], t[2][jj], t[3][jj], t[4][jj], t[5][jj]]);
                for (ii, oi) in o.iter().enumerate() {
                    put16(v.slice(((ii * 6 + jj) * nt + lt) * cin + g0, n), oi, n);
                }
            }
        }
    }
}

/// Output-gradient transform of tiles `t0..t1` (chunk as in [`input_tiles_impl`]):
/// `D[ξ][t-base][c] = (A ȳ_{t,c} Aᵀ)_ξ` with `ȳ` the 4x4 tile of `dy`, zero outside the map.
///
/// # Safety
/// As for [`input_tiles_impl`], with `d` a `36·nt·C` buffer.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn grad_tiles_impl<L: PixelLoad>(
    dy: &L,
    grid: &TileGrid,
    base: usize,
    nt: usize,
    t0: usize,
    t1: usize,
    d: SendPtr<f32>,
) {
    let [_, h, _, c] = dy.dims();
    for tile in t0..t1 {
        let (b, oy, ox) = grid.origin(tile);
        let lt = tile - base;
        for g0 in (0..c).step_by(16) {
            let n = 16.min(c - g0);
            let t = [
                grad_row(dy, b, oy, ox, g0, n, h),
                grad_row(dy, b, oy + 1, ox, g0, n, h),
                grad_row(dy, b, oy + 2, ox, g0, n, h),
                grad_row(dy, b, oy + 3, ox, g0, n, h),
            ];
            for jj in 0..6 {
                let o = a6(&[t[0][jj], t[1][jj], t[2][jj], t[3][jj]]);
                for (ii, oi) in o.iter().enumerate() {
                    put16(d.slice(((ii * 6 + jj) * nt + lt) * c + g0, n), oi, n);
                }
            }
        }
    }
}

simd_fn! {
    /// [`input_tiles_impl`] for the widest vector unit.
    ///
    /// # Safety
    /// As for [`input_tiles_impl`].
    pub(crate) unsafe fn input_tiles<L: PixelLoad>(
        src: &L, grid: &TileGrid, base: usize, nt: usize, t0: usize, t1: usize, v: SendPtr<f32>,
    ) = input_tiles_impl;
}

simd_fn! {
    /// [`grad_tiles_impl`] for the widest vector unit.
    ///
    /// # Safety
    /// As for [`grad_tiles_impl`].
    pub(crate) unsafe fn grad_tiles<L: PixelLoad>(
        dy: &L, grid: &TileGrid, base: usize, nt: usize, t0: usize, t1: usize, d: SendPtr<f32>,
    ) = grad_tiles_impl;
}

simd_fn! {
    /// [`output_tiles_impl`] for the widest vector unit.
    ///
    /// # Safety
    /// As for [`output_tiles_impl`].
    pub(crate) unsafe fn output_tiles<S: TileSink>(
        m: &[f32], cout: usize, grid: &TileGrid, base: usize, nt: usize, t0: usize, t1: usize,
        sink: &S,
    ) = output_tiles_impl;
}

/// Receives finished 4x4 output tiles.
pub(crate) trait TileSink: Sync {
    /// Output channels `g0..g0+n` (`n <= 16`) of the tile at `(b, oy, ox)`: `res[4a+e]` is
    /// pixel `(oy+a, ox+e)` (possibly past the map edge, then ignored).
    ///
    /// # Safety
    /// Concurrent calls must be for different tiles.
    unsafe fn store(&self, b: usize, oy: usize, ox: usize, g0: usize, n: usize, res: &[V16; 16]);
}

/// Output transform of tiles `t0..t1` (chunk as in [`input_tiles_impl`]): `Y = Aᵀ M A`
/// from `m` (`36·nt·C_out`, layout `[ξ][tile][c]`) into `sink`.
///
/// # Safety
/// Concurrent calls must cover disjoint tile ranges.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn output_tiles_impl<S: TileSink>(
    m: &[f32],
    cout: usize,
    grid: &TileGrid,
    base: usize,
    nt: usize,
    t0: usize,
    t1: usize,
    sink: &S,
) {
    for tile in t0..t1 {
        let (b, oy, ox) = grid.origin(tile);
        let lt = tile - base;
        for g0 in (0..cout).step_by(16) {
            let n = 16.min(cout - g0);
            // columns: t[a][j] = Aᵀ along i of column j
            let (at, stride) = (lt * cout + g0, 6 * nt * cout);
            let cols = [
                output_col(m, at, stride, n),
                output_col(m, at + nt * cout, stride, n),
                output_col(m, at + 2 * nt * cout, stride, n),
                output_col(m, at + 3 * nt * cout, stride, n),
                output_col(m, at + 4 * nt * cout, stride, n),
                output_col(m, at + 5 * nt * cout, stride, n),
            ];
            let r = [
                output_row(&cols, 0),
                output_row(&cols, 1),
                output_row(&cols, 2),
                output_row(&cols, 3),
            ];
            let res: [V16; 16] = [
                r[0][0], r[0][1], r[0][2], r[0][3], r[1][0], r[1][1], r[1][2], r[1][3], r[2][0],
                r[2][1], r[2][2], r[2][3], r[3][0], r[3][1], r[3][2], r[3][3],
            ];
            sink.store(b, oy, ox, g0, n, &res);
        }
    }
}

/// Writes tiles into a `[B,H,W,C]` map: `y = bias + res`.
pub(crate) struct MapSink<'a> {
    pub y: SendPtr<f32>,
    pub dims: [usize; 4],
    pub bias: Option<&'a [f32]>,
}

impl TileSink for MapSink<'_> {
    #[inline(always)]
    unsafe fn store(&self, b: usize, oy: usize, ox: usize, g0: usize, n: usize, res: &[V16; 16]) {
        let [_, h, w, c] = self.dims;
        let bias = self.bias.map(|bias| get16(&bias[g0..], n));
        for a in 0..4.min(h - oy) {
            for e in 0..4.min(w - ox) {
                // SAFETY: pixel (b, oy+a, ox+e) belongs to this tile only.
                let dst = self.y.slice(((b * h + oy + a) * w + ox + e) * c + g0, n);
                let mut v = res[4 * a + e];
                if let Some(bv) = bias {
                    for l in 0..16 {
                        v[l] += bv[l];
                    }
                }
                put16(dst, &v, n);
            }
        }
    }
}

/// Max-pools tiles 2x2/2 into a `[B,H/2,W/2,C]` map plus argmax codes, exactly as
/// [`crate::core::pool::maxpool2x2`] of `bias + res` (first maximum in row-major window
/// order wins, strict `>`, NaN wins; odd sizes floored).
pub(crate) struct PoolSink<'a> {
    pub y: SendPtr<f32>,
    pub codes: SendPtr<u8>,
    /// Dims of the full-resolution (unpooled) map.
    pub dims: [usize; 4],
    pub bias: Option<&'a [f32]>,
}

/// `(max, code)` of the window values in row-major order, as `maxpool2x2` picks them.
#[inline(always)]
pub(crate) fn argmax4(v: [f32; 4]) -> (f32, u8) {
    let (mut m, mut k) = (v[0], 0u8);
    for (code, &x) in [(1u8, &v[1]), (2, &v[2]), (3, &v[3])] {
        if x > m || x.is_nan() && !m.is_nan() {
            m = x;
            k = code;
        }
    }
    (m, k)
}

impl TileSink for PoolSink<'_> {
    #[inline(always)]
    unsafe fn store(&self, b: usize, oy: usize, ox: usize, g0: usize, n: usize, res: &[V16; 16]) {
        let [_, h, w, c] = self.dims;
        let (ph, pw) = (h / 2, w / 2);
        let (py0, px0) = (oy / 2, ox / 2);
        let bias = self.bias.map(|bias| get16(&bias[g0..], n));
        for wa in 0..2.min(ph.saturating_sub(py0)) {
            for wb in 0..2.min(pw.saturating_sub(px0)) {
                let o = ((b * ph + py0 + wa) * pw + px0 + wb) * c + g0;
                let (r0, r1) = (8 * wa + 2 * wb, 8 * wa + 4 + 2 * wb);
                let mut win = [res[r0], res[r0 + 1], res[r1], res[r1 + 1]];
                if let Some(bv) = bias {
                    for wv in win.iter_mut() {
                        for l in 0..16 {
                            wv[l] += bv[l];
                        }
                    }
                }
                let (mut m, mut k) = ([0.0f32; 16], [0u8; 16]);
                for l in 0..16 {
                    (m[l], k[l]) = argmax4([win[0][l], win[1][l], win[2][l], win[3][l]]);
                }
                // SAFETY: the pooled pixel's window lies in this tile only.
                put16(self.y.slice(o, n), &m, n);
                put_codes16(self.codes.slice(o, n), &k, n);
            }
        }
    }
}

/// Gathers from tiles at given 2x2 argmax codes into a `[B,H/2,W/2,C]` map, as
/// [`crate::core::pool::gather2x2`] of the conv output (no bias).
pub(crate) struct GatherSink<'a> {
    pub y: SendPtr<f32>,
    pub codes: &'a [u8],
    /// Dims of the full-resolution map.
    pub dims: [usize; 4],
}

impl TileSink for GatherSink<'_> {
    #[inline(always)]
    unsafe fn store(&self, b: usize, oy: usize, ox: usize, g0: usize, n: usize, res: &[V16; 16]) {
        let [_, h, w, c] = self.dims;
        let (ph, pw) = (h / 2, w / 2);
        let (py0, px0) = (oy / 2, ox / 2);
        for wa in 0..2.min(ph.saturating_sub(py0)) {
            for wb in 0..2.min(pw.saturating_sub(px0)) {
                let o = ((b * ph + py0 + wa) * pw + px0 + wb) * c + g0;
                let (r0, r1) = (8 * wa + 2 * wb, 8 * wa + 4 + 2 * wb);
                let win = [res[r0], res[r0 + 1], res[r1], res[r1 + 1]];
                let mut v = [0.0f32; 16];
                for (l, (vl, &k)) in v.iter_mut().zip(&self.codes[o..o + n]).enumerate() {
                    *vl = win[k as usize & 3][l];
                }
                // SAFETY: the pooled pixel's window lies in this tile only.
                put16(self.y.slice(o, n), &v, n);
            }
        }
    }
}

/// `codes[o..o+n]` (`n <= 16`) as 16 lanes, zero past `n`.
#[inline(always)]
pub(crate) fn codes16(codes: &[u8], o: usize, n: usize) -> [u8; 16] {
    if n == 16 {
        // a fixed-size copy (a variable-length one is a call to memcpy)
        return codes[o..o + 16].try_into().expect("16 lanes");
    }
    let mut k = [0u8; 16];
    for (a, b) in k.iter_mut().zip(&codes[o..o + n]) {
        *a = *b;
    }
    k
}

/// `dst[..n] = k[..n]` (`n <= 16`).
#[inline(always)]
fn put_codes16(dst: &mut [u8], k: &[u8; 16], n: usize) {
    if n == 16 {
        dst[..16].copy_from_slice(k);
    } else {
        dst[..n].iter_mut().zip(k).for_each(|(a, b)| *a = *b);
    }
}

/// One lane of an offset-form max-pool window (see [`crate::core::offset::pool_offset`]):
/// from `Y*` (`y`) and `W⋆d` (`w`) at the window's four positions (row-major) and the base
/// argmax code `ko`, the argmax `k` of `y + w` as [`argmax4`] picks it and
///
/// ```text
/// Δ = w[k]                       (k = ko)
/// Δ = (y[k] − y[ko]) + w[k]      (k ≠ ko)
/// ```
///
/// Written with selects only, so that loops over lanes vectorise.
#[inline(always)]
pub(crate) fn offset_argmax4(y: [f32; 4], w: [f32; 4], ko: u8) -> (f32, u8) {
    let mut m = y[0] + w[0];
    let (mut k, mut yk, mut wk) = (0u8, y[0], w[0]);
    for code in 1..4 {
        let v = y[code] + w[code];
        if v > m || v.is_nan() && !m.is_nan() {
            m = v;
            k = code as u8;
            yk = y[code];
            wk = w[code];
        }
    }
    let yo = match ko {
        0 => y[0],
        1 => y[1],
        2 => y[2],
        _ => y[3],
    };
    (if k == ko { wk } else { (yk - yo) + wk }, k)
}

/// Max-pools tiles of `W⋆d` in offset form into a `[B,H/2,W/2,C]` map of changes `Δ` plus
/// the new argmax codes, exactly as [`crate::core::offset::pool_offset`] of the stored conv
/// output (see [`offset_argmax4`]): `Y*` is read at full resolution, `W⋆d` never stored.
pub(crate) struct OffsetPoolSink<'a> {
    pub delta: SendPtr<f32>,
    pub codes: SendPtr<u8>,
    /// `Y*`, the full-resolution base map (`dims`).
    pub y_star: &'a [f32],
    /// Argmax codes of `Y*` (pooled size).
    pub old: &'a [u8],
    /// Dims of the full-resolution map.
    pub dims: [usize; 4],
}

impl TileSink for OffsetPoolSink<'_> {
    #[inline(always)]
    unsafe fn store(&self, b: usize, oy: usize, ox: usize, g0: usize, n: usize, res: &[V16; 16]) {
        let [_, h, w, c] = self.dims;
        let (ph, pw) = (h / 2, w / 2);
        let (py0, px0) = (oy / 2, ox / 2);
        for wa in 0..2.min(ph.saturating_sub(py0)) {
            for wb in 0..2.min(pw.saturating_sub(px0)) {
                let o = ((b * ph + py0 + wa) * pw + px0 + wb) * c + g0;
                let (r0, r1) = (8 * wa + 2 * wb, 8 * wa + 4 + 2 * wb);
                let win = [res[r0], res[r0 + 1], res[r1], res[r1 + 1]];
                let top = ((b * h + oy + 2 * wa) * w + ox + 2 * wb) * c + g0;
                let bot = top + w * c;
                let ys = [
                    get16(&self.y_star[top..], n),
                    get16(&self.y_star[top + c..], n),
                    get16(&self.y_star[bot..], n),
                    get16(&self.y_star[bot + c..], n),
                ];
                let ko = codes16(self.old, o, n);
                let (mut d, mut k) = ([0.0f32; 16], [0u8; 16]);
                for l in 0..16 {
                    (d[l], k[l]) = offset_argmax4(
                        [ys[0][l], ys[1][l], ys[2][l], ys[3][l]],
                        [win[0][l], win[1][l], win[2][l], win[3][l]],
                        ko[l],
                    );
                }
                // SAFETY: the pooled pixel's window lies in this tile only.
                put16(self.delta.slice(o, n), &d, n);
                put_codes16(self.codes.slice(o, n), &k, n);
            }
        }
    }
}
