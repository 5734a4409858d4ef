//! The estimate of a workload on a technology: energy per block and component and latency
//! for one step, one epoch and the whole run, one inference, and the same work on the GPU
//! baseline of the technology's `[gpu]` section.
//!
//! An epoch is `⌊N/B⌋` steps of `B` samples and one of `N mod B` (the loader keeps the
//! partial batch); "one step" is a full step of the first epoch; the run sums its epochs.

use super::counts::{inference_counts, step_counts, BlockCounts};
use super::price::{self, drn_block_power_w, Energy};
use super::tech::{Execution, Tech};
use super::workload::{EpochPlan, Workload};
use crate::model::config::BlockKind;
use crate::model::BlockLayout;
use anyhow::Result;
use serde::Serialize;

/// Energy (pJ) and latency (ns) of some work, here and on the GPU baseline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Totals {
    pub energy: Energy,
    pub energy_pj: f64,
    pub latency_ns: f64,
    pub gpu_energy_pj: f64,
    pub gpu_latency_ns: f64,
}

impl Totals {
    fn add(&mut self, o: &Totals, w: f64) {
        self.energy.add_scaled(&o.energy, w);
        self.energy_pj += w * o.energy_pj;
        self.latency_ns += w * o.latency_ns;
        self.gpu_energy_pj += w * o.gpu_energy_pj;
        self.gpu_latency_ns += w * o.gpu_latency_ns;
    }

    /// GPU energy over this energy (> 1: this technology saves energy).
    pub fn energy_gain(&self) -> f64 {
        self.gpu_energy_pj / self.energy_pj
    }

    /// GPU latency over this latency.
    pub fn speedup(&self) -> f64 {
        self.gpu_latency_ns / self.latency_ns
    }
}

/// One energy-based block (with its feedforward transform).
#[derive(Clone, Debug, Serialize)]
pub struct BlockReport {
    pub name: String,
    pub kind: String,
    /// Counts of one full step of the first epoch.
    pub step_counts: BlockCounts,
    /// Weight pulses of that step.
    pub step_pulses: f64,
    /// Crossbar tiles its couplings occupy.
    pub tiles: f64,
    pub step: Energy,
    pub epoch: Energy,
    pub run: Energy,
}

/// The whole estimate (`ffebm cost --json` writes it).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub workload: String,
    pub tech: String,
    pub tech_description: String,
    pub execution: Execution,
    pub gpu: String,
    pub batch: usize,
    pub train_size: usize,
    pub steps_per_epoch: usize,
    pub epochs: usize,
    pub sweeps_source: String,
    /// `recorded` or `estimated (|Δw|/Δw_min, |Δw| ≈ lr)` per run.
    pub writes_source: String,
    pub blocks: Vec<BlockReport>,
    pub step: Totals,
    pub epoch: Totals,
    pub run: Totals,
    /// One inference (one sample, configured T1).
    pub inference: Totals,
    /// The evaluation at the end of one epoch: `eval_images` inferences.
    pub evaluation: Totals,
    pub eval_images: usize,
    /// The whole run with every epoch's evaluation.
    pub run_with_evaluation: Totals,
    pub notes: Vec<String>,
}

/// Pulses per step of each block: recorded per epoch, spread evenly over its steps, or
/// estimated as `weights · lr / Δw_min` (a pair's update pulses one of its devices).
fn step_pulses(tech: &Tech, plan: &EpochPlan, counts: &[BlockCounts], steps: f64) -> Vec<f64> {
    match &plan.pulses {
        Some(p) => p.iter().map(|x| x / steps).collect(),
        None => counts
            .iter()
            .map(|c| c.weights() * plan.lr / price::weight_step(tech))
            .collect(),
    }
}

/// The power of block `k` in watts per sample when it is a DRN block whose power the run
/// recorded (see [`drn_block_power_w`]).
fn drn_watts(tech: &Tech, w: &Workload, layout: Option<&BlockLayout>, k: usize) -> Option<f64> {
    let l = layout.filter(|l| l.kind == BlockKind::Resistive)?;
    let p = w.drn_power.get(k).copied().flatten()?;
    Some(drn_block_power_w(tech, p, l.gain as f64))
}

/// Prices `counts` (one per block) with `pulses` on `tech` and on its GPU baseline.
fn totals(
    tech: &Tech,
    w: &Workload,
    counts: &[BlockCounts],
    pulses: &[f64],
    batch: f64,
) -> (Totals, Vec<Energy>) {
    let layouts = w.model.layouts().unwrap_or_default();
    let per_block: Vec<Energy> = counts
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let drn = drn_watts(tech, w, layouts.get(k), k);
            price::energy(tech, tech.execution, c, pulses[k], drn)
        })
        .collect();
    let mut energy = Energy::default();
    for e in &per_block {
        energy.add_scaled(e, 1.0);
    }
    let gpu: f64 = counts
        .iter()
        .map(|c| price::energy(tech, Execution::Gpu, c, 0.0, None).total())
        .sum();
    let t = Totals {
        energy,
        energy_pj: energy.total(),
        latency_ns: price::latency(tech, tech.execution, counts, pulses, batch),
        gpu_energy_pj: gpu,
        gpu_latency_ns: price::latency(tech, Execution::Gpu, counts, pulses, batch),
    };
    (t, per_block)
}

