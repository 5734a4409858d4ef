//! Files of named tensors, training runs (as `ffebm train`) and checkpoint evaluation (as
//! `ffebm eval`).

use super::net::toml_of_json;
use super::{stored_of, value_of, Named, Net, Value};
use anyhow::{ensure, Context, Result};
use ffebm::io::tensors::{read_tensor_file, write_tensor_file};
use ffebm::model::{Model, ModelConfig};
use ffebm::train::checkpoint::{checkpoint_config, load_checkpoint, save_checkpoint, LoopState};
use ffebm::train::data::load_run_data;
use ffebm::train::optim::Optimizer;
use ffebm::train::trainer::LAST;
use ffebm::train::{evaluate, RunConfig, TrainOptions};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Named tensors and metadata of a safetensors file.
pub fn read_tensors(path: &Path) -> Result<(Named, HashMap<String, String>)> {
    let f = read_tensor_file(path)?;
    let mut tensors = f.tensors;
    let items = f
        .order
        .iter()
        .filter_map(|n| tensors.remove(n).map(|s| (n.clone(), value_of(s))))
        .collect();
    Ok((items, f.metadata))
}

/// Writes named tensors (f32 and i64) and metadata atomically.
pub fn write_tensors(
    path: &Path,
    items: Vec<(String, Value)>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let stored = items
        .into_iter()
        .map(|(n, v)| stored_of(&n, v).map(|s| (n, s)))
        .collect::<Result<Vec<_>>>()?;
    write_tensor_file(path, &stored, metadata)
}

/// A training run as `ffebm train` starts it.
#[derive(Default)]
pub struct TrainRequest {
    pub preset: Option<String>,
    /// A TOML run description (file contents), merged over the preset.
    pub config_toml: Option<String>,
    /// `key=value` overrides, as `--set`.
    pub sets: Vec<String>,
    pub classes: Option<usize>,
    pub epochs: Option<usize>,
    pub data_dir: Option<PathBuf>,
    pub download: bool,
    pub out: PathBuf,
    pub resume: bool,
    pub seed: u64,
    pub quiet: bool,
    /// Start from this model's weights instead of the seed's initialisation (see
    /// [`start_run`]).
    pub init: Option<Net>,
}

/// What a training session leaves.
pub struct TrainOutcome {
    pub run_dir: PathBuf,
    /// The epoch records (`metrics.jsonl`), as a JSON array.
    pub epochs_json: String,
    pub completed: bool,
    pub model: Net,
}

/// The run configuration of a request (as `ffebm train` resolves its options).
fn run_config(r: &TrainRequest) -> Result<RunConfig> {
    let mut sets = r.sets.clone();
    if let Some(d) = &r.data_dir {
        sets.push(format!("data.dir={:?}", d.display().to_string()));
    }
    if r.download {
        sets.push("data.download=true".into());
    }
    if let Some(e) = r.epochs {
        sets.push(format!("train.epochs={e}"));
    }
    if r.resume {
        let path = r.out.join("config.toml");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (is {} a run directory?)",
                path.display(),
                r.out.display()
            )
        })?;
        ensure!(
            r.out.join(LAST).exists(),
            "{} has no checkpoint to resume from",
            r.out.display()
        );
        // a resumed run keeps its own seed (a different one would break exact resumption)
        return RunConfig::resolve(None, None, Some(&text), &sets, None)
            .with_context(|| format!("in {}", path.display()));
    }
    ensure!(
        r.preset.is_some() || r.config_toml.is_some(),
        "nothing to train: give preset=NAME or config=FILE.toml (or a dict)"
    );
    RunConfig::resolve(
        r.preset.as_deref(),
        r.classes,
        r.config_toml.as_deref(),
        &sets,
        Some(r.seed),
    )
}

/// The `[model]` keys whose values differ between two model descriptions.
fn differing_keys(a: &ModelConfig, b: &ModelConfig) -> Result<Vec<String>> {
    let (a, b) = (serde_json::to_value(a)?, serde_json::to_value(b)?);
    let empty = serde_json::Map::new();
    let (a, b) = (
        a.as_object().unwrap_or(&empty),
        b.as_object().unwrap_or(&empty),
    );
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    Ok(keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect())
}

