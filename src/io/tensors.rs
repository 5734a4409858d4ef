//! Reading and writing named tensors in the safetensors format.
//!
//! Every file ffebm writes carries, in its metadata under [`CHECKSUM_KEY`], the SHA-256 of
//! its contents: each tensor's name, dtype, shape and bytes (in name order) and every other
//! metadata entry (in key order). [`read_tensor_file`] verifies it when present, so a
//! flipped byte anywhere in the tensors or the metadata is an error naming the file.

use crate::core::Tensor;
use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A stored tensor: floating point (converted to f32) or integer.
#[derive(Clone, Debug, PartialEq)]
pub enum Stored {
    F32(Tensor),
    I64 { shape: Vec<usize>, data: Vec<i64> },
}

impl Stored {
    pub fn shape(&self) -> &[usize] {
        match self {
            Stored::F32(t) => t.shape(),
            Stored::I64 { shape, .. } => shape,
        }
    }

    /// A scalar f32 (shape `[]`).
    pub fn scalar(v: f32) -> Self {
        Stored::F32(Tensor::from_vec(&[], vec![v]).expect("scalar"))
    }
}

/// The contents of a safetensors file.
#[derive(Clone, Debug, Default)]
pub struct TensorFile {
    pub tensors: BTreeMap<String, Stored>,
    /// Keys in file (offset) order.
    pub order: Vec<String>,
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    /// The f32 tensor `key`, or an error naming the file and the key.
    pub fn f32(&self, key: &str, path: &Path) -> Result<&Tensor> {
        match self.tensors.get(key) {
            Some(Stored::F32(t)) => Ok(t),
            Some(Stored::I64 { .. }) => bail!(
                "{}: tensor `{key}` is an integer tensor, expected floating point",
                path.display()
            ),
            None => bail!("{}: missing tensor `{key}`", path.display()),
        }
    }
}

fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    match dtype {
        Dtype::F32 => Some(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dtype::F64 => Some(
            bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
        ),
        Dtype::F16 => Some(
            bytes
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        Dtype::BF16 => Some(
            bytes
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
        ),
        _ => None,
    }
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f32;
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 => {
            if frac == 0.0 {
                sign * f32::INFINITY
            } else {
                f32::NAN
            }
        }
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

fn to_i64(dtype: Dtype, bytes: &[u8]) -> Option<Vec<i64>> {
    match dtype {
        Dtype::I64 => Some(
            bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        ),
        Dtype::I32 => Some(
            bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
                .collect(),
        ),
        Dtype::I16 => Some(
            bytes
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes(c.try_into().expect("2 bytes")) as i64)
                .collect(),
        ),
        Dtype::U8 => Some(bytes.iter().map(|&b| b as i64).collect()),
        Dtype::I8 => Some(bytes.iter().map(|&b| b as i8 as i64).collect()),
        _ => None,
    }
}

/// Metadata key of the contents checksum (hex SHA-256, see the module docs).
pub const CHECKSUM_KEY: &str = "sha256";

/// The contents checksum: tensors `(name, dtype, shape, bytes)` in name order, then the
/// metadata entries other than [`CHECKSUM_KEY`] in key order, each length-prefixed.
fn contents_digest<'a>(
    tensors: impl IntoIterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
    metadata: &HashMap<String, String>,
) -> String {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    let mut tensors: Vec<_> = tensors.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(b.0));
    for (name, dtype, shape, bytes) in tensors {
        field(name.as_bytes());
        field(format!("{dtype:?}").as_bytes());
        let dims: Vec<u8> = shape
            .iter()
            .flat_map(|&d| (d as u64).to_le_bytes())
            .collect();
        field(&dims);
        field(bytes);
    }
    let mut keys: Vec<&String> = metadata.keys().filter(|k| *k != CHECKSUM_KEY).collect();
    keys.sort();
    for k in keys {
        field(k.as_bytes());
        field(metadata[k].as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a safetensors file; floating-point tensors become f32, integer ones i64. A file
/// with a contents checksum ([`CHECKSUM_KEY`]) must match it.
pub fn read_tensor_file(path: &Path) -> Result<TensorFile> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file ({e:?})", path.display()))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: bad safetensors header ({e:?})", path.display()))?;
    let mut out = TensorFile {
        metadata: meta.metadata().clone().unwrap_or_default(),
        ..Default::default()
    };
    if let Some(want) = out.metadata.get(CHECKSUM_KEY) {
        let views: Vec<(String, safetensors::tensor::TensorView)> = st.tensors();
        let found = contents_digest(
            views
                .iter()
                .map(|(n, v)| (n.as_str(), v.dtype(), v.shape(), v.data())),
            &out.metadata,
        );
        anyhow::ensure!(
            &found == want,
            "{}: checksum mismatch: the file's contents (tensors and metadata) do not match \
             the SHA-256 recorded when it was written ({want}, found {found}); the file is \
             damaged. Use another copy (for a run: its other checkpoint, or a backup)",
            path.display()
        );
    }
    let mut names: Vec<(usize, String)> = Vec::new();
    for (name, view) in st.iter() {
        let shape = view.shape().to_vec();
        let stored = if let Some(v) = to_f32(view.dtype(), view.data()) {
            Stored::F32(Tensor::from_vec(&shape, v)?)
        } else if let Some(v) = to_i64(view.dtype(), view.data()) {
            Stored::I64 { shape, data: v }
        } else {
            bail!(
                "{}: tensor `{name}` has unsupported dtype {:?}",
                path.display(),
                view.dtype()
            );
        };
        names.push((view.data().as_ptr() as usize, name.to_string()));
        out.tensors.insert(name.to_string(), stored);
    }
    names.sort();
    out.order = names.into_iter().map(|(_, n)| n).collect();
    Ok(out)
}

