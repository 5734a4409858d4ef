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
    let mut sets: Vec<String> = [
        "data.train_limit=320",
        "data.test_limit=200",
        "data.batch_size=32",
        "algorithm.t1=6",
        "algorithm.t2=4",
        "train.epochs=2",
        "train.log_every=3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    sets.extend(extra.iter().map(|s| s.to_string()));
    RunConfig::resolve(Some("mnist_mlp"), None, None, &sets, 7).unwrap()
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

/// A warm-started run (drn_xs carries each batch's free states to the next) checkpoints the
/// carried states; resuming it mid-epoch restores them and the model alone loads from the
/// checkpoint (its `carry.*` tensors are not weights): the resumed run ends bit-identical to
/// the uninterrupted one.
#[test]
fn warm_started_runs_resume_with_their_carried_states() {
    if common::shared_data().is_none() {
        return;
    }
    let cfg = || {
        let sets: Vec<String> = [
            "data.train_limit=120",
            "data.test_limit=100",
            "train.epochs=2",
            "train.log_every=10",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        RunConfig::resolve(Some("drn_xs"), None, None, &sets, 3).unwrap()
    };
    assert!(cfg().algorithm.warm_start);
    let opts = |dir: &PathBuf, resume: bool, stop: Option<u64>| TrainOptions {
        run_dir: dir.clone(),
        resume,
        quiet: true,
        stop_after_steps: stop,
        ..Default::default()
    };
    let full_dir = tmp("warm-full");
    let full = train(cfg(), opts(&full_dir, false, None)).unwrap();
    assert!(full.completed);
    let dir = tmp("warm-part");
    // 30 steps per epoch: stop in the middle of the first
    assert!(!train(cfg(), opts(&dir, false, Some(13))).unwrap().completed);
    let last = dir.join(ffebm::train::trainer::LAST);
    let carried = ffebm::train::checkpoint::load_carried_states(&last)
        .unwrap()
        .expect("a warm-started checkpoint carries free states");
    assert_eq!(carried.len(), 1);
    assert_eq!(carried[0].layers.len(), 2);
    let mut model = ffebm::model::Model::new(cfg().model, 0).unwrap();
    let file = ffebm::io::tensors::read_tensor_file(&last).unwrap();
    ffebm::io::weights::load_model_tensors(&mut model, &file, &last).unwrap();
    let done = train(cfg(), opts(&dir, true, None)).unwrap();
    assert!(done.completed);
    assert_eq!(
        done.model, full.model,
        "weights differ from the uninterrupted run"
    );
    let a: Vec<_> = done.epochs.iter().map(strip_time).collect();
    let b: Vec<_> = full.epochs.iter().map(strip_time).collect();
    assert_eq!(a, b, "metrics differ from the uninterrupted run");
    for d in [dir, full_dir] {
        std::fs::remove_dir_all(&d).unwrap();
    }
}
