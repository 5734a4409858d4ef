//! Implicit differentiation by truncated BPTT (SPEC §2.3): from copies of the free states,
//! T2 more sweeps in every block (free-phase order, block k+1 fed by block k's updated last
//! layer through `F_{k+1}`), `L = mean_b ℓ(s_K,n)`, and the exact reverse pass through those
//! sweeps and the feedforward transforms.
//!
//! Reverse pass of one update `s_l ← proj(z)`: the layer's backward gives the adjoint of its
//! linear coefficient (and, for resistive layers, of its quadratic one), and every interaction
//! that touched the layer propagates it to what it read: other layers, the block input and
//! its parameters ([`crate::energy::Interaction::vjp`]). In the `reference` variant a
//! coupling's weight is a constant in its top-down use.

use super::chain::{with_block, Chain, FreePhase};
use crate::core::batchnorm::BnBatchStats;
use crate::core::Tensor;
use crate::energy::{Adjoints, Recorded};
use crate::model::feedforward::{BnMode, FfCache, TransformEvals};
use crate::model::Grads;
use crate::relax::{relax, Order, Relaxation, Schedule, Tape};
use anyhow::Result;

/// ID gradients and the BN batch statistics of the re-evaluated feedforward transforms.
pub struct IdOutput {
    pub grads: Grads,
    /// Loss of the unrolled computation.
    pub loss: f32,
    /// Per block: batch statistics of `F_k` at its ID input (None without BN).
    pub bn_stats: Vec<Option<BnBatchStats>>,
    /// Adjoints of the starting (free) states of block `first`, layer by layer.
    pub state_grads: Vec<Tensor>,
}

impl IdOutput {
    /// The transform evaluations of the unrolled sweeps (as the reference counts them: one
    /// per sweep, at the ID input).
    pub fn transform_evals(&self, t2: usize) -> Vec<TransformEvals> {
        self.bn_stats
            .iter()
            .enumerate()
            .filter_map(|(k, s)| {
                s.as_ref().map(|s| TransformEvals {
                    block: k,
                    stats: s.clone(),
                    count: t2,
                })
            })
            .collect()
    }
}

/// BPTT from block `first` on (blocks before it are not re-run: `x_first` is the free-phase
/// input, a leaf), with `sweeps[k]` unrolled sweeps in block k (in `order`). Gradients of
/// parameters of blocks before `first` are zero. Used with `sweeps[first] = t` for the
/// transient curves.
pub fn id_from_block(
    chain: &Chain<'_>,
    free: &FreePhase,
    labels: &[u32],
    first: usize,
    sweeps: &[usize],
    order: Order,
    exact: bool,
) -> Result<IdOutput> {
    let model = chain.model;
    let kk = chain.len();
    // losses are means over the whole batch (of which `labels` may be a part)
    let b = chain.batch_len(labels.len());
    if !exact {
        if let Some(k) = model
            .blocks
            .iter()
            .position(|bl| bl.layout.kind == crate::model::BlockKind::Resistive)
        {
            anyhow::bail!("block {k} is resistive: `id-reference` is the Hopfield reference implementation's approximation (constant top-down weights) and is not defined for it; use `id-exact`");
        }
    }
    // forward: unroll every block from its free state, recording the updates
    let mut tapes: Vec<Tape> = Vec::with_capacity(kk);
    let mut drives: Vec<Tensor> = Vec::with_capacity(kk);
    let mut caches: Vec<FfCache> = Vec::with_capacity(kk);
    let mut bn_stats = vec![None; kk];
    // on a physical circuit, the drives before the DAC (for the straight-through adjoints)
    let mut unconverted: Vec<Tensor> = Vec::new();
    for k in first..kk {
        // the drive is re-evaluated from the block input: x_first (a leaf) or the updated
        // last layer of the block below (through its ADC, as in the free phase)
        let input = match tapes.last() {
            None => free.ff[k].input.clone(),
            Some(prev) => converted_output(chain, k - 1, prev),
        };
        let mut cache = FfCache::default();
        let mut drive = chain.feedforward(k, &input, BnMode::Train, &mut cache)?;
        if let Some(a) = chain.analog {
            unconverted.push(drive.clone());
            a.dac(k, &mut drive);
        }
        bn_stats[k] = cache.bn_stats.clone();
        let mut tape = Tape::new(&free.states[k]);
        {
            let mut r = Relaxation::new(
                &chain.blocks[k],
                &drive,
                free.states[k].clone(),
                "ID unrolled sweeps",
            );
            relax(
                &mut r,
                order,
                None,
                Schedule::fixed(sweeps[k]),
                Some(&mut tape),
            )
            .map_err(|e| with_block(e, k))?;
        }
        tapes.push(tape);
        drives.push(drive);
        caches.push(cache);
    }
    // loss and its adjoint
    let mut grads = model.zero_grads();
    let out = converted_output(chain, kk - 1, tapes.last().expect("blocks"));
    let (ce, mut g_out) = chain.loss_and_output_grad(&out, labels, 1.0 / b as f32)?;
    chain.accumulate_readout(&out, labels, 1.0 / b as f32, &mut grads)?;
    // reverse pass, block by block (straight through the converters, zero where they clip)
    let mut state_grads = Vec::new();
    for k in (first..kk).rev() {
        let i = k - first;
        if let (Some(a), false) = (chain.analog, g_out.is_empty()) {
            a.adc_adjoint(k, tapes[i].final_output(), &mut g_out)?;
        }
        let (mut g_u, g_start) =
            block_backward(chain, k, &tapes[i], &drives[i], g_out, &mut grads, exact)?;
        if let Some(a) = chain.analog {
            a.dac_adjoint(k, &unconverted[i], &mut g_u)?;
        }
        let dx = chain.feedforward_backward(k, &caches[i], &g_u, &mut grads)?;
        if k == first {
            state_grads = g_start;
        }
        match dx {
            Some(dx) if k > first => g_out = dx,
            _ => g_out = Tensor::default(),
        }
    }
    Ok(IdOutput {
        grads,
        loss: ce.mean(),
        bn_stats,
        state_grads,
    })
}

