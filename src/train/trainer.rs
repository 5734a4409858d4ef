//! The training loop: epochs of gradient steps (EP or ID), evaluation, metrics, progress
//! and checkpoints that resume exactly.

use super::checkpoint::{
    load_carried_states, load_checkpoint, load_circuit_devices, save_checkpoint_with, LoopState,
};
use super::config::RunConfig;
use super::data::{load_run_data, RunData};
use super::metrics::{EpochRecord, EvalMetrics, MetricsWriter, StepRecord};
use super::optim::Optimizer;
use super::session::{note, prepare as prepare_session, record_changes, start};
use crate::analog::Circuit;
use crate::core::loss::topk_correct;
use crate::core::Tensor;
use crate::data::{Augment, Batch, Layout, Loader, LoaderOptions, Subset};
use crate::grad::{compute_gradients_on, free_phase_with, Chain};
use crate::model::feedforward::apply_bn_updates;
use crate::model::feedforward::BnMode;
use crate::model::{prepare, Model};
use crate::relax::BlockState;
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How to run [`train`].
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// The run directory (claimed for the run's lifetime: a directory in use by another
    /// process, or one that already holds a run when not resuming, is refused).
    pub run_dir: PathBuf,
    /// Number the directory: the run goes to the first free `{run_dir}-NNN` (NNN = 001,
    /// 002, …), created atomically, e.g. `runs/cifar10_tiny-001`.
    pub numbered: bool,
    /// Continue the run in `run_dir` from its last checkpoint. Settings that would break
    /// exact resumption must not differ from the checkpoint's (see [`super::resume`]).
    pub resume: bool,
    pub quiet: bool,
    /// Stop (as if interrupted) after this many optimiser steps in this session.
    pub stop_after_steps: Option<u64>,
    /// Set from outside (e.g. on Ctrl-C) to stop after the current step: the state is
    /// checkpointed to `checkpoint_last` and the run can be resumed exactly.
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl TrainOptions {
    /// Whether this session should stop now, after `session_steps` steps.
    fn should_stop(&self, session_steps: u64) -> bool {
        self.stop_after_steps.is_some_and(|s| session_steps >= s)
            || self
                .interrupt
                .as_ref()
                .is_some_and(|f| f.load(Ordering::SeqCst))
    }
}

/// What a finished (or stopped) session leaves.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub epochs: Vec<EpochRecord>,
    pub model: Model,
    pub completed: bool,
}

pub const LAST: &str = "checkpoint_last.safetensors";
pub const BEST: &str = "checkpoint_best.safetensors";

/// The seed of the analog noise of optimiser step `step` (`u64::MAX`: evaluations).
fn noise_seed(seed: u64, step: u64) -> u64 {
    seed ^ step.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The generator of the stochastic rounding after optimiser step `step`.
fn storage_rng(seed: u64, step: u64) -> rand_chacha::ChaCha8Rng {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5354_4f52_4147_4521);
    rng.set_stream(step);
    rng
}

fn batch_tensor(b: Batch) -> Result<Tensor> {
    Ok(Tensor::from_vec(&b.shape, b.x)?)
}

/// Loss, top-1 and top-5 (percent) of `model` in evaluation mode (BN running statistics,
/// free phase from zero states with the run's `t1`/`tol` and free-phase order), on inputs
/// prepared as the run prepares them.
pub fn evaluate(
    model: &Model,
    subset: &Subset,
    cfg: &RunConfig,
    bar: Option<&ProgressBar>,
) -> Result<EvalMetrics> {
    let circuit = Circuit::new(&cfg.analog, model, cfg.seed)?;
    evaluate_circuit(model, &circuit, subset, cfg, bar)
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
    let physical = circuit.physical(model)?;
    let model = physical.as_ref().unwrap_or(model);
    let kernels = prepare(model)?;
    let runtime =
        (!circuit.is_ideal()).then(|| circuit.runtime(noise_seed(circuit.seed, u64::MAX)));
    let chain = Chain::with_analog(model, &kernels, runtime.as_ref());
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
    anyhow::ensure!(n > 0, "empty evaluation set");
    let pct = |c: usize| 100.0 * c as f64 / n as f64;
    Ok(EvalMetrics {
        loss: loss / n as f64,
        top1: pct(top1),
        top5: pct(top5),
        samples: n,
        sweeps: sweeps / n as f64,
    })
}

