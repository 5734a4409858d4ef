//! Building models and moving their weights: presets, TOML and dict descriptions,
//! checkpoints and model files, state dicts.

use super::{stored_of, value_of, PhaseArgs, Phases, Value};
use anyhow::{bail, ensure, Context, Result};
use ffebm::io::tensors::{read_tensor_file, write_tensor_file, TensorFile};
use ffebm::io::weights::{
    load_model_tensors, model_tensors, KeyStyle, CHECKPOINT_FORMAT, FORMAT_KEY,
};
use ffebm::model::presets::preset;
use ffebm::model::{prepare, Model, ModelConfig, PreparedBlock};
use ffebm::train::checkpoint::checkpoint_config;
use ffebm::train::RunConfig;
use std::collections::HashMap;
use std::path::Path;

/// Metadata keys of the model files written by [`Net::save`].
const MODEL_FORMAT: &str = "ffebm-model";
const MODEL_CONFIG_KEY: &str = "model_config";
const PHASES_KEY: &str = "phases";

/// An ff-EBM with its packed kernels (rebuilt after weight changes), the key names its
/// weights were given under, and default phase settings.
#[derive(Clone)]
pub struct Net {
    pub(super) model: Model,
    kernels: Option<Vec<PreparedBlock>>,
    pub(super) style: KeyStyle,
    defaults: Option<Phases>,
    origin: String,
}

/// `blocks.{k}.synapses.0.*` ↔ `blocks.{k}.feedforward.0.*` (the feedforward conv's alias).
pub(super) fn alias_of(name: &str) -> Option<String> {
    let rest = name.strip_prefix("blocks.")?;
    let (k, tail) = rest.split_once('.')?;
    if let Some(leaf) = tail.strip_prefix("synapses.0.") {
        Some(format!("blocks.{k}.feedforward.0.{leaf}"))
    } else {
        let leaf = tail.strip_prefix("feedforward.0.")?;
        Some(format!("blocks.{k}.synapses.0.{leaf}"))
    }
}

impl Net {
    pub(super) fn new(model: Model, defaults: Option<Phases>, origin: String) -> Self {
        Net {
            model,
            kernels: None,
            style: KeyStyle::default(),
            defaults,
            origin,
        }
    }

    pub fn from_preset(name: &str, classes: Option<usize>, seed: u64) -> Result<Self> {
        let p = preset(name, classes)?;
        let defaults = Phases {
            t1: p.algo.t1,
            t2: p.algo.t2,
            beta: p.algo.beta,
            tol: p.algo.tol,
        };
        let model = Model::new(p.model.clone(), seed)?;
        Ok(Net::new(model, Some(defaults), format!("preset {name}")))
    }

    /// A TOML model description (the `[model]` keys at top level, as `ffebm grad --model`).
    pub fn from_toml(text: &str, classes: Option<usize>, seed: u64) -> Result<Self> {
        let mut cfg = ModelConfig::from_toml(text)?;
        if let Some(c) = classes {
            cfg.classes = c;
        }
        Ok(Net::new(
            Model::new(cfg, seed)?,
            None,
            "model description".into(),
        ))
    }

    /// A model description given as JSON (a Python dict), read as the same TOML.
    pub fn from_json(json: &str, classes: Option<usize>, seed: u64) -> Result<Self> {
        Net::from_toml(&toml_of_json(json)?, classes, seed)
    }

    /// An ffebm checkpoint (its run configuration gives the model and the phase defaults)
    /// or a model file written by [`Net::save`].
    pub fn load(path: &Path, seed: u64) -> Result<Self> {
        let file = read_tensor_file(path)?;
        let format = file.metadata.get(FORMAT_KEY).map(String::as_str);
        let (cfg, defaults) = if format == Some(CHECKPOINT_FORMAT) {
            let run = RunConfig::from_toml(&checkpoint_config(path)?)
                .with_context(|| format!("run configuration in {}", path.display()))?;
            let a = &run.algorithm;
            let phases = Phases {
                t1: a.t1,
                t2: a.t2,
                beta: a.beta,
                tol: a.tol,
            };
            (run.model, Some(phases))
        } else if let Some(text) = file.metadata.get(MODEL_CONFIG_KEY) {
            let cfg = ModelConfig::from_toml(text)
                .with_context(|| format!("model description in {}", path.display()))?;
            let phases =
                match file.metadata.get(PHASES_KEY) {
                    Some(p) => Some(serde_json::from_str(p).with_context(|| {
                        format!("{}: bad `{PHASES_KEY}` metadata", path.display())
                    })?),
                    None => None,
                };
            (cfg, phases)
        } else {
            bail!(
                "{}: no model description in its metadata (neither an ffebm checkpoint nor a model saved by ffebm); build the model (preset, TOML or dict) and load these weights into it",
                path.display()
            )
        };
        let mut model = Model::new(cfg, seed)?;
        let style = load_model_tensors(&mut model, &file, path)?;
        let mut net = Net::new(model, defaults, path.display().to_string());
        net.style = style;
        Ok(net)
    }

    /// Weights from a reference `state_dict` file or an ffebm checkpoint (as `--weights`).
    /// On error the model is unchanged.
    pub fn load_weights(&mut self, path: &Path) -> Result<()> {
        let file = read_tensor_file(path)?;
        self.load_file(&file, path)
    }

    fn load_file(&mut self, file: &TensorFile, source: &Path) -> Result<()> {
        let mut model = self.model.clone();
        let style = load_model_tensors(&mut model, file, source)?;
        self.model = model;
        self.style = style;
        self.kernels = None;
        Ok(())
    }

