//! Training curves (loss, top-1, top-5, learning rate against epoch) for one or several
//! runs, and the reader for a run's `metrics.jsonl`. Every evaluation set of a run is
//! drawn, each with its own dash pattern; integer epochs get integer ticks.

use super::{
    draw_note, draw_title, font, integer_ticks, padded_range, run_color, save_figure, segments,
    tick_label, PlotResult, Render, Ticked,
};
use anyhow::{bail, Context, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default panel size in pixels.
const PANEL: (u32, u32) = (420, 300);

/// Loss and accuracies on one evaluation set (an entry of an epoch record's `evals`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SetMetrics {
    #[serde(default)]
    pub loss: Option<f64>,
    #[serde(default)]
    pub top1: Option<f64>,
    #[serde(default)]
    pub top5: Option<f64>,
}

/// One epoch's metrics (the `"kind": "epoch"` records of `metrics.jsonl`; `test_*` is the
/// run's first evaluation set, `test_name`, and `evals` holds every set). Every metric is
/// optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number (x axis).
    pub epoch: f64,
    /// Mean training loss.
    #[serde(default)]
    pub train_loss: Option<f64>,
    /// Training top-1 accuracy.
    #[serde(default)]
    pub train_top1: Option<f64>,
    /// Training top-5 accuracy.
    #[serde(default)]
    pub train_top5: Option<f64>,
    /// Test (or validation) loss.
    #[serde(default)]
    pub test_loss: Option<f64>,
    /// Test (or validation) top-1 accuracy.
    #[serde(default)]
    pub test_top1: Option<f64>,
    /// Test (or validation) top-5 accuracy.
    #[serde(default)]
    pub test_top5: Option<f64>,
    /// Learning rate used during the epoch.
    #[serde(default)]
    pub lr: Option<f64>,
    /// Name of the set `test_*` refer to.
    #[serde(default)]
    pub test_name: Option<String>,
    /// Every evaluation set by name (empty: only `test_*`).
    #[serde(default)]
    pub evals: BTreeMap<String, SetMetrics>,
}

impl EpochRecord {
    /// Metric `m` (0 loss, 1 top-1, 2 top-5) on evaluation set `set` ([`TEST`]: `test_*`).
    fn test_value(&self, set: &str, m: usize) -> Option<f64> {
        match self.evals.get(set) {
            Some(e) => [e.loss, e.top1, e.top5][m],
            // records without `evals` carry their one set as `test_*`
            None if set == TEST && self.evals.is_empty() => {
                [self.test_loss, self.test_top1, self.test_top5][m]
            }
            None => None,
        }
    }
}

/// The set name of runs whose records carry only `test_*`.
const TEST: &str = "test";

/// Dash (length, gap) of the `k`-th evaluation set's curves.
fn dash(k: usize) -> (u32, u32) {
    [(6, 4), (2, 3), (12, 4), (4, 2)][k % 4]
}

/// One run's epoch records (sorted by epoch) and its legend name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunCurves {
    /// Legend entry (by default the run directory's name).
    pub name: String,
    /// Epoch records, in increasing epoch order.
    pub epochs: Vec<EpochRecord>,
}

impl RunCurves {
    /// Reads `dir/metrics.jsonl`; the run is named after the directory.
    pub fn from_run_dir(dir: &Path) -> Result<Self> {
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.display().to_string());
        Ok(RunCurves {
            name,
            epochs: read_metrics_jsonl(&dir.join("metrics.jsonl"))?,
        })
    }
}

