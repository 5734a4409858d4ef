//! Downloading the official dataset files into a cache folder.
//!
//! Every file is streamed into a temporary file next to its destination while its digest
//! is computed; only a file whose checksum matches is renamed into place (an atomic step on
//! one file system). A failed, interrupted or mismatching download therefore leaves
//! nothing behind. Archives (`.tar.gz`, for CIFAR) are verified, unpacked into a temporary
//! staging folder, and their files renamed into the dataset folder one by one.
//!
//! The base URL of a [`Source`] can be replaced ([`Source::with_base_url`]) to use a mirror
//! or, in tests, a local HTTP server.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::Md5;
use sha2::{Digest, Sha256};

use super::error::{DataError, Result};
use super::kind::{DatasetKind, Split};

/// An expected digest, lowercase hex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checksum {
    /// MD5 (what the official dataset pages publish).
    Md5(String),
    /// SHA-256.
    Sha256(String),
}

impl Checksum {
    fn algorithm(&self) -> &'static str {
        match self {
            Checksum::Md5(_) => "md5",
            Checksum::Sha256(_) => "sha256",
        }
    }

    fn expected(&self) -> String {
        match self {
            Checksum::Md5(h) | Checksum::Sha256(h) => h.to_ascii_lowercase(),
        }
    }
}

/// One file of a [`Source`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    /// File name, appended to the base URL and used as the local name.
    pub name: String,
    /// Expected checksum of the downloaded bytes.
    pub checksum: Checksum,
    /// The file is a `.tar.gz` whose regular files are unpacked (flattened, by file name)
    /// into the dataset folder instead of keeping the archive.
    pub unpack: bool,
}

/// Where a dataset is downloaded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// URL prefix; each file's URL is `base_url + "/" + name`.
    pub base_url: String,
    /// The files.
    pub files: Vec<RemoteFile>,
}

fn md5_file(name: &str, md5: &str, unpack: bool) -> RemoteFile {
    RemoteFile {
        name: name.into(),
        checksum: Checksum::Md5(md5.into()),
        unpack,
    }
}

fn idx_files(md5s: [&str; 4]) -> Vec<RemoteFile> {
    let names = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ];
    names
        .iter()
        .zip(md5s)
        .map(|(n, m)| md5_file(n, m, false))
        .collect()
}

impl Source {
    /// The official source of a dataset (`None` for ImageNet32, which needs a login).
    pub fn official(kind: DatasetKind) -> Option<Source> {
        let (base, files) = match kind {
            DatasetKind::Cifar10 => (
                "https://www.cs.toronto.edu/~kriz",
                vec![md5_file(
                    "cifar-10-binary.tar.gz",
                    "c32a1d4ab5d03f1284b67883e8d87530",
                    true,
                )],
            ),
            DatasetKind::Cifar100 => (
                "https://www.cs.toronto.edu/~kriz",
                vec![md5_file(
                    "cifar-100-binary.tar.gz",
                    "03b5dce01913d631647c71ecec9e9cb8",
                    true,
                )],
            ),
            DatasetKind::Mnist => (
                "https://ossci-datasets.s3.amazonaws.com/mnist",
                idx_files([
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                    "9fb629c4189551a2d022fa330f9573f3",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                ]),
            ),
            DatasetKind::FashionMnist => (
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
                idx_files([
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    "25c81989df183df01b3e8a0aad5dffbe",
                    "bef4ecab320f06d8554ea6380940ec79",
                    "bb300cfdad3c16e7a12a480ee83cd310",
                ]),
            ),
            DatasetKind::Kmnist => (
                "http://codh.rois.ac.jp/kmnist/dataset/kmnist",
                idx_files([
                    "bdb82020997e1d708af4cf47b453dcf7",
                    "e144d726b3acfaa3e44228e80efcd344",
                    "5c965bf0a639b31b8f53240b1b52f4d7",
                    "7320c461ea6c1c855c0b718fb2a4b134",
                ]),
            ),
            DatasetKind::ImageNet32 => return None,
        };
        Some(Source {
            base_url: base.into(),
            files,
        })
    }

    /// The same files from another URL prefix (a mirror, or a local test server).
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Source {
        self.base_url = base_url.into();
        self
    }

    /// The URL of `file`.
    pub fn url(&self, file: &RemoteFile) -> String {
        format!("{}/{}", self.base_url.trim_end_matches('/'), file.name)
    }
}

/// Progress of one file, passed to the progress callback after every chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The file being downloaded.
    pub file: String,
    /// Bytes received so far.
    pub downloaded: u64,
    /// Total size from `Content-Length`, if the server sent it.
    pub total: Option<u64>,
}

/// A path deleted on drop unless [`TempPath::keep`] was called.
struct TempPath(Option<PathBuf>);

impl TempPath {
    fn new(dir: &Path, stem: &str) -> TempPath {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nonce = COUNTER.fetch_add(1, Ordering::Relaxed);
        TempPath(Some(
            dir.join(format!(".{stem}.part-{}-{nonce}", std::process::id())),
        ))
    }

    fn path(&self) -> &Path {
        self.0.as_deref().expect("temp path present")
    }

    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            if p.is_dir() {
                let _ = fs::remove_dir_all(&p);
            } else {
                let _ = fs::remove_file(&p);
            }
        }
    }
}

enum Hasher {
    Md5(Md5),
    Sha256(Sha256),
}

impl Hasher {
    fn new(c: &Checksum) -> Hasher {
        match c {
            Checksum::Md5(_) => Hasher::Md5(Md5::new()),
            Checksum::Sha256(_) => Hasher::Sha256(Sha256::new()),
        }
    }

    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(b),
            Hasher::Sha256(h) => h.update(b),
        }
    }

    fn hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The hex digest of a file on disk.
