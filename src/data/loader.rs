//! Batching: subsets and validation splits, seeded epoch order, the per-sample pipeline and
//! a background prefetching thread.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::seq::SliceRandom;

use super::dataset::Dataset;
use super::error::{DataError, Result};
use super::kind::Normalization;
use super::transform::{self, Augment, DOMAIN_SHUFFLE, DOMAIN_VALSPLIT};

/// A view of some images of a dataset (by index), shared cheaply between threads.
#[derive(Clone, Debug)]
pub struct Subset {
    dataset: Arc<Dataset>,
    indices: Arc<Vec<usize>>,
}

impl Subset {
    /// All images of `dataset`, in file order.
    pub fn all(dataset: Arc<Dataset>) -> Subset {
        let indices = Arc::new((0..dataset.len()).collect());
        Subset { dataset, indices }
    }

    /// The images at `indices` (in that order); errors on an out-of-range index.
    pub fn new(dataset: Arc<Dataset>, indices: Vec<usize>) -> Result<Subset> {
        if let Some(&i) = indices.iter().find(|&&i| i >= dataset.len()) {
            return Err(DataError::Config(format!(
                "subset index {i} out of range for {} images",
                dataset.len()
            )));
        }
        Ok(Subset {
            dataset,
            indices: Arc::new(indices),
        })
    }

    /// The underlying dataset.
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }

    /// Dataset indices of the members.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

impl From<Arc<Dataset>> for Subset {
    fn from(d: Arc<Dataset>) -> Subset {
        Subset::all(d)
    }
}

impl From<Dataset> for Subset {
    fn from(d: Dataset) -> Subset {
        Subset::all(Arc::new(d))
    }
}

/// Hold `n_val` images of `dataset` out for validation: returns `(train, validation)`.
/// The split is a pure function of `(seed, dataset length, n_val)` — a ChaCha8 permutation
/// whose first `n_val` entries form the validation set — so it is the same in every run and
/// every epoch. Both parts are sorted by dataset index, disjoint, and cover the dataset.
pub fn split_validation(
    dataset: Arc<Dataset>,
    n_val: usize,
    seed: u64,
) -> Result<(Subset, Subset)> {
    let n = dataset.len();
    if n_val >= n {
        return Err(DataError::Config(format!(
            "validation split of {n_val} images leaves no training data (dataset has {n})"
        )));
    }
    let mut perm: Vec<usize> = (0..n).collect();
    perm.shuffle(&mut transform::keyed_rng(seed, DOMAIN_VALSPLIT, 0));
    let mut val = perm[..n_val].to_vec();
    let mut train = perm[n_val..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    Ok((
        Subset::new(dataset.clone(), train)?,
        Subset::new(dataset, val)?,
    ))
}

/// The order of positions `0..n` in epoch `epoch`: a ChaCha8 Fisher-Yates shuffle keyed by
/// `seed` on stream `epoch`. A pure function of `(n, seed, epoch)`.
pub fn epoch_permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..n).collect();
    perm.shuffle(&mut transform::keyed_rng(seed, DOMAIN_SHUFFLE, epoch));
    perm
}

/// Memory layout of [`Batch::x`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Layout {
    /// `N × C × H × W` (the default).
    #[default]
    Nchw,
    /// `N × H × W × C` (the compute core's tensor layout).
    Nhwc,
}

/// Options of a [`Loader`]. Use [`LoaderOptions::eval`] or [`LoaderOptions::train`] and
/// adjust fields.
#[derive(Clone, Debug, PartialEq)]
pub struct LoaderOptions {
    /// Images per batch (> 0).
    pub batch_size: usize,
    /// Visit the images in a seeded random order ([`epoch_permutation`]).
    pub shuffle: bool,
    /// Training augmentation ([`Augment::NONE`] for evaluation).
    pub augment: Augment,
    /// Seed of shuffling and augmentation.
    pub seed: u64,
    /// The epoch: selects the shuffling order and augmentation draws.
    pub epoch: u64,
    /// Drop the final partial batch (`false` keeps it, smaller).
    pub drop_last: bool,
    /// Normalisation; `None` uses the dataset's ([`DatasetKind::normalization`](super::DatasetKind::normalization)).
    pub normalization: Option<Normalization>,
    /// Layout of `Batch::x`.
    pub layout: Layout,
    /// Batches the background thread may prepare ahead ([`Loader::spawn`]); at least 1.
    pub prefetch: usize,
    /// Feed images at their stored size (28x28 for the MNIST family) instead of padded to
    /// the dataset's network input size.
    pub native_size: bool,
}