/// Reads the `"kind":"epoch"` records of a `metrics.jsonl` file (one JSON object per
/// line). Other kinds, lines without a kind, unknown fields and blank lines are
/// ignored; missing metrics are `None`. Records are sorted by epoch and, if an epoch
/// appears twice (a resumed run), the later line wins. Malformed JSON, a non-object
/// line or an epoch record with a missing/ill-typed field is an error naming the file
/// and the 1-based line number.
pub fn read_metrics_jsonl(path: &Path) -> Result<Vec<EpochRecord>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading metrics file {}", path.display()))?;
    let mut records: Vec<EpochRecord> = vec![];
    for (i, line) in text.lines().enumerate() {
        let where_ = || format!("{}:{}", path.display(), i + 1);
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}: malformed JSON", where_()))?;
        let Some(obj) = value.as_object() else {
            bail!("{}: expected a JSON object", where_());
        };
        if obj.get("kind").and_then(|k| k.as_str()) != Some("epoch") {
            continue;
        }
        let rec: EpochRecord = serde_json::from_value(value)
            .with_context(|| format!("{}: bad epoch record", where_()))?;
        records.push(rec);
    }
    // Stable sort, then keep the last record of each epoch.
    records.sort_by(|a, b| a.epoch.total_cmp(&b.epoch));
    let mut out: Vec<EpochRecord> = Vec::with_capacity(records.len());
    for r in records {
        match out.last_mut() {
            Some(last) if last.epoch == r.epoch => *last = r,
            _ => out.push(r),
        }
    }
    Ok(out)
}

/// `ffebm plot RUN_DIR…`: reads each run's `metrics.jsonl` and writes the overlaid
/// [`TrainingCurves`] to `out` (PNG or SVG). Returns the figure's warnings.
pub fn plot_runs(run_dirs: &[PathBuf], out: &Path) -> Result<Vec<String>> {
    if run_dirs.is_empty() {
        bail!("no run directories given");
    }
    let runs = run_dirs
        .iter()
        .map(|d| RunCurves::from_run_dir(d))
        .collect::<Result<Vec<_>>>()?;
    let fig = TrainingCurves::new("", runs);
    let warnings = fig.check()?;
    fig.save(out)?;
    Ok(warnings)
}

/// Training curves: a 2×2 grid of panels (loss, top-1, top-5, learning rate) against
/// epoch, one colour per run (legend = run name); training series are solid lines, each
/// evaluation set has its own dash pattern (legend = set name).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingCurves {
    /// Figure title (may be empty).
    #[serde(default)]
    pub title: String,
    /// Runs to overlay.
    pub runs: Vec<RunCurves>,
    /// Legend name of records' `test_*` when they name no set; empty means "test".
    #[serde(default)]
    pub test_label: String,
    /// Total size in pixels; default 2×2 panels of 420×300 plus the header.
    #[serde(default)]
    pub size: Option<(u32, u32)>,
}

/// The four panels: title, train metric, metric index of the evaluation sets (0 loss,
/// 1 top-1, 2 top-5; none for the learning rate).
type Getter = fn(&EpochRecord) -> Option<f64>;
const PANELS: [(&str, Getter, Option<usize>); 4] = [
    ("loss", |r| r.train_loss, Some(0)),
    ("top-1 accuracy", |r| r.train_top1, Some(1)),
    ("top-5 accuracy", |r| r.train_top5, Some(2)),
    ("learning rate", |r| r.lr, None),
];

/// A line's dash (length, gap); none = solid.
type Dash = Option<(u32, u32)>;

/// A legend entry: label, colour, dash, width in px.
type Entry = (String, RGBColor, Dash, i32);

impl TrainingCurves {
    /// A figure overlaying `runs` with default layout.
    pub fn new(title: impl Into<String>, runs: Vec<RunCurves>) -> Self {
        TrainingCurves {
            title: title.into(),
            runs,
            test_label: String::new(),
            size: None,
        }
    }

    /// Total size in pixels (the `size` override or the default layout).
    pub fn size(&self) -> (u32, u32) {
        self.size
            .unwrap_or((2 * PANEL.0, self.header_h(2 * PANEL.0) + 2 * PANEL.1))
    }

    /// Data problems (runs without epoch records, skipped NaN values); empty if none.
    pub fn warnings(&self) -> Vec<String> {
        self.check().unwrap_or_else(|e| vec![e.to_string()])
    }

