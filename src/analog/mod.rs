//! Analog non-idealities of the energy-based blocks, as layers around the ideal model (the
//! energy, relaxation and estimator code never branches on them):
//!
//! * **static variability** — the *physical circuit* ([`Circuit::physical`]) is a copy of the
//!   nominal model whose energy-based weights are `w_eff = w·(1 + σ_w·ξ)` (`ξ ~ N(0, 1)`
//!   drawn once per device from the device seed, floored at 0 for conductances). Relaxations,
//!   EP and inference all run on it; the gradient EP measures there is `∂L/∂w_eff`, which the
//!   optimiser applies to the nominal (programmed) weights. Its units vary too ([`units`]):
//!   per-unit hard-sigmoid slopes and offsets (DHN), diode bounds (DRN);
//! * **dynamic noise** ([`Runtime`]) — `s_l ← s_l + σ_s·ξ` after every layer update of a
//!   relaxation, and `ŝ = s + (σ_m/N)·Σ_{r≤N} ξ_r` on every equilibrium EP reads;
//! * **converters** — a DAC on each block's drive `u_k`, an ADC on its output (the last layer
//!   the next stage and the readout read), a DAC on the error current `δ` nudging a non-last
//!   block (quantizers in [`crate::core::analog`]);
//! * **weight storage** — stored weights on uniform levels, rounded to the nearest or
//!   stochastically after every optimiser step ([`Circuit::store`]);
//! * **weight programming** — the optimiser computes the desired weights, a pulsed device
//!   (ConstantStep or SoftBounds, [`crate::core::analog::program_pulses`]) decides what they
//!   become ([`Circuit::program`]); each device's pulse step is `dw_min·(1 + dtod·ξ)`. With
//!   `device_pair = "differential"` each weight is `w = G⁺ − G⁻`, two such devices pulsed up
//!   only, with an optional refresh ([`pair`]).
//!
//! Everything is off by default; a [`Chain`](crate::grad::Chain) without a runtime and a
//! nominal model is the ideal code path, bit for bit.

pub mod config;
pub mod pair;
pub mod presets;
pub mod units;

pub use config::{AnalogConfig, AnalogSpec, BlockAnalog, PairSettings, Quantizer};
pub use pair::PairDevices;
pub use presets::{analog_preset, AnalogPreset, PRESETS};
pub use units::{UnitDraw, UnitProperty};

use crate::core::analog as kern;
use crate::core::Tensor;
use crate::io::tensors::{Stored, TensorFile};
use crate::model::{CouplingKind, Model, ParamId};
use crate::relax::{Relaxation, UpdateNoise};
use anyhow::{bail, ensure, Context, Result};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of the analog device tensors in a checkpoint: `analog.xi.<parameter name>` (the
/// variability draws) and `analog.dw.<parameter name>` (the pulse steps).
pub const DEVICE_PREFIX: &str = "analog.";
const XI: &str = "analog.xi.";
const DW: &str = "analog.dw.";

/// A non-ideal realisation of a model: the resolved settings of every block and the device
/// draws `ξ` of every varied weight.
#[derive(Clone, Debug, PartialEq)]
pub struct Circuit {
    pub blocks: Vec<BlockAnalog>,
    /// Seed of the device draws.
    pub seed: u64,
    /// `ξ` per energy-based weight of a block with `weight_std > 0`.
    pub devices: Vec<(ParamId, Tensor)>,
    /// The pulse step of every device, per energy-based weight of a block with a pulsed
    /// device (one device per weight).
    pub steps: Vec<(ParamId, Tensor)>,
    /// The conductance pairs of every energy-based weight of a block with
    /// `device_pair = "differential"`.
    pub pairs: Vec<PairDevices>,
    /// The per-unit draws of every layer whose units vary (slopes, offsets, diode bounds).
    pub units: Vec<UnitDraw>,
}

/// Pulses fired by one programming step, per block (`block{k}`): the update's and the
/// differential pairs' refresh's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pulses {
    pub update: BTreeMap<String, u64>,
    pub refresh: BTreeMap<String, u64>,
}

