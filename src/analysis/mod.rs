//! Analysis helpers: figures for runs and EP–ID gradient comparisons.

pub mod plot;
