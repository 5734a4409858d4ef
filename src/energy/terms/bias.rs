//! A bias (current source) on a layer: `E = −Σ_j b_j v_j`. Linear coefficient `b`;
//! `∂E/∂b = −Σ_batch v`.

use crate::core::conv::channel_sum;
use crate::core::ops::{lin_comb, sample_dots};
use crate::core::Tensor;
use crate::energy::interaction::{
    Adjoints, Interaction, Probe, Recorded, Span, StateView, TermCache,
};
use crate::model::{Grads, ParamId};
use anyhow::Result;

/// The bias of layer `layer`, stored as the bias of synapse `index` of block `block`.
pub struct LayerBias<'a> {
    pub block: usize,
    pub index: usize,
    pub layer: usize,
    pub bias: &'a Tensor,
}

impl LayerBias<'_> {
    fn id(&self) -> ParamId {
        ParamId::Synapse {
            block: self.block,
            index: self.index,
            bias: true,
        }
    }

    fn broadcast(&self, like: &Tensor, out: &mut Tensor) {
        out.ensure_shape(like.shape());
        let f = self.bias.len().max(1);
        for row in out.data_mut().chunks_mut(f) {
            row.copy_from_slice(self.bias.data());
        }
    }
}

impl Interaction for LayerBias<'_> {
    fn name(&self) -> String {
        format!("bias of layer {}", self.layer)
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
            self.broadcast(&view.layers[l], &mut cache.forward);
            cache.forward_of = Some(0);
        }
        Ok(&cache.forward)
    }

    fn energy(
        &self,
        view: &StateView<'_, '_>,
        cache: &mut TermCache,
        out: &mut [f64],
    ) -> Result<()> {
        let s = &view.layers[self.layer];
        self.broadcast(s, &mut cache.backward);
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
        let mut d = Tensor::default();
        lin_comb(
            &mut d,
            1.0,
            &b.view.layers[self.layer],
            -1.0,
            &a.view.layers[self.layer],
        )?;
        channel_sum(&d, scale, true, grads.get_mut(self.id()));
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
        channel_sum(g, 1.0, true, adj.grads.get_mut(self.id()));
        Ok(())
    }

    fn macs(&self) -> u64 {
        0
    }
}
