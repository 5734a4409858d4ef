//! `ffebm train` and `ffebm eval`.

use super::common::{errln, outln, Global};
use crate::train::checkpoint::checkpoint_config;
use crate::train::trainer::LAST;
use crate::train::{train_with, RunConfig, TrainOptions};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Signals arriving this soon after the first interrupt are the same interrupt (GNU
/// `timeout` and job schedulers signal the process and then its process group).
const SAME_INTERRUPT: Duration = Duration::from_secs(1);

/// Watches SIGINT, SIGTERM and SIGHUP. The first sets the returned flag: the trainer then
/// finishes its step, writes `checkpoint_last` and returns; the second value is the signal.
/// Another Ctrl-C (SIGINT) more than a second later exits at once (the last complete
/// checkpoint stays valid: checkpoints are written atomically); repeated SIGTERM or SIGHUP,
/// and anything within the first second, are the same request.
fn interrupt_on_signals(quiet: bool) -> Result<(Arc<AtomicBool>, Arc<AtomicI32>)> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("cannot install the signal handlers")?;
    let flag = Arc::new(AtomicBool::new(false));
    let which = Arc::new(AtomicI32::new(0));
    let (f, w) = (flag.clone(), which.clone());
    std::thread::spawn(move || {
        let mut first: Option<Instant> = None;
        for sig in signals.forever() {
            match first {
                None => {
                    first = Some(Instant::now());
                    w.store(sig, Ordering::SeqCst);
                    f.store(true, Ordering::SeqCst);
                    if !quiet {
                        errln!("\n{}: finishing the current step and saving a checkpoint (Ctrl-C again to abort)", signal_name(sig));
                    }
                }
                Some(t) if sig == SIGINT && t.elapsed() >= SAME_INTERRUPT => {
                    errln!("\ninterrupted again: exiting without a new checkpoint");
                    std::process::exit(130);
                }
                Some(_) => {}
            }
        }
    });
    Ok((flag, which))
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        signal_hook::consts::SIGTERM => "SIGTERM",
        signal_hook::consts::SIGHUP => "SIGHUP",
        _ => "interrupt",
    }
}

/// The preset `ffebm train` runs without arguments.
pub const DEFAULT_PRESET: &str = "cifar10_tiny";

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Built-in preset (default: cifar10_tiny; see `ffebm presets`).
    #[arg(long)]
    pub preset: Option<String>,
    /// Run description in TOML, merged over the preset (see README, "Presets and
    /// configuration"). --set and the flags below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override any configuration key, e.g. `--set optim.lr=3e-4 --set algorithm.name=id-exact`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Readout classes (default: the dataset's).
    #[arg(long)]
    pub classes: Option<usize>,
    /// Data root (default: $FFEBM_DATA, then the download cache); stored absolute.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Download the dataset from its official source if it is not found.
    #[arg(long)]
    pub download: bool,
    /// Number of epochs (overrides train.epochs from the preset, the file and --set).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Run directory (default: runs/<preset>-NNN, the first free number).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint (see README, "Run
    /// directories": what may change on resume).
    #[arg(long, conflicts_with_all = ["preset", "config", "out"])]
    pub resume: Option<PathBuf>,
    /// Stop after this many optimiser steps of this session, saving `checkpoint_last` (e.g.
    /// to fit a cluster job's time limit); continue with --resume.
    #[arg(long, value_name = "STEPS")]
    pub stop_after: Option<u64>,
}

/// `key=value` for a string value, quoted as TOML.
fn set_string(key: &str, value: &Path) -> String {
    format!("{key}={}", toml::Value::String(value.display().to_string()))
}

/// The explicit flags as `--set`s, which come after the user's and so override them.
fn flag_sets(a: &TrainArgs) -> Result<Vec<String>> {
    let mut sets = a.sets.clone();
    if let Some(d) = &a.data_dir {
        let abs = std::path::absolute(d).with_context(|| format!("--data-dir {}", d.display()))?;
        sets.push(set_string("data.dir", &abs));
    }
    if a.download {
        sets.push("data.download=true".into());
    }
    if let Some(e) = a.epochs {
        sets.push(format!("train.epochs={e}"));
    }
    Ok(sets)
}

/// Makes `data.dir` absolute, so that `eval` and `--resume` work from any directory.
fn absolute_data_dir(cfg: &mut RunConfig) -> Result<()> {
    if let Some(d) = &cfg.data.dir {
        cfg.data.dir =
            Some(std::path::absolute(d).with_context(|| format!("data.dir {}", d.display()))?);
    }
    Ok(())
}

