//! 2x2 stride-2 max-pooling on channels-last maps, with argmax indices, and the two
//! maps that use the indices: unpool (scatter) and its adjoint, gather.
//!
//! `y[b,i,j,c] = max_{a,e ∈ {0,1}} x[b, 2i+a, 2j+e, c]`; ties go to the **first maximum in
//! row-major window order** (strict `>`), as PyTorch's CPU kernel does; a NaN wins.
//! Odd sizes are floored (the last row/column is not pooled).

use super::tensor::{dims4, ShapeError, Tensor};
use rayon::prelude::*;

/// Argmax positions of a 2x2/2 max-pool: one byte `2a + e` per pooled element.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolIndex {
    /// Shape of the map that was pooled, `[B, H, W, C]`.
    input_shape: Vec<usize>,
    idx: Vec<u8>,
}

impl PoolIndex {
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// Shape of the pooled map.
    pub fn pooled_shape(&self) -> [usize; 4] {
        let s = &self.input_shape;
        [s[0], s[1] / 2, s[2] / 2, s[3]]
    }

    /// Raw argmax codes (for tests and tie checks).
    pub fn codes(&self) -> &[u8] {
        &self.idx
    }

    /// Records that a map of `input_shape` (`[B,H,W,C]`) is being pooled and returns the
    /// codes to fill, one per pooled element (for the fused conv + pool kernels).
    pub(crate) fn prepare(&mut self, input_shape: [usize; 4]) -> &mut [u8] {
        let [b, h, w, c] = input_shape;
        self.input_shape.clear();
        self.input_shape.extend_from_slice(&input_shape);
        self.idx.resize(b * (h / 2) * (w / 2) * c, 0);
        &mut self.idx
    }
}

/// Samples per parallel task for memory-bound loops over a batch.
pub(crate) fn samples_per_task(per_sample: usize) -> usize {
    ((1 << 16) / per_sample.max(1)).max(1)
}

/// `y = maxpool2x2(x)`, recording the argmax of every window in `idx`.
pub fn maxpool2x2(x: &Tensor, y: &mut Tensor, idx: &mut PoolIndex) -> Result<(), ShapeError> {
    let [b, h, w, c] = dims4("maxpool2x2", "input", x)?;
    let (ph, pw) = (h / 2, w / 2);
    if ph == 0 || pw == 0 {
        return Err(ShapeError::new(
            "maxpool2x2",
            "input",
            x.shape(),
            "a map of at least 2x2",
        ));
    }
    y.ensure_shape(&[b, ph, pw, c]);
    idx.input_shape = x.shape().to_vec();
    idx.idx.resize(b * ph * pw * c, 0);
    let xs = x.data();
    let per = ph * pw * c;
    let spt = samples_per_task(h * w * c);
    y.data_mut()
        .par_chunks_mut(spt * per)
        .zip(idx.idx.par_chunks_mut(spt * per))
        .enumerate()
        .for_each(|(t, (ys, is))| {
            for (ls, (yb, ib)) in ys.chunks_mut(per).zip(is.chunks_mut(per)).enumerate() {
                let n = t * spt + ls;
                for i in 0..ph {
                    for j in 0..pw {
                        let base = |a: usize, e: usize| ((n * h + 2 * i + a) * w + 2 * j + e) * c;
                        let (r00, r01, r10, r11) = (base(0, 0), base(0, 1), base(1, 0), base(1, 1));
                        let o = (i * pw + j) * c;
                        for ch in 0..c {
                            let mut m = xs[r00 + ch];
                            let mut k = 0u8;
                            for (code, r) in [(1u8, r01), (2, r10), (3, r11)] {
                                let v = xs[r + ch];
                                if v > m || v.is_nan() && !m.is_nan() {
                                    m = v;
                                    k = code;
                                }
                            }
                            yb[o + ch] = m;
                            ib[o + ch] = k;
                        }
                    }
                }
            }
        });
    Ok(())
}

fn check_pooled(
    op: &'static str,
    operand: &'static str,
    t: &Tensor,
    idx: &PoolIndex,
) -> Result<(), ShapeError> {
    t.expect_shape(op, operand, &idx.pooled_shape())
}

/// `out = unpool(s, idx)`: zeros of the pooled map's input shape, with `s[b,i,j,c]` placed
/// at its window's argmax (PyTorch `max_unpool2d`).
pub fn unpool2x2(s: &Tensor, idx: &PoolIndex, out: &mut Tensor) -> Result<(), ShapeError> {
    check_pooled("unpool2x2", "pooled map", s, idx)?;
    let [h, w, c] = [idx.input_shape[1], idx.input_shape[2], idx.input_shape[3]];
    let [_, ph, pw, _] = idx.pooled_shape();
    out.ensure_shape(&idx.input_shape);
    let (ss, codes) = (s.data(), &idx.idx);
    let per_in = h * w * c;
    let spt = samples_per_task(per_in);
    out.data_mut()
        .par_chunks_mut(spt * per_in)
        .enumerate()
        .for_each(|(t, os)| {
            os.fill(0.0);
            for (ls, ob) in os.chunks_mut(per_in).enumerate() {
                let n = t * spt + ls;
                for i in 0..ph {
                    for j in 0..pw {
                        let src = ((n * ph + i) * pw + j) * c;
                        for ch in 0..c {
                            let k = codes[src + ch] as usize;
                            ob[((2 * i + k / 2) * w + 2 * j + k % 2) * c + ch] = ss[src + ch];
                        }
                    }
                }
            }
        });
    Ok(())
}

