//! Model weights ↔ named tensors, with the reference implementation's `state_dict` keys
//! (SPEC §5): `blocks.{k}.synapses.{i}.weight|bias` (synapse 0, the feedforward conv, is
//! also aliased as `blocks.{k}.feedforward.0.*`), BN at `blocks.{k}.feedforward.{2|1}.*`
//! with `running_mean`, `running_var`, `num_batches_tracked`, and `readout.1.weight|bias`.
//! Deep resistive networks can also be read and written under energy-based-learning's names
//! ([`super::ebl`]); [`load_weights`] tells the two apart. Conductances must be `≥ 0` in
//! every file.

use super::ebl::{check_conductances, ebl_tensors, first_ebl_key, load_ebl_tensors};
use super::tensors::{Stored, TensorFile};
use crate::model::{BufferId, Grads, Model, ParamId};
use anyhow::{bail, Result};
use std::collections::BTreeSet;
use std::path::Path;

/// Metadata key/value marking ffebm's own checkpoints (whose `optimizer.*` and `carry.*`
/// tensors are not weights).
pub const FORMAT_KEY: &str = "format";
pub const CHECKPOINT_FORMAT: &str = "ffebm-checkpoint";
pub const OPTIMIZER_PREFIX: &str = "optimizer.";
/// A warm-started run's carried free states in a checkpoint.
pub const CARRY_PREFIX: &str = "carry.";

/// Which names a file used for each feedforward conv (synapse 0 and/or its alias).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyStyle {
    pub synapse0: bool,
    pub feedforward0: bool,
}

impl Default for KeyStyle {
    fn default() -> Self {
        KeyStyle {
            synapse0: true,
            feedforward0: false,
        }
    }
}

/// The names a weights file used: the reference's (with the aliases of [`KeyStyle`]) or
/// energy-based-learning's (`DenseWeight_{j}`, `Bias_{j+1}`; see [`super::ebl`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Naming {
    Reference(KeyStyle),
    Ebl,
}

impl Default for Naming {
    fn default() -> Self {
        Naming::Reference(KeyStyle::default())
    }
}

impl Naming {
    /// One gradient per parameter under these names (ebl: ebl's shapes too).
    pub fn grad_tensors(&self, model: &Model, grads: &Grads) -> Result<Vec<(String, Stored)>> {
        match self {
            Naming::Reference(style) => Ok(grad_tensors(model, grads, style)),
            Naming::Ebl => ebl_tensors(model, |id| grads.get(id)),
        }
    }

    /// Every parameter and buffer of `model` under these names.
    pub fn model_tensors(&self, model: &Model) -> Result<Vec<(String, Stored)>> {
        match self {
            Naming::Reference(style) => Ok(model_tensors(model, style)),
            Naming::Ebl => ebl_tensors(model, |id| model.param(id)),
        }
    }
}

/// Loads `model`'s parameters (and buffers) from `file` under whichever names it uses: ebl's
/// when any key is an ebl parameter name, the reference's (or ffebm's) otherwise.
pub fn load_weights(model: &mut Model, file: &TensorFile, path: &Path) -> Result<Naming> {
    if first_ebl_key(file).is_some() {
        load_ebl_tensors(model, file, path)?;
        Ok(Naming::Ebl)
    } else {
        load_model_tensors(model, file, path).map(Naming::Reference)
    }
}

fn alias(name: &str) -> Option<String> {
    // blocks.{k}.synapses.0.{weight|bias} -> blocks.{k}.feedforward.0.{...}
    let rest = name.strip_prefix("blocks.")?;
    let (k, tail) = rest.split_once('.')?;
    let leaf = tail.strip_prefix("synapses.0.")?;
    Some(format!("blocks.{k}.feedforward.0.{leaf}"))
}

/// The names (and alias names) of every parameter and buffer of `model`.
fn expected_keys(model: &Model) -> Vec<String> {
    let mut keys: Vec<String> = model
        .param_ids()
        .into_iter()
        .map(|id| model.param_name(id))
        .collect();
    keys.extend(
        model
            .buffer_ids()
            .into_iter()
            .map(|id| model.buffer_name(id)),
    );
    keys
}

