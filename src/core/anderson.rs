//! Anderson acceleration of a fixed-point map `x ↦ g(x)`, per sample (Walker & Ni 2011; the
//! settings of torchdeq's `anderson_solver`). With the last `n ≤ m` iterates `x_i`, their map
//! values `g_i = g(x_i)` and residuals `f_i = g_i − x_i` (all layers of one sample as one
//! vector), the next iterate is
//!
//! ```text
//! α   = argmin_α ‖Σ_i α_i f_i‖²_w + λ·tr(G)/n·‖α‖²   subject to Σ_i α_i = 1,
//!       G_ij = Σ_l w_l ⟨f_i, f_j⟩_l,   w_l = 1 / ‖g_{n,l}‖²
//! x⁺  = Σ_i α_i (g_i − (1 − τ) f_i)          (τ = 1: Σ α_i g_i)
//! ```
//!
//! (the inner product weights each layer `l` by the inverse squared norm of its latest map
//! value, as the relative convergence measure does), solved through the bordered system `[[0, 1ᵀ], [1, G + λ̃ I]] [ν; α] = [1; 0]` in f64 by
//! Gaussian elimination with partial pivoting. Unlike torchdeq, whose `λ` is absolute, the
//! regularisation is scaled by the mean squared residual `tr(G)/n`, so that it means the same
//! for every state size and does not take over near convergence (where an absolute `λ`
//! dwarfs `G` and turns the mixing into a plain average of the history). A sample whose
//! solve is ill-conditioned (a pivot below `1e-12` of the largest, a non-finite weight, or
//! `Σ|α_i| > 1e4`) falls back to the plain step `x⁺ = g_n`.

use super::{ShapeError, Tensor};
use rayon::prelude::*;

/// Anderson settings: memory `m` (history length), regularisation `λ` (relative, see the
/// module documentation) and mixing `τ` (`1`: the map values only).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AndersonParams {
    pub m: usize,
    pub lambda: f32,
    pub tau: f32,
}

impl Default for AndersonParams {
    /// torchdeq's defaults: m 6, λ 1e-4, τ 1.
    fn default() -> Self {
        AndersonParams {
            m: 6,
            lambda: 1e-4,
            tau: 1.0,
        }
    }
}

/// The domain a layer's states must stay in (after mixing they are projected back into it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StateBox<'a> {
    /// `[0, 1]` (hard-sigmoid layers).
    Unit,
    /// No constraint (identity and linear layers).
    Free,
    /// The diode cone: the first half of the units `≥ 0`, the second half `≤ 0`.
    Diode,
    /// Diodes with a bound `t_i` per unit (`[F]`): the first half `≥ t_i`, the second `≤ t_i`.
    DiodeBounds(&'a [f32]),
}

/// Projects `x` into `bx` shifted by `−base` (offset form: `base + x ∈ bx`); `base` has
/// `x`'s shape.
pub fn project(x: &mut Tensor, bx: StateBox, base: Option<&Tensor>) -> Result<(), ShapeError> {
    if let Some(b) = base {
        x.expect_shape("anderson::project", "base", b.shape())?;
    }
    let per = x.row_len().max(1);
    if let StateBox::DiodeBounds(t) = bx {
        if t.len() != per {
            return Err(ShapeError::new(
                "anderson::project",
                "diode bounds",
                &[t.len()],
                format!("[{per}]"),
            ));
        }
    }
    let half = per / 2;
    let bd = base.map(|b| b.data());
    for (j, v) in x.data_mut().iter_mut().enumerate() {
        let s = bd.map_or(0.0, |b| b[j]);
        *v = match bx {
            StateBox::Unit => v.clamp(-s, 1.0 - s),
            StateBox::Free => *v,
            StateBox::Diode if j % per < half => v.max(-s),
            StateBox::Diode => v.min(-s),
            StateBox::DiodeBounds(t) if j % per < half => v.max(t[j % per] - s),
            StateBox::DiodeBounds(t) => v.min(t[j % per] - s),
        };
    }
    Ok(())
}

