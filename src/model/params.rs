//! Model parameters, their reference names (SPEC §5) and the seeded initialisation (SPEC §3).

use super::config::{BlockLayout, CouplingKind, ModelConfig, Norm};
use crate::core::Tensor;
use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// BatchNorm2d parameters and buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm {
    pub gamma: Tensor,
    pub beta: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: i64,
}

impl BatchNorm {
    pub const EPS: f32 = 1e-5;
    pub const MOMENTUM: f32 = 0.1;

    fn new(c: usize) -> Self {
        BatchNorm {
            gamma: Tensor::full(&[c], 1.0),
            beta: Tensor::zeros(&[c]),
            running_mean: Tensor::zeros(&[c]),
            running_var: Tensor::full(&[c], 1.0),
            num_batches_tracked: 0,
        }
    }
}

/// A weight and an optional bias. Conv weights are OIHW, dense weights `[F_out, F_in]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Synapse {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

/// One stage: feedforward conv (synapse 0; absent for a resistive block fed directly),
/// optional batch-norm, couplings (synapses 1..; a resistive block's synapse `i` holds the
/// conductances into layer `i − 1` and that layer's bias).
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub layout: BlockLayout,
    pub ff: Option<Synapse>,
    pub bn: Option<BatchNorm>,
    /// `couplings[i-1]` is synapse `i`, coupling layers `i-1` and `i`.
    pub couplings: Vec<Synapse>,
    /// The per-unit devices of each layer in a physical circuit (see [`crate::analog`]);
    /// empty on a nominal model (every unit ideal).
    pub units: Vec<UnitDevices>,
}

/// The per-unit nonlinearity of one layer of a physical circuit (each `[F]`-sized, in the
/// layer's unbatched shape; `None`: nominal).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UnitDevices {
    /// Slopes `α_i` of a hard-sigmoid layer.
    pub slope: Option<Tensor>,
    /// Offsets `θ_i` of a hard-sigmoid layer: `s_i = clamp(α_i·(b_i + θ_i), 0, 1)`.
    pub offset: Option<Tensor>,
    /// Bounds `t_i` (volts) of a diode layer: `v_i ≥ t_i` (first half), `v_i ≤ t_i` (second).
    pub bound: Option<Tensor>,
}

/// An ff-EBM: blocks and the linear readout `logits = W_ro flat(s_K,n) + b_ro` (absent with
/// the squared-error cost, whose "logits" are the last layer itself).
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub config: ModelConfig,
    pub blocks: Vec<Block>,
    pub readout: Option<Synapse>,
}

/// Identifies one trainable tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ParamId {
    /// Weight (`bias = false`) or bias of synapse `index` of `block` (0 = feedforward conv).
    Synapse {
        block: usize,
        index: usize,
        bias: bool,
    },
    /// BatchNorm affine γ (`bias = false`) or β.
    Bn {
        block: usize,
        bias: bool,
    },
    Readout {
        bias: bool,
    },
}

/// Identifies one non-trainable buffer (BatchNorm running statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferId {
    RunningMean(usize),
    RunningVar(usize),
    NumBatchesTracked(usize),
}

impl Model {
    /// Builds a model with the SPEC §3 initialisation from one seeded generator.
    pub fn new(config: ModelConfig, seed: u64) -> Result<Self> {
        let layouts = config.layouts()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let v = config.init_v;
        let mut blocks = Vec::with_capacity(layouts.len());
        for layout in layouts {
            let k = layout.kernel;
            let ff = layout.ff_conv.then(|| Synapse {
                weight: goe_conv(&mut rng, layout.ff_cout, layout.ff_cin, k, v),
                bias: (layout.norm == Norm::None).then(|| Tensor::zeros(&[layout.ff_cout])),
            });
            let couplings = layout
                .couplings
                .iter()
                .map(|c| match *c {
                    CouplingKind::Conv { cin, cout, .. } => Synapse {
                        weight: goe_conv(&mut rng, cout, cin, k, v),
                        bias: Some(Tensor::zeros(&[cout])),
                    },
                    CouplingKind::Dense { fin, fout } => uniform_linear(&mut rng, fout, fin),
                    CouplingKind::Resistive { fin, fout } => conductances(&mut rng, fout, fin),
                })
                .collect();
            let bn = (layout.norm == Norm::Batchnorm).then(|| BatchNorm::new(layout.ff_cout));
            blocks.push(Block {
                layout,
                ff,
                bn,
                couplings,
                units: Vec::new(),
            });
        }
        let readout = if config.has_readout() {
            let fin = config.readout_inputs()?;
            Some(uniform_linear(&mut rng, config.classes, fin))
        } else {
            None
        };
        Ok(Model {
            config,
            blocks,
            readout,
        })
    }

