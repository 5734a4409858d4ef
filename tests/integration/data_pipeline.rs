//! Input pipeline: normalisation, padding, flip/crop with edge replication, seeded order
//! and augmentation, validation split, background loader, partial batches, layouts.

use std::collections::HashSet;
use std::sync::Arc;

use ffebm::data::transform::{crop_edge, hflip, pad_center, prepare};
use ffebm::data::{
    epoch_permutation, split_validation, Augment, AugmentDraw, Dataset, DatasetKind, Layout,
    Loader, LoaderOptions, Split, Subset,
};

/// `n` synthetic CIFAR-10 images; pixel j of image i is `(i * 13 + j * 5) % 256`.
fn cifar(n: usize) -> Arc<Dataset> {
    let images = (0..n)
        .flat_map(|i| (0..3072).map(move |j| ((i * 13 + j * 5) % 256) as u8))
        .collect();
    let labels = (0..n).map(|i| (i % 10) as u32).collect();
    Arc::new(
        Dataset::from_raw(
            DatasetKind::Cifar10,
            Split::Train,
            [3, 32, 32],
            images,
            labels,
        )
        .unwrap(),
    )
}

#[test]
fn normalisation_of_known_pixels() {
    let mut images = vec![0u8; 3072];
    images[0] = 128; // red (0,0)
    images[1024 + 5] = 255; // green (0,5)
    images[2048 + 32] = 0; // blue (1,0)
    let ds = Dataset::from_raw(
        DatasetKind::Cifar100,
        Split::Test,
        [3, 32, 32],
        images,
        vec![7],
    )
    .unwrap();
    let b = Loader::new(ds, LoaderOptions::eval(1)).unwrap().batch(0);
    assert_eq!(b.shape, [1, 3, 32, 32]);
    assert_eq!(b.y, [7]);
    let close = |a: f32, e: f64| assert!((a as f64 - e).abs() < 1e-5, "{a} vs {e}");
    close(b.x[0], (128.0 / 255.0 - 0.4914) / (3.0 * 0.2023));
    close(b.x[1024 + 5], (1.0 - 0.4822) / (3.0 * 0.1994));
    close(b.x[2048 + 32], (0.0 - 0.4465) / (3.0 * 0.2010));

    let n = DatasetKind::ImageNet32.normalization();
    close(n.apply(2, 51), (0.2 - 0.406) / (1.5 * 0.225));
    let n = DatasetKind::Kmnist.normalization();
    close(n.apply(0, 255), (1.0 - 0.1307) / 0.3081);
}

/// A 1-channel 4x4 image with pixel (y, x) = 10·y + x.
fn grid() -> Vec<u8> {
    (0..4)
        .flat_map(|y| (0..4).map(move |x| 10 * y + x))
        .collect()
}

#[test]
fn flip_and_edge_crop_exact_pixels() {
    let s = [1, 4, 4];
    assert_eq!(
        hflip(&grid(), s),
        [3, 2, 1, 0, 13, 12, 11, 10, 23, 22, 21, 20, 33, 32, 31, 30]
    );
    // Offset (pad, pad) is the identity.
    assert_eq!(crop_edge(&grid(), s, 2, 2, 2), grid());
    // Top-left corner of the padded image: rows/cols 0..1 replicate the edge.
    assert_eq!(
        crop_edge(&grid(), s, 2, 0, 0),
        [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 10, 10, 10, 11]
    );
    // Bottom-right corner.
    assert_eq!(
        crop_edge(&grid(), s, 2, 4, 4),
        [22, 23, 23, 23, 32, 33, 33, 33, 32, 33, 33, 33, 32, 33, 33, 33]
    );
    // Mixed: one row down, one column left.
    assert_eq!(
        crop_edge(&grid(), s, 2, 3, 1),
        [10, 10, 11, 12, 20, 20, 21, 22, 30, 30, 31, 32, 30, 30, 31, 32]
    );
    // Flip happens before the crop.
    let aug = Augment {
        flip: true,
        crop_padding: 2,
    };
    let draw = AugmentDraw {
        flip: true,
        dy: 2,
        dx: 0,
    };
    assert_eq!(
        prepare(&grid(), s, s, &aug, &draw),
        [3, 3, 3, 2, 13, 13, 13, 12, 23, 23, 23, 22, 33, 33, 33, 32]
    );
    // Channels are cropped alike.
    let two: Vec<u8> = grid()
        .into_iter()
        .chain(grid().into_iter().map(|v| v + 100))
        .collect();
    let out = crop_edge(&two, [2, 4, 4], 2, 0, 0);
    assert_eq!(
        out[16..],
        crop_edge(&grid(), s, 2, 0, 0)
            .iter()
            .map(|v| v + 100)
            .collect::<Vec<_>>()[..]
    );
}

