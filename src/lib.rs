//! ffebm: simulate and train feedforward-tied energy-based models (ff-EBMs) by chaining
//! backprop through feedforward blocks with equilibrium propagation through energy-based
//! blocks (Nest & Ernoult, NeurIPS 2024). See `SPEC.md` for the exact computations.

pub mod analog;
pub mod analysis;
pub mod bench;
pub mod cli;
pub mod core;
pub mod cost;
pub mod data;
pub mod digital;
pub mod dist;
pub mod energy;
pub mod grad;
pub mod hooks;
pub mod io;
pub mod model;
pub mod relax;
pub mod train;
