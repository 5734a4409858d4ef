//! The interface every energy term implements, and the per-relaxation data it works on.
//!
//! A block's energy is `E(s) = Σ_l G_l(s_l) + Σ_t E_t(s)`: the self-energies `G_l` of its
//! layers (see [`super::LayerKind`]) and a sum of *interactions* `E_t` (couplings between two
//! layers, the drive from the feedforward transform, biases). Every interaction is at most
//! quadratic in each layer, so along one layer `l` the energy reads
//!
//! ```text
//! E(s_l) = G_l(s_l) + ½ Σ_t q_{t,l} ⊙ s_l² − Σ_t ⟨b_{t,l}, s_l⟩ + (terms without s_l)
//! ```
//!
//! and the exact minimiser along `l` is the layer's projection of `(Σ_t b_{t,l}) / (g_l +
//! Σ_t q_{t,l})`. An interaction provides its *linear coefficient* `b_{t,l}` (for a Hopfield
//! coupling: the bottom-up or top-down term), its *quadratic coefficient* `q_{t,l}` (for a
//! resistive coupling: the conductances leaving each unit), its value, its parameter
//! derivatives `∂E_t/∂θ` (as the contrast of two states, which EP needs), its derivative
//! with respect to the block input (for chaining), the vector–Jacobian products that
//! backpropagation through a relaxation needs, and its cost in multiply-accumulates.

use crate::core::{PoolIndex, Tensor};
use crate::model::Grads;
use anyhow::Result;

/// The layers an interaction involves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// Couples the block input `u` (the feedforward transform's output) to layer `post`.
    Input { post: usize },
    /// Couples layers `pre` and `post = pre + 1`.
    Pair { pre: usize, post: usize },
    /// Acts on one layer (a bias, a nudge).
    Layer(usize),
}

impl Span {
    /// Whether the interaction's energy depends on layer `l`.
    pub fn touches(&self, l: usize) -> bool {
        match *self {
            Span::Input { post } | Span::Layer(post) => post == l,
            Span::Pair { pre, post } => pre == l || post == l,
        }
    }
}

/// The states an interaction reads: the block input and every layer, with the version of
/// each layer (incremented on every update, so caches can tell when they are stale), and —
/// in a relaxation in offset form ([`crate::relax::OffsetBase`]) — the offsets `d = s − s*`
/// of every layer from the base state.
#[derive(Clone, Copy)]
pub struct StateView<'i, 's> {
    pub input: &'i Tensor,
    pub layers: &'s [Tensor],
    pub versions: &'s [u64],
    pub offsets: Option<Offsets<'s>>,
}

/// The base state `s*` of an offset relaxation and the offsets `d = s − s*` of every layer.
#[derive(Clone, Copy)]
pub struct Offsets<'s> {
    pub base: &'s [Tensor],
    pub d: &'s [Tensor],
}

impl StateView<'_, '_> {
    /// `s_l(self) − s_l(other)`: from the offsets when both views have them (two states
    /// relaxed from the same base: `d_l(self) − d_l(other)`, exact to the offsets' own
    /// precision), else from the states.
    pub fn diff(&self, other: &StateView<'_, '_>, l: usize) -> Result<Tensor> {
        let (a, b) = match (self.offsets, other.offsets) {
            (Some(da), Some(db)) => (&da.d[l], &db.d[l]),
            _ => (&self.layers[l], &other.layers[l]),
        };
        let mut d = Tensor::default();
        crate::core::ops::lin_comb(&mut d, 1.0, a, -1.0, b)?;
        Ok(d)
    }
}

/// Values an interaction keeps between calls during one relaxation (one per interaction and
/// relaxation): a forward evaluation (e.g. `P(W ⋆ s_pre + b)`) with the pool indices it
/// produced and the version of the layer it was computed from, and a buffer for the value
/// returned to the other layer.
#[derive(Clone, Debug, Default)]
pub struct TermCache {
    pub forward: Tensor,
    pub pool: PoolIndex,
    /// Version of the layer `forward` was computed from (`None`: never computed).
    pub forward_of: Option<u64>,
    pub backward: Tensor,
    /// A full-resolution map: the pre-pool `Y* = W ⋆ s* + b` of a pooled coupling at the base
    /// state (an offset relaxation reads it, never stores `W ⋆ d`).
    pub full: Tensor,
    /// Forward evaluations so far (for cost accounting).
    pub evals: usize,
}

impl TermCache {
    /// Whether `forward` is current for a layer at `version`.
    pub fn is_current(&self, version: u64) -> bool {
        self.forward_of == Some(version)
    }
}

/// A state together with the caches of one interaction at that state (the caches are
/// refreshed as needed).
pub struct Probe<'p, 'i, 's> {
    pub view: StateView<'i, 's>,
    pub cache: &'p mut TermCache,
    /// The interaction's cache at the base state when the view is in offset form.
    pub base: Option<&'p TermCache>,
}

/// What a layer update read, for backpropagation through it.
pub struct Recorded<'r> {
    /// The value of every layer when the update was computed.
    pub layers: Vec<&'r Tensor>,
    /// The block input.
    pub input: &'r Tensor,
    /// What the interaction recorded at the update (pool indices of a pooled coupling).
    pub aux: Option<&'r PoolIndex>,
}

