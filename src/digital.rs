//! Quantized feedforward blocks: the digital side of an ff-EBM computed in low precision
//! (quantization-aware training with fake quantization). The `[digital]` table of a run
//! configuration gives one bit width per tensor kind:
//!
//! ```toml
//! [digital]
//! weight_bits = 8       # conv weights and biases of every feedforward transform F_k
//! activation_bits = 8   # F_k's input x_k and its output u_k (the drive of block k)
//! gradient_bits = 8     # the error through F_k (ḡ_u in, x̄ out) and F_k's weight gradients
//! ```
//!
//! Every tensor is quantized per tensor and per call with the symmetric uniform quantizer of
//! [`crate::core::analog::quantize_tensor_abs_max`]: scale `m = max_i |x_i|`, step
//! `Δ = 2m/(2^b − 2)`, `q(x) = Δ·round(x/Δ)` (`2^b − 1` levels, zero included).
//!
//! * **Weights**: the forward pass, the free and nudged phases, ID's unrolled sweeps and the
//!   backward pass (EP's error current, ID's adjoint) all use `q(W)` — the circuit the digital
//!   hardware computes with ([`Digital::quantized_weights`]). The optimiser keeps float
//!   master weights `W` and applies the gradient measured at `q(W)`: the straight-through
//!   estimator `∂q(W)/∂W := 1`.
//! * **Activations**: `u_k = q(F_k(q(x_k)))`; the VJP passes the cotangent through both
//!   quantizers unchanged (straight-through), and the weight gradient uses the quantized
//!   input `q(x_k)` the conv saw.
//! * **Gradients**: the cotangent `ḡ_u` entering `F_k`'s backward pass and the `x̄` it returns
//!   (the error current sent to block k − 1) are quantized, and so is each gradient of `F_k`'s
//!   parameters (conv weight and bias, BatchNorm γ and β) before the optimiser step.
//!
//! BatchNorm's affine parameters and statistics, the readout and the energy-based blocks
//! stay in float32 (the analog blocks have their own converters, [`crate::analog`]). Blocks
//! without a feedforward conv (the identity transform) have nothing to quantize. Off by
//! default; with every width left out a run is the float code path bit for bit.

use crate::core::analog::quantize_tensor_abs_max;
use crate::core::Tensor;
use crate::model::{Grads, Model, ParamId};
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

/// The widest quantizer accepted (a width beyond float32's 24-bit mantissa changes nothing
/// but is harmless).
pub const MAX_BITS: u32 = 32;

/// The `[digital]` table: bit widths per tensor kind (left out: float32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigitalConfig {
    /// Conv weights and biases of every feedforward transform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_bits: Option<u32>,
    /// A feedforward transform's input and output (the drive of its energy-based block).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_bits: Option<u32>,
    /// The error through a feedforward transform and its parameters' gradients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_bits: Option<u32>,
}

/// The keys of `[digital]` (for suggestions of mistyped keys).
pub const KEYS: [&str; 3] = ["weight_bits", "activation_bits", "gradient_bits"];

impl DigitalConfig {
    /// Whether no width is set (the table is then left out of a saved configuration).
    pub fn is_off(&self) -> bool {
        *self == DigitalConfig::default()
    }

    /// The table from `key=value` pairs (`ffebm grad --digital weight_bits=8`), checked: an
    /// unknown key, a value that is no width, or a width outside `2..=32` is an error naming
    /// the key.
    pub fn from_sets(sets: &[String]) -> Result<Self> {
        let mut cfg = DigitalConfig::default();
        for s in sets {
            let (key, raw) = s
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--digital `{s}`: expected key=value"))?;
            let (key, raw) = (key.trim(), raw.trim());
            let key = key.strip_prefix("digital.").unwrap_or(key);
            let bits: u32 = raw.parse().map_err(|_| {
                anyhow::anyhow!(
                    "digital.{key} = {raw}: expected a number of bits (2 to {MAX_BITS})"
                )
            })?;
            let slot = match key {
                "weight_bits" => &mut cfg.weight_bits,
                "activation_bits" => &mut cfg.activation_bits,
                "gradient_bits" => &mut cfg.gradient_bits,
                _ => anyhow::bail!(
                    "--digital {key}: unknown key (the keys are {})",
                    KEYS.join(", ")
                ),
            };
            *slot = Some(bits);
        }
        cfg.resolve()?;
        Ok(cfg)
    }

    /// The quantizers, checked: `None` when every tensor kind stays float32; an error naming
    /// the key for a width outside `2..=32`.
    pub fn resolve(&self) -> Result<Option<Digital>> {
        for (key, bits) in [
            ("weight_bits", self.weight_bits),
            ("activation_bits", self.activation_bits),
            ("gradient_bits", self.gradient_bits),
        ] {
            if let Some(b) = bits {
                ensure!(
                    (2..=MAX_BITS).contains(&b),
                    "digital.{key} = {b}: a quantizer needs 2 to {MAX_BITS} bits (leave the key out for float32)"
                );
            }
        }
        let d = Digital {
            weight_bits: self.weight_bits,
            activation_bits: self.activation_bits,
            gradient_bits: self.gradient_bits,
        };
        Ok((d != Digital::default()).then_some(d))
    }
}

