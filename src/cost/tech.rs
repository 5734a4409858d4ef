//! Technology descriptions: what each operation of a training step costs on a given piece of
//! hardware, as a TOML file in which every number carries its `source`:
//!
//! ```toml
//! base = "rram_64x64"            # optional: start from a preset, override what follows
//! name = "my_chip"
//! execution = "analog"           # analog | digital | gpu (how the energy-based blocks run)
//! [analog]
//! settle_ns = { value = 50.0, source = "our SPICE runs" }
//! array_rows = 128               # accepted, with a warning: no source
//! ```
//!
//! Without `base` every field of [`FIELDS`] must be given. Unknown keys, missing fields,
//! negative energies (and other out-of-range values) are errors naming the key; a value
//! without a source draws a warning. Presets: [`PRESETS`] (the files in `tech/`).

use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;

/// How the energy-based blocks of a model are executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Execution {
    /// Crossbar arrays that relax physically; the rest in digital logic.
    Analog,
    /// A digital accelerator simulates the relaxation (MACs, weights from DRAM).
    Digital,
    /// Every operation on the GPU of `[gpu]` (its energy per FLOP and achievable FLOP/s).
    Gpu,
}

/// What range a field's value must lie in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An energy (≥ 0).
    Energy,
    /// A strictly positive quantity (time, voltage, conductance, throughput).
    Positive,
    /// An integer ≥ 1.
    Count,
    /// An integer bit width in 1..=16.
    Bits,
    /// A fraction in (0, 1].
    Fraction,
}

/// Every numeric field: (`section.key`, kind, meaning).
pub const FIELDS: &[(&str, Kind, &str)] = &[
    (
        "digital.fp32_mul_pj",
        Kind::Energy,
        "32-bit float multiply, pJ",
    ),
    ("digital.fp32_add_pj", Kind::Energy, "32-bit float add, pJ"),
    (
        "digital.int8_mul_pj",
        Kind::Energy,
        "8-bit integer multiply, pJ",
    ),
    ("digital.int8_add_pj", Kind::Energy, "8-bit integer add, pJ"),
    (
        "digital.dram_word_pj",
        Kind::Energy,
        "32-bit word read from DRAM, pJ",
    ),
    (
        "digital.sram_word_pj",
        Kind::Energy,
        "32-bit word read from the on-chip SRAM buffer, pJ",
    ),
    (
        "digital.mac_bits",
        Kind::Bits,
        "arithmetic of feedforward and simulated MACs: 8 (int) or 32 (float)",
    ),
    (
        "digital.macs_per_ns",
        Kind::Positive,
        "digital throughput, MAC/ns",
    ),
    (
        "analog.read_voltage_v",
        Kind::Positive,
        "crossbar read voltage, V",
    ),
    (
        "analog.read_pulse_ns",
        Kind::Positive,
        "crossbar read pulse, ns",
    ),
    (
        "analog.g_min_us",
        Kind::Positive,
        "lowest cell conductance, uS",
    ),
    (
        "analog.g_max_us",
        Kind::Positive,
        "highest cell conductance, uS",
    ),
    (
        "analog.settle_ns",
        Kind::Positive,
        "time of one relaxation step (settle) of a block, ns",
    ),
    ("analog.array_rows", Kind::Count, "crossbar tile rows"),
    ("analog.array_cols", Kind::Count, "crossbar tile columns"),
    (
        "analog.write_voltage_v",
        Kind::Positive,
        "write pulse amplitude, V",
    ),
    (
        "analog.write_pulse_ns",
        Kind::Positive,
        "write pulse width, ns",
    ),
    (
        "analog.levels",
        Kind::Count,
        "programmable conductance levels",
    ),
    (
        "analog.weight_max",
        Kind::Positive,
        "weight magnitude mapped onto the full conductance range",
    ),
    ("conversion.adc_bits", Kind::Bits, "ADC resolution, bits"),
    ("conversion.dac_bits", Kind::Bits, "DAC resolution, bits"),
    (
        "conversion.adc_fj_per_step",
        Kind::Energy,
        "ADC energy per conversion step (Walden FOM), fJ",
    ),
    (
        "conversion.dac_fj_per_step",
        Kind::Energy,
        "DAC energy per conversion step, fJ",
    ),
    (
        "gpu.peak_tflops",
        Kind::Positive,
        "GPU peak FP32 throughput, TFLOP/s",
    ),
    ("gpu.board_power_w", Kind::Positive, "GPU board power, W"),
    (
        "gpu.utilization",
        Kind::Fraction,
        "fraction of the GPU's peak achieved",
    ),
];

/// Top-level and section keys that hold text, not numbers.
const TEXT_KEYS: &[&str] = &[
    "base",
    "name",
    "description",
    "execution",
    "gpu.name",
    "analog.partial_sums",
];

