//! The original conv tests: forward, transposed and weight gradient against naive NCHW
//! loops on small odd shapes (the per-path tests are in `conv_tests`).

use super::conv::*;
use super::tensor::Tensor;
use crate::core::tensor::{nchw_to_nhwc, nhwc_to_nchw};
use crate::core::testutil::{assert_close, naive_conv_nchw, random_tensor};

#[allow(clippy::too_many_arguments)]
fn check_forward(
    b: usize,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    k: usize,
    pad: usize,
    algo: ConvAlgo,
    seed: u64,
) {
    let x = random_tensor(&[b, cin, h, w], seed);
    let wt = random_tensor(&[cout, cin, k, k], seed + 1);
    let bias = random_tensor(&[cout], seed + 2);
    let want = naive_conv_nchw(&x, &wt, Some(bias.data()), pad);
    let packed = PackedConv::new(&wt, pad, algo).unwrap();
    let mut y = Tensor::zeros(&[0]);
    conv2d(
        &nchw_to_nhwc(&x).unwrap(),
        &packed,
        Some(bias.data()),
        &mut y,
    )
    .unwrap();
    assert_close(
        &nhwc_to_nchw(&y).unwrap(),
        &want,
        1e-4,
        &format!("conv2d b{b} {cin}->{cout} {h}x{w} k{k} p{pad} {algo:?}"),
    );
}

#[test]
fn forward_matches_naive_on_odd_shapes() {
    for (i, &(b, cin, cout, h, w, k, pad)) in [
        (1, 1, 1, 1, 1, 1, 0),
        (1, 1, 1, 3, 3, 3, 1),
        (2, 3, 5, 7, 5, 3, 1),
        (3, 2, 4, 6, 6, 3, 0),
        (1, 4, 3, 9, 4, 5, 2),
        (2, 5, 7, 8, 8, 3, 1),
        (1, 1, 2, 5, 9, 3, 2),
        (2, 6, 3, 13, 11, 3, 1),
    ]
    .iter()
    .enumerate()
    {
        check_forward(b, cin, cout, h, w, k, pad, ConvAlgo::Direct, 10 * i as u64);
        check_forward(
            b,
            cin,
            cout,
            h,
            w,
            k,
            pad,
            ConvAlgo::Auto,
            10 * i as u64 + 5,
        );
    }
}

/// `<conv(x), ȳ> = <x, convᵀ(ȳ)>` and the transposed conv equals the naive formula.
#[test]
fn transposed_is_the_adjoint_and_matches_naive() {
    for (i, &(b, cin, cout, h, w, k, pad, algo)) in [
        (2, 3, 4, 5, 6, 3, 1, ConvAlgo::Direct),
        (1, 1, 1, 4, 4, 3, 1, ConvAlgo::Auto),
        (3, 5, 2, 9, 7, 3, 1, ConvAlgo::Auto),
        (2, 2, 3, 6, 6, 3, 0, ConvAlgo::Direct),
        (1, 4, 4, 5, 5, 5, 2, ConvAlgo::Direct),
    ]
    .iter()
    .enumerate()
    {
        let g = ConvGeom { cin, cout, k, pad };
        let (oh, ow) = g.out_hw(h, w).unwrap();
        let x = random_tensor(&[b, h, w, cin], 100 + i as u64);
        let dy = random_tensor(&[b, oh, ow, cout], 200 + i as u64);
        let wt = random_tensor(&[cout, cin, k, k], 300 + i as u64);
        let packed = PackedConv::new(&wt, pad, algo).unwrap();
        let mut y = Tensor::zeros(&[0]);
        conv2d(&x, &packed, None, &mut y).unwrap();
        let mut dx = Tensor::zeros(&[0]);
        conv2d_transposed(&dy, &packed, &mut dx).unwrap();
        assert_eq!(dx.shape(), x.shape());
        let lhs: f64 = y
            .data()
            .iter()
            .zip(dy.data())
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        let rhs: f64 = x
            .data()
            .iter()
            .zip(dx.data())
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        assert!(
            (lhs - rhs).abs() <= 1e-4 * lhs.abs().max(1.0),
            "adjoint {lhs} vs {rhs}"
        );
        // naive: x̄[c,i,j] = Σ W[o,c,u,v] ȳ[o,i-u+p,j-v+p]
        let dyn_ = nhwc_to_nchw(&dy).unwrap();
        let mut want = Tensor::zeros(&[b, cin, h, w]);
        for n in 0..b {
            for c in 0..cin {
                for ii in 0..h {
                    for jj in 0..w {
                        let mut s = 0.0f64;
                        for o in 0..cout {
                            for u in 0..k {
                                for v in 0..k {
                                    let (yi, yj) = (
                                        ii as isize - u as isize + pad as isize,
                                        jj as isize - v as isize + pad as isize,
                                    );
                                    if yi >= 0
                                        && yj >= 0
                                        && (yi as usize) < oh
                                        && (yj as usize) < ow
                                    {
                                        s += wt.data()[((o * cin + c) * k + u) * k + v] as f64
                                            * dyn_.data()[((n * cout + o) * oh + yi as usize) * ow
                                                + yj as usize]
                                                as f64;
                                    }
                                }
                            }
                        }
                        want.data_mut()[((n * cin + c) * h + ii) * w + jj] = s as f32;
                    }
                }
            }
        }
        assert_close(
            &nhwc_to_nchw(&dx).unwrap(),
            &want,
            1e-4,
            "conv2d_transposed",
        );
    }
}

