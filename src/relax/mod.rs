//! Relaxation of an energy-based block to equilibrium (SPEC §1.2–1.3).
//!
//! A [`Relaxation`] owns the layer states `s_0 … s_{n−1}` of one block for one batch, the
//! block's (constant) drive `u = F(x)` and the caches of its couplings. One sweep updates
//! every layer once, asynchronously: even layers (0, 2, …) then odd ones (free phase), or
//! odd then even (nudged phases). A layer update is
//!
//! ```text
//! s_l ← act(bottom_up_l + top_down_l),  act = clamp(α·, 0, 1)  (identity for an unclamped last layer)
//! ```
//!
//! Each coupling's forward value `P(W ⋆ s_{l−1} + b)` (bottom-up of `s_l`) and its pool
//! argmax (needed by the top-down term of `s_{l−1}`) are cached with the version of
//! `s_{l−1}` they were computed from and recomputed only when `s_{l−1}` changed: in the
//! alternating schedule every coupling then costs one forward and one transposed
//! convolution per sweep.

mod tape;

pub use tape::{Tape, UpdateEvent};

use crate::core::conv::{conv2d, conv2d_pool, conv2d_transposed, conv2d_transposed_unpool};
use crate::core::dense::{dense_forward, dense_transposed};
use crate::core::ops::{activate, UpdateStats};
use crate::core::{PoolIndex, Tensor};
use crate::model::readout::loss_and_state_grad;
use crate::model::{Block, CouplingKind, LayerShape, PackedCoupling, PreparedBlock, Synapse};
use anyhow::Result;

/// NaN or infinity appeared in a layer during a relaxation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("non-finite values (NaN/inf) in layer {layer} at sweep {sweep} of the {phase}")]
pub struct NonFiniteError {
    pub layer: usize,
    pub sweep: usize,
    pub phase: &'static str,
}

/// Which parity is updated first in a sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Free phase: layers 0, 2, 4, … then 1, 3, ….
    EvenFirst,
    /// Nudged phases: odd layers first.
    OddFirst,
}

/// The nudge on the last layer of a block (its top-down term in nudged phases).
#[derive(Clone, Copy, Debug)]
pub enum Nudge<'a> {
    /// Last block: `−β · W_roᵀ (softmax(z) − onehot(y))` at the current `s_n`, per sample.
    Loss {
        beta: f32,
        readout: &'a Synapse,
        labels: &'a [u32],
    },
    /// Other blocks: `+β · δ`, the error current from the block above.
    Current { beta: f32, delta: &'a Tensor },
}

impl<'a> Nudge<'a> {
    /// The nudge of a block in EP with signed strength `beta`: the loss for the last block
    /// (`delta = None`), else the error current `delta` from the block above.
    pub fn for_block(
        delta: Option<&'a Tensor>,
        beta: f32,
        readout: &'a Synapse,
        labels: &'a [u32],
    ) -> Self {
        match delta {
            None => Nudge::Loss {
                beta,
                readout,
                labels,
            },
            Some(delta) => Nudge::Current { beta, delta },
        }
    }
}

/// Layer states of one block for a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockState {
    pub layers: Vec<Tensor>,
}

impl BlockState {
    /// All layers at zero (the SPEC's initial state).
    pub fn zeros(shapes: &[LayerShape], batch: usize) -> Self {
        BlockState {
            layers: shapes
                .iter()
                .map(|s| Tensor::zeros(&s.batched(batch)))
                .collect(),
        }
    }

    /// The last layer (the block's output).
    pub fn last(&self) -> &Tensor {
        self.layers.last().expect("a block has at least one layer")
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

/// A block's states, drive and coupling caches during relaxation.
pub struct Relaxation<'a> {
    block: &'a Block,
    kernels: &'a PreparedBlock,
    drive: &'a Tensor,
    pub state: BlockState,
    /// Incremented on every update of a layer.
    versions: Vec<u64>,
    /// `bottom_up[l]` (l ≥ 1): forward value of coupling `l` at version `bu_from[l]` of `s_{l−1}`.
    bottom_up: Vec<Tensor>,
    bu_from: Vec<Option<u64>>,
    pool_idx: Vec<PoolIndex>,
    top_down: Tensor,
    /// Sweeps run so far.
    pub sweeps: usize,
    /// Forward coupling evaluations (for the cost accounting of benchmarks).
    pub forward_evals: usize,
    phase: &'static str,
}

impl<'a> Relaxation<'a> {
    /// Starts from `state` (e.g. zeros, or a copy of the free equilibrium).
    pub fn new(
        block: &'a Block,
        kernels: &'a PreparedBlock,
        drive: &'a Tensor,
        state: BlockState,
        phase: &'static str,
    ) -> Self {
        let n = state.layers.len();
        Relaxation {
            block,
            kernels,
            drive,
            state,
            versions: vec![0; n],
            bottom_up: vec![Tensor::default(); n],
            bu_from: vec![None; n],
            pool_idx: vec![PoolIndex::default(); n],
            top_down: Tensor::default(),
            sweeps: 0,
            forward_evals: 0,
            phase,
        }
    }