/// Writes the run directory of a new run that starts from `init`'s weights: `config.toml`
/// (as `ffebm train` resolves the request) and `checkpoint_last` at step 0 (zero optimiser
/// moments, no carried states). Resuming it (`ffebm train --resume DIR`) trains exactly as
/// a fresh run whose initialisation gave these weights. `init` must be the run's `[model]`;
/// the data must load (a run that cannot start leaves nothing behind).
pub fn start_run(r: &TrainRequest, init: &Net) -> Result<RunConfig> {
    ensure!(
        !r.resume,
        "init= starts a new run from a model, resume=True continues a run: give one of them"
    );
    let cfg = run_config(r)?;
    let differ = differing_keys(&cfg.model, &init.model.config)?;
    ensure!(
        differ.is_empty(),
        "init: the model's description differs from the run's [model] in {} (build the model from the same preset or description, or give the run config={{\"model\": model.config, ...}})",
        differ
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let dir = &r.out;
    ensure!(
        !dir.join(LAST).exists(),
        "{} already holds a run; continue it with resume=True or choose another out_dir",
        dir.display()
    );
    load_run_data(&cfg.data, cfg.seed, true)?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create run directory {}", dir.display()))?;
    let text = cfg.to_toml()?;
    ffebm::io::atomic_write(&dir.join("config.toml"), text.as_bytes())?;
    let opt = Optimizer::new(cfg.optim.clone(), &init.model);
    let state = LoopState::default();
    save_checkpoint(&dir.join(LAST), &init.model, &opt, &state, &text, None)?;
    Ok(cfg)
}

/// A dict run description (JSON) as TOML text.
pub fn run_toml_of_json(json: &str) -> Result<String> {
    toml_of_json(json)
}

/// Trains (or resumes) a run; with `init`, a new run from that model's weights
/// ([`start_run`], then resumed). `interrupt` makes the trainer stop after its current step
/// with a checkpoint; `on_epoch` receives each epoch record as JSON after its checkpoints
/// (an error from it stops training with that error).
pub fn train(
    r: &TrainRequest,
    interrupt: Arc<AtomicBool>,
    mut on_epoch: impl FnMut(String) -> Result<()> + 'static,
) -> Result<TrainOutcome> {
    let (cfg, resume) = match &r.init {
        Some(net) => (start_run(r, net)?, true),
        None => (run_config(r)?, r.resume),
    };
    let defaults = cfg.algorithm.clone();
    let opts = TrainOptions {
        run_dir: r.out.clone(),
        numbered: false,
        resume,
        quiet: r.quiet,
        stop_after_steps: None,
        interrupt: Some(interrupt),
    };
    let summary = ffebm::hooks::observe_epochs(
        move |rec| on_epoch(serde_json::to_string(rec)?),
        || ffebm::train::train(cfg, opts),
    )?;
    Ok(TrainOutcome {
        epochs_json: serde_json::to_string(&summary.epochs)?,
        completed: summary.completed,
        model: Net::new(
            summary.model,
            Some(defaults),
            summary.run_dir.display().to_string(),
        ),
        run_dir: summary.run_dir,
    })
}

/// Evaluates a checkpoint on its run's evaluation sets (as `ffebm eval`): JSON object
/// `{set name: {loss, top1, top5, samples, sweeps}}`, plus `epoch` and `step`.
pub fn evaluate_checkpoint(
    checkpoint: &Path,
    sets: &[String],
    data_dir: Option<&Path>,
    seed: u64,
    quiet: bool,
) -> Result<String> {
    let text = checkpoint_config(checkpoint)?;
    let mut sets = sets.to_vec();
    if let Some(d) = data_dir {
        sets.push(format!("data.dir={:?}", d.display().to_string()));
    }
    let cfg = RunConfig::resolve(None, None, Some(&text), &sets, Some(seed))?;
    let mut model = Model::new(cfg.model.clone(), cfg.seed)?;
    let mut opt = ffebm::train::optim::Optimizer::new(cfg.optim.clone(), &model);
    let state = load_checkpoint(checkpoint, &mut model, &mut opt)?;
    let data = ffebm::train::data::load_run_data(
        &ffebm::train::config::DataConfig {
            val_size: 0,
            train_limit: Some(1),
            ..cfg.data.clone()
        },
        cfg.seed,
        quiet,
    )?;
    let mut out = BTreeMap::new();
    for (name, subset) in &data.tests {
        let m = evaluate(&model, subset, &cfg, None)?;
        out.insert(name.clone(), serde_json::to_value(m)?);
    }
    Ok(serde_json::json!({
        "checkpoint": checkpoint.display().to_string(),
        "epoch": state.epoch,
        "step": state.step,
        "sets": out,
    })
    .to_string())
}
