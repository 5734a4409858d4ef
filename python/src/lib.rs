//! `ffebm._ffebm`: the native part of the `ffebm` Python package. A thin layer: argument
//! conversion ([`arrays`]), one call into the library ([`engine`]), results back as NumPy
//! arrays and dicts. Long calls run on a worker thread with the GIL released while the
//! calling thread polls for signals, so Ctrl-C cancels them (KeyboardInterrupt) within one
//! relaxation sweep. The Python-facing API (signatures, defaults, docs) is `ffebm/__init__.py`.

mod arrays;
mod engine;
mod run;

use engine::{AlgoArgs, AlgoConfig, Net, TrainRequest};
use pyo3::exceptions::{
    PyFileNotFoundError, PyFloatingPointError, PyKeyboardInterrupt, PyOSError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::collections::HashMap;
use std::path::PathBuf;

/// An anyhow error from the library as the Python exception of its kind, with the message
/// the command line prints.
pub(crate) fn py_err(e: anyhow::Error) -> PyErr {
    let msg = format!("{e:#}");
    match engine::classify(&e) {
        engine::ErrorKind::Cancelled => PyKeyboardInterrupt::new_err(msg),
        engine::ErrorKind::NotFound => PyFileNotFoundError::new_err(msg),
        engine::ErrorKind::Io => PyOSError::new_err(msg),
        engine::ErrorKind::NonFinite => PyFloatingPointError::new_err(msg),
        engine::ErrorKind::Invalid => PyValueError::new_err(msg),
    }
}

fn tensors_dict<'py>(
    py: Python<'py>,
    items: Vec<(String, engine::Value)>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (name, v) in items {
        d.set_item(name, arrays::value_to_numpy(py, v)?)?;
    }
    Ok(d)
}

fn tensors_of(d: &Bound<'_, PyDict>) -> PyResult<Vec<(String, engine::Value)>> {
    d.iter()
        .map(|(k, v)| {
            let name: String = k
                .extract()
                .map_err(|_| PyValueError::new_err(format!("state dict key {k} is not a str")))?;
            let value = arrays::value(&v, &name)?;
            Ok((name, value))
        })
        .collect()
}

/// The native model: an ff-EBM with packed kernels. Use `ffebm.Model`.
#[pyclass(module = "ffebm._ffebm", name = "Net")]
struct PyNet {
    net: Net,
}

fn wrap(net: Net) -> PyNet {
    PyNet { net }
}

impl PyNet {
    /// The batch, its labels and the algorithm settings of a one-batch call.
    fn one_batch(
        &self,
        x: &Bound<'_, PyAny>,
        y: &Bound<'_, PyAny>,
        args: &AlgoArgs,
    ) -> PyResult<(engine::Batch, Vec<i64>, AlgoConfig)> {
        let batch = arrays::batch(x, "x")?;
        let labels = arrays::labels(y, "y", batch.nchw[0])?;
        let algo = self.net.algo(args).map_err(py_err)?;
        Ok((batch, labels, algo))
    }
}

#[pymethods]
impl PyNet {
    #[staticmethod]
    fn from_preset(name: &str, classes: Option<usize>, seed: u64) -> PyResult<Self> {
        Net::from_preset(name, classes, seed)
            .map(wrap)
            .map_err(py_err)
    }

    #[staticmethod]
    fn from_toml(text: &str, classes: Option<usize>, seed: u64) -> PyResult<Self> {
        Net::from_toml(text, classes, seed)
            .map(wrap)
            .map_err(py_err)
    }

    #[staticmethod]
    fn from_json(json: &str, classes: Option<usize>, seed: u64) -> PyResult<Self> {
        Net::from_json(json, classes, seed)
            .map(wrap)
            .map_err(py_err)
    }

    #[staticmethod]
    fn load(path: PathBuf, seed: u64) -> PyResult<Self> {
        Net::load(&path, seed).map(wrap).map_err(py_err)
    }

    fn copy(&self) -> Self {
        wrap(self.net.clone())
    }

    fn load_weights(&mut self, path: PathBuf) -> PyResult<()> {
        self.net.load_weights(&path).map_err(py_err)
    }

    fn set_tensors(&mut self, tensors: &Bound<'_, PyDict>, strict: bool) -> PyResult<()> {
        let items = tensors_of(tensors)?;
        self.net.set_tensors(items, strict).map_err(py_err)
    }

