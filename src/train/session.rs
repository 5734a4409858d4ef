//! Starting a training session: claiming the run directory, checking what a resume may
//! change, and leaving `config.toml`, the checkpoints' embedded configuration and the
//! metrics in agreement.

use super::checkpoint::{checkpoint_meta, rewrite_checkpoint_config, LoopState};
use super::config::RunConfig;
use super::metrics::MetricsWriter;
use super::resume::{changes_json, resume_changes, Changes};
use super::rundir::{check_new, claim_existing, claim_new, claim_numbered, RunDirLock};
use super::trainer::{TrainOptions, BEST, LAST};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Writes a line to stderr; a closed stderr (e.g. a pipe whose reader has gone) is ignored,
/// so that training carries on.
pub fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// The run directory before the data is loaded: for a resume it is claimed now and the
/// requested configuration checked against the checkpoint's; a new run is only checked (it
/// claims its directory once it can start, so that a run that cannot start leaves none).
pub struct Prepared {
    lock: Option<RunDirLock>,
    changes: Changes,
}

pub fn prepare(cfg: &mut RunConfig, opts: &TrainOptions) -> Result<Prepared> {
    let dir = &opts.run_dir;
    if !opts.resume {
        if !opts.numbered {
            check_new(dir)?;
        }
        return Ok(Prepared {
            lock: None,
            changes: Changes::new(),
        });
    }
    let lock = claim_existing(dir)?;
    let last = dir.join(LAST);
    anyhow::ensure!(
        last.exists(),
        "{} has no checkpoint to resume from",
        dir.display()
    );
    let (text, state) = checkpoint_meta(&last)?;
    let old = RunConfig::from_toml(&text)
        .with_context(|| format!("the configuration stored in {}", last.display()))?;
    let changes = resume_changes(&old, cfg, &state, dir)?;
    Ok(Prepared {
        lock: Some(lock),
        changes,
    })
}

/// The claimed run directory of a session that is starting.
pub struct Started {
    pub lock: RunDirLock,
    pub changes: Changes,
}

/// Claims the directory of a new run (or takes the resumed one's) and writes `config.toml`.
pub fn start(p: Prepared, cfg_toml: &str, opts: &TrainOptions) -> Result<Started> {
    let mut lock = match p.lock {
        Some(l) => l,
        None if opts.numbered => {
            let parent = opts
                .run_dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let name = opts
                .run_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "run".into());
            claim_numbered(parent, &name)?
        }
        None => claim_new(&opts.run_dir)?,
    };
    if !opts.resume || !p.changes.is_empty() {
        crate::io::atomic_write(&lock.dir().join("config.toml"), cfg_toml.as_bytes())?;
    }
    lock.keep();
    Ok(Started {
        lock,
        changes: p.changes,
    })
}

/// Records the settings a resumed run changed: in the metrics (a `config_change` record at
/// the resumed step) and in the checkpoints' embedded configuration.
pub fn record_changes(
    s: &Started,
    metrics: &MetricsWriter,
    state: &LoopState,
    cfg_toml: &str,
    quiet: bool,
) -> Result<()> {
    if s.changes.is_empty() {
        return Ok(());
    }
    metrics.event(&serde_json::json!({
        "kind": "config_change",
        "epoch": state.epoch,
        "step": state.step,
        "changes": changes_json(&s.changes),
    }))?;
    for ck in [LAST, BEST] {
        let path = s.lock.dir().join(ck);
        if path.exists() {
            rewrite_checkpoint_config(&path, cfg_toml)?;
        }
    }
    if !quiet {
        let list: Vec<String> = s
            .changes
            .iter()
            .map(|(k, (f, t))| {
                let v = |v: &Option<toml::Value>| v.as_ref().map_or("-".into(), |v| v.to_string());
                format!("{k} {} -> {}", v(f), v(t))
            })
            .collect();
        note(&format!(
            "resuming with changed settings: {}",
            list.join(", ")
        ));
    }
    Ok(())
}
