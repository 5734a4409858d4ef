//! Robustness study of EP on analog hardware: for one batch, sweep the strength of one
//! non-ideality (an `[analog]` key) and compare, per parameter tensor, the EP gradient
//! measured on the physical circuit with
//!
//! * **ID-exact on the same physical circuit** — the exact gradient of the circuit that is
//!   physically there, without its noise: its varied weights, units and storage levels, and
//!   its DAC/ADC (straight through: the rounding counts as the identity, clipping as zero),
//!   and
//! * **ID-exact on the nominal "digital twin"** — the ideal model a designer would have
//!   simulated,
//!
//! by their cosine `⟨g_EP, g_ID⟩ / (‖g_EP‖·‖g_ID‖)` and relative error `‖g_EP − g_ID‖/‖g_ID‖`.

use super::gdd::agreement;
use crate::analog::{AnalogConfig, Circuit};
use crate::core::Tensor;
use crate::digital::{Digital, DigitalConfig};
use crate::grad::{
    compute_gradients_on, compute_gradients_with, AlgoConfig, Algorithm, StepOptions,
};
use crate::model::{prepare, Model};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// What to sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RobustnessConfig {
    /// `[analog]` settings common to every point (`key=value`, as `--analog`).
    pub base: Vec<String>,
    /// `[digital]` settings common to every point (`key=value`, as `--digital`).
    #[serde(default)]
    pub digital: Vec<String>,
    /// The swept key: an `[analog]` key (e.g. `weight_std`, `update_noise`, `adc_bits`) or a
    /// `[digital]` one prefixed `digital.` (`digital.weight_bits`, `digital.activation_bits`,
    /// `digital.gradient_bits`).
    pub key: String,
    pub values: Vec<f64>,
    /// Seed of the devices and the noise.
    pub seed: u64,
}

/// One tensor at one strength.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RobustnessRow {
    pub value: f64,
    pub tensor: String,
    pub cos_physical: f64,
    pub cos_twin: f64,
    pub rel_error_physical: f64,
    pub rel_error_twin: f64,
}

/// The whole study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RobustnessReport {
    pub config: RobustnessConfig,
    pub beta: f32,
    pub t1: usize,
    pub t2: usize,
    pub batch: usize,
    pub rows: Vec<RobustnessRow>,
}

/// `key=value` as an `--analog` setting (integers for the integer keys).
fn setting(key: &str, v: f64) -> String {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    if leaf.ends_with("_bits") || matches!(leaf, "weight_levels" | "measure_repeats" | "seed") {
        format!("{key}={}", v.round() as i64)
    } else {
        format!("{key}={v}")
    }
}

/// The `[analog]` and `[digital]` settings of the point `key = v` on top of `cfg`'s bases.
pub fn point_settings(cfg: &RobustnessConfig, v: f64) -> (Vec<String>, Vec<String>) {
    let (mut analog, mut digital) = (cfg.base.clone(), cfg.digital.clone());
    let set = setting(&cfg.key, v);
    match set.strip_prefix("digital.") {
        Some(d) => digital.push(d.to_string()),
        None => analog.push(set),
    }
    (analog, digital)
}

/// Runs the study on `model` (nominal weights) for the batch `(x, y)`; `progress(i, n)` after
/// each strength.
pub fn robustness(
    model: &Model,
    x: &Tensor,
    y: &[u32],
    algo: &AlgoConfig,
    cfg: &RobustnessConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RobustnessReport> {
    anyhow::ensure!(!cfg.values.is_empty(), "no strengths to sweep (--values)");
    let nominal_kernels = prepare(model)?;
    let twin = compute_gradients_on(
        model,
        &nominal_kernels,
        x,
        y,
        &algo.with(Algorithm::IdExact),
        None,
        None,
    )
    .context("ID-exact on the nominal twin")?;
    let mut rows = Vec::new();
    for (i, &v) in cfg.values.iter().enumerate() {
        let (sets, digital_sets) = point_settings(cfg, v);
        let analog = AnalogConfig::from_sets(&sets)?;
        let digital = DigitalConfig::from_sets(&digital_sets)?.resolve()?;
        let circuit = Circuit::new(&analog, model, cfg.seed)?;
        let physical = Digital::on_top(digital.as_ref(), circuit.physical(model)?, model);
        let pm = physical.as_ref().unwrap_or(model);
        let kernels = prepare(pm)?;
        let runtime = (!circuit.is_ideal()).then(|| circuit.runtime(cfg.seed));
        let converters = (!circuit.is_ideal()).then(|| circuit.converters_only(cfg.seed));
        let at = || format!("{} = {v}", cfg.key);
        let on = |name, analog| {
            let opts = StepOptions {
                analog,
                digital,
                ..Default::default()
            };
            compute_gradients_with(pm, &kernels, x, y, &algo.with(name), opts)
        };
        let ep = on(Algorithm::Ep, runtime.as_ref())
            .with_context(|| format!("EP on the physical circuit at {}", at()))?;
        let id = on(Algorithm::IdExact, converters.as_ref())
            .with_context(|| format!("ID-exact on the physical circuit at {}", at()))?;
        for (pid, g) in &ep.grads.entries {
            let (p, t) = (
                agreement(g, id.grads.get(*pid)),
                agreement(g, twin.grads.get(*pid)),
            );
            rows.push(RobustnessRow {
                value: v,
                tensor: model.param_name(*pid),
                cos_physical: p.cosine,
                cos_twin: t.cosine,
                rel_error_physical: p.rel_error,
                rel_error_twin: t.rel_error,
            });
        }
        progress(i + 1, cfg.values.len());
    }
    Ok(RobustnessReport {
        config: cfg.clone(),
        beta: algo.beta,
        t1: algo.t1,
        t2: algo.t2,
        batch: y.len(),
        rows,
    })
}

impl RobustnessReport {
    /// The table as CSV (one line per strength and tensor).
    pub fn csv(&self) -> String {
        let mut s =
            String::from("value,tensor,cos_physical,cos_twin,rel_error_physical,rel_error_twin\n");
        for r in &self.rows {
            s.push_str(&format!(
                "{},{},{},{},{},{}\n",
                r.value,
                r.tensor,
                r.cos_physical,
                r.cos_twin,
                r.rel_error_physical,
                r.rel_error_twin
            ));
        }
        s
    }

    /// The tensors, in order.
    pub fn tensors(&self) -> Vec<String> {
        let mut t: Vec<String> = Vec::new();
        for r in &self.rows {
            if !t.contains(&r.tensor) {
                t.push(r.tensor.clone());
            }
        }
        t
    }

    /// `f(row)` of `tensor` at every strength.
    pub fn series(&self, tensor: &str, f: impl Fn(&RobustnessRow) -> f64) -> Vec<f64> {
        self.config
            .values
            .iter()
            .map(|v| {
                self.rows
                    .iter()
                    .find(|r| r.tensor == tensor && r.value == *v)
                    .map_or(f64::NAN, &f)
            })
            .collect()
    }
}