    /// Writes the figure as PNG or SVG (by extension), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        save_figure(self, path)
    }

    /// The evaluation sets of all runs, in order of appearance (each run's `test_name`
    /// first): their legend labels and record keys.
    fn sets(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.runs {
            let first = r.epochs.iter().rev().find_map(|e| e.test_name.clone());
            let mut names: Vec<String> = first.into_iter().collect();
            for e in &r.epochs {
                names.extend(e.evals.keys().cloned());
                if e.evals.is_empty() {
                    names.push(TEST.into());
                }
            }
            for n in names {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }

    fn set_label<'a>(&'a self, set: &'a str) -> &'a str {
        if set == TEST && !self.test_label.is_empty() {
            &self.test_label
        } else {
            set
        }
    }

    fn legend_entries(&self) -> Vec<Entry> {
        let mut e: Vec<(String, RGBColor, Dash)> = self
            .runs
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), run_color(i), None))
            .collect();
        e.push(("train".into(), BLACK, None));
        for (k, set) in self.sets().iter().enumerate() {
            e.push((self.set_label(set).to_string(), BLACK, Some(dash(k))));
        }
        e.into_iter()
            .map(|(s, c, d)| {
                let w = 44 + (7.5 * s.chars().count() as f64) as i32;
                (s, c, d, w)
            })
            .collect()
    }

    /// Legend rows for a figure `width` px wide: each row is a list of entry indices.
    fn legend_rows(&self, width: u32) -> Vec<Vec<usize>> {
        let mut rows: Vec<Vec<usize>> = vec![vec![]];
        let mut used = 0;
        for (i, (_, _, _, w)) in self.legend_entries().into_iter().enumerate() {
            if used + w > width as i32 - 20 && !rows.last().unwrap().is_empty() {
                rows.push(vec![]);
                used = 0;
            }
            rows.last_mut().unwrap().push(i);
            used += w;
        }
        rows
    }

    fn header_h(&self, width: u32) -> u32 {
        let title = if self.title.is_empty() { 8 } else { 36 };
        title + 22 * self.legend_rows(width).len() as u32 + 6
    }
}

impl Render for TrainingCurves {
    fn check(&self) -> Result<Vec<String>> {
        if self.runs.iter().all(|r| r.epochs.is_empty()) {
            bail!("training curves: no epoch records in any run");
        }
        let sets = self.sets();
        let mut warnings = vec![];
        for r in &self.runs {
            if r.epochs.is_empty() {
                warnings.push(format!("run {:?} has no epoch records", r.name));
            }
            let bad = r
                .epochs
                .iter()
                .flat_map(|e| {
                    let sets = &sets;
                    PANELS.iter().flat_map(move |(_, tr, m)| {
                        let tests = m
                            .iter()
                            .flat_map(move |&m| sets.iter().map(move |s| e.test_value(s, m)));
                        std::iter::once(tr(e)).chain(tests)
                    })
                })
                .flatten()
                .filter(|v| !v.is_finite())
                .count()
                + r.epochs.iter().filter(|e| !e.epoch.is_finite()).count();
            if bad > 0 {
                warnings.push(format!("run {:?}: {bad} non-finite values skipped", r.name));
            }
        }
        Ok(warnings)
    }

    fn size(&self) -> (u32, u32) {
        TrainingCurves::size(self)
    }

    fn render<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (w, h) = self.size();
        draw_title(root, &self.title, 6)?;
        // Legend rows in the header.
        let entries = self.legend_entries();
        let top = if self.title.is_empty() { 8 } else { 36 };
        let style = font(13.0).pos(Pos::new(HPos::Left, VPos::Center));
        for (k, row) in self.legend_rows(w).iter().enumerate() {
            let total: i32 = row.iter().map(|&i| entries[i].3).sum();
            let mut x = (w as i32 - total) / 2;
            let y = top + 11 + 22 * k as i32;
            for &i in row {
                let (label, c, dashes, ew) = &entries[i];
                let pts = vec![(x, y), (x + 32, y)];
                match dashes {
                    Some((d, g)) => {
                        root.draw(&DashedPathElement::new(pts, *d, *g, c.stroke_width(2)))
                    }
                    None => root.draw(&PathElement::new(pts, c.stroke_width(2))),
                }
                .plot_err()?;
                root.draw_text(label, &style, (x + 38, y)).plot_err()?;
                x += ew;
            }
        }
        let header = self.header_h(w).min(h / 2);
        let grid = root.clone().shrink((0, header), (w, h - header));
        let x_vals = self
            .runs
            .iter()
            .flat_map(|r| r.epochs.iter().map(|e| e.epoch));
        let (x_lo, x_hi) = epoch_range(x_vals);
        let sets = self.sets();
        for (area, panel) in grid.split_evenly((2, 2)).iter().zip(PANELS.iter()) {
            self.draw_panel(area, panel, &sets, (x_lo, x_hi))?;
        }
        Ok(())
    }
}