/// Loads every parameter and buffer of `model` from `file` (reference or ffebm keys).
/// Missing keys, unknown keys, shape mismatches and negative conductances are errors naming
/// the key; a file with energy-based-learning's names is refused ([`load_weights`] reads it).
pub fn load_model_tensors(model: &mut Model, file: &TensorFile, path: &Path) -> Result<KeyStyle> {
    if let Some(key) = first_ebl_key(file) {
        bail!(
            "{}: `{key}` is an energy-based-learning parameter name; read this file with `load_weights` (as `--weights` does)",
            path.display()
        );
    }
    let is_checkpoint =
        file.metadata.get(FORMAT_KEY).map(String::as_str) == Some(CHECKPOINT_FORMAT);
    let conductances = model.non_negative_params();
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut style = KeyStyle {
        synapse0: false,
        feedforward0: false,
    };
    let describe = |model: &Model| {
        format!(
            "model with {} blocks, {} classes",
            model.blocks.len(),
            model.config.classes
        )
    };
    for id in model.param_ids() {
        let name = model.param_name(id);
        let al = alias(&name);
        let primary = file.tensors.get(&name);
        let secondary = al.as_ref().and_then(|a| file.tensors.get(a));
        let (key, t) = match (primary, secondary) {
            (Some(a), Some(b)) => {
                if a != b {
                    bail!(
                        "{}: `{name}` and its alias `{}` differ",
                        path.display(),
                        al.as_deref().unwrap_or("")
                    );
                }
                (name.clone(), a)
            }
            (Some(a), None) => (name.clone(), a),
            (None, Some(b)) => (al.clone().expect("alias"), b),
            (None, None) => bail!(
                "{}: missing key `{name}` required by the {}",
                path.display(),
                describe(model)
            ),
        };
        if primary.is_some() {
            used.insert(name.clone());
            if matches!(id, ParamId::Synapse { index: 0, .. }) {
                style.synapse0 = true;
            }
        }
        if secondary.is_some() {
            used.insert(al.clone().expect("alias"));
            style.feedforward0 = true;
        }
        let Stored::F32(t) = t else {
            bail!(
                "{}: `{key}` is an integer tensor, expected floating point",
                path.display()
            )
        };
        let dst = model.param(id);
        if t.shape() != dst.shape() {
            bail!(
                "{}: `{key}` has shape {:?}, but the model expects {:?}",
                path.display(),
                t.shape(),
                dst.shape()
            );
        }
        if conductances.contains(&id) {
            check_conductances(t, &key, path)?;
        }
        model.param_mut(id).data_mut().copy_from_slice(t.data());
    }
    for id in model.buffer_ids() {
        let name = model.buffer_name(id);
        let Some(t) = file.tensors.get(&name) else {
            bail!(
                "{}: missing key `{name}` required by the {}",
                path.display(),
                describe(model)
            )
        };
        used.insert(name.clone());
        let bn = match id {
            BufferId::RunningMean(k) | BufferId::RunningVar(k) | BufferId::NumBatchesTracked(k) => {
                model.blocks[k].bn.as_mut().expect("buffer of a BN block")
            }
        };
        match (id, t) {
            (BufferId::NumBatchesTracked(_), Stored::I64 { data, .. }) if data.len() == 1 => {
                bn.num_batches_tracked = data[0]
            }
            (BufferId::NumBatchesTracked(_), _) => {
                bail!("{}: `{name}` must be a single integer", path.display())
            }
            (_, Stored::F32(t)) => {
                let dst = if matches!(id, BufferId::RunningMean(_)) {
                    &mut bn.running_mean
                } else {
                    &mut bn.running_var
                };
                if t.shape() != dst.shape() {
                    bail!(
                        "{}: `{name}` has shape {:?}, but the model expects {:?}",
                        path.display(),
                        t.shape(),
                        dst.shape()
                    );
                }
                dst.data_mut().copy_from_slice(t.data());
            }
            _ => bail!(
                "{}: `{name}` is an integer tensor, expected floating point",
                path.display()
            ),
        }
    }
    for key in &file.order {
        let loop_tensor = key.starts_with(OPTIMIZER_PREFIX)
            || key.starts_with(CARRY_PREFIX)
            || key.starts_with(crate::analog::DEVICE_PREFIX);
        if used.contains(key) || (is_checkpoint && loop_tensor) {
            continue;
        }
        let valid = expected_keys(model);
        let near = valid
            .iter()
            .min_by_key(|v| strsim::levenshtein(v, key))
            .cloned()
            .unwrap_or_default();
        bail!(
            "{}: unexpected key `{key}`: the {} has no such tensor (nearest: `{near}`)",
            path.display(),
            describe(model)
        );
    }
    if !style.synapse0 && !style.feedforward0 {
        style.synapse0 = true;
    }
    Ok(style)
}

/// Names for a parameter, following `style` for synapse 0 (both names when both were used).
fn names_for(model: &Model, id: ParamId, style: &KeyStyle) -> Vec<String> {
    let name = model.param_name(id);
    match (id, alias(&name)) {
        (ParamId::Synapse { index: 0, .. }, Some(al)) => {
            let mut v = Vec::new();
            if style.synapse0 {
                v.push(name);
            }
            if style.feedforward0 {
                v.push(al);
            }
            v
        }
        _ => vec![name],
    }
}

