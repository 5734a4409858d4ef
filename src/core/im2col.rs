//! Direct (non-Winograd) convolutions by im2col + `gemm`, for any kernel size and padding:
//!
//! * [`conv`]: `y[m, o] = bias[o] + Σ_{(u,v,c)} col[m, (u,v,c)] · Wp[(u,v,c), o]` with
//!   `col[(b,i,j), (u,v,c)] = x[b, i+u-p, j+v-p, c]` (zero outside the map), written
//!   as a map or max-pooled on the fly;
//! * [`conv_col2im`]: the same convolution as `Z = x · Wz`, `Wz[c, (u,v,o)] = W[o,c,u,v]`,
//!   then `y[b,i,j,o] = Σ_{u,v} Z[b, i+u-p, j+v-p, (u,v,o)]`: cheaper when there are
//!   few output channels (the transposed conv of a first layer, 128→3);
//! * [`weight_grad`]: `W̄[(u,v,c), o] = Σ_m col[m, (u,v,c)] · ȳ[m, o]`.
//!
//! Inputs are read through [`PixelLoad`], so the unpooling of a pooled map is read
//! without building it. Work is split in chunks fixed by the shape (never by the thread
//! count), so results are bit-identical for any number of threads.

use super::conv::ConvGeom;
use super::matmul::{matmul, MatMut, MatRef, Par};
use super::pixels::{PixelLoad, SendPtr};
use super::scratch::with_scratch;
use super::winograd::argmax4;
use rayon::prelude::*;

#[cfg(test)]
thread_local! {
    /// Tests force small chunks with this (output rows per chunk).
    pub(crate) static FORCE_ROWS: std::cell::Cell<Option<usize>> =
        const { std::cell::Cell::new(None) };
}

/// Output rows per chunk for a `kdim`-wide im2col matrix out of `total`: about
/// `mib` MiB of patches, but at most an eighth of the rows (so that small problems
/// still make several tasks; fixed by the shape, not the thread count).
fn target_rows(kdim: usize, total: usize, mib: usize) -> usize {
    #[cfg(test)]
    if let Some(r) = FORCE_ROWS.get() {
        return r;
    }
    ((mib << 18) / kdim.max(1)).min(total / 8).max(16)
}

/// Splits the `B·OH·OW` output rows into chunks of whole images, or of whole 2-row
/// pooling bands of one image (so that a chunk can be max-pooled on its own).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowPlan {
    oh: usize,
    ow: usize,
    /// Images per chunk (chunks of whole images), or 0.
    ipc: usize,
    /// Image rows per chunk (even) when images are split.
    rpc: usize,
    /// Chunks per image when images are split.
    cpi: usize,
    pub n: usize,
}

impl RowPlan {
    pub fn new(b: usize, oh: usize, ow: usize, rows: usize) -> Self {
        if oh * ow <= rows {
            let ipc = rows / (oh * ow);
            RowPlan {
                oh,
                ow,
                ipc,
                rpc: oh,
                cpi: 1,
                n: b.div_ceil(ipc),
            }
        } else {
            let rpc = ((rows / ow) & !1).max(2);
            let cpi = oh.div_ceil(rpc);
            RowPlan {
                oh,
                ow,
                ipc: 0,
                rpc,
                cpi,
                n: b * cpi,
            }
        }
    }

    /// `(first flattened row, rows)` of chunk `ci` of a batch of `b` images.
    pub fn chunk(&self, ci: usize, b: usize) -> (usize, usize) {
        let img = self.oh * self.ow;
        if self.ipc > 0 {
            let b0 = ci * self.ipc;
            (b0 * img, (self.ipc.min(b - b0)) * img)
        } else {
            let (bi, k) = (ci / self.cpi, ci % self.cpi);
            let i0 = k * self.rpc;
            (
                bi * img + i0 * self.ow,
                self.rpc.min(self.oh - i0) * self.ow,
            )
        }
    }
}

