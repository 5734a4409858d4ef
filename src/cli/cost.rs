//! `ffebm cost`: energy and latency of EP training on hybrid hardware.

use super::common::{errln, outln, Global};
use crate::analysis::plot::{StackedBars, SweepFigure, SweepSeries};
use crate::cost::price::COMPONENTS;
use crate::cost::render::{joules, render, seconds};
use crate::cost::tech::{preset_text, PRESETS};
use crate::cost::{estimate, Report, Tech, Workload};
use crate::train::config::RunConfig;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct CostArgs {
    /// Price a built-in preset's run (see `ffebm presets`).
    #[arg(long, conflicts_with_all = ["config", "run"])]
    pub preset: Option<String>,
    /// Price the run a configuration file describes (as `ffebm train --config`).
    #[arg(long, conflicts_with = "run")]
    pub config: Option<PathBuf>,
    /// Price a run directory: its config and the sweeps (and weight pulses) it recorded.
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Technology: a TOML file, or a preset name (rram_64x64, pcm_512, digital_45nm,
    /// gpu_a100, gpu_v100); default rram_64x64.
    #[arg(long, value_name = "T.toml|NAME")]
    pub tech: Option<String>,
    /// Override a run-configuration key (as `ffebm train --set`), e.g. data.batch_size=256.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Vary one technology number: `--sweep analog.array_rows=64,128,256` (prints a table;
    /// with --plot, a figure of the totals against the value).
    #[arg(long, value_name = "KEY=V1,V2,...")]
    pub sweep: Option<String>,
    /// Write the report (or the sweep) as JSON to this file (`-` = standard output).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Figure (.png or .svg): energy of one step stacked by component per block, or with
    /// --sweep the totals against the swept value.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// List the technology presets with their numbers and sources, and stop.
    #[arg(long)]
    pub list_tech: bool,
}

/// The technology of `--tech`, with the warnings of its file.
pub fn load_tech(arg: Option<&str>) -> Result<(Tech, Vec<String>)> {
    let arg = arg.unwrap_or("rram_64x64");
    let path = std::path::Path::new(arg);
    if path.exists() {
        return Tech::from_file(path);
    }
    if PRESETS.iter().any(|p| p.0 == arg) {
        return Tech::parse(preset_text(arg)?, &format!("preset {arg}"));
    }
    bail!(
        "--tech {arg}: no such file, and not a technology preset ({})",
        PRESETS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
    )
}

fn workload(g: &Global, a: &CostArgs) -> Result<Workload> {
    if let Some(dir) = &a.run {
        anyhow::ensure!(
            a.sets.is_empty(),
            "--set changes a configuration; a run directory is priced as it ran"
        );
        return Workload::from_run_dir(dir);
    }
    let text = match &a.config {
        Some(p) => Some(
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        ),
        None => None,
    };
    if a.preset.is_none() && text.is_none() {
        bail!("choose what to price: --preset NAME, --config FILE.toml or --run DIR");
    }
    let cfg = RunConfig::resolve(
        a.preset.as_deref(),
        None,
        text.as_deref(),
        &a.sets,
        g.seed_flag,
    )?;
    let name = match (&a.preset, &a.config) {
        (Some(p), _) => p.clone(),
        (None, Some(c)) => c.display().to_string(),
        _ => unreachable!(),
    };
    Workload::from_config(&cfg, &name)
}

fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    if path.as_os_str() == "-" {
        outln!("{text}");
        Ok(())
    } else {
        crate::io::atomic_write(path, format!("{text}\n").as_bytes())
    }
}

/// A unit for energies up to `max_pj`: (scale from pJ, name).
fn energy_unit(max_pj: f64) -> (f64, &'static str) {
    [
        (1e12, "J"),
        (1e9, "mJ"),
        (1e6, "uJ"),
        (1e3, "nJ"),
        (1.0, "pJ"),
    ]
    .into_iter()
    .find(|(s, _)| max_pj >= *s)
    .unwrap_or((1.0, "pJ"))
}