    fn tensors<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        tensors_dict(py, self.net.tensors())
    }

    fn save(&self, path: PathBuf) -> PyResult<()> {
        self.net.save(&path).map_err(py_err)
    }

    fn config_toml(&self) -> PyResult<String> {
        self.net.config_toml().map_err(py_err)
    }

    fn config_json(&self) -> PyResult<String> {
        self.net.config_json().map_err(py_err)
    }

    /// The `[algorithm]` defaults of the preset or run as JSON, or None.
    fn defaults(&self) -> PyResult<Option<String>> {
        self.net
            .defaults()
            .map(|a| Ok(engine::algo_value(a)?.to_string()))
            .transpose()
            .map_err(py_err)
    }

    /// The `[algorithm]` settings (JSON) a gradient call with these options would use.
    #[allow(clippy::too_many_arguments)]
    fn algorithm(
        &self,
        algo: Option<String>,
        t1: Option<usize>,
        t2: Option<usize>,
        beta: Option<f32>,
        tol: Option<f32>,
        variant: Option<String>,
        bn_compat: Option<bool>,
    ) -> PyResult<String> {
        let args = AlgoArgs {
            name: algo,
            t1,
            t2,
            beta,
            tol,
            variant,
            bn_compat,
        };
        let a = self.net.algo(&args).map_err(py_err)?;
        Ok(engine::algo_value(&a).map_err(py_err)?.to_string())
    }

    #[getter]
    fn origin(&self) -> String {
        self.net.origin().to_string()
    }

    #[getter]
    fn input_shape(&self) -> (usize, usize, usize) {
        let [c, h, w] = self.net.input_shape();
        (c, h, w)
    }

    #[getter]
    fn classes(&self) -> usize {
        self.net.classes()
    }

    #[getter]
    fn num_blocks(&self) -> usize {
        self.net.num_blocks()
    }

    #[getter]
    fn num_params(&self) -> usize {
        self.net.num_params()
    }

    fn param_names(&self) -> Vec<String> {
        self.net.param_names()
    }

    fn prepare(&mut self, py: Python<'_>) -> PyResult<()> {
        let net = &mut self.net;
        run::detached(py, move || net.prepare())
    }

    fn free_phase<'py>(
        &mut self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        eval: bool,
        t1: Option<usize>,
        tol: Option<f32>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let batch = arrays::batch(x, "x")?;
        let (schedule, order) = self.net.free_settings(t1, tol).map_err(py_err)?;
        let net = &mut self.net;
        let out = run::detached(py, move || engine::free(net, batch, eval, schedule, order))?;
        let d = PyDict::new(py);
        let states = PyList::empty(py);
        for block in out.states {
            let layers = PyList::empty(py);
            for s in block {
                layers.append(arrays::to_numpy(py, s)?)?;
            }
            states.append(layers)?;
        }
        d.set_item("states", states)?;
        d.set_item("logits", arrays::to_numpy(py, out.logits)?)?;
        d.set_item("sweeps", out.sweeps)?;
        Ok(d)
    }

    #[allow(clippy::too_many_arguments)]
    fn gradients<'py>(
        &mut self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        y: &Bound<'py, PyAny>,
        algo: String,
        t1: Option<usize>,
        t2: Option<usize>,
        beta: Option<f32>,
        tol: Option<f32>,
        variant: Option<String>,
        bn_compat: Option<bool>,
        update_bn: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let args = AlgoArgs {
            name: Some(algo),
            t1,
            t2,
            beta,
            tol,
            variant,
            bn_compat,
        };
        let (batch, labels, algo) = self.one_batch(x, y, &args)?;
        let net = &mut self.net;
        let out = run::detached(py, move || {
            engine::gradients(net, batch, &labels, &algo, update_bn)
        })?;
        let d = PyDict::new(py);
        let grads = PyDict::new(py);
        for (name, g) in out.grads {
            grads.set_item(name, arrays::to_numpy(py, g)?)?;
        }
        d.set_item("grads", grads)?;
        d.set_item("loss", out.loss)?;
        d.set_item("logits", arrays::to_numpy(py, out.logits)?)?;
        d.set_item("sweeps", out.sweeps)?;
        d.set_item("bn_after", tensors_dict(py, out.bn_after)?)?;
        d.set_item("seconds", out.seconds)?;
        Ok(d)
    }

    /// Seconds that `compute_gradients` (EP) alone takes on this batch, measured in Rust.
    fn time_gradients(
        &mut self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        y: &Bound<'_, PyAny>,
        t1: Option<usize>,
        t2: Option<usize>,
        beta: Option<f32>,
    ) -> PyResult<f64> {
        let args = AlgoArgs {
            name: Some("ep".into()),
            t1,
            t2,
            beta,
            ..AlgoArgs::default()
        };
        let (batch, labels, algo) = self.one_batch(x, y, &args)?;
        let net = &mut self.net;
        run::detached(py, move || {
            engine::time_gradients(net, batch, &labels, &algo)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn gdd(
        &mut self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        y: &Bound<'_, PyAny>,
        t1: Option<usize>,
        t2: Option<usize>,
        beta: Option<f32>,
        variant: Option<String>,
        coords: usize,
        seed: u64,
        transients: bool,
    ) -> PyResult<String> {
        // the analysis contrasts EP (with these settings) against both IDs
        let args = AlgoArgs {
            name: Some("ep".into()),
            t1,
            t2,
            beta,
            variant,
            ..AlgoArgs::default()
        };
        let (batch, labels, algo) = self.one_batch(x, y, &args)?;
        let net = &mut self.net;
        run::detached(py, move || {
            engine::gdd(net, batch, &labels, &algo, coords, seed, transients)
        })
    }
}

#[pyfunction]
fn presets() -> Vec<&'static str> {
    engine::preset_names()
}

#[pyfunction]
#[pyo3(signature = (name, classes=None))]
fn preset_json(name: &str, classes: Option<usize>) -> PyResult<String> {
    engine::preset_json(name, classes).map_err(py_err)
}

#[pyfunction]
fn toml_literal(json: &str) -> PyResult<String> {
    engine::toml_literal(json).map_err(py_err)
}

#[pyfunction]
fn run_toml_of_json(json: &str) -> PyResult<String> {
    engine::run_toml_of_json(json).map_err(py_err)
}

#[pyfunction]
fn set_threads(n: usize) -> PyResult<()> {
    engine::set_threads(n).map_err(py_err)
}

#[pyfunction]
fn threads() -> usize {
    engine::threads()
}

#[pyfunction]
fn read_tensors<'py>(
    py: Python<'py>,
    path: PathBuf,
) -> PyResult<(Bound<'py, PyDict>, HashMap<String, String>)> {
    let (items, meta) = engine::read_tensors(&path).map_err(py_err)?;
    Ok((tensors_dict(py, items)?, meta))
}

