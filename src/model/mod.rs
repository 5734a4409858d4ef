//! The ff-EBM: its description, parameters, initialisation, presets, the feedforward
//! transforms and the readout. Relaxation lives in [`crate::relax`], gradients in
//! [`crate::grad`].

pub mod config;
pub mod cost;
pub mod feedforward;
pub mod params;
pub mod presets;
pub mod readout;

pub use config::{BlockConfig, BlockLayout, CouplingKind, LayerShape, ModelConfig, Norm};
pub use params::{BatchNorm, Block, BufferId, Grads, Model, ParamId, Synapse};

use crate::core::{PackedConv, Tensor};
use anyhow::Result;

/// Conv weights of one block packed for the kernels (rebuilt whenever the weights change).
#[derive(Clone, Debug)]
pub struct PreparedBlock {
    pub ff: PackedConv,
    /// `Some` for conv couplings, `None` for dense ones; index `i-1` for synapse `i`.
    pub couplings: Vec<Option<PackedConv>>,
}

impl PreparedBlock {
    pub fn new(block: &Block, algo: crate::core::ConvAlgo) -> Result<Self> {
        let pad = block.layout.padding;
        let ff = PackedConv::new(&block.ff.weight, pad, algo)?;
        let couplings = block
            .layout
            .couplings
            .iter()
            .zip(&block.couplings)
            .map(|(kind, syn)| match kind {
                CouplingKind::Conv { .. } => PackedConv::new(&syn.weight, pad, algo).map(Some),
                CouplingKind::Dense { .. } => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PreparedBlock { ff, couplings })
    }
}

/// Packed conv weights of every block of a model.
pub fn prepare(model: &Model) -> Result<Vec<PreparedBlock>> {
    model
        .blocks
        .iter()
        .map(|b| PreparedBlock::new(b, model.config.conv_algo))
        .collect()
}

/// A channels-last image batch `[B, H, W, C]` checked against the model input `[C, H, W]`.
pub fn check_input(model: &Model, x: &Tensor) -> Result<()> {
    let [c, h, w] = model.config.input;
    anyhow::ensure!(
        x.shape().len() == 4 && x.shape()[1..] == [h, w, c],
        "input batch has shape {:?} (channels-last), but the model expects [B, {h}, {w}, {c}] (i.e. NCHW [B, {c}, {h}, {w}])",
        x.shape()
    );
    Ok(())
}
