//! Built-in presets: the paper's experiments (SPEC §6) and small ones that learn in
//! minutes on 2 cores.

use super::config::{BlockConfig, CostKind, ModelConfig, Norm};
use crate::grad::AlgoConfig;
use crate::relax::Order;
use crate::train::optim::{OptimConfig, OptimKind, ScheduleConfig, ScheduleKind};
use anyhow::{bail, Result};

/// Training hyper-parameters of a preset (SPEC §4, §6).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainHyper {
    pub dataset: String,
    pub batch_size: usize,
    pub epochs: usize,
    /// Optimiser (its `lr` is the initial learning rate) and learning-rate schedule.
    pub optim: OptimConfig,
    pub schedule: ScheduleConfig,
    /// Normalise pixels with the dataset's constants (else `[0, 1]`).
    pub normalize: bool,
    /// Zero-pad 28x28 images to 32x32.
    pub pad_to_32: bool,
}

impl TrainHyper {
    /// The initial learning rate.
    pub fn lr(&self) -> f64 {
        self.optim.lr
    }
}

/// A named, complete experiment description.
#[derive(Clone, Debug, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    pub summary: &'static str,
    pub model: ModelConfig,
    /// Estimator and relaxation settings (EP by default).
    pub algo: AlgoConfig,
    pub train: TrainHyper,
}

fn blk(channels: &[usize], pools: &str, fc: &[usize], norm: Norm, clamp_last: bool) -> BlockConfig {
    BlockConfig::new(channels, pools, fc, norm, clamp_last)
}

fn bn(channels: &[usize], pools: &str) -> BlockConfig {
    blk(channels, pools, &[], Norm::Batchnorm, false)
}

const BN: Norm = Norm::Batchnorm;
const NONE: Norm = Norm::None;

/// Names of all presets, in display order.
pub const NAMES: &[&str] = &[
    "cifar10_tiny",
    "mnist_mlp",
    "splitting_small_1block",
    "splitting_small_2block",
    "splitting_small_3block",
    "splitting_small_1block_tol",
    "splitting_small_2block_tol",
    "splitting_small_3block_tol",
    "splitting_large_3block",
    "splitting_large_4block",
    "splitting_large_6block",
    "splitting_large_3block_tol",
    "splitting_large_4block_tol",
    "splitting_large_6block_tol",
    "scaling_small",
    "scaling_large",
    "static_gradient_analysis",
    "drn_xs",
    "drn_1h",
    "cifar10_drn",
];

/// energy-based-learning's `papers/fast-drn` training of deep resistive networks on MNIST:
/// raw `[0, 1]` 28x28 pixels, batch 4, SGD (momentum 0) with `ExponentialLR(0.99)`,
/// asynchronous updates in every phase, the previous batch's states as the starting point,
/// centered EP, squared-error cost on the output layer.
fn drn_mnist(
    layers: &[usize],
    gain: f32,
    iterations: usize,
    beta: f32,
    lr: f64,
    epochs: usize,
) -> (ModelConfig, AlgoConfig, TrainHyper) {
    let mut m = model(
        vec![BlockConfig::resistive(&[1], "", NONE, layers, gain)],
        1.0,
        8.351e-5,
        10,
        [1, 28, 28],
    );
    m.cost = CostKind::SquaredError;
    let algo = AlgoConfig {
        nudged_order: Order::EvenFirst,
        warm_start: true,
        ..AlgoConfig::ep(iterations, iterations, beta)
    };
    let train = TrainHyper {
        dataset: "mnist".into(),
        batch_size: 4,
        epochs,
        optim: OptimConfig {
            name: OptimKind::Sgd,
            lr,
            momentum: 0.0,
            weight_decay: 0.0,
            ..Default::default()
        },
        schedule: ScheduleConfig {
            name: ScheduleKind::Exponential,
            t_max: epochs,
            lr_min: 0.0,
            gamma: Some(0.99),
        },
        normalize: false,
        pad_to_32: false,
    };
    (m, algo, train)
}

