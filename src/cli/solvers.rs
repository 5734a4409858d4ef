//! `ffebm solvers`: for one preset and one batch, sweeps the tolerance ε over the solvers
//! (fixed schedule, plain, per-sample, Anderson) and reports sweeps, wall time and the EP
//! vs ID-exact agreement per tensor (see [`crate::analysis::solvers`]).

use super::common::{errln, outln, Global, ModelArgs, PhaseArgs, SolverArgs};
use crate::analysis::plot::{SweepFigure, SweepSeries};
use crate::analysis::solvers::{run_study, StudyPlan, StudySolver};
use crate::model::prepare;
use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct SolversArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub batch: super::analysis::BatchArgs,
    /// The fixed schedule of the baseline and of ID-exact (default: the preset's T1/T2/β).
    #[command(flatten)]
    pub phases: PhaseArgs,
    /// Anderson settings (`--anderson-m` etc.; the other options of this group are ignored).
    #[command(flatten)]
    pub solver: SolverArgs,
    /// Tolerances ε of the free and nudged phases.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1e-2,3e-3,1e-3,3e-4,1e-4,3e-5,1e-5"
    )]
    pub eps: Vec<f32>,
    /// Tolerances of the nudged phases, each run with every --eps of the free phase
    /// (default: each --eps for the nudged phases too).
    #[arg(long, value_delimiter = ',')]
    pub nudged_eps: Vec<f32>,
    /// Solvers: fixed (the preset's T1/T2), plain, per-sample, anderson.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fixed,plain,per-sample,anderson"
    )]
    pub solvers: Vec<StudySolver>,
    /// Sweep caps of the tolerance runs (free, nudged); default 10×T1 and 10×T2.
    #[arg(long, value_delimiter = ',')]
    pub caps: Option<Vec<usize>>,
    /// Sweeps of the ID-exact reference (free, unrolled); default: the fixed schedule's T1
    /// and T2.
    #[arg(long, value_delimiter = ',')]
    pub id_sweeps: Option<Vec<usize>>,
    /// Timed runs per configuration (median reported; round-robin over configurations
    /// after one warm-up).
    #[arg(long, default_value_t = 3, value_parser = super::common::positive)]
    pub reps: usize,
    /// Splitting table: run the study for each of these presets (instead of --preset; e.g.
    /// `splitting_small_1block,splitting_small_2block,splitting_small_3block` with one
    /// --eps) and write splitting.csv and splitting.png (sweeps per block and phase, time
    /// per EP step) besides each preset's own files in OUT/PRESET/.
    #[arg(long, value_delimiter = ',')]
    pub table: Vec<String>,
    /// Output directory: solvers.json, solvers.csv, solvers.png.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(g: &Global, a: SolversArgs) -> Result<()> {
    if !a.table.is_empty() {
        return table(g, a);
    }
    study(g, &a, &a.out).map(|_| ())
}