    /// All trainable tensors in a fixed order (the reference's `named_parameters` order).
    pub fn param_ids(&self) -> Vec<ParamId> {
        let mut ids = Vec::new();
        for (k, b) in self.blocks.iter().enumerate() {
            if b.ff.is_some() {
                ids.push(ParamId::Synapse {
                    block: k,
                    index: 0,
                    bias: false,
                });
            }
            if b.ff.as_ref().is_some_and(|f| f.bias.is_some()) {
                ids.push(ParamId::Synapse {
                    block: k,
                    index: 0,
                    bias: true,
                });
            }
            for i in 1..=b.couplings.len() {
                ids.push(ParamId::Synapse {
                    block: k,
                    index: i,
                    bias: false,
                });
                ids.push(ParamId::Synapse {
                    block: k,
                    index: i,
                    bias: true,
                });
            }
            if b.bn.is_some() {
                ids.push(ParamId::Bn {
                    block: k,
                    bias: false,
                });
                ids.push(ParamId::Bn {
                    block: k,
                    bias: true,
                });
            }
        }
        if self.readout.is_some() {
            ids.push(ParamId::Readout { bias: false });
            ids.push(ParamId::Readout { bias: true });
        }
        ids
    }

    /// The buffers (BatchNorm running statistics) in a fixed order.
    pub fn buffer_ids(&self) -> Vec<BufferId> {
        let mut ids = Vec::new();
        for (k, b) in self.blocks.iter().enumerate() {
            if b.bn.is_some() {
                ids.extend([
                    BufferId::RunningMean(k),
                    BufferId::RunningVar(k),
                    BufferId::NumBatchesTracked(k),
                ]);
            }
        }
        ids
    }

    pub fn param(&self, id: ParamId) -> &Tensor {
        match id {
            ParamId::Synapse { block, index, bias } => {
                let s = self.synapse(block, index);
                if bias {
                    s.bias.as_ref().expect("parameter id of a missing bias")
                } else {
                    &s.weight
                }
            }
            ParamId::Bn { block, bias } => {
                let bn = self.blocks[block]
                    .bn
                    .as_ref()
                    .expect("parameter id of a missing batch-norm");
                if bias {
                    &bn.beta
                } else {
                    &bn.gamma
                }
            }
            ParamId::Readout { bias } => {
                let r = self
                    .readout
                    .as_ref()
                    .expect("parameter id of a missing readout");
                if bias {
                    r.bias.as_ref().expect("readout bias")
                } else {
                    &r.weight
                }
            }
        }
    }

    pub fn param_mut(&mut self, id: ParamId) -> &mut Tensor {
        match id {
            ParamId::Synapse { block, index, bias } => {
                let s = if index == 0 {
                    self.blocks[block]
                        .ff
                        .as_mut()
                        .expect("parameter id of a missing feedforward conv")
                } else {
                    &mut self.blocks[block].couplings[index - 1]
                };
                if bias {
                    s.bias.as_mut().expect("parameter id of a missing bias")
                } else {
                    &mut s.weight
                }
            }
            ParamId::Bn { block, bias } => {
                let bn = self.blocks[block]
                    .bn
                    .as_mut()
                    .expect("parameter id of a missing batch-norm");
                if bias {
                    &mut bn.beta
                } else {
                    &mut bn.gamma
                }
            }
            ParamId::Readout { bias } => {
                let r = self
                    .readout
                    .as_mut()
                    .expect("parameter id of a missing readout");
                if bias {
                    r.bias.as_mut().expect("readout bias")
                } else {
                    &mut r.weight
                }
            }
        }
    }

    fn synapse(&self, block: usize, index: usize) -> &Synapse {
        if index == 0 {
            self.blocks[block]
                .ff
                .as_ref()
                .expect("parameter id of a missing feedforward conv")
        } else {
            &self.blocks[block].couplings[index - 1]
        }
    }

    /// The reference implementation's `state_dict` key of a parameter.
    pub fn param_name(&self, id: ParamId) -> String {
        let wb = |bias: bool| if bias { "bias" } else { "weight" };
        match id {
            ParamId::Synapse { block, index, bias } => {
                format!("blocks.{block}.synapses.{index}.{}", wb(bias))
            }
            ParamId::Bn { block, bias } => format!(
                "blocks.{block}.feedforward.{}.{}",
                self.bn_index(block),
                wb(bias)
            ),
            ParamId::Readout { bias } => format!("readout.1.{}", wb(bias)),
        }
    }

