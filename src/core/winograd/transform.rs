//! The tile transforms of Winograd F(4x4, 3x3), vectorised over channels.
//!
//! * input:  `V = Bᵀ d B` (6x6 input patch `d` → 6x6), per channel;
//! * output: `Y = Aᵀ M A` (6x6 → 4x4 output tile), per channel, handed to a [`TileSink`];
//! * output adjoint (weight gradient): `D = A Ȳ Aᵀ` (4x4 output-gradient tile → 6x6).
//!
//! Transformed tiles live in buffers laid out `[ξ][tile][channel]` (ξ = 6·row + col of
//! the 6x6 domain), so that each ξ is a row-major `tiles × channels` matrix.

use crate::core::pixels::{PixelLoad, SendPtr};

/// Channels transformed together: a 6x6 patch of them stays in L1.
pub(crate) const CB: usize = 64;
type Lanes = [f32; CB];
const ZERO: Lanes = [0.0; CB];

/// Vector lanes to compute for `n` channels (whole 16-float vectors, at most `CB`).
#[inline(always)]
fn lanes(n: usize) -> usize {
    n.next_multiple_of(16).min(CB)
}

/// The 4x4 output tiles of a `[B,H,W,·]` map in raster order `(b, tile row, tile col)`.
/// The grid starts at pixel (0,0), so every 2x2 pooling window lies inside one tile.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TileGrid {
    pub b: usize,
    pub h: usize,
    pub w: usize,
    ty: usize,
    tx: usize,
}

