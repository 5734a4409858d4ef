//! EP–ID discrepancy against β (log-log) or against T2 (lin-log).

use super::{
    draw_note, draw_title, drawable, fit_text, font, integer_ticks, layer_color, log_tick_label,
    log_ticks, padded_range, save_figure, segments, tick_label, PlotResult, Render, Ticked,
};
use anyhow::{bail, Result};
use plotters::coord::combinators::LogCoord;
use plotters::coord::ranged1d::Ranged;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One named series of a sweep (e.g. a layer, or "all"): one y value per x value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SweepSeries {
    /// Legend entry.
    pub name: String,
    /// One value per entry of [`SweepFigure::x`], or of this series' own `x` (NaN = missing).
    #[serde(deserialize_with = "super::nan_as_null::vec")]
    pub y: Vec<f64>,
    /// This series' own x values (e.g. wall times), instead of the figure's shared ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub x: Vec<f64>,
}

/// A reference power law y ∝ x^exponent, drawn dashed grey through the first drawable
/// point of the first series and named in the legend (e.g. "∝ β²").
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReferenceSlope {
    /// Power of x.
    pub exponent: f64,
    /// Legend entry.
    pub label: String,
}

/// Discrepancy sweep: markers + lines for each series against `x`, with optional
/// logarithmic axes and reference slope; the legend sits to the right of the plot.
/// Non-finite values, and non-positive ones on a log axis, are skipped (and reported).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SweepFigure {
    /// Figure title (may be empty).
    #[serde(default)]
    pub title: String,
    /// x-axis label, e.g. "β" or "T2".
    pub x_label: String,
    /// y-axis label, e.g. "EP–ID discrepancy".
    pub y_label: String,
    /// The swept values.
    #[serde(deserialize_with = "super::nan_as_null::vec")]
    pub x: Vec<f64>,
    /// One or more series.
    pub series: Vec<SweepSeries>,
    /// Logarithmic x axis.
    #[serde(default)]
    pub x_log: bool,
    /// Logarithmic y axis.
    #[serde(default)]
    pub y_log: bool,
    /// The x values are counts (e.g. T2): integer ticks.
    #[serde(default)]
    pub x_integer: bool,
    /// Optional reference slope.
    #[serde(default)]
    pub reference: Option<ReferenceSlope>,
    /// Total size in pixels; default 560×420 plot area plus legend column.
    #[serde(default)]
    pub size: Option<(u32, u32)>,
}

impl SweepFigure {
    /// Discrepancy against β on log-log axes, with a "∝ β²" reference slope.
    pub fn vs_beta(x: Vec<f64>, series: Vec<SweepSeries>) -> Self {
        SweepFigure {
            title: String::new(),
            x_label: "β".into(),
            y_label: "EP–ID discrepancy".into(),
            x,
            series,
            x_log: true,
            y_log: true,
            x_integer: false,
            reference: Some(ReferenceSlope {
                exponent: 2.0,
                label: "∝ β²".into(),
            }),
            size: None,
        }
    }

    /// Discrepancy against T2 on lin-log axes (linear T2, logarithmic discrepancy).
    pub fn vs_t2(x: Vec<f64>, series: Vec<SweepSeries>) -> Self {
        SweepFigure {
            title: String::new(),
            x_label: "T2".into(),
            y_label: "EP–ID discrepancy".into(),
            x,
            series,
            x_log: false,
            y_log: true,
            x_integer: true,
            reference: None,
            size: None,
        }
    }

    /// Total size in pixels (the `size` override or the default layout).
    pub fn size(&self) -> (u32, u32) {
        let header = if self.title.is_empty() { 10 } else { 40 };
        self.size.unwrap_or((560 + self.legend_w(), header + 420))
    }

    /// The x values of series `s`: its own, or the figure's shared ones.
    fn xs<'s>(&'s self, s: &'s SweepSeries) -> &'s [f64] {
        if s.x.is_empty() {
            &self.x
        } else {
            &s.x
        }
    }

    /// Data problems (skipped values); empty if none.
    pub fn warnings(&self) -> Vec<String> {
        self.check().unwrap_or_else(|e| vec![e.to_string()])
    }

