//! Tests of the offset-form pooled kernels: against the plain pooled evaluations, against
//! naive scalar loops (bit for bit, ties and NaN included, odd sizes), and the fused conv
//! kernels against `conv2d` + [`pool_offset`] / [`unpool_offset`] + `conv2d_transposed` bit
//! for bit on shapes that reach every conv path and schedule.

use super::*;
use crate::core::conv::{conv2d, conv2d_transposed, ConvAlgo, ConvGeom, PackedConv};
use crate::core::conv_tests::under_schedules;
use crate::core::pool::{maxpool2x2, unpool2x2, PoolIndex};
use crate::core::testutil::random_tensor;

fn bits(t: &Tensor) -> Vec<u32> {
    t.data().iter().map(|v| v.to_bits()).collect()
}

/// Full-map offsets of the 4 positions (row-major) and the pooled offset of every window
/// and channel of a `[B,H,W,C]` map, in order.
fn windows(shape: &[usize]) -> Vec<([usize; 4], usize)> {
    let [b, h, w, c] = [shape[0], shape[1], shape[2], shape[3]];
    let (ph, pw) = (h / 2, w / 2);
    let mut out = Vec::new();
    for n in 0..b {
        for i in 0..ph {
            for j in 0..pw {
                let at = |a: usize, e: usize| ((n * h + 2 * i + a) * w + 2 * j + e) * c;
                let o = ((n * ph + i) * pw + j) * c;
                for ch in 0..c {
                    let p = [at(0, 0), at(0, 1), at(1, 0), at(1, 1)].map(|p| p + ch);
                    out.push((p, o + ch));
                }
            }
        }
    }
    out
}

/// [`pool_offset`] as a scalar loop over windows.
fn naive_pool_offset(wd: &Tensor, y: &Tensor, old: &PoolIndex) -> (Vec<f32>, Vec<u8>) {
    let n = old.codes().len();
    let (mut delta, mut codes) = (vec![0.0f32; n], vec![0u8; n]);
    let (w, y) = (wd.data(), y.data());
    for (pos, o) in windows(wd.shape()) {
        let mut k = 0usize;
        let mut m = y[pos[0]] + w[pos[0]];
        for (code, &p) in pos.iter().enumerate().skip(1) {
            let v = y[p] + w[p];
            if v > m || v.is_nan() && !m.is_nan() {
                m = v;
                k = code;
            }
        }
        let ko = old.codes()[o] as usize;
        codes[o] = k as u8;
        delta[o] = if k == ko {
            w[pos[k]]
        } else {
            (y[pos[k]] - y[pos[ko]]) + w[pos[k]]
        };
    }
    (delta, codes)
}

/// `unpool(new, kn) − unpool(old, ko)` as a scalar loop: `same` where the codes agree.
fn naive_unpool(
    shape: &[usize],
    (kn, ko): (&PoolIndex, &PoolIndex),
    value: impl Fn(usize) -> (f32, f32, f32),
) -> Vec<f32> {
    let mut out = vec![0.0f32; shape.iter().product()];
    for (pos, o) in windows(shape) {
        let (a, b) = (kn.codes()[o] as usize, ko.codes()[o] as usize);
        let (same, new, old) = value(o);
        if a == b {
            out[pos[a]] = same;
        } else {
            out[pos[a]] = new;
            out[pos[b]] = old;
        }
    }
    out
}

/// Values in `{−1, −½, 0, ½, 1}` (many exact ties), a few NaN when `nan`.
fn quantised(shape: &[usize], seed: u64, nan: bool) -> Tensor {
    let r = random_tensor(shape, seed);
    let mut t = Tensor::from_vec(
        shape,
        r.data().iter().map(|v| (v * 2.0).round() * 0.5).collect(),
    )
    .unwrap();
    if nan {
        for (i, v) in t.data_mut().iter_mut().enumerate() {
            if i % 37 == 5 {
                *v = f32::NAN;
            }
        }
    }
    t
}

