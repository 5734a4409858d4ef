//! Relaxation: minimising a block's energy `E` (plus an optional cost term `β·C` handed to it,
//! which is just one more interaction) by exact block coordinate descent (SPEC §1.3).
//!
//! A [`Relaxation`] owns the layer states of one block for one batch, the block input (the
//! constant drive `u = F(x)`) and one cache per interaction. Updating layer `l` sets it to
//! the exact minimiser of the energy along that layer (see [`crate::energy::layer`]):
//!
//! ```text
//! s_l ← proj_l( Σ_t b_{t,l} / (g_l + Σ_t q_{t,l}) )
//! ```
//!
//! summing over the interactions that touch `l`. A sweep updates every layer once, in one of
//! the [`Order`]s. Interactions cache what they computed from a layer (e.g. a coupling's
//! forward value `P(W ⋆ s_{l−1} + b)` and its pool argmax) with the version of that layer, so
//! in the alternating schedule every coupling costs one forward and one transposed
//! evaluation per sweep. The relaxation knows nothing of losses or labels.

mod offset;
mod solve;
mod tape;

pub use crate::energy::BlockState;
pub use offset::OffsetBase;
pub use solve::{relax, AndersonParams, RelaxReport, Schedule, Solver};
pub use tape::{Tape, UpdateEvent};

use crate::core::anderson::{project, StateBox};
use crate::core::offset::offset_update;
use crate::core::ops::UpdateStats;
use crate::core::quadratic::QuadraticError;
use crate::core::Tensor;
use crate::energy::{
    EnergyBlock, Interaction, NoMinimumError, Offsets, Probe, StateView, TermCache,
};
use anyhow::Result;

/// NaN or infinity appeared in a layer during a relaxation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("non-finite values (NaN/inf) in layer {layer} at sweep {sweep} of the {phase}")]
pub struct NonFiniteError {
    pub layer: usize,
    pub sweep: usize,
    pub phase: &'static str,
}

/// The order in which a sweep updates the layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// Layers 0, 2, 4, … then 1, 3, … (the free phase of SPEC §1.3; "asynchronous").
    #[default]
    EvenFirst,
    /// Odd layers first (the nudged phases of SPEC §1.3).
    OddFirst,
    /// One layer at a time, from the first to the last.
    Forward,
    /// One layer at a time, from the last to the first.
    Backward,
    /// Every layer from the same snapshot of the states.
    Synchronous,
}

impl Order {
    /// The groups of layers updated together, in sequence, for a block of `n` layers.
    pub fn groups(self, n: usize) -> Vec<Vec<usize>> {
        let parity = |p: usize| (p..n).step_by(2).collect::<Vec<_>>();
        match self {
            Order::EvenFirst => vec![parity(0), parity(1)],
            Order::OddFirst => vec![parity(1), parity(0)],
            Order::Forward => (0..n).map(|l| vec![l]).collect(),
            Order::Backward => (0..n).rev().map(|l| vec![l]).collect(),
            Order::Synchronous => vec![(0..n).collect()],
        }
    }
}

/// Per-sweep convergence measure (SPEC §1.3).
#[derive(Clone, Debug, Default)]
pub struct SweepStats {
    /// `mean_l ‖s_l^t − s_l^{t−1}‖_F / max(‖s_l^{t−1}‖_F, 1e-6)` over the whole batch.
    pub measure: f64,
    /// The same measure per sample.
    pub per_sample: Vec<f64>,
}

fn measure_of(stats: &[UpdateStats]) -> SweepStats {
    let rel = |d: f64, o: f64| d.sqrt() / o.sqrt().max(1e-6);
    let n = stats.len() as f64;
    let measure = stats.iter().map(|s| rel(s.diff_sq, s.old_sq)).sum::<f64>() / n;
    let b = stats.first().map_or(0, |s| s.per_sample.len());
    let per_sample = (0..b)
        .map(|i| {
            stats
                .iter()
                .map(|s| rel(s.per_sample[i].0, s.per_sample[i].1))
                .sum::<f64>()
                / n
        })
        .collect();
    SweepStats {
        measure,
        per_sample,
    }
}

/// An update computed from a snapshot, applied after its group: layer, new state, new offset.
type Pending = (usize, Tensor, Option<Tensor>);

