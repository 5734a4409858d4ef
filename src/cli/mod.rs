//! The `ffebm` command line.

mod analysis;
mod bench;
mod common;
mod grad;
mod presets;
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
    /// Seed of every random draw (initialisation, data order, augmentation).
    #[arg(long, global = true, default_value_t = 0)]
    pub seed: u64,
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
}

/// Parses the command line and runs the command.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        anyhow::ensure!(n >= 1, "--threads must be at least 1");
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()?;
    }
    let g = common::Global {
        seed: cli.seed,
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
    }
}