#[test]
fn kernels_equal_naive_loops_bit_for_bit_with_ties_nan_and_odd_sizes() {
    for (i, shape) in [
        [2usize, 4, 6, 3],
        [1, 5, 7, 17],
        [3, 2, 2, 33],
        [1, 3, 3, 1],
        [2, 9, 4, 20],
        [1, 1, 4, 2],
        [2, 6, 5, 16],
    ]
    .iter()
    .enumerate()
    {
        let seed = 100 * i as u64;
        for nan in [false, true] {
            let y = quantised(shape, seed, nan);
            // W⋆d: exact zeros, quantised values (ties) and small random ones
            let r = random_tensor(shape, seed + 1);
            let q = quantised(shape, seed + 2, nan);
            let wd: Vec<f32> = (0..r.len())
                .map(|j| match j % 3 {
                    0 => 0.0,
                    1 => q.data()[j],
                    _ => r.data()[j] * 1e-2,
                })
                .collect();
            let wd = Tensor::from_vec(shape, wd).unwrap();
            let (mut p0, mut base) = (Tensor::default(), PoolIndex::default());
            let (mut junk, mut other) = (Tensor::default(), PoolIndex::default());
            let ctx = format!("{shape:?} nan {nan}");
            if shape[1] < 2 || shape[2] < 2 {
                let mut codes = PoolIndex::default();
                codes.prepare(*shape);
                let (mut delta, mut inew) = (Tensor::default(), PoolIndex::default());
                pool_offset(&wd, &y, &codes, &mut delta, &mut inew).unwrap();
                assert_eq!(delta.len(), 0, "{ctx}");
                let mut m = Tensor::default();
                let e = Tensor::zeros(&codes.pooled_shape());
                unpool_offset(&e, &e, &codes, &codes, &mut m).unwrap();
                assert_eq!(m.shape(), shape, "{ctx}");
                assert!(m.data().iter().all(|&v| v == 0.0), "{ctx}");
                continue;
            }
            maxpool2x2(&y, &mut p0, &mut base).unwrap();
            maxpool2x2(&random_tensor(shape, seed + 3), &mut junk, &mut other).unwrap();
            for old in [&base, &other] {
                let (want, want_codes) = naive_pool_offset(&wd, &y, old);
                let (mut delta, mut inew) = (Tensor::default(), PoolIndex::default());
                pool_offset(&wd, &y, old, &mut delta, &mut inew).unwrap();
                let want_bits: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
                assert_eq!(bits(&delta), want_bits, "pool_offset {ctx}");
                assert_eq!(inew.codes(), want_codes, "pool_offset codes {ctx}");
                // unpool_offset and unpool_diff from the new and old codes
                let pooled = old.pooled_shape();
                let s = quantised(&pooled, seed + 4, nan);
                let d = random_tensor(&pooled, seed + 5);
                let mut m = Tensor::default();
                unpool_offset(&d, &s, &inew, old, &mut m).unwrap();
                let (dd, sd) = (d.data(), s.data());
                let want = naive_unpool(shape, (&inew, old), |o| (dd[o], sd[o] + dd[o], -sd[o]));
                let want_bits: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
                assert_eq!(bits(&m), want_bits, "unpool_offset {ctx}");
                let (s2, d2) = (
                    random_tensor(&pooled, seed + 6),
                    quantised(&pooled, seed + 7, nan),
                );
                let mut diff = Tensor::default();
                unpool_diff((&s, &d, old), (&s2, &d2, &inew), &mut diff).unwrap();
                let (s2d, d2d) = (s2.data(), d2.data());
                let want = naive_unpool(shape, (&inew, old), |o| (d2d[o] - dd[o], s2d[o], -sd[o]));
                let want_bits: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
                assert_eq!(bits(&diff), want_bits, "unpool_diff {ctx}");
            }
        }
    }
}

