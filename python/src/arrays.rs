//! NumPy arrays ↔ the binding's plain data ([`Array`], [`Value`], [`Batch`]), with the
//! dtype and shape checks that turn bad input into `ValueError`s naming the argument.
//!
//! Copies: an input batch is copied once, straight into the core's NHWC layout (a
//! channels-last array in memory is a plain memcpy, an NCHW-contiguous one a transposition);
//! arrays handed back to Python take over the Rust buffer (no copy), and activations keep
//! the core's NHWC memory behind an NCHW shape (channels-last strides, like
//! `torch.channels_last`).

use crate::engine::{Array, Batch, Value};
use numpy::ndarray::{ArrayD, ArrayView4, IxDyn};
use numpy::prelude::*;
use numpy::{PyArray1, PyArray4, PyArrayDyn, PyUntypedArray};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

fn value_error(msg: String) -> PyErr {
    PyValueError::new_err(msg)
}

/// `obj` as a NumPy array, or a ValueError naming `name`.
fn ndarray<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Bound<'py, PyUntypedArray>> {
    obj.cast::<PyUntypedArray>().cloned().map_err(|_| {
        value_error(format!(
            "`{name}` must be a NumPy array (or a CPU torch tensor), got {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "an unknown type".into())
        ))
    })
}

fn dtype_name(a: &Bound<'_, PyUntypedArray>) -> String {
    a.dtype().to_string()
}

/// A float32 array of any shape, read into a row-major Vec (one copy).
fn f32_array(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<(Vec<usize>, Vec<f32>)> {
    let a = ndarray(obj, name)?;
    let arr = a.cast::<PyArrayDyn<f32>>().map_err(|_| {
        value_error(format!(
            "`{name}` has dtype {}, expected float32 (convert with .astype(numpy.float32))",
            dtype_name(&a)
        ))
    })?;
    let ro = arr
        .try_readonly()
        .map_err(|e| value_error(format!("`{name}`: {e}")))?;
    let v = ro.as_array();
    let data = match v.as_slice() {
        Some(s) => s.to_vec(),
        None => v.iter().copied().collect(),
    };
    Ok((v.shape().to_vec(), data))
}

/// An image batch `[B, C, H, W]` float32, copied once into NHWC order.
pub fn batch(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Batch> {
    let a = ndarray(obj, name)?;
    if !a.dtype().is_equiv_to(&numpy::dtype::<f32>(obj.py())) {
        return Err(value_error(format!(
            "`{name}` has dtype {}, expected float32 (convert with .astype(numpy.float32))",
            dtype_name(&a)
        )));
    }
    if a.ndim() != 4 {
        return Err(value_error(format!(
            "`{name}` has shape {:?}, expected [B, C, H, W] (NCHW)",
            a.shape()
        )));
    }
    let arr = a.cast::<PyArray4<f32>>()?;
    let ro = arr
        .try_readonly()
        .map_err(|e| value_error(format!("`{name}`: {e}")))?;
    let v: ArrayView4<'_, f32> = ro.as_array();
    let (b, c, h, w) = v.dim();
    let nhwc = v.permuted_axes([0, 2, 3, 1]);
    let data = match nhwc.as_slice() {
        Some(s) => s.to_vec(),
        None => nhwc.iter().copied().collect(),
    };
    Ok(Batch {
        nchw: [b, c, h, w],
        nhwc: data,
    })
}

/// Integer labels `[B]` (any integer dtype) as i64.
pub fn labels(obj: &Bound<'_, PyAny>, name: &str, batch: usize) -> PyResult<Vec<i64>> {
    let a = ndarray(obj, name)?;
    let kind = a.dtype().kind();
    if kind != b'i' && kind != b'u' {
        return Err(value_error(format!(
            "`{name}` has dtype {}, expected an integer type (labels 0..classes-1)",
            dtype_name(&a)
        )));
    }
    if a.shape() != [batch] {
        return Err(value_error(format!(
            "`{name}` has shape {:?}, expected [{batch}] (one label per sample of x)",
            a.shape()
        )));
    }
    let as64 = a.call_method1("astype", ("int64",))?;
    let arr = as64.cast::<PyArray1<i64>>()?;
    Ok(arr.readonly().as_array().to_vec())
}

/// A state-dict entry: float32 → F32, integer → I64.
pub fn value(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Value> {
    let a = ndarray(obj, name)?;
    match a.dtype().kind() {
        b'i' | b'u' => {
            let as64 = a.call_method1("astype", ("int64",))?;
            let arr = as64.cast::<PyArrayDyn<i64>>()?;
            let ro = arr.readonly();
            let v = ro.as_array();
            Ok(Value::I64 {
                shape: v.shape().to_vec(),
                data: v.iter().copied().collect(),
            })
        }
        _ => {
            let (shape, data) = f32_array(obj, name)?;
            Ok(Value::F32(Array {
                shape,
                data,
                channels_last: false,
            }))
        }
    }
}

/// Hands a Rust buffer to NumPy without copying it. Channels-last activations become
/// NCHW-shaped views with NHWC strides.
pub fn to_numpy<'py>(py: Python<'py>, a: Array) -> PyResult<Bound<'py, PyAny>> {
    let internal: Vec<usize> = if a.channels_last {
        let [b, c, h, w] = a.shape[..] else {
            return Err(value_error(format!(
                "channels-last array of shape {:?}",
                a.shape
            )));
        };
        vec![b, h, w, c]
    } else {
        a.shape.clone()
    };
    let arr = ArrayD::from_shape_vec(IxDyn(&internal), a.data)
        .map_err(|e| value_error(format!("array of shape {internal:?}: {e}")))?;
    let arr = if a.channels_last {
        arr.permuted_axes(IxDyn(&[0, 3, 1, 2]))
    } else {
        arr
    };
    Ok(arr.into_pyarray(py).into_any())
}

pub fn value_to_numpy<'py>(py: Python<'py>, v: Value) -> PyResult<Bound<'py, PyAny>> {
    match v {
        Value::F32(a) => to_numpy(py, a),
        Value::I64 { shape, data } => {
            let arr = ArrayD::from_shape_vec(IxDyn(&shape), data)
                .map_err(|e| value_error(format!("array of shape {shape:?}: {e}")))?;
            Ok(arr.into_pyarray(py).into_any())
        }
    }
}
