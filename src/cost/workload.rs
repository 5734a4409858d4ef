//! What is priced: a model, its EP settings, the batch, the training set and, per epoch, the
//! learning rate, the sweeps each block ran and the weight pulses when a run recorded them.
//! From a preset or run configuration the configured T1/T2 are used; from a run directory
//! the sweeps and pulses of its `metrics.jsonl` (interfaces: `EpochRecord::sweeps_per_block`
//! and `EpochRecord::pulses`).

use super::counts::{check_algorithm, configured_sweeps};
use crate::data::DatasetKind;
use crate::grad::{AlgoConfig, PhaseSweeps};
use crate::model::ModelConfig;
use crate::train::config::RunConfig;
use crate::train::metrics::{read_epochs, EpochRecord};
use anyhow::{ensure, Context, Result};
use std::path::Path;

/// One epoch of the run.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochPlan {
    pub lr: f64,
    /// Sweeps per block (mean per batch).
    pub sweeps: Vec<PhaseSweeps>,
    /// Weight pulses of the epoch per block as recorded by the run (update pulses plus the
    /// differential pairs' refresh pulses); `None`: estimated.
    pub pulses: Option<Vec<f64>>,
}

/// Everything the estimate needs.
#[derive(Clone, Debug)]
pub struct Workload {
    /// What is priced (preset name, config file or run directory).
    pub name: String,
    pub model: ModelConfig,
    pub algo: AlgoConfig,
    pub batch: usize,
    pub train_size: usize,
    /// Images evaluated at the end of every epoch (the test set, capped by
    /// `data.test_limit`, and the validation split).
    pub eval_images: usize,
    pub epochs: Vec<EpochPlan>,
    /// Where the sweeps come from, for the report.
    pub sweeps_source: String,
    /// Resistor power of each block as the run's DRN power readout measured it, in model
    /// units (`Σ g·(vᵢ − vⱼ)²` per sample): the mean over the recorded epochs and their
    /// phases; `None` where nothing was recorded (no run directory, no DRN block, or a run
    /// that predates the readout).
    pub drn_power: Vec<Option<f64>>,
    /// Per block: its coupling weights are differential pairs of devices (`G⁺ − G⁻`, the
    /// `[analog]` `device_pair` setting), two crossbar cells per weight.
    pub pairs: Vec<bool>,
    /// Statements about fallbacks, for the report.
    pub notes: Vec<String>,
}

/// Test (evaluation) images of a dataset (ImageNet32: its validation set).
pub fn test_images(kind: DatasetKind) -> usize {
    match kind {
        DatasetKind::ImageNet32 => 50_000,
        DatasetKind::Cifar10
        | DatasetKind::Cifar100
        | DatasetKind::Mnist
        | DatasetKind::FashionMnist
        | DatasetKind::Kmnist => 10_000,
    }
}

/// Training images of a dataset (before `train_limit` and the validation split).
pub fn train_images(kind: DatasetKind) -> usize {
    match kind {
        DatasetKind::Cifar10 | DatasetKind::Cifar100 => 50_000,
        DatasetKind::ImageNet32 => 1_281_167,
        DatasetKind::Mnist | DatasetKind::FashionMnist | DatasetKind::Kmnist => 60_000,
    }
}

impl Workload {
    /// Block `k`'s counts on its devices (two cells per weight for differential pairs).
    pub fn on_devices(
        &self,
        k: usize,
        c: super::counts::BlockCounts,
    ) -> super::counts::BlockCounts {
        match self.pairs.get(k) {
            Some(true) => c.as_differential_pairs(),
            _ => c,
        }
    }

    /// The run a configuration describes, with its configured T1/T2.
    pub fn from_config(cfg: &RunConfig, name: &str) -> Result<Workload> {
        check_algorithm(&cfg.algorithm)?;
        let blocks = cfg.model.layouts()?.len();
        let sweeps = configured_sweeps(&cfg.algorithm, blocks);
        let n = train_images(cfg.data.dataset);
        let n = cfg.data.train_limit.map_or(n, |l| l.min(n));
        let train_size = n.saturating_sub(cfg.data.val_size);
        ensure!(
            train_size > 0,
            "no training images left after data.val_size"
        );
        let mut notes = Vec::new();
        if cfg.algorithm.tol.is_some() {
            notes.push(format!(
                "free phase: T1 = {} is the cap of a tolerance stop; a run directory gives the sweeps actually run",
                cfg.algorithm.t1
            ));
        }
        Ok(Workload {
            name: name.to_string(),
            model: cfg.model.clone(),
            algo: cfg.algorithm.clone(),
            batch: cfg.data.batch_size,
            train_size,
            eval_images: cfg
                .data
                .test_limit
                .map_or(test_images(cfg.data.dataset), |l| {
                    l.min(test_images(cfg.data.dataset))
                })
                + cfg.data.val_size,
            epochs: (0..cfg.train.epochs)
                .map(|e| EpochPlan {
                    lr: cfg.lr(e),
                    sweeps: sweeps.clone(),
                    pulses: None,
                })
                .collect(),
            sweeps_source: format!(
                "configured: T1 = {}, T2 = {} per nudged phase",
                cfg.algorithm.t1, cfg.algorithm.t2
            ),
            drn_power: vec![None; blocks],
            pairs: cfg
                .analog
                .resolve(blocks)?
                .iter()
                .map(|b| b.pulse.is_some_and(|p| p.pair.is_some()))
                .collect(),
            notes,
        })
    }