pub fn run(g: &Global, a: TrainArgs) -> Result<()> {
    let mut sets = flag_sets(&a)?;
    let (mut cfg, opts) = match &a.resume {
        Some(dir) => {
            let path = dir.join("config.toml");
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read {} (is {} a run directory?)",
                    path.display(),
                    dir.display()
                )
            })?;
            let cfg = RunConfig::resolve(None, a.classes, Some(&text), &sets, g.seed_flag)
                .with_context(|| format!("in {}", path.display()))?;
            let opts = TrainOptions {
                run_dir: dir.clone(),
                resume: true,
                ..Default::default()
            };
            (cfg, opts)
        }
        None => {
            let text = a
                .config
                .as_ref()
                .map(|p| {
                    std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read {}", p.display()))
                })
                .transpose()?;
            let preset = a.preset.as_deref().or(if text.is_none() {
                Some(DEFAULT_PRESET)
            } else {
                None
            });
            if a.preset.is_none()
                && text.is_none()
                && !sets.iter().any(|s| s.starts_with("data.download"))
            {
                sets.insert(0, "data.download=true".into());
            }
            let cfg = RunConfig::resolve(preset, a.classes, text.as_deref(), &sets, g.seed_flag)?;
            let name = cfg.preset.clone().unwrap_or_else(|| "custom".into());
            let opts = match &a.out {
                Some(out) => TrainOptions {
                    run_dir: out.clone(),
                    ..Default::default()
                },
                None => TrainOptions {
                    run_dir: PathBuf::from("runs").join(name),
                    numbered: true,
                    ..Default::default()
                },
            };
            (cfg, opts)
        }
    };
    absolute_data_dir(&mut cfg)?;
    // MPI when started by mpirun/srun (built with `--features mpi`), else one process
    let comm = crate::dist::from_environment()?;
    let lead = comm.rank() == 0;
    let (interrupt, signal) = interrupt_on_signals(g.quiet || !lead)?;
    let summary = train_with(
        cfg,
        TrainOptions {
            quiet: g.quiet,
            interrupt: Some(interrupt),
            stop_after_steps: a.stop_after,
            ..opts
        },
        comm.as_ref(),
    );
    let summary = match summary {
        Err(e) if comm.size() > 1 => {
            // every rank has the same error (agreed): each prints it before any exits, as
            // mpirun ends the other ranks at the first non-zero exit
            errln!("error: {e:#}");
            comm.sum_f64(&mut [0.0]);
            drop(comm);
            std::process::exit(1);
        }
        summary => {
            // finalises MPI: every rank gets here, with the same result
            drop(comm);
            summary?
        }
    };
    let signalled = signal.load(Ordering::SeqCst) != 0;
    if !lead {
        if !summary.completed && signalled {
            std::process::exit(128 + signal.load(Ordering::SeqCst));
        }
        return Ok(());
    }
    let dir = &summary.run_dir;
    if !summary.completed && !signalled && a.stop_after.is_some() {
        errln!(
            "stopped after --stop-after {} steps; state saved to {}\nresume with: ffebm train --resume {}",
            a.stop_after.unwrap_or(0),
            dir.join(LAST).display(),
            dir.display()
        );
        return Ok(());
    }
    if !summary.completed {
        let done = summary.epochs.last().map_or(0, |e| e.epoch);
        errln!(
            "interrupted after {done} complete epoch(s); state saved to {}\nresume with: ffebm train --resume {}",
            dir.join(LAST).display(),
            dir.display()
        );
        std::process::exit(128 + signal.load(Ordering::SeqCst).max(2));
    }
    if let Some(last) = summary.epochs.last() {
        let name = if last.test_name.is_empty() {
            "test"
        } else {
            &last.test_name
        };
        outln!(
            "finished {} epochs: train top1 {:.2}%, {name} top1 {:.2}% (top5 {:.2}%); run directory {}",
            last.epoch,
            last.train_top1,
            last.test_top1,
            last.test_top5,
            dir.display()
        );
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// An ffebm checkpoint (e.g. runs/x/checkpoint_best.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Override configuration keys (e.g. data.dir, data.test_files, data.eval_batch_size).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Data root holding the test split (default: the run's data.dir, then $FFEBM_DATA,
    /// then the download cache).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// `ffebm eval`: the checkpoint on its run's evaluation sets (test data only, no download).
pub fn eval(_g: &Global, a: EvalArgs) -> Result<()> {
    let text = checkpoint_config(&a.checkpoint)?;
    let mut sets = a.sets.clone();
    if let Some(d) = &a.data_dir {
        let abs = std::path::absolute(d).with_context(|| format!("--data-dir {}", d.display()))?;
        sets.push(set_string("data.dir", &abs));
    }
    let cfg = RunConfig::resolve(None, None, Some(&text), &sets, None)
        .with_context(|| format!("the configuration of {}", a.checkpoint.display()))?;
    let mut model = crate::model::Model::new(cfg.model.clone(), cfg.seed)?;
    let mut opt = crate::train::optim::Optimizer::new(cfg.optim.clone(), &model);
    let state =
        crate::train::checkpoint::load_checkpoint(Path::new(&a.checkpoint), &mut model, &mut opt)?;
    let tests = crate::train::data::load_eval_data(&cfg.data)?;
    println!(
        "{} after {} epochs ({} steps)",
        a.checkpoint.display(),
        state.epoch,
        state.step
    );
    let mut circuit = crate::analog::Circuit::new(&cfg.analog, &model, cfg.seed)?;
    let saved = crate::train::checkpoint::load_circuit_devices(
        Path::new(&a.checkpoint),
        &model,
        &mut circuit,
        false,
    )?;
    if saved < circuit.device_tensors() {
        eprintln!(
            "note: {} of {} analog device tensors drawn from analog seed {} (the checkpoint has no draws for them)",
            circuit.device_tensors() - saved,
            circuit.device_tensors(),
            circuit.seed
        );
    }
    for (name, subset) in &tests {
        let m = crate::train::evaluate_circuit(&model, &circuit, subset, &cfg, None)?;
        println!(
            "{name}: {} images, loss {:.4}, top1 {:.2}%, top5 {:.2}%, free sweeps {:.1}",
            m.samples, m.loss, m.top1, m.top5, m.sweeps
        );
    }
    Ok(())
}
