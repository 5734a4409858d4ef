//! Convolutions of tiny maps (2x2, 1x1, …) pixel pair by pixel pair, skipping the taps
//! that fall on the zero padding:
//!
//! ```text
//! y[·, q, o] = bias[o] + Σ_{(u,v)} Σ_{q = p - (u-pad, v-pad)} Σ_c x[·, p, c] · W[o, c, u, v]
//! ```
//!
//! i.e. one product `Y[:, q, :] += X[:, p, :] · W_uv` (`B × C_in` times `C_in × C_out`)
//! per (input pixel `p`, output pixel `q`) pair that a tap connects. For a 2x2 map with
//! padding 1 that is 16 products per channel pair instead of the 36 of im2col, and each
//! `W_uv` is read from memory once (the pairs are ordered by tap). The transposed
//! convolution is the same with `X̄[:, p, :] += Ȳ[:, q, :] · W_uvᵀ`.
//!
//! Tasks are fixed blocks of output channels, so results do not depend on the thread
//! count.

use super::conv::ConvGeom;
use super::im2col::{reduce_window, Out};
use super::matmul::{matmul_ptr, MatPtr, MatRef};
use super::pixels::{PixelLoad, SendPtr};
use super::scratch::with_scratch;
use rayon::prelude::*;

/// Output channels per parallel task.
const NBLOCK: usize = 256;

/// Whether an `h × w` map is small enough for this path: `h·w·oh·ow <= 2k²`.
pub(crate) fn eligible(g: ConvGeom, h: usize, w: usize) -> bool {
    match g.out_hw(h, w) {
        Some((oh, ow)) => h * w * oh * ow <= 2 * g.k * g.k,
        None => false,
    }
}

/// Calls `f(uv, p, q)` for every tap `uv` (in order) and pair of input pixel `p`
/// (index in `h × w`) and output pixel `q` (index in `oh × ow`) it connects.
fn pairs(g: ConvGeom, h: usize, w: usize, mut f: impl FnMut(usize, usize, usize)) {
    let (oh, ow) = g.out_hw(h, w).expect("eligible map");
    let (k, p) = (g.k, g.pad as isize);
    for u in 0..k {
        for v in 0..k {
            for i in 0..oh {
                for j in 0..ow {
                    let (iy, ix) = ((i + u) as isize - p, (j + v) as isize - p);
                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                        f(u * k + v, iy as usize * w + ix as usize, i * ow + j);
                    }
                }
            }
        }
    }
}

/// `y = bias + W ⋆ x` for a tiny map, into `out` (the map, or its 2x2 max-pool with
/// argmax codes, as `maxpool2x2` of the map); `fwd` is `[(u,v,c), o]`.
pub(crate) fn forward<L: PixelLoad>(
    x: L,
    g: ConvGeom,
    fwd: &[f32],
    bias: Option<&[f32]>,
    out: Out<'_>,
) {
    let [b, h, w, cin] = x.dims();
    let (oh, ow) = g.out_hw(h, w).expect("eligible map");
    let (pin, pout, cout) = (h * w, oh * ow, g.cout);
    let mut out = out;
    let pool = out.windows();
    let map = match out {
        Out::Map(y) => Some(y),
        _ => None,
    };
    let tmp_len = if pool.is_some() { b * pout * cout } else { 0 };
    with_scratch(rows_len(&x) + tmp_len, |buf| {
        let (xs, tmp) = buf.split_at_mut(rows_len(&x));
        let xin = rows(&x, xs);
        let y: &mut [f32] = map.unwrap_or(tmp);
        assert_eq!(y.len(), b * pout * cout);
        match bias {
            Some(bias) => y
                .chunks_exact_mut(cout)
                .for_each(|row| row.copy_from_slice(bias)),
            None => y.fill(0.0),
        }
        let dims = (b, pin, cin, pout, cout);
        tap_products(g, h, w, xin, fwd, y, dims, |uv, p, q| (uv, p, q));
        if let Some((py, codes, max)) = pool {
            let (ph, pw) = (oh / 2, ow / 2);
            for bi in 0..b {
                for (i, j) in (0..ph).flat_map(|i| (0..pw).map(move |j| (i, j))) {
                    let at = |a: usize, e: usize| {
                        &y[(bi * pout + (2 * i + a) * ow + 2 * j + e) * cout..][..cout]
                    };
                    let v = [at(0, 0), at(0, 1), at(1, 0), at(1, 1)];
                    // SAFETY: `py`/`codes` hold the pooled map; each window once.
                    unsafe {
                        reduce_window(v, cout, py, codes, ((bi * ph + i) * pw + j) * cout, max)
                    };
                }
            }
        }
    });
}

