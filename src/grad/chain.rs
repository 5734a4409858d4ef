//! What EP and ID share: the chain of blocks (the feedforward transforms and the
//! energy-based blocks of a model, assembled once per step), the free phase (SPEC §2.1),
//! backpropagation through a feedforward transform, and the readout at the end of the chain.

use super::AlgoConfig;
use crate::core::batchnorm::{BatchSums, WholeBatch};
use crate::core::loss::{softmax_cross_entropy, squared_error, Losses};
use crate::core::{ConvAlgo, Tensor};
use crate::energy::{BlockState, EnergyBlock, Nudge};
use crate::model::feedforward::{
    ff_forward_shared, ff_vjp_shared, BnMode, FfCache, FfGrads, TransformEvals,
};
use crate::model::readout::{accumulate_readout_grads, model_logits, model_loss_and_state_grad};
use crate::model::{CostKind, Grads, Model, ParamId, PreparedBlock};
use crate::relax::{relax, NonFiniteError, Order, RelaxReport, Relaxation, Schedule};
use anyhow::{Context, Result};

/// A model's blocks, ready for relaxation and differentiation (built once per step: the
/// energy blocks borrow the parameters and packed kernels).
pub struct Chain<'a> {
    pub model: &'a Model,
    pub kernels: &'a [PreparedBlock],
    pub blocks: Vec<EnergyBlock<'a>>,
    /// Set when this process holds only part of the batch (data-parallel training).
    pub part: Option<BatchPart<'a>>,
    /// The dynamic analog non-idealities (converters, noise) of the step; `None`: ideal.
    pub analog: Option<&'a crate::analog::Runtime>,
    /// The quantizers of the feedforward (digital) blocks' activations and errors; `None`:
    /// float32. (Their quantized weights are in `model` and `kernels`.)
    pub digital: Option<crate::digital::Digital>,
}

/// This process's part of a batch split over several processes: gradients are those of the
/// mean loss over the whole batch (`batch` samples; summing the parts' gradients gives the
/// whole batch's) and BatchNorm uses the whole batch's statistics (`sums`).
#[derive(Clone, Copy)]
pub struct BatchPart<'a> {
    /// Samples in the whole batch.
    pub batch: usize,
    /// Sums BatchNorm statistics over the parts.
    pub sums: &'a dyn BatchSums,
}

impl<'a> Chain<'a> {
    pub fn new(model: &'a Model, kernels: &'a [PreparedBlock]) -> Self {
        Chain {
            model,
            kernels,
            blocks: EnergyBlock::all(model, kernels),
            part: None,
            analog: None,
            digital: None,
        }
    }

    /// The chain of a physical circuit (see [`crate::analog`]): `model` and `kernels` are the
    /// circuit's (varied) parameters, `analog` its converters and noise.
    pub fn with_analog(
        model: &'a Model,
        kernels: &'a [PreparedBlock],
        analog: Option<&'a crate::analog::Runtime>,
    ) -> Self {
        Chain {
            analog,
            ..Chain::new(model, kernels)
        }
    }

    /// The chain of a process that holds `part` of the batch.
    pub fn for_part(model: &'a Model, kernels: &'a [PreparedBlock], part: BatchPart<'a>) -> Self {
        Chain {
            part: Some(part),
            ..Chain::new(model, kernels)
        }
    }