    pub fn into_state(self) -> BlockState {
        self.state
    }

    fn coupling(&self, l: usize) -> (CouplingKind, &'a Synapse, &'a PackedCoupling) {
        (
            self.block.layout.couplings[l - 1],
            &self.block.couplings[l - 1],
            &self.kernels.couplings[l - 1],
        )
    }

    /// Makes `bottom_up[l]` (and its pool indices) current for the present `s_{l−1}`.
    fn ensure_bottom_up(&mut self, l: usize) -> Result<()> {
        if self.bu_from[l] == Some(self.versions[l - 1]) {
            return Ok(());
        }
        let (kind, syn, packed) = self.coupling(l);
        let x = &self.state.layers[l - 1];
        let bias = syn.bias.as_ref().map(|b| b.data());
        match kind {
            CouplingKind::Conv { pool: true, .. } => conv2d_pool(
                x,
                packed.conv(),
                bias,
                &mut self.bottom_up[l],
                &mut self.pool_idx[l],
            )?,
            CouplingKind::Conv { pool: false, .. } => {
                conv2d(x, packed.conv(), bias, &mut self.bottom_up[l])?
            }
            CouplingKind::Dense { .. } => {
                dense_forward(x, packed.dense(), bias, &mut self.bottom_up[l])?
            }
        }
        self.bu_from[l] = Some(self.versions[l - 1]);
        self.forward_evals += 1;
        Ok(())
    }

    /// Computes `top_down_l` into `self.top_down`; `false` when it is zero.
    fn compute_top_down(&mut self, l: usize, nudge: Option<&Nudge<'_>>) -> Result<bool> {
        let n = self.state.layers.len();
        if l + 1 == n {
            match nudge {
                None => Ok(false),
                Some(Nudge::Loss {
                    beta,
                    readout,
                    labels,
                }) => {
                    let (_, g) =
                        loss_and_state_grad(readout, &self.state.layers[l], labels, -beta)?;
                    self.top_down = g;
                    Ok(true)
                }
                Some(Nudge::Current { beta, delta }) => {
                    self.top_down.assign(delta);
                    crate::core::ops::scale(&mut self.top_down, *beta);
                    Ok(true)
                }
            }
        } else {
            let (kind, _, packed) = self.coupling(l + 1);
            match kind {
                CouplingKind::Conv { pool: true, .. } => {
                    self.ensure_bottom_up(l + 1)?;
                    conv2d_transposed_unpool(
                        &self.state.layers[l + 1],
                        &self.pool_idx[l + 1],
                        packed.conv(),
                        &mut self.top_down,
                    )?;
                }
                CouplingKind::Conv { pool: false, .. } => {
                    conv2d_transposed(&self.state.layers[l + 1], packed.conv(), &mut self.top_down)?
                }
                CouplingKind::Dense { .. } => dense_transposed(
                    &self.state.layers[l + 1],
                    packed.dense(),
                    self.state.layers[l].shape(),
                    &mut self.top_down,
                )?,
            }
            Ok(true)
        }
    }

    fn update_layer(
        &mut self,
        l: usize,
        nudge: Option<&Nudge<'_>>,
        frozen: Option<&[bool]>,
        tape: Option<&mut Tape>,
    ) -> Result<UpdateStats> {
        if l > 0 {
            self.ensure_bottom_up(l)?;
        }
        let has_td = self.compute_top_down(l, nudge)?;
        let n = self.state.layers.len();
        let clamped = l + 1 < n || self.block.layout.clamp_last;
        let bu = if l == 0 {
            self.drive
        } else {
            &self.bottom_up[l]
        };
        let td = has_td.then_some(&self.top_down);
        let mut v = tape.is_some().then(Tensor::default);
        let stats = activate(
            bu,
            td,
            self.block.layout.alpha,
            clamped,
            &mut self.state.layers[l],
            v.as_mut(),
            frozen,
        )?;
        self.versions[l] += 1;
        if !(stats.diff_sq.is_finite() && stats.old_sq.is_finite()) {
            return Err(NonFiniteError {
                layer: l,
                sweep: self.sweeps + 1,
                phase: self.phase,
            }
            .into());
        }
        if let Some(tape) = tape {
            let pooled = |i: usize, idx: &PoolIndex| {
                matches!(
                    self.block.layout.couplings.get(i.wrapping_sub(1)),
                    Some(CouplingKind::Conv { pool: true, .. })
                )
                .then(|| idx.clone())
            };
            let bu_idx = if l > 0 {
                pooled(l, &self.pool_idx[l])
            } else {
                None
            };
            let td_idx = if l + 1 < n {
                pooled(l + 1, &self.pool_idx[l + 1])
            } else {
                None
            };
            tape.record(l, &self.state.layers[l], v.expect("tape"), bu_idx, td_idx);
        }
        Ok(stats)
    }

