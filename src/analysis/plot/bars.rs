//! Bar chart of the EP–ID cosine similarity per layer.

use super::{
    draw_note, draw_title, fit_text, font, layer_color, lighten, save_figure, PlotResult, Render,
};
use anyhow::{bail, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One series of bars: a value per layer (NaN = missing, drawn as "n/a").
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BarSeries {
    /// Legend entry, e.g. "vs ID exact".
    pub name: String,
    /// One value per layer, in the order of [`CosineBars::layers`].
    #[serde(deserialize_with = "super::nan_as_null::vec")]
    pub values: Vec<f64>,
}

/// EP–ID cosine similarity per layer: x = layer names in model order, y from
/// min(0, lowest value) to 1 (plus headroom for the value labels). Bars are coloured by
/// layer with the same plasma colormap as [`super::TransientFigure`]; with several
/// series (e.g. vs ID-exact and vs ID-reference) the bars stand side by side, the
/// first series in full colour and later ones lighter with a dark outline, and a
/// legend names them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CosineBars {
    /// Figure title (may be empty).
    #[serde(default)]
    pub title: String,
    /// Layer names in model order.
    pub layers: Vec<String>,
    /// One or more series (at most 4), each with one value per layer.
    pub series: Vec<BarSeries>,
    /// y-axis label; empty means "cosine similarity".
    #[serde(default)]
    pub y_label: String,
    /// Total size in pixels; default 60 px per layer (at least 600) × 420.
    #[serde(default)]
    pub size: Option<(u32, u32)>,
}

impl CosineBars {
    /// A chart for `layers` with the given series and default layout.
    pub fn new(title: impl Into<String>, layers: Vec<String>, series: Vec<BarSeries>) -> Self {
        CosineBars {
            title: title.into(),
            layers,
            series,
            y_label: String::new(),
            size: None,
        }
    }

    /// Total size in pixels (the `size` override or the default layout).
    pub fn size(&self) -> (u32, u32) {
        let longest = self
            .layers
            .iter()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(0);
        let label_h = if self.rotated() {
            (longest as u32).min(40) * 15 / 2 + 10
        } else {
            20
        };
        self.size.unwrap_or((
            (90 + 60 * self.layers.len() as u32).max(600),
            self.header_h() + 360 + label_h,
        ))
    }

    /// Data problems that will show in the figure (missing values); empty if none.
    pub fn warnings(&self) -> Vec<String> {
        self.check().unwrap_or_else(|e| vec![e.to_string()])
    }

    /// Writes the figure as PNG or SVG (by extension), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        save_figure(self, path)
    }

    /// Series legend (swatch + name) centred in the header, below the title.
    fn draw_legend<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let named: Vec<(usize, &BarSeries)> = self
            .series
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.name.is_empty())
            .collect();
        if named.is_empty() {
            return Ok(());
        }
        let n = self.layers.len();
        let widths: Vec<i32> = named
            .iter()
            .map(|(_, s)| 30 + (7.5 * s.name.chars().count() as f64) as i32)
            .collect();
        let total: i32 = widths.iter().sum();
        let mut x = (self.size().0 as i32 - total) / 2;
        let y = if self.title.is_empty() { 20 } else { 44 };
        let style = font(13.0).pos(Pos::new(HPos::Left, VPos::Center));
        for ((k, s), w) in named.into_iter().zip(widths) {
            let r = [(x, y - 7), (x + 18, y + 7)];
            let c = lighten(layer_color(n / 2, n), series_shade(k));
            root.draw(&Rectangle::new(r, c.filled())).plot_err()?;
            let edge = if k > 0 { BLACK } else { c };
            root.draw(&Rectangle::new(r, edge.stroke_width(1)))
                .plot_err()?;
            root.draw_text(&s.name, &style, (x + 24, y)).plot_err()?;
            x += w;
        }
        Ok(())
    }

    /// Height of the header strip (title and legend) in pixels.
    fn header_h(&self) -> u32 {
        let legend = self.series.iter().any(|s| !s.name.is_empty());
        match (self.title.is_empty(), legend) {
            (_, true) => 60,
            (false, false) => 40,
            (true, false) => 10,
        }
    }

    /// Whether the x labels are drawn vertically (long names or many layers).
    fn rotated(&self) -> bool {
        let longest = self
            .layers
            .iter()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(0);
        longest > 8 || self.layers.len() > 16
    }
}

impl Render for CosineBars {
    fn check(&self) -> Result<Vec<String>> {
        if self.layers.is_empty() {
            bail!("cosine bar chart has no layers");
        }
        if self.series.is_empty() || self.series.len() > 4 {
            bail!(
                "cosine bar chart needs 1 to 4 series, got {}",
                self.series.len()
            );
        }
        let mut warnings = vec![];
        for s in &self.series {
            if s.values.len() != self.layers.len() {
                bail!(
                    "series {:?} has {} values for {} layers",
                    s.name,
                    s.values.len(),
                    self.layers.len()
                );
            }
            for (v, l) in s.values.iter().zip(&self.layers) {
                if !v.is_finite() {
                    warnings.push(format!("series {:?}, layer {l}: value {v} skipped", s.name));
                }
            }
        }
        Ok(warnings)
    }

