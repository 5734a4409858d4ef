//! Issue 13, item 12: what the figures say, read back from their SVG text — integer epoch
//! ticks, one tick format per axis, every test set in the legend, enough ticks on short log
//! axes, panel titles that are whole and name blocks as the tensors do, value labels that
//! do not overlap.

use crate::data_util::TempDir;
use ffebm::analysis::plot::{
    plot_runs, BarSeries, CosineBars, EpochRecord, RunCurves, SweepFigure, SweepSeries,
    TrainingCurves, TransientBlock, TransientFigure, TransientLayer,
};

/// One `<text>` element of an SVG.
#[derive(Debug)]
struct Txt {
    x: f64,
    y: f64,
    anchor: String,
    size: f64,
    rotated: bool,
    text: String,
}

fn attr(tag: &str, name: &str) -> String {
    tag.split(&format!(" {name}=\""))
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or("")
        .to_string()
}

fn texts(svg: &str) -> Vec<Txt> {
    svg.split("<text")
        .skip(1)
        .map(|t| {
            let (tag, rest) = t.split_once('>').unwrap();
            let text = rest.split("</text>").next().unwrap().trim().to_string();
            Txt {
                x: attr(tag, "x").parse().unwrap(),
                y: attr(tag, "y").parse().unwrap(),
                anchor: attr(tag, "text-anchor"),
                size: attr(tag, "font-size").parse().unwrap(),
                rotated: tag.contains("rotate("),
                text: text
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&"),
            }
        })
        .collect()
}

fn is_number(s: &str) -> bool {
    s.parse::<f64>().is_ok()
}

/// x-axis tick labels: centred numbers below a plot (the titles are not numbers).
fn x_ticks(all: &[Txt]) -> Vec<&Txt> {
    all.iter()
        .filter(|t| t.anchor == "middle" && !t.rotated && is_number(&t.text))
        .collect()
}

/// y-axis tick labels: right-aligned numbers.
fn y_ticks(all: &[Txt]) -> Vec<&Txt> {
    all.iter()
        .filter(|t| t.anchor == "end" && !t.rotated && is_number(&t.text))
        .collect()
}

/// "sci:<mantissa decimals>" or "dec:<decimals>": the format of a tick label.
fn format_of(s: &str) -> String {
    match s.split_once(['e', 'E']) {
        Some((m, _)) => format!("sci:{}", m.split_once('.').map_or(0, |(_, d)| d.len())),
        None => format!("dec:{}", s.split_once('.').map_or(0, |(_, d)| d.len())),
    }
}

fn svg_of(save: impl FnOnce(&std::path::Path), t: &TempDir, name: &str) -> String {
    let p = t.join(name);
    save(&p);
    std::fs::read_to_string(&p).unwrap()
}

#[test]
fn training_figure_has_integer_epochs_one_lr_format_and_every_test_set() {
    let t = TempDir::new("ticks-training");
    let run = t.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let rec = |e: u32, lr: f64| {
        format!("{{\"kind\":\"epoch\",\"epoch\":{e},\"step\":{},\"lr\":{lr},\"train_loss\":{},\"train_top1\":{},\"train_top5\":90.0,\"test_loss\":1.0,\"test_top1\":50.0,\"test_top5\":90.0,\"evals\":{{\"test-exact1000\":{{\"loss\":1.0,\"top1\":50.0,\"top5\":90.0,\"samples\":1000,\"sweeps\":30.0}},\"test-full10000-lossy\":{{\"loss\":1.1,\"top1\":4{e}.0,\"top5\":88.0,\"samples\":10000,\"sweeps\":30.0}}}},\"free_sweeps\":30.0,\"images_per_s\":1.0,\"epoch_time\":1.0,\"time\":1.0}}\n", e * 10, 2.0 / e as f64, 20.0 * e as f64)
    };
    std::fs::write(run.join("metrics.jsonl"), rec(1, 1e-3) + &rec(2, 5e-4)).unwrap();
    let svg = svg_of(
        |p| {
            plot_runs(std::slice::from_ref(&run), p).unwrap();
        },
        &t,
        "c.svg",
    );
    let all = texts(&svg);
    let xs = x_ticks(&all);
    assert!(!xs.is_empty());
    let mut rows: std::collections::BTreeMap<(i64, i64), Vec<&str>> = Default::default();
    for tk in &xs {
        assert!(
            tk.text.parse::<i64>().is_ok(),
            "epoch tick {:?} is not an integer",
            tk.text
        );
        rows.entry((tk.y as i64, (tk.x / 420.0) as i64))
            .or_default()
            .push(&tk.text);
    }
    for ((y, col), labels) in rows {
        let mut u = labels.clone();
        u.dedup();
        assert_eq!(
            u.len(),
            labels.len(),
            "panel at y {y}, column {col}: {labels:?}"
        );
    }
    // the learning-rate panel: bottom right
    let (w, h) = (840.0, 600.0);
    let lr: Vec<&str> = y_ticks(&all)
        .into_iter()
        .filter(|t| t.x > w / 2.0 && t.y > h / 2.0)
        .map(|t| t.text.as_str())
        .filter(|s| *s != "0")
        .collect();
    assert!(lr.len() >= 3, "{lr:?}");
    let f = format_of(lr[0]);
    assert!(
        lr.iter().all(|s| format_of(s) == f),
        "lr ticks in several formats: {lr:?}"
    );
    for set in ["test-exact1000", "test-full10000-lossy"] {
        assert!(
            all.iter().any(|t| t.text.contains(set)),
            "test set {set} is not drawn: {:?}",
            all.iter().map(|t| &t.text).collect::<Vec<_>>()
        );
    }
}

