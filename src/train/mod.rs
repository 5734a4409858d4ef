//! Training: run configuration, optimisers and schedule, data of a run, the loop,
//! checkpoints and metrics; claiming run directories, resuming with checked changes and
//! catching divergence.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod divergence;
mod keys;
pub mod metrics;
pub mod optim;
pub mod resume;
pub mod rundir;
mod session;
pub mod trainer;

pub use config::RunConfig;
pub use trainer::{evaluate, train, RunSummary, TrainOptions};