/// Writes the patches of output rows `m0..m0+rows` into `col` (`rows × k²C`).
#[allow(clippy::too_many_arguments)]
fn im2col_rows<L: PixelLoad>(
    src: &L,
    g: ConvGeom,
    oh: usize,
    ow: usize,
    m0: usize,
    rows: usize,
    col: &mut [f32],
) {
    let [_, h, w, c] = src.dims();
    let (k, p) = (g.k, g.pad);
    let kdim = k * k * c;
    for (r, dst) in col[..rows * kdim].chunks_exact_mut(kdim).enumerate() {
        let m = m0 + r;
        let (b, rem) = (m / (oh * ow), m % (oh * ow));
        let (i, j) = (rem / ow, rem % ow);
        // valid taps v: 0 <= j+v-p < w
        let lo = p.saturating_sub(j).min(k);
        let hi = (w + p).saturating_sub(j).clamp(lo, k);
        for (u, d) in dst.chunks_exact_mut(k * c).enumerate() {
            let iy = (i + u) as isize - p as isize;
            if iy < 0 || iy as usize >= h || lo == hi {
                d.fill(0.0);
                continue;
            }
            d[..lo * c].fill(0.0);
            d[hi * c..].fill(0.0);
            src.load_run(b, iy as usize, j + lo - p, &mut d[lo * c..hi * c]);
        }
    }
}

/// Where [`conv`] writes.
pub(crate) enum Out<'a> {
    /// The output map `[B, OH, OW, C_out]`.
    Map(&'a mut [f32]),
    /// `maxpool2x2` of the output map (`[B, OH/2, OW/2, C_out]`) and its argmax codes.
    Pool {
        y: &'a mut [f32],
        codes: &'a mut [u8],
    },
    /// `gather2x2` of the output map at given argmax codes (`[B, OH/2, OW/2, C_out]`).
    Gather { y: &'a mut [f32], codes: &'a [u8] },
}

impl Out<'_> {
    /// The pooled-size output, its codes and whether they are written (max-pool) or read
    /// (gather); `None` for a full map.
    pub(crate) fn windows(&mut self) -> Option<(SendPtr<f32>, SendPtr<u8>, bool)> {
        match self {
            Out::Map(_) => None,
            Out::Pool { y, codes } => {
                Some((SendPtr(y.as_mut_ptr()), SendPtr(codes.as_mut_ptr()), true))
            }
            Out::Gather { y, codes } => Some((
                SendPtr(y.as_mut_ptr()),
                SendPtr(codes.as_ptr() as *mut u8),
                false,
            )),
        }
    }

    /// Length of the output.
    pub(crate) fn len(&self) -> usize {
        match self {
            Out::Map(y) | Out::Pool { y, .. } | Out::Gather { y, .. } => y.len(),
        }
    }
}

/// One 2x2 window `v` (row-major, `n` channels each) into `y[..n]`: its max and argmax
/// codes as `maxpool2x2` (when `max`), or the values at the given `codes` as `gather2x2`.
///
/// # Safety
/// `y` and `codes` must be valid for `n` elements and not accessed by anyone else.
#[inline(always)]
pub(crate) unsafe fn reduce_window(
    v: [&[f32]; 4],
    n: usize,
    y: SendPtr<f32>,
    codes: SendPtr<u8>,
    at: usize,
    max: bool,
) {
    let (y, code) = (y.slice(at, n), codes.slice(at, n));
    if max {
        for ch in 0..n {
            (y[ch], code[ch]) = argmax4([v[0][ch], v[1][ch], v[2][ch], v[3][ch]]);
        }
    } else {
        for ch in 0..n {
            y[ch] = v[code[ch] as usize & 3][ch];
        }
    }
}