    /// Position of the BatchNorm in the reference's `feedforward` Sequential.
    fn bn_index(&self, block: usize) -> usize {
        if self.blocks[block].layout.norm_pool {
            1
        } else {
            2
        }
    }

    /// The reference's key of a buffer.
    pub fn buffer_name(&self, id: BufferId) -> String {
        let (k, leaf) = match id {
            BufferId::RunningMean(k) => (k, "running_mean"),
            BufferId::RunningVar(k) => (k, "running_var"),
            BufferId::NumBatchesTracked(k) => (k, "num_batches_tracked"),
        };
        format!("blocks.{k}.feedforward.{}.{leaf}", self.bn_index(k))
    }

    /// Total number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.param_ids()
            .iter()
            .map(|&id| self.param(id).len())
            .sum()
    }

    /// The parameters that must stay non-negative (conductances of resistive blocks).
    pub fn non_negative_params(&self) -> Vec<ParamId> {
        let mut ids = Vec::new();
        for (k, b) in self.blocks.iter().enumerate() {
            for (i, c) in b.layout.couplings.iter().enumerate() {
                if matches!(c, CouplingKind::Resistive { .. }) {
                    ids.push(ParamId::Synapse {
                        block: k,
                        index: i + 1,
                        bias: false,
                    });
                }
            }
        }
        ids
    }

    /// Projects every parameter back into its domain (conductances clamped to `≥ 0`), as after
    /// every optimiser step.
    pub fn project_params(&mut self) {
        for id in self.non_negative_params() {
            crate::core::ops::clamp_min(self.param_mut(id), 0.0);
        }
    }

    /// Zero gradients for every parameter, in [`Model::param_ids`] order.
    pub fn zero_grads(&self) -> Grads {
        Grads {
            entries: self
                .param_ids()
                .into_iter()
                .map(|id| (id, Tensor::zeros(self.param(id).shape())))
                .collect(),
        }
    }
}

/// One gradient per parameter, in [`Model::param_ids`] order.
#[derive(Clone, Debug, PartialEq)]
pub struct Grads {
    pub entries: Vec<(ParamId, Tensor)>,
}

impl Grads {
    pub fn get(&self, id: ParamId) -> &Tensor {
        &self
            .entries
            .iter()
            .find(|(i, _)| *i == id)
            .expect("gradient of an unknown parameter")
            .1
    }

    pub fn get_mut(&mut self, id: ParamId) -> &mut Tensor {
        &mut self
            .entries
            .iter_mut()
            .find(|(i, _)| *i == id)
            .expect("gradient of an unknown parameter")
            .1
    }

    /// Sum over all entries of squared values.
    pub fn sum_sq(&self) -> f64 {
        self.entries
            .iter()
            .map(|(_, t)| crate::core::ops::sum_sq(t))
            .sum()
    }
}

/// GOE-like symmetric kernels (SPEC §3): per (out, in) pair, `A ~ N(0, V/k)` (k×k),
/// lower triangle, `A + Aᵀ`, diagonal × √2.
fn goe_conv(rng: &mut ChaCha8Rng, cout: usize, cin: usize, k: usize, v: f32) -> Tensor {
    let normal = Normal::new(0.0f32, (v / k as f32).sqrt()).expect("finite V");
    let mut w = Tensor::zeros(&[cout, cin, k, k]);
    let mut a = vec![0.0f32; k * k];
    for kernel in w.data_mut().chunks_mut(k * k) {
        for x in a.iter_mut() {
            *x = normal.sample(rng);
        }
        for i in 0..k {
            for j in 0..k {
                kernel[i * k + j] = match i.cmp(&j) {
                    std::cmp::Ordering::Greater => a[i * k + j],
                    std::cmp::Ordering::Less => a[j * k + i],
                    std::cmp::Ordering::Equal => 2.0 * a[i * k + i] * std::f32::consts::SQRT_2,
                };
            }
        }
    }
    w
}

/// Conductances of a resistive layer as energy-based-learning initialises them: Kaiming
/// uniform `U(−1/√F_in, 1/√F_in)`, then clamped to `≥ 0` (about half start at 0); biases 0.
fn conductances(rng: &mut ChaCha8Rng, fout: usize, fin: usize) -> Synapse {
    let bound = 1.0 / (fin as f32).sqrt();
    let data = (0..fout * fin)
        .map(|_| rng.gen_range(-bound..bound).max(0.0))
        .collect();
    Synapse {
        weight: Tensor::from_vec(&[fout, fin], data).expect("shape"),
        bias: Some(Tensor::zeros(&[fout])),
    }
}

