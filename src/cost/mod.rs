//! Energy and latency of EP training on hybrid digital–analog hardware (`ffebm cost`).
//!
//! [`counts`] counts what a training step does, per block (feedforward MACs and memory
//! traffic, relaxation sweeps per phase and what they cost simulated or in crossbars,
//! conversions at every analog/digital boundary, weight writes, digital overhead);
//! [`tech`] reads a technology description in which every number has a source; [`price`]
//! turns counts into energy and latency; [`workload`] says what is priced (a preset, a run
//! configuration, or a run directory with the sweeps and pulses it recorded); [`report`]
//! assembles step, epoch, run and inference totals and the GPU baseline; [`render`] prints
//! them.

pub mod counts;
pub mod price;
pub mod render;
pub mod report;
pub mod tech;
pub mod workload;

pub use report::{estimate, Report};
pub use tech::{Execution, Tech};
pub use workload::Workload;
