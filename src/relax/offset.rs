//! Relaxation in offset form (EP's nudged phases): with the free equilibrium `s*` as base,
//! the relaxation carries the offsets `d_l = s_l − s*_l` and updates them directly,
//!
//! ```text
//! g_l = F_l + Σ_t Δb_{t,l}(d) + b_c(s),     F_l = Σ_t b_{t,l}(s*) − Q_l ⊙ s*_l,
//! d_l ← proj_l(s*_l + g_l / (Q_l + q_c)) − s*_l        (exactly, see core::offset)
//! ```
//!
//! where `Δb_{t,l} = b_{t,l}(s* + d) − b_{t,l}(s*)` is computed by each interaction from `d`
//! alone (`W·d` for a coupling; see [`crate::energy::Interaction::linear_offset`]), `Q_l` is
//! the layer's quadratic coefficient and `b_c`, `q_c` are the cost term's coefficients at the
//! full state. In exact arithmetic this is the plain update; in float32 the round-off of
//! the coupling products scales with `|d|` (∝ β) instead of `|s|`, and the force `F` (with
//! its round-off) is shared by every phase relaxed from the same base, so it cancels in
//! EP's contrast. The contrast itself reads `d^a − d^b` ([`crate::energy::StateView::diff`]).

use crate::core::offset::{force, OffsetLayer};
use crate::core::Tensor;
use crate::energy::{BlockState, EnergyBlock, LayerKind, StateView, TermCache};
use anyhow::{bail, Result};

/// What every relaxation from a base state shares: the base `s*`, each interaction's cache
/// at it (forward values, pool argmax, pre-pool map), and per layer the force `F_l` and
/// its projection and quadratic coefficient in offset form.
pub struct OffsetBase {
    pub state: BlockState,
    pub(super) caches: Vec<TermCache>,
    pub(super) force: Vec<Tensor>,
    pub(super) layers: Vec<OffsetLayer>,
}

impl OffsetBase {
    /// Evaluates every interaction of `block` at `state` (one sweep's worth of work).
    pub fn new(block: &EnergyBlock<'_>, input: &Tensor, state: BlockState) -> Result<Self> {
        let n = state.layers.len();
        let versions = vec![0u64; n];
        let mut caches = vec![TermCache::default(); block.terms.len()];
        let mut forces = Vec::with_capacity(n);
        let mut layers = Vec::with_capacity(n);
        for l in 0..n {
            let view = StateView {
                input,
                layers: &state.layers,
                versions: &versions,
                offsets: None,
            };
            let mut slots: Vec<Option<&mut TermCache>> = caches.iter_mut().map(Some).collect();
            let mut lin = Vec::with_capacity(4);
            let mut quad: Option<Vec<f32>> = None;
            for &t in block.touching(l) {
                let term = block.terms[t].as_ref();
                let cache = slots[t].take().expect("each term once");
                lin.push(term.linear_base(l, &view, cache)?);
                if let Some(q) = term.quadratic(l) {
                    let acc = quad.get_or_insert_with(|| vec![0.0; q.len()]);
                    acc.iter_mut().zip(q.data()).for_each(|(a, b)| *a += b);
                }
            }
            let layer = match (block.kinds[l], quad) {
                (LayerKind::HardSigmoid { alpha }, None) => OffsetLayer::HardSigmoid { alpha },
                (LayerKind::Identity, None) => OffsetLayer::Identity,
                (LayerKind::Diode, Some(q)) => OffsetLayer::Quadratic { q, diode: true },
                (LayerKind::Linear, Some(q)) => OffsetLayer::Quadratic { q, diode: false },
                (LayerKind::VariedSigmoid { alpha }, None) => OffsetLayer::UnitSigmoid {
                    alpha: alpha.data().to_vec(),
                },
                (LayerKind::VariedDiode { bounds }, Some(q)) => OffsetLayer::DiodeBounds {
                    q,
                    bounds: bounds.data().to_vec(),
                },
                (kind, _) => bail!(
                    "layer {l} ({kind:?}) of block {}: its interactions do not fit its kind",
                    block.index
                ),
            };
            forces.push(force(&lin, &layer, &state.layers[l])?);
            layers.push(layer);
        }
        Ok(OffsetBase {
            state,
            caches,
            force: forces,
            layers,
        })
    }
}
