//! [`PackedConv`]: conv weights in the layouts the kernels need, built lazily and
//! refilled in place after weight updates.

use super::conv::{ConvAlgo, ConvGeom, MIN_WINOGRAD_CHANNELS};
use super::im2col;
use super::pixels::SendPtr;
use super::smallmap;
use super::tensor::{dims4, ShapeError, Tensor};
use super::winograd::WinogradWeights;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Conv weights prepared for the kernels; rebuild whenever the OIHW weights change.
///
/// The layouts each algorithm needs are built on first use (in parallel) and kept, so
/// that a layer only pays for the ones its map sizes use: a 512→512 conv on 2x2 maps
/// never builds its 75 MB of Winograd weights.
#[derive(Clone)]
pub struct PackedConv {
    geom: ConvGeom,
    algo: ConvAlgo,
    /// The OIHW weights.
    w: Vec<f32>,
    /// `[(u,v,c), o]`: the forward weights as a `k²C_in × C_out` matrix.
    fwd: OnceLock<Vec<f32>>,
    /// `[(u,v,o), c]`: flipped weights for the transposed conv, `k²C_out × C_in`.
    tr: OnceLock<Vec<f32>>,
    /// `[c, (u,v,o)]` of the transposed conv (gemm + col2im, few output channels).
    col2im: OnceLock<Vec<f32>>,
    /// Winograd `U` of the forward and of the transposed conv.
    wino_fwd: OnceLock<WinogradWeights>,
    wino_tr: OnceLock<WinogradWeights>,
}

impl std::fmt::Debug for PackedConv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedConv")
            .field("geom", &self.geom)
            .field("algo", &self.algo)
            .finish()
    }
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
        Ok(PackedConv {
            geom: ConvGeom { cin, cout, k, pad },
            algo,
            w: w.data().to_vec(),
            fwd: OnceLock::new(),
            tr: OnceLock::new(),
            col2im: OnceLock::new(),
            wino_fwd: OnceLock::new(),
            wino_tr: OnceLock::new(),
        })
    }

    /// `fwd[(u,v,c), o] = W[o,c,u,v]`.
    pub(crate) fn fwd(&self) -> &[f32] {
        self.fwd.get_or_init(|| {
            let mut out = vec![0.0f32; self.w.len()];
            pack_fwd(&self.w, self.geom, &mut out);
            out
        })
    }

    /// `tr[(u',v',o), c] = W[o,c,k-1-u',k-1-v']`.
    pub(crate) fn tr(&self) -> &[f32] {
        self.tr.get_or_init(|| {
            let mut out = vec![0.0f32; self.w.len()];
            pack_tr(&self.w, self.geom, &mut out);
            out
        })
    }

    pub(crate) fn col2im(&self) -> &[f32] {
        self.col2im
            .get_or_init(|| im2col::col2im_weights(self.tr(), self.geom.transposed()))
    }

    pub(crate) fn wino_fwd(&self) -> &WinogradWeights {
        self.wino_fwd.get_or_init(|| {
            WinogradWeights::from_oihw(&self.w, self.geom.cout, self.geom.cin, false)
        })
    }

    pub(crate) fn wino_tr(&self) -> &WinogradWeights {
        self.wino_tr.get_or_init(|| {
            WinogradWeights::from_oihw(&self.w, self.geom.cout, self.geom.cin, true)
        })
    }

    /// Whether 3x3/pad-1 convs of maps of at least 4x4 take the Winograd path.
    pub(crate) fn winograd(&self) -> bool {
        let g = self.geom;
        self.algo == ConvAlgo::Auto
            && g.k == 3
            && g.pad == 1
            && g.cin.min(g.cout) >= MIN_WINOGRAD_CHANNELS
    }

    pub fn geom(&self) -> ConvGeom {
        self.geom
    }

    pub fn algo(&self) -> ConvAlgo {
        self.algo
    }

    /// Replaces the weights by new OIHW weights of the same shape, rebuilding in place the
    /// layouts built so far. Same result as [`PackedConv::new`], but reuses the buffers:
    /// prefer it after every optimizer step (a fresh 512→512 layer maps and zeroes 75 MB
    /// of Winograd weights, which costs more than filling them).
    pub fn repack(&mut self, w: &Tensor) -> Result<(), ShapeError> {
        let g = self.geom;
        w.expect_shape("PackedConv::repack", "weight", &[g.cout, g.cin, g.k, g.k])?;
        self.w.copy_from_slice(w.data());
        if let Some(out) = self.fwd.get_mut() {
            pack_fwd(&self.w, g, out);
        }
        if let Some(out) = self.tr.get_mut() {
            pack_tr(&self.w, g, out);
        }
        if let Some(out) = self.col2im.get_mut() {
            // from the freshly packed `tr` (col2im is only built after it)
            let tr = self.tr.get().expect("col2im is built from tr");
            im2col::col2im_weights_into(tr, g.transposed(), out);
        }
        if let Some(u) = self.wino_fwd.get_mut() {
            u.refill(&self.w, false);
        }
        if let Some(u) = self.wino_tr.get_mut() {
            u.refill(&self.w, true);
        }
        Ok(())
    }

    /// Whether convs of an `h × w` input map take the tiny-map path.
    pub(crate) fn tiny(&self, h: usize, w: usize) -> bool {
        self.algo == ConvAlgo::Auto && smallmap::eligible(self.geom, h, w)
    }
}

/// `fwd[(u,v,c), o] = W[o,c,u,v]` for OIHW `w`: per tap a transpose, done in 16x16
/// blocks (parallel over blocks of input channels, each writing its own rows).
fn pack_fwd(w: &[f32], g: ConvGeom, out: &mut [f32]) {
    const T: usize = 16;
    let ConvGeom { cin, cout, k, .. } = g;
    let kk = k * k;
    assert_eq!(out.len(), w.len());
    let op = SendPtr(out.as_mut_ptr());
    (0..cin.div_ceil(T)).into_par_iter().for_each(|blk| {
        let (c0, c1) = (blk * T, ((blk + 1) * T).min(cin));
        for o0 in (0..cout).step_by(T) {
            let o1 = (o0 + T).min(cout);
            for uv in 0..kk {
                for c in c0..c1 {
                    // SAFETY: rows (uv, c) with c in c0..c1 belong to this task.
                    let dst = unsafe { op.slice((uv * cin + c) * cout + o0, o1 - o0) };
                    for (d, o) in dst.iter_mut().zip(o0..o1) {
                        *d = w[(o * cin + c) * kk + uv];
                    }
                }
            }
        }
    });
}

/// `tr[(u',v',o), c] = W[o,c,k-1-u',k-1-v']` (parallel over output channels, each
/// writing its own rows).
fn pack_tr(w: &[f32], g: ConvGeom, out: &mut [f32]) {
    let ConvGeom { cin, cout, k, .. } = g;
    let kk = k * k;
    assert_eq!(out.len(), w.len());
    let op = SendPtr(out.as_mut_ptr());
    (0..cout).into_par_iter().for_each(|o| {
        for c in 0..cin {
            let src = &w[(o * cin + c) * kk..][..kk];
            for (uv, &x) in src.iter().enumerate() {
                // SAFETY: rows (·, o) belong to this task.
                unsafe { *op.ptr().add(((kk - 1 - uv) * cout + o) * cin + c) = x };
            }
        }
    });
}