    /// Writes the figure as PNG or SVG (by extension), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        save_figure(self, path)
    }

    fn legend_entries(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.series.iter().map(|s| s.name.as_str()).collect();
        if let Some(r) = &self.reference {
            v.push(&r.label);
        }
        v
    }

    fn legend_w(&self) -> u32 {
        let longest = self
            .legend_entries()
            .iter()
            .map(|s| s.chars().count())
            .max();
        60 + (longest.unwrap_or(0).min(30) as u32) * 15 / 2
    }

    /// Number of points that cannot be drawn.
    fn skipped(&self) -> usize {
        let bad_x = |x: f64| !drawable(x, self.x_log);
        let mut n = 0;
        for s in &self.series {
            for (&x, &y) in self.xs(s).iter().zip(&s.y) {
                n += usize::from(bad_x(x) || !drawable(y, self.y_log));
            }
        }
        n
    }

    /// The reference curve through the first drawable point of the first series.
    fn reference_points(
        &self,
        (x_lo, x_hi): (f64, f64),
        (y_lo, y_hi): (f64, f64),
    ) -> Option<Vec<(f64, f64)>> {
        let r = self.reference.as_ref()?;
        let s = self.series.first()?;
        let (x0, y0) = self
            .xs(s)
            .iter()
            .zip(&s.y)
            .find(|(&x, &y)| drawable(x, self.x_log) && drawable(y, self.y_log) && x != 0.0)?;
        let k = y0 / x0.powf(r.exponent);
        let pts = (0..=60)
            .map(|i| {
                let f = i as f64 / 60.0;
                let x = if self.x_log {
                    (x_lo.ln() + f * (x_hi.ln() - x_lo.ln())).exp()
                } else {
                    x_lo + f * (x_hi - x_lo)
                };
                (x, k * x.powf(r.exponent))
            })
            .filter(|&(x, y)| drawable(x, self.x_log) && drawable(y, self.y_log))
            .filter(|&(_, y)| (y_lo..=y_hi).contains(&y))
            .collect();
        Some(pts)
    }

    fn draw_chart<DB, X, Y>(
        &self,
        area: &DrawingArea<DB, Shift>,
        x_range: Ticked<X>,
        y_range: Ticked<Y>,
        (x_lo, x_hi): (f64, f64),
        (y_lo, y_hi): (f64, f64),
    ) -> Result<()>
    where
        DB: DrawingBackend,
        X: Ranged<ValueType = f64>,
        Y: Ranged<ValueType = f64>,
    {
        let (x_log, y_log, x_int) = (self.x_log, self.y_log, self.x_integer);
        let x_fmt = |v: &f64| {
            if x_log {
                log_tick_label(*v, x_lo, x_hi)
            } else if x_int {
                format!("{v:.0}")
            } else {
                tick_label(*v, x_lo, x_hi)
            }
        };
        let y_fmt = |v: &f64| {
            if y_log {
                log_tick_label(*v, y_lo, y_hi)
            } else {
                tick_label(*v, y_lo, y_hi)
            }
        };
        let mut chart = ChartBuilder::on(area)
            .margin(10)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(x_range, y_range)
            .plot_err()?;
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(font(12.0))
            .axis_desc_style(font(14.0))
            .max_light_lines(0)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()
            .plot_err()?;
        if let Some(pts) = self.reference_points((x_lo, x_hi), (y_lo, y_hi)) {
            if pts.len() > 1 {
                let c = RGBColor(120, 120, 120).stroke_width(2);
                chart
                    .draw_series(DashedLineSeries::new(pts, 8, 5, c))
                    .plot_err()?;
            }
        }
        let n = self.series.len();
        for (i, s) in self.series.iter().enumerate() {
            let c = layer_color(i, n);
            let (segs, _) = segments(self.xs(s).iter().copied(), &s.y, x_log, y_log);
            for seg in segs {
                chart
                    .draw_series(LineSeries::new(seg.clone(), c.stroke_width(2)))
                    .plot_err()?;
                let dots = seg.into_iter().map(|p| Circle::new(p, 4, c.filled()));
                chart.draw_series(dots).plot_err()?;
            }
        }
        let skipped = self.skipped();
        if skipped > 0 {
            let plot = chart.plotting_area().strip_coord_spec();
            draw_note(&plot, &format!("{skipped} point(s) skipped"))?;
        }
        Ok(())
    }

    /// Legend column at the right edge: series markers/lines, then the reference.
    fn draw_legend<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let style = font(13.0).pos(Pos::new(HPos::Left, VPos::Center));
        let n = self.series.len();
        let max_px = self.legend_w() as f64 - 50.0;
        let mut y = 40;
        for (i, s) in self.series.iter().enumerate() {
            let c = layer_color(i, n);
            area.draw(&PathElement::new(vec![(6, y), (34, y)], c.stroke_width(2)))
                .plot_err()?;
            area.draw(&Circle::new((20, y), 4, c.filled())).plot_err()?;
            area.draw_text(&fit_text(&s.name, 13.0, max_px), &style, (40, y))
                .plot_err()?;
            y += 22;
        }
        if let Some(r) = &self.reference {
            let c = RGBColor(120, 120, 120).stroke_width(2);
            area.draw(&DashedPathElement::new(vec![(6, y), (34, y)], 8, 5, c))
                .plot_err()?;
            area.draw_text(&fit_text(&r.label, 13.0, max_px), &style, (40, y))
                .plot_err()?;
        }
        Ok(())
    }
}

