//! Finding, downloading and splitting the data of a run.
//!
//! The data root is `data.dir` if set (it must exist), else `$FFEBM_DATA` if set (it must
//! exist: a mistyped variable is an error, never silently replaced by the cache), else the
//! download cache. `$FFEBM_MIRROR` replaces the official download URL (a local mirror).
//! Evaluation sets reduced by `data.test_limit` are named for what they hold
//! (`test-exact256`, `test-first2000-lossy`), and a set identical to an earlier one is
//! reported once.

use super::config::DataConfig;
use crate::data::{
    cifar10_test_sets, dataset_dir, default_cache_dir, download, split_validation, DataError,
    Dataset, DatasetKind, Source, Split, Subset, DATA_ENV,
};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Environment variable with a base URL replacing the official download source.
pub const MIRROR_ENV: &str = "FFEBM_MIRROR";

/// Training, validation and evaluation subsets of a run.
pub struct RunData {
    pub kind: DatasetKind,
    pub dir: PathBuf,
    pub train: Subset,
    pub val: Option<Subset>,
    /// Named evaluation sets (CIFAR-10 without `test_batch.bin`: the exact first 1,000 and
    /// the full partly-lossy 10,000, reported separately).
    pub tests: Vec<(String, Subset)>,
}

fn limit(s: Subset, n: Option<usize>) -> Result<Subset> {
    match n {
        Some(n) if n < s.len() => Ok(Subset::new(s.dataset().clone(), s.indices()[..n].to_vec())?),
        _ => Ok(s),
    }
}

/// `a, b … z` for a long file list.
fn file_list(files: &[String]) -> String {
    match files {
        [a, .., z] if files.len() > 3 => format!("{a} … {z}"),
        _ => files.join(", "),
    }
}

/// The folder layout a dataset needs, for messages.
pub fn layout(kind: DatasetKind) -> String {
    let train = kind.default_files(Split::Train);
    let test = kind.default_files(Split::Test);
    let gz = if kind.is_mnist_family() {
        " (.gz accepted)"
    } else {
        ""
    };
    format!(
        "a folder with a `{}/` subfolder (or the dataset folder itself) holding {} and {}{gz}",
        kind.name(),
        file_list(&train),
        file_list(&test)
    )
}

/// Where the data root came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Config,
    Env,
    Cache,
}

/// The data root: `data.dir`, else `$FFEBM_DATA`, else the download cache. A set but
/// missing `data.dir` or `$FFEBM_DATA` is an error naming it.
fn data_root(cfg: &DataConfig) -> Result<(PathBuf, Origin)> {
    if let Some(d) = &cfg.dir {
        if !d.is_dir() && !cfg.download {
            bail!(
                "data.dir = {} does not exist (set by --data-dir, --set data.dir or the run's config.toml); it should be {}",
                d.display(),
                layout(cfg.dataset)
            );
        }
        return Ok((d.clone(), Origin::Config));
    }
    match std::env::var_os(DATA_ENV) {
        Some(v) if !v.is_empty() => {
            let p = PathBuf::from(&v);
            anyhow::ensure!(
                p.is_dir(),
                "{DATA_ENV} = {} is not a directory. Point it at {}, or unset it to use the download cache ({})",
                p.display(),
                layout(cfg.dataset),
                default_cache_dir().display()
            );
            Ok((p, Origin::Env))
        }
        _ => Ok((default_cache_dir(), Origin::Cache)),
    }
}

fn origin_text(o: Origin) -> &'static str {
    match o {
        Origin::Config => "data.dir",
        Origin::Env => DATA_ENV,
        Origin::Cache => "the download cache",
    }
}

/// Writes a progress line to stderr; a closed stderr is ignored.
fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn fetch(kind: DatasetKind, quiet: bool) -> Result<PathBuf> {
    let cache = default_cache_dir();
    let source = Source::official(kind).with_context(|| {
        format!(
            "{} cannot be downloaded automatically; {}",
            kind.display_name(),
            kind.advice()
        )
    })?;
    let source = match std::env::var(MIRROR_ENV) {
        Ok(m) if !m.is_empty() => source.with_base_url(m),
        _ => source,
    };
    if !quiet {
        note(&format!(
            "{} not found; downloading it from {} into {} (checksum-verified)",
            kind.display_name(),
            source.base_url,
            cache.display()
        ));
    }
    let mut last = 0u64;
    let mut report = |p: &crate::data::Progress| {
        if !quiet && p.downloaded >= last + (8 << 20) {
            last = p.downloaded;
            note(&format!(
                "  {}: {} MiB{}",
                p.file,
                p.downloaded >> 20,
                p.total
                    .map(|t| format!(" of {} MiB", t >> 20))
                    .unwrap_or_default()
            ));
        }
    };
    download(kind, &source, &cache, Some(&mut report)).with_context(|| {
        format!(
            "could not download {}. Without network: copy the dataset to {} and set {DATA_ENV} to it (or pass --data-dir DIR, or --set data.dir=DIR); or retry once the network is back",
            kind.display_name(),
            layout(kind)
        )
    })
}

fn load_train(cfg: &DataConfig, quiet: bool) -> Result<(Dataset, PathBuf)> {
    let (root, origin) = data_root(cfg)?;
    let dir = dataset_dir(&root, cfg.dataset);
    match Dataset::load(cfg.dataset, Split::Train, &dir, None) {
        Ok(d) => Ok((d, dir)),
        Err(DataError::Missing { .. }) if cfg.download => {
            let got = fetch(cfg.dataset, quiet)?;
            Ok((Dataset::load(cfg.dataset, Split::Train, &got, None)?, got))
        }
        Err(e) => Err(anyhow::Error::from(e).context(format!(
            "cannot load the {} training set from {} ({}); point data.dir (--data-dir) or {DATA_ENV} at {}, or add --download to fetch it",
            cfg.dataset.display_name(),
            dir.display(),
            origin_text(origin),
            layout(cfg.dataset)
        ))),
    }
}

