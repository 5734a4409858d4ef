//! Gradient estimators (SPEC §2): EP with implicit BP–EP chaining (centered, positive or
//! negative variant) and implicit differentiation by truncated BPTT (`exact` and
//! `reference`), behind one interface ([`GradientEstimator`]) that also gives per-step
//! detail (the static gradient analysis's transient curves). What they share — the free
//! phase, the feedforward VJP and the readout — is in [`chain`]; their settings in
//! [`settings`].

pub mod chain;
pub mod ep;
pub mod id;
pub mod settings;

pub use chain::{free_phase, free_phase_with, Chain, FreePhase};
pub use settings::{AlgoConfig, EpVariant, NudgedForm};

use crate::core::Tensor;
use crate::model::feedforward::{running_stat_updates, BnMode, BnUpdate, TransformEvals};
use crate::model::{Grads, Model, PreparedBlock};
use anyhow::Result;

/// Which gradient estimator to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Equilibrium propagation chained with backprop (the paper's algorithm).
    Ep,
    /// Truncated BPTT through T2 sweeps: the full gradient of the unrolled computation.
    IdExact,
    /// As the reference code: the top-down use of each weight is treated as a constant.
    IdReference,
}

impl std::str::FromStr for Algorithm {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ep" => Ok(Algorithm::Ep),
            "id-exact" => Ok(Algorithm::IdExact),
            "id-reference" => Ok(Algorithm::IdReference),
            _ => anyhow::bail!(
                "unknown algorithm `{s}`: expected `ep`, `id-exact` or `id-reference`"
            ),
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Algorithm::Ep => "ep",
            Algorithm::IdExact => "id-exact",
            Algorithm::IdReference => "id-reference",
        })
    }
}

/// What an estimator returns for one batch.
pub struct Estimate {
    /// Estimates of `+∂L/∂θ` (mean loss over the batch), in `Model::param_ids` order.
    pub grads: Grads,
    /// How often the estimator evaluated each block's feedforward transform (BN statistics).
    pub transform_evals: Vec<TransformEvals>,
}

/// Receives per-step detail: `(block k, step t, the estimate after t steps)`.
pub type StepVisitor<'v> = dyn FnMut(usize, usize, &Grads) -> Result<()> + 'v;

/// Turns the free equilibrium of a batch into parameter gradients.
pub trait GradientEstimator {
    /// Gradients of every parameter.
    fn gradients(&self, chain: &Chain<'_>, free: &FreePhase, labels: &[u32]) -> Result<Estimate>;

    /// Per-step detail: `visit(k, t, grads)` for every block `k` (from the last) and
    /// `t = 0..=T2` steps (EP: nudged sweeps of block k; ID: unrolled sweeps of block k with
    /// the blocks above fully unrolled), with the estimate of block k's parameters (and the
    /// readout's, and block k's feedforward transform's).
    fn transients(
        &self,
        chain: &Chain<'_>,
        free: &FreePhase,
        labels: &[u32],
        visit: &mut StepVisitor<'_>,
    ) -> Result<()>;
}

/// Equilibrium propagation.
impl GradientEstimator for ep::Ep {
    fn gradients(&self, chain: &Chain<'_>, free: &FreePhase, labels: &[u32]) -> Result<Estimate> {
        let out = ep::ep_gradients(chain, free, labels, self)?;
        Ok(Estimate {
            grads: out.grads,
            transform_evals: out.transform_evals,
        })
    }

    fn transients(
        &self,
        chain: &Chain<'_>,
        free: &FreePhase,
        labels: &[u32],
        visit: &mut StepVisitor<'_>,
    ) -> Result<()> {
        ep::ep_transients(chain, free, labels, self, visit).map(|_| ())
    }
}

/// Truncated BPTT through `t2` sweeps in `order` (`exact` or the reference's variant).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Id {
    pub t2: usize,
    pub exact: bool,
    pub order: crate::relax::Order,
}

