//! The drive of a Hopfield block: `E_drive = −⟨u, s_0⟩`, with `u = F(x)` the output of the
//! block's feedforward transform. Linear coefficient of `s_0`: `u`; `∂E/∂u = −s_0`.

use crate::core::ops::{axpy, lin_comb};
use crate::core::Tensor;
use crate::energy::interaction::{
    Adjoints, Interaction, Probe, Recorded, Span, StateView, TermCache,
};
use crate::model::Grads;
use anyhow::Result;

/// `−⟨u, s_0⟩`.
pub struct HopfieldDrive;

impl Interaction for HopfieldDrive {
    fn name(&self) -> String {
        "drive".into()
    }

    fn span(&self) -> Span {
        Span::Input { post: 0 }
    }

    fn linear<'c>(
        &'c self,
        _l: usize,
        view: &StateView<'c, '_>,
        _cache: &'c mut TermCache,
    ) -> Result<&'c Tensor> {
        Ok(view.input)
    }

    fn energy(&self, view: &StateView<'_, '_>, _c: &mut TermCache, out: &mut [f64]) -> Result<()> {
        crate::core::ops::sample_dots(view.input, &view.layers[0], -1.0, out)?;
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

    /// `scale · (∂E/∂u(a) − ∂E/∂u(b)) = scale · (s_0^b − s_0^a)`.
    fn input_contrast(
        &self,
        a: &StateView<'_, '_>,
        b: &StateView<'_, '_>,
        scale: f32,
        out: &mut Tensor,
    ) -> Result<()> {
        if out.is_empty() {
            lin_comb(out, scale, &b.layers[0], -scale, &a.layers[0])?;
        } else {
            let mut d = Tensor::default();
            lin_comb(&mut d, scale, &b.layers[0], -scale, &a.layers[0])?;
            axpy(out, 1.0, &d)?;
        }
        Ok(())
    }

    fn vjp(
        &self,
        _l: usize,
        _rec: &Recorded<'_>,
        g_lin: &Tensor,
        _g_quad: Option<&Tensor>,
        adj: &mut Adjoints<'_>,
    ) -> Result<()> {
        axpy(adj.input, 1.0, g_lin)?;
        Ok(())
    }

    fn macs(&self) -> u64 {
        0
    }
}
