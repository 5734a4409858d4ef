//! Winograd F(4x4, 3x3) convolution for 3x3 kernels with padding 1 and stride 1 on
//! channels-last maps (Lavin & Gray 2016).
//!
//! Per 4x4 output tile `Y` and 6x6 input tile `d` (zero padded at the borders):
//!
//! ```text
//! Y = Aᵀ [ Σ_c (G g_{o,c} Gᵀ) ⊙ (Bᵀ d_c B) ] A
//! ```
//!
//! so one 3x3 convolution becomes 36 independent matrix products
//! `M_ξ (tiles × C_out) = V_ξ (tiles × C_in) · U_ξ (C_in × C_out)`, 4× fewer
//! multiply-adds than the direct sum. The same numbers as the direct convolution up
//! to float rounding (relative error ~1e-6 on typical data); an all-zero input tile
//! gives exactly zero, so argmax ties of later max-pools are preserved.
//!
//! * `plan` schedules the tiles per shape: L2-sized chunks in parallel when `U` is
//!   small, or large chunks with the 36 products in parallel over ξ when `U` is large
//!   (512 channels: 37.7 MB), so that `U` is read once per call.
//! * The input transform reads pixels through a `PixelLoad` (a stored map, or the
//!   unpooling of a pooled map with its argmax codes); the output transform hands tiles
//!   to a sink that stores them (`y = bias + Y`) or max-pools them (the 4x4 tile grid
//!   starts at (0,0), so it holds whole 2x2 windows).
//! * [`weight_grad3x3`]: the weight gradient in the Winograd domain (see `wgrad`).

mod transform;
mod wgrad;

pub(crate) use transform::{argmax4, codes16, offset_argmax4};
pub use wgrad::weight_grad3x3;
pub(crate) use wgrad::weight_grad3x3_from;

use super::matmul::{matmul, MatMut, MatRef, Par};
use super::pixels::{put16, simd_fn, DenseMap, PixelLoad, SendPtr};
use super::scratch::with_scratch;
use super::tensor::Tensor;
use rayon::prelude::*;
use transform::{GatherSink, MapSink, OffsetPoolSink, PoolSink, TileGrid, TileSink};

/// Points of the 6x6 Winograd domain.
const XI: usize = 36;