fn counts_of(w: &Workload, plan: &EpochPlan, batch: usize) -> Result<Vec<BlockCounts>> {
    (0..plan.sweeps.len())
        .map(|k| {
            step_counts(&w.model, k, &plan.sweeps[k], batch as f64).map(|c| w.on_devices(k, c))
        })
        .collect()
}

/// Prices `w` on `tech`.
pub fn estimate(w: &Workload, tech: &Tech) -> Result<Report> {
    let layouts = w.model.layouts()?;
    let nb = layouts.len();
    let (full, rem) = (w.train_size / w.batch, w.train_size % w.batch);
    let steps = full + (rem > 0) as usize;
    let mut blocks: Vec<BlockReport> = Vec::new();
    let (mut step, mut epoch_t, mut run) =
        (Totals::default(), Totals::default(), Totals::default());
    for (e, plan) in w.epochs.iter().enumerate() {
        let mut this_epoch = Totals::default();
        let mut block_epoch = vec![Energy::default(); nb];
        for (b, n) in [(w.batch, full), (rem, (rem > 0) as usize)] {
            if n == 0 {
                continue;
            }
            let counts = counts_of(w, plan, b)?;
            let pulses = step_pulses(tech, plan, &counts, steps as f64);
            let (t, per_block) = totals(tech, w, &counts, &pulses, b as f64);
            this_epoch.add(&t, n as f64);
            for (acc, p) in block_epoch.iter_mut().zip(&per_block) {
                acc.add_scaled(p, n as f64);
            }
            if e == 0 && b == w.batch {
                step = t;
                blocks = counts
                    .into_iter()
                    .zip(per_block)
                    .zip(&layouts)
                    .enumerate()
                    .map(|(k, ((c, en), l))| BlockReport {
                        name: format!("block{k}"),
                        kind: format!("{:?}", l.kind).to_lowercase(),
                        tiles: price::tiles(tech, &c),
                        step_counts: c,
                        step_pulses: pulses[k],
                        step: en,
                        epoch: Energy::default(),
                        run: Energy::default(),
                    })
                    .collect();
            }
        }
        if e == 0 {
            epoch_t = this_epoch;
            for (br, en) in blocks.iter_mut().zip(&block_epoch) {
                br.epoch = *en;
            }
        }
        run.add(&this_epoch, 1.0);
        for (br, en) in blocks.iter_mut().zip(&block_epoch) {
            br.run.add_scaled(en, 1.0);
        }
    }
    let inference_counts: Vec<BlockCounts> = (0..nb)
        .map(|k| inference_counts(&w.model, k, w.algo.t1 as f64).map(|c| w.on_devices(k, c)))
        .collect::<Result<_>>()?;
    let (inference, _) = totals(tech, w, &inference_counts, &vec![0.0; nb], 1.0);
    // sample after sample: the latency is an upper bound (no pipelining over the test set)
    let mut evaluation = Totals::default();
    evaluation.add(&inference, w.eval_images as f64);
    let mut run_with_evaluation = run;
    run_with_evaluation.add(&evaluation, w.epochs.len() as f64);
    let recorded = w.epochs.iter().filter(|p| p.pulses.is_some()).count();
    let writes_source = match (tech.execution, recorded) {
        (Execution::Analog, 0) => "estimated: |Δw|/Δw_min per weight per step with |Δw| ≈ lr (Adam), Δw_min = 2·weight_max/levels".to_string(),
        (Execution::Analog, n) if n == w.epochs.len() => "recorded by the run's device model".to_string(),
        (Execution::Analog, n) => format!("recorded for {n} of {} epochs, estimated (|Δw|/Δw_min) for the others", w.epochs.len()),
        _ => "none: weights are digital (their updates are in the optimiser's DRAM traffic)".to_string(),
    };
    let mut notes = w.notes.clone();
    if tech.execution == Execution::Analog {
        for (k, l) in layouts.iter().enumerate() {
            if l.kind != BlockKind::Resistive {
                continue;
            }
            notes.push(match drn_watts(tech, w, Some(l), k) {
                Some(watts) => format!(
                    "DRN block {k}: resistor power {:.4e} (model units, the run's readout) = {:.3} µW per sample (conductance weight_max ↦ g_max, input source gain·1 ↦ read voltage), for analog.settle_ns per settle",
                    w.drn_power[k].unwrap_or_default(),
                    watts * 1e6
                ),
                None => format!(
                    "DRN block {k}: priced as crossbar reads of its conductances, an estimate: price a run directory (`--run`) whose training logged the DRN power readout to use the measured resistor power"
                ),
            });
        }
    }
    Ok(Report {
        workload: w.name.clone(),
        tech: tech.name.clone(),
        tech_description: tech.description.clone(),
        execution: tech.execution,
        gpu: tech.gpu_name.clone(),
        batch: w.batch,
        train_size: w.train_size,
        steps_per_epoch: steps,
        epochs: w.epochs.len(),
        sweeps_source: w.sweeps_source.clone(),
        writes_source,
        blocks,
        step,
        epoch: epoch_t,
        run,
        inference,
        evaluation,
        eval_images: w.eval_images,
        run_with_evaluation,
        notes,
    })
}
