//! Helpers shared by the `data_*` integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A temporary folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "ffebm-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The shared real data root from `FFEBM_DATA`, or `None` after printing the skip notice.
pub fn real_data() -> Option<PathBuf> {
    match std::env::var_os("FFEBM_DATA") {
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => {
            eprintln!("skipping: FFEBM_DATA not set");
            None
        }
    }
}

/// `tests/fixtures/data/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data")
        .join(rel)
}

/// An IDX file: magic `0x0000 08 ndims`, big-endian dims, data.
pub fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

/// Gzip some bytes.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// `n` CIFAR-10 records; record `i` has label `labels(i)` and pixel `j` = `(i * 7 + j) % 256`.
pub fn cifar_records(n: usize, label: impl Fn(usize) -> u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(n * 3073);
    for i in 0..n {
        v.push(label(i));
        v.extend((0..3072).map(|j| ((i * 7 + j) % 256) as u8));
    }
    v
}
