//! Tests of every conv path (Winograd chunked and wide, tiny maps, im2col, col2im,
//! tap-by-tap weight gradients) against naive f64 loops on channels-last data, of the
//! fused pool/unpool variants against `conv2d` + `maxpool2x2` / `unpool2x2` (bit for
//! bit, argmax codes included), and of thread-count independence.

use super::conv::*;
use super::im2col::FORCE_ROWS;
use super::pool::{gather2x2, maxpool2x2, unpool2x2, PoolIndex};
use super::tensor::{nchw_to_nhwc, nhwc_to_nchw, Tensor};
use super::testutil::{assert_close, naive_conv_nchw, random_tensor};
use super::winograd::{Mode, FORCE_PLAN};

/// `y[b,i,j,o] = bias[o] + Σ W[o,c,u,v] x[b,i+u-p,j+v-p,c]` in f64 (NHWC, OIHW): the
/// NCHW naive loop of `testutil` between layout conversions.
fn naive_fwd(x: &Tensor, w: &Tensor, bias: Option<&[f32]>, pad: usize) -> Tensor {
    let y = naive_conv_nchw(&nhwc_to_nchw(x).unwrap(), w, bias, pad);
    nchw_to_nhwc(&y).unwrap()
}

/// `x̄[b,i,j,c] = Σ W[o,c,u,v] ȳ[b,i-u+p,j-v+p,o]` in f64, for an `h × w` input.
fn naive_tr(dy: &Tensor, w: &Tensor, pad: usize, h: usize, wd: usize) -> Tensor {
    let s = dy.shape();
    let (b, oh, ow, cout) = (s[0], s[1], s[2], s[3]);
    let (cin, k) = (w.shape()[1], w.shape()[2]);
    let mut dx = Tensor::zeros(&[b, h, wd, cin]);
    for n in 0..b {
        for i in 0..h {
            for j in 0..wd {
                for c in 0..cin {
                    let mut acc = 0.0f64;
                    for u in 0..k {
                        for v in 0..k {
                            let (yi, yj) = (
                                i as isize - u as isize + pad as isize,
                                j as isize - v as isize + pad as isize,
                            );
                            if yi < 0 || yj < 0 || yi as usize >= oh || yj as usize >= ow {
                                continue;
                            }
                            for o in 0..cout {
                                acc += w.data()[((o * cin + c) * k + u) * k + v] as f64
                                    * dy.data()
                                        [((n * oh + yi as usize) * ow + yj as usize) * cout + o]
                                        as f64;
                            }
                        }
                    }
                    dx.data_mut()[((n * h + i) * wd + j) * cin + c] = acc as f32;
                }
            }
        }
    }
    dx
}

/// `W̄[o,c,u,v] = scale · Σ ȳ[b,i,j,o] x[b,i+u-p,j+v-p,c]` in f64.
fn naive_wgrad(x: &Tensor, dy: &Tensor, k: usize, pad: usize, scale: f32) -> Tensor {
    let s = x.shape();
    let (b, h, wd, cin) = (s[0], s[1], s[2], s[3]);
    let (oh, ow, cout) = (dy.shape()[1], dy.shape()[2], dy.shape()[3]);
    let mut dw = Tensor::zeros(&[cout, cin, k, k]);
    for o in 0..cout {
        for c in 0..cin {
            for u in 0..k {
                for v in 0..k {
                    let mut acc = 0.0f64;
                    for n in 0..b {
                        for i in 0..oh {
                            for j in 0..ow {
                                let (iy, ix) = (
                                    (i + u) as isize - pad as isize,
                                    (j + v) as isize - pad as isize,
                                );
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                    acc += dy.data()[((n * oh + i) * ow + j) * cout + o] as f64
                                        * x.data()
                                            [((n * h + iy as usize) * wd + ix as usize) * cin + c]
                                            as f64;
                                }
                            }
                        }
                    }
                    dw.data_mut()[((o * cin + c) * k + u) * k + v] = scale * acc as f32;
                }
            }
        }
    }
    dw
}

/// `|a - b| <= tol · max|b|` element-wise (relative to the largest reference value,
/// however small).
fn assert_rel(a: &Tensor, b: &Tensor, tol: f32, ctx: &str) {
    assert_eq!(a.shape(), b.shape(), "{ctx}: shapes differ");
    let scale = b.data().iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = a
        .data()
        .iter()
        .zip(b.data())
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        worst <= tol * scale,
        "{ctx}: max |diff| {worst} > {tol} · {scale}"
    );
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.data().iter().map(|v| v.to_bits()).collect()
}

