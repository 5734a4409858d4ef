//! Running a relaxation to its equilibrium: how many sweeps, when to stop, and the solver
//! (plain sweeps or Anderson acceleration of the sweep map).
//!
//! **Criterion** (SPEC §1.3, the rebuttal's relative criterion). After sweep `t` the measure
//! is `m_t = mean_l ‖x_l^t − x_l^{t−1}‖ / max(‖x_l^{t−1}‖, 1e-6)` over the block's layers,
//! with `x = s` in the free phase and `x = d = s − s*` (the offset from the free equilibrium)
//! in EP's nudged phases relaxed in offset form: there the change of the state is ∝ β and
//! would pass any ε relative to `‖s‖`. Batch-global: norms over the whole batch, stop when
//! `m_t < ε`; per-sample: each sample's own `m_t`, and a sample below `ε` is frozen (no
//! longer updated) while the others go on. `sweeps` is the cap either way.
//!
//! **Anderson** (see [`crate::core::anderson`]): one sweep is the fixed-point map `g`; after
//! each evaluation `g(x_t)` the next iterate mixes the last `m` map values per sample and is
//! projected back into the layers' domains ([`Relaxation::set_iterate`]). The measure above
//! is then the relative residual `‖g(x_t) − x_t‖ / ‖x_t‖`, the same formula. At the end each
//! sample gets the map value of lowest residual seen. Safeguard: when a sample's residual
//! grows from one map evaluation to the next, its history is dropped (a restart, counted in
//! the report) and it continues from the plain step — the sweep map of clamped layers and
//! max-pooled couplings is only piecewise linear, and a mix across a change of the active
//! set can otherwise stall. With update noise (an analog circuit)
//! `g` is the noisy map: the noise enters the history like any other change, the residual
//! does not fall below the noise level, and a tolerance under it runs to the cap.

use super::{Order, Relaxation, Tape};
use crate::core::anderson::AndersonHistory;
pub use crate::core::anderson::AndersonParams;
use crate::core::Tensor;
use crate::energy::Interaction;
use anyhow::{ensure, Result};

/// How the equilibrium is searched for.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Solver {
    /// Plain sweeps: `x_{t+1} = g(x_t)`.
    #[default]
    Plain,
    /// Anderson acceleration of the sweep map.
    Anderson(AndersonParams),
}

/// How long to relax and when to stop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Number of sweeps (the cap when `tol` is set).
    pub sweeps: usize,
    /// Stop when the convergence measure drops below `tol`.
    pub tol: Option<f32>,
    /// Per-sample criterion: each sample stops updating on its own.
    pub per_sample: bool,
    pub solver: Solver,
}

impl Schedule {
    pub fn fixed(sweeps: usize) -> Self {
        Schedule {
            sweeps,
            tol: None,
            per_sample: false,
            solver: Solver::Plain,
        }
    }
}

/// Outcome of [`relax`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RelaxReport {
    /// Sweeps run (map evaluations).
    pub sweeps: usize,
    pub converged: bool,
    /// The measure after the last sweep.
    pub final_measure: f64,
    /// Per-sample criterion: the sweep at which each sample stopped (or the cap).
    pub sample_sweeps: Vec<usize>,
    /// The batch measure after every sweep (the relative residual under Anderson).
    pub residuals: Vec<f64>,
    /// Anderson: per-sample solves that were ill-conditioned and fell back to a plain sweep.
    pub fallbacks: usize,
    /// Anderson: per-sample restarts (the residual grew after a mix; the history is dropped).
    pub restarts: usize,
}

impl RelaxReport {
    /// Mean over the samples of the sweeps each needed (the sweeps run without a per-sample
    /// criterion).
    pub fn mean_sample_sweeps(&self) -> f64 {
        if self.sample_sweeps.is_empty() {
            self.sweeps as f64
        } else {
            self.sample_sweeps.iter().sum::<usize>() as f64 / self.sample_sweeps.len() as f64
        }
    }
}

