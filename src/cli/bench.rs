//! `ffebm bench`.

use super::common::Global;
use crate::bench::{bench_convs, bench_steps, BenchReport};
use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Presets whose steps are timed.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "splitting_small_1block,splitting_small_2block,splitting_small_3block"
    )]
    pub presets: Vec<String>,
    /// Deep-resistive-network rows, `preset@batch` (`none`: skip them). Their ID column is
    /// ID-exact, and `epoch s` is an epoch of EP steps (training images / batch × EP step,
    /// evaluation excluded).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "drn_1h@4,drn_1h@64,cifar10_drn@16"
    )]
    pub drn: Vec<String>,
    /// Batch sizes of the step timings.
    #[arg(long, value_delimiter = ',', default_value = "16,64", value_parser = super::common::positive)]
    pub batches: Vec<usize>,
    /// Batch size of the conv timings.
    #[arg(long, default_value_t = 64, value_parser = super::common::positive)]
    pub conv_batch: usize,
    /// Timed repetitions (median reported) after one warm-up.
    #[arg(long, default_value_t = 3, value_parser = super::common::positive)]
    pub reps: usize,
    /// Only the conv kernels.
    #[arg(long)]
    pub convs_only: bool,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &Global, a: BenchArgs) -> Result<()> {
    let drn_rows = drn_rows(&a.drn)?;
    let shapes = [(3, 128, 32), (128, 128, 16), (256, 256, 8), (512, 512, 4)];
    let convs = bench_convs(&shapes, a.conv_batch, a.reps.max(5))?;
    if !a.json {
        println!(
            "conv kernels, batch {} ({} threads; GFLOP/s = 2·MACs of the direct conv / time)",
            a.conv_batch,
            rayon::current_num_threads()
        );
        println!(
            "{:<16} {:>11} {:>9} {:>11} {:>9} {:>11} {:>9}",
            "shape", "forward ms", "GFLOP/s", "transp. ms", "GFLOP/s", "w-grad ms", "GFLOP/s"
        );
        for c in &convs {
            println!(
                "{:<16} {:>11.2} {:>9.0} {:>11.2} {:>9.0} {:>11.2} {:>9.0}",
                c.shape,
                c.forward_ms,
                c.forward_gflops,
                c.transposed_ms,
                c.transposed_gflops,
                c.weight_grad_ms,
                c.weight_grad_gflops
            );
        }
    }
    let mut steps = Vec::new();
    if !a.convs_only {
        if !a.json {
            println!(
                "\nsteps (median of {}; ID = reference variant, ID-exact for resistive blocks)",
                a.reps
            );
            println!(
                "{:<26} {:>5} {:>9} {:>8} {:>9} {:>8} {:>9} {:>8}  EP sweeps per block (free+plus+minus)",
                "preset", "batch", "free s", "GFLOP/s", "EP s", "GFLOP/s", "ID s", "GFLOP/s"
            );
        }
        for p in &a.presets {
            for &b in &a.batches {
                let s = bench_steps(p, b, a.reps, g.seed)?;
                if !a.json {
                    println!(
                        "{:<26} {:>5} {:>9.3} {:>8.0} {:>9.3} {:>8.0} {:>9.3} {:>8.0}  {}",
                        s.preset,
                        s.batch,
                        s.free_phase_s,
                        s.free_phase_gflops,
                        s.ep_step_s,
                        s.ep_step_gflops,
                        s.id_step_s,
                        s.id_step_gflops,
                        sweeps_cell(&s.ep_sweeps)
                    );
                }
                steps.push(s);
            }
        }
        if !drn_rows.is_empty() && !a.json {
            println!(
                "\nDRN steps (median of {}; ID = ID-exact; epoch = EP steps only)",
                a.reps
            );
            println!(
                "{:<26} {:>5} {:>9} {:>9} {:>9} {:>10}",
                "preset", "batch", "free s", "EP s", "ID s", "epoch s"
            );
        }
        for (p, b) in &drn_rows {
            let s = bench_steps(p, *b, a.reps, g.seed)?;
            if !a.json {
                println!(
                    "{:<26} {:>5} {:>9.4} {:>9.4} {:>9.4} {:>10.1}",
                    s.preset, s.batch, s.free_phase_s, s.ep_step_s, s.id_step_s, s.ep_epoch_s
                );
            }
            steps.push(s);
        }
    }
    if a.json {
        let r = BenchReport {
            threads: rayon::current_num_threads(),
            convs,
            steps,
        };
        println!("{}", serde_json::to_string_pretty(&r)?);
    }
    Ok(())
}

/// `free+plus+minus` of every block, space-separated.
fn sweeps_cell(s: &[crate::grad::PhaseSweeps]) -> String {
    s.iter()
        .map(|p| format!("{}+{}+{}", p.free, p.plus, p.minus))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `preset@batch` pairs (`none`: no rows).
fn drn_rows(specs: &[String]) -> Result<Vec<(String, usize)>> {
    if specs.iter().any(|s| s == "none") {
        return Ok(Vec::new());
    }
    specs
        .iter()
        .map(|s| {
            let (p, b) = s.split_once('@').ok_or_else(|| {
                anyhow::anyhow!("--drn {s}: expected `preset@batch`, e.g. `drn_1h@4`, or `none`")
            })?;
            let b: usize = b.parse().ok().filter(|b| *b > 0).ok_or_else(|| {
                anyhow::anyhow!("--drn {s}: the batch must be a positive integer")
            })?;
            crate::model::presets::preset(p, None)?;
            Ok((p.to_string(), b))
        })
        .collect()
}
