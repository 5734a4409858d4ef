//! Equilibrium propagation chained with backprop (SPEC §2.2). For k = K…1, two equilibria of
//! block k contrasted: the variant's nudged phases `s^{β_a}`, `s^{β_b}` (each relaxed from the
//! free state for T2 sweeps under the cost term `β·C`; a strength of 0 is the free state
//! itself), then with `c = 1 / ((β_a − β_b)·B)`:
//!
//! ```text
//! g_θ  = c · Σ_b [∂E/∂θ(s^{β_a}) − ∂E/∂θ(s^{β_b})]          (every interaction of the block)
//! g_ro = ½ · mean_b [∂ℓ(s^{β_a}) + ∂ℓ(s^{β_b})]               (readout, k = K)
//! g_u  = c · [∂E/∂u(s^{β_a}) − ∂E/∂u(s^{β_b})]                (cotangent on the block input)
//! g_ω  = VJP_F(g_u),   δ_k = −B · J_Fᵀ g_u                     (feedforward, error current)
//! ```
//!
//! and block k−1 is nudged by the error current: `C = −⟨δ_k, s_n⟩`. For the centered variant
//! `β_a = β, β_b = −β`.

use super::chain::{with_block, Chain, FreePhase};
use super::power::{mean_power, NudgedPower};
use super::settings::{AlgoConfig, EpVariant, NudgedForm};
use super::StepVisitor;
use crate::core::ops::scale;
use crate::core::Tensor;
use crate::energy::{Nudge, Probe};
use crate::model::feedforward::TransformEvals;
use crate::model::Grads;
use crate::relax::{relax, OffsetBase, Order, RelaxReport, Relaxation, Schedule};
use anyhow::{ensure, Result};

/// EP settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ep {
    pub beta: f32,
    pub t2: usize,
    pub variant: EpVariant,
    pub order: Order,
    pub form: NudgedForm,
    /// Stopping rule and solver of each nudged phase (`sweeps` is overridden by `t2`).
    pub schedule: Schedule,
    /// Also read out the resistor power at the nudged equilibria of DRN blocks (one extra
    /// energy evaluation per phase; see [`super::power`]).
    pub power: bool,
}

impl Ep {
    pub fn from_config(cfg: &AlgoConfig) -> Self {
        Ep {
            beta: cfg.beta,
            t2: cfg.t2,
            variant: cfg.variant,
            order: cfg.nudged_order,
            form: cfg.nudged_form,
            schedule: cfg.nudged_schedule(),
            power: false,
        }
    }
}

/// EP gradients, the error current that nudged each block (`None` for the last block, nudged
/// by the loss) and the transform evaluations (as the reference counts them).
pub struct EpOutput {
    pub grads: Grads,
    pub currents: Vec<Option<Tensor>>,
    pub transform_evals: Vec<TransformEvals>,
    /// Resistor power at the nudged equilibria (`(block, β, power)`) when `Ep::power` is set.
    pub power: Vec<(usize, NudgedPower)>,
    /// Each block's nudged relaxations `[β_a, β_b]` (`None`: that side is the free state, or
    /// the per-step detail ran fixed sweeps).
    pub reports: Vec<[Option<RelaxReport>; 2]>,
}

/// A relaxation of block `k` from its free state (in offset form from `base` when given):
/// `ep.schedule` with at most `sweeps` sweeps under `nudge`, or none when `nudge` is `None`
/// (the free state itself; no report).
fn phase<'a>(
    chain: &'a Chain<'a>,
    free: &'a FreePhase,
    base: Option<&'a OffsetBase>,
    k: usize,
    nudge: Option<&Nudge<'_>>,
    ep: &Ep,
    sweeps: usize,
) -> Result<(Relaxation<'a>, Option<RelaxReport>)> {
    let (block, input) = (&chain.blocks[k], &free.drives[k]);
    let mut r = match base {
        Some(base) => Relaxation::from_base(block, input, base, "nudged phase"),
        None => Relaxation::new(block, input, free.states[k].clone(), "nudged phase"),
    };
    if let Some(a) = chain.analog {
        r.set_update_noise(a.update_noise(k));
    }
    let mut report = None;
    if let Some(n) = nudge {
        let schedule = Schedule {
            sweeps,
            ..ep.schedule
        };
        report =
            Some(relax(&mut r, ep.order, Some(n), schedule, None).map_err(|e| with_block(e, k))?);
    }
    Ok((r, report))
}

/// The contrast of block `k` between the present states of `ra` and `rb` into `grads`
/// (interactions, and the readout for the last block); returns the cotangent `g_u`.
fn block_contrast(
    chain: &Chain<'_>,
    k: usize,
    ra: &mut Relaxation<'_>,
    rb: &mut Relaxation<'_>,
    c: f32,
    labels: &[u32],
    grads: &mut Grads,
) -> Result<Tensor> {
    let block = &chain.blocks[k];
    for (t, term) in block.terms.iter().enumerate() {
        let (a, b): (Probe, Probe) = (ra.probe(t), rb.probe(t));
        term.param_contrast(a, b, c, grads)?;
    }
    if k + 1 == chain.len() {
        let n = chain.batch_len(labels.len()) as f32;
        for r in [&*ra, &*rb] {
            chain.accumulate_readout(r.state.last(), labels, 0.5 / n, grads)?;
        }
    }
    let mut g_u = Tensor::default();
    for term in &block.terms {
        term.input_contrast(&ra.view(), &rb.view(), c, &mut g_u)?;
    }
    Ok(g_u)
}

/// EP reads both equilibria of block `k` through the circuit's (noisy) measurement.
fn measure(
    chain: &Chain<'_>,
    k: usize,
    ra: &mut Relaxation<'_>,
    rb: &mut Relaxation<'_>,
) -> Result<()> {
    if let Some(a) = chain.analog {
        a.measure(k, ra)?;
        a.measure(k, rb)?;
    }
    Ok(())
}