/// The evaluation sets of a dataset folder: explicit `data.test_files`, CIFAR-10's exact
/// and lossy sets, or the official test split.
fn test_files(cfg: &DataConfig, dir: &Path) -> Result<Vec<(String, Option<Vec<PathBuf>>)>> {
    Ok(match (&cfg.test_files, cfg.dataset) {
        (Some(files), _) => vec![(
            "test".into(),
            Some(files.iter().map(PathBuf::from).collect()),
        )],
        (None, DatasetKind::Cifar10) => {
            let sets = cifar10_test_sets(dir);
            anyhow::ensure!(
                !sets.is_empty(),
                "no CIFAR-10 test file in {} (expected test_batch.bin or test_batch_first1000.bin)",
                dir.display()
            );
            sets.into_iter().map(|s| (s.name, Some(s.files))).collect()
        }
        (None, _) => vec![("test".into(), None)],
    })
}

/// The name of set `name` reduced to its first `n` images.
fn limited_name(name: &str, n: usize) -> String {
    match name {
        "test-exact1000" => format!("test-exact{n}"),
        "test-full10000-lossy" => format!("test-first{n}-lossy"),
        other => format!("{other}-first{n}"),
    }
}

/// Whether two subsets hold the same images and labels in the same order.
fn same_images(a: &Subset, b: &Subset) -> bool {
    a.len() == b.len()
        && a.indices().iter().zip(b.indices()).all(|(&i, &j)| {
            let (da, db) = (a.dataset(), b.dataset());
            da.labels[i] == db.labels[j] && da.image(i) == db.image(j)
        })
}

/// Loads the evaluation sets from the dataset folder `dir`; `fix` rewrites data errors
/// (e.g. their advice) before they are reported.
fn load_tests(
    cfg: &DataConfig,
    dir: &Path,
    fix: &dyn Fn(DataError) -> DataError,
) -> Result<Vec<(String, Subset)>> {
    let mut tests: Vec<(String, Subset)> = Vec::new();
    for (name, files) in test_files(cfg, dir)? {
        let ds = Dataset::load(cfg.dataset, Split::Test, dir, files.as_deref())
            .map_err(fix)
            .with_context(|| format!("evaluation set `{name}`"))?;
        let total = ds.len();
        let sub = limit(Subset::all(Arc::new(ds)), cfg.test_limit)?;
        let name = if sub.len() < total {
            limited_name(&name, sub.len())
        } else {
            name
        };
        if !tests.iter().any(|(_, t)| same_images(t, &sub)) {
            tests.push((name, sub));
        }
    }
    Ok(tests)
}

/// Loads the training set (downloading it if allowed), holds out the validation split and
/// loads the evaluation sets.
pub fn load_run_data(cfg: &DataConfig, seed: u64, quiet: bool) -> Result<RunData> {
    let (train_ds, dir) = load_train(cfg, quiet)?;
    let train_ds = Arc::new(train_ds);
    let all = limit(Subset::all(train_ds.clone()), cfg.train_limit)?;
    let (train, val) = if cfg.val_size > 0 {
        anyhow::ensure!(
            cfg.val_size < all.len(),
            "data.val_size = {} leaves no training images (of {})",
            cfg.val_size,
            all.len()
        );
        let sub = if all.len() == train_ds.len() {
            train_ds.clone()
        } else {
            let images = all
                .indices()
                .iter()
                .flat_map(|&i| train_ds.image(i).to_vec())
                .collect();
            let labels = all.indices().iter().map(|&i| train_ds.labels[i]).collect();
            Arc::new(Dataset::from_raw(
                train_ds.kind,
                Split::Train,
                train_ds.shape,
                images,
                labels,
            )?)
        };
        let (t, v) = split_validation(sub, cfg.val_size, seed)?;
        (t, Some(v))
    } else {
        (all, None)
    };
    let tests = load_tests(cfg, &dir, &|e| e)?;
    Ok(RunData {
        kind: cfg.dataset,
        dir,
        train,
        val,
        tests,
    })
}

/// The evaluation sets alone, for `ffebm eval`: no training set, no download, and advice
/// that names what `eval` can do (`--data-dir`, `FFEBM_DATA`, `--set`).
pub fn load_eval_data(cfg: &DataConfig) -> Result<Vec<(String, Subset)>> {
    let kind = cfg.dataset;
    let test = kind.default_files(Split::Test);
    let hint = format!(
        "eval reads only the test split: point --data-dir (or {DATA_ENV}) at a folder holding {} (or its `{}/` subfolder)",
        file_list(&test),
        kind.name()
    );
    let cfg = DataConfig {
        download: false,
        ..cfg.clone()
    };
    let (root, origin) = data_root(&cfg).map_err(|e| anyhow::anyhow!("{e}; {hint}"))?;
    let dir = dataset_dir(&root, kind);
    let (from, to) = (kind.advice(), kind.offline_advice());
    load_tests(&cfg, &dir, &|e| e.replace_advice(&from, &to)).with_context(|| {
        format!(
            "cannot load the {} test data from {} ({}); {hint}",
            kind.display_name(),
            dir.display(),
            origin_text(origin)
        )
    })
}