    /// One asynchronous sweep; returns the convergence measure.
    pub fn sweep(
        &mut self,
        order: Order,
        nudge: Option<&Nudge<'_>>,
        frozen: Option<&[bool]>,
        mut tape: Option<&mut Tape>,
    ) -> Result<SweepStats> {
        let n = self.state.layers.len();
        let first = match order {
            Order::EvenFirst => 0,
            Order::OddFirst => 1,
        };
        let mut stats = Vec::with_capacity(n);
        for parity in [first, 1 - first] {
            for l in (parity..n).step_by(2) {
                stats.push(self.update_layer(l, nudge, frozen, tape.as_deref_mut())?);
            }
        }
        self.sweeps += 1;
        Ok(measure_of(&stats))
    }

    /// Zero padding of the block's convolutions.
    pub fn padding(&self) -> usize {
        self.block.layout.padding
    }

    /// The pool indices of pooled conv coupling `l` at the current `s_{l−1}` (recomputed if
    /// stale), as used by `∂Φ/∂W_l`.
    pub fn pool_indices(&mut self, l: usize) -> Result<Option<&PoolIndex>> {
        match self.block.layout.couplings[l - 1] {
            CouplingKind::Conv { pool: true, .. } => {
                self.ensure_bottom_up(l)?;
                Ok(Some(&self.pool_idx[l]))
            }
            _ => Ok(None),
        }
    }
}

/// How long to relax and when to stop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Number of sweeps (the cap when `tol` is set).
    pub sweeps: usize,
    /// Stop when the convergence measure drops below `tol`.
    pub tol: Option<f32>,
    /// Per-sample criterion: each sample stops updating on its own.
    pub per_sample: bool,
}

impl Schedule {
    pub fn fixed(sweeps: usize) -> Self {
        Schedule {
            sweeps,
            tol: None,
            per_sample: false,
        }
    }
}

/// Outcome of [`relax`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RelaxReport {
    pub sweeps: usize,
    pub converged: bool,
    pub final_measure: f64,
    /// Per-sample criterion: the sweep at which each sample stopped (or the cap).
    pub sample_sweeps: Vec<usize>,
}

/// Runs sweeps according to `schedule` (SPEC §1.3).
pub fn relax(
    r: &mut Relaxation<'_>,
    order: Order,
    nudge: Option<&Nudge<'_>>,
    schedule: Schedule,
    mut tape: Option<&mut Tape>,
) -> Result<RelaxReport> {
    let b = r.state.layers[0].dim0();
    let mut frozen = vec![false; b];
    let mut sample_sweeps = vec![schedule.sweeps; b];
    let mut report = RelaxReport {
        sweeps: 0,
        converged: false,
        final_measure: f64::INFINITY,
        sample_sweeps: Vec::new(),
    };
    for t in 0..schedule.sweeps {
        crate::hooks::check_cancelled()?;
        let use_mask = schedule.per_sample && schedule.tol.is_some();
        let stats = r.sweep(
            order,
            nudge,
            use_mask.then_some(frozen.as_slice()),
            tape.as_deref_mut(),
        )?;
        report.sweeps = t + 1;
        report.final_measure = stats.measure;
        if let Some(tol) = schedule.tol {
            if schedule.per_sample {
                for (i, m) in stats.per_sample.iter().enumerate() {
                    if !frozen[i] && *m < tol as f64 {
                        frozen[i] = true;
                        sample_sweeps[i] = t + 1;
                    }
                }
                if frozen.iter().all(|&f| f) {
                    report.converged = true;
                    break;
                }
            } else if stats.measure < tol as f64 {
                report.converged = true;
                break;
            }
        }
    }
    if schedule.per_sample {
        report.sample_sweeps = sample_sweeps;
    }
    Ok(report)
}