impl GradientEstimator for Id {
    fn gradients(&self, chain: &Chain<'_>, free: &FreePhase, labels: &[u32]) -> Result<Estimate> {
        let sweeps = vec![self.t2; chain.len()];
        let out = id::id_from_block(chain, free, labels, 0, &sweeps, self.order, self.exact)?;
        Ok(Estimate {
            transform_evals: out.transform_evals(self.t2),
            grads: out.grads,
        })
    }

    fn transients(
        &self,
        chain: &Chain<'_>,
        free: &FreePhase,
        labels: &[u32],
        visit: &mut StepVisitor<'_>,
    ) -> Result<()> {
        let kk = chain.len();
        for k in (0..kk).rev() {
            for t in 0..=self.t2 {
                let mut sweeps = vec![self.t2; kk];
                sweeps[k] = t;
                let out =
                    id::id_from_block(chain, free, labels, k, &sweeps, self.order, self.exact)?;
                visit(k, t, &out.grads)?;
            }
        }
        Ok(())
    }
}

/// The estimator `cfg` describes.
pub fn estimator(cfg: &AlgoConfig) -> Box<dyn GradientEstimator> {
    match cfg.name {
        Algorithm::Ep => Box::new(ep::Ep::from_config(cfg)),
        Algorithm::IdExact | Algorithm::IdReference => Box::new(Id {
            t2: cfg.t2,
            exact: cfg.name == Algorithm::IdExact,
            order: cfg.free_order,
        }),
    }
}

/// Result of one gradient computation.
#[derive(Clone, Debug)]
pub struct StepOutput {
    /// Estimates of `+∂L/∂θ` (mean loss over the batch), in `Model::param_ids` order.
    pub grads: Grads,
    pub loss: f32,
    pub free: FreePhase,
    /// The BatchNorm running-statistics updates the step owes (apply with
    /// [`crate::model::feedforward::apply_bn_updates`]).
    pub bn_updates: Vec<BnUpdate>,
}

/// Free phase then the gradients of `cfg.name`, as in a training step (BN in training mode).
/// The model is not modified: apply `bn_updates` with
/// [`crate::model::feedforward::apply_bn_updates`].
pub fn compute_gradients(
    model: &Model,
    kernels: &[PreparedBlock],
    x: &Tensor,
    labels: &[u32],
    cfg: &AlgoConfig,
) -> Result<StepOutput> {
    compute_gradients_from(model, kernels, x, labels, cfg, None)
}

/// [`compute_gradients`] with the free phase started from `start` (a warm start) instead of
/// zero states.
pub fn compute_gradients_from(
    model: &Model,
    kernels: &[PreparedBlock],
    x: &Tensor,
    labels: &[u32],
    cfg: &AlgoConfig,
    start: Option<&[crate::relax::BlockState]>,
) -> Result<StepOutput> {
    compute_gradients_on(model, kernels, x, labels, cfg, start, None)
}

/// [`compute_gradients_from`] on a physical circuit (see [`crate::analog`]): `model` and
/// `kernels` are its (varied) parameters, `analog` its converters and noise for this step.
pub fn compute_gradients_on(
    model: &Model,
    kernels: &[PreparedBlock],
    x: &Tensor,
    labels: &[u32],
    cfg: &AlgoConfig,
    start: Option<&[crate::relax::BlockState]>,
    analog: Option<&crate::analog::Runtime>,
) -> Result<StepOutput> {
    anyhow::ensure!(
        labels.len() == x.dim0(),
        "{} labels for a batch of {}",
        labels.len(),
        x.dim0()
    );
    let chain = Chain::with_analog(model, kernels, analog);
    let free = free_phase_with(
        &chain,
        x,
        BnMode::Train,
        cfg.free_schedule(),
        cfg.free_order,
        start,
    )?;
    let loss = free.loss(labels)?.mean();
    let est = estimator(cfg).gradients(&chain, &free, labels)?;
    let bn_updates = running_stat_updates(
        cfg.bn_updates,
        &free.transform_evals(),
        &est.transform_evals,
    );
    Ok(StepOutput {
        grads: est.grads,
        loss,
        free,
        bn_updates,
    })
}
