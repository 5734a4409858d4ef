//! The `[analog]` table of a run configuration: which non-idealities the energy-based blocks
//! have, for every block or per block, resolved into one [`BlockAnalog`] per block.
//!
//! ```toml
//! [analog]
//! preset = "ideal-8bit"     # optional starting point (see `PRESETS`)
//! weight_std = 0.05         # settings for every energy-based block ...
//! [analog.blocks.1]         # ... and overrides for block 1 (0-based)
//! adc_bits = 6
//! ```
//!
//! Resolution order, each overriding the one before: the preset, the top-level keys, the
//! block's table. Every setting left out is ideal; with none set the run is the ideal model
//! bit for bit.

use super::presets::analog_preset;
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

macro_rules! analog_settings {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$em:meta])* pub $ef:ident: $et:ty,)* }) => {
        $(#[$m])*
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$em])* pub $ef: $et,)*
            /// Device-to-device weight variability σ_w: `w_eff = w·(1 + σ_w·ξ)`, `ξ ~ N(0, 1)`
            /// drawn once per weight.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub weight_std: Option<f32>,
            /// Device-to-device spread σ of a DHN unit's hard-sigmoid slope:
            /// `α_i = α·max(1 + σ·ξ_i, 0.01)`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub slope_std: Option<f32>,
            /// Device-to-device offset σ of a DHN unit's input: `θ_i = σ·ξ_i`,
            /// `s_i = clamp(α_i·(b_i + θ_i), 0, 1)`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub offset_std: Option<f32>,
            /// Device-to-device spread σ (volts) of a DRN diode's bound: `t_i = σ·ξ_i`
            /// (excitatory `v_i ≥ t_i`, inhibitory `v_i ≤ t_i`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub threshold_std: Option<f32>,
            /// Cycle-to-cycle noise σ_s added to every layer update of a relaxation:
            /// `s_l ← s_l + σ_s·ξ`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub update_noise: Option<f32>,
            /// Noise σ_m on each measurement of an equilibrium that EP reads.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub measure_noise: Option<f32>,
            /// Measurements averaged per read (the noise std becomes σ_m/√N).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub measure_repeats: Option<usize>,
            /// DAC on the block's drive `u_k = F_k(x_k)`: bits.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub dac_bits: Option<u32>,
            /// DAC range `[−bound, bound]` (left out: each sample's own abs-max).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub dac_bound: Option<f32>,
            /// ADC on the block's output (its last layer, read by the next stage): bits.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub adc_bits: Option<u32>,
            /// ADC range (left out: each sample's abs-max).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub adc_bound: Option<f32>,
            /// DAC on the error current `δ` nudging this block from the block above: bits.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub error_bits: Option<u32>,
            /// Error-current DAC range (left out: each sample's abs-max).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub error_bound: Option<f32>,
            /// Weight storage: number of uniform levels over `[−weight_bound, weight_bound]`
            /// (`[0, weight_bound]` for conductances).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub weight_levels: Option<usize>,
            /// Weight storage range (required with `weight_levels`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub weight_bound: Option<f32>,
            /// Round stored weights stochastically after every update (default: nearest).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub stochastic_rounding: Option<bool>,
            /// Weight programming by pulses: `constant-step` or `soft-bounds` (aihwkit's
            /// ConstantStepDevice / SoftBoundsDevice); left out: exact optimiser steps.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub device: Option<String>,
            /// Mean step of one pulse (aihwkit `dw_min`, default 0.001).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub dw_min: Option<f32>,
            /// Device-to-device spread of `dw_min`, relative (default 0.3).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub dw_min_dtod: Option<f32>,
            /// Cycle-to-cycle spread of each pulse's step, relative (default 0.3).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub dw_min_std: Option<f32>,
            /// Up/down asymmetry: up steps `dw·(1 + up_down)`, down steps `dw·(1 − up_down)`
            /// (default 0).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub up_down: Option<f32>,
            /// Upper weight bound of the device (default 0.6).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub w_max: Option<f32>,
            /// Lower bound (default −w_max; 0 for conductances whatever is set).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub w_min: Option<f32>,
            /// Pulses per weight and update at most (default 31, aihwkit's `desired_bl`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub max_pulses: Option<u32>,
            /// How a pulsed device holds a weight: `single` (one device, pulsed up and down;
            /// the default) or `differential` (`w = G⁺ − G⁻`, two devices pulsed up only,
            /// aihwkit's OneSidedUnitCell).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub device_pair: Option<String>,
            /// Refresh check of a differential pair every N optimiser steps (0: never, the
            /// default; aihwkit `refresh_every` with `units_in_mbatch`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub refresh_every: Option<u64>,
            /// A pair is refreshed when its larger conductance exceeds this fraction of its
            /// bound ... (default 0.75, aihwkit `refresh_upper_thres`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub refresh_upper_thres: Option<f32>,
            /// ... and its smaller one exceeds this fraction (default 0.25, aihwkit
            /// `refresh_lower_thres`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub refresh_lower_thres: Option<f32>,
        }

    };
}