/// Adjoint accumulators of a reverse pass through a relaxation.
pub struct Adjoints<'g> {
    /// `∂L/∂s_l` of every layer at the current point of the reverse pass.
    pub layers: &'g mut [Tensor],
    /// `∂L/∂u`, the adjoint of the block input.
    pub input: &'g mut Tensor,
    pub grads: &'g mut Grads,
    /// `false`: the parameter of a coupling is treated as a constant in its top-down use
    /// (the reference implementation's approximation, SPEC §2.3 `reference`).
    pub exact: bool,
    /// Scratch.
    pub tmp: &'g mut Tensor,
}

/// One term of a block's energy. See the module documentation for the decomposition.
pub trait Interaction: Send + Sync {
    /// Name for messages (e.g. `conv coupling 1`).
    fn name(&self) -> String;

    /// The layers the term involves.
    fn span(&self) -> Span;

    /// The linear coefficient `b_{t,l}` of layer `l` at the present states (the term's
    /// contribution to the layer's update), kept in `cache` or borrowed from the input.
    fn linear<'c>(
        &'c self,
        l: usize,
        view: &StateView<'c, '_>,
        cache: &'c mut TermCache,
    ) -> Result<&'c Tensor>;

    /// The per-unit quadratic coefficient `q_{t,l}` of layer `l` (`[F]`, the same for every
    /// sample and independent of the states), if the term has one.
    fn quadratic(&self, _l: usize) -> Option<&Tensor> {
        None
    }

    /// Offset form, at the base state `s*` (`view`): like [`Interaction::linear`], and also
    /// keeps in `cache` what [`Interaction::linear_offset`] needs (a pooled coupling: the
    /// pre-pool map `Y*` and its argmax).
    fn linear_base<'c>(
        &'c self,
        l: usize,
        view: &StateView<'c, '_>,
        cache: &'c mut TermCache,
    ) -> Result<&'c Tensor> {
        self.linear(l, view, cache)
    }

    /// Offset form: `Δb_{t,l} = b_{t,l}(s* + d) − b_{t,l}(s*)` at the present state (`view`,
    /// with its offsets `d`), computed from `d` and the base cache (never as a difference of
    /// two large values); `None` when `b_{t,l}` does not depend on the states.
    fn linear_offset<'c>(
        &'c self,
        l: usize,
        view: &StateView<'c, '_>,
        base: &'c TermCache,
        cache: &'c mut TermCache,
    ) -> Result<Option<&'c Tensor>>;

    /// Adds `E_t(s)` of each sample to `out`.
    fn energy(
        &self,
        view: &StateView<'_, '_>,
        cache: &mut TermCache,
        out: &mut [f64],
    ) -> Result<()>;

    /// Adds the power the term dissipates at the present state, per sample, to `out` and
    /// returns `true` — for physical resistors, `P_t = Σ_{j,i} G_ji (v_j − v_i)² = 2 E_t` —
    /// or returns `false` for terms that are not resistors (Hopfield couplings, drives,
    /// biases, current sources). `cache` is a cache of this term for `view`'s states.
    fn power(
        &self,
        _view: &StateView<'_, '_>,
        _cache: &mut TermCache,
        _out: &mut [f64],
    ) -> Result<bool> {
        Ok(false)
    }

    /// `grads += scale · Σ_batch (∂E_t/∂θ(a) − ∂E_t/∂θ(b))`, computed from differences of the
    /// two states (from their offsets when both have them, see [`StateView::diff`]) so that
    /// nearby states lose no precision.
    fn param_contrast(
        &self,
        a: Probe<'_, '_, '_>,
        b: Probe<'_, '_, '_>,
        scale: f32,
        grads: &mut Grads,
    ) -> Result<()>;

    /// `out += scale · (∂E_t/∂u(a) − ∂E_t/∂u(b))` per sample, for terms that read the block
    /// input (`out` has the input's shape).
    fn input_contrast(
        &self,
        _a: &StateView<'_, '_>,
        _b: &StateView<'_, '_>,
        _scale: f32,
        _out: &mut Tensor,
    ) -> Result<()> {
        Ok(())
    }

    /// What an update of layer `l` must keep for [`Interaction::vjp`] (pool indices).
    fn record(&self, _l: usize, _cache: &TermCache) -> Option<PoolIndex> {
        None
    }

    /// Reverse pass through the use of this term in an update of layer `l`: given the
    /// adjoint `g_lin` of the layer's linear coefficient (and `g_quad` of its quadratic
    /// one, per sample), accumulates the adjoints of the layers and input the term read and
    /// of its parameters.
    fn vjp(
        &self,
        l: usize,
        rec: &Recorded<'_>,
        g_lin: &Tensor,
        g_quad: Option<&Tensor>,
        adj: &mut Adjoints<'_>,
    ) -> Result<()>;

    /// Per-sample multiply-accumulates of one evaluation of the linear coefficient in each
    /// direction (bottom-up and top-down for a coupling).
    fn macs(&self) -> u64;
}
