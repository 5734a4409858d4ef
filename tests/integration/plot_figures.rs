//! Renders every figure type to PNG and SVG and checks the files: PNG header size,
//! decoded pixels (panels not blank, blank grid cells blank), SVG element counts per
//! panel/series.

use ffebm::analysis::plot::*;
use std::path::{Path, PathBuf};

/// A fresh, empty temporary directory for one test.
fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ffebm_plot_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Width and height from the PNG signature + IHDR chunk, parsed by hand.
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert!(b.len() > 33, "PNG too short");
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "bad PNG signature");
    assert_eq!(&b[12..16], b"IHDR", "first chunk is not IHDR");
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

/// Decoded RGB image.
struct Img {
    w: u32,
    h: u32,
    rgb: Vec<u8>,
}

impl Img {
    fn load(path: &Path) -> Img {
        let dec = png::Decoder::new(std::fs::File::open(path).unwrap());
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        let ch = info.color_type.samples();
        assert!(ch >= 3, "unexpected colour type {:?}", info.color_type);
        let rgb = buf[..info.buffer_size()]
            .chunks(ch)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        Img {
            w: info.width,
            h: info.height,
            rgb,
        }
    }
    fn px(&self, x: u32, y: u32) -> [u8; 3] {
        let i = 3 * (y * self.w + x) as usize;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
    /// Pixels in the rectangle within `tol` (per channel) of `c`.
    fn count_near(&self, (x0, y0, w, h): (u32, u32, u32, u32), c: [u8; 3], tol: u8) -> usize {
        let mut n = 0;
        for y in y0..(y0 + h).min(self.h) {
            for x in x0..(x0 + w).min(self.w) {
                let p = self.px(x, y);
                if (0..3).all(|k| p[k].abs_diff(c[k]) <= tol) {
                    n += 1;
                }
            }
        }
        n
    }
    /// Pixels in the rectangle that are not white.
    fn count_non_white(&self, r: (u32, u32, u32, u32)) -> usize {
        let (x0, y0, w, h) = r;
        (w * h) as usize - self.count_near((x0, y0, w, h), [255, 255, 255], 0)
    }
}

fn rgb(c: plotters::style::RGBColor) -> [u8; 3] {
    [c.0, c.1, c.2]
}

fn hex(c: [u8; 3]) -> String {
    format!("#{:02X}{:02X}{:02X}", c[0], c[1], c[2])
}

/// `<polyline …>` elements with this stroke colour and at least `min_points` points.
fn polylines(svg: &str, color: &str, min_points: usize) -> usize {
    polylines_w(svg, color, "", min_points)
}

/// Same, restricted to a stroke width (`""` = any).
fn polylines_w(svg: &str, color: &str, width: &str, min_points: usize) -> usize {
    svg.lines()
        .filter(|l| l.starts_with("<polyline") && l.contains(&format!("stroke=\"{color}\"")))
        .filter(|l| width.is_empty() || l.contains(&format!("stroke-width=\"{width}\"")))
        .filter(|l| {
            let pts = l.split("points=\"").nth(1).unwrap_or("");
            let pts = pts.split('"').next().unwrap();
            pts.split_whitespace().count() >= min_points
        })
        .count()
}

/// Number of `<text>` elements whose content is exactly `needle`.
fn texts_equal(svg: &str, needle: &str) -> usize {
    svg.split("<text")
        .skip(1)
        .filter(|t| {
            let body = t.split("</text>").next().unwrap();
            body.split_once('>').map(|(_, c)| c.trim()) == Some(needle)
        })
        .count()
}

/// Number of `<text>` elements whose content contains `needle`.
fn texts_containing(svg: &str, needle: &str) -> usize {
    svg.split("<text")
        .skip(1)
        .filter(|t| t.split("</text>").next().unwrap().contains(needle))
        .count()
}

fn check_svg_basics(path: &Path, size: (u32, u32)) -> String {
    let svg = std::fs::read_to_string(path).unwrap();
    assert!(svg.starts_with("<svg"), "not an SVG document");
    assert!(svg.trim_end().ends_with("</svg>"), "SVG not closed");
    let head = svg.lines().next().unwrap();
    assert!(head.contains(&format!("width=\"{}\"", size.0)), "{head}");
    assert!(head.contains(&format!("height=\"{}\"", size.1)), "{head}");
    assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    svg
}

/// Two blocks: block 1 has 3 layers, block 2 has 2; each layer 2 coordinates, T2 = 20.
fn transient_fixture() -> TransientFigure {
    let t2 = 20;
    let curve = |a: f64, k: f64| -> Vec<f64> {
        (0..=t2)
            .map(|t| a * (1.0 - (-(t as f64) / k).exp()))
            .collect()
    };
    let mut blocks = vec![];
    for (b, nl) in [(0usize, 3usize), (1, 2)] {
        let layers = (0..nl)
            .map(|l| {
                let id: Vec<Vec<f64>> = [1.0, -0.5]
                    .iter()
                    .map(|&a| curve(a * 1e-3 * (b + 1) as f64, 4.0 + l as f64))
                    .collect();
                let ep = id
                    .iter()
                    .map(|c| c.iter().map(|v| v * 1.01).collect())
                    .collect();
                TransientLayer {
                    name: format!("conv{}", l + 1),
                    id,
                    ep,
                }
            })
            .collect();
        blocks.push(TransientBlock { layers });
    }
    TransientFigure::new("transients", blocks)
}

#[test]
fn transient_png_panels_and_blank_cell() {
    let dir = tmp_dir("transient_png");
    let fig = transient_fixture();
    assert_eq!(fig.grid(), (3, 2));
    assert_eq!(fig.size(), (600, TRANSIENT_HEADER_H + 3 * 250));
    let path = dir.join("t.png");
    fig.save(&path).unwrap();
    assert_eq!(png_size(&path), fig.size());
    let img = Img::load(&path);
    assert_eq!((img.w, img.h), fig.size());
    // Output block (block 2) is the left column.
    assert_eq!(fig.column_of_block(1), 0);
    let mut global = 0;
    for (b, block) in fig.blocks.iter().enumerate() {
        let col = fig.column_of_block(b);
        for l in 0..block.layers.len() {
            let cell = fig.cell_rect(l, col);
            let c = rgb(layer_color(global, 5));
            let n = img.count_near(cell, c, 40);
            assert!(
                n > 100,
                "panel block {} layer {}: only {n} layer-coloured px",
                b + 1,
                l + 1
            );
            global += 1;
        }
    }
    // Block 2 has only 2 layers: its third cell stays blank.
    let blank = fig.cell_rect(2, 0);
    assert_eq!(
        img.count_non_white(blank),
        0,
        "empty grid cell is not blank"
    );
    // Header holds title and legend.
    assert!(img.count_non_white((0, 0, 600, TRANSIENT_HEADER_H)) > 100);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn transient_svg_one_polyline_per_curve() {
    let dir = tmp_dir("transient_svg");
    let mut fig = transient_fixture();
    fig.output_first = false;
    assert_eq!(fig.column_of_block(1), 1);
    let path = dir.join("t.svg");
    fig.save(&path).unwrap();
    let svg = check_svg_basics(&path, fig.size());
    for i in 0..5 {
        let c = hex(rgb(layer_color(i, 5)));
        // 21 points per ID curve; the legend's short strokes have 2.
        assert_eq!(
            polylines(&svg, &c, 21),
            2,
            "layer {i} ({c}) should have 2 ID curves"
        );
    }
    // 10 dashed EP curves (black, width 2), each split into many dashes.
    assert!(polylines_w(&svg, "#000000", "2", 2) > 10 * 5);
    for (b, l) in [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2)] {
        let title = format!("block {b} · conv{l}");
        assert_eq!(
            texts_containing(&svg, &title),
            1,
            "missing panel title {title}"
        );
    }
    assert_eq!(texts_containing(&svg, "backward time"), 5);
    assert!(fig.warnings().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn transient_nan_and_constant_curves() {
    let dir = tmp_dir("transient_nan");
    let mut fig = transient_fixture();
    fig.blocks[0].layers[1].id[0][5] = f64::NAN;
    fig.blocks[1].layers[0].id = vec![vec![0.0; 21]];
    fig.blocks[1].layers[0].ep = vec![vec![0.0; 21]];
    let w = fig.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("block 0 · conv2") && w[0].contains("1 non-finite"),
        "{w:?}"
    );
    let path = dir.join("t.svg");
    fig.save(&path).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    // The NaN splits that curve in two (5 + 15 points): 1 full curve + 2 pieces.
    let c = hex(rgb(layer_color(1, 5)));
    assert_eq!(polylines(&svg, &c, 2) - polylines(&svg, &c, 21), 2);
    assert_eq!(texts_containing(&svg, "1 NaN skipped"), 1);
    // Constant zero curve still drawn.
    assert_eq!(polylines(&svg, &hex(rgb(layer_color(3, 5))), 21), 1);
    fig.save(&dir.join("t.png")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn transient_size_override_and_empty_input() {
    let dir = tmp_dir("transient_size");
    let mut fig = transient_fixture();
    fig.size = Some((820, 640));
    let path = dir.join("t.png");
    fig.save(&path).unwrap();
    assert_eq!(png_size(&path), (820, 640));
    let empty = TransientFigure::new("", vec![]);
    assert!(empty.save(&dir.join("e.png")).is_err());
    let no_points = TransientFigure::new(
        "",
        vec![TransientBlock {
            layers: vec![TransientLayer::default()],
        }],
    );
    assert!(no_points.save(&dir.join("e.svg")).is_err());
    assert!(!dir.join("e.png").exists() && !dir.join("e.svg").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn bars_fixture() -> CosineBars {
    let layers: Vec<String> = (1..=5).map(|i| format!("layer{i}")).collect();
    CosineBars::new(
        "cosine",
        layers,
        vec![
            BarSeries {
                name: "vs ID exact".into(),
                values: vec![0.999, 0.98, 0.95, 0.9, 0.5],
            },
            BarSeries {
                name: "vs ID reference".into(),
                values: vec![0.99, f64::NAN, 0.9, -0.3, 0.7],
            },
        ],
    )
}

#[test]
fn cosine_bars_png_and_svg() {
    let dir = tmp_dir("bars");
    let fig = bars_fixture();
    let w = fig.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("layer2"), "{w:?}");
    let png_path = dir.join("b.png");
    fig.save(&png_path).unwrap();
    assert_eq!(png_size(&png_path), fig.size());
    let img = Img::load(&png_path);
    let all = (0, 0, img.w, img.h);
    for i in 0..5 {
        let n = img.count_near(all, rgb(layer_color(i, 5)), 0);
        assert!(n > 200, "bar of layer {i} missing ({n} px)");
    }
    let svg_path = dir.join("b.svg");
    fig.save(&svg_path).unwrap();
    let svg = check_svg_basics(&svg_path, fig.size());
    for (i, name) in fig.layers.iter().enumerate() {
        let fill = format!("fill=\"{}\"", hex(rgb(layer_color(i, 5))));
        let bars = svg
            .lines()
            .filter(|l| l.starts_with("<rect") && l.contains(&fill))
            .count();
        // The legend swatch of the first series uses the middle layer's colour.
        let expected = if i == 2 { 2 } else { 1 };
        assert_eq!(bars, expected, "layer {name}: one first-series bar");
        assert_eq!(texts_containing(&svg, name), 1, "x label {name}");
    }
    assert_eq!(texts_containing(&svg, "vs ID exact"), 1);
    assert_eq!(texts_containing(&svg, "vs ID reference"), 1);
    assert_eq!(texts_containing(&svg, "n/a"), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cosine_bars_rejects_bad_input() {
    let dir = tmp_dir("bars_bad");
    let mut fig = bars_fixture();
    fig.series[1].values.pop();
    let err = fig.save(&dir.join("b.png")).unwrap_err();
    assert!(
        format!("{err:#}").contains("4 values for 5 layers"),
        "{err:#}"
    );
    let empty = CosineBars::new("", vec![], vec![]);
    assert!(empty.save(&dir.join("b.png")).is_err());
    assert!(!dir.join("b.png").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn training_fixture() -> TrainingCurves {
    let run = |name: &str, n: usize, k: f64| RunCurves {
        name: name.into(),
        epochs: (1..=n)
            .map(|e| {
                let e_ = e as f64;
                EpochRecord {
                    epoch: e_,
                    train_loss: Some(2.0 * (-e_ / (5.0 * k)).exp()),
                    train_top1: Some(1.0 - (-e_ / (4.0 * k)).exp()),
                    train_top5: Some(1.0 - 0.5 * (-e_ / (2.0 * k)).exp()),
                    test_loss: Some(2.2 * (-e_ / (5.0 * k)).exp()),
                    test_top1: Some(0.9 - (-e_ / (4.0 * k)).exp()),
                    test_top5: None,
                    lr: Some(1e-3 * (1.0 - e_ / (n as f64 + 1.0))),
                    ..Default::default()
                }
            })
            .collect(),
    };
    TrainingCurves::new("training", vec![run("alpha", 10, 1.0), run("beta", 8, 1.5)])
}

#[test]
fn training_curves_png_and_svg() {
    let dir = tmp_dir("training");
    let fig = training_fixture();
    assert!(fig.warnings().is_empty());
    let png_path = dir.join("c.png");
    fig.save(&png_path).unwrap();
    let (w, h) = fig.size();
    assert_eq!(png_size(&png_path), (w, h));
    let img = Img::load(&png_path);
    // Each of the 2×2 panels (below the header) shows both runs' colours.
    let top = h - 600;
    for (px, py) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
        let cell = (px * w / 2, top + py * 300, w / 2, 300);
        for r in 0..2 {
            let c = [[31, 119, 180], [255, 127, 14]][r];
            let n = img.count_near(cell, c, 30);
            assert!(n > 50, "panel ({px},{py}) lacks run {r}: {n} px");
        }
    }
    let svg_path = dir.join("c.svg");
    fig.save(&svg_path).unwrap();
    let svg = check_svg_basics(&svg_path, (w, h));
    for cap in ["loss", "top-1 accuracy", "top-5 accuracy", "learning rate"] {
        assert!(texts_containing(&svg, cap) >= 1, "caption {cap}");
    }
    assert_eq!(texts_containing(&svg, "epoch"), 4);
    // Solid train curves (≥ 5 points) in every panel for both runs.
    assert_eq!(polylines(&svg, "#1F77B4", 5), 4);
    assert_eq!(polylines(&svg, "#FF7F0E", 5), 4);
    // Dashed test curves: loss and top-1 only (no top-5 test values, lr has none).
    assert!(polylines(&svg, "#1F77B4", 2) > 4 + 10);
    for name in ["alpha", "beta", "train", "test"] {
        assert_eq!(texts_equal(&svg, name), 1, "legend entry {name}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn training_curves_single_epoch_nan_and_empty() {
    let dir = tmp_dir("training_degenerate");
    let mut fig = training_fixture();
    fig.runs[0].epochs.truncate(1);
    fig.runs[1].epochs[3].train_loss = Some(f64::NAN);
    fig.runs.push(RunCurves {
        name: "empty".into(),
        epochs: vec![],
    });
    let w = fig.warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    let path = dir.join("c.svg");
    fig.save(&path).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert_eq!(texts_containing(&svg, "1 NaN skipped"), 1);
    // The one-epoch run is drawn as markers.
    assert!(svg.contains("fill=\"#1F77B4\""));
    let empty = TrainingCurves::new("", vec![]);
    assert!(empty.save(&dir.join("e.png")).is_err());
    assert!(!dir.join("e.png").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sweep_vs_beta_loglog() {
    let dir = tmp_dir("sweep_beta");
    let betas: Vec<f64> = (0..6).map(|i| 0.01 * 2f64.powi(i)).collect();
    let series: Vec<SweepSeries> = (0..3)
        .map(|l| SweepSeries {
            x: Vec::new(),
            name: format!("layer{l}"),
            y: betas.iter().map(|b| (l + 1) as f64 * b * b).collect(),
        })
        .collect();
    let fig = SweepFigure::vs_beta(betas, series);
    assert!(fig.warnings().is_empty());
    let png_path = dir.join("s.png");
    fig.save(&png_path).unwrap();
    assert_eq!(png_size(&png_path), fig.size());
    let img = Img::load(&png_path);
    for i in 0..3 {
        let n = img.count_near((0, 0, img.w, img.h), rgb(layer_color(i, 3)), 30);
        assert!(n > 100, "series {i}: {n} px");
    }
    let svg_path = dir.join("s.svg");
    fig.save(&svg_path).unwrap();
    let svg = check_svg_basics(&svg_path, fig.size());
    for i in 0..3 {
        let c = hex(rgb(layer_color(i, 3)));
        assert_eq!(polylines(&svg, &c, 6), 1, "series {i} line");
        let dots = svg
            .lines()
            .filter(|l| l.starts_with("<circle") && l.contains(&c))
            .count();
        assert_eq!(dots, 6 + 1, "series {i}: 6 markers + legend marker");
        assert_eq!(texts_containing(&svg, &format!("layer{i}")), 1);
    }
    assert!(polylines(&svg, "#787878", 2) > 5, "dashed reference slope");
    assert_eq!(texts_containing(&svg, "∝ β²"), 1);
    assert_eq!(texts_containing(&svg, "β"), 2); // axis label + reference label
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sweep_vs_t2_skips_nonpositive_and_rejects_bad_input() {
    let dir = tmp_dir("sweep_t2");
    let t2: Vec<f64> = (1..=8).map(|i| 5.0 * i as f64).collect();
    let mut y: Vec<f64> = t2.iter().map(|t| (-t / 10.0f64).exp()).collect();
    y[3] = 0.0; // not drawable on the log y axis
    let fig = SweepFigure::vs_t2(
        t2.clone(),
        vec![SweepSeries {
            x: Vec::new(),
            name: "all".into(),
            y,
        }],
    );
    let w = fig.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    let path = dir.join("s.svg");
    fig.save(&path).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    let c = hex(rgb(layer_color(0, 1)));
    let lines: Vec<&str> = svg.lines().filter(|l| l.contains(&c)).collect();
    assert_eq!(
        polylines(&svg, &c, 3),
        2,
        "line split at the skipped point: {lines:#?}"
    );
    assert_eq!(texts_containing(&svg, "1 point(s) skipped"), 1);
    fig.save(&dir.join("s.png")).unwrap();

    let short = SweepFigure::vs_t2(
        t2.clone(),
        vec![SweepSeries {
            x: Vec::new(),
            name: "a".into(),
            y: vec![1.0],
        }],
    );
    assert!(short.save(&dir.join("bad.png")).is_err());
    let nan = SweepFigure::vs_t2(
        t2,
        vec![SweepSeries {
            x: Vec::new(),
            name: "a".into(),
            y: vec![f64::NAN; 8],
        }],
    );
    assert!(nan.save(&dir.join("bad.png")).is_err());
    let empty = SweepFigure::vs_beta(vec![], vec![]);
    assert!(empty.save(&dir.join("bad.png")).is_err());
    assert!(!dir.join("bad.png").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn figures_round_trip_through_json() {
    let fig = transient_fixture();
    let json = serde_json::to_string(&fig).unwrap();
    let back: TransientFigure = serde_json::from_str(&json).unwrap();
    assert_eq!(back.title, fig.title);
    assert_eq!(back.grid(), fig.grid());
    let flat = |f: &TransientFigure| -> Vec<f64> {
        f.blocks
            .iter()
            .flat_map(|b| &b.layers)
            .flat_map(|l| l.id.iter().chain(&l.ep))
            .flatten()
            .copied()
            .collect()
    };
    let (a, b) = (flat(&fig), flat(&back));
    assert_eq!(a.len(), b.len());
    assert!(a
        .iter()
        .zip(&b)
        .all(|(x, y)| (x - y).abs() <= 1e-15 * x.abs().max(1e-300)));
    // Defaults: output block first, no size override.
    let min: TransientFigure =
        serde_json::from_str(r#"{"blocks":[{"layers":[{"id":[[0,1]]}]}]}"#).unwrap();
    assert!(min.output_first && min.size.is_none());
    // NaN goes out as null and comes back as NaN.
    let bars = bars_fixture();
    let json = serde_json::to_string(&bars).unwrap();
    assert!(json.contains("null"));
    let back: CosineBars = serde_json::from_str(&json).unwrap();
    assert!(back.series[1].values[1].is_nan());
    assert_eq!(back.series[0].name, bars.series[0].name);
    let mut t = transient_fixture();
    t.blocks[0].layers[0].ep[1][3] = f64::NAN;
    let back: TransientFigure = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
    assert!(back.blocks[0].layers[0].ep[1][3].is_nan());
    let sweep = SweepFigure::vs_beta(vec![0.1], vec![]);
    let back: SweepFigure = serde_json::from_str(&serde_json::to_string(&sweep).unwrap()).unwrap();
    assert_eq!(back, sweep);
}
