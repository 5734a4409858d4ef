//! `.npy` / `.npz` reader (numpy's own array format).
//!
//! `.npy`: the magic `\x93NUMPY`, a major and minor version byte, the header length
//! (u16 little-endian for version 1, u32 for versions 2 and 3), then a Python dict literal
//! such as `{'descr': '|u1', 'fortran_order': False, 'shape': (10, 3072), }` padded with
//! spaces, then the raw array bytes. `.npz` is a zip archive (stored or deflated) whose
//! members are `<key>.npy`. Object arrays (pickled inside the `.npy`) are rejected.

use std::io::Read;
use std::rc::Rc;

use super::pickle::{Array, Dtype};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Parse one `.npy` file.
pub fn parse_npy(bytes: &[u8]) -> Result<Array, String> {
    if !bytes.starts_with(MAGIC) || bytes.len() < 10 {
        return Err(format!(
            "no .npy magic (\\x93NUMPY); first bytes {:02x?}",
            &bytes[..bytes.len().min(8)]
        ));
    }
    let major = bytes[6];
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(format!("unsupported .npy version {major}")),
    };
    let header = bytes
        .get(start..start + hlen)
        .ok_or_else(|| "truncated .npy header".to_string())?;
    let header = String::from_utf8_lossy(header);
    let descr = quoted_value(&header, "descr")?;
    let fortran = match raw_value(&header, "fortran_order")? {
        v if v.starts_with("True") => true,
        v if v.starts_with("False") => false,
        v => return Err(format!("bad fortran_order {v:?}")),
    };
    let shape_src = raw_value(&header, "shape")?;
    let Some(close) = shape_src.find(')') else {
        return Err("bad shape in .npy header".into());
    };
    let shape: Vec<usize> = shape_src[1..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("bad shape {:?}", &shape_src[..=close]))?;
    let dtype = Dtype::parse(&descr);
    if dtype.code.starts_with('O') {
        return Err("object arrays are not supported".into());
    }
    let n: usize = shape.iter().product();
    let data = &bytes[start + hlen..];
    if dtype.itemsize() == 0 || data.len() != n * dtype.itemsize() {
        return Err(format!(
            "array data of {} bytes for shape {shape:?} and dtype {descr} (expected {})",
            data.len(),
            n * dtype.itemsize()
        ));
    }
    Ok(Array {
        dtype,
        shape,
        fortran,
        data: Rc::new(data.to_vec()),
    })
}

fn raw_value<'h>(header: &'h str, key: &str) -> Result<&'h str, String> {
    let pat = format!("'{key}':");
    let at = header
        .find(&pat)
        .ok_or_else(|| format!("no '{key}' in the .npy header"))?;
    Ok(header[at + pat.len()..].trim_start())
}

fn quoted_value(header: &str, key: &str) -> Result<String, String> {
    let v = raw_value(header, key)?;
    let q = v.chars().next().filter(|c| *c == '\'' || *c == '"');
    let Some(q) = q else {
        return Err(format!(
            "'{key}' is not a simple string (structured dtype?)"
        ));
    };
    let end = v[1..]
        .find(q)
        .ok_or_else(|| format!("unterminated '{key}'"))?;
    Ok(v[1..1 + end].to_string())
}

/// Read the member `<key>.npy` of an `.npz` archive held in memory.
pub fn npz_member(bytes: &[u8], key: &str) -> Result<Option<Array>, String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("not a readable zip (.npz) archive: {e}"))?;
    let name = format!("{key}.npy");
    let mut entry = match zip.by_name(&name) {
        Ok(e) => e,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(format!("{name}: {e}")),
    };
    let mut buf = Vec::with_capacity(entry.size().min(1 << 30) as usize);
    entry
        .read_to_end(&mut buf)
        .map_err(|e| format!("{name}: corrupt zip member ({e})"))?;
    parse_npy(&buf)
        .map(Some)
        .map_err(|e| format!("{name}: {e}"))
}