    /// The same chain on other packed kernels of the same parameters (e.g. direct
    /// convolutions for the free phase, see [`free_phase_kernels`]).
    pub fn on_kernels<'b>(&self, kernels: &'b [PreparedBlock]) -> Chain<'b>
    where
        'a: 'b,
    {
        Chain {
            kernels,
            blocks: EnergyBlock::all(self.model, kernels),
            ..*self
        }
    }

    /// The number of samples losses are averaged over: the whole batch's (`local` samples
    /// are here).
    pub fn batch_len(&self, local: usize) -> usize {
        self.part.map_or(local, |p| p.batch)
    }

    /// Sums BatchNorm statistics over the parts of the batch.
    pub fn batch_sums(&self) -> &'a dyn BatchSums {
        match self.part {
            Some(p) => p.sums,
            None => &WholeBatch,
        }
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The cost term `β·C` on the last layer of block `k`: the loss for the last block
    /// (cross-entropy through the readout, or squared error on the layer), else the error
    /// current `delta` from the block above.
    pub fn nudge<'n>(
        &self,
        k: usize,
        beta: f32,
        delta: Option<&'n Tensor>,
        labels: &'n [u32],
    ) -> Result<Nudge<'n>>
    where
        'a: 'n,
    {
        let layer = self.blocks[k].len() - 1;
        Ok(match (delta, &self.model.readout) {
            (Some(delta), _) => Nudge::Current { beta, layer, delta },
            (None, Some(readout)) => Nudge::CrossEntropy {
                beta,
                layer,
                readout,
                labels,
            },
            (None, None) => {
                let f = self.blocks[k].shapes[layer].numel();
                Nudge::squared_error(beta, layer, labels, f)?
            }
        })
    }

    /// The loss of each sample at the last block's last layer and `∂(scale·Σ_b ℓ_b)/∂s_n`.
    pub fn loss_and_output_grad(
        &self,
        s_last: &Tensor,
        labels: &[u32],
        scale: f32,
    ) -> Result<(Losses, Tensor)> {
        model_loss_and_state_grad(self.model, s_last, labels, scale)
    }

    /// Accumulates `scale · ∂(Σ_b ℓ_b)/∂θ_readout` at `s_last` into `grads` (nothing without
    /// a readout).
    pub fn accumulate_readout(
        &self,
        s_last: &Tensor,
        labels: &[u32],
        scale: f32,
        grads: &mut Grads,
    ) -> Result<()> {
        if let Some(readout) = &self.model.readout {
            let (gw, gb) = readout_grads(grads);
            accumulate_readout_grads(readout, s_last, labels, scale, gw, gb)?;
        }
        Ok(())
    }

    /// The drive `u_k = F_k(x_k)` of block `k` (training or evaluation mode), its forward pass
    /// cached in `cache`. With quantized activations ([`crate::digital`]) a feedforward conv
    /// computes `u_k = q(F_k(q(x_k)))` and caches `q(x_k)`.
    pub fn feedforward(
        &self,
        k: usize,
        input: &Tensor,
        mode: BnMode,
        cache: &mut FfCache,
    ) -> Result<Tensor> {
        let block = &self.model.blocks[k];
        let kern = self.kernels[k].ff.as_ref();
        let digital = self
            .digital
            .filter(|d| d.activation_bits.is_some() && block.ff.is_some() && kern.is_some());
        let Some(d) = digital else {
            return ff_forward_shared(block, kern, input, mode, cache, self.batch_sums());
        };
        let mut x = input.clone();
        d.activation(&mut x);
        let mut u = ff_forward_shared(block, kern, &x, mode, cache, self.batch_sums())?;
        d.activation(&mut u);
        Ok(u)
    }

    /// Feedforward gradients of block `k` for the cotangent `g_u` on its drive (forward pass
    /// cached in `cache`); returns the input cotangent `J_Fᵀ g_u` when `k > 0`. With quantized
    /// errors ([`crate::digital`]) a feedforward conv's backward pass reads `q(g_u)` and returns
    /// `q(J_Fᵀ q(g_u))`; quantized activations are passed straight through.
    pub fn feedforward_backward(
        &self,
        k: usize,
        cache: &FfCache,
        g_u: &Tensor,
        grads: &mut Grads,
    ) -> Result<Option<Tensor>> {
        let block = &self.model.blocks[k];
        let Some(ff) = &block.ff else {
            // the identity transform: no parameters
            return Ok((k > 0).then(|| g_u.clone()));
        };
        let quantized;
        let g_u = match self.digital.filter(|d| d.gradient_bits.is_some()) {
            Some(d) => {
                quantized = {
                    let mut g = g_u.clone();
                    d.error(&mut g);
                    g
                };
                &quantized
            }
            None => g_u,
        };
        let id = |index, bias| ParamId::Synapse {
            block: k,
            index,
            bias,
        };
        let bn = |bias| ParamId::Bn { block: k, bias };
        // take the tensors out to hand out several &mut at once
        let mut w = std::mem::take(grads.get_mut(id(0, false)));
        let mut b = ff
            .bias
            .as_ref()
            .map(|_| std::mem::take(grads.get_mut(id(0, true))));
        let mut gamma = block
            .bn
            .as_ref()
            .map(|_| std::mem::take(grads.get_mut(bn(false))));
        let mut beta = block
            .bn
            .as_ref()
            .map(|_| std::mem::take(grads.get_mut(bn(true))));
        let dx = ff_vjp_shared(
            block,
            self.kernels[k].ff.as_ref(),
            cache,
            g_u,
            k > 0,
            Some(FfGrads {
                weight: &mut w,
                bias: b.as_mut(),
                bn_gamma: gamma.as_mut(),
                bn_beta: beta.as_mut(),
            }),
            self.batch_sums(),
        )?;
        *grads.get_mut(id(0, false)) = w;
        if let Some(b) = b {
            *grads.get_mut(id(0, true)) = b;
        }
        if let (Some(g), Some(bt)) = (gamma, beta) {
            *grads.get_mut(bn(false)) = g;
            *grads.get_mut(bn(true)) = bt;
        }
        Ok(match (dx, self.digital) {
            (Some(mut dx), Some(d)) => {
                d.error(&mut dx);
                Some(dx)
            }
            (dx, _) => dx,
        })
    }
}

/// The two readout gradient tensors, borrowed together.
pub fn readout_grads(grads: &mut Grads) -> (&mut Tensor, &mut Tensor) {
    let mut w = None;
    let mut b = None;
    for (id, t) in grads.entries.iter_mut() {
        match id {
            ParamId::Readout { bias: false } => w = Some(t),
            ParamId::Readout { bias: true } => b = Some(t),
            _ => {}
        }
    }
    (w.expect("readout weight"), b.expect("readout bias"))
}

