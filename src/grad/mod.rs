//! Gradient estimators (SPEC §2): the free phase, EP with implicit BP–EP chaining, and
//! implicit differentiation by truncated BPTT (`exact` and `reference` variants).

pub mod ep;
pub mod id;
pub mod phi;

use crate::core::batchnorm::{update_running_stats, BnBatchStats};
use crate::core::loss::{softmax_cross_entropy, CrossEntropy};
use crate::core::Tensor;
use crate::model::feedforward::{ff_forward, BnMode, FfCache};
use crate::model::readout::logits;
use crate::model::{BatchNorm, Grads, Model, PreparedBlock};
use crate::relax::{relax, BlockState, NonFiniteError, Order, Relaxation, Schedule};
use anyhow::{Context, Result};

/// Which gradient estimator to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Equilibrium propagation chained with backprop (the paper's algorithm, centered ±β).
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

/// When BatchNorm running statistics are updated during a training step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BnUpdates {
    /// Once per batch, from the free-phase drive (SPEC §4).
    #[default]
    OncePerBatch,
    /// At every evaluation of the feedforward transform, as the reference does.
    ReferenceCompat,
}

/// Hyper-parameters of one gradient computation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradConfig {
    pub t1: usize,
    pub t2: usize,
    pub beta: f32,
    pub tol: Option<f32>,
    pub per_sample_tol: bool,
    pub bn_updates: BnUpdates,
}

/// Everything the gradient estimators need from the free phase.
#[derive(Clone, Debug)]
pub struct FreePhase {
    /// Drive `u_k = F_k(x_k)` of each block and the caches of its forward pass
    /// (`ff[k].input` is the block input `x_k`).
    pub drives: Vec<Tensor>,
    pub ff: Vec<FfCache>,
    /// Free equilibrium of each block.
    pub states: Vec<BlockState>,
    /// Sweeps each block ran.
    pub sweeps: Vec<usize>,
    /// Per-sample criterion: the sweep at which each sample of each block stopped.
    pub sample_sweeps: Vec<Vec<usize>>,
    pub logits: Tensor,
}

impl FreePhase {
    /// Cross-entropy of the free logits.
    pub fn loss(&self, labels: &[u32]) -> Result<CrossEntropy> {
        softmax_cross_entropy(&self.logits, labels)
    }
}

/// Free phase (SPEC §2.1): blocks relax in order from zero states, each fed by the last
/// layer of the previous one; logits from the last block.
pub fn free_phase(
    model: &Model,
    kernels: &[PreparedBlock],
    x: &Tensor,
    mode: BnMode,
    schedule: Schedule,
) -> Result<FreePhase> {
    crate::model::check_input(model, x)?;
    let mut out = FreePhase {
        drives: Vec::new(),
        ff: Vec::new(),
        states: Vec::new(),
        sweeps: Vec::new(),
        sample_sweeps: Vec::new(),
        logits: Tensor::default(),
    };
    let mut input = x.clone();
    for (k, (block, kern)) in model.blocks.iter().zip(kernels).enumerate() {
        let mut cache = FfCache::default();
        let drive = ff_forward(block, &kern.ff, &input, mode, &mut cache)
            .with_context(|| format!("block {k}: feedforward transform"))?;
        let start = BlockState::zeros(&block.layout.layers, x.dim0());
        let mut r = Relaxation::new(block, kern, &drive, start, "free phase");
        let report =
            relax(&mut r, Order::EvenFirst, None, schedule, None).map_err(|e| with_block(e, k))?;
        let state = r.into_state();
        input = state.last().clone();
        out.sweeps.push(report.sweeps);
        out.sample_sweeps.push(report.sample_sweeps);
        out.states.push(state);
        out.drives.push(drive);
        out.ff.push(cache);
    }
    out.logits = logits(&model.readout, out.states.last().expect("blocks").last())?;
    Ok(out)
}