/// `y = bias + im2col(src) · wp` with `wp` a `k²C_in × C_out` matrix (`[(u,v,c), o]`),
/// into `out` (see [`Out`]). Pooled or not, every conv value is computed the same way,
/// so the pooled result equals `maxpool2x2` of the map result bit for bit.
pub(crate) fn conv<L: PixelLoad>(
    src: L,
    g: ConvGeom,
    wp: &[f32],
    bias: Option<&[f32]>,
    out: Out<'_>,
) {
    let [b, h, w, _] = src.dims();
    let (oh, ow) = g.out_hw(h, w).expect("checked by the caller");
    let co = g.cout;
    let kdim = g.k * g.k * g.cin;
    let plan = RowPlan::new(b, oh, ow, target_rows(kdim, b * oh * ow, 1));
    let (ph, pw) = (oh / 2, ow / 2);
    let mut out = out;
    let windows = out.windows();
    let pooled = windows.is_some();
    assert_eq!(
        out.len(),
        if pooled {
            b * ph * pw * co
        } else {
            b * oh * ow * co
        }
    );
    let (yp, cp, max) = match windows {
        Some(w) => w,
        None => match out {
            Out::Map(y) => (
                SendPtr(y.as_mut_ptr()),
                SendPtr(std::ptr::null_mut::<u8>()),
                false,
            ),
            _ => unreachable!(),
        },
    };
    (0..plan.n).into_par_iter().for_each(|ci| {
        let (m0, rows) = plan.chunk(ci, b);
        let extra = if pooled { rows * co } else { 0 };
        with_scratch(rows * kdim + extra, |buf| {
            let (col, tmp) = buf.split_at_mut(rows * kdim);
            // SAFETY: chunks cover disjoint output rows.
            let dst = if pooled {
                tmp
            } else {
                unsafe { yp.slice(m0 * co, rows * co) }
            };
            if let Some(bias) = bias {
                for row in dst.chunks_exact_mut(co) {
                    row.copy_from_slice(bias);
                }
            }
            im2col_rows(&src, g, oh, ow, m0, rows, col);
            matmul(
                MatMut::row_major(dst, rows, co),
                MatRef::row_major(col, rows, kdim),
                MatRef::row_major(wp, kdim, co),
                bias.is_some(),
                1.0,
                Par::Seq,
            );
            if pooled {
                // the chunk holds whole bands: pool rows (2q, 2q+1) of each image
                let gr0 = m0 / ow;
                for gr in gr0..gr0 + rows / ow {
                    let (bi, i) = (gr / oh, gr % oh);
                    if i % 2 != 0 || i / 2 >= ph {
                        continue;
                    }
                    let (r0, r1) = ((gr - gr0) * ow, (gr - gr0 + 1) * ow);
                    for pj in 0..pw {
                        let o = ((bi * ph + i / 2) * pw + pj) * co;
                        let at = |r: usize| &dst[r * co..(r + 1) * co];
                        let v = [
                            at(r0 + 2 * pj),
                            at(r0 + 2 * pj + 1),
                            at(r1 + 2 * pj),
                            at(r1 + 2 * pj + 1),
                        ];
                        // SAFETY: each pooled pixel comes from one band of one chunk.
                        unsafe { reduce_window(v, co, yp, cp, o, max) };
                    }
                }
            }
        });
    });
}

/// `wz[c, (u,v,o)] = wp[(u,v,c), o]`: the weights of [`conv_col2im`] from those of [`conv`].
pub(crate) fn col2im_weights(wp: &[f32], g: ConvGeom) -> Vec<f32> {
    let mut wz = vec![0.0f32; wp.len()];
    col2im_weights_into(wp, g, &mut wz);
    wz
}

/// [`col2im_weights`] into an existing buffer.
pub(crate) fn col2im_weights_into(wp: &[f32], g: ConvGeom, wz: &mut [f32]) {
    let (kk, c, o) = (g.k * g.k, g.cin, g.cout);
    for uv in 0..kk {
        for ci in 0..c {
            wz[(ci * kk + uv) * o..(ci * kk + uv + 1) * o]
                .copy_from_slice(&wp[(uv * c + ci) * o..(uv * c + ci + 1) * o]);
        }
    }
}

