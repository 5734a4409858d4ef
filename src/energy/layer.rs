//! Layers: the states of an energy-based block and the nonlinearity (projection) of their
//! update.
//!
//! Along layer `l` the block energy is `G_l(s) + ½ Σ q ⊙ s² − ⟨b, s⟩ + const` (see
//! [`super::interaction`]), `b = Σ_t b_{t,l}` and `q = Σ_t q_{t,l}` summed over the
//! interactions. A layer's kind fixes its self-energy `G_l` and so the exact minimiser:
//!
//! | kind | `G_l(s)` | update |
//! |---|---|---|
//! | `HardSigmoid { α }` (DHN) | `‖s‖²/(2α)` on the box `[0,1]` | `s = clamp(α·b, 0, 1)` (no `q`) |
//! | `Identity` (DHN unclamped last layer) | `½‖s‖²` | `s = b` |
//! | `Diode` (DRN hidden layer) | `0` on the diode cone | `v = proj(b / q)`: first half of the units clipped to `[0, ∞)`, second half to `(−∞, 0]` |
//! | `Linear` (DRN output layer) | `0` | `v = b / q` |
//! | `VariedSigmoid { α_i }` (DHN, per-unit slopes) | `Σ_i s_i²/(2α_i)` on the box `[0,1]` | `s_i = clamp(α_i·b_i, 0, 1)` |
//! | `VariedDiode { t_i }` (DRN, per-unit diode bounds) | `0` on `v_i ≥ t_i` (first half), `v_i ≤ t_i` (second half) | `v = proj_t(b / q)` |
//!
//! The varied kinds are the layers of a physical circuit ([`crate::analog`]); a unit's offset
//! is not a layer property but a fixed bias interaction ([`super::terms::LayerBias`] without a parameter).

use crate::core::anderson::StateBox;
use crate::core::ops::{activate, activate_backward, UpdateStats};
use crate::core::quadratic::{
    quadratic_update, quadratic_update_backward, Projection, QuadraticError,
};
use crate::core::units::{unit_sigmoid, unit_sigmoid_backward};
use crate::core::Tensor;
use anyhow::{bail, Result};

/// The nonlinearity of a layer (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LayerKind<'a> {
    HardSigmoid {
        alpha: f32,
    },
    Identity,
    Diode,
    Linear,
    /// A hard sigmoid with one slope `α_i` per unit (`[F]`).
    VariedSigmoid {
        alpha: &'a Tensor,
    },
    /// Diodes with one bound `t_i` per unit (`[F]`, volts).
    VariedDiode {
        bounds: &'a Tensor,
    },
}

/// Why an update could not be computed: the quadratic coefficient of a unit is not
/// positive (e.g. a resistive output nudged with `−β` larger than its conductances).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unit {unit} of layer {layer}: its quadratic coefficient (the conductances Σg at the unit, plus the nudge β) is {value}, not positive, so the layer has no minimum; use a smaller β (algorithm.beta)")]
pub struct NoMinimumError {
    pub layer: usize,
    pub unit: usize,
    pub value: f32,
}

impl<'a> LayerKind<'a> {
    /// Whether the layer's coefficient comes from its interactions (resistive layers) rather
    /// than from its self-energy.
    pub fn is_resistive(&self) -> bool {
        matches!(
            self,
            LayerKind::Diode | LayerKind::Linear | LayerKind::VariedDiode { .. }
        )
    }