/// Shapes `(b, cin, cout, h, w, k, pad)` that reach every path with `ConvAlgo::Auto`.
const SHAPES: [(usize, usize, usize, usize, usize, usize, usize); 16] = [
    // Winograd (3x3/pad 1, >= 16 channels, maps >= 4x4), odd sizes and batch 1
    (1, 16, 16, 4, 4, 3, 1),
    (2, 17, 33, 5, 7, 3, 1),
    (1, 70, 20, 9, 6, 3, 1),
    (3, 16, 24, 8, 8, 3, 1),
    (2, 20, 16, 13, 11, 3, 1),
    // tiny maps
    (2, 16, 24, 2, 2, 3, 1),
    (3, 20, 17, 1, 1, 3, 1),
    (1, 16, 16, 1, 3, 3, 1),
    (2, 5, 3, 2, 1, 3, 1),
    (1, 1, 1, 1, 1, 1, 0),
    // im2col, C = 1, 5x5 kernels, no padding
    (2, 3, 5, 7, 5, 3, 1),
    (1, 4, 3, 9, 4, 5, 2),
    (2, 1, 2, 5, 9, 3, 2),
    (3, 2, 4, 6, 6, 3, 0),
    // transposed by col2im (3 < 16 output channels), taps weight gradient (pad 0)
    (2, 3, 20, 6, 7, 3, 1),
    (2, 18, 20, 6, 5, 3, 0),
];

