//! Energy-based blocks as energies: **layers** (states with their nonlinearity, see
//! [`LayerKind`]) and **interactions** (energy terms, see [`Interaction`]: couplings between
//! two layers, the drive from the feedforward transform, biases). Relaxation
//! ([`crate::relax`]) minimises a block's energy plus an optional cost term ([`Nudge`]);
//! the gradient estimators ([`crate::grad`]) turn equilibria into gradients through the
//! interactions' parameter and input derivatives.
//!
//! Each interaction kind lives in one file under [`terms`]. A block's scalar energy is
//! `E(s) = Σ_l G_l(s_l) + Σ_t E_t(s)` ([`EnergyBlock::energy`]).

pub mod interaction;
pub mod layer;
pub mod nudge;
pub mod terms;

pub use interaction::{
    Adjoints, Interaction, Offsets, Probe, Recorded, Span, StateView, TermCache,
};
pub use layer::{LayerKind, NoMinimumError};
pub use nudge::Nudge;

use crate::core::Tensor;
use crate::model::{
    Block, BlockKind, CouplingKind, LayerShape, Model, PackedCoupling, PreparedBlock, UnitDevices,
};
use anyhow::Result;

/// Layer states of one block for a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockState {
    pub layers: Vec<Tensor>,
}

impl BlockState {
    /// All layers at zero (the SPEC's initial state).
    pub fn zeros(shapes: &[LayerShape], batch: usize) -> Self {
        BlockState {
            layers: shapes
                .iter()
                .map(|s| Tensor::zeros(&s.batched(batch)))
                .collect(),
        }
    }

    /// The last layer (the block's output).
    pub fn last(&self) -> &Tensor {
        self.layers.last().expect("a block has at least one layer")
    }
}

/// One energy-based block: its layers and the terms of its energy.
pub struct EnergyBlock<'a> {
    /// Position of the block in the model.
    pub index: usize,
    pub kinds: Vec<LayerKind<'a>>,
    pub shapes: Vec<LayerShape>,
    pub terms: Vec<Box<dyn Interaction + 'a>>,
    /// For each layer, the terms whose energy depends on it, in summation order (the term
    /// from below first, then the one from above, then terms on the layer itself).
    touching: Vec<Vec<usize>>,
}

impl<'a> EnergyBlock<'a> {
    /// Assembles a block from its layers and terms.
    pub fn new(
        index: usize,
        kinds: Vec<LayerKind<'a>>,
        shapes: Vec<LayerShape>,
        terms: Vec<Box<dyn Interaction + 'a>>,
    ) -> Self {
        let n = kinds.len();
        let touching = (0..n)
            .map(|l| {
                let mut from_below = Vec::new();
                let mut from_above = Vec::new();
                let mut own = Vec::new();
                for (t, term) in terms.iter().enumerate() {
                    match term.span() {
                        Span::Input { post } if post == l => from_below.push(t),
                        Span::Pair { post, .. } if post == l => from_below.push(t),
                        Span::Pair { pre, .. } if pre == l => from_above.push(t),
                        Span::Layer(p) if p == l => own.push(t),
                        _ => {}
                    }
                }
                from_below.extend(from_above);
                from_below.extend(own);
                from_below
            })
            .collect();
        EnergyBlock {
            index,
            kinds,
            shapes,
            terms,
            touching,
        }
    }

    /// The Hopfield block `k` of `model` (SPEC §1.2).
    pub fn hopfield(model: &'a Model, kernels: &'a [PreparedBlock], k: usize) -> Self {
        let block: &'a Block = &model.blocks[k];
        let layout = &block.layout;
        let n = layout.layers.len();
        let kinds = (0..n)
            .map(|l| {
                if l + 1 < n || layout.clamp_last {
                    match unit(block, l).and_then(|u| u.slope.as_ref()) {
                        Some(alpha) => LayerKind::VariedSigmoid { alpha },
                        None => LayerKind::HardSigmoid {
                            alpha: layout.alpha,
                        },
                    }
                } else {
                    LayerKind::Identity
                }
            })
            .collect();
        let mut terms: Vec<Box<dyn Interaction + 'a>> = vec![Box::new(terms::HopfieldDrive)];
        for (ci, (kind, syn)) in layout.couplings.iter().zip(&block.couplings).enumerate() {
            let index = ci + 1;
            let packed = &kernels[k].couplings[ci];
            terms.push(match (*kind, packed) {
                (
                    CouplingKind::Conv {
                        cin,
                        cout,
                        h,
                        w,
                        pool,
                    },
                    PackedCoupling::Conv(p),
                ) => Box::new(terms::ConvCoupling {
                    block: k,
                    index,
                    synapse: syn,
                    packed: p,
                    pool,
                    geom: crate::core::ConvGeom {
                        cin,
                        cout,
                        k: layout.kernel,
                        pad: layout.padding,
                    },
                    hw: (h, w),
                }),
                (CouplingKind::Dense { .. }, PackedCoupling::Dense(p)) => {
                    Box::new(terms::DenseCoupling {
                        block: k,
                        index,
                        synapse: syn,
                        packed: p,
                    })
                }
                _ => unreachable!("kernels are packed from the layout"),
            });
        }
        for (layer, u) in block.units.iter().enumerate() {
            if let Some(theta) = &u.offset {
                // a fixed bias: the units' input offsets
                terms.push(Box::new(terms::LayerBias {
                    layer,
                    bias: theta,
                    param: None,
                }));
            }
        }
        EnergyBlock::new(k, kinds, layout.layers.clone(), terms)
    }

