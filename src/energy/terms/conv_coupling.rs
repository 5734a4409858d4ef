//! A Hopfield conv coupling between layers `i−1` and `i` (SPEC §1.2):
//!
//! ```text
//! E_i = −⟨P(W_i ⋆ s_{i−1} + b_i), s_i⟩
//! ```
//!
//! with `P` the optional 2x2 max-pool (first maximum wins). Linear coefficients:
//! `b_i = P(W_i ⋆ s_{i−1} + b_i)` (bottom-up, on `s_i`) and
//! `b_{i−1} = W_iᵀ ⋆ unpool(s_i, idx)` (top-down, on `s_{i−1}`, with `idx` the argmax at the
//! current `s_{i−1}`). Parameter derivatives: `∂E/∂W_i = −Σ_b U_i ⋆ s_{i−1}` with
//! `U_i = unpool(s_i, idx)`, `∂E/∂b_i = −Σ_{b,pixels} s_i`. (With a pool the energy is not
//! bilinear; its argmax is piecewise constant.)

use crate::core::conv::{
    channel_sum, conv2d, conv2d_gather, conv2d_pool, conv2d_transposed, conv2d_transposed_unpool,
    conv2d_weight_grad, conv2d_weight_grad_unpool,
};
use crate::core::ops::{axpy, lin_comb, sample_dots};
use crate::core::pool::unpool2x2;
use crate::core::{ConvGeom, PackedConv, PoolIndex, Tensor};
use crate::energy::interaction::{
    Adjoints, Interaction, Probe, Recorded, Span, StateView, TermCache,
};
use crate::model::{Grads, ParamId, Synapse};
use anyhow::Result;

/// Conv coupling `index` (synapse index, ≥ 1) of block `block`.
pub struct ConvCoupling<'a> {
    pub block: usize,
    pub index: usize,
    pub synapse: &'a Synapse,
    pub packed: &'a PackedConv,
    pub pool: bool,
    pub geom: ConvGeom,
    /// Input map size `h × w`.
    pub hw: (usize, usize),
}

fn diff(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let mut d = Tensor::default();
    lin_comb(&mut d, 1.0, a, -1.0, b)?;
    Ok(d)
}

impl ConvCoupling<'_> {
    fn ids(&self) -> (ParamId, ParamId) {
        let id = |bias| ParamId::Synapse {
            block: self.block,
            index: self.index,
            bias,
        };
        (id(false), id(true))
    }

    /// Makes `cache.forward` (and its pool indices) current for the present `s_{i−1}`.
    fn ensure_forward(&self, view: &StateView<'_, '_>, cache: &mut TermCache) -> Result<()> {
        let pre = self.index - 1;
        if cache.is_current(view.versions[pre]) {
            return Ok(());
        }
        let x = &view.layers[pre];
        let bias = self.synapse.bias.as_ref().map(|b| b.data());
        if self.pool {
            conv2d_pool(x, self.packed, bias, &mut cache.forward, &mut cache.pool)?;
        } else {
            conv2d(x, self.packed, bias, &mut cache.forward)?;
        }
        cache.forward_of = Some(view.versions[pre]);
        cache.evals += 1;
        Ok(())
    }

    /// `U_i = unpool(s_i, idx)` at the probe's state.
    fn unpooled(&self, p: &mut Probe<'_, '_, '_>) -> Result<Tensor> {
        let s = &p.view.layers[self.index];
        if self.pool {
            self.ensure_forward(&p.view, p.cache)?;
            let mut full = Tensor::default();
            unpool2x2(s, &p.cache.pool, &mut full)?;
            Ok(full)
        } else {
            Ok(s.clone())
        }
    }
}

