//! Issue 13: signals, closed pipes, bad sizes and small command-line promises (the help
//! points at README sections that exist, suggestions for mistyped keys, shapes reported in
//! the layout they were given, no duplicate or header-only tables).

use crate::common::{self, batch, write_batch, TINY_MODEL_TOML};
use crate::data_util::TempDir;
use crate::runs::{drain, fails, ffebm, ok, read_until, spawn_piped, stderr_of, train_into};
use ffebm::model::{Model, ModelConfig};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};

/// A model file and a batch of `b` samples for `grad` / `gdd`.
fn tiny_model_and_batch(t: &TempDir, b: usize) {
    std::fs::write(t.join("m.toml"), TINY_MODEL_TOML).unwrap();
    let model = Model::new(ModelConfig::from_toml(TINY_MODEL_TOML).unwrap(), 0).unwrap();
    let (x, y) = batch(&model, b.max(1), 1);
    if b == 0 {
        let x = ffebm::core::Tensor::zeros(&[0, 8, 8, 3]);
        write_batch(&t.join("b.safetensors"), &x, &[]);
    } else {
        write_batch(&t.join("b.safetensors"), &x, &y);
    }
}

/// Whether a command that wrote to a closed pipe ended well: success, or killed by
/// SIGPIPE as Unix tools are — never a panic.
fn ended_quietly(o: &std::process::Output) -> bool {
    (o.status.success() || o.status.signal() == Some(13)) && !stderr_of(o).contains("panicked")
}

/// Item 5: a closed standard output (`ffebm presets | head -1`) never panics.
#[test]
fn closed_stdout_never_panics() {
    let t = TempDir::new("epipe");
    tiny_model_and_batch(&t, 2);
    let grad = [
        "grad",
        "--model",
        t.join("m.toml").to_str().unwrap(),
        "--input",
        t.join("b.safetensors").to_str().unwrap(),
        "--t1",
        "5",
        "--t2",
        "3",
        "--beta",
        "0.1",
        "--out",
        t.join("g.safetensors").to_str().unwrap(),
    ]
    .map(String::from);
    for args in [
        vec!["presets".to_string()],
        vec!["presets".into(), "cifar10_tiny".into()],
        grad.to_vec(),
    ] {
        let mut child = ffebm()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader is gone before the first line
        let o = child.wait_with_output().unwrap();
        assert!(
            ended_quietly(&o),
            "{args:?}: {:?}\n{}",
            o.status,
            stderr_of(&o)
        );
    }
    assert!(t.join("g.safetensors").exists());
}

/// Item 5: training with both output streams closed keeps going and leaves a complete run.
#[test]
fn training_with_closed_output_completes() {
    if common::shared_data().is_none() {
        return;
    }
    let t = TempDir::new("epipe-train");
    let d = t.join("run");
    let mut child = spawn_piped(&mut train_into(640, &d), true);
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    for f in ["config.toml", "metrics.csv", "checkpoint_last.safetensors"] {
        assert!(d.join(f).is_file(), "{f} missing");
    }
}

/// Item 5: SIGTERM sent to the process and then to its process group (as GNU `timeout`
/// and job schedulers do) is one interrupt: the step finishes and a checkpoint is written.
#[test]
fn sigterm_to_process_and_group_checkpoints_once() {
    if common::shared_data().is_none() {
        return;
    }
    let t = TempDir::new("sigterm");
    let d = t.join("run");
    let mut child = spawn_piped(train_into(6400, &d).process_group(0), false);
    let (r, mut log) = read_until(&mut child, "step 3:");
    let pid = child.id().to_string();
    let group = format!("-{pid}");
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(Command::new("kill")
        .args(["-TERM", "--", &group])
        .status()
        .unwrap()
        .success());
    drain(r, &mut log);
    let status = child.wait().unwrap();
    assert!(!log.contains("interrupted again"), "{log}");
    assert!(
        matches!(status.code(), Some(130) | Some(143)),
        "{status:?}\n{log}"
    );
    assert!(log.contains("resume with: ffebm train --resume"), "{log}");
    assert!(d.join("checkpoint_last.safetensors").is_file(), "{log}");
    let o = ok(ffebm().args(["train", "--resume"]).arg(&d));
    assert!(String::from_utf8_lossy(&o.stdout).contains("finished 1 epochs"));
}

