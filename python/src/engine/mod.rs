//! Every call from the binding into the ffebm library lives in this module, so that the
//! binding follows changes of the library's internal API in one place. The rest of the
//! binding sees plain data only: [`Array`] (f32 data with a shape), [`Value`], strings and
//! JSON. Nothing here knows about Python.

mod compute;
mod net;
mod train;

pub use compute::{free, gdd, gradients, time_gradients, GradRequest};
pub use net::{toml_literal, Net};
pub use train::{
    evaluate_checkpoint, read_tensors, run_toml_of_json, train, write_tensors, TrainOutcome,
    TrainRequest,
};

use anyhow::{ensure, Context, Result};
use ffebm::core::Tensor;
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