/// The last layer of block `k` after its unrolled sweeps, as the next block (or the readout)
/// reads it: through the block's ADC on a physical circuit.
fn converted_output(chain: &Chain<'_>, k: usize, tape: &Tape) -> Tensor {
    let mut s = tape.final_output().clone();
    if let Some(a) = chain.analog {
        a.adc(k, &mut s);
    }
    s
}

/// Reverse pass through the recorded updates of block `k`, given the adjoint of its final
/// last layer. Returns the adjoint of its input and of its starting states.
fn block_backward(
    chain: &Chain<'_>,
    k: usize,
    tape: &Tape,
    input: &Tensor,
    g_last: Tensor,
    grads: &mut Grads,
    exact: bool,
) -> Result<(Tensor, Vec<Tensor>)> {
    let block = &chain.blocks[k];
    let n = tape.values.len();
    let mut g: Vec<Tensor> = tape
        .values
        .iter()
        .map(|v| Tensor::zeros(v[0].shape()))
        .collect();
    if !g_last.is_empty() {
        crate::core::ops::axpy(&mut g[n - 1], 1.0, &g_last)?;
    }
    // total quadratic coefficient of each resistive layer (constant during the relaxation)
    let quad: Vec<Option<Tensor>> = (0..n)
        .map(|l| {
            let parts: Vec<&Tensor> = block
                .touching(l)
                .iter()
                .filter_map(|&t| block.terms[t].quadratic(l))
                .collect();
            (!parts.is_empty()).then(|| {
                let mut q = parts[0].clone();
                for p in &parts[1..] {
                    crate::core::ops::axpy(&mut q, 1.0, p).expect("same shape");
                }
                q
            })
        })
        .collect();
    let mut g_u = Tensor::zeros(input.shape());
    let mut g_lin = Tensor::default();
    let mut g_quad = Tensor::default();
    let mut tmp = Tensor::default();
    for e in tape.events.iter().rev() {
        let l = e.layer;
        let kind = block.kinds[l];
        let resistive = kind.is_resistive();
        kind.backward(
            &e.record,
            &g[l],
            quad[l].as_ref(),
            &mut g_lin,
            resistive.then_some(&mut g_quad),
        )?;
        g[l].fill(0.0);
        let layers: Vec<&Tensor> = e
            .reads
            .iter()
            .enumerate()
            .map(|(m, &v)| &tape.values[m][v])
            .collect();
        for (t, aux) in &e.aux {
            let rec = Recorded {
                layers: layers.clone(),
                input,
                aux: aux.as_ref(),
            };
            let mut adj = Adjoints {
                layers: &mut g,
                input: &mut g_u,
                grads,
                exact,
                tmp: &mut tmp,
            };
            block.terms[*t].vjp(l, &rec, &g_lin, resistive.then_some(&g_quad), &mut adj)?;
        }
    }
    Ok((g_u, g))
}
