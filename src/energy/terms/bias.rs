//! A bias (current source) on a layer: `E = −Σ_j b_j v_j`. Linear coefficient `b`;
//! `∂E/∂b = −Σ_batch v`.
//!
//! A *fixed* bias (no parameter) is a device property of a physical circuit: the per-unit
//! input offsets `θ` of an analog layer (see [`crate::analog`]). With a hard sigmoid of slope
//! `α_i` the update becomes `s_i = clamp(α_i·(b_i + θ_i), 0, 1)`: each unit's transfer curve
//! shifted by `−θ_i` along its input. It has no gradient and reads no state.

use crate::core::conv::channel_sum;
use crate::core::ops::sample_dots;
use crate::core::units::tile_rows;
use crate::core::Tensor;
use crate::energy::interaction::{
    Adjoints, Interaction, Probe, Recorded, Span, StateView, TermCache,
};
use crate::model::{Grads, ParamId};
use anyhow::Result;

/// The bias `b` (one value per unit) of layer `layer`: a trainable parameter (`param`, e.g.
/// the bias of a resistive block's synapse) or fixed (`None`: a unit offset).
pub struct LayerBias<'a> {
    pub layer: usize,
    pub bias: &'a Tensor,
    pub param: Option<ParamId>,
}

impl Interaction for LayerBias<'_> {
    fn name(&self) -> String {
        match self.param {
            Some(_) => format!("bias of layer {}", self.layer),
            None => format!("unit offsets of layer {}", self.layer),
        }
    }

    fn span(&self) -> Span {
        Span::Layer(self.layer)
    }

    fn linear<'c>(
        &'c self,
        l: usize,
        view: &StateView<'c, '_>,
        cache: &'c mut TermCache,
    ) -> Result<&'c Tensor> {
        if cache.forward_of.is_none() {
            tile_rows(self.bias, &view.layers[l], &mut cache.forward)?;
            cache.forward_of = Some(0);
        }
        Ok(&cache.forward)
    }

    fn linear_offset<'c>(
        &'c self,
        _l: usize,
        _view: &StateView<'c, '_>,
        _base: &'c TermCache,
        _cache: &'c mut TermCache,
    ) -> Result<Option<&'c Tensor>> {
        Ok(None)
    }

    fn energy(
        &self,
        view: &StateView<'_, '_>,
        cache: &mut TermCache,
        out: &mut [f64],
    ) -> Result<()> {
        let s = &view.layers[self.layer];
        tile_rows(self.bias, s, &mut cache.backward)?;
        sample_dots(&cache.backward, s, -1.0, out)?;
        Ok(())
    }

    fn param_contrast(
        &self,
        a: Probe<'_, '_, '_>,
        b: Probe<'_, '_, '_>,
        scale: f32,
        grads: &mut Grads,
    ) -> Result<()> {
        if let Some(id) = self.param {
            let d = b.view.diff(&a.view, self.layer)?;
            channel_sum(&d, scale, true, grads.get_mut(id));
        }
        Ok(())
    }

    fn vjp(
        &self,
        _l: usize,
        _rec: &Recorded<'_>,
        g: &Tensor,
        _g_quad: Option<&Tensor>,
        adj: &mut Adjoints<'_>,
    ) -> Result<()> {
        if let Some(id) = self.param {
            channel_sum(g, 1.0, true, adj.grads.get_mut(id));
        }
        Ok(())
    }

    fn macs(&self) -> u64 {
        0
    }
}
