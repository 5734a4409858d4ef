//! The interaction kinds, one per file.

mod conv_coupling;
mod dense_coupling;
mod drive;

pub use conv_coupling::ConvCoupling;
pub use dense_coupling::DenseCoupling;
pub use drive::HopfieldDrive;