/// The energy-based weights of block `k` and whether each is a conductance.
fn block_weights(model: &Model, k: usize) -> Vec<(ParamId, bool)> {
    model.blocks[k]
        .layout
        .couplings
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                ParamId::Synapse {
                    block: k,
                    index: i + 1,
                    bias: false,
                },
                matches!(c, CouplingKind::Resistive { .. }),
            )
        })
        .collect()
}

fn device_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

impl Circuit {
    /// The circuit `cfg` describes for `model`, devices drawn from `cfg.seed` or `run_seed`
    /// (one generator stream per weight tensor: a block's draws do not depend on the others).
    pub fn new(cfg: &AnalogConfig, model: &Model, run_seed: u64) -> Result<Self> {
        let blocks = cfg.resolve(model.blocks.len())?;
        let seed = cfg.seed.unwrap_or(run_seed);
        let mut devices = Vec::new();
        let mut steps = Vec::new();
        let mut pairs = Vec::new();
        for (k, b) in blocks.iter().enumerate() {
            if let Some(p) = b.pulse {
                for (id, conductance) in block_weights(model, k) {
                    let ParamId::Synapse { index, .. } = id else {
                        unreachable!()
                    };
                    // G⁺ (or the single device) on stream 2^63 + …, G⁻ on 2^63 + 2^62 + …
                    let draw = |stream: u64| {
                        let mut rng = device_rng(seed, stream | ((k as u64) << 32) | index as u64);
                        let mut dw = kern::standard_normal(model.param(id).shape(), &mut rng);
                        kern::pulse_steps(&mut dw, p.dw_min, p.dw_min_dtod);
                        dw
                    };
                    if p.pair.is_none() {
                        steps.push((id, draw(1 << 63)));
                        continue;
                    }
                    if conductance {
                        bail!(
                            "analog.device_pair = \"differential\" (block {k}): `{}` is a resistive block's conductance, a single non-negative device; differential pairs hold the signed weights of Hopfield blocks",
                            model.param_name(id)
                        );
                    }
                    let (dwp, dwm) = (draw(1 << 63), draw((1 << 63) | (1 << 62)));
                    pairs.push(PairDevices::new(id, model.param(id), &p, dwp, dwm));
                }
            }
            if b.weight_std > 0.0 {
                for (id, _) in block_weights(model, k) {
                    let ParamId::Synapse { index, .. } = id else {
                        unreachable!()
                    };
                    let mut rng = device_rng(seed, ((k as u64) << 32) | index as u64);
                    devices.push((id, kern::standard_normal(model.param(id).shape(), &mut rng)));
                }
            }
        }
        let block_set = |k: usize, p: UnitProperty| {
            cfg.blocks.get(&k.to_string()).is_some_and(|b| match p {
                UnitProperty::Slope => b.slope_std.is_some(),
                UnitProperty::Offset => b.offset_std.is_some(),
                UnitProperty::Threshold => b.threshold_std.is_some(),
            })
        };
        let units = units::draw_units(&blocks, &block_set, model, &mut |stream| {
            device_rng(seed, stream)
        })?;
        Ok(Circuit {
            blocks,
            seed,
            devices,
            steps,
            pairs,
            units,
        })
    }

    /// The ideal circuit of a model with `blocks` blocks.
    pub fn ideal(blocks: usize) -> Self {
        Circuit {
            blocks: vec![BlockAnalog::default(); blocks],
            seed: 0,
            devices: Vec::new(),
            steps: Vec::new(),
            pairs: Vec::new(),
            units: Vec::new(),
        }
    }

    /// Whether every block is ideal.
    pub fn is_ideal(&self) -> bool {
        self.blocks.iter().all(|b| b.is_ideal())
    }

    /// Whether the physical weights or units differ from the nominal ones.
    fn varies(&self) -> bool {
        // pulse-programmed weights are clipped to their bounds at the start of a run only
        !self.devices.is_empty()
            || !self.units.is_empty()
            || self.blocks.iter().any(|b| b.storage.is_some())
    }

