//! Every call from the binding into the ffebm library lives in this module, so that the
//! binding follows changes of the library's internal API in one place. The rest of the
//! binding sees plain data only: [`Array`] (f32 data with a shape), [`Value`], strings and
//! JSON. Nothing here knows about Python.

use anyhow::{bail, ensure, Context, Result};
use ffebm::analysis::gdd::{analyse, GddConfig};
use ffebm::core::Tensor;
use ffebm::grad::{
    apply_bn_updates, compute_gradients, free_phase, Algorithm, BnUpdates, GradConfig,
};
use ffebm::io::tensors::{read_tensor_file, write_tensor_file, Stored, TensorFile};
use ffebm::io::weights::{
    load_model_tensors, model_tensors, KeyStyle, CHECKPOINT_FORMAT, FORMAT_KEY,
};
use ffebm::model::feedforward::BnMode;
use ffebm::model::presets::{preset, NAMES};
use ffebm::model::{prepare, BufferId, Model, ModelConfig, ParamId, PreparedBlock};
use ffebm::relax::Schedule;
use ffebm::train::checkpoint::{checkpoint_config, load_checkpoint};
use ffebm::train::trainer::{eval_schedule, LAST};
use ffebm::train::{evaluate, RunConfig, TrainOptions};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// A float32 array crossing the binding: row-major `data` of logical shape `shape`. With
/// `channels_last` the shape is `[B, C, H, W]` (NCHW) but the data is stored `[B, H, W, C]`
/// (the core's layout), which NumPy can view without a copy.
#[derive(Debug)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    pub channels_last: bool,
}

impl Array {
    fn plain(t: Tensor) -> Self {
        Array {
            shape: t.shape().to_vec(),
            data: t.into_vec(),
            channels_last: false,
        }
    }

    /// A core activation: NHWC maps become NCHW-shaped channels-last arrays (no copy).
    fn activation(t: Tensor) -> Self {
        match *t.shape() {
            [b, h, w, c] => Array {
                shape: vec![b, c, h, w],
                data: t.into_vec(),
                channels_last: true,
            },
            _ => Array::plain(t),
        }
    }
}

/// A named tensor of a state dict: float32, or integer (`num_batches_tracked`, labels).
#[derive(Debug)]
pub enum Value {
    F32(Array),
    I64 { shape: Vec<usize>, data: Vec<i64> },
}

fn value_of(s: Stored) -> Value {
    match s {
        Stored::F32(t) => Value::F32(Array::plain(t)),
        Stored::I64 { shape, data } => Value::I64 { shape, data },
    }
}

fn stored_of(name: &str, v: Value) -> Result<Stored> {
    Ok(match v {
        Value::F32(a) => {
            ensure!(
                !a.channels_last,
                "`{name}`: channels-last arrays are not stored"
            );
            Stored::F32(Tensor::from_vec(&a.shape, a.data)?)
        }
        Value::I64 { shape, data } => Stored::I64 { shape, data },
    })
}

/// An image batch already in the core's layout: `nhwc` holds `[B, H, W, C]` data of the
/// NCHW array `[B, C, H, W]` the caller gave.
pub struct Batch {
    pub nchw: [usize; 4],
    pub nhwc: Vec<f32>,
}

impl Batch {
    fn tensor(self) -> Result<Tensor> {
        let [b, c, h, w] = self.nchw;
        Ok(Tensor::from_vec(&[b, h, w, c], self.nhwc)?)
    }
}

/// What went wrong, for choosing the Python exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller cancelled the computation (Ctrl-C).
    Cancelled,
    NotFound,
    Io,
    /// NaN or infinity in a relaxation.
    NonFinite,
    /// Bad input: shapes, keys, values, configuration.
    Invalid,
}

pub fn classify(e: &anyhow::Error) -> ErrorKind {
    if e.downcast_ref::<ffebm::hooks::Cancelled>().is_some() {
        return ErrorKind::Cancelled;
    }
    if e.downcast_ref::<ffebm::relax::NonFiniteError>().is_some() {
        return ErrorKind::NonFinite;
    }
    for cause in e.chain() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::NotFound => ErrorKind::NotFound,
                _ => ErrorKind::Io,
            };
        }
    }
    ErrorKind::Invalid
}

