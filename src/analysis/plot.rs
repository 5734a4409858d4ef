//! Figures for ffebm runs and gradient analyses, rendered with `plotters`.
//!
//! Every figure is a plain-data struct (serde Serialize/Deserialize, so it can be
//! dumped to / loaded from JSON) with a `save(path)` method that picks the backend
//! from the extension (`.png` or `.svg`, case-insensitive; anything else is an error)
//! and writes atomically: the figure is rendered to a hidden temporary file in the
//! destination directory, which is then renamed onto `path`. Nothing is left behind
//! on error.
//!
//! * [`TransientFigure`]: EP vs ID transient curves per layer (the paper's Figs. 3–5).
//! * [`CosineBars`]: EP–ID cosine similarity per layer.
//! * [`TrainingCurves`]: loss / top-1 / top-5 / learning rate against epoch for one or
//!   several runs; [`read_metrics_jsonl`] and [`RunCurves::from_run_dir`] read a run's
//!   `metrics.jsonl`, [`plot_runs`] is the `ffebm plot RUN_DIR…` entry point.
//! * [`SweepFigure`]: EP–ID discrepancy against β (log-log) or T2 (lin-log); also any
//!   quantity against a swept value (`ffebm cost --sweep`).
//! * [`StackedBars`]: bars stacked by component (`ffebm cost --plot`).
//!
//! Text is drawn with an embedded subset of DejaVu Sans (`assets/fonts/`, Bitstream
//! Vera licence) registered with plotters' `ab_glyph` font table, so rendering needs
//! no system fonts and no fontconfig. SVG output names the `sans-serif` family.
//!
//! In JSON, NaN values are written as `null` and read back as NaN.
//!
//! Degenerate data: NaN/±inf values (and non-positive values on log axes) are skipped;
//! each figure's `warnings()` lists what was skipped and the affected panel shows a
//! red note. Constant curves get a padded axis range. Empty input is an error.

mod bars;
mod stacked;
mod sweep;
mod training;
mod transient;

pub use bars::{BarSeries, CosineBars};
pub use stacked::StackedBars;
pub use sweep::{ReferenceSlope, SweepFigure, SweepSeries};
pub use training::{plot_runs, read_metrics_jsonl, EpochRecord, RunCurves, TrainingCurves};
pub use transient::{TransientBlock, TransientFigure, TransientLayer, TRANSIENT_HEADER_H};

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The embedded font (subset of DejaVu Sans, see `assets/fonts/LICENSE-DejaVu.txt`).
static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-subset.ttf");

/// Font family name used for all text.
pub(crate) const FONT: &str = "sans-serif";

/// Registers the embedded font with plotters (once per process).
fn ensure_font() -> Result<()> {
    static OK: OnceLock<bool> = OnceLock::new();
    let ok = *OK.get_or_init(|| {
        register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok()
            && register_font(FONT, FontStyle::Bold, FONT_BYTES).is_ok()
    });
    if ok {
        Ok(())
    } else {
        bail!("the embedded font could not be parsed")
    }
}

/// Output format of a figure file, chosen from the path's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Raster image (`.png`).
    Png,
    /// Vector image (`.svg`).
    Svg,
}

impl Format {
    /// Format for `path` from its extension (`png` or `svg`, any case); error otherwise.
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase());
        match ext.as_deref() {
            Some("png") => Ok(Format::Png),
            Some("svg") => Ok(Format::Svg),
            _ => bail!(
                "cannot write figure {}: unsupported extension (use .png or .svg)",
                path.display()
            ),
        }
    }
}

