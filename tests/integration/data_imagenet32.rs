//! ImageNet32 pickle / npz reading on tiny committed fixtures
//! (made by tests/fixtures/data/make_imagenet32_fixtures.py).

use crate::data_util;

use std::path::PathBuf;

use data_util::{fixture, TempDir};
use ffebm::data::pickle::{self, Value};
use ffebm::data::{Dataset, DatasetKind, Split};

/// Byte `j` of image `k` of fixture file `f` (the generator's rule).
fn pixel(f: usize, k: usize, j: usize) -> u8 {
    ((f * 50 + k * 31 + j * 7) % 251) as u8
}

fn names(v: &[&str]) -> Vec<PathBuf> {
    v.iter().map(PathBuf::from).collect()
}

fn load(dir: &str, split: Split, files: Option<&[&str]>) -> ffebm::data::Result<Dataset> {
    let f = files.map(names);
    Dataset::load(DatasetKind::ImageNet32, split, &fixture(dir), f.as_deref())
}

fn check_pixels(ds: &Dataset, per_file: &[(usize, usize)]) {
    let mut i = 0;
    for &(f, n) in per_file {
        for k in 0..n {
            let img = ds.image(i);
            for j in [0, 1, 1023, 1024, 2048, 3071] {
                assert_eq!(img[j], pixel(f, k, j), "image {i} byte {j}");
            }
            assert!(img.iter().enumerate().all(|(j, &b)| b == pixel(f, k, j)));
            i += 1;
        }
    }
    assert_eq!(i, ds.len());
}

#[test]
fn pickle_protocols_2_to_5() {
    let ds = load(
        "imagenet32",
        Split::Train,
        Some(&[
            "train_data_batch_1", // protocol 2, Python 3 (_codecs.encode bytes)
            "train_data_batch_2", // protocol 4
            "train_data_batch_3", // protocol 2, Python 2 style (BINSTRING, numpy.core)
            "train_data_batch_4", // protocol 5 (_frombuffer, BYTEARRAY8)
        ]),
    )
    .unwrap();
    assert_eq!(ds.shape, [3, 32, 32]);
    assert_eq!(ds.classes, 1000);
    // Labels 1..=1000 become 0..=999.
    assert_eq!(ds.labels, [0, 999, 16, 4, 5, 998, 1, 499]);
    check_pixels(&ds, &[(1, 3), (2, 2), (3, 2), (4, 1)]);

    // The test split is val_data (labels stored as an int64 array).
    let val = load("imagenet32", Split::Test, None).unwrap();
    assert_eq!(val.labels, [2, 3]);
    check_pixels(&val, &[(9, 2)]);
}

#[test]
fn npz_matches_pickle() {
    // "train_data_batch_1" resolves to train_data_batch_1.npz (stored zip).
    let npz = load(
        "imagenet32_npz",
        Split::Train,
        Some(&["train_data_batch_1"]),
    )
    .unwrap();
    assert!(npz.files[0]
        .to_string_lossy()
        .ends_with("train_data_batch_1.npz"));
    let pkl = load("imagenet32", Split::Train, Some(&["train_data_batch_1"])).unwrap();
    assert_eq!(npz.images, pkl.images);
    assert_eq!(npz.labels, pkl.labels);
    // val_data.npz is deflate-compressed with int32 labels.
    let val = load("imagenet32_npz", Split::Test, None).unwrap();
    assert_eq!(val.labels, [2, 3]);
    check_pixels(&val, &[(9, 2)]);
}

#[test]
fn default_train_list_needs_all_ten_batches() {
    let e = load("imagenet32", Split::Train, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("train_data_batch_5: file not found"), "{e}");
    assert!(e.contains("also looked for the .npz variant"), "{e}");
}

#[test]
fn pickle_values_are_decoded() {
    let bytes = std::fs::read(fixture("imagenet32/train_data_batch_1")).unwrap();
    let root = pickle::load(&bytes).unwrap();
    let Some(Value::Array(mean)) = root.get("mean") else {
        panic!("no mean array");
    };
    let mean = mean.borrow();
    assert_eq!(mean.dtype.code, "f8");
    assert_eq!(mean.dtype.byteorder, '<');
    assert_eq!(mean.shape, [4]);
    let vals: Vec<f64> = mean
        .data
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(vals, [0.0, 1.0, 2.0, 3.0]);
    let Some(Value::Array(val_labels)) =
        pickle::load(&std::fs::read(fixture("imagenet32/val_data")).unwrap())
            .unwrap()
            .get("labels")
    else {
        panic!("val labels are not an array");
    };
    assert_eq!(val_labels.borrow().to_i64().unwrap(), [3, 4]);
}

fn bad(file: &str) -> String {
    load("imagenet32_bad", Split::Train, Some(&[file]))
        .unwrap_err()
        .to_string()
}

#[test]
fn invalid_contents() {
    let e = bad("label0");
    assert!(e.contains("label0: invalid ImageNet32"), "{e}");
    assert!(
        e.contains("expected labels in 1..=1000, found 0 at index 0"),
        "{e}"
    );
    let e = bad("shape");
    assert!(
        e.contains("expected 'data' as a C-ordered uint8 array of shape N x 3072"),
        "{e}"
    );
    assert!(e.contains("found dtype u1, shape [2, 3000]"), "{e}");
    let e = bad("nolabels");
    assert!(
        e.contains("expected a key 'labels', found no such key"),
        "{e}"
    );
}

#[test]
fn corrupted_pickle_and_npz() {
    let t = TempDir::new("in32");
    let b = std::fs::read(fixture("imagenet32/train_data_batch_2")).unwrap();
    std::fs::write(t.join("train_data_batch_1"), &b[..b.len() / 2]).unwrap();
    let files = names(&["train_data_batch_1"]);
    let e = Dataset::load(
        DatasetKind::ImageNet32,
        Split::Train,
        t.path(),
        Some(&files),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("train_data_batch_1: invalid ImageNet32"), "{e}");
    assert!(
        e.contains("pickle decoding error: unexpected end of data"),
        "{e}"
    );

    // An unknown class in the pickle is refused, not executed.
    let mut evil = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00lsq\x00\x85R.".to_vec();
    std::fs::write(t.join("train_data_batch_1"), &evil).unwrap();
    let e = Dataset::load(
        DatasetKind::ImageNet32,
        Split::Train,
        t.path(),
        Some(&files),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unsupported callable os.system"), "{e}");

    evil = b"hello".to_vec();
    std::fs::write(t.join("train_data_batch_1"), &evil).unwrap();
    let e = Dataset::load(
        DatasetKind::ImageNet32,
        Split::Train,
        t.path(),
        Some(&files),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("found first bytes [68, 65, 6c, 6c]"), "{e}");

    let z = std::fs::read(fixture("imagenet32_npz/val_data.npz")).unwrap();
    std::fs::write(t.join("val_data.npz"), &z[..z.len() - 40]).unwrap();
    let e = Dataset::load(DatasetKind::ImageNet32, Split::Test, t.path(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("val_data.npz: invalid ImageNet32"), "{e}");
    assert!(e.contains("expected a valid .npz archive"), "{e}");
}
