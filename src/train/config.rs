//! The complete description of a training run (written to `config.toml` in the run
//! directory). [`RunConfig::resolve`] builds it in order of precedence, each layer
//! overriding the ones before: the preset, then a TOML file, then `--set key=value`
//! overrides, then the explicit flags (`--seed`, `--classes`; the command line turns
//! `--epochs`, `--data-dir` and `--download` into `--set`s that come after the user's).
//! Unknown keys are rejected with the nearest valid key suggested; values that leave
//! nothing to do (zero epochs, an empty evaluation set, …) are rejected by
//! [`RunConfig::validate`] before any work starts.

use super::keys::nearest_key;
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
    /// Also checkpoint when this many minutes have passed since the last checkpoint
    /// (0 = off), so that a killed run loses minutes, not an epoch.
    #[serde(default = "default_checkpoint_minutes")]
    pub checkpoint_minutes: f64,
    /// Stop when the mean loss of a log interval exceeds this many times the loss of the
    /// first step (0 = off).
    #[serde(default = "default_max_loss_ratio")]
    pub max_loss_ratio: f64,
    /// Stop when the mean loss of a log interval rose this many intervals in a row while
    /// above the first step's loss (0 = off).
    #[serde(default = "default_max_loss_rises")]
    pub max_loss_rises: usize,
}

fn default_checkpoint_minutes() -> f64 {
    10.0
}

fn default_max_loss_ratio() -> f64 {
    100.0
}

fn default_max_loss_rises() -> usize {
    10
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            epochs: 1,
            log_every: 20,
            checkpoint_every: 0,
            checkpoint_minutes: default_checkpoint_minutes(),
            max_loss_ratio: default_max_loss_ratio(),
            max_loss_rises: default_max_loss_rises(),
        }
    }
}