/// The splitting table: one study per preset with the same criterion.
fn table(g: &Global, a: SolversArgs) -> Result<()> {
    anyhow::ensure!(
        a.model.preset.is_none() && a.model.model.is_none(),
        "--table runs its own presets: leave out --preset/--model"
    );
    for p in &a.table {
        crate::model::presets::preset(p, None).with_context(|| format!("--table {p}"))?;
    }
    let mut reports = Vec::new();
    for p in &a.table {
        let mut one = a.clone();
        one.table = Vec::new();
        one.model.preset = Some(p.clone());
        reports.push(study(g, &one, &a.out.join(p))?);
    }
    crate::io::atomic_write(
        &a.out.join("splitting.csv"),
        crate::analysis::solvers::csv(&reports).as_bytes(),
    )?;
    // one bar per preset and solver: sweeps of every block and phase, stacked
    let mut categories = Vec::new();
    let mut stacks: Vec<Vec<(String, f64)>> = Vec::new();
    for rep in &reports {
        for r in &rep.rows {
            let label = format!(
                "{} {} {:.1}s",
                short(&rep.preset),
                r.solver.name(),
                r.seconds
            );
            categories.push(label);
            stacks.push(
                r.phases
                    .iter()
                    .map(|p| (format!("block {} {}", p.block, p.phase), p.sweeps as f64))
                    .collect(),
            );
        }
    }
    let mut components: Vec<String> = Vec::new();
    for st in &stacks {
        for (c, _) in st {
            if !components.contains(c) {
                components.push(c.clone());
            }
        }
    }
    let values = components
        .iter()
        .map(|c| {
            stacks
                .iter()
                .map(|st| st.iter().find(|(n, _)| n == c).map_or(0.0, |(_, v)| *v))
                .collect()
        })
        .collect();
    let fig = crate::analysis::plot::StackedBars {
        title: format!(
            "sweeps per EP step by block and phase, ε {}",
            a.eps
                .iter()
                .map(|e| format!("{e:e}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        categories,
        components,
        values,
        y_label: "sweeps".into(),
    };
    fig.save(&a.out.join("splitting.png"))?;
    outln!("{}", crate::analysis::solvers::csv(&reports).trim_end());
    outln!("wrote {}", a.out.display());
    Ok(())
}

/// `splitting_small_2block` → `2b`.
fn short(preset: &str) -> String {
    let last = preset.rsplit('_').next().unwrap_or(preset);
    match last.strip_suffix("block") {
        Some(n) => format!("{n}b"),
        None => last.to_string(),
    }
}

/// One study, written to `out`.
fn study(
    g: &Global,
    a: &SolversArgs,
    out: &std::path::Path,
) -> Result<crate::analysis::solvers::StudyReport> {
    let (model, preset, _) = a.model.build(g.seed)?;
    let (x, y, source) = a.batch.load(&model, preset.as_ref(), 64)?;
    let mut base = a.phases.resolve(preset.as_ref())?;
    base.tol = None;
    a.solver.apply(&mut base)?;
    base.validate()?;
    for (flag, list) in [("eps", &a.eps), ("nudged-eps", &a.nudged_eps)] {
        for &e in list {
            anyhow::ensure!(
                e > 0.0 && e.is_finite(),
                "--{flag} {e}: tolerances must be positive"
            );
        }
    }
    let pair = |flag: &str, v: &Option<Vec<usize>>| -> Result<Option<(usize, usize)>> {
        match v.as_deref() {
            None => Ok(None),
            Some([f, n]) if *f >= 1 && *n >= 1 => Ok(Some((*f, *n))),
            Some(_) => anyhow::bail!("--{flag}: expected two positive counts FREE,NUDGED"),
        }
    };
    let id_sweeps = pair("id-sweeps", &a.id_sweeps)?;
    let caps = match pair("caps", &a.caps)? {
        Some(c) => c,
        None => (10 * base.t1, 10 * base.t2.max(1)),
    };
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let kernels = prepare(&model)?;
    let name = preset
        .as_ref()
        .map_or("model".to_string(), |p| p.name.to_string());
    let plan = StudyPlan {
        preset: &name,
        model: &model,
        kernels: &kernels,
        x: &x,
        labels: &y,
        base,
        solvers: a.solvers.clone(),
        eps: a.eps.clone(),
        nudged_eps: a.nudged_eps.clone(),
        caps,
        reps: a.reps,
        id_sweeps,
    };
    let quiet = g.quiet;
    if !quiet {
        errln!(
            "{name}: batch of {} from {}, {} configurations × {} runs",
            y.len(),
            source.display(),
            a.solvers
                .iter()
                .map(|s| if *s == StudySolver::Fixed {
                    1
                } else {
                    a.eps.len() * a.nudged_eps.len().max(1)
                })
                .sum::<usize>(),
            a.reps
        );
    }
    let rep = run_study(&plan, |m| {
        if !quiet {
            errln!("{m}");
        }
    })?;
    crate::io::atomic_write(
        &out.join("solvers.json"),
        serde_json::to_string_pretty(&rep)?.as_bytes(),
    )?;
    crate::io::atomic_write(&out.join("solvers.csv"), rep.csv().as_bytes())?;
    let mut series: Vec<SweepSeries> = Vec::new();
    for s in &a.solvers {
        let rows: Vec<_> = rep.rows.iter().filter(|r| r.solver == *s).collect();
        series.push(SweepSeries {
            name: s.name().into(),
            x: rows.iter().map(|r| r.seconds).collect(),
            y: rows.iter().map(|r| r.total_rel_error).collect(),
        });
    }
    let fig = SweepFigure {
        title: format!("{name}, batch {}: gradient error vs time", rep.batch),
        x_label: "wall time per EP step (s)".into(),
        y_label: "‖g_EP − g_ID‖ / ‖g_ID‖".into(),
        series,
        x_log: true,
        y_log: true,
        ..Default::default()
    };
    fig.save(&out.join("solvers.png"))?;
    if !g.quiet {
        outln!("{}", rep.csv().trim_end());
        outln!("wrote {}", out.display());
    }
    Ok(rep)
}
