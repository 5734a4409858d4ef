//! Issue 13: `ffebm train` / `ffebm eval` as users run them — concurrent runs, settings
//! precedence, resuming with changed settings, data location, the schedule and checkpoint
//! cadence. Each test starts the real binary; those that train need `FFEBM_DATA` (MNIST)
//! and skip with a notice without it.

use crate::common;
use crate::data_util::TempDir;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub fn ffebm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ffebm"))
}

/// A tiny MNIST run: `train_limit` images, 2 sweeps per phase, one epoch (`--epochs N`
/// overrides it).
pub fn tiny(train_limit: usize) -> Vec<String> {
    let mut v: Vec<String> = ["train", "--preset", "mnist_mlp"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for s in [
        "train.epochs=1".to_string(),
        format!("data.train_limit={train_limit}"),
        "data.test_limit=32".into(),
        "data.batch_size=32".into(),
        "algorithm.t1=2".into(),
        "algorithm.t2=2".into(),
        "train.log_every=1".into(),
    ] {
        v.push("--set".into());
        v.push(s);
    }
    v
}

/// `ffebm train` of [`tiny`] into `dir`.
pub fn train_into(train_limit: usize, dir: &Path) -> Command {
    let mut c = ffebm();
    c.args(tiny(train_limit)).arg("--out").arg(dir);
    c
}

/// Starts `cmd` with its standard error piped (and `stdout` piped too when `both`).
pub fn spawn_piped(cmd: &mut Command, both: bool) -> Child {
    if both {
        cmd.stdout(Stdio::piped());
    }
    cmd.stderr(Stdio::piped()).spawn().unwrap()
}

pub fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `cmd`, which must succeed.
pub fn ok(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?} failed:\n{}", stderr_of(&o));
    o
}

/// Runs `cmd`, which must fail with an error (exit code 1, not a panic); returns stderr.
pub fn fails(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    let e = stderr_of(&o);
    assert!(!o.status.success(), "{cmd:?} succeeded:\n{e}");
    assert!(!e.contains("panicked"), "{cmd:?} panicked:\n{e}");
    e
}

fn config_value(dir: &Path) -> toml::Value {
    toml::from_str(&std::fs::read_to_string(dir.join("config.toml")).unwrap()).unwrap()
}

/// The run directory named on the last line of `train`'s standard output.
fn run_dir_of(o: &Output, cwd: &Path) -> PathBuf {
    let out = String::from_utf8_lossy(&o.stdout);
    let d = out
        .rsplit("run directory ")
        .next()
        .unwrap_or_else(|| panic!("no run directory in {out}"))
        .trim();
    cwd.join(d)
}

fn epoch_records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "epoch")
        .collect()
}

/// Reads `child`'s standard error until a line contains `needle`; returns what it read.
pub fn read_until(
    child: &mut Child,
    needle: &str,
) -> (BufReader<std::process::ChildStderr>, String) {
    let mut r = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let mut line = String::new();
    while r.read_line(&mut line).unwrap() > 0 {
        log.push_str(&line);
        if line.contains(needle) {
            return (r, log);
        }
        line.clear();
    }
    panic!("`{needle}` never appeared:\n{log}");
}

pub fn drain(mut r: BufReader<std::process::ChildStderr>, log: &mut String) {
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut r, &mut rest).unwrap();
    log.push_str(&rest);
}

