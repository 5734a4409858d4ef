//! The resistor power readout of DRN blocks: `P = Σ g·(v_i − v_j)²` over every resistor of a
//! block (input resistors included), at the free equilibrium and at EP's nudged equilibria,
//! averaged over the batch. In the circuit's units (volts and siemens) it is in watts; the
//! conductances and voltages of a DRN preset are dimensionless, so is its power.

use super::chain::{with_block, Chain, FreePhase};
use crate::energy::BlockState;
use anyhow::Result;
use serde::{Deserialize, Serialize};

/// Batch-mean resistor power of one block at its equilibria.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockPower {
    /// Position of the block in the model.
    pub block: usize,
    /// At the free equilibrium.
    pub free: f64,
    /// At each nudged equilibrium EP relaxed, with its nudging strength (empty for ID).
    pub nudged: Vec<NudgedPower>,
}

/// Batch-mean resistor power at one nudged equilibrium.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NudgedPower {
    pub beta: f32,
    pub power: f64,
}

/// Batch mean of block `k`'s resistor power at `state` (`None`: the block has no resistors).
pub fn mean_power(
    chain: &Chain<'_>,
    free: &FreePhase,
    k: usize,
    state: &BlockState,
) -> Result<Option<f64>> {
    let p = chain.blocks[k]
        .power(&free.drives[k], state)
        .map_err(|e| with_block(e, k))?;
    Ok(p.map(|p| p.iter().sum::<f64>() / p.len().max(1) as f64))
}

/// The free-equilibrium power of every block with resistors, and the nudged powers in
/// `nudged` (`(block, β, power)`, from the estimator).
pub fn block_powers(
    chain: &Chain<'_>,
    free: &FreePhase,
    nudged: &[(usize, NudgedPower)],
) -> Result<Vec<BlockPower>> {
    let mut out = Vec::new();
    for k in 0..chain.len() {
        if let Some(p) = mean_power(chain, free, k, &free.states[k])? {
            out.push(BlockPower {
                block: k,
                free: p,
                nudged: nudged
                    .iter()
                    .filter(|(b, _)| *b == k)
                    .map(|(_, n)| *n)
                    .collect(),
            });
        }
    }
    Ok(out)
}