#[test]
fn weight_grad_matches_naive_and_accumulates() {
    for (i, &(b, cin, cout, h, w, k, pad)) in [
        (2, 3, 4, 5, 6, 3, 1),
        (1, 1, 1, 3, 3, 3, 1),
        (3, 2, 5, 7, 4, 3, 0),
        (1, 2, 2, 6, 6, 5, 2),
    ]
    .iter()
    .enumerate()
    {
        let g = ConvGeom { cin, cout, k, pad };
        let (oh, ow) = g.out_hw(h, w).unwrap();
        let x = random_tensor(&[b, h, w, cin], 400 + i as u64);
        let dy = random_tensor(&[b, oh, ow, cout], 500 + i as u64);
        let mut dw = Tensor::zeros(&[0]);
        conv2d_weight_grad(&x, &dy, g, 0.5, false, &mut dw).unwrap();
        let (xn, dyn_) = (nhwc_to_nchw(&x).unwrap(), nhwc_to_nchw(&dy).unwrap());
        let mut want = Tensor::zeros(&[cout, cin, k, k]);
        for o in 0..cout {
            for c in 0..cin {
                for u in 0..k {
                    for v in 0..k {
                        let mut s = 0.0f64;
                        for n in 0..b {
                            for ii in 0..oh {
                                for jj in 0..ow {
                                    let (xi, xj) = (
                                        ii as isize + u as isize - pad as isize,
                                        jj as isize + v as isize - pad as isize,
                                    );
                                    if xi >= 0 && xj >= 0 && (xi as usize) < h && (xj as usize) < w
                                    {
                                        s += dyn_.data()[((n * cout + o) * oh + ii) * ow + jj]
                                            as f64
                                            * xn.data()[((n * cin + c) * h + xi as usize) * w
                                                + xj as usize]
                                                as f64;
                                    }
                                }
                            }
                        }
                        want.data_mut()[((o * cin + c) * k + u) * k + v] = 0.5 * s as f32;
                    }
                }
            }
        }
        assert_close(&dw, &want, 1e-4, "conv2d_weight_grad");
        conv2d_weight_grad(&x, &dy, g, 0.5, true, &mut dw).unwrap();
        let twice =
            Tensor::from_vec(want.shape(), want.data().iter().map(|v| 2.0 * v).collect()).unwrap();
        assert_close(&dw, &twice, 1e-4, "conv2d_weight_grad accumulate");
    }
}

#[test]
fn shape_errors_name_the_operand() {
    let packed = PackedConv::new(&Tensor::zeros(&[4, 3, 3, 3]), 1, ConvAlgo::Direct).unwrap();
    let mut y = Tensor::zeros(&[0]);
    let e = conv2d(&Tensor::zeros(&[2, 5, 5, 2]), &packed, None, &mut y).unwrap_err();
    assert!(
        e.to_string()
            .contains("conv2d: input has shape [2, 5, 5, 2]"),
        "{e}"
    );
    let e = conv2d(
        &Tensor::zeros(&[2, 5, 5, 3]),
        &packed,
        Some(&[0.0; 3]),
        &mut y,
    )
    .unwrap_err();
    assert!(e.to_string().contains("bias"), "{e}");
}