/// All parameters and buffers of `model` as named tensors.
pub fn model_tensors(model: &Model, style: &KeyStyle) -> Vec<(String, Stored)> {
    let mut out = Vec::new();
    for id in model.param_ids() {
        for n in names_for(model, id, style) {
            out.push((n, Stored::F32(model.param(id).clone())));
        }
    }
    for id in model.buffer_ids() {
        let name = model.buffer_name(id);
        let bn = match id {
            BufferId::RunningMean(k) | BufferId::RunningVar(k) | BufferId::NumBatchesTracked(k) => {
                model.blocks[k].bn.as_ref().expect("BN")
            }
        };
        let s = match id {
            BufferId::RunningMean(_) => Stored::F32(bn.running_mean.clone()),
            BufferId::RunningVar(_) => Stored::F32(bn.running_var.clone()),
            BufferId::NumBatchesTracked(_) => Stored::I64 {
                shape: vec![],
                data: vec![bn.num_batches_tracked],
            },
        };
        out.push((name, s));
    }
    out
}

/// One gradient per parameter under the names of `style`.
pub fn grad_tensors(model: &Model, grads: &Grads, style: &KeyStyle) -> Vec<(String, Stored)> {
    let mut out = Vec::new();
    for (id, g) in &grads.entries {
        for n in names_for(model, *id, style) {
            out.push((n, Stored::F32(g.clone())));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::tensors::{read_tensor_file, write_tensor_file};
    use crate::model::presets::preset;
    use std::collections::HashMap;

    #[test]
    fn round_trip_aliases_and_errors() {
        let mut p = preset("splitting_small_3block", None).unwrap().model;
        p.input = [3, 16, 16];
        p.blocks[2].fc = vec![16];
        p.blocks[0].channels = vec![3, 8, 8];
        p.blocks[1].channels = vec![8, 8, 8];
        p.blocks[2].channels = vec![8, 8];
        let model = Model::new(p.clone(), 3).unwrap();
        let dir = std::env::temp_dir().join(format!("ffebm-w-{}", std::process::id()));
        let path = dir.join("w.safetensors");
        let both = KeyStyle {
            synapse0: true,
            feedforward0: true,
        };
        write_tensor_file(&path, &model_tensors(&model, &both), HashMap::new()).unwrap();
        let file = read_tensor_file(&path).unwrap();
        assert!(
            file.tensors.contains_key("blocks.1.feedforward.0.weight")
                && file.tensors.contains_key("blocks.1.feedforward.0.bias")
        );
        let mut other = Model::new(p.clone(), 99).unwrap();
        assert_eq!(load_model_tensors(&mut other, &file, &path).unwrap(), both);
        assert_eq!(other, model);
        // alias only
        let only_ff = KeyStyle {
            synapse0: false,
            feedforward0: true,
        };
        write_tensor_file(&path, &model_tensors(&model, &only_ff), HashMap::new()).unwrap();
        let mut other = Model::new(p.clone(), 98).unwrap();
        assert_eq!(
            load_model_tensors(&mut other, &read_tensor_file(&path).unwrap(), &path).unwrap(),
            only_ff
        );
        assert_eq!(other, model);
        // missing, extra, wrong shape
        let mut t = model_tensors(&model, &KeyStyle::default());
        let removed = t.remove(2).0;
        write_tensor_file(&path, &t, HashMap::new()).unwrap();
        let e = load_model_tensors(&mut other, &read_tensor_file(&path).unwrap(), &path)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("missing key `{removed}`")), "{e}");
        let mut t = model_tensors(&model, &KeyStyle::default());
        t.push(("blocks.0.synapses.9.weight".into(), Stored::scalar(1.0)));
        write_tensor_file(&path, &t, HashMap::new()).unwrap();
        let e = load_model_tensors(&mut other, &read_tensor_file(&path).unwrap(), &path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unexpected key `blocks.0.synapses.9.weight`"),
            "{e}"
        );
        let mut t = model_tensors(&model, &KeyStyle::default());
        t[0].1 = Stored::F32(crate::core::Tensor::zeros(&[8, 3, 5, 5]));
        write_tensor_file(&path, &t, HashMap::new()).unwrap();
        let e = load_model_tensors(&mut other, &read_tensor_file(&path).unwrap(), &path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`blocks.0.synapses.0.weight` has shape [8, 3, 5, 5], but the model expects [8, 3, 3, 3]"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