/// `out[b,i,j,c] = full[b, 2i+a, 2j+e, c]` at the recorded argmax `(a,e)`: the adjoint of
/// [`unpool2x2`] and the backward pass of [`maxpool2x2`].
pub fn gather2x2(full: &Tensor, idx: &PoolIndex, out: &mut Tensor) -> Result<(), ShapeError> {
    full.expect_shape("gather2x2", "full map", &idx.input_shape)?;
    let [h, w, c] = [idx.input_shape[1], idx.input_shape[2], idx.input_shape[3]];
    let shape = idx.pooled_shape();
    let [_, ph, pw, _] = shape;
    out.ensure_shape(&shape);
    let (fs, codes) = (full.data(), &idx.idx);
    let per = ph * pw * c;
    let spt = samples_per_task(h * w * c);
    out.data_mut()
        .par_chunks_mut(spt * per)
        .enumerate()
        .for_each(|(t, os)| {
            for (ls, ob) in os.chunks_mut(per).enumerate() {
                let n = t * spt + ls;
                for i in 0..ph {
                    for j in 0..pw {
                        let o = (i * pw + j) * c;
                        for ch in 0..c {
                            let k = codes[n * per + o + ch] as usize;
                            ob[o + ch] = fs[((n * h + 2 * i + k / 2) * w + 2 * j + k % 2) * c + ch];
                        }
                    }
                }
            }
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testutil::random_tensor;

    #[test]
    fn ties_go_to_the_first_maximum() {
        // all-equal windows, and windows with a tie between later positions
        let x =
            Tensor::from_vec(&[1, 2, 4, 1], vec![1.0, 1.0, 0.0, 2.0, 1.0, 1.0, 2.0, 2.0]).unwrap();
        let (mut y, mut idx) = (Tensor::zeros(&[0]), PoolIndex::default());
        maxpool2x2(&x, &mut y, &mut idx).unwrap();
        assert_eq!(y.data(), &[1.0, 2.0]);
        assert_eq!(idx.codes(), &[0, 1]);
        let z = Tensor::zeros(&[3, 6, 6, 5]);
        maxpool2x2(&z, &mut y, &mut idx).unwrap();
        assert!(idx.codes().iter().all(|&k| k == 0));
    }

    #[test]
    fn matches_naive_on_odd_sizes_and_unpool_gather_are_adjoint() {
        for (seed, &(b, h, w, c)) in [
            (1usize, 5usize, 7usize, 3usize),
            (2, 2, 2, 1),
            (3, 8, 6, 4),
            (1, 3, 3, 2),
        ]
        .iter()
        .enumerate()
        {
            let x = random_tensor(&[b, h, w, c], seed as u64);
            let (mut y, mut idx) = (Tensor::zeros(&[0]), PoolIndex::default());
            maxpool2x2(&x, &mut y, &mut idx).unwrap();
            let (ph, pw) = (h / 2, w / 2);
            for n in 0..b {
                for i in 0..ph {
                    for j in 0..pw {
                        for ch in 0..c {
                            let at = |a: usize, e: usize| {
                                x.data()[((n * h + 2 * i + a) * w + 2 * j + e) * c + ch]
                            };
                            let (mut m, mut k) = (at(0, 0), 0);
                            for (kk, (a, e)) in [(0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
                                if at(a, e) > m {
                                    m = at(a, e);
                                    k = kk + 1;
                                }
                            }
                            let o = ((n * ph + i) * pw + j) * c + ch;
                            assert_eq!(y.data()[o], m);
                            assert_eq!(idx.codes()[o] as usize, k);
                        }
                    }
                }
            }
            // gather(x) = pooled values; <unpool(s), f> = <s, gather(f)>
            let mut g = Tensor::zeros(&[0]);
            gather2x2(&x, &idx, &mut g).unwrap();
            assert_eq!(g, y);
            let s = random_tensor(&[b, ph, pw, c], 50 + seed as u64);
            let f = random_tensor(&[b, h, w, c], 60 + seed as u64);
            let mut u = Tensor::zeros(&[0]);
            unpool2x2(&s, &idx, &mut u).unwrap();
            gather2x2(&f, &idx, &mut g).unwrap();
            let lhs: f64 = u
                .data()
                .iter()
                .zip(f.data())
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum();
            let rhs: f64 = s
                .data()
                .iter()
                .zip(g.data())
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum();
            assert!((lhs - rhs).abs() < 1e-9, "{lhs} vs {rhs}");
            assert_eq!(
                u.data().iter().filter(|v| **v != 0.0).count(),
                s.data().iter().filter(|v| **v != 0.0).count()
            );
        }
    }

    #[test]
    fn shape_errors() {
        let (mut y, mut idx) = (Tensor::zeros(&[0]), PoolIndex::default());
        assert!(maxpool2x2(&Tensor::zeros(&[1, 1, 4, 2]), &mut y, &mut idx)
            .unwrap_err()
            .to_string()
            .contains("at least 2x2"));
        maxpool2x2(&Tensor::zeros(&[1, 4, 4, 2]), &mut y, &mut idx).unwrap();
        let e = unpool2x2(&Tensor::zeros(&[1, 2, 2, 3]), &idx, &mut y).unwrap_err();
        assert!(
            e.to_string()
                .contains("unpool2x2: pooled map has shape [1, 2, 2, 3]"),
            "{e}"
        );
    }
}
