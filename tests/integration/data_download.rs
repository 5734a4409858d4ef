//! Downloads against a local HTTP server (std `TcpListener` in a thread) serving fake
//! files whose checksums the tests compute: success, re-use, checksum mismatch, HTTP errors
//! and truncated bodies. No internet access is needed.

use crate::data_util;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use data_util::{cifar_records, gzip, idx_bytes, TempDir};
use ffebm::data::{
    download, download_file, Checksum, DataError, Dataset, DatasetKind, Progress, RemoteFile,
    Source, Split,
};
use md5::{Digest, Md5};

/// A response: status, body, and an optional (wrong) Content-Length to announce.
#[derive(Clone)]
struct Route {
    status: u16,
    body: Vec<u8>,
    claimed_len: Option<usize>,
}

fn ok(body: Vec<u8>) -> Route {
    Route {
        status: 200,
        body,
        claimed_len: None,
    }
}

/// Serve `routes` on 127.0.0.1; returns the base URL and a request counter.
fn serve(routes: HashMap<String, Route>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&req)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let route = routes.get(&path).cloned().unwrap_or(Route {
                status: 404,
                body: b"not found".to_vec(),
                claimed_len: None,
            });
            let reason = match route.status {
                200 => "OK",
                404 => "Not Found",
                _ => "Internal Server Error",
            };
            let head = format!(
                "HTTP/1.1 {} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                route.status,
                route.claimed_len.unwrap_or(route.body.len())
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&route.body);
            let _ = s.flush();
        }
    });
    (base, hits)
}

fn md5_hex(b: &[u8]) -> String {
    Md5::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Fake gzipped MNIST files: 3 train and 2 test images.
fn fake_mnist() -> Vec<(&'static str, Vec<u8>)> {
    let img = |n: u32| idx_bytes(&[n, 28, 28], &vec![7u8; n as usize * 784]);
    vec![
        ("train-images-idx3-ubyte.gz", gzip(&img(3))),
        (
            "train-labels-idx1-ubyte.gz",
            gzip(&idx_bytes(&[3], &[4, 5, 6])),
        ),
        ("t10k-images-idx3-ubyte.gz", gzip(&img(2))),
        ("t10k-labels-idx1-ubyte.gz", gzip(&idx_bytes(&[2], &[1, 9]))),
    ]
}

fn source_for(base: &str, files: &[(&str, Vec<u8>)], unpack: bool) -> Source {
    Source {
        base_url: format!("{base}/mirror/"),
        files: files
            .iter()
            .map(|(n, b)| RemoteFile {
                name: n.to_string(),
                checksum: Checksum::Md5(md5_hex(b)),
                unpack,
            })
            .collect(),
    }
}

#[test]
fn mnist_download_verify_load_and_reuse() {
    let files = fake_mnist();
    let routes = files
        .iter()
        .map(|(n, b)| (format!("/mirror/{n}"), ok(b.clone())))
        .collect();
    let (base, hits) = serve(routes);
    let cache = TempDir::new("dl-mnist");
    let mut calls: Vec<Progress> = Vec::new();
    let mut cb = |p: &Progress| calls.push(p.clone());
    let src = source_for(&base, &files, false);
    let dir = download(DatasetKind::Mnist, &src, cache.path(), Some(&mut cb)).unwrap();
    assert_eq!(dir, cache.join("mnist"));
    assert_eq!(entries(cache.path()), ["mnist"]); // no temporary files left
    assert_eq!(entries(&dir).len(), 4);
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    // Progress ends at the full size of each file.
    for (name, body) in &files {
        let last = calls.iter().rfind(|p| p.file == *name).unwrap();
        assert_eq!(last.downloaded, body.len() as u64);
        assert_eq!(last.total, Some(body.len() as u64));
    }
    let train = Dataset::load(DatasetKind::Mnist, Split::Train, &dir, None).unwrap();
    assert_eq!(train.labels, [4, 5, 6]);
    let test = Dataset::load(DatasetKind::Mnist, Split::Test, &dir, None).unwrap();
    assert_eq!(test.labels, [1, 9]);
    // A complete folder is not fetched again.
    download(DatasetKind::Mnist, &src, cache.path(), None).unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    // A missing file is fetched alone; verified files are kept.
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    download(DatasetKind::Mnist, &src, cache.path(), None).unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 5);
}

fn fake_cifar_archive() -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let mut members = Vec::new();
    for i in 1..=5 {
        members.push((
            format!("data_batch_{i}.bin"),
            cifar_records(2, |r| (r + i) as u8),
        ));
    }
    members.push(("test_batch.bin".to_string(), cifar_records(3, |r| r as u8)));
    members.push(("batches.meta.txt".to_string(), b"airplane\n".to_vec()));
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in &members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("cifar-10-batches-bin/{name}"), &data[..])
            .unwrap();
    }
    let raw = tar.into_inner().unwrap();
    (gzip(&raw), members)
}

#[test]
fn cifar_archive_is_verified_and_unpacked() {
    let (archive, members) = fake_cifar_archive();
    let mut routes = HashMap::new();
    routes.insert(
        "/mirror/cifar-10-binary.tar.gz".to_string(),
        ok(archive.clone()),
    );
    let (base, _) = serve(routes);
    let cache = TempDir::new("dl-cifar");
    let files = [("cifar-10-binary.tar.gz", archive)];
    let dir = download(
        DatasetKind::Cifar10,
        &source_for(&base, &files, true),
        cache.path(),
        None,
    )
    .unwrap();
    assert_eq!(entries(cache.path()), ["cifar10"]); // archive and staging folder removed
    for (name, data) in &members {
        assert_eq!(&std::fs::read(dir.join(name)).unwrap(), data, "{name}");
    }
    let test = Dataset::load(
        DatasetKind::Cifar10,
        Split::Test,
        &dir,
        Some(&[std::path::PathBuf::from("test_batch.bin")][..]),
    );
    // test_batch.bin is an official name, so 3 records are rejected as incomplete.
    assert!(test
        .unwrap_err()
        .to_string()
        .contains("expected 30730000 bytes"));
}

