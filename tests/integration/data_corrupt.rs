//! Corrupt and missing files give errors that name the file and the expectation.

use crate::data_util;

use std::path::PathBuf;

use data_util::{cifar_records, gzip, idx_bytes, TempDir};
use ffebm::data::{DataError, Dataset, DatasetKind, Split};

fn err_text(r: ffebm::data::Result<Dataset>) -> String {
    match r {
        Ok(d) => panic!("expected an error, loaded {} images", d.len()),
        Err(e) => e.to_string(),
    }
}

fn assert_has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "missing {p:?} in:\n{msg}");
    }
}

fn files(names: &[&str]) -> Vec<PathBuf> {
    names.iter().map(PathBuf::from).collect()
}

#[test]
fn truncated_official_cifar_file() {
    let t = TempDir::new("trunc");
    let mut bytes = cifar_records(10_000, |i| (i % 10) as u8);
    bytes.truncate(bytes.len() - 100);
    std::fs::write(t.join("data_batch_1.bin"), &bytes).unwrap();
    let msg = err_text(Dataset::load(
        DatasetKind::Cifar10,
        Split::Train,
        t.path(),
        Some(&files(&["data_batch_1.bin"])),
    ));
    assert_has(
        &msg,
        &[
            "data_batch_1.bin: invalid CIFAR-10 binary file",
            "expected 30730000 bytes (10000 records of 3073 bytes)",
            "found 30729900 bytes (9999 whole records + 2973 stray bytes)",
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            "--download",
        ],
    );
}

#[test]
fn truncated_copy_of_real_cifar_file() {
    let Some(root) = data_util::real_data() else {
        return;
    };
    let t = TempDir::new("realtrunc");
    let src = root.join("cifar10/test_batch_first1000.bin");
    let mut bytes = std::fs::read(src).unwrap();
    bytes.truncate(3073 * 500 + 7);
    std::fs::write(t.join("test_batch_first1000.bin"), &bytes).unwrap();
    let msg = err_text(Dataset::load(
        DatasetKind::Cifar10,
        Split::Test,
        t.path(),
        Some(&files(&["test_batch_first1000.bin"])),
    ));
    assert_has(
        &msg,
        &[
            "test_batch_first1000.bin",
            "expected 3073000 bytes (1000 records of 3073 bytes)",
            "found 1536507 bytes (500 whole records + 7 stray bytes)",
        ],
    );
}

#[test]
fn custom_cifar_file_must_hold_whole_records() {
    let t = TempDir::new("custom");
    let mut bytes = cifar_records(3, |_| 1);
    bytes.truncate(3 * 3073 - 5);
    std::fs::write(t.join("mini.bin"), &bytes).unwrap();
    let msg = err_text(Dataset::load(
        DatasetKind::Cifar10,
        Split::Train,
        t.path(),
        Some(&files(&["mini.bin"])),
    ));
    assert_has(
        &msg,
        &[
            "mini.bin",
            "expected a positive multiple of 3073 bytes",
            "found 9214 bytes (2 whole records + 3068 stray bytes)",
        ],
    );
    // Whole records of a custom file load fine, pixels planar after the label byte.
    std::fs::write(t.join("ok.bin"), cifar_records(3, |i| i as u8)).unwrap();
    let ds = Dataset::load(
        DatasetKind::Cifar10,
        Split::Train,
        t.path(),
        Some(&files(&["ok.bin"])),
    )
    .unwrap();
    assert_eq!(ds.labels, [0, 1, 2]);
    assert_eq!(ds.image(2)[..3], [14, 15, 16]);
}

#[test]
fn cifar_label_out_of_range() {
    let t = TempDir::new("label");
    std::fs::write(
        t.join("x.bin"),
        cifar_records(4, |i| if i == 2 { 10 } else { 3 }),
    )
    .unwrap();
    let msg = err_text(Dataset::load(
        DatasetKind::Cifar10,
        Split::Train,
        t.path(),
        Some(&files(&["x.bin"])),
    ));
    assert_has(
        &msg,
        &[
            "x.bin",
            "expected label bytes in 0..=9",
            "found 10 in record 2 (byte offset 6146)",
        ],
    );
}

fn cifar100_record(coarse: u8, fine: u8, fill: u8) -> Vec<u8> {
    let mut r = vec![coarse, fine];
    r.extend(std::iter::repeat_n(fill, 3072));
    r
}