/// A whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The preset the run started from (informational; `model` etc. are complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Seed of every random draw (default 0).
    #[serde(default)]
    pub seed: u64,
    pub model: ModelConfig,
    pub algorithm: AlgoConfig,
    pub data: DataConfig,
    pub optim: OptimConfig,
    pub schedule: ScheduleConfig,
    pub train: LoopConfig,
    /// Analog non-idealities of the energy-based blocks (none by default).
    #[serde(default, skip_serializing_if = "crate::analog::AnalogConfig::is_off")]
    pub analog: crate::analog::AnalogConfig,
    /// Quantized feedforward (digital) blocks (float32 by default).
    #[serde(default, skip_serializing_if = "crate::digital::DigitalConfig::is_off")]
    pub digital: crate::digital::DigitalConfig,
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
                ..LoopConfig::default()
            },
            analog: Default::default(),
            digital: Default::default(),
        })
    }

    /// Resolves, each step overriding the ones before: the preset (or nothing), the TOML
    /// `file`, the `--set`s, then the explicit flags `seed` and `classes`.
    pub fn resolve(
        preset_name: Option<&str>,
        classes: Option<usize>,
        file: Option<&str>,
        sets: &[String],
        seed: Option<u64>,
    ) -> Result<Self> {
        if preset_name.is_none() && file.is_none() {
            bail!("nothing to train: give --preset NAME or --config FILE.toml");
        }
        let mut value = match preset_name {
            Some(name) => {
                toml::Value::try_from(RunConfig::from_preset(&preset(name, classes)?, 0)?)?
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
        if let Some(s) = seed {
            let s = i64::try_from(s).context("--seed must be below 2^63")?;
            set_path(&mut value, "seed", toml::Value::Integer(s))?;
        }
        if let Some(c) = classes {
            set_path(&mut value, "model.classes", toml::Value::Integer(c as i64))?;
        }
        let cfg: RunConfig = from_value(value)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The cosine period in epochs: `schedule.t_max`, else `train.epochs`.
    pub fn t_max(&self) -> usize {
        self.schedule.t_max.unwrap_or(self.train.epochs)
    }

    /// The learning rate of epoch `epoch` (0-based).
    pub fn lr(&self, epoch: usize) -> f64 {
        self.schedule.lr(self.optim.lr, epoch, self.t_max())
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

    /// Checks values that parse but make no sense (or leave nothing to do), naming the key.
    pub fn validate(&self) -> Result<()> {
        use anyhow::ensure;
        self.model.layouts().context("model")?;
        self.algorithm.validate()?;
        let d = &self.data;
        ensure!(d.batch_size >= 1, "data.batch_size must be at least 1");
        ensure!(
            d.eval_batch_size != Some(0),
            "data.eval_batch_size must be at least 1 (leave it out to use data.batch_size)"
        );
        ensure!(
            d.train_limit != Some(0),
            "data.train_limit = 0 leaves no training images (leave it out to use them all)"
        );
        ensure!(
            d.test_limit != Some(0),
            "data.test_limit = 0 leaves no evaluation images (leave it out to use them all)"
        );
        if let Some(n) = d.train_limit {
            ensure!(
                d.val_size < n,
                "data.val_size = {} leaves none of the data.train_limit = {n} training images to train on",
                d.val_size
            );
        }
        ensure!(
            self.optim.lr > 0.0 && self.optim.lr.is_finite(),
            "optim.lr must be positive"
        );
        let t = &self.train;
        ensure!(
            t.epochs >= 1,
            "train.epochs = 0 trains nothing (--epochs sets it)"
        );
        ensure!(t.log_every >= 1, "train.log_every must be at least 1");
        ensure!(
            t.checkpoint_minutes >= 0.0 && t.checkpoint_minutes.is_finite(),
            "train.checkpoint_minutes must be a number of minutes, or 0 for none"
        );
        ensure!(
            t.max_loss_ratio == 0.0 || (t.max_loss_ratio > 1.0 && t.max_loss_ratio.is_finite()),
            "train.max_loss_ratio must be above 1, or 0 to disable the check"
        );
        self.schedule.validate()?;
        self.analog.resolve(self.model.blocks.len())?;
        self.digital.resolve()?;
        let [c, h, w] = self.model.input;
        let want = self.data.input_shape();
        if let (Some(p), false) = (&self.preset, [c, h, w] == want) {
            anyhow::bail!(
                "preset `{p}` is built for {c}×{h}×{w} inputs (model.input), but data.dataset = {} feeds {}×{}×{} images: choose a preset made for {} (`ffebm presets` lists each preset's dataset) or set model.input = {want:?}",
                self.data.dataset.name(),
                want[0],
                want[1],
                want[2],
                self.data.dataset.name()
            );
        }
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
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        // the toml error's own text spans several lines; its first says what is wrong
        let inner = e.into_inner().to_string();
        let inner = inner.lines().next().unwrap_or("").trim().to_string();
        if let Some(rest) = inner.strip_prefix("unknown field `") {
            let field = rest.split('`').next().unwrap_or("");
            let full = if path.ends_with(field) || path == "." {
                path.trim_start_matches('.').to_string()
            } else {
                format!("{path}.{field}")
            };
            let full = if full.is_empty() {
                field.to_string()
            } else {
                full
            };
            match nearest_key(&full) {
                Some((near, section_keys)) => anyhow::anyhow!(
                    "unknown config key `{full}`; did you mean `{near}`? (the keys here: {section_keys})"
                ),
                None => anyhow::anyhow!("unknown config key `{full}` ({inner})"),
            }
        } else if path == "." || path.is_empty() {
            anyhow::anyhow!("config: {inner}")
        } else {
            anyhow::anyhow!("config key `{path}`: {inner}")
        }
    })
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
        let c = RunConfig::resolve(Some("cifar10_tiny"), None, None, &sets, None).unwrap();
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
        let c = RunConfig::resolve(
            Some("splitting_small_2block"),
            None,
            Some(file),
            &sets,
            Some(3),
        )
        .unwrap();
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
            None,
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
            None,
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
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("config key `algorithm.t1`"), "{e}");
        let e = RunConfig::resolve(
            Some("splitting_small_2block"),
            None,
            None,
            &["model.input=[1,32,32]".into()],
            None,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("channels[0]"), "{e:#}");
    }

    #[test]
    fn flags_beat_sets_beat_the_file_beats_the_preset() {
        let file = "seed = 5\n[optim]\nlr = 0.01\n[train]\nepochs = 7\n[model]\nclasses = 15\n";
        let sets = vec!["train.epochs=3".to_string()];
        let c =
            RunConfig::resolve(Some("mnist_mlp"), Some(20), Some(file), &sets, Some(2)).unwrap();
        assert_eq!((c.seed, c.optim.lr, c.train.epochs), (2, 0.01, 3));
        assert_eq!(c.model.classes, 20, "--classes beats the file");
        let sets = vec!["seed=4".to_string()];
        let c = RunConfig::resolve(Some("mnist_mlp"), None, Some(file), &sets, None).unwrap();
        assert_eq!((c.seed, c.train.epochs, c.model.classes), (4, 7, 15));
        let c = RunConfig::resolve(Some("mnist_mlp"), None, Some(file), &[], None).unwrap();
        assert_eq!(c.seed, 5);
        // a complete file without a seed: the default 0
        let full = RunConfig::resolve(Some("mnist_mlp"), None, None, &[], Some(9)).unwrap();
        let text: String = full
            .to_toml()
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("seed"))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = RunConfig::resolve(None, None, Some(&text), &[], None).unwrap();
        assert_eq!(c.seed, 0);
        assert_eq!(
            RunConfig::resolve(None, None, Some(&text), &[], Some(3))
                .unwrap()
                .seed,
            3
        );
    }

    #[test]
    fn sizes_that_leave_nothing_to_do_are_refused_naming_the_key() {
        for (set, key) in [
            ("train.epochs=0", "train.epochs"),
            ("data.train_limit=0", "data.train_limit"),
            ("data.test_limit=0", "data.test_limit"),
            ("data.eval_batch_size=0", "data.eval_batch_size"),
            ("schedule.t_max=0", "schedule.t_max"),
            ("train.checkpoint_minutes=-1", "train.checkpoint_minutes"),
            ("train.max_loss_ratio=0.5", "train.max_loss_ratio"),
        ] {
            let e = RunConfig::resolve(Some("mnist_mlp"), None, None, &[set.into()], None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{set}: {e}");
        }
        let sets = vec![
            "data.train_limit=100".to_string(),
            "data.val_size=100".into(),
        ];
        let e = RunConfig::resolve(Some("mnist_mlp"), None, None, &sets, None).unwrap_err();
        assert!(e.to_string().contains("data.val_size"), "{e}");
    }

    #[test]
    fn the_cosine_period_follows_the_epochs_unless_set() {
        let sets = vec!["train.epochs=3".to_string()];
        let c = RunConfig::resolve(Some("cifar10_tiny"), None, None, &sets, None).unwrap();
        assert_eq!((c.schedule.t_max, c.t_max()), (None, 3));
        assert!((c.lr(3) - c.schedule.lr_min).abs() < 1e-15);
        assert!(!c.to_toml().unwrap().contains("t_max"));
        let sets = vec!["train.epochs=3".to_string(), "schedule.t_max=6".into()];
        let c = RunConfig::resolve(Some("cifar10_tiny"), None, None, &sets, None).unwrap();
        assert_eq!(c.t_max(), 6);
        // presets checkpoint by time
        assert!(c.train.checkpoint_minutes > 0.0 && c.train.checkpoint_minutes <= 10.0);
    }
}