struct Bars {
    batch: Option<ProgressBar>,
    plain: bool,
}

impl Bars {
    fn new(quiet: bool) -> Self {
        let tty = std::io::stderr().is_terminal() && !quiet;
        let batch = tty.then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed} < {eta})",
                )
                .expect("template")
                .progress_chars("=> "),
            );
            b
        });
        Bars {
            batch,
            plain: !tty && !quiet,
        }
    }

    fn start(&self, prefix: String, len: usize, pos: usize) {
        if let Some(b) = &self.batch {
            b.set_prefix(prefix);
            b.set_length(len as u64);
            b.set_position(pos as u64);
            b.reset_eta();
        }
    }

    fn println(&self, msg: String) {
        match &self.batch {
            Some(b) => b.println(msg),
            None if self.plain => note(&msg),
            None => {}
        }
    }
}

fn mean_sweeps(s: &[usize]) -> f64 {
    s.iter().sum::<usize>() as f64 / s.len().max(1) as f64
}

/// Trains (or resumes) the run described by `cfg` in `opts.run_dir`.
pub fn train(cfg: RunConfig, opts: TrainOptions) -> Result<RunSummary> {
    let mut cfg = cfg;
    cfg.validate()?;
    let prepared = prepare_session(&mut cfg, &opts)?;
    // data and model before the directory: a run that cannot start leaves none behind
    let data = load_run_data(&cfg.data, cfg.seed, opts.quiet)?;
    let mut model = Model::new(cfg.model.clone(), cfg.seed)?;
    let cfg_toml = cfg.to_toml()?;
    let session_dir = start(prepared, &cfg_toml, &opts)?;
    let dir = &session_dir.lock.dir().to_path_buf();
    let mut opt = Optimizer::new(cfg.optim.clone(), &model);
    let mut circuit = Circuit::new(&cfg.analog, &model, cfg.seed)?;
    let mut state = if opts.resume {
        let state = load_checkpoint(&dir.join(LAST), &mut model, &mut opt)
            .and_then(|s| {
                load_circuit_devices(&dir.join(LAST), &model, &mut circuit, true)?;
                Ok(s)
            })
            .map_err(|e| e.context(format!("cannot resume from {}", dir.join(LAST).display())))?;
        state
    } else {
        // the programmed weights start on their storage levels
        circuit.store(&mut model, &mut storage_rng(circuit.seed, 0));
        LoopState::default()
    };
    let metrics = MetricsWriter::open(dir, opts.resume.then_some(state.step))?;
    record_changes(&session_dir, &metrics, &state, &cfg_toml, opts.quiet)?;
    let bars = Bars::new(opts.quiet);
    if !opts.quiet {
        let what = if opts.resume {
            format!(
                "resuming at epoch {}, batch {}",
                state.epoch + 1,
                state.batch
            )
        } else {
            "starting".into()
        };
        note(&format!(
            "run {} ({what}): {} on {} ({} train{}, {}), {} parameters",
            dir.display(),
            format!("{:?}", cfg.algorithm.name).to_lowercase(),
            data.kind.display_name(),
            data.train.len(),
            data.val
                .as_ref()
                .map(|v| format!(", {} val", v.len()))
                .unwrap_or_default(),
            data.tests
                .iter()
                .map(|(n, s)| format!("{} {n}", s.len()))
                .collect::<Vec<_>>()
                .join(", "),
            model.num_params()
        ));
    }
    let session = Instant::now();
    let mut last_save = Instant::now();
    // the last checkpoint of the run: (epoch, step), for messages
    let mut saved = opts.resume.then_some((state.epoch, state.step));
    let mut session_steps = 0u64;
    // `at`: (epoch, batch, step) of the step that failed, all counted from 1
    let stop = |e: anyhow::Error, at: (usize, usize, u64), saved: Option<(usize, u64)>| {
        stopped(e, at, &cfg, dir, saved)
    };
    // warm start: the free states of the previous batch (restored with the checkpoint)
    let mut carry = if opts.resume {
        load_carried_states(&dir.join(LAST))?
    } else {
        None
    };
    while state.epoch < cfg.train.epochs {
        let epoch = state.epoch;
        let lr = cfg.lr(epoch);
        let mut lo = LoaderOptions::train(data.kind, cfg.data.batch_size, cfg.seed, epoch as u64);
        lo.augment = if cfg.data.augment {
            Augment::STANDARD
        } else {
            Augment::NONE
        };
        lo.layout = Layout::Nhwc;
        lo.normalization = cfg.data.normalization();
        lo.native_size = !cfg.data.pad_to_32;
        let loader = Loader::new(data.train.clone(), lo)?;
        let nb = loader.len();
        bars.start(
            format!("epoch {}/{}", epoch + 1, cfg.train.epochs),
            nb,
            state.batch,
        );
        let epoch_start = Instant::now();
        let acc_before = state.accum.seconds;
        for (i, batch) in (state.batch..).zip(loader.spawn_from(state.batch)) {
            let y = batch.y.clone();
            let x = batch_tensor(batch)?;
            let physical = circuit.physical(&model)?;
            let circuit_model = physical.as_ref().unwrap_or(&model);
            let kernels = prepare(circuit_model)?;
            let runtime = (!circuit.is_ideal())
                .then(|| circuit.runtime(noise_seed(circuit.seed, state.step)));
            let at = (epoch + 1, i + 1, state.step + 1);
            let start = carry
                .as_deref()
                .filter(|c: &&[BlockState]| c[0].layers[0].dim0() == x.dim0());
            let out = compute_gradients_on(
                circuit_model,
                &kernels,
                &x,
                &y,
                &cfg.algorithm,
                start,
                runtime.as_ref(),
            )
            .map_err(|e| stop(e, at, saved))?;
            drop(physical);
            if let Some((id, _)) = out
                .grads
                .entries
                .iter()
                .find(|(_, g)| crate::core::ops::first_non_finite(g).is_some())
            {
                let e = anyhow::anyhow!("non-finite gradient of `{}`", model.param_name(*id));
                return Err(stop(e, at, saved));
            }
            if let Err(why) = state.loss_watch.record(state.step + 1, out.loss as f64) {
                return Err(stop(anyhow::anyhow!(why), at, saved));
            }
            apply_bn_updates(&mut model, &out.bn_updates);
            let before = circuit.programmed_weights(&model);
            opt.step(&mut model, &out.grads, lr);
            model.project_params();
            if circuit.programs() {
                let mut rng = storage_rng(circuit.seed ^ 0x50_554c_5345, state.step + 1);
                for (b, n) in circuit.program(&mut model, before, &mut rng)? {
                    *state.accum.pulses.entry(b).or_insert(0) += n;
                }
            }
            circuit.store(&mut model, &mut storage_rng(circuit.seed, state.step + 1));
            if cfg.algorithm.warm_start {
                carry = Some(out.free.states.clone());
            }
            let a = &mut state.accum;
            let n = y.len() as u64;
            a.loss_sum += out.loss as f64 * n as f64;
            a.top1 += topk_correct(&out.free.logits, &y, 1) as u64;
            a.top5 += topk_correct(&out.free.logits, &y, 5) as u64;
            a.samples += n;
            a.batches += 1;
            a.free_sweeps_sum += mean_sweeps(&out.free.sweeps);
            a.seconds = acc_before + epoch_start.elapsed().as_secs_f64();
            state.step += 1;
            state.batch = i + 1;
            session_steps += 1;
            let (loss, top1, top5, ips) = (
                a.loss_sum / a.samples as f64,
                100.0 * a.top1 as f64 / a.samples as f64,
                100.0 * a.top5 as f64 / a.samples as f64,
                a.samples as f64 / a.seconds.max(1e-9),
            );
            if let Some(b) = &bars.batch {
                b.set_message(format!("loss {loss:.3} top1 {top1:.1}% {ips:.0} img/s"));
                b.set_position(state.batch as u64);
            }
            if state.step % cfg.train.log_every as u64 == 0 {
                let time = state.elapsed + session.elapsed().as_secs_f64();
                metrics.step(&StepRecord {
                    kind: "step".into(),
                    epoch,
                    step: state.step,
                    loss,
                    top1,
                    top5,
                    lr,
                    free_sweeps: a.free_sweeps_sum / a.batches as f64,
                    images_per_s: ips,
                    time,
                })?;
                if bars.plain {
                    note(&format!("epoch {} batch {}/{nb} step {}: loss {loss:.4} top1 {top1:.2}% top5 {top5:.2}% lr {lr:.3e} {ips:.1} img/s", epoch + 1, state.batch, state.step));
                }
                if let Err(why) = state.loss_watch.end_interval(state.step, &cfg.train) {
                    return Err(stop(anyhow::anyhow!(why), at, saved));
                }
            }
            let stop_now = opts.should_stop(session_steps);
            let t = &cfg.train;
            let due = (t.checkpoint_every > 0 && state.step % t.checkpoint_every as u64 == 0)
                || (t.checkpoint_minutes > 0.0
                    && last_save.elapsed().as_secs_f64() >= 60.0 * t.checkpoint_minutes);
            if state.batch < nb && (stop_now || due) {
                let mut s = state.clone();
                s.elapsed += session.elapsed().as_secs_f64();
                save_checkpoint_with(
                    &dir.join(LAST),
                    &model,
                    &opt,
                    &s,
                    &cfg_toml,
                    carry.as_deref(),
                    circuit.tensors(&model),
                )?;
                saved = Some((state.epoch, state.step));
                last_save = Instant::now();
            }
            if stop_now && state.batch < nb {
                return Ok(RunSummary {
                    run_dir: dir.clone(),
                    epochs: metrics.epochs()?,
                    model,
                    completed: false,
                });
            }
        }
        // end of epoch: evaluate, record, checkpoint
        let mut evals = BTreeMap::new();
        for (name, subset) in &data.tests {
            bars.start(name.clone(), 0, 0);
            evals.insert(
                name.clone(),
                evaluate_circuit(&model, &circuit, subset, &cfg, bars.batch.as_ref())?,
            );
        }
        let val = match &data.val {
            Some(v) => {
                bars.start("validation".into(), 0, 0);
                Some(evaluate_circuit(
                    &model,
                    &circuit,
                    v,
                    &cfg,
                    bars.batch.as_ref(),
                )?)
            }
            None => None,
        };
        let a = std::mem::take(&mut state.accum);
        let test_name = data
            .tests
            .first()
            .map(|(n, _)| n.clone())
            .unwrap_or_default();
        let first = evals.get(&test_name).cloned().unwrap_or_default();
        let rec = EpochRecord {
            kind: "epoch".into(),
            epoch: epoch + 1,
            step: state.step,
            lr,
            train_loss: a.loss_sum / a.samples.max(1) as f64,
            train_top1: 100.0 * a.top1 as f64 / a.samples.max(1) as f64,
            train_top5: 100.0 * a.top5 as f64 / a.samples.max(1) as f64,
            val_loss: val.as_ref().map(|v| v.loss),
            val_top1: val.as_ref().map(|v| v.top1),
            val_top5: val.as_ref().map(|v| v.top5),
            test_name,
            test_loss: first.loss,
            test_top1: first.top1,
            test_top5: first.top5,
            evals: evals.clone(),
            free_sweeps: a.free_sweeps_sum / a.batches.max(1) as f64,
            images_per_s: a.samples as f64 / a.seconds.max(1e-9),
            epoch_time: a.seconds,
            time: state.elapsed + session.elapsed().as_secs_f64(),
            pulses: circuit.programs().then(|| a.pulses.clone()),
        };
        metrics.epoch(&rec)?;
        bars.println(epoch_line(&rec, &data));
        state.epoch += 1;
        state.batch = 0;
        let score = val.as_ref().map(|v| v.top1).unwrap_or(first.top1);
        let mut s = state.clone();
        s.elapsed += session.elapsed().as_secs_f64();
        if state.best_top1.is_none_or(|b| score > b) {
            state.best_top1 = Some(score);
            state.best_epoch = Some(epoch + 1);
            s.best_top1 = state.best_top1;
            s.best_epoch = state.best_epoch;
            save_checkpoint_with(
                &dir.join(BEST),
                &model,
                &opt,
                &s,
                &cfg_toml,
                carry.as_deref(),
                circuit.tensors(&model),
            )?;
        }
        save_checkpoint_with(
            &dir.join(LAST),
            &model,
            &opt,
            &s,
            &cfg_toml,
            carry.as_deref(),
            circuit.tensors(&model),
        )?;
        saved = Some((state.epoch, state.step));
        last_save = Instant::now();
        crate::hooks::epoch_finished(&rec)?;
        if opts.should_stop(session_steps) && state.epoch < cfg.train.epochs {
            return Ok(RunSummary {
                run_dir: dir.clone(),
                epochs: metrics.epochs()?,
                model,
                completed: false,
            });
        }
    }
    if let Some(b) = &bars.batch {
        b.finish_and_clear();
    }
    Ok(RunSummary {
        run_dir: dir.clone(),
        epochs: metrics.epochs()?,
        model,
        completed: true,
    })
}

