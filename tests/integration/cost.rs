//! `ffebm cost`: counts against hand computations, the sweeps of a run directory, linearity
//! of the totals, technology files that must be refused, and the README's example.

use crate::common;
use ffebm::cost::counts::{configured_sweeps, step_counts};
use ffebm::cost::price::COMPONENTS;
use ffebm::cost::workload::EpochPlan;
use ffebm::cost::{estimate, Tech, Workload};
use ffebm::grad::{AlgoConfig, PhaseSweeps};
use ffebm::model::{ModelConfig, Norm};

/// One feedforward conv 1→2 (3x3, pad 1, no norm: with bias) on a 2x2 image, then one
/// dense coupling 8→3; readout 3→2.
fn tiny() -> ModelConfig {
    ModelConfig {
        input: [1, 2, 2],
        classes: 2,
        alpha: 1.0,
        init_v: 1e-3,
        blocks: vec![common::block(&[1, 2], "-", &[3], Norm::None, false)],
        conv_algo: Default::default(),
        cost: Default::default(),
    }
}

fn workload(model: ModelConfig, batch: usize, train: usize) -> Workload {
    let algo = AlgoConfig::ep(5, 3, 0.2);
    let sweeps = configured_sweeps(&algo, model.blocks.len());
    Workload {
        name: "tiny".into(),
        model,
        algo,
        batch,
        train_size: train,
        eval_images: 0,
        epochs: vec![EpochPlan {
            lr: 1e-3,
            sweeps,
            pulses: None,
        }],
        sweeps_source: "configured".into(),
        drn_power: vec![None],
        pairs: vec![false],
        notes: vec![],
    }
}

#[test]
fn counts_of_one_dense_block_match_the_hand_computation() {
    // per sample: layer 0 = 2x2x2 = 8 units, layer 1 = 3 units; the dense coupling has
    // 8·3 = 24 weights (cp = 24 MACs per pass); the conv 1·2·9·2·2 = 72 MACs; T1 = 5,
    // T2 = 3 for each of the two nudged phases (11 sweeps); batch 4
    let s = PhaseSweeps {
        free: 5.0,
        plus: 3.0,
        minus: 3.0,
        unrolled: 0.0,
    };
    let c = step_counts(&tiny(), 0, &s, 4.0).unwrap();
    assert_eq!(
        c.ff.macs,
        (72.0 + 72.0) * 4.0,
        "forward + weight gradient, no input gradient"
    );
    assert_eq!(
        c.ff.adds,
        (8.0 + 8.0) * 4.0,
        "conv bias forward and backward"
    );
    assert_eq!(c.sim_macs, 2.0 * 24.0 * 11.0 * 4.0);
    assert_eq!(c.settles, 11.0 * 4.0);
    assert_eq!(c.cell_reads, 2.0 * 24.0 * 11.0 * 4.0);
    // DAC: drive 8 in each of 3 phases, cost nudge on 3 units at each of 6 nudged sweeps
    assert_eq!(c.dac, (8.0 * 3.0 + 3.0 * 6.0) * 4.0);
    // ADC: two contrasted states (8 + 3), the free output (3), the output before each nudge
    assert_eq!(c.adc, (2.0 * 11.0 + 3.0 + 3.0 * 6.0) * 4.0);
    // weight gradient 2·24; readout 3·2 = 6 MACs × (forward, two CE gradients + two
    // forwards, and 2 per nudged sweep: 4 + 12)
    assert_eq!(c.overhead.macs, (48.0 + 6.0 * 16.0) * 4.0);
    assert_eq!(c.cells, 24.0);
    // conv 18 + bias 2, coupling 24 + bias 3, readout 6 + 2
    assert_eq!(c.params, 55.0);
    assert_eq!(c.optimiser.muls, 550.0);
    assert_eq!(c.optimiser_dram_words, 385.0);
    assert_eq!(c.matrices, vec![[8, 3, 1]]);
    assert_eq!(c.state_units, 11.0);
}

