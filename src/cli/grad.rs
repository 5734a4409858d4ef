//! `ffebm grad`: gradients of one batch, written under the weights file's names.

use super::common::{Global, ModelArgs, PhaseArgs, SolverArgs};
use crate::core::tensor::nchw_to_nhwc;
use crate::grad::{compute_gradients_with, power::BlockPower, Algorithm, StepOptions};
use crate::io::tensors::{read_tensor_file, write_tensor_file, Stored, TensorFile};
use crate::model::feedforward::{apply_bn_updates, BnUpdates};
use crate::model::prepare;
use crate::train::metrics::power_record;
use anyhow::{bail, ensure, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct GradArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Batch file (safetensors): `x` [B,C,H,W] float32 as the preset's data pipeline gives it
    /// (normalised; raw pixels in [0,1] for the MNIST DRN presets), `y` [B] int.
    #[arg(long)]
    pub input: PathBuf,
    /// Gradient estimator.
    #[arg(long, default_value = "ep")]
    pub algo: Algorithm,
    #[command(flatten)]
    pub phases: PhaseArgs,
    #[command(flatten)]
    pub solver: SolverArgs,
    /// Free-phase tolerance (default: the preset's; 0 disables).
    #[arg(long)]
    pub tol: Option<f32>,
    /// Update BN running statistics at every feedforward evaluation, as the reference does.
    #[arg(long)]
    pub bn_compat: bool,
    /// Output file (safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Analog non-ideality `key=value` (repeatable; the keys of the `[analog]` table, e.g.
    /// `preset=ideal-8bit`, `weight_std=0.1`, `blocks.1.adc_bits=6`, `seed=3`): the
    /// gradients of the physical circuit, as in a training step. Devices are drawn from
    /// `seed` (default: `--seed`).
    #[arg(long = "analog", value_name = "KEY=VALUE")]
    pub analog: Vec<String>,
    /// Quantized feedforward blocks `key=value` (repeatable; the keys of the `[digital]`
    /// table: `weight_bits`, `activation_bits`, `gradient_bits`), e.g. `--digital weight_bits=8`.
    #[arg(long = "digital", value_name = "KEY=VALUE")]
    pub digital: Vec<String>,
}

/// Reads `x` (NCHW float) and `y` (integers) from a batch file.
pub fn read_batch(path: &Path) -> Result<(crate::core::Tensor, Vec<u32>)> {
    let f: TensorFile = read_tensor_file(path)?;
    let x = f.f32("x", path)?;
    ensure!(
        x.shape().len() == 4,
        "{}: `x` has shape {:?}, expected [B, C, H, W]",
        path.display(),
        x.shape()
    );
    let y = match f.tensors.get("y") {
        Some(Stored::I64 { shape, data }) => {
            ensure!(
                shape.len() == 1 && shape[0] == x.shape()[0],
                "{}: `y` has shape {shape:?}, expected [{}]",
                path.display(),
                x.shape()[0]
            );
            data.iter()
                .enumerate()
                .map(|(i, &v)| {
                    u32::try_from(v).map_err(|_| {
                        anyhow::anyhow!(
                            "{}: label y[{i}] = {v} is negative or too large",
                            path.display()
                        )
                    })
                })
                .collect::<Result<Vec<u32>>>()?
        }
        Some(Stored::F32(_)) => bail!(
            "{}: `y` must be an integer tensor (int64 or int32)",
            path.display()
        ),
        None => bail!("{}: missing tensor `y` (labels)", path.display()),
    };
    Ok((nchw_to_nhwc(x)?, y))
}

