//! The in-memory dataset and the loading entry point.

use std::path::{Path, PathBuf};

use super::error::{DataError, Result};
use super::kind::{DatasetKind, Split};
use super::{cifar, idx, imagenet32};

/// Environment variable naming the data root (see [`data_dir`]).
pub const DATA_ENV: &str = "FFEBM_DATA";

/// A whole split in memory, as raw bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Which dataset this is.
    pub kind: DatasetKind,
    /// Which split.
    pub split: Split,
    /// Pixels of all images, `N × C × H × W` planar u8, at the stored size
    /// ([`DatasetKind::stored_shape`]; 28x28 for the MNIST family, padded only by the loader).
    pub images: Vec<u8>,
    /// Labels, `0..classes`.
    pub labels: Vec<u32>,
    /// Number of classes.
    pub classes: usize,
    /// `[C, H, W]` of one image.
    pub shape: [usize; 3],
    /// The files it was read from, in order.
    pub files: Vec<PathBuf>,
}

impl Dataset {
    /// Load a split from the dataset folder `dir`.
    ///
    /// `files` overrides the file list (paths relative to `dir` unless absolute); `None`
    /// uses [`DatasetKind::default_files`]. The images of all files are concatenated in
    /// order. For the MNIST family the list is `[images, labels]` (a `.gz` sibling of each
    /// name is used when present). For ImageNet32 a name without extension also finds
    /// `name.npz`. For CIFAR-10 the default test file is `test_batch.bin`; a folder that
    /// holds `test_batch_first1000.bin` instead gets an error explaining how to select the
    /// exact 1,000 or the full (partly lossy) 10,000 — see [`cifar10_test_sets`](super::cifar10_test_sets).
    pub fn load(
        kind: DatasetKind,
        split: Split,
        dir: &Path,
        files: Option<&[PathBuf]>,
    ) -> Result<Dataset> {
        let names: Vec<PathBuf> = match files {
            Some([]) => {
                return Err(DataError::Config(format!(
                    "{} {split}: the explicit file list is empty",
                    kind.display_name()
                )))
            }
            Some(f) => f.to_vec(),
            None => kind
                .default_files(split)
                .into_iter()
                .map(PathBuf::from)
                .collect(),
        };
        let what = format!("{} {split} split", kind.display_name());
        let mut images = Vec::new();
        let mut labels = Vec::new();
        let mut used = Vec::new();
        match kind {
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => {
                for name in &names {
                    let path = dir.join(name);
                    if !path.is_file() {
                        return Err(cifar::missing(kind, &path, what));
                    }
                    cifar::read_file(kind, &path, &mut images, &mut labels)?;
                    used.push(path);
                }
            }
            DatasetKind::ImageNet32 => {
                for name in &names {
                    let path =
                        imagenet32::resolve(dir, name).ok_or_else(|| DataError::Missing {
                            path: dir.join(name),
                            what: format!("{what}; also looked for the .npz variant"),
                            advice: kind.advice(),
                        })?;
                    imagenet32::read_file(&path, &mut images, &mut labels)?;
                    used.push(path);
                }
            }
            _ => {
                if names.len() != 2 {
                    return Err(DataError::Config(format!(
                        "{what}: expected two files (images, labels), got {}",
                        names.len()
                    )));
                }
                let find = |name: &Path| {
                    idx::resolve(dir, name).ok_or_else(|| DataError::Missing {
                        path: dir.join(name),
                        what: format!("{what}; also looked for the .gz variant"),
                        advice: kind.advice(),
                    })
                };
                let (ip, lp) = (find(&names[0])?, find(&names[1])?);
                (images, labels) = idx::load_pair(kind, &ip, &lp)?;
                used = vec![ip, lp];
            }
        }
        Ok(Dataset {
            kind,
            split,
            images,
            labels,
            classes: kind.num_classes(),
            shape: kind.stored_shape(),
            files: used,
        })
    }

