//! The one description of how equilibria are computed and turned into gradients: the
//! estimator, relaxation lengths (T1, T2), nudging strength β, the EP variant, the tolerance
//! criterion, the update orders and the BatchNorm bookkeeping. Presets define one, run
//! configurations hold one (`[algorithm]`), and `grad`, `gdd`, `bench` and the trainer derive
//! everything from it; command-line options override its fields.

use super::Algorithm;
use crate::model::config::short_f32;
use crate::model::feedforward::BnUpdates;
use crate::relax::{Order, Schedule};
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

/// Which two equilibria EP contrasts (Scellier et al.'s variants).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EpVariant {
    /// `(∂E(s^{+β}) − ∂E(s^{−β})) / 2β`: error O(β²) (SPEC §2.2).
    #[default]
    Centered,
    /// `(∂E(s^{+β}) − ∂E(s*)) / β`: error O(β).
    Positive,
    /// `(∂E(s*) − ∂E(s^{−β})) / β`: error O(β).
    Negative,
}

impl EpVariant {
    /// The nudging strengths `(β_a, β_b)` of the two states contrasted (`0` = the free state).
    pub fn betas(self, beta: f32) -> (f32, f32) {
        match self {
            EpVariant::Centered => (beta, -beta),
            EpVariant::Positive => (beta, 0.0),
            EpVariant::Negative => (0.0, -beta),
        }
    }
}

/// Gradient estimator and relaxation settings (`[algorithm]` in a run configuration).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlgoConfig {
    /// `ep`, `id-exact` or `id-reference`.
    pub name: Algorithm,
    /// Free-phase sweeps (the cap when `tol` is set); also used for evaluation.
    pub t1: usize,
    /// Nudged-phase (EP) or unrolled (ID) sweeps.
    pub t2: usize,
    /// Nudging strength β.
    #[serde(serialize_with = "short_f32::serialize")]
    pub beta: f32,
    /// EP variant: `centered` (default), `positive` or `negative`.
    #[serde(default)]
    pub variant: EpVariant,
    /// Free-phase tolerance; absent = always `t1` sweeps.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "short_f32::option::serialize"
    )]
    pub tol: Option<f32>,
    /// Per-sample tolerance criterion instead of the batch-global one.
    #[serde(default)]
    pub per_sample_tol: bool,
    /// Update order of the free phase (and of ID's unrolled sweeps).
    #[serde(default)]
    pub free_order: Order,
    /// Update order of EP's nudged phases.
    #[serde(default = "odd_first")]
    pub nudged_order: Order,
    /// `once-per-batch` (default) or `reference-compat` (update at every sweep).
    #[serde(default)]
    pub bn_updates: BnUpdates,
    /// Training: start each batch's free phase from the previous batch's free states
    /// (energy-based-learning does this) instead of zero; evaluation always starts from zero.
    #[serde(default)]
    pub warm_start: bool,
}

fn odd_first() -> Order {
    Order::OddFirst
}

impl AlgoConfig {
    /// EP with the paper's schedule: T1 free sweeps (even layers first), T2 sweeps per nudged
    /// phase (odd first), centered, fixed counts.
    pub fn ep(t1: usize, t2: usize, beta: f32) -> Self {
        AlgoConfig {
            name: Algorithm::Ep,
            t1,
            t2,
            beta,
            variant: EpVariant::Centered,
            tol: None,
            per_sample_tol: false,
            free_order: Order::EvenFirst,
            nudged_order: Order::OddFirst,
            bn_updates: BnUpdates::OncePerBatch,
            warm_start: false,
        }
    }

    /// The same settings with another estimator.
    pub fn with(&self, name: Algorithm) -> Self {
        AlgoConfig {
            name,
            ..self.clone()
        }
    }

    /// The free phase's schedule (T1, tolerance).
    pub fn free_schedule(&self) -> Schedule {
        Schedule {
            sweeps: self.t1,
            tol: self.tol,
            per_sample: self.per_sample_tol,
        }
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.t1 >= 1, "algorithm.t1 must be at least 1");
        ensure!(
            self.name != Algorithm::Ep || (self.beta != 0.0 && self.beta.is_finite()),
            "algorithm.beta must be non-zero and finite for EP (got {})",
            self.beta
        );
        if let Some(t) = self.tol {
            ensure!(
                t > 0.0 && t.is_finite(),
                "algorithm.tol must be positive (got {t}); remove it for fixed-length relaxations"
            );
        }
        Ok(())
    }
}