/// Item 7: sizes that leave nothing to do are errors naming the key, before any work.
#[test]
fn bad_sizes_are_refused_up_front() {
    let t = TempDir::new("sizes");
    for (extra, key) in [
        (&["--epochs", "0"][..], "train.epochs"),
        (&["--set", "data.train_limit=0"][..], "data.train_limit"),
        (&["--set", "data.test_limit=0"][..], "data.test_limit"),
        (
            &["--set", "data.eval_batch_size=0"][..],
            "data.eval_batch_size",
        ),
        (&["--set", "data.batch_size=0"][..], "data.batch_size"),
    ] {
        // no data anywhere: the check must come before looking for it
        let e = fails(
            train_into(64, &t.join("r"))
                .args(extra)
                .env("FFEBM_DATA", t.join("none"))
                .env("FFEBM_CACHE", t.join("cache")),
        );
        assert!(e.contains(key), "{extra:?}: {e}");
        assert!(!t.join("r").exists());
    }
    tiny_model_and_batch(&t, 0);
    let m = t.join("m.toml");
    let b = t.join("b.safetensors");
    for (cmd, out) in [("grad", "g.safetensors"), ("gdd", "gdd")] {
        let e = fails(
            ffebm()
                .args([cmd, "--t1", "3", "--t2", "2", "--beta", "0.1", "--model"])
                .arg(&m)
                .arg("--input")
                .arg(&b)
                .arg("--out")
                .arg(t.join(out)),
        );
        assert!(e.contains("empty"), "{cmd}: {e}");
    }
    let e = fails(
        ffebm()
            .args([
                "gdd",
                "--batch-size",
                "0",
                "--preset",
                "cifar10_tiny",
                "--out",
            ])
            .arg(t.join("gdd")),
    );
    assert!(e.contains("--batch-size"), "{e}");
    for args in [
        &["bench", "--conv-batch", "0"][..],
        &["bench", "--batches", "0"][..],
        &["bench", "--reps", "0"][..],
        &["bench", "--drn", "drn_1h@0"][..],
        &["bench", "--drn", "drn_1h"][..],
    ] {
        let e = fails(ffebm().args(args));
        assert!(e.contains(args[1]), "{args:?}: {e}");
    }
}

/// Item 12: a mistyped key gets the right suggestion.
#[test]
fn mistyped_config_keys_get_the_right_suggestion() {
    let t = TempDir::new("suggest");
    for (key, want) in [
        ("optim.learning_rate", "optim.lr"),
        ("data.batchsize", "data.batch_size"),
        ("train.epoch", "train.epochs"),
        ("algorithm.T1", "algorithm.t1"),
    ] {
        let e = fails(train_into(64, &t.join("r")).args(["--set", &format!("{key}=1")]));
        assert!(e.contains(&format!("did you mean `{want}`")), "{key}: {e}");
    }
}

/// Item 12: every `README, "X"` reference in the help texts names a README heading.
#[test]
fn help_points_to_readme_sections_that_exist() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let headings: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| l.trim_start_matches('#').trim())
        .collect();
    let mut refs = 0;
    for cmd in ["train", "eval", "grad", "gdd", "plot", "presets", "bench"] {
        let o = ok(ffebm().args([cmd, "--help"]));
        let help = String::from_utf8_lossy(&o.stdout).into_owned();
        for part in help.split("README, \"").skip(1) {
            let name = part.split('"').next().unwrap();
            refs += 1;
            assert!(
                headings.contains(&name),
                "`{cmd} --help` cites README section {name:?}; headings: {headings:?}"
            );
        }
    }
    assert!(
        refs >= 3,
        "the help texts cite the README only {refs} times"
    );
}

/// Item 12: `grad` reports a wrong input shape in the layout it was given (NCHW).
#[test]
fn grad_reports_the_input_shape_as_given() {
    let t = TempDir::new("grad-shape");
    std::fs::write(t.join("m.toml"), TINY_MODEL_TOML).unwrap();
    // NCHW [2, 1, 8, 8]: one channel where the model takes three
    let x = ffebm::core::Tensor::zeros(&[2, 8, 8, 1]);
    write_batch(&t.join("b.safetensors"), &x, &[0, 1]);
    let e = fails(
        ffebm()
            .args(["grad", "--t1", "3", "--t2", "2", "--beta", "0.1", "--model"])
            .arg(t.join("m.toml"))
            .arg("--input")
            .arg(t.join("b.safetensors"))
            .arg("--out")
            .arg(t.join("g.safetensors")),
    );
    assert!(
        e.contains("[2, 1, 8, 8]") && e.contains("[B, 3, 8, 8]"),
        "{e}"
    );
}

/// Item 12: no header-only tables (`gdd --no-transients` has no transients to tabulate).
#[test]
fn gdd_writes_no_header_only_tables() {
    let t = TempDir::new("gdd-csv");
    tiny_model_and_batch(&t, 2);
    let out = t.join("gdd");
    ok(ffebm()
        .args([
            "gdd",
            "--t1",
            "5",
            "--t2",
            "3",
            "--beta",
            "0.1",
            "--no-transients",
            "-q",
        ])
        .arg("--model")
        .arg(t.join("m.toml"))
        .arg("--input")
        .arg(t.join("b.safetensors"))
        .arg("--out")
        .arg(&out));
    for e in std::fs::read_dir(&out).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "csv") {
            let rows = std::fs::read_to_string(&p).unwrap().lines().count();
            assert!(rows >= 2, "{} has no rows", p.display());
        }
    }
    assert!(out.join("gdd.csv").exists());
}

/// Item 12: `metrics.csv` has no duplicate columns.
#[test]
fn metrics_csv_has_no_duplicate_columns() {
    if common::shared_data().is_none() {
        return;
    }
    let t = TempDir::new("csv-columns");
    let d = t.join("run");
    ok(&mut train_into(64, &d));
    let csv = std::fs::read_to_string(d.join("metrics.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let mut seen = std::collections::BTreeSet::new();
    for h in &header {
        assert!(seen.insert(*h), "column {h} twice in {header:?}");
    }
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(row.len(), header.len());
}