/// Runs `f` so that setting `flag` stops its relaxations before their next sweep (the call
/// then fails with an error that [`classify`] reports as [`ErrorKind::Cancelled`]).
pub fn cancellable<T>(flag: Arc<AtomicBool>, f: impl FnOnce() -> T) -> T {
    ffebm::hooks::cancellable(flag, f)
}

/// Sets the number of worker threads of the compute core (once per process).
pub fn set_threads(n: usize) -> Result<()> {
    ensure!(n >= 1, "threads must be at least 1");
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .context("the thread pool is already running; call set_threads before any computation")
}

pub fn threads() -> usize {
    rayon::current_num_threads()
}

pub fn preset_names() -> Vec<&'static str> {
    NAMES.to_vec()
}

/// A preset as JSON: name, summary, `model` (the `[model]` table), `algorithm` (T1, T2,
/// β, tol) and `train` hyper-parameters.
pub fn preset_json(name: &str, classes: Option<usize>) -> Result<String> {
    let p = preset(name, classes)?;
    Ok(serde_json::json!({
        "name": p.name,
        "summary": p.summary,
        "model": p.model,
        "algorithm": {
            "t1": p.algo.t1,
            "t2": p.algo.t2,
            "beta": short(p.algo.beta),
            "tol": p.algo.tol.map(short),
        },
        "train": p.train,
    })
    .to_string())
}

/// The shortest decimal that reads back as `v` in f32, as an f64 (0.2, not
/// 0.20000000298023224).
pub fn short(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

/// Relaxation lengths and nudging strength of one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Phases {
    pub t1: usize,
    pub t2: usize,
    pub beta: f32,
    pub tol: Option<f32>,
}

/// Options of one call; `None` takes the model's defaults (its preset's or run's).
#[derive(Clone, Copy, Debug, Default)]
pub struct PhaseArgs {
    pub t1: Option<usize>,
    pub t2: Option<usize>,
    pub beta: Option<f32>,
    /// `Some(0.0)` disables a default tolerance.
    pub tol: Option<f32>,
}

/// Metadata keys of the model files written by [`Net::save`].
const MODEL_FORMAT: &str = "ffebm-model";
const MODEL_CONFIG_KEY: &str = "model_config";
const PHASES_KEY: &str = "phases";

/// An ff-EBM with its packed kernels (rebuilt after weight changes), the key names its
/// weights were given under, and default phase settings.
#[derive(Clone)]
pub struct Net {
    model: Model,
    kernels: Option<Vec<PreparedBlock>>,
    style: KeyStyle,
    defaults: Option<Phases>,
    origin: String,
}

