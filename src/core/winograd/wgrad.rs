//! Weight gradient of the 3x3/pad-1 convolution in the Winograd domain.
//!
//! The forward map of one output tile is `Y = Aᵀ [Σ_c (G g_{o,c} Gᵀ) ⊙ V_c] A`, so its
//! adjoint in `g` gives, summed over tiles `t`,
//!
//! ```text
//! W̄[o,c] = Gᵀ dU_{o,c} G,   dU_ξ = Σ_t D_ξ[t]ᵀ · V_ξ[t]   (C_out × C_in, 36 products)
//! ```
//!
//! with `V = Bᵀ d B` the input transform of `x` and `D = A ȳ Aᵀ` the adjoint output
//! transform of the 4x4 tiles of `ȳ` (zero outside the map). The 36 products need a
//! quarter of the multiply-adds of the direct sum `Σ_{b,i,j} ȳ[b,i,j,o]·x[b,i+u-1,j+v-1,c]`.
//! Tiles are processed in chunks of a size fixed by the shape, accumulated in a fixed
//! order: the result does not depend on the number of threads.

use super::transform::{self, TileGrid};
use super::{group, plan, Mode, XI};
use crate::core::matmul::{matmul, MatMut, MatRef, Par};
use crate::core::pixels::{simd_fn, DenseMap, PixelLoad, SendPtr};
use crate::core::scratch::with_scratch;
use crate::core::tensor::Tensor;
use rayon::prelude::*;

/// Bytes of transformed tiles (`V` and `D`) per chunk in the wide schedule.
const WGRAD_BYTES: usize = 16 << 20;

/// Partial sums of `dU` in the chunked schedule (fixed, so that results do not depend
/// on the thread count).
const WGRAD_PARTS: usize = 4;

/// Largest `dU` (bytes) for the chunked schedule: beyond it, adding the partial sums
/// costs more than the wide schedule's spills (measured: 128→128 gains, 128→256 loses).
const PARTS_MAX_BYTES: usize = 4 << 20;

/// `dw[o,c,u,v] (+)= scale · Σ_{b,i,j} ȳ[b,i,j,o] · x[b,i+u-1,j+v-1,c]` (OIHW `dw`,
/// `[C_out, C_in, 3, 3]` flattened) for `x: [B,H,W,C_in]`, `ȳ: [B,H,W,C_out]`.
pub fn weight_grad3x3(x: &Tensor, dy: &Tensor, scale: f32, accumulate: bool, dw: &mut [f32]) {
    let s = x.shape();
    let dims = [s[0], s[1], s[2], s[3]];
    let d = dy.shape();
    assert_eq!(
        &d[..3],
        &s[..3],
        "winograd weight gradient: output-gradient shape"
    );
    weight_grad3x3_from(
        DenseMap { x: x.data(), dims },
        DenseMap {
            x: dy.data(),
            dims: [d[0], d[1], d[2], d[3]],
        },
        scale,
        accumulate,
        dw,
    );
}

