use ffebm::core::dense::*;
use ffebm::core::matmul::*;
use ffebm::core::testutil::random_tensor;
use ffebm::core::Tensor;
use std::time::Instant;
fn t(f: &mut dyn FnMut()) -> f64 {
    f();
    let s = Instant::now();
    for _ in 0..20 {
        f();
    }
    s.elapsed().as_secs_f64() / 20.0
}
fn main() {
    for &(b, fin, fout) in &[
        (64usize, 4096usize, 256usize),
        (128, 4096, 256),
        (64, 512, 256),
        (2, 4096, 4096),
    ] {
        let x = random_tensor(&[b, fin], 1);
        let w = random_tensor(&[fout, fin], 2);
        let dy = random_tensor(&[b, fout], 3);
        let mut y = Tensor::default();
        let mut dx = Tensor::default();
        let fl = 2.0 * (b * fin * fout) as f64;
        let f = t(&mut || linear(&x, &w, None, &mut y).unwrap());
        let tr = t(&mut || linear_transposed(&dy, &w, &mut dx).unwrap());
        // alternative: y^T = W x^T  (W as lhs)
        let mut yt = vec![0f32; fout * b];
        let alt = t(&mut || {
            matmul(
                MatMut::row_major(&mut yt, fout, b),
                MatRef::row_major(w.data(), fout, fin),
                MatRef::row_major(x.data(), b, fin).t(),
                false,
                1.0,
                Par::Pool,
            )
        });
        let alt1 = t(&mut || {
            matmul(
                MatMut::row_major(&mut yt, fout, b),
                MatRef::row_major(w.data(), fout, fin),
                MatRef::row_major(x.data(), b, fin).t(),
                false,
                1.0,
                Par::Seq,
            )
        });
        let mut wt = vec![0f32; fin * fout];
        for o in 0..fout {
            for i in 0..fin {
                wt[i * fout + o] = w.data()[o * fin + i];
            }
        }
        let mut y2 = vec![0f32; b * fout];
        let pre = t(&mut || {
            matmul(
                MatMut::row_major(&mut y2, b, fout),
                MatRef::row_major(x.data(), b, fin),
                MatRef::row_major(&wt, fin, fout),
                false,
                1.0,
                Par::Pool,
            )
        });
        let pre1 = t(&mut || {
            matmul(
                MatMut::row_major(&mut y2, b, fout),
                MatRef::row_major(x.data(), b, fin),
                MatRef::row_major(&wt, fin, fout),
                false,
                1.0,
                Par::Seq,
            )
        });
        println!(
            "   pre-transposed rhs: {:.0} GF/s (seq {:.0})",
            fl / pre / 1e9,
            fl / pre1 / 1e9
        );
        println!(
            "b{b} {fin}->{fout}: linear {:.0} GF/s, transposed {:.0}, W-lhs {:.0} (seq {:.0})",
            fl / f / 1e9,
            fl / tr / 1e9,
            fl / alt / 1e9,
            fl / alt1 / 1e9
        );
    }
}
#[allow(dead_code)]
fn unused() {}
