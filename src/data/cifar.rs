//! CIFAR-10 / CIFAR-100 "binary version" reader.
//!
//! Format: a file is a plain sequence of fixed-size records, no header. A CIFAR-10 record
//! is 3,073 bytes: one label byte (0..=9), then 1,024 red, 1,024 green and 1,024 blue
//! bytes, each plane a 32x32 image stored row-major. A CIFAR-100 record is 3,074 bytes:
//! a coarse label byte (0..=19), a fine label byte (0..=99), then the same 3,072 pixel
//! bytes; the fine label is used. The pixel bytes are therefore already planar
//! `C × H × W`, which is the layout of [`Dataset::images`](super::Dataset::images).
//!
//! Validation: the file size must be a positive multiple of the record size; files with an
//! official name must hold exactly the official number of records (10,000 for
//! `data_batch_N.bin`/`test_batch.bin`, 50,000 for `train.bin`, 10,000 for `test.bin`,
//! 1,000 for `test_batch_first1000.bin`, 9,000 for `test_rest9000_lossy_jpeg.bin`);
//! every label must be in range.

use std::path::{Path, PathBuf};

use super::error::{DataError, Result};
use super::kind::DatasetKind;

/// The exact first 1,000 records of the official CIFAR-10 `test_batch.bin`.
pub const CIFAR10_TEST_FIRST1000: &str = "test_batch_first1000.bin";
/// The other 9,000 CIFAR-10 test images, JPEG-decoded (lossy), ordered by class.
pub const CIFAR10_TEST_REST9000_LOSSY: &str = "test_rest9000_lossy_jpeg.bin";

const PIXELS: usize = 3 * 32 * 32;

/// Bytes per record: label byte(s) + 3,072 pixel bytes.
pub fn record_size(kind: DatasetKind) -> usize {
    match kind {
        DatasetKind::Cifar100 => PIXELS + 2,
        _ => PIXELS + 1,
    }
}

/// The number of records a file with an official name must hold, if it has one.
pub fn official_records(kind: DatasetKind, file_name: &str) -> Option<usize> {
    match kind {
        DatasetKind::Cifar10 => match file_name {
            "data_batch_1.bin" | "data_batch_2.bin" | "data_batch_3.bin" | "data_batch_4.bin"
            | "data_batch_5.bin" | "test_batch.bin" => Some(10_000),
            CIFAR10_TEST_FIRST1000 => Some(1_000),
            CIFAR10_TEST_REST9000_LOSSY => Some(9_000),
            _ => None,
        },
        DatasetKind::Cifar100 => match file_name {
            "train.bin" => Some(50_000),
            "test.bin" => Some(10_000),
            _ => None,
        },
        _ => None,
    }
}

fn invalid(kind: DatasetKind, path: &Path, expected: String, found: String) -> DataError {
    DataError::Invalid {
        path: path.to_path_buf(),
        format: format!("{} binary", kind.display_name()),
        expected,
        found,
        advice: kind.advice(),
    }
}

/// Read and validate one CIFAR binary file, appending pixels (planar, 3,072 bytes per
/// image) to `images` and labels to `labels`. Returns the number of records read.
pub fn read_file(
    kind: DatasetKind,
    path: &Path,
    images: &mut Vec<u8>,
    labels: &mut Vec<u32>,
) -> Result<usize> {
    let rec = record_size(kind);
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if let Some(n) = official_records(kind, name) {
        if bytes.len() != n * rec {
            return Err(invalid(
                kind,
                path,
                format!("{} bytes ({n} records of {rec} bytes)", n * rec),
                format!(
                    "{} bytes ({} whole records{})",
                    bytes.len(),
                    bytes.len() / rec,
                    if bytes.len() % rec != 0 {
                        format!(" + {} stray bytes", bytes.len() % rec)
                    } else {
                        String::new()
                    }
                ),
            ));
        }
    } else if bytes.is_empty() || bytes.len() % rec != 0 {
        return Err(invalid(
            kind,
            path,
            format!("a positive multiple of {rec} bytes (records of {rec} bytes)"),
            format!(
                "{} bytes ({} whole records + {} stray bytes)",
                bytes.len(),
                bytes.len() / rec,
                bytes.len() % rec
            ),
        ));
    }
    let n = bytes.len() / rec;
    let classes = kind.num_classes();
    images.reserve(n * PIXELS);
    labels.reserve(n);
    for (i, record) in bytes.chunks_exact(rec).enumerate() {
        if kind == DatasetKind::Cifar100 && record[0] >= 20 {
            return Err(invalid(
                kind,
                path,
                "coarse label bytes in 0..=19".into(),
                format!("{} in record {i} (byte offset {})", record[0], i * rec),
            ));
        }
        let label = record[rec - PIXELS - 1];
        if label as usize >= classes {
            return Err(invalid(
                kind,
                path,
                format!("label bytes in 0..={}", classes - 1),
                format!(
                    "{label} in record {i} (byte offset {})",
                    i * rec + rec - PIXELS - 1
                ),
            ));
        }
        labels.push(label as u32);
        images.extend_from_slice(&record[rec - PIXELS..]);
    }
    Ok(n)
}

