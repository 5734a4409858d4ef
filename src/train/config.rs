//! The complete description of a training run (written to `config.toml` in the run
//! directory), built from a preset, an optional TOML file and `--set key=value` overrides.
//! Unknown keys are rejected with the nearest valid key suggested.

use super::optim::{OptimConfig, ScheduleConfig};
use crate::data::DatasetKind;
pub use crate::grad::AlgoConfig;
#[cfg(test)]
use crate::grad::Algorithm;
use crate::model::presets::{preset, Preset};
use crate::model::ModelConfig;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Dataset and input pipeline settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `cifar10`, `cifar100`, `imagenet32`, `mnist`, `fashion-mnist` or `kmnist`.
    pub dataset: DatasetKind,
    /// Data root (default: `$FFEBM_DATA`, then the download cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Download the dataset into the cache if it is not found.
    #[serde(default)]
    pub download: bool,
    pub batch_size: usize,
    /// Normalise pixels with the dataset's constants (SPEC §4); `false` feeds `[0, 1]`.
    #[serde(default = "yes")]
    pub normalize: bool,
    /// Zero-pad 28x28 images (the MNIST family) to 32x32; `false` feeds them at 28x28.
    #[serde(default = "yes")]
    pub pad_to_32: bool,
    /// Batch size of evaluation (default: `batch_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_batch_size: Option<usize>,
    /// Training images held out for validation (0 = none).
    #[serde(default)]
    pub val_size: usize,
    /// Random flip + crop augmentation (default for colour datasets).
    pub augment: bool,
    /// Use only the first N training images (quick experiments, tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_limit: Option<usize>,
    /// Use only the first N images of each evaluation set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_limit: Option<usize>,
    /// Explicit test file list (e.g. CIFAR-10's `test_batch_first1000.bin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_files: Option<Vec<String>>,
}

fn yes() -> bool {
    true
}

/// Loop settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopConfig {
    pub epochs: usize,
    /// Write a step record to the metrics every N steps.
    pub log_every: usize,
    /// Also checkpoint every N steps within an epoch (0 = only at epoch ends).
    #[serde(default)]
    pub checkpoint_every: usize,
}

/// A whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The preset the run started from (informational; `model` etc. are complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    pub seed: u64,
    pub model: ModelConfig,
    pub algorithm: AlgoConfig,
    pub data: DataConfig,
    pub optim: OptimConfig,
    pub schedule: ScheduleConfig,
    pub train: LoopConfig,
}

impl DataConfig {
    /// Shape `[C, H, W]` the network is fed (28x28 images padded to 32x32 unless
    /// `pad_to_32 = false`).
    pub fn input_shape(&self) -> [usize; 3] {
        if self.pad_to_32 {
            self.dataset.input_shape()
        } else {
            self.dataset.stored_shape()
        }
    }

    /// The pixel normalisation (`None`: the dataset's).
    pub fn normalization(&self) -> Option<crate::data::Normalization> {
        (!self.normalize).then(|| crate::data::Normalization::unit(self.dataset.input_shape()[0]))
    }
}

impl RunConfig {
    /// The run a preset describes.
    pub fn from_preset(p: &Preset, seed: u64) -> Result<Self> {
        let kind: DatasetKind = p
            .train
            .dataset
            .parse()
            .map_err(|e| anyhow::anyhow!("preset {}: {e}", p.name))?;
        Ok(RunConfig {
            preset: Some(p.name.to_string()),
            seed,
            model: p.model.clone(),
            algorithm: p.algo.clone(),
            data: DataConfig {
                dataset: kind,
                dir: None,
                download: false,
                batch_size: p.train.batch_size,
                normalize: p.train.normalize,
                pad_to_32: p.train.pad_to_32,
                eval_batch_size: None,
                val_size: 0,
                augment: !kind.is_mnist_family(),
                train_limit: None,
                test_limit: None,
                test_files: None,
            },
            optim: p.train.optim.clone(),
            schedule: p.train.schedule.clone(),
            train: LoopConfig {
                epochs: p.train.epochs,
                log_every: 20,
                checkpoint_every: 0,
            },
        })
    }

