//! `ffebm robustness`: EP on the physical circuit against ID-exact on the same circuit and on
//! the nominal twin, per tensor, for a sweep of one non-ideality's strength.

use super::common::{errln, outln, Global, ModelArgs, PhaseArgs};
use crate::analysis::plot::{SweepFigure, SweepSeries};
use crate::analysis::robustness::{point_settings, robustness, RobustnessConfig};
use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct RobustnessArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub batch: super::analysis::BatchArgs,
    #[command(flatten)]
    pub phases: PhaseArgs,
    /// The key to sweep: an `[analog]` key (e.g. `weight_std`, `slope_std`, `threshold_std`,
    /// `update_noise`, `measure_noise`, `adc_bits`, `blocks.1.weight_std`) or a `[digital]`
    /// one (`digital.weight_bits`, `digital.activation_bits`, `digital.gradient_bits`).
    #[arg(long)]
    pub sweep: String,
    /// Its values.
    #[arg(long, value_delimiter = ',', required = true)]
    pub values: Vec<f64>,
    /// Settings shared by every point (`key=value`, repeatable, as in `ffebm grad --analog`).
    #[arg(long = "analog", value_name = "KEY=VALUE")]
    pub analog: Vec<String>,
    /// Quantized feedforward blocks shared by every point (`key=value`, repeatable, as in
    /// `ffebm grad --digital`).
    #[arg(long = "digital", value_name = "KEY=VALUE")]
    pub digital: Vec<String>,
    /// Output directory: robustness.json, robustness.csv, robustness_physical.png and
    /// robustness_twin.png.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(g: &Global, a: RobustnessArgs) -> Result<()> {
    let (model, preset, _) = a.model.build(g.seed)?;
    let (x, y, _) = a.batch.load(&model, preset.as_ref(), 2)?;
    let algo = a.phases.resolve(preset.as_ref())?;
    algo.validate()?;
    let cfg = RobustnessConfig {
        base: a.analog.clone(),
        digital: a.digital.clone(),
        key: a.sweep.clone(),
        values: a.values.clone(),
        seed: g.seed,
    };
    // every point's settings are checked before any work
    for v in &cfg.values {
        let (analog, digital) = point_settings(&cfg, *v);
        crate::analog::AnalogConfig::from_sets(&analog)
            .and_then(|c| c.resolve(model.blocks.len()))
            .and_then(|_| crate::digital::DigitalConfig::from_sets(&digital))
            .with_context(|| format!("--sweep {} at {v}", cfg.key))?;
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let t = std::time::Instant::now();
    let quiet = g.quiet;
    let rep = robustness(&model, &x, &y, &algo, &cfg, &mut |i, n| {
        if !quiet {
            errln!("{i}/{n} strengths ({:.0} s)", t.elapsed().as_secs_f64());
        }
    })?;
    crate::io::atomic_write(
        &a.out.join("robustness.json"),
        serde_json::to_string_pretty(&rep)?.as_bytes(),
    )?;
    crate::io::atomic_write(&a.out.join("robustness.csv"), rep.csv().as_bytes())?;
    let tensors = rep.tensors();
    for (file, what, f) in [
        (
            "robustness_physical.png",
            "cos(EP, ID-exact on the physical circuit)",
            (|r: &crate::analysis::robustness::RobustnessRow| r.cos_physical)
                as fn(&crate::analysis::robustness::RobustnessRow) -> f64,
        ),
        (
            "robustness_twin.png",
            "cos(EP, ID-exact on the nominal twin)",
            |r| r.cos_twin,
        ),
    ] {
        let series = tensors
            .iter()
            .map(|n| SweepSeries {
                x: Vec::new(),
                name: n.clone(),
                y: rep.series(n, f),
            })
            .collect();
        let fig = SweepFigure {
            title: format!("EP on the physical circuit vs {}", a.sweep),
            x_label: a.sweep.clone(),
            y_label: what.into(),
            x: cfg.values.clone(),
            series,
            ..Default::default()
        };
        fig.save(&a.out.join(file))?;
    }
    if !g.quiet {
        outln!(
            "robustness of {} samples (beta {}, T1 {}, T2 {}) in {:.1} s: {}",
            y.len(),
            algo.beta,
            algo.t1,
            algo.t2,
            t.elapsed().as_secs_f64(),
            a.out.display()
        );
        outln!(
            "{:>10} {:<40} {:>14} {:>14}",
            a.sweep,
            "tensor",
            "cos physical",
            "cos twin"
        );
        for r in &rep.rows {
            outln!(
                "{:>10} {:<40} {:>14.6} {:>14.6}",
                r.value,
                r.tensor,
                r.cos_physical,
                r.cos_twin
            );
        }
    }
    Ok(())
}
