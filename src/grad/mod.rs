//! Gradient estimators (SPEC §2): EP with implicit BP–EP chaining (centered, positive or
//! negative variant) and implicit differentiation by truncated BPTT (`exact` and
//! `reference`), behind one interface ([`GradientEstimator`]) that also gives per-step
//! detail (the static gradient analysis's transient curves). What they share — the free
//! phase, the feedforward VJP and the readout — is in [`chain`]; their settings in
//! [`settings`].

pub mod chain;
pub mod ep;
pub mod id;
pub mod power;
pub mod report;
pub mod settings;

pub use chain::{free_phase, free_phase_kernels, free_phase_with, BatchPart, Chain, FreePhase};
pub use report::{sweep_table, PhaseRecord};
pub use settings::{AlgoConfig, EpVariant, FreeConvs, NudgedForm, SolverKind};

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
    /// Resistor power at the nudged equilibria of DRN blocks (`(block, β, power)`), when
    /// asked for ([`estimator_with_power`]).
    pub nudged_power: Vec<(usize, power::NudgedPower)>,
    /// The sweeps each block's relaxations ran beyond the free phase (`free` left at 0).
    pub sweeps: Vec<PhaseSweeps>,
    /// EP: each block's nudged relaxations `[β_a, β_b]` (empty for ID).
    pub nudged_reports: Vec<[Option<crate::relax::RelaxReport>; 2]>,
}

/// Sweeps of one block's relaxations in one gradient computation (or their mean over
/// batches): the free phase, EP's nudged phases (`plus` at β_a = +β, `minus` at β_b = −β; 0
/// when the variant contrasts with the free state instead) and ID's unrolled sweeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PhaseSweeps {
    pub free: f64,
    #[serde(default)]
    pub plus: f64,
    #[serde(default)]
    pub minus: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unrolled: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl PhaseSweeps {
    /// `self + w·other`, field by field.
    pub fn add_scaled(&mut self, other: &PhaseSweeps, w: f64) {
        self.free += w * other.free;
        self.plus += w * other.plus;
        self.minus += w * other.minus;
        self.unrolled += w * other.unrolled;
    }
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
        let ran =
            |r: &Option<crate::relax::RelaxReport>| r.as_ref().map_or(0.0, |r| r.sweeps as f64);
        let sweeps = out
            .reports
            .iter()
            .map(|[a, b]| PhaseSweeps {
                plus: ran(a),
                minus: ran(b),
                ..Default::default()
            })
            .collect();
        Ok(Estimate {
            grads: out.grads,
            transform_evals: out.transform_evals,
            nudged_power: out.power,
            sweeps,
            nudged_reports: out.reports,
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
        let unrolled = PhaseSweeps {
            unrolled: self.t2 as f64,
            ..Default::default()
        };
        Ok(Estimate {
            transform_evals: out.transform_evals(self.t2),
            grads: out.grads,
            nudged_power: Vec::new(),
            sweeps: vec![unrolled; chain.len()],
            nudged_reports: Vec::new(),
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
    estimator_with_power(cfg, false)
}

/// The estimator `cfg` describes; with `power`, EP also reads out the resistor power at the
/// nudged equilibria of DRN blocks.
pub fn estimator_with_power(cfg: &AlgoConfig, power: bool) -> Box<dyn GradientEstimator> {
    match cfg.name {
        Algorithm::Ep => Box::new(ep::Ep {
            power,
            ..ep::Ep::from_config(cfg)
        }),
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
    /// Resistor power of every DRN block at its equilibria, when asked for (else empty).
    pub power: Vec<power::BlockPower>,
    /// Sweeps each block ran, per phase.
    pub sweeps: Vec<PhaseSweeps>,
    /// EP: each block's nudged relaxations `[β_a, β_b]` (the free ones are in `free.reports`).
    pub nudged_reports: Vec<[Option<crate::relax::RelaxReport>; 2]>,
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
    compute_gradients_with(
        model,
        kernels,
        x,
        labels,
        cfg,
        StepOptions {
            start,
            ..Default::default()
        },
    )
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
    let opts = StepOptions {
        start,
        analog,
        ..Default::default()
    };
    compute_gradients_with(model, kernels, x, labels, cfg, opts)
}

/// Options of one gradient computation beyond the batch and the settings.
#[derive(Clone, Copy, Default)]
pub struct StepOptions<'a> {
    /// Start the free phase from these states (a warm start) instead of zero states.
    pub start: Option<&'a [crate::relax::BlockState]>,
    /// Compute on `part` of a batch split over processes (`None`: the whole batch): the
    /// gradients are this part's contributions to those of the mean loss over the whole batch
    /// (sum them over the parts), BatchNorm uses the whole batch's statistics (so the
    /// running-statistics updates are the whole batch's), and `loss` is this part's mean.
    pub part: Option<BatchPart<'a>>,
    /// Read out the resistor power of DRN blocks at the free and (EP) nudged equilibria (of
    /// this part of the batch).
    pub power: bool,
    /// Run on a physical circuit (see [`crate::analog`]): `model` and `kernels` are then its
    /// (varied) parameters, and this its converters and noise for the step; `None`: ideal.
    pub analog: Option<&'a crate::analog::Runtime>,
    /// Quantized feedforward blocks (see [`crate::digital`]): the quantizers of their
    /// activations and errors; `model` and `kernels` then hold their quantized weights
    /// ([`crate::digital::Digital::quantized_weights`]). Without `part` the feedforward
    /// parameters' gradients are quantized too (with `part`, quantize the sum over the parts
    /// with [`crate::digital::Digital::weight_gradients`]). `None`: float32.
    pub digital: Option<crate::digital::Digital>,
}

/// [`compute_gradients`] with [`StepOptions`].
pub fn compute_gradients_with(
    model: &Model,
    kernels: &[PreparedBlock],
    x: &Tensor,
    labels: &[u32],
    cfg: &AlgoConfig,
    opts: StepOptions<'_>,
) -> Result<StepOutput> {
    let StepOptions {
        start,
        part,
        power,
        analog,
        digital,
    } = opts;
    anyhow::ensure!(
        labels.len() == x.dim0(),
        "{} labels for a batch of {}",
        labels.len(),
        x.dim0()
    );
    let mut chain = match part {
        Some(p) => Chain::for_part(model, kernels, p),
        None => Chain::new(model, kernels),
    };
    chain.analog = analog;
    chain.digital = digital;
    let exact = free_phase_kernels(model, cfg)?;
    let exact_chain = exact.as_deref().map(|k| chain.on_kernels(k));
    let free = free_phase_with(
        exact_chain.as_ref().unwrap_or(&chain),
        x,
        BnMode::Train,
        cfg.free_schedule(),
        cfg.free_order,
        start,
    )?;
    let loss = free.loss(labels)?.mean();
    let mut est = estimator_with_power(cfg, power).gradients(&chain, &free, labels)?;
    if let (Some(d), None) = (digital, part) {
        d.weight_gradients(&mut est.grads);
    }
    let power = if power {
        power::block_powers(&chain, &free, &est.nudged_power)?
    } else {
        Vec::new()
    };
    let bn_updates = running_stat_updates(
        cfg.bn_updates,
        &free.transform_evals(),
        &est.transform_evals,
    );
    let sweeps = est
        .sweeps
        .iter()
        .zip(&free.sweeps)
        .map(|(s, &f)| PhaseSweeps {
            free: f as f64,
            ..*s
        })
        .collect();
    Ok(StepOutput {
        grads: est.grads,
        loss,
        free,
        bn_updates,
        power,
        sweeps,
        nudged_reports: est.nudged_reports,
    })
}
