//! Every call from the binding into the ffebm library lives in this module, so that the
//! binding follows changes of the library's internal API in one place. The rest of the
//! binding sees plain data only: [`Array`] (f32 data with a shape), [`Value`], strings and
//! JSON. Nothing here knows about Python.

mod compute;
mod net;
mod train;

pub use compute::{free, gdd, gradients, time_gradients};
pub use net::{toml_literal, Net};
pub use train::{
    evaluate_checkpoint, read_tensors, run_toml_of_json, start_run, train, write_tensors,
    TrainOutcome, TrainRequest,
};

use anyhow::{bail, ensure, Context, Result};
use ffebm::core::Tensor;
pub use ffebm::grad::AlgoConfig;
use ffebm::grad::EpVariant;
use ffebm::io::tensors::Stored;
use ffebm::model::presets::{preset, NAMES};
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

/// Named tensors, in order (a state dict, the contents of a file).
pub type Named = Vec<(String, Value)>;

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

/// A preset as JSON: name, summary, `model` (the `[model]` table), `algorithm` (the
/// `[algorithm]` table: estimator, T1, T2, β, variant, tol, orders, ...) and `train`
/// hyper-parameters.
pub fn preset_json(name: &str, classes: Option<usize>) -> Result<String> {
    let p = preset(name, classes)?;
    let t = &p.train;
    Ok(serde_json::json!({
        "name": p.name,
        "summary": p.summary,
        "model": p.model,
        "algorithm": algo_value(&p.algo)?,
        "train": {
            "dataset": t.dataset,
            "batch_size": t.batch_size,
            "epochs": t.epochs,
            "optim": t.optim,
            "schedule": t.schedule,
            "normalize": t.normalize,
            "pad_to_32": t.pad_to_32,
        },
    })
    .to_string())
}

/// An algorithm configuration as a JSON object with the `[algorithm]` keys (`tol` is
/// `null` when absent; β and tol as the shortest decimals of their f32 values: 0.2, not
/// 0.20000000298023224).
pub fn algo_value(a: &AlgoConfig) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(a)?;
    if let Some(o) = v.as_object_mut() {
        o.entry("tol").or_insert(serde_json::Value::Null);
    }
    Ok(v)
}

/// Options of one call; `None` takes the model's defaults (its preset's or run's
/// `[algorithm]`).
#[derive(Clone, Debug, Default)]
pub struct AlgoArgs {
    /// The estimator (`ep`, `id-exact`, `id-reference`); `None`: the default's.
    pub name: Option<String>,
    pub t1: Option<usize>,
    pub t2: Option<usize>,
    pub beta: Option<f32>,
    /// `Some(0.0)` disables a default tolerance.
    pub tol: Option<f32>,
    /// EP variant: `centered`, `positive` or `negative`.
    pub variant: Option<String>,
    /// `Some(true)`: BN running statistics updated at every transform evaluation (as the
    /// reference); `Some(false)`: once per batch.
    pub bn_compat: Option<bool>,
}

/// An EP variant from its name.
pub fn parse_variant(name: &str) -> Result<EpVariant> {
    match name {
        "centered" => Ok(EpVariant::Centered),
        "positive" => Ok(EpVariant::Positive),
        "negative" => Ok(EpVariant::Negative),
        _ => bail!("unknown EP variant `{name}`: expected `centered`, `positive` or `negative`"),
    }
}
