//! `ffebm bench`: kernel throughput and per-step times, with achieved FLOP/s by the SPEC §7
//! cost model (FLOPs = 2·MACs of the direct convolution, whatever algorithm ran).

use crate::core::conv::{conv2d, conv2d_transposed, conv2d_weight_grad};
use crate::core::testutil::random_tensor;
use crate::core::{ConvGeom, PackedConv, Tensor};
use crate::grad::{compute_gradients, free_phase, AlgoConfig, Algorithm};
use crate::model::cost::{block_costs, ep_step_macs, free_phase_macs, id_step_macs};
use crate::model::feedforward::BnMode;
use crate::model::presets::preset;
use crate::model::{prepare, Model};
use crate::relax::Schedule;
use anyhow::Result;
use serde::Serialize;
use std::time::Instant;

/// Throughput of one conv shape.
#[derive(Clone, Debug, Serialize)]
pub struct ConvResult {
    pub shape: String,
    pub batch: usize,
    pub forward_ms: f64,
    pub forward_gflops: f64,
    pub transposed_ms: f64,
    pub transposed_gflops: f64,
    pub weight_grad_ms: f64,
    pub weight_grad_gflops: f64,
}

/// Step times of one preset at one batch size.
#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    pub preset: String,
    pub batch: usize,
    pub free_phase_s: f64,
    pub free_phase_gflops: f64,
    pub ep_step_s: f64,
    pub ep_step_gflops: f64,
    /// ID step: the reference variant (what the reference code runs), or ID-exact for
    /// models with resistive blocks (the reference variant is not defined for them).
    pub id_step_s: f64,
    pub id_step_gflops: f64,
    /// `id-reference` or `id-exact`.
    pub id_algorithm: String,
    /// Training images per epoch of the preset's dataset.
    pub train_images: usize,
    /// `train_images / batch` EP steps: an epoch of training without evaluation.
    pub ep_epoch_s: f64,
    /// Sweeps of each block and phase in the timed EP step.
    pub ep_sweeps: Vec<crate::grad::PhaseSweeps>,
}

/// Everything `ffebm bench` measures.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub threads: usize,
    pub convs: Vec<ConvResult>,
    pub steps: Vec<StepResult>,
}

/// Median wall time of `reps` runs after one warm-up.
fn time<T>(reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<f64> {
    f()?;
    let mut v = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64());
    }
    v.sort_by(f64::total_cmp);
    Ok(v[v.len() / 2])
}

/// Conv throughput for `(C_in, C_out, size)` shapes at batch `b`.
pub fn bench_convs(
    shapes: &[(usize, usize, usize)],
    b: usize,
    reps: usize,
) -> Result<Vec<ConvResult>> {
    let mut out = Vec::new();
    for &(ci, co, s) in shapes {
        let g = ConvGeom {
            cin: ci,
            cout: co,
            k: 3,
            pad: 1,
        };
        let x = random_tensor(&[b, s, s, ci], 1);
        let dy = random_tensor(&[b, s, s, co], 2);
        let w = PackedConv::new(&random_tensor(&[co, ci, 3, 3], 3), 1, Default::default())?;
        let flops = 2.0 * g.macs(b, s, s) as f64;
        let (mut y, mut dx, mut dw) = (Tensor::default(), Tensor::default(), Tensor::default());
        let f = time(reps, || Ok(conv2d(&x, &w, None, &mut y)?))?;
        let t = time(reps, || Ok(conv2d_transposed(&dy, &w, &mut dx)?))?;
        let wg = time(reps, || {
            Ok(conv2d_weight_grad(&x, &dy, g, 1.0, false, &mut dw)?)
        })?;
        out.push(ConvResult {
            shape: format!("{ci}->{co}@{s}"),
            batch: b,
            forward_ms: f * 1e3,
            forward_gflops: flops / f / 1e9,
            transposed_ms: t * 1e3,
            transposed_gflops: flops / t / 1e9,
            weight_grad_ms: wg * 1e3,
            weight_grad_gflops: flops / wg / 1e9,
        });
    }
    Ok(out)
}

/// Free phase, EP step and ID step times of `preset_name` at batch `b` (random inputs).
pub fn bench_steps(preset_name: &str, b: usize, reps: usize, seed: u64) -> Result<StepResult> {
    let p = preset(preset_name, None)?;
    let model = Model::new(p.model.clone(), seed)?;
    let kernels = prepare(&model)?;
    let [c, h, w] = p.model.input;
    let x = random_tensor(&[b, h, w, c], seed + 1);
    let y: Vec<u32> = (0..b).map(|i| (i % p.model.classes) as u32).collect();
    let cfg = AlgoConfig {
        tol: None,
        ..p.algo.clone()
    };
    let costs = block_costs(&p.model)?;
    let t1 = vec![cfg.t1; costs.len()];
    let free = time(reps, || {
        free_phase(&model, &kernels, &x, BnMode::Train, Schedule::fixed(cfg.t1))
    })?;
    let mut ep_sweeps = Vec::new();
    let ep = time(reps, || {
        let out = compute_gradients(&model, &kernels, &x, &y, &cfg.with(Algorithm::Ep))?;
        ep_sweeps = out.sweeps;
        Ok(())
    })?;
    let resistive = p
        .model
        .layouts()?
        .iter()
        .any(|l| l.kind == crate::model::BlockKind::Resistive);
    let id_algo = if resistive {
        Algorithm::IdExact
    } else {
        Algorithm::IdReference
    };
    let id = time(reps, || {
        compute_gradients(&model, &kernels, &x, &y, &cfg.with(id_algo))
    })?;
    let train_images = p
        .train
        .dataset
        .parse::<crate::data::DatasetKind>()?
        .train_images();
    let gf = |macs: u64, s: f64| 2.0 * macs as f64 / s / 1e9;
    Ok(StepResult {
        preset: preset_name.into(),
        batch: b,
        free_phase_s: free,
        free_phase_gflops: gf(free_phase_macs(&costs, &t1, b), free),
        ep_step_s: ep,
        ep_step_gflops: gf(ep_step_macs(&costs, &t1, cfg.t2, b), ep),
        id_step_s: id,
        id_step_gflops: gf(id_step_macs(&costs, &t1, cfg.t2, resistive, b), id),
        id_algorithm: id_algo.to_string(),
        train_images,
        ep_epoch_s: ep * train_images.div_ceil(b) as f64,
        ep_sweeps,
    })
}
