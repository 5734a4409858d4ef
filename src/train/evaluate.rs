//! Evaluation of a model on an evaluation set (in training: after every epoch), split over
//! the ranks of a data-parallel run.

use super::config::RunConfig;
use super::metrics::EvalMetrics;
use super::parallel::eval_part;
use super::trainer::{batch_tensor, noise_seed};
use crate::analog::Circuit;
use crate::core::loss::topk_correct;
use crate::data::{Layout, Loader, LoaderOptions, Subset};
use crate::digital::Digital;
use crate::dist::{agree, Communicator, SingleProcess};
use crate::grad::{free_phase_with, Chain};
use crate::model::feedforward::BnMode;
use crate::model::{prepare, Model};
use anyhow::Result;
use indicatif::ProgressBar;

/// Loss, top-1 and top-5 (percent) of `model` in evaluation mode (BN running statistics,
/// free phase from zero states with the run's `t1`/`tol` and free-phase order), on inputs
/// prepared as the run prepares them, on the circuit the run's `[analog]` description
/// realises (the nominal model when it is ideal).
pub fn evaluate(
    model: &Model,
    subset: &Subset,
    cfg: &RunConfig,
    bar: Option<&ProgressBar>,
) -> Result<EvalMetrics> {
    let circuit = Circuit::new(&cfg.analog, model, cfg.seed)?;
    evaluate_part(model, &circuit, subset, cfg, bar, &SingleProcess)
}

/// [`evaluate`] on the physical circuit `circuit` realises for the nominal `model` (its
/// converters and noise included; the noise of an evaluation is drawn from the device seed).
pub fn evaluate_circuit(
    model: &Model,
    circuit: &Circuit,
    subset: &Subset,
    cfg: &RunConfig,
    bar: Option<&ProgressBar>,
) -> Result<EvalMetrics> {
    evaluate_part(model, circuit, subset, cfg, bar, &SingleProcess)
}

/// [`evaluate_circuit`] split over the ranks of `comm`: each evaluates its contiguous part
/// of `subset` and the sums are reduced (every rank gets the metrics of the whole set).
pub fn evaluate_part(
    model: &Model,
    circuit: &Circuit,
    subset: &Subset,
    cfg: &RunConfig,
    bar: Option<&ProgressBar>,
    comm: &dyn Communicator,
) -> Result<EvalMetrics> {
    let local = agree(comm, eval_part(comm, subset))?;
    let mut sums = agree(comm, eval_sums(model, circuit, &local, cfg, bar))?;
    comm.sum_f64(&mut sums);
    let [loss, top1, top5, n, sweeps] = sums;
    anyhow::ensure!(n > 0.0, "empty evaluation set");
    let pct = |c: f64| 100.0 * c / n;
    Ok(EvalMetrics {
        loss: loss / n,
        top1: pct(top1),
        top5: pct(top5),
        samples: n.round() as usize,
        sweeps: sweeps / n,
    })
}

/// Σ loss, top-1 and top-5 hits, samples and Σ free-phase sweeps over `subset` (which may
/// be empty: one rank's part of a small set).
fn eval_sums(
    model: &Model,
    circuit: &Circuit,
    subset: &Subset,
    cfg: &RunConfig,
    bar: Option<&ProgressBar>,
) -> Result<[f64; 5]> {
    if subset.is_empty() {
        return Ok([0.0; 5]);
    }
    // the physical circuit, and the quantized weights of the digital blocks on top
    let digital = cfg.digital.resolve()?;
    let physical = Digital::on_top(digital.as_ref(), circuit.physical(model)?, model);
    let model = physical.as_ref().unwrap_or(model);
    let kernels = prepare(model)?;
    let runtime =
        (!circuit.is_ideal()).then(|| circuit.runtime(noise_seed(circuit.seed, u64::MAX)));
    let mut chain = Chain::with_analog(model, &kernels, runtime.as_ref());
    chain.digital = digital;
    let batch_size = cfg.data.eval_batch_size.unwrap_or(cfg.data.batch_size);
    let opts = LoaderOptions {
        layout: Layout::Nhwc,
        normalization: cfg.data.normalization(),
        native_size: !cfg.data.pad_to_32,
        ..LoaderOptions::eval(batch_size)
    };
    let loader = Loader::new(subset.clone(), opts)?;
    if let Some(b) = bar {
        b.set_length(loader.len() as u64);
        b.set_position(0);
    }
    let (mut loss, mut top1, mut top5, mut n, mut sweeps) =
        (0.0f64, 0usize, 0usize, 0usize, 0.0f64);
    for batch in loader.spawn() {
        let y = batch.y.clone();
        let x = batch_tensor(batch)?;
        let free = free_phase_with(
            &chain,
            &x,
            BnMode::Eval,
            cfg.algorithm.free_schedule(),
            cfg.algorithm.free_order,
            None,
        )?;
        let losses = free.loss(&y)?;
        loss += losses.losses.iter().map(|&l| l as f64).sum::<f64>();
        top1 += topk_correct(&free.logits, &y, 1);
        top5 += topk_correct(&free.logits, &y, 5);
        n += y.len();
        sweeps +=
            free.sweeps.iter().sum::<usize>() as f64 / free.sweeps.len() as f64 * y.len() as f64;
        if let Some(b) = bar {
            b.inc(1);
        }
    }
    Ok([loss, top1 as f64, top5 as f64, n as f64, sweeps])
}