/// Epoch axis range: exactly the data range, or ±0.5 around a single epoch.
fn epoch_range(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = vals
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if lo > hi {
        (0.0, 1.0)
    } else if hi - lo < 1e-9 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}

impl TrainingCurves {
    fn draw_panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        (title, train, metric): &(&str, Getter, Option<usize>),
        sets: &[String],
        (x_lo, x_hi): (f64, f64),
    ) -> Result<()> {
        // (run, dash, xs, ys, non-finite values) of every curve of the panel; an absent
        // metric is NaN in `ys` but not counted as skipped
        type Curve = (usize, Dash, Vec<f64>, Vec<f64>, usize);
        let curve = |i: usize, d, r: &RunCurves, g: &dyn Fn(&EpochRecord) -> Option<f64>| {
            let xs: Vec<f64> = r.epochs.iter().map(|e| e.epoch).collect();
            let vals: Vec<Option<f64>> = r.epochs.iter().map(g).collect();
            let bad = vals
                .iter()
                .zip(&xs)
                .filter(|(v, x)| v.is_some_and(|v| !v.is_finite()) || !x.is_finite());
            let bad = bad.count();
            let ys = vals.iter().map(|v| v.unwrap_or(f64::NAN)).collect();
            (i, d, xs, ys, bad)
        };
        let mut curves: Vec<Curve> = Vec::new();
        for (i, r) in self.runs.iter().enumerate() {
            curves.push(curve(i, None, r, &|e| train(e)));
            for (k, set) in sets.iter().enumerate() {
                let Some(m) = metric else { break };
                let c = curve(i, Some(dash(k)), r, &|e| e.test_value(set, *m));
                if c.3.iter().any(|v| !v.is_nan()) || c.4 > 0 {
                    curves.push(c);
                }
            }
        }
        let (lo, hi) = padded_range(curves.iter().flat_map(|c| c.3.iter().copied()), false);
        let y_fmt = |v: &f64| tick_label(*v, lo, hi);
        let integer_epochs = self
            .runs
            .iter()
            .flat_map(|r| &r.epochs)
            .all(|e| e.epoch.fract() == 0.0);
        let x_fmt = |v: &f64| {
            if integer_epochs {
                format!("{v:.0}")
            } else {
                tick_label(*v, x_lo, x_hi)
            }
        };
        let x_axis: Ticked<RangedCoordf64> = Ticked::new(
            x_lo..x_hi,
            integer_epochs.then(|| integer_ticks(x_lo, x_hi, 8)),
        );
        let mut chart = ChartBuilder::on(area)
            .caption(*title, font(15.0))
            .margin(8)
            .margin_right(16)
            .x_label_area_size(38)
            .y_label_area_size(62)
            .build_cartesian_2d(x_axis, lo..hi)
            .plot_err()?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .x_labels(8)
            .y_labels(6)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(font(11.0))
            .axis_desc_style(font(12.0))
            .max_light_lines(0)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()
            .plot_err()?;
        let mut skipped = 0;
        let mut drawn = 0;
        for (i, dashes, xs, ys, bad) in &curves {
            let c = run_color(*i);
            let (segs, _) = segments(xs.iter().copied(), ys, false, false);
            skipped += bad;
            for seg in segs {
                drawn += seg.len();
                if seg.len() == 1 {
                    let marker = Circle::new(seg[0], 4, c.filled());
                    chart.draw_series(std::iter::once(marker)).plot_err()?;
                } else if let Some((d, g)) = dashes {
                    let line = DashedLineSeries::new(seg, *d, *g, c.stroke_width(2));
                    chart.draw_series(line).plot_err()?;
                } else {
                    let line = LineSeries::new(seg, c.stroke_width(2));
                    chart.draw_series(line).plot_err()?;
                }
            }
        }
        let plot = chart.plotting_area().strip_coord_spec();
        if drawn == 0 {
            draw_note(&plot, "no data")?;
        } else if skipped > 0 {
            draw_note(&plot, &format!("{skipped} NaN skipped"))?;
        }
        Ok(())
    }
}
