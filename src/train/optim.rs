//! Optimisers (SPEC §4): Adam with **coupled** L2 weight decay (added to the gradient, as
//! PyTorch's `Adam(weight_decay=…)`, not AdamW) and SGD with momentum; the cosine schedule.

use crate::core::Tensor;
use crate::model::{Grads, Model, ParamId};
use serde::{Deserialize, Serialize};

/// Which optimiser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimKind {
    Adam,
    Sgd,
}

/// Optimiser hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    pub name: OptimKind,
    /// Initial learning rate `lr_0`.
    pub lr: f64,
    /// Coupled L2 weight decay: `g ← g + wd·θ`.
    pub weight_decay: f64,
    /// Adam β1 / SGD momentum.
    pub momentum: f64,
    /// Adam β2.
    pub beta2: f64,
    /// Adam ε.
    pub eps: f64,
    /// Train the BatchNorm affine parameters (frozen by default, SPEC §4).
    pub train_bn_affine: bool,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            name: OptimKind::Adam,
            lr: 1e-4,
            weight_decay: 3e-4,
            momentum: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            train_bn_affine: false,
        }
    }
}

/// Per-parameter optimiser state, in `Model::param_ids` order.
#[derive(Clone, Debug, PartialEq)]
pub struct Optimizer {
    pub config: OptimConfig,
    /// Steps taken.
    pub step: u64,
    /// Adam first moments / SGD momentum buffers.
    pub m: Vec<(ParamId, Tensor)>,
    /// Adam second moments (empty for SGD).
    pub v: Vec<(ParamId, Tensor)>,
}

impl Optimizer {
    pub fn new(config: OptimConfig, model: &Model) -> Self {
        let ids = trained(&config, model);
        let zeros = |ids: &[ParamId]| {
            ids.iter()
                .map(|&id| (id, Tensor::zeros(model.param(id).shape())))
                .collect::<Vec<_>>()
        };
        let v = if config.name == OptimKind::Adam {
            zeros(&ids)
        } else {
            Vec::new()
        };
        Optimizer {
            m: zeros(&ids),
            v,
            step: 0,
            config,
        }
    }

    /// One update of every trained parameter with learning rate `lr`:
    ///
    /// Adam: `g' = g + wd·θ; m ← β1 m + (1−β1) g'; v ← β2 v + (1−β2) g'²;`
    /// `θ ← θ − (lr/(1−β1ᵗ)) · m / (√v/√(1−β2ᵗ) + ε)` (PyTorch's arithmetic).
    /// SGD: `g' = g + wd·θ; b ← μ b + g'` (`b = g'` at the first step); `θ ← θ − lr·b`.
    pub fn step(&mut self, model: &mut Model, grads: &Grads, lr: f64) {
        self.step += 1;
        let c = &self.config;
        let (wd, b1, b2, eps) = (
            c.weight_decay as f32,
            c.momentum as f32,
            c.beta2 as f32,
            c.eps as f32,
        );
        let t = self.step as i32;
        let bc1 = 1.0 - (c.momentum).powi(t);
        let bc2_sqrt = (1.0 - c.beta2.powi(t)).sqrt() as f32;
        let step_size = (lr / bc1) as f32;
        for (i, (id, m)) in self.m.iter_mut().enumerate() {
            let g = grads.get(*id);
            let p = model.param_mut(*id);
            match c.name {
                OptimKind::Adam => {
                    let v = &mut self.v[i].1;
                    for (((pv, gv), mv), vv) in p
                        .data_mut()
                        .iter_mut()
                        .zip(g.data())
                        .zip(m.data_mut())
                        .zip(v.data_mut())
                    {
                        let gd = gv + wd * *pv;
                        *mv = *mv * b1 + (1.0 - b1) * gd;
                        *vv = *vv * b2 + (1.0 - b2) * gd * gd;
                        let denom = vv.sqrt() / bc2_sqrt + eps;
                        *pv -= step_size * *mv / denom;
                    }
                }
                OptimKind::Sgd => {
                    let first = self.step == 1;
                    for ((pv, gv), bv) in p.data_mut().iter_mut().zip(g.data()).zip(m.data_mut()) {
                        let gd = gv + wd * *pv;
                        *bv = if first { gd } else { b1 * *bv + gd };
                        *pv -= lr as f32 * *bv;
                    }
                }
            }
        }
    }
}

/// The parameters an optimiser updates (BN affine only when trained).
fn trained(c: &OptimConfig, model: &Model) -> Vec<ParamId> {
    model
        .param_ids()
        .into_iter()
        .filter(|id| c.train_bn_affine || !matches!(id, ParamId::Bn { .. }))
        .collect()
}