    /// The resistive block `k` of `model`: layers of diodes and a linear output, the
    /// conductances into each layer (from the input voltages for layer 0) and a bias (current
    /// source) on each layer.
    pub fn resistive(model: &'a Model, kernels: &'a [PreparedBlock], k: usize) -> Self {
        let block: &'a Block = &model.blocks[k];
        let layout = &block.layout;
        let n = layout.layers.len();
        let kinds = (0..n)
            .map(|l| {
                if l + 1 < n {
                    match unit(block, l).and_then(|u| u.bound.as_ref()) {
                        Some(bounds) => LayerKind::VariedDiode { bounds },
                        None => LayerKind::Diode,
                    }
                } else {
                    LayerKind::Linear
                }
            })
            .collect();
        let mut couplings: Vec<Box<dyn Interaction + 'a>> = Vec::new();
        let mut biases: Vec<Box<dyn Interaction + 'a>> = Vec::new();
        for (l, (syn, packed)) in block
            .couplings
            .iter()
            .zip(&kernels[k].couplings)
            .enumerate()
        {
            let PackedCoupling::Resistive {
                dense,
                row_sums,
                col_sums,
            } = packed
            else {
                unreachable!("resistive blocks have resistive couplings")
            };
            couplings.push(Box::new(terms::ResistiveCoupling {
                block: k,
                index: l + 1,
                pre: l.checked_sub(1),
                post: l,
                packed: dense,
                row_sums,
                col_sums,
                gain: layout.gain,
                duplicate: layout.duplicate,
            }));
            biases.push(Box::new(terms::LayerBias {
                layer: l,
                bias: syn.bias.as_ref().expect("resistive layers have a bias"),
                param: Some(crate::model::ParamId::Synapse {
                    block: k,
                    index: l + 1,
                    bias: true,
                }),
            }));
        }
        couplings.extend(biases);
        EnergyBlock::new(k, kinds, layout.layers.clone(), couplings)
    }

    /// Every block of `model`.
    pub fn all(model: &'a Model, kernels: &'a [PreparedBlock]) -> Vec<Self> {
        (0..model.blocks.len())
            .map(|k| match model.blocks[k].layout.kind {
                BlockKind::Hopfield => EnergyBlock::hopfield(model, kernels, k),
                BlockKind::Resistive => EnergyBlock::resistive(model, kernels, k),
            })
            .collect()
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// The terms whose energy depends on layer `l`, in summation order.
    pub fn touching(&self, l: usize) -> &[usize] {
        &self.touching[l]
    }

    /// `E(s) + C(s)` per sample: self-energies, every interaction and the optional cost term
    /// (`+∞` for states outside a layer's domain).
    pub fn energy(
        &self,
        input: &Tensor,
        state: &BlockState,
        cost: Option<&dyn Interaction>,
    ) -> Result<Vec<f64>> {
        let mut out = vec![0.0f64; state.layers[0].dim0()];
        for (kind, s) in self.kinds.iter().zip(&state.layers) {
            kind.self_energy(s, &mut out);
        }
        with_view(input, state, |view| {
            for term in self.terms.iter().map(|t| t.as_ref()).chain(cost) {
                term.energy(view, &mut TermCache::default(), &mut out)?;
            }
            Ok(out)
        })
    }

    /// The power the block's resistors dissipate at `state`, per sample (see
    /// [`Interaction::power`]: `P = Σ g (v_i − v_j)²` over every resistor, input resistors
    /// included); `None` for a block without resistors (a Hopfield block).
    pub fn power(&self, input: &Tensor, state: &BlockState) -> Result<Option<Vec<f64>>> {
        let mut out = vec![0.0f64; state.layers[0].dim0()];
        with_view(input, state, |view| {
            let mut any = false;
            for term in &self.terms {
                any |= term.power(view, &mut TermCache::default(), &mut out)?;
            }
            Ok(any.then_some(out))
        })
    }

    /// Per-sample MACs of one sweep (every interaction's linear coefficients, both ways).
    pub fn sweep_macs(&self) -> u64 {
        self.terms.iter().map(|t| 2 * t.macs()).sum()
    }
}

/// The per-unit devices of layer `l` of a physical circuit's block (`None`: nominal units).
fn unit(block: &Block, l: usize) -> Option<&UnitDevices> {
    block.units.get(l)
}

/// Runs `f` on a plain (not offset) view of `state`, for one-off evaluations with fresh
/// caches.
fn with_view<R>(input: &Tensor, state: &BlockState, f: impl FnOnce(&StateView<'_, '_>) -> R) -> R {
    let versions = vec![0u64; state.layers.len()];
    f(&StateView {
        input,
        layers: &state.layers,
        versions: &versions,
        offsets: None,
    })
}
