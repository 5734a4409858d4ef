//! EP vs ID transient curves (the paper's Figs. 3–5, "static gradient analysis").

use super::{
    draw_note, draw_title, fit_text, font, layer_color, padded_range, save_figure, segments,
    tick_label, PlotResult, Render,
};
use anyhow::{bail, Result};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Default panel width in pixels.
const PANEL_W: u32 = 300;
/// Default panel height in pixels.
const PANEL_H: u32 = 250;
/// Height of the header strip (title + legend) in pixels.
pub const TRANSIENT_HEADER_H: u32 = 60;

/// One layer's transient curves: for a few fixed coordinates of the layer's weight
/// gradient, the ID estimate and the EP estimate at backward times t = 0..T2.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TransientLayer {
    /// Layer name (shown after the panel title), may be empty.
    #[serde(default)]
    pub name: String,
    /// ID curves, one per coordinate, each of length T2+1.
    #[serde(default, deserialize_with = "super::nan_as_null::vec2")]
    pub id: Vec<Vec<f64>>,
    /// EP curves, one per coordinate (same coordinates as `id`), each of length T2+1.
    #[serde(default, deserialize_with = "super::nan_as_null::vec2")]
    pub ep: Vec<Vec<f64>>,
}

/// One block's layers, in model order (input side first).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TransientBlock {
    /// The block's layers, input side first.
    pub layers: Vec<TransientLayer>,
}

/// Grid of transient panels: **rows = layers within a block** (layer 1 on top),
/// **columns = blocks, the output block on the left** and the input block on the
/// right (the order in which the backward pass reaches them) unless `output_first`
/// is false. Blocks with fewer layers leave their lower cells blank. In each panel the
/// ID curves are solid, coloured by the layer's position in the whole model (plasma
/// colormap), and the EP curves are dashed black.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TransientFigure {
    /// Figure title (may be empty).
    #[serde(default)]
    pub title: String,
    /// Blocks in model order (block 1 = input side).
    pub blocks: Vec<TransientBlock>,
    /// Column order: true (default) puts the last (output) block in the left column.
    #[serde(default = "yes")]
    pub output_first: bool,
    /// Total size in pixels; default 300×250 per panel plus a 60 px header.
    #[serde(default)]
    pub size: Option<(u32, u32)>,
}

fn yes() -> bool {
    true
}

impl TransientFigure {
    /// A figure with default layout for `blocks` (model order).
    pub fn new(title: impl Into<String>, blocks: Vec<TransientBlock>) -> Self {
        TransientFigure {
            title: title.into(),
            blocks,
            output_first: true,
            size: None,
        }
    }

    /// Grid shape `(rows, columns)` = (most layers in a block, number of blocks).
    pub fn grid(&self) -> (usize, usize) {
        let rows = self
            .blocks
            .iter()
            .map(|b| b.layers.len())
            .max()
            .unwrap_or(0);
        (rows, self.blocks.len())
    }

    /// Total size in pixels (the `size` override or the default layout).
    pub fn size(&self) -> (u32, u32) {
        let (rows, cols) = self.grid();
        self.size.unwrap_or((
            PANEL_W * cols.max(1) as u32,
            TRANSIENT_HEADER_H + PANEL_H * rows.max(1) as u32,
        ))
    }

    /// Column of block `b` (0-based, model order) in the grid.
    pub fn column_of_block(&self, b: usize) -> usize {
        if self.output_first {
            self.blocks.len() - 1 - b
        } else {
            b
        }
    }

    /// Pixel rectangle `(x0, y0, width, height)` of grid cell (`row`, `col`).
    pub fn cell_rect(&self, row: usize, col: usize) -> (u32, u32, u32, u32) {
        let (w, h) = self.size();
        let (rows, cols) = self.grid();
        let (rows, cols) = (rows.max(1) as u32, cols.max(1) as u32);
        let gh = h.saturating_sub(TRANSIENT_HEADER_H);
        let (r, c) = (row as u32, col as u32);
        let x0 = c * w / cols;
        let x1 = (c + 1) * w / cols;
        let y0 = TRANSIENT_HEADER_H + r * gh / rows;
        let y1 = TRANSIENT_HEADER_H + (r + 1) * gh / rows;
        (x0, y0, x1 - x0, y1 - y0)
    }

    /// Data problems that will show in the figure (skipped NaN values, length
    /// mismatches); empty if none.
    pub fn warnings(&self) -> Vec<String> {
        self.check().unwrap_or_else(|e| vec![e.to_string()])
    }

    /// Writes the figure as PNG or SVG (by extension), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        save_figure(self, path)
    }

    /// Total number of layers in the model (for the colormap).
    fn n_layers(&self) -> usize {
        self.blocks.iter().map(|b| b.layers.len()).sum()
    }
}

/// A panel's title, numbered from 0 as tensor names are: a tensor name that says its block
/// (gdd's `blocks.0.synapses.1`) as it is, another name after its block
/// (`block 0 · conv1`), no name as `block 0 · layer 1`.
fn panel_title(block: usize, layer: usize, name: &str) -> String {
    if name.is_empty() {
        format!("block {block} · layer {layer}")
    } else if name.starts_with(&format!("blocks.{block}.")) {
        name.to_string()
    } else {
        format!("block {block} · {name}")
    }
}

fn count_bad(curves: &[Vec<f64>]) -> usize {
    curves.iter().flatten().filter(|v| !v.is_finite()).count()
}

