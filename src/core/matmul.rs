//! Safe, bounds-checked wrapper around the `gemm` crate (AVX-512 at runtime where present).

/// A read-only strided matrix view: element `(i, j)` is `data[i*rs + j*cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

/// A mutable strided matrix view.
#[derive(Debug)]
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// Row-major `rows × cols` view of a contiguous slice.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of this view (no copy).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    fn check(&self, what: &str) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
            assert!(
                last < self.data.len(),
                "matmul: {what} view {}x{} (rs {}, cs {}) exceeds its {} elements",
                self.rows,
                self.cols,
                self.rs,
                self.cs,
                self.data.len()
            );
        }
    }
}

impl<'a> MatMut<'a> {
    /// Row-major `rows × cols` view of a contiguous slice.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
}

/// A mutable strided matrix given by a raw pointer, for parallel tasks that write
/// interleaved but disjoint elements of one buffer (e.g. column blocks of a row-major
/// matrix), where overlapping `&mut` slices would be unsound.
#[derive(Clone, Copy, Debug)]
pub struct MatPtr {
    pub ptr: *mut f32,
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

/// How a single product may use threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Par {
    /// On the calling thread only (use inside rayon tasks).
    Seq,
    /// On the current rayon pool.
    Pool,
}

/// `C = A·B` (or `C += A·B` when `accumulate`), scaled: `C = c_scale·C + ab_scale·A·B`.
///
/// Panics if a view exceeds its slice or the dimensions do not agree: callers check
/// user-facing shapes first and report them as `ShapeError`s.
pub fn matmul(
    c: MatMut<'_>,
    a: MatRef<'_>,
    b: MatRef<'_>,
    accumulate: bool,
    ab_scale: f32,
    par: Par,
) {
    let cref = MatRef {
        data: c.data,
        rows: c.rows,
        cols: c.cols,
        rs: c.rs,
        cs: c.cs,
    };
    cref.check("C");
    let parallelism = match par {
        Par::Pool if rayon::current_num_threads() > 1 => gemm::Parallelism::Rayon(0),
        _ => gemm::Parallelism::None,
    };
    let c = MatPtr {
        ptr: c.data.as_mut_ptr(),
        rows: c.rows,
        cols: c.cols,
        rs: c.rs,
        cs: c.cs,
    };
    // SAFETY: `c` was checked to lie within its uniquely borrowed slice, which cannot
    // alias `a` or `b` (Rust borrow rules on the slices).
    unsafe { product(c, a, b, accumulate, ab_scale, parallelism) }
}

/// [`matmul`] into a [`MatPtr`], on the calling thread.
///
/// # Safety
/// Every element `(i, j)` of `c` must be valid for reads and writes, and no other thread
/// may access those elements during the call; `c` must not overlap `a` or `b`.
pub unsafe fn matmul_ptr(c: MatPtr, a: MatRef<'_>, b: MatRef<'_>, accumulate: bool, ab_scale: f32) {
    product(c, a, b, accumulate, ab_scale, gemm::Parallelism::None)
}

/// `C ← [C +] ab_scale · A·B` after checking the shapes and `A`, `B` against their slices.
///
/// # Safety
/// As [`matmul_ptr`].
unsafe fn product(
    c: MatPtr,
    a: MatRef<'_>,
    b: MatRef<'_>,
    accumulate: bool,
    ab_scale: f32,
    parallelism: gemm::Parallelism,
) {
    assert_eq!(
        a.rows, c.rows,
        "matmul: A has {} rows, C has {}",
        a.rows, c.rows
    );
    assert_eq!(
        b.cols, c.cols,
        "matmul: B has {} cols, C has {}",
        b.cols, c.cols
    );
    assert_eq!(
        a.cols, b.rows,
        "matmul: A has {} cols, B has {} rows",
        a.cols, b.rows
    );
    a.check("A");
    b.check("B");
    if c.rows == 0 || c.cols == 0 {
        return;
    }
    if a.cols == 0 {
        if !accumulate {
            for i in 0..c.rows {
                for j in 0..c.cols {
                    *c.ptr.add(i * c.rs + j * c.cs) = 0.0;
                }
            }
        }
        return;
    }
    gemm::gemm(
        c.rows,
        c.cols,
        a.cols,
        c.ptr,
        c.cs as isize,
        c.rs as isize,
        accumulate,
        a.data.as_ptr(),
        a.cs as isize,
        a.rs as isize,
        b.data.as_ptr(),
        b.cs as isize,
        b.rs as isize,
        1.0,
        ab_scale,
        false,
        false,
        false,
        parallelism,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for l in 0..k {
                    s += a[i * k + l] as f64 * b[l * n + j] as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn matches_naive_including_transposed_views() {
        let (m, k, n) = (7, 13, 5);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 11) as f32) - 5.0).collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 17 % 7) as f32) * 0.5 - 1.0)
            .collect();
        let want = naive(&a, &b, m, k, n);
        let mut c = vec![1.0f32; m * n];
        matmul(
            MatMut::row_major(&mut c, m, n),
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            false,
            1.0,
            Par::Pool,
        );
        assert_eq!(c, want);
        // C^T = B^T A^T through transposed views
        let mut ct = vec![0.0f32; n * m];
        matmul(
            MatMut::row_major(&mut ct, n, m),
            MatRef::row_major(&b, k, n).t(),
            MatRef::row_major(&a, m, k).t(),
            false,
            1.0,
            Par::Seq,
        );
        for i in 0..m {
            for j in 0..n {
                assert_eq!(ct[j * m + i], want[i * n + j]);
            }
        }
        // accumulate with scale
        matmul(
            MatMut::row_major(&mut c, m, n),
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            true,
            -2.0,
            Par::Seq,
        );
        for (x, w) in c.iter().zip(&want) {
            assert_eq!(*x, -w);
        }
    }
}