impl Render for SweepFigure {
    fn check(&self) -> Result<Vec<String>> {
        if self.series.is_empty() || self.series.iter().all(|s| self.xs(s).is_empty()) {
            bail!("sweep figure has no data (x values or series missing)");
        }
        for s in &self.series {
            if s.y.len() != self.xs(s).len() {
                bail!(
                    "sweep series {:?} has {} values for {} x values",
                    s.name,
                    s.y.len(),
                    self.xs(s).len()
                );
            }
        }
        let skipped = self.skipped();
        let total: usize = self.series.iter().map(|s| s.y.len()).sum();
        if skipped == total {
            bail!("sweep figure: no drawable point (non-finite, or ≤ 0 on a log axis)");
        }
        let mut warnings = vec![];
        if skipped > 0 {
            let why = if self.x_log || self.y_log {
                "non-finite or non-positive on a log axis"
            } else {
                "non-finite"
            };
            warnings.push(format!(
                "sweep: {skipped} of {total} points skipped ({why})"
            ));
        }
        Ok(warnings)
    }

    fn size(&self) -> (u32, u32) {
        SweepFigure::size(self)
    }

    fn render<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (w, h) = self.size();
        draw_title(root, &self.title, 8)?;
        let header = if self.title.is_empty() { 10 } else { 40 };
        let lw = self.legend_w().min(w / 2);
        let body = root.clone().shrink((0, header), (w - lw, h - header));
        let legend = root.clone().shrink((w - lw, header), (lw, h - header));
        let xs = self
            .series
            .iter()
            .flat_map(|s| self.xs(s).iter().copied())
            .filter(|&x| drawable(x, self.x_log));
        let xr = padded_range(xs, self.x_log);
        let ys = self.series.iter().flat_map(|s| {
            s.y.iter()
                .zip(self.xs(s))
                .filter(|(_, &x)| drawable(x, self.x_log))
                .map(|(&y, _)| y)
        });
        let yr = padded_range(ys, self.y_log);
        // the axes' ticks: 1-2-5 (or 1…9) multiples on short log axes, integers for counts
        let ticks = |(lo, hi): (f64, f64), log: bool, int: bool| {
            if log {
                Some(log_ticks(lo, hi, 8))
            } else if int {
                Some(integer_ticks(lo, hi, 8))
            } else {
                None
            }
        };
        let (xt, yt) = (
            ticks(xr, self.x_log, self.x_integer),
            ticks(yr, self.y_log, false),
        );
        type Lin = Ticked<RangedCoordf64>;
        match (self.x_log, self.y_log) {
            (false, false) => self.draw_chart(
                &body,
                Lin::new(xr.0..xr.1, xt),
                Lin::new(yr.0..yr.1, yt),
                xr,
                yr,
            )?,
            (true, false) => self.draw_chart(
                &body,
                Ticked::<LogCoord<f64>>::new((xr.0..xr.1).log_scale(), xt),
                Lin::new(yr.0..yr.1, yt),
                xr,
                yr,
            )?,
            (false, true) => self.draw_chart(
                &body,
                Lin::new(xr.0..xr.1, xt),
                Ticked::<LogCoord<f64>>::new((yr.0..yr.1).log_scale(), yt),
                xr,
                yr,
            )?,
            (true, true) => self.draw_chart(
                &body,
                Ticked::<LogCoord<f64>>::new((xr.0..xr.1).log_scale(), xt),
                Ticked::<LogCoord<f64>>::new((yr.0..yr.1).log_scale(), yt),
                xr,
                yr,
            )?,
        }
        self.draw_legend(&legend)
    }
}
