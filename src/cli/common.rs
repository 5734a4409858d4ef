//! Options and helpers shared by the commands.

use crate::model::presets::{preset, Preset};
use crate::model::ModelConfig;
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
