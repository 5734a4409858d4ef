//! The ff-EBM: its description, parameters, initialisation, presets, the feedforward
//! transforms and the readout. Relaxation lives in [`crate::relax`], gradients in
//! [`crate::grad`].

pub mod config;
pub mod cost;
pub mod feedforward;
pub mod params;
pub mod presets;
pub mod readout;

pub use config::{
    BlockConfig, BlockKind, BlockLayout, CostKind, CouplingKind, LayerShape, ModelConfig, Norm,
};
pub use params::{BatchNorm, Block, BufferId, Grads, Model, ParamId, Synapse, UnitDevices};

use crate::core::dense::PackedDense;
use crate::core::{PackedConv, Tensor};
use anyhow::Result;

/// A coupling's weights packed for the kernels.
#[derive(Clone, Debug)]
pub enum PackedCoupling {
    Conv(PackedConv),
    Dense(PackedDense),
    /// Conductances `G: [F_out, F_in]` with their row sums `Σ_i G_ji` and column sums.
    Resistive {
        dense: PackedDense,
        row_sums: Tensor,
        col_sums: Tensor,
    },
}

impl PackedCoupling {
    /// The conv kernels (panics on a dense coupling: callers match on the layout first).
    pub fn conv(&self) -> &PackedConv {
        match self {
            PackedCoupling::Conv(c) => c,
            _ => panic!("dense coupling used as a conv"),
        }
    }

    /// The dense kernels (panics on a conv coupling).
    pub fn dense(&self) -> &PackedDense {
        match self {
            PackedCoupling::Dense(d) => d,
            _ => panic!("conv coupling used as a dense one"),
        }
    }
}

/// Weights of one block packed for the kernels (rebuilt whenever the weights change).
#[derive(Clone, Debug)]
pub struct PreparedBlock {
    /// The feedforward conv (absent for a resistive block fed directly).
    pub ff: Option<PackedConv>,
    /// Index `i-1` for synapse `i`.
    pub couplings: Vec<PackedCoupling>,
}

impl PreparedBlock {
    pub fn new(block: &Block, algo: crate::core::ConvAlgo) -> Result<Self> {
        let pad = block.layout.padding;
        let ff = block
            .ff
            .as_ref()
            .map(|f| PackedConv::new(&f.weight, pad, algo))
            .transpose()?;
        let layers = &block.layout.layers;
        let couplings = block
            .layout
            .couplings
            .iter()
            .zip(&block.couplings)
            .enumerate()
            .map(|(i, (kind, syn))| match kind {
                CouplingKind::Conv { .. } => {
                    PackedConv::new(&syn.weight, pad, algo).map(PackedCoupling::Conv)
                }
                CouplingKind::Dense { .. } => {
                    let map = match layers[i] {
                        LayerShape::Map { h, w, c } => Some([h, w, c]),
                        LayerShape::Dense { .. } => None,
                    };
                    PackedDense::new(&syn.weight, map).map(PackedCoupling::Dense)
                }
                CouplingKind::Resistive { .. } => {
                    let (row_sums, col_sums) = crate::core::resistive::row_col_sums(&syn.weight)?;
                    PackedDense::new(&syn.weight, None).map(|dense| PackedCoupling::Resistive {
                        dense,
                        row_sums,
                        col_sums,
                    })
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PreparedBlock { ff, couplings })
    }
}

/// Packed conv weights of every block of a model.
pub fn prepare(model: &Model) -> Result<Vec<PreparedBlock>> {
    prepare_with(model, model.config.conv_algo)
}

/// Packed conv weights of every block of a model for convolution algorithm `algo`.
pub fn prepare_with(model: &Model, algo: crate::core::ConvAlgo) -> Result<Vec<PreparedBlock>> {
    model
        .blocks
        .iter()
        .map(|b| PreparedBlock::new(b, algo))
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
