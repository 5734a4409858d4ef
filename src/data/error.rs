//! The error type of the data module. Every variant that concerns a file names it, and
//! format errors say what was expected, what was found and where the data comes from.

use std::path::PathBuf;

/// Errors from locating, reading, validating and downloading datasets.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A required file does not exist.
    #[error("{}: file not found ({what}).\n{advice}", .path.display())]
    Missing {
        /// The path that was looked for.
        path: PathBuf,
        /// What the file was needed for, e.g. "CIFAR-10 test split".
        what: String,
        /// Where the dataset comes from and what to do.
        advice: String,
    },
    /// A file exists but does not have the expected format or contents.
    #[error("{}: invalid {format} file: expected {expected}, found {found}.\n{advice}", .path.display())]
    Invalid {
        /// The offending file.
        path: PathBuf,
        /// The file format, e.g. "CIFAR-10 binary" or "IDX".
        format: String,
        /// What a valid file has (size, count, magic number, range, ...).
        expected: String,
        /// What this file has instead.
        found: String,
        /// Where the dataset comes from and what to do.
        advice: String,
    },
    /// An I/O error while reading or writing a file.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A download failed (network error or HTTP error status).
    #[error("download of {url} failed: {reason}; nothing was written to the cache")]
    Download {
        /// The URL that was requested.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A downloaded file does not have the expected checksum.
    #[error("{url}: checksum mismatch: expected {algorithm} {expected}, got {found}; the download was discarded and nothing was written to the cache")]
    Checksum {
        /// The URL that was downloaded.
        url: String,
        /// "md5" or "sha256".
        algorithm: &'static str,
        /// The expected digest (lowercase hex).
        expected: String,
        /// The digest of what was received.
        found: String,
    },
    /// An invalid option or argument (bad batch size, unknown dataset name, ...).
    #[error("{0}")]
    Config(String),
}

/// Result alias for the data module.
pub type Result<T> = std::result::Result<T, DataError>;

impl DataError {
    /// The same error with `from` replaced by `to` in its advice (e.g. for a command that
    /// cannot download, advice without `--download`).
    pub fn replace_advice(self, from: &str, to: &str) -> DataError {
        match self {
            DataError::Missing { path, what, advice } => DataError::Missing {
                path,
                what,
                advice: advice.replace(from, to),
            },
            DataError::Invalid {
                path,
                format,
                expected,
                found,
                advice,
            } => DataError::Invalid {
                path,
                format,
                expected,
                found,
                advice: advice.replace(from, to),
            },
            other => other,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}