#[test]
fn mnist_padding_28_to_32() {
    let img: Vec<u8> = (0..784).map(|i| (i % 250 + 1) as u8).collect();
    let padded = pad_center(&img, [1, 28, 28], 32, 32);
    assert_eq!(padded.len(), 1024);
    for y in 0..32 {
        for x in 0..32 {
            let inside = (2..30).contains(&y) && (2..30).contains(&x);
            let want = if inside {
                img[(y - 2) * 28 + (x - 2)]
            } else {
                0
            };
            assert_eq!(padded[y * 32 + x], want, "({y},{x})");
        }
    }
    let ds = Dataset::from_raw(
        DatasetKind::Mnist,
        Split::Train,
        [1, 28, 28],
        img.clone(),
        vec![3],
    )
    .unwrap();
    let b = Loader::new(ds, LoaderOptions::eval(8)).unwrap().batch(0);
    assert_eq!(b.shape, [1, 1, 32, 32]);
    let norm = DatasetKind::Mnist.normalization();
    for (v, &p) in b.x.iter().zip(&padded) {
        assert_eq!(*v, norm.apply(0, p));
    }
    assert!((b.x[0] - (-0.1307 / 0.3081)).abs() < 1e-6);
}

#[test]
fn augment_draws_are_pure_and_cover_the_range() {
    let aug = Augment::STANDARD;
    let mut offsets = HashSet::new();
    let mut flips = 0;
    for p in 0..2000 {
        let d = aug.draw(5, 3, p);
        assert_eq!(d, aug.draw(5, 3, p));
        assert!(d.dy <= 8 && d.dx <= 8);
        offsets.insert((d.dy, d.dx));
        flips += d.flip as usize;
    }
    assert_eq!(offsets.len(), 81);
    assert!((850..1150).contains(&flips), "{flips} flips of 2000");
    let differs = (0..100)
        .filter(|&p| aug.draw(5, 3, p) != aug.draw(5, 4, p))
        .count();
    assert!(differs > 80);
    let no_flip = Augment {
        flip: false,
        crop_padding: 4,
    };
    assert!((0..200).all(|p| !no_flip.draw(1, 0, p).flip));
    assert_eq!(Augment::default_for(DatasetKind::Mnist), Augment::NONE);
    assert_eq!(
        Augment::default_for(DatasetKind::Cifar10),
        Augment::STANDARD
    );
}

#[test]
fn epoch_order_is_a_pure_function_of_seed_and_epoch() {
    let ds = cifar(50);
    let opts = |seed, epoch| LoaderOptions {
        batch_size: 8,
        ..LoaderOptions::train(DatasetKind::Cifar10, 8, seed, epoch)
    };
    let a: Vec<_> = Loader::new(ds.clone(), opts(1, 2))
        .unwrap()
        .iter()
        .collect();
    let b: Vec<_> = Loader::new(ds.clone(), opts(1, 2))
        .unwrap()
        .iter()
        .collect();
    assert_eq!(a, b);
    assert_eq!(a.len(), 7);
    assert_eq!(a[6].y.len(), 2); // last partial batch kept by default
    let order: Vec<usize> = a.iter().flat_map(|b| b.indices.clone()).collect();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    assert_ne!(order, (0..50).collect::<Vec<_>>());
    let other_epoch = Loader::new(ds.clone(), opts(1, 3)).unwrap();
    assert_ne!(other_epoch.order(), &order[..]);
    let other_seed = Loader::new(ds.clone(), opts(2, 2)).unwrap();
    assert_ne!(other_seed.order(), &order[..]);
    assert_eq!(epoch_permutation(50, 1, 2), epoch_permutation(50, 1, 2));
    // Labels travel with their images.
    for b in &a {
        for (&i, &y) in b.indices.iter().zip(&b.y) {
            assert_eq!(y, ds.labels[i]);
        }
    }
}