fn model(
    blocks: Vec<BlockConfig>,
    alpha: f32,
    v: f32,
    classes: usize,
    input: [usize; 3],
) -> ModelConfig {
    ModelConfig {
        input,
        classes,
        alpha,
        init_v: v,
        blocks,
        conv_algo: Default::default(),
        cost: Default::default(),
    }
}

/// Adam (SPEC §4) with cosine annealing over the run to `lr_min`.
fn train(dataset: &str, batch: usize, lr: f64, epochs: usize, lr_min: f64) -> TrainHyper {
    TrainHyper {
        dataset: dataset.into(),
        batch_size: batch,
        epochs,
        optim: OptimConfig {
            name: OptimKind::Adam,
            lr,
            ..Default::default()
        },
        schedule: ScheduleConfig {
            name: ScheduleKind::Cosine,
            t_max: epochs,
            lr_min,
            gamma: None,
        },
        normalize: true,
        pad_to_32: true,
    }
}

fn small_blocks(n: usize) -> Vec<BlockConfig> {
    match n {
        1 => vec![blk(
            &[3, 128, 256, 256, 512, 512],
            "mmmm-",
            &[256],
            BN,
            false,
        )],
        2 => vec![
            blk(&[3, 128, 256, 256], "mmm", &[], BN, true),
            blk(&[256, 512, 512], "mm", &[256], NONE, false),
        ],
        _ => vec![
            blk(&[3, 128, 256], "mm", &[], BN, true),
            blk(&[256, 256, 512], "mm", &[], NONE, true),
            blk(&[512, 512], "-", &[256], NONE, false),
        ],
    }
}

fn large_blocks(n: usize) -> Vec<BlockConfig> {
    match n {
        3 => vec![
            bn(&[3, 128, 128, 128, 128], "--m-"),
            bn(&[128, 256, 256, 256, 256], "m---"),
            bn(&[256, 512, 512, 512, 512], "m---"),
        ],
        4 => vec![
            bn(&[3, 128, 128, 128], "---"),
            bn(&[128, 128, 256, 256], "m--"),
            bn(&[256, 256, 256, 512], "m--"),
            bn(&[512, 512, 512, 512], "m--"),
        ],
        _ => vec![
            bn(&[3, 128, 128], "--"),
            bn(&[128, 128, 128], "m-"),
            bn(&[128, 256, 256], "m-"),
            bn(&[256, 256, 256], "--"),
            bn(&[256, 512, 512], "m-"),
            bn(&[512, 512, 512], "--"),
        ],
    }
}

