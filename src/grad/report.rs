//! What the relaxations of one gradient computation did, per block and phase: sweeps run,
//! the mean sweeps per sample (per-sample criterion), the final convergence measure
//! (relative residual), whether the criterion was met and Anderson's fallbacks.

use super::StepOutput;
use crate::relax::RelaxReport;
use serde::Serialize;

/// One relaxation of one block.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PhaseRecord {
    pub block: usize,
    /// `free`, `plus` (β_a) or `minus` (β_b).
    pub phase: &'static str,
    pub sweeps: usize,
    pub mean_sample_sweeps: f64,
    /// The convergence measure after the last sweep.
    pub residual: f64,
    /// The tolerance was met (always `false` without one).
    pub converged: bool,
    pub fallbacks: usize,
    pub restarts: usize,
}

impl PhaseRecord {
    pub fn new(block: usize, phase: &'static str, r: &RelaxReport) -> Self {
        PhaseRecord {
            block,
            phase,
            sweeps: r.sweeps,
            mean_sample_sweeps: r.mean_sample_sweeps(),
            residual: r.final_measure,
            converged: r.converged,
            fallbacks: r.fallbacks,
            restarts: r.restarts,
        }
    }
}

impl std::fmt::Display for PhaseRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "block {} {:<5} sweeps {:>5} (per sample {:>7.1})  residual {:.3e}{}{}{}",
            self.block,
            self.phase,
            self.sweeps,
            self.mean_sample_sweeps,
            self.residual,
            if self.converged { "  converged" } else { "" },
            if self.fallbacks > 0 {
                format!("  anderson fallbacks {}", self.fallbacks)
            } else {
                String::new()
            },
            if self.restarts > 0 {
                format!("  restarts {}", self.restarts)
            } else {
                String::new()
            }
        )
    }
}

/// Every relaxation of a gradient computation: each block's free phase, then EP's nudged
/// phases (ID's unrolled sweeps are a fixed count and have no report).
pub fn sweep_table(out: &StepOutput) -> Vec<PhaseRecord> {
    let mut rows: Vec<PhaseRecord> = out
        .free
        .reports
        .iter()
        .enumerate()
        .map(|(k, r)| PhaseRecord::new(k, "free", r))
        .collect();
    for (k, pair) in out.nudged_reports.iter().enumerate() {
        for (name, r) in ["plus", "minus"].iter().zip(pair) {
            if let Some(r) = r {
                rows.push(PhaseRecord::new(k, name, r));
            }
        }
    }
    rows.sort_by_key(|r| r.block);
    rows
}
