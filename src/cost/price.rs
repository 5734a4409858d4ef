//! Energy and latency of counted operations on a technology. Energies in pJ, times in ns.
//!
//! ```text
//! digital op         MAC = E_mul + E_add (int8 or fp32 by `digital.mac_bits`; element ops,
//!                    gradients and the optimiser in fp32); word = E_sram or E_dram
//! crossbar read      E = V_read² · G_mean · t_read        per cell read, G_mean = (G_min + G_max)/2
//! write pulse        E = V_write² · G_mean · t_write       per pulse
//! conversion         E = FOM · 2^bits                        per ADC / DAC conversion (Walden)
//! DRN block          E = P · t_settle per settle when its power P is known (see
//!                    [`drn_block_power_w`]), else as crossbar reads
//! GPU                E = FLOPs · P_board / (peak · utilization)
//! pulses (estimate)  |Δw| / Δw_min per weight per step, Δw_min = 2·w_max / levels and
//!                    |Δw| ≈ lr (Adam's step is at most about the learning rate)
//! ```
//!
//! Latency of a step (analog execution): the samples of a batch are pipelined through the
//! blocks' analog relaxations (`settles · t_settle` each) and one digital engine (all
//! digital work of a sample at `digital.macs_per_ns`):
//! `T = Σ stages + (B − 1) · max stage + T_optimiser + T_writes`, with the writes of a
//! block spread over the columns of all its tiles (`pulses / (tiles · cols) · t_write`,
//! blocks in parallel). Digital execution runs everything on the one engine; the GPU runs
//! `FLOPs / (peak · utilization)`.

use super::counts::{BlockCounts, Ops};
use super::tech::{Execution, Tech};
use serde::Serialize;

/// The energy components of the report, in display order.
pub const COMPONENTS: [(&str, &str); 6] = [
    ("ff_compute", "FF compute"),
    ("ff_memory", "FF memory"),
    ("eb_compute", "EB compute"),
    ("conversions", "conversions"),
    ("writes", "writes"),
    ("digital_overhead", "digital overhead"),
];

/// Energy per component, pJ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Energy {
    /// Feedforward transforms (conv, BN, pool).
    pub ff_compute: f64,
    /// Feedforward activations (SRAM) and weights (DRAM).
    pub ff_memory: f64,
    /// Energy-based blocks: crossbar reads (analog) or the simulation's MACs and memory.
    pub eb_compute: f64,
    /// ADC and DAC conversions at the analog/digital boundaries.
    pub conversions: f64,
    /// Weight-update pulses into the crossbars.
    pub writes: f64,
    /// Weight gradients, readout, cost nudges, optimiser (compute and DRAM traffic).
    pub digital_overhead: f64,
}

impl Energy {
    pub fn values(&self) -> [f64; 6] {
        [
            self.ff_compute,
            self.ff_memory,
            self.eb_compute,
            self.conversions,
            self.writes,
            self.digital_overhead,
        ]
    }

    pub fn total(&self) -> f64 {
        self.values().iter().sum()
    }

    /// `self + w·o`.
    pub fn add_scaled(&mut self, o: &Energy, w: f64) {
        self.ff_compute += w * o.ff_compute;
        self.ff_memory += w * o.ff_memory;
        self.eb_compute += w * o.eb_compute;
        self.conversions += w * o.conversions;
        self.writes += w * o.writes;
        self.digital_overhead += w * o.digital_overhead;
    }
}

/// Where a DRN block's power comes from. Hook for the power readout of deep resistive
/// networks (`energy::terms::resistive`): when it reports the power a block dissipates at
/// its equilibrium, return it here (watts, per sample) and the block is priced as
/// `P · t_settle` per settle. Until then `None`: the block is priced as crossbar reads
/// (every conductance read at `analog.read_voltage_v` for `analog.read_pulse_ns`), an
/// estimate.
pub fn drn_block_power_w(_block: usize) -> Option<f64> {
    None
}

/// Energy per 32-bit word from DRAM and from SRAM.
fn words(tech: &Tech, sram: f64, dram: f64) -> f64 {
    sram * tech.get("digital.sram_word_pj") + dram * tech.get("digital.dram_word_pj")
}