/// The error for a missing CIFAR file. For a missing CIFAR-10 `test_batch.bin` whose
/// folder holds the split test files of the shared data set, it explains how to select
/// them explicitly.
pub fn missing(kind: DatasetKind, path: &Path, what: String) -> DataError {
    let mut advice = kind.advice();
    let dir = path.parent().unwrap_or(Path::new("."));
    let is_test = path.file_name().and_then(|n| n.to_str()) == Some("test_batch.bin");
    if kind == DatasetKind::Cifar10 && is_test && dir.join(CIFAR10_TEST_FIRST1000).is_file() {
        let mut alt = format!(
            "This folder has no test_batch.bin but holds {CIFAR10_TEST_FIRST1000} (the exact \
             first 1,000 official test images)"
        );
        if dir.join(CIFAR10_TEST_REST9000_LOSSY).is_file() {
            alt.push_str(&format!(
                " and {CIFAR10_TEST_REST9000_LOSSY} (the other 9,000, JPEG-decoded, lossy)"
            ));
        }
        alt.push_str(&format!(
            ". Name the test files explicitly: `--set 'data.test_files=[\"{CIFAR10_TEST_FIRST1000}\"]'` \
             for the exact 1,000, or `--set 'data.test_files=[\"{CIFAR10_TEST_FIRST1000}\", \
             \"{CIFAR10_TEST_REST9000_LOSSY}\"]'` for all 10,000 (partly lossy), and report the \
             two accuracies separately (`ffebm train` and `eval` without data.test_files do: see \
             `cifar10_test_sets`). Otherwise: "
        ));
        advice = alt + &advice;
    }
    DataError::Missing {
        path: path.to_path_buf(),
        what,
        advice,
    }
}

/// A named evaluation set: which files make it up and whether its pixels are exact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestSet {
    /// Short name for reports, e.g. `test`, `test-exact1000`, `test-full10000-lossy`.
    pub name: String,
    /// The files, in order (absolute or relative to the dataset folder).
    pub files: Vec<PathBuf>,
    /// True if every image is byte-exact with the official test set.
    pub exact: bool,
}

/// The test sets available in a CIFAR-10 folder: the official `test_batch.bin` when it
/// exists; otherwise the exact first 1,000 (`test_batch_first1000.bin`) and, if the lossy
/// rest is present too, the full 10,000 (exact 1,000 + 9,000 JPEG-decoded). Empty if none
/// of these files exist. Accuracy on each should be reported separately.
pub fn cifar10_test_sets(dir: &Path) -> Vec<TestSet> {
    if dir.join("test_batch.bin").is_file() {
        return vec![TestSet {
            name: "test".into(),
            files: vec![PathBuf::from("test_batch.bin")],
            exact: true,
        }];
    }
    let mut sets = Vec::new();
    if dir.join(CIFAR10_TEST_FIRST1000).is_file() {
        sets.push(TestSet {
            name: "test-exact1000".into(),
            files: vec![PathBuf::from(CIFAR10_TEST_FIRST1000)],
            exact: true,
        });
        if dir.join(CIFAR10_TEST_REST9000_LOSSY).is_file() {
            sets.push(TestSet {
                name: "test-full10000-lossy".into(),
                files: vec![
                    PathBuf::from(CIFAR10_TEST_FIRST1000),
                    PathBuf::from(CIFAR10_TEST_REST9000_LOSSY),
                ],
                exact: false,
            });
        }
    }
    sets
}