/// `blocks.{k}.synapses.0.*` ↔ `blocks.{k}.feedforward.0.*` (the feedforward conv's alias).
fn alias_of(name: &str) -> Option<String> {
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
    fn new(model: Model, defaults: Option<Phases>, origin: String) -> Self {
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
            let phases = match file.metadata.get(PHASES_KEY) {
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
            format!("{name} is required: {} has no default T1/T2/β (give t1=, t2=, beta=)", self.origin)
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
    fn parts(&mut self) -> Result<(&Model, &[PreparedBlock])> {
        self.kernels()?;
        Ok((&self.model, self.kernels.as_deref().expect("prepared")))
    }
}

/// A JSON object as TOML text (numbers, strings, booleans, arrays and tables).
fn toml_of_json(json: &str) -> Result<String> {
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

fn labels_u32(y: &[i64]) -> Result<Vec<u32>> {
    y.iter()
        .enumerate()
        .map(|(i, &v)| {
            u32::try_from(v)
                .map_err(|_| anyhow::anyhow!("label y[{i}] = {v} is negative or too large"))
        })
        .collect()
}

fn input(net: &Net, x: Batch) -> Result<Tensor> {
    let [c, h, w] = net.input_shape();
    ensure!(
        x.nchw[1..] == [c, h, w],
        "`x` has shape {:?} (NCHW), but the model expects [B, {c}, {h}, {w}]",
        x.nchw
    );
    let x = x.tensor()?;
    ffebm::model::check_input(&net.model, &x)?;
    Ok(x)
}

/// Free equilibria (per block, per layer), logits and sweeps of one batch.
pub struct FreeOut {
    pub states: Vec<Vec<Array>>,
    pub logits: Array,
    pub sweeps: Vec<usize>,
}

/// Free phase of one batch; `eval` uses BN running statistics instead of batch statistics.
pub fn free(net: &mut Net, x: Batch, eval: bool, t1: usize, tol: Option<f32>) -> Result<FreeOut> {
    let x = input(net, x)?;
    let (model, kernels) = net.parts()?;
    let mode = if eval { BnMode::Eval } else { BnMode::Train };
    let schedule = Schedule {
        sweeps: t1,
        tol,
        per_sample: false,
    };
    let f = free_phase(model, kernels, &x, mode, schedule)?;
    Ok(FreeOut {
        states: f
            .states
            .into_iter()
            .map(|s| s.layers.into_iter().map(Array::activation).collect())
            .collect(),
        logits: Array::plain(f.logits),
        sweeps: f.sweeps,
    })
}

/// The BN running statistics and batch counts of `model` under their reference names.
fn bn_buffers(model: &Model) -> Vec<(String, Value)> {
    model
        .buffer_ids()
        .into_iter()
        .filter_map(|id| {
            let (BufferId::RunningMean(k) | BufferId::RunningVar(k) | BufferId::NumBatchesTracked(k)) =
                id;
            let bn = model.blocks[k].bn.as_ref()?;
            let v = match id {
                BufferId::RunningMean(_) => Value::F32(Array::plain(bn.running_mean.clone())),
                BufferId::RunningVar(_) => Value::F32(Array::plain(bn.running_var.clone())),
                BufferId::NumBatchesTracked(_) => Value::I64 {
                    shape: vec![],
                    data: vec![bn.num_batches_tracked],
                },
            };
            Some((model.buffer_name(id), v))
        })
        .collect()
}

/// Gradients of one batch, as `ffebm grad` computes them.
pub struct GradOut {
    /// `+∂L/∂θ` under the names the weights were given with (both, if both were).
    pub grads: Vec<(String, Array)>,
    pub loss: f32,
    pub logits: Array,
    pub sweeps: Vec<usize>,
    /// BN running statistics after the step (`running_mean`, `running_var`,
    /// `num_batches_tracked`), applied to the model when asked.
    pub bn_after: Vec<(String, Value)>,
    /// Wall time of the computation in the core (`compute_gradients`).
    pub seconds: f64,
}

pub struct GradRequest<'a> {
    pub algo: &'a str,
    pub phases: Phases,
    pub bn_compat: bool,
    pub update_bn: bool,
}

pub fn gradients(net: &mut Net, x: Batch, y: &[i64], req: GradRequest<'_>) -> Result<GradOut> {
    let algo: Algorithm = req.algo.parse()?;
    let y = labels_u32(y)?;
    let x = input(net, x)?;
    let p = req.phases;
    let gc = GradConfig {
        t1: p.t1,
        t2: p.t2,
        beta: p.beta,
        tol: p.tol,
        per_sample_tol: false,
        bn_updates: if req.bn_compat {
            BnUpdates::ReferenceCompat
        } else {
            BnUpdates::OncePerBatch
        },
    };
    let (model, kernels) = net.parts()?;
    let start = std::time::Instant::now();
    let out = compute_gradients(model, kernels, &x, &y, algo, &gc)?;
    let seconds = start.elapsed().as_secs_f64();
    let names: Vec<(ParamId, String)> = out
        .grads
        .entries
        .iter()
        .map(|(id, _)| (*id, model.param_name(*id)))
        .collect();
    // BN statistics after the step: applied, read, and restored unless asked to keep them
    let saved: Vec<_> = net.model.blocks.iter().map(|b| b.bn.clone()).collect();
    apply_bn_updates(&mut net.model, &out.bn_updates);
    let bn_after = bn_buffers(&net.model);
    if !req.update_bn {
        for (b, bn) in net.model.blocks.iter_mut().zip(saved) {
            b.bn = bn;
        }
    }
    let style = &net.style;
    let mut grads = Vec::with_capacity(names.len() + net.model.blocks.len());
    for ((id, name), (_, g)) in names.into_iter().zip(out.grads.entries) {
        let synapse0 = matches!(id, ParamId::Synapse { index: 0, .. });
        match (synapse0, style.synapse0, style.feedforward0) {
            (true, true, true) => {
                let alias = alias_of(&name).expect("synapse 0 has an alias");
                grads.push((name, Array::plain(g.clone())));
                grads.push((alias, Array::plain(g)));
            }
            (true, false, true) => {
                grads.push((alias_of(&name).expect("alias"), Array::plain(g)))
            }
            _ => grads.push((name, Array::plain(g))),
        }
    }
    Ok(GradOut {
        grads,
        loss: out.loss,
        logits: Array::plain(out.free.logits),
        sweeps: out.free.sweeps,
        bn_after,
        seconds,
    })
}

/// Wall time (seconds) of `compute_gradients` alone on an already converted batch, for
/// measuring what the binding adds around it.
pub fn time_gradients(net: &mut Net, x: Batch, y: &[i64], phases: Phases) -> Result<f64> {
    let y = labels_u32(y)?;
    let x = input(net, x)?;
    let gc = GradConfig {
        t1: phases.t1,
        t2: phases.t2,
        beta: phases.beta,
        tol: phases.tol,
        per_sample_tol: false,
        bn_updates: BnUpdates::OncePerBatch,
    };
    let (model, kernels) = net.parts()?;
    let t = std::time::Instant::now();
    compute_gradients(model, kernels, &x, &y, Algorithm::Ep, &gc)?;
    Ok(t.elapsed().as_secs_f64())
}

/// The static gradient analysis of one batch (`ffebm gdd`), as the JSON of `gdd.json`.
pub fn gdd(
    net: &mut Net,
    x: Batch,
    y: &[i64],
    phases: Phases,
    coords: usize,
    seed: u64,
    transients: bool,
) -> Result<String> {
    let y = labels_u32(y)?;
    let x = input(net, x)?;
    let (model, kernels) = net.parts()?;
    let cfg = GddConfig {
        t1: phases.t1,
        t2: phases.t2,
        beta: phases.beta,
        coords,
        seed,
        transients,
    };
    let rep = analyse(model, kernels, &x, &y, &cfg, &mut |_, _| {})?;
    Ok(serde_json::to_string(&rep)?)
}

/// Named tensors and metadata of a safetensors file.
pub fn read_tensors(path: &Path) -> Result<(Vec<(String, Value)>, HashMap<String, String>)> {
    let f = read_tensor_file(path)?;
    let mut tensors = f.tensors;
    let items = f
        .order
        .iter()
        .filter_map(|n| tensors.remove(n).map(|s| (n.clone(), value_of(s))))
        .collect();
    Ok((items, f.metadata))
}

/// Writes named tensors (f32 and i64) and metadata atomically.
pub fn write_tensors(
    path: &Path,
    items: Vec<(String, Value)>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let stored = items
        .into_iter()
        .map(|(n, v)| stored_of(&n, v).map(|s| (n, s)))
        .collect::<Result<Vec<_>>>()?;
    write_tensor_file(path, &stored, metadata)
}

/// A training run as `ffebm train` starts it.
#[derive(Default)]
pub struct TrainRequest {
    pub preset: Option<String>,
    /// A TOML run description (file contents), merged over the preset.
    pub config_toml: Option<String>,
    /// `key=value` overrides, as `--set`.
    pub sets: Vec<String>,
    pub classes: Option<usize>,
    pub epochs: Option<usize>,
    pub data_dir: Option<PathBuf>,
    pub download: bool,
    pub out: PathBuf,
    pub resume: bool,
    pub seed: u64,
    pub quiet: bool,
}

/// What a training session leaves.
pub struct TrainOutcome {
    pub run_dir: PathBuf,
    /// The epoch records (`metrics.jsonl`), as a JSON array.
    pub epochs_json: String,
    pub completed: bool,
    pub model: Net,
}

/// The run configuration of a request (as `ffebm train` resolves its options).
fn run_config(r: &TrainRequest) -> Result<RunConfig> {
    let mut sets = r.sets.clone();
    if let Some(d) = &r.data_dir {
        sets.push(format!("data.dir={:?}", d.display().to_string()));
    }
    if r.download {
        sets.push("data.download=true".into());
    }
    if let Some(e) = r.epochs {
        sets.push(format!("train.epochs={e}"));
    }
    if r.resume {
        let path = r.out.join("config.toml");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (is {} a run directory?)",
                path.display(),
                r.out.display()
            )
        })?;
        ensure!(
            r.out.join(LAST).exists(),
            "{} has no checkpoint to resume from",
            r.out.display()
        );
        return RunConfig::resolve(None, None, Some(&text), &sets, r.seed)
            .with_context(|| format!("in {}", path.display()));
    }
    ensure!(
        r.preset.is_some() || r.config_toml.is_some(),
        "nothing to train: give preset=NAME or config=FILE.toml (or a dict)"
    );
    RunConfig::resolve(
        r.preset.as_deref(),
        r.classes,
        r.config_toml.as_deref(),
        &sets,
        r.seed,
    )
}