impl Render for TransientFigure {
    fn check(&self) -> Result<Vec<String>> {
        if self.blocks.is_empty() || self.n_layers() == 0 {
            bail!("transient figure has no layers");
        }
        let mut any = false;
        let mut warnings = vec![];
        for (b, block) in self.blocks.iter().enumerate() {
            for (l, layer) in block.layers.iter().enumerate() {
                let title = panel_title(b, l, &layer.name);
                let curves = layer.id.iter().chain(&layer.ep);
                any |= curves.clone().any(|c| !c.is_empty());
                let bad = count_bad(&layer.id) + count_bad(&layer.ep);
                if bad > 0 {
                    warnings.push(format!("{title}: {bad} non-finite values skipped"));
                }
                let lens: Vec<usize> = curves.map(|c| c.len()).collect();
                if lens.iter().any(|&n| n != lens[0]) {
                    warnings.push(format!("{title}: curves have different lengths"));
                }
                if layer.id.len() != layer.ep.len() {
                    warnings.push(format!(
                        "{title}: {} ID curves but {} EP curves",
                        layer.id.len(),
                        layer.ep.len()
                    ));
                }
            }
        }
        if !any {
            bail!("transient figure has no data points");
        }
        Ok(warnings)
    }

    fn size(&self) -> (u32, u32) {
        TransientFigure::size(self)
    }

    fn render<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (w, _) = self.size();
        draw_title(root, &self.title, 6)?;
        draw_legend(root, w, if self.title.is_empty() { 18 } else { 42 })?;
        let n = self.n_layers();
        let mut global = 0;
        for (b, block) in self.blocks.iter().enumerate() {
            let col = self.column_of_block(b);
            for (l, layer) in block.layers.iter().enumerate() {
                let (x0, y0, cw, ch) = self.cell_rect(l, col);
                let area = root.clone().shrink((x0, y0), (cw, ch));
                let title = panel_title(b, l, &layer.name);
                draw_panel(&area, &title, layer, layer_color(global, n))?;
                global += 1;
            }
        }
        Ok(())
    }
}

/// "—— ID (colour = layer)   - - - EP" centred at height `y`.
fn draw_legend<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, w: u32, y: i32) -> Result<()> {
    let style = font(13.0).pos(Pos::new(HPos::Left, VPos::Center));
    let x = (w as i32 / 2 - 150).max(4);
    let grad: Vec<RGBColor> = (0..4).map(|i| layer_color(i, 4)).collect();
    for (i, c) in grad.iter().enumerate() {
        let xs = x + 8 * i as i32;
        root.draw(&PathElement::new(
            vec![(xs, y), (xs + 8, y)],
            c.stroke_width(4),
        ))
        .plot_err()?;
    }
    root.draw_text("ID (colour = layer)", &style, (x + 38, y))
        .plot_err()?;
    let xe = x + 190;
    root.draw(&DashedPathElement::new(
        vec![(xe, y), (xe + 32, y)],
        6,
        4,
        BLACK.stroke_width(2),
    ))
    .plot_err()?;
    root.draw_text("EP", &style, (xe + 38, y)).plot_err()
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    layer: &TransientLayer,
    color: RGBColor,
) -> Result<()> {
    let (pw, _) = area.dim_in_pixel();
    let curves = layer.id.iter().chain(&layer.ep);
    let t_len = curves.clone().map(|c| c.len()).max().unwrap_or(0);
    let t_max = (t_len.saturating_sub(1)).max(1) as f64;
    let (lo, hi) = padded_range(curves.flatten().copied(), false);
    let fmt = |v: &f64| tick_label(*v, lo, hi);
    let mut chart = ChartBuilder::on(area)
        .caption(fit_text(title, 14.0, pw as f64 - 10.0), font(14.0))
        .margin(8)
        .x_label_area_size(38)
        .y_label_area_size(58)
        .build_cartesian_2d(0f64..t_max, lo..hi)
        .plot_err()?;
    chart
        .configure_mesh()
        .x_desc("backward time")
        .x_labels(6)
        .y_labels(5)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&fmt)
        .label_style(font(11.0))
        .axis_desc_style(font(12.0))
        .max_light_lines(0)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()
        .plot_err()?;
    let mut skipped = 0;
    for curve in &layer.id {
        let (segs, s) = segments((0..curve.len()).map(|t| t as f64), curve, false, false);
        skipped += s;
        for seg in segs {
            if seg.len() == 1 {
                chart
                    .draw_series(std::iter::once(Circle::new(seg[0], 4, color.filled())))
                    .plot_err()?;
            } else {
                chart
                    .draw_series(LineSeries::new(seg, color.stroke_width(3)))
                    .plot_err()?;
            }
        }
    }
    for curve in &layer.ep {
        let (segs, s) = segments((0..curve.len()).map(|t| t as f64), curve, false, false);
        skipped += s;
        for seg in segs {
            if seg.len() == 1 {
                chart
                    .draw_series(std::iter::once(Cross::new(
                        seg[0],
                        4,
                        BLACK.stroke_width(2),
                    )))
                    .plot_err()?;
            } else {
                chart
                    .draw_series(DashedLineSeries::new(seg, 6, 4, BLACK.stroke_width(2)))
                    .plot_err()?;
            }
        }
    }
    let plot = chart.plotting_area().strip_coord_spec();
    if skipped > 0 {
        draw_note(&plot, &format!("{skipped} NaN skipped"))?;
    } else if t_len == 0 {
        draw_note(&plot, "no data")?;
    }
    Ok(())
}
