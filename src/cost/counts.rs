//! Operation counts of one EP training step and of one inference, per block, independent of
//! any technology. MACs of the energy-based couplings follow SPEC §7
//! ([`crate::model::cost`]); the rest is counted here. Per sample, for block k with free,
//! plus and minus sweeps `f, p, m`, `cp` = MACs of one pass through every coupling and
//! `n_ph` = nudged phases run (2 for the centered variant):
//!
//! ```text
//! feedforward   fwd: conv MACs, BN/pool/bias element ops;  bwd: weight-gradient MACs
//!               + input-gradient MACs (k > 0), BN backward element ops
//! simulation    MACs = 2·cp·(f + p + m)  (+ a resistive input coupling once per phase)
//! analog        settles = f + p + m;  cell reads = 2·cp per settle (hopfield: bottom-up
//!               and top-down), cp + input coupling per settle (resistive)
//! DAC           drive·(1 + n_ph)  +  error current: last·n_ph (k < K) or last·(p + m) (k = K,
//!               the cost nudge follows the state at every nudged sweep)
//! ADC           2·Σ_l |s_l| (the two contrasted states)  +  |s_last| (free output)
//!               + |s_last|·(p + m) (k = K)
//! overhead      weight gradient 2·cp MACs, readout (4 + 2·(p + m))·R MACs (k = K, R = its
//!               MACs), Adam: 10 muls + 5 adds and 7 DRAM words per parameter per step
//! ```
//!
//! A step over a batch of B samples is B times the per-sample counts, plus what is per step:
//! feedforward weights read from DRAM (twice), simulated couplings' weights read from DRAM
//! at every sweep (digital execution), the optimiser.

use crate::grad::{AlgoConfig, Algorithm, PhaseSweeps};
use crate::model::config::{BlockKind, BlockLayout, CouplingKind, ModelConfig, Norm};
use crate::model::cost::block_costs;
use anyhow::{ensure, Result};
use serde::Serialize;

/// Digital arithmetic: multiply-accumulates and stand-alone multiplies and adds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Ops {
    pub macs: f64,
    pub muls: f64,
    pub adds: f64,
}

impl Ops {
    /// `2·macs + muls + adds`.
    pub fn flops(&self) -> f64 {
        2.0 * self.macs + self.muls + self.adds
    }

    /// Operations for throughput: `macs + muls + adds`.
    pub fn count(&self) -> f64 {
        self.macs + self.muls + self.adds
    }

    fn scaled(&self, w: f64) -> Ops {
        Ops {
            macs: w * self.macs,
            muls: w * self.muls,
            adds: w * self.adds,
        }
    }

    /// Field-wise sum.
    pub fn plus_ops(&self, o: &Ops) -> Ops {
        Ops {
            macs: self.macs + o.macs,
            muls: self.muls + o.muls,
            adds: self.adds + o.adds,
        }
    }
}

