//! Catching a diverging run before its loss turns into NaN.
//!
//! The reference is the loss of the run's first step (the untrained model, ≈ ln C for C
//! classes). At the end of every log interval (`train.log_every` steps) the mean loss of the
//! interval's steps is compared with it: the run stops when that mean exceeds
//! `train.max_loss_ratio` × the reference, or when it has risen `train.max_loss_rises`
//! intervals in a row while above the reference. A non-finite step loss stops it at once.
//! The watch is part of the loop state, so a resumed run decides exactly as an
//! uninterrupted one.

use super::config::LoopConfig;
use serde::{Deserialize, Serialize};

/// What the watch remembers between steps (saved in checkpoints).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LossWatch {
    /// Loss of the run's first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<f64>,
    /// Sum and number of the step losses of the interval in progress.
    #[serde(default)]
    pub sum: f64,
    #[serde(default)]
    pub steps: u64,
    /// Mean loss of the previous interval and how many intervals in a row it rose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<f64>,
    #[serde(default)]
    pub rises: usize,
}

impl LossWatch {
    /// Records the loss of step `step`; a non-finite loss is divergence.
    pub fn record(&mut self, step: u64, loss: f64) -> Result<(), String> {
        if !loss.is_finite() {
            return Err(format!("the loss of step {step} is {loss}"));
        }
        self.first.get_or_insert(loss);
        self.sum += loss;
        self.steps += 1;
        Ok(())
    }

    /// Ends the log interval that finished with step `step`: the reason to stop, if any.
    pub fn end_interval(&mut self, step: u64, cfg: &LoopConfig) -> Result<(), String> {
        let (Some(first), n) = (self.first, self.steps) else {
            return Ok(());
        };
        if n == 0 {
            return Ok(());
        }
        let mean = self.sum / n as f64;
        let from = step + 1 - n;
        self.sum = 0.0;
        self.steps = 0;
        self.rises = match self.last {
            Some(prev) if mean > prev && mean > first => self.rises + 1,
            _ => 0,
        };
        self.last = Some(mean);
        if cfg.max_loss_ratio > 0.0 && mean > cfg.max_loss_ratio * first {
            return Err(format!(
                "the loss is diverging: the mean loss of steps {from}-{step} is {mean:.4}, {:.0} times the first step's {first:.4} (train.max_loss_ratio = {})",
                mean / first,
                cfg.max_loss_ratio
            ));
        }
        if cfg.max_loss_rises > 0 && self.rises >= cfg.max_loss_rises {
            return Err(format!(
                "the loss is diverging: the mean loss rose {} log intervals in a row, to {mean:.4} over steps {from}-{step} (first step {first:.4}; train.max_loss_rises = {})",
                self.rises, cfg.max_loss_rises
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ratio: f64, rises: usize) -> LoopConfig {
        LoopConfig {
            max_loss_ratio: ratio,
            max_loss_rises: rises,
            ..LoopConfig::default()
        }
    }

    #[test]
    fn ratio_rises_and_non_finite_losses_stop_and_noise_does_not() {
        let c = cfg(100.0, 3);
        let mut w = LossWatch::default();
        // a normal run: falling, noisy
        for (s, l) in [2.3, 2.2, 2.25, 1.9, 2.0, 1.7, 1.8, 1.6].iter().enumerate() {
            w.record(s as u64 + 1, *l).unwrap();
            if (s + 1) % 2 == 0 {
                w.end_interval(s as u64 + 1, &c).unwrap();
            }
        }
        // explosion: mean of the interval > 100 x 2.3
        w.record(9, 100.0).unwrap();
        w.record(10, 400.0).unwrap();
        let e = w.end_interval(10, &c).unwrap_err();
        assert!(e.contains("steps 9-10") && e.contains("250.0000"), "{e}");
        // slow growth above the first loss, three intervals in a row
        let mut w = LossWatch::default();
        let mut step = 0;
        let mut outcome = Ok(());
        for l in [2.3, 2.0, 2.4, 2.5, 2.6, 2.7] {
            step += 1;
            w.record(step, l).unwrap();
            outcome = w.end_interval(step, &c);
            if outcome.is_err() {
                break;
            }
        }
        assert_eq!(step, 5, "{outcome:?}");
        assert!(outcome.unwrap_err().contains("3 log intervals in a row"));
        // rises below the first loss are recovery, not divergence; 0 disables
        let mut w = LossWatch::default();
        for (s, l) in [5.0, 1.0, 1.1, 1.2, 1.3, 1.4].iter().enumerate() {
            w.record(s as u64 + 1, *l).unwrap();
            w.end_interval(s as u64 + 1, &c).unwrap();
        }
        let mut w = LossWatch::default();
        w.record(1, 1.0).unwrap();
        w.record(2, 1e6).unwrap();
        w.end_interval(2, &cfg(0.0, 0)).unwrap();
        assert!(w.record(3, f64::NAN).unwrap_err().contains("step 3 is NaN"));
    }
}