pub fn file_digest(path: &Path, checksum: &Checksum) -> Result<String> {
    let mut f = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut h = Hasher::new(checksum);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            return Ok(h.hex());
        }
        h.update(&buf[..n]);
    }
}

/// Download `url` to `dest`, verifying `checksum`. The bytes go to a temporary file in
/// `dest`'s folder that is renamed to `dest` only after the checksum matched; on any
/// failure nothing is left. `progress` is called after every chunk.
pub fn download_file(
    url: &str,
    dest: &Path,
    checksum: &Checksum,
    progress: &mut dyn FnMut(&Progress),
) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = TempPath::new(dir, &name);
    fetch(url, tmp.path(), &name, checksum, progress)?;
    fs::rename(tmp.path(), dest).map_err(|e| DataError::io(dest, e))?;
    tmp.keep();
    Ok(())
}

fn fetch(
    url: &str,
    to: &Path,
    name: &str,
    checksum: &Checksum,
    progress: &mut dyn FnMut(&Progress),
) -> Result<()> {
    let fail = |reason: String| DataError::Download {
        url: url.to_string(),
        reason,
    };
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(60))
        .build();
    let resp = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            return Err(fail(format!("HTTP {code} {}", r.status_text())))
        }
        Err(e) => return Err(fail(e.to_string())),
    };
    let total = resp
        .header("Content-Length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut reader = resp.into_reader();
    let mut out = File::create(to).map_err(|e| DataError::io(to, e))?;
    let mut hasher = Hasher::new(checksum);
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| fail(format!("connection error after {done} bytes: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| DataError::io(to, e))?;
        done += n as u64;
        progress(&Progress {
            file: name.to_string(),
            downloaded: done,
            total,
        });
    }
    if let Some(t) = total {
        if t != done {
            return Err(fail(format!("received {done} of {t} bytes")));
        }
    }
    out.sync_all().map_err(|e| DataError::io(to, e))?;
    let found = hasher.hex();
    if found != checksum.expected() {
        return Err(DataError::Checksum {
            url: url.to_string(),
            algorithm: checksum.algorithm(),
            expected: checksum.expected(),
            found,
        });
    }
    Ok(())
}

/// True if `dir` holds every default train and test file of `kind` (for the MNIST
/// family, compressed or not).
pub fn is_complete(kind: DatasetKind, dir: &Path) -> bool {
    [Split::Train, Split::Test].iter().all(|&s| {
        kind.default_files(s).iter().all(|f| {
            let p = dir.join(f);
            p.is_file() || (kind.is_mnist_family() && dir.join(format!("{f}.gz")).is_file())
        })
    })
}

/// Download `kind` from `source` into `cache_dir/<kind.name()>` (unless it is already
/// complete there) and return that folder, ready for
/// [`Dataset::load`](super::Dataset::load). Files that already exist with the right
/// checksum are kept; each new file appears only once verified.
pub fn download(
    kind: DatasetKind,
    source: &Source,
    cache_dir: &Path,
    mut progress: Option<&mut dyn FnMut(&Progress)>,
) -> Result<PathBuf> {
    let dir = cache_dir.join(kind.name());
    if is_complete(kind, &dir) {
        return Ok(dir);
    }
    fs::create_dir_all(cache_dir).map_err(|e| DataError::io(cache_dir, e))?;
    let mut noop = |_: &Progress| {};
    for file in &source.files {
        let url = source.url(file);
        let cb: &mut dyn FnMut(&Progress) = match progress.as_mut() {
            Some(p) => &mut **p,
            None => &mut noop,
        };
        if !file.unpack {
            let dest = dir.join(&file.name);
            if dest.is_file() && file_digest(&dest, &file.checksum)? == file.checksum.expected() {
                continue;
            }
            // Download next to the cache root so that a failure leaves no dataset folder.
            let tmp = TempPath::new(cache_dir, &file.name);
            fetch(&url, tmp.path(), &file.name, &file.checksum, cb)?;
            fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
            fs::rename(tmp.path(), &dest).map_err(|e| DataError::io(&dest, e))?;
            tmp.keep();
        } else {
            let archive = TempPath::new(cache_dir, &file.name);
            fetch(&url, archive.path(), &file.name, &file.checksum, cb)?;
            let staging = TempPath::new(cache_dir, &format!("{}.unpack", kind.name()));
            let staged = unpack_tar_gz(archive.path(), staging.path())?;
            fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
            for name in staged {
                let to = dir.join(&name);
                fs::rename(staging.path().join(&name), &to).map_err(|e| DataError::io(&to, e))?;
            }
        }
    }
    Ok(dir)
}

/// Unpack the regular files of a `.tar.gz` into `into` (created), flattened to their file
/// names. Returns the names.
fn unpack_tar_gz(archive: &Path, into: &Path) -> Result<Vec<String>> {
    fs::create_dir_all(into).map_err(|e| DataError::io(into, e))?;
    let bad = |e: std::io::Error| DataError::Invalid {
        path: archive.to_path_buf(),
        format: "tar.gz".into(),
        expected: "a readable gzip-compressed tar archive".into(),
        found: format!("an error while unpacking ({e})"),
        advice: "download it again".into(),
    };
    let f = File::open(archive).map_err(|e| DataError::io(archive, e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut names = Vec::new();
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(bad)?.into_owned();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if name.starts_with('.') || names.contains(&name) {
            continue;
        }
        let to = into.join(&name);
        let mut out = File::create(&to).map_err(|e| DataError::io(&to, e))?;
        std::io::copy(&mut entry, &mut out).map_err(bad)?;
        names.push(name);
    }
    Ok(names)
}
