//! All integration tests in one binary (one link instead of one per file: much faster builds).

mod common;
mod data_util;

mod cli_analysis;
mod cli_grad;
mod data_corrupt;
mod data_download;
mod data_imagenet32;
mod data_pipeline;
mod data_real;
mod energy;
mod gdd;
mod gradients;
mod learning;
mod plot_figures;
mod plot_metrics;
mod plot_save;
mod readme;
mod reference_fixtures;
mod relaxation;
mod sga;
mod train;
