//! The resistor power readout of DRN blocks, `P = Σ g·(v_i − v_j)²` over every resistor
//! (input resistors between the voltage sources `gain·[u, −u]` and the first layer
//! included), checked against a naive double loop over the conductance matrices.

use crate::common::*;
use ffebm::core::Tensor;
use ffebm::grad::*;
use ffebm::model::feedforward::BnMode;
use ffebm::model::{prepare, Model, ModelConfig, ParamId};
use ffebm::relax::Schedule;

const POWER: StepOptions = StepOptions {
    start: None,
    part: None,
    power: true,
    analog: None,
    digital: None,
};

/// A DRN fed directly by a 1×2×2 input: 8 voltage sources, 4 hidden diodes, 3 outputs.
const DRN: &str = "input = [1, 2, 2]\nclasses = 3\nalpha = 0.5\ninit_v = 0.5\ncost = \"squared-error\"\n\n[[blocks]]\nkind = \"resistive\"\nchannels = [1]\npools = \"\"\nnorm = \"none\"\nfc = [4, 3]\ngain = 5.0\n";

/// `Σ_b Σ_{j,i} G_ji (post_j − pre_i)²` / B, with `G` of shape `[F_post, F_pre]`.
fn naive_power(g: &Tensor, pre: &[Vec<f64>], post: &[Vec<f64>]) -> f64 {
    let (fo, fi) = (g.shape()[0], g.shape()[1]);
    let mut p = 0.0;
    for (a, b) in pre.iter().zip(post) {
        assert_eq!((a.len(), b.len()), (fi, fo));
        for (vj, row) in b.iter().zip(g.data().chunks(fi)) {
            for (vi, gji) in a.iter().zip(row) {
                p += *gji as f64 * (vj - vi).powi(2);
            }
        }
    }
    p / pre.len() as f64
}

fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.data()
        .chunks(t.row_len())
        .map(|r| r.iter().map(|v| *v as f64).collect())
        .collect()
}

fn conductances(m: &Model, index: usize) -> Tensor {
    let g = m
        .param(ParamId::Synapse {
            block: 0,
            index,
            bias: false,
        })
        .clone();
    assert_eq!(g.shape().len(), 2, "conductances are a matrix");
    g
}

#[test]
fn drn_power_is_the_sum_of_g_times_squared_voltage_drops() {
    let m = Model::new(ModelConfig::from_toml(DRN).unwrap(), 5).unwrap();
    let kern = prepare(&m).unwrap();
    let (x, y) = batch(&m, 3, 9);
    let free = free_phase(&m, &kern, &x, BnMode::Train, Schedule::fixed(20)).unwrap();
    // the input voltage sources: gain·[u, −u], u the 4 pixels (one channel: NHWC = C-major)
    let sources: Vec<Vec<f64>> = rows(&x)
        .into_iter()
        .map(|u| {
            let mut v: Vec<f64> = u.iter().map(|p| 5.0 * p).collect();
            v.extend(u.iter().map(|p| -5.0 * p));
            v
        })
        .collect();
    let s = &free.states[0];
    let (h, o) = (rows(&s.layers[0]), rows(&s.layers[1]));
    // synapse 0 would be the feedforward conv: the couplings are synapses 1 and 2
    let expected =
        naive_power(&conductances(&m, 1), &sources, &h) + naive_power(&conductances(&m, 2), &h, &o);
    assert!(expected > 0.0);

    let chain = Chain::new(&m, &kern);
    let got = power::block_powers(&chain, &free, &[]).unwrap();
    assert_eq!(got.len(), 1);
    let rel = (got[0].free - expected).abs() / expected;
    assert!(
        rel < 1e-5,
        "power {} vs naive {expected} (rel {rel:.2e})",
        got[0].free
    );

    // through a training step: the free power again, and one reading per nudged phase
    let cfg = AlgoConfig::ep(20, 8, 0.05);
    let out = compute_gradients_with(&m, &kern, &x, &y, &cfg, POWER).unwrap();
    assert_eq!(out.power.len(), 1);
    let p = &out.power[0];
    assert!((p.free - expected).abs() / expected < 1e-5);
    let betas: Vec<f32> = p.nudged.iter().map(|n| n.beta).collect();
    assert_eq!(betas, vec![0.05, -0.05]);
    for n in &p.nudged {
        assert!(
            n.power.is_finite() && n.power > 0.0 && n.power != p.free,
            "{n:?}"
        );
    }
    // not asked for: nothing read out; ID has no nudged phases
    let quiet = compute_gradients(&m, &kern, &x, &y, &cfg).unwrap();
    assert!(quiet.power.is_empty());
    let id =
        compute_gradients_with(&m, &kern, &x, &y, &cfg.with(Algorithm::IdExact), POWER).unwrap();
    assert_eq!(id.power.len(), 1);
    assert!(id.power[0].nudged.is_empty());
    assert_eq!(id.power[0].free, p.free);
}

#[test]
fn hopfield_blocks_have_no_resistor_power() {
    let m = Model::new(
        ModelConfig::from_toml(
            "input = [2, 4, 4]\nclasses = 3\nalpha = 0.5\ninit_v = 0.5\n\n[[blocks]]\nchannels = [2, 3]\npools = \"-\"\nfc = [4]\n",
        )
        .unwrap(),
        1,
    )
    .unwrap();
    let kern = prepare(&m).unwrap();
    let (x, y) = batch(&m, 2, 1);
    let out = compute_gradients_with(&m, &kern, &x, &y, &AlgoConfig::ep(5, 3, 0.5), POWER).unwrap();
    assert!(out.power.is_empty());
}