impl LoaderOptions {
    /// Evaluation: file order, no augmentation, keep the last partial batch.
    pub fn eval(batch_size: usize) -> LoaderOptions {
        LoaderOptions {
            batch_size,
            shuffle: false,
            augment: Augment::NONE,
            seed: 0,
            epoch: 0,
            drop_last: false,
            normalization: None,
            layout: Layout::Nchw,
            prefetch: 2,
            native_size: false,
        }
    }

    /// Training: shuffled, with the dataset's default augmentation
    /// ([`Augment::default_for`]), keeping the last partial batch.
    pub fn train(
        kind: super::DatasetKind,
        batch_size: usize,
        seed: u64,
        epoch: u64,
    ) -> LoaderOptions {
        LoaderOptions {
            shuffle: true,
            augment: Augment::default_for(kind),
            seed,
            epoch,
            ..LoaderOptions::eval(batch_size)
        }
    }
}

/// One batch of network inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Normalised pixels, `shape` in the loader's [`Layout`].
    pub x: Vec<f32>,
    /// Labels.
    pub y: Vec<u32>,
    /// `[N, C, H, W]` for NCHW, `[N, H, W, C]` for NHWC.
    pub shape: [usize; 4],
    /// Dataset index of each image.
    pub indices: Vec<usize>,
}

impl Batch {
    /// Samples `rows` of the batch (the part a data-parallel rank computes).
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Batch {
        assert!(
            rows.start <= rows.end && rows.end <= self.y.len(),
            "rows {rows:?} of a batch of {}",
            self.y.len()
        );
        let per = self.shape[1] * self.shape[2] * self.shape[3];
        let mut shape = self.shape;
        shape[0] = rows.len();
        Batch {
            x: self.x[rows.start * per..rows.end * per].to_vec(),
            y: self.y[rows.clone()].to_vec(),
            shape,
            indices: self.indices[rows].to_vec(),
        }
    }
}

/// Produces the batches of one epoch over a [`Subset`]. Every batch is a pure function of
/// the subset, the options and its number, so [`Loader::batch`], [`Loader::iter`] and the
/// background thread of [`Loader::spawn`] all give identical batches.
#[derive(Clone, Debug)]
pub struct Loader {
    subset: Subset,
    opts: LoaderOptions,
    order: Arc<Vec<usize>>,
    norm: Normalization,
    out_shape: [usize; 3],
}

impl Loader {
    /// A loader for one epoch of `data` (a [`Subset`], `Dataset` or `Arc<Dataset>`).
    pub fn new(data: impl Into<Subset>, opts: LoaderOptions) -> Result<Loader> {
        let subset = data.into();
        if opts.batch_size == 0 {
            return Err(DataError::Config("batch size must be positive".into()));
        }
        let ds = subset.dataset();
        let out_shape = if opts.native_size {
            ds.kind.stored_shape()
        } else {
            ds.kind.input_shape()
        };
        let norm = opts
            .normalization
            .clone()
            .unwrap_or_else(|| ds.kind.normalization());
        if norm.mean.len() != out_shape[0] || norm.std.len() != out_shape[0] {
            return Err(DataError::Config(format!(
                "normalisation has {} means and {} stds for {} channels",
                norm.mean.len(),
                norm.std.len(),
                out_shape[0]
            )));
        }
        let order = if opts.shuffle {
            let perm = epoch_permutation(subset.len(), opts.seed, opts.epoch);
            perm.into_iter().map(|p| subset.indices()[p]).collect()
        } else {
            subset.indices().to_vec()
        };
        Ok(Loader {
            subset,
            opts,
            order: Arc::new(order),
            norm,
            out_shape,
        })
    }

    /// The options.
    pub fn options(&self) -> &LoaderOptions {
        &self.opts
    }

    /// Dataset indices in this epoch's order (before dropping a partial batch).
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// `[C, H, W]` of one prepared image (32x32; see the module docs on padding).
    pub fn image_shape(&self) -> [usize; 3] {
        self.out_shape
    }

