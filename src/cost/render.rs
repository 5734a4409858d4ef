//! The text form of a [`Report`](super::report::Report).

use super::price::{Energy, COMPONENTS};
use super::report::{Report, Totals};
use std::fmt::Write as _;

/// `1.23 mJ` from picojoules.
pub fn joules(pj: f64) -> String {
    scaled(pj * 1e-12, "J")
}

/// `4.56 ms` from nanoseconds.
pub fn seconds(ns: f64) -> String {
    let s = ns * 1e-9;
    if s >= 86_400.0 {
        format!("{:.2} d", s / 86_400.0)
    } else if s >= 3_600.0 {
        format!("{:.2} h", s / 3_600.0)
    } else {
        scaled(s, "s")
    }
}

fn scaled(v: f64, unit: &str) -> String {
    const P: [(f64, &str); 9] = [
        (1e9, "G"),
        (1e6, "M"),
        (1e3, "k"),
        (1.0, ""),
        (1e-3, "m"),
        (1e-6, "u"),
        (1e-9, "n"),
        (1e-12, "p"),
        (1e-15, "f"),
    ];
    if v == 0.0 {
        return format!("0 {unit}");
    }
    let (m, p) = P
        .iter()
        .find(|(m, _)| v.abs() >= *m)
        .copied()
        .unwrap_or((1e-15, "f"));
    format!("{:.3} {p}{unit}", v / m)
}

fn block_table(out: &mut String, title: &str, rows: &[(String, String, Energy)]) {
    let _ = writeln!(out, "\n{title}");
    let mut head = format!("{:<8} {:<10}", "block", "kind");
    for (_, label) in COMPONENTS {
        let _ = write!(head, " {label:>16}");
    }
    let _ = write!(head, " {:>16}", "total");
    let _ = writeln!(out, "{head}");
    let mut sum = Energy::default();
    for (name, kind, e) in rows {
        let mut line = format!("{name:<8} {kind:<10}");
        for v in e.values() {
            let _ = write!(line, " {:>16}", joules(v));
        }
        let _ = write!(line, " {:>16}", joules(e.total()));
        let _ = writeln!(out, "{line}");
        sum.add_scaled(e, 1.0);
    }
    let mut line = format!("{:<8} {:<10}", "all", "");
    for v in sum.values() {
        let _ = write!(line, " {:>16}", joules(v));
    }
    let _ = write!(line, " {:>16}", joules(sum.total()));
    let _ = writeln!(out, "{line}");
}

fn totals_line(out: &mut String, what: &str, t: &Totals) {
    let _ = writeln!(
        out,
        "{what:<22} {:>12} {:>12} {:>12} {:>12} {:>10.3e} {:>10.3e}",
        joules(t.energy_pj),
        seconds(t.latency_ns),
        joules(t.gpu_energy_pj),
        seconds(t.gpu_latency_ns),
        t.energy_gain(),
        t.speedup()
    );
}

/// The report as text tables.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} on {} ({}; energy-based blocks: {} execution)",
        r.workload,
        r.tech,
        r.tech_description,
        format!("{:?}", r.execution).to_lowercase()
    );
    let _ = writeln!(
        out,
        "batch {}, {} training images: {} steps per epoch, {} epochs",
        r.batch, r.train_size, r.steps_per_epoch, r.epochs
    );
    let _ = writeln!(out, "sweeps: {}", r.sweeps_source);
    let _ = writeln!(out, "weight writes: {}", r.writes_source);
    for (title, pick) in [
        (format!("energy of one step ({} samples)", r.batch), 0),
        ("energy of one epoch".to_string(), 1),
        ("energy of the whole run".to_string(), 2),
    ] {
        let rows: Vec<(String, String, Energy)> = r
            .blocks
            .iter()
            .map(|b| {
                let e = [b.step, b.epoch, b.run][pick];
                (b.name.clone(), b.kind.clone(), e)
            })
            .collect();
        block_table(&mut out, &title, &rows);
    }
    let _ = writeln!(
        out,
        "\n{:<22} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "", "energy", "latency", "GPU energy", "GPU latency", "GPU/this E", "GPU/this T"
    );
    totals_line(&mut out, "one step", &r.step);
    totals_line(&mut out, "one epoch", &r.epoch);
    totals_line(&mut out, "whole run", &r.run);
    totals_line(&mut out, "inference (1 sample)", &r.inference);
    totals_line(&mut out, "evaluation per epoch", &r.evaluation);
    totals_line(&mut out, "run with evaluations", &r.run_with_evaluation);
    let _ = writeln!(
        out,
        "evaluation: {} images per epoch (test set and validation split), one inference each, in series",
        r.eval_images
    );
    let _ = writeln!(out, "GPU baseline: {}", r.gpu);
    for b in &r.blocks {
        let c = &b.step_counts;
        let _ = writeln!(
            out,
            "{} per step: sweeps free {:.1} plus {:.1} minus {:.1}; {:.3e} simulated MACs, {:.3e} settles, {:.3e} cell reads, {:.3e} ADC, {:.3e} DAC, {:.3e} pulses on {:.0} cells in {:.0} tiles",
            b.name, c.sweeps.free, c.sweeps.plus, c.sweeps.minus, c.sim_macs, c.settles, c.cell_reads, c.adc, c.dac, b.step_pulses, c.cells, b.tiles
        );
    }
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}