/// Conv shapes `(b, cin, cout, h, w, k, pad)` whose conv output is at least 2x2 and that
/// reach every forward and transposed path with `ConvAlgo::Auto`: Winograd (odd sizes, a
/// 4x4 map, border tiles), tiny maps, im2col (5x5 kernels, no padding) and col2im.
const SHAPES: [(usize, usize, usize, usize, usize, usize, usize); 11] = [
    (1, 16, 16, 4, 4, 3, 1),
    (2, 17, 33, 5, 7, 3, 1),
    (1, 70, 20, 9, 6, 3, 1),
    (3, 16, 24, 8, 8, 3, 1),
    (2, 20, 16, 13, 11, 3, 1),
    (2, 16, 24, 2, 2, 3, 1),
    (2, 3, 5, 7, 5, 3, 1),
    (1, 4, 3, 9, 4, 5, 2),
    (3, 2, 4, 6, 6, 3, 0),
    (2, 3, 20, 6, 7, 3, 1),
    (2, 18, 20, 6, 5, 3, 0),
];

/// `conv2d_pool_offset` = `conv2d` + `pool_offset` and `conv2d_transposed_unpool_offset` =
/// `unpool_offset` + `conv2d_transposed`, bit for bit, codes included.
fn check_fused(d: &Tensor, packed: &PackedConv, y_star: &Tensor, base: &PoolIndex, ctx: &str) {
    let (mut wd, mut want, mut want_idx) =
        (Tensor::default(), Tensor::default(), PoolIndex::default());
    conv2d(d, packed, None, &mut wd).unwrap();
    pool_offset(&wd, y_star, base, &mut want, &mut want_idx).unwrap();
    let (mut got, mut idx) = (Tensor::default(), PoolIndex::default());
    conv2d_pool_offset(d, packed, y_star, base, &mut got, &mut idx).unwrap();
    assert_eq!(got.shape(), want.shape(), "{ctx}");
    assert_eq!(bits(&got), bits(&want), "pooled offsets {ctx}");
    assert_eq!(idx, want_idx, "codes {ctx}");
    // top-down through the new and the base codes
    let pooled = base.pooled_shape();
    let s = random_tensor(&pooled, 31);
    let dp = random_tensor(&pooled, 32);
    let (mut m, mut want_dx, mut got_dx) =
        (Tensor::default(), Tensor::default(), Tensor::default());
    unpool_offset(&dp, &s, &idx, base, &mut m).unwrap();
    conv2d_transposed(&m, packed, &mut want_dx).unwrap();
    conv2d_transposed_unpool_offset(&dp, &s, &idx, base, packed, &mut got_dx).unwrap();
    assert_eq!(got_dx.shape(), d.shape(), "{ctx}");
    assert_eq!(
        bits(&got_dx),
        bits(&want_dx),
        "transposed unpool offset {ctx}"
    );
}

#[test]
fn fused_offset_kernels_equal_the_composition_bit_for_bit() {
    for (i, &(b, cin, cout, h, w, k, pad)) in SHAPES.iter().enumerate() {
        let g = ConvGeom { cin, cout, k, pad };
        let (oh, ow) = g.out_hw(h, w).unwrap();
        assert!(oh >= 2 && ow >= 2);
        let seed = 3000 + 10 * i as u64;
        let wt = random_tensor(&[cout, cin, k, k], seed);
        let x = random_tensor(&[b, h, w, cin], seed + 1);
        // small offsets, some large (argmaxes move), some exactly zero
        let r = random_tensor(&[b, h, w, cin], seed + 2);
        let dv = r.data().iter().enumerate();
        let dv = dv.map(|(j, v)| match j % 5 {
            0 => 0.0,
            1 => *v,
            _ => v * 1e-3,
        });
        let d = Tensor::from_vec(&[b, h, w, cin], dv.collect()).unwrap();
        let bias = random_tensor(&[cout], seed + 3);
        under_schedules(|sched| {
            for algo in [ConvAlgo::Auto, ConvAlgo::Direct] {
                let ctx = format!("b{b} {cin}->{cout} {h}x{w} k{k} p{pad} {algo:?} {sched}");
                let packed = PackedConv::new(&wt, pad, algo).unwrap();
                let (mut y, mut p, mut base) =
                    (Tensor::default(), Tensor::default(), PoolIndex::default());
                conv2d(&x, &packed, Some(bias.data()), &mut y).unwrap();
                maxpool2x2(&y, &mut p, &mut base).unwrap();
                check_fused(&d, &packed, &y, &base, &ctx);
                // a base map with exact ties and NaN
                let yq = quantised(y.shape(), seed + 4, true);
                maxpool2x2(&yq, &mut p, &mut base).unwrap();
                check_fused(&d, &packed, &yq, &base, &format!("{ctx} ties"));
                // zero offsets: no change, the base argmax
                let z = Tensor::zeros(d.shape());
                let (mut delta, mut idx) = (Tensor::default(), PoolIndex::default());
                maxpool2x2(&y, &mut p, &mut base).unwrap();
                conv2d_pool_offset(&z, &packed, &y, &base, &mut delta, &mut idx).unwrap();
                assert!(delta.data().iter().all(|&v| v == 0.0), "zero offsets {ctx}");
                assert_eq!(idx, base, "zero offsets codes {ctx}");
            }
        });
    }
}

