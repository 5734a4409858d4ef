//! Parameter derivatives of a block's primitive function Φ at a state (SPEC §2.2):
//!
//! * conv coupling `i`: `∂Φ/∂W_i = Σ_b unpool(s_i, idx) ⋆ s_{i−1}` (correlation; `idx` the
//!   argmax of `P(W_i ⋆ s_{i−1} + b_i)` at the same state), `∂Φ/∂b_i = Σ_{b,pixels} s_i`;
//! * dense coupling `j`: `∂Φ/∂W_j = Σ_b s_j flat(s_{j−1})ᵀ`, `∂Φ/∂b_j = Σ_b s_j`.

use crate::core::conv::{channel_sum, conv2d_weight_grad};
use crate::core::dense::linear_weight_grad;
use crate::core::pool::unpool2x2;
use crate::core::Tensor;
use crate::model::readout::flatten_state;
use crate::model::{CouplingKind, Grads, ParamId};
use crate::relax::Relaxation;
use anyhow::Result;

/// `grads += c · ∂Φ/∂θ` for every coupling of block `k` at the relaxation's current state.
pub fn accumulate_coupling_grads(
    k: usize,
    couplings: &[CouplingKind],
    r: &mut Relaxation<'_>,
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
        match *kind {
            CouplingKind::Conv { cin, cout, .. } => {
                let dy = match r.pool_indices(i)? {
                    Some(idx) => {
                        let idx = idx.clone();
                        let mut full = Tensor::default();
                        unpool2x2(&r.state.layers[i], &idx, &mut full)?;
                        full
                    }
                    None => r.state.layers[i].clone(),
                };
                let geom = crate::core::ConvGeom {
                    cin,
                    cout,
                    k: grads.get(wid).shape()[2],
                    pad: r.padding(),
                };
                conv2d_weight_grad(
                    &r.state.layers[i - 1],
                    &dy,
                    geom,
                    c,
                    true,
                    grads.get_mut(wid),
                )?;
            }
            CouplingKind::Dense { .. } => {
                let x = flatten_state(&r.state.layers[i - 1])?;
                linear_weight_grad(&x, &r.state.layers[i], c, true, grads.get_mut(wid))?;
            }
        }
        channel_sum(&r.state.layers[i], c, true, grads.get_mut(bid));
    }
    Ok(())
}
