//! A Hopfield dense coupling between layers `j−1` and `j` (SPEC §1.2):
//! `E_j = −⟨W_j flat(s_{j−1}) + b_j, s_j⟩` (a map `s_{j−1}` is flattened C-major).
//! Linear coefficients: `W_j flat(s_{j−1}) + b_j` on `s_j`, `W_jᵀ s_j` on `s_{j−1}`;
//! `∂E/∂W_j = −Σ_b s_j flat(s_{j−1})ᵀ`, `∂E/∂b_j = −Σ_b s_j`.

use crate::core::conv::channel_sum;
use crate::core::dense::{dense_forward, dense_transposed, linear_weight_grad, PackedDense};
use crate::core::ops::{axpy, lin_comb, sample_dots};
use crate::core::Tensor;
use crate::energy::interaction::{
    Adjoints, Interaction, Probe, Recorded, Span, StateView, TermCache,
};
use crate::model::readout::flatten_state;
use crate::model::{Grads, ParamId, Synapse};
use anyhow::Result;

/// Dense coupling `index` (synapse index, ≥ 1) of block `block`.
pub struct DenseCoupling<'a> {
    pub block: usize,
    pub index: usize,
    pub synapse: &'a Synapse,
    pub packed: &'a PackedDense,
}

fn diff(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let mut d = Tensor::default();
    lin_comb(&mut d, 1.0, a, -1.0, b)?;
    Ok(d)
}

impl DenseCoupling<'_> {
    fn ids(&self) -> (ParamId, ParamId) {
        let id = |bias| ParamId::Synapse {
            block: self.block,
            index: self.index,
            bias,
        };
        (id(false), id(true))
    }

    fn ensure_forward(&self, view: &StateView<'_, '_>, cache: &mut TermCache) -> Result<()> {
        let pre = self.index - 1;
        if cache.is_current(view.versions[pre]) {
            return Ok(());
        }
        let bias = self.synapse.bias.as_ref().map(|b| b.data());
        dense_forward(&view.layers[pre], self.packed, bias, &mut cache.forward)?;
        cache.forward_of = Some(view.versions[pre]);
        cache.evals += 1;
        Ok(())
    }
}

impl Interaction for DenseCoupling<'_> {
    fn name(&self) -> String {
        format!("dense coupling {}", self.index)
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
        let pre = &view.layers[l];
        dense_transposed(
            &view.layers[self.index],
            self.packed,
            pre.shape(),
            &mut cache.backward,
        )?;
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

    /// `scale · (∂Φ(b) − ∂Φ(a))` as `s^b (f^b − f^a)ᵀ + (s^b − s^a) f^aᵀ` (`f = flat(s_{j−1})`).
    fn param_contrast(
        &self,
        a: Probe<'_, '_, '_>,
        b: Probe<'_, '_, '_>,
        scale: f32,
        grads: &mut Grads,
    ) -> Result<()> {
        let (wid, bid) = self.ids();
        let pre = self.index - 1;
        let fb = flatten_state(&b.view.layers[pre])?;
        let fa = flatten_state(&a.view.layers[pre])?;
        let (sb, sa) = (&b.view.layers[self.index], &a.view.layers[self.index]);
        linear_weight_grad(&diff(&fb, &fa)?, sb, scale, true, grads.get_mut(wid))?;
        linear_weight_grad(&fa, &diff(sb, sa)?, scale, true, grads.get_mut(wid))?;
        channel_sum(&diff(sb, sa)?, scale, true, grads.get_mut(bid));
        Ok(())
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
            let x = rec.layers[pre];
            dense_transposed(g, self.packed, x.shape(), adj.tmp)?;
            axpy(&mut adj.layers[pre], 1.0, adj.tmp)?;
            linear_weight_grad(&flatten_state(x)?, g, 1.0, true, adj.grads.get_mut(wid))?;
            channel_sum(g, 1.0, true, adj.grads.get_mut(bid));
        } else {
            dense_forward(g, self.packed, None, adj.tmp)?;
            axpy(&mut adj.layers[post], 1.0, adj.tmp)?;
            if adj.exact {
                let gw = adj.grads.get_mut(wid);
                linear_weight_grad(&flatten_state(g)?, rec.layers[post], 1.0, true, gw)?;
            }
        }
        Ok(())
    }

    fn macs(&self) -> u64 {
        (self.packed.fin() * self.packed.fout()) as u64
    }
}
