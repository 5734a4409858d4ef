//! Direct weight gradient tap by tap, skipping the zero padding:
//!
//! ```text
//! W̄[(u,v,c), o] = Σ_{b, i ∈ I_u, j ∈ J_v} x[b, i+u-p, j+v-p, c] · ȳ[b, i, j, o]
//! ```
//!
//! where `I_u = {i : 0 <= i+u-p < H}` (and `J_v` likewise) are the outputs whose tap
//! `(u,v)` hits the map. Per tap the valid pixels are gathered into `X_s` (rows × C_in)
//! and `Ȳ_s` (rows × C_out) and `W̄_uvᵀ = Ȳ_sᵀ · X_s` (`C_out × C_in`, so that the result
//! `[(u,v)][o][c]` streams into OIHW). On small maps (2x2 with padding 1) this skips the
//! 5/9 of the im2col products that multiply padding zeros.
//!
//! Tasks are (tap, block of output channels), each summing its rows in a fixed order:
//! the result does not depend on the thread count.

use super::conv::ConvGeom;
use super::matmul::{matmul, MatMut, MatRef, Par};
use super::pixels::{PixelLoad, SendPtr};
use super::scratch::with_scratch;
use rayon::prelude::*;

/// Output channels per task.
const OBLOCK: usize = 256;
/// Gathered rows per product (about 2 MiB of `X_s` and `Ȳ_s` for 512 channels).
const ROWS: usize = 1024;

/// Valid output range of tap offset `u` for an input of `n` pixels and `on` outputs.
fn valid(u: usize, p: usize, n: usize, on: usize) -> (usize, usize) {
    let lo = p.saturating_sub(u).min(on);
    let hi = (n + p).saturating_sub(u).clamp(lo, on);
    (lo, hi)
}

/// Fills `sum` (`[(u,v)][o][c]`, `k² × C_out × C_in`) with the weight gradient above.
pub(crate) fn weight_grad_taps<L: PixelLoad, D: PixelLoad>(
    x: L,
    dy: D,
    g: ConvGeom,
    sum: &mut [f32],
) {
    let [b, h, w, cin] = x.dims();
    let (oh, ow) = g.out_hw(h, w).expect("checked by the caller");
    let (k, p, co) = (g.k, g.pad, g.cout);
    assert_eq!(sum.len(), k * k * cin * co);
    #[cfg(test)]
    let rows_target = super::im2col::FORCE_ROWS.get().unwrap_or(ROWS);
    #[cfg(not(test))]
    let rows_target = ROWS;
    let nob = co.div_ceil(OBLOCK);
    let ob = co.div_ceil(nob);
    let sp = SendPtr(sum.as_mut_ptr());
    (0..k * k * nob)
        .into_par_iter()
        .with_max_len(1)
        .for_each(|task| {
            // task (uv, block) owns rows o0..o1 of the C_out × C_in matrix of tap uv
            let (uv, bi) = (task / nob, task % nob);
            let (o0, o1) = (bi * ob, ((bi + 1) * ob).min(co));
            // SAFETY: the tasks' row ranges are disjoint and lie in `sum`.
            let out = unsafe { sp.slice((uv * co + o0) * cin, (o1 - o0) * cin) };
            let no = o1 - o0;
            let (u, v) = (uv / k, uv % k);
            let ((i0, i1), (j0, j1)) = (valid(u, p, h, oh), valid(v, p, w, ow));
            let (ni, nj) = (i1 - i0, j1 - j0);
            if ni * nj == 0 || no == 0 {
                out.fill(0.0);
                return;
            }
            let per_img = ni * nj;
            let ipc = (rows_target / per_img).max(1);
            with_scratch(ipc * per_img * (cin + no) + nj * co, |buf| {
                let (xs, rest) = buf.split_at_mut(ipc * per_img * cin);
                let (ys, row) = rest.split_at_mut(ipc * per_img * no);
                for (ci, b0) in (0..b).step_by(ipc).enumerate() {
                    let nb = ipc.min(b - b0);
                    let rows = nb * per_img;
                    let mut r = 0;
                    for bi in b0..b0 + nb {
                        for i in i0..i1 {
                            x.load_run(bi, i + u - p, j0 + v - p, &mut xs[r * cin..(r + nj) * cin]);
                            if no == co {
                                dy.load_run(bi, i, j0, &mut ys[r * co..(r + nj) * co]);
                            } else {
                                dy.load_run(bi, i, j0, &mut row[..nj * co]);
                                for (jj, src) in row[..nj * co].chunks_exact(co).enumerate() {
                                    ys[(r + jj) * no..(r + jj + 1) * no]
                                        .copy_from_slice(&src[o0..o1]);
                                }
                            }
                            r += nj;
                        }
                    }
                    let c = MatMut::row_major(&mut *out, no, cin);
                    matmul(
                        c,
                        MatRef::row_major(&ys[..rows * no], rows, no).t(),
                        MatRef::row_major(&xs[..rows * cin], rows, cin),
                        ci > 0,
                        1.0,
                        Par::Seq,
                    );
                }
            });
        });
}
