//! energy-based-learning's (ebl's) parameter names and shapes for a deep resistive network
//! (`DeepResistiveEnergy`, github.com/rain-neuromorphics/energy-based-learning).
//!
//! ebl's layers are the input layer (the voltage sources `gain·cat(x, −x)` along the
//! channels, shape `(2C, H, W)`) and the DRN layers `0 … n−1`. Its parameters:
//!
//! | ebl | shape | ffebm |
//! |---|---|---|
//! | `DenseWeight_{j}` | `(pre_shape…, post_shape…)`, e.g. `(2, 28, 28, 100)` | synapse `j+1` weight `[F_out, F_in]` of block 0 |
//! | `Bias_{j+1}` | `(F_j,)` | synapse `j+1` bias (the bias of DRN layer `j`) |
//!
//! ebl's `DenseResistive` contracts the pre-layer's dimensions with the weight's leading ones
//! (`tensordot(v_pre, W, dims = len(pre_shape))`), so `DenseWeight_j` reshaped to `(F_in,
//! F_out)` is the transpose of ffebm's `[F_out, F_in]`. The input voltages flatten C-major the
//! same way in both (`cat(x, −x)` along the channels, then `(c, h, w)`; ffebm:
//! `[flat(x), −flat(x)]`). `Bias_0`, the input layer's, is no parameter of ebl's network.

use super::tensors::{Stored, TensorFile};
use crate::core::tensor::transpose2;
use crate::core::Tensor;
use crate::model::{BlockKind, LayerShape, Model, ParamId};
use anyhow::{bail, Result};
use std::path::Path;