#[test]
fn energies_of_the_tiny_block_match_the_hand_computation() {
    let tech = Tech::preset("rram_64x64").unwrap();
    let r = estimate(&workload(tiny(), 4, 4), &tech).unwrap();
    let e = r.blocks[0].step;
    // ADC: 10 fJ · 2^8 = 2.56 pJ × 172; DAC 1 fJ · 2^8 = 0.256 pJ × 168
    assert!(
        (e.conversions - (172.0 * 2.56 + 168.0 * 0.256)).abs() < 1e-9,
        "{}",
        e.conversions
    );
    // cell read 0.5² V² · (0.476 + 10)/2 µS · 5 ns = 6.5475 fJ, × 2112 reads
    assert!(
        (e.eb_compute - 2112.0 * 6.5475e-3).abs() < 1e-9,
        "{}",
        e.eb_compute
    );
    // pulses: 24 cells · lr 1e-3 / (2·0.25/64); a pulse 2² V² · 5.238 µS · 80 ns = 1.67616 pJ
    let pulses = 24.0 * 1e-3 / (0.5 / 64.0);
    assert!((r.blocks[0].step_pulses - pulses).abs() < 1e-12);
    assert!((e.writes - pulses * 1.67616).abs() < 1e-9, "{}", e.writes);
    assert_eq!(r.blocks[0].tiles, 1.0);
}

/// Differential pairs (`G⁺ − G⁻`): the tiny block's 24 weights take 48 cells in twice the
/// columns, every crossbar read reads both devices (twice the read energy), while the
/// conversions, the optimiser and the estimated pulses (a pair's update pulses one device)
/// are those of single devices. A run configuration with `device_pair` sets it.
#[test]
fn differential_pairs_take_two_cells_per_weight() {
    let tech = Tech::preset("rram_64x64").unwrap();
    let single = estimate(&workload(tiny(), 4, 4), &tech).unwrap();
    let mut w = workload(tiny(), 4, 4);
    w.pairs = vec![true];
    let pair = estimate(&w, &tech).unwrap();
    let (s, p) = (&single.blocks[0], &pair.blocks[0]);
    assert_eq!((s.step_counts.cells, p.step_counts.cells), (24.0, 48.0));
    assert_eq!(
        s.step_counts.matrices[0][1] * 2,
        p.step_counts.matrices[0][1]
    );
    assert!((p.step.eb_compute - 2.0 * s.step.eb_compute).abs() < 1e-9);
    assert_eq!(p.step.conversions, s.step.conversions);
    assert_eq!(p.step.digital_overhead, s.step.digital_overhead);
    assert_eq!(p.step_pulses, s.step_pulses);
    assert_eq!(p.step_counts.params, s.step_counts.params);
    // from a run configuration
    let mut cfg =
        ffebm::train::RunConfig::resolve(Some("mnist_mlp"), None, None, &[], None).unwrap();
    let plain = Workload::from_config(&cfg, "plain").unwrap();
    cfg.analog = toml::from_str("preset = \"rram-constantstep-pair\"").unwrap();
    let paired = Workload::from_config(&cfg, "pairs").unwrap();
    assert!(plain.pairs.iter().all(|p| !p) && paired.pairs.iter().all(|p| *p));
}

fn tech_with(tech: &Tech, key: &str, factor: f64) -> Tech {
    tech.with_value(key, tech.get(key) * factor).unwrap()
}