/// The built-in technology presets: (name, TOML text).
pub const PRESETS: &[(&str, &str)] = &[
    ("rram_64x64", include_str!("../../tech/rram_64x64.toml")),
    ("pcm_512", include_str!("../../tech/pcm_512.toml")),
    ("digital_45nm", include_str!("../../tech/digital_45nm.toml")),
    ("gpu_a100", include_str!("../../tech/gpu_a100.toml")),
    ("gpu_v100", include_str!("../../tech/gpu_v100.toml")),
];

/// A number and where it comes from.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Sourced {
    pub value: f64,
    pub source: String,
}

/// A validated technology description.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Tech {
    pub name: String,
    pub description: String,
    pub execution: Execution,
    pub gpu_name: String,
    /// `analog.partial_sums = "digital"`: the partial sums of a coupling's row tiles are
    /// converted and added digitally at every settle (else `"analog"`, the default: summed
    /// as currents).
    pub digital_partial_sums: bool,
    /// Every field of [`FIELDS`], by `section.key`.
    pub values: BTreeMap<String, Sourced>,
}

impl Tech {
    /// The value of `section.key` (one of [`FIELDS`]).
    pub fn get(&self, key: &str) -> f64 {
        match self.values.get(key) {
            Some(s) => s.value,
            None => panic!("technology field `{key}` is not in FIELDS"),
        }
    }

    /// A built-in preset.
    pub fn preset(name: &str) -> Result<Tech> {
        let (tech, _) = Tech::parse(preset_text(name)?, &format!("preset {name}"))?;
        Ok(tech)
    }

    /// Reads a technology file; returns it and the warnings (values without a source).
    pub fn from_file(path: &std::path::Path) -> Result<(Tech, Vec<String>)> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read technology file {}", path.display()))?;
        Tech::parse(&text, &path.display().to_string())
    }

    /// Parses a technology description (`what` names it in messages).
    pub fn parse(text: &str, what: &str) -> Result<(Tech, Vec<String>)> {
        let doc: toml::Table =
            toml::from_str(text).with_context(|| format!("{what}: invalid TOML"))?;
        let mut warnings = Vec::new();
        let flat = flatten(&doc).with_context(|| what.to_string())?;
        for key in flat.keys() {
            let known = TEXT_KEYS.contains(&key.as_str()) || FIELDS.iter().any(|f| f.0 == key);
            if !known {
                bail!(
                    "{what}: unknown key `{key}`{}",
                    suggestion(key)
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default()
                );
            }
        }
        let text_of = |key: &str| -> Result<Option<String>> {
            match flat.get(key) {
                None => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                Some(v) => bail!("{what}: `{key}` must be a string, got {v}"),
            }
        };
        let mut tech = match text_of("base")? {
            Some(base) => {
                ensure!(
                    base != text_of("name")?.unwrap_or_default(),
                    "{what}: `base` names the file itself"
                );
                Tech::preset(&base).with_context(|| format!("{what}: `base`"))?
            }
            None => Tech {
                name: String::new(),
                description: String::new(),
                execution: Execution::Analog,
                gpu_name: String::new(),
                digital_partial_sums: false,
                values: BTreeMap::new(),
            },
        };
        let has_base = flat.contains_key("base");
        for (key, slot) in [
            ("name", &mut tech.name),
            ("description", &mut tech.description),
            ("gpu.name", &mut tech.gpu_name),
        ] {
            if let Some(v) = text_of(key)? {
                *slot = v;
            }
        }
        match text_of("execution")?.as_deref() {
            Some("analog") => tech.execution = Execution::Analog,
            Some("digital") => tech.execution = Execution::Digital,
            Some("gpu") => tech.execution = Execution::Gpu,
            Some(other) => bail!(
                "{what}: `execution` = {other:?}: expected \"analog\", \"digital\" or \"gpu\""
            ),
            None if !has_base => {
                bail!("{what}: missing key `execution` (\"analog\", \"digital\" or \"gpu\")")
            }
            None => {}
        }
        match text_of("analog.partial_sums")?.as_deref() {
            Some("analog") => tech.digital_partial_sums = false,
            Some("digital") => tech.digital_partial_sums = true,
            Some(other) => bail!(
                "{what}: `analog.partial_sums` = {other:?}: expected \"analog\" or \"digital\""
            ),
            None => {}
        }
        for &(key, kind, _) in FIELDS {
            let Some(raw) = flat.get(key) else {
                ensure!(has_base, "{what}: missing key `{key}` ({})", meaning(key));
                continue;
            };
            let (value, source) =
                number_and_source(raw).with_context(|| format!("{what}: `{key}`"))?;
            check_range(key, kind, value).with_context(|| what.to_string())?;
            if source.trim().is_empty() {
                warnings.push(format!("{what}: `{key}` = {value} has no `source`; write it as {{ value = {value}, source = \"…\" }}"));
            }
            tech.values
                .insert(key.to_string(), Sourced { value, source });
        }
        tech.check()?;
        Ok((tech, warnings))
    }

    /// Sets `key` to `value` (a `--sweep` point), checking its range.
    pub fn with_value(&self, key: &str, value: f64) -> Result<Tech> {
        let Some(&(_, kind, _)) = FIELDS.iter().find(|f| f.0 == key) else {
            bail!(
                "--sweep: unknown technology key `{key}`{}",
                suggestion(key)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default()
            );
        };
        check_range(key, kind, value).context("--sweep")?;
        let mut t = self.clone();
        t.values.insert(
            key.into(),
            Sourced {
                value,
                source: "--sweep".into(),
            },
        );
        t.check()?;
        Ok(t)
    }

    /// Consistency between fields.
    fn check(&self) -> Result<()> {
        ensure!(
            self.get("analog.g_min_us") < self.get("analog.g_max_us"),
            "technology {}: `analog.g_min_us` = {} must be below `analog.g_max_us` = {}",
            self.name,
            self.get("analog.g_min_us"),
            self.get("analog.g_max_us")
        );
        let bits = self.get("digital.mac_bits");
        ensure!(
            bits == 8.0 || bits == 32.0,
            "technology {}: `digital.mac_bits` = {bits}: expected 8 (integer) or 32 (float)",
            self.name
        );
        Ok(())
    }
}

