//! Suggestions for mistyped configuration keys: the valid key of the same section whose
//! name is closest (ignoring case, `_` and `-`, and knowing common synonyms such as
//! `learning_rate` for `lr`).

use super::config::RunConfig;
use crate::model::presets::{preset, NAMES};

/// Keys that a resolved configuration may leave out (so no preset's configuration need
/// hold them).
const OPTIONAL: [&str; 21] = [
    "data.dir",
    "data.eval_batch_size",
    "data.train_limit",
    "data.test_limit",
    "data.test_files",
    "algorithm.tol",
    "algorithm.nudged_tol",
    "algorithm.solver",
    "algorithm.anderson_m",
    "algorithm.anderson_lambda",
    "algorithm.anderson_tau",
    "schedule.t_max",
    "schedule.gamma",
    "model.cost",
    "model.blocks.N.alpha",
    "model.blocks.N.kind",
    "model.blocks.N.gain",
    "model.blocks.N.duplicate",
    "model.blocks.N.norm",
    "model.blocks.N.fc",
    "preset",
];

/// Other names users give to a key (normalised: lowercase, no `_`/`-`), and the key's leaf.
const SYNONYMS: [(&str, &str); 16] = [
    ("learningrate", "lr"),
    ("rate", "lr"),
    ("lr0", "lr"),
    ("epoch", "epochs"),
    ("nepochs", "epochs"),
    ("numepochs", "epochs"),
    ("batch", "batch_size"),
    ("bs", "batch_size"),
    ("wd", "weight_decay"),
    ("decay", "weight_decay"),
    ("optimizer", "name"),
    ("algo", "name"),
    ("algorithm", "name"),
    ("tmax", "t_max"),
    ("minlr", "lr_min"),
    ("etamin", "lr_min"),
];

fn normalise(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// `prefix.key` (just `key` at the top level).
pub(super) fn dotted(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// All dotted keys of a TOML tree (array elements as `N`).
fn keys(v: &toml::Value, prefix: &str, out: &mut Vec<String>) {
    let join = |k: &str| dotted(prefix, k);
    match v {
        toml::Value::Table(t) => {
            for (k, child) in t {
                out.push(join(k));
                keys(child, &join(k), out);
            }
        }
        toml::Value::Array(a) => {
            if let Some(first @ toml::Value::Table(_)) = a.first() {
                keys(first, &join("N"), out);
            }
        }
        _ => {}
    }
}

/// Every valid key, array indices written `N`: the keys of every preset's configuration
/// and the optional ones.
fn all_keys() -> Vec<String> {
    let mut all = Vec::new();
    for name in NAMES {
        if let Ok(v) = preset(name, None)
            .and_then(|p| RunConfig::from_preset(&p, 0))
            .and_then(|c| Ok(toml::Value::try_from(c)?))
        {
            keys(&v, "", &mut all);
        }
    }
    all.extend(OPTIONAL.map(String::from));
    all.push("analog".into());
    all.push("analog.blocks".into());
    for f in ["preset", "seed", "blocks"]
        .iter()
        .chain(crate::analog::config::SETTING_KEYS)
    {
        all.push(format!("analog.{f}"));
    }
    for f in crate::analog::config::SETTING_KEYS {
        all.push(format!("analog.blocks.N.{f}"));
    }
    all.push("digital".into());
    for f in crate::digital::KEYS {
        all.push(format!("digital.{f}"));
    }
    all.sort();
    all.dedup();
    all
}

/// The nearest valid key to the unknown `key` and the valid keys of its section (for the
/// message), or `None` when nothing is close.
pub fn nearest_key(key: &str) -> Option<(String, String)> {
    // `model.blocks.3.alfa` is looked up as `model.blocks.N.alfa`
    let generic: Vec<String> = key
        .split('.')
        .map(|p| {
            if p.parse::<usize>().is_ok() {
                "N".to_string()
            } else {
                p.to_string()
            }
        })
        .collect();
    let (section, leaf) = match generic.split_last() {
        Some((leaf, rest)) => (rest.join("."), leaf.clone()),
        None => return None,
    };
    let all = all_keys();
    let siblings: Vec<&String> = all
        .iter()
        .filter(|k| match k.rsplit_once('.') {
            Some((s, _)) => s == section,
            None => section.is_empty(),
        })
        .collect();
    let pool: Vec<&String> = if siblings.is_empty() {
        all.iter().collect()
    } else {
        siblings.clone()
    };
    let leaf_of = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
    let want = normalise(&leaf);
    let want = SYNONYMS
        .iter()
        .find(|(alias, _)| *alias == want)
        .map(|(_, real)| normalise(real))
        .unwrap_or(want);
    let best = pool
        .iter()
        .min_by_key(|k| strsim::levenshtein(&normalise(&leaf_of(k)), &want))?;
    let dist = strsim::levenshtein(&normalise(&leaf_of(best)), &want);
    if dist > (want.len() / 2).max(2) {
        return None;
    }
    // back to the user's indices
    let mut near: Vec<String> = best.split('.').map(String::from).collect();
    for (i, p) in key.split('.').enumerate() {
        if near.get(i).is_some_and(|n| n == "N") && p.parse::<usize>().is_ok() {
            near[i] = p.to_string();
        }
    }
    let listed: Vec<String> = siblings.iter().map(|k| leaf_of(k)).collect();
    Some((near.join("."), listed.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_use_the_section_synonyms_and_indices() {
        for (typo, want) in [
            ("optim.learning_rate", "optim.lr"),
            ("optim.lrr", "optim.lr"),
            ("data.batchsize", "data.batch_size"),
            ("data.BatchSize", "data.batch_size"),
            ("train.epoch", "train.epochs"),
            ("train.num_epochs", "train.epochs"),
            ("algorithm.T1", "algorithm.t1"),
            ("algorithm.betta", "algorithm.beta"),
            ("schedule.tmax", "schedule.t_max"),
            ("model.blocks.3.alfa", "model.blocks.3.alpha"),
            ("sed", "seed"),
            ("schedule.gama", "schedule.gamma"),
            ("model.blocks.0.gian", "model.blocks.0.gain"),
            ("algorithm.warmstart", "algorithm.warm_start"),
            ("data.pad_to32", "data.pad_to_32"),
            ("algorithm.free_ordr", "algorithm.free_order"),
            ("digital.weight_bit", "digital.weight_bits"),
            ("digital.activation_bts", "digital.activation_bits"),
        ] {
            assert_eq!(
                nearest_key(typo).map(|n| n.0).as_deref(),
                Some(want),
                "{typo}"
            );
        }
        let (_, listed) = nearest_key("optim.learning_rate").unwrap();
        assert!(
            listed.contains("lr") && listed.contains("weight_decay"),
            "{listed}"
        );
        assert_eq!(nearest_key("optim.completely_unrelated_thing"), None);
    }
}
