//! Training: run configuration, optimisers and schedule, data of a run, the loop,
//! checkpoints and metrics.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod metrics;
pub mod optim;
pub mod trainer;

pub use config::RunConfig;
pub use trainer::{evaluate, train, RunSummary, TrainOptions};
