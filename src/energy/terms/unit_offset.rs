//! A fixed per-unit offset of a layer's nonlinearity (an analog unit's input offset, see
//! [`crate::analog`]): `E = −Σ_i θ_i s_i`, linear coefficient `θ` (the same for every sample).
//! With a hard sigmoid of slope `α_i` the layer's update becomes `s_i = clamp(α_i·(b_i + θ_i),
//! 0, 1)`: the unit's transfer curve shifted by `−θ_i` along its input. The offset is a
//! device property, not a parameter: it has no gradient and reads no state.

use crate::core::ops::sample_dots;
use crate::core::units::tile_rows;
use crate::core::Tensor;
use crate::energy::interaction::{
    Adjoints, Interaction, Probe, Recorded, Span, StateView, TermCache,
};
use crate::model::Grads;
use anyhow::Result;

/// The offsets `θ` (one per unit, the layer's unbatched shape) of layer `layer`.
pub struct UnitOffset<'a> {
    pub layer: usize,
    pub theta: &'a Tensor,
}

impl Interaction for UnitOffset<'_> {
    fn name(&self) -> String {
        format!("unit offsets of layer {}", self.layer)
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
        if cache.forward_of.is_none() || cache.forward.shape() != view.layers[l].shape() {
            tile_rows(self.theta, &view.layers[l], &mut cache.forward)?;
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
        tile_rows(self.theta, s, &mut cache.backward)?;
        sample_dots(&cache.backward, s, -1.0, out)?;
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
        _g_quad: Option<&Tensor>,
        _adj: &mut Adjoints<'_>,
    ) -> Result<()> {
        Ok(())
    }

    fn macs(&self) -> u64 {
        0
    }
}
