//! Parameter derivatives of a block's primitive function Φ (SPEC §2.2):
//!
//! * conv coupling `i`: `∂Φ/∂W_i = Σ_b U_i ⋆ s_{i−1}` with `U_i = unpool(s_i, idx)` (`idx` the
//!   argmax of `P(W_i ⋆ s_{i−1} + b_i)` at the same state), `∂Φ/∂b_i = Σ_{b,pixels} s_i`;
//! * dense coupling `j`: `∂Φ/∂W_j = Σ_b s_j flat(s_{j−1})ᵀ`, `∂Φ/∂b_j = Σ_b s_j`.
//!
//! EP needs the contrast `∂Φ(s^a) − ∂Φ(s^b)` of two nearby states. ffebm evaluates it as
//! `U^a ⋆ (x^a − x^b) + (U^a − U^b) ⋆ x^b` (and `Σ (s^a − s^b)` for biases), whose terms are
//! themselves O(β), instead of subtracting two O(1) gradients. (At small β the f32 noise of
//! the nudged states themselves still dominates the estimate's error.)

use crate::core::conv::{channel_sum, conv2d_weight_grad};
use crate::core::dense::linear_weight_grad;
use crate::core::ops::lin_comb;
use crate::core::pool::unpool2x2;
use crate::core::{ConvGeom, Tensor};
use crate::model::readout::flatten_state;
use crate::model::{CouplingKind, Grads, ParamId};
use crate::relax::Relaxation;
use anyhow::Result;

/// `U_i`: layer `i` unpooled at the argmax of coupling `i` (or as is when not pooled).
fn unpooled(r: &mut Relaxation<'_>, i: usize) -> Result<Tensor> {
    Ok(match r.pool_indices(i)? {
        Some(idx) => {
            let idx = idx.clone();
            let mut full = Tensor::default();
            unpool2x2(&r.state.layers[i], &idx, &mut full)?;
            full
        }
        None => r.state.layers[i].clone(),
    })
}

fn diff(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let mut d = Tensor::default();
    lin_comb(&mut d, 1.0, a, -1.0, b)?;
    Ok(d)
}

/// `grads += c · (∂Φ/∂θ(s^a) − ∂Φ/∂θ(s^b))` for every coupling of block `k`, where `s^a`, `s^b`
/// are the current states of `ra`, `rb` (`rb = None`: `s^b = 0`, i.e. `c · ∂Φ/∂θ(s^a)`).
pub fn accumulate_coupling_contrast(
    k: usize,
    couplings: &[CouplingKind],
    ra: &mut Relaxation<'_>,
    mut rb: Option<&mut Relaxation<'_>>,
    c: f32,
    grads: &mut Grads,
) -> Result<()> {
    for (ci, kind) in couplings.iter().enumerate() {
        let i = ci + 1;
        let wid = ParamId::Synapse {
            block: k,
            index: i,
            bias: false,
        };
        let bid = ParamId::Synapse {
            block: k,
            index: i,
            bias: true,
        };
        let xa = ra.state.layers[i - 1].clone();
        let sa_b = match rb.as_deref_mut() {
            Some(rb) => Some((rb.state.layers[i - 1].clone(), rb.state.layers[i].clone())),
            None => None,
        };
        match *kind {
            CouplingKind::Conv { cin, cout, .. } => {
                let geom = ConvGeom {
                    cin,
                    cout,
                    k: grads.get(wid).shape()[2],
                    pad: ra.padding(),
                };
                let ua = unpooled(ra, i)?;
                match rb.as_deref_mut() {
                    Some(rb) => {
                        let ub = unpooled(rb, i)?;
                        let (xb, _) = sa_b.as_ref().expect("state b");
                        conv2d_weight_grad(
                            &diff(&xa, xb)?,
                            &ua,
                            geom,
                            c,
                            true,
                            grads.get_mut(wid),
                        )?;
                        conv2d_weight_grad(
                            xb,
                            &diff(&ua, &ub)?,
                            geom,
                            c,
                            true,
                            grads.get_mut(wid),
                        )?;
                    }
                    None => conv2d_weight_grad(&xa, &ua, geom, c, true, grads.get_mut(wid))?,
                }
            }
            CouplingKind::Dense { .. } => {
                let (fa, sa) = (flatten_state(&xa)?, &ra.state.layers[i]);
                match &sa_b {
                    Some((xb, sb)) => {
                        let fb = flatten_state(xb)?;
                        linear_weight_grad(&diff(&fa, &fb)?, sa, c, true, grads.get_mut(wid))?;
                        linear_weight_grad(&fb, &diff(sa, sb)?, c, true, grads.get_mut(wid))?;
                    }
                    None => linear_weight_grad(&fa, sa, c, true, grads.get_mut(wid))?,
                }
            }
        }
        match &sa_b {
            Some((_, sb)) => {
                channel_sum(&diff(&ra.state.layers[i], sb)?, c, true, grads.get_mut(bid))
            }
            None => channel_sum(&ra.state.layers[i], c, true, grads.get_mut(bid)),
        }
    }
    Ok(())
}
