//! Options and helpers shared by the commands.

use crate::grad::AlgoConfig;
use crate::io::tensors::read_tensor_file;
use crate::io::weights::{load_model_tensors, KeyStyle};
use crate::model::presets::{preset, Preset};
use crate::model::{Model, ModelConfig};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Global options.
#[derive(Clone, Debug)]
pub struct Global {
    pub seed: u64,
    pub quiet: bool,
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
    /// Weights: a reference `state_dict` saved as safetensors, or an ffebm checkpoint.
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
    /// and the key names the weights file used.
    pub fn build(&self, seed: u64) -> Result<(Model, Option<Preset>, KeyStyle)> {
        let (cfg, preset) = self.resolve()?;
        let mut model = Model::new(cfg, seed)?;
        let style = match &self.weights {
            Some(path) => load_model_tensors(&mut model, &read_tensor_file(path)?, path)?,
            None => KeyStyle::default(),
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
