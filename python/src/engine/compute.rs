//! One batch through the model: free phase, gradients (as `ffebm grad`), static gradient
//! analysis (as `ffebm gdd`).

use super::net::alias_of;
use super::{Array, Batch, Net, Value};
use anyhow::{ensure, Result};
use ffebm::analysis::gdd::{analyse, GddConfig};
use ffebm::core::Tensor;
use ffebm::grad::{compute_gradients, free_phase_with, AlgoConfig, Chain};
use ffebm::model::feedforward::{apply_bn_updates, BnMode};
use ffebm::model::{BufferId, Model, ParamId};
use ffebm::relax::{Order, Schedule};

fn labels_u32(y: &[i64]) -> Result<Vec<u32>> {
    y.iter()
        .enumerate()
        .map(|(i, &v)| {
            u32::try_from(v)
                .map_err(|_| anyhow::anyhow!("label y[{i}] = {v} is negative or too large"))
        })
        .collect()
}

fn input(net: &Net, x: Batch) -> Result<Tensor> {
    let [c, h, w] = net.input_shape();
    ensure!(
        x.nchw[1..] == [c, h, w],
        "`x` has shape {:?} (NCHW), but the model expects [B, {c}, {h}, {w}]",
        x.nchw
    );
    let x = x.tensor()?;
    ffebm::model::check_input(&net.model, &x)?;
    Ok(x)
}

/// Free equilibria (per block, per layer), output scores (the readout's logits, or the last
/// layer of a model without a readout) and sweeps of one batch.
pub struct FreeOut {
    pub states: Vec<Vec<Array>>,
    pub logits: Array,
    pub sweeps: Vec<usize>,
}

/// Free phase of one batch from zero states; `eval` uses BN running statistics instead of
/// batch statistics.
pub fn free(
    net: &mut Net,
    x: Batch,
    eval: bool,
    schedule: Schedule,
    order: Order,
) -> Result<FreeOut> {
    let x = input(net, x)?;
    let (model, kernels) = net.parts()?;
    let mode = if eval { BnMode::Eval } else { BnMode::Train };
    let chain = Chain::new(model, kernels);
    let f = free_phase_with(&chain, &x, mode, schedule, order, None)?;
    Ok(FreeOut {
        states: f
            .states
            .into_iter()
            .map(|s| s.layers.into_iter().map(Array::activation).collect())
            .collect(),
        logits: Array::plain(f.logits),
        sweeps: f.sweeps,
    })
}

/// The BN running statistics and batch counts of `model` under their reference names.
fn bn_buffers(model: &Model) -> Vec<(String, Value)> {
    model
        .buffer_ids()
        .into_iter()
        .filter_map(|id| {
            let (BufferId::RunningMean(k)
            | BufferId::RunningVar(k)
            | BufferId::NumBatchesTracked(k)) = id;
            let bn = model.blocks[k].bn.as_ref()?;
            let v = match id {
                BufferId::RunningMean(_) => Value::F32(Array::plain(bn.running_mean.clone())),
                BufferId::RunningVar(_) => Value::F32(Array::plain(bn.running_var.clone())),
                BufferId::NumBatchesTracked(_) => Value::I64 {
                    shape: vec![],
                    data: vec![bn.num_batches_tracked],
                },
            };
            Some((model.buffer_name(id), v))
        })
        .collect()
}

/// Gradients of one batch, as `ffebm grad` computes them.
pub struct GradOut {
    /// `+∂L/∂θ` under the names the weights were given with (both, if both were).
    pub grads: Vec<(String, Array)>,
    pub loss: f32,
    pub logits: Array,
    pub sweeps: Vec<usize>,
    /// BN running statistics after the step (`running_mean`, `running_var`,
    /// `num_batches_tracked`), applied to the model when asked.
    pub bn_after: Vec<(String, Value)>,
    /// Wall time of the computation in the core (`compute_gradients`).
    pub seconds: f64,
}

/// Gradients of one batch with `algo` (estimator, T1, T2, β, variant, ...); `update_bn`
/// applies the step's BN running-statistics update to the model.
pub fn gradients(
    net: &mut Net,
    x: Batch,
    y: &[i64],
    algo: &AlgoConfig,
    update_bn: bool,
) -> Result<GradOut> {
    let y = labels_u32(y)?;
    let x = input(net, x)?;
    let (model, kernels) = net.parts()?;
    let start = std::time::Instant::now();
    let out = compute_gradients(model, kernels, &x, &y, algo)?;
    let seconds = start.elapsed().as_secs_f64();
    let names: Vec<(ParamId, String)> = out
        .grads
        .entries
        .iter()
        .map(|(id, _)| (*id, model.param_name(*id)))
        .collect();
    // BN statistics after the step: applied, read, and restored unless asked to keep them
    let saved: Vec<_> = net.model.blocks.iter().map(|b| b.bn.clone()).collect();
    apply_bn_updates(&mut net.model, &out.bn_updates);
    let bn_after = bn_buffers(&net.model);
    if !update_bn {
        for (b, bn) in net.model.blocks.iter_mut().zip(saved) {
            b.bn = bn;
        }
    }
    let style = &net.style;
    let mut grads = Vec::with_capacity(names.len() + net.model.blocks.len());
    for ((id, name), (_, g)) in names.into_iter().zip(out.grads.entries) {
        let synapse0 = matches!(id, ParamId::Synapse { index: 0, .. });
        match (synapse0, style.synapse0, style.feedforward0) {
            (true, true, true) => {
                let alias = alias_of(&name).expect("synapse 0 has an alias");
                grads.push((name, Array::plain(g.clone())));
                grads.push((alias, Array::plain(g)));
            }
            (true, false, true) => grads.push((alias_of(&name).expect("alias"), Array::plain(g))),
            _ => grads.push((name, Array::plain(g))),
        }
    }
    Ok(GradOut {
        grads,
        loss: out.loss,
        logits: Array::plain(out.free.logits),
        sweeps: out.free.sweeps,
        bn_after,
        seconds,
    })
}

/// Wall time (seconds) of `compute_gradients` alone on an already converted batch, for
/// measuring what the binding adds around it.
pub fn time_gradients(net: &mut Net, x: Batch, y: &[i64], algo: &AlgoConfig) -> Result<f64> {
    let y = labels_u32(y)?;
    let x = input(net, x)?;
    let (model, kernels) = net.parts()?;
    let t = std::time::Instant::now();
    compute_gradients(model, kernels, &x, &y, algo)?;
    Ok(t.elapsed().as_secs_f64())
}

/// The static gradient analysis of one batch (`ffebm gdd`), as the JSON of `gdd.json`.
pub fn gdd(
    net: &mut Net,
    x: Batch,
    y: &[i64],
    algo: &AlgoConfig,
    coords: usize,
    seed: u64,
    transients: bool,
) -> Result<String> {
    let y = labels_u32(y)?;
    let x = input(net, x)?;
    let (model, kernels) = net.parts()?;
    let cfg = GddConfig {
        algo: algo.clone(),
        coords,
        seed,
        transients,
    };
    let rep = analyse(model, kernels, &x, &y, &cfg, &mut |_, _| {})?;
    Ok(serde_json::to_string(&rep)?)
}
