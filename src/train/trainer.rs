//! The training loop: epochs of gradient steps (EP or ID), evaluation, metrics, progress
//! and checkpoints that resume exactly.

use super::checkpoint::{
    load_carried_states, load_checkpoint, load_circuit_devices, save_checkpoint_with, EpochAccum,
    LoopState,
};
use super::config::RunConfig;
use super::data::{load_run_data, RunData};
use super::evaluate::evaluate_part;
use super::metrics::{power_record, EpochRecord, MetricsWriter, PhaseSweeps, StepRecord};
use super::optim::Optimizer;
use super::parallel::{
    any_rank, check_split, comm_line, has_batchnorm, injected_failure, same_config, sum_step,
    StepSums,
};
use super::session::{note, prepare as prepare_session, record_changes, start};
use crate::analog::Circuit;
use crate::core::loss::topk_correct;
use crate::core::Tensor;
use crate::data::{Augment, Batch, Layout, Loader, LoaderOptions};
use crate::digital::Digital;
use crate::dist::{
    agree, broadcast_string, gather_batch_states, or_abort, part_of_states, part_range,
    Communicator, SingleProcess,
};
use crate::grad::{compute_gradients_with, BatchPart, StepOptions};
use crate::model::feedforward::apply_bn_updates;
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
    /// Whether this session was asked to stop (the interrupt flag).
    fn interrupted(&self) -> bool {
        self.interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// Whether this session should stop now, after `session_steps` steps (`interrupted`:
    /// some rank was asked to stop).
    fn should_stop(&self, session_steps: u64, interrupted: bool) -> bool {
        self.stop_after_steps.is_some_and(|s| session_steps >= s) || interrupted
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
pub(super) fn noise_seed(seed: u64, step: u64) -> u64 {
    seed ^ step.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The generator of the stochastic rounding after optimiser step `step`.
fn storage_rng(seed: u64, step: u64) -> rand_chacha::ChaCha8Rng {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5354_4f52_4147_4521);
    rng.set_stream(step);
    rng
}

pub(super) fn batch_tensor(b: Batch) -> Result<Tensor> {
    Ok(Tensor::from_vec(&b.shape, b.x)?)
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

/// The mean sweeps per batch of each block and phase over the epoch (`None` when no batch
/// recorded them, e.g. an epoch resumed from an older checkpoint).
fn sweeps_per_block(a: &EpochAccum) -> Option<BTreeMap<String, PhaseSweeps>> {
    (a.phase_batches > 0).then(|| {
        a.phase_sweeps_sum
            .iter()
            .enumerate()
            .map(|(k, sum)| {
                let mut mean = PhaseSweeps::default();
                mean.add_scaled(sum, 1.0 / a.phase_batches as f64);
                (format!("block{k}"), mean)
            })
            .collect()
    })
}

fn mean_sweeps(s: &[usize]) -> f64 {
    s.iter().sum::<usize>() as f64 / s.len().max(1) as f64
}

/// Trains (or resumes) the run described by `cfg` in `opts.run_dir`.
pub fn train(cfg: RunConfig, opts: TrainOptions) -> Result<RunSummary> {
    train_with(cfg, opts, &SingleProcess)
}

/// [`train`] as one of the ranks of `comm` (data-parallel: see [`crate::dist`]). Rank 0
/// alone claims and writes the run directory and prints progress; every rank computes its
/// part of each batch and applies the same summed gradients, and every rank ends with the
/// same result or error (a failure inside a synchronised-BatchNorm step, or in rank 0's
/// writing, prints its message and ends every rank at once: [`crate::dist::or_abort`]).
pub fn train_with(
    cfg: RunConfig,
    opts: TrainOptions,
    comm: &dyn Communicator,
) -> Result<RunSummary> {
    let mut cfg = cfg;
    let lead = comm.rank() == 0;
    let opts = TrainOptions {
        quiet: opts.quiet || !lead,
        ..opts
    };
    agree(comm, cfg.validate())?;
    let prepared = agree(
        comm,
        lead.then(|| prepare_session(&mut cfg, &opts)).transpose(),
    )?;
    let cfg = same_config(comm, cfg)?;
    // data and model before the directory: a run that cannot start leaves none behind
    let data = agree(comm, load_run_data(&cfg.data, cfg.seed, opts.quiet))?;
    agree(comm, check_split(comm, &cfg, &data))?;
    let mut model = agree(comm, Model::new(cfg.model.clone(), cfg.seed))?;
    let cfg_toml = cfg.to_toml()?;
    let session_dir = agree(
        comm,
        prepared.map(|p| start(p, &cfg_toml, &opts)).transpose(),
    )?;
    let dir = &match &session_dir {
        Some(s) => s.lock.dir().to_path_buf(),
        None => PathBuf::new(),
    };
    let dir = &PathBuf::from(broadcast_string(comm, &dir.to_string_lossy())?);
    let mut opt = Optimizer::new(cfg.optim.clone(), &model);
    let mut circuit = agree(comm, Circuit::new(&cfg.analog, &model, cfg.seed))?;
    let digital = cfg.digital.resolve()?;
    let mut state = agree(
        comm,
        if opts.resume {
            load_checkpoint(&dir.join(LAST), &mut model, &mut opt)
                .and_then(|s| {
                    load_circuit_devices(&dir.join(LAST), &model, &mut circuit, true)?;
                    Ok(s)
                })
                .map_err(|e| e.context(format!("cannot resume from {}", dir.join(LAST).display())))
        } else {
            // the programmed weights start on their storage levels
            circuit.store(&mut model, &mut storage_rng(circuit.seed, 0));
            Ok(LoopState::default())
        },
    )?;
    let metrics = agree(
        comm,
        session_dir
            .as_ref()
            .map(|s| -> Result<MetricsWriter> {
                let m = MetricsWriter::open(dir, opts.resume.then_some(state.step))?;
                record_changes(s, &m, &state, &cfg_toml, opts.quiet)?;
                Ok(m)
            })
            .transpose(),
    )?;
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
        if comm.size() > 1 {
            note(&format!(
                "data-parallel over {} ranks ({}): {} samples per rank and batch",
                comm.size(),
                comm.describe(),
                part_range(cfg.data.batch_size, 0, comm.size()).len()
            ));
        }
    }
    let split = comm.size() > 1;
    let sync_bn = split && has_batchnorm(&model);
    // seconds in the gradient sums and in all sums (BatchNorm's too), for the closing note
    let (mut grad_sum_secs, sums_before) = (0.0f64, comm.sum_seconds());
    let comm_note = |model: &Model, steps: u64, grad_secs: f64| {
        if split && !opts.quiet {
            note(&comm_line(comm, model, steps, grad_secs, sums_before));
        }
    };
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
            let whole = batch.y.len();
            let batch = if split {
                batch.rows(part_range(whole, comm.rank(), comm.size()))
            } else {
                batch
            };
            let y = batch.y.clone();
            let x = batch_tensor(batch)?;
            let physical = Digital::on_top(digital.as_ref(), circuit.physical(&model)?, &model);
            let circuit_model = physical.as_ref().unwrap_or(&model);
            let runtime = (!circuit.is_ideal())
                .then(|| circuit.runtime(noise_seed(circuit.seed, state.step)));
            let at = (epoch + 1, i + 1, state.step + 1);
            // the carried states are the whole previous batch's: this rank starts its part
            // from the same samples' states (a batch of another size starts cold)
            let whole_carry = carry
                .as_deref()
                .filter(|c: &&[BlockState]| c[0].layers[0].dim0() == whole);
            let part_carry = whole_carry
                .filter(|_| split)
                .map(|c| part_of_states(c, part_range(whole, comm.rank(), comm.size())));
            let start = if split {
                part_carry.as_deref()
            } else {
                whole_carry
            };
            // the resistor power of DRN blocks is read out on logged steps only
            let logged = (state.step + 1) % cfg.train.log_every as u64 == 0;
            let part = split.then_some(BatchPart {
                batch: whole,
                sums: comm.batch_sums(),
            });
            let local = injected_failure(comm.rank(), at.2)
                .and_then(|()| prepare(circuit_model))
                .and_then(|kernels| {
                    let opts = StepOptions {
                        start,
                        part,
                        power: logged,
                        analog: runtime.as_ref(),
                        digital,
                    };
                    compute_gradients_with(circuit_model, &kernels, &x, &y, &cfg.algorithm, opts)
                })
                .map(|out| {
                    let n = y.len() as u64;
                    let sums = StepSums {
                        loss_sum: out.loss as f64 * n as f64,
                        top1: topk_correct(&out.free.logits, &y, 1) as u64,
                        top5: topk_correct(&out.free.logits, &y, 5) as u64,
                        samples: n,
                        free_sweeps: mean_sweeps(&out.free.sweeps),
                        interrupted: false,
                    };
                    (out, sums)
                })
                .map_err(|e| stop(e, at, saved));
            // a rank that failed inside synchronised BatchNorm cannot rejoin the others
            let local = if sync_bn {
                or_abort(comm, local)
            } else {
                local
            };
            let t_sum = Instant::now();
            let (mut out, step) = sum_step(comm, &model, local, opts.interrupted())?;
            if let (Some(d), true) = (digital, split) {
                // the gradients of the whole batch, as the optimiser receives them
                d.weight_gradients(&mut out.grads);
            }
            drop(physical);
            grad_sum_secs += t_sum.elapsed().as_secs_f64();
            let power = power_record(&out.power);
            if let Some((id, _)) = out
                .grads
                .entries
                .iter()
                .find(|(_, g)| crate::core::ops::first_non_finite(g).is_some())
            {
                let e = anyhow::anyhow!("non-finite gradient of `{}`", model.param_name(*id));
                return Err(stop(e, at, saved));
            }
            let step_loss = step.loss_sum / step.samples.max(1) as f64;
            if let Err(why) = state.loss_watch.record(state.step + 1, step_loss) {
                return Err(stop(anyhow::anyhow!(why), at, saved));
            }
            apply_bn_updates(&mut model, &out.bn_updates);
            let before = circuit.programmed_weights(&model);
            opt.step(&mut model, &out.grads, lr);
            model.project_params();
            if circuit.programs() {
                let mut rng = storage_rng(circuit.seed ^ 0x50_554c_5345, state.step + 1);
                let fired = circuit.program(&mut model, before, state.step + 1, &mut rng)?;
                for (b, n) in fired.update {
                    *state.accum.pulses.entry(b).or_insert(0) += n;
                }
                for (b, n) in fired.refresh {
                    *state.accum.refresh_pulses.entry(b).or_insert(0) += n;
                }
            }
            circuit.store(&mut model, &mut storage_rng(circuit.seed, state.step + 1));
            if cfg.algorithm.warm_start {
                carry = Some(
                    gather_batch_states(comm, &out.free.states).map_err(|e| stop(e, at, saved))?,
                );
            }
            let a = &mut state.accum;
            a.loss_sum += step.loss_sum;
            a.top1 += step.top1;
            a.top5 += step.top5;
            a.samples += step.samples;
            a.batches += 1;
            a.free_sweeps_sum += step.free_sweeps;
            if !power.is_empty() {
                a.power_batches += 1;
                for (k, p) in &power {
                    *a.power_sums.entry(k.clone()).or_default() += p;
                }
            }
            a.phase_sweeps_sum
                .resize(out.sweeps.len(), Default::default());
            for (sum, s) in a.phase_sweeps_sum.iter_mut().zip(&out.sweeps) {
                sum.add_scaled(s, 1.0);
            }
            a.phase_batches += 1;
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
                let record = StepRecord {
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
                    power,
                };
                if let Some(m) = &metrics {
                    or_abort(comm, m.step(&record))?;
                }
                if bars.plain {
                    note(&format!("epoch {} batch {}/{nb} step {}: loss {loss:.4} top1 {top1:.2}% top5 {top5:.2}% lr {lr:.3e} {ips:.1} img/s", epoch + 1, state.batch, state.step));
                }
                if let Err(why) = state.loss_watch.end_interval(state.step, &cfg.train) {
                    return Err(stop(anyhow::anyhow!(why), at, saved));
                }
            }
            let stop_now = opts.should_stop(session_steps, step.interrupted);
            let t = &cfg.train;
            let due = (t.checkpoint_every > 0 && state.step % t.checkpoint_every as u64 == 0)
                || (t.checkpoint_minutes > 0.0
                    && last_save.elapsed().as_secs_f64() >= 60.0 * t.checkpoint_minutes);
            if state.batch < nb && (stop_now || due) {
                let mut s = state.clone();
                s.elapsed += session.elapsed().as_secs_f64();
                if lead {
                    or_abort(
                        comm,
                        save_checkpoint_with(
                            &dir.join(LAST),
                            &model,
                            &opt,
                            &s,
                            &cfg_toml,
                            carry.as_deref(),
                            circuit.tensors(&model),
                        ),
                    )?;
                }
                saved = Some((state.epoch, state.step));
                last_save = Instant::now();
            }
            if stop_now && state.batch < nb {
                comm_note(&model, session_steps, grad_sum_secs);
                return Ok(RunSummary {
                    run_dir: dir.clone(),
                    epochs: epochs_of(&metrics)?,
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
                evaluate_part(&model, &circuit, subset, &cfg, bars.batch.as_ref(), comm)?,
            );
        }
        let val = match &data.val {
            Some(v) => {
                bars.start("validation".into(), 0, 0);
                Some(evaluate_part(
                    &model,
                    &circuit,
                    v,
                    &cfg,
                    bars.batch.as_ref(),
                    comm,
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
            power: a
                .power_sums
                .iter()
                .map(|(k, s)| (k.clone(), s / a.power_batches.max(1) as f64))
                .collect(),
            sweeps_per_block: sweeps_per_block(&a),
            pulses: circuit.programs().then(|| a.pulses.clone()),
            refresh_pulses: circuit.has_pairs().then(|| a.refresh_pulses.clone()),
        };
        if let Some(m) = &metrics {
            or_abort(comm, m.epoch(&rec))?;
        }
        bars.println(epoch_line(&rec, &data));
        state.epoch += 1;
        state.batch = 0;
        let score = val.as_ref().map(|v| v.top1).unwrap_or(first.top1);
        let mut s = state.clone();
        s.elapsed += session.elapsed().as_secs_f64();
        let best = state.best_top1.is_none_or(|b| score > b);
        if best {
            state.best_top1 = Some(score);
            state.best_epoch = Some(epoch + 1);
            s.best_top1 = state.best_top1;
            s.best_epoch = state.best_epoch;
        }
        if lead {
            let save = |name| {
                save_checkpoint_with(
                    &dir.join(name),
                    &model,
                    &opt,
                    &s,
                    &cfg_toml,
                    carry.as_deref(),
                    circuit.tensors(&model),
                )
            };
            or_abort(
                comm,
                if best { save(BEST) } else { Ok(()) }.and_then(|()| save(LAST)),
            )?;
        }
        saved = Some((state.epoch, state.step));
        last_save = Instant::now();
        crate::hooks::epoch_finished(&rec)?;
        let interrupted = any_rank(comm, opts.interrupted());
        if opts.should_stop(session_steps, interrupted) && state.epoch < cfg.train.epochs {
            comm_note(&model, session_steps, grad_sum_secs);
            return Ok(RunSummary {
                run_dir: dir.clone(),
                epochs: epochs_of(&metrics)?,
                model,
                completed: false,
            });
        }
    }
    if let Some(b) = &bars.batch {
        b.finish_and_clear();
    }
    comm_note(&model, session_steps, grad_sum_secs);
    Ok(RunSummary {
        run_dir: dir.clone(),
        epochs: epochs_of(&metrics)?,
        model,
        completed: true,
    })
}

/// The epoch records of the run (rank 0, which writes them; none on the other ranks).
fn epochs_of(metrics: &Option<MetricsWriter>) -> Result<Vec<EpochRecord>> {
    metrics.as_ref().map_or(Ok(Vec::new()), |m| m.epochs())
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