/// [`weight_grad3x3`] with `ȳ` read through any [`PixelLoad`] (e.g. an unpooled map).
pub(crate) fn weight_grad3x3_from<L: PixelLoad>(
    x: DenseMap<'_>,
    dy: L,
    scale: f32,
    accumulate: bool,
    dw: &mut [f32],
) {
    let [b, h, w, cin] = x.dims;
    let cout = dy.dims()[3];
    assert_eq!(
        dy.dims(),
        [b, h, w, cout],
        "winograd weight gradient: output-gradient shape"
    );
    assert_eq!(dw.len(), cout * cin * 9, "winograd weight gradient: dw");
    let grid = TileGrid::new(b, h, w);
    let total = grid.tiles();
    let ulen = XI * cin * cout;
    let p = plan(total, cin, cout);
    if p.mode == Mode::Chunked && 4 * ulen <= PARTS_MAX_BYTES {
        // like the forward chunked schedule: small chunks whose V and D stay in L2, in
        // WGRAD_PARTS fixed groups, each accumulating its own dU; then the parts are added
        // in order
        let per_part = p.nchunks.div_ceil(WGRAD_PARTS.min(p.nchunks));
        let parts = p.nchunks.div_ceil(per_part);
        with_scratch(parts * ulen, |dus| {
            dus.par_chunks_mut(ulen).enumerate().for_each(|(pi, du)| {
                with_scratch(XI * p.chunk * (cin + cout), |buf| {
                    let first = pi * per_part;
                    for ci in first..((pi + 1) * per_part).min(p.nchunks) {
                        let (t0, t1) = (ci * p.chunk, ((ci + 1) * p.chunk).min(total));
                        let nt = t1 - t0;
                        let (v, d) = buf[..XI * nt * (cin + cout)].split_at_mut(XI * nt * cin);
                        // SAFETY: `v` and `d` belong to this task.
                        unsafe {
                            transform::input_tiles(
                                &x,
                                &grid,
                                t0,
                                nt,
                                t0,
                                t1,
                                SendPtr(v.as_mut_ptr()),
                            );
                            transform::grad_tiles(
                                &dy,
                                &grid,
                                t0,
                                nt,
                                t0,
                                t1,
                                SendPtr(d.as_mut_ptr()),
                            );
                        }
                        for (xi, duxi) in du.chunks_mut(cin * cout).enumerate() {
                            product(duxi, v, d, xi, nt, cin, cout, ci > first);
                        }
                    }
                });
            });
            let (du, rest) = dus.split_at_mut(ulen);
            du.par_chunks_mut(1 << 14).enumerate().for_each(|(k, dst)| {
                for part in rest.chunks_exact(ulen) {
                    for (a, b) in dst.iter_mut().zip(&part[k << 14..]) {
                        *a += b;
                    }
                }
            });
            fold(du, cin, cout, scale, accumulate, dw);
        });
        return;
    }
    let per_tile = XI * 4 * (cin + cout);
    let nchunks = total.div_ceil((WGRAD_BYTES / per_tile).max(16));
    let chunk = total.div_ceil(nchunks);
    with_scratch(ulen + XI * chunk * (cin + cout), |buf| {
        let (du, rest) = buf.split_at_mut(ulen);
        for ci in 0..nchunks {
            let (t0, t1) = (ci * chunk, ((ci + 1) * chunk).min(total));
            let nt = t1 - t0;
            let (v, d) = rest[..XI * nt * (cin + cout)].split_at_mut(XI * nt * cin);
            let (vp, dp) = (SendPtr(v.as_mut_ptr()), SendPtr(d.as_mut_ptr()));
            let g = group(nt);
            (0..nt.div_ceil(g)).into_par_iter().for_each(|gi| {
                let (a, z) = (t0 + gi * g, (t0 + (gi + 1) * g).min(t1));
                // SAFETY: groups write disjoint tile rows of `v` and `d`.
                unsafe {
                    transform::input_tiles(&x, &grid, t0, nt, a, z, vp);
                    transform::grad_tiles(&dy, &grid, t0, nt, a, z, dp);
                }
            });
            let (v, d) = (&*v, &*d);
            du.par_chunks_mut(cin * cout)
                .enumerate()
                .for_each(|(xi, duxi)| product(duxi, v, d, xi, nt, cin, cout, ci > 0));
        }
        fold(du, cin, cout, scale, accumulate, dw);
    });
}

/// `dU_ξ (+)= D_ξᵀ · V_ξ` for one ξ of a chunk of `nt` tiles.
#[allow(clippy::too_many_arguments)]
fn product(
    duxi: &mut [f32],
    v: &[f32],
    d: &[f32],
    xi: usize,
    nt: usize,
    cin: usize,
    cout: usize,
    accumulate: bool,
) {
    matmul(
        MatMut::row_major(duxi, cout, cin),
        MatRef::row_major(&d[xi * nt * cout..(xi + 1) * nt * cout], nt, cout).t(),
        MatRef::row_major(&v[xi * nt * cin..(xi + 1) * nt * cin], nt, cin),
        accumulate,
        1.0,
        Par::Seq,
    )
}

/// Flattened `(o, c)` pairs per fold step (one AVX-512 register of f64).
const LANES: usize = 8;
type V8 = [f64; LANES];

const SIXTH: f64 = 1.0 / 6.0;
const TWELFTH: f64 = 1.0 / 12.0;
const TWENTYFOURTH: f64 = 1.0 / 24.0;