#[test]
fn checksum_mismatch_leaves_nothing() {
    let files = fake_mnist();
    let routes = files
        .iter()
        .map(|(n, b)| (format!("/mirror/{n}"), ok(b.clone())))
        .collect();
    let (base, _) = serve(routes);
    let cache = TempDir::new("dl-bad");
    let mut src = source_for(&base, &files, false);
    src.files[0].checksum = Checksum::Md5("0123456789abcdef0123456789abcdef".into());
    let err = download(DatasetKind::Mnist, &src, cache.path(), None).unwrap_err();
    assert!(matches!(err, DataError::Checksum { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("expected md5 0123456789abcdef0123456789abcdef"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("got {}", md5_hex(&files[0].1))),
        "{msg}"
    );
    assert!(
        entries(cache.path()).is_empty(),
        "{:?}",
        entries(cache.path())
    );

    // The same for an archive, and for download_file with sha256.
    let (archive, _) = fake_cifar_archive();
    let mut routes = HashMap::new();
    routes.insert("/a.tar.gz".to_string(), ok(archive));
    let (base, _) = serve(routes);
    let src = Source {
        base_url: base.clone(),
        files: vec![RemoteFile {
            name: "a.tar.gz".into(),
            checksum: Checksum::Sha256("00".repeat(32)),
            unpack: true,
        }],
    };
    let err = download(DatasetKind::Cifar10, &src, cache.path(), None).unwrap_err();
    assert!(err.to_string().contains("expected sha256 0000"), "{err}");
    let dest = cache.join("x.bin");
    let err = download_file(
        &format!("{base}/a.tar.gz"),
        &dest,
        &Checksum::Sha256("ab".repeat(32)),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, DataError::Checksum { .. }));
    assert!(
        entries(cache.path()).is_empty(),
        "{:?}",
        entries(cache.path())
    );
}

#[test]
fn server_errors_and_truncation_leave_nothing() {
    let files = fake_mnist();
    let mut routes: HashMap<String, Route> = files
        .iter()
        .map(|(n, b)| (format!("/mirror/{n}"), ok(b.clone())))
        .collect();
    routes.insert(
        "/mirror/train-images-idx3-ubyte.gz".into(),
        Route {
            status: 500,
            body: b"boom".to_vec(),
            claimed_len: None,
        },
    );
    let body = files[0].1.clone();
    routes.insert(
        "/short/file.gz".into(),
        Route {
            status: 200,
            claimed_len: Some(body.len() + 100),
            body,
        },
    );
    let (base, _) = serve(routes);
    let cache = TempDir::new("dl-err");
    let err = download(
        DatasetKind::Mnist,
        &source_for(&base, &files, false),
        cache.path(),
        None,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::Download { .. }), "{msg}");
    assert!(msg.contains("/mirror/train-images-idx3-ubyte.gz"), "{msg}");
    assert!(msg.contains("HTTP 500"), "{msg}");
    assert!(
        entries(cache.path()).is_empty(),
        "{:?}",
        entries(cache.path())
    );

    let mut missing = source_for(&base, &files, false);
    missing.base_url = format!("{base}/nowhere");
    let err = download(DatasetKind::Mnist, &missing, cache.path(), None).unwrap_err();
    assert!(err.to_string().contains("HTTP 404"), "{err}");

    let dest = cache.join("file.gz");
    let err = download_file(
        &format!("{base}/short/file.gz"),
        &dest,
        &Checksum::Md5(md5_hex(&files[0].1)),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, DataError::Download { .. }), "{err}");
    assert!(
        entries(cache.path()).is_empty(),
        "{:?}",
        entries(cache.path())
    );

    // Nothing listens on this port any more: a connection error.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = download_file(
        &format!("http://127.0.0.1:{port}/x"),
        &dest,
        &Checksum::Md5(String::new()),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, DataError::Download { .. }), "{err}");
    assert!(entries(cache.path()).is_empty());
}

#[test]
fn official_sources() {
    let c10 = Source::official(DatasetKind::Cifar10).unwrap();
    assert_eq!(
        c10.url(&c10.files[0]),
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    );
    assert_eq!(
        c10.files[0].checksum,
        Checksum::Md5("c32a1d4ab5d03f1284b67883e8d87530".into())
    );
    let c100 = Source::official(DatasetKind::Cifar100).unwrap();
    assert_eq!(
        c100.files[0].checksum,
        Checksum::Md5("03b5dce01913d631647c71ecec9e9cb8".into())
    );
    let m = Source::official(DatasetKind::Mnist).unwrap();
    assert_eq!(
        m.url(&m.files[0]),
        "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz"
    );
    assert_eq!(
        m.files[0].checksum,
        Checksum::Md5("f68b3c2dcbeaaa9fbdd348bbdeb94873".into())
    );
    assert!(Source::official(DatasetKind::ImageNet32).is_none());
    let moved = m.with_base_url("http://127.0.0.1:1/x/");
    assert_eq!(
        moved.url(&moved.files[3]),
        "http://127.0.0.1:1/x/t10k-labels-idx1-ubyte.gz"
    );
}