    fn size(&self) -> (u32, u32) {
        CosineBars::size(self)
    }

    fn render<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let n = self.layers.len();
        let ns = self.series.len();
        draw_title(root, &self.title, 8)?;
        let (w, h) = self.size();
        let header = self.header_h().min(h / 2);
        let area = root.clone().shrink((0, header), (w, h - header));
        let finite = self
            .series
            .iter()
            .flat_map(|s| &s.values)
            .copied()
            .filter(|v| v.is_finite());
        let lowest = finite.clone().fold(0f64, f64::min);
        let highest = finite.fold(1f64, f64::max);
        let y_lo = if lowest < 0.0 {
            lowest - 0.05 * (highest - lowest)
        } else {
            0.0
        };
        let rotated = self.rotated();
        let label_h = h.saturating_sub(header + 360).max(20) + 10;
        let (aw, _) = area.dim_in_pixel();
        let slot_px = (aw as f64 - 90.0) / n as f64;
        // value labels ("0.999", 10 px: ~29 px wide) above bars too narrow for them are
        // drawn vertically, which needs more headroom
        let bar_px = slot_px * 0.8 / ns as f64 * 0.92;
        let vertical_values = bar_px < VALUE_LABEL_PX + 4.0;
        let show_values = bar_px >= 12.0;
        let headroom = if vertical_values && show_values {
            0.22
        } else {
            0.1
        };
        let y_hi = highest + headroom * (highest - y_lo);
        let y_label = if self.y_label.is_empty() {
            "cosine similarity"
        } else {
            &self.y_label
        };
        let mut chart = ChartBuilder::on(&area)
            .margin(10)
            .margin_right(20)
            .x_label_area_size(label_h)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5f64..n as f64 - 0.5, y_lo..y_hi)
            .plot_err()?;
        let names = &self.layers;
        let x_fmt = |v: &f64| {
            let i = v.round();
            if !rotated && (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
                fit_text(&names[i as usize], 12.0, slot_px)
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n + 1)
            .x_label_formatter(&x_fmt)
            .x_label_style(font(12.0))
            .y_labels(8)
            .y_label_formatter(&|v| format!("{v:.2}"))
            .y_label_style(font(12.0))
            .y_desc(y_label)
            .axis_desc_style(font(13.0))
            .max_light_lines(0)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()
            .plot_err()?;
        if rotated {
            // Vertical labels reading upwards, ending just below the axis (drawn here
            // because the mesh centres rotated labels on the tick).
            let style = font(12.0)
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Right, VPos::Center));
            for (i, name) in names.iter().enumerate() {
                let (px, py) = chart.backend_coord(&(i as f64, y_lo));
                let label = fit_text(name, 12.0, label_h as f64 - 14.0);
                root.draw_text(&label, &style, (px, py + 8)).plot_err()?;
            }
        }
        // Reference line at y = 1.
        chart
            .draw_series(LineSeries::new(
                vec![(-0.5, 1.0), (n as f64 - 0.5, 1.0)],
                RGBColor(150, 150, 150).stroke_width(1),
            ))
            .plot_err()?;
        let group_w = 0.8;
        let bar_w = group_w / ns as f64;
        let mut missing = 0;
        for (k, s) in self.series.iter().enumerate() {
            let shade = series_shade(k);
            let mut bars = vec![];
            let mut labels = vec![];
            for (i, &v) in s.values.iter().enumerate() {
                let x0 = i as f64 - group_w / 2.0 + k as f64 * bar_w;
                let x1 = x0 + bar_w * 0.92;
                if !v.is_finite() {
                    missing += 1;
                    labels.push(((x0 + x1) / 2.0, 0f64.max(y_lo), "n/a".to_string()));
                    continue;
                }
                let c = lighten(layer_color(i, n), shade);
                bars.push(Rectangle::new([(x0, 0.0), (x1, v)], c.filled()));
                if k > 0 {
                    bars.push(Rectangle::new([(x0, 0.0), (x1, v)], BLACK.stroke_width(1)));
                }
                if show_values {
                    labels.push(((x0 + x1) / 2.0, v.max(0.0), format!("{v:.3}")));
                }
            }
            chart.draw_series(bars).plot_err()?;
            let style = if vertical_values {
                font(10.0)
                    .transform(FontTransform::Rotate270)
                    .pos(Pos::new(HPos::Left, VPos::Center))
            } else {
                font(10.0).pos(Pos::new(HPos::Center, VPos::Bottom))
            };
            chart
                .draw_series(labels.into_iter().map(|(x, y, t)| {
                    EmptyElement::at((x, y)) + Text::new(t, (0, -3), style.clone())
                }))
                .plot_err()?;
        }
        self.draw_legend(root)?;
        if missing > 0 {
            let plot = chart.plotting_area().strip_coord_spec();
            draw_note(&plot, &format!("{missing} missing value(s)"))?;
        }
        Ok(())
    }
}

/// Width in pixels of a value label (`0.999` at 10 px in DejaVu Sans).
const VALUE_LABEL_PX: f64 = 29.0;

/// How much series `k`'s bars are mixed with white.
fn series_shade(k: usize) -> f64 {
    if k == 0 {
        0.0
    } else {
        (0.25 + 0.2 * k as f64).min(0.8)
    }
}
