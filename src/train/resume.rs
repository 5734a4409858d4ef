//! What may change when a run is resumed.
//!
//! A resumed run continues exactly where its checkpoint left it only if everything that
//! shapes the computation stays as it was: model, algorithm, data and its order (dataset,
//! batch size, augmentation, limits, seed), optimiser and schedule. Those keys are refused
//! with a message naming them. Safe keys may change — more epochs, how often to log or
//! checkpoint, the divergence check, where the data lives — and are recorded. When the
//! epoch count changes and the cosine period followed it, the period is pinned to the
//! epochs the run started with, so the learning rate of the epochs already trained stays
//! what it was.

use super::checkpoint::LoopState;
use super::config::RunConfig;
use super::optim::ScheduleKind;
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::Path;

/// Keys a resumed run may change.
pub const SAFE_KEYS: [&str; 8] = [
    "train.epochs",
    "train.log_every",
    "train.checkpoint_every",
    "train.checkpoint_minutes",
    "train.max_loss_ratio",
    "train.max_loss_rises",
    "data.dir",
    "data.download",
];

/// A changed setting: its old and new values (`None` = absent).
pub type Changes = BTreeMap<String, (Option<toml::Value>, Option<toml::Value>)>;

/// Every leaf of a TOML tree by dotted key (arrays of tables by index).
fn flatten(v: &toml::Value, prefix: &str, out: &mut BTreeMap<String, toml::Value>) {
    let join = |k: &str| super::keys::dotted(prefix, k);
    match v {
        toml::Value::Table(t) => t.iter().for_each(|(k, c)| flatten(c, &join(k), out)),
        toml::Value::Array(a) if a.iter().any(|x| x.is_table()) => a
            .iter()
            .enumerate()
            .for_each(|(i, c)| flatten(c, &join(&i.to_string()), out)),
        leaf => {
            out.insert(prefix.to_string(), leaf.clone());
        }
    }
}

fn show(v: &Option<toml::Value>) -> String {
    v.as_ref().map_or("(absent)".into(), |v| v.to_string())
}

/// The differences between the configuration a run used (`old`) and the one it is resumed
/// with (`new`, whose cosine period is pinned if needed); an error naming every key whose
/// change would break exact resumption.
pub fn resume_changes(
    old: &RunConfig,
    new: &mut RunConfig,
    state: &LoopState,
    dir: &Path,
) -> Result<Changes> {
    if new.schedule.name == ScheduleKind::Cosine
        && new.schedule.t_max.is_none()
        && new.train.epochs != old.train.epochs
    {
        new.schedule.t_max = Some(old.t_max());
    }
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten(&toml::Value::try_from(old)?, "", &mut a);
    flatten(&toml::Value::try_from(&*new)?, "", &mut b);
    let mut changes = Changes::new();
    let mut refused = Vec::new();
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for key in keys {
        let (from, to) = (a.get(key).cloned(), b.get(key).cloned());
        if from == to {
            continue;
        }
        let safe = SAFE_KEYS.contains(&key.as_str())
            || (key == "schedule.t_max" && old.t_max() == new.t_max());
        if safe {
            changes.insert(key.clone(), (from, to));
        } else {
            refused.push(format!(
                "`{key}` = {} (the run uses {})",
                show(&to),
                show(&from)
            ));
        }
    }
    let done = state.epoch + usize::from(state.batch > 0);
    if new.train.epochs < done {
        refused.push(format!(
            "`train.epochs` = {} (the run has {} {done} epoch(s))",
            new.train.epochs,
            if state.batch > 0 {
                "started"
            } else {
                "completed"
            }
        ));
    }
    anyhow::ensure!(
        refused.is_empty(),
        "cannot resume {} with {}: changing these breaks exact resumption. Resume without \
         the change, or start a new run from the same settings: ffebm train --config {} \
         --set KEY=VALUE --out NEW_DIR",
        dir.display(),
        refused.join(", "),
        dir.join("config.toml").display()
    );
    Ok(changes)
}