    /// The physical circuit: the nominal weights on their storage levels (nearest), times
    /// `(1 + σ_w·ξ)`, and its varied units ([`units`]); `None` when it equals the nominal
    /// model.
    pub fn physical(&self, nominal: &Model) -> Result<Option<Model>> {
        if !self.varies() {
            return Ok(None);
        }
        let mut m = nominal.clone();
        self.store_nearest(&mut m);
        let nonneg = m.non_negative_params();
        for (id, xi) in &self.devices {
            let k = match id {
                ParamId::Synapse { block, .. } => *block,
                _ => unreachable!("devices are synapse weights"),
            };
            kern::vary(
                m.param_mut(*id),
                xi,
                self.blocks[k].weight_std,
                nonneg.contains(id),
            )
            .with_context(|| format!("device draws of `{}`", nominal.param_name(*id)))?;
        }
        units::apply_units(&self.units, &self.blocks, &mut m);
        Ok(Some(m))
    }

    fn store_nearest(&self, model: &mut Model) {
        self.store_with(model, None);
    }

    /// Puts the stored energy-based weights of `model` on their levels (stochastic rounding
    /// where configured, from `rng`), as after every optimiser step.
    pub fn store(&self, model: &mut Model, rng: &mut ChaCha8Rng) {
        self.store_with(model, Some(rng));
    }

    fn store_with(&self, model: &mut Model, mut rng: Option<&mut ChaCha8Rng>) {
        for (k, b) in self.blocks.iter().enumerate() {
            if let Some(p) = b.pulse {
                // a device holds values within its bounds only
                for (id, conductance) in block_weights(model, k) {
                    let lo = if conductance {
                        p.w_min.max(0.0)
                    } else {
                        p.w_min
                    };
                    kern::clip(model.param_mut(id), lo, p.w_max);
                }
            }
            let Some(s) = b.storage else { continue };
            for (id, conductance) in block_weights(model, k) {
                let lo = if conductance { 0.0 } else { -s.bound };
                let r: Option<&mut dyn rand::RngCore> = match rng.as_deref_mut() {
                    Some(r) if s.stochastic => Some(r),
                    _ => None,
                };
                kern::store_levels(model.param_mut(id), lo, s.bound, s.levels, r);
            }
        }
    }

    /// Whether weights are programmed by pulses.
    pub fn programs(&self) -> bool {
        !self.steps.is_empty() || !self.pairs.is_empty()
    }

    /// Whether some weights are differential pairs.
    pub fn has_pairs(&self) -> bool {
        !self.pairs.is_empty()
    }

    /// The present values of the single-device pulse-programmed weights (call before the
    /// optimiser step; differential pairs hold their own state).
    pub fn programmed_weights(&self, model: &Model) -> Vec<(ParamId, Tensor)> {
        self.steps
            .iter()
            .map(|(id, _)| (*id, model.param(*id).clone()))
            .collect()
    }