impl TileGrid {
    pub fn new(b: usize, h: usize, w: usize) -> Self {
        TileGrid {
            b,
            h,
            w,
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

/// `r = Bᵀ d` along one axis (6 → 6), lane-wise.
#[inline(always)]
fn bt6(d: [&Lanes; 6], r: [&mut Lanes; 6], nv: usize) {
    let nv = nv.min(CB);
    let [d0, d1, d2, d3, d4, d5] = d;
    let [r0, r1, r2, r3, r4, r5] = r;
    for c in 0..nv {
        let (a0, a1, a2, a3, a4, a5) = (d0[c], d1[c], d2[c], d3[c], d4[c], d5[c]);
        r0[c] = 4.0 * a0 - 5.0 * a2 + a4;
        r1[c] = -4.0 * (a1 + a2) + a3 + a4;
        r2[c] = 4.0 * (a1 - a2) - a3 + a4;
        r3[c] = 2.0 * (a3 - a1) - a2 + a4;
        r4[c] = 2.0 * (a1 - a3) - a2 + a4;
        r5[c] = 4.0 * a1 - 5.0 * a3 + a5;
    }
}

/// `y = Aᵀ m` along one axis (6 → 4), lane-wise.
#[inline(always)]
fn at6(m: [&Lanes; 6], y: [&mut Lanes; 4], nv: usize) {
    let nv = nv.min(CB);
    let [m0, m1, m2, m3, m4, m5] = m;
    let [y0, y1, y2, y3] = y;
    for c in 0..nv {
        let (p12, m12) = (m1[c] + m2[c], m1[c] - m2[c]);
        let (p34, m34) = (m3[c] + m4[c], m3[c] - m4[c]);
        y0[c] = m0[c] + p12 + p34;
        y1[c] = m12 + 2.0 * m34;
        y2[c] = p12 + 4.0 * p34;
        y3[c] = m12 + 8.0 * m34 + m5[c];
    }
}

/// `r = A y` along one axis (4 → 6), lane-wise: the adjoint of [`at6`].
#[inline(always)]
fn a6(y: [&Lanes; 4], r: [&mut Lanes; 6], nv: usize) {
    let nv = nv.min(CB);
    let [y0, y1, y2, y3] = y;
    let [r0, r1, r2, r3, r4, r5] = r;
    for c in 0..nv {
        let (a, b, e, f) = (y0[c], y1[c], y2[c], y3[c]);
        let (pe, pf) = (a + e, b + f);
        r0[c] = a;
        r1[c] = pe + pf;
        r2[c] = pe - pf;
        let (q, s) = (a + 4.0 * e, 2.0 * b + 8.0 * f);
        r3[c] = q + s;
        r4[c] = q - s;
        r5[c] = f;
    }
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
pub(crate) unsafe fn input_tiles<L: PixelLoad>(
    src: &L,
    grid: &TileGrid,
    base: usize,
    nt: usize,
    t0: usize,
    t1: usize,
    v: SendPtr<f32>,
) {
    let [_, h, w, cin] = src.dims();
    debug_assert_eq!((grid.h, grid.w), (h, w));
    let mut px = [ZERO; 6];
    let mut t = [[ZERO; 6]; 6];
    let mut o = [ZERO; 6];
    for tile in t0..t1 {
        let (b, oy, ox) = grid.origin(tile);
        let (y0, x0) = (oy as isize - 1, ox as isize - 1);
        let lt = tile - base;
        for cb in (0..cin).step_by(CB) {
            let n = CB.min(cin - cb);
            let nv = lanes(n);
            for (i, ti) in t.iter_mut().enumerate() {
                let iy = y0 + i as isize;
                if iy < 0 || iy as usize >= h {
                    for r in ti.iter_mut() {
                        r[..nv].fill(0.0);
                    }
                    continue;
                }
                for (j, p) in px.iter_mut().enumerate() {
                    src.load(b, iy, x0 + j as isize, cb, &mut p[..n]);
                }
                let [r0, r1, r2, r3, r4, r5] = ti;
                bt6(
                    [&px[0], &px[1], &px[2], &px[3], &px[4], &px[5]],
                    [r0, r1, r2, r3, r4, r5],
                    nv,
                );
            }
            for jj in 0..6 {
                let [o0, o1, o2, o3, o4, o5] = &mut o;
                bt6(
                    [
                        &t[0][jj], &t[1][jj], &t[2][jj], &t[3][jj], &t[4][jj], &t[5][jj],
                    ],
                    [o0, o1, o2, o3, o4, o5],
                    nv,
                );
                for (ii, oi) in o.iter().enumerate() {
                    let at = (((ii * 6 + jj) * nt + lt) * cin) + cb;
                    v.slice(at, n).copy_from_slice(&oi[..n]);
                }
            }
        }
    }
}

/// Output-gradient transform of tiles `t0..t1` (chunk as in [`input_tiles`]):
/// `D[ξ][t-base][c] = (A ȳ_{t,c} Aᵀ)_ξ` with `ȳ` the 4x4 tile of `dy`, zero outside the map.
///
/// # Safety
/// As for [`input_tiles`], with `d` a `36·nt·C` buffer.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub(crate) unsafe fn grad_tiles<L: PixelLoad>(
    dy: &L,
    grid: &TileGrid,
    base: usize,
    nt: usize,
    t0: usize,
    t1: usize,
    d: SendPtr<f32>,
) {
    let [_, h, _, c] = dy.dims();
    let mut px = [ZERO; 4];
    let mut t = [[ZERO; 6]; 4];
    let mut o = [ZERO; 6];
    for tile in t0..t1 {
        let (b, oy, ox) = grid.origin(tile);
        let lt = tile - base;
        for cb in (0..c).step_by(CB) {
            let n = CB.min(c - cb);
            let nv = lanes(n);
            for (a, ta) in t.iter_mut().enumerate() {
                let iy = oy + a;
                if iy >= h {
                    for r in ta.iter_mut() {
                        r[..nv].fill(0.0);
                    }
                    continue;
                }
                for (e, p) in px.iter_mut().enumerate() {
                    dy.load(b, iy as isize, (ox + e) as isize, cb, &mut p[..n]);
                }
                let [r0, r1, r2, r3, r4, r5] = ta;
                a6(
                    [&px[0], &px[1], &px[2], &px[3]],
                    [r0, r1, r2, r3, r4, r5],
                    nv,
                );
            }
            for jj in 0..6 {
                let [o0, o1, o2, o3, o4, o5] = &mut o;
                a6(
                    [&t[0][jj], &t[1][jj], &t[2][jj], &t[3][jj]],
                    [o0, o1, o2, o3, o4, o5],
                    nv,
                );
                for (ii, oi) in o.iter().enumerate() {
                    let at = (((ii * 6 + jj) * nt + lt) * c) + cb;
                    d.slice(at, n).copy_from_slice(&oi[..n]);
                }
            }
        }
    }
}

/// Receives finished 4x4 output tiles.
pub(crate) trait TileSink: Sync {
    /// Output channels `ob..ob+n` of the tile at `(b, oy, ox)`: `res[4a+e][..n]` is pixel
    /// `(oy+a, ox+e)` (possibly past the map edge, then ignored).
    ///
    /// # Safety
    /// Concurrent calls must be for different tiles.
    unsafe fn store(&self, b: usize, oy: usize, ox: usize, ob: usize, n: usize, res: &[Lanes; 16]);
}

/// Output transform of tiles `t0..t1` (chunk as in [`input_tiles`]): `Y = Aᵀ M A` from
/// `m` (`36·nt·C_out`, layout `[ξ][tile][c]`) into `sink`.
///
/// # Safety
/// Concurrent calls must cover disjoint tile ranges.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn output_tiles<S: TileSink>(
    m: &[f32],
    cout: usize,
    grid: &TileGrid,
    base: usize,
    nt: usize,
    t0: usize,
    t1: usize,
    sink: &S,
) {
    let mut mr = [ZERO; 6];
    let mut t = [[ZERO; 6]; 4];
    let mut res = [ZERO; 16];
    for tile in t0..t1 {
        let (b, oy, ox) = grid.origin(tile);
        let lt = tile - base;
        for ob in (0..cout).step_by(CB) {
            let n = CB.min(cout - ob);
            let nv = lanes(n);
            for j in 0..6 {
                for (i, r) in mr.iter_mut().enumerate() {
                    let at = ((i * 6 + j) * nt + lt) * cout + ob;
                    r[..n].copy_from_slice(&m[at..at + n]);
                }
                let [t0r, t1r, t2r, t3r] = &mut t;
                at6(
                    [&mr[0], &mr[1], &mr[2], &mr[3], &mr[4], &mr[5]],
                    [&mut t0r[j], &mut t1r[j], &mut t2r[j], &mut t3r[j]],
                    nv,
                );
            }
            for (a, ta) in t.iter().enumerate() {
                let [y0, y1, y2, y3] =
                    <&mut [Lanes; 4]>::try_from(&mut res[4 * a..4 * a + 4]).expect("4 rows");
                at6(
                    [&ta[0], &ta[1], &ta[2], &ta[3], &ta[4], &ta[5]],
                    [y0, y1, y2, y3],
                    nv,
                );
            }
            sink.store(b, oy, ox, ob, n, &res);
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
    unsafe fn store(&self, b: usize, oy: usize, ox: usize, ob: usize, n: usize, res: &[Lanes; 16]) {
        let [_, h, w, c] = self.dims;
        for a in 0..4.min(h - oy) {
            for e in 0..4.min(w - ox) {
                // SAFETY: pixel (b, oy+a, ox+e) belongs to this tile only.
                let dst = self.y.slice(((b * h + oy + a) * w + ox + e) * c + ob, n);
                let src = &res[4 * a + e][..n];
                match self.bias {
                    Some(bias) => {
                        for ((d, s), bv) in dst.iter_mut().zip(src).zip(&bias[ob..ob + n]) {
                            *d = s + bv;
                        }
                    }
                    None => dst.copy_from_slice(src),
                }
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
    unsafe fn store(&self, b: usize, oy: usize, ox: usize, ob: usize, n: usize, res: &[Lanes; 16]) {
        let [_, h, w, c] = self.dims;
        let (ph, pw) = (h / 2, w / 2);
        let (py0, px0) = (oy / 2, ox / 2);
        for wa in 0..2.min(ph.saturating_sub(py0)) {
            for wb in 0..2.min(pw.saturating_sub(px0)) {
                let o = ((b * ph + py0 + wa) * pw + px0 + wb) * c + ob;
                // SAFETY: the pooled pixel's window lies in this tile only.
                let (dst, code) = (self.y.slice(o, n), self.codes.slice(o, n));
                let r = |da: usize, de: usize| &res[4 * (2 * wa + da) + 2 * wb + de][..n];
                let (r00, r01, r10, r11) = (r(0, 0), r(0, 1), r(1, 0), r(1, 1));
                match self.bias {
                    Some(bias) => {
                        let bias = &bias[ob..ob + n];
                        for ch in 0..n {
                            let bv = bias[ch];
                            (dst[ch], code[ch]) =
                                argmax4([r00[ch] + bv, r01[ch] + bv, r10[ch] + bv, r11[ch] + bv]);
                        }
                    }
                    None => {
                        for ch in 0..n {
                            (dst[ch], code[ch]) = argmax4([r00[ch], r01[ch], r10[ch], r11[ch]]);
                        }
                    }
                }
            }
        }
    }
}
