//! All integration tests in one binary (one link instead of one per file: much faster builds).

mod common;
mod data_util;
mod digital;

mod analog;
mod analog_pair;
mod analog_units;
mod checkpoint_integrity;
mod cli_analog;
mod cli_analysis;
mod cli_grad;
mod cli_robust;
mod cost;
mod data_corrupt;
mod data_download;
mod data_imagenet32;
mod data_pipeline;
mod data_real;
mod drn_power;
mod drn_reference;
mod energy;
mod gdd;
mod gradients;
mod learning;
#[cfg(feature = "mpi")]
mod mpi;
mod plot_figures;
mod plot_metrics;
mod plot_save;
mod plot_ticks;
mod readme;
mod reference_f64;
mod reference_fixtures;
mod relaxation;
mod runs;
mod sga;
mod solvers;
mod train;
