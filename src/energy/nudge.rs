//! The cost term `β·C(s_n)` that EP's nudged phases add to a block's energy, acting on the
//! block's last layer `s_n`. Relaxation treats it as one more interaction: it knows nothing
//! of losses or labels.
//!
//! * `CrossEntropy` (last block, linear readout): `C = ℓ(W_ro flat(s_n) + b_ro, y)`. Its
//!   linear coefficient is taken as `−β ∂C/∂s_n` at the current `s_n` (SPEC §2.2, as the
//!   reference does: a fixed-point step, not an exact minimiser).
//! * `SquaredError` (last block without readout): `C = ½‖s_n − onehot(y)‖²`; linear
//!   coefficient `β·onehot(y)`, quadratic coefficient `β` (exact for resistive layers).
//! * `Current` (other blocks): `C = −⟨δ, s_n⟩`, the error current `δ` from the block above;
//!   linear coefficient `β·δ`.

use crate::core::ops::{sample_dots, scale};
use crate::core::Tensor;
use crate::energy::interaction::{
    Adjoints, Interaction, Probe, Recorded, Span, StateView, TermCache,
};
use crate::model::readout::loss_and_state_grad;
use crate::model::{Grads, Synapse};
use anyhow::{bail, Result};

/// `β·C` on layer `layer` (see the module documentation).
pub enum Nudge<'a> {
    CrossEntropy {
        beta: f32,
        layer: usize,
        readout: &'a Synapse,
        labels: &'a [u32],
    },
    SquaredError {
        beta: f32,
        layer: usize,
        /// One-hot targets `[B, F]`.
        targets: Tensor,
        /// `β` for every unit (`[F]`).
        quad: Tensor,
    },
    Current {
        beta: f32,
        layer: usize,
        delta: &'a Tensor,
    },
}

impl<'a> Nudge<'a> {
    /// A squared-error nudge towards one-hot `labels` on a layer of `f` units.
    pub fn squared_error(beta: f32, layer: usize, labels: &[u32], f: usize) -> Result<Self> {
        let mut targets = Tensor::zeros(&[labels.len(), f]);
        for (b, &y) in labels.iter().enumerate() {
            anyhow::ensure!(
                (y as usize) < f,
                "label {y} of sample {b} is out of range for an output layer of {f} units"
            );
            targets.data_mut()[b * f + y as usize] = 1.0;
        }
        Ok(Nudge::SquaredError {
            beta,
            layer,
            targets,
            quad: Tensor::full(&[f], beta),
        })
    }

    /// The nudging strength β (signed).
    pub fn beta(&self) -> f32 {
        match *self {
            Nudge::CrossEntropy { beta, .. }
            | Nudge::SquaredError { beta, .. }
            | Nudge::Current { beta, .. } => beta,
        }
    }

    fn layer(&self) -> usize {
        match *self {
            Nudge::CrossEntropy { layer, .. }
            | Nudge::SquaredError { layer, .. }
            | Nudge::Current { layer, .. } => layer,
        }
    }
}

impl Interaction for Nudge<'_> {
    fn name(&self) -> String {
        match self {
            Nudge::CrossEntropy { .. } => "cross-entropy nudge".into(),
            Nudge::SquaredError { .. } => "squared-error nudge".into(),
            Nudge::Current { .. } => "error-current nudge".into(),
        }
    }

    fn span(&self) -> Span {
        Span::Layer(self.layer())
    }

    fn linear<'c>(
        &'c self,
        _l: usize,
        view: &StateView<'c, '_>,
        cache: &'c mut TermCache,
    ) -> Result<&'c Tensor> {
        match self {
            Nudge::CrossEntropy {
                beta,
                layer,
                readout,
                labels,
            } => {
                let (_, g) = loss_and_state_grad(readout, &view.layers[*layer], labels, -beta)?;
                cache.backward = g;
                Ok(&cache.backward)
            }
            Nudge::SquaredError { beta, targets, .. } => {
                if cache.forward_of.is_none() {
                    cache.backward.assign(targets);
                    scale(&mut cache.backward, *beta);
                    cache.forward_of = Some(0);
                }
                Ok(&cache.backward)
            }
            Nudge::Current { beta, delta, .. } => {
                if cache.forward_of.is_none() {
                    cache.backward.assign(delta);
                    scale(&mut cache.backward, *beta);
                    cache.forward_of = Some(0);
                }
                Ok(&cache.backward)
            }
        }
    }

    fn quadratic(&self, _l: usize) -> Option<&Tensor> {
        match self {
            Nudge::SquaredError { quad, .. } => Some(quad),
            _ => None,
        }
    }

    fn energy(&self, view: &StateView<'_, '_>, _c: &mut TermCache, out: &mut [f64]) -> Result<()> {
        match self {
            Nudge::CrossEntropy {
                beta,
                layer,
                readout,
                labels,
            } => {
                let (ce, _) = loss_and_state_grad(readout, &view.layers[*layer], labels, 1.0)?;
                for (o, l) in out.iter_mut().zip(&ce.losses) {
                    *o += *beta as f64 * *l as f64;
                }
            }
            Nudge::SquaredError {
                beta,
                layer,
                targets,
                ..
            } => {
                let s = &view.layers[*layer];
                let per = s.row_len().max(1);
                for (o, (r, t)) in out
                    .iter_mut()
                    .zip(s.data().chunks(per).zip(targets.data().chunks(per)))
                {
                    let c: f64 = r
                        .iter()
                        .zip(t)
                        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                        .sum();
                    *o += *beta as f64 * 0.5 * c;
                }
            }
            Nudge::Current { beta, layer, delta } => {
                sample_dots(delta, &view.layers[*layer], -(*beta as f64), out)?;
            }
        }
        Ok(())
    }

    fn param_contrast(
        &self,
        _a: Probe<'_, '_, '_>,
        _b: Probe<'_, '_, '_>,
        _scale: f32,
        _grads: &mut Grads,
    ) -> Result<()> {
        Ok(())
    }

    fn vjp(
        &self,
        _l: usize,
        _rec: &Recorded<'_>,
        _g: &Tensor,
        _q: Option<&Tensor>,
        _adj: &mut Adjoints<'_>,
    ) -> Result<()> {
        bail!("backpropagation through a nudged phase is not supported")
    }

    fn macs(&self) -> u64 {
        0
    }
}