/// A block's states, input and interaction caches during relaxation.
pub struct Relaxation<'a> {
    block: &'a EnergyBlock<'a>,
    input: &'a Tensor,
    pub state: BlockState,
    /// Incremented on every update of a layer.
    versions: Vec<u64>,
    caches: Vec<TermCache>,
    cost_cache: TermCache,
    /// Sweeps run so far.
    pub sweeps: usize,
    phase: &'static str,
    /// Offset form: the base state and the offsets `d = s − s*` of every layer.
    base: Option<&'a OffsetBase>,
    offsets: Vec<Tensor>,
    /// Cycle-to-cycle noise on every layer update (see [`UpdateNoise`]).
    noise: Option<UpdateNoise>,
}

/// Gaussian noise added to every layer update of a relaxation (an analog circuit's
/// cycle-to-cycle variability): `s_l ← s_l + σ·ξ`, `ξ ~ N(0, 1)` per unit, from `rng`. In
/// offset form the offset `d_l` moves with the state.
#[derive(Clone, Debug)]
pub struct UpdateNoise {
    pub sigma: f32,
    pub rng: rand::rngs::SmallRng,
}

impl<'a> Relaxation<'a> {
    /// Starts from `state` (e.g. zeros, or a copy of the free equilibrium); `input` is the
    /// block input `u = F(x)`, constant during the relaxation.
    pub fn new(
        block: &'a EnergyBlock<'a>,
        input: &'a Tensor,
        state: BlockState,
        phase: &'static str,
    ) -> Self {
        let n = state.layers.len();
        Relaxation {
            block,
            input,
            state,
            versions: vec![0; n],
            caches: vec![TermCache::default(); block.terms.len()],
            cost_cache: TermCache::default(),
            sweeps: 0,
            phase,
            base: None,
            offsets: Vec::new(),
            noise: None,
        }
    }

    /// Starts at the base state, relaxing in offset form (see [`OffsetBase`]).
    pub fn from_base(
        block: &'a EnergyBlock<'a>,
        input: &'a Tensor,
        base: &'a OffsetBase,
        phase: &'static str,
    ) -> Self {
        let mut r = Relaxation::new(block, input, base.state.clone(), phase);
        r.offsets = base
            .state
            .layers
            .iter()
            .map(|s| Tensor::zeros(s.shape()))
            .collect();
        r.base = Some(base);
        r
    }

