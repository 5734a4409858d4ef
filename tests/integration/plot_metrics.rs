//! `metrics.jsonl` reader and the `ffebm plot RUN_DIR…` entry point.

use ffebm::analysis::plot::{plot_runs, read_metrics_jsonl, EpochRecord, RunCurves};
use std::path::PathBuf;

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ffebm_metrics_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &std::path::Path, text: &str) -> PathBuf {
    let p = dir.join("metrics.jsonl");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn reads_epoch_records_in_order() {
    let dir = tmp_dir("good");
    let p = write(
        &dir,
        concat!(
            r#"{"kind":"epoch","epoch":2,"train_loss":1.5,"train_top1":0.4,"train_top5":0.8,"test_loss":1.6,"test_top1":0.38,"test_top5":0.79,"lr":0.0005}"#,
            "\n",
            r#"{"kind":"epoch","epoch":1,"train_loss":2.0,"train_top1":0.2,"train_top5":0.6,"test_loss":2.1,"test_top1":0.19,"test_top5":0.58,"lr":0.001}"#,
            "\n"
        ),
    );
    let recs = read_metrics_jsonl(&p).unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(
        recs[0],
        EpochRecord {
            epoch: 1.0,
            train_loss: Some(2.0),
            train_top1: Some(0.2),
            train_top5: Some(0.6),
            test_loss: Some(2.1),
            test_top1: Some(0.19),
            test_top5: Some(0.58),
            lr: Some(0.001),
            ..Default::default()
        }
    );
    assert_eq!(recs[1].epoch, 2.0);
    assert_eq!(recs[1].lr, Some(0.0005));
    let run = RunCurves::from_run_dir(&dir).unwrap();
    assert_eq!(run.epochs, recs);
    assert!(run.name.starts_with("ffebm_metrics_good_"), "{}", run.name);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ignores_other_kinds_unknown_fields_and_blank_lines() {
    let dir = tmp_dir("kinds");
    let p = write(
        &dir,
        concat!(
            r#"{"kind":"config","preset":"x","lr":0.1}"#,
            "\n\n",
            r#"{"kind":"batch","step":3,"loss":2.2}"#,
            "\n",
            r#"{"no_kind":true,"epoch":"not a number"}"#,
            "\n",
            r#"{"kind":"epoch","epoch":1,"train_loss":2.0,"seconds":12.5,"extra":{"a":[1,2]},"val_loss":9.0,"test_loss":2.5,"test_top1":null}"#,
            "\n",
            r#"{"kind":"epoch","epoch":2,"train_loss":1.8}"#,
            "\n",
            r#"{"kind":"epoch","epoch":2,"train_loss":1.7,"lr":0.01}"#,
            "\n",
            "   \n",
        ),
    );
    let recs = read_metrics_jsonl(&p).unwrap();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(recs[0].train_loss, Some(2.0));
    assert_eq!(
        recs[0].test_loss,
        Some(2.5),
        "test_loss is read, val_loss ignored"
    );
    assert_eq!(recs[0].test_top1, None);
    assert_eq!(recs[0].train_top5, None);
    // A repeated epoch (resumed run): the later line wins.
    assert_eq!(recs[1].train_loss, Some(1.7));
    assert_eq!(recs[1].lr, Some(0.01));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_line_names_file_and_line() {
    let dir = tmp_dir("bad");
    let p = write(
        &dir,
        concat!(
            r#"{"kind":"epoch","epoch":1,"train_loss":2.0}"#,
            "\n",
            r#"{"kind":"batch","step":3}"#,
            "\n",
            r#"{"kind":"epoch","epoch":2,"train_loss":"#,
            "\n",
        ),
    );
    let err = format!("{:#}", read_metrics_jsonl(&p).unwrap_err());
    assert!(err.contains("metrics.jsonl:3:"), "{err}");
    assert!(err.contains("malformed JSON"), "{err}");
    // Ill-typed field in an epoch record.
    let p = write(
        &dir,
        concat!(
            "\n",
            r#"{"kind":"epoch","epoch":1,"train_loss":"high"}"#,
            "\n"
        ),
    );
    let err = format!("{:#}", read_metrics_jsonl(&p).unwrap_err());
    assert!(
        err.contains("metrics.jsonl:2:") && err.contains("bad epoch record"),
        "{err}"
    );
    // Epoch record without an epoch number.
    let p = write(&dir, r#"{"kind":"epoch","train_loss":1.0}"#);
    let err = format!("{:#}", read_metrics_jsonl(&p).unwrap_err());
    assert!(
        err.contains("metrics.jsonl:1:") && err.contains("epoch"),
        "{err}"
    );
    // A line that is JSON but not an object.
    let p = write(&dir, "[1,2]\n");
    let err = format!("{:#}", read_metrics_jsonl(&p).unwrap_err());
    assert!(
        err.contains("metrics.jsonl:1:") && err.contains("object"),
        "{err}"
    );
    // Missing file.
    let missing = dir.join("nope").join("metrics.jsonl");
    let err = format!("{:#}", read_metrics_jsonl(&missing).unwrap_err());
    assert!(err.contains("nope"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plot_runs_writes_a_figure() {
    let root = tmp_dir("plot_runs");
    let mut dirs = vec![];
    for (name, n) in [("a", 5), ("b", 3)] {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        let mut text = String::from("{\"kind\":\"config\"}\n");
        for e in 1..=n {
            let loss = 2.0 / e as f64;
            text.push_str(&format!(
                "{{\"kind\":\"epoch\",\"epoch\":{e},\"train_loss\":{loss},\"train_top1\":0.{e},\"lr\":0.001}}\n"
            ));
        }
        write(&d, &text);
        dirs.push(d);
    }
    let out = root.join("curves.png");
    let warnings = plot_runs(&dirs, &out).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[..4], b"\x89PNG");
    // A run directory without metrics is an error, and nothing is written.
    let out2 = root.join("curves2.svg");
    assert!(plot_runs(&[root.join("missing")], &out2).is_err());
    assert!(plot_runs(&[], &out2).is_err());
    assert!(!out2.exists());
    std::fs::remove_dir_all(&root).unwrap();
}
