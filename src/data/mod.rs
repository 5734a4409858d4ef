//! Datasets and the input pipeline.
//!
//! # Datasets and formats
//! | dataset | files (train / test) | format |
//! | --- | --- | --- |
//! | CIFAR-10 | `data_batch_{1..5}.bin` / `test_batch.bin` | records of 1 label + 3072 pixel bytes ([`cifar`]) |
//! | CIFAR-100 | `train.bin` / `test.bin` | coarse + fine label + 3072 bytes; fine label used |
//! | ImageNet32 | `train_data_batch_{1..10}` / `val_data` | pickle or `.npz` dict `data` (N×3072 u8, planes R,G,B), `labels` 1..=1000 → 0..=999 ([`imagenet32`]) |
//! | MNIST, Fashion-MNIST, KMNIST | `train-{images-idx3,labels-idx1}-ubyte` / `t10k-…` | IDX, optionally `.gz` ([`idx`]) |
//!
//! [`Dataset::load`] reads a split into memory as planar `N × C × H × W` bytes plus `u32`
//! labels, validating sizes, counts, magic numbers and label ranges; every error names the
//! file, what was expected and what was found, and says where the data comes from.
//! The file list of a split can be given explicitly. [`data_dir`] resolves the data root
//! (`--data-dir` or `FFEBM_DATA`), [`dataset_dir`] the dataset's folder under it.
//!
//! ## The CIFAR-10 test files
//! The official test split is `test_batch.bin`. A folder may instead hold
//! `test_batch_first1000.bin` (the exact first 1,000 official test images) and
//! `test_rest9000_lossy_jpeg.bin` (the other 9,000, JPEG-decoded). Loading the default test
//! split there fails with a message naming both options; [`cifar10_test_sets`] lists the
//! evaluation sets a folder supports (`test`, or `test-exact1000` and
//! `test-full10000-lossy`) with their file lists, to load and report separately.
//!
//! # Input pipeline
//! A [`Loader`] turns a [`Subset`] of a dataset into [`Batch`]es of `f32` inputs (NCHW by
//! default) and `u32` labels. Per image, in order:
//! 1. **Padding of small images**: 28x28 grayscale images (MNIST family) are zero-padded
//!    to 32x32 with the raw pixel value 0 (so *before* normalisation; a padded pixel
//!    becomes `(0 - mean) / std`), centred: 2 rows/columns on each side. The input has 1
//!    channel. Every dataset is thus fed at 32x32 ([`DatasetKind::input_shape`]).
//! 2. **Augmentation** (training, [`Augment`], each part switchable): random horizontal
//!    flip with probability 1/2, then a random 32x32 crop of the image padded by 4 pixels
//!    with edge replication (offsets uniform in `0..=8`).
//! 3. **Normalisation**: `(byte / 255 - mean[c]) / std[c]` with the per-dataset constants
//!    of [`DatasetKind::normalization`] (SPEC §4).
//!
//! Determinism: the order of epoch `e` is a ChaCha8 shuffle that is a pure function of
//! `(seed, e)` ([`epoch_permutation`]), and the augmentation draws of the sample at position
//! `p` of that order are a pure function of `(seed, e, p)` ([`Augment::draw`]). A resumed
//! run therefore sees exactly the same batches, and the background loader
//! ([`Loader::spawn`], a thread feeding a bounded channel, ~2 batches ahead) yields exactly
//! what the synchronous [`Loader::iter`] does. [`split_validation`] holds a seeded, stable
//! validation subset out of the training set. The final partial batch is kept unless
//! [`LoaderOptions::drop_last`] is set.
//!
//! # Downloads
//! [`download()`] fetches CIFAR-10/100 and the MNIST family from their official URLs
//! ([`Source::official`]) into a cache folder, verifying checksums and writing atomically.

pub mod cifar;
mod dataset;
pub mod download;
mod error;
pub mod idx;
pub mod imagenet32;
mod kind;
mod loader;
pub mod npy;
pub mod pickle;
pub mod transform;

pub use cifar::{cifar10_test_sets, TestSet, CIFAR10_TEST_FIRST1000, CIFAR10_TEST_REST9000_LOSSY};
pub use dataset::{data_dir, dataset_dir, default_cache_dir, Dataset, DATA_ENV};
pub use download::{download, download_file, Checksum, Progress, RemoteFile, Source};
pub use error::{DataError, Result};
pub use kind::{DatasetKind, Normalization, Split};
pub use loader::{
    epoch_permutation, split_validation, BackgroundLoader, Batch, Layout, Loader, LoaderOptions,
    Subset,
};
pub use transform::{Augment, AugmentDraw};
