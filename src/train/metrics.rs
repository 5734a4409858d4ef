//! Run metrics: `metrics.jsonl` (one JSON object per line: `"kind": "step"` every N steps,
//! `"kind": "epoch"` per epoch, `"kind": "config_change"` when a run was resumed with changed
//! settings) and `metrics.csv`, a flat copy of the epoch records.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Loss and accuracies (percent) on one evaluation set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub loss: f64,
    pub top1: f64,
    pub top5: f64,
    pub samples: usize,
    /// Mean free-phase sweeps per block.
    pub sweeps: f64,
}

/// A periodic training-step record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub kind: String,
    pub epoch: usize,
    pub step: u64,
    /// Running mean over the epoch so far.
    pub loss: f64,
    pub top1: f64,
    pub top5: f64,
    pub lr: f64,
    pub free_sweeps: f64,
    pub images_per_s: f64,
    pub time: f64,
    /// Resistor power of the DRN blocks on this step's batch (see [`power_record`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub power: BTreeMap<String, f64>,
}

/// An end-of-epoch record. `test_*` refer to the first evaluation set, `test_name`; all
/// sets are in `evals`, keyed by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub kind: String,
    pub epoch: usize,
    pub step: u64,
    pub lr: f64,
    pub train_loss: f64,
    pub train_top1: f64,
    pub train_top5: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_top1: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_top5: Option<f64>,
    /// Name of the evaluation set `test_*` refer to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub test_name: String,
    pub test_loss: f64,
    pub test_top1: f64,
    pub test_top5: f64,
    pub evals: BTreeMap<String, EvalMetrics>,
    pub free_sweeps: f64,
    pub images_per_s: f64,
    pub epoch_time: f64,
    pub time: f64,
    /// Mean relaxation sweeps per batch of each energy-based block (`"block{k}"`, k 0-based)
    /// and phase, as the estimator ran them (absent in runs written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweeps_per_block: Option<BTreeMap<String, PhaseSweeps>>,
    /// Weight-update pulses of the epoch per energy-based block (`"block{k}"`), from the
    /// analog device model when one is simulated (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulses: Option<BTreeMap<String, u64>>,
    /// Pulses of the epoch spent refreshing differential pairs (`analog.device_pair`), per
    /// block, counted apart from `pulses` (absent without pairs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_pulses: Option<BTreeMap<String, u64>>,
    /// Resistor power of the DRN blocks, the mean over the epoch's logged steps (the power is
    /// read out on every `train.log_every`-th batch only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub power: BTreeMap<String, f64>,
}

/// `block<k>.free`, `block<k>.plus`, `block<k>.minus`: the batch-mean resistor power of each
/// DRN block at its free equilibrium and at EP's nudged equilibria of positive and negative β.
pub fn power_record(power: &[crate::grad::power::BlockPower]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for b in power {
        out.insert(format!("block{}.free", b.block), b.free);
        for n in &b.nudged {
            let sign = if n.beta > 0.0 { "plus" } else { "minus" };
            out.insert(format!("block{}.{sign}", b.block), n.power);
        }
    }
    out
}

pub use crate::grad::PhaseSweeps;

/// Appends records to `metrics.jsonl` and rewrites `metrics.csv`.
pub struct MetricsWriter {
    jsonl: PathBuf,
    csv: PathBuf,
}

impl MetricsWriter {
    /// Opens the metrics of `run_dir`; keeps only the records up to optimiser step `upto`
    /// (records written after the checkpoint a run resumes from are dropped).
    pub fn open(run_dir: &Path, upto: Option<u64>) -> Result<Self> {
        let w = MetricsWriter {
            jsonl: run_dir.join("metrics.jsonl"),
            csv: run_dir.join("metrics.csv"),
        };
        match upto {
            None => crate::io::atomic_write(&w.jsonl, b"")?,
            Some(step) => {
                let text = std::fs::read_to_string(&w.jsonl).unwrap_or_default();
                let kept: String = text
                    .lines()
                    .filter(|l| {
                        serde_json::from_str::<serde_json::Value>(l)
                            .ok()
                            .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                            .is_some_and(|s| s <= step)
                    })
                    .map(|l| format!("{l}\n"))
                    .collect();
                crate::io::atomic_write(&w.jsonl, kept.as_bytes())?;
            }
        }
        Ok(w)
    }

    fn append(&self, line: String) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.jsonl)
            .with_context(|| format!("cannot open {}", self.jsonl.display()))?;
        writeln!(f, "{line}").with_context(|| format!("cannot write {}", self.jsonl.display()))?;
        f.flush()?;
        Ok(())
    }

    pub fn step(&self, r: &StepRecord) -> Result<()> {
        self.append(serde_json::to_string(r)?)
    }

    /// Any other record (e.g. `"kind": "config_change"`); it must carry a `"step"` so that a
    /// later resume keeps it.
    pub fn event(&self, r: &serde_json::Value) -> Result<()> {
        self.append(r.to_string())
    }

    pub fn epoch(&self, r: &EpochRecord) -> Result<()> {
        self.append(serde_json::to_string(r)?)?;
        self.write_csv()
    }

    /// The epoch records written so far.
    pub fn epochs(&self) -> Result<Vec<EpochRecord>> {
        read_epochs(&self.jsonl)
    }

    fn write_csv(&self) -> Result<()> {
        let recs = self.epochs()?;
        // per-set columns, except a set named `test`, whose columns the generic test_* are
        let sets: Vec<String> = recs
            .iter()
            .flat_map(|r| r.evals.keys().cloned())
            .filter(|s| s != "test")
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut out = String::from("epoch,step,lr,train_loss,train_top1,train_top5,val_loss,val_top1,val_top5,test_loss,test_top1,test_top5,free_sweeps,images_per_s,epoch_time,time");
        for s in &sets {
            out.push_str(&format!(",{s}_loss,{s}_top1,{s}_top5"));
        }
        out.push('\n');
        let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        for r in &recs {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                r.epoch,
                r.step,
                r.lr,
                r.train_loss,
                r.train_top1,
                r.train_top5,
                opt(r.val_loss),
                opt(r.val_top1),
                opt(r.val_top5),
                r.test_loss,
                r.test_top1,
                r.test_top5,
                r.free_sweeps,
                r.images_per_s,
                r.epoch_time,
                r.time
            ));
            for s in &sets {
                match r.evals.get(s) {
                    Some(e) => out.push_str(&format!(",{},{},{}", e.loss, e.top1, e.top5)),
                    None => out.push_str(",,,"),
                }
            }
            out.push('\n');
        }
        crate::io::atomic_write(&self.csv, out.as_bytes())
    }
}

/// The epoch records of a `metrics.jsonl`.
pub fn read_epochs(path: &Path) -> Result<Vec<EpochRecord>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: malformed JSON", path.display(), i + 1))?;
        if v.get("kind").and_then(|k| k.as_str()) == Some("epoch") {
            out.push(
                serde_json::from_value(v)
                    .with_context(|| format!("{}:{}: bad epoch record", path.display(), i + 1))?,
            );
        }
    }
    Ok(out)
}