macro_rules! impl_settings {
    ($name:ident; $($f:ident),*) => {
        #[allow(dead_code)]
        impl $name {
            /// `self`'s settings with those of `over` that are set on top.
            fn overlay_settings(&mut self, over: &AnalogSpec) {
                $(if over.$f.is_some() { self.$f = over.$f.clone(); })*
            }

            /// The non-idealities alone (no preset, no per-block tables).
            fn settings(&self) -> AnalogSpec {
                let mut s = AnalogSpec::default();
                $(s.$f = self.$f.clone();)*
                s
            }
        }
    };
}

impl_settings!(AnalogSpec; weight_std, slope_std, offset_std, threshold_std, update_noise, measure_noise, measure_repeats, dac_bits,
    dac_bound, adc_bits, adc_bound, error_bits, error_bound, weight_levels, weight_bound,
    stochastic_rounding, device, dw_min, dw_min_dtod, dw_min_std, up_down, w_max, w_min,
    max_pulses, device_pair,
    refresh_every, refresh_upper_thres, refresh_lower_thres);
impl_settings!(AnalogConfig; weight_std, slope_std, offset_std, threshold_std, update_noise, measure_noise, measure_repeats, dac_bits,
    dac_bound, adc_bits, adc_bound, error_bits, error_bound, weight_levels, weight_bound,
    stochastic_rounding, device, dw_min, dw_min_dtod, dw_min_std, up_down, w_max, w_min,
    max_pulses, device_pair,
    refresh_every, refresh_upper_thres, refresh_lower_thres);

analog_settings! {
    /// Non-ideality settings of one block (every field optional: left out = ideal, or
    /// inherited).
    pub struct AnalogSpec {}
}

analog_settings! {
    /// The `[analog]` table.
    pub struct AnalogConfig {
        /// A named starting point ([`PRESETS`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub preset: Option<String>,
        /// Seed of the device draws (default: the run's seed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub seed: Option<u64>,
        /// Per-block overrides, keyed by the block's 0-based index (`[analog.blocks.1]`).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub blocks: BTreeMap<String, AnalogSpec>,
    }
}

/// The keys of the non-ideality settings (for messages).
pub const SETTING_KEYS: &[&str] = &[
    "weight_std",
    "slope_std",
    "offset_std",
    "threshold_std",
    "update_noise",
    "measure_noise",
    "measure_repeats",
    "dac_bits",
    "dac_bound",
    "adc_bits",
    "adc_bound",
    "error_bits",
    "error_bound",
    "weight_levels",
    "weight_bound",
    "stochastic_rounding",
    "device",
    "dw_min",
    "dw_min_dtod",
    "dw_min_std",
    "up_down",
    "w_max",
    "w_min",
    "max_pulses",
    "device_pair",
    "refresh_every",
    "refresh_upper_thres",
    "refresh_lower_thres",
];

/// A quantizer: `bits` over `[−bound, bound]`, or each sample's abs-max range when `bound`
/// is `None`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quantizer {
    pub bits: u32,
    pub bound: Option<f32>,
}

/// Storage levels of the weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Storage {
    pub levels: usize,
    pub bound: f32,
    pub stochastic: bool,
}