fn stacked(r: &Report) -> StackedBars {
    let top = r.blocks.iter().map(|b| b.step.total()).fold(0.0, f64::max);
    let (scale, unit) = energy_unit(top);
    let mut values = vec![Vec::new(); COMPONENTS.len()];
    for b in &r.blocks {
        for (c, v) in b.step.values().iter().enumerate() {
            values[c].push(v / scale);
        }
    }
    StackedBars {
        title: format!("{} on {}: one training step", r.workload, r.tech),
        categories: r.blocks.iter().map(|b| b.name.clone()).collect(),
        components: COMPONENTS.iter().map(|c| c.1.to_string()).collect(),
        values,
        y_label: format!("energy per step ({unit}, batch {})", r.batch),
    }
}

/// One point of a `--sweep`.
#[derive(serde::Serialize)]
struct SweepPoint {
    value: f64,
    report: Report,
}

fn sweep(a: &CostArgs, w: &Workload, tech: &Tech, spec: &str) -> Result<()> {
    let (key, list) = spec
        .split_once('=')
        .with_context(|| format!("--sweep `{spec}`: expected key=v1,v2,..."))?;
    let values: Vec<f64> = list
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .with_context(|| format!("--sweep: `{v}` is not a number"))
        })
        .collect::<Result<_>>()?;
    let mut points = Vec::new();
    outln!(
        "{:>12} {:>14} {:>14} {:>14} {:>14} {:>12}",
        key,
        "step energy",
        "step latency",
        "run energy",
        "run latency",
        "GPU/this E"
    );
    for &v in &values {
        let r = estimate(w, &tech.with_value(key.trim(), v)?)?;
        outln!(
            "{v:>12} {:>14} {:>14} {:>14} {:>14} {:>12.3e}",
            joules(r.step.energy_pj),
            seconds(r.step.latency_ns),
            joules(r.run.energy_pj),
            seconds(r.run.latency_ns),
            r.run.energy_gain()
        );
        points.push(SweepPoint {
            value: v,
            report: r,
        });
    }
    if let Some(path) = &a.json {
        write_json(path, &points)?;
    }
    if let Some(path) = &a.plot {
        let top = points
            .iter()
            .map(|p| p.report.step.energy_pj)
            .fold(0.0, f64::max);
        let (scale, unit) = energy_unit(top);
        let mut series = vec![SweepSeries {
            x: Vec::new(),
            name: "total".into(),
            y: points
                .iter()
                .map(|p| p.report.step.energy_pj / scale)
                .collect(),
        }];
        for (c, (_, label)) in COMPONENTS.iter().enumerate() {
            let y: Vec<f64> = points
                .iter()
                .map(|p| p.report.step.energy.values()[c] / scale)
                .collect();
            if y.iter().all(|v| *v > 0.0) {
                series.push(SweepSeries {
                    x: Vec::new(),
                    name: label.to_string(),
                    y,
                });
            }
        }
        let fig = SweepFigure {
            title: format!("{} on {}: one step", w.name, tech.name),
            x_label: key.trim().into(),
            y_label: format!("energy per step ({unit})"),
            x: values.clone(),
            series,
            x_log: false,
            y_log: true,
            x_integer: values.iter().all(|v| v.fract() == 0.0),
            reference: None,
            size: None,
        };
        fig.save(path)?;
        errln!("wrote {}", path.display());
    }
    Ok(())
}

pub fn run(g: &Global, a: CostArgs) -> Result<()> {
    if a.list_tech {
        for (name, text) in PRESETS {
            let (t, _) = Tech::parse(text, name)?;
            outln!("{name}: {} ({:?} execution)", t.description, t.execution);
            for (k, s) in &t.values {
                outln!("  {k:<28} {:>10}  {}", s.value, s.source);
            }
        }
        return Ok(());
    }
    let (tech, warnings) = load_tech(a.tech.as_deref())?;
    for w in &warnings {
        errln!("warning: {w}");
    }
    let w = workload(g, &a)?;
    if let Some(spec) = &a.sweep {
        return sweep(&a, &w, &tech, spec);
    }
    let r = estimate(&w, &tech)?;
    match &a.json {
        Some(p) if p.as_os_str() == "-" => write_json(p, &r)?,
        Some(p) => {
            write_json(p, &r)?;
            outln!("{}", render(&r));
        }
        None => outln!("{}", render(&r)),
    }
    if let Some(path) = &a.plot {
        stacked(&r).save(path)?;
        errln!("wrote {}", path.display());
    }
    Ok(())
}
