//! The interaction kinds, one per file.

mod bias;
mod conv_coupling;
mod dense_coupling;
mod drive;
mod resistive;

pub use bias::LayerBias;
pub use conv_coupling::ConvCoupling;
pub use dense_coupling::DenseCoupling;
pub use drive::HopfieldDrive;
pub use resistive::ResistiveCoupling;