#[test]
fn doubling_an_energy_constant_doubles_its_component_and_nothing_else() {
    let model = common::two_block_config(0.5, 0.5);
    let w = workload(model, 8, 40);
    let tech = Tech::preset("rram_64x64").unwrap();
    let base = estimate(&w, &tech).unwrap().step.energy.values();
    let cases: [(&[&str], usize); 3] = [
        (
            &["conversion.adc_fj_per_step", "conversion.dac_fj_per_step"],
            3,
        ),
        (&["analog.read_pulse_ns"], 2),
        (&["analog.write_pulse_ns"], 4),
    ];
    for (keys, component) in cases {
        let mut t = tech.clone();
        for k in keys {
            t = tech_with(&t, k, 2.0);
        }
        let doubled = estimate(&w, &t).unwrap().step.energy.values();
        for c in 0..COMPONENTS.len() {
            let want = if c == component {
                2.0 * base[c]
            } else {
                base[c]
            };
            assert!(
                (doubled[c] - want).abs() <= 1e-9 * want.abs(),
                "{keys:?}: {} = {} (want {want})",
                COMPONENTS[c].0,
                doubled[c]
            );
        }
        assert!(base[component] > 0.0, "{keys:?}: component is zero");
    }
}

#[test]
fn doubling_the_batch_doubles_step_compute_but_not_weight_writes() {
    let model = common::two_block_config(0.5, 0.5);
    let tech = Tech::preset("rram_64x64").unwrap();
    let one = estimate(&workload(model.clone(), 8, 80), &tech)
        .unwrap()
        .step
        .energy;
    let two = estimate(&workload(model, 16, 80), &tech)
        .unwrap()
        .step
        .energy;
    for (name, a, b) in [
        ("ff_compute", one.ff_compute, two.ff_compute),
        ("eb_compute", one.eb_compute, two.eb_compute),
        ("conversions", one.conversions, two.conversions),
    ] {
        assert!((b - 2.0 * a).abs() <= 1e-9 * a, "{name}: {a} → {b}");
    }
    assert!(one.writes > 0.0);
    assert_eq!(one.writes, two.writes);
}

fn complete_tech_text() -> String {
    // the preset without `base` is complete; every value sourced
    ffebm::cost::tech::preset_text("rram_64x64")
        .unwrap()
        .to_string()
}