/// `G`, the 6x3 kernel transform.
const G: [[f32; 3]; 6] = [
    [0.25, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// Transformed kernels `U_ξ = (G g Gᵀ)_ξ`, stored as 36 matrices `[ξ][c_in][c_out]`.
#[derive(Clone, Debug)]
pub struct WinogradWeights {
    cin: usize,
    cout: usize,
    u: Vec<f32>,
}

impl WinogradWeights {
    /// From OIHW 3x3 weights `w: [cout, cin, 3, 3]`. With `transposed`, the weights of the
    /// transposed convolution: input and output channels swapped, kernel flipped.
    pub fn from_oihw(w: &[f32], cout: usize, cin: usize, transposed: bool) -> Self {
        let (ci, co) = if transposed { (cout, cin) } else { (cin, cout) };
        let mut u = WinogradWeights {
            cin: ci,
            cout: co,
            u: vec![0.0f32; XI * ci * co],
        };
        u.refill(w, transposed);
        u
    }

    /// Recomputes `U` from new OIHW weights of the same shape, in place (no allocation,
    /// no page faults): `U[ξ=(i,j)] = Σ_{a,b} G[i][a] g[a][b] G[j][b]` per channel pair.
    pub fn refill(&mut self, w: &[f32], transposed: bool) {
        let (rows, cols) = (self.cin, self.cout);
        assert_eq!(w.len(), rows * cols * 9, "winograd: weights");
        let up = SendPtr(self.u.as_mut_ptr());
        const RB: usize = 8;
        (0..rows.div_ceil(RB)).into_par_iter().for_each(|blk| {
            let (r0, r1) = (blk * RB, ((blk + 1) * RB).min(rows));
            // SAFETY: the task writes rows r0..r1 of every ξ plane, no other task does.
            unsafe { fill_rows(w, rows, cols, transposed, r0, r1, up) };
        });
    }

    pub fn cin(&self) -> usize {
        self.cin
    }

    pub fn cout(&self) -> usize {
        self.cout
    }
}

/// Rows `r0..r1` of every ξ plane of `U` (`[ξ][row][col]`, `rows × cols` per plane),
/// 16 columns at a time in vector lanes. Forward: row = input channel, col = output
/// channel; transposed: row = output channel of `w`, col = input channel, kernel flipped.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn fill_rows_impl(
    w: &[f32],
    rows: usize,
    cols: usize,
    transposed: bool,
    r0: usize,
    r1: usize,
    u: SendPtr<f32>,
) {
    let cin = if transposed { cols } else { rows };
    for r in r0..r1 {
        for l0 in (0..cols).step_by(16) {
            let n = 16.min(cols - l0);
            let mut g = [[[0.0f32; 16]; 3]; 3];
            for l in 0..n {
                let (o, c) = if transposed { (r, l0 + l) } else { (l0 + l, r) };
                let src = &w[(o * cin + c) * 9..][..9];
                for (a, row) in g.iter_mut().enumerate() {
                    for (b, v) in row.iter_mut().enumerate() {
                        let (ka, kb) = if transposed { (2 - a, 2 - b) } else { (a, b) };
                        v[l] = src[ka * 3 + kb];
                    }
                }
            }
            // t = G g (6x3), then U = t Gᵀ (6x6)
            let mut t = [[[0.0f32; 16]; 3]; 6];
            for (i, ti) in t.iter_mut().enumerate() {
                for (j, tij) in ti.iter_mut().enumerate() {
                    for l in 0..16 {
                        tij[l] = G[i][0] * g[0][j][l] + G[i][1] * g[1][j][l] + G[i][2] * g[2][j][l];
                    }
                }
            }
            for (i, ti) in t.iter().enumerate() {
                for (j, gj) in G.iter().enumerate() {
                    let mut v = [0.0f32; 16];
                    for (l, vl) in v.iter_mut().enumerate() {
                        *vl = ti[0][l] * gj[0] + ti[1][l] * gj[1] + ti[2][l] * gj[2];
                    }
                    put16(u.slice(((i * 6 + j) * rows + r) * cols + l0, n), &v, n);
                }
            }
        }
    }
}

simd_fn! {
    /// [`fill_rows_impl`] for the widest vector unit.
    ///
    /// # Safety
    /// No other live reference may overlap rows `r0..r1` of the planes of `u`.
    unsafe fn fill_rows(
        w: &[f32], rows: usize, cols: usize, transposed: bool, r0: usize, r1: usize,
        u: SendPtr<f32>,
    ) = fill_rows_impl;
}

/// How the tiles of one convolution are scheduled (a function of the shape only, never of
/// the thread count, so results are bit-identical for any number of threads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Chunks small enough that a chunk's transformed tiles stay in L2, run in parallel,
    /// each one streaming all of `U`: best when `U` is small.
    Chunked,
    /// Large chunks run one after another; inside a chunk the transforms run in parallel
    /// over tiles and the 36 products in parallel over ξ, so `U` is streamed once per
    /// chunk: best when `U` is large (many channels, few tiles).
    Wide,
}

/// A schedule: `nchunks` chunks of `chunk` tiles (the last one may be shorter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub mode: Mode,
    pub chunk: usize,
    pub nchunks: usize,
}

/// Bytes of transformed tiles (`V` and `M`) per chunk in [`Mode::Chunked`]: half of L2,
/// so that a chunk's tiles stay there while `U` streams through (measured best on
/// Zen 4 with 2 MiB L2 for 128 and 256 channels).
const CHUNK_BYTES: usize = 1 << 20;
/// Bytes of transformed tiles per chunk in [`Mode::Wide`].
const WIDE_BYTES: usize = 24 << 20;

#[cfg(test)]
thread_local! {
    /// Tests force a schedule with this: `(mode, tiles per chunk)`.
    pub(crate) static FORCE_PLAN: std::cell::Cell<Option<(Mode, usize)>> =
        const { std::cell::Cell::new(None) };
}

