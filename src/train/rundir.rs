//! Claiming a run directory, so that two trainings never share one.
//!
//! A run holds an exclusive lock on `DIR/.ffebm-lock` (an OS file lock, `flock`) for its
//! whole lifetime; the lock file names the holder (process id and command line). The OS
//! releases the lock when the process ends, however it ends (`kill -9` included), so a
//! stale lock file never blocks a `--resume`. Numbered directories (`runs/NAME-NNN`) are
//! created with an exclusive `mkdir`, so runs started at the same moment get different
//! numbers.

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file inside a run directory.
pub const LOCK_FILE: &str = ".ffebm-lock";

/// Files whose presence means a directory already holds a run.
const RUN_FILES: [&str; 3] = [
    "config.toml",
    "metrics.jsonl",
    "checkpoint_last.safetensors",
];

/// A run directory locked by this process. Dropping it releases the lock; a directory this
/// claim created is removed again unless [`RunDirLock::keep`] was called.
#[derive(Debug)]
pub struct RunDirLock {
    dir: PathBuf,
    _file: File,
    created: bool,
    keep: bool,
}

impl RunDirLock {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The run has started in the directory: keep it when the lock is released.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for RunDirLock {
    fn drop(&mut self) {
        if self.created && !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Whether `dir` already holds a run.
pub fn holds_run(dir: &Path) -> bool {
    RUN_FILES.iter().any(|f| dir.join(f).exists())
}

/// Who holds the lock of `dir`, from its lock file (written just after locking: retried
/// briefly when read in that instant).
fn holder(path: &Path) -> String {
    for _ in 0..20 {
        let mut text = String::new();
        if File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .is_ok()
            && !text.trim().is_empty()
        {
            return text.trim().to_string();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    "an unknown process".into()
}

/// An exclusive `flock` on `file` without waiting: `Ok(false)` if another open file
/// description holds it. The lock lives as long as the file stays open.
fn try_flock(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock on a file descriptor that `file` keeps open.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Takes the lock of the existing directory `dir`; `Ok(None)` if another process holds it.
fn try_lock(dir: &Path, created: bool) -> Result<Option<RunDirLock>> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if !try_flock(&file).with_context(|| format!("cannot lock {}", path.display()))? {
        return Ok(None);
    }
    let command: Vec<String> = std::env::args().collect();
    let who = format!("pid {} (`{}`)\n", std::process::id(), command.join(" "));
    file.set_len(0)
        .and_then(|_| file.rewind())
        .and_then(|_| file.write_all(who.as_bytes()))
        .and_then(|_| file.flush())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Some(RunDirLock {
        dir: dir.to_path_buf(),
        _file: file,
        created,
        keep: false,
    }))
}

fn in_use(dir: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} is in use by another ffebm process, {}; wait for it to finish (or stop it), or choose another --out",
        dir.display(),
        holder(&dir.join(LOCK_FILE))
    )
}

fn holds_run_error(dir: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} already holds a run; continue it with --resume {}, or choose another --out",
        dir.display(),
        dir.display()
    )
}

/// Fails early, without claiming anything, if a new run cannot go into `dir`.
pub fn check_new(dir: &Path) -> Result<()> {
    if dir.join(LOCK_FILE).exists() {
        // probe the lock: held means a run is going on
        if let Some(mut probe) = try_lock(dir, false)? {
            probe.keep();
        } else {
            return Err(in_use(dir));
        }
    }
    if holds_run(dir) {
        return Err(holds_run_error(dir));
    }
    Ok(())
}

/// Claims `dir` (created if needed) for a new run: fails if another process holds it or it
/// already holds a run.
pub fn claim_new(dir: &Path) -> Result<RunDirLock> {
    let created = match std::fs::create_dir(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create run directory {}", dir.display()))?;
            true
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot create run directory {}", dir.display()))
        }
    };
    anyhow::ensure!(
        dir.is_dir(),
        "{} exists and is not a directory",
        dir.display()
    );
    let Some(lock) = try_lock(dir, created)? else {
        return Err(in_use(dir));
    };
    if holds_run(dir) {
        return Err(holds_run_error(dir));
    }
    Ok(lock)
}

/// Claims the first free `parent/name-NNN` (NNN = 001, 002, …), created exclusively.
pub fn claim_numbered(parent: &Path, name: &str) -> Result<RunDirLock> {
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    for i in 1..=99_999 {
        let dir = parent.join(format!("{name}-{i:03}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                // taken between the mkdir and the lock by an explicit --out: next number
                if let Some(lock) = try_lock(&dir, true)? {
                    return Ok(lock);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }
    bail!("no free run directory {name}-NNN in {}", parent.display())
}

/// Claims the existing run directory `dir` to resume it.
pub fn claim_existing(dir: &Path) -> Result<RunDirLock> {
    anyhow::ensure!(dir.is_dir(), "{} is not a run directory", dir.display());
    let Some(mut lock) = try_lock(dir, false)? else {
        return Err(in_use(dir));
    };
    lock.keep();
    Ok(lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ffebm-rundir-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn claims_exclude_each_other_and_numbering_skips_taken_directories() {
        let root = tmp("claims");
        let a = claim_numbered(&root, "p").unwrap();
        let b = claim_numbered(&root, "p").unwrap();
        assert_eq!(a.dir(), root.join("p-001"));
        assert_eq!(b.dir(), root.join("p-002"));
        // an explicit claim of a held directory names the holder
        let e = claim_new(a.dir()).unwrap_err().to_string();
        assert!(
            e.contains("in use") && e.contains(&std::process::id().to_string()),
            "{e}"
        );
        assert!(claim_existing(b.dir())
            .unwrap_err()
            .to_string()
            .contains("in use"));
        assert!(check_new(a.dir()).is_err());
        // released and never started: the directory this claim created goes away
        drop(a);
        assert!(!root.join("p-001").exists());
        let mut c = claim_numbered(&root, "p").unwrap();
        assert_eq!(c.dir(), root.join("p-001"));
        std::fs::write(c.dir().join("config.toml"), "").unwrap();
        c.keep();
        drop(c);
        assert!(root.join("p-001").is_dir());
        // a finished run: free, but it holds a run
        let e = claim_new(&root.join("p-001")).unwrap_err().to_string();
        assert!(e.contains("already holds a run"), "{e}");
        assert!(check_new(&root.join("p-001")).is_err());
        let r = claim_existing(&root.join("p-001")).unwrap();
        drop(r);
        assert!(root.join("p-001").is_dir());
        // threads racing for numbers get distinct directories
        drop(b);
        let dirs: Vec<PathBuf> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..6)
                .map(|_| s.spawn(|| claim_numbered(&root, "q").unwrap()))
                .collect();
            hs.into_iter()
                .map(|h| {
                    let mut l = h.join().unwrap();
                    l.keep();
                    l.dir().to_path_buf()
                })
                .collect()
        });
        let mut u = dirs.clone();
        u.sort();
        u.dedup();
        assert_eq!(u.len(), 6, "{dirs:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