/// Everything the gradient estimators need from the free phase.
#[derive(Clone, Debug)]
pub struct FreePhase {
    /// Drive `u_k = F_k(x_k)` of each block and the caches of its forward pass
    /// (`ff[k].input` is the block input `x_k`).
    pub drives: Vec<Tensor>,
    pub ff: Vec<FfCache>,
    /// Free equilibrium of each block.
    pub states: Vec<BlockState>,
    /// Sweeps each block ran.
    pub sweeps: Vec<usize>,
    /// Per-sample criterion: the sweep at which each sample of each block stopped.
    pub sample_sweeps: Vec<Vec<usize>>,
    /// Each block's relaxation report (sweeps, residuals, Anderson fallbacks).
    pub reports: Vec<RelaxReport>,
    /// Output scores: the readout's logits, or the last layer (squared-error cost).
    pub logits: Tensor,
    pub cost: CostKind,
}

impl FreePhase {
    /// Per-sample cost of the free state.
    pub fn loss(&self, labels: &[u32]) -> Result<Losses> {
        match self.cost {
            CostKind::CrossEntropy => Ok(Losses {
                losses: softmax_cross_entropy(&self.logits, labels)?.losses,
            }),
            CostKind::SquaredError => squared_error(&self.logits, labels),
        }
    }

    /// Transform evaluations of the free phase, as the reference counts them (one per sweep).
    pub fn transform_evals(&self) -> Vec<TransformEvals> {
        self.ff
            .iter()
            .enumerate()
            .filter_map(|(k, c)| {
                c.bn_stats.as_ref().map(|s| TransformEvals {
                    block: k,
                    stats: s.clone(),
                    count: self.sweeps[k],
                })
            })
            .collect()
    }
}

/// Free phase (SPEC §2.1): blocks relax in order from zero states (or from `start`), each fed
/// by the last layer of the previous one; logits from the last block.
pub fn free_phase_with(
    chain: &Chain<'_>,
    x: &Tensor,
    mode: BnMode,
    schedule: Schedule,
    order: Order,
    start: Option<&[BlockState]>,
) -> Result<FreePhase> {
    let model = chain.model;
    crate::model::check_input(model, x)?;
    let mut out = FreePhase {
        drives: Vec::new(),
        ff: Vec::new(),
        states: Vec::new(),
        sweeps: Vec::new(),
        sample_sweeps: Vec::new(),
        reports: Vec::new(),
        logits: Tensor::default(),
        cost: model.config.cost,
    };
    let mut input = x.clone();
    for (k, block) in model.blocks.iter().enumerate() {
        let mut cache = FfCache::default();
        let mut drive = chain
            .feedforward(k, &input, mode, &mut cache)
            .with_context(|| format!("block {k}: feedforward transform"))?;
        if let Some(a) = chain.analog {
            a.dac(k, &mut drive);
        }
        let first = match start {
            Some(s) => s[k].clone(),
            None => BlockState::zeros(&block.layout.layers, x.dim0()),
        };
        let (state, report) = {
            let mut r = Relaxation::new(&chain.blocks[k], &drive, first, "free phase");
            if let Some(a) = chain.analog {
                r.set_update_noise(a.update_noise(k));
            }
            let report =
                relax(&mut r, order, None, schedule, None).map_err(|e| with_block(e, k))?;
            (r.into_state(), report)
        };
        input = state.last().clone();
        if let Some(a) = chain.analog {
            a.adc(k, &mut input);
        }
        out.sweeps.push(report.sweeps);
        out.sample_sweeps.push(report.sample_sweeps.clone());
        out.reports.push(report);
        out.states.push(state);
        out.drives.push(drive);
        out.ff.push(cache);
    }
    // the output as the readout reads it (through the last block's ADC)
    out.logits = model_logits(model, &input)?;
    Ok(out)
}

/// Direct-convolution kernels for the free phase when `cfg` asks for them
/// ([`AlgoConfig::exact_free_phase`]) and the model's are not direct already; `None`: the
/// free phase runs on the model's kernels.
pub fn free_phase_kernels(model: &Model, cfg: &AlgoConfig) -> Result<Option<Vec<PreparedBlock>>> {
    if !cfg.exact_free_phase() || model.config.conv_algo == ConvAlgo::Direct {
        return Ok(None);
    }
    crate::model::prepare_with(model, ConvAlgo::Direct).map(Some)
}

/// [`free_phase_with`] from zero states in the SPEC's order (even layers first).
pub fn free_phase(
    model: &Model,
    kernels: &[PreparedBlock],
    x: &Tensor,
    mode: BnMode,
    schedule: Schedule,
) -> Result<FreePhase> {
    let chain = Chain::new(model, kernels);
    free_phase_with(&chain, x, mode, schedule, Order::EvenFirst, None)
}

/// Adds the block index to relaxation errors (NaN/inf get a hint).
pub(crate) fn with_block(e: anyhow::Error, k: usize) -> anyhow::Error {
    if e.downcast_ref::<NonFiniteError>().is_some() {
        e.context(format!(
            "block {k} diverged (try a smaller learning rate or β, or a smaller `init_v`)"
        ))
    } else {
        e.context(format!("block {k}"))
    }
}
