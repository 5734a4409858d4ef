//! Learning on real data with the built-in small presets and their own hyper-parameters:
//! `mnist_mlp` trained with EP for its two full epochs must reach 95% MNIST test accuracy,
//! and a shortened `cifar10_tiny` EP run (a 5120-image subset, two epochs) must clearly
//! beat chance. These are the slowest tests of the suite (about 3 min and 1 min on two
//! cores). Skipped with a notice when `FFEBM_DATA` is not set.

use crate::common;

use ffebm::train::{train, RunConfig, RunSummary, TrainOptions};

fn run(preset: &str, sets: &[&str]) -> RunSummary {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let config = RunConfig::resolve(Some(preset), None, None, &sets, None).unwrap();
    let run_dir =
        std::env::temp_dir().join(format!("ffebm-learning-{preset}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run_dir);
    let report = train(
        config,
        TrainOptions {
            run_dir,
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();
    for e in &report.epochs {
        eprintln!(
            "{preset} epoch {}: train loss {:.4} top1 {:.2}%, test loss {:.4} top1 {:.2}% ({:.0} s)",
            e.epoch, e.train_loss, e.train_top1, e.test_loss, e.test_top1, e.epoch_time
        );
    }
    std::fs::remove_dir_all(&report.run_dir).unwrap();
    report
}

/// Issue 3: `mnist_mlp` with EP reaches >= 95% MNIST test accuracy within 2 epochs
/// (measured: 96.9% after epoch 1, 98.0% after epoch 2).
#[test]
fn mnist_mlp_with_ep_reaches_95_percent_in_two_epochs() {
    if common::shared_data().is_none() {
        return;
    }
    let report = run("mnist_mlp", &["train.epochs=2"]);
    let last = report.epochs.last().unwrap();
    assert_eq!(last.epoch, 2);
    assert!(
        last.test_top1 >= 95.0,
        "mnist_mlp test top1 {:.2}% after 2 epochs (need >= 95%)",
        last.test_top1
    );
}

/// Measured 25.0% (chance is 10%); the margin absorbs thread-count reassociation.
const MIN_TOP1: f64 = 20.0;

/// Issue 3: `cifar10_tiny` with EP learns. The shortened run (5120 training images, two
/// epochs, cosine over two epochs, the preset's T1/T2/β/Adam) measured
/// train loss 2.198 -> 2.056 and test top-1 14.6% -> 25.0% on `test-exact1000`.
#[test]
fn cifar10_tiny_with_ep_learns_on_a_subset() {
    if common::shared_data().is_none() {
        return;
    }
    let report = run(
        "cifar10_tiny",
        &[
            "data.train_limit=5120",
            "train.epochs=2",
            "schedule.t_max=2",
            "data.test_files=[\"test_batch_first1000.bin\"]",
        ],
    );
    let (first, last) = (&report.epochs[0], report.epochs.last().unwrap());
    assert!(
        last.train_loss < first.train_loss,
        "training loss did not fall: {:.4} -> {:.4}",
        first.train_loss,
        last.train_loss
    );
    assert!(
        last.test_top1 >= MIN_TOP1,
        "cifar10_tiny test top1 {:.2}% after the shortened run (need >= {MIN_TOP1}%)",
        last.test_top1
    );
}
