//! Per-unit nonlinearity variability (device-to-device): each unit of a layer has its own
//! transfer curve, drawn once per device like the weight factors `ξ`.
//!
//! | key | layers | physical unit |
//! |---|---|---|
//! | `slope_std` σ | DHN hard-sigmoid layers | slope `α_i = α·max(1 + σ·ξ_i, 0.01)` (self-energy `s_i²/(2α_i)`) |
//! | `offset_std` σ | DHN hard-sigmoid layers | input offset `θ_i = σ·ξ_i`: `s_i = clamp(α_i·(b_i + θ_i), 0, 1)` (a fixed bias `−Σ θ_i s_i`) |
//! | `threshold_std` σ | DRN diode layers | diode bound `t_i = σ·ξ_i` volts: excitatory `v_i ≥ t_i`, inhibitory `v_i ≤ t_i` |
//!
//! The draws `ξ ~ N(0, 1)` (one per unit, the layer's unbatched shape) come from the device
//! seed, one ChaCha8 stream per block, layer and property; they are saved in checkpoints as
//! `analog.<property>_xi.blocks.<k>.layers.<l>` ([`UnitDraw::key`]).

use super::config::BlockAnalog;
use crate::core::analog::standard_normal;
use crate::core::units::{scaled_draws, unit_slopes};
use crate::core::Tensor;
use crate::model::{BlockKind, Model, UnitDevices};
use anyhow::{bail, Result};

/// A per-unit property of a layer's nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitProperty {
    /// The slope of a hard sigmoid.
    Slope,
    /// The input offset of a hard sigmoid.
    Offset,
    /// The bound of a diode.
    Threshold,
}

impl UnitProperty {
    pub const ALL: [UnitProperty; 3] = [
        UnitProperty::Slope,
        UnitProperty::Offset,
        UnitProperty::Threshold,
    ];

    /// The `[analog]` key of its spread.
    pub fn key(self) -> &'static str {
        match self {
            UnitProperty::Slope => "slope_std",
            UnitProperty::Offset => "offset_std",
            UnitProperty::Threshold => "threshold_std",
        }
    }

    fn sigma(self, b: &BlockAnalog) -> f32 {
        match self {
            UnitProperty::Slope => b.slope_std,
            UnitProperty::Offset => b.offset_std,
            UnitProperty::Threshold => b.threshold_std,
        }
    }

    /// The layers of block `k` whose units have the property: the hard-sigmoid layers of a
    /// Hopfield block, the diode layers of a resistive one.
    fn layers(self, model: &Model, k: usize) -> Vec<usize> {
        let layout = &model.blocks[k].layout;
        let n = layout.layers.len();
        let hopfield = layout.kind == BlockKind::Hopfield;
        let has = |l: usize| match self {
            UnitProperty::Slope | UnitProperty::Offset => {
                hopfield && (l + 1 < n || layout.clamp_last)
            }
            UnitProperty::Threshold => !hopfield && l + 1 < n,
        };
        (0..n).filter(|&l| has(l)).collect()
    }
}

/// The draws `ξ` of one property of one layer's units.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitDraw {
    pub block: usize,
    pub layer: usize,
    pub property: UnitProperty,
    pub xi: Tensor,
}

impl UnitDraw {
    /// Its checkpoint key, e.g. `analog.slope_xi.blocks.0.layers.1`.
    pub fn key(&self) -> String {
        let p = match self.property {
            UnitProperty::Slope => "slope",
            UnitProperty::Offset => "offset",
            UnitProperty::Threshold => "threshold",
        };
        format!("analog.{p}_xi.blocks.{}.layers.{}", self.block, self.layer)
    }
}

/// The draws of every varied unit of `model` for the resolved `blocks`, from `rng(stream)`.
/// `block_set[k]` says whether block `k` set the key in its own table (so a message names
/// `analog.blocks.k.<key>`); a spread that applies to no layer is an error naming its key.
pub fn draw_units(
    blocks: &[BlockAnalog],
    block_set: &dyn Fn(usize, UnitProperty) -> bool,
    model: &Model,
    rng: &mut dyn FnMut(u64) -> rand_chacha::ChaCha8Rng,
) -> Result<Vec<UnitDraw>> {
    let mut out = Vec::new();
    for p in UnitProperty::ALL {
        let mut used = false;
        let mut any_set = false;
        for (k, b) in blocks.iter().enumerate() {
            let sigma = p.sigma(b);
            if sigma == 0.0 {
                continue;
            }
            any_set = true;
            let layers = p.layers(model, k);
            if layers.is_empty() && block_set(k, p) {
                bail!(
                    "analog.blocks.{k}.{}: block {k} has no {}",
                    p.key(),
                    no_units(p)
                );
            }
            used |= !layers.is_empty();
            for l in layers {
                // streams 2^62 + property·2^56 + block·2^32 + layer (weights use block·2^32 +
                // synapse, pulsed devices 2^63 + …)
                let code = match p {
                    UnitProperty::Slope => 0u64,
                    UnitProperty::Offset => 1,
                    UnitProperty::Threshold => 2,
                };
                let stream = (1 << 62) | (code << 56) | ((k as u64) << 32) | l as u64;
                let shape = model.blocks[k].layout.layers[l].batched(1);
                let xi = standard_normal(&shape[1..], &mut rng(stream));
                out.push(UnitDraw {
                    block: k,
                    layer: l,
                    property: p,
                    xi,
                });
            }
        }
        if any_set && !used {
            bail!("analog.{}: the model has no {}", p.key(), no_units(p));
        }
    }
    Ok(out)
}

fn no_units(p: UnitProperty) -> &'static str {
    match p {
        UnitProperty::Slope | UnitProperty::Offset => {
            "hard-sigmoid units (Hopfield blocks; use threshold_std for a resistive block's diodes)"
        }
        UnitProperty::Threshold => {
            "diode units (resistive blocks with hidden layers; use slope_std / offset_std for Hopfield blocks)"
        }
    }
}

/// Sets the per-unit devices of the physical circuit `model` from the draws.
pub fn apply_units(draws: &[UnitDraw], blocks: &[BlockAnalog], model: &mut Model) {
    for d in draws {
        let block = &mut model.blocks[d.block];
        let alpha = block.layout.alpha;
        let n = block.layout.layers.len();
        if block.units.len() < n {
            block.units.resize(n, UnitDevices::default());
        }
        let sigma = d.property.sigma(&blocks[d.block]);
        let u = &mut block.units[d.layer];
        match d.property {
            UnitProperty::Slope => u.slope = Some(unit_slopes(&d.xi, alpha, sigma)),
            UnitProperty::Offset => u.offset = Some(scaled_draws(&d.xi, sigma)),
            UnitProperty::Threshold => u.bound = Some(scaled_draws(&d.xi, sigma)),
        }
    }
}