    /// Resolves: preset (or `base` file alone) → merged with the TOML `file` → `--set`s.
    pub fn resolve(
        preset_name: Option<&str>,
        classes: Option<usize>,
        file: Option<&str>,
        sets: &[String],
        seed: u64,
    ) -> Result<Self> {
        let mut value = match preset_name {
            Some(name) => {
                toml::Value::try_from(RunConfig::from_preset(&preset(name, classes)?, seed)?)?
            }
            None => toml::Value::Table(Default::default()),
        };
        if let Some(text) = file {
            let user: toml::Value = toml::from_str(text).context("invalid TOML")?;
            merge(&mut value, user);
        }
        for s in sets {
            let (key, raw) = s
                .split_once('=')
                .with_context(|| format!("--set `{s}`: expected key=value"))?;
            set_path(&mut value, key.trim(), parse_value(raw.trim()))?;
        }
        if preset_name.is_none() && file.is_none() {
            bail!("nothing to train: give --preset NAME or --config FILE.toml");
        }
        let cfg: RunConfig = from_value(value)?;
        if let (Some(c), None) = (classes, preset_name) {
            let mut cfg = cfg;
            cfg.model.classes = c;
            return cfg.validate().map(|_| cfg);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a resolved `config.toml`.
    pub fn from_toml(text: &str) -> Result<Self> {
        let v: toml::Value = toml::from_str(text).context("invalid TOML")?;
        let cfg: RunConfig = from_value(v)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<()> {
        self.model.layouts().context("model")?;
        self.algorithm.validate()?;
        anyhow::ensure!(
            self.data.batch_size >= 1,
            "data.batch_size must be at least 1"
        );
        anyhow::ensure!(
            self.optim.lr > 0.0 && self.optim.lr.is_finite(),
            "optim.lr must be positive"
        );
        anyhow::ensure!(
            self.train.log_every >= 1,
            "train.log_every must be at least 1"
        );
        self.schedule.validate()?;
        let [c, h, w] = self.model.input;
        let want = self.data.input_shape();
        anyhow::ensure!(
            [c, h, w] == want,
            "model.input = {:?} but {} images are fed as {want:?} (C, H, W); set model.input accordingly",
            self.model.input,
            self.data.dataset.name()
        );
        anyhow::ensure!(
            self.model.classes >= self.data.dataset.num_classes(),
            "model.classes = {} but {} has {} classes",
            self.model.classes,
            self.data.dataset.name(),
            self.data.dataset.num_classes()
        );
        Ok(())
    }
}

/// Deserialises with the path of the offending key and a suggestion for unknown keys.
fn from_value(v: toml::Value) -> Result<RunConfig> {
    let template = toml::Value::try_from(RunConfig::from_preset(
        &preset("splitting_small_2block", None)?,
        0,
    )?)?;
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if let Some(rest) = inner.strip_prefix("unknown field `") {
            let field = rest.split('`').next().unwrap_or("");
            let parent = path
                .rsplit_once('.')
                .map(|(p, _)| p.to_string())
                .unwrap_or_default();
            let full = if parent.is_empty() || path == field {
                field.to_string()
            } else {
                format!("{parent}.{field}")
            };
            let full = if path.ends_with(field) {
                path.clone()
            } else {
                full
            };
            let near = nearest_key(&template, &full);
            anyhow::anyhow!("unknown config key `{full}`; did you mean `{near}`? ({inner})")
        } else {
            anyhow::anyhow!("config key `{path}`: {inner}")
        }
    })
}

/// All dotted keys of a TOML tree.
fn keys(v: &toml::Value, prefix: &str, out: &mut Vec<String>) {
    if let toml::Value::Table(t) = v {
        for (k, child) in t {
            let full = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.push(full.clone());
            if !matches!(child, toml::Value::Array(_)) {
                keys(child, &full, out);
            }
        }
    }
}

fn nearest_key(template: &toml::Value, key: &str) -> String {
    let mut all = Vec::new();
    keys(template, "", &mut all);
    all.extend(
        [
            "data.dir",
            "data.eval_batch_size",
            "data.train_limit",
            "data.test_limit",
            "data.test_files",
            "algorithm.tol",
            "model.blocks.N.alpha",
        ]
        .map(String::from),
    );
    all.into_iter()
        .min_by_key(|k| strsim::levenshtein(k, key))
        .unwrap_or_default()
}

/// Deep merge: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// A `--set` value: a TOML literal (number, bool, array, quoted string) or a bare string.
fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Sets `a.b.c` (array elements by index: `model.blocks.0.alpha`).
fn set_path(root: &mut toml::Value, key: &str, value: toml::Value) -> Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = root;
    for (i, p) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        cur = match cur {
            toml::Value::Table(t) => {
                if last {
                    t.insert(p.to_string(), value);
                    return Ok(());
                }
                t.entry(p.to_string())
                    .or_insert_with(|| toml::Value::Table(Default::default()))
            }
            toml::Value::Array(a) => {
                let idx: usize = p
                    .parse()
                    .with_context(|| format!("--set {key}: `{p}` is not an index into a list"))?;
                let len = a.len();
                let slot = a.get_mut(idx).with_context(|| {
                    format!("--set {key}: index {idx} out of range (the list has {len} entries)")
                })?;
                if last {
                    *slot = value;
                    return Ok(());
                }
                slot
            }
            _ => bail!("--set {key}: `{}` is not a table", parts[..i].join(".")),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_floats_read_as_typed_and_round_trip_exactly() {
        let sets = vec!["algorithm.tol=1e-4".to_string()];
        let c = RunConfig::resolve(Some("cifar10_tiny"), None, None, &sets, 0).unwrap();
        let text = toml::to_string(&c).unwrap();
        for line in ["beta = 0.2\n", "tol = 0.0001\n", "init_v = 0.00008351\n"] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        let back: RunConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn preset_file_and_sets_compose() {
        let file = "[optim]\nlr = 0.01\n[data]\nval_size = 500\n";
        let sets = vec![
            "algorithm.t1=7".to_string(),
            "algorithm.name=id-exact".into(),
            "model.blocks.0.alpha=0.25".into(),
            "data.dir=/tmp/x".into(),
        ];
        let c =
            RunConfig::resolve(Some("splitting_small_2block"), None, Some(file), &sets, 3).unwrap();
        assert_eq!(c.optim.lr, 0.01);
        assert_eq!(c.data.val_size, 500);
        assert_eq!(c.algorithm.t1, 7);
        assert_eq!(c.algorithm.name, Algorithm::IdExact);
        assert_eq!(c.model.blocks[0].alpha, Some(0.25));
        assert_eq!(c.data.dir, Some(PathBuf::from("/tmp/x")));
        assert_eq!(c.seed, 3);
        // the resolved TOML round-trips
        assert_eq!(RunConfig::from_toml(&c.to_toml().unwrap()).unwrap(), c);
    }

    #[test]
    fn unknown_keys_suggest_the_nearest() {
        let e = RunConfig::resolve(
            Some("splitting_small_2block"),
            None,
            None,
            &["optim.lrr=0.1".into()],
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("unknown config key `optim.lrr`; did you mean `optim.lr`?"),
            "{e}"
        );
        let e = RunConfig::resolve(
            Some("splitting_small_2block"),
            None,
            Some("[algorithm]\nbetta = 0.1\n"),
            &[],
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`algorithm.betta`") && e.contains("did you mean `algorithm.beta`"),
            "{e}"
        );
        let e = RunConfig::resolve(
            Some("splitting_small_2block"),
            None,
            None,
            &["algorithm.t1=many".into()],
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("config key `algorithm.t1`"), "{e}");
        let e = RunConfig::resolve(
            Some("splitting_small_2block"),
            None,
            None,
            &["model.input=[1,32,32]".into()],
            0,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("channels[0]"), "{e:#}");
    }
}