/// Internal interface shared by all figures.
pub(crate) trait Render {
    /// Checks the data: error on empty/inconsistent input, else the list of warnings.
    fn check(&self) -> Result<Vec<String>>;
    /// Total size in pixels.
    fn size(&self) -> (u32, u32);
    /// Draws onto `root` (already filled white, of size `self.size()`).
    fn render<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// Converts a plotters drawing error into `anyhow`.
pub(crate) trait PlotResult<T> {
    fn plot_err(self) -> Result<T>;
}

impl<T, E: std::fmt::Display> PlotResult<T> for std::result::Result<T, E> {
    fn plot_err(self) -> Result<T> {
        self.map_err(|e| anyhow!("drawing failed: {e}"))
    }
}

/// Renders `fig` to `path` (PNG or SVG by extension), atomically.
pub(crate) fn save_figure<F: Render>(fig: &F, path: &Path) -> Result<()> {
    let format = Format::from_path(path)?;
    fig.check()
        .with_context(|| format!("cannot write figure {}", path.display()))?;
    ensure_font()?;
    let (w, h) = fig.size();
    if w < 50 || h < 50 || w > 30_000 || h > 30_000 {
        bail!("cannot write figure {}: bad size {w}×{h}", path.display());
    }
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("cannot write figure {}: no file name", path.display()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // The temporary name keeps a lowercase extension: the PNG encoder picks its
    // format from it.
    let ext = match format {
        Format::Png => "png",
        Format::Svg => "svg",
    };
    let tmp = dir.join(format!(".{file_name}.tmp-{}-{n}.{ext}", std::process::id()));
    let result = (|| -> Result<()> {
        match format {
            Format::Png => {
                let root = BitMapBackend::new(&tmp, (w, h)).into_drawing_area();
                root.fill(&WHITE).plot_err()?;
                fig.render(&root)?;
                root.present().plot_err()?;
            }
            Format::Svg => {
                let mut svg = String::new();
                {
                    let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
                    root.fill(&WHITE).plot_err()?;
                    fig.render(&root)?;
                    root.present().plot_err()?;
                }
                std::fs::write(&tmp, svg)?;
            }
        }
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing figure {}", path.display()))
}

/// Serde helpers: JSON has no NaN (serde_json writes it as `null`), so numeric
/// vectors read `null` back as NaN.
pub(crate) mod nan_as_null {
    use serde::{Deserialize, Deserializer};

    /// `[1.0, null]` → `[1.0, NaN]`.
    pub fn vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        let v: Vec<Option<f64>> = Deserialize::deserialize(d)?;
        Ok(v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
    }

    /// `[[1.0, null]]` → `[[1.0, NaN]]`.
    pub fn vec2<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<f64>>, D::Error> {
        let v: Vec<Vec<Option<f64>>> = Deserialize::deserialize(d)?;
        Ok(v.into_iter()
            .map(|c| c.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
            .collect())
    }
}

/// Plasma-like colormap (matplotlib's `plasma`, 9 stops, linear interpolation);
/// `t` is clamped to [0, 1].
pub fn plasma(t: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 9] = [
        (13, 8, 135),
        (76, 2, 161),
        (126, 3, 168),
        (168, 34, 150),
        (204, 71, 120),
        (230, 108, 92),
        (248, 149, 64),
        (253, 197, 39),
        (240, 249, 33),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let lerp = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    RGBColor(lerp(a.0, b.0), lerp(a.1, b.1), lerp(a.2, b.2))
}

/// Colour of item `i` of `n` (e.g. layer `i` of a model with `n` layers) on the plasma
/// map, restricted to [0, 0.85] so the last colour stays visible on white.
pub fn layer_color(i: usize, n: usize) -> RGBColor {
    if n <= 1 {
        plasma(0.0)
    } else {
        plasma(0.85 * i as f64 / (n - 1) as f64)
    }
}

/// Categorical palette (Tableau 10) for runs.
pub(crate) fn run_color(i: usize) -> RGBColor {
    const P: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let c = P[i % P.len()];
    RGBColor(c.0, c.1, c.2)
}

/// Mixes `c` with white: `amount` = 0 keeps `c`, 1 gives white.
pub(crate) fn lighten(c: RGBColor, amount: f64) -> RGBColor {
    let m = |v: u8| (v as f64 + (255.0 - v as f64) * amount).round() as u8;
    RGBColor(m(c.0), m(c.1), m(c.2))
}

/// Text style of the embedded font at `size` px.
pub(crate) fn font(size: f64) -> TextStyle<'static> {
    (FONT, size).into_font().into()
}

/// Whether `v` can be drawn on an axis (finite, and positive on a log axis).
pub(crate) fn drawable(v: f64, log: bool) -> bool {
    v.is_finite() && (!log || v > 0.0)
}

/// Splits a curve into runs of drawable points; returns the runs and how many points
/// were skipped.
pub(crate) fn segments(
    xs: impl IntoIterator<Item = f64>,
    ys: &[f64],
    x_log: bool,
    y_log: bool,
) -> (Vec<Vec<(f64, f64)>>, usize) {
    let mut out = vec![];
    let mut cur = vec![];
    let mut skipped = 0;
    for (x, &y) in xs.into_iter().zip(ys) {
        if drawable(x, x_log) && drawable(y, y_log) {
            cur.push((x, y));
        } else {
            skipped += 1;
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    (out, skipped)
}

/// Axis range covering the drawable values of `vals`, padded by 5% (of the span, or
/// of the decades on a log axis); constant data gets a symmetric pad, no data [0, 1].
pub(crate) fn padded_range(vals: impl IntoIterator<Item = f64>, log: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals.into_iter().filter(|&v| drawable(v, log)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return if log { (0.1, 10.0) } else { (0.0, 1.0) };
    }
    if log {
        let (a, b) = (lo.log10(), hi.log10());
        let pad = if b - a < 1e-9 { 0.5 } else { 0.05 * (b - a) };
        (10f64.powf(a - pad), 10f64.powf(b + pad))
    } else {
        let span = hi - lo;
        let scale = lo.abs().max(hi.abs());
        if span <= 1e-12 * scale || span == 0.0 {
            let pad = if scale > 0.0 { 0.1 * scale } else { 1.0 };
            (lo - pad, hi + pad)
        } else {
            (lo - 0.05 * span, hi + 0.05 * span)
        }
    }
}

/// Tick label for `v` on a linear axis `[lo, hi]`, in one format for the whole axis:
/// decimals (as many as the span needs) when the axis' magnitude is in [0.01, 10⁵),
/// scientific notation otherwise (with mantissa digits enough to tell the ticks apart);
/// zero is `0`.
pub(crate) fn tick_label(v: f64, lo: f64, hi: f64) -> String {
    let span = (hi - lo).abs();
    let mag = lo.abs().max(hi.abs());
    if v.abs() < 1e-300 || (span > 0.0 && v.abs() < span * 1e-9) {
        return "0".into();
    }
    if !(1e-2..1e5).contains(&mag) {
        let digits = if span > 0.0 {
            ((mag / span).log10().ceil() as i32).clamp(1, 4) as usize
        } else {
            2
        };
        return format!("{v:.digits$e}");
    }
    let decimals = if span > 0.0 {
        ((-span.log10()).ceil() as i32 + 1).clamp(0, 5) as usize
    } else {
        2
    };
    format!("{v:.decimals$}")
}

/// An `f64` axis (linear or logarithmic, `R`) with given tick positions (`None`: the
/// axis' own), formatted by the chart's label formatter.
pub(crate) struct Ticked<R: Ranged<ValueType = f64>> {
    pub inner: R,
    pub ticks: Option<Vec<f64>>,
}

impl<R: Ranged<ValueType = f64>> Ticked<R> {
    pub fn new(inner: impl Into<R>, ticks: Option<Vec<f64>>) -> Self {
        Ticked {
            inner: inner.into(),
            ticks,
        }
    }
}

impl<R: Ranged<ValueType = f64>> Ranged for Ticked<R> {
    type ValueType = f64;
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: plotters::coord::ranged1d::KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        match &self.ticks {
            Some(t) if hint.weight().allow_light_points() => {
                let _ = t;
                Vec::new()
            }
            Some(t) => t.clone(),
            None => self.inner.key_points(hint),
        }
    }

    fn axis_pixel_range(&self, limit: (i32, i32)) -> std::ops::Range<i32> {
        self.inner.axis_pixel_range(limit)
    }
}

/// Tick positions on a log axis `[lo, hi]`: powers of ten when the axis spans enough
/// decades, else the 1-2-5 multiples, else every integer multiple (1…9) of the powers of
/// ten in range — at least two ticks whenever the axis is not degenerate, at most `max`.
pub(crate) fn log_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    let (lo, hi) = (lo.min(hi), lo.max(hi));
    if !(lo > 0.0 && hi.is_finite()) {
        return vec![];
    }
    let within = |mults: &[f64]| -> Vec<f64> {
        let (e0, e1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
        let mut v: Vec<f64> = (e0..=e1)
            .flat_map(|e| mults.iter().map(move |m| m * 10f64.powi(e)))
            .filter(|x| *x >= lo * (1.0 - 1e-9) && *x <= hi * (1.0 + 1e-9))
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let thin = |v: Vec<f64>| -> Vec<f64> {
        let step = v.len().div_ceil(max.max(1)).max(1);
        v.into_iter().step_by(step).collect()
    };
    let decades = within(&[1.0]);
    if decades.len() >= 3 {
        return thin(decades);
    }
    let one_two_five = within(&[1.0, 2.0, 5.0]);
    if one_two_five.len() >= 3 {
        return thin(one_two_five);
    }
    let all = within(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    if all.len() >= 3 {
        return thin(all);
    }
    // a narrow axis (e.g. [0.022, 0.034]): evenly spaced round values
    let linear = linear_ticks(lo, hi, max);
    if linear.len() >= 2 {
        linear
    } else {
        vec![lo, hi]
    }
}

/// Round tick positions (multiples of 1, 2 or 5 × 10ᵏ) in `[lo, hi]`, as many as fit in
/// `max` and at least two when the axis is not degenerate.
pub(crate) fn linear_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    let span = hi - lo;
    if !(span > 0.0 && span.is_finite()) {
        return vec![];
    }
    let mut k = (span.log10().floor() as i32) - 2;
    loop {
        for m in [1.0, 2.0, 5.0] {
            let step = m * 10f64.powi(k);
            let (a, b) = ((lo / step).ceil() as i64, (hi / step).floor() as i64);
            if b - a < max.max(2) as i64 {
                return (a..=b).map(|i| i as f64 * step).collect();
            }
        }
        k += 1;
    }
}

/// Integer tick positions on a linear axis `[lo, hi]`, spaced 1, 2, 5, 10, 20, … so that
/// there are at most `max`.
pub(crate) fn integer_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    let (a, b) = (lo.ceil() as i64, hi.floor() as i64);
    if b < a {
        return vec![];
    }
    let mut step = 1i64;
    let mut k = 0;
    while (b - a) / step + 1 > max.max(1) as i64 {
        step = [1, 2, 5][(k + 1) % 3] * 10i64.pow(((k + 1) / 3) as u32);
        k += 1;
    }
    let first = a.div_euclid(step) * step;
    let first = if first < a { first + step } else { first };
    (0..)
        .map(|i| first + i * step)
        .take_while(|&v| v <= b)
        .map(|v| v as f64)
        .collect()
}

/// Tick label on a log axis spanning [lo, hi]: decimals if the whole axis lies in
/// [0.01, 10⁴), scientific notation otherwise.
pub(crate) fn log_tick_label(v: f64, lo: f64, hi: f64) -> String {
    if lo >= 1e-2 && hi < 1e4 {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.0e}")
    }
}

/// Shortens `s` to about `max_px` pixels at font size `size` (rough estimate).
pub(crate) fn fit_text(s: &str, size: f64, max_px: f64) -> String {
    let max_chars = ((max_px / (0.58 * size)).floor() as usize).max(4);
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max_chars - 1).collect();
        t.push('…');
        t
    }
}

/// Draws a centred title in `area` (used for figure headers).
pub(crate) fn draw_title<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y: i32,
) -> Result<()> {
    if title.is_empty() {
        return Ok(());
    }
    let (w, _) = area.dim_in_pixel();
    let style = font(20.0).pos(Pos::new(HPos::Center, VPos::Top));
    area.draw_text(
        &fit_text(title, 20.0, w as f64 - 20.0),
        &style,
        (w as i32 / 2, y),
    )
    .plot_err()
}

/// Draws a red note (e.g. "3 NaN skipped") in the top-right corner of `area`
/// (typically a chart's plotting area with its coordinates stripped).
pub(crate) fn draw_note<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    note: &str,
) -> Result<()> {
    let (w, _) = area.dim_in_pixel();
    let style = font(11.0)
        .color(&RGBColor(200, 0, 0))
        .pos(Pos::new(HPos::Right, VPos::Top));
    area.draw_text(note, &style, (w as i32 - 4, 4)).plot_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plasma_endpoints_and_layer_colors() {
        assert_eq!(plasma(0.0), RGBColor(13, 8, 135));
        assert_eq!(plasma(1.0), RGBColor(240, 249, 33));
        assert_eq!(plasma(f64::NAN), plasma(0.0));
        assert_eq!(plasma(0.5), RGBColor(204, 71, 120));
        // Distinct colours for distinct layers.
        let cs: Vec<RGBColor> = (0..12).map(|i| layer_color(i, 12)).collect();
        for i in 1..cs.len() {
            assert_ne!(cs[i - 1], cs[i]);
        }
        assert_eq!(layer_color(0, 1), plasma(0.0));
    }

    #[test]
    fn segments_split_at_bad_points() {
        let ys = [1.0, f64::NAN, 2.0, 3.0, -1.0, 4.0];
        let (s, skipped) = segments((0..6).map(|i| i as f64), &ys, false, false);
        assert_eq!(skipped, 1);
        assert_eq!(s.len(), 2);
        let (s, skipped) = segments((0..6).map(|i| i as f64), &ys, false, true);
        assert_eq!(skipped, 2);
        assert_eq!(
            s,
            vec![
                vec![(0.0, 1.0)],
                vec![(2.0, 2.0), (3.0, 3.0)],
                vec![(5.0, 4.0)]
            ]
        );
    }

    #[test]
    fn ranges_are_padded_and_never_empty() {
        assert_eq!(padded_range([], false), (0.0, 1.0));
        assert_eq!(padded_range([0.0, 0.0], false), (-1.0, 1.0));
        let (lo, hi) = padded_range([2.0, 2.0], false);
        assert!(lo < 2.0 && hi > 2.0);
        let (lo, hi) = padded_range([0.0, 10.0, f64::NAN], false);
        assert!((lo + 0.5).abs() < 1e-12 && (hi - 10.5).abs() < 1e-12);
        let (lo, hi) = padded_range([1e-3, 1e-1, 0.0], true);
        assert!(lo < 1e-3 && lo > 5e-4 && hi > 1e-1 && hi < 2e-1);
    }

    #[test]
    fn tick_labels() {
        assert_eq!(tick_label(0.0, 0.0, 1.0), "0");
        assert_eq!(tick_label(0.5, 0.0, 1.0), "0.5");
        assert_eq!(tick_label(0.002, 0.0, 0.01), "0.002");
        assert_eq!(tick_label(2e-5, 0.0, 1e-4), "2.0e-5");
        assert_eq!(tick_label(250.0, 0.0, 1000.0), "250");
        // one format per axis: an lr axis from 5e-4 to 1e-3
        let lr: Vec<String> = [5e-4, 7e-4, 1e-3]
            .iter()
            .map(|v| tick_label(*v, 4.8e-4, 1.02e-3))
            .collect();
        assert_eq!(lr, ["5.0e-4", "7.0e-4", "1.0e-3"]);
        let close = |a: Vec<f64>, b: &[f64]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x / y - 1.0).abs() < 1e-9)
        };
        assert!(close(
            log_ticks(0.045, 0.144, 8),
            &[0.05, 0.06, 0.07, 0.08, 0.09, 0.1]
        ));
        assert!(close(log_ticks(0.018, 0.11, 8), &[0.02, 0.05, 0.1]));
        assert!(close(log_ticks(1e-6, 1.0, 4), &[1e-6, 1e-4, 1e-2, 1.0]));
        let narrow = log_ticks(0.0216, 0.0344, 8);
        let want = [0.022, 0.024, 0.026, 0.028, 0.03, 0.032, 0.034];
        assert!(close(narrow.clone(), &want), "{narrow:?}");
        assert_eq!(integer_ticks(0.5, 2.5, 8), [1.0, 2.0]);
        assert_eq!(integer_ticks(1.0, 200.0, 8), [50.0, 100.0, 150.0, 200.0]);
        assert_eq!(integer_ticks(1.0, 10.0, 8), [2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(log_tick_label(0.1, 0.05, 2.0), "0.1");
        assert_eq!(log_tick_label(1e-3, 1e-4, 1.0), "1e-3");
        assert_eq!(fit_text("abcdefghijklmnop", 10.0, 40.0), "abcde…");
    }
}