#[pyfunction]
fn write_tensors(
    path: PathBuf,
    tensors: &Bound<'_, PyDict>,
    metadata: HashMap<String, String>,
) -> PyResult<()> {
    let items = tensors_of(tensors)?;
    engine::write_tensors(&path, items, metadata).map_err(py_err)
}

#[pyfunction]
#[pyo3(signature = (checkpoint, sets, data_dir, seed, quiet))]
fn evaluate(
    py: Python<'_>,
    checkpoint: PathBuf,
    sets: Vec<String>,
    data_dir: Option<PathBuf>,
    seed: u64,
    quiet: bool,
) -> PyResult<String> {
    run::detached(py, move || {
        engine::evaluate_checkpoint(&checkpoint, &sets, data_dir.as_deref(), seed, quiet)
    })
}

/// Trains; returns `(run_dir, completed, epochs JSON, model)`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (out, preset, config_toml, sets, classes, epochs, data_dir, download, resume, seed, quiet, callback, init=None))]
fn train(
    py: Python<'_>,
    out: PathBuf,
    preset: Option<String>,
    config_toml: Option<String>,
    sets: Vec<String>,
    classes: Option<usize>,
    epochs: Option<usize>,
    data_dir: Option<PathBuf>,
    download: bool,
    resume: bool,
    seed: u64,
    quiet: bool,
    callback: Option<Py<PyAny>>,
    init: Option<PyRef<'_, PyNet>>,
) -> PyResult<(String, bool, String, PyNet)> {
    let req = TrainRequest {
        preset,
        config_toml,
        sets,
        classes,
        epochs,
        data_dir,
        download,
        out,
        resume,
        seed,
        quiet,
        init: init.map(|n| n.net.clone()),
    };
    let o = run::training(py, req, callback)?;
    Ok((
        o.run_dir.display().to_string(),
        o.completed,
        o.epochs_json,
        wrap(o.model),
    ))
}

/// Writes the run directory of a new run starting from `model`'s weights (config.toml and
/// checkpoint_last at step 0); returns the run directory.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (out, model, preset, config_toml, sets, classes, epochs, data_dir, download, seed))]
fn start_run(
    py: Python<'_>,
    out: PathBuf,
    model: PyRef<'_, PyNet>,
    preset: Option<String>,
    config_toml: Option<String>,
    sets: Vec<String>,
    classes: Option<usize>,
    epochs: Option<usize>,
    data_dir: Option<PathBuf>,
    download: bool,
    seed: u64,
) -> PyResult<String> {
    let net = model.net.clone();
    let dir = out.display().to_string();
    let req = TrainRequest {
        preset,
        config_toml,
        sets,
        classes,
        epochs,
        data_dir,
        download,
        out,
        seed,
        ..TrainRequest::default()
    };
    run::detached(py, move || engine::start_run(&req, &net).map(drop))?;
    Ok(dir)
}

#[pymodule]
fn _ffebm(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyNet>()?;
    m.add_function(wrap_pyfunction!(presets, m)?)?;
    m.add_function(wrap_pyfunction!(preset_json, m)?)?;
    m.add_function(wrap_pyfunction!(toml_literal, m)?)?;
    m.add_function(wrap_pyfunction!(run_toml_of_json, m)?)?;
    m.add_function(wrap_pyfunction!(set_threads, m)?)?;
    m.add_function(wrap_pyfunction!(threads, m)?)?;
    m.add_function(wrap_pyfunction!(read_tensors, m)?)?;
    m.add_function(wrap_pyfunction!(write_tensors, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add_function(wrap_pyfunction!(start_run, m)?)?;
    Ok(())
}
