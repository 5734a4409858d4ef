//! Building models and moving their weights: presets, TOML and dict descriptions,
//! checkpoints and model files, state dicts.

use super::{parse_variant, stored_of, value_of, AlgoArgs, Value};
use anyhow::{bail, ensure, Context, Result};
use ffebm::grad::{AlgoConfig, Algorithm};
use ffebm::io::tensors::{read_tensor_file, write_tensor_file, TensorFile};
use ffebm::io::weights::{
    load_model_tensors, model_tensors, KeyStyle, CHECKPOINT_FORMAT, FORMAT_KEY,
};
use ffebm::model::feedforward::BnUpdates;
use ffebm::model::presets::preset;
use ffebm::model::{prepare, Model, ModelConfig, PreparedBlock};
use ffebm::relax::{Order, Schedule};
use ffebm::train::checkpoint::checkpoint_config;
use ffebm::train::RunConfig;
use std::collections::HashMap;
use std::path::Path;

/// Metadata keys of the model files written by [`Net::save`].
const MODEL_FORMAT: &str = "ffebm-model";
const MODEL_CONFIG_KEY: &str = "model_config";
const ALGORITHM_KEY: &str = "algorithm";

/// An ff-EBM with its packed kernels (rebuilt after weight changes), the key names its
/// weights were given under, and its default algorithm settings (a preset's or run's).
#[derive(Clone)]
pub struct Net {
    pub(super) model: Model,
    kernels: Option<Vec<PreparedBlock>>,
    pub(super) style: KeyStyle,
    defaults: Option<AlgoConfig>,
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
    pub(super) fn new(model: Model, defaults: Option<AlgoConfig>, origin: String) -> Self {
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
        let model = Model::new(p.model.clone(), seed)?;
        Ok(Net::new(model, Some(p.algo), format!("preset {name}")))
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

    /// An ffebm checkpoint (its run configuration gives the model and the algorithm defaults)
    /// or a model file written by [`Net::save`].
    pub fn load(path: &Path, seed: u64) -> Result<Self> {
        let file = read_tensor_file(path)?;
        let format = file.metadata.get(FORMAT_KEY).map(String::as_str);
        let (cfg, defaults) = if format == Some(CHECKPOINT_FORMAT) {
            let run = RunConfig::from_toml(&checkpoint_config(path)?)
                .with_context(|| format!("run configuration in {}", path.display()))?;
            (run.model, Some(run.algorithm))
        } else if let Some(text) = file.metadata.get(MODEL_CONFIG_KEY) {
            let cfg = ModelConfig::from_toml(text)
                .with_context(|| format!("model description in {}", path.display()))?;
            let algo = match file.metadata.get(ALGORITHM_KEY) {
                Some(a) => Some(serde_json::from_str(a).with_context(|| {
                    format!("{}: bad `{ALGORITHM_KEY}` metadata", path.display())
                })?),
                None => None,
            };
            (cfg, algo)
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

    /// Writes the weights (reference names) with the model description and the algorithm
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
            meta.insert(ALGORITHM_KEY.to_string(), serde_json::to_string(p)?);
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

    pub fn defaults(&self) -> Option<&AlgoConfig> {
        self.defaults.as_ref()
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

    fn need(&self, name: &str) -> String {
        format!(
            "{name} is required: {} has no default T1/T2/β (give t1=, t2=, beta=)",
            self.origin
        )
    }

    /// The algorithm settings of a call: the model's defaults (as `ffebm grad --preset`
    /// uses the preset's `[algorithm]`) with the options given applied over them. Without
    /// defaults T1, T2 and (for EP) β must be given, and the rest is the paper's EP schedule.
    pub fn algo(&self, a: &AlgoArgs) -> Result<AlgoConfig> {
        let name: Option<Algorithm> = a.name.as_deref().map(str::parse).transpose()?;
        let mut cfg = match &self.defaults {
            Some(d) => d.clone(),
            None => {
                // β only matters to EP: ID needs none
                let beta = match (a.beta, name) {
                    (Some(b), _) => b,
                    (None, Some(Algorithm::IdExact | Algorithm::IdReference)) => 0.0,
                    (None, _) => bail!(self.need("beta")),
                };
                AlgoConfig::ep(
                    a.t1.with_context(|| self.need("t1"))?,
                    a.t2.with_context(|| self.need("t2"))?,
                    beta,
                )
            }
        };
        if let Some(n) = name {
            cfg.name = n;
        }
        if let Some(t1) = a.t1 {
            cfg.t1 = t1;
        }
        if let Some(t2) = a.t2 {
            cfg.t2 = t2;
        }
        if let Some(beta) = a.beta {
            cfg.beta = beta;
        }
        cfg.tol = tolerance(a.tol, cfg.tol)?;
        if let Some(v) = &a.variant {
            ensure!(
                cfg.name == Algorithm::Ep,
                "variant=`{v}` is an EP setting, but algo is `{}`",
                cfg.name
            );
            cfg.variant = parse_variant(v)?;
        }
        match a.bn_compat {
            Some(true) => cfg.bn_updates = BnUpdates::ReferenceCompat,
            Some(false) => cfg.bn_updates = BnUpdates::OncePerBatch,
            None => {}
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// The free-phase schedule (T1, tolerance) and update order of a call: the defaults'
    /// (as evaluation uses them) with `t1` and `tol` applied over them.
    pub fn free_settings(&self, t1: Option<usize>, tol: Option<f32>) -> Result<(Schedule, Order)> {
        let (mut schedule, order) = match &self.defaults {
            Some(d) => (d.free_schedule(), d.free_order),
            None => (
                Schedule::fixed(t1.with_context(|| self.need("t1"))?),
                Order::EvenFirst,
            ),
        };
        if let Some(t1) = t1 {
            ensure!(t1 >= 1, "t1 must be at least 1");
            schedule.sweeps = t1;
        }
        schedule.tol = tolerance(tol, schedule.tol)?;
        Ok((schedule, order))
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

/// A tolerance option over a default: `Some(0.0)` disables it, a positive value replaces it.
fn tolerance(given: Option<f32>, default: Option<f32>) -> Result<Option<f32>> {
    match given {
        None => Ok(default),
        Some(0.0) => Ok(None),
        Some(t) if t > 0.0 && t.is_finite() => Ok(Some(t)),
        Some(t) => {
            bail!("tol = {t}: expected a positive tolerance, or 0 to disable the default one")
        }
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