    fn offset_view(&self) -> Option<Offsets<'_>> {
        self.base.map(|b| Offsets {
            base: &b.state.layers,
            d: &self.offsets,
        })
    }

    /// Adds noise to every later layer update (`None`: none, the default).
    pub fn set_update_noise(&mut self, noise: Option<UpdateNoise>) {
        self.noise = noise;
    }

    /// Applies `f(s_l, d_l)` to every layer (with its offset in offset form), e.g. a noisy
    /// measurement of the states; the layers count as updated.
    pub fn perturb<E: Into<anyhow::Error>>(
        &mut self,
        mut f: impl FnMut(&mut Tensor, Option<&mut Tensor>) -> std::result::Result<(), E>,
    ) -> Result<()> {
        for l in 0..self.state.layers.len() {
            f(&mut self.state.layers[l], self.offsets.get_mut(l)).map_err(Into::into)?;
            self.versions[l] += 1;
        }
        Ok(())
    }

    /// The update noise on layer `l` after its update.
    fn add_update_noise(&mut self, l: usize) -> Result<()> {
        if let Some(noise) = self.noise.as_mut() {
            let s = &mut self.state.layers[l];
            match self.offsets.get_mut(l) {
                Some(d) => {
                    crate::core::analog::add_gaussian_pair(s, d, noise.sigma, &mut noise.rng)?
                }
                None => crate::core::analog::add_gaussian(s, noise.sigma, &mut noise.rng),
            }
            self.versions[l] += 1;
        }
        Ok(())
    }

    /// The iterate a solver works on: the offsets `d` in offset form, else the states.
    pub fn iterate(&self) -> Vec<Tensor> {
        match self.base {
            Some(_) => self.offsets.clone(),
            None => self.state.layers.clone(),
        }
    }

    /// Sets the iterate (see [`Relaxation::iterate`]) after projecting every layer back into
    /// its domain (in offset form `s* + d` into it); the layers count as updated.
    pub fn set_iterate(&mut self, mut x: Vec<Tensor>) -> Result<()> {
        anyhow::ensure!(x.len() == self.state.layers.len(), "one tensor per layer");
        for (l, xl) in x.iter_mut().enumerate() {
            let base = self.base.map(|b| &b.state.layers[l]);
            project(xl, self.block.kinds[l].state_box(), base)?;
        }
        match self.base {
            Some(b) => {
                for (l, d) in x.into_iter().enumerate() {
                    let mut s = b.state.layers[l].clone();
                    crate::core::ops::axpy(&mut s, 1.0, &d)?;
                    if let bx @ StateBox::DiodeBounds(_) = self.block.kinds[l].state_box() {
                        // a unit on its bound sits exactly on it (s* + (t − s*) may round off)
                        project(&mut s, bx, None)?;
                    }
                    self.state.layers[l] = s;
                    self.offsets[l] = d;
                }
            }
            None => self.state.layers = x,
        }
        self.versions.iter_mut().for_each(|v| *v += 1);
        Ok(())
    }

    pub fn into_state(self) -> BlockState {
        self.state
    }

    /// The block being relaxed.
    pub fn block(&self) -> &'a EnergyBlock<'a> {
        self.block
    }

    /// The block input.
    pub fn input(&self) -> &'a Tensor {
        self.input
    }

    /// Forward evaluations of the interactions so far (cost accounting).
    pub fn forward_evals(&self) -> usize {
        self.caches.iter().map(|c| c.evals).sum()
    }

    /// The present states as the interactions see them.
    pub fn view(&self) -> StateView<'a, '_> {
        StateView {
            input: self.input,
            layers: &self.state.layers,
            versions: &self.versions,
            offsets: self.offset_view(),
        }
    }

    /// Interaction `t` at the present state, with its cache.
    pub fn probe(&mut self, t: usize) -> Probe<'_, 'a, '_> {
        let offsets = self.base.map(|b| Offsets {
            base: &b.state.layers,
            d: &self.offsets,
        });
        Probe {
            view: StateView {
                input: self.input,
                layers: &self.state.layers,
                versions: &self.versions,
                offsets,
            },
            cache: &mut self.caches[t],
            base: self.base.map(|b| &b.caches[t]),
        }
    }

    /// Updates layer `l` (into `pending` instead when `snapshot`: the group's other layers
    /// must still see the old value); returns the change statistics.
    fn update_layer(
        &mut self,
        l: usize,
        cost: Option<&dyn Interaction>,
        frozen: Option<&[bool]>,
        tape: Option<&mut Tape>,
        snapshot: bool,
        pending: &mut Vec<Pending>,
    ) -> Result<UpdateStats> {
        if let Some(base) = self.base {
            if tape.is_some() {
                anyhow::bail!(
                    "backpropagation through a relaxation in offset form is not supported"
                );
            }
            return self.update_offset_layer(base, l, cost, frozen, snapshot, pending);
        }
        let block = self.block;
        let mut record = tape.is_some().then(Tensor::default);
        let mut new_value = snapshot.then(|| self.state.layers[l].clone());
        let stats = {
            let view = StateView {
                input: self.input,
                layers: &self.state.layers,
                versions: &self.versions,
                offsets: None,
            };
            let mut slots: Vec<Option<&mut TermCache>> = self.caches.iter_mut().map(Some).collect();
            let mut lin: Vec<&Tensor> = Vec::with_capacity(4);
            let mut quad: Vec<&Tensor> = Vec::new();
            for &t in block.touching(l) {
                let cache = slots[t].take().expect("each term once");
                let term = block.terms[t].as_ref();
                lin.push(term.linear(l, &view, cache)?);
                if let Some(q) = term.quadratic(l) {
                    quad.push(q);
                }
            }
            if let Some(c) = cost.filter(|c| c.span().touches(l)) {
                lin.push(c.linear(l, &view, &mut self.cost_cache)?);
                if let Some(q) = c.quadratic(l) {
                    quad.push(q);
                }
            }
            // the terms hold no borrow of the states: the layer is updated in place
            let target = match new_value.as_mut() {
                Some(v) => v,
                None => &mut self.state.layers[l],
            };
            block.kinds[l].update(l, &lin, &quad, target, record.as_mut(), frozen)?
        };
        if !(stats.diff_sq.is_finite() && stats.old_sq.is_finite()) {
            return Err(NonFiniteError {
                layer: l,
                sweep: self.sweeps + 1,
                phase: self.phase,
            }
            .into());
        }
        if let Some(tape) = tape {
            let aux = block
                .touching(l)
                .iter()
                .map(|&t| (t, block.terms[t].record(l, &self.caches[t])))
                .collect();
            let value = new_value.as_ref().unwrap_or(&self.state.layers[l]);
            tape.record(l, value, record.expect("tape"), aux);
        }
        match new_value {
            Some(v) => pending.push((l, v, None)),
            None => self.versions[l] += 1,
        }
        Ok(stats)
    }

    /// [`Relaxation::update_layer`] in offset form (see [`OffsetBase`]).
    fn update_offset_layer(
        &mut self,
        base: &'a OffsetBase,
        l: usize,
        cost: Option<&dyn Interaction>,
        frozen: Option<&[bool]>,
        snapshot: bool,
        pending: &mut Vec<Pending>,
    ) -> Result<UpdateStats> {
        let block = self.block;
        let mut new_value =
            snapshot.then(|| (self.offsets[l].clone(), self.state.layers[l].clone()));
        let stats = {
            let view = StateView {
                input: self.input,
                layers: &self.state.layers,
                versions: &self.versions,
                offsets: Some(Offsets {
                    base: &base.state.layers,
                    d: &self.offsets,
                }),
            };
            let mut slots: Vec<Option<&mut TermCache>> = self.caches.iter_mut().map(Some).collect();
            let mut deltas: Vec<&Tensor> = Vec::with_capacity(4);
            for &t in block.touching(l) {
                let cache = slots[t].take().expect("each term once");
                let term = block.terms[t].as_ref();
                if let Some(db) = term.linear_offset(l, &view, &base.caches[t], cache)? {
                    deltas.push(db);
                }
            }
            let (mut lin_c, mut quad_c) = (None, None);
            if let Some(c) = cost.filter(|c| c.span().touches(l)) {
                lin_c = Some(c.linear(l, &view, &mut self.cost_cache)?);
                quad_c = c.quadratic(l);
                if quad_c.is_some() && !block.kinds[l].is_resistive() {
                    anyhow::bail!(
                        "layer {l}: a Hopfield layer has no quadratic interaction terms (a squared-error nudge cannot act on it)"
                    );
                }
            }
            let (d, s) = match new_value.as_mut() {
                Some((d, s)) => (d, s),
                None => (&mut self.offsets[l], &mut self.state.layers[l]),
            };
            offset_update(
                &base.force[l],
                &deltas,
                lin_c,
                quad_c,
                &base.layers[l],
                &base.state.layers[l],
                d,
                s,
                frozen,
            )
            .map_err(|e| -> anyhow::Error {
                match e {
                    QuadraticError::NotPositive { unit, value } => NoMinimumError {
                        layer: l,
                        unit,
                        value,
                    }
                    .into(),
                    QuadraticError::Shape(e) => e.into(),
                }
            })?
        };
        if !(stats.diff_sq.is_finite() && stats.old_sq.is_finite()) {
            return Err(NonFiniteError {
                layer: l,
                sweep: self.sweeps + 1,
                phase: self.phase,
            }
            .into());
        }
        match new_value {
            Some((d, s)) => pending.push((l, s, Some(d))),
            None => self.versions[l] += 1,
        }
        Ok(stats)
    }

    /// Updates layer `l` alone (the exact minimiser of the energy along it, others fixed).
    pub fn update(&mut self, l: usize, cost: Option<&dyn Interaction>) -> Result<UpdateStats> {
        self.update_layer(l, cost, None, None, false, &mut Vec::new())
    }

    /// One sweep in `order`; `cost` is the optional cost term `β·C` (a nudge).
    pub fn sweep(
        &mut self,
        order: Order,
        cost: Option<&dyn Interaction>,
        frozen: Option<&[bool]>,
        mut tape: Option<&mut Tape>,
    ) -> Result<SweepStats> {
        let n = self.state.layers.len();
        let mut stats = Vec::with_capacity(n);
        for group in order.groups(n) {
            let snapshot = group.windows(2).any(|w| w[1] == w[0] + 1);
            let mut pending = Vec::new();
            for &l in &group {
                stats.push(self.update_layer(
                    l,
                    cost,
                    frozen,
                    tape.as_deref_mut(),
                    snapshot,
                    &mut pending,
                )?);
            }
            for (l, value, offset) in pending {
                self.state.layers[l] = value;
                if let Some(d) = offset {
                    self.offsets[l] = d;
                }
                self.versions[l] += 1;
            }
            if self.noise.is_some() {
                for &l in &group {
                    self.add_update_noise(l)?;
                }
            }
        }
        self.sweeps += 1;
        Ok(measure_of(&stats))
    }
}