/// A pulsed weight device (aihwkit semantics, see [`crate::core::analog::program_pulses`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PulseDevice {
    pub soft_bounds: bool,
    pub dw_min: f32,
    pub dw_min_dtod: f32,
    pub dw_min_std: f32,
    pub up_down: f32,
    pub w_max: f32,
    pub w_min: f32,
    pub max_pulses: u32,
    /// `Some`: each weight is a differential pair of such devices.
    pub pair: Option<PairSettings>,
}

/// A differential pair's refresh (aihwkit `OneSidedUnitCell`): every `refresh_every`
/// optimiser steps (0: never), pairs whose larger conductance is above `upper` and smaller
/// above `lower` (fractions of their bounds) are refreshed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairSettings {
    pub refresh_every: u64,
    pub upper: f32,
    pub lower: f32,
}

/// The resolved non-idealities of one energy-based block (all zero / `None`: ideal).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BlockAnalog {
    pub weight_std: f32,
    /// Per-unit variability: hard-sigmoid slopes and offsets (DHN), diode bounds (DRN).
    pub slope_std: f32,
    pub offset_std: f32,
    pub threshold_std: f32,
    pub update_noise: f32,
    pub measure_noise: f32,
    pub measure_repeats: usize,
    pub dac: Option<Quantizer>,
    pub adc: Option<Quantizer>,
    pub error: Option<Quantizer>,
    pub storage: Option<Storage>,
    pub pulse: Option<PulseDevice>,
}

impl BlockAnalog {
    /// Whether the block is ideal.
    pub fn is_ideal(&self) -> bool {
        *self
            == BlockAnalog {
                measure_repeats: self.measure_repeats,
                ..BlockAnalog::default()
            }
    }
}

impl AnalogConfig {
    /// The table `key=value` pairs describe (`preset=ideal-8bit`, `weight_std=0.1`,
    /// `blocks.1.adc_bits=6`; values are TOML literals or bare strings), unknown keys named.
    pub fn from_sets(sets: &[String]) -> Result<Self> {
        let mut root = toml::Table::new();
        for s in sets {
            let (key, raw) = s
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--analog `{s}`: expected key=value"))?;
            let raw = raw.trim();
            let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(raw.to_string()));
            let parts: Vec<&str> = key.trim().split('.').collect();
            let mut cur = &mut root;
            for p in &parts[..parts.len() - 1] {
                cur = match cur
                    .entry(p.to_string())
                    .or_insert_with(|| toml::Value::Table(Default::default()))
                {
                    toml::Value::Table(t) => t,
                    _ => bail!("--analog {key}: `{p}` is not a table"),
                };
            }
            cur.insert(parts[parts.len() - 1].to_string(), value);
        }
        serde_path_to_error::deserialize(toml::Value::Table(root)).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            let first = inner.lines().next().unwrap_or("").trim().to_string();
            anyhow::anyhow!(
                "analog.{path}: {first} (keys: preset, seed, blocks.N.*, {})",
                SETTING_KEYS.join(", ")
            )
        })
    }

    /// Whether nothing is set (the ideal model).
    pub fn is_off(&self) -> bool {
        *self == AnalogConfig::default()
    }

    /// One resolved setting per block of a model with `blocks` blocks; errors name the key.
    pub fn resolve(&self, blocks: usize) -> Result<Vec<BlockAnalog>> {
        let mut base = match &self.preset {
            Some(name) => (analog_preset(name)?.spec)(),
            None => AnalogSpec::default(),
        };
        base.overlay_settings(&self.settings());
        for key in self.blocks.keys() {
            match key.parse::<usize>() {
                Ok(k) if k < blocks => {}
                _ => bail!(
                    "analog.blocks.{key}: not a block of this model (0-based indices 0..{})",
                    blocks.saturating_sub(1)
                ),
            }
        }
        (0..blocks)
            .map(|k| {
                let mut s = base.clone();
                let prefix = match self.blocks.get(&k.to_string()) {
                    Some(over) => {
                        s.overlay_settings(over);
                        format!("analog.blocks.{k}")
                    }
                    None => "analog".to_string(),
                };
                resolve_spec(&s, &prefix)
            })
            .collect()
    }
}

fn std_value(v: Option<f32>, key: &str) -> Result<f32> {
    let v = v.unwrap_or(0.0);
    ensure!(
        v >= 0.0 && v.is_finite(),
        "{key} = {v}: a standard deviation must be finite and ≥ 0"
    );
    Ok(v)
}

