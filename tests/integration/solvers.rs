//! Faster equilibria (issue 12): Anderson acceleration against plain sweeps on a
//! contraction, its fallback on a singular history, per-sample stopping under Anderson, and
//! EP gradients from every solver and criterion against the fixed-count solver's, with the
//! reports of sweeps and residuals checked.

use crate::common;
use common::*;
use ffebm::core::testutil::random_tensor;
use ffebm::core::{ConvAlgo, Tensor};
use ffebm::energy::EnergyBlock;
use ffebm::grad::{compute_gradients, sweep_table, AlgoConfig, SolverKind};
use ffebm::model::feedforward::{ff_forward, BnMode, FfCache};
use ffebm::model::presets::preset;
use ffebm::model::{prepare, Model, Norm};
use ffebm::relax::{relax, AndersonParams, BlockState, Order, Relaxation, Schedule, Solver};

/// One Hopfield block of three clamped conv layers with small weights and no pooling: a
/// contraction (plain sweeps need ~60 to a relative change of 1e-7). With larger weights
/// or max-pooled couplings the energy is not convex, and Anderson may land on another fixed
/// point than plain sweeps (measured: states 1 apart at V = 0.05).
fn contraction() -> Model {
    let mut c = two_block_config(0.5, 0.02);
    c.conv_algo = ConvAlgo::Direct;
    c.input = [3, 8, 8];
    c.blocks = vec![block(&[3, 4, 5, 6], "---", &[], Norm::Batchnorm, true)];
    Model::new(c, 5).unwrap()
}

fn drive(model: &Model, b: usize) -> Tensor {
    let kern = prepare(model).unwrap();
    let (x, _) = batch(model, b, 3);
    ff_forward(
        &model.blocks[0],
        kern[0].ff.as_ref(),
        &x,
        BnMode::Train,
        &mut FfCache::default(),
    )
    .unwrap()
}

fn anderson(tol: Option<f32>, per_sample: bool, cap: usize) -> Schedule {
    Schedule {
        sweeps: cap,
        tol,
        per_sample,
        solver: Solver::Anderson(AndersonParams::default()),
    }
}