/// Item 1: three trainings started at once without `--out` get three run directories, each
/// with its own seed and only its own records.
#[test]
fn concurrent_trainings_claim_distinct_run_directories() {
    if common::shared_data().is_none() {
        return;
    }
    let t = TempDir::new("claim");
    let children: Vec<Child> = (0..3)
        .map(|s| {
            ffebm()
                .current_dir(t.path())
                .args(tiny(640))
                .args(["--seed", &s.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut dirs = Vec::new();
    for o in &outs {
        assert!(o.status.success(), "{}", stderr_of(o));
        dirs.push(run_dir_of(o, t.path()));
    }
    let mut unique = dirs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "runs shared a directory: {dirs:?}");
    for (s, d) in dirs.iter().enumerate() {
        assert!(d.starts_with(t.join("runs")), "{}", d.display());
        assert_eq!(
            config_value(d)["seed"].as_integer(),
            Some(s as i64),
            "{}",
            d.display()
        );
        assert_eq!(epoch_records(d).len(), 1, "{}", d.display());
    }
}

/// Item 1: a second run into a directory in use, or a resume of it, fails naming the
/// process that holds it; once that process has stopped, the run resumes.
#[test]
fn a_run_directory_in_use_is_refused_naming_the_other_process() {
    if common::shared_data().is_none() {
        return;
    }
    let t = TempDir::new("inuse");
    let d = t.join("run");
    let mut a = spawn_piped(train_into(6400, &d).args(["--epochs", "2"]), false);
    let (r, mut log) = read_until(&mut a, "step 2:");
    let pid = a.id().to_string();
    let e = fails(&mut train_into(64, &d));
    assert!(e.contains("in use") && e.contains(&pid), "{e}");
    let e = fails(ffebm().arg("train").arg("--resume").arg(&d));
    assert!(e.contains("in use") && e.contains(&pid), "{e}");
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    drain(r, &mut log);
    assert_eq!(a.wait().unwrap().code(), Some(130), "{log}");
    let o = ok(ffebm().args(["train", "--resume"]).arg(&d));
    assert!(String::from_utf8_lossy(&o.stdout).contains("finished 2 epochs"));
}

/// Item 2: preset < config file < --set < explicit flags; a file without `seed` uses 0.
#[test]
fn flags_override_set_which_overrides_the_config_file() {
    if common::shared_data().is_none() {
        return;
    }
    let t = TempDir::new("precedence");
    ok(&mut train_into(64, &t.join("base")));
    let mut v = config_value(&t.join("base"));
    v["seed"] = toml::Value::Integer(5);
    v["optim"]["lr"] = toml::Value::Float(0.005);
    v["train"]["epochs"] = toml::Value::Integer(3);
    let file = t.join("f.toml");
    std::fs::write(&file, toml::to_string(&v).unwrap()).unwrap();
    let d = t.join("a");
    ok(ffebm()
        .args(["train", "--seed", "3", "--set", "optim.lr=0.002"])
        .args(["--set", "train.epochs=2", "--epochs", "1", "--config"])
        .arg(&file)
        .arg("--out")
        .arg(&d));
    let c = config_value(&d);
    assert_eq!(c["seed"].as_integer(), Some(3), "--seed must beat the file");
    assert_eq!(
        c["optim"]["lr"].as_float(),
        Some(0.002),
        "--set must beat the file"
    );
    assert_eq!(
        c["train"]["epochs"].as_integer(),
        Some(1),
        "--epochs must beat --set"
    );
    // --set beats the file, too, for the seed
    let d = t.join("b");
    ok(ffebm()
        .args(["train", "--set", "seed=4", "--config"])
        .arg(&file)
        .arg("--out")
        .arg(&d)
        .args(["--epochs", "1"]));
    assert_eq!(config_value(&d)["seed"].as_integer(), Some(4));
    // without a seed in the file: the default 0
    v.as_table_mut().unwrap().remove("seed");
    std::fs::write(&file, toml::to_string(&v).unwrap()).unwrap();
    let d = t.join("c");
    ok(ffebm()
        .args(["train", "--epochs", "1", "--config"])
        .arg(&file)
        .arg("--out")
        .arg(&d));
    assert_eq!(config_value(&d)["seed"].as_integer(), Some(0));
}

/// Item 3: `--resume` refuses changes that break exact resumption, naming the key; safe
/// changes are applied, written to `config.toml` (which then equals the checkpoint's
/// embedded config) and recorded in the metrics.
#[test]
fn resume_refuses_breaking_changes_and_records_safe_ones() {
    if common::shared_data().is_none() {
        return;
    }
    let t = TempDir::new("resume-changes");
    let d = t.join("run");
    ok(&mut train_into(64, &d));
    let before = std::fs::read_to_string(d.join("config.toml")).unwrap();
    let resume = || {
        let mut c = ffebm();
        c.arg("train").arg("--resume").arg(&d);
        c
    };
    for (args, key) in [
        (&["--set", "data.batch_size=16"][..], "data.batch_size"),
        (&["--seed", "9"][..], "seed"),
        (&["--set", "optim.lr=0.5"][..], "optim.lr"),
        (&["--set", "data.dataset=fashion-mnist"][..], "data.dataset"),
        (&["--set", "algorithm.name=id-exact"][..], "algorithm.name"),
        (&["--set", "model.alpha=0.25"][..], "model.alpha"),
    ] {
        let e = fails(resume().args(args));
        assert!(e.contains(key), "{args:?}: {e}");
    }
    assert_eq!(
        std::fs::read_to_string(d.join("config.toml")).unwrap(),
        before
    );
    let o = ok(resume().args(["--epochs", "2", "--set", "train.log_every=2"]));
    assert!(String::from_utf8_lossy(&o.stdout).contains("finished 2 epochs"));
    let c = config_value(&d);
    assert_eq!(c["train"]["epochs"].as_integer(), Some(2));
    assert_eq!(c["train"]["log_every"].as_integer(), Some(2));
    let text = std::fs::read_to_string(d.join("config.toml")).unwrap();
    for ck in ["checkpoint_last.safetensors", "checkpoint_best.safetensors"] {
        let f = ffebm::io::tensors::read_tensor_file(&d.join(ck)).unwrap();
        assert_eq!(
            f.metadata["run_config"], text,
            "{ck} disagrees with config.toml"
        );
    }
    let metrics = std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    let change = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["kind"] == "config_change")
        .unwrap_or_else(|| panic!("no config_change record:\n{metrics}"));
    assert_eq!(change["changes"]["train.epochs"]["to"], 2, "{change}");
    assert_eq!(change["changes"]["train.log_every"]["from"], 1, "{change}");
    // fewer epochs than the run has done
    let e = fails(resume().args(["--epochs", "1"]));
    assert!(e.contains("train.epochs"), "{e}");
}

/// Item 4: a set but missing `FFEBM_DATA` is an error naming it (not the cache); a failed
/// download says how to proceed offline.
#[test]
fn missing_data_root_and_failed_download_say_what_to_do() {
    let t = TempDir::new("nodata");
    let missing = t.join("no-such-data-root");
    let e = fails(
        train_into(64, &t.join("r1"))
            .env("FFEBM_DATA", &missing)
            .env("FFEBM_CACHE", t.join("cache")),
    );
    assert!(
        e.contains("FFEBM_DATA") && e.contains(&missing.display().to_string()),
        "{e}"
    );
    assert!(!t.join("cache").exists() && !t.join("r1").exists());
    // the first run a newcomer makes, without network (a closed local port as the mirror)
    let e = fails(
        ffebm()
            .arg("train")
            .current_dir(t.path())
            .env_remove("FFEBM_DATA")
            .env("FFEBM_CACHE", t.join("cache"))
            .env("FFEBM_MIRROR", "http://127.0.0.1:9"),
    );
    for needle in [
        "FFEBM_DATA",
        "--data-dir",
        "cifar10/",
        "data_batch_1.bin",
        "test_batch.bin",
        "network",
    ] {
        assert!(e.contains(needle), "`{needle}` missing from:\n{e}");
    }
    assert!(!t.join("runs").exists(), "a run directory was left behind");
}

/// Item 4 and 9: `data.dir` is stored absolute, so `eval` works from another directory, and
/// `eval` needs only the test files.
#[test]
fn eval_works_from_anywhere_with_only_the_test_files() {
    let Some(root) = common::shared_data() else {
        return;
    };
    let t = TempDir::new("eval-anywhere");
    std::os::unix::fs::symlink(root.join("mnist"), t.join("mnist-link")).unwrap();
    ok(ffebm()
        .current_dir(t.path())
        .env_remove("FFEBM_DATA")
        .args(tiny(64))
        .args(["--data-dir", "mnist-link", "--out", "run"]));
    let dir = config_value(&t.join("run"))["data"]["dir"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(Path::new(&dir).is_absolute(), "data.dir = {dir}");
    let ckpt = t.join("run/checkpoint_best.safetensors");
    let o = ok(ffebm()
        .current_dir("/")
        .env_remove("FFEBM_DATA")
        .arg("eval")
        .arg("--checkpoint")
        .arg(&ckpt));
    assert!(String::from_utf8_lossy(&o.stdout).contains("top1"));
    // a folder with the test files only
    let only = t.join("test-only");
    std::fs::create_dir_all(&only).unwrap();
    for f in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        std::fs::copy(root.join("mnist").join(f), only.join(f)).unwrap();
    }
    let o = ok(ffebm()
        .env_remove("FFEBM_DATA")
        .args(["eval", "--checkpoint"])
        .arg(&ckpt)
        .arg("--data-dir")
        .arg(&only));
    assert!(String::from_utf8_lossy(&o.stdout).contains("32 images"));
    // no data at all: the hint names only what eval has
    let e = fails(
        ffebm()
            .env_remove("FFEBM_DATA")
            .env("FFEBM_CACHE", t.join("cache"))
            .args(["eval", "--checkpoint"])
            .arg(&ckpt)
            .arg("--data-dir")
            .arg(t.join("cache")),
    );
    assert!(
        e.contains("--data-dir") && e.contains("t10k-images-idx3-ubyte"),
        "{e}"
    );
    assert!(
        !e.contains("--download") && !e.contains("--test-files"),
        "{e}"
    );
}

/// Item 9: the hint for a CIFAR-10 folder without `test_batch.bin` gives a command that works.
#[test]
fn the_cifar10_test_file_hint_is_a_working_command() {
    let Some(root) = common::shared_data() else {
        return;
    };
    let cifar = root.join("cifar10");
    let err = ffebm::data::Dataset::load(
        ffebm::data::DatasetKind::Cifar10,
        ffebm::data::Split::Test,
        &cifar,
        None,
    )
    .unwrap_err()
    .to_string();
    let start = err
        .find("--set '")
        .unwrap_or_else(|| panic!("no --set hint in {err}"));
    let value = err[start + "--set '".len()..].split('\'').next().unwrap();
    let t = TempDir::new("cifar-hint");
    let d = t.join("run");
    ok(ffebm().args([
        "train",
        "--preset",
        "cifar10_tiny",
        "--epochs",
        "1",
        "--set",
        "data.train_limit=32",
        "--set",
        "data.test_limit=32",
        "--set",
        "data.batch_size=32",
        "--set",
        "algorithm.t1=2",
        "--set",
        "algorithm.t2=2",
        "--out",
        d.to_str().unwrap(),
    ]));
    let o = ok(ffebm()
        .args(["eval", "--checkpoint"])
        .arg(d.join("checkpoint_last.safetensors"))
        .args(["--set", value]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("32 images") && out.contains("top1"), "{out}");
}

/// Item 10: the cosine schedule spans the run's `--epochs` (mnist_mlp's preset has 2).
#[test]
fn the_cosine_schedule_follows_epochs() {
    if common::shared_data().is_none() {
        return;
    }
    let t = TempDir::new("tmax");
    let d = t.join("run");
    ok(train_into(64, &d).args(["--epochs", "3"]));
    let lrs: Vec<f64> = epoch_records(&d)
        .iter()
        .map(|r| r["lr"].as_f64().unwrap())
        .collect();
    let (lr0, lr_min) = (1e-3, 1e-5);
    let want: Vec<f64> = (0..3)
        .map(|e| {
            lr_min + (lr0 - lr_min) * (1.0 + (std::f64::consts::PI * e as f64 / 3.0).cos()) / 2.0
        })
        .collect();
    for (a, b) in lrs.iter().zip(&want) {
        assert!((a - b).abs() < 1e-12, "lr {lrs:?}, want {want:?}");
    }
}

/// Item 10: presets checkpoint by time as well as at epoch ends, so `kill -9` mid-epoch
/// loses minutes, not an epoch.
#[test]
fn checkpoints_are_written_by_time_within_an_epoch() {
    if common::shared_data().is_none() {
        return;
    }
    let t = TempDir::new("ckpt-time");
    let d = t.join("run");
    ok(&mut train_into(64, &d));
    let minutes = config_value(&d)["train"]["checkpoint_minutes"]
        .as_float()
        .expect("train.checkpoint_minutes in config.toml");
    assert!(minutes > 0.0 && minutes <= 10.0, "{minutes}");
    let d = t.join("killed");
    let mut a = spawn_piped(
        train_into(6400, &d).args(["--set", "train.checkpoint_minutes=0.0001"]),
        false,
    );
    let (r, _) = read_until(&mut a, "step 20:");
    a.kill().unwrap();
    a.wait().unwrap();
    drop(r);
    let f = ffebm::io::tensors::read_tensor_file(&d.join("checkpoint_last.safetensors"))
        .expect("no checkpoint after 20 steps");
    let state: serde_json::Value = serde_json::from_str(&f.metadata["loop_state"]).unwrap();
    assert_eq!(state["epoch"], 0, "{state}");
    assert!(state["step"].as_u64().unwrap() >= 1, "{state}");
    let o = ok(ffebm().args(["train", "--resume"]).arg(&d));
    assert!(String::from_utf8_lossy(&o.stdout).contains("finished 1 epochs"));
}
