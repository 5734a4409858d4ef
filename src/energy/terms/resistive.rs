//! A layer of resistors between two layers of voltage nodes (a deep resistive network,
//! Scellier 2024):
//!
//! ```text
//! E = ½ Σ_{j,i} G_ji (v_j − v_i)²,   G ≥ 0,
//! ```
//!
//! `v_j` on the post layer and `v_i` on the pre layer — or, for the block's input coupling,
//! the input voltage sources `V = gain·[u, −u]` (duplicated so that non-negative
//! conductances give signed effective weights; `u` flattened C-major). Along the post layer
//! the term is quadratic with coefficient `q_j = Σ_i G_ji` and linear coefficient
//! `(G v_pre)_j`; along the pre layer `q_i = Σ_j G_ji` and `(Gᵀ v_post)_i`.
//! `∂E/∂G_ji = ½ (v_j − v_i)²`; `∂E/∂V_i = Σ_j G_ji (V_i − v_j)`.

use crate::core::dense::{dense_forward, dense_transposed, linear_weight_grad, PackedDense};
use crate::core::offset::is_zero;
use crate::core::ops::{axpy, lin_comb, sample_dots, scale as scale_by};
use crate::core::resistive::{
    add_row_col, column_dots, column_sums, fold_input_voltages, input_voltages,
};
use crate::core::Tensor;
use crate::energy::interaction::{
    Adjoints, Interaction, Probe, Recorded, Span, StateView, TermCache,
};
use crate::model::{Grads, ParamId};
use anyhow::Result;

/// The conductances of synapse `index` of block `block`, from layer `pre` (`None`: the block
/// input, as voltage sources) to layer `post`.
pub struct ResistiveCoupling<'a> {
    pub block: usize,
    pub index: usize,
    pub pre: Option<usize>,
    pub post: usize,
    pub packed: &'a PackedDense,
    /// `Σ_i G_ji` (`[F_post]`) and `Σ_j G_ji` (`[F_pre]`).
    pub row_sums: &'a Tensor,
    pub col_sums: &'a Tensor,
    /// Input voltages `gain·[u, −u]` (`duplicate`) or `gain·u`.
    pub gain: f32,
    pub duplicate: bool,
}

fn sum(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let mut d = Tensor::default();
    lin_comb(&mut d, 1.0, a, 1.0, b)?;
    Ok(d)
}

/// `Σ_j c_j x_{b,j}²` per sample, added to `out` with `scale`.
fn weighted_squares(x: &Tensor, c: &Tensor, scale: f64, out: &mut [f64]) {
    let f = c.len().max(1);
    for (o, row) in out.iter_mut().zip(x.data().chunks(f)) {
        let s: f64 = row
            .iter()
            .zip(c.data())
            .map(|(v, w)| *w as f64 * (*v as f64).powi(2))
            .sum();
        *o += scale * s;
    }
}

impl ResistiveCoupling<'_> {
    fn weight(&self) -> ParamId {
        ParamId::Synapse {
            block: self.block,
            index: self.index,
            bias: false,
        }
    }

    /// The pre-side values: a layer, or the input voltages.
    fn pre_values(&self, view: &StateView<'_, '_>) -> Result<Tensor> {
        Ok(match self.pre {
            Some(p) => view.layers[p].clone(),
            None => input_voltages(view.input, self.gain, self.duplicate)?,
        })
    }

    /// `cache.forward = G v_pre`, current for the present pre values.
    fn ensure_forward(&self, view: &StateView<'_, '_>, cache: &mut TermCache) -> Result<()> {
        let version = self.pre.map_or(0, |p| view.versions[p]);
        if cache.is_current(version) {
            return Ok(());
        }
        match self.pre {
            Some(p) => dense_forward(&view.layers[p], self.packed, None, &mut cache.forward)?,
            None => {
                let v = input_voltages(view.input, self.gain, self.duplicate)?;
                dense_forward(&v, self.packed, None, &mut cache.forward)?;
            }
        }
        cache.forward_of = Some(version);
        cache.evals += 1;
        Ok(())
    }
}

