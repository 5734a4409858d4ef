//! The one description of how equilibria are computed and turned into gradients: the
//! estimator, relaxation lengths (T1, T2), nudging strength β, the EP variant, the tolerance
//! criterion, the update orders and the BatchNorm bookkeeping. Presets define one, run
//! configurations hold one (`[algorithm]`), and `grad`, `gdd`, `bench` and the trainer derive
//! everything from it; command-line options override its fields.

use super::Algorithm;
use crate::model::config::short_f32;
use crate::model::feedforward::BnUpdates;
use crate::relax::{AndersonParams, Order, Schedule, Solver};
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

/// How EP's nudged phases are relaxed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NudgedForm {
    /// As offsets `d = s − s*` from the free equilibrium (round-off ∝ β; see
    /// [`crate::relax::OffsetBase`]).
    #[default]
    Offsets,
    /// As full states (round-off ∝ |s|; the reference implementation's way).
    States,
}

/// The convolutions of the free phase (`algorithm.free_convs`).
///
/// EP reads its gradient off the nudged phases' response around the free state `s*`, and
/// that response is not smooth in `s*`: `[σ(x* + βa) − σ(x* − βa)]/2β` has slope up to
/// `α/2β` where `x*` lies within `βa` of a kink of the hard sigmoid (and likewise at near-ties
/// of a max-pool). The free state's round-off is so amplified by ~`1/β`: measured against
/// float64 on the 6-block static-gradient-analysis setting (β 0.02), Winograd convolutions in
/// the free phase give EP errors of 1e-3–3e-3, exact (direct) ones 1e-4–5.5e-4, whatever the
/// nudged phases use (their round-off scales with the offsets; README, "EP accuracy").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FreeConvs {
    /// Direct (exact up to rounding) convolutions in the free phase of EP when
    /// `|β| < EXACT_FREE_PHASE_BELOW_BETA`; otherwise the model's `conv_algo`.
    #[default]
    Auto,
    /// Always the model's `conv_algo` (Winograd where it applies, by default).
    Model,
    /// Always direct convolutions in the free phase.
    Direct,
}

/// With [`FreeConvs::Auto`], EP's free phase uses direct convolutions below this `|β|`
/// (measured: at β 0.2 Winograd free phases give EP errors ≤ 5e-5, at β 0.02 up to 3e-3).
pub const EXACT_FREE_PHASE_BELOW_BETA: f32 = 0.1;