fn max_diff(a: &BlockState, b: &BlockState) -> f32 {
    a.layers
        .iter()
        .zip(&b.layers)
        .flat_map(|(x, y)| x.data().iter().zip(y.data()).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

#[test]
fn anderson_reaches_the_plain_fixed_point_in_fewer_map_evaluations() {
    let model = contraction();
    let kern = prepare(&model).unwrap();
    let u = drive(&model, 3);
    let eb = EnergyBlock::hopfield(&model, &kern, 0);
    let zeros = || BlockState::zeros(&model.blocks[0].layout.layers, 3);
    // the fixed point: plain sweeps far past convergence
    let mut reference = Relaxation::new(&eb, &u, zeros(), "test");
    relax(
        &mut reference,
        Order::EvenFirst,
        None,
        Schedule::fixed(3000),
        None,
    )
    .unwrap();
    let tol = Some(1e-7);
    let mut plain = Relaxation::new(&eb, &u, zeros(), "test");
    let rp = relax(
        &mut plain,
        Order::EvenFirst,
        None,
        Schedule {
            tol,
            ..Schedule::fixed(3000)
        },
        None,
    )
    .unwrap();
    let mut acc = Relaxation::new(&eb, &u, zeros(), "test");
    let ra = relax(
        &mut acc,
        Order::EvenFirst,
        None,
        anderson(tol, false, 3000),
        None,
    )
    .unwrap();
    eprintln!(
        "plain {} sweeps, anderson {} sweeps ({} fallbacks); |anderson − fixed point| {:e}, |plain − fixed point| {:e}",
        rp.sweeps,
        ra.sweeps,
        ra.fallbacks,
        max_diff(&acc.state, &reference.state),
        max_diff(&plain.state, &reference.state)
    );
    assert!(rp.converged && ra.converged, "{rp:?} {ra:?}");
    assert!(max_diff(&acc.state, &reference.state) < 1e-6);
    assert!(
        ra.sweeps < rp.sweeps,
        "anderson {} map evaluations, plain {}",
        ra.sweeps,
        rp.sweeps
    );
    // the report: one residual per map evaluation, the last one the final measure
    assert_eq!(ra.residuals.len(), ra.sweeps);
    assert_eq!(*ra.residuals.last().unwrap(), ra.final_measure);
    assert!(ra.final_measure < 1e-7);
}

#[test]
fn a_singular_history_triggers_the_fallback_without_nan() {
    let model = contraction();
    let kern = prepare(&model).unwrap();
    let u = drive(&model, 2);
    let eb = EnergyBlock::hopfield(&model, &kern, 0);
    let zeros = BlockState::zeros(&model.blocks[0].layout.layers, 2);
    let mut fixed = Relaxation::new(&eb, &u, zeros, "test");
    relax(
        &mut fixed,
        Order::EvenFirst,
        None,
        Schedule::fixed(3000),
        None,
    )
    .unwrap();
    // from the fixed point every residual is (round-off) zero: without regularisation the
    // Gram matrices are singular and every mix must fall back to the plain sweep
    let start = fixed.state.clone();
    let mut r = Relaxation::new(&eb, &u, start.clone(), "test");
    let params = AndersonParams {
        m: 3,
        lambda: 0.0,
        tau: 1.0,
    };
    let rep = relax(
        &mut r,
        Order::EvenFirst,
        None,
        Schedule {
            solver: Solver::Anderson(params),
            ..Schedule::fixed(6)
        },
        None,
    )
    .unwrap();
    assert!(rep.fallbacks > 0, "{rep:?}");
    for l in &r.state.layers {
        assert!(l.data().iter().all(|v| v.is_finite()));
    }
    assert!(max_diff(&r.state, &start) < 1e-6);
}

#[test]
fn per_sample_anderson_freezes_each_sample_as_if_it_were_alone() {
    let model = contraction();
    let kern = prepare(&model).unwrap();
    let b = 5;
    let u = drive(&model, b);
    let eb = EnergyBlock::hopfield(&model, &kern, 0);
    let layers = &model.blocks[0].layout.layers;
    let schedule = anderson(Some(1e-4), true, 500);
    let mut r = Relaxation::new(&eb, &u, BlockState::zeros(layers, b), "test");
    let rep = relax(&mut r, Order::EvenFirst, None, schedule, None).unwrap();
    assert!(rep.converged, "{rep:?}");
    assert_eq!(rep.sample_sweeps.len(), b);
    assert_eq!(
        rep.sweeps,
        *rep.sample_sweeps.iter().max().unwrap(),
        "the batch runs until its last sample converges"
    );
    assert!(
        rep.sample_sweeps.iter().min() < rep.sample_sweeps.iter().max(),
        "samples stop at different sweeps: {:?}",
        rep.sample_sweeps
    );
    // samples are independent: each one, relaxed alone, stops at the same sweep in the same
    // state, so a frozen sample was not updated again while the others went on
    for i in 0..b {
        let ui = u.rows(i..i + 1);
        let mut alone = Relaxation::new(&eb, &ui, BlockState::zeros(layers, 1), "test");
        let ri = relax(&mut alone, Order::EvenFirst, None, schedule, None).unwrap();
        assert_eq!(ri.sweeps, rep.sample_sweeps[i], "sample {i}");
        for (a, s) in r.state.layers.iter().zip(&alone.state.layers) {
            let d = a
                .rows(i..i + 1)
                .data()
                .iter()
                .zip(s.data())
                .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
            // (batch-size dependent round-off of the kernels aside)
            assert!(d < 1e-5, "sample {i} differs by {d}");
        }
    }
}

/// EP with long fixed counts against every solver with tight tolerances in both phases.
fn solvers_agree(model: &Model, x: &Tensor, y: &[u32], base: AlgoConfig, tol: f32) {
    let kern = prepare(model).unwrap();
    let fixed = compute_gradients(model, &kern, x, y, &base).unwrap();
    let variants: [(&str, SolverKind, bool); 3] = [
        ("plain", SolverKind::Plain, false),
        ("per-sample", SolverKind::Plain, true),
        ("anderson", SolverKind::Anderson, false),
    ];
    for (name, solver, per_sample) in variants {
        let cfg = AlgoConfig {
            tol: Some(tol),
            nudged_tol: Some(tol),
            per_sample_tol: per_sample,
            solver,
            ..base.clone()
        };
        cfg.validate().unwrap();
        let out = compute_gradients(model, &kern, x, y, &cfg).unwrap();
        for ((id, g), (_, f)) in out.grads.entries.iter().zip(&fixed.grads.entries) {
            let c = cosine(g, f);
            assert!(
                c >= 0.9999,
                "{name}: {id:?} cosine {c} against the fixed count"
            );
        }
        // the report: every block has a free, plus and minus row that met the tolerance
        // within the caps, and the per-phase sweep counts agree with it
        let rows = sweep_table(&out);
        assert_eq!(rows.len(), 3 * model.blocks.len(), "{name}: {rows:?}");
        for r in &rows {
            let cap = if r.phase == "free" { base.t1 } else { base.t2 };
            assert!(
                r.converged && r.residual < tol as f64 && r.sweeps < cap,
                "{name}: {r}"
            );
            assert!(r.mean_sample_sweeps <= r.sweeps as f64);
            let s = &out.sweeps[r.block];
            let want = match r.phase {
                "free" => s.free,
                "plus" => s.plus,
                _ => s.minus,
            };
            assert_eq!(want, r.sweeps as f64, "{name}: {r}");
        }
        eprintln!(
            "{name}: {}",
            rows.iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
}

#[test]
fn every_solver_matches_fixed_count_ep_gradients_on_hopfield_blocks() {
    let mut c = two_block_config(0.5, 0.5);
    c.conv_algo = ConvAlgo::Direct;
    let model = Model::new(c, 3).unwrap();
    let (x, y) = batch(&model, 4, 9);
    solvers_agree(&model, &x, &y, AlgoConfig::ep(800, 400, 0.05), 1e-6);
}

#[test]
fn every_solver_matches_fixed_count_ep_gradients_on_a_resistive_block() {
    let p = preset("drn_xs", None).unwrap();
    let model = Model::new(p.model.clone(), 2).unwrap();
    let x = random_tensor(&[4, 28, 28, 1], 4);
    let x = Tensor::from_vec(
        x.shape(),
        x.data().iter().map(|v| v.abs().min(1.0)).collect(),
    )
    .unwrap();
    let y = vec![1, 7, 3, 0];
    let base = AlgoConfig {
        t1: 800,
        t2: 400,
        ..p.algo.clone()
    };
    solvers_agree(&model, &x, &y, base, 1e-6);
}

/// The study (`ffebm solvers`): one row per solver and tolerance pair, the fixed schedule
/// once; with `--nudged-eps` every free-phase ε runs with every nudged ε, and a looser
/// nudged ε leaves the free phase alone and stops the nudged phases no later; the CSV holds
/// both tolerances and every block's sweeps as the rows report them.
#[test]
fn the_study_runs_every_pair_of_free_and_nudged_tolerances() {
    use ffebm::analysis::solvers::{run_study, StudyPlan, StudySolver};
    let mut c = two_block_config(0.5, 0.5);
    c.conv_algo = ConvAlgo::Direct;
    let model = Model::new(c, 3).unwrap();
    let (x, y) = batch(&model, 4, 9);
    let kern = prepare(&model).unwrap();
    let plan = StudyPlan {
        preset: "two_block",
        model: &model,
        kernels: &kern,
        x: &x,
        labels: &y,
        base: AlgoConfig::ep(40, 20, 0.05),
        solvers: vec![StudySolver::Fixed, StudySolver::Plain],
        eps: vec![1e-3, 1e-5],
        nudged_eps: vec![1e-5, 1e-2],
        caps: (400, 200),
        reps: 1,
        id_sweeps: None,
    };
    let mut messages = 0;
    let rep = run_study(&plan, |_| messages += 1).unwrap();
    assert_eq!(messages, 5);
    let pairs: Vec<(&str, Option<f32>, Option<f32>)> = rep
        .rows
        .iter()
        .map(|r| (r.solver.name(), r.eps, r.nudged_eps))
        .collect();
    assert_eq!(
        pairs,
        [
            ("fixed", None, None),
            ("plain", Some(1e-3), Some(1e-5)),
            ("plain", Some(1e-3), Some(1e-2)),
            ("plain", Some(1e-5), Some(1e-5)),
            ("plain", Some(1e-5), Some(1e-2)),
        ]
    );
    let sweeps = |i: usize, block: usize, phase: &str| sweeps_of(&rep.rows[i], block, phase);
    for (tight, loose) in [(1, 2), (3, 4)] {
        for b in 0..2 {
            assert_eq!(sweeps(tight, b, "free"), sweeps(loose, b, "free"));
            for p in ["plus", "minus"] {
                assert!(sweeps(loose, b, p) <= sweeps(tight, b, p), "block {b} {p}");
            }
        }
        let total = |i: usize| rep.rows[i].total_sweeps;
        assert!(
            total(loose) < total(tight),
            "{} vs {}",
            total(loose),
            total(tight)
        );
    }
    // the fixed schedule: exactly T1 and T2
    assert_eq!((sweeps(0, 0, "free"), sweeps(0, 1, "plus")), (40, 20));
    let csv = rep.csv();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        &header[..6],
        ["preset", "batch", "solver", "eps", "nudged_eps", "seconds"]
    );
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    for (line, row) in lines.zip(&rep.rows) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(
            f[col("eps")],
            row.eps.map_or(String::new(), |e| format!("{e:e}"))
        );
        assert_eq!(
            f[col("nudged_eps")],
            row.nudged_eps.map_or(String::new(), |e| format!("{e:e}"))
        );
        assert_eq!(
            f[col("b1_minus_sweeps")],
            sweeps_of(row, 1, "minus").to_string()
        );
        assert_eq!(f[col("total_sweeps")], row.total_sweeps.to_string());
    }
}

fn sweeps_of(row: &ffebm::analysis::solvers::StudyRow, block: usize, phase: &str) -> usize {
    row.phases
        .iter()
        .find(|p| p.block == block && p.phase == phase)
        .unwrap()
        .sweeps
}
