//! Finding, downloading and splitting the data of a run.

use super::config::DataConfig;
use crate::data::{
    cifar10_test_sets, data_dir, dataset_dir, default_cache_dir, download, split_validation,
    DataError, Dataset, DatasetKind, Source, Split, Subset,
};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// The dataset folder: `data.dir`, else `$FFEBM_DATA`, else the download cache.
fn resolve_dir(cfg: &DataConfig) -> PathBuf {
    match data_dir(cfg.dir.as_deref()) {
        Ok(root) => dataset_dir(&root, cfg.dataset),
        Err(_) => match &cfg.dir {
            Some(d) => d.clone(),
            None => dataset_dir(&default_cache_dir(), cfg.dataset),
        },
    }
}

fn load_train(cfg: &DataConfig, dir: &Path, quiet: bool) -> Result<(Dataset, PathBuf)> {
    match Dataset::load(cfg.dataset, Split::Train, dir, None) {
        Ok(d) => Ok((d, dir.to_path_buf())),
        Err(DataError::Missing { .. }) if cfg.download => {
            let cache = default_cache_dir();
            if !quiet {
                eprintln!("{} not found in {}; downloading it into {} (official source, checksum-verified)", cfg.dataset.display_name(), dir.display(), cache.display());
            }
            let mut last = 0u64;
            let mut report = |p: &crate::data::Progress| {
                if !quiet && p.downloaded >= last + (8 << 20) {
                    last = p.downloaded;
                    eprintln!("  {}: {} MiB{}", p.file, p.downloaded >> 20, p.total.map(|t| format!(" of {} MiB", t >> 20)).unwrap_or_default());
                }
            };
            let source = Source::official(cfg.dataset).with_context(|| format!("{} cannot be downloaded automatically; {}", cfg.dataset.display_name(), cfg.dataset.advice()))?;
            let got = download(cfg.dataset, &source, &cache, Some(&mut report))?;
            Ok((Dataset::load(cfg.dataset, Split::Train, &got, None)?, got))
        }
        Err(e) => Err(anyhow::Error::from(e).context(format!(
            "cannot load the {} training set from {} (set data.dir / FFEBM_DATA, or --set data.download=true to fetch it)",
            cfg.dataset.display_name(),
            dir.display()
        ))),
    }
}

/// Loads the training set (downloading it if allowed), holds out the validation split and
/// loads the evaluation sets.
pub fn load_run_data(cfg: &DataConfig, seed: u64, quiet: bool) -> Result<RunData> {
    let (train_ds, dir) = load_train(cfg, &resolve_dir(cfg), quiet)?;
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
    let sets: Vec<(String, Option<Vec<PathBuf>>)> = match (&cfg.test_files, cfg.dataset) {
        (Some(files), _) => vec![(
            "test".into(),
            Some(files.iter().map(PathBuf::from).collect()),
        )],
        (None, DatasetKind::Cifar10) => {
            let sets = cifar10_test_sets(&dir);
            anyhow::ensure!(
                !sets.is_empty(),
                "no CIFAR-10 test file in {} (expected test_batch.bin or test_batch_first1000.bin)",
                dir.display()
            );
            sets.into_iter().map(|s| (s.name, Some(s.files))).collect()
        }
        (None, _) => vec![("test".into(), None)],
    };
    let mut tests = Vec::new();
    for (name, files) in sets {
        let ds = Dataset::load(cfg.dataset, Split::Test, &dir, files.as_deref())
            .with_context(|| format!("evaluation set `{name}`"))?;
        tests.push((name, limit(Subset::all(Arc::new(ds)), cfg.test_limit)?));
    }
    Ok(RunData {
        kind: cfg.dataset,
        dir,
        train,
        val,
        tests,
    })
}