    /// Sets parameters and buffers from named tensors (reference names or ffebm's).
    /// `strict`: every tensor of the model must be given; otherwise the others keep their
    /// values. Unknown keys and wrong shapes are errors; on error the model is unchanged.
    pub fn set_tensors(&mut self, items: Vec<(String, Value)>, strict: bool) -> Result<()> {
        let mut file = TensorFile::default();
        let given: Vec<String> = items.iter().map(|(n, _)| n.clone()).collect();
        for (name, v) in items {
            let s = stored_of(&name, v)?;
            file.order.push(name.clone());
            file.tensors.insert(name, s);
        }
        if !strict {
            for (name, t) in model_tensors(&self.model, &KeyStyle::default()) {
                let aliased = alias_of(&name).is_some_and(|a| file.tensors.contains_key(&a));
                if !file.tensors.contains_key(&name) && !aliased {
                    file.order.push(name.clone());
                    file.tensors.insert(name, t);
                }
            }
        }
        let previous = self.style.clone();
        self.load_file(&file, Path::new("state_dict"))?;
        let (s0, f0) = (
            given.iter().any(|n| n.contains(".synapses.0.")),
            given.iter().any(|n| n.contains(".feedforward.0.")),
        );
        self.style = if s0 || f0 {
            KeyStyle {
                synapse0: s0,
                feedforward0: f0,
            }
        } else {
            previous
        };
        Ok(())
    }

    /// Parameters and buffers under the key names the weights were given with.
    pub fn tensors(&self) -> Vec<(String, Value)> {
        model_tensors(&self.model, &self.style)
            .into_iter()
            .map(|(n, s)| (n, value_of(s)))
            .collect()
    }

    /// Writes the weights (reference names) with the model description and the phase
    /// defaults in the metadata; `ffebm grad --weights` and [`Net::load`] read it.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut meta = HashMap::from([
            (FORMAT_KEY.to_string(), MODEL_FORMAT.to_string()),
            (
                MODEL_CONFIG_KEY.to_string(),
                toml::to_string(&self.model.config)?,
            ),
        ]);
        if let Some(p) = &self.defaults {
            meta.insert(PHASES_KEY.to_string(), serde_json::to_string(p)?);
        }
        write_tensor_file(path, &model_tensors(&self.model, &self.style), meta)
    }

    /// The model description as TOML (the `[model]` keys at top level).
    pub fn config_toml(&self) -> Result<String> {
        Ok(toml::to_string(&self.model.config)?)
    }

    pub fn config_json(&self) -> Result<String> {
        Ok(serde_json::to_string(&self.model.config)?)
    }

    pub fn defaults(&self) -> Option<Phases> {
        self.defaults
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// `[C, H, W]` and the number of classes.
    pub fn input_shape(&self) -> [usize; 3] {
        self.model.config.input
    }

    pub fn classes(&self) -> usize {
        self.model.config.classes
    }

    pub fn num_blocks(&self) -> usize {
        self.model.blocks.len()
    }

    pub fn num_params(&self) -> usize {
        self.model.num_params()
    }

    /// Names of the trainable parameters, in the model's order.
    pub fn param_names(&self) -> Vec<String> {
        self.model
            .param_ids()
            .into_iter()
            .map(|id| self.model.param_name(id))
            .collect()
    }

    /// The phase settings of a call: the options given, else the model's defaults.
    pub fn phases(&self, a: PhaseArgs) -> Result<Phases> {
        let d = self.defaults;
        let need = |name: &str| {
            format!(
                "{name} is required: {} has no default T1/T2/β (give t1=, t2=, beta=)",
                self.origin
            )
        };
        let tol = match a.tol {
            Some(t) if t > 0.0 => Some(t),
            Some(_) => None,
            None => d.and_then(|d| d.tol),
        };
        Ok(Phases {
            t1: a.t1.or(d.map(|d| d.t1)).with_context(|| need("t1"))?,
            t2: a.t2.or(d.map(|d| d.t2)).with_context(|| need("t2"))?,
            beta: a.beta.or(d.map(|d| d.beta)).with_context(|| need("beta"))?,
            tol,
        })
    }

    fn kernels(&mut self) -> Result<()> {
        if self.kernels.is_none() {
            self.kernels = Some(prepare(&self.model)?);
        }
        Ok(())
    }

    /// Packs the kernels now (otherwise the first computation does it).
    pub fn prepare(&mut self) -> Result<()> {
        self.kernels()
    }

    /// The model and its packed kernels (packed on first use).
    pub(super) fn parts(&mut self) -> Result<(&Model, &[PreparedBlock])> {
        self.kernels()?;
        Ok((&self.model, self.kernels.as_deref().expect("prepared")))
    }
}

/// A JSON object as TOML text (numbers, strings, booleans, arrays and tables).
pub(super) fn toml_of_json(json: &str) -> Result<String> {
    let v: serde_json::Value = serde_json::from_str(json).context("invalid JSON")?;
    let t = toml::Value::try_from(v).context("cannot be written as TOML (None values?)")?;
    ensure!(t.is_table(), "a model or run description must be a table");
    Ok(toml::to_string(&t)?)
}

/// A JSON value as a TOML value literal (for `key=value` overrides).
pub fn toml_literal(json: &str) -> Result<String> {
    let v: serde_json::Value = serde_json::from_str(json).context("invalid JSON")?;
    Ok(toml::Value::try_from(v)
        .context("cannot be written as TOML (None values?)")?
        .to_string())
}