/// The mixing weights `α` (`n` of them) for the row-major `n×n` Gram matrix of the
/// residuals, or `None` when the solve is ill-conditioned (see the module documentation).
pub fn mixing_weights(gram: &[f64], n: usize, lambda: f64) -> Option<Vec<f64>> {
    if n == 0 || gram.len() != n * n {
        return None;
    }
    // the weights do not change when G is scaled: solve with G / (tr(G)/n), whose entries
    // are O(1) like the border's, so that the conditioning test is scale-free
    let trace = (0..n).map(|i| gram[i * n + i]).sum::<f64>() / n as f64;
    if !(trace.is_finite() && trace > 0.0) {
        return None;
    }
    let reg = lambda;
    // bordered system of size n + 1, augmented with the right-hand side
    let w = n + 2;
    let mut a = vec![0.0f64; (n + 1) * w];
    for i in 0..n {
        a[i + 1] = 1.0;
        a[(i + 1) * w] = 1.0;
        for j in 0..n {
            a[(i + 1) * w + j + 1] = gram[i * n + j] / trace + if i == j { reg } else { 0.0 };
        }
    }
    a[n + 1] = 1.0;
    let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for c in 0..=n {
        let p = (c..=n).max_by(|&i, &j| a[i * w + c].abs().total_cmp(&a[j * w + c].abs()))?;
        if a[p * w + c].abs() <= 1e-12 * scale {
            return None;
        }
        if p != c {
            for k in 0..w {
                a.swap(p * w + k, c * w + k);
            }
        }
        for r in 0..=n {
            if r != c {
                let f = a[r * w + c] / a[c * w + c];
                if f != 0.0 {
                    for k in c..w {
                        a[r * w + k] -= f * a[c * w + k];
                    }
                }
            }
        }
    }
    let alpha: Vec<f64> = (1..=n).map(|i| a[i * w + n + 1] / a[i * w + i]).collect();
    let l1: f64 = alpha.iter().map(|v| v.abs()).sum();
    (alpha.iter().all(|v| v.is_finite()) && l1 <= 1e4).then_some(alpha)
}

/// The last `m` map values and residuals of a per-sample fixed-point iteration over a list
/// of layer tensors (`[B, …]` each), and the per-sample Gram matrices of the residuals.
pub struct AndersonHistory {
    params: AndersonParams,
    batch: usize,
    g: Vec<Vec<Tensor>>,
    f: Vec<Vec<Tensor>>,
    /// `gram[b][(l*m + i)*m + j] = ⟨f_i, f_j⟩` over layer `l` of sample `b` (ring-buffer
    /// slots `i`, `j`).
    gram: Vec<Vec<f64>>,
    /// `norms[b][i*L + l] = ‖g_i‖²` over layer `l` of sample `b`.
    norms: Vec<Vec<f64>>,
    layers: usize,
    filled: usize,
    next: usize,
    /// Push counter of each slot, and per sample the first push its mixing may use (a
    /// restart forgets what came before).
    stamp: Vec<usize>,
    pushes: usize,
    since: Vec<usize>,
}

/// `Σ_rows x·y` of sample `b` in one layer.
fn sample_dot(x: &Tensor, y: &Tensor, b: usize) -> f64 {
    let per = x.row_len().max(1);
    let (xr, yr) = (
        &x.data()[b * per..(b + 1) * per],
        &y.data()[b * per..(b + 1) * per],
    );
    xr.iter()
        .zip(yr)
        .map(|(u, v)| *u as f64 * *v as f64)
        .sum::<f64>()
}

impl AndersonHistory {
    pub fn new(params: AndersonParams, batch: usize) -> Self {
        let m = params.m.max(1);
        AndersonHistory {
            params,
            batch,
            g: Vec::with_capacity(m),
            f: Vec::with_capacity(m),
            gram: Vec::new(),
            norms: Vec::new(),
            layers: 0,
            filled: 0,
            next: 0,
            stamp: vec![0; m],
            pushes: 0,
            since: vec![0; batch],
        }
    }

    /// Forgets sample `b`'s history: its next mix uses only map values pushed from now on
    /// (the plain step first).
    pub fn restart(&mut self, b: usize) {
        self.since[b] = self.pushes;
    }

