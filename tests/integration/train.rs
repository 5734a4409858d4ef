//! Training runs on small subsets of the real data: exact resume (after an epoch and in the
//! middle of one), learning, run-directory contents and errors. Skipped with a notice when
//! `FFEBM_DATA` is not set.

use crate::common;

use ffebm::train::metrics::EpochRecord;
use ffebm::train::{train, RunConfig, TrainOptions};
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ffebm-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn small_mnist(extra: &[&str]) -> RunConfig {
    let mut sets = vec!["train.log_every=3"];
    sets.extend(extra);
    common::small_mnist_config(&sets)
}

/// Everything but wall-clock fields.
fn strip_time(r: &EpochRecord) -> EpochRecord {
    EpochRecord {
        images_per_s: 0.0,
        epoch_time: 0.0,
        time: 0.0,
        ..r.clone()
    }
}

#[test]
fn resumed_runs_end_bit_identical_to_uninterrupted_ones() {
    if common::shared_data().is_none() {
        return;
    }
    let full = train(
        small_mnist(&[]),
        TrainOptions {
            run_dir: tmp("full"),
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(full.completed && full.epochs.len() == 2);
    // killed after epoch 1 (10 steps), then killed again in the middle of epoch 2
    for (name, first, second) in [
        ("after-epoch", 10u64, None),
        ("mid-epoch", 10, Some(3u64)),
        ("first-epoch", 4, None),
    ] {
        let dir = tmp(name);
        let part = train(
            small_mnist(&[]),
            TrainOptions {
                run_dir: dir.clone(),
                quiet: true,
                stop_after_steps: Some(first),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(!part.completed);
        if let Some(s) = second {
            let again = train(
                small_mnist(&[]),
                TrainOptions {
                    run_dir: dir.clone(),
                    resume: true,
                    quiet: true,
                    stop_after_steps: Some(s),
                    ..Default::default()
                },
            )
            .unwrap();
            assert!(!again.completed);
        }
        let done = train(
            small_mnist(&[]),
            TrainOptions {
                run_dir: dir.clone(),
                resume: true,
                quiet: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(done.completed, "{name}");
        assert_eq!(
            done.model, full.model,
            "{name}: weights differ from the uninterrupted run"
        );
        let a: Vec<_> = done.epochs.iter().map(strip_time).collect();
        let b: Vec<_> = full.epochs.iter().map(strip_time).collect();
        assert_eq!(a, b, "{name}: metrics differ");
        // the metrics file holds each step record once
        let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        let steps: Vec<u64> = text
            .lines()
            .filter(|l| l.contains("\"kind\":\"step\""))
            .map(|l| {
                let v = serde_json::from_str::<serde_json::Value>(l).unwrap();
                for key in [
                    "loss",
                    "top1",
                    "top5",
                    "lr",
                    "free_sweeps",
                    "images_per_s",
                    "time",
                ] {
                    assert!(
                        v[key].as_f64().is_some(),
                        "{name}: step record lacks {key}: {l}"
                    );
                }
                v["step"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(steps, vec![3, 6, 9, 12, 15, 18], "{name}");
        same_files_but_wall_clock(&dir, &full.run_dir, name);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let dir = full.run_dir.clone();
    for f in [
        "config.toml",
        "metrics.jsonl",
        "metrics.csv",
        "checkpoint_last.safetensors",
        "checkpoint_best.safetensors",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    // the written config reproduces the run's config
    let cfg =
        RunConfig::from_toml(&std::fs::read_to_string(dir.join("config.toml")).unwrap()).unwrap();
    assert_eq!(cfg, small_mnist(&[]));
    // starting again in the same directory is refused
    let e = train(
        small_mnist(&[]),
        TrainOptions {
            run_dir: dir.clone(),
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("already holds a run"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A warm-started run (each batch's free phase starts from the previous batch's states)
/// resumes exactly too: the carried states are part of the checkpoint.
#[test]
fn warm_started_runs_resume_exactly() {
    if common::shared_data().is_none() {
        return;
    }
    let cfg = || {
        let sets: Vec<String> = [
            "data.train_limit=48",
            "data.test_limit=40",
            "train.epochs=2",
            "train.log_every=4",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = RunConfig::resolve(Some("drn_xs"), None, None, &sets, Some(3)).unwrap();
        assert!(c.algorithm.warm_start);
        c
    };
    let full = train(
        cfg(),
        TrainOptions {
            run_dir: tmp("warm-full"),
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();
    // the resistor power is read out on logged steps and averaged into the epoch records
    let text = std::fs::read_to_string(full.run_dir.join("metrics.jsonl")).unwrap();
    let epochs: Vec<EpochRecord> = text
        .lines()
        .filter(|l| l.contains("\"kind\":\"epoch\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(epochs.len(), 2);
    for e in &epochs {
        for k in ["block0.free", "block0.plus", "block0.minus"] {
            assert!(
                e.power.get(k).is_some_and(|p| *p > 0.0),
                "{k} in {:?}",
                e.power
            );
        }
    }
    // 12 steps per epoch: stopped in the middle of the first epoch and of the second
    let dir = tmp("warm-parts");
    let train_dir = |resume: bool, stop: Option<u64>| {
        train(
            cfg(),
            TrainOptions {
                run_dir: dir.clone(),
                resume,
                quiet: true,
                stop_after_steps: stop,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"))
    };
    assert!(!train_dir(false, Some(5)).completed);
    let f = ffebm::io::tensors::read_tensor_file(&dir.join("checkpoint_last.safetensors")).unwrap();
    assert!(
        f.tensors.keys().any(|k| k.starts_with("carry.")),
        "no carried states in the checkpoint"
    );
    assert!(!train_dir(true, Some(10)).completed);
    let done = train_dir(true, None);
    assert!(done.completed);
    assert_eq!(
        done.model, full.model,
        "weights differ from the uninterrupted run"
    );
    same_files_but_wall_clock(&dir, &full.run_dir, "warm start");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&full.run_dir);
}

#[test]
fn id_and_sgd_runs_learn_and_divergence_stops_with_a_hint() {
    if common::shared_data().is_none() {
        return;
    }
    for extra in [
        &["algorithm.name=id-exact"][..],
        &["optim.name=sgd", "optim.lr=0.05"][..],
    ] {
        let r = train(
            small_mnist(extra),
            TrainOptions {
                run_dir: tmp("learn"),
                quiet: true,
                ..Default::default()
            },
        )
        .unwrap();
        let last = r.epochs.last().unwrap();
        assert!(
            last.test_top1 > 40.0,
            "{extra:?}: test top1 {} after 2 short epochs",
            last.test_top1
        );
        std::fs::remove_dir_all(&r.run_dir).unwrap();
    }
    let e = train(
        small_mnist(&["optim.lr=1e30", "optim.name=sgd"]),
        TrainOptions {
            run_dir: tmp("nan"),
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("training stopped at epoch 1") && msg.contains("Hint: lower optim.lr"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(tmp("nan"));
}

/// `ffebm train` on Ctrl-C (SIGINT) finishes its step, writes `checkpoint_last`, tells
/// how to resume and exits with 130; `--resume` then completes the run.
#[test]
fn ctrl_c_checkpoints_and_the_run_resumes() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let Some(data) = common::shared_data() else {
        return;
    };
    let dir = tmp("sigint");
    let sets = [
        "data.train_limit=6400",
        "data.test_limit=200",
        "data.batch_size=32",
        "algorithm.t1=6",
        "algorithm.t2=4",
        "train.epochs=3",
        "train.log_every=1",
    ];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ffebm"));
    cmd.args(["train", "--preset", "mnist_mlp", "--data-dir"])
        .arg(&data)
        .arg("--out")
        .arg(&dir);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        log.push_str(&line);
        if line.contains("step 3:") {
            let pid = child.id().to_string();
            assert!(Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success());
        }
        line.clear();
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(
        log.contains("interrupted after 0 complete epoch(s)")
            && log.contains(&format!(
                "resume with: ffebm train --resume {}",
                dir.display()
            )),
        "{log}"
    );
    assert!(dir.join("checkpoint_last.safetensors").exists());
    let o = Command::new(env!("CARGO_BIN_EXE_ffebm"))
        .args(["train", "--data-dir"])
        .arg(&data)
        .arg("--resume")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("finished 3 epochs"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A run that cannot start (here: no data where `data.dir` points) fails naming the file
/// and leaves no run directory behind.
#[test]
fn a_run_that_cannot_start_leaves_no_run_directory() {
    let dir = tmp("nodata");
    let missing = tmp("missing-data");
    let set = format!("data.dir={}", missing.display());
    let e = train(
        small_mnist(&[&set]),
        TrainOptions {
            run_dir: dir.clone(),
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("train-images-idx3-ubyte"),
        "{e:#}"
    );
    assert!(!dir.exists(), "{} was created", dir.display());
}

/// The files of two runs that should be identical: equal but for wall-clock fields
/// (`time`, `images_per_s`, `epoch_time` in the metrics; `elapsed` and `accum.seconds` in
/// the checkpoints' loop state, and the checksum that covers them).
fn same_files_but_wall_clock(a: &std::path::Path, b: &std::path::Path, name: &str) {
    use ffebm::io::tensors::read_tensor_file;
    let read = |d: &std::path::Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap();
    assert_eq!(read(a, "config.toml"), read(b, "config.toml"), "{name}");
    const CLOCK: [&str; 3] = ["time", "images_per_s", "epoch_time"];
    let strip = |text: String| -> Vec<serde_json::Value> {
        text.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                for k in CLOCK {
                    v.as_object_mut().unwrap().remove(k);
                }
                v
            })
            .collect()
    };
    assert_eq!(
        strip(read(a, "metrics.jsonl")),
        strip(read(b, "metrics.jsonl")),
        "{name}: metrics.jsonl"
    );
    let csv = |text: String| -> Vec<Vec<String>> {
        let rows: Vec<Vec<String>> = text
            .lines()
            .map(|l| l.split(',').map(String::from).collect())
            .collect();
        let keep: Vec<bool> = rows[0]
            .iter()
            .map(|h| !CLOCK.contains(&h.as_str()))
            .collect();
        rows.into_iter()
            .map(|r| {
                r.into_iter()
                    .zip(&keep)
                    .filter(|(_, k)| **k)
                    .map(|(c, _)| c)
                    .collect()
            })
            .collect()
    };
    assert_eq!(
        csv(read(a, "metrics.csv")),
        csv(read(b, "metrics.csv")),
        "{name}: metrics.csv"
    );
    for ck in ["checkpoint_last.safetensors", "checkpoint_best.safetensors"] {
        let (fa, fb) = (
            read_tensor_file(&a.join(ck)).unwrap(),
            read_tensor_file(&b.join(ck)).unwrap(),
        );
        assert_eq!(fa.tensors, fb.tensors, "{name}: {ck} tensors");
        assert_eq!(fa.order, fb.order, "{name}: {ck} tensor order");
        let mut keys: Vec<&String> = fa.metadata.keys().collect();
        keys.sort();
        let mut keys_b: Vec<&String> = fb.metadata.keys().collect();
        keys_b.sort();
        assert_eq!(keys, keys_b, "{name}: {ck} metadata keys");
        for k in keys {
            match k.as_str() {
                "sha256" => {}
                "loop_state" => {
                    let state = |m: &std::collections::HashMap<String, String>| {
                        let mut v: serde_json::Value = serde_json::from_str(&m[k]).unwrap();
                        v["elapsed"] = 0.into();
                        v["accum"]["seconds"] = 0.into();
                        v
                    };
                    assert_eq!(state(&fa.metadata), state(&fb.metadata), "{name}: {ck}");
                }
                _ => assert_eq!(fa.metadata[k], fb.metadata[k], "{name}: {ck} `{k}`"),
            }
        }
    }
}

/// Issue 13, item 6: a loss that explodes (SGD at lr 100: finite but thousands of times the
/// first step's after a few steps) stops the run before it turns into NaN, with the hint,
/// and the message names a checkpoint that exists or says that none does.
#[test]
fn an_exploding_loss_stops_the_run_before_nan() {
    if common::shared_data().is_none() {
        return;
    }
    for (extra, has_checkpoint) in [(None, false), (Some("train.checkpoint_every=1"), true)] {
        let mut sets = vec!["optim.name=sgd", "optim.lr=100"];
        sets.extend(extra);
        let dir = tmp("explode");
        let e = train(
            small_mnist(&sets),
            TrainOptions {
                run_dir: dir.clone(),
                quiet: true,
                ..Default::default()
            },
        )
        .map(|r| r.epochs.last().map(|e| e.train_loss))
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("training stopped at epoch 1")
                && msg.contains("diverg")
                && msg.contains("Hint: lower optim.lr"),
            "{msg}"
        );
        assert!(!msg.contains("non-finite"), "caught only at NaN: {msg}");
        let last = dir.join("checkpoint_last.safetensors");
        if has_checkpoint {
            assert!(
                msg.contains(&last.display().to_string()) && last.is_file(),
                "{msg}"
            );
        } else {
            assert!(!last.exists() && msg.contains("no checkpoint"), "{msg}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Issue 13, item 8: limited evaluation sets are named for what they hold, and identical
/// sets are reported once.
#[test]
fn limited_test_sets_are_named_for_what_they_hold() {
    let Some(root) = common::shared_data() else {
        return;
    };
    for (limit, want) in [
        (Some(256), vec![("test-exact256", 256)]),
        (
            Some(2000),
            vec![("test-exact1000", 1000), ("test-first2000-lossy", 2000)],
        ),
        (
            None,
            vec![("test-exact1000", 1000), ("test-full10000-lossy", 10000)],
        ),
    ] {
        let mut text = format!(
            "dataset = \"cifar10\"\nbatch_size = 64\naugment = false\ntrain_limit = 64\ndir = {:?}\n",
            root.display().to_string()
        );
        if let Some(l) = limit {
            text.push_str(&format!("test_limit = {l}\n"));
        }
        let cfg: ffebm::train::config::DataConfig = toml::from_str(&text).unwrap();
        let data = ffebm::train::data::load_run_data(&cfg, 0, true).unwrap();
        let got: Vec<(String, usize)> = data
            .tests
            .iter()
            .map(|(n, s)| (n.clone(), s.len()))
            .collect();
        let want: Vec<(String, usize)> = want.iter().map(|(n, k)| (n.to_string(), *k)).collect();
        assert_eq!(got, want, "test_limit {limit:?}");
    }
}

/// Issue 8: a DRN preset (or any preset) asked for with a dataset it was not built for is
/// refused naming the preset, the dataset and the two ways out.
#[test]
fn a_preset_asked_for_with_another_dataset_is_refused_naming_both() {
    for (preset, dataset) in [
        ("drn_xs", "cifar10"),
        ("drn_1h", "cifar100"),
        ("cifar10_drn", "mnist"),
    ] {
        let sets = vec![format!("data.dataset={dataset}")];
        let e = RunConfig::resolve(Some(preset), None, None, &sets, Some(0))
            .and_then(|c| c.validate().map(|_| c))
            .unwrap_err();
        let m = format!("{e:#}");
        assert!(
            m.contains(&format!("preset `{preset}`"))
                && m.contains(&format!("data.dataset = {dataset}"))
                && m.contains("set model.input"),
            "{m}"
        );
    }
}
