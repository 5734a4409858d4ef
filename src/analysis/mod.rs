//! Analyses and figures: the static gradient analysis (EP vs ID) and plots of runs and
//! gradient comparisons.

pub mod gdd;
pub mod plot;
pub mod robustness;
pub mod solvers;
