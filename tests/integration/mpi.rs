//! Data-parallel training over MPI ranks (`--features mpi`; needs `mpirun` from Open MPI on
//! the PATH and `FFEBM_DATA`): 2 ranks compute what 1 process computes with the same global
//! batch, resume on 2 or 1 ranks, and stop together when one rank fails.
//!
//! Equality bound: the ranks' gradients are summed in f64 and BatchNorm statistics are the
//! whole batch's, so a 2-rank step differs from a 1-process step only by the float32
//! summation order inside the kernels (each rank sums over its half of the batch), which
//! EP amplifies by 1/β. Measured: relative L2 difference per tensor (parameters, BatchNorm
//! buffers, Adam moments) 1.3e-6 after 2 mnist_mlp steps, 1.6e-5 after 2 cifar10_tiny steps
//! and 1.2e-5 after 4 steps of which 2 on 2 ranks; the tests allow [`BOUND`].

use crate::common::{path_str, shared_data, temp_dir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Largest relative L2 difference allowed between a 2-rank and a 1-process run's tensors.
const BOUND: f64 = 1e-4;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ffebm")
}

/// `mpirun -n {n}` of `ffebm --threads 1 {args}` (as root in CI: allowed explicitly).
fn mpirun(n: usize, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "--bind-to",
        "none",
    ])
    .args(["-n", &n.to_string()]);
    for (k, v) in env {
        c.args(["-x", &format!("{k}={v}")]);
    }
    c.arg(bin()).args(["--threads", "1"]).args(args);
    c.output().expect("mpirun (Open MPI) on the PATH")
}

/// One process, as the reference.
fn single(args: &[&str]) -> Output {
    Command::new(bin())
        .args(["--threads", "1"])
        .args(args)
        .output()
        .unwrap()
}

/// `args` on `n` ranks (0: one process without mpirun).
fn on_ranks(n: usize, args: &[&str], env: &[(&str, &str)]) -> Output {
    if n == 0 {
        single(args)
    } else {
        mpirun(n, args, env)
    }
}

/// A fresh, empty directory for one test's runs.
fn fresh_root(name: &str) -> PathBuf {
    let root = temp_dir("mpi", name);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    root
}