/// The schedule of a convolution over `tiles` tiles.
pub(crate) fn plan(tiles: usize, cin: usize, cout: usize) -> Plan {
    #[cfg(test)]
    if let Some((mode, chunk)) = FORCE_PLAN.get() {
        let chunk = chunk.min(tiles).max(1);
        return Plan {
            mode,
            chunk,
            nchunks: tiles.div_ceil(chunk),
        };
    }
    let per_tile = XI * 4 * (cin + cout);
    let u_bytes = XI * 4 * cin * cout;
    let small = (CHUNK_BYTES / per_tile).clamp(8, 256);
    let nchunks = tiles.div_ceil(small);
    // Chunked streams U (read-only, from L3 when it fits) once per chunk; Wide spills V
    // and M out of L2 once (written, then read back). Per byte the spill costs about 2.5
    // times as much (measured), hence the weights below.
    let chunked_cost = 2 * nchunks * u_bytes;
    let wide_cost = 5 * 2 * tiles * per_tile;
    if nchunks > 1 && chunked_cost <= wide_cost {
        // an even number of equal chunks keeps two cores busy to the end
        let nchunks = nchunks.next_multiple_of(2);
        let chunk = tiles.div_ceil(nchunks);
        Plan {
            mode: Mode::Chunked,
            chunk,
            nchunks: tiles.div_ceil(chunk),
        }
    } else {
        let nchunks = tiles.div_ceil((WIDE_BYTES / per_tile).max(16)).max(1);
        let chunk = tiles.div_ceil(nchunks);
        Plan {
            mode: Mode::Wide,
            chunk,
            nchunks: tiles.div_ceil(chunk),
        }
    }
}

/// `M_ξ = V_ξ · U_ξ` for every ξ of a chunk of `nt` tiles, on this thread.
fn products(v: &[f32], u: &WinogradWeights, nt: usize, m: &mut [f32], par: bool) {
    let (cin, cout) = (u.cin, u.cout);
    let one = |xi: usize, mxi: &mut [f32]| {
        matmul(
            MatMut::row_major(mxi, nt, cout),
            MatRef::row_major(&v[xi * nt * cin..(xi + 1) * nt * cin], nt, cin),
            MatRef::row_major(&u.u[xi * cin * cout..(xi + 1) * cin * cout], cin, cout),
            false,
            1.0,
            Par::Seq,
        )
    };
    if par {
        m.par_chunks_mut(nt * cout)
            .enumerate()
            .for_each(|(xi, mxi)| one(xi, mxi));
    } else {
        m.chunks_mut(nt * cout)
            .enumerate()
            .for_each(|(xi, mxi)| one(xi, mxi));
    }
}

/// Tiles per parallel transform task inside a [`Mode::Wide`] chunk of `nt` tiles.
fn group(nt: usize) -> usize {
    nt.div_ceil(16).max(1)
}

/// The convolution `sink ← W ⋆ src` (3x3, padding 1) scheduled by [`plan`].
fn run<L: PixelLoad, S: TileSink>(src: L, u: &WinogradWeights, sink: &S) {
    let [b, h, w, cin] = src.dims();
    assert_eq!(cin, u.cin, "winograd: input channels");
    let cout = u.cout;
    let grid = TileGrid::new(b, h, w);
    let total = grid.tiles();
    let p = plan(total, cin, cout);
    let range = |ci: usize| (ci * p.chunk, ((ci + 1) * p.chunk).min(total));
    match p.mode {
        Mode::Chunked => (0..p.nchunks).into_par_iter().for_each(|ci| {
            let (t0, t1) = range(ci);
            let nt = t1 - t0;
            with_scratch(XI * nt * (cin + cout), |buf| {
                let (v, m) = buf.split_at_mut(XI * nt * cin);
                let vp = SendPtr(v.as_mut_ptr());
                // SAFETY: `v` belongs to this task; the chunk's tiles cover disjoint pixels
                // of the sink.
                unsafe { transform::input_tiles(&src, &grid, t0, nt, t0, t1, vp) };
                products(v, u, nt, m, false);
                unsafe { transform::output_tiles(m, cout, &grid, t0, nt, t0, t1, sink) };
            })
        }),
        Mode::Wide => {
            for ci in 0..p.nchunks {
                let (t0, t1) = range(ci);
                let nt = t1 - t0;
                let g = group(nt);
                with_scratch(XI * nt * (cin + cout), |buf| {
                    let (v, m) = buf.split_at_mut(XI * nt * cin);
                    let vp = SendPtr(v.as_mut_ptr());
                    (0..nt.div_ceil(g)).into_par_iter().for_each(|gi| {
                        let (a, z) = (t0 + gi * g, (t0 + (gi + 1) * g).min(t1));
                        // SAFETY: groups write disjoint tile rows of `v`.
                        unsafe { transform::input_tiles(&src, &grid, t0, nt, a, z, vp) };
                    });
                    products(v, u, nt, m, true);
                    let m = &*m;
                    (0..nt.div_ceil(g)).into_par_iter().for_each(|gi| {
                        let (a, z) = (t0 + gi * g, (t0 + (gi + 1) * g).min(t1));
                        // SAFETY: groups cover disjoint tiles, hence disjoint sink pixels.
                        unsafe { transform::output_tiles(m, cout, &grid, t0, nt, a, z, sink) };
                    });
                });
            }
        }
    }
}