/// Counts of one block for one training step (a batch) or one inference (one sample).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BlockCounts {
    /// Feedforward transform: conv MACs and BN/pool/bias element operations.
    pub ff: Ops,
    /// Feedforward activation words through the on-chip buffer.
    pub ff_sram_words: f64,
    /// Feedforward weight words read from DRAM.
    pub ff_dram_words: f64,
    /// Relaxation sweeps run, per phase (per batch; for inference only `free`).
    pub sweeps: PhaseSweeps,
    /// MACs a digital simulation of the relaxations spends (SPEC §7).
    pub sim_macs: f64,
    /// State words a digital simulation moves through the on-chip buffer.
    pub sim_sram_words: f64,
    /// Coupling weight words a digital simulation reads from DRAM (once per sweep per batch).
    pub sim_dram_words: f64,
    /// Analog execution: settles (relaxation steps) over all samples and phases.
    pub settles: f64,
    /// Analog execution: crossbar cell reads (one per cell per pass per sample).
    pub cell_reads: f64,
    /// Digital-to-analog conversions (block inputs, error currents, cost nudges).
    pub dac: f64,
    /// Analog-to-digital conversions (contrasted states, the block output, cost nudges).
    pub adc: f64,
    /// Digital work of learning: weight gradients, readout, cost nudges, bias gradients.
    pub overhead: Ops,
    /// Optimiser work (Adam) over the block's parameters.
    pub optimiser: Ops,
    /// Optimiser state and weight words moved through DRAM.
    pub optimiser_dram_words: f64,
    /// Parameters updated by the optimiser (feedforward, couplings, biases, readout).
    pub params: f64,
    /// Crossbar cells of the coupling matrices (biases stay digital): one per weight, two
    /// for differential pairs (see [`BlockCounts::as_differential_pairs`]).
    pub cells: f64,
    /// Devices per stored weight: 1, or 2 for differential pairs.
    pub devices_per_weight: f64,
    /// Matrix shape `[rows, cols, positions]` of each coupling in a crossbar (tiled by the
    /// pricing), with the positions (pixels) it is evaluated at per pass.
    pub matrices: Vec<[usize; 3]>,
    /// Whether every settle reads the crossbars in both directions (hopfield: bottom-up and
    /// top-down; resistive: one).
    pub bidirectional: bool,
    /// State units of the block (all layers), per sample.
    pub state_units: f64,
    /// Per sample: the longest chain of digital work (for latency).
    pub digital_per_sample: Ops,
}

impl BlockCounts {
    /// The same block with every weight a differential pair `G⁺ − G⁻` (two columns per
    /// weight column, read together and subtracted in the analog domain before any
    /// conversion): twice the cells and cell reads, twice the crossbar columns; conversions,
    /// settles and the optimiser's parameters are unchanged.
    pub fn as_differential_pairs(mut self) -> Self {
        self.cells *= 2.0;
        self.cell_reads *= 2.0;
        self.devices_per_weight = 2.0;
        for m in &mut self.matrices {
            m[1] *= 2;
        }
        self
    }

    /// Weights stored in the crossbars (`cells / devices_per_weight`).
    pub fn weights(&self) -> f64 {
        self.cells / self.devices_per_weight
    }
}

/// Matrix shape (rows × cols) a coupling occupies in a crossbar and the positions (pixels)
/// it is evaluated at: conv `C_in·k² × C_out` at `H·W`, dense `F_in × F_out` at 1.
pub fn crossbar_shape(c: &CouplingKind, k: usize) -> (usize, usize, usize) {
    match *c {
        CouplingKind::Conv {
            cin, cout, h, w, ..
        } => (cin * k * k, cout, h * w),
        CouplingKind::Dense { fin, fout } | CouplingKind::Resistive { fin, fout } => (fin, fout, 1),
    }
}

/// The sweeps `algo` configures for every block (T1 at its cap when `tol` is set).
pub fn configured_sweeps(algo: &AlgoConfig, blocks: usize) -> Vec<PhaseSweeps> {
    let (a, b) = algo.variant.betas(algo.beta);
    let ran = |beta: f32| if beta != 0.0 { algo.t2 as f64 } else { 0.0 };
    vec![
        PhaseSweeps {
            free: algo.t1 as f64,
            plus: ran(a),
            minus: ran(b),
            unrolled: 0.0,
        };
        blocks
    ]
}

/// Checks that `algo` is EP (the algorithm the hardware runs).
pub fn check_algorithm(algo: &AlgoConfig) -> Result<()> {
    ensure!(
        algo.name == Algorithm::Ep,
        "`ffebm cost` prices EP training (what the hybrid hardware runs); this configuration uses `{}` (set algorithm.name = \"ep\")",
        algo.name
    );
    Ok(())
}

/// Conv output map size (before pooling) of a block's feedforward conv.
fn conv_out_numel(l: &BlockLayout) -> usize {
    match l.input {
        crate::model::config::LayerShape::Map { h, w, .. } if l.ff_conv => {
            let o = |x: usize| x + 2 * l.padding + 1 - l.kernel;
            l.ff_cout * o(h) * o(w)
        }
        _ => 0,
    }
}