/// Adds the block index to relaxation errors (NaN/inf get a hint).
pub(crate) fn with_block(e: anyhow::Error, k: usize) -> anyhow::Error {
    if e.downcast_ref::<NonFiniteError>().is_some() {
        e.context(format!(
            "block {k} diverged (try a smaller learning rate or β, or a smaller `init_v`)"
        ))
    } else {
        e.context(format!("block {k}"))
    }
}

/// BatchNorm running-statistics updates owed by a step: `times` updates of block `block`
/// with `stats`.
#[derive(Clone, Debug)]
pub struct BnUpdate {
    pub block: usize,
    pub stats: BnBatchStats,
    pub times: usize,
}

/// Applies the running-statistics updates of a training step to `model`.
pub fn apply_bn_updates(model: &mut Model, updates: &[BnUpdate]) {
    for u in updates {
        if let Some(bn) = model.blocks[u.block].bn.as_mut() {
            for _ in 0..u.times {
                update_running_stats(
                    &u.stats,
                    BatchNorm::MOMENTUM,
                    bn.running_mean.data_mut(),
                    bn.running_var.data_mut(),
                );
                bn.num_batches_tracked += 1;
            }
        }
    }
}

/// Result of one gradient computation.
#[derive(Clone, Debug)]
pub struct StepOutput {
    /// Estimates of `+∂L/∂θ` (mean loss over the batch), in `Model::param_ids` order.
    pub grads: Grads,
    pub loss: f32,
    pub free: FreePhase,
    pub bn_updates: Vec<BnUpdate>,
}

/// Free phase then the gradients of `algo`, as in a training step (BN in training mode).
/// The model is not modified: apply `bn_updates` with [`apply_bn_updates`].
pub fn compute_gradients(
    model: &Model,
    kernels: &[PreparedBlock],
    x: &Tensor,
    labels: &[u32],
    algo: Algorithm,
    cfg: &GradConfig,
) -> Result<StepOutput> {
    anyhow::ensure!(
        labels.len() == x.dim0(),
        "{} labels for a batch of {}",
        labels.len(),
        x.dim0()
    );
    let schedule = Schedule {
        sweeps: cfg.t1,
        tol: cfg.tol,
        per_sample: cfg.per_sample_tol,
    };
    let free = free_phase(model, kernels, x, BnMode::Train, schedule)?;
    let loss = free.loss(labels)?.mean();
    let (grads, id_stats) = match algo {
        Algorithm::Ep => (
            ep::ep_gradients(model, kernels, &free, labels, cfg.beta, cfg.t2)?,
            Vec::new(),
        ),
        Algorithm::IdExact | Algorithm::IdReference => {
            let out = id::id_gradients(
                model,
                kernels,
                &free,
                labels,
                cfg.t2,
                algo == Algorithm::IdExact,
            )?;
            (out.grads, out.bn_stats)
        }
    };
    let mut bn_updates = Vec::new();
    for (k, cache) in free.ff.iter().enumerate() {
        let Some(stats) = cache.bn_stats.clone() else {
            continue;
        };
        match cfg.bn_updates {
            BnUpdates::OncePerBatch => bn_updates.push(BnUpdate {
                block: k,
                stats,
                times: 1,
            }),
            BnUpdates::ReferenceCompat => match algo {
                // free sweeps + 2 nudged phases + 2 evaluations of Φ
                Algorithm::Ep => bn_updates.push(BnUpdate {
                    block: k,
                    stats,
                    times: free.sweeps[k] + 2 * cfg.t2 + 2,
                }),
                _ => {
                    bn_updates.push(BnUpdate {
                        block: k,
                        stats,
                        times: free.sweeps[k],
                    });
                    if let Some(Some(s)) = id_stats.get(k) {
                        bn_updates.push(BnUpdate {
                            block: k,
                            stats: s.clone(),
                            times: cfg.t2,
                        });
                    }
                }
            },
        }
    }
    Ok(StepOutput {
        grads,
        loss,
        free,
        bn_updates,
    })
}
