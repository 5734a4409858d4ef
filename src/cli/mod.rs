//! The `ffebm` command line.

mod analysis;
mod bench;
mod common;
mod cost;
mod grad;
mod presets;
mod robustness;
mod solvers;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Simulate and train feedforward-tied energy-based models (ff-EBMs) with BP-EP chaining.
#[derive(Parser, Debug)]
#[command(name = "ffebm", version, about, long_about = None)]
pub struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Seed of every random draw (initialisation, data order, augmentation); default 0.
    /// Overrides the seed of a `train --config` file.
    #[arg(long, global = true)]
    pub seed: Option<u64>,
    /// Only print errors and final results.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a model (default: the cifar10_tiny preset); prints its run directory.
    Train(train::TrainArgs),
    /// Evaluate a checkpoint on the test set(s) of its run.
    Eval(train::EvalArgs),
    /// Gradients of one batch (EP, ID-exact or ID-reference), as in a training step.
    Grad(grad::GradArgs),
    /// List the built-in presets, or show one preset's layers, parameters and cost.
    Presets(presets::PresetsArgs),
    /// Static gradient analysis: EP vs ID per tensor, transient curves, β/T2 sweeps, figures.
    Gdd(analysis::GddArgs),
    /// Plot loss, top-1, top-5 and learning rate of one or several runs.
    Plot(analysis::PlotArgs),
    /// Time the conv kernels and the free phase / EP / ID steps of presets.
    Bench(bench::BenchArgs),
    /// Energy and latency of EP training on hybrid hardware (per block, step, epoch, run).
    Cost(cost::CostArgs),
    /// Analog robustness study: EP on the physical circuit vs ID-exact on the same circuit
    /// and on the nominal twin, per tensor, sweeping one non-ideality's strength.
    Robustness(robustness::RobustnessArgs),
    /// Faster equilibria: sweeps, time per EP step and EP vs ID-exact agreement of each
    /// solver (fixed, plain, per-sample, Anderson) over a range of tolerances.
    Solvers(solvers::SolversArgs),
}

/// Lets SIGPIPE end the process quietly, as it does Unix tools (`ffebm presets | head`):
/// Rust ignores it, so a print to a closed pipe would panic instead.
fn die_quietly_on_closed_pipes() {
    // SAFETY: restoring a signal's default disposition at start-up, before any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Parses the command line and runs the command.
///
/// Output to a closed pipe: `train` and `gdd`, whose work (checkpoints, figures) outlives
/// their output, keep going and drop it; the other commands stop quietly, like Unix tools.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Train(_) | Command::Gdd(_) | Command::Robustness(_)
    ) {
        die_quietly_on_closed_pipes();
    }
    if let Some(n) = cli.threads {
        anyhow::ensure!(n >= 1, "--threads must be at least 1");
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()?;
    }
    let g = common::Global {
        seed: cli.seed.unwrap_or(0),
        seed_flag: cli.seed,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Train(a) => train::run(&g, a),
        Command::Eval(a) => train::eval(&g, a),
        Command::Grad(a) => grad::run(&g, a),
        Command::Presets(a) => presets::run(&g, a),
        Command::Bench(a) => bench::run(&g, a),
        Command::Gdd(a) => analysis::gdd(&g, a),
        Command::Plot(a) => analysis::plot(&g, a),
        Command::Cost(a) => cost::run(&g, a),
        Command::Robustness(a) => robustness::run(&g, a),
        Command::Solvers(a) => solvers::run(&g, a),
    }
}