    /// Turns the optimiser's desired weights (in `model`) into what the devices do: from the
    /// weights `before` the step, pulses towards the desired values (differential pairs: from
    /// their conductances, one-sided, with their refresh when optimiser step `step`, counted
    /// from 1, is due). Returns the pulses fired per block (`block{k}`).
    pub fn program(
        &mut self,
        model: &mut Model,
        before: Vec<(ParamId, Tensor)>,
        step: u64,
        rng: &mut ChaCha8Rng,
    ) -> Result<Pulses> {
        let mut fired = BTreeMap::new();
        let nonneg = model.non_negative_params();
        for ((id, mut w), (sid, dw)) in before.into_iter().zip(&self.steps) {
            ensure!(id == *sid, "programmed weights out of order");
            let ParamId::Synapse { block: k, .. } = id else {
                unreachable!("pulsed devices hold synapse weights")
            };
            let p = self.blocks[k].pulse.expect("a pulsed block");
            let resp = kern::PulseResponse {
                soft_bounds: p.soft_bounds,
                lo: if nonneg.contains(&id) {
                    p.w_min.max(0.0)
                } else {
                    p.w_min
                },
                hi: p.w_max,
                up_down: p.up_down,
                write_noise: p.dw_min_std,
                max_pulses: p.max_pulses,
            };
            let n = kern::program_pulses(&mut w, model.param(id), dw, &resp, rng)
                .with_context(|| format!("programming `{}`", model.param_name(id)))?;
            *model.param_mut(id) = w;
            *fired.entry(format!("block{k}")).or_insert(0) += n;
        }
        let mut refresh = BTreeMap::new();
        for pair in &mut self.pairs {
            let ParamId::Synapse { block: k, .. } = pair.id else {
                unreachable!("pairs hold synapse weights")
            };
            let p = self.blocks[k].pulse.expect("a pulsed block");
            let n = pair
                .program(model.param_mut(pair.id), &p, step, rng)
                .with_context(|| format!("programming `{}`", model.param_name(pair.id)))?;
            *fired.entry(format!("block{k}")).or_insert(0) += n.update;
            *refresh.entry(format!("block{k}")).or_insert(0) += n.refresh;
        }
        Ok(Pulses {
            update: fired,
            refresh,
        })
    }

    /// The dynamic part for one step, its noise drawn from `seed`.
    pub fn runtime(&self, seed: u64) -> Runtime {
        Runtime {
            blocks: self.blocks.clone(),
            seed,
            stream: AtomicU64::new(0),
        }
    }

    /// The circuit's converters without its noise (update and measurement): the
    /// deterministic circuit whose exact gradient ID computes on the physical circuit.
    pub fn converters_only(&self, seed: u64) -> Runtime {
        let mut r = self.runtime(seed);
        for b in &mut r.blocks {
            b.update_noise = 0.0;
            b.measure_noise = 0.0;
        }
        r
    }

    /// The device tensors as checkpoint tensors (`analog.xi.<name>`, `analog.dw.<name>`,
    /// the pairs' conductances and steps, the unit draws [`UnitDraw::key`]).
    pub fn tensors(&self, model: &Model) -> Vec<(String, Stored)> {
        let named = |prefix: &str, v: &[(ParamId, Tensor)]| -> Vec<(String, Stored)> {
            v.iter()
                .map(|(id, t)| {
                    (
                        format!("{prefix}{}", model.param_name(*id)),
                        Stored::F32(t.clone()),
                    )
                })
                .collect()
        };
        let mut out = named(XI, &self.devices);
        out.extend(named(DW, &self.steps));
        for pair in &self.pairs {
            for (prefix, t) in pair.tensors() {
                out.push((
                    format!("{prefix}{}", model.param_name(pair.id)),
                    Stored::F32(t.clone()),
                ));
            }
        }
        for d in &self.units {
            out.push((d.key(), Stored::F32(d.xi.clone())));
        }
        out
    }

    /// Replaces the device tensors by those saved in a checkpoint: the same circuit as the
    /// run that wrote it. With `require_all`, every device of this circuit must be in the
    /// file; otherwise devices the file lacks keep their draws from the seed. Returns how many
    /// tensors were loaded.
    pub fn load_devices(
        &mut self,
        f: &TensorFile,
        model: &Model,
        path: &Path,
        require_all: bool,
    ) -> Result<usize> {
        let mut slots: Vec<(String, &mut Tensor)> = Vec::new();
        for (prefix, list) in [(XI, &mut self.devices), (DW, &mut self.steps)] {
            for (id, t) in list.iter_mut() {
                slots.push((format!("{prefix}{}", model.param_name(*id)), t));
            }
        }
        for pair in &mut self.pairs {
            let name = model.param_name(pair.id);
            for (prefix, t) in pair.tensors_mut() {
                slots.push((format!("{prefix}{name}"), t));
            }
        }
        for d in &mut self.units {
            slots.push((d.key(), &mut d.xi));
        }
        let mut loaded = 0;
        for (key, t) in slots {
            if !require_all && !f.tensors.contains_key(&key) {
                continue;
            }
            let src = f.f32(&key, path).with_context(|| {
                "the checkpoint has no device draws for this analog configuration".to_string()
            })?;
            ensure!(
                src.shape() == t.shape(),
                "{}: `{key}` has shape {:?}, expected {:?}",
                path.display(),
                src.shape(),
                t.shape()
            );
            *t = src.clone();
            loaded += 1;
        }
        Ok(loaded)
    }

