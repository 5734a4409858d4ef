//! Solver study (issue 12): for one preset and one batch, EP with the preset's fixed
//! schedule and EP with each solver (plain sweeps, per-sample criterion, Anderson) at each
//! tolerance ε (free and nudged phases alike), against ID-exact with the fixed schedule:
//! sweeps per block and phase, wall time per EP step, and the cosine and relative error of
//! every parameter tensor.

use super::gdd::{agreement, total_rel_error, Agreement};
use crate::core::Tensor;
use crate::grad::{compute_gradients, sweep_table, AlgoConfig, Algorithm, PhaseRecord, SolverKind};
use crate::model::{Model, PreparedBlock};
use anyhow::{ensure, Result};
use serde::Serialize;
use std::time::Instant;

/// One way of computing equilibria in the study.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StudySolver {
    /// The preset's fixed T1/T2 (no tolerance): the baseline.
    Fixed,
    /// Plain sweeps, batch-global criterion.
    Plain,
    /// Plain sweeps, per-sample criterion.
    PerSample,
    /// Anderson acceleration, batch-global criterion.
    Anderson,
}

impl std::str::FromStr for StudySolver {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "fixed" => StudySolver::Fixed,
            "plain" => StudySolver::Plain,
            "per-sample" => StudySolver::PerSample,
            "anderson" => StudySolver::Anderson,
            _ => {
                anyhow::bail!("unknown solver `{s}`: expected fixed, plain, per-sample or anderson")
            }
        })
    }
}

impl StudySolver {
    pub fn name(self) -> &'static str {
        match self {
            StudySolver::Fixed => "fixed",
            StudySolver::Plain => "plain",
            StudySolver::PerSample => "per-sample",
            StudySolver::Anderson => "anderson",
        }
    }

    /// The EP settings of this solver at tolerances `eps = (free, nudged)` over `base` (the
    /// preset's), with the sweep caps `caps = (T1 cap, T2 cap)`.
    pub fn config(self, base: &AlgoConfig, eps: (f32, f32), caps: (usize, usize)) -> AlgoConfig {
        let mut c = base.with(Algorithm::Ep);
        if self == StudySolver::Fixed {
            c.tol = None;
            c.nudged_tol = None;
            c.per_sample_tol = false;
            c.solver = SolverKind::Plain;
            return c;
        }
        c.t1 = caps.0;
        c.t2 = caps.1;
        c.tol = Some(eps.0);
        c.nudged_tol = Some(eps.1);
        c.per_sample_tol = self == StudySolver::PerSample;
        c.solver = match self {
            StudySolver::Anderson => SolverKind::Anderson,
            _ => SolverKind::Plain,
        };
        c
    }
}

/// One configuration's result.
#[derive(Clone, Debug, Serialize)]
pub struct StudyRow {
    pub solver: StudySolver,
    /// The free phase's tolerance (`None` for the fixed schedule).
    pub eps: Option<f32>,
    /// The nudged phases' tolerance (`None` for the fixed schedule).
    pub nudged_eps: Option<f32>,
    /// Median wall time of an EP step (free phase + nudged phases + gradients), seconds.
    pub seconds: f64,
    /// Every timed run, in order.
    pub times: Vec<f64>,
    /// Sweeps, residual and stops of every block and phase (of the first run).
    pub phases: Vec<PhaseRecord>,
    /// Sweeps of all blocks and phases together.
    pub total_sweeps: usize,
    /// Per parameter tensor (reference names), against ID-exact.
    pub tensors: Vec<(String, Agreement)>,
    pub min_cosine: f64,
    pub mean_cosine: f64,
    /// `‖g_EP − g_ID‖ / ‖g_ID‖` over all tensors at once.
    pub total_rel_error: f64,
}

/// The whole study.
#[derive(Clone, Debug, Serialize)]
pub struct StudyReport {
    pub preset: String,
    pub batch: usize,
    pub threads: usize,
    /// The fixed schedule of the baseline and of ID-exact.
    pub t1: usize,
    pub t2: usize,
    pub beta: f32,
    /// Sweeps (free, unrolled) of the ID-exact reference.
    pub id_t1: usize,
    pub id_t2: usize,
    /// Sweep caps of the tolerance runs.
    pub cap_t1: usize,
    pub cap_t2: usize,
    pub rows: Vec<StudyRow>,
}

/// What to run.
pub struct StudyPlan<'a> {
    pub preset: &'a str,
    pub model: &'a Model,
    pub kernels: &'a [PreparedBlock],
    pub x: &'a Tensor,
    pub labels: &'a [u32],
    pub base: AlgoConfig,
    pub solvers: Vec<StudySolver>,
    pub eps: Vec<f32>,
    /// The nudged phases' tolerances (every one with every `eps`); empty: each `eps` for
    /// the nudged phases too.
    pub nudged_eps: Vec<f32>,
    pub caps: (usize, usize),
    /// Timed runs per configuration (interleaved round-robin over the configurations).
    pub reps: usize,
    /// Sweeps (free, unrolled) of the ID-exact reference; `None`: the base's T1, T2.
    pub id_sweeps: Option<(usize, usize)>,
}