/// Counts of one training step of block `k` over `batch` samples that ran `sweeps` (the
/// last block also carries the readout and the cost).
pub fn step_counts(
    cfg: &ModelConfig,
    k: usize,
    sweeps: &PhaseSweeps,
    batch: f64,
) -> Result<BlockCounts> {
    let layouts = cfg.layouts()?;
    let costs = block_costs(cfg)?;
    let (l, c) = (&layouts[k], &costs[k]);
    let last_block = k + 1 == layouts.len();
    let (f, p, m) = (sweeps.free, sweeps.plus, sweeps.minus);
    let nudged = (p > 0.0) as u8 as f64 + (m > 0.0) as u8 as f64;
    let input_coupling = (c.feedforward - c.ff_conv) as f64; // resistive input conductances
    let cp = c.coupling_pass as f64;
    let in_numel = l.input.numel() as f64;
    let conv_numel = conv_out_numel(l) as f64;
    let drive = l.drive_shape().numel() as f64;
    let states: f64 = l.layers.iter().map(|s| s.numel() as f64).sum();
    let last = l.layers.last().expect("a layer").numel() as f64;

    // feedforward transform, per sample
    let conv = c.ff_conv as f64;
    let bn_elems = match (l.norm, l.norm_pool) {
        (Norm::None, _) => 0.0,
        (_, true) => conv_numel,
        (_, false) => drive,
    };
    let pool = if l.ff_pool { conv_numel } else { 0.0 };
    let bias = if l.ff_conv && l.norm == Norm::None {
        conv_numel
    } else {
        0.0
    };
    // BN: forward 2 muls + 3 adds per element, backward 3 muls + 4 adds; pool: a compare
    let ff_fwd = Ops {
        macs: conv,
        muls: 2.0 * bn_elems,
        adds: 3.0 * bn_elems + pool + bias,
    };
    let ff_bwd = Ops {
        macs: conv * if k > 0 { 2.0 } else { 1.0 },
        muls: 3.0 * bn_elems,
        adds: 4.0 * bn_elems + bias,
    };
    let ff = ff_fwd.plus_ops(&ff_bwd);
    let ff_fwd_words = if l.ff_conv {
        in_numel + 2.0 * conv_numel + drive
    } else {
        0.0
    };
    let ff_params = if l.ff_conv {
        (l.ff_cin * l.ff_cout * l.kernel * l.kernel) as f64
    } else {
        0.0
    } + if l.ff_conv && l.norm == Norm::None {
        l.ff_cout as f64
    } else {
        0.0
    };

    // energy-based block
    let phases = 1.0 + nudged;
    let sim_macs = 2.0 * cp * (f + p + m) + input_coupling * phases;
    let settles = f + p + m;
    let reads_per_settle = match l.kind {
        BlockKind::Hopfield => 2.0 * cp,
        BlockKind::Resistive => cp + input_coupling,
    };
    let (mut cells, mut biases, mut matrices) = (0.0, 0.0, Vec::new());
    for cpl in &l.couplings {
        let (rows, cols, positions) = crossbar_shape(cpl, l.kernel);
        cells += (rows * cols) as f64;
        biases += cols as f64;
        matrices.push([rows, cols, positions]);
    }
    let dac_inputs = match l.kind {
        BlockKind::Resistive => drive * if l.duplicate { 2.0 } else { 1.0 },
        BlockKind::Hopfield => drive,
    };
    let dac = dac_inputs * phases
        + if last_block {
            last * (p + m)
        } else {
            last * nudged
        };
    let adc = 2.0 * states + last + if last_block { last * (p + m) } else { 0.0 };

    // digital overhead: weight gradients at the two contrasted states, bias gradients,
    // the readout (forward, CE gradients at both states, the nudge at every nudged sweep)
    let readout = if last_block && cfg.has_readout() {
        (cfg.readout_inputs()? * cfg.classes) as f64
    } else {
        0.0
    };
    let readout_params = if readout > 0.0 {
        readout + cfg.classes as f64
    } else {
        0.0
    };
    let squared_nudge = if last_block && !cfg.has_readout() {
        last * (p + m)
    } else {
        0.0
    };
    let overhead = Ops {
        macs: 2.0 * (cp + input_coupling) + readout * (4.0 + 2.0 * (p + m)),
        muls: 0.0,
        adds: 2.0 * states + squared_nudge,
    };
    let params = ff_params + cells + biases + readout_params;
    // Adam with coupled weight decay: g += λw (1 mul, 1 add); m (2 muls, 1 add); v (3 muls,
    // 1 add); bias corrections (2 muls); sqrt + eps (1 add); division (1 mul); w −= lr·u
    // (1 mul, 1 add); reads w, g, m, v and writes w, m, v
    let optimiser = Ops {
        macs: 0.0,
        muls: 10.0 * params,
        adds: 5.0 * params,
    };
    let digital_per_sample = ff.plus_ops(&overhead);
    Ok(BlockCounts {
        ff: ff.scaled(batch),
        ff_sram_words: 3.0 * ff_fwd_words * batch,
        ff_dram_words: 2.0 * ff_params,
        sweeps: *sweeps,
        sim_macs: sim_macs * batch,
        sim_sram_words: 3.0 * states * settles * batch,
        sim_dram_words: 2.0 * (cells + biases) * settles,
        settles: settles * batch,
        cell_reads: reads_per_settle * settles * batch,
        dac: dac * batch,
        adc: adc * batch,
        overhead: overhead.scaled(batch),
        optimiser,
        optimiser_dram_words: 7.0 * params,
        params,
        cells,
        devices_per_weight: 1.0,
        matrices,
        bidirectional: l.kind == BlockKind::Hopfield,
        state_units: states,
        digital_per_sample,
    })
}

