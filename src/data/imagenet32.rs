//! ImageNet32 reader (Downsampled ImageNet 32x32, Chrabaszcz, Loshchilov & Hutter 2017).
//!
//! The release has `train_data_batch_1` .. `train_data_batch_10` and `val_data`, either as
//! Python pickles (no extension) or as `.npz` files (same base names + `.npz`). Each holds
//! a dict with `data`: an `N × 3072` uint8 array whose rows are three 32x32 planes R, G, B
//! (row-major), and `labels`: N ints in `1..=1000` (a list, or an integer array); train
//! files may also carry `mean`, which is ignored. Labels are mapped to `0..=999`.
//! The format is detected from the content (zip magic `PK` → npz, `0x80` → pickle).
//!
//! Validation: the keys exist; `data` is a C-ordered uint8 array of shape `N × 3072`
//! (`N × 3 × 32 × 32` is accepted too); `labels` has N integers, each in `1..=1000`.

use std::path::{Path, PathBuf};

use super::error::{DataError, Result};
use super::kind::DatasetKind;
use super::npy;
use super::pickle::{self, Array, Value};

const PIXELS: usize = 3 * 32 * 32;

fn invalid(path: &Path, expected: impl Into<String>, found: impl Into<String>) -> DataError {
    DataError::Invalid {
        path: path.to_path_buf(),
        format: "ImageNet32 (pickle/npz)".into(),
        expected: expected.into(),
        found: found.into(),
        advice: DatasetKind::ImageNet32.advice(),
    }
}

/// Find `name` or `name.npz` in `dir`.
pub fn resolve(dir: &Path, name: &Path) -> Option<PathBuf> {
    let plain = dir.join(name);
    if plain.is_file() {
        return Some(plain);
    }
    let mut s = plain.into_os_string();
    s.push(".npz");
    let npz = PathBuf::from(s);
    npz.is_file().then_some(npz)
}

/// Read one batch file, appending its planar pixels and 0-based labels.
/// Returns the number of images read.
pub fn read_file(path: &Path, images: &mut Vec<u8>, labels: &mut Vec<u32>) -> Result<usize> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let (data, raw_labels) = if bytes.starts_with(b"PK") {
        read_npz(path, &bytes)?
    } else if bytes.first() == Some(&0x80) {
        read_pickle(path, &bytes)?
    } else {
        return Err(invalid(
            path,
            "a pickle (first byte 0x80, protocol 2-5) or an .npz zip archive (first bytes \"PK\")",
            format!("first bytes {:02x?}", &bytes[..bytes.len().min(4)]),
        ));
    };
    drop(bytes);
    let n = check_data(path, &data)?;
    if raw_labels.len() != n {
        return Err(invalid(
            path,
            format!("{n} labels (one per image of 'data')"),
            format!("{} labels", raw_labels.len()),
        ));
    }
    if let Some((i, l)) = raw_labels
        .iter()
        .enumerate()
        .find(|(_, &l)| !(1..=1000).contains(&l))
    {
        return Err(invalid(
            path,
            "labels in 1..=1000",
            format!("{l} at index {i}"),
        ));
    }
    images.extend_from_slice(&data.data);
    labels.extend(raw_labels.iter().map(|&l| (l - 1) as u32));
    Ok(n)
}

fn check_data(path: &Path, a: &Array) -> Result<usize> {
    let ok_shape = match a.shape.as_slice() {
        [_, p] => *p == PIXELS,
        [_, 3, 32, 32] => true,
        _ => false,
    };
    if a.dtype.code != "u1" || !ok_shape || a.fortran {
        return Err(invalid(
            path,
            "'data' as a C-ordered uint8 array of shape N x 3072",
            format!(
                "dtype {}, shape {:?}{}",
                a.dtype.code,
                a.shape,
                if a.fortran { ", Fortran order" } else { "" }
            ),
        ));
    }
    let n = a.shape[0];
    if a.data.len() != n * PIXELS {
        return Err(invalid(
            path,
            format!("{} data bytes for {n} images", n * PIXELS),
            format!("{} bytes", a.data.len()),
        ));
    }
    Ok(n)
}

fn read_pickle(path: &Path, bytes: &[u8]) -> Result<(Array, Vec<i64>)> {
    let root = pickle::load(bytes).map_err(|e| {
        invalid(
            path,
            "a complete pickle of a dict with 'data' and 'labels'",
            format!("a pickle decoding error: {e}"),
        )
    })?;
    if !matches!(root, Value::Dict(_)) {
        return Err(invalid(
            path,
            "a pickled dict with keys 'data' and 'labels'",
            format!("a pickled {}", root.type_name()),
        ));
    }
    let data = match root.get("data") {
        Some(Value::Array(a)) => a.borrow().clone(),
        Some(other) => {
            return Err(invalid(
                path,
                "'data' to be a numpy array",
                other.type_name(),
            ))
        }
        None => return Err(invalid(path, "a key 'data'", "no such key")),
    };
    let labels = match root.get("labels") {
        Some(Value::List(l)) => l
            .borrow()
            .iter()
            .map(|v| match v {
                Value::Int(i) => Ok(*i),
                other => Err(invalid(
                    path,
                    "'labels' to be a list of ints",
                    format!("a list holding a {}", other.type_name()),
                )),
            })
            .collect::<Result<Vec<i64>>>()?,
        Some(Value::Array(a)) => int_array(path, &a.borrow())?,
        Some(other) => {
            return Err(invalid(
                path,
                "'labels' to be a list of ints or an integer array",
                other.type_name(),
            ))
        }
        None => return Err(invalid(path, "a key 'labels'", "no such key")),
    };
    Ok((data, labels))
}

fn int_array(path: &Path, a: &Array) -> Result<Vec<i64>> {
    if a.shape.len() != 1 {
        return Err(invalid(
            path,
            "'labels' as a 1-d integer array",
            format!("shape {:?}", a.shape),
        ));
    }
    a.to_i64().ok_or_else(|| {
        invalid(
            path,
            "'labels' as an integer array",
            format!("dtype {}", a.dtype.code),
        )
    })
}

fn read_npz(path: &Path, bytes: &[u8]) -> Result<(Array, Vec<i64>)> {
    let member = |key: &str| -> Result<Array> {
        match npy::npz_member(bytes, key) {
            Ok(Some(a)) => Ok(a),
            Ok(None) => Err(invalid(
                path,
                format!("an .npz member '{key}.npy'"),
                "no such member",
            )),
            Err(e) => Err(invalid(path, "a valid .npz archive", e)),
        }
    };
    let data = member("data")?;
    let labels = int_array(path, &member("labels")?)?;
    Ok((data, labels))
}
