//! Training curves (loss, top-1, top-5, learning rate against epoch) for one or several
//! runs, and the reader for a run's `metrics.jsonl`.

use super::{
    draw_note, draw_title, font, padded_range, run_color, save_figure, segments, tick_label,
    PlotResult, Render,
};
use anyhow::{bail, Context, Result};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Default panel size in pixels.
const PANEL: (u32, u32) = (420, 300);

/// One epoch's metrics (the `"kind": "epoch"` records of `metrics.jsonl`; `test_*` is the
/// run's first evaluation set). Every metric is optional.
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
/// epoch, one colour per run (legend = run name); training series are solid lines,
/// test/validation series dashed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingCurves {
    /// Figure title (may be empty).
    #[serde(default)]
    pub title: String,
    /// Runs to overlay.
    pub runs: Vec<RunCurves>,
    /// Name of the held-out split in the legend; empty means "test".
    #[serde(default)]
    pub test_label: String,
    /// Total size in pixels; default 2×2 panels of 420×300 plus the header.
    #[serde(default)]
    pub size: Option<(u32, u32)>,
}

/// The four panels: title, train metric, test metric.
type Getter = fn(&EpochRecord) -> Option<f64>;
const PANELS: [(&str, Getter, Option<Getter>); 4] = [
    ("loss", |r| r.train_loss, Some(|r| r.test_loss)),
    ("top-1 accuracy", |r| r.train_top1, Some(|r| r.test_top1)),
    ("top-5 accuracy", |r| r.train_top5, Some(|r| r.test_top5)),
    ("learning rate", |r| r.lr, None),
];

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

    fn test_label(&self) -> &str {
        if self.test_label.is_empty() {
            "test"
        } else {
            &self.test_label
        }
    }

    /// Legend entries: (label, colour or None for black, dashed?, width in px).
    fn legend_entries(&self) -> Vec<(String, RGBColor, bool, i32)> {
        let mut e: Vec<(String, RGBColor, bool)> = self
            .runs
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), run_color(i), false))
            .collect();
        e.push(("train".into(), BLACK, false));
        e.push((self.test_label().to_string(), BLACK, true));
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
        let mut warnings = vec![];
        for r in &self.runs {
            if r.epochs.is_empty() {
                warnings.push(format!("run {:?} has no epoch records", r.name));
            }
            let bad = r
                .epochs
                .iter()
                .flat_map(|e| {
                    let panels = PANELS.iter();
                    panels.flat_map(move |(_, tr, te)| [Some(tr(e)), te.map(|g| g(e))])
                })
                .flatten()
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
                let (label, c, dashed, ew) = &entries[i];
                let pts = vec![(x, y), (x + 32, y)];
                if *dashed {
                    root.draw(&DashedPathElement::new(pts, 6, 4, c.stroke_width(2)))
                } else {
                    root.draw(&PathElement::new(pts, c.stroke_width(2)))
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
        for (area, panel) in grid.split_evenly((2, 2)).iter().zip(PANELS.iter()) {
            self.draw_panel(area, panel, (x_lo, x_hi))?;
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
        (title, train, test): &(&str, Getter, Option<Getter>),
        (x_lo, x_hi): (f64, f64),
    ) -> Result<()> {
        let series = |g: Getter| {
            self.runs.iter().map(move |r| {
                let xs: Vec<f64> = r.epochs.iter().map(|e| e.epoch).collect();
                let ys: Vec<f64> = r.epochs.iter().map(|e| g(e).unwrap_or(f64::NAN)).collect();
                (xs, ys)
            })
        };
        let all_y = series(*train)
            .chain(test.iter().flat_map(|g| series(*g)))
            .flat_map(|(_, ys)| ys);
        let (lo, hi) = padded_range(all_y.clone(), false);
        let span = hi - lo;
        let y_fmt = |v: &f64| tick_label(*v, span);
        let integer_epochs = self
            .runs
            .iter()
            .flat_map(|r| &r.epochs)
            .all(|e| e.epoch.fract() == 0.0);
        let x_fmt = |v: &f64| {
            if integer_epochs {
                format!("{v:.0}")
            } else {
                tick_label(*v, x_hi - x_lo)
            }
        };
        let mut chart = ChartBuilder::on(area)
            .caption(*title, font(15.0))
            .margin(8)
            .margin_right(16)
            .x_label_area_size(38)
            .y_label_area_size(62)
            .build_cartesian_2d(x_lo..x_hi, lo..hi)
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
        for (dashed, getter) in [(false, Some(*train)), (true, *test)] {
            let Some(g) = getter else { continue };
            for (i, (xs, ys)) in series(g).enumerate() {
                let c = run_color(i);
                let (segs, _) = segments(xs.iter().copied(), &ys, false, false);
                // Only count real non-finite values, not absent metrics.
                skipped += self.runs[i]
                    .epochs
                    .iter()
                    .filter(|e| g(e).is_some_and(|v| !v.is_finite()) || !e.epoch.is_finite())
                    .count();
                for seg in segs {
                    drawn += seg.len();
                    if seg.len() == 1 {
                        let marker = Circle::new(seg[0], 4, c.filled());
                        chart.draw_series(std::iter::once(marker)).plot_err()?;
                    } else if dashed {
                        let line = DashedLineSeries::new(seg, 6, 4, c.stroke_width(2));
                        chart.draw_series(line).plot_err()?;
                    } else {
                        let line = LineSeries::new(seg, c.stroke_width(2));
                        chart.draw_series(line).plot_err()?;
                    }
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