/// Writes named tensors (f32 and i64) and string metadata, with the contents checksum,
/// atomically.
pub fn write_tensor_file(
    path: &Path,
    tensors: &[(String, Stored)],
    mut metadata: HashMap<String, String>,
) -> Result<()> {
    let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s)| match s {
            Stored::F32(t) => (
                n.clone(),
                Dtype::F32,
                t.shape().to_vec(),
                t.data().iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            Stored::I64 { shape, data } => (
                n.clone(),
                Dtype::I64,
                shape.clone(),
                data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
        })
        .collect();
    metadata.insert(
        CHECKSUM_KEY.to_string(),
        contents_digest(
            bytes
                .iter()
                .map(|(n, d, s, b)| (n.as_str(), *d, s.as_slice(), b.as_slice())),
            &metadata,
        ),
    );
    let views = bytes
        .iter()
        .map(|(n, d, s, b)| {
            Ok((
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b)
                    .map_err(|e| anyhow::anyhow!("tensor `{n}`: {e:?}"))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = Some(metadata);
    let buf = safetensors::serialize(views, &meta)
        .map_err(|e| anyhow::anyhow!("cannot serialise tensors for {}: {e:?}", path.display()))?;
    super::atomic_write(path, &buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_metadata() {
        let dir = std::env::temp_dir().join(format!("ffebm-st-{}", std::process::id()));
        let p = dir.join("t.safetensors");
        let t = Tensor::from_vec(&[2, 3], vec![1.0, -2.0, 3.5, 0.0, 1e-8, 7.0]).unwrap();
        let items = vec![
            ("b".to_string(), Stored::F32(t.clone())),
            (
                "a".to_string(),
                Stored::I64 {
                    shape: vec![2],
                    data: vec![3, -1],
                },
            ),
            ("s".to_string(), Stored::scalar(0.5)),
        ];
        write_tensor_file(&p, &items, HashMap::from([("k".into(), "v".into())])).unwrap();
        let f = read_tensor_file(&p).unwrap();
        assert_eq!(f.f32("b", &p).unwrap(), &t);
        assert_eq!(f.tensors["a"], items[1].1);
        assert_eq!(f.f32("s", &p).unwrap().shape(), &[] as &[usize]);
        assert_eq!(f.metadata["k"], "v");
        assert!(f
            .f32("zz", &p)
            .unwrap_err()
            .to_string()
            .contains("missing tensor `zz`"));
        std::fs::write(&p, b"garbage").unwrap();
        assert!(read_tensor_file(&p)
            .unwrap_err()
            .to_string()
            .contains("not a valid safetensors file"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!((f16_to_f32(0x3c00) - 1.0).abs() < 1e-7 && (f16_to_f32(0xc000) + 2.0).abs() < 1e-7);
    }
}