/// `y = bias + W ⋆ x` for 3x3/pad-1 weights `u`; `y` must already have its shape
/// `[B, H, W, C_out]`.
pub fn conv3x3(x: &Tensor, u: &WinogradWeights, bias: Option<&[f32]>, y: &mut Tensor) {
    let s = x.shape();
    assert_eq!(
        y.shape(),
        [s[0], s[1], s[2], u.cout],
        "winograd: output shape"
    );
    conv_map(
        DenseMap {
            x: x.data(),
            dims: [s[0], s[1], s[2], s[3]],
        },
        u,
        bias,
        y.data_mut(),
    );
}

/// `y = bias + W ⋆ src` into the `[B, H, W, C_out]` map `y`.
pub(crate) fn conv_map<L: PixelLoad>(
    src: L,
    u: &WinogradWeights,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let [b, h, w, _] = src.dims();
    let dims = [b, h, w, u.cout];
    assert_eq!(
        y.len(),
        dims.iter().product::<usize>(),
        "winograd: output size"
    );
    let sink = MapSink {
        y: SendPtr(y.as_mut_ptr()),
        dims,
        bias,
    };
    run(src, u, &sink);
}

/// `(y, codes) = maxpool2x2(bias + W ⋆ src)` with the pooling done in the output
/// transform (every 2x2 window lies in one 4x4 tile): `y` is `[B, H/2, W/2, C_out]`.
/// Same values and codes as [`conv_map`] followed by [`crate::core::pool::maxpool2x2`].
pub(crate) fn conv_pool<L: PixelLoad>(
    src: L,
    u: &WinogradWeights,
    bias: Option<&[f32]>,
    y: &mut [f32],
    codes: &mut [u8],
) {
    let [b, h, w, _] = src.dims();
    assert_eq!(
        y.len(),
        b * (h / 2) * (w / 2) * u.cout,
        "winograd: pooled output size"
    );
    assert_eq!(codes.len(), y.len(), "winograd: codes");
    let sink = PoolSink {
        y: SendPtr(y.as_mut_ptr()),
        codes: SendPtr(codes.as_mut_ptr()),
        dims: [b, h, w, u.cout],
        bias,
    };
    run(src, u, &sink);
}

/// `y = gather2x2(W ⋆ src, codes)` (no bias) with the gather done in the output
/// transform: `y` is `[B, H/2, W/2, C_out]`, `codes` its argmax codes.
pub(crate) fn conv_gather<L: PixelLoad>(src: L, u: &WinogradWeights, y: &mut [f32], codes: &[u8]) {
    let [b, h, w, _] = src.dims();
    assert_eq!(
        y.len(),
        b * (h / 2) * (w / 2) * u.cout,
        "winograd: gathered output size"
    );
    assert_eq!(codes.len(), y.len(), "winograd: codes");
    let sink = GatherSink {
        y: SendPtr(y.as_mut_ptr()),
        codes,
        dims: [b, h, w, u.cout],
    };
    run(src, u, &sink);
}

/// `(Δ, codes) = pool_offset(W ⋆ src, y_star, old)` (no bias) with the offset-form pooling
/// done in the output transform: `y_star` is the `[B, H, W, C_out]` base map `Y*`, `old`
/// its argmax codes, `delta` and `codes` are `[B, H/2, W/2, C_out]`. Same values and codes
/// as [`conv_map`] followed by [`crate::core::offset::pool_offset`].
pub(crate) fn conv_pool_offset<L: PixelLoad>(
    src: L,
    u: &WinogradWeights,
    y_star: &[f32],
    old: &[u8],
    delta: &mut [f32],
    codes: &mut [u8],
) {
    let [b, h, w, _] = src.dims();
    let dims = [b, h, w, u.cout];
    assert_eq!(
        y_star.len(),
        dims.iter().product::<usize>(),
        "winograd: base map size"
    );
    assert_eq!(
        delta.len(),
        b * (h / 2) * (w / 2) * u.cout,
        "winograd: pooled output size"
    );
    assert_eq!(codes.len(), delta.len(), "winograd: codes");
    assert_eq!(old.len(), delta.len(), "winograd: base codes");
    let sink = OffsetPoolSink {
        delta: SendPtr(delta.as_mut_ptr()),
        codes: SendPtr(codes.as_mut_ptr()),
        y_star,
        old,
        dims,
    };
    run(src, u, &sink);
}