/// Copies the files of run directory `from` into a new directory `to` (a second copy of a
/// stopped run, to resume it twice).
fn copy_run(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in std::fs::read_dir(from).unwrap() {
        let f = f.unwrap();
        if f.file_type().unwrap().is_file() {
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
    }
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed: {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Every tensor of a checkpoint (parameters, BN buffers, optimiser state) as f64, by name.
fn tensors(path: &Path) -> Vec<(String, Vec<f64>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f64>)> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| {
            let d = v.data();
            let vals = match v.dtype() {
                safetensors::Dtype::F32 => d
                    .chunks(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                safetensors::Dtype::F64 => d
                    .chunks(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                _ => d.iter().map(|&b| b as f64).collect(),
            };
            (name, vals)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The largest relative L2 difference over the tensors of two checkpoints (same names).
fn max_rel_diff(a: &Path, b: &Path) -> (f64, String) {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(
        ta.iter().map(|t| &t.0).collect::<Vec<_>>(),
        tb.iter().map(|t| &t.0).collect::<Vec<_>>(),
        "tensor names of {} and {}",
        a.display(),
        b.display()
    );
    let mut worst = (0.0f64, String::new());
    for ((name, x), (_, y)) in ta.iter().zip(&tb) {
        assert_eq!(x.len(), y.len(), "{name}");
        let d: f64 = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).powi(2))
            .sum::<f64>()
            .sqrt();
        let n: f64 = y.iter().map(|q| q * q).sum::<f64>().sqrt();
        let r = if n > 0.0 { d / n } else { d };
        if r > worst.0 {
            worst = (r, name.clone());
        }
    }
    worst
}

fn last(dir: &Path) -> PathBuf {
    dir.join("checkpoint_last.safetensors")
}

/// The epoch records of a run's metrics.
fn epochs(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "epoch")
        .collect()
}

/// A 1-process and a 2-rank run of `args` (2 training steps); returns their directories.
fn one_and_two(tag: &str, args: &[&str]) -> (PathBuf, PathBuf) {
    let root = temp_dir("mpi", tag);
    let (d1, d2) = (root.join("one"), root.join("two"));
    let _ = std::fs::remove_dir_all(&d1);
    let _ = std::fs::remove_dir_all(&d2);
    let with = |d: &Path| {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend(["--out".into(), d.display().to_string()]);
        v
    };
    let a1 = with(&d1);
    ok(
        &single(&a1.iter().map(String::as_str).collect::<Vec<_>>()),
        "1 process",
    );
    let a2 = with(&d2);
    ok(
        &mpirun(2, &a2.iter().map(String::as_str).collect::<Vec<_>>(), &[]),
        "mpirun -n 2",
    );
    (d1, d2)
}

fn check_equal_runs(d1: &Path, d2: &Path, test_images: u64) {
    let (diff, name) = max_rel_diff(&last(d2), &last(d1));
    eprintln!("2 ranks vs 1 process: max relative L2 difference {diff:.3e} ({name})");
    assert!(diff <= BOUND, "{name}: {diff:e} > {BOUND:e}");
    let (e1, e2) = (epochs(d1), epochs(d2));
    assert_eq!(e1.len(), 1);
    assert_eq!(e2.len(), 1);
    assert_eq!(e1[0]["step"], 2);
    assert_eq!(e2[0]["step"], 2);
    // the evaluation is split over the ranks and reduced: every test image counted once
    for e in [&e1[0], &e2[0]] {
        let evals = e["evals"].as_object().unwrap();
        let first = evals.values().next().unwrap();
        assert_eq!(first["samples"].as_u64(), Some(test_images), "{e}");
    }
    let t = |e: &serde_json::Value, k: &str| e[k].as_f64().unwrap();
    assert!((t(&e1[0], "train_loss") - t(&e2[0], "train_loss")).abs() < 1e-5);
    assert!((t(&e1[0], "test_loss") - t(&e2[0], "test_loss")).abs() < 1e-4);
    assert_eq!(t(&e1[0], "train_top1"), t(&e2[0], "train_top1"));
    // rank 0 alone wrote the run directory: the same files as the single process
    let names = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(d1), names(d2));
}

#[test]
fn two_ranks_train_as_one_process_mnist_mlp() {
    if shared_data().is_none() {
        return;
    }
    let args = [
        "train",
        "--quiet",
        "--preset",
        "mnist_mlp",
        "--epochs",
        "1",
        "--set",
        "data.train_limit=128",
        "--set",
        "data.test_limit=50",
    ];
    let (d1, d2) = one_and_two("mlp", &args);
    check_equal_runs(&d1, &d2, 50);
}

#[test]
fn two_ranks_read_the_drn_power_of_the_whole_batch() {
    if shared_data().is_none() {
        return;
    }
    let args = [
        "train",
        "--quiet",
        "--preset",
        "drn_xs",
        "--epochs",
        "1",
        "--set",
        "data.train_limit=8",
        "--set",
        "data.test_limit=20",
        "--set",
        "algorithm.warm_start=false",
        "--set",
        "train.log_every=1",
    ];
    let (d1, d2) = one_and_two("drn-power", &args);
    check_equal_runs(&d1, &d2, 20);
    // each rank read the power of its half batch; the records hold the whole batch's
    let records = |d: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|r: &serde_json::Value| r.get("power").is_some())
            .collect()
    };
    let (r1, r2) = (records(&d1), records(&d2));
    assert_eq!(r1.len(), 3, "2 step records and the epoch record");
    assert_eq!(r1.len(), r2.len());
    for (a, b) in r1.iter().zip(&r2) {
        let (pa, pb) = (
            a["power"].as_object().unwrap(),
            b["power"].as_object().unwrap(),
        );
        assert_eq!(pa.len(), 3, "free, plus, minus of block 0: {a}");
        for (k, v) in pa {
            let (x, y) = (v.as_f64().unwrap(), pb[k].as_f64().unwrap());
            assert!(
                x > 0.0 && (x - y).abs() <= 1e-5 * x,
                "power.{k}: 1 process {x}, 2 ranks {y}"
            );
        }
    }
}

#[test]
fn two_ranks_train_as_one_process_with_synchronised_batchnorm() {
    if shared_data().is_none() {
        return;
    }
    // batches of 13: parts of 7 and 6 samples; BN statistics must be the whole batch's
    let args = [
        "train",
        "--quiet",
        "--preset",
        "cifar10_tiny",
        "--epochs",
        "1",
        "--set",
        "data.batch_size=13",
        "--set",
        "data.train_limit=26",
        "--set",
        "data.test_limit=9",
    ];
    let (d1, d2) = one_and_two("bn", &args);
    check_equal_runs(&d1, &d2, 9);
}