/// The convolution of [`conv`] (no bias) computed as `Z = src · wz`, then
/// `y[b,i,j,o] = Σ_{u,v} Z[b, i+u-p, j+v-p, (u,v,o)]`; chunks of whole images.
pub(crate) fn conv_col2im<L: PixelLoad>(src: L, g: ConvGeom, wz: &[f32], y: &mut [f32]) {
    let [b, h, w, c] = src.dims();
    let (oh, ow) = g.out_hw(h, w).expect("checked by the caller");
    let (k, p, co) = (g.k, g.pad as isize, g.cout);
    let zw = k * k * co;
    assert_eq!(y.len(), b * oh * ow * co);
    let ipc = (target_rows(zw.max(c), b * h * w, 1) / (h * w)).max(1);
    y.par_chunks_mut(ipc * oh * ow * co)
        .enumerate()
        .for_each(|(ci, ychunk)| {
            let b0 = ci * ipc;
            let nb = ychunk.len() / (oh * ow * co);
            let rows = nb * h * w;
            let copy = if src.as_dense().is_some() {
                0
            } else {
                rows * c
            };
            with_scratch(rows * zw + copy, |buf| {
                let (z, xs) = buf.split_at_mut(rows * zw);
                let xin: &[f32] = match src.as_dense() {
                    Some(x) => &x[b0 * h * w * c..(b0 + nb) * h * w * c],
                    None => {
                        for bi in 0..nb {
                            for i in 0..h {
                                src.load_run(
                                    b0 + bi,
                                    i,
                                    0,
                                    &mut xs[((bi * h + i) * w) * c..((bi * h + i + 1) * w) * c],
                                );
                            }
                        }
                        xs
                    }
                };
                matmul(
                    MatMut::row_major(z, rows, zw),
                    MatRef::row_major(xin, rows, c),
                    MatRef::row_major(wz, c, zw),
                    false,
                    1.0,
                    Par::Seq,
                );
                for bi in 0..nb {
                    for i in 0..oh {
                        for j in 0..ow {
                            let dst = &mut ychunk[((bi * oh + i) * ow + j) * co..][..co];
                            dst.fill(0.0);
                            for u in 0..k {
                                let iy = (i + u) as isize - p;
                                if iy < 0 || iy as usize >= h {
                                    continue;
                                }
                                for v in 0..k {
                                    let ix = (j + v) as isize - p;
                                    if ix < 0 || ix as usize >= w {
                                        continue;
                                    }
                                    let zr = &z[((bi * h + iy as usize) * w + ix as usize) * zw
                                        + (u * k + v) * co..][..co];
                                    for (d, s) in dst.iter_mut().zip(zr) {
                                        *d += s;
                                    }
                                }
                            }
                        }
                    }
                }
            });
        });
}

/// Number of partial sums of an im2col weight gradient (fixed, so that results do not
/// depend on the thread count).
const WGRAD_GROUPS: usize = 4;

/// `W̄[(u,v,c), o] = Σ_m col[m, (u,v,c)] · ȳ[m, o]` (`k²C_in × C_out`, returned in
/// `sum`), as `WGRAD_GROUPS` fixed partial sums over chunks of rows.
pub(crate) fn weight_grad<L: PixelLoad, D: PixelLoad>(x: L, dy: D, g: ConvGeom, sum: &mut [f32]) {
    let [b, h, w, _] = x.dims();
    let (oh, ow) = g.out_hw(h, w).expect("checked by the caller");
    let co = g.cout;
    let kdim = g.k * g.k * g.cin;
    assert_eq!(sum.len(), kdim * co);
    // long products (many rows per call) so that the kdim × C_out accumulator is
    // read and written rarely
    let plan = RowPlan::new(b, oh, ow, target_rows(kdim, b * oh * ow, 4));
    let per_group = plan.n.div_ceil(WGRAD_GROUPS);
    let groups = plan.n.div_ceil(per_group);
    let dense_dy = dy.as_dense();
    let partial = |gi: usize, acc: &mut [f32]| {
        for ci in gi * per_group..((gi + 1) * per_group).min(plan.n) {
            let (m0, rows) = plan.chunk(ci, b);
            let copy = if dense_dy.is_some() { 0 } else { rows * co };
            with_scratch(rows * kdim + copy, |buf| {
                let (col, ys) = buf.split_at_mut(rows * kdim);
                im2col_rows(&x, g, oh, ow, m0, rows, col);
                let yrows: &[f32] = match dense_dy {
                    Some(d) => &d[m0 * co..(m0 + rows) * co],
                    None => {
                        for (r, dst) in ys.chunks_exact_mut(ow * co).enumerate() {
                            let gr = m0 / ow + r;
                            dy.load_run(gr / oh, gr % oh, 0, dst);
                        }
                        ys
                    }
                };
                matmul(
                    MatMut::row_major(acc, kdim, co),
                    MatRef::row_major(col, rows, kdim).t(),
                    MatRef::row_major(yrows, rows, co),
                    ci > gi * per_group,
                    1.0,
                    Par::Seq,
                );
            });
        }
    };
    let first = sum;
    if groups == 1 {
        partial(0, first);
        return;
    }
    with_scratch((groups - 1) * kdim * co, |parts| {
        rayon::join(
            || partial(0, first),
            || {
                parts
                    .par_chunks_mut(kdim * co)
                    .enumerate()
                    .for_each(|(k, acc)| partial(k + 1, acc))
            },
        );
        for p in parts.chunks_exact(kdim * co) {
            for (s, v) in first.iter_mut().zip(p) {
                *s += v;
            }
        }
    });
}