/// The TOML text of a preset.
pub fn preset_text(name: &str) -> Result<&'static str> {
    match PRESETS.iter().find(|p| p.0 == name) {
        Some(p) => Ok(p.1),
        None => bail!(
            "unknown technology preset `{name}`; presets: {}",
            PRESETS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn meaning(key: &str) -> &'static str {
    FIELDS
        .iter()
        .find(|f| f.0 == key)
        .map(|f| f.2)
        .unwrap_or("")
}

fn suggestion(key: &str) -> Option<&'static str> {
    FIELDS
        .iter()
        .map(|f| f.0)
        .chain(TEXT_KEYS.iter().copied())
        .map(|k| (strsim::jaro_winkler(k, key), k))
        .filter(|(s, _)| *s > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// `{section: {key: v}}` → `{"section.key": v}`; a value table `{ value, source }` stays a leaf.
fn flatten(doc: &toml::Table) -> Result<BTreeMap<String, toml::Value>> {
    let mut out = BTreeMap::new();
    for (k, v) in doc {
        match v {
            toml::Value::Table(t) if !is_leaf(t) => {
                for (k2, v2) in t {
                    if let toml::Value::Table(t2) = v2 {
                        ensure!(
                            is_leaf(t2),
                            "`{k}.{k2}`: expected a number or {{ value = …, source = \"…\" }}"
                        );
                    }
                    out.insert(format!("{k}.{k2}"), v2.clone());
                }
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(out)
}

fn is_leaf(t: &toml::Table) -> bool {
    t.contains_key("value")
}

/// A bare number (no source) or `{ value = x, source = "…" }`.
fn number_and_source(v: &toml::Value) -> Result<(f64, String)> {
    let num = |v: &toml::Value| match v {
        toml::Value::Integer(i) => Ok(*i as f64),
        toml::Value::Float(f) => Ok(*f),
        other => bail!("expected a number, got {other}"),
    };
    match v {
        toml::Value::Table(t) => {
            for k in t.keys() {
                ensure!(
                    k == "value" || k == "source",
                    "unknown key `{k}` (a value table has `value` and `source`)"
                );
            }
            let value = num(&t["value"])?;
            let source = match t.get("source") {
                None => String::new(),
                Some(toml::Value::String(s)) => s.clone(),
                Some(other) => bail!("`source` must be a string, got {other}"),
            };
            Ok((value, source))
        }
        other => Ok((num(other)?, String::new())),
    }
}

fn check_range(key: &str, kind: Kind, v: f64) -> Result<()> {
    ensure!(v.is_finite(), "`{key}` = {v} must be a finite number");
    let integer = v.fract() == 0.0;
    match kind {
        Kind::Energy => ensure!(v >= 0.0, "`{key}` = {v}: an energy cannot be negative"),
        Kind::Positive => ensure!(v > 0.0, "`{key}` = {v} must be positive"),
        Kind::Count => ensure!(
            integer && v >= 1.0,
            "`{key}` = {v} must be a whole number ≥ 1"
        ),
        Kind::Bits => ensure!(
            integer && (1.0..=16.0).contains(&v)
                || key == "digital.mac_bits" && integer && v == 32.0,
            "`{key}` = {v} must be a whole number of bits in 1..=16"
        ),
        Kind::Fraction => ensure!(v > 0.0 && v <= 1.0, "`{key}` = {v} must be in (0, 1]"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_without_warnings_and_sources_every_number() {
        for (name, text) in PRESETS {
            let (t, w) = Tech::parse(text, name).unwrap();
            assert!(w.is_empty(), "{name}: {w:?}");
            assert_eq!(t.values.len(), FIELDS.len(), "{name}");
            assert!(t.values.values().all(|s| !s.source.is_empty()), "{name}");
        }
    }
}