/// `x̄ = Wᵀ ⋆ ȳ` for a tiny map: `dy` has the forward output's shape, `dx` is
/// `[B, h, w, C_in]`; `tr` is `[(u',v',o), c]` with flipped taps `(u',v') = (k-1-u, k-1-v)`.
pub(crate) fn transposed<L: PixelLoad>(
    dy: L,
    g: ConvGeom,
    tr: &[f32],
    h: usize,
    w: usize,
    dx: &mut [f32],
) {
    let [b, oh, ow, cout] = dy.dims();
    let (pin, pout, cin, k) = (h * w, oh * ow, g.cin, g.k);
    assert_eq!(dx.len(), b * pin * cin);
    with_scratch(rows_len(&dy), |buf| {
        let yin = rows(&dy, buf);
        dx.fill(0.0);
        let dims = (b, pout, cout, pin, cin);
        tap_products(g, h, w, yin, tr, dx, dims, |uv, p, q| {
            ((k - 1 - uv / k) * k + (k - 1 - uv % k), q, p)
        });
    });
}

/// For every tap pair `(uv, p, q)` of [`pairs`], with `(t, s, d) = route(uv, p, q)`:
/// `dst[·, d, :] += src[·, s, :] · taps[t]`, where `src` is `[B, S, C_s]`, `dst` is
/// `[B, D, C_d]` and `taps` is `[T, C_s, C_d]`; parallel over blocks of `C_d`.
#[allow(clippy::too_many_arguments)]
fn tap_products(
    g: ConvGeom,
    h: usize,
    w: usize,
    src: &[f32],
    taps: &[f32],
    dst: &mut [f32],
    (b, s_pixels, cs, d_pixels, cd): (usize, usize, usize, usize, usize),
    route: impl Fn(usize, usize, usize) -> (usize, usize, usize) + Sync,
) {
    assert_eq!(dst.len(), b * d_pixels * cd);
    let dp = SendPtr(dst.as_mut_ptr());
    (0..cd.div_ceil(NBLOCK)).into_par_iter().for_each(|blk| {
        let (c0, c1) = (blk * NBLOCK, ((blk + 1) * NBLOCK).min(cd));
        pairs(g, h, w, |uv, p, q| {
            let (t, sp, dpix) = route(uv, p, q);
            let a = MatRef {
                data: &src[sp * cs..],
                rows: b,
                cols: cs,
                rs: s_pixels * cs,
                cs: 1,
            };
            let wv = MatRef {
                data: &taps[t * cs * cd + c0..],
                rows: cs,
                cols: c1 - c0,
                rs: cd,
                cs: 1,
            };
            let c = MatPtr {
                ptr: dp.ptr().wrapping_add(dpix * cd + c0),
                rows: b,
                cols: c1 - c0,
                rs: d_pixels * cd,
                cs: 1,
            };
            // SAFETY: `c` lies in `dst` (checked length); tasks write disjoint channel blocks.
            unsafe { matmul_ptr(c, a, wv, true, 1.0) };
        });
    });
}

/// Scratch floats [`rows`] needs to hold a copy of the map.
fn rows_len<L: PixelLoad>(m: &L) -> usize {
    if m.as_dense().is_some() {
        0
    } else {
        m.dims().iter().product()
    }
}

/// The map as stored, or read into `buf` (an unpooled map).
fn rows<'a, L: PixelLoad>(m: &'a L, buf: &'a mut [f32]) -> &'a [f32] {
    match m.as_dense() {
        Some(x) => x,
        None => {
            let [b, h, w, c] = m.dims();
            for bi in 0..b {
                for i in 0..h {
                    m.load_run(
                        bi,
                        i,
                        0,
                        &mut buf[((bi * h + i) * w) * c..((bi * h + i + 1) * w) * c],
                    );
                }
            }
            buf
        }
    }
}
