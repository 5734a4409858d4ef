//! Checks on the real shared data (`FFEBM_DATA`); skipped with a notice when unset.

use crate::data_util;

use std::path::PathBuf;

use ffebm::data::{
    cifar10_test_sets, dataset_dir, DataError, Dataset, DatasetKind, Loader, LoaderOptions, Split,
};

#[test]
fn cifar10_train_counts_pixels_and_means() {
    let Some(root) = data_util::real_data() else {
        return;
    };
    let dir = dataset_dir(&root, DatasetKind::Cifar10);
    let ds = Dataset::load(DatasetKind::Cifar10, Split::Train, &dir, None).unwrap();
    assert_eq!(ds.len(), 50_000);
    assert_eq!(ds.shape, [3, 32, 32]);
    assert_eq!(ds.files.len(), 5);
    assert_eq!(ds.class_counts(), vec![5000; 10]);
    // Red plane, row 0 of train image 0 (a frog).
    assert_eq!(ds.labels[0], 6);
    assert_eq!(
        &ds.image(0)[..10],
        &[59, 43, 50, 68, 98, 119, 139, 145, 149, 149]
    );
    let means = ds.channel_means();
    let expected = [125.306918046875, 122.950394140625, 113.86538318359375];
    for (m, e) in means.iter().zip(expected) {
        assert!((m - e).abs() < 1e-9, "channel mean {m} != {e}");
    }
}

#[test]
fn cifar10_test_files_are_explicit() {
    let Some(root) = data_util::real_data() else {
        return;
    };
    let dir = dataset_dir(&root, DatasetKind::Cifar10);
    // The default test file does not exist here: the error explains the alternatives.
    let err = Dataset::load(DatasetKind::Cifar10, Split::Test, &dir, None).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }));
    let msg = err.to_string();
    assert!(msg.contains("test_batch.bin: file not found"), "{msg}");
    assert!(
        msg.contains("--set 'data.test_files=[\"test_batch_first1000.bin\"]'"),
        "{msg}"
    );
    assert!(msg.contains("test_rest9000_lossy_jpeg.bin"), "{msg}");
    assert!(msg.contains("cifar-10-binary.tar.gz"), "{msg}");

    let sets = cifar10_test_sets(&dir);
    let names: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["test-exact1000", "test-full10000-lossy"]);
    assert!(sets[0].exact && !sets[1].exact);

    let exact = Dataset::load(
        DatasetKind::Cifar10,
        Split::Test,
        &dir,
        Some(&sets[0].files),
    )
    .unwrap();
    assert_eq!(exact.len(), 1000);
    assert_eq!(
        exact.class_counts(),
        vec![103, 89, 100, 103, 90, 86, 112, 102, 106, 109]
    );
    let full = Dataset::load(
        DatasetKind::Cifar10,
        Split::Test,
        &dir,
        Some(&sets[1].files),
    )
    .unwrap();
    assert_eq!(full.len(), 10_000);
    assert_eq!(full.class_counts(), vec![1000; 10]);
    // The exact 1,000 come first, unchanged.
    assert_eq!(&full.images[..exact.images.len()], &exact.images[..]);
    assert_eq!(&full.labels[..1000], &exact.labels[..]);

    let lossy_only = [PathBuf::from("test_rest9000_lossy_jpeg.bin")];
    let rest = Dataset::load(DatasetKind::Cifar10, Split::Test, &dir, Some(&lossy_only)).unwrap();
    assert_eq!(
        rest.class_counts(),
        vec![897, 911, 900, 897, 910, 914, 888, 898, 894, 891]
    );
}

#[test]
fn mnist_counts_and_padding() {
    let Some(root) = data_util::real_data() else {
        return;
    };
    let dir = dataset_dir(&root, DatasetKind::Mnist);
    let train = Dataset::load(DatasetKind::Mnist, Split::Train, &dir, None).unwrap();
    let test = Dataset::load(DatasetKind::Mnist, Split::Test, &dir, None).unwrap();
    assert_eq!(train.len(), 60_000);
    assert_eq!(test.len(), 10_000);
    assert_eq!(train.shape, [1, 28, 28]);
    assert!(train.files[0].to_string_lossy().ends_with(".gz"));
    assert_eq!(
        train.class_counts(),
        vec![5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        test.class_counts(),
        vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    assert_eq!(train.labels[..5], [5, 0, 4, 1, 9]);

    // Padded to 1x32x32: the border holds normalised zeros, the centre the image.
    let test = std::sync::Arc::new(test);
    let loader = Loader::new(test.clone(), LoaderOptions::eval(4)).unwrap();
    let b = loader.batch(0);
    assert_eq!(b.shape, [4, 1, 32, 32]);
    let zero = (0.0 - 0.1307) / 0.3081;
    let img = test.image(0);
    for y in 0..32 {
        for x in 0..32 {
            let v = b.x[y * 32 + x];
            let inside = (2..30).contains(&y) && (2..30).contains(&x);
            let raw = if inside { img[(y - 2) * 28 + x - 2] } else { 0 };
            let want = (raw as f32 / 255.0 - 0.1307) / 0.3081;
            assert!((v - want).abs() < 1e-6, "({y},{x}) {v} vs {want}");
            if !inside {
                assert!((v - zero).abs() < 1e-6);
            }
        }
    }
}