/// Energy of `ops`, MACs at `digital.mac_bits` when `narrow` allows, else fp32.
fn digital(tech: &Tech, ops: &Ops, narrow: bool) -> f64 {
    let (fm, fa) = (
        tech.get("digital.fp32_mul_pj"),
        tech.get("digital.fp32_add_pj"),
    );
    let mac = if narrow && tech.get("digital.mac_bits") == 8.0 {
        tech.get("digital.int8_mul_pj") + tech.get("digital.int8_add_pj")
    } else {
        fm + fa
    };
    ops.macs * mac + ops.muls * fm + ops.adds * fa
}

/// GPU energy per FLOP, pJ: `P_board / (peak · utilization)`.
pub fn gpu_pj_per_flop(tech: &Tech) -> f64 {
    tech.get("gpu.board_power_w") / (tech.get("gpu.peak_tflops") * tech.get("gpu.utilization"))
}

/// GPU throughput, FLOP/ns.
pub fn gpu_flops_per_ns(tech: &Tech) -> f64 {
    tech.get("gpu.peak_tflops") * tech.get("gpu.utilization") * 1e3
}

/// Mean cell conductance, µS.
fn g_mean(tech: &Tech) -> f64 {
    0.5 * (tech.get("analog.g_min_us") + tech.get("analog.g_max_us"))
}

/// Energy of one crossbar cell read, pJ: `V² · G · t` (V · V · µS · ns = 1e-15 J).
pub fn cell_read_pj(tech: &Tech) -> f64 {
    tech.get("analog.read_voltage_v").powi(2)
        * g_mean(tech)
        * tech.get("analog.read_pulse_ns")
        * 1e-3
}

/// Energy of one write pulse, pJ.
pub fn write_pulse_pj(tech: &Tech) -> f64 {
    tech.get("analog.write_voltage_v").powi(2)
        * g_mean(tech)
        * tech.get("analog.write_pulse_ns")
        * 1e-3
}

/// Energy of one ADC and one DAC conversion, pJ: `FOM · 2^bits` (fJ → pJ).
pub fn conversion_pj(tech: &Tech) -> (f64, f64) {
    let c = |fom: &str, bits: &str| tech.get(fom) * 2f64.powf(tech.get(bits)) * 1e-3;
    (
        c("conversion.adc_fj_per_step", "conversion.adc_bits"),
        c("conversion.dac_fj_per_step", "conversion.dac_bits"),
    )
}

/// The smallest weight step a pulse makes: `2·w_max / levels`.
pub fn weight_step(tech: &Tech) -> f64 {
    2.0 * tech.get("analog.weight_max") / tech.get("analog.levels")
}

/// Crossbar tiles the block's couplings occupy: `Σ ⌈rows/R⌉·⌈cols/C⌉`.
pub fn tiles(tech: &Tech, c: &BlockCounts) -> f64 {
    let (r, k) = (tech.get("analog.array_rows"), tech.get("analog.array_cols"));
    c.matrices
        .iter()
        .map(|[rows, cols, _]| (*rows as f64 / r).ceil() * (*cols as f64 / k).ceil())
        .sum()
}

/// Digitised partial sums (`analog.partial_sums = "digital"`), per settle per sample: the
/// column outputs of every row tile converted (`⌈rows/R⌉·cols` per position, and
/// `⌈cols/C⌉·rows` for the top-down pass of a hopfield coupling) and added digitally, the
/// updated states driven back (one DAC per state unit). Returns (ADC, adds, DAC).
pub fn partial_sum_conversions(tech: &Tech, c: &BlockCounts) -> (f64, f64, f64) {
    let (r, k) = (tech.get("analog.array_rows"), tech.get("analog.array_cols"));
    let mut adc = 0.0;
    let mut adds = 0.0;
    for &[rows, cols, pos] in &c.matrices {
        let (rows, cols, pos) = (rows as f64, cols as f64, pos as f64);
        let (rt, ct) = ((rows / r).ceil(), (cols / k).ceil());
        adc += rt * cols * pos;
        adds += (rt - 1.0) * cols * pos;
        if c.bidirectional {
            adc += ct * rows * pos;
            adds += (ct - 1.0) * rows * pos;
        }
    }
    (adc * c.settles, adds * c.settles, c.state_units * c.settles)
}