/// Runs `f` under each forced schedule: the default, Winograd chunked and wide with
/// small chunks, and small im2col/taps chunks.
pub(crate) fn under_schedules(mut f: impl FnMut(&str)) {
    type Schedule = (&'static str, Option<(Mode, usize)>, Option<usize>);
    let runs: [Schedule; 4] = [
        ("default", None, None),
        ("chunked-3", Some((Mode::Chunked, 3)), Some(5)),
        ("wide-2", Some((Mode::Wide, 2)), Some(7)),
        ("chunked-1", Some((Mode::Chunked, 1)), Some(1)),
    ];
    for (name, plan, rows) in runs {
        FORCE_PLAN.set(plan);
        FORCE_ROWS.set(rows);
        f(name);
    }
    FORCE_PLAN.set(None);
    FORCE_ROWS.set(None);
}

#[test]
fn every_path_matches_naive_forward_transposed_and_weight_grad() {
    for (i, &(b, cin, cout, h, w, k, pad)) in SHAPES.iter().enumerate() {
        let seed = 1000 + 10 * i as u64;
        let x = random_tensor(&[b, h, w, cin], seed);
        let wt = random_tensor(&[cout, cin, k, k], seed + 1);
        let bias = random_tensor(&[cout], seed + 2);
        let g = ConvGeom { cin, cout, k, pad };
        let (oh, ow) = g.out_hw(h, w).unwrap();
        let dy = random_tensor(&[b, oh, ow, cout], seed + 3);
        let want_y = naive_fwd(&x, &wt, Some(bias.data()), pad);
        let want_dx = naive_tr(&dy, &wt, pad, h, w);
        let want_dw = naive_wgrad(&x, &dy, k, pad, 0.5);
        under_schedules(|sched| {
            for algo in [ConvAlgo::Auto, ConvAlgo::Direct] {
                let ctx = format!("b{b} {cin}->{cout} {h}x{w} k{k} p{pad} {algo:?} {sched}");
                let packed = PackedConv::new(&wt, pad, algo).unwrap();
                let mut y = Tensor::zeros(&[0]);
                conv2d(&x, &packed, Some(bias.data()), &mut y).unwrap();
                assert_close(&y, &want_y, 1e-4, &format!("conv2d {ctx}"));
                let mut dx = Tensor::zeros(&[0]);
                conv2d_transposed(&dy, &packed, &mut dx).unwrap();
                assert_close(&dx, &want_dx, 1e-4, &format!("conv2d_transposed {ctx}"));
                let mut dw = Tensor::zeros(&[0]);
                conv2d_weight_grad_with(&x, &dy, g, algo, 0.5, false, &mut dw).unwrap();
                assert_close(&dw, &want_dw, 1e-4, &format!("conv2d_weight_grad {ctx}"));
                conv2d_weight_grad_with(&x, &dy, g, algo, 0.5, true, &mut dw).unwrap();
                let twice = Tensor::from_vec(
                    want_dw.shape(),
                    want_dw.data().iter().map(|v| 2.0 * v).collect(),
                )
                .unwrap();
                assert_close(
                    &dw,
                    &twice,
                    1e-4,
                    &format!("conv2d_weight_grad accumulate {ctx}"),
                );
            }
        });
    }
}

/// `conv2d_pool` = `conv2d` + `maxpool2x2` and `conv2d_transposed_unpool` =
/// `unpool2x2` + `conv2d_transposed`, bit for bit, codes included.
fn check_fused(
    x: &Tensor,
    wt: &Tensor,
    bias: Option<&[f32]>,
    pad: usize,
    algo: ConvAlgo,
    ctx: &str,
) {
    let packed = PackedConv::new(wt, pad, algo).unwrap();
    let g = packed.geom();
    let (mut full, mut want, mut want_idx) = (
        Tensor::zeros(&[0]),
        Tensor::zeros(&[0]),
        PoolIndex::default(),
    );
    conv2d(x, &packed, bias, &mut full).unwrap();
    maxpool2x2(&full, &mut want, &mut want_idx).unwrap();
    let (mut got, mut idx) = (Tensor::zeros(&[0]), PoolIndex::default());
    conv2d_pool(x, &packed, bias, &mut got, &mut idx).unwrap();
    assert_eq!(got.shape(), want.shape(), "{ctx}");
    assert_eq!(bits(&got), bits(&want), "pooled values {ctx}");
    assert_eq!(idx, want_idx, "pool codes {ctx}");
    // top-down through the same index
    let s = random_tensor(want.shape(), 77);
    let (mut up, mut want_dx, mut got_dx) = (
        Tensor::zeros(&[0]),
        Tensor::zeros(&[0]),
        Tensor::zeros(&[0]),
    );
    unpool2x2(&s, &idx, &mut up).unwrap();
    conv2d_transposed(&up, &packed, &mut want_dx).unwrap();
    conv2d_transposed_unpool(&s, &idx, &packed, &mut got_dx).unwrap();
    assert_eq!(bits(&got_dx), bits(&want_dx), "transposed unpool {ctx}");
    let [_, h, w, _] = x.shape().try_into().unwrap();
    assert_close(
        &got_dx,
        &naive_tr(&up, wt, pad, h, w),
        1e-4,
        &format!("transposed unpool vs naive {ctx}"),
    );
    // the adjoint: conv then gather at the index, and at unrelated codes
    let (mut nobias, mut want_g, mut got_g) = (
        Tensor::zeros(&[0]),
        Tensor::zeros(&[0]),
        Tensor::zeros(&[0]),
    );
    conv2d(x, &packed, None, &mut nobias).unwrap();
    let (mut junk, mut other) = (Tensor::zeros(&[0]), PoolIndex::default());
    maxpool2x2(&random_tensor(full.shape(), 78), &mut junk, &mut other).unwrap();
    for ix in [&idx, &other] {
        gather2x2(&nobias, ix, &mut want_g).unwrap();
        conv2d_gather(x, &packed, ix, &mut got_g).unwrap();
        assert_eq!(bits(&got_g), bits(&want_g), "conv2d_gather {ctx}");
    }
    // weight gradient through the same index
    let (mut dw, mut want_dw) = (Tensor::zeros(&[0]), Tensor::zeros(&[0]));
    conv2d_weight_grad(x, &up, g, 1.0, false, &mut want_dw).unwrap();
    conv2d_weight_grad_unpool(x, &s, &idx, g, 1.0, false, &mut dw).unwrap();
    assert_eq!(bits(&dw), bits(&want_dw), "weight grad unpool {ctx}");
}

#[test]
fn fused_pool_and_unpool_equal_the_composition_bit_for_bit() {
    for (i, &(b, cin, cout, h, w, k, pad)) in SHAPES.iter().enumerate() {
        let g = ConvGeom { cin, cout, k, pad };
        let (oh, ow) = g.out_hw(h, w).unwrap();
        if oh < 2 || ow < 2 {
            continue;
        }
        let seed = 2000 + 10 * i as u64;
        let x = random_tensor(&[b, h, w, cin], seed);
        let wt = random_tensor(&[cout, cin, k, k], seed + 1);
        let bias = random_tensor(&[cout], seed + 2);
        under_schedules(|sched| {
            for algo in [ConvAlgo::Auto, ConvAlgo::Direct] {
                let ctx = format!("b{b} {cin}->{cout} {h}x{w} k{k} p{pad} {algo:?} {sched}");
                check_fused(&x, &wt, Some(bias.data()), pad, algo, &ctx);
                check_fused(&x, &wt, None, pad, algo, &format!("{ctx} no bias"));
                // zero input and zero bias: every window ties, every code is 0
                let z = Tensor::zeros(x.shape());
                let zb = vec![0.0f32; cout];
                check_fused(&z, &wt, Some(&zb), pad, algo, &format!("{ctx} zeros"));
                let packed = PackedConv::new(&wt, pad, algo).unwrap();
                let (mut y, mut idx) = (Tensor::zeros(&[0]), PoolIndex::default());
                conv2d_pool(&z, &packed, Some(&zb), &mut y, &mut idx).unwrap();
                assert!(
                    idx.codes().iter().all(|&c| c == 0),
                    "zero input codes {ctx}"
                );
                assert!(
                    y.data().iter().all(|&v| v == 0.0),
                    "zero input values {ctx}"
                );
            }
        });
    }
}

#[test]
fn fused_pool_handles_exact_ties_and_nan() {
    // a centre-tap identity kernel copies (quantised) inputs: many exact ties in windows
    for &(b, c, h, w) in &[
        (2usize, 16usize, 8usize, 8usize),
        (1, 20, 7, 9),
        (2, 3, 6, 5),
        (1, 16, 2, 2),
    ] {
        let mut wt = Tensor::zeros(&[c, c, 3, 3]);
        for o in 0..c {
            wt.data_mut()[((o * c + o) * 3 + 1) * 3 + 1] = 1.0;
        }
        let r = random_tensor(&[b, h, w, c], 5);
        let x = Tensor::from_vec(
            r.shape(),
            r.data().iter().map(|v| (v * 2.0).round() * 0.5).collect(),
        )
        .unwrap();
        let bias: Vec<f32> = (0..c).map(|o| (o % 3) as f32 * 0.25).collect();
        for algo in [ConvAlgo::Auto, ConvAlgo::Direct] {
            check_fused(
                &x,
                &wt,
                Some(&bias),
                1,
                algo,
                &format!("ties {b}x{h}x{w}x{c} {algo:?}"),
            );
            // the same with NaNs in the input: NaN wins its window
            let mut xn = x.clone();
            xn.data_mut()[3 * c + 1] = f32::NAN;
            let last = xn.len() - 1;
            xn.data_mut()[last] = f32::NAN;
            check_fused(
                &xn,
                &wt,
                Some(&bias),
                1,
                algo,
                &format!("nan {b}x{h}x{w}x{c} {algo:?}"),
            );
        }
    }
}

/// Outputs of every entry point, for the thread-count test.
fn all_outputs(x: &Tensor, wt: &Tensor, bias: &[f32], dy: &Tensor, pad: usize) -> Vec<Vec<u32>> {
    let packed = PackedConv::new(wt, pad, ConvAlgo::Auto).unwrap();
    let (mut y, mut dx, mut dw, mut p, mut idx, mut dxu) = (
        Tensor::zeros(&[0]),
        Tensor::zeros(&[0]),
        Tensor::zeros(&[0]),
        Tensor::zeros(&[0]),
        PoolIndex::default(),
        Tensor::zeros(&[0]),
    );
    conv2d(x, &packed, Some(bias), &mut y).unwrap();
    conv2d_transposed(dy, &packed, &mut dx).unwrap();
    conv2d_weight_grad(x, dy, packed.geom(), 1.0, false, &mut dw).unwrap();
    if x.shape()[1] >= 2 && x.shape()[2] >= 2 {
        conv2d_pool(x, &packed, Some(bias), &mut p, &mut idx).unwrap();
        conv2d_transposed_unpool(&p, &idx, &packed, &mut dxu).unwrap();
    }
    vec![
        bits(&y),
        bits(&dx),
        bits(&dw),
        bits(&p),
        idx.codes().iter().map(|&c| c as u32).collect(),
        bits(&dxu),
    ]
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    // large enough for several chunks / tasks on every path
    let shapes = [
        (8, 64, 64, 8, 8),
        (64, 16, 16, 12, 12),
        (16, 128, 256, 2, 2),
        (32, 3, 32, 9, 9),
        (4, 64, 512, 1, 1),
        (16, 40, 24, 16, 16),
    ];
    for (i, &(b, cin, cout, h, w)) in shapes.iter().enumerate() {
        let seed = 3000 + 10 * i as u64;
        let x = random_tensor(&[b, h, w, cin], seed);
        let wt = random_tensor(&[cout, cin, 3, 3], seed + 1);
        let bias = random_tensor(&[cout], seed + 2);
        let dy = random_tensor(&[b, h, w, cout], seed + 3);
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| all_outputs(&x, &wt, bias.data(), &dy, 1))
        };
        let one = run(1);
        for threads in [2, 3] {
            assert!(
                one == run(threads),
                "{b}x{h}x{w} {cin}->{cout}: 1 vs {threads} threads"
            );
        }
    }
}