    /// Entries held (at most `m`).
    pub fn len(&self) -> usize {
        self.filled
    }

    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Records one evaluation of the map: the iterate `x` and its value `g = g(x)`, layer by
    /// layer (same shapes, batch first).
    pub fn push(&mut self, x: &[Tensor], g: &[Tensor]) -> Result<(), ShapeError> {
        let m = self.params.m.max(1);
        let mut f = Vec::with_capacity(x.len());
        for (xl, gl) in x.iter().zip(g) {
            gl.expect_shape("anderson::push", "map value", xl.shape())?;
            if xl.dim0() != self.batch {
                return Err(ShapeError::new(
                    "anderson::push",
                    "iterate",
                    xl.shape(),
                    "the history's batch",
                ));
            }
            let mut fl = gl.clone();
            fl.data_mut()
                .par_iter_mut()
                .zip(xl.data().par_iter())
                .for_each(|(a, b)| *a -= b);
            f.push(fl);
        }
        let slot = self.next;
        if self.g.len() < m {
            self.g.push(g.to_vec());
            self.f.push(f);
        } else {
            self.g[slot] = g.to_vec();
            self.f[slot] = f;
        }
        self.filled = self.g.len();
        self.next = (slot + 1) % m;
        self.stamp[slot] = self.pushes;
        self.pushes += 1;
        let nl = x.len();
        if self.layers != nl {
            self.layers = nl;
            self.gram = vec![vec![0.0; nl * m * m]; self.batch];
            self.norms = vec![vec![0.0; nl * m]; self.batch];
        }
        let (fs, gs, filled) = (&self.f, &self.g, self.filled);
        self.gram
            .par_iter_mut()
            .zip(self.norms.par_iter_mut())
            .enumerate()
            .for_each(|(b, (gram, norms))| {
                for l in 0..nl {
                    norms[slot * nl + l] = sample_dot(&gs[slot][l], &gs[slot][l], b);
                    for i in 0..filled {
                        let d = sample_dot(&fs[slot][l], &fs[i][l], b);
                        gram[(l * m + slot) * m + i] = d;
                        gram[(l * m + i) * m + slot] = d;
                    }
                }
            });
        Ok(())
    }