#[test]
fn bad_technology_files_are_refused_naming_the_key() {
    let good = complete_tech_text();
    assert!(Tech::parse(&good, "t").unwrap().1.is_empty());
    let missing = good
        .lines()
        .filter(|l| !l.starts_with("settle_ns"))
        .collect::<Vec<_>>()
        .join("\n");
    let e = format!("{:#}", Tech::parse(&missing, "t").unwrap_err());
    assert!(e.contains("missing key `analog.settle_ns`"), "{e}");
    let negative = good.replace("value = 640.0", "value = -640.0");
    let e = format!("{:#}", Tech::parse(&negative, "t").unwrap_err());
    assert!(
        e.contains("`digital.dram_word_pj`") && e.contains("negative"),
        "{e}"
    );
    let unknown = good.replace("[analog]\n", "[analog]\nsettle_time_ns = 3.0\n");
    let e = format!("{:#}", Tech::parse(&unknown, "t").unwrap_err());
    assert!(e.contains("unknown key `analog.settle_time_ns`"), "{e}");
    let unsourced = good.replace(
        "levels = { value = 64, source = \"assumption: 64 programmable conductance levels\" }",
        "levels = 64",
    );
    let (t, warnings) = Tech::parse(&unsourced, "t").unwrap();
    assert_eq!(t.get("analog.levels"), 64.0);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("`analog.levels`") && warnings[0].contains("source"));
    // with a base, fields may be left out
    let (t, w) = Tech::parse(
        "base = \"rram_64x64\"\n[analog]\nsettle_ns = { value = 20.0, source = \"x\" }\n",
        "t",
    )
    .unwrap();
    assert!(w.is_empty());
    assert_eq!(t.get("analog.settle_ns"), 20.0);
    // from the command line too: the key is named, no estimate printed
    let dir = common::temp_dir("cost", "badtech");
    let path = dir.join("bad.toml");
    std::fs::write(&path, &unknown).unwrap();
    let out = common::ffebm(&[
        "cost",
        "--preset",
        "mnist_mlp",
        "--tech",
        common::path_str(&path),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown key `analog.settle_time_ns`"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sweeps_and_pulses_are_read_from_a_run_directory() {
    let dir = common::temp_dir("cost", "rundir");
    let mut cfg = ffebm::train::config::RunConfig::resolve(
        Some("mnist_mlp"),
        None,
        None,
        &["train.epochs=3".to_string()],
        None,
    )
    .unwrap();
    cfg.algorithm.t2 = 4;
    std::fs::write(dir.join("config.toml"), cfg.to_toml().unwrap()).unwrap();
    let epoch = |e: usize, extra: &str| {
        format!(
            "{{\"kind\":\"epoch\",\"epoch\":{e},\"step\":{},\"lr\":0.001,\"train_loss\":1.0,\"train_top1\":50.0,\"train_top5\":90.0,\"test_loss\":1.0,\"test_top1\":50.0,\"test_top5\":90.0,\"evals\":{{}},\"free_sweeps\":17.5,\"images_per_s\":1.0,\"epoch_time\":1.0,\"time\":1.0{extra}}}\n",
            e * 10
        )
    };
    let text = String::from("{\"kind\":\"step\",\"epoch\":0,\"step\":5}\n")
        + &epoch(1, ",\"sweeps_per_block\":{\"block0\":{\"free\":12.25,\"plus\":4.0,\"minus\":4.0}},\"pulses\":{\"block0\":1000}")
        + &epoch(2, "");
    std::fs::write(dir.join("metrics.jsonl"), text).unwrap();
    let w = Workload::from_run_dir(&dir).unwrap();
    assert_eq!(w.epochs.len(), 3);
    let s = &w.epochs[0].sweeps[0];
    assert_eq!((s.free, s.plus, s.minus), (12.25, 4.0, 4.0));
    assert_eq!(w.epochs[0].pulses, Some(vec![1000.0]));
    // an epoch without per-block records: the mean free sweeps, nudged phases as configured
    let s = &w.epochs[1].sweeps[0];
    assert_eq!((s.free, s.plus, s.minus), (17.5, 4.0, 4.0));
    assert_eq!(w.epochs[1].pulses, None);
    // an epoch not recorded: the configuration
    assert_eq!(w.epochs[2].sweeps[0].free, cfg.algorithm.t1 as f64);
    assert!(
        w.notes
            .iter()
            .any(|n| n.contains("1 of 3 epochs not recorded")),
        "{:?}",
        w.notes
    );
    assert!(
        w.notes.iter().any(|n| n.contains("pulses recorded")),
        "{:?}",
        w.notes
    );
    // the report's first step runs the recorded sweeps; the CLI says where they come from
    let r = estimate(&w, &Tech::preset("rram_64x64").unwrap()).unwrap();
    let b = cfg.data.batch_size as f64;
    assert_eq!(r.blocks[0].step_counts.settles, (12.25 + 8.0) * b);
    assert_eq!(r.blocks[0].step_pulses, 1000.0 / r.steps_per_epoch as f64);
    let out = common::ffebm(&["cost", "--run", common::path_str(&dir)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "sweeps: recorded per block and phase for 1 epochs, mean free sweeps only for 1, of 3"
        ),
        "{text}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn every_epoch_evaluates_the_test_set_and_the_validation_split() {
    let resolve = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let cfg =
            ffebm::train::config::RunConfig::resolve(Some("mnist_mlp"), None, None, &sets, None)
                .unwrap();
        Workload::from_config(&cfg, "mnist_mlp").unwrap()
    };
    // MNIST's test set is 10 000 images; a test_limit caps it, the validation split adds
    assert_eq!(resolve(&[]).eval_images, 10_000);
    let w = resolve(&["data.test_limit=500", "data.val_size=100", "train.epochs=3"]);
    assert_eq!(w.eval_images, 600);
    let r = estimate(&w, &Tech::preset("rram_64x64").unwrap()).unwrap();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
    assert!(close(r.evaluation.energy_pj, 600.0 * r.inference.energy_pj));
    assert!(close(
        r.evaluation.latency_ns,
        600.0 * r.inference.latency_ns
    ));
    assert!(close(
        r.evaluation.gpu_energy_pj,
        600.0 * r.inference.gpu_energy_pj
    ));
    assert!(close(
        r.run_with_evaluation.energy_pj,
        r.run.energy_pj + 3.0 * 600.0 * r.inference.energy_pj
    ));
    let text = ffebm::cost::render::render(&r);
    assert!(text.contains("evaluation: 600 images per epoch"), "{text}");
}

#[test]
fn a_drn_block_is_priced_with_the_resistor_power_its_run_recorded() {
    let dir = common::temp_dir("cost", "drn-power");
    let cfg = ffebm::train::config::RunConfig::resolve(
        Some("drn_xs"),
        None,
        None,
        &["train.epochs=2".to_string()],
        None,
    )
    .unwrap();
    std::fs::write(dir.join("config.toml"), cfg.to_toml().unwrap()).unwrap();
    let epoch = |e: usize, extra: &str| {
        format!(
            "{{\"kind\":\"epoch\",\"epoch\":{e},\"step\":{},\"lr\":0.001,\"train_loss\":1.0,\"train_top1\":50.0,\"train_top5\":90.0,\"test_loss\":1.0,\"test_top1\":50.0,\"test_top5\":90.0,\"evals\":{{}},\"free_sweeps\":4.0,\"images_per_s\":1.0,\"epoch_time\":1.0,\"time\":1.0{extra}}}\n",
            e * 10
        )
    };
    let rram = Tech::preset("rram_64x64").unwrap();
    // without a readout: the crossbar-read estimate, and the report says so
    std::fs::write(dir.join("metrics.jsonl"), epoch(1, "")).unwrap();
    let w = Workload::from_run_dir(&dir).unwrap();
    assert_eq!(w.drn_power, vec![None]);
    let r = estimate(&w, &rram).unwrap();
    let estimated = r.blocks[0].step.eb_compute;
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("priced as crossbar reads")),
        "{:?}",
        r.notes
    );
    // epoch 1 read 3e5 / 5e5 / 4e5 (mean 4e5), epoch 2 read 6e5 at the free state only:
    // the mean of the four readings is 4.5e5 model units
    let text = epoch(
        1,
        ",\"power\":{\"block0.free\":3e5,\"block0.plus\":5e5,\"block0.minus\":4e5}",
    ) + &epoch(2, ",\"power\":{\"block0.free\":6e5}");
    std::fs::write(dir.join("metrics.jsonl"), text).unwrap();
    let w = Workload::from_run_dir(&dir).unwrap();
    assert_eq!(w.drn_power, vec![Some(4.5e5)]);
    let r = estimate(&w, &rram).unwrap();
    // by hand: P = 4.5e5 · (10 µS / 0.25) · (0.5 V / gain 100)² = 4.5e5 · 4e-5 S · 2.5e-5 V²
    //          = 4.5e-4 W per sample, for 100 ns per settle: 4.5e-11 J = 45 pJ per settle
    assert_eq!(
        (
            rram.get("analog.g_max_us"),
            rram.get("analog.weight_max"),
            rram.get("analog.read_voltage_v"),
            rram.get("analog.settle_ns")
        ),
        (10.0, 0.25, 0.5, 100.0),
        "the hand computation assumes these rram_64x64 numbers"
    );
    assert_eq!(cfg.model.blocks[0].gain, Some(100.0));
    let settles = r.blocks[0].step_counts.settles;
    let want = 45.0 * settles;
    let got = r.blocks[0].step.eb_compute;
    assert!((got - want).abs() <= 1e-9 * want, "{got} pJ vs {want} pJ");
    assert!(got != estimated);
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("DRN block 0: resistor power 4.5000e5")),
        "{:?}",
        r.notes
    );
    // a malformed or negative reading is refused naming it
    for (bad, what) in [
        (",\"power\":{\"block0.free\":-1.0}", "power.block0.free"),
        (",\"power\":{\"block3.free\":1.0}", "power.block3.free"),
        (",\"power\":{\"block0.middle\":1.0}", "power.block0.middle"),
    ] {
        std::fs::write(dir.join("metrics.jsonl"), epoch(1, bad)).unwrap();
        let e = format!("{:#}", Workload::from_run_dir(&dir).unwrap_err());
        assert!(e.contains(what), "{e}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn training_steps_report_the_sweeps_of_every_phase() {
    let model = ffebm::model::Model::new(common::two_block_config(0.5, 0.5), 3).unwrap();
    let kernels = ffebm::model::prepare(&model).unwrap();
    let (x, y) = common::batch(&model, 4, 1);
    let mut algo = AlgoConfig::ep(40, 6, 0.1);
    algo.tol = Some(1e-3);
    let out = ffebm::grad::compute_gradients(&model, &kernels, &x, &y, &algo).unwrap();
    assert_eq!(out.sweeps.len(), 2);
    for (k, s) in out.sweeps.iter().enumerate() {
        assert_eq!(s.free, out.free.sweeps[k] as f64);
        assert!(s.free < 40.0, "the tolerance stops block {k} early");
        assert_eq!((s.plus, s.minus), (6.0, 6.0));
    }
    algo.variant = ffebm::grad::EpVariant::Positive;
    let out = ffebm::grad::compute_gradients(&model, &kernels, &x, &y, &algo).unwrap();
    assert_eq!((out.sweeps[0].plus, out.sweeps[0].minus), (6.0, 0.0));
}

/// The lines of the README's `ffebm cost` example output (between the command and the
/// closing fence).
fn readme_example() -> (Vec<String>, String) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("README.md")).unwrap();
    let start = text
        .find("$ ffebm cost ")
        .expect("README has no `$ ffebm cost` example");
    let block = &text[start..];
    let block = &block[..block.find("```").expect("unterminated example")];
    let mut lines = block.lines();
    let cmd = lines.next().unwrap()["$ ffebm ".len()..].trim().to_string();
    let args = cmd.split_whitespace().map(String::from).collect();
    (args, lines.collect::<Vec<_>>().join("\n"))
}

