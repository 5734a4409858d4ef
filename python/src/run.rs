//! Running library calls off the GIL, interruptibly.
//!
//! The call runs on a scoped worker thread while the calling (Python) thread waits with
//! the GIL released, waking every [`POLL`] to run Python's signal handlers. A
//! KeyboardInterrupt sets the worker's cancel flag, which the library checks before every
//! relaxation sweep ([`engine::cancellable`]), waits for the worker to stop, and raises.
//! Nothing is written by a cancelled gradient/analysis/evaluation call; training stops at
//! a step boundary with a checkpoint (first Ctrl-C) or at once (second Ctrl-C), its
//! checkpoints being written atomically.

use crate::engine::{self, TrainOutcome, TrainRequest};
use crate::py_err;
use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError};
use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

/// How often the waiting thread runs Python's signal handlers.
const POLL: Duration = Duration::from_millis(20);

fn panic_message(p: Box<dyn std::any::Any + Send>) -> PyErr {
    let msg = p
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    PyRuntimeError::new_err(format!("ffebm panicked: {msg}"))
}

/// Waits (GIL released) up to [`POLL`] for a message.
fn wait<T: Send>(py: Python<'_>, rx: Receiver<T>) -> (Result<T, RecvTimeoutError>, Receiver<T>) {
    py.detach(move || {
        let r = rx.recv_timeout(POLL);
        (r, rx)
    })
}

/// Runs `work` with the GIL released; Ctrl-C cancels it and raises KeyboardInterrupt.
pub fn detached<T, W>(py: Python<'_>, work: W) -> PyResult<T>
where
    T: Send,
    W: FnOnce() -> anyhow::Result<T> + Send,
{
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    std::thread::scope(|s| {
        let (tx, mut rx) = channel::<()>();
        let handle = s.spawn(move || {
            let r = engine::cancellable(flag, work);
            let _ = tx.send(());
            r
        });
        loop {
            let (r, back) = wait(py, rx);
            rx = back;
            if !matches!(r, Err(RecvTimeoutError::Timeout)) {
                break; // finished (or the worker panicked and dropped its sender)
            }
            if let Err(e) = py.check_signals() {
                cancel.store(true, Ordering::SeqCst);
                let _ = py.detach(move || handle.join());
                return Err(e);
            }
        }
        match py.detach(move || handle.join()) {
            Ok(r) => r.map_err(py_err),
            Err(p) => Err(panic_message(p)),
        }
    })
}

enum Msg {
    /// An epoch record (JSON) and where to answer.
    Epoch(String, Sender<Reply>),
    Done,
}

enum Reply {
    Continue,
    Stop,
    Failed,
}

fn write_stderr(py: Python<'_>, msg: &str) {
    let _ = py
        .import("sys")
        .and_then(|sys| sys.getattr("stderr"))
        .and_then(|e| e.call_method1("write", (msg,)));
}

/// The per-epoch callback: called with the epoch record as a dict; returning `False` stops
/// training after that epoch (with its checkpoint), raising stops it with the exception.
fn call_back(py: Python<'_>, callback: &Py<PyAny>, json: &str) -> PyResult<bool> {
    let record = py.import("json")?.call_method1("loads", (json,))?;
    let r = callback.bind(py).call1((record,))?;
    // anything but `False` continues
    Ok(!r.is_instance_of::<pyo3::types::PyBool>() || r.extract::<bool>()?)
}

/// Trains with the GIL released, calling `callback` between epochs. First Ctrl-C: the
/// trainer finishes its step, checkpoints and returns, then KeyboardInterrupt is raised
/// with the resume hint; a second Ctrl-C cancels the step in progress.
pub fn training(
    py: Python<'_>,
    req: TrainRequest,
    callback: Option<Py<PyAny>>,
) -> PyResult<TrainOutcome> {
    let cancel = Arc::new(AtomicBool::new(false));
    let interrupt = Arc::new(AtomicBool::new(false));
    let (flag, stop, trainer_stop) = (cancel.clone(), interrupt.clone(), interrupt.clone());
    let out_dir = req.out.clone();
    let mut interrupts = 0usize;
    let mut signal_error: Option<PyErr> = None;
    let mut callback_error: Option<PyErr> = None;
    let result = std::thread::scope(|s| {
        let (tx, mut rx) = channel::<Msg>();
        let done = tx.clone();
        let req = &req;
        let handle = s.spawn(move || {
            let on_epoch = move |json: String| -> anyhow::Result<()> {
                let (rtx, rrx) = channel();
                tx.send(Msg::Epoch(json, rtx))
                    .map_err(|_| anyhow::anyhow!("the Python caller went away"))?;
                match rrx.recv() {
                    Ok(Reply::Continue) => Ok(()),
                    Ok(Reply::Stop) => {
                        stop.store(true, Ordering::SeqCst);
                        Ok(())
                    }
                    Ok(Reply::Failed) | Err(_) => {
                        anyhow::bail!("the epoch callback raised an exception")
                    }
                }
            };
            let r = engine::cancellable(flag, || engine::train(req, trainer_stop, on_epoch));
            let _ = done.send(Msg::Done);
            r
        });
        loop {
            let (r, back) = wait(py, rx);
            rx = back;
            match r {
                Ok(Msg::Epoch(json, reply)) => {
                    let answer = match &callback {
                        None => Reply::Continue,
                        Some(cb) => match call_back(py, cb, &json) {
                            Ok(true) => Reply::Continue,
                            Ok(false) => Reply::Stop,
                            Err(e) => {
                                callback_error = Some(e);
                                Reply::Failed
                            }
                        },
                    };
                    let _ = reply.send(answer);
                }
                Ok(Msg::Done) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if let Err(e) = py.check_signals() {
                interrupts += 1;
                let keyboard = e.is_instance_of::<PyKeyboardInterrupt>(py);
                interrupt.store(true, Ordering::SeqCst);
                if keyboard && interrupts == 1 {
                    write_stderr(py, "\ninterrupt: finishing the current step and saving a checkpoint (Ctrl-C again to abort)\n");
                } else {
                    cancel.store(true, Ordering::SeqCst);
                }
                signal_error = Some(e);
            }
        }
        match py.detach(move || handle.join()) {
            Ok(r) => Ok(r),
            Err(p) => Err(panic_message(p)),
        }
    })?;
    if let Some(e) = callback_error {
        return Err(e);
    }
    if let Some(e) = signal_error {
        if !e.is_instance_of::<PyKeyboardInterrupt>(py) {
            return Err(e);
        }
        let last = out_dir.join("checkpoint_last.safetensors");
        return match result {
            Ok(o) if o.completed => Ok(o),
            Ok(o) => {
                let epochs = o.epochs_json.matches("\"kind\":\"epoch\"").count();
                Err(PyKeyboardInterrupt::new_err(format!(
                    "training interrupted after {epochs} complete epoch(s); state saved to {}; resume with ffebm.train(out_dir={:?}, resume=True)",
                    last.display(),
                    out_dir.display().to_string()
                )))
            }
            Err(_) if last.exists() => Err(PyKeyboardInterrupt::new_err(format!(
                "training aborted by a second interrupt; the last complete checkpoint ({}) is intact; resume with ffebm.train(out_dir={:?}, resume=True)",
                last.display(),
                out_dir.display().to_string()
            ))),
            Err(_) => Err(PyKeyboardInterrupt::new_err(format!(
                "training aborted by a second interrupt before its first checkpoint: nothing to resume in {}",
                out_dir.display()
            ))),
        };
    }
    result.map_err(py_err)
}