/// Runs the study; `progress(message)` after each configuration's first run.
pub fn run_study(plan: &StudyPlan<'_>, mut progress: impl FnMut(&str)) -> Result<StudyReport> {
    ensure!(plan.reps >= 1, "--reps must be at least 1");
    ensure!(!plan.solvers.is_empty(), "no solver to study");
    let (m, k, x, y) = (plan.model, plan.kernels, plan.x, plan.labels);
    let mut id_cfg = StudySolver::Fixed
        .config(&plan.base, (0.0, 0.0), plan.caps)
        .with(Algorithm::IdExact);
    if let Some((t1, t2)) = plan.id_sweeps {
        id_cfg.t1 = t1;
        id_cfg.t2 = t2;
    }
    let id = compute_gradients(m, k, x, y, &id_cfg)?;
    let mut configs: Vec<(StudySolver, Option<(f32, f32)>)> = Vec::new();
    for &s in &plan.solvers {
        if s == StudySolver::Fixed {
            configs.push((s, None));
        } else {
            for &e in &plan.eps {
                if plan.nudged_eps.is_empty() {
                    configs.push((s, Some((e, e))));
                } else {
                    configs.extend(plan.nudged_eps.iter().map(|&n| (s, Some((e, n)))));
                }
            }
        }
    }
    let cfgs: Vec<AlgoConfig> = configs
        .iter()
        .map(|&(s, e)| s.config(&plan.base, e.unwrap_or((0.0, 0.0)), plan.caps))
        .collect();
    for c in &cfgs {
        c.validate()?;
    }
    let mut times = vec![Vec::new(); cfgs.len()];
    let mut rows: Vec<Option<StudyRow>> = vec![None; cfgs.len()];
    // one untimed warm-up, then `reps` rounds over every configuration
    compute_gradients(m, k, x, y, &cfgs[0])?;
    for _ in 0..plan.reps {
        for (i, c) in cfgs.iter().enumerate() {
            let t = Instant::now();
            let out = compute_gradients(m, k, x, y, c)?;
            times[i].push(t.elapsed().as_secs_f64());
            if rows[i].is_none() {
                let tensors: Vec<(String, Agreement)> = out
                    .grads
                    .entries
                    .iter()
                    .zip(&id.grads.entries)
                    .map(|((pid, a), (_, b))| (m.param_name(*pid), agreement(a, b)))
                    .collect();
                let cos: Vec<f64> = tensors.iter().map(|(_, a)| a.cosine).collect();
                let phases = sweep_table(&out);
                let (solver, eps) = configs[i];
                progress(&format!(
                    "{:<10} eps {:<14} {:.3} s, {} sweeps, min cosine {:.6}",
                    solver.name(),
                    eps.map_or("-".to_string(), |(f, n)| if f == n {
                        format!("{f:e}")
                    } else {
                        format!("{f:e}/{n:e}")
                    }),
                    times[i][0],
                    phases.iter().map(|p| p.sweeps).sum::<usize>(),
                    cos.iter().cloned().fold(f64::INFINITY, f64::min)
                ));
                rows[i] = Some(StudyRow {
                    solver,
                    eps: eps.map(|e| e.0),
                    nudged_eps: eps.map(|e| e.1),
                    seconds: 0.0,
                    times: Vec::new(),
                    total_sweeps: phases.iter().map(|p| p.sweeps).sum(),
                    phases,
                    min_cosine: cos.iter().cloned().fold(f64::INFINITY, f64::min),
                    mean_cosine: cos.iter().sum::<f64>() / cos.len().max(1) as f64,
                    total_rel_error: total_rel_error(&out.grads, &id.grads),
                    tensors,
                });
            }
        }
    }
    let rows = rows
        .into_iter()
        .zip(times)
        .map(|(r, mut t)| {
            let mut r = r.expect("every configuration ran");
            r.times = t.clone();
            t.sort_by(f64::total_cmp);
            r.seconds = t[t.len() / 2];
            r
        })
        .collect();
    Ok(StudyReport {
        preset: plan.preset.to_string(),
        batch: x.dim0(),
        threads: rayon::current_num_threads(),
        t1: plan.base.t1,
        t2: plan.base.t2,
        beta: plan.base.beta,
        id_t1: id_cfg.t1,
        id_t2: id_cfg.t2,
        cap_t1: plan.caps.0,
        cap_t2: plan.caps.1,
        rows,
    })
}

impl StudyReport {
    /// One CSV line per configuration (see [`csv`]).
    pub fn csv(&self) -> String {
        csv(std::slice::from_ref(self))
    }
}

/// One CSV line per configuration of every report: preset, solver, ε (free, nudged), time, sweeps per block
/// and phase (as many block columns as the largest model), cosine and relative error.
pub fn csv(reports: &[StudyReport]) -> String {
    let blocks = reports
        .iter()
        .flat_map(|r| {
            r.rows
                .iter()
                .flat_map(|row| row.phases.iter().map(|p| p.block + 1))
        })
        .max()
        .unwrap_or(0);
    let mut out = String::from("preset,batch,solver,eps,nudged_eps,seconds");
    for k in 0..blocks {
        for p in ["free", "plus", "minus"] {
            out.push_str(&format!(",b{k}_{p}_sweeps"));
        }
    }
    out.push_str(",total_sweeps,min_cosine,mean_cosine,total_rel_error\n");
    for rep in reports {
        for r in &rep.rows {
            out.push_str(&format!(
                "{},{},{},{},{},{:.6}",
                rep.preset,
                rep.batch,
                r.solver.name(),
                r.eps.map_or(String::new(), |e| format!("{e:e}")),
                r.nudged_eps.map_or(String::new(), |e| format!("{e:e}")),
                r.seconds
            ));
            for k in 0..blocks {
                for p in ["free", "plus", "minus"] {
                    let s = r
                        .phases
                        .iter()
                        .find(|q| q.block == k && q.phase == p)
                        .map_or(String::new(), |q| q.sweeps.to_string());
                    out.push_str(&format!(",{s}"));
                }
            }
            out.push_str(&format!(
                ",{},{:.8},{:.8},{:.6e}\n",
                r.total_sweeps, r.min_cosine, r.mean_cosine, r.total_rel_error
            ));
        }
    }
    out
}