#[test]
fn short_log_axes_get_several_ticks() {
    let t = TempDir::new("ticks-sweep");
    let fig = SweepFigure::vs_t2(
        vec![4.0, 8.0],
        vec![
            SweepSeries {
                x: Vec::new(),
                name: "vs ID-exact".into(),
                y: vec![0.045, 0.049],
            },
            SweepSeries {
                x: Vec::new(),
                name: "vs ID-reference".into(),
                y: vec![0.133, 0.144],
            },
        ],
    );
    let svg = svg_of(|p| fig.save(p).unwrap(), &t, "t2.svg");
    let all = texts(&svg);
    let ys = y_ticks(&all);
    assert!(ys.len() >= 3, "t2 sweep y ticks: {ys:?}");
    for tk in x_ticks(&all) {
        assert!(tk.text.parse::<i64>().is_ok(), "T2 tick {:?}", tk.text);
    }
    let fig = SweepFigure::vs_beta(
        vec![0.1, 0.05, 0.02],
        vec![SweepSeries {
            x: Vec::new(),
            name: "all".into(),
            y: vec![0.04, 0.05, 0.09],
        }],
    );
    let svg = svg_of(|p| fig.save(p).unwrap(), &t, "beta.svg");
    let all = texts(&svg);
    assert!(x_ticks(&all).len() >= 3, "beta ticks: {:?}", x_ticks(&all));
    assert!(
        y_ticks(&all).len() >= 2,
        "beta sweep y ticks: {:?}",
        y_ticks(&all)
    );
}

#[test]
fn transient_titles_are_whole_and_number_blocks_as_the_tensors() {
    let t = TempDir::new("ticks-transient");
    let blocks = (0..2)
        .map(|b| TransientBlock {
            layers: (0..3)
                .map(|s| TransientLayer {
                    name: format!("blocks.{b}.synapses.{s}.weight"),
                    id: vec![(0..9).map(|i| i as f64 * 1e-4).collect()],
                    ep: vec![(0..9).map(|i| i as f64 * 1.1e-4).collect()],
                })
                .collect(),
        })
        .collect();
    let fig = TransientFigure::new("EP vs ID", blocks);
    let svg = svg_of(|p| fig.save(p).unwrap(), &t, "tr.svg");
    let titles: Vec<String> = texts(&svg)
        .into_iter()
        .map(|t| t.text)
        .filter(|s| s.contains("blocks.") || s.contains("block "))
        .collect();
    assert_eq!(titles.len(), 6, "{titles:?}");
    for title in &titles {
        assert!(!title.contains('…'), "cut off: {title}");
        let b = title
            .split("blocks.")
            .nth(1)
            .and_then(|s| s.split('.').next());
        let shown = title
            .split("block ")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next());
        if let (Some(b), Some(shown)) = (b, shown) {
            assert_eq!(
                b, shown,
                "title {title} numbers its block differently from the tensor"
            );
        }
        assert!(b.is_some(), "title {title} does not name its tensor");
    }
}

/// Width in px of `s` in DejaVu Sans at `size` (digits 0.636 em, '.' 0.3178 em, '-' 0.361 em).
fn width(s: &str, size: f64) -> f64 {
    s.chars()
        .map(|c| match c {
            '.' => 0.3178,
            '-' => 0.361,
            _ => 0.636,
        })
        .sum::<f64>()
        * size
}

#[test]
fn cosine_value_labels_do_not_overlap() {
    let t = TempDir::new("ticks-bars");
    let n = 15;
    let layers: Vec<String> = (0..n).map(|i| format!("b{}.s{}", i / 3, i % 3)).collect();
    let fig = CosineBars::new(
        "cosine",
        layers,
        vec![
            BarSeries {
                name: "vs ID-exact".into(),
                values: vec![0.9999; n],
            },
            BarSeries {
                name: "vs ID-reference".into(),
                values: (0..n).map(|i| 0.98 + 0.001 * i as f64).collect(),
            },
        ],
    );
    let svg = svg_of(|p| fig.save(p).unwrap(), &t, "bars.svg");
    let labels: Vec<Txt> = texts(&svg)
        .into_iter()
        .filter(|t| t.text.len() == 5 && t.text.starts_with("0.") || t.text == "1.000")
        .collect();
    assert!(labels.len() >= n, "value labels: {labels:?}");
    let bbox = |t: &Txt| {
        let (w, h) = (width(&t.text, t.size), t.size);
        if t.rotated {
            (h, w)
        } else {
            (w, h)
        }
    };
    for (i, a) in labels.iter().enumerate() {
        for b in &labels[i + 1..] {
            let ((wa, ha), (wb, hb)) = (bbox(a), bbox(b));
            let overlap =
                (a.x - b.x).abs() < (wa + wb) / 2.0 && (a.y - b.y).abs() < (ha + hb) / 2.0;
            assert!(!overlap, "labels overlap: {a:?} and {b:?}");
        }
    }
}

#[test]
fn training_figure_reads_every_evaluation_set() {
    // RunCurves built by hand still draw (no evals: the single `test` series)
    let t = TempDir::new("ticks-plain");
    let fig = TrainingCurves::new(
        "",
        vec![RunCurves {
            name: "r".into(),
            epochs: (1..=3)
                .map(|e| EpochRecord {
                    epoch: e as f64,
                    train_loss: Some(1.0 / e as f64),
                    test_loss: Some(1.2 / e as f64),
                    lr: Some(1e-3),
                    ..Default::default()
                })
                .collect(),
        }],
    );
    let svg = svg_of(|p| fig.save(p).unwrap(), &t, "p.svg");
    assert!(texts(&svg).iter().any(|t| t.text == "test"));
}