#[test]
fn cifar100_fine_labels_and_ranges() {
    let t = TempDir::new("c100");
    let mut ok = cifar100_record(19, 99, 7);
    ok.extend(cifar100_record(0, 42, 9));
    std::fs::write(t.join("small.bin"), &ok).unwrap();
    let ds = Dataset::load(
        DatasetKind::Cifar100,
        Split::Train,
        t.path(),
        Some(&files(&["small.bin"])),
    )
    .unwrap();
    assert_eq!(ds.labels, [99, 42]);
    assert_eq!(ds.classes, 100);
    assert!(ds.image(0).iter().all(|&b| b == 7) && ds.image(1).iter().all(|&b| b == 9));

    std::fs::write(t.join("fine.bin"), cifar100_record(3, 100, 0)).unwrap();
    let msg = err_text(Dataset::load(
        DatasetKind::Cifar100,
        Split::Train,
        t.path(),
        Some(&files(&["fine.bin"])),
    ));
    assert_has(
        &msg,
        &["fine.bin", "label bytes in 0..=99", "found 100 in record 0"],
    );
    std::fs::write(t.join("coarse.bin"), cifar100_record(20, 1, 0)).unwrap();
    let msg = err_text(Dataset::load(
        DatasetKind::Cifar100,
        Split::Train,
        t.path(),
        Some(&files(&["coarse.bin"])),
    ));
    assert_has(&msg, &["coarse.bin", "coarse label bytes in 0..=19"]);
    // The official name train.bin must hold exactly 50,000 records.
    std::fs::write(t.join("train.bin"), &ok).unwrap();
    let msg = err_text(Dataset::load(
        DatasetKind::Cifar100,
        Split::Train,
        t.path(),
        None,
    ));
    assert_has(
        &msg,
        &[
            "train.bin",
            "expected 153700000 bytes (50000 records of 3074 bytes)",
            "cifar-100-binary.tar.gz",
        ],
    );
}

#[test]
fn missing_files_say_where_data_comes_from() {
    let t = TempDir::new("missing");
    let msg = err_text(Dataset::load(
        DatasetKind::Cifar10,
        Split::Train,
        t.path(),
        None,
    ));
    assert_has(
        &msg,
        &[
            "data_batch_1.bin: file not found (CIFAR-10 train split)",
            "cifar-10-binary.tar.gz",
            "--download",
        ],
    );
    // Without the split test files, the plain advice is given.
    let msg = err_text(Dataset::load(
        DatasetKind::Cifar10,
        Split::Test,
        t.path(),
        None,
    ));
    assert!(!msg.contains("data.test_files"), "{msg}");
    std::fs::write(t.join("test_batch_first1000.bin"), b"").unwrap();
    let msg = err_text(Dataset::load(
        DatasetKind::Cifar10,
        Split::Test,
        t.path(),
        None,
    ));
    assert_has(
        &msg,
        &[
            "test_batch.bin: file not found",
            "--set 'data.test_files=[\"test_batch_first1000.bin\"]'",
        ],
    );
    let msg = err_text(Dataset::load(
        DatasetKind::Mnist,
        Split::Test,
        t.path(),
        None,
    ));
    assert_has(
        &msg,
        &[
            "t10k-images-idx3-ubyte: file not found",
            "also looked for the .gz variant",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
        ],
    );
    let msg = err_text(Dataset::load(
        DatasetKind::ImageNet32,
        Split::Test,
        t.path(),
        None,
    ));
    assert_has(
        &msg,
        &[
            "val_data: file not found",
            "image-net.org",
            "no automatic download",
        ],
    );
}

/// A 3-image MNIST-style pair in `dir` (uncompressed), labels 0..3.
fn write_idx_pair(dir: &std::path::Path, labels: &[u8], n_images: u32) {
    let pixels: Vec<u8> = (0..n_images as usize * 784)
        .map(|i| (i % 251) as u8)
        .collect();
    std::fs::write(
        dir.join("train-images-idx3-ubyte"),
        idx_bytes(&[n_images, 28, 28], &pixels),
    )
    .unwrap();
    std::fs::write(
        dir.join("train-labels-idx1-ubyte"),
        idx_bytes(&[labels.len() as u32], labels),
    )
    .unwrap();
}

#[test]
fn idx_plain_and_gz_agree() {
    let t = TempDir::new("idxok");
    write_idx_pair(t.path(), &[0, 1, 9], 3);
    let plain = Dataset::load(DatasetKind::Mnist, Split::Train, t.path(), None).unwrap();
    assert_eq!(plain.labels, [0, 1, 9]);
    assert_eq!(plain.shape, [1, 28, 28]);
    assert_eq!(plain.image(1)[0], (784 % 251) as u8);
    for f in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"] {
        let raw = std::fs::read(t.join(f)).unwrap();
        std::fs::write(t.join(format!("{f}.gz")), gzip(&raw)).unwrap();
        std::fs::remove_file(t.join(f)).unwrap();
    }
    let gz = Dataset::load(DatasetKind::FashionMnist, Split::Train, t.path(), None).unwrap();
    assert!(gz.files[0].to_string_lossy().ends_with(".gz"));
    assert_eq!(gz.images, plain.images);
    assert_eq!(gz.labels, plain.labels);
}