/// Energy of block `block`'s counts `c` (with `pulses` weight writes) under `exec`.
pub fn energy(
    tech: &Tech,
    exec: Execution,
    c: &BlockCounts,
    pulses: f64,
    drn_power_w: Option<f64>,
) -> Energy {
    let overhead_ops = c.overhead.plus_ops(&c.optimiser);
    match exec {
        Execution::Gpu => {
            let e = gpu_pj_per_flop(tech);
            Energy {
                ff_compute: c.ff.flops() * e,
                eb_compute: 2.0 * c.sim_macs * e,
                digital_overhead: overhead_ops.flops() * e,
                ..Default::default()
            }
        }
        Execution::Digital => Energy {
            ff_compute: digital(tech, &c.ff, true),
            ff_memory: words(tech, c.ff_sram_words, c.ff_dram_words),
            eb_compute: digital(
                tech,
                &Ops {
                    macs: c.sim_macs,
                    ..Default::default()
                },
                true,
            ) + words(tech, c.sim_sram_words, c.sim_dram_words),
            digital_overhead: digital(tech, &overhead_ops, false)
                + words(tech, 0.0, c.optimiser_dram_words),
            ..Default::default()
        },
        Execution::Analog => {
            let (adc, dac) = conversion_pj(tech);
            let mut eb = match drn_power_w {
                Some(p) => p * c.settles * tech.get("analog.settle_ns") * 1e3,
                None => c.cell_reads * cell_read_pj(tech),
            };
            let mut conversions = c.adc * adc + c.dac * dac;
            if tech.digital_partial_sums {
                let (n_adc, adds, n_dac) = partial_sum_conversions(tech, c);
                conversions += n_adc * adc + n_dac * dac;
                let ops = Ops {
                    adds,
                    ..Default::default()
                };
                eb += digital(tech, &ops, true);
            }
            Energy {
                ff_compute: digital(tech, &c.ff, true),
                ff_memory: words(tech, c.ff_sram_words, c.ff_dram_words),
                eb_compute: eb,
                conversions,
                writes: pulses * write_pulse_pj(tech),
                digital_overhead: digital(tech, &overhead_ops, false)
                    + words(tech, 0.0, c.optimiser_dram_words),
            }
        }
    }
}

/// Latency of one step (or one inference, `batch = 1`, no optimiser and writes) of all
/// blocks `cs` under `exec`, ns; `pulses[k]` per block.
pub fn latency(
    tech: &Tech,
    exec: Execution,
    cs: &[BlockCounts],
    pulses: &[f64],
    batch: f64,
) -> f64 {
    let thr = tech.get("digital.macs_per_ns");
    let optimiser: f64 = cs.iter().map(|c| c.optimiser.count()).sum::<f64>() / thr;
    match exec {
        Execution::Gpu => {
            let flops: f64 = cs
                .iter()
                .map(|c| {
                    c.ff.flops() + 2.0 * c.sim_macs + c.overhead.plus_ops(&c.optimiser).flops()
                })
                .sum();
            flops / gpu_flops_per_ns(tech)
        }
        Execution::Digital => {
            let ops: f64 = cs
                .iter()
                .map(|c| c.ff.count() + c.sim_macs + c.overhead.count())
                .sum();
            ops / thr + optimiser
        }
        Execution::Analog => {
            let b = batch.max(1.0);
            let digital_stage: f64 =
                cs.iter().map(|c| c.digital_per_sample.count()).sum::<f64>() / thr;
            let analog: Vec<f64> = cs
                .iter()
                .map(|c| c.settles / b * tech.get("analog.settle_ns"))
                .collect();
            let slowest = analog.iter().copied().fold(digital_stage, f64::max);
            let pipeline = digital_stage + analog.iter().sum::<f64>() + (b - 1.0) * slowest;
            let writes = cs
                .iter()
                .zip(pulses)
                .map(|(c, p)| {
                    let lanes = tiles(tech, c) * tech.get("analog.array_cols");
                    if lanes > 0.0 {
                        p / lanes * tech.get("analog.write_pulse_ns")
                    } else {
                        0.0
                    }
                })
                .fold(0.0, f64::max);
            pipeline + optimiser + writes
        }
    }
}