pub fn run(g: &Global, a: GradArgs) -> Result<()> {
    let (mut model, preset, style) = a.model.build(g.seed)?;
    let (x, y) = read_batch(&a.input)?;
    super::common::check_batch(&model, &x, &a.input)?;
    if let Some(p) = preset.as_ref().filter(|p| !p.train.normalize) {
        let (lo, hi) = x
            .data()
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| {
                (l.min(*v), h.max(*v))
            });
        if lo < 0.0 || hi > 1.0 {
            eprintln!(
                "warning: {}: `x` spans [{lo}, {hi}], but preset {} trains on raw pixels in [0, 1] (no normalisation); gradients of a normalised batch are not the ones of a training step",
                a.input.display(),
                p.name
            );
        }
    }
    let mut gc = a.phases.resolve(preset.as_ref())?;
    gc.name = a.algo;
    match a.tol {
        Some(t) if t > 0.0 => gc.tol = Some(t),
        Some(_) => gc.tol = None,
        None => {}
    }
    if a.bn_compat {
        gc.bn_updates = BnUpdates::ReferenceCompat;
    }
    a.solver.apply(&mut gc)?;
    gc.validate()?;
    let (t1, t2, beta) = (gc.t1, gc.t2, gc.beta);
    let analog = crate::analog::AnalogConfig::from_sets(&a.analog)?;
    let circuit = crate::analog::Circuit::new(&analog, &model, g.seed)?;
    let digital = crate::digital::DigitalConfig::from_sets(&a.digital)?.resolve()?;
    let physical =
        crate::digital::Digital::on_top(digital.as_ref(), circuit.physical(&model)?, &model);
    let circuit_model = physical.as_ref().unwrap_or(&model);
    let runtime = (!circuit.is_ideal()).then(|| circuit.runtime(circuit.seed));
    let kernels = prepare(circuit_model)?;
    let t = std::time::Instant::now();
    let out = compute_gradients_with(
        circuit_model,
        &kernels,
        &x,
        &y,
        &gc,
        StepOptions {
            power: true,
            analog: runtime.as_ref(),
            digital,
            ..Default::default()
        },
    )?;
    drop(physical);
    let secs = t.elapsed().as_secs_f64();
    apply_bn_updates(&mut model, &out.bn_updates);
    let mut tensors = style.grad_tensors(&model, &out.grads)?;
    tensors.push(("loss".into(), Stored::scalar(out.loss)));
    tensors.push(("logits".into(), Stored::F32(out.free.logits.clone())));
    for (key, p) in power_entries(&out.power) {
        tensors.push((key, Stored::scalar(p as f32)));
    }
    for (name, t) in style.model_tensors(&model)? {
        if name.contains("running_") || name.ends_with("num_batches_tracked") {
            tensors.push((format!("state_after.{name}"), t));
        }
    }
    let meta = HashMap::from([
        ("algorithm".to_string(), a.algo.to_string()),
        ("t1".to_string(), t1.to_string()),
        ("t2".to_string(), t2.to_string()),
        ("beta".to_string(), beta.to_string()),
        ("free_sweeps".to_string(), format!("{:?}", out.free.sweeps)),
        (
            "sweeps".to_string(),
            serde_json::to_string(&crate::grad::sweep_table(&out))?,
        ),
    ]);
    write_tensor_file(&a.out, &tensors, meta)?;
    if !g.quiet {
        println!("{} gradients of {} samples in {:.2} s (T1 {t1}, T2 {t2}, beta {beta}; free sweeps {:?})", a.algo, y.len(), secs, out.free.sweeps);
        for row in crate::grad::sweep_table(&out) {
            println!("{row}");
        }
        println!("{:<44} {:>14} {:>14}", "parameter", "|grad|", "max |grad|");
        for (name, s) in &tensors {
            if let (Stored::F32(t), false) = (
                s,
                name == "loss"
                    || name == "logits"
                    || name.starts_with("state_after.")
                    || name.starts_with("power."),
            ) {
                let n = crate::core::ops::sum_sq(t).sqrt();
                let m = t.data().iter().fold(0.0f32, |m, v| m.max(v.abs()));
                println!("{name:<44} {n:>14.6e} {m:>14.6e}");
            }
        }
    }
    if !g.quiet {
        for (key, p) in power_entries(&out.power) {
            println!("{key:<44} {p:>14.6e}");
        }
    }
    println!("loss {:.6}; wrote {}", out.loss, a.out.display());
    Ok(())
}

/// `power.block<k>.{free,plus,minus}`: the readouts of [`power_record`] under a `power.`
/// prefix.
fn power_entries(power: &[BlockPower]) -> Vec<(String, f64)> {
    power_record(power)
        .into_iter()
        .map(|(k, p)| (format!("power.{k}"), p))
        .collect()
}