impl Interaction for ConvCoupling<'_> {
    fn name(&self) -> String {
        format!("conv coupling {}", self.index)
    }

    fn span(&self) -> Span {
        Span::Pair {
            pre: self.index - 1,
            post: self.index,
        }
    }

    fn linear<'c>(
        &'c self,
        l: usize,
        view: &StateView<'c, '_>,
        cache: &'c mut TermCache,
    ) -> Result<&'c Tensor> {
        if l == self.index {
            self.ensure_forward(view, cache)?;
            return Ok(&cache.forward);
        }
        let s_post = &view.layers[self.index];
        if self.pool {
            self.ensure_forward(view, cache)?;
            conv2d_transposed_unpool(s_post, &cache.pool, self.packed, &mut cache.backward)?;
        } else {
            conv2d_transposed(s_post, self.packed, &mut cache.backward)?;
        }
        Ok(&cache.backward)
    }

    fn energy(
        &self,
        view: &StateView<'_, '_>,
        cache: &mut TermCache,
        out: &mut [f64],
    ) -> Result<()> {
        self.ensure_forward(view, cache)?;
        sample_dots(&cache.forward, &view.layers[self.index], -1.0, out)?;
        Ok(())
    }

    /// `scale · (∂E(a) − ∂E(b)) = scale · (∂Φ(b) − ∂Φ(a))`, evaluated as
    /// `U^b ⋆ (x^b − x^a) + (U^b − U^a) ⋆ x^a` (and `Σ (s^b − s^a)` for the bias), whose terms
    /// are themselves small when the states are close.
    fn param_contrast(
        &self,
        mut a: Probe<'_, '_, '_>,
        mut b: Probe<'_, '_, '_>,
        scale: f32,
        grads: &mut Grads,
    ) -> Result<()> {
        let (wid, bid) = self.ids();
        let pre = self.index - 1;
        let xb = b.view.layers[pre].clone();
        let xa = &a.view.layers[pre];
        let ub = self.unpooled(&mut b)?;
        let ua = self.unpooled(&mut a)?;
        conv2d_weight_grad(
            &diff(&xb, xa)?,
            &ub,
            self.geom,
            scale,
            true,
            grads.get_mut(wid),
        )?;
        conv2d_weight_grad(
            xa,
            &diff(&ub, &ua)?,
            self.geom,
            scale,
            true,
            grads.get_mut(wid),
        )?;
        let ds = diff(&b.view.layers[self.index], &a.view.layers[self.index])?;
        channel_sum(&ds, scale, true, grads.get_mut(bid));
        Ok(())
    }

    fn record(&self, _l: usize, cache: &TermCache) -> Option<PoolIndex> {
        self.pool.then(|| cache.pool.clone())
    }

    fn vjp(
        &self,
        l: usize,
        rec: &Recorded<'_>,
        g: &Tensor,
        _g_quad: Option<&Tensor>,
        adj: &mut Adjoints<'_>,
    ) -> Result<()> {
        let (wid, bid) = self.ids();
        let (pre, post) = (self.index - 1, self.index);
        if l == post {
            // bottom-up use: b_i = P(W ⋆ s_{i−1} + b)
            let x = rec.layers[pre];
            let gw = adj.grads.get_mut(wid);
            match rec.aux {
                Some(idx) => {
                    conv2d_transposed_unpool(g, idx, self.packed, adj.tmp)?;
                    conv2d_weight_grad_unpool(x, g, idx, self.geom, 1.0, true, gw)?;
                }
                None => {
                    conv2d_transposed(g, self.packed, adj.tmp)?;
                    conv2d_weight_grad(x, g, self.geom, 1.0, true, gw)?;
                }
            }
            axpy(&mut adj.layers[pre], 1.0, adj.tmp)?;
            channel_sum(g, 1.0, true, adj.grads.get_mut(bid));
        } else {
            // top-down use: b_{i−1} = Wᵀ ⋆ unpool(s_i, idx)
            let s_next = rec.layers[post];
            match rec.aux {
                Some(idx) => {
                    conv2d_gather(g, self.packed, idx, adj.tmp)?;
                    if adj.exact {
                        let gw = adj.grads.get_mut(wid);
                        conv2d_weight_grad_unpool(g, s_next, idx, self.geom, 1.0, true, gw)?;
                    }
                }
                None => {
                    conv2d(g, self.packed, None, adj.tmp)?;
                    if adj.exact {
                        let gw = adj.grads.get_mut(wid);
                        conv2d_weight_grad(g, s_next, self.geom, 1.0, true, gw)?;
                    }
                }
            }
            axpy(&mut adj.layers[post], 1.0, adj.tmp)?;
        }
        Ok(())
    }

    fn macs(&self) -> u64 {
        let (h, w) = self.hw;
        (self.geom.cin * self.geom.cout * self.geom.k * self.geom.k * h * w) as u64
    }
}
