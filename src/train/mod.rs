//! Training: run configuration, optimisers and schedule, data of a run, the loop,
//! checkpoints and metrics; claiming run directories, resuming with checked changes and
//! catching divergence.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod divergence;
pub mod evaluate;
mod keys;
pub mod metrics;
pub mod optim;
pub mod parallel;
pub mod resume;
pub mod rundir;
mod session;
pub mod trainer;

pub use config::RunConfig;
pub use evaluate::{evaluate, evaluate_circuit, evaluate_part};
pub use trainer::{train, train_with, RunSummary, TrainOptions};