fn quantizer(
    bits: Option<u32>,
    bound: Option<f32>,
    prefix: &str,
    name: &str,
) -> Result<Option<Quantizer>> {
    if let Some(b) = bound {
        ensure!(
            b > 0.0 && b.is_finite(),
            "{prefix}.{name}_bound = {b}: a converter range must be positive (leave it out for abs-max ranging)"
        );
    }
    match bits {
        None => {
            ensure!(
                bound.is_none(),
                "{prefix}.{name}_bound is set but {prefix}.{name}_bits is not"
            );
            Ok(None)
        }
        Some(b) => {
            ensure!(
                (2..=24).contains(&b),
                "{prefix}.{name}_bits = {b}: a converter needs 2 to 24 bits"
            );
            Ok(Some(Quantizer { bits: b, bound }))
        }
    }
}

fn pulse_device(s: &AnalogSpec, prefix: &str) -> Result<Option<PulseDevice>> {
    let soft_bounds = match s.device.as_deref() {
        None => {
            for (key, set) in [
                ("dw_min", s.dw_min.is_some()),
                ("dw_min_dtod", s.dw_min_dtod.is_some()),
                ("dw_min_std", s.dw_min_std.is_some()),
                ("up_down", s.up_down.is_some()),
                ("w_max", s.w_max.is_some()),
                ("w_min", s.w_min.is_some()),
                ("max_pulses", s.max_pulses.is_some()),
                ("device_pair", s.device_pair.is_some()),
                ("refresh_every", s.refresh_every.is_some()),
                ("refresh_upper_thres", s.refresh_upper_thres.is_some()),
                ("refresh_lower_thres", s.refresh_lower_thres.is_some()),
            ] {
                ensure!(
                    !set,
                    "{prefix}.{key} is a pulsed-device setting but {prefix}.device is not set (`constant-step` or `soft-bounds`)"
                );
            }
            return Ok(None);
        }
        Some("constant-step") => false,
        Some("soft-bounds") => true,
        Some(other) => bail!(
            "{prefix}.device = \"{other}\": unknown device (known: constant-step, soft-bounds)"
        ),
    };
    let dw_min = s.dw_min.unwrap_or(0.001);
    ensure!(
        dw_min > 0.0 && dw_min.is_finite(),
        "{prefix}.dw_min = {dw_min}: must be positive"
    );
    let w_max = s.w_max.unwrap_or(0.6);
    let w_min = s.w_min.unwrap_or(-w_max);
    ensure!(
        w_max.is_finite() && w_min.is_finite() && w_min < w_max,
        "{prefix}.w_min = {w_min} must be below {prefix}.w_max = {w_max}"
    );
    ensure!(
        !soft_bounds || (w_max > 0.0 && w_min < 0.0),
        "{prefix}: soft bounds need w_min < 0 < w_max (got {w_min}, {w_max})"
    );
    let up_down = s.up_down.unwrap_or(0.0);
    ensure!(
        up_down.abs() < 1.0,
        "{prefix}.up_down = {up_down}: must lie in (−1, 1)"
    );
    let max_pulses = s.max_pulses.unwrap_or(31);
    ensure!(
        max_pulses >= 1,
        "{prefix}.max_pulses = 0: an update needs at least one pulse"
    );
    let pair = pair_settings(s, prefix, w_min, w_max)?;
    Ok(Some(PulseDevice {
        pair,
        soft_bounds,
        dw_min,
        dw_min_dtod: std_value(
            s.dw_min_dtod.or(Some(0.3)),
            &format!("{prefix}.dw_min_dtod"),
        )?,
        dw_min_std: std_value(s.dw_min_std.or(Some(0.3)), &format!("{prefix}.dw_min_std"))?,
        up_down,
        w_max,
        w_min,
        max_pulses,
    }))
}