/// 4 steps of mnist_mlp (batch 32) in `dir`, on `n` ranks (0: one process without mpirun).
fn mlp_run(n: usize, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec![
        "train",
        "--quiet",
        "--preset",
        "mnist_mlp",
        "--epochs",
        "1",
        "--set",
        "data.batch_size=32",
        "--set",
        "data.train_limit=128",
        "--set",
        "data.test_limit=20",
        "--set",
        "train.checkpoint_every=1",
    ];
    args.extend_from_slice(extra);
    on_ranks(n, &args, env)
}

fn resume(n: usize, dir: &Path) -> Output {
    on_ranks(n, &["train", "--quiet", "--resume", path_str(dir)], &[])
}

#[test]
fn a_two_rank_run_resumes_on_two_and_on_one_rank() {
    if shared_data().is_none() {
        return;
    }
    let root = fresh_root("resume");
    let [u1, u2, s2, s1] = ["u1", "u2", "s2", "s1"].map(|n| root.join(n));
    ok(&mlp_run(0, &["--out", path_str(&u1)], &[]), "1 process");
    ok(&mlp_run(2, &["--out", path_str(&u2)], &[]), "2 ranks");
    ok(
        &mlp_run(2, &["--out", path_str(&s2), "--stop-after", "2"], &[]),
        "2 ranks, stopped after 2 steps",
    );
    let (_, state) = ffebm::train::checkpoint::checkpoint_meta(&last(&s2)).unwrap();
    assert_eq!((state.epoch, state.batch, state.step), (0, 2, 2));
    copy_run(&s2, &s1);
    ok(&resume(2, &s2), "resume on 2 ranks");
    ok(&resume(0, &s1), "resume on 1 process");
    // same ranks, same computation: bit for bit
    assert_eq!(tensors(&last(&s2)), tensors(&last(&u2)));
    // the resumed steps on one process: within the summation-order bound
    let (diff, name) = max_rel_diff(&last(&s1), &last(&u1));
    eprintln!("resumed on 1 process vs uninterrupted 1 process: {diff:.3e} ({name})");
    assert!(diff <= BOUND, "{name}: {diff:e}");
    let (diff, name) = max_rel_diff(&last(&s1), &last(&u2));
    assert!(diff <= BOUND, "{name}: {diff:e}");
}

#[test]
fn a_failing_rank_stops_every_rank_and_leaves_the_last_checkpoint_valid() {
    if shared_data().is_none() {
        return;
    }
    let root = fresh_root("fail");
    let (u2, f2) = (root.join("u2"), root.join("f2"));
    ok(&mlp_run(2, &["--out", path_str(&u2)], &[]), "2 ranks");
    // rank 1 fails inside step 3 (a step with synchronised BatchNorm: every rank ends)
    let o = mlp_run(2, &["--out", path_str(&f2)], &[("FFEBM_TEST_FAIL", "1:3")]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "{all}");
    assert!(
        all.contains("rank 1 of 2") && all.contains("injected failure of rank 1 at step 3"),
        "{all}"
    );
    // the last checkpoint is intact (step 2's, or step 1's when the abort came while rank 0
    // was writing step 2's: written atomically), and resuming it ends where the run would
    let (_, state) = ffebm::train::checkpoint::checkpoint_meta(&last(&f2)).unwrap();
    assert!((1..=2).contains(&state.step), "step {}: {all}", state.step);
    ok(&resume(2, &f2), "resume after the failure");
    assert_eq!(tensors(&last(&f2)), tensors(&last(&u2)));

    // a rank that cannot start (its data folder is empty): every rank exits non-zero with
    // rank 1's message, and no run directory is left
    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let bad = root.join("bad");
    let data = shared_data().unwrap();
    let o = Command::new("mpirun")
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "--bind-to",
            "none",
        ])
        .args(["-n", "1", "-x", &format!("FFEBM_DATA={}", data.display())])
        .args([
            bin(),
            "--threads",
            "1",
            "train",
            "--preset",
            "mnist_mlp",
            "--out",
            path_str(&bad),
        ])
        .arg(":")
        .args(["-n", "1", "-x", &format!("FFEBM_DATA={}", empty.display())])
        .args([
            bin(),
            "--threads",
            "1",
            "train",
            "--preset",
            "mnist_mlp",
            "--out",
            path_str(&bad),
        ])
        .output()
        .unwrap();
    let all = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{all}");
    // every rank prints it before any exits; mpirun, which ends the job at the first
    // non-zero exit, does not always forward the other rank's last lines
    assert!(all.contains("error: rank 1 of 2: "), "{all}");
    assert!(!bad.exists(), "{all}");
}

