//! Stacked bar chart: one bar per category (e.g. a block), stacked by component (e.g. the
//! energy components of `ffebm cost`), legend to the right.

use super::{draw_title, fit_text, font, layer_color, save_figure, PlotResult, Render};
use anyhow::{bail, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Bars of `categories`, each the stack of `components` (`values[c][i]`: component `c` of
/// category `i`, ≥ 0).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StackedBars {
    #[serde(default)]
    pub title: String,
    pub categories: Vec<String>,
    pub components: Vec<String>,
    pub values: Vec<Vec<f64>>,
    pub y_label: String,
}

const LEGEND_W: u32 = 190;

impl StackedBars {
    /// Total size in pixels: 110 px per bar (at least 520) plus the legend, × 460.
    pub fn size(&self) -> (u32, u32) {
        (
            (110 * self.categories.len() as u32).max(520) + 90 + LEGEND_W,
            460,
        )
    }

    /// Writes the figure as PNG or SVG (by extension), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        save_figure(self, path)
    }

    fn color(&self, c: usize) -> RGBColor {
        layer_color(c, self.components.len())
    }
}

impl Render for StackedBars {
    fn check(&self) -> Result<Vec<String>> {
        if self.categories.is_empty() || self.components.is_empty() {
            bail!("stacked bar chart has no categories or no components");
        }
        if self.values.len() != self.components.len()
            || self.values.iter().any(|v| v.len() != self.categories.len())
        {
            bail!(
                "stacked bar chart needs {} components × {} categories of values",
                self.components.len(),
                self.categories.len()
            );
        }
        if self
            .values
            .iter()
            .flatten()
            .any(|v| !v.is_finite() || *v < 0.0)
        {
            bail!("stacked bar chart: values must be finite and non-negative");
        }
        Ok(vec![])
    }

    fn size(&self) -> (u32, u32) {
        StackedBars::size(self)
    }

    fn render<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let n = self.categories.len();
        let header = if self.title.is_empty() { 10 } else { 40 };
        draw_title(root, &self.title, 8)?;
        let (w, h) = self.size();
        let (plot, legend) = root
            .clone()
            .shrink((0, header), (w, h - header))
            .split_horizontally(w - LEGEND_W);
        let top = (0..n)
            .map(|i| self.values.iter().map(|v| v[i]).sum::<f64>())
            .fold(0.0, f64::max);
        let y_hi = if top > 0.0 { top * 1.08 } else { 1.0 };
        let slot_px = (w - LEGEND_W - 90) as f64 / n as f64;
        let names = &self.categories;
        let mut chart = ChartBuilder::on(&plot)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..y_hi)
            .plot_err()?;
        let x_fmt = |v: &f64| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
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
            .y_label_formatter(&|v| {
                if y_hi >= 10.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            })
            .y_label_style(font(12.0))
            .y_desc(self.y_label.as_str())
            .axis_desc_style(font(13.0))
            .max_light_lines(0)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()
            .plot_err()?;
        for i in 0..n {
            let (x0, x1) = (i as f64 - 0.35, i as f64 + 0.35);
            let mut base = 0.0;
            for (c, v) in self.values.iter().enumerate() {
                let top = base + v[i];
                if v[i] > 0.0 {
                    chart
                        .draw_series(std::iter::once(Rectangle::new(
                            [(x0, base), (x1, top)],
                            self.color(c).filled(),
                        )))
                        .plot_err()?;
                }
                base = top;
            }
        }
        let style = font(12.0).pos(Pos::new(HPos::Left, VPos::Center));
        for (c, name) in self.components.iter().enumerate() {
            let y = 40 + 24 * c as i32;
            legend
                .draw(&Rectangle::new(
                    [(10, y - 7), (28, y + 7)],
                    self.color(c).filled(),
                ))
                .plot_err()?;
            legend
                .draw_text(
                    &fit_text(name, 12.0, LEGEND_W as f64 - 40.0),
                    &style,
                    (34, y),
                )
                .plot_err()?;
        }
        Ok(())
    }
}