#[test]
fn augmentation_does_not_depend_on_batching() {
    let ds = cifar(30);
    let mk = |bs| {
        let l = Loader::new(
            ds.clone(),
            LoaderOptions::train(DatasetKind::Cifar10, bs, 9, 4),
        )
        .unwrap();
        let per = 3 * 32 * 32;
        l.iter()
            .flat_map(|b| b.x.chunks(per).map(|c| c.to_vec()).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    let (a, b) = (mk(7), mk(13));
    assert_eq!(a.len(), 30);
    assert_eq!(a, b);
    // And augmentation actually changed something.
    let plain = Loader::new(
        ds.clone(),
        LoaderOptions {
            augment: Augment::NONE,
            ..LoaderOptions::train(DatasetKind::Cifar10, 30, 9, 4)
        },
    )
    .unwrap()
    .batch(0);
    let per = 3 * 32 * 32;
    let changed = (0..30)
        .filter(|&s| plain.x[s * per..][..per] != a[s][..])
        .count();
    assert!(changed > 20, "{changed}");
}

#[test]
fn validation_split_is_disjoint_and_stable() {
    let ds = cifar(100);
    let (train, val) = split_validation(ds.clone(), 20, 11).unwrap();
    assert_eq!((train.len(), val.len()), (80, 20));
    let t: HashSet<_> = train.indices().iter().copied().collect();
    let v: HashSet<_> = val.indices().iter().copied().collect();
    assert!(t.is_disjoint(&v));
    assert_eq!(t.union(&v).count(), 100);
    let (train2, val2) = split_validation(ds.clone(), 20, 11).unwrap();
    assert_eq!(val.indices(), val2.indices());
    assert_eq!(train.indices(), train2.indices());
    let (_, val3) = split_validation(ds.clone(), 20, 12).unwrap();
    assert_ne!(val.indices(), val3.indices());
    assert!(split_validation(ds.clone(), 100, 0).is_err());
    // A loader over the training part only ever yields training images.
    for epoch in 0..3 {
        let l = Loader::new(
            train.clone(),
            LoaderOptions::train(DatasetKind::Cifar10, 16, 1, epoch),
        )
        .unwrap();
        let seen: Vec<usize> = l.iter().flat_map(|b| b.indices).collect();
        assert_eq!(seen.len(), 80);
        assert!(seen.iter().all(|i| t.contains(i)));
    }
    let vl = Loader::new(val.clone(), LoaderOptions::eval(64)).unwrap();
    assert_eq!(vl.batch(0).indices, val.indices());
}

#[test]
fn background_loader_matches_synchronous() {
    let ds = cifar(70);
    let opts = LoaderOptions {
        prefetch: 2,
        ..LoaderOptions::train(DatasetKind::Cifar10, 16, 3, 1)
    };
    let l = Loader::new(ds.clone(), opts).unwrap();
    let sync: Vec<_> = l.iter().collect();
    let bg = l.clone().spawn();
    assert_eq!(bg.len(), 5);
    let bg: Vec<_> = bg.collect();
    assert_eq!(sync, bg);
    // Resuming mid-epoch yields the remaining batches, unchanged.
    let resumed: Vec<_> = l.clone().spawn_from(3).collect();
    assert_eq!(resumed, sync[3..]);
    assert_eq!(l.iter_from(4).collect::<Vec<_>>(), sync[4..]);
    assert_eq!(l.iter_from(9).count(), 0);
    // Dropping it early stops the thread without hanging.
    let mut it = l.spawn();
    assert_eq!(it.next().unwrap(), sync[0]);
    drop(it);
}

#[test]
fn drop_last_and_layouts_and_subsets() {
    let ds = cifar(10);
    let keep = Loader::new(ds.clone(), LoaderOptions::eval(4)).unwrap();
    assert_eq!(keep.len(), 3);
    assert_eq!(keep.num_samples(), 10);
    assert_eq!(keep.batch(2).shape, [2, 3, 32, 32]);
    let drop = Loader::new(
        ds.clone(),
        LoaderOptions {
            drop_last: true,
            ..LoaderOptions::eval(4)
        },
    )
    .unwrap();
    assert_eq!(drop.len(), 2);
    assert_eq!(drop.num_samples(), 8);
    assert!(Loader::new(ds.clone(), LoaderOptions::eval(0)).is_err());

    let nchw = keep.batch(0);
    let nhwc = Loader::new(
        ds.clone(),
        LoaderOptions {
            layout: Layout::Nhwc,
            ..LoaderOptions::eval(4)
        },
    )
    .unwrap()
    .batch(0);
    assert_eq!(nhwc.shape, [4, 32, 32, 3]);
    for n in 0..4 {
        for c in 0..3 {
            for p in [0, 33, 1023] {
                assert_eq!(
                    nhwc.x[(n * 1024 + p) * 3 + c],
                    nchw.x[(n * 3 + c) * 1024 + p]
                );
            }
        }
    }
    let sub = Subset::new(ds.clone(), vec![9, 2, 5]).unwrap();
    let b = Loader::new(sub, LoaderOptions::eval(8)).unwrap().batch(0);
    assert_eq!(b.indices, [9, 2, 5]);
    assert_eq!(b.y, [9, 2, 5]);
    assert!(Subset::new(ds, vec![10]).is_err());
}