/// Whether `key` is an ebl parameter name (`DenseWeight_<n>` or `Bias_<n>`).
pub fn is_ebl_key(key: &str) -> bool {
    ["DenseWeight_", "Bias_"].iter().any(|p| {
        key.strip_prefix(p)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The first ebl parameter name among the file's keys, if any.
pub fn first_ebl_key(file: &TensorFile) -> Option<&str> {
    file.order
        .iter()
        .map(String::as_str)
        .find(|k| is_ebl_key(k))
}

/// One parameter under ebl's name and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EblParam {
    pub name: String,
    pub id: ParamId,
    /// ebl's shape; for a weight, `(pre_shape…, post_shape…)`.
    pub shape: Vec<usize>,
    /// `(F_in, F_out)` for a weight (ffebm stores the transpose), `None` for a bias.
    pub matrix: Option<[usize; 2]>,
}

/// Why ebl's `DeepResistiveEnergy` cannot describe `model`, if it cannot.
fn not_describable(model: &Model) -> Option<String> {
    let n = model.blocks.len();
    if n != 1 {
        return Some(format!("the model has {n} blocks, but ebl's DeepResistiveEnergy is one resistive network fed directly by the image"));
    }
    let l = &model.blocks[0].layout;
    if l.kind != BlockKind::Resistive {
        return Some("block 0 is a hopfield block; ebl names are read for deep resistive networks (`kind = \"resistive\"`) only".into());
    }
    if l.ff_conv {
        return Some("block 0 has a feedforward conv (`channels = [C_in, C_0]`), which ebl's DeepResistiveEnergy does not have (its input layer feeds the conductances directly)".into());
    }
    if !l.duplicate {
        return Some("block 0 feeds its input without duplication (`duplicate = false`), but ebl's ResistiveInputLayer always applies gain·[x, −x]".into());
    }
    if model.readout.is_some() {
        return Some("the model has a linear readout (`cost = \"cross-entropy\"`), which ebl's DRN does not have: it is trained with SquaredError on its output layer (`cost = \"squared-error\"`)".into());
    }
    None
}

/// ebl's names and shapes of every parameter of `model`, in ebl's `params()` order (biases,
/// then weights), or why ebl cannot describe the model.
pub fn ebl_params(model: &Model) -> std::result::Result<Vec<EblParam>, String> {
    if let Some(why) = not_describable(model) {
        return Err(why);
    }
    let l = &model.blocks[0].layout;
    let LayerShape::Map { h, w, c } = l.input else {
        return Err("the block input is not an image".into());
    };
    let (mut biases, mut weights) = (Vec::new(), Vec::new());
    let mut pre = vec![2 * c, h, w];
    for (j, layer) in l.layers.iter().enumerate() {
        let f = layer.numel();
        let syn = |bias| ParamId::Synapse {
            block: 0,
            index: j + 1,
            bias,
        };
        biases.push(EblParam {
            name: format!("Bias_{}", j + 1),
            id: syn(true),
            shape: vec![f],
            matrix: None,
        });
        let fin: usize = pre.iter().product();
        let mut shape = pre.clone();
        shape.push(f);
        weights.push(EblParam {
            name: format!("DenseWeight_{j}"),
            id: syn(false),
            shape,
            matrix: Some([fin, f]),
        });
        pre = vec![f];
    }
    biases.extend(weights);
    Ok(biases)
}

fn shape_text(s: &[usize]) -> String {
    let parts: Vec<String> = s.iter().map(usize::to_string).collect();
    if s.len() == 1 {
        format!("({},)", parts[0])
    } else {
        format!("({})", parts.join(", "))
    }
}

/// The row-major multi-index of flat position `i` in `shape`.
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (d, &n) in shape.iter().enumerate().rev() {
        idx[d] = i % n.max(1);
        i /= n.max(1);
    }
    idx
}

/// An error if `t` (stored under `key`) holds a conductance below 0 (or NaN), naming the key,
/// the index in the file's layout and the value.
pub fn check_conductances(t: &Tensor, key: &str, path: &Path) -> Result<()> {
    if let Some(i) = t.data().iter().position(|v| v.is_nan() || *v < 0.0) {
        bail!(
            "{}: `{key}`{:?} = {}: conductances must be ≥ 0 (a resistor cannot have a negative conductance; clamp the weights, as training does after every step)",
            path.display(),
            unravel(i, t.shape()),
            t.data()[i]
        );
    }
    Ok(())
}

/// Loads every parameter of `model` from a file with ebl's names. Errors name the key: a model
/// ebl cannot describe, `Bias_0`, a missing, unknown or non-ebl key, a wrong shape, an
/// integer tensor, a negative conductance. Nothing is written into `model` unless every
/// tensor is valid.
pub fn load_ebl_tensors(model: &mut Model, file: &TensorFile, path: &Path) -> Result<()> {
    let first = first_ebl_key(file).unwrap_or("DenseWeight_0");
    let params = ebl_params(model).map_err(|why| {
        anyhow::anyhow!(
            "{}: `{first}` is an energy-based-learning parameter name, but ebl cannot describe this model: {why}. Use ffebm's names (`blocks.{{k}}.synapses.{{i}}.weight|bias`) for it",
            path.display()
        )
    })?;
    let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
    for key in &file.order {
        if names.contains(&key.as_str()) {
            continue;
        }
        if key == "Bias_0" {
            bail!("{}: `Bias_0` is the bias of ebl's input layer, which is no parameter of its network (DeepResistiveEnergy.params() starts at `Bias_1`, and no interaction uses it); remove it", path.display());
        }
        if is_ebl_key(key) {
            bail!(
                "{}: unexpected key `{key}`: the model's network has the parameters {} (ebl numbers parameters with class-wide counters, so a network built second in a process gets higher numbers: save from a fresh process)",
                path.display(),
                names.join(", ")
            );
        }
        bail!(
            "{}: unexpected key `{key}`: the file uses energy-based-learning's names (`{first}`), so every key must be one of {}",
            path.display(),
            names.join(", ")
        );
    }
    let mut loaded = Vec::with_capacity(params.len());
    for p in &params {
        let Some(stored) = file.tensors.get(&p.name) else {
            bail!(
                "{}: missing key `{}` (shape {}) required by ebl's network for this model",
                path.display(),
                p.name,
                shape_text(&p.shape)
            )
        };
        let Stored::F32(t) = stored else {
            bail!(
                "{}: `{}` is an integer tensor, expected floating point",
                path.display(),
                p.name
            )
        };
        if t.shape() != p.shape.as_slice() {
            bail!(
                "{}: `{}` has shape {}, but ebl's network for this model has {}{}",
                path.display(),
                p.name,
                shape_text(t.shape()),
                shape_text(&p.shape),
                if p.matrix.is_some() {
                    " (the pre-layer's shape, then the post-layer's)"
                } else {
                    ""
                }
            );
        }
        let value = match p.matrix {
            Some(m) => {
                check_conductances(t, &p.name, path)?;
                transpose2(&t.clone().reshaped(&m)?)?
            }
            None => t.clone(),
        };
        loaded.push((p.id, value));
    }
    for (id, value) in loaded {
        model.param_mut(id).assign(&value);
    }
    Ok(())
}

/// `value(id)` of every parameter under ebl's names and shapes (weights transposed back).
pub fn ebl_tensors<'a>(
    model: &Model,
    value: impl Fn(ParamId) -> &'a Tensor,
) -> Result<Vec<(String, Stored)>> {
    let params = ebl_params(model)
        .map_err(|why| anyhow::anyhow!("ebl's names cannot describe this model: {why}"))?;
    params
        .into_iter()
        .map(|p| {
            let t = value(p.id);
            let t = match p.matrix {
                Some(_) => transpose2(t)?.reshaped(&p.shape)?,
                None => t.clone(),
            };
            Ok((p.name, Stored::F32(t)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::presets::preset;

    #[test]
    fn names_shapes_and_keys() {
        assert!(is_ebl_key("DenseWeight_0") && is_ebl_key("Bias_12"));
        assert!(!is_ebl_key("Bias_") && !is_ebl_key("Bias_1.weight") && !is_ebl_key("bias_1"));
        let model = Model::new(preset("drn_xs", None).unwrap().model, 0).unwrap();
        let p = ebl_params(&model).unwrap();
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["Bias_1", "Bias_2", "DenseWeight_0", "DenseWeight_1"]
        );
        assert_eq!(p[2].shape, [2, 28, 28, 100]);
        assert_eq!(p[2].matrix, Some([1568, 100]));
        assert_eq!(p[3].shape, [100, 10]);
        assert_eq!(shape_text(&[10]), "(10,)");
        assert_eq!(unravel(5, &[2, 3]), [1, 2]);
        // a round trip through ebl's layout gives the model's tensors back
        let t = ebl_tensors(&model, |id| model.param(id)).unwrap();
        let mut file = TensorFile::default();
        for (k, v) in t {
            file.order.push(k.clone());
            file.tensors.insert(k, v);
        }
        let mut other = Model::new(preset("drn_xs", None).unwrap().model, 1).unwrap();
        assert_ne!(other, model);
        load_ebl_tensors(&mut other, &file, Path::new("w")).unwrap();
        assert_eq!(other, model);
        let hopfield = Model::new(preset("mnist_mlp", None).unwrap().model, 0).unwrap();
        assert!(ebl_params(&hopfield).is_err());
    }
}
