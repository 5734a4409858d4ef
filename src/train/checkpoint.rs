//! Checkpoints: one safetensors file with the model (reference key names), the optimiser
//! moments (`optimizer.m.<name>`, `optimizer.v.<name>`) and, in the metadata, the resolved
//! run configuration and the loop state. Written atomically. Data order and augmentation are
//! pure functions of (seed, epoch, position), so the loop state is all a resume needs.
//! The file's checksum (see [`crate::io::tensors`]) covers tensors and metadata: a damaged
//! checkpoint is an error naming it, never a silently different run.

use super::divergence::LossWatch;
use super::optim::Optimizer;
use crate::io::tensors::{read_tensor_file, write_tensor_file, Stored};
use crate::io::weights::{
    load_model_tensors, model_tensors, KeyStyle, CARRY_PREFIX, CHECKPOINT_FORMAT, FORMAT_KEY,
    OPTIMIZER_PREFIX,
};
use crate::model::Model;
use crate::relax::BlockState;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Running sums of the training metrics of the epoch in progress.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochAccum {
    pub loss_sum: f64,
    pub top1: u64,
    pub top5: u64,
    pub samples: u64,
    pub free_sweeps_sum: f64,
    pub batches: u64,
    pub seconds: f64,
    /// Sums of the resistor power readouts (see [`super::metrics::power_record`]) over the
    /// `power_batches` logged batches of the epoch.
    #[serde(default)]
    pub power_sums: std::collections::BTreeMap<String, f64>,
    #[serde(default)]
    pub power_batches: u64,
    /// Per block, the sum over `phase_batches` batches of the sweeps of each phase
    /// (checkpoints written before it existed lack it).
    #[serde(default)]
    pub phase_sweeps_sum: Vec<crate::grad::PhaseSweeps>,
    #[serde(default)]
    pub phase_batches: u64,
    /// Weight-programming pulses so far this epoch, per energy-based block (`block{k}`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub pulses: std::collections::BTreeMap<String, u64>,
    /// Pulses fired refreshing differential pairs so far this epoch, per block.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub refresh_pulses: std::collections::BTreeMap<String, u64>,
}

/// Where the loop is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Epoch in progress (0-based); `epochs` when the run is complete.
    pub epoch: usize,
    /// Next batch of that epoch.
    pub batch: usize,
    /// Optimiser steps so far.
    pub step: u64,
    /// Best selection metric (validation or first test set top-1) and its epoch.
    pub best_top1: Option<f64>,
    pub best_epoch: Option<usize>,
    pub accum: EpochAccum,
    /// Wall-clock seconds spent in earlier sessions.
    pub elapsed: f64,
    /// The divergence check's memory.
    #[serde(default)]
    pub loss_watch: LossWatch,
}

const STATE_KEY: &str = "loop_state";
const CONFIG_KEY: &str = "run_config";

/// Writes a checkpoint atomically. `carry`: the free states a warm-started run starts its
/// next batch from (`carry.{block}.{layer}`, channels-last).
pub fn save_checkpoint(
    path: &Path,
    model: &Model,
    opt: &Optimizer,
    state: &LoopState,
    config_toml: &str,
    carry: Option<&[BlockState]>,
) -> Result<()> {
    save_checkpoint_with(path, model, opt, state, config_toml, carry, Vec::new())
}

/// [`save_checkpoint`] with `extra` tensors (the analog device draws,
/// [`crate::analog::Circuit::tensors`]).
pub fn save_checkpoint_with(
    path: &Path,
    model: &Model,
    opt: &Optimizer,
    state: &LoopState,
    config_toml: &str,
    carry: Option<&[BlockState]>,
    extra: Vec<(String, Stored)>,
) -> Result<()> {
    let mut tensors = model_tensors(model, &KeyStyle::default());
    tensors.extend(extra);
    for (k, block) in carry.unwrap_or_default().iter().enumerate() {
        for (l, t) in block.layers.iter().enumerate() {
            tensors.push((format!("{CARRY_PREFIX}{k}.{l}"), Stored::F32(t.clone())));
        }
    }
    for (prefix, moments) in [("m", &opt.m), ("v", &opt.v)] {
        for (id, t) in moments {
            tensors.push((
                format!("{OPTIMIZER_PREFIX}{prefix}.{}", model.param_name(*id)),
                Stored::F32(t.clone()),
            ));
        }
    }
    tensors.push((
        format!("{OPTIMIZER_PREFIX}step"),
        Stored::I64 {
            shape: vec![],
            data: vec![opt.step as i64],
        },
    ));
    let meta = HashMap::from([
        (FORMAT_KEY.to_string(), CHECKPOINT_FORMAT.to_string()),
        (STATE_KEY.to_string(), serde_json::to_string(state)?),
        (CONFIG_KEY.to_string(), config_toml.to_string()),
    ]);
    write_tensor_file(path, &tensors, meta)
}