fn epoch_line(r: &EpochRecord, data: &RunData) -> String {
    let mut s = format!(
        "epoch {:>3}: train loss {:.4} top1 {:.2}% | ",
        r.epoch, r.train_loss, r.train_top1
    );
    if let (Some(l), Some(t)) = (r.val_loss, r.val_top1) {
        s.push_str(&format!("val loss {l:.4} top1 {t:.2}% | "));
    }
    for (name, _) in &data.tests {
        let e = &r.evals[name];
        s.push_str(&format!(
            "{name} loss {:.4} top1 {:.2}% top5 {:.2}% | ",
            e.loss, e.top1, e.top5
        ));
    }
    s.push_str(&format!(
        "{:.0} img/s, {:.0} s",
        r.images_per_s, r.epoch_time
    ));
    s
}

/// The error of a run stopped by a failed or diverging step: where, why, what to do, and
/// the last checkpoint that exists (or that none does).
fn stopped(
    e: anyhow::Error,
    (epoch, batch, step): (usize, usize, u64),
    cfg: &RunConfig,
    dir: &Path,
    saved: Option<(usize, u64)>,
) -> anyhow::Error {
    let checkpoint = match saved {
        Some((epoch, step)) => format!(
            "The last checkpoint, {}, holds the run after step {step} ({epoch} complete epoch(s)).",
            dir.join(LAST).display()
        ),
        None => format!(
            "There is no checkpoint yet: the run stopped before its first one (written at epoch ends, every train.checkpoint_minutes = {} minutes{}).",
            cfg.train.checkpoint_minutes,
            match cfg.train.checkpoint_every {
                0 => String::new(),
                n => format!(" and every {n} steps"),
            }
        ),
    };
    anyhow::anyhow!(
        "training stopped at epoch {epoch}, batch {batch} (step {step}): {e:#}. Hint: lower optim.lr or algorithm.beta and start a new run from the same settings: ffebm train --config {} --set optim.lr=LOWER --out NEW_DIR. {checkpoint}",
        dir.join("config.toml").display()
    )
}