#[test]
fn the_readme_example_is_what_the_command_prints() {
    let (args, shown) = readme_example();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = common::ffebm(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        printed.trim_end(),
        shown.trim_end(),
        "README example is stale: rerun `ffebm {}`",
        args.join(" ")
    );
}

#[test]
fn a_trained_run_records_the_sweeps_that_cost_reads() {
    if common::shared_data().is_none() {
        return;
    }
    let sets: Vec<String> = [
        "data.train_limit=64",
        "data.test_limit=32",
        "data.batch_size=32",
        "algorithm.t1=30",
        "algorithm.tol=0.001",
        "algorithm.t2=4",
        "train.epochs=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cfg =
        ffebm::train::RunConfig::resolve(Some("mnist_mlp"), None, None, &sets, Some(1)).unwrap();
    let dir = std::env::temp_dir().join(format!("ffebm-cost-trained-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = ffebm::train::train(
        cfg,
        ffebm::train::TrainOptions {
            run_dir: dir.clone(),
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();
    let rec = &run.epochs[0];
    let s = rec.sweeps_per_block.as_ref().expect("sweeps_per_block")["block0"];
    assert!(s.free > 0.0 && s.free < 30.0, "free sweeps {}", s.free);
    assert!(
        (s.free - rec.free_sweeps).abs() < 1e-9,
        "one block: the mean is the block's"
    );
    assert_eq!((s.plus, s.minus), (4.0, 4.0));
    let w = Workload::from_run_dir(&dir).unwrap();
    assert_eq!(w.epochs[0].sweeps[0], s);
    assert_eq!(
        w.sweeps_source,
        "recorded per block and phase for 1 of 1 epochs"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn gpu_execution_is_its_own_baseline_and_tiles_cost_only_with_digital_partial_sums() {
    let w = workload(common::two_block_config(0.5, 0.5), 8, 40);
    let gpu = estimate(&w, &Tech::preset("gpu_a100").unwrap()).unwrap();
    assert!((gpu.run.energy_gain() - 1.0).abs() < 1e-12);
    assert!((gpu.run.speedup() - 1.0).abs() < 1e-12);
    let digital = estimate(&w, &Tech::preset("digital_45nm").unwrap()).unwrap();
    assert_eq!(digital.step.energy.conversions, 0.0);
    assert_eq!(digital.step.energy.writes, 0.0);
    // tile rows: no effect with analog partial sums, fewer conversions with larger tiles
    // when each row tile's outputs are digitised
    let (analog, _) = Tech::parse("base = \"rram_64x64\"\n", "t").unwrap();
    let (dsum, _) = Tech::parse(
        "base = \"rram_64x64\"\n[analog]\npartial_sums = \"digital\"\n",
        "t",
    )
    .unwrap();
    let conv = |t: &Tech, rows: f64| {
        let t = t.with_value("analog.array_rows", rows).unwrap();
        estimate(&w, &t).unwrap().step.energy.conversions
    };
    assert_eq!(conv(&analog, 4.0), conv(&analog, 64.0));
    let (small, large) = (conv(&dsum, 4.0), conv(&dsum, 64.0));
    assert!(
        small > large && large > conv(&analog, 64.0),
        "{small} {large}"
    );
}

#[test]
fn the_command_writes_json_figures_and_sweeps_and_refuses_bad_sweeps() {
    let dir = common::temp_dir("cost", "cli");
    let (json, png, sweep) = (dir.join("r.json"), dir.join("r.png"), dir.join("s.svg"));
    let out = common::ffebm(&[
        "cost",
        "--preset",
        "cifar10_tiny",
        "--tech",
        "pcm_512",
        "--json",
        common::path_str(&json),
        "--plot",
        common::path_str(&png),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["tech"], "pcm_512");
    let blocks = v["blocks"].as_array().unwrap();
    let sum: f64 = blocks
        .iter()
        .map(|b| {
            COMPONENTS
                .iter()
                .map(|(c, _)| b["step"][c].as_f64().unwrap())
                .sum::<f64>()
        })
        .sum();
    let total = v["step"]["energy_pj"].as_f64().unwrap();
    assert!((sum - total).abs() <= 1e-9 * total, "{sum} vs {total}");
    assert_eq!(&std::fs::read(&png).unwrap()[..4], b"\x89PNG");
    let out = common::ffebm(&[
        "cost",
        "--preset",
        "cifar10_tiny",
        "--sweep",
        "analog.settle_ns=10,100",
        "--plot",
        common::path_str(&sweep),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    assert!(std::fs::read_to_string(&sweep).unwrap().contains("<svg"));
    for (bad, msg) in [
        (
            "analog.settle_time=1",
            "unknown technology key `analog.settle_time`",
        ),
        ("analog.settle_ns=1,x", "`x` is not a number"),
        (
            "digital.dram_word_pj=-1",
            "`digital.dram_word_pj` = -1: an energy cannot be negative",
        ),
    ] {
        let out = common::ffebm(&["cost", "--preset", "cifar10_tiny", "--sweep", bad]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(msg), "{bad}: {err}");
    }
    let out = common::ffebm(&[
        "cost",
        "--preset",
        "cifar10_tiny",
        "--set",
        "algorithm.name=id-exact",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("prices EP training"));
    std::fs::remove_dir_all(dir).unwrap();
}