/// The resolved quantizers of the feedforward blocks (`None`: that tensor kind in float32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digital {
    pub weight_bits: Option<u32>,
    pub activation_bits: Option<u32>,
    pub gradient_bits: Option<u32>,
}

/// `q(x)` with `bits`, or `x` unchanged without.
fn fake_quantize(x: &mut Tensor, bits: Option<u32>) {
    if let Some(b) = bits {
        quantize_tensor_abs_max(x, b);
    }
}

/// The conv weight and bias of every feedforward transform of `model`.
fn feedforward_weights(model: &Model) -> Vec<ParamId> {
    model
        .param_ids()
        .into_iter()
        .filter(|id| matches!(id, ParamId::Synapse { index: 0, .. }))
        .collect()
}

/// Every parameter of a feedforward transform (conv weight and bias, BatchNorm γ and β).
fn is_feedforward_param(id: &ParamId) -> bool {
    matches!(id, ParamId::Synapse { index: 0, .. } | ParamId::Bn { .. })
}

impl Digital {
    /// The model the digital hardware computes with: `model` with every feedforward conv
    /// weight and bias replaced by `q(W)` (`weight_bits`); `None` when weights stay float32
    /// or there is no feedforward conv.
    pub fn quantized_weights(&self, model: &Model) -> Option<Model> {
        let bits = self.weight_bits?;
        let ids = feedforward_weights(model);
        if ids.is_empty() {
            return None;
        }
        let mut m = model.clone();
        for id in ids {
            quantize_tensor_abs_max(m.param_mut(id), bits);
        }
        Some(m)
    }

    /// [`Self::quantized_weights`] on top of an already modified copy (`changed`, e.g. the
    /// analog physical circuit) of `nominal`.
    pub fn on_top(d: Option<&Digital>, changed: Option<Model>, nominal: &Model) -> Option<Model> {
        match d.and_then(|d| d.quantized_weights(changed.as_ref().unwrap_or(nominal))) {
            Some(q) => Some(q),
            None => changed,
        }
    }

    /// An activation of a feedforward block, quantized in place.
    pub fn activation(&self, x: &mut Tensor) {
        fake_quantize(x, self.activation_bits);
    }

    /// An error signal through a feedforward block, quantized in place.
    pub fn error(&self, g: &mut Tensor) {
        fake_quantize(g, self.gradient_bits);
    }

    /// Quantizes the gradient of every feedforward parameter in `grads` (each tensor with its
    /// own scale), as the optimiser receives them.
    pub fn weight_gradients(&self, grads: &mut Grads) {
        if self.gradient_bits.is_none() {
            return;
        }
        for (id, g) in grads.entries.iter_mut() {
            if is_feedforward_param(id) {
                fake_quantize(g, self.gradient_bits);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Result<DigitalConfig> {
        Ok(toml::from_str(text)?)
    }

    #[test]
    fn widths_are_checked_and_name_the_key() {
        assert!(cfg("").unwrap().is_off());
        assert_eq!(cfg("").unwrap().resolve().unwrap(), None);
        let d = cfg("weight_bits = 8\ngradient_bits = 32")
            .unwrap()
            .resolve()
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.weight_bits, d.activation_bits, d.gradient_bits),
            (Some(8), None, Some(32))
        );
        for (text, key) in [
            ("weight_bits = 0", "digital.weight_bits = 0"),
            ("activation_bits = 1", "digital.activation_bits = 1"),
            ("gradient_bits = 33", "digital.gradient_bits = 33"),
        ] {
            let e = cfg(text).unwrap().resolve().unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("2 to 32 bits"), "{e}");
        }
        // negative widths and unknown keys fail to parse
        assert!(cfg("weight_bits = -4").is_err());
        let sets = |s: &[&str]| {
            DigitalConfig::from_sets(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            sets(&["weight_bits=4", "digital.gradient_bits = 6"]).unwrap(),
            DigitalConfig {
                weight_bits: Some(4),
                activation_bits: None,
                gradient_bits: Some(6)
            }
        );
        for (s, key) in [
            ("weight_bits=-1", "digital.weight_bits"),
            ("activation_bits=0", "digital.activation_bits"),
            ("gradient_bit=4", "gradient_bit"),
        ] {
            let e = sets(&[s]).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
        let e = cfg("weight_bit = 4").unwrap_err().to_string();
        assert!(e.contains("weight_bit"), "{e}");
    }
}