/// Learning-rate schedule, stepped once per epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// `cosine`, `exponential` or `constant`.
    pub name: ScheduleKind,
    /// Cosine period in epochs.
    pub t_max: usize,
    /// Cosine floor.
    pub lr_min: f64,
    /// Exponential decay per epoch (`lr_e = lr_0 · γ^e`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    Cosine,
    /// PyTorch's `ExponentialLR`.
    Exponential,
    Constant,
}

impl ScheduleConfig {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.name == ScheduleKind::Exponential {
            let g = self.gamma.unwrap_or(f64::NAN);
            anyhow::ensure!(
                g > 0.0 && g <= 1.0,
                "schedule.gamma must be in (0, 1] for the exponential schedule (got {})",
                self.gamma.map_or("nothing".into(), |g| g.to_string())
            );
        }
        Ok(())
    }

    /// Cosine: `lr_e = lr_min + (lr_0 − lr_min)(1 + cos(π e / T_max)) / 2` (PyTorch's closed
    /// form); exponential: `lr_e = lr_0 · γ^e`.
    pub fn lr(&self, lr0: f64, epoch: usize) -> f64 {
        match self.name {
            ScheduleKind::Constant => lr0,
            ScheduleKind::Exponential => lr0 * self.gamma.unwrap_or(1.0).powi(epoch as i32),
            ScheduleKind::Cosine => {
                self.lr_min
                    + (lr0 - self.lr_min)
                        * (1.0
                            + (std::f64::consts::PI * epoch as f64 / self.t_max.max(1) as f64)
                                .cos())
                        / 2.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::presets::preset;

    #[test]
    fn adam_matches_a_hand_computed_step_and_skips_frozen_bn() {
        let mut p = preset("splitting_small_2block", None).unwrap().model;
        p.input = [3, 16, 16];
        p.blocks[0].channels = vec![3, 4, 4, 4];
        p.blocks[1].channels = vec![4, 4, 4];
        p.blocks[1].pools = "--".into();
        let mut model = Model::new(p, 0).unwrap();
        let mut grads = model.zero_grads();
        for (_, g) in grads.entries.iter_mut() {
            g.data_mut()
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = (i % 5) as f32 * 0.1 - 0.2);
        }
        let before = model.clone();
        let cfg = OptimConfig {
            weight_decay: 0.01,
            ..Default::default()
        };
        let mut opt = Optimizer::new(cfg, &model);
        opt.step(&mut model, &grads, 0.1);
        opt.step(&mut model, &grads, 0.1);
        let id = ParamId::Synapse {
            block: 0,
            index: 1,
            bias: false,
        };
        // two steps by hand in f64 for element 3
        let (mut th, g) = (
            before.param(id).data()[3] as f64,
            grads.get(id).data()[3] as f64,
        );
        let (mut m, mut v) = (0.0, 0.0);
        for t in 1..=2 {
            let gd = g + 0.01 * th;
            m = 0.9 * m + 0.1 * gd;
            v = 0.999 * v + 0.001 * gd * gd;
            th -= 0.1 / (1.0 - 0.9f64.powi(t)) * m
                / (v.sqrt() / (1.0 - 0.999f64.powi(t)).sqrt() + 1e-8);
        }
        assert!(
            (model.param(id).data()[3] as f64 - th).abs() < 1e-5,
            "{} vs {th}",
            model.param(id).data()[3]
        );
        let bn = ParamId::Bn {
            block: 0,
            bias: false,
        };
        assert_eq!(model.param(bn), before.param(bn));
        // SGD with momentum: second step uses b = μ g' + g'
        let mut model = before.clone();
        let mut sgd = Optimizer::new(
            OptimConfig {
                name: OptimKind::Sgd,
                weight_decay: 0.0,
                ..Default::default()
            },
            &model,
        );
        sgd.step(&mut model, &grads, 0.5);
        sgd.step(&mut model, &grads, 0.5);
        let want = before.param(id).data()[3] - 0.5 * g as f32 - 0.5 * (1.9 * g as f32);
        assert!((model.param(id).data()[3] - want).abs() < 1e-6);
    }

    #[test]
    fn cosine_schedule() {
        let s = ScheduleConfig {
            name: ScheduleKind::Cosine,
            t_max: 10,
            lr_min: 1e-6,
            gamma: None,
        };
        assert_eq!(s.lr(1e-3, 0), 1e-3);
        assert!((s.lr(1e-3, 5) - (1e-6 + (1e-3 - 1e-6) / 2.0)).abs() < 1e-12);
        assert!((s.lr(1e-3, 10) - 1e-6).abs() < 1e-12);
        let e = ScheduleConfig {
            name: ScheduleKind::Exponential,
            gamma: Some(0.99),
            ..s
        };
        assert_eq!(e.lr(0.006, 0), 0.006);
        assert!((e.lr(0.006, 3) - 0.006 * 0.99f64.powi(3)).abs() < 1e-15);
    }
}