#[test]
fn winograd_weight_grad_is_accurate_on_realistic_states() {
    // states clamped to [0, 1] (many exact 0 and 1), small nudged differences as ȳ
    for &(b, c, h) in &[(8usize, 64usize, 8usize), (4, 32, 16), (16, 128, 4)] {
        let r = random_tensor(&[b, h, h, c], 41);
        let x = Tensor::from_vec(
            r.shape(),
            r.data()
                .iter()
                .map(|v| (0.5 + 0.8 * v).clamp(0.0, 1.0))
                .collect(),
        )
        .unwrap();
        let d = random_tensor(&[b, h, h, c], 42);
        let dy = Tensor::from_vec(
            d.shape(),
            d.data().iter().map(|v| 1e-3 * v + 2e-4).collect(),
        )
        .unwrap();
        let g = ConvGeom {
            cin: c,
            cout: c,
            k: 3,
            pad: 1,
        };
        let mut dw = Tensor::zeros(&[0]);
        conv2d_weight_grad(&x, &dy, g, 1.0, false, &mut dw).unwrap();
        assert_rel(
            &dw,
            &naive_wgrad(&x, &dy, 3, 1, 1.0),
            1e-4,
            &format!("realistic wgrad {b}x{h}x{h}x{c}"),
        );
        // and centred data with cancellations
        let xc = random_tensor(&[b, h, h, c], 43);
        let mut dw = Tensor::zeros(&[0]);
        conv2d_weight_grad(&xc, &d, g, 1.0, false, &mut dw).unwrap();
        assert_rel(
            &dw,
            &naive_wgrad(&xc, &d, 3, 1, 1.0),
            1e-4,
            &format!("random wgrad {b}x{h}x{h}x{c}"),
        );
    }
}