/// The fixed-point solver of every relaxation (`algorithm.solver`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SolverKind {
    /// Plain sweeps (the paper's).
    #[default]
    Plain,
    /// Anderson acceleration of the sweep map (`anderson_m`, `anderson_lambda`,
    /// `anderson_tau`; see [`crate::core::anderson`]).
    Anderson,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn anderson_m() -> usize {
    AndersonParams::default().m
}
fn anderson_lambda() -> f32 {
    AndersonParams::default().lambda
}
fn anderson_tau() -> f32 {
    AndersonParams::default().tau
}
fn is_anderson_m(v: &usize) -> bool {
    *v == anderson_m()
}
fn is_anderson_lambda(v: &f32) -> bool {
    *v == anderson_lambda()
}
fn is_anderson_tau(v: &f32) -> bool {
    *v == anderson_tau()
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
    /// Per-sample tolerance criterion instead of the batch-global one (free and nudged
    /// phases).
    #[serde(default)]
    pub per_sample_tol: bool,
    /// Tolerance of EP's nudged phases (measured on the offsets from the free state; needs
    /// `nudged_form = "offsets"`); absent = always `t2` sweeps (then the cap).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "short_f32::option::serialize"
    )]
    pub nudged_tol: Option<f32>,
    /// Fixed-point solver of the free and nudged phases: `plain` (default) or `anderson`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub solver: SolverKind,
    /// Anderson memory (default 6, as torchdeq).
    #[serde(default = "anderson_m", skip_serializing_if = "is_anderson_m")]
    pub anderson_m: usize,
    /// Anderson regularisation λ, relative to the mean squared residual (default 1e-4).
    #[serde(
        default = "anderson_lambda",
        skip_serializing_if = "is_anderson_lambda",
        serialize_with = "short_f32::serialize"
    )]
    pub anderson_lambda: f32,
    /// Anderson mixing τ in (0, 1] (default 1: the map values only).
    #[serde(
        default = "anderson_tau",
        skip_serializing_if = "is_anderson_tau",
        serialize_with = "short_f32::serialize"
    )]
    pub anderson_tau: f32,
    /// Update order of the free phase (and of ID's unrolled sweeps).
    #[serde(default)]
    pub free_order: Order,
    /// Update order of EP's nudged phases.
    #[serde(default = "odd_first")]
    pub nudged_order: Order,
    /// EP's nudged phases relaxed as `offsets` from the free state (default) or as full
    /// `states`.
    #[serde(default)]
    pub nudged_form: NudgedForm,
    /// Convolutions of the free phase: `auto` (default: direct for EP at small β), `model`
    /// (the model's `conv_algo`) or `direct` (see [`FreeConvs`]).
    #[serde(default, skip_serializing_if = "is_default")]
    pub free_convs: FreeConvs,
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
            nudged_tol: None,
            solver: SolverKind::Plain,
            anderson_m: anderson_m(),
            anderson_lambda: anderson_lambda(),
            anderson_tau: anderson_tau(),
            free_order: Order::EvenFirst,
            nudged_order: Order::OddFirst,
            nudged_form: NudgedForm::Offsets,
            free_convs: FreeConvs::Auto,
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

    /// Whether the free phase runs on direct convolutions (see [`FreeConvs`]).
    pub fn exact_free_phase(&self) -> bool {
        match self.free_convs {
            FreeConvs::Auto => {
                self.name == Algorithm::Ep && self.beta.abs() < EXACT_FREE_PHASE_BELOW_BETA
            }
            FreeConvs::Model => false,
            FreeConvs::Direct => true,
        }
    }

    /// The solver of every relaxation.
    pub fn solver(&self) -> Solver {
        match self.solver {
            SolverKind::Plain => Solver::Plain,
            SolverKind::Anderson => Solver::Anderson(AndersonParams {
                m: self.anderson_m,
                lambda: self.anderson_lambda,
                tau: self.anderson_tau,
            }),
        }
    }

    /// The free phase's schedule (T1, tolerance, solver).
    pub fn free_schedule(&self) -> Schedule {
        Schedule {
            sweeps: self.t1,
            tol: self.tol,
            per_sample: self.per_sample_tol,
            solver: self.solver(),
        }
    }

    /// The schedule of each of EP's nudged phases (T2, nudged tolerance, solver).
    pub fn nudged_schedule(&self) -> Schedule {
        Schedule {
            sweeps: self.t2,
            tol: self.nudged_tol,
            per_sample: self.per_sample_tol,
            solver: self.solver(),
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
        if let Some(t) = self.nudged_tol {
            ensure!(
                t > 0.0 && t.is_finite(),
                "algorithm.nudged_tol must be positive (got {t}); remove it for fixed-length nudged phases"
            );
            ensure!(
                self.name == Algorithm::Ep,
                "algorithm.nudged_tol applies to EP's nudged phases; {} unrolls exactly t2 sweeps (remove the key)",
                self.name
            );
            ensure!(
                self.nudged_form == NudgedForm::Offsets,
                "algorithm.nudged_tol needs algorithm.nudged_form = \"offsets\" (the criterion is measured on the offsets from the free state)"
            );
        }
        ensure!(
            self.anderson_m >= 1,
            "algorithm.anderson_m must be at least 1 (got {})",
            self.anderson_m
        );
        ensure!(
            self.anderson_lambda >= 0.0 && self.anderson_lambda.is_finite(),
            "algorithm.anderson_lambda must be non-negative and finite (got {})",
            self.anderson_lambda
        );
        ensure!(
            self.anderson_tau > 0.0 && self.anderson_tau <= 1.0,
            "algorithm.anderson_tau must be in (0, 1] (got {})",
            self.anderson_tau
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::config::RunConfig;

    fn resolve(sets: &[&str]) -> Result<RunConfig> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        RunConfig::resolve(Some("splitting_small_2block"), None, None, &sets, None)
    }

    #[test]
    fn solver_keys_parse_and_bad_values_name_the_key() {
        let c = resolve(&[
            "algorithm.solver=\"anderson\"",
            "algorithm.anderson_m=3",
            "algorithm.nudged_tol=1e-4",
        ])
        .unwrap();
        assert_eq!(c.algorithm.solver, SolverKind::Anderson);
        assert_eq!(
            c.algorithm.nudged_schedule().solver,
            Solver::Anderson(AndersonParams {
                m: 3,
                ..Default::default()
            })
        );
        assert_eq!(c.algorithm.nudged_schedule().tol, Some(1e-4));
        for (set, key) in [
            ("algorithm.anderson_m=0", "algorithm.anderson_m"),
            ("algorithm.anderson_tau=2", "algorithm.anderson_tau"),
            ("algorithm.anderson_lambda=-1", "algorithm.anderson_lambda"),
            ("algorithm.nudged_tol=0", "algorithm.nudged_tol"),
            ("algorithm.solver=\"andersen\"", "algorithm.solver"),
        ] {
            let e = resolve(&[set])
                .and_then(|c| c.algorithm.validate().map(|_| c))
                .unwrap_err();
            assert!(format!("{e:#}").contains(key), "{set}: {e:#}");
        }
        // the nudged criterion is measured on offsets and applies to EP only
        let mut c = AlgoConfig::ep(10, 5, 0.1);
        c.nudged_tol = Some(1e-3);
        c.nudged_form = NudgedForm::States;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("nudged_form"));
        c.nudged_form = NudgedForm::Offsets;
        c.name = Algorithm::IdExact;
        assert!(c.validate().unwrap_err().to_string().contains("nudged_tol"));
        // defaults are not written out: existing run configurations stay as they were
        let text = toml::to_string(&AlgoConfig::ep(10, 5, 0.1)).unwrap();
        assert!(
            !text.contains("anderson") && !text.contains("solver"),
            "{text}"
        );
    }

    #[test]
    fn free_phase_convolutions_are_exact_for_ep_at_small_beta_unless_asked_otherwise() {
        let ep = |beta| AlgoConfig::ep(10, 5, beta);
        assert!(ep(0.02).exact_free_phase() && ep(-0.05).exact_free_phase());
        assert!(!ep(0.1).exact_free_phase() && !ep(0.2).exact_free_phase());
        // ID's gradient does not amplify the free state's round-off
        assert!(!ep(0.02).with(Algorithm::IdExact).exact_free_phase());
        let with = |free_convs, beta| AlgoConfig {
            free_convs,
            ..ep(beta)
        };
        assert!(!with(FreeConvs::Model, 0.02).exact_free_phase());
        assert!(with(FreeConvs::Direct, 0.5).exact_free_phase());
        let c = resolve(&["algorithm.free_convs=\"model\""]).unwrap();
        assert_eq!(c.algorithm.free_convs, FreeConvs::Model);
        let e = resolve(&["algorithm.free_convs=\"winograd\""]).unwrap_err();
        assert!(format!("{e:#}").contains("free_convs"), "{e:#}");
        assert!(!toml::to_string(&ep(0.02)).unwrap().contains("free_convs"));
    }
}