/// Replaces `circuit`'s device draws by those saved in the checkpoint at `path` (see
/// [`crate::analog::Circuit::load_devices`]); returns how many were loaded.
pub fn load_circuit_devices(
    path: &Path,
    model: &Model,
    circuit: &mut crate::analog::Circuit,
    require_all: bool,
) -> Result<usize> {
    if circuit.device_tensors() == 0 {
        return Ok(0);
    }
    let f = read_tensor_file(path)?;
    circuit.load_devices(&f, model, path, require_all)
}

/// Replaces the run configuration stored in the checkpoint at `path` (tensors and loop
/// state unchanged), atomically.
pub fn rewrite_checkpoint_config(path: &Path, config_toml: &str) -> Result<()> {
    let f = read_tensor_file(path)?;
    let tensors: Vec<(String, Stored)> = f
        .order
        .iter()
        .map(|k| (k.clone(), f.tensors[k].clone()))
        .collect();
    let mut meta = f.metadata;
    meta.insert(CONFIG_KEY.to_string(), config_toml.to_string());
    write_tensor_file(path, &tensors, meta)
}

/// The carried free states of a warm-started run (`None` when the checkpoint has none).
pub fn load_carried_states(path: &Path) -> Result<Option<Vec<BlockState>>> {
    let f = read_tensor_file(path)?;
    let mut blocks: Vec<BlockState> = Vec::new();
    for k in 0.. {
        let mut layers = Vec::new();
        while let Some(Stored::F32(t)) = f
            .tensors
            .get(&format!("{CARRY_PREFIX}{k}.{}", layers.len()))
        {
            layers.push(t.clone());
        }
        if layers.is_empty() {
            break;
        }
        blocks.push(BlockState { layers });
    }
    Ok((!blocks.is_empty()).then_some(blocks))
}

/// The run configuration stored in a checkpoint.
pub fn checkpoint_config(path: &Path) -> Result<String> {
    let f = read_tensor_file(path)?;
    f.metadata.get(CONFIG_KEY).cloned().with_context(|| {
        format!(
            "{} is not an ffebm checkpoint (no run configuration)",
            path.display()
        )
    })
}

/// The run configuration and loop state stored in a checkpoint (without restoring it).
pub fn checkpoint_meta(path: &Path) -> Result<(String, LoopState)> {
    let f = read_tensor_file(path)?;
    let cfg = f.metadata.get(CONFIG_KEY).cloned().with_context(|| {
        format!(
            "{} is not an ffebm checkpoint (no run configuration)",
            path.display()
        )
    })?;
    let state = f
        .metadata
        .get(STATE_KEY)
        .with_context(|| format!("{}: missing loop state", path.display()))?;
    let state = serde_json::from_str(state)
        .with_context(|| format!("{}: corrupt loop state", path.display()))?;
    Ok((cfg, state))
}

/// Restores model, optimiser and loop state into objects built from the same config.
pub fn load_checkpoint(path: &Path, model: &mut Model, opt: &mut Optimizer) -> Result<LoopState> {
    let f = read_tensor_file(path)?;
    anyhow::ensure!(
        f.metadata.get(FORMAT_KEY).map(String::as_str) == Some(CHECKPOINT_FORMAT),
        "{} is not an ffebm checkpoint (metadata `{FORMAT_KEY}` missing)",
        path.display()
    );
    load_model_tensors(model, &f, path)?;
    for (prefix, moments) in [("m", &mut opt.m), ("v", &mut opt.v)] {
        for (id, t) in moments.iter_mut() {
            let key = format!("{OPTIMIZER_PREFIX}{prefix}.{}", model.param_name(*id));
            let src = f.f32(&key, path)?;
            anyhow::ensure!(
                src.shape() == t.shape(),
                "{}: `{key}` has shape {:?}, expected {:?}",
                path.display(),
                src.shape(),
                t.shape()
            );
            t.data_mut().copy_from_slice(src.data());
        }
    }
    match f.tensors.get(&format!("{OPTIMIZER_PREFIX}step")) {
        Some(Stored::I64 { data, .. }) if data.len() == 1 => opt.step = data[0] as u64,
        _ => anyhow::bail!("{}: missing optimiser step", path.display()),
    }
    let state = f
        .metadata
        .get(STATE_KEY)
        .with_context(|| format!("{}: missing loop state", path.display()))?;
    serde_json::from_str(state).with_context(|| format!("{}: corrupt loop state", path.display()))
}
