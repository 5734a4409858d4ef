//! `ffebm train` and `ffebm eval`.

use super::common::Global;
use crate::train::checkpoint::checkpoint_config;
use crate::train::trainer::LAST;
use crate::train::{evaluate, train, RunConfig, TrainOptions};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag set by the first Ctrl-C (SIGINT/SIGTERM): the trainer then finishes its current
/// step, writes `checkpoint_last` and returns. A second Ctrl-C exits at once (the last
/// complete checkpoint stays valid: checkpoints are written atomically).
fn interrupt_on_ctrl_c() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting without a new checkpoint");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: finishing the current step and saving a checkpoint (Ctrl-C again to abort)");
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(flag)
}

/// The preset `ffebm train` runs without arguments.
pub const DEFAULT_PRESET: &str = "cifar10_tiny";

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Built-in preset (default: cifar10_tiny; see `ffebm presets`).
    #[arg(long)]
    pub preset: Option<String>,
    /// Run description in TOML, merged over the preset (see README, "Configuration").
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override any configuration key, e.g. `--set optim.lr=3e-4 --set algorithm.name=id-exact`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Readout classes (default: the dataset's).
    #[arg(long)]
    pub classes: Option<usize>,
    /// Data root (default: $FFEBM_DATA, then the download cache).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Download the dataset from its official source if it is not found.
    #[arg(long)]
    pub download: bool,
    /// Number of epochs (shorthand for --set train.epochs=N).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Run directory (default: runs/<preset>-<n>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, conflicts_with_all = ["preset", "config", "out"])]
    pub resume: Option<PathBuf>,
}

fn next_run_dir(name: &str) -> PathBuf {
    (1..)
        .map(|i| PathBuf::from("runs").join(format!("{name}-{i:03}")))
        .find(|p| !p.exists())
        .expect("a free name")
}

pub fn run(g: &Global, a: TrainArgs) -> Result<()> {
    let mut sets = a.sets.clone();
    if let Some(d) = &a.data_dir {
        sets.push(format!("data.dir={:?}", d.display().to_string()));
    }
    if a.download {
        sets.push("data.download=true".into());
    }
    if let Some(e) = a.epochs {
        sets.push(format!("train.epochs={e}"));
    }
    let (cfg, dir, resume) = match &a.resume {
        Some(dir) => {
            let path = dir.join("config.toml");
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read {} (is {} a run directory?)",
                    path.display(),
                    dir.display()
                )
            })?;
            anyhow::ensure!(
                dir.join(LAST).exists(),
                "{} has no checkpoint to resume from",
                dir.display()
            );
            let cfg = RunConfig::resolve(None, None, Some(&text), &sets, g.seed)
                .with_context(|| format!("in {}", path.display()))?;
            (cfg, dir.clone(), true)
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
            let cfg = RunConfig::resolve(preset, a.classes, text.as_deref(), &sets, g.seed)?;
            let name = cfg.preset.clone().unwrap_or_else(|| "custom".into());
            (
                cfg,
                a.out.clone().unwrap_or_else(|| next_run_dir(&name)),
                false,
            )
        }
    };
    if !g.quiet {
        eprintln!("run directory: {}", dir.display());
    }
    let interrupt = interrupt_on_ctrl_c()?;
    let summary = train(
        cfg,
        TrainOptions {
            run_dir: dir.clone(),
            resume,
            quiet: g.quiet,
            stop_after_steps: None,
            interrupt: Some(interrupt),
        },
    )?;
    if !summary.completed {
        let done = summary.epochs.last().map_or(0, |e| e.epoch);
        eprintln!(
            "interrupted after {done} complete epoch(s); state saved to {}\nresume with: ffebm train --resume {}",
            dir.join(LAST).display(),
            dir.display()
        );
        std::process::exit(130);
    }
    if let Some(last) = summary.epochs.last() {
        println!(
            "finished {} epochs: train top1 {:.2}%, {} top1 {:.2}% (top5 {:.2}%); run directory {}",
            last.epoch,
            last.train_top1,
            last.evals
                .keys()
                .next()
                .map(String::as_str)
                .unwrap_or("test"),
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
    /// Data root.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

pub fn eval(g: &Global, a: EvalArgs) -> Result<()> {
    let text = checkpoint_config(&a.checkpoint)?;
    let mut sets = a.sets.clone();
    if let Some(d) = &a.data_dir {
        sets.push(format!("data.dir={:?}", d.display().to_string()));
    }
    let cfg = RunConfig::resolve(None, None, Some(&text), &sets, g.seed)?;
    let mut model = crate::model::Model::new(cfg.model.clone(), cfg.seed)?;
    let mut opt = crate::train::optim::Optimizer::new(cfg.optim.clone(), &model);
    let state =
        crate::train::checkpoint::load_checkpoint(Path::new(&a.checkpoint), &mut model, &mut opt)?;
    let data = crate::train::data::load_run_data(
        &crate::train::config::DataConfig {
            val_size: 0,
            train_limit: Some(1),
            ..cfg.data.clone()
        },
        cfg.seed,
        g.quiet,
    )?;
    println!(
        "{} after {} epochs ({} steps)",
        a.checkpoint.display(),
        state.epoch,
        state.step
    );
    for (name, subset) in &data.tests {
        let m = evaluate(&model, subset, &cfg, None)?;
        println!(
            "{name}: {} images, loss {:.4}, top1 {:.2}%, top5 {:.2}%, free sweeps {:.1}",
            m.samples, m.loss, m.top1, m.top5, m.sweeps
        );
    }
    Ok(())
}
