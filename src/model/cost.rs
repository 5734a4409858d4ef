//! The cost model of SPEC §7, in multiply-accumulates (MACs); FLOPs = 2·MACs.
//!
//! * conv coupling: `C_in·C_out·k²·H·W` per sample per pass (`H×W` = its input size);
//!   dense coupling: `F_in·F_out`;
//! * a sweep: one forward (bottom-up) and one transposed (top-down) pass per coupling;
//! * an EP step: `Σ_k (T1_k + 2·T2)` sweeps plus two gradient evaluations per block
//!   (one weight-gradient pass per coupling each) and the feedforward transforms;
//! * an ID step: `Σ_k (T1_k + T2)` sweeps plus the backward of `T2` sweeps (per coupling:
//!   transposed + weight gradient for the bottom-up use, forward + weight gradient for the
//!   top-down use; the reference variant skips the last).

use super::config::{BlockLayout, CouplingKind, ModelConfig};
use anyhow::Result;

/// Per-sample MACs of one block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockCost {
    /// One pass (forward or transposed) through every coupling.
    pub coupling_pass: u64,
    /// What is evaluated once per relaxation: the feedforward conv, one pass (and, for a
    /// resistive block, its input coupling).
    pub feedforward: u64,
    /// The feedforward conv alone, one pass (0 without one).
    pub ff_conv: u64,
    /// Layers and couplings, for display.
    pub layers: usize,
}

/// MACs of one pass through coupling `c` (kernel size `k`), per sample.
pub fn coupling_macs(c: &CouplingKind, k: usize) -> u64 {
    match *c {
        CouplingKind::Conv {
            cin, cout, h, w, ..
        } => (cin * cout * k * k * h * w) as u64,
        CouplingKind::Dense { fin, fout } | CouplingKind::Resistive { fin, fout } => {
            (fin * fout) as u64
        }
    }
}

fn block_cost(l: &BlockLayout) -> BlockCost {
    let (h, w) = match l.input {
        super::config::LayerShape::Map { h, w, .. } => (h, w),
        super::config::LayerShape::Dense { .. } => (1, 1),
    };
    let conv = if l.ff_conv {
        (l.ff_cin * l.ff_cout * l.kernel * l.kernel * h * w) as u64
    } else {
        0
    };
    match l.kind {
        // a resistive block's input coupling is evaluated once per relaxation, like F
        super::config::BlockKind::Resistive => BlockCost {
            coupling_pass: l.couplings[1..]
                .iter()
                .map(|c| coupling_macs(c, l.kernel))
                .sum(),
            feedforward: conv + coupling_macs(&l.couplings[0], l.kernel),
            ff_conv: conv,
            layers: l.layers.len(),
        },
        super::config::BlockKind::Hopfield => BlockCost {
            coupling_pass: l.couplings.iter().map(|c| coupling_macs(c, l.kernel)).sum(),
            feedforward: conv,
            ff_conv: conv,
            layers: l.layers.len(),
        },
    }
}

/// Per-sample costs of every block.
pub fn block_costs(cfg: &ModelConfig) -> Result<Vec<BlockCost>> {
    Ok(cfg.layouts()?.iter().map(block_cost).collect())
}

/// MACs of one sweep of every block (per sample).
pub fn sweep_macs(costs: &[BlockCost]) -> u64 {
    costs.iter().map(|c| 2 * c.coupling_pass).sum()
}

/// Free phase with `t1[k]` sweeps in block k, for `batch` samples.
pub fn free_phase_macs(costs: &[BlockCost], t1: &[usize], batch: usize) -> u64 {
    costs
        .iter()
        .zip(t1)
        .map(|(c, &t)| c.feedforward + 2 * c.coupling_pass * t as u64)
        .sum::<u64>()
        * batch as u64
}

/// One EP training step (free phase included).
pub fn ep_step_macs(costs: &[BlockCost], t1: &[usize], t2: usize, batch: usize) -> u64 {
    let extra: u64 = costs
        .iter()
        .map(|c| 2 * c.coupling_pass * 2 * t2 as u64 + 2 * c.coupling_pass + 2 * c.feedforward)
        .sum();
    free_phase_macs(costs, t1, batch) + extra * batch as u64
}

/// One ID training step (free phase included); `exact` counts the top-down weight gradient.
pub fn id_step_macs(
    costs: &[BlockCost],
    t1: &[usize],
    t2: usize,
    exact: bool,
    batch: usize,
) -> u64 {
    let backward_per_sweep = if exact { 4 } else { 3 };
    let extra: u64 = costs
        .iter()
        .map(|c| c.coupling_pass * t2 as u64 * (2 + backward_per_sweep) + 3 * c.feedforward)
        .sum();
    free_phase_macs(costs, t1, batch) + extra * batch as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::presets::preset;

    #[test]
    fn splitting_small_2block_costs() {
        let c = block_costs(&preset("splitting_small_2block", None).unwrap().model).unwrap();
        // block 1: 128->256@16 and 256->256@8 couplings; block 2: 512->512@2 and dense 512->256
        assert_eq!(c[0].coupling_pass, 128 * 256 * 9 * 256 + 256 * 256 * 9 * 64);
        assert_eq!(c[1].coupling_pass, 512 * 512 * 9 * 4 + 512 * 256);
        assert_eq!(c[0].feedforward, 3 * 128 * 9 * 1024);
        assert_eq!(
            sweep_macs(&c),
            2 * (c[0].coupling_pass + c[1].coupling_pass)
        );
        let ep = ep_step_macs(&c, &[60, 60], 20, 1);
        assert!(ep > free_phase_macs(&c, &[60, 60], 1));
    }
}
