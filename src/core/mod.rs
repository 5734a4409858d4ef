//! The compute core: the only code that touches raw `f32` data. Everything above it
//! (model, relaxation, gradient estimators, training) calls these typed kernels; a GPU
//! backend would replace this module behind the same functions.

pub mod analog;
pub mod analog_pair;
pub mod anderson;
pub mod batchnorm;
pub mod conv;
#[cfg(test)]
mod conv_naive_tests;
#[cfg(test)]
mod conv_tests;
pub mod dense;
mod im2col;
pub mod loss;
pub mod matmul;
pub mod offset;
pub mod ops;
mod packed;
mod pixels;
pub mod pool;
pub mod quadratic;
pub mod resistive;
mod scratch;
mod smallmap;
mod taps;
pub mod tensor;
#[doc(hidden)]
pub mod testutil;
pub mod units;
pub mod winograd;

pub use conv::{ConvAlgo, ConvGeom, PackedConv};
pub use pool::PoolIndex;
pub use tensor::{ShapeError, Tensor};