/// 3 steps of drn_xs (batch 4, `algorithm.warm_start = true`: each batch starts from the
/// free states of the previous one) in `dir`, on `n` ranks (0: one process without mpirun).
/// One sweep per phase (with the preset's 4 the phases converge, and where they start
/// hardly matters: 8e-8 relative difference to cold starts after 3 steps).
fn warm_drn_run(n: usize, dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--quiet",
        "--preset",
        "drn_xs",
        "--epochs",
        "1",
        "--set",
        "data.train_limit=12",
        "--set",
        "data.test_limit=20",
        "--set",
        "train.checkpoint_every=1",
        "--set",
        "algorithm.t1=1",
        "--set",
        "algorithm.t2=1",
        "--out",
        path_str(dir),
    ];
    args.extend_from_slice(extra);
    on_ranks(n, &args, &[])
}

/// A warm-started run over 2 ranks carries the whole batch's free states (gathered from the
/// ranks, each rank starting its part of the next batch from the same samples' states as a
/// single process would), saves them whole in its checkpoints, and resumes on 2 or on 1
/// rank where an uninterrupted run ends.
#[test]
fn a_warm_started_run_carries_the_whole_batch_over_ranks() {
    if shared_data().is_none() {
        return;
    }
    let root = fresh_root("warm");
    let [u1, u2, s2, s1, cold] = ["u1", "u2", "s2", "s1", "cold"].map(|n| root.join(n));
    ok(&warm_drn_run(0, &u1, &[]), "1 process");
    ok(&warm_drn_run(2, &u2, &[]), "2 ranks");
    let carried = |d: &Path| -> Vec<(String, usize)> {
        tensors(&last(d))
            .into_iter()
            .filter(|(n, _)| n.starts_with("carry."))
            .map(|(n, v)| (n, v.len()))
            .collect()
    };
    let c1 = carried(&u1);
    assert!(
        !c1.is_empty(),
        "no carried states in the 1-process checkpoint"
    );
    assert_eq!(
        carried(&u2),
        c1,
        "the 2-rank checkpoint must carry the whole batch"
    );
    let (diff, name) = max_rel_diff(&last(&u2), &last(&u1));
    eprintln!("warm start, 2 ranks vs 1 process: max relative L2 difference {diff:.3e} ({name})");
    assert!(diff <= BOUND, "{name}: {diff:e} > {BOUND:e}");
    // the carried states are used: the same run started cold at every batch differs (DRN
    // phases converge fast: 1.4e-5 relative after 3 steps, below the summation-order bound,
    // so the bit-exact resume below is what checks that a resumed run starts from them)
    ok(
        &warm_drn_run(0, &cold, &["--set", "algorithm.warm_start=false"]),
        "1 process, cold starts",
    );
    let params = |d: &Path| -> Vec<(String, Vec<f64>)> {
        tensors(&last(d))
            .into_iter()
            .filter(|(n, _)| !n.starts_with("carry."))
            .collect()
    };
    assert_ne!(
        params(&cold),
        params(&u1),
        "warm and cold starts ended identically"
    );
    // stopped after 2 steps on 2 ranks, resumed on 2 and on 1
    ok(
        &warm_drn_run(2, &s2, &["--stop-after", "2"]),
        "2 ranks, stopped after 2 steps",
    );
    assert_eq!(
        carried(&s2),
        c1,
        "the mid-epoch checkpoint carries the whole batch"
    );
    copy_run(&s2, &s1);
    ok(&resume(2, &s2), "resume on 2 ranks");
    ok(&resume(0, &s1), "resume on 1 process");
    assert_eq!(tensors(&last(&s2)), tensors(&last(&u2)));
    let (diff, name) = max_rel_diff(&last(&s1), &last(&u1));
    eprintln!("warm start, resumed on 1 process vs uninterrupted: {diff:.3e} ({name})");
    assert!(diff <= BOUND, "{name}: {diff:e}");
}