/// A dict run description (JSON) as TOML text.
pub fn run_toml_of_json(json: &str) -> Result<String> {
    toml_of_json(json)
}

/// Trains (or resumes) a run. `interrupt` makes the trainer stop after its current step
/// with a checkpoint; `on_epoch` receives each epoch record as JSON after its checkpoints
/// (an error from it stops training with that error).
pub fn train(
    r: &TrainRequest,
    interrupt: Arc<AtomicBool>,
    mut on_epoch: impl FnMut(String) -> Result<()> + 'static,
) -> Result<TrainOutcome> {
    let cfg = run_config(r)?;
    let defaults = Phases {
        t1: cfg.algorithm.t1,
        t2: cfg.algorithm.t2,
        beta: cfg.algorithm.beta,
        tol: cfg.algorithm.tol,
    };
    let opts = TrainOptions {
        run_dir: r.out.clone(),
        resume: r.resume,
        quiet: r.quiet,
        stop_after_steps: None,
        interrupt: Some(interrupt),
    };
    let summary = ffebm::hooks::observe_epochs(
        move |rec| on_epoch(serde_json::to_string(rec)?),
        || ffebm::train::train(cfg, opts),
    )?;
    Ok(TrainOutcome {
        epochs_json: serde_json::to_string(&summary.epochs)?,
        completed: summary.completed,
        model: Net::new(
            summary.model,
            Some(defaults),
            summary.run_dir.display().to_string(),
        ),
        run_dir: summary.run_dir,
    })
}