    /// The projection of a resistive layer's update.
    fn projection(&self) -> Projection<'a> {
        match *self {
            LayerKind::Diode => Projection::Diode,
            LayerKind::VariedDiode { bounds } => Projection::DiodeBounds(bounds.data()),
            _ => Projection::None,
        }
    }

    /// The domain of the layer's states.
    pub fn state_box(&self) -> StateBox<'a> {
        match *self {
            LayerKind::HardSigmoid { .. } | LayerKind::VariedSigmoid { .. } => StateBox::Unit,
            LayerKind::Identity | LayerKind::Linear => StateBox::Free,
            LayerKind::Diode => StateBox::Diode,
            LayerKind::VariedDiode { bounds } => StateBox::DiodeBounds(bounds.data()),
        }
    }

    /// Sets `s` to the exact minimiser along the layer: `lin` are the interactions' linear
    /// coefficients (summed in order), `quad` their quadratic ones (`[F]` each). Stores the
    /// pre-projection value in `record` when given (for backpropagation).
    pub fn update(
        &self,
        layer: usize,
        lin: &[&Tensor],
        quad: &[&Tensor],
        s: &mut Tensor,
        record: Option<&mut Tensor>,
        frozen: Option<&[bool]>,
    ) -> Result<UpdateStats> {
        match *self {
            LayerKind::HardSigmoid { alpha } if quad.is_empty() => {
                Ok(activate(lin, alpha, true, s, record, frozen)?)
            }
            LayerKind::Identity if quad.is_empty() => {
                Ok(activate(lin, 1.0, false, s, record, frozen)?)
            }
            LayerKind::VariedSigmoid { alpha } if quad.is_empty() => {
                Ok(unit_sigmoid(lin, alpha, s, record, frozen)?)
            }
            LayerKind::HardSigmoid { .. }
            | LayerKind::Identity
            | LayerKind::VariedSigmoid { .. } => bail!(
                "layer {layer}: a Hopfield layer has no quadratic interaction terms (resistive couplings or a squared-error nudge cannot act on it)"
            ),
            LayerKind::Diode | LayerKind::Linear | LayerKind::VariedDiode { .. } => {
                quadratic_update(lin, quad, 0.0, self.projection(), s, record, frozen)
                    .map_err(|e| match e {
                        QuadraticError::NotPositive { unit, value } => {
                            NoMinimumError { layer, unit, value }
                            .into()
                        }
                        QuadraticError::Shape(e) => e.into(),
                    })
            }
        }
    }

    /// Reverse of [`LayerKind::update`]: from `g_s = ∂L/∂s` and the stored pre-projection
    /// value, the adjoint of the linear coefficient (`g_lin`) and, for resistive layers, of
    /// the quadratic coefficient (`g_quad`, per sample and unit: `−g_lin ⊙ z`).
    pub fn backward(
        &self,
        record: &Tensor,
        g_s: &Tensor,
        quad_total: Option<&Tensor>,
        g_lin: &mut Tensor,
        g_quad: Option<&mut Tensor>,
    ) -> Result<()> {
        match *self {
            LayerKind::HardSigmoid { alpha } => {
                Ok(activate_backward(record, alpha, true, g_s, g_lin)?)
            }
            LayerKind::Identity => Ok(activate_backward(record, 1.0, false, g_s, g_lin)?),
            LayerKind::VariedSigmoid { alpha } => {
                Ok(unit_sigmoid_backward(record, alpha, g_s, g_lin)?)
            }
            LayerKind::Diode | LayerKind::Linear | LayerKind::VariedDiode { .. } => {
                let q = quad_total
                    .ok_or_else(|| anyhow::anyhow!("resistive layer without conductances"))?;
                quadratic_update_backward(record, q, self.projection(), g_s, g_lin, g_quad)?;
                Ok(())
            }
        }
    }

    /// `G_l(s)` per sample, added to `out` (`+∞` when `s` is outside the layer's domain).
    pub fn self_energy(&self, s: &Tensor, out: &mut [f64]) {
        let per = s.row_len().max(1);
        for (o, row) in out.iter_mut().zip(s.data().chunks(per)) {
            let (mut e, half) = (0.0f64, per / 2);
            for (i, &v) in row.iter().enumerate() {
                let v = v as f64;
                match *self {
                    LayerKind::HardSigmoid { alpha } => {
                        if !(0.0..=1.0).contains(&v) {
                            e = f64::INFINITY;
                        }
                        e += v * v / (2.0 * alpha as f64);
                    }
                    LayerKind::Identity => e += 0.5 * v * v,
                    LayerKind::Diode => {
                        if (i < half && v < 0.0) || (i >= half && v > 0.0) {
                            e = f64::INFINITY;
                        }
                    }
                    LayerKind::Linear => {}
                    LayerKind::VariedSigmoid { alpha } => {
                        if !(0.0..=1.0).contains(&v) {
                            e = f64::INFINITY;
                        }
                        e += v * v / (2.0 * alpha.data()[i] as f64);
                    }
                    LayerKind::VariedDiode { bounds } => {
                        let t = bounds.data()[i] as f64;
                        if (i < half && v < t) || (i >= half && v > t) {
                            e = f64::INFINITY;
                        }
                    }
                }
            }
            *o += e;
        }
    }
}
