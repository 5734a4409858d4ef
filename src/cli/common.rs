//! Options and helpers shared by the commands.

use crate::grad::AlgoConfig;
use crate::io::tensors::read_tensor_file;
use crate::io::weights::{load_weights, Naming};
use crate::model::presets::{preset, Preset};
use crate::model::{Model, ModelConfig};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Global options.
#[derive(Clone, Debug)]
pub struct Global {
    /// The seed to use (`--seed`, default 0).
    pub seed: u64,
    /// `--seed` when given: an explicit flag overrides a configuration file's seed.
    pub seed_flag: Option<u64>,
    pub quiet: bool,
}

/// `println!` that never panics: a closed standard output (e.g. `| head`) drops the line
/// and the command carries on (for commands whose work outlives their output).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `eprintln!` that never panics on a closed standard error.
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

pub(crate) use {errln, outln};

/// A count that must be at least 1 (clap value parser).
pub fn positive(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Checks a batch (`x` channels-last, as read from `path`) against the model, reporting
/// shapes in the NCHW layout the file holds: no empty batch, the model's C, H, W.
pub fn check_batch(model: &Model, x: &crate::core::Tensor, path: &std::path::Path) -> Result<()> {
    let [c, h, w] = model.config.input;
    let s = x.shape();
    anyhow::ensure!(
        s.len() == 4,
        "batch {}: `x` has shape {s:?}, expected [B, C, H, W]",
        path.display()
    );
    let nchw = [s[0], s[3], s[1], s[2]];
    anyhow::ensure!(
        nchw[0] >= 1,
        "batch {}: `x` is empty (shape {nchw:?}); a batch needs at least one sample",
        path.display()
    );
    anyhow::ensure!(
        nchw[1..] == [c, h, w],
        "batch {}: `x` has shape {nchw:?} (NCHW), but the model takes [B, {c}, {h}, {w}]",
        path.display()
    );
    Ok(())
}

/// Selecting a model: a built-in preset or a TOML description.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Built-in preset (see `ffebm presets`).
    #[arg(long, conflicts_with = "model")]
    pub preset: Option<String>,
    /// Model description in TOML (see README, "Model descriptions").
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Number of classes of the readout (default: the preset's dataset).
    #[arg(long)]
    pub classes: Option<usize>,
    /// Weights: a reference `state_dict` saved as safetensors, an ffebm checkpoint, or (deep
    /// resistive networks) energy-based-learning's parameters (`DenseWeight_0`, `Bias_1`, …).
    /// Without it the model is initialised from --seed.
    #[arg(long, visible_alias = "checkpoint")]
    pub weights: Option<PathBuf>,
}

/// Relaxation lengths and nudging strength of a one-batch command.
#[derive(clap::Args, Debug, Clone)]
pub struct PhaseArgs {
    /// Nudging strength β (default: the preset's).
    #[arg(long)]
    pub beta: Option<f32>,
    /// Free-phase sweeps (default: the preset's).
    #[arg(long)]
    pub t1: Option<usize>,
    /// Nudged-phase / unrolled sweeps (default: the preset's).
    #[arg(long)]
    pub t2: Option<usize>,
    /// EP variant: `centered` (±β), `positive` (+β and the free state) or `negative`
    /// (default: the preset's).
    #[arg(long)]
    pub variant: Option<String>,
    /// EP's nudged phases relaxed as `offsets` from the free state (accurate) or as full
    /// `states` (the reference's way) (default: the preset's).
    #[arg(long)]
    pub nudged_form: Option<String>,
    /// Convolutions of the free phase: `auto` (direct for EP at |β| < 0.1, whose gradient
    /// amplifies the free state's round-off by ~1/β; else the model's), `model` (the model's
    /// `conv_algo`) or `direct` (default: the preset's, i.e. `auto`).
    #[arg(long)]
    pub free_convs: Option<String>,
}

/// Stopping rules and fixed-point solver of the relaxations (over the preset's `[algorithm]`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SolverArgs {
    /// Tolerance of EP's nudged phases on the offsets from the free state (0 disables;
    /// default: the preset's, i.e. fixed T2).
    #[arg(long)]
    pub nudged_tol: Option<f32>,
    /// Per-sample criterion (each sample stops on its own) in the free and nudged phases.
    #[arg(long)]
    pub per_sample_tol: bool,
    /// Fixed-point solver: `plain` sweeps or `anderson` (default: the preset's).
    #[arg(long)]
    pub solver: Option<String>,
    /// Anderson memory m (default 6).
    #[arg(long)]
    pub anderson_m: Option<usize>,
    /// Anderson regularisation λ, relative to the mean squared residual (default 1e-4).
    #[arg(long)]
    pub anderson_lambda: Option<f32>,
    /// Anderson mixing τ in (0, 1] (default 1).
    #[arg(long)]
    pub anderson_tau: Option<f32>,
}