/// Evaluates a checkpoint on its run's evaluation sets (as `ffebm eval`): JSON object
/// `{set name: {loss, top1, top5, samples, sweeps}}`, plus `epoch` and `step`.
pub fn evaluate_checkpoint(
    checkpoint: &Path,
    sets: &[String],
    data_dir: Option<&Path>,
    seed: u64,
    quiet: bool,
) -> Result<String> {
    let text = checkpoint_config(checkpoint)?;
    let mut sets = sets.to_vec();
    if let Some(d) = data_dir {
        sets.push(format!("data.dir={:?}", d.display().to_string()));
    }
    let cfg = RunConfig::resolve(None, None, Some(&text), &sets, seed)?;
    let mut model = Model::new(cfg.model.clone(), cfg.seed)?;
    let mut opt = ffebm::train::optim::Optimizer::new(cfg.optim.clone(), &model);
    let state = load_checkpoint(checkpoint, &mut model, &mut opt)?;
    let data = ffebm::train::data::load_run_data(
        &ffebm::train::config::DataConfig {
            val_size: 0,
            train_limit: Some(1),
            ..cfg.data.clone()
        },
        cfg.seed,
        quiet,
    )?;
    let mut out = BTreeMap::new();
    for (name, subset) in &data.tests {
        let m = evaluate(
            &model,
            subset,
            cfg.data.eval_batch_size.unwrap_or(cfg.data.batch_size),
            eval_schedule(&cfg),
            None,
        )?;
        out.insert(name.clone(), serde_json::to_value(m)?);
    }
    Ok(serde_json::json!({
        "checkpoint": checkpoint.display().to_string(),
        "epoch": state.epoch,
        "step": state.step,
        "sets": out,
    })
    .to_string())
}