/// The changes as a JSON object `{key: {"from": …, "to": …}}` for the metrics.
pub fn changes_json(changes: &Changes) -> serde_json::Value {
    let value = |v: &Option<toml::Value>| {
        v.as_ref()
            .and_then(|v| serde_json::to_value(v).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    changes
        .iter()
        .map(|(k, (f, t))| {
            (
                k.clone(),
                serde_json::json!({"from": value(f), "to": value(t)}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(sets: &[&str]) -> RunConfig {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        RunConfig::resolve(Some("mnist_mlp"), None, None, &sets, None).unwrap()
    }

    #[test]
    fn safe_changes_pass_breaking_ones_are_named() {
        let old = cfg(&["train.epochs=2"]);
        let state = LoopState {
            epoch: 2,
            ..Default::default()
        };
        let dir = Path::new("runs/x");
        let mut new = cfg(&["train.epochs=4", "train.log_every=5", "data.dir=/d"]);
        let ch = resume_changes(&old, &mut new, &state, dir).unwrap();
        let keys: Vec<&str> = ch.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "data.dir",
                "schedule.t_max",
                "train.epochs",
                "train.log_every"
            ]
        );
        // the period stays the 2 epochs the run was scheduled over
        assert_eq!((new.schedule.t_max, new.t_max()), (Some(2), 2));
        assert_eq!(new.lr(1), old.lr(1));
        assert_eq!(
            changes_json(&ch)["train.epochs"],
            serde_json::json!({"from": 2, "to": 4})
        );
        for (set, key) in [
            ("data.batch_size=16", "data.batch_size"),
            ("seed=3", "seed"),
            ("optim.lr=0.5", "optim.lr"),
            ("model.blocks.0.alpha=0.1", "model.blocks.0.alpha"),
            ("schedule.t_max=7", "schedule.t_max"),
            ("train.epochs=1", "train.epochs"),
            ("optim.name=\"sgd\"", "optim.name"),
            ("algorithm.warm_start=true", "algorithm.warm_start"),
            ("algorithm.free_order=\"forward\"", "algorithm.free_order"),
            ("data.normalize=false", "data.normalize"),
            ("data.eval_batch_size=7", "data.eval_batch_size"),
        ] {
            let mut new = cfg(&["train.epochs=2", set]);
            let e = resume_changes(&old, &mut new, &state, dir)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("`{key}`")), "{set}: {e}");
        }
        // mid-epoch: the epoch in progress must stay
        let mid = LoopState {
            epoch: 1,
            batch: 3,
            ..Default::default()
        };
        let mut new = cfg(&["train.epochs=1"]);
        assert!(resume_changes(&old, &mut new, &mid, dir).is_err());
        let mut same = old.clone();
        assert!(resume_changes(&old, &mut same, &mid, dir)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn drn_block_settings_are_refused_and_exponential_decay_needs_no_period() {
        let sets = |extra: &[&str]| -> Vec<String> {
            ["train.epochs=2", "data.train_limit=64"]
                .iter()
                .chain(extra)
                .map(|s| s.to_string())
                .collect()
        };
        let old = RunConfig::resolve(Some("drn_xs"), None, None, &sets(&[]), None).unwrap();
        let state = LoopState {
            epoch: 2,
            ..Default::default()
        };
        let dir = Path::new("runs/x");
        for (set, key) in [
            ("model.blocks.0.gain=2.0", "model.blocks.0.gain"),
            ("schedule.gamma=0.5", "schedule.gamma"),
            ("optim.momentum=0.9", "optim.momentum"),
        ] {
            let mut new = RunConfig::resolve(Some("drn_xs"), None, None, &sets(&[set]), None)
                .unwrap_or_else(|e| panic!("{set}: {e:#}"));
            let e = resume_changes(&old, &mut new, &state, dir)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("`{key}`")), "{set}: {e}");
        }
        // more epochs of an exponential decay: only the epoch count changes
        let mut new =
            RunConfig::resolve(Some("drn_xs"), None, None, &sets(&["train.epochs=5"]), None)
                .unwrap();
        let ch = resume_changes(&old, &mut new, &state, dir).unwrap();
        assert_eq!(ch.keys().collect::<Vec<_>>(), ["train.epochs"]);
        assert_eq!(new.lr(1), old.lr(1));
    }
}