/// Counts of one inference (one sample, `free` sweeps) of block `k`: the feedforward
/// transform, the free relaxation, its input DACs and the output ADCs, the readout.
pub fn inference_counts(cfg: &ModelConfig, k: usize, free: f64) -> Result<BlockCounts> {
    let layouts = cfg.layouts()?;
    let costs = block_costs(cfg)?;
    let (l, c) = (&layouts[k], &costs[k]);
    let cp = c.coupling_pass as f64;
    let input_coupling = (c.feedforward - c.ff_conv) as f64;
    let conv_numel = conv_out_numel(l) as f64;
    let drive = l.drive_shape().numel() as f64;
    let states: f64 = l.layers.iter().map(|s| s.numel() as f64).sum();
    let last = l.layers.last().expect("a layer").numel() as f64;
    let bn = if l.norm == Norm::None { 0.0 } else { drive };
    let ff = Ops {
        macs: c.ff_conv as f64,
        muls: 2.0 * bn,
        adds: 3.0 * bn + if l.ff_pool { conv_numel } else { 0.0 },
    };
    let readout = if k + 1 == layouts.len() && cfg.has_readout() {
        (cfg.readout_inputs()? * cfg.classes) as f64
    } else {
        0.0
    };
    let reads_per_settle = match l.kind {
        BlockKind::Hopfield => 2.0 * cp,
        BlockKind::Resistive => cp + input_coupling,
    };
    let dup = if l.kind == BlockKind::Resistive && l.duplicate {
        2.0
    } else {
        1.0
    };
    let overhead = Ops {
        macs: readout,
        ..Default::default()
    };
    Ok(BlockCounts {
        ff,
        ff_sram_words: if l.ff_conv {
            l.input.numel() as f64 + 2.0 * conv_numel + drive
        } else {
            0.0
        },
        sweeps: PhaseSweeps {
            free,
            ..Default::default()
        },
        sim_macs: 2.0 * cp * free + input_coupling,
        sim_sram_words: 3.0 * states * free,
        settles: free,
        cell_reads: reads_per_settle * free,
        dac: drive * dup,
        adc: last,
        overhead,
        digital_per_sample: ff.plus_ops(&overhead),
        ..Default::default()
    })
}