fn check(ep: &Ep) -> Result<()> {
    ensure!(
        ep.beta != 0.0 && ep.beta.is_finite(),
        "EP needs a non-zero, finite β (got {})",
        ep.beta
    );
    Ok(())
}

/// Runs EP block by block from the last; `visit(k, t, grads)` (when given) receives the
/// estimate of block k's parameters (and the readout's) after each `t = 0..=T2` nudged
/// sweeps, the per-step detail the static gradient analysis plots.
fn run(
    chain: &Chain<'_>,
    free: &FreePhase,
    labels: &[u32],
    ep: &Ep,
    mut visit: Option<&mut StepVisitor<'_>>,
) -> Result<EpOutput> {
    check(ep)?;
    let model = chain.model;
    let mut grads = model.zero_grads();
    // the whole batch's size (`labels` may be a part of it)
    let n = chain.batch_len(labels.len()) as f32;
    let kk = chain.len();
    let (beta_a, beta_b) = ep.variant.betas(ep.beta);
    let c = 1.0 / ((beta_a - beta_b) * n);
    let mut currents = vec![None; kk];
    let mut power = Vec::new();
    let mut reports = vec![[None, None]; kk];
    let mut delta: Option<Tensor> = None;
    for k in (0..kk).rev() {
        let nudge = |b: f32| {
            (b != 0.0)
                .then(|| chain.nudge(k, b, delta.as_ref(), labels))
                .transpose()
        };
        let (na, nb) = (nudge(beta_a)?, nudge(beta_b)?);
        let base = match ep.form {
            NudgedForm::Offsets => Some(
                OffsetBase::new(&chain.blocks[k], &free.drives[k], free.states[k].clone())
                    .map_err(|e| with_block(e, k))?,
            ),
            NudgedForm::States => None,
        };
        let base = base.as_ref();
        let g_u = match visit.as_deref_mut() {
            None => {
                let (mut ra, rep_a) = phase(chain, free, base, k, na.as_ref(), ep, ep.t2)?;
                let (mut rb, rep_b) = phase(chain, free, base, k, nb.as_ref(), ep, ep.t2)?;
                reports[k] = [rep_a, rep_b];
                measure(chain, k, &mut ra, &mut rb)?;
                if ep.power {
                    for (beta, r) in [(beta_a, &ra), (beta_b, &rb)] {
                        if let (true, Some(p)) =
                            (beta != 0.0, mean_power(chain, free, k, &r.state)?)
                        {
                            power.push((k, NudgedPower { beta, power: p }));
                        }
                    }
                }
                block_contrast(chain, k, &mut ra, &mut rb, c, labels, &mut grads)?
            }
            Some(visit) => {
                let (mut ra, _) = phase(chain, free, base, k, na.as_ref(), ep, 0)?;
                let (mut rb, _) = phase(chain, free, base, k, nb.as_ref(), ep, 0)?;
                for t in 0..=ep.t2 {
                    if t > 0 {
                        crate::hooks::check_cancelled()?;
                        for (r, nd) in [(&mut ra, &na), (&mut rb, &nb)] {
                            if let Some(nd) = nd {
                                r.sweep(ep.order, Some(nd), None, None)
                                    .map_err(|e| with_block(e, k))?;
                            }
                        }
                    }
                    let mut g = model.zero_grads();
                    let g_u = block_contrast(chain, k, &mut ra, &mut rb, c, labels, &mut g)?;
                    chain.feedforward_backward(k, &free.ff[k], &g_u, &mut g)?;
                    visit(k, t, &g)?;
                }
                measure(chain, k, &mut ra, &mut rb)?;
                block_contrast(chain, k, &mut ra, &mut rb, c, labels, &mut grads)?
            }
        };
        currents[k] = delta.take();
        delta = chain
            .feedforward_backward(k, &free.ff[k], &g_u, &mut grads)?
            .map(|mut dx| {
                scale(&mut dx, -n);
                if let Some(a) = chain.analog {
                    // the error current enters block k − 1 through its DAC
                    a.error_dac(k - 1, &mut dx);
                }
                dx
            });
    }
    let phases = [beta_a, beta_b].iter().filter(|b| **b != 0.0).count();
    let transform_evals = free
        .ff
        .iter()
        .enumerate()
        .filter_map(|(k, f)| {
            f.bn_stats.as_ref().map(|s| TransformEvals {
                block: k,
                stats: s.clone(),
                // every nudged sweep and the two evaluations of ∂E/∂θ re-evaluate F there
                count: match &reports[k] {
                    [None, None] => phases * ep.t2,
                    rs => rs.iter().flatten().map(|r| r.sweeps).sum(),
                } + 2,
            })
        })
        .collect();
    Ok(EpOutput {
        grads,
        currents,
        transform_evals,
        power,
        reports,
    })
}

/// EP gradient estimates of every parameter (mean loss over the batch) and the currents.
pub fn ep_gradients(
    chain: &Chain<'_>,
    free: &FreePhase,
    labels: &[u32],
    ep: &Ep,
) -> Result<EpOutput> {
    run(chain, free, labels, ep, None)
}

/// Per-step detail of EP: `visit(k, t, grads)` for every block k (from the last) and
/// `t = 0..=T2` nudged sweeps (only block k's parameters, the readout for the last block and
/// the feedforward transform of block k are filled). Returns the full estimate too.
pub fn ep_transients(
    chain: &Chain<'_>,
    free: &FreePhase,
    labels: &[u32],
    ep: &Ep,
    visit: &mut StepVisitor<'_>,
) -> Result<EpOutput> {
    run(chain, free, labels, ep, Some(visit))
}
