//! `ffebm solvers`: for one preset and one batch, sweeps the tolerance ε over the solvers
//! (fixed schedule, plain, per-sample, Anderson) and reports sweeps, wall time and the EP
//! vs ID-exact agreement per tensor (see [`crate::analysis::solvers`]).

use super::common::{errln, outln, Global, ModelArgs, PhaseArgs, SolverArgs};
use crate::analysis::plot::{SweepFigure, SweepSeries};
use crate::analysis::solvers::{run_study, StudyPlan, StudySolver};
use crate::model::prepare;
use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct SolversArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Batch file (safetensors with `x` NCHW float32 and `y` int); default: the first
    /// --batch-size training images of the preset's dataset.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Data root for the default batch (default: $FFEBM_DATA).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Size of the default batch.
    #[arg(long, default_value_t = 64, value_parser = super::common::positive)]
    pub batch_size: usize,
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
    /// Solvers: fixed (the preset's T1/T2), plain, per-sample, anderson.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fixed,plain,per-sample,anderson"
    )]
    pub solvers: Vec<StudySolver>,
    /// Sweep caps of the tolerance runs (free, nudged); default 10×T1 and 10×T2.
    #[arg(long, value_delimiter = ',', num_args = 2)]
    pub caps: Option<Vec<usize>>,
    /// Sweeps of the ID-exact reference (free, unrolled); default: the fixed schedule's T1
    /// and T2.
    #[arg(long, value_delimiter = ',', num_args = 2)]
    pub id_sweeps: Option<Vec<usize>>,
    /// Timed runs per configuration (median reported; round-robin over configurations
    /// after one warm-up).
    #[arg(long, default_value_t = 3, value_parser = super::common::positive)]
    pub reps: usize,
    /// Output directory: solvers.json, solvers.csv, solvers.png.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(g: &Global, a: SolversArgs) -> Result<()> {
    let (model, preset, _) = a.model.build(g.seed)?;
    let (x, y, source) = super::analysis::analysis_batch(
        &model,
        a.input.as_deref(),
        None,
        preset.as_ref(),
        a.data_dir.as_deref(),
        a.batch_size,
    )?;
    let mut base = a.phases.resolve(preset.as_ref())?;
    base.tol = None;
    a.solver.apply(&mut base)?;
    base.validate()?;
    for &e in &a.eps {
        anyhow::ensure!(
            e > 0.0 && e.is_finite(),
            "--eps {e}: tolerances must be positive"
        );
    }
    let caps = match &a.caps {
        Some(c) => (c[0], c[1]),
        None => (10 * base.t1, 10 * base.t2.max(1)),
    };
    anyhow::ensure!(caps.0 >= 1 && caps.1 >= 1, "--caps must be at least 1");
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
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
        caps,
        reps: a.reps,
        id_sweeps: a.id_sweeps.as_ref().map(|v| (v[0], v[1])),
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
                    a.eps.len()
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
        &a.out.join("solvers.json"),
        serde_json::to_string_pretty(&rep)?.as_bytes(),
    )?;
    crate::io::atomic_write(&a.out.join("solvers.csv"), rep.csv().as_bytes())?;
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
    fig.save(&a.out.join("solvers.png"))?;
    outln!("{}", rep.csv().trim_end());
    outln!("wrote {}", a.out.display());
    Ok(())
}