    /// The next iterate into `out` (layers shaped as the history's) for every sample with
    /// `active[b]` (the others are left as they are): the Anderson mix, or the latest map
    /// value where the solve is ill-conditioned. Returns which samples fell back.
    pub fn mix(&self, active: &[bool], out: &mut [Tensor]) -> Vec<bool> {
        let m = self.params.m.max(1);
        let n = self.filled;
        // the slot written last (while the buffer fills, `next` is `n`)
        let latest = (self.next + m - 1) % m;
        let tau = self.params.tau as f64;
        let weights: Vec<Option<Vec<f64>>> = (0..self.batch)
            .into_par_iter()
            .map(|b| {
                if !active.get(b).copied().unwrap_or(true) || n == 0 {
                    return None;
                }
                // the slots this sample may use (pushed since its last restart)
                let sel: Vec<usize> = (0..n).filter(|&i| self.stamp[i] >= self.since[b]).collect();
                let k = sel.len();
                // each layer weighted by 1/‖g_l‖² of the latest map value, so that the
                // least squares minimises the per-layer relative residual the stopping
                // criterion measures (small deep layers are not drowned by large ones)
                let nl = self.layers;
                let mut g = vec![0.0; k * k];
                for l in 0..nl {
                    let w = 1.0 / self.norms[b][latest * nl + l].max(1e-12);
                    for (i, &si) in sel.iter().enumerate() {
                        for (j, &sj) in sel.iter().enumerate() {
                            g[i * k + j] += w * self.gram[b][(l * m + si) * m + sj];
                        }
                    }
                }
                // a single entry (just restarted) is the plain step, no solve
                let alpha = if k == 1 {
                    vec![1.0]
                } else {
                    mixing_weights(&g, k, self.params.lambda as f64)?
                };
                let mut full = vec![0.0; n];
                for (&si, a) in sel.iter().zip(alpha) {
                    full[si] = a;
                }
                Some(full)
            })
            .collect();
        let mut fell_back = vec![false; self.batch];
        for (l, o) in out.iter_mut().enumerate() {
            let per = o.row_len().max(1);
            o.data_mut()
                .par_chunks_mut(per)
                .enumerate()
                .for_each(|(b, row)| {
                    if !active.get(b).copied().unwrap_or(true) || n == 0 {
                        return;
                    }
                    let r = b * per..(b + 1) * per;
                    match &weights[b] {
                        Some(alpha) => {
                            row.iter_mut().for_each(|v| *v = 0.0);
                            for (i, &a) in alpha.iter().enumerate().filter(|(_, a)| **a != 0.0) {
                                let (gi, fi) = (
                                    &self.g[i][l].data()[r.clone()],
                                    &self.f[i][l].data()[r.clone()],
                                );
                                for ((v, gv), fv) in row.iter_mut().zip(gi).zip(fi) {
                                    *v += (a * (*gv as f64 - (1.0 - tau) * *fv as f64)) as f32;
                                }
                            }
                        }
                        None => row.copy_from_slice(&self.g[latest][l].data()[r]),
                    }
                });
        }
        for (b, w) in weights.iter().enumerate() {
            fell_back[b] = w.is_none() && n > 0 && active.get(b).copied().unwrap_or(true);
        }
        fell_back
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_minimise_the_mixed_residual() {
        // two residuals f1 = (1, 0), f2 = (−1, 1): the weight a of f1 minimising
        // ‖a f1 + (1−a) f2‖², against a brute-force scan over a
        let f = [[1.0f64, 0.0], [-1.0, 1.0]];
        let dot = |i: usize, j: usize| f[i][0] * f[j][0] + f[i][1] * f[j][1];
        let gram = vec![dot(0, 0), dot(0, 1), dot(1, 0), dot(1, 1)];
        let a = mixing_weights(&gram, 2, 0.0).unwrap();
        assert!((a[0] + a[1] - 1.0).abs() < 1e-12);
        let cost = |a: f64| {
            let v = [
                a * f[0][0] + (1.0 - a) * f[1][0],
                a * f[0][1] + (1.0 - a) * f[1][1],
            ];
            v[0] * v[0] + v[1] * v[1]
        };
        let best = (0..=20000)
            .map(|i| -2.0 + 4.0 * i as f64 / 20000.0)
            .min_by(|x, y| cost(*x).total_cmp(&cost(*y)))
            .unwrap();
        assert!((a[0] - best).abs() < 1e-3, "{a:?} vs {best}");
    }

    #[test]
    fn a_singular_history_is_refused_not_nan() {
        // two identical residuals without regularisation: singular
        let gram = vec![1.0, 1.0, 1.0, 1.0];
        assert!(mixing_weights(&gram, 2, 0.0).is_none());
        // all-zero residuals (a converged sample)
        assert!(mixing_weights(&[0.0; 4], 2, 1e-4).is_none());
        assert!(mixing_weights(&[f64::NAN; 4], 2, 1e-4).is_none());
        // the regularisation makes the repeated residual solvable: equal weights
        let a = mixing_weights(&gram, 2, 1e-4).unwrap();
        assert!(
            (a[0] - 0.5).abs() < 1e-9 && (a[1] - 0.5).abs() < 1e-9,
            "{a:?}"
        );
    }

    #[test]
    fn projection_keeps_the_shifted_box() {
        let mut x = Tensor::from_vec(&[1, 4], vec![-1.0, 2.0, 0.5, -0.5]).unwrap();
        let base = Tensor::from_vec(&[1, 4], vec![0.5, 0.5, 0.5, 0.5]).unwrap();
        project(&mut x, StateBox::Unit, Some(&base)).unwrap();
        assert_eq!(x.data(), &[-0.5, 0.5, 0.5, -0.5]);
        let mut y = Tensor::from_vec(&[1, 4], vec![-1.0, 2.0, 0.5, -0.5]).unwrap();
        project(&mut y, StateBox::Diode, None).unwrap();
        assert_eq!(y.data(), &[0.0, 2.0, 0.0, -0.5]);
    }

    /// Anderson on an affine contraction `g(x) = M x + c` (M diagonal, rates up to 0.99):
    /// it reaches the fixed point `c / (1 − M)` in far fewer evaluations than plain
    /// iteration.
    #[test]
    fn anderson_solves_an_affine_contraction_fast() {
        let n = 40;
        let rate = |i: usize| 0.5 + 0.49 * i as f32 / (n - 1) as f32;
        let g = |x: &Tensor| {
            let mut y = x.clone();
            for (k, v) in y.data_mut().iter_mut().enumerate() {
                let i = k % n;
                *v = rate(i) * *v + 1.0 + (i as f32).sin();
            }
            y
        };
        let fixed: Vec<f32> = (0..2 * n)
            .map(|k| (1.0 + ((k % n) as f32).sin()) / (1.0 - rate(k % n)))
            .collect();
        let err = |x: &Tensor| {
            x.data()
                .iter()
                .zip(&fixed)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs() / b.abs().max(1.0)))
        };
        let mut hist = AndersonHistory::new(AndersonParams::default(), 2);
        let mut x = Tensor::zeros(&[2, n]);
        let mut evals = 0;
        while err(&x) > 1e-5 && evals < 1000 {
            let gx = g(&x);
            evals += 1;
            hist.push(std::slice::from_ref(&x), std::slice::from_ref(&gx))
                .unwrap();
            let mut next = vec![gx];
            hist.mix(&[true, true], &mut next);
            x = next.pop().unwrap();
        }
        let mut plain = Tensor::zeros(&[2, n]);
        let mut plain_evals = 0;
        while err(&plain) > 1e-5 && plain_evals < 5000 {
            plain = g(&plain);
            plain_evals += 1;
        }
        assert!(err(&x) <= 1e-5, "anderson error {} after {evals}", err(&x));
        assert!(
            evals * 5 < plain_evals,
            "anderson {evals}, plain {plain_evals}"
        );
    }
}
