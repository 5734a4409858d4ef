//! Energy-based weights held by differential pairs of pulsed conductances,
//! `w = G⁺ − G⁻` (aihwkit's `OneSidedUnitCell`; kernels in [`crate::core::analog_pair`]).
//!
//! Each conductance is its own device of the block's model (ConstantStep or SoftBounds) with
//! its own pulse step `dw = dw_min·(1 + dw_min_dtod·ξ)` and its own write noise; `G⁺` lives in
//! `[0, w_max]` and `G⁻` in `[0, −w_min]`. The optimiser's desired change is written by up
//! pulses only — on `G⁺` to increase `w`, on `G⁻` to decrease it — and every `refresh_every`
//! optimiser steps the saturating pairs are read, reset and rewritten onto one conductance.
//! The conductances are the circuit's state: checkpoints store them (`analog.g_plus.<name>`,
//! `analog.g_minus.<name>`, with the steps `analog.dw_plus.<name>`, `analog.dw_minus.<name>`).

use super::config::PulseDevice;
use crate::core::analog::PulseResponse;
use crate::core::analog_pair as kern;
use crate::core::Tensor;
use crate::model::ParamId;
use anyhow::Result;
use rand::Rng;

/// Checkpoint key prefixes of a pair's tensors.
pub(super) const G_PLUS: &str = "analog.g_plus.";
pub(super) const G_MINUS: &str = "analog.g_minus.";
pub(super) const DW_PLUS: &str = "analog.dw_plus.";
pub(super) const DW_MINUS: &str = "analog.dw_minus.";

/// The differential pairs holding one weight tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct PairDevices {
    pub id: ParamId,
    pub g_plus: Tensor,
    pub g_minus: Tensor,
    /// Pulse step of every `G⁺` device.
    pub dw_plus: Tensor,
    /// Pulse step of every `G⁻` device.
    pub dw_minus: Tensor,
}

/// Pulses fired on the pairs of one tensor in one optimiser step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairPulses {
    pub update: u64,
    pub refresh: u64,
}

/// The responses of the `G⁺` and `G⁻` devices of a block's device model.
fn responses(p: &PulseDevice) -> (PulseResponse, PulseResponse) {
    let one = |hi: f32| PulseResponse {
        soft_bounds: p.soft_bounds,
        lo: 0.0,
        hi,
        up_down: p.up_down,
        write_noise: p.dw_min_std,
        max_pulses: p.max_pulses,
    };
    (one(p.w_max), one(-p.w_min))
}

impl PairDevices {
    /// The pairs holding `w` (`G⁺ = clamp(w, 0, w_max)`, `G⁻ = clamp(−w, 0, −w_min)`) with the
    /// given device steps.
    pub fn new(
        id: ParamId,
        w: &Tensor,
        p: &PulseDevice,
        dw_plus: Tensor,
        dw_minus: Tensor,
    ) -> Self {
        let (g_plus, g_minus) = kern::pair_from_weights(w, p.w_max, -p.w_min);
        PairDevices {
            id,
            g_plus,
            g_minus,
            dw_plus,
            dw_minus,
        }
    }

    /// Writes the desired weights `target` by one-sided pulses, then (when optimiser step
    /// `step` is a multiple of `refresh_every`) refreshes the saturating pairs; `w` becomes
    /// `G⁺ − G⁻`.
    pub fn program(
        &mut self,
        w: &mut Tensor,
        p: &PulseDevice,
        step: u64,
        rng: &mut impl Rng,
    ) -> Result<PairPulses> {
        let pair = p.pair.expect("a differential-pair block");
        let (rp, rm) = responses(p);
        let update = kern::program_pair(
            &mut self.g_plus,
            &mut self.g_minus,
            w,
            &self.dw_plus,
            &self.dw_minus,
            &rp,
            &rm,
            rng,
        )?;
        let mut refresh = 0;
        if pair.refresh_every > 0 && step % pair.refresh_every == 0 {
            let th = kern::RefreshThresholds {
                upper: pair.upper,
                lower: pair.lower,
            };
            refresh = kern::refresh_pair(
                &mut self.g_plus,
                &mut self.g_minus,
                &self.dw_plus,
                &self.dw_minus,
                &rp,
                &rm,
                th,
                rng,
            )?
            .pulses;
        }
        kern::pair_weights(w, &self.g_plus, &self.g_minus)?;
        Ok(PairPulses { update, refresh })
    }

    /// The four tensors under their checkpoint key prefixes.
    pub(super) fn tensors(&self) -> [(&'static str, &Tensor); 4] {
        [
            (G_PLUS, &self.g_plus),
            (G_MINUS, &self.g_minus),
            (DW_PLUS, &self.dw_plus),
            (DW_MINUS, &self.dw_minus),
        ]
    }

    pub(super) fn tensors_mut(&mut self) -> [(&'static str, &mut Tensor); 4] {
        [
            (G_PLUS, &mut self.g_plus),
            (G_MINUS, &mut self.g_minus),
            (DW_PLUS, &mut self.dw_plus),
            (DW_MINUS, &mut self.dw_minus),
        ]
    }
}