    /// Number of batches in the epoch.
    pub fn len(&self) -> usize {
        let (n, b) = (self.order.len(), self.opts.batch_size);
        if self.opts.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// True if the epoch has no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of images the epoch yields.
    pub fn num_samples(&self) -> usize {
        (self.len() * self.opts.batch_size).min(self.order.len())
    }

    /// Prepare batch `b` (`b < len()`).
    pub fn batch(&self, b: usize) -> Batch {
        assert!(
            b < self.len(),
            "batch {b} out of range ({} batches)",
            self.len()
        );
        let bs = self.opts.batch_size;
        let start = b * bs;
        let end = (start + bs).min(self.order.len());
        let n = end - start;
        let [c, h, w] = self.out_shape;
        let plane = h * w;
        let ds = self.subset.dataset();
        let mut x = vec![0f32; n * c * plane];
        let mut y = Vec::with_capacity(n);
        let mut indices = Vec::with_capacity(n);
        for (slot, pos) in (start..end).enumerate() {
            let idx = self.order[pos];
            let draw = self.opts.augment.draw(self.opts.seed, self.opts.epoch, pos);
            let img = transform::prepare(
                ds.image(idx),
                ds.shape,
                self.out_shape,
                &self.opts.augment,
                &draw,
            );
            let out = &mut x[slot * c * plane..][..c * plane];
            for ch in 0..c {
                let src = &img[ch * plane..][..plane];
                match self.opts.layout {
                    Layout::Nchw => {
                        for (o, &v) in out[ch * plane..][..plane].iter_mut().zip(src) {
                            *o = self.norm.apply(ch, v);
                        }
                    }
                    Layout::Nhwc => {
                        for (p, &v) in src.iter().enumerate() {
                            out[p * c + ch] = self.norm.apply(ch, v);
                        }
                    }
                }
            }
            y.push(ds.labels[idx]);
            indices.push(idx);
        }
        let shape = match self.opts.layout {
            Layout::Nchw => [n, c, h, w],
            Layout::Nhwc => [n, h, w, c],
        };
        Batch {
            x,
            y,
            shape,
            indices,
        }
    }

    /// Iterate the epoch's batches on the calling thread.
    pub fn iter(&self) -> impl Iterator<Item = Batch> + '_ {
        self.iter_from(0)
    }

    /// Iterate batches `first..len()` on the calling thread (resuming mid-epoch; skipped
    /// batches are not prepared).
    pub fn iter_from(&self, first: usize) -> impl Iterator<Item = Batch> + '_ {
        (first.min(self.len())..self.len()).map(move |b| self.batch(b))
    }

    /// Prepare the epoch's batches on a background thread, at most `prefetch` ready batches
    /// ahead of the consumer (a bounded channel), so that preparation overlaps compute.
    pub fn spawn(self) -> BackgroundLoader {
        self.spawn_from(0)
    }

    /// Like [`Loader::spawn`], starting at batch `first` (resuming mid-epoch).
    pub fn spawn_from(self, first: usize) -> BackgroundLoader {
        let (tx, rx) = sync_channel(self.opts.prefetch.max(1));
        let first = first.min(self.len());
        let total = self.len() - first;
        let handle = std::thread::Builder::new()
            .name("ffebm-loader".into())
            .spawn(move || {
                for b in first..self.len() {
                    if tx.send(self.batch(b)).is_err() {
                        break; // consumer dropped the loader
                    }
                }
            })
            .expect("spawn the data loader thread");
        BackgroundLoader {
            rx: Some(rx),
            handle: Some(handle),
            remaining: total,
        }
    }
}

/// Iterator over batches prepared by a background thread ([`Loader::spawn`]). Dropping it
/// early stops the thread.
#[derive(Debug)]
pub struct BackgroundLoader {
    rx: Option<Receiver<Batch>>,
    handle: Option<JoinHandle<()>>,
    remaining: usize,
}

impl BackgroundLoader {
    fn finish(&mut self) {
        self.rx = None;
        if let Some(h) = self.handle.take() {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

impl Iterator for BackgroundLoader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let got = self.rx.as_ref().and_then(|rx| rx.recv().ok());
        match got {
            Some(b) => {
                self.remaining -= 1;
                Some(b)
            }
            None => {
                self.finish();
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for BackgroundLoader {}

impl Drop for BackgroundLoader {
    fn drop(&mut self) {
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