    /// A run directory: its `config.toml`, and the sweeps (and pulses) each recorded epoch
    /// of `metrics.jsonl` reports; epochs not (yet) recorded use the configured T1/T2.
    pub fn from_run_dir(dir: &Path) -> Result<Workload> {
        let cfg_path = dir.join("config.toml");
        let text = std::fs::read_to_string(&cfg_path).with_context(|| {
            format!(
                "cannot read {} (is {} a run directory?)",
                cfg_path.display(),
                dir.display()
            )
        })?;
        let cfg =
            RunConfig::from_toml(&text).with_context(|| format!("in {}", cfg_path.display()))?;
        let mut w = Workload::from_config(&cfg, &dir.display().to_string())?;
        let metrics = dir.join("metrics.jsonl");
        let records = if metrics.exists() {
            read_epochs(&metrics)?
        } else {
            Vec::new()
        };
        apply_records(&mut w, &records, &metrics)?;
        Ok(w)
    }
}

/// Replaces the configured sweeps and estimated pulses of the recorded epochs.
pub fn apply_records(w: &mut Workload, records: &[EpochRecord], path: &Path) -> Result<()> {
    let blocks = w.model.layouts()?.len();
    let configured = configured_sweeps(&w.algo, blocks);
    let (mut per_block, mut mean_only, mut pulses) = (0, 0, 0);
    // per block: (sum of the recorded phase powers, number of them)
    let mut power = vec![(0.0f64, 0usize); blocks];
    for r in records {
        ensure!(
            r.epoch >= 1,
            "{}: epoch record with epoch {} (epochs count from 1)",
            path.display(),
            r.epoch
        );
        if r.epoch > w.epochs.len() {
            w.notes.push(format!(
                "{}: epoch {} is beyond the configured {} epochs and is ignored",
                path.display(),
                r.epoch,
                w.epochs.len()
            ));
            continue;
        }
        let plan = &mut w.epochs[r.epoch - 1];
        match &r.sweeps_per_block {
            Some(map) => {
                let mut s = Vec::with_capacity(blocks);
                for k in 0..blocks {
                    let key = format!("block{k}");
                    let v = map.get(&key).with_context(|| {
                        format!("{}: epoch {}: `sweeps_per_block` lacks `{key}` (the model has {blocks} blocks)", path.display(), r.epoch)
                    })?;
                    ensure!(
                        [v.free, v.plus, v.minus]
                            .iter()
                            .all(|x| x.is_finite() && *x >= 0.0),
                        "{}: epoch {}: `sweeps_per_block.{key}` has a negative or non-finite count",
                        path.display(),
                        r.epoch
                    );
                    s.push(*v);
                }
                plan.sweeps = s;
                per_block += 1;
            }
            None => {
                // older runs: the mean free-phase sweeps over blocks, nudged phases as configured
                plan.sweeps = configured
                    .iter()
                    .map(|c| PhaseSweeps {
                        free: r.free_sweeps,
                        ..*c
                    })
                    .collect();
                mean_only += 1;
            }
        }
        if let Some(map) = &r.pulses {
            let mut p = Vec::with_capacity(blocks);
            for k in 0..blocks {
                let key = format!("block{k}");
                let v = map.get(&key).with_context(|| {
                    format!(
                        "{}: epoch {}: `pulses` lacks `{key}`",
                        path.display(),
                        r.epoch
                    )
                })?;
                // refreshing differential pairs writes the devices too
                let refresh = r
                    .refresh_pulses
                    .as_ref()
                    .and_then(|m| m.get(&key))
                    .copied()
                    .unwrap_or(0);
                p.push((*v + refresh) as f64);
            }
            plan.pulses = Some(p);
            pulses += 1;
        }
        for (key, &p) in &r.power {
            let block = key
                .strip_prefix("block")
                .and_then(|rest| rest.split_once('.'))
                .filter(|(_, phase)| ["free", "plus", "minus"].contains(phase))
                .and_then(|(k, _)| k.parse::<usize>().ok())
                .filter(|&k| k < blocks)
                .with_context(|| {
                    format!(
                        "{}: epoch {}: `power.{key}` is not `block<k>.free|plus|minus` of one of the model's {blocks} blocks",
                        path.display(),
                        r.epoch
                    )
                })?;
            ensure!(
                p.is_finite() && p >= 0.0,
                "{}: epoch {}: `power.{key}` = {p} is not a finite, non-negative power",
                path.display(),
                r.epoch
            );
            power[block].0 += p;
            power[block].1 += 1;
        }
    }
    w.drn_power = power
        .iter()
        .map(|&(sum, n)| (n > 0).then(|| sum / n as f64))
        .collect();
    let total = w.epochs.len();
    w.sweeps_source = match (per_block, mean_only) {
        (0, 0) => format!(
            "configured T1 = {}, T2 = {} (no epoch recorded in {})",
            w.algo.t1,
            w.algo.t2,
            path.display()
        ),
        (n, 0) => format!("recorded per block and phase for {n} of {total} epochs"),
        (0, n) => format!("recorded mean free sweeps for {n} of {total} epochs (the run predates per-block records: the mean applies to every block, nudged phases T2 = {})", w.algo.t2),
        (a, b) => format!("recorded per block and phase for {a} epochs, mean free sweeps only for {b}, of {total}"),
    };
    if per_block + mean_only < total && per_block + mean_only > 0 {
        w.notes.push(format!(
            "{} of {total} epochs not recorded: priced with the configured T1 = {}, T2 = {}",
            total - per_block - mean_only,
            w.algo.t1,
            w.algo.t2
        ));
    }
    if pulses > 0 {
        w.notes.push(format!(
            "weight writes: pulses recorded by the run's device model for {pulses} of {total} epochs{}",
            if pulses < total { "; |Δw|/Δw_min estimate for the others" } else { "" }
        ));
    }
    Ok(())
}