/// PyTorch's default `nn.Linear` initialisation: weight and bias `U(−1/√F_in, 1/√F_in)`.
fn uniform_linear(rng: &mut ChaCha8Rng, fout: usize, fin: usize) -> Synapse {
    let bound = 1.0 / (fin as f32).sqrt();
    let mut draw = |n: usize| {
        (0..n)
            .map(|_| rng.gen_range(-bound..bound))
            .collect::<Vec<f32>>()
    };
    let weight = Tensor::from_vec(&[fout, fin], draw(fout * fin)).expect("shape");
    let bias = Tensor::from_vec(&[fout], draw(fout)).expect("shape");
    Synapse {
        weight,
        bias: Some(bias),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::BlockConfig;

    fn tiny() -> ModelConfig {
        let b = |ch: &[usize], pools: &str, fc: &[usize], norm: Norm| {
            BlockConfig::new(ch, pools, fc, norm, false)
        };
        ModelConfig {
            input: [3, 8, 8],
            classes: 10,
            alpha: 0.5,
            init_v: 0.5,
            blocks: vec![
                b(&[3, 16, 16], "mm", &[], Norm::Batchnorm),
                b(&[16, 8], "-", &[6], Norm::None),
            ],
            conv_algo: Default::default(),
            cost: Default::default(),
        }
    }

    #[test]
    fn names_follow_the_reference_state_dict() {
        let m = Model::new(tiny(), 0).unwrap();
        let names: Vec<String> = m
            .param_ids()
            .into_iter()
            .map(|id| m.param_name(id))
            .collect();
        assert_eq!(
            names,
            [
                "blocks.0.synapses.0.weight",
                "blocks.0.synapses.1.weight",
                "blocks.0.synapses.1.bias",
                "blocks.0.feedforward.2.weight",
                "blocks.0.feedforward.2.bias",
                "blocks.1.synapses.0.weight",
                "blocks.1.synapses.0.bias",
                "blocks.1.synapses.1.weight",
                "blocks.1.synapses.1.bias",
                "readout.1.weight",
                "readout.1.bias"
            ]
        );
        assert_eq!(
            m.param(ParamId::Synapse {
                block: 1,
                index: 1,
                bias: false
            })
            .shape(),
            &[6, 32]
        );
        assert_eq!(m.param(ParamId::Readout { bias: false }).shape(), &[10, 6]);
        assert_eq!(
            m.buffer_name(BufferId::RunningVar(0)),
            "blocks.0.feedforward.2.running_var"
        );
    }

    #[test]
    fn goe_kernels_are_symmetric_with_the_right_variances() {
        let m = Model::new(tiny(), 7).unwrap();
        let w = &m.blocks[0].couplings[0].weight; // 16x16 kernels of 3x3, V = 0.5
        let (mut off, mut diag) = (Vec::new(), Vec::new());
        for kern in w.data().chunks(9) {
            for i in 0..3 {
                for j in 0..3 {
                    assert_eq!(kern[i * 3 + j], kern[j * 3 + i]);
                    if i == j {
                        diag.push(kern[i * 3 + j] as f64);
                    } else if i > j {
                        off.push(kern[i * 3 + j] as f64);
                    }
                }
            }
        }
        let var = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64;
        // off-diagonal V/k = 0.1667, diagonal 8V/k = 1.333 (768 samples each: ±12%)
        assert!(
            (var(&off) / (0.5 / 3.0) - 1.0).abs() < 0.15,
            "off-diagonal variance {}",
            var(&off)
        );
        assert!(
            (var(&diag) / (4.0 / 3.0) - 1.0).abs() < 0.15,
            "diagonal variance {}",
            var(&diag)
        );
        // seeded: same seed same weights, other seed differs
        assert_eq!(Model::new(tiny(), 7).unwrap(), m);
        assert_ne!(
            Model::new(tiny(), 8).unwrap().blocks[0]
                .ff
                .as_ref()
                .unwrap()
                .weight,
            m.blocks[0].ff.as_ref().unwrap().weight
        );
        let r = &m.readout.as_ref().unwrap().weight;
        assert!(r.data().iter().all(|v| v.abs() <= 1.0 / 6f32.sqrt()));
    }
}
