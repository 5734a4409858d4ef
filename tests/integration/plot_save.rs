//! Backend choice by extension and atomic writes.

use ffebm::analysis::plot::{Format, SweepFigure, SweepSeries};
use std::path::{Path, PathBuf};

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ffebm_save_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fig() -> SweepFigure {
    SweepFigure::vs_beta(
        vec![0.01, 0.02, 0.04],
        vec![SweepSeries {
            x: Vec::new(),
            name: "all".into(),
            y: vec![1e-4, 4e-4, 1.6e-3],
        }],
    )
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn format_from_extension() {
    assert_eq!(
        Format::from_path(Path::new("a/b.png")).unwrap(),
        Format::Png
    );
    assert_eq!(Format::from_path(Path::new("b.SVG")).unwrap(), Format::Svg);
    for bad in ["b.jpg", "b", "b.png.txt", ".png"] {
        assert!(Format::from_path(Path::new(bad)).is_err(), "{bad}");
    }
}

#[test]
fn unsupported_extension_errors_and_leaves_no_file() {
    let dir = tmp_dir("ext");
    for name in ["fig.jpg", "fig", "fig.pdf"] {
        let err = fig().save(&dir.join(name)).unwrap_err();
        assert!(
            format!("{err:#}").contains("unsupported extension"),
            "{err:#}"
        );
    }
    assert!(listing(&dir).is_empty(), "{:?}", listing(&dir));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failed_render_or_missing_dir_leaves_nothing() {
    let dir = tmp_dir("fail");
    // Invalid data: error before anything is written.
    let mut bad = fig();
    bad.series[0].y.pop();
    assert!(bad.save(&dir.join("bad.png")).is_err());
    // Destination directory does not exist.
    assert!(fig().save(&dir.join("no/such/dir/fig.svg")).is_err());
    assert!(fig().save(&dir.join("no/such/dir/fig.png")).is_err());
    assert!(listing(&dir).is_empty(), "{:?}", listing(&dir));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn overwrites_atomically_without_leftovers() {
    let dir = tmp_dir("overwrite");
    let png = dir.join("fig.PNG");
    let svg = dir.join("fig.svg");
    std::fs::write(&png, b"old").unwrap();
    std::fs::write(&svg, b"old").unwrap();
    fig().save(&png).unwrap();
    fig().save(&svg).unwrap();
    assert_eq!(&std::fs::read(&png).unwrap()[..4], b"\x89PNG");
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    assert_eq!(
        listing(&dir),
        vec!["fig.PNG".to_string(), "fig.svg".to_string()]
    );
    // A relative path with no directory component works too.
    let cwd = std::env::current_dir().unwrap();
    std::env::set_current_dir(&dir).unwrap();
    let r = fig().save(Path::new("rel.svg"));
    std::env::set_current_dir(cwd).unwrap();
    r.unwrap();
    assert!(dir.join("rel.svg").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