fn pair_settings(
    s: &AnalogSpec,
    prefix: &str,
    w_min: f32,
    w_max: f32,
) -> Result<Option<PairSettings>> {
    match s.device_pair.as_deref() {
        None | Some("single") => {
            for (key, set) in [
                ("refresh_every", s.refresh_every.is_some()),
                ("refresh_upper_thres", s.refresh_upper_thres.is_some()),
                ("refresh_lower_thres", s.refresh_lower_thres.is_some()),
            ] {
                ensure!(
                    !set,
                    "{prefix}.{key} is a differential-pair setting but {prefix}.device_pair is not \"differential\""
                );
            }
            return Ok(None);
        }
        Some("differential") => {}
        Some(other) => {
            bail!("{prefix}.device_pair = \"{other}\": unknown (known: single, differential)")
        }
    }
    ensure!(
        w_min < 0.0 && w_max > 0.0,
        "{prefix}.device_pair = \"differential\" needs w_min < 0 < w_max (G⁺ ∈ [0, w_max], G⁻ ∈ [0, −w_min]; got {w_min}, {w_max})"
    );
    let upper = s.refresh_upper_thres.unwrap_or(0.75);
    let lower = s.refresh_lower_thres.unwrap_or(0.25);
    for (key, v) in [
        ("refresh_upper_thres", upper),
        ("refresh_lower_thres", lower),
    ] {
        ensure!(
            (0.0..=1.0).contains(&v),
            "{prefix}.{key} = {v}: a fraction of the conductance bound must lie in [0, 1]"
        );
    }
    ensure!(
        lower <= upper,
        "{prefix}.refresh_lower_thres = {lower} is above {prefix}.refresh_upper_thres = {upper}"
    );
    ensure!(
        s.weight_levels.is_none(),
        "{prefix}.weight_levels: storage levels and a differential pair cannot be combined (the pair's conductances are the stored weight)"
    );
    Ok(Some(PairSettings {
        refresh_every: s.refresh_every.unwrap_or(0),
        upper,
        lower,
    }))
}