#[test]
fn idx_wrong_magic() {
    let t = TempDir::new("magic");
    write_idx_pair(t.path(), &[0, 1, 2], 3);
    let p = t.join("train-images-idx3-ubyte");
    let mut b = std::fs::read(&p).unwrap();
    b[3] = 4; // 0x00000804
    std::fs::write(&p, b).unwrap();
    let msg = err_text(Dataset::load(
        DatasetKind::Mnist,
        Split::Train,
        t.path(),
        None,
    ));
    assert_has(
        &msg,
        &[
            "train-images-idx3-ubyte: invalid MNIST IDX file",
            "expected magic number 0x00000803",
            "found 0x00000804",
        ],
    );
    // A labels file given where images are expected.
    let msg = err_text(Dataset::load(
        DatasetKind::Kmnist,
        Split::Train,
        t.path(),
        Some(&files(&[
            "train-labels-idx1-ubyte",
            "train-labels-idx1-ubyte",
        ])),
    ));
    assert_has(
        &msg,
        &[
            "train-labels-idx1-ubyte",
            "magic number 0x00000803",
            "found 0x00000801",
        ],
    );
}

#[test]
fn idx_label_out_of_range() {
    let t = TempDir::new("idxlabel");
    write_idx_pair(t.path(), &[0, 10, 2], 3);
    let msg = err_text(Dataset::load(
        DatasetKind::Mnist,
        Split::Train,
        t.path(),
        None,
    ));
    assert_has(
        &msg,
        &[
            "train-labels-idx1-ubyte",
            "expected labels in 0..=9",
            "found 10 at index 1",
        ],
    );
}

#[test]
fn idx_count_mismatch() {
    let t = TempDir::new("count");
    write_idx_pair(t.path(), &[0, 1], 3);
    let msg = err_text(Dataset::load(
        DatasetKind::Mnist,
        Split::Train,
        t.path(),
        None,
    ));
    assert_has(
        &msg,
        &[
            "train-labels-idx1-ubyte",
            "expected as many labels as images in",
            "train-images-idx3-ubyte (3)",
            "found 2 labels",
        ],
    );
}

#[test]
fn idx_truncated_and_bad_dims_and_bad_gzip() {
    let t = TempDir::new("idxtrunc");
    write_idx_pair(t.path(), &[0, 1, 2], 3);
    let p = t.join("train-images-idx3-ubyte");
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() - 1]).unwrap();
    let msg = err_text(Dataset::load(
        DatasetKind::Mnist,
        Split::Train,
        t.path(),
        None,
    ));
    assert_has(
        &msg,
        &[
            "expected 2368 bytes (header 16 + 2352 for dimensions 3 x 28 x 28)",
            "found 2367 bytes",
        ],
    );
    std::fs::write(&p, idx_bytes(&[1, 27, 28], &[0; 27 * 28])).unwrap();
    let msg = err_text(Dataset::load(
        DatasetKind::Mnist,
        Split::Train,
        t.path(),
        None,
    ));
    assert_has(
        &msg,
        &[
            "expected dimensions N x 28 x 28",
            "found dimensions 1 x 27 x 28",
        ],
    );
    let gz = gzip(&b);
    std::fs::write(t.join("broken.gz"), &gz[..gz.len() / 2]).unwrap();
    let msg = err_text(Dataset::load(
        DatasetKind::Mnist,
        Split::Train,
        t.path(),
        Some(&files(&["broken.gz", "train-labels-idx1-ubyte"])),
    ));
    assert_has(&msg, &["broken.gz", "corrupt or truncated gzip stream"]);
}

#[test]
fn config_errors() {
    let t = TempDir::new("cfg");
    let e = Dataset::load(DatasetKind::Cifar10, Split::Train, t.path(), Some(&[])).unwrap_err();
    assert!(matches!(e, DataError::Config(_)), "{e}");
    let e = Dataset::load(
        DatasetKind::Mnist,
        Split::Train,
        t.path(),
        Some(&files(&["a"])),
    )
    .unwrap_err();
    assert!(e.to_string().contains("expected two files"), "{e}");
    assert!("cifar-10".parse::<DatasetKind>().unwrap() == DatasetKind::Cifar10);
    assert!("Fashion_MNIST".parse::<DatasetKind>().unwrap() == DatasetKind::FashionMnist);
    assert!("svhn".parse::<DatasetKind>().is_err());
}