#[test]
fn pooled_offsets_equal_differences_of_plain_evaluations() {
    let y = random_tensor(&[2, 4, 6, 3], 1);
    let mut wd = random_tensor(&[2, 4, 6, 3], 2);
    // small offsets leave most argmaxes in place; make a few large to move some
    for (i, v) in wd.data_mut().iter_mut().enumerate() {
        *v *= if i % 7 == 0 { 1.0 } else { 1e-3 };
    }
    let (mut p0, mut i0) = (Tensor::default(), PoolIndex::default());
    maxpool2x2(&y, &mut p0, &mut i0).unwrap();
    let mut full = y.clone();
    full.data_mut()
        .iter_mut()
        .zip(wd.data())
        .for_each(|(a, b)| *a += b);
    let (mut p1, mut i1) = (Tensor::default(), PoolIndex::default());
    maxpool2x2(&full, &mut p1, &mut i1).unwrap();
    let (mut delta, mut inew) = (Tensor::default(), PoolIndex::default());
    pool_offset(&wd, &y, &i0, &mut delta, &mut inew).unwrap();
    assert_eq!(inew, i1);
    assert!(i0 != i1, "some argmax should move");
    for ((dv, a), b) in delta.data().iter().zip(p1.data()).zip(p0.data()) {
        assert!((dv - (a - b)).abs() < 1e-6, "{dv} vs {}", a - b);
    }
    // unpool_offset = unpool(s* + d, new) − unpool(s*, old)
    let s = random_tensor(p0.shape(), 3);
    let d = random_tensor(p0.shape(), 4);
    let mut m = Tensor::default();
    unpool_offset(&d, &s, &i1, &i0, &mut m).unwrap();
    let mut sd = s.clone();
    sd.data_mut()
        .iter_mut()
        .zip(d.data())
        .for_each(|(a, b)| *a += b);
    let (mut u1, mut u0) = (Tensor::default(), Tensor::default());
    unpool2x2(&sd, &i1, &mut u1).unwrap();
    unpool2x2(&s, &i0, &mut u0).unwrap();
    for ((mv, a), b) in m.data().iter().zip(u1.data()).zip(u0.data()) {
        assert!((mv - (a - b)).abs() < 1e-6);
    }
    // unpool_diff between two offset states
    let d2 = random_tensor(p0.shape(), 5);
    let mut sd2 = s.clone();
    sd2.data_mut()
        .iter_mut()
        .zip(d2.data())
        .for_each(|(a, b)| *a += b);
    let mut diff = Tensor::default();
    unpool_diff((&sd, &d, &i1), (&sd2, &d2, &i0), &mut diff).unwrap();
    let mut u2 = Tensor::default();
    unpool2x2(&sd2, &i0, &mut u2).unwrap();
    for ((v, a), b) in diff.data().iter().zip(u2.data()).zip(u1.data()) {
        assert!((v - (a - b)).abs() < 1e-6);
    }
}
