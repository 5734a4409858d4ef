//! The one tensor type of the compute core: a dense, row-major `f32` array with a shape.
//!
//! Layout conventions inside ffebm (the public file formats use the SPEC's NCHW/OIHW):
//! * conv feature maps are **channels-last** `[B, H, W, C]` (NHWC), which makes every
//!   3x3 convolution a plain matrix product over `B·H·W` rows;
//! * dense states are `[B, F]`;
//! * conv weights are stored as in PyTorch, `[C_out, C_in, kH, kW]` (OIHW), and packed
//!   by the kernels into whatever layout they need.

use std::fmt;

/// A shape mismatch, naming the operation, the operand and both shapes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op}: {operand} has shape {got:?}, expected {expected}")]
pub struct ShapeError {
    pub op: &'static str,
    pub operand: &'static str,
    pub got: Vec<usize>,
    pub expected: String,
}

impl ShapeError {
    pub fn new(
        op: &'static str,
        operand: &'static str,
        got: &[usize],
        expected: impl fmt::Display,
    ) -> Self {
        ShapeError {
            op,
            operand,
            got: got.to_vec(),
            expected: expected.to_string(),
        }
    }
}

/// Dense row-major `f32` tensor.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor{:?}", self.shape)
    }
}

impl Default for Tensor {
    /// An empty tensor of shape `[0]` (a buffer to be resized by a kernel).
    fn default() -> Self {
        Tensor {
            shape: vec![0],
            data: Vec::new(),
        }
    }
}

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Tensor {
            shape: shape.to_vec(),
            data: vec![0.0; shape.iter().product()],
        }
    }

    /// A tensor filled with `value`.
    pub fn full(shape: &[usize], value: f32) -> Self {
        Tensor {
            shape: shape.to_vec(),
            data: vec![value; shape.iter().product()],
        }
    }

    /// Wraps `data`; its length must equal the product of `shape`.
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Result<Self, ShapeError> {
        let n: usize = shape.iter().product();
        if data.len() != n {
            return Err(ShapeError::new(
                "Tensor::from_vec",
                "data",
                &[data.len()],
                format!("{n} elements for shape {shape:?}"),
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            data,
        })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Leading dimension (the batch for activations).
    pub fn dim0(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Elements per leading index (per sample for activations).
    pub fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// Read access to the raw data (for I/O and the compute core).
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Write access to the raw data (for I/O and the compute core).
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// Same data, new shape with the same number of elements.
    pub fn reshaped(mut self, shape: &[usize]) -> Result<Self, ShapeError> {
        self.reshape(shape)?;
        Ok(self)
    }

    /// Changes the shape in place (same number of elements).
    pub fn reshape(&mut self, shape: &[usize]) -> Result<(), ShapeError> {
        let n: usize = shape.iter().product();
        if n != self.data.len() {
            return Err(ShapeError::new(
                "reshape",
                "tensor",
                &self.shape,
                format!("{n} elements for {shape:?}"),
            ));
        }
        self.shape = shape.to_vec();
        Ok(())
    }

    /// Checks `self.shape() == expected`.
    pub fn expect_shape(
        &self,
        op: &'static str,
        operand: &'static str,
        expected: &[usize],
    ) -> Result<(), ShapeError> {
        if self.shape != expected {
            return Err(ShapeError::new(
                op,
                operand,
                &self.shape,
                format!("{expected:?}"),
            ));
        }
        Ok(())
    }

    /// Resizes to `shape` (reusing the allocation) without clearing old values.
    pub fn ensure_shape(&mut self, shape: &[usize]) {
        if self.shape != shape {
            self.shape = shape.to_vec();
            self.data.resize(shape.iter().product(), 0.0);
        }
    }

    /// Copies `other` (shape and values) into `self`, reusing the allocation.
    pub fn assign(&mut self, other: &Tensor) {
        self.shape.clone_from(&other.shape);
        self.data.clone_from(&other.data);
    }

    /// Samples `range` of the leading dimension as a new tensor.
    pub fn rows(&self, range: std::ops::Range<usize>) -> Tensor {
        let r = self.row_len();
        let mut shape = self.shape.clone();
        shape[0] = range.len();
        Tensor {
            shape,
            data: self.data[range.start * r..range.end * r].to_vec(),
        }
    }

    /// Sets every element to `v`.
    pub fn fill(&mut self, v: f32) {
        self.data.fill(v);
    }
}

/// Converts an NCHW tensor to the internal NHWC layout.
pub fn nchw_to_nhwc(x: &Tensor) -> Result<Tensor, ShapeError> {
    let [b, c, h, w] = dims4("nchw_to_nhwc", "input", x)?;
    let mut out = vec![0.0f32; x.len()];
    let src = x.data();
    for n in 0..b {
        for ch in 0..c {
            let plane = &src[(n * c + ch) * h * w..(n * c + ch + 1) * h * w];
            for (p, &v) in plane.iter().enumerate() {
                out[(n * h * w + p) * c + ch] = v;
            }
        }
    }
    Tensor::from_vec(&[b, h, w, c], out)
}

/// Converts an internal NHWC tensor to NCHW.
pub fn nhwc_to_nchw(x: &Tensor) -> Result<Tensor, ShapeError> {
    let [b, h, w, c] = dims4("nhwc_to_nchw", "input", x)?;
    let mut out = vec![0.0f32; x.len()];
    let src = x.data();
    for n in 0..b {
        for p in 0..h * w {
            for ch in 0..c {
                out[(n * c + ch) * h * w + p] = src[(n * h * w + p) * c + ch];
            }
        }
    }
    Tensor::from_vec(&[b, c, h, w], out)
}

/// The transpose `[Q, P]` of a rank-2 tensor `[P, Q]`.
pub fn transpose2(x: &Tensor) -> Result<Tensor, ShapeError> {
    let [p, q] = dims2("transpose2", "input", x)?;
    let mut out = vec![0.0f32; x.len()];
    transpose_into(x.data(), p, q, &mut out);
    Tensor::from_vec(&[q, p], out)
}

/// `dst[j·rows + i] = src[i·cols + j]`: the row-major `[cols, rows]` transpose of the
/// row-major `[rows, cols]` matrix `src`, in square tiles so that neither the reads nor
/// the writes stride across a whole row per element (a naive loop over a 1024-wide matrix
/// writes at a 4 KiB stride, which costs ~10× on a 1.6 M-element conductance matrix).
pub(crate) fn transpose_into(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const TILE: usize = 16;
    debug_assert!(src.len() == rows * cols && dst.len() == rows * cols);
    for j0 in (0..cols).step_by(TILE) {
        let j1 = (j0 + TILE).min(cols);
        for i0 in (0..rows).step_by(TILE) {
            let i1 = (i0 + TILE).min(rows);
            for j in j0..j1 {
                let out = &mut dst[j * rows + i0..j * rows + i1];
                for (o, i) in out.iter_mut().zip(i0..i1) {
                    *o = src[i * cols + j];
                }
            }
        }
    }
}

/// The four dimensions of a rank-4 tensor, or an error naming `op` and `operand`.
pub fn dims4(
    op: &'static str,
    operand: &'static str,
    x: &Tensor,
) -> Result<[usize; 4], ShapeError> {
    match *x.shape() {
        [a, b, c, d] => Ok([a, b, c, d]),
        _ => Err(ShapeError::new(op, operand, x.shape(), "a rank-4 tensor")),
    }
}

/// The two dimensions of a rank-2 tensor, or an error naming `op` and `operand`.
pub fn dims2(
    op: &'static str,
    operand: &'static str,
    x: &Tensor,
) -> Result<[usize; 2], ShapeError> {
    match *x.shape() {
        [a, b] => Ok([a, b]),
        _ => Err(ShapeError::new(op, operand, x.shape(), "a rank-2 tensor")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trip() {
        let x = Tensor::from_vec(&[2, 3, 2, 5], (0..60).map(|v| v as f32).collect()).unwrap();
        let y = nchw_to_nhwc(&x).unwrap();
        assert_eq!(y.shape(), &[2, 2, 5, 3]);
        // element (n=1, c=2, h=1, w=3) of NCHW is at NHWC (1,1,3,2)
        assert_eq!(
            y.data()[((2 + 1) * 5 + 3) * 3 + 2],
            x.data()[((3 + 2) * 2 + 1) * 5 + 3]
        );
        assert_eq!(nhwc_to_nchw(&y).unwrap(), x);
    }

    #[test]
    fn transpose2_swaps_indices() {
        let x = Tensor::from_vec(&[2, 3], (0..6).map(|v| v as f32).collect()).unwrap();
        let t = transpose2(&x).unwrap();
        assert_eq!(t.shape(), &[3, 2]);
        assert_eq!(t.data(), &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(transpose2(&t).unwrap(), x);
        assert!(transpose2(&Tensor::zeros(&[2, 2, 2])).is_err());
    }

    #[test]
    fn tiled_transpose_matches_the_definition_across_partial_tiles() {
        // sizes that are not multiples of the tile, in both orientations
        for (rows, cols) in [(70, 45), (45, 70), (1, 33), (33, 1), (64, 64)] {
            let src: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            let mut dst = vec![f32::NAN; rows * cols];
            transpose_into(&src, rows, cols, &mut dst);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(
                        dst[j * rows + i],
                        src[i * cols + j],
                        "({i}, {j}) of {rows}x{cols}"
                    );
                }
            }
        }
    }

    #[test]
    fn from_vec_checks_length() {
        let e = Tensor::from_vec(&[2, 3], vec![0.0; 5]).unwrap_err();
        assert!(e.to_string().contains("6 elements"), "{e}");
    }
}