impl SolverArgs {
    /// Applies the options given over `cfg`.
    pub fn apply(&self, cfg: &mut AlgoConfig) -> Result<()> {
        match self.nudged_tol {
            Some(t) if t > 0.0 => cfg.nudged_tol = Some(t),
            Some(_) => cfg.nudged_tol = None,
            None => {}
        }
        if self.per_sample_tol {
            cfg.per_sample_tol = true;
        }
        if let Some(v) = &self.solver {
            cfg.solver = parse_choice("solver", v, "plain, anderson")?;
        }
        if let Some(m) = self.anderson_m {
            cfg.anderson_m = m;
        }
        if let Some(l) = self.anderson_lambda {
            cfg.anderson_lambda = l;
        }
        if let Some(t) = self.anderson_tau {
            cfg.anderson_tau = t;
        }
        Ok(())
    }
}

/// A kebab-case enum value given on the command line, parsed as the config file would.
fn parse_choice<T: serde::de::DeserializeOwned>(
    flag: &str,
    value: &str,
    choices: &str,
) -> Result<T> {
    serde::Deserialize::deserialize(
        serde::de::value::StrDeserializer::<serde::de::value::Error>::new(value),
    )
    .map_err(|_| anyhow::anyhow!("--{flag} {value}: expected one of {choices}"))
}

impl PhaseArgs {
    /// The preset's settings (or, for a `--model` description, EP settings that must all be
    /// given) with the options given here applied over them.
    pub fn resolve(&self, preset: Option<&Preset>) -> Result<AlgoConfig> {
        let need = |name: &str| format!("--{name} is required with --model (no preset defaults)");
        let mut cfg = match preset {
            Some(p) => p.algo.clone(),
            None => AlgoConfig::ep(
                self.t1.with_context(|| need("t1"))?,
                self.t2.with_context(|| need("t2"))?,
                self.beta.with_context(|| need("beta"))?,
            ),
        };
        if let Some(t1) = self.t1 {
            cfg.t1 = t1;
        }
        if let Some(t2) = self.t2 {
            cfg.t2 = t2;
        }
        if let Some(beta) = self.beta {
            cfg.beta = beta;
        }
        if let Some(v) = &self.variant {
            cfg.variant = parse_choice("variant", v, "centered, positive, negative")?;
        }
        if let Some(v) = &self.nudged_form {
            cfg.nudged_form = parse_choice("nudged-form", v, "offsets, states")?;
        }
        if let Some(v) = &self.free_convs {
            cfg.free_convs = parse_choice("free-convs", v, "auto, model, direct")?;
        }
        Ok(cfg)
    }
}

impl ModelArgs {
    /// The model description and, for presets, the preset.
    pub fn resolve(&self) -> Result<(ModelConfig, Option<Preset>)> {
        match (&self.preset, &self.model) {
            (Some(name), _) => {
                let p = preset(name, self.classes)?;
                Ok((p.model.clone(), Some(p)))
            }
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read model description {}", path.display()))?;
                let mut cfg = ModelConfig::from_toml(&text)
                    .with_context(|| format!("in {}", path.display()))?;
                if let Some(c) = self.classes {
                    cfg.classes = c;
                }
                Ok((cfg, None))
            }
            (None, None) => anyhow::bail!(
                "choose a model with --preset NAME (see `ffebm presets`) or --model FILE.toml"
            ),
        }
    }

    /// The model (initialised from `seed`, then `--weights` loaded over it), its preset,
    /// and the names the weights file used.
    pub fn build(&self, seed: u64) -> Result<(Model, Option<Preset>, Naming)> {
        let (cfg, preset) = self.resolve()?;
        let mut model = Model::new(cfg, seed)?;
        let style = match &self.weights {
            Some(path) => load_weights(&mut model, &read_tensor_file(path)?, path)?,
            None => Naming::default(),
        };
        Ok((model, preset, style))
    }
}

/// Human-readable count (`1.23 G`).
pub fn si(v: f64) -> String {
    let (s, u) = if v >= 1e12 {
        (v / 1e12, "T")
    } else if v >= 1e9 {
        (v / 1e9, "G")
    } else if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    format!("{s:.2} {u}")
}