/// `Gᵀ` applied along one axis (6 → 3), lane-wise: `t_v = Σ_j d_j G[j][v]` with the
/// kernel transform `G` of [`super::WinogradWeights::from_oihw`] written out.
#[inline(always)]
fn gt6(d: &[V8; 6]) -> [V8; 3] {
    let mut t = [[0.0; LANES]; 3];
    for l in 0..LANES {
        let (s12, d12) = (d[1][l] + d[2][l], d[2][l] - d[1][l]);
        let (s34, d34) = (d[3][l] + d[4][l], d[3][l] - d[4][l]);
        t[0][l] = 0.25 * d[0][l] - s12 * SIXTH + s34 * TWENTYFOURTH;
        t[1][l] = d12 * SIXTH + d34 * TWELFTH;
        t[2][l] = (s34 - s12) * SIXTH + d[5][l];
    }
    t
}

/// `dw[o,c,u,v] (+)= scale · Σ_{i,j} G[i][u] dU[6i+j][o][c] G[j][v]`, in f64.
///
/// `dU` is `[ξ][o][c]`, so the flattened index `e = o·C_in + c` runs in the same order
/// through every ξ plane and through `dw` (`dw[9e + 3u + v]`): every pass streams.
fn fold(du: &[f32], cin: usize, cout: usize, scale: f32, accumulate: bool, dw: &mut [f32]) {
    let plane = cin * cout;
    const TASK: usize = 1024;
    dw.par_chunks_mut(TASK * 9)
        .enumerate()
        .for_each(|(ti, dwt)| {
            fold_lanes(du, plane, ti * TASK, scale, accumulate, dwt);
        });
}

simd_fn! {
    fn fold_lanes(
        du: &[f32], plane: usize, e0: usize, scale: f32, accumulate: bool, dw: &mut [f32],
    ) = fold_lanes_impl;
}

/// One ξ plane's lanes `e..e+nl` as f64 (zero past `nl`).
#[inline(always)]
fn lanes64(du: &[f32], at: usize, nl: usize) -> V8 {
    if nl == LANES {
        let v: &[f32; LANES] = du[at..at + LANES].try_into().expect("8 lanes");
        return [
            v[0] as f64,
            v[1] as f64,
            v[2] as f64,
            v[3] as f64,
            v[4] as f64,
            v[5] as f64,
            v[6] as f64,
            v[7] as f64,
        ];
    }
    let mut x = [0.0; LANES];
    for (d, s) in x.iter_mut().zip(&du[at..at + nl]) {
        *d = *s as f64;
    }
    x
}

/// `t[i][v] = Σ_j dU[6i+j] G[j][v]` for row `i` of the 6x6 domain.
#[inline(always)]
fn fold_row(du: &[f32], plane: usize, e: usize, nl: usize, i: usize) -> [V8; 3] {
    let at = (6 * i) * plane + e;
    gt6(&[
        lanes64(du, at, nl),
        lanes64(du, at + plane, nl),
        lanes64(du, at + 2 * plane, nl),
        lanes64(du, at + 3 * plane, nl),
        lanes64(du, at + 4 * plane, nl),
        lanes64(du, at + 5 * plane, nl),
    ])
}

/// `Σ_i G[i][u] t[i][v]` for `u = 0..3`.
#[inline(always)]
fn fold_col(t: &[[V8; 3]; 6], v: usize) -> [V8; 3] {
    gt6(&[t[0][v], t[1][v], t[2][v], t[3][v], t[4][v], t[5][v]])
}

#[inline(always)]
fn fold_lanes_impl(
    du: &[f32],
    plane: usize,
    e0: usize,
    scale: f32,
    accumulate: bool,
    dw: &mut [f32],
) {
    let n = dw.len() / 9;
    let scale = scale as f64;
    for l0 in (0..n).step_by(LANES) {
        let nl = LANES.min(n - l0);
        let e = e0 + l0;
        let t = [
            fold_row(du, plane, e, nl, 0),
            fold_row(du, plane, e, nl, 1),
            fold_row(du, plane, e, nl, 2),
            fold_row(du, plane, e, nl, 3),
            fold_row(du, plane, e, nl, 4),
            fold_row(du, plane, e, nl, 5),
        ];
        // out[v][u] = Σ_i G[i][u] t[i][v]
        let out = [fold_col(&t, 0), fold_col(&t, 1), fold_col(&t, 2)];
        for (l, d9) in dw[l0 * 9..(l0 + nl) * 9].chunks_exact_mut(9).enumerate() {
            for (uv, d) in d9.iter_mut().enumerate() {
                let val = (scale * out[uv % 3][uv / 3][l]) as f32;
                *d = if accumulate { *d + val } else { val };
            }
        }
    }
}
