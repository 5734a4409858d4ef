//! What the trainer does differently when a run is spread over several ranks
//! ([`crate::dist`]): one configuration for all (rank 0's), the checks a split batch needs,
//! the per-step sums (gradients, training statistics, failures and stop requests in one
//! message) and the evaluation split over the ranks.

use super::config::RunConfig;
use super::data::RunData;
use crate::data::Subset;
use crate::dist::{agree, broadcast_string, part_range, sum_gradients, Communicator};
use crate::grad::StepOutput;
use crate::model::Model;
use anyhow::Result;

/// Rank 0's configuration on every rank (rank 0 is the one that read the checkpoint of a
/// resumed run and claimed its directory).
pub fn same_config(comm: &dyn Communicator, cfg: RunConfig) -> Result<RunConfig> {
    if comm.size() == 1 {
        return Ok(cfg);
    }
    let text = agree(
        comm,
        if comm.rank() == 0 {
            cfg.to_toml()
        } else {
            Ok(String::new())
        },
    )?;
    let text = broadcast_string(comm, &text)?;
    agree(
        comm,
        if comm.rank() == 0 {
            Ok(cfg)
        } else {
            RunConfig::from_toml(&text)
        },
    )
}

/// Refuses what a run split over `comm.size()` ranks cannot do: a batch with fewer samples
/// than ranks (the last, partial one included).
pub fn check_split(comm: &dyn Communicator, cfg: &RunConfig, data: &RunData) -> Result<()> {
    let n = comm.size();
    if n == 1 {
        return Ok(());
    }
    let bs = cfg.data.batch_size;
    anyhow::ensure!(
        bs >= n,
        "data.batch_size = {bs} is smaller than the {n} ranks: every rank needs at least one \
         sample of each batch (use a larger batch or fewer ranks)"
    );
    let last = data.train.len() % bs;
    anyhow::ensure!(
        last == 0 || last >= n,
        "the last batch of an epoch has {last} sample(s) ({} training images, data.batch_size = \
         {bs}), fewer than the {n} ranks: change data.batch_size or data.train_limit",
        data.train.len()
    );
    Ok(())
}

/// The sums of one training step over the ranks.
#[derive(Clone, Debug, Default)]
pub struct StepSums {
    /// Σ of the per-sample losses.
    pub loss_sum: f64,
    pub top1: u64,
    pub top5: u64,
    pub samples: u64,
    /// Mean over the ranks of their mean free-phase sweeps per block.
    pub free_sweeps: f64,
    /// Some rank asked to stop (Ctrl-C, SIGTERM).
    pub interrupted: bool,
}

/// This rank's step (`local`: its gradients and statistics, or its error) summed with the
/// other ranks': the summed gradients (every rank gets the same) and statistics, or the
/// error of every failed rank. `interrupted`: this rank was asked to stop.
pub fn sum_step(
    comm: &dyn Communicator,
    model: &Model,
    local: Result<(StepOutput, StepSums)>,
    interrupted: bool,
) -> Result<(StepOutput, StepSums)> {
    if comm.size() == 1 {
        return local.map(|(out, mut s)| {
            s.interrupted = interrupted;
            (out, s)
        });
    }
    let (mut grads, mut extra) = match &local {
        Ok((out, s)) => (
            out.grads.clone(),
            [
                s.loss_sum,
                s.top1 as f64,
                s.top5 as f64,
                s.samples as f64,
                s.free_sweeps,
                0.0,
                f64::from(u8::from(interrupted)),
            ],
        ),
        Err(_) => (
            model.zero_grads(),
            [
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                1.0,
                f64::from(u8::from(interrupted)),
            ],
        ),
    };
    sum_gradients(comm, &mut grads, &mut extra);
    if extra[5] > 0.0 {
        // every rank learns every failed rank's message
        agree(comm, local.map(|_| ()))?;
        anyhow::bail!("a rank failed without a message");
    }
    let (mut out, local_sums) = local?;
    out.grads = grads;
    whole_batch_power(comm, &mut out, local_sums.samples as f64, extra[3]);
    let sums = StepSums {
        loss_sum: extra[0],
        top1: extra[1].round() as u64,
        top5: extra[2].round() as u64,
        samples: extra[3].round() as u64,
        free_sweeps: extra[4] / comm.size() as f64,
        interrupted: extra[6] > 0.0,
    };
    Ok((out, sums))
}