    /// Number of device tensors (variability draws, pulse steps, conductance pairs, unit
    /// draws).
    pub fn device_tensors(&self) -> usize {
        self.devices.len() + self.steps.len() + 4 * self.pairs.len() + self.units.len()
    }
}

/// The dynamic non-idealities of one step: converters and noise, every noise draw from its
/// own generator stream of `seed` (streams numbered in the order of use, which is fixed).
pub struct Runtime {
    blocks: Vec<BlockAnalog>,
    seed: u64,
    stream: AtomicU64,
}

fn convert(q: Option<Quantizer>, x: &mut Tensor) {
    match q {
        Some(Quantizer {
            bits,
            bound: Some(b),
        }) => kern::quantize(x, bits, b),
        Some(Quantizer { bits, bound: None }) => kern::quantize_abs_max(x, bits),
        None => {}
    }
}

/// Straight-through adjoint of [`convert`] at `pre` (the value before conversion): the
/// identity except where a bounded converter clipped (a per-sample `abs_max` range never
/// clips).
fn convert_adjoint(q: Option<Quantizer>, pre: &Tensor, g: &mut Tensor) -> Result<()> {
    if let Some(Quantizer { bound: Some(b), .. }) = q {
        kern::quantize_adjoint(pre, b, g)?;
    }
    Ok(())
}

impl Runtime {
    /// The next noise stream: a fast generator (xoshiro256++) seeded from stream `i` of the
    /// step's ChaCha8 seed, so streams are independent and reproducible.
    fn rng(&self) -> SmallRng {
        let mut seeder = device_rng(self.seed, self.stream.fetch_add(1, Ordering::Relaxed));
        SmallRng::from_rng(&mut seeder).expect("ChaCha8 never fails")
    }

    /// The DAC on block `k`'s drive.
    pub fn dac(&self, k: usize, u: &mut Tensor) {
        convert(self.blocks[k].dac, u);
    }

    /// The ADC on block `k`'s output.
    pub fn adc(&self, k: usize, s: &mut Tensor) {
        convert(self.blocks[k].adc, s);
    }

    /// The straight-through adjoint of the DAC on block `k`'s drive `u` (before conversion).
    pub fn dac_adjoint(&self, k: usize, u: &Tensor, g: &mut Tensor) -> Result<()> {
        convert_adjoint(self.blocks[k].dac, u, g)
    }

    /// The straight-through adjoint of the ADC on block `k`'s output `s` (before conversion).
    pub fn adc_adjoint(&self, k: usize, s: &Tensor, g: &mut Tensor) -> Result<()> {
        convert_adjoint(self.blocks[k].adc, s, g)
    }

    /// The DAC on the error current nudging block `k`.
    pub fn error_dac(&self, k: usize, delta: &mut Tensor) {
        convert(self.blocks[k].error, delta);
    }

    /// The update noise of a relaxation of block `k` (`None`: noiseless).
    pub fn update_noise(&self, k: usize) -> Option<UpdateNoise> {
        let sigma = self.blocks[k].update_noise;
        (sigma > 0.0).then(|| UpdateNoise {
            sigma,
            rng: self.rng(),
        })
    }

    /// A measurement of the present states of a relaxation of block `k`: each layer (and its
    /// offset) plus the mean of `N` noise draws.
    pub fn measure(&self, k: usize, r: &mut Relaxation<'_>) -> Result<()> {
        let b = &self.blocks[k];
        if b.measure_noise > 0.0 {
            let mut rng = self.rng();
            r.perturb(|s, d| {
                kern::add_mean_gaussian(s, d, b.measure_noise, b.measure_repeats, &mut rng)
            })?;
        }
        Ok(())
    }
}
