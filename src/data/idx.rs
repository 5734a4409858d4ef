//! MNIST-style IDX reader (MNIST, Fashion-MNIST, KMNIST).
//!
//! Format (all integers big-endian): two zero bytes, a type byte (`0x08` = unsigned byte,
//! the only type accepted here), a byte with the number of dimensions `d`, then `d` u32
//! dimension sizes, then the data in row-major order. Image files have magic `0x00000803`
//! and dimensions `N × 28 × 28`; label files have magic `0x00000801` and dimension `N`.
//! Files may be gzip-compressed (detected by the gzip magic `1f 8b`, whatever the name).
//!
//! Validation: the magic number, the number and size of dimensions, the exact file length
//! (header + product of dimensions), equal image and label counts, labels in `0..=9`.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::{DataError, Result};
use super::kind::DatasetKind;

fn invalid(kind: DatasetKind, path: &Path, expected: String, found: String) -> DataError {
    DataError::Invalid {
        path: path.to_path_buf(),
        format: format!("{} IDX", kind.display_name()),
        expected,
        found,
        advice: kind.advice(),
    }
}

/// Read a whole file, transparently gunzipping it if it starts with the gzip magic.
pub fn read_maybe_gz(kind: DatasetKind, path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| {
                invalid(
                    kind,
                    path,
                    "a complete gzip stream".into(),
                    format!("a corrupt or truncated gzip stream ({e})"),
                )
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parse an unsigned-byte IDX file with `ndims` dimensions; returns (dims, data).
/// `inner` optionally fixes the dimensions after the first (e.g. `[28, 28]`).
pub fn parse(
    kind: DatasetKind,
    path: &Path,
    bytes: Vec<u8>,
    ndims: usize,
    inner: &[usize],
) -> Result<(Vec<usize>, Vec<u8>)> {
    let magic = 0x0800 + ndims as u32;
    let what = if ndims == 1 { "labels" } else { "images" };
    if bytes.len() < 4 {
        return Err(invalid(
            kind,
            path,
            format!("an IDX {what} file starting with magic 0x{magic:08x}"),
            format!("only {} bytes", bytes.len()),
        ));
    }
    let found_magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if found_magic != magic {
        return Err(invalid(
            kind,
            path,
            format!("magic number 0x{magic:08x} (unsigned-byte {what}, {ndims} dimensions)"),
            format!("0x{found_magic:08x}"),
        ));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(invalid(
            kind,
            path,
            format!("a {header}-byte header"),
            format!("only {} bytes", bytes.len()),
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    if dims[1..] != *inner {
        return Err(invalid(
            kind,
            path,
            format!("dimensions N x {}", join(inner)),
            format!("dimensions {}", join(&dims)),
        ));
    }
    let count: usize = dims.iter().product();
    if bytes.len() != header + count {
        return Err(invalid(
            kind,
            path,
            format!(
                "{} bytes (header {header} + {count} for dimensions {})",
                header + count,
                join(&dims)
            ),
            format!("{} bytes", bytes.len()),
        ));
    }
    let mut bytes = bytes;
    bytes.drain(..header);
    Ok((dims, bytes))
}

fn join(d: &[usize]) -> String {
    d.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(" x ")
}

/// Find `name` or `name.gz` in `dir` (a path that already exists wins; the `.gz` sibling is
/// preferred when both exist because that is how the official files ship).
pub fn resolve(dir: &Path, name: &Path) -> Option<PathBuf> {
    let plain = dir.join(name);
    let gz = {
        let mut s = plain.clone().into_os_string();
        s.push(".gz");
        PathBuf::from(s)
    };
    if name.extension().is_some_and(|e| e == "gz") && plain.is_file() {
        return Some(plain);
    }
    if gz.is_file() {
        Some(gz)
    } else if plain.is_file() {
        Some(plain)
    } else {
        None
    }
}

/// Load an images file and a labels file (already resolved) into planar images
/// (`N × 1 × 28 × 28`) and labels, validating both and their agreement.
pub fn load_pair(
    kind: DatasetKind,
    images_path: &Path,
    labels_path: &Path,
) -> Result<(Vec<u8>, Vec<u32>)> {
    let [_, h, w] = kind.stored_shape();
    let (idims, images) = parse(
        kind,
        images_path,
        read_maybe_gz(kind, images_path)?,
        3,
        &[h, w],
    )?;
    let (ldims, labels) = parse(kind, labels_path, read_maybe_gz(kind, labels_path)?, 1, &[])?;
    if idims[0] != ldims[0] {
        return Err(invalid(
            kind,
            labels_path,
            format!(
                "as many labels as images in {} ({})",
                images_path.display(),
                idims[0]
            ),
            format!("{} labels", ldims[0]),
        ));
    }
    let classes = kind.num_classes();
    if let Some((i, &l)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= classes)
    {
        return Err(invalid(
            kind,
            labels_path,
            format!("labels in 0..={}", classes - 1),
            format!("{l} at index {i}"),
        ));
    }
    Ok((images, labels.into_iter().map(u32::from).collect()))
}