/// The DRN power readout of the whole batch: each rank read the batch mean `P_r` of its
/// `n_r` samples, the batch's is `Σ_r n_r·P_r / N`. Called by every rank after a step
/// without failures, when all ranks hold readings of the same blocks and phases (the same
/// model, algorithm and logged step).
fn whole_batch_power(comm: &dyn Communicator, out: &mut StepOutput, local: f64, total: f64) {
    let mut v: Vec<f64> = out
        .power
        .iter()
        .flat_map(|b| std::iter::once(b.free).chain(b.nudged.iter().map(|n| n.power)))
        .map(|p| p * local)
        .collect();
    if v.is_empty() {
        return;
    }
    comm.sum_f64(&mut v);
    let mut sums = v.into_iter().map(|p| p / total.max(1.0));
    for b in &mut out.power {
        b.free = sums.next().unwrap_or(b.free);
        for n in &mut b.nudged {
            n.power = sums.next().unwrap_or(n.power);
        }
    }
}

/// Whether any rank's `flag` is set.
pub fn any_rank(comm: &dyn Communicator, flag: bool) -> bool {
    let mut v = [f64::from(u8::from(flag))];
    comm.sum_f64(&mut v);
    v[0] > 0.0
}

/// This rank's part of an evaluation set (contiguous, in order).
pub fn eval_part(comm: &dyn Communicator, subset: &Subset) -> Result<Subset> {
    if comm.size() == 1 {
        return Ok(subset.clone());
    }
    let r = part_range(subset.len(), comm.rank(), comm.size());
    Ok(Subset::new(
        subset.dataset().clone(),
        subset.indices()[r].to_vec(),
    )?)
}

/// Whether `model` normalises with batch statistics (then a split step communicates inside
/// the gradient computation, and a rank that fails there cannot rejoin the others).
pub fn has_batchnorm(model: &Model) -> bool {
    model.blocks.iter().any(|b| b.bn.is_some())
}

/// Test hook for failure handling across ranks: with `FFEBM_TEST_FAIL=R:S` in its
/// environment, rank `R` fails at step `S` of the run, as a rank whose relaxation diverged
/// would (every other rank and every other step is unaffected).
pub fn injected_failure(rank: usize, step: u64) -> Result<()> {
    let Ok(spec) = std::env::var("FFEBM_TEST_FAIL") else {
        return Ok(());
    };
    let parsed = spec.split_once(':').and_then(|(r, s)| {
        Some((
            r.trim().parse::<usize>().ok()?,
            s.trim().parse::<u64>().ok()?,
        ))
    });
    match parsed {
        None => anyhow::bail!("FFEBM_TEST_FAIL = `{spec}`: expected RANK:STEP, e.g. 1:3"),
        Some((r, s)) if (r, s) == (rank, step) => {
            anyhow::bail!("injected failure of rank {rank} at step {step} (FFEBM_TEST_FAIL)")
        }
        Some(_) => Ok(()),
    }
}

/// Where a split session's communication time went: the gradient all-reduce (message size,
/// time per step) and all sums (BatchNorm statistics included), waiting for the slowest rank
/// included.
pub fn comm_line(
    comm: &dyn Communicator,
    model: &Model,
    steps: u64,
    grad_secs: f64,
    sums_before: f64,
) -> String {
    let values = model.num_params();
    let per = |s: f64| 1e3 * s / steps.max(1) as f64;
    format!(
        "{} ranks: gradient all-reduce {:.2} ms/step ({values} values, {:.1} MB), all sums incl. BatchNorm {:.2} ms/step, over {steps} steps",
        comm.size(),
        per(grad_secs),
        (values * crate::dist::GRADIENT_BYTES_PER_VALUE) as f64 / 1e6,
        per(comm.sum_seconds() - sums_before),
    )
}