/// The lowest-residual map value of each sample seen so far.
struct Best {
    measure: Vec<f64>,
    value: Vec<Tensor>,
}

impl Best {
    /// Keeps the rows of `value` whose sample measure improved.
    fn update(&mut self, per_sample: &[f64], value: &[Tensor]) {
        if self.value.is_empty() {
            self.value = value.to_vec();
            self.measure = per_sample.to_vec();
            return;
        }
        let better: Vec<bool> = per_sample
            .iter()
            .zip(&self.measure)
            .map(|(m, b)| m < b)
            .collect();
        for (dst, src) in self.value.iter_mut().zip(value) {
            crate::core::ops::copy_rows(src, dst, &better).expect("same shapes");
        }
        for (b, m) in self.measure.iter_mut().zip(per_sample) {
            *b = b.min(*m);
        }
    }
}

/// Runs sweeps according to `schedule` (SPEC §1.3; see the module documentation).
pub fn relax(
    r: &mut Relaxation<'_>,
    order: Order,
    cost: Option<&dyn Interaction>,
    schedule: Schedule,
    mut tape: Option<&mut Tape>,
) -> Result<RelaxReport> {
    let b = r.state.layers[0].dim0();
    let mut frozen = vec![false; b];
    let mut sample_sweeps = vec![schedule.sweeps; b];
    let mut report = RelaxReport {
        final_measure: f64::INFINITY,
        ..Default::default()
    };
    let mut anderson = match schedule.solver {
        Solver::Plain => None,
        Solver::Anderson(p) => {
            ensure!(
                tape.is_none(),
                "Anderson acceleration cannot be backpropagated through (ID unrolls plain sweeps)"
            );
            ensure!(p.m >= 1, "Anderson memory m must be at least 1");
            let best = Best {
                measure: Vec::new(),
                value: Vec::new(),
            };
            Some((AndersonHistory::new(p, b), best, vec![f64::INFINITY; b]))
        }
    };
    let use_mask = schedule.per_sample && schedule.tol.is_some();
    for t in 0..schedule.sweeps {
        crate::hooks::check_cancelled()?;
        let x = anderson.as_ref().map(|_| r.iterate());
        let stats = r.sweep(
            order,
            cost,
            use_mask.then_some(frozen.as_slice()),
            tape.as_deref_mut(),
        )?;
        report.sweeps = t + 1;
        report.final_measure = stats.measure;
        report.residuals.push(stats.measure);
        let mut stop = false;
        if let Some(tol) = schedule.tol {
            if schedule.per_sample {
                for (i, m) in stats.per_sample.iter().enumerate() {
                    if !frozen[i] && *m < tol as f64 {
                        frozen[i] = true;
                        sample_sweeps[i] = t + 1;
                    }
                }
                stop = frozen.iter().all(|&f| f);
            } else {
                stop = stats.measure < tol as f64;
            }
            report.converged = stop;
        }
        if let (Some((hist, best, last)), Some(x)) = (anderson.as_mut(), x) {
            let g = r.iterate();
            best.update(&stats.per_sample, &g);
            if stop || t + 1 == schedule.sweeps {
                break;
            }
            // safeguard: a mix whose residual grew restarts that sample from the plain step
            for (i, (m, l)) in stats.per_sample.iter().zip(last.iter_mut()).enumerate() {
                if *m > *l {
                    hist.restart(i);
                    report.restarts += 1;
                }
                *l = *m;
            }
            hist.push(&x, &g)?;
            let active: Vec<bool> = frozen.iter().map(|f| !f).collect();
            let mut next = g;
            let fell_back = hist.mix(&active, &mut next);
            report.fallbacks += fell_back.iter().filter(|f| **f).count();
            r.set_iterate(next)?;
        } else if stop {
            break;
        }
    }
    if let Some((_, best, _)) = anderson {
        if !best.value.is_empty() {
            r.set_iterate(best.value)?;
        }
    }
    if schedule.per_sample {
        report.sample_sweeps = sample_sweeps;
    }
    Ok(report)
}