/// The preset `name` with a readout of `classes` outputs (`None` = the preset's dataset).
pub fn preset(name: &str, classes: Option<usize>) -> Result<Preset> {
    let c10 = [3, 32, 32];
    let small_algo = AlgoConfig::ep(60, 20, 0.2);
    let large_algo = AlgoConfig::ep(20, 5, 0.2);
    let mut p = match name {
        splitting if NAMES.contains(&splitting) && splitting.starts_with("splitting_") => {
            let small = splitting.starts_with("splitting_small_");
            let n = (splitting.as_bytes()["splitting_small_".len()] - b'0') as usize;
            let tol = splitting.ends_with("_tol");
            let (blocks, v) = if small {
                (small_blocks(n), 8.351e-5)
            } else {
                (large_blocks(n), 5.9e-5)
            };
            let (alpha, algo, lr, epochs) = match (small, tol) {
                (true, false) => (1.0, small_algo, 1e-4, 200),
                (true, true) => (
                    0.65,
                    AlgoConfig {
                        tol: Some(1e-6),
                        ..AlgoConfig::ep(1580, 20, 0.2)
                    },
                    3e-4,
                    100,
                ),
                (false, false) => (1.0, large_algo, 5e-5, 200),
                (false, true) => (
                    0.55,
                    AlgoConfig {
                        tol: Some(1e-4),
                        ..AlgoConfig::ep(1580, 5, 0.2)
                    },
                    5e-5,
                    100,
                ),
            };
            let summary = match (small, tol) {
                (true, false) => "CIFAR-10 splitting experiment (Table 1, small VGG, 6 layers)",
                (true, true) => {
                    "CIFAR-10 splitting experiment with tolerance-based free phase (small VGG)"
                }
                (false, false) => "CIFAR-10 splitting experiment (Table 1, large VGG, 12 layers)",
                (false, true) => {
                    "CIFAR-10 splitting experiment with tolerance-based free phase (large VGG)"
                }
            };
            Preset {
                name: NAMES.iter().find(|&&x| x == splitting).expect("listed"),
                summary,
                model: model(blocks, alpha, v, 10, c10),
                algo,
                train: train("cifar10", 128, lr, epochs, 1e-6),
            }
        }
        "scaling_small" => Preset {
            name: "scaling_small",
            summary: "Scaling experiment (Table 2): 6 blocks of 2 layers, CIFAR-100 / ImageNet32",
            model: model(
                vec![
                    bn(&[3, 128, 128], "m-"),
                    bn(&[128, 128, 128], "--"),
                    bn(&[128, 256, 256], "m-"),
                    bn(&[256, 256, 256], "--"),
                    bn(&[256, 512, 512], "m-"),
                    bn(&[512, 512, 512], "--"),
                ],
                0.5,
                4.9e-5,
                100,
                c10,
            ),
            algo: AlgoConfig::ep(15, 5, 0.2),
            train: train("cifar100", 256, 5e-5, 200, 5e-7),
        },
        "scaling_large" => Preset {
            name: "scaling_large",
            summary:
                "Scaling experiment (Table 2): 7 blocks of 2 layers + 1, CIFAR-100 / ImageNet32",
            model: model(
                vec![
                    bn(&[3, 64, 64], "--"),
                    bn(&[64, 128, 128], "m-"),
                    bn(&[128, 128, 128], "--"),
                    bn(&[128, 256, 256], "m-"),
                    bn(&[256, 258, 256], "--"),
                    bn(&[256, 512, 512], "m-"),
                    bn(&[512, 512, 512], "--"),
                    bn(&[512, 512], "-"),
                ],
                0.5,
                1e-5,
                100,
                c10,
            ),
            algo: AlgoConfig::ep(15, 5, 0.2),
            train: train("cifar100", 256, 2e-5, 100, 1e-7),
        },
        "cifar10_tiny" => Preset {
            name: "cifar10_tiny",
            summary:
                "splitting_small_2block with a quarter of the channels: 64% CIFAR-10 test top-1 in 10 epochs of ~4.5 min on 2 cores",
            model: model(
                vec![
                    blk(&[3, 32, 64, 64], "mmm", &[], BN, true),
                    blk(&[64, 128, 128], "mm", &[64], NONE, false),
                ],
                1.0,
                8.351e-5,
                10,
                c10,
            ),
            algo: AlgoConfig::ep(30, 10, 0.2),
            train: train("cifar10", 128, 5e-4, 10, 1e-6),
        },
        "mnist_mlp" => Preset {
            name: "mnist_mlp",
            summary:
                "MNIST: a feedforward conv and one energy-based block with a dense hidden layer",
            model: model(
                vec![blk(&[1, 16], "m", &[256], BN, true)],
                0.5,
                8.351e-5,
                10,
                [1, 32, 32],
            ),
            algo: AlgoConfig::ep(20, 8, 0.5),
            train: train("mnist", 64, 1e-3, 2, 1e-5),
        },
        "drn_xs" => {
            let (model, algo, train) = drn_mnist(&[100, 10], 100.0, 4, 1.0, 0.006, 10);
            Preset {
                name: "drn_xs",
                summary: "Deep resistive network 2x784-100-10 on MNIST (energy-based-learning's DRN-XS: 3.46% test error with EP)",
                model,
                algo,
                train,
            }
        }
        "drn_1h" => {
            let (model, algo, train) = drn_mnist(&[1024, 10], 480.0, 4, 1.0, 0.006, 50);
            Preset {
                name: "drn_1h",
                summary: "Deep resistive network 2x784-1024-10 on MNIST (energy-based-learning's DRN-1H: 1.57% test error with EP)",
                model,
                algo,
                train,
            }
        }
        "cifar10_drn" => {
            let mut m = model(
                vec![
                    blk(&[3, 32, 64, 64], "mmm", &[], BN, true),
                    BlockConfig::resistive(&[64, 128], "m", BN, &[256, 10], 8.0),
                ],
                1.0,
                8.351e-5,
                10,
                c10,
            );
            m.cost = CostKind::SquaredError;
            Preset {
                name: "cifar10_drn",
                summary: "cifar10_tiny's front end (feedforward convs and the Hopfield conv block) with a dense deep resistive network as the output block",
                model: m,
                algo: AlgoConfig::ep(30, 10, 0.5),
                train: train("cifar10", 128, 5e-4, 10, 1e-6),
            }
        }
        "static_gradient_analysis" => Preset {
            name: "static_gradient_analysis",
            summary: "Static gradient analysis (Figs. 3-5): EP vs ID at initialisation, batch 2",
            model: model(
                vec![
                    bn(&[3, 64, 64], "--"),
                    bn(&[64, 128, 128], "m-"),
                    bn(&[128, 256, 256, 256], "m--"),
                    bn(&[256, 512, 512, 512], "m--"),
                    bn(&[512, 512, 512], "m-"),
                    blk(&[512, 512, 1024], "--", &[4096], BN, false),
                ],
                0.5,
                4.9e-5,
                10,
                c10,
            ),
            algo: AlgoConfig::ep(15, 20, 0.02),
            train: train("cifar10", 2, 5e-5, 1, 1e-6),
        },
        other => {
            let best = NAMES
                .iter()
                .min_by_key(|n| strsim::levenshtein(n, other))
                .expect("non-empty");
            bail!(
                "unknown preset `{other}`; did you mean `{best}`? (`ffebm presets` lists them all)"
            )
        }
    };
    if let Some(c) = classes {
        anyhow::ensure!(c >= 1, "--classes must be at least 1");
        p.model.classes = c;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::LayerShape;

    #[test]
    fn every_preset_builds_with_the_spec_layer_counts() {
        let layers = |n: &str| {
            preset(n, None)
                .unwrap()
                .model
                .layouts()
                .unwrap()
                .iter()
                .map(|b| b.layers.len())
                .collect::<Vec<_>>()
        };
        assert_eq!(layers("splitting_small_1block"), [6]);
        assert_eq!(layers("splitting_small_2block"), [3, 3]);
        assert_eq!(layers("splitting_small_3block"), [2, 2, 2]);
        assert_eq!(layers("splitting_large_3block"), [4, 4, 4]);
        assert_eq!(layers("splitting_large_4block"), [3, 3, 3, 3]);
        assert_eq!(layers("splitting_large_6block"), [2; 6]);
        assert_eq!(layers("scaling_small"), [2; 6]);
        assert_eq!(layers("scaling_large"), [2, 2, 2, 2, 2, 2, 2, 1]);
        assert_eq!(layers("static_gradient_analysis"), [2, 2, 3, 3, 2, 3]);
        assert_eq!(layers("cifar10_tiny"), [3, 3]);
        assert_eq!(layers("mnist_mlp"), [2]);
        for n in NAMES.iter().filter(|n| !n.contains("drn")) {
            let p = preset(n, Some(1000)).unwrap();
            assert_eq!(p.model.classes, 1000);
            let fin = p.model.readout_inputs().unwrap();
            assert!(
                [64, 256, 8192, 4096].contains(&fin),
                "{n}: readout input {fin}"
            );
        }
        let l = preset("splitting_large_3block", None)
            .unwrap()
            .model
            .layouts()
            .unwrap();
        assert_eq!(
            l[0].layers[2],
            LayerShape::Map {
                h: 16,
                w: 16,
                c: 128
            }
        );
        assert_eq!(l[2].layers[3], LayerShape::Map { h: 4, w: 4, c: 512 });
    }

    #[test]
    fn unknown_preset_suggests_the_nearest() {
        let e = preset("splitting_smal_2block", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `splitting_small_2block`"), "{e}");
    }
}