    /// Build a dataset from raw parts (e.g. synthetic data in tests), checking that the
    /// sizes agree and the labels are in range.
    pub fn from_raw(
        kind: DatasetKind,
        split: Split,
        shape: [usize; 3],
        images: Vec<u8>,
        labels: Vec<u32>,
    ) -> Result<Dataset> {
        let per = shape.iter().product::<usize>();
        if per == 0 || images.len() != labels.len() * per {
            return Err(DataError::Config(format!(
                "from_raw: {} image bytes for {} labels of shape {shape:?}",
                images.len(),
                labels.len()
            )));
        }
        if shape[0] != kind.stored_shape()[0] || shape[1] > 32 || shape[2] > 32 {
            return Err(DataError::Config(format!(
                "from_raw: shape {shape:?} does not fit {} (channels {}, at most 32x32)",
                kind.display_name(),
                kind.stored_shape()[0]
            )));
        }
        if let Some(l) = labels.iter().find(|&&l| l as usize >= kind.num_classes()) {
            return Err(DataError::Config(format!(
                "from_raw: label {l} out of range"
            )));
        }
        Ok(Dataset {
            kind,
            split,
            images,
            labels,
            classes: kind.num_classes(),
            shape,
            files: Vec::new(),
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True if there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image (`C·H·W`).
    pub fn image_size(&self) -> usize {
        self.shape.iter().product()
    }

    /// The planar `C × H × W` bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.image_size();
        &self.images[i * s..(i + 1) * s]
    }

    /// Class names in label order, where known.
    pub fn class_names(&self) -> Option<&'static [&'static str]> {
        self.kind.class_names()
    }

    /// Number of images of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes];
        for &l in &self.labels {
            c[l as usize] += 1;
        }
        c
    }

    /// Mean raw byte value (0..255) of each channel over all images.
    pub fn channel_means(&self) -> Vec<f64> {
        let [c, h, w] = self.shape;
        let mut sums = vec![0u64; c];
        for img in self.images.chunks_exact(c * h * w) {
            for (ch, plane) in img.chunks_exact(h * w).enumerate() {
                sums[ch] += plane.iter().map(|&b| b as u64).sum::<u64>();
            }
        }
        let n = (self.len() * h * w) as f64;
        sums.into_iter().map(|s| s as f64 / n).collect()
    }
}

/// The data root: `option` if given, else the `FFEBM_DATA` environment variable.
/// Errors if neither is set, or the folder does not exist.
pub fn data_dir(option: Option<&Path>) -> Result<PathBuf> {
    let dir = match option {
        Some(p) => p.to_path_buf(),
        None => match std::env::var_os(DATA_ENV) {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => {
                return Err(DataError::Config(format!(
                    "no data folder: pass --data-dir or set {DATA_ENV}"
                )))
            }
        },
    };
    if !dir.is_dir() {
        return Err(DataError::Missing {
            path: dir,
            what: "data folder".into(),
            advice: format!("pass an existing folder with --data-dir or {DATA_ENV}"),
        });
    }
    Ok(dir)
}

/// The folder of one dataset under a data root: `root/<kind.name()>` if that folder
/// exists (the layout of `FFEBM_DATA` and of the download cache), else `root` itself.
pub fn dataset_dir(root: &Path, kind: DatasetKind) -> PathBuf {
    let sub = root.join(kind.name());
    if sub.is_dir() {
        sub
    } else {
        root.to_path_buf()
    }
}

/// Default download cache: `$FFEBM_CACHE`, else `$XDG_CACHE_HOME/ffebm`, else
/// `$HOME/.cache/ffebm`, else `./.ffebm-cache`.
pub fn default_cache_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = env("FFEBM_CACHE") {
        p
    } else if let Some(p) = env("XDG_CACHE_HOME") {
        p.join("ffebm")
    } else if let Some(p) = env("HOME") {
        p.join(".cache").join("ffebm")
    } else {
        PathBuf::from(".ffebm-cache")
    }
}