#[test]
fn pooled_shape_errors() {
    let packed = PackedConv::new(&Tensor::zeros(&[4, 3, 3, 3]), 1, ConvAlgo::Auto).unwrap();
    let (mut y, mut idx) = (Tensor::zeros(&[0]), PoolIndex::default());
    let e = conv2d_pool(
        &Tensor::zeros(&[2, 1, 5, 3]),
        &packed,
        None,
        &mut y,
        &mut idx,
    )
    .unwrap_err();
    assert!(e.to_string().contains("conv2d_pool: input"), "{e}");
    conv2d_pool(
        &Tensor::zeros(&[2, 4, 4, 3]),
        &packed,
        None,
        &mut y,
        &mut idx,
    )
    .unwrap();
    let e =
        conv2d_transposed_unpool(&Tensor::zeros(&[2, 2, 2, 5]), &idx, &packed, &mut y).unwrap_err();
    assert!(e.to_string().contains("pooled map"), "{e}");
}

#[test]
fn repack_equals_a_fresh_pack() {
    // every layout in use: Winograd (8x8), tiny maps (2x2), col2im (few outputs), im2col
    for &(cin, cout, hw) in &[
        (16usize, 24usize, 8usize),
        (20, 16, 2),
        (24, 3, 6),
        (3, 5, 5),
    ] {
        let x = random_tensor(&[2, hw, hw, cin], 1);
        let dy = random_tensor(&[2, hw, hw, cout], 2);
        let (w1, w2) = (
            random_tensor(&[cout, cin, 3, 3], 3),
            random_tensor(&[cout, cin, 3, 3], 4),
        );
        let mut packed = PackedConv::new(&w1, 1, ConvAlgo::Auto).unwrap();
        let run = |p: &PackedConv| {
            let (mut y, mut dx, mut s, mut idx, mut du) = (
                Tensor::zeros(&[0]),
                Tensor::zeros(&[0]),
                Tensor::zeros(&[0]),
                PoolIndex::default(),
                Tensor::zeros(&[0]),
            );
            conv2d(&x, p, None, &mut y).unwrap();
            conv2d_transposed(&dy, p, &mut dx).unwrap();
            conv2d_pool(&x, p, None, &mut s, &mut idx).unwrap();
            conv2d_transposed_unpool(&s, &idx, p, &mut du).unwrap();
            vec![bits(&y), bits(&dx), bits(&s), bits(&du)]
        };
        let _ = run(&packed);
        packed.repack(&w2).unwrap();
        assert!(
            run(&packed) == run(&PackedConv::new(&w2, 1, ConvAlgo::Auto).unwrap()),
            "{cin}->{cout} @{hw}"
        );
        assert!(packed
            .repack(&random_tensor(&[cout, cin, 5, 5], 5))
            .is_err());
    }
}
