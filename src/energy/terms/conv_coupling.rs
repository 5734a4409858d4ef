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
use crate::core::offset::{
    conv2d_pool_offset, conv2d_transposed_unpool_offset, is_zero, unpool_diff,
};
use crate::core::ops::{axpy, lin_comb, sample_dots};
use crate::core::pool::{maxpool2x2, unpool2x2};
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

    /// Makes `cache.forward` and `cache.pool` current at the base state, keeping the pre-pool
    /// map `Y* = W ⋆ s* + b` in `cache.full` (pooled couplings).
    fn ensure_base(&self, view: &StateView<'_, '_>, cache: &mut TermCache) -> Result<()> {
        if !self.pool {
            return self.ensure_forward(view, cache);
        }
        let pre = self.index - 1;
        if cache.is_current(view.versions[pre]) && !cache.full.is_empty() {
            return Ok(());
        }
        let bias = self.synapse.bias.as_ref().map(|b| b.data());
        conv2d(&view.layers[pre], self.packed, bias, &mut cache.full)?;
        maxpool2x2(&cache.full, &mut cache.forward, &mut cache.pool)?;
        cache.forward_of = Some(view.versions[pre]);
        cache.evals += 1;
        Ok(())
    }

    /// Offset form: `cache.forward = Δb_i = P(Y* + W ⋆ d_{i−1}) − P(Y*)` and `cache.pool` the
    /// argmax at the present state, current for the present `d_{i−1}`.
    fn ensure_offset_forward(
        &self,
        view: &StateView<'_, '_>,
        base: &TermCache,
        cache: &mut TermCache,
    ) -> Result<()> {
        let pre = self.index - 1;
        if cache.is_current(view.versions[pre]) {
            return Ok(());
        }
        let d = &view.offsets.expect("an offset view").d[pre];
        if is_zero(d) {
            cache.forward.ensure_shape(base.forward.shape());
            cache.forward.fill(0.0);
            cache.pool.clone_from(&base.pool);
        } else if self.pool {
            conv2d_pool_offset(
                d,
                self.packed,
                &base.full,
                &base.pool,
                &mut cache.forward,
                &mut cache.pool,
            )?;
            cache.evals += 1;
        } else {
            conv2d(d, self.packed, None, &mut cache.forward)?;
            cache.evals += 1;
        }
        cache.forward_of = Some(view.versions[pre]);
        Ok(())
    }

    /// Makes the probe's pool indices current (in offset form when the view has offsets).
    fn ensure_probe_forward(&self, p: &mut Probe<'_, '_, '_>) -> Result<()> {
        match p.base.filter(|_| p.view.offsets.is_some()) {
            Some(base) => self.ensure_offset_forward(&p.view, base, p.cache),
            None => self.ensure_forward(&p.view, p.cache),
        }
    }

    /// `U_i = unpool(s_i, idx)` at the probe's state.
    fn unpooled(&self, p: &mut Probe<'_, '_, '_>) -> Result<Tensor> {
        let s = &p.view.layers[self.index];
        if self.pool {
            self.ensure_probe_forward(p)?;
            let mut full = Tensor::default();
            unpool2x2(s, &p.cache.pool, &mut full)?;
            Ok(full)
        } else {
            Ok(s.clone())
        }
    }

    /// `U_i^b − U_i^a`: from the offsets where the argmax agrees when both states have them.
    fn unpooled_diff(
        &self,
        a: &mut Probe<'_, '_, '_>,
        b: &mut Probe<'_, '_, '_>,
    ) -> Result<Tensor> {
        let post = self.index;
        if !self.pool {
            return b.view.diff(&a.view, post);
        }
        self.ensure_probe_forward(a)?;
        self.ensure_probe_forward(b)?;
        match (a.view.offsets, b.view.offsets) {
            (Some(oa), Some(ob)) => {
                let mut out = Tensor::default();
                unpool_diff(
                    (&a.view.layers[post], &oa.d[post], &a.cache.pool),
                    (&b.view.layers[post], &ob.d[post], &b.cache.pool),
                    &mut out,
                )?;
                Ok(out)
            }
            _ => {
                let (mut ua, mut ub) = (Tensor::default(), Tensor::default());
                unpool2x2(&a.view.layers[post], &a.cache.pool, &mut ua)?;
                unpool2x2(&b.view.layers[post], &b.cache.pool, &mut ub)?;
                diff(&ub, &ua)
            }
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

    fn linear_base<'c>(
        &'c self,
        l: usize,
        view: &StateView<'c, '_>,
        cache: &'c mut TermCache,
    ) -> Result<&'c Tensor> {
        self.ensure_base(view, cache)?;
        self.linear(l, view, cache)
    }

    /// Bottom-up `Δb_i = P(Y* + W ⋆ d_{i−1}) − P(Y*)` (see [`conv2d_pool_offset`]); top-down
    /// `Δb_{i−1} = Wᵀ ⋆ [unpool(s_i, idx) − unpool(s*_i, idx*)]` (see
    /// [`conv2d_transposed_unpool_offset`]).
    fn linear_offset<'c>(
        &'c self,
        l: usize,
        view: &StateView<'c, '_>,
        base: &'c TermCache,
        cache: &'c mut TermCache,
    ) -> Result<Option<&'c Tensor>> {
        let post = self.index;
        if l == post {
            self.ensure_offset_forward(view, base, cache)?;
            return Ok(Some(&cache.forward));
        }
        let offsets = view.offsets.expect("an offset view");
        let d = &offsets.d[post];
        if self.pool {
            self.ensure_offset_forward(view, base, cache)?;
            if is_zero(d) && cache.pool == base.pool {
                cache.backward.ensure_shape(view.layers[l].shape());
                cache.backward.fill(0.0);
            } else {
                conv2d_transposed_unpool_offset(
                    d,
                    &offsets.base[post],
                    &cache.pool,
                    &base.pool,
                    self.packed,
                    &mut cache.backward,
                )?;
            }
        } else if is_zero(d) {
            cache.backward.ensure_shape(view.layers[l].shape());
            cache.backward.fill(0.0);
        } else {
            conv2d_transposed(d, self.packed, &mut cache.backward)?;
        }
        Ok(Some(&cache.backward))
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
    /// are themselves small when the states are close (the differences from the offsets
    /// when the states have them).
    fn param_contrast(
        &self,
        mut a: Probe<'_, '_, '_>,
        mut b: Probe<'_, '_, '_>,
        scale: f32,
        grads: &mut Grads,
    ) -> Result<()> {
        let (wid, bid) = self.ids();
        let pre = self.index - 1;
        let d_pre = b.view.diff(&a.view, pre)?;
        let ub = self.unpooled(&mut b)?;
        let du = self.unpooled_diff(&mut a, &mut b)?;
        let xa = &a.view.layers[pre];
        conv2d_weight_grad(&d_pre, &ub, self.geom, scale, true, grads.get_mut(wid))?;
        conv2d_weight_grad(xa, &du, self.geom, scale, true, grads.get_mut(wid))?;
        let ds = b.view.diff(&a.view, self.index)?;
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
