//! One batch through the model: free phase, gradients (as `ffebm grad`), static gradient
//! analysis (as `ffebm gdd`).

use super::net::alias_of;
use super::{Array, Batch, Net, Phases, Value};
use anyhow::{ensure, Result};
use ffebm::analysis::gdd::{analyse, GddConfig};
use ffebm::core::Tensor;
use ffebm::grad::{
    apply_bn_updates, compute_gradients, free_phase, Algorithm, BnUpdates, GradConfig,
};
use ffebm::model::feedforward::BnMode;
use ffebm::model::{BufferId, Model, ParamId};
use ffebm::relax::Schedule;

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

/// Free equilibria (per block, per layer), logits and sweeps of one batch.
pub struct FreeOut {
    pub states: Vec<Vec<Array>>,
    pub logits: Array,
    pub sweeps: Vec<usize>,
}

/// Free phase of one batch; `eval` uses BN running statistics instead of batch statistics.
pub fn free(net: &mut Net, x: Batch, eval: bool, t1: usize, tol: Option<f32>) -> Result<FreeOut> {
    let x = input(net, x)?;
    let (model, kernels) = net.parts()?;
    let mode = if eval { BnMode::Eval } else { BnMode::Train };
    let schedule = Schedule {
        sweeps: t1,
        tol,
        per_sample: false,
    };
    let f = free_phase(model, kernels, &x, mode, schedule)?;
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

pub struct GradRequest<'a> {
    pub algo: &'a str,
    pub phases: Phases,
    pub bn_compat: bool,
    pub update_bn: bool,
}

pub fn gradients(net: &mut Net, x: Batch, y: &[i64], req: GradRequest<'_>) -> Result<GradOut> {
    let algo: Algorithm = req.algo.parse()?;
    let y = labels_u32(y)?;
    let x = input(net, x)?;
    let p = req.phases;
    let gc = GradConfig {
        t1: p.t1,
        t2: p.t2,
        beta: p.beta,
        tol: p.tol,
        per_sample_tol: false,
        bn_updates: if req.bn_compat {
            BnUpdates::ReferenceCompat
        } else {
            BnUpdates::OncePerBatch
        },
    };
    let (model, kernels) = net.parts()?;
    let start = std::time::Instant::now();
    let out = compute_gradients(model, kernels, &x, &y, algo, &gc)?;
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
    if !req.update_bn {
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
pub fn time_gradients(net: &mut Net, x: Batch, y: &[i64], phases: Phases) -> Result<f64> {
    let y = labels_u32(y)?;
    let x = input(net, x)?;
    let gc = GradConfig {
        t1: phases.t1,
        t2: phases.t2,
        beta: phases.beta,
        tol: phases.tol,
        per_sample_tol: false,
        bn_updates: BnUpdates::OncePerBatch,
    };
    let (model, kernels) = net.parts()?;
    let t = std::time::Instant::now();
    compute_gradients(model, kernels, &x, &y, Algorithm::Ep, &gc)?;
    Ok(t.elapsed().as_secs_f64())
}

/// The static gradient analysis of one batch (`ffebm gdd`), as the JSON of `gdd.json`.
pub fn gdd(
    net: &mut Net,
    x: Batch,
    y: &[i64],
    phases: Phases,
    coords: usize,
    seed: u64,
    transients: bool,
) -> Result<String> {
    let y = labels_u32(y)?;
    let x = input(net, x)?;
    let (model, kernels) = net.parts()?;
    let cfg = GddConfig {
        t1: phases.t1,
        t2: phases.t2,
        beta: phases.beta,
        coords,
        seed,
        transients,
    };
    let rep = analyse(model, kernels, &x, &y, &cfg, &mut |_, _| {})?;
    Ok(serde_json::to_string(&rep)?)
}
