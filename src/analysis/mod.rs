//! Analyses and figures: the static gradient analysis (EP vs ID) and plots.

pub mod gdd;