fn resolve_spec(s: &AnalogSpec, prefix: &str) -> Result<BlockAnalog> {
    let repeats = s.measure_repeats.unwrap_or(1);
    ensure!(
        repeats >= 1,
        "{prefix}.measure_repeats = 0: at least one measurement is needed"
    );
    let storage = match (s.weight_levels, s.weight_bound) {
        (None, None) => {
            ensure!(
                s.stochastic_rounding.is_none(),
                "{prefix}.stochastic_rounding needs {prefix}.weight_levels"
            );
            None
        }
        (Some(l), Some(b)) => {
            ensure!(
                l >= 2,
                "{prefix}.weight_levels = {l}: storage needs at least 2 levels"
            );
            ensure!(
                b > 0.0 && b.is_finite(),
                "{prefix}.weight_bound = {b}: must be positive"
            );
            Some(Storage {
                levels: l,
                bound: b,
                stochastic: s.stochastic_rounding.unwrap_or(false),
            })
        }
        (Some(_), None) => bail!("{prefix}.weight_levels needs {prefix}.weight_bound"),
        (None, Some(_)) => bail!("{prefix}.weight_bound needs {prefix}.weight_levels"),
    };
    let pulse = pulse_device(s, prefix)?;
    Ok(BlockAnalog {
        pulse,
        weight_std: std_value(s.weight_std, &format!("{prefix}.weight_std"))?,
        slope_std: std_value(s.slope_std, &format!("{prefix}.slope_std"))?,
        offset_std: std_value(s.offset_std, &format!("{prefix}.offset_std"))?,
        threshold_std: std_value(s.threshold_std, &format!("{prefix}.threshold_std"))?,
        update_noise: std_value(s.update_noise, &format!("{prefix}.update_noise"))?,
        measure_noise: std_value(s.measure_noise, &format!("{prefix}.measure_noise"))?,
        measure_repeats: repeats,
        dac: quantizer(s.dac_bits, s.dac_bound, prefix, "dac")?,
        adc: quantizer(s.adc_bits, s.adc_bound, prefix, "adc")?,
        error: quantizer(s.error_bits, s.error_bound, prefix, "error")?,
        storage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analog::presets::PRESETS;

    fn cfg(text: &str) -> AnalogConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn presets_top_level_and_blocks_layer_in_order() {
        let c = cfg("preset = \"ideal-8bit\"\nweight_std = 0.1\n[blocks.1]\nadc_bits = 4\nweight_std = 0.2\n");
        let r = c.resolve(2).unwrap();
        assert_eq!(r[0].weight_std, 0.1);
        assert_eq!(
            r[0].adc,
            Some(Quantizer {
                bits: 8,
                bound: None
            })
        );
        assert_eq!(r[1].weight_std, 0.2);
        assert_eq!(
            r[1].adc,
            Some(Quantizer {
                bits: 4,
                bound: None
            })
        );
        assert_eq!(
            r[1].dac,
            Some(Quantizer {
                bits: 8,
                bound: None
            })
        );
        assert!(AnalogConfig::default()
            .resolve(3)
            .unwrap()
            .iter()
            .all(|b| b.is_ideal()));
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = |t: &str, k: usize| format!("{:#}", cfg(t).resolve(k).unwrap_err());
        assert!(err("weight_std = -0.1", 1).contains("analog.weight_std"));
        assert!(err("slope_std = -0.1", 1).contains("analog.slope_std"));
        assert!(err("[blocks.0]\noffset_std = -1e-3", 1).contains("analog.blocks.0.offset_std"));
        assert!(err("threshold_std = nan", 1).contains("analog.threshold_std"));
        assert!(toml::from_str::<AnalogConfig>("slope_sd = 0.1").is_err());
        assert!(err("[blocks.0]\nupdate_noise = -1.0", 1).contains("analog.blocks.0.update_noise"));
        assert!(err("adc_bits = 0", 1).contains("analog.adc_bits"));
        assert!(err("dac_bits = 1", 1).contains("analog.dac_bits"));
        assert!(err("preset = \"memristor-x\"", 1).contains("analog.preset"));
        assert!(err("[blocks.2]\nadc_bits = 8", 2).contains("analog.blocks.2"));
        assert!(err("weight_levels = 16", 1).contains("analog.weight_bound"));
        assert!(err("measure_repeats = 0", 1).contains("analog.measure_repeats"));
        assert!(err("adc_bound = 2.0", 1).contains("analog.adc_bits"));
        assert!(err("device = \"memristor\"", 1).contains("analog.device"));
        assert!(err("dw_min = 0.01", 1).contains("analog.device"));
        assert!(err("device = \"constant-step\"\ndw_min = -1.0", 1).contains("analog.dw_min"));
        assert!(
            err("[blocks.0]\ndevice = \"soft-bounds\"\nw_min = 0.1", 1).contains("analog.blocks.0")
        );
        for p in PRESETS {
            let c = AnalogConfig {
                preset: Some(p.name.into()),
                ..Default::default()
            };
            assert!(!c.resolve(2).unwrap()[1].is_ideal(), "{}", p.name);
        }
        assert!(toml::from_str::<AnalogConfig>("weight_sd = 0.1").is_err());
        // differential pairs
        let pair = "device = \"constant-step\"\ndevice_pair = \"differential\"\n";
        assert!(err("device_pair = \"differential\"", 1).contains("analog.device"));
        assert!(err("device = \"constant-step\"\nrefresh_every = 10", 1)
            .contains("analog.refresh_every"));
        assert!(
            err("device = \"constant-step\"\ndevice_pair = \"triple\"", 1)
                .contains("analog.device_pair")
        );
        assert!(err(&format!("{pair}refresh_upper_thres = 1.5"), 1)
            .contains("analog.refresh_upper_thres"));
        assert!(err(&format!("{pair}refresh_lower_thres = -0.1"), 1)
            .contains("analog.refresh_lower_thres"));
        assert!(err(&format!("{pair}refresh_lower_thres = 0.8"), 1)
            .contains("analog.refresh_lower_thres"));
        assert!(err(&format!("{pair}w_min = 0.1"), 1).contains("analog.device_pair"));
        assert!(err(
            &format!("[blocks.0]\n{pair}weight_levels = 8\nweight_bound = 1.0"),
            1
        )
        .contains("analog.blocks.0.weight_levels"));
        let ok = cfg(&format!("{pair}refresh_every = 5")).resolve(1).unwrap();
        assert_eq!(
            ok[0].pulse.unwrap().pair,
            Some(PairSettings {
                refresh_every: 5,
                upper: 0.75,
                lower: 0.25
            })
        );
    }
}