impl Interaction for ResistiveCoupling<'_> {
    fn name(&self) -> String {
        match self.pre {
            Some(p) => format!("resistors {p}→{}", self.post),
            None => format!("input resistors →{}", self.post),
        }
    }

    fn span(&self) -> Span {
        match self.pre {
            Some(pre) => Span::Pair {
                pre,
                post: self.post,
            },
            None => Span::Input { post: self.post },
        }
    }

    fn linear<'c>(
        &'c self,
        l: usize,
        view: &StateView<'c, '_>,
        cache: &'c mut TermCache,
    ) -> Result<&'c Tensor> {
        if l == self.post {
            self.ensure_forward(view, cache)?;
            return Ok(&cache.forward);
        }
        dense_transposed(
            &view.layers[self.post],
            self.packed,
            view.layers[l].shape(),
            &mut cache.backward,
        )?;
        Ok(&cache.backward)
    }

    /// `Δb_post = G d_pre` (none from the input voltages, which are constant) and
    /// `Δb_pre = Gᵀ d_post`; the quadratic coefficients do not depend on the states.
    fn linear_offset<'c>(
        &'c self,
        l: usize,
        view: &StateView<'c, '_>,
        _base: &'c TermCache,
        cache: &'c mut TermCache,
    ) -> Result<Option<&'c Tensor>> {
        let d = view.offsets.expect("an offset view").d;
        if l == self.post {
            let Some(p) = self.pre else { return Ok(None) };
            if !cache.is_current(view.versions[p]) {
                if is_zero(&d[p]) {
                    cache.forward.ensure_shape(view.layers[l].shape());
                    cache.forward.fill(0.0);
                } else {
                    dense_forward(&d[p], self.packed, None, &mut cache.forward)?;
                    cache.evals += 1;
                }
                cache.forward_of = Some(view.versions[p]);
            }
            return Ok(Some(&cache.forward));
        }
        if is_zero(&d[self.post]) {
            cache.backward.ensure_shape(view.layers[l].shape());
            cache.backward.fill(0.0);
        } else {
            dense_transposed(
                &d[self.post],
                self.packed,
                view.layers[l].shape(),
                &mut cache.backward,
            )?;
        }
        Ok(Some(&cache.backward))
    }

    fn quadratic(&self, l: usize) -> Option<&Tensor> {
        Some(if l == self.post {
            self.row_sums
        } else {
            self.col_sums
        })
    }

    /// `½ (Σ_j q_j v_j² + Σ_i q_i v_i²) − v_postᵀ G v_pre` per sample.
    fn energy(
        &self,
        view: &StateView<'_, '_>,
        cache: &mut TermCache,
        out: &mut [f64],
    ) -> Result<()> {
        let pre = self.pre_values(view)?;
        let post = &view.layers[self.post];
        weighted_squares(post, self.row_sums, 0.5, out);
        weighted_squares(&pre, self.col_sums, 0.5, out);
        self.ensure_forward(view, cache)?;
        sample_dots(&cache.forward, post, -1.0, out)?;
        Ok(())
    }

    /// `P = Σ_{j,i} G_ji (v_j − v_i)² = 2 E`: the Joule power of the resistors.
    fn power(
        &self,
        view: &StateView<'_, '_>,
        cache: &mut TermCache,
        out: &mut [f64],
    ) -> Result<bool> {
        let mut e = vec![0.0f64; out.len()];
        self.energy(view, cache, &mut e)?;
        for (o, e) in out.iter_mut().zip(e) {
            *o += 2.0 * e;
        }
        Ok(true)
    }

    /// `scale · Σ_b ½[(v^a_j − v^a_i)² − (v^b_j − v^b_i)²] = scale · Σ_b ½ (Δ_j − Δ_i)(σ_j − σ_i)`
    /// with `Δ = v^a − v^b` and `σ = v^a + v^b`: every term is a product with a difference, so
    /// nearby states lose no precision.
    fn param_contrast(
        &self,
        a: Probe<'_, '_, '_>,
        b: Probe<'_, '_, '_>,
        scale: f32,
        grads: &mut Grads,
    ) -> Result<()> {
        let dw = grads.get_mut(self.weight());
        let (pa, pb) = (&a.view.layers[self.post], &b.view.layers[self.post]);
        let (d_post, s_post) = (a.view.diff(&b.view, self.post)?, sum(pa, pb)?);
        let half = 0.5 * scale as f64;
        let rows = column_dots(&d_post, &s_post)?;
        match self.pre {
            None => {
                // the input is the same in both states: Δ_i = 0, σ_i = 2 V_i
                let v = input_voltages(a.view.input, self.gain, self.duplicate)?;
                add_row_col(dw, Some(&rows), None, half)?;
                linear_weight_grad(&v, &d_post, -scale, true, dw)?;
            }
            Some(p) => {
                let (xa, xb) = (&a.view.layers[p], &b.view.layers[p]);
                let (d_pre, s_pre) = (a.view.diff(&b.view, p)?, sum(xa, xb)?);
                let cols = column_dots(&d_pre, &s_pre)?;
                add_row_col(dw, Some(&rows), Some(&cols), half)?;
                linear_weight_grad(&s_pre, &d_post, -0.5 * scale, true, dw)?;
                linear_weight_grad(&d_pre, &s_post, -0.5 * scale, true, dw)?;
            }
        }
        Ok(())
    }

    /// `scale · (∂E/∂u(a) − ∂E/∂u(b))` with `∂E/∂V(a) − ∂E/∂V(b) = −Gᵀ (v^a − v^b)`, folded
    /// through the voltage map `V = gain·[u, −u]`.
    fn input_contrast(
        &self,
        a: &StateView<'_, '_>,
        b: &StateView<'_, '_>,
        scale: f32,
        out: &mut Tensor,
    ) -> Result<()> {
        if self.pre.is_some() {
            return Ok(());
        }
        let d_post = a.diff(b, self.post)?;
        let mut dv = Tensor::default();
        let b_ = d_post.dim0();
        dense_transposed(&d_post, self.packed, &[b_, self.packed.fin()], &mut dv)?;
        let mut du = fold_input_voltages(&dv, a.input, self.gain, self.duplicate)?;
        scale_by(&mut du, -scale);
        if out.is_empty() {
            *out = du;
        } else {
            axpy(out, 1.0, &du)?;
        }
        Ok(())
    }

    fn vjp(
        &self,
        l: usize,
        rec: &Recorded<'_>,
        g: &Tensor,
        g_quad: Option<&Tensor>,
        adj: &mut Adjoints<'_>,
    ) -> Result<()> {
        let wid = self.weight();
        if l == self.post {
            // b_post = G v_pre, q_post = row sums of G
            let pre = match self.pre {
                Some(p) => rec.layers[p].clone(),
                None => input_voltages(rec.input, self.gain, self.duplicate)?,
            };
            dense_transposed(g, self.packed, pre.shape(), adj.tmp)?;
            match self.pre {
                Some(p) => axpy(&mut adj.layers[p], 1.0, adj.tmp)?,
                None => {
                    let du = fold_input_voltages(adj.tmp, rec.input, self.gain, self.duplicate)?;
                    axpy(adj.input, 1.0, &du)?;
                }
            }
            let gw = adj.grads.get_mut(wid);
            linear_weight_grad(&pre, g, 1.0, true, gw)?;
            if let Some(gq) = g_quad {
                add_row_col(gw, Some(&column_sums(gq)?), None, 1.0)?;
            }
        } else {
            // b_pre = Gᵀ v_post, q_pre = column sums of G
            dense_forward(g, self.packed, None, adj.tmp)?;
            axpy(&mut adj.layers[self.post], 1.0, adj.tmp)?;
            let gw = adj.grads.get_mut(wid);
            linear_weight_grad(g, rec.layers[self.post], 1.0, true, gw)?;
            if let Some(gq) = g_quad {
                add_row_col(gw, None, Some(&column_sums(gq)?), 1.0)?;
            }
        }
        Ok(())
    }

    fn macs(&self) -> u64 {
        (self.packed.fin() * self.packed.fout()) as u64
    }
}
