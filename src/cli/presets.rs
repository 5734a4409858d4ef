//! `ffebm presets [NAME]`.

use super::common::{si, Global};
use crate::model::config::{BlockKind, CouplingKind, LayerShape};
use crate::model::cost::{block_costs, ep_step_macs, free_phase_macs};
use crate::model::presets::{preset, NAMES};
use crate::model::{Model, Norm};
use crate::train::optim::{OptimKind, ScheduleKind};
use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct PresetsArgs {
    /// Show this preset's layer table, parameter and MAC counts.
    pub name: Option<String>,
    /// Readout classes for the table.
    #[arg(long)]
    pub classes: Option<usize>,
    /// Write the preset's initial weights (from --seed) to this safetensors file, under the
    /// reference implementation's `state_dict` names (loadable by `grad --weights` and by
    /// PyTorch).
    #[arg(long, value_name = "FILE", requires = "name")]
    pub export_weights: Option<std::path::PathBuf>,
}

fn shape(s: &LayerShape) -> String {
    match s {
        LayerShape::Map { h, w, c } => format!("{c}x{h}x{w}"),
        LayerShape::Dense { f } => format!("{f}"),
    }
}

pub fn run(g: &Global, a: PresetsArgs) -> Result<()> {
    let Some(name) = a.name else {
        println!(
            "{:<28} {:<9} {:>8} {:>10}  summary",
            "preset", "dataset", "layers", "params"
        );
        for n in NAMES {
            let p = preset(n, None)?;
            let layers: usize = p.model.layouts()?.iter().map(|b| b.layers.len()).sum();
            let params = Model::new(p.model.clone(), 0)?.num_params();
            println!(
                "{n:<28} {:<9} {layers:>8} {:>10}  {}",
                p.train.dataset,
                si(params as f64),
                p.summary
            );
        }
        println!("\n`ffebm presets NAME` shows one preset in detail.");
        return Ok(());
    };
    let p = preset(&name, a.classes)?;
    if let Some(path) = &a.export_weights {
        let model = Model::new(p.model.clone(), g.seed)?;
        let meta = std::collections::HashMap::from([
            ("preset".to_string(), p.name.to_string()),
            ("seed".to_string(), g.seed.to_string()),
        ]);
        crate::io::tensors::write_tensor_file(
            path,
            &crate::io::weights::model_tensors(&model, &Default::default()),
            meta,
        )?;
        println!(
            "wrote the initial weights of {} (seed {}) to {}",
            p.name,
            g.seed,
            path.display()
        );
        return Ok(());
    }
    let layouts = p.model.layouts()?;
    println!("{}: {}", p.name, p.summary);
    let (o, sc) = (&p.train.optim, &p.train.schedule);
    let schedule = match sc.name {
        ScheduleKind::Cosine => format!(
            "cosine to {} over {} epochs",
            sc.lr_min,
            sc.t_max.unwrap_or(p.train.epochs)
        ),
        ScheduleKind::Exponential => format!("exponential, gamma {}", sc.gamma.unwrap_or(1.0)),
        ScheduleKind::Constant => "constant".into(),
    };
    println!(
        "dataset {}{}, batch {}, {} lr {} ({schedule}), {} epochs; {} T1 {}{}, T2 {}, beta {}{}",
        p.train.dataset,
        if p.train.normalize {
            ""
        } else {
            " (not normalised)"
        },
        p.train.batch_size,
        match o.name {
            OptimKind::Adam => "Adam".to_string(),
            OptimKind::Sgd => format!("SGD (momentum {})", o.momentum),
        },
        o.lr,
        p.train.epochs,
        p.algo.name,
        p.algo.t1,
        p.algo
            .tol
            .map(|t| format!(" (tol {t})"))
            .unwrap_or_default(),
        p.algo.t2,
        p.algo.beta,
        if p.model.blocks.iter().any(|b| b.kind == BlockKind::Hopfield) {
            format!(", alpha {}, V {}", p.model.alpha, p.model.init_v)
        } else {
            String::new()
        }
    );
    let costs = block_costs(&p.model)?;
    for (k, (l, c)) in layouts.iter().zip(&costs).enumerate() {
        let norm = match (l.norm, l.norm_pool) {
            (Norm::None, _) => "no norm",
            (_, true) => "conv, BN, pool",
            _ => "conv, pool, BN",
        };
        let front = if l.ff_conv {
            format!(
                "feedforward conv {}->{}{} ({norm})",
                l.ff_cin,
                l.ff_cout,
                if l.ff_pool { " +pool" } else { "" }
            )
        } else {
            "no feedforward conv (fed directly)".into()
        };
        let what = match l.kind {
            BlockKind::Hopfield => format!(
                "hopfield{}",
                if l.clamp_last {
                    ", last layer clamped"
                } else {
                    ""
                }
            ),
            BlockKind::Resistive => format!(
                "resistive, input voltages {}·{}",
                l.gain,
                if l.duplicate { "[u, −u]" } else { "u" }
            ),
        };
        println!(
            "block {k} ({what}): {front}  [{} kMAC/sample per sweep]",
            2 * c.coupling_pass / 1_000
        );
        if l.kind == BlockKind::Hopfield {
            println!("  layer 0: {}", shape(&l.layers[0]));
        }
        for (i, cp) in l.couplings.iter().enumerate() {
            let desc = match cp {
                CouplingKind::Conv {
                    cin,
                    cout,
                    h,
                    w,
                    pool,
                } => format!(
                    "conv {cin}->{cout}@{h}x{w}{}",
                    if *pool { " +pool" } else { "" }
                ),
                CouplingKind::Dense { fin, fout } => format!("dense {fin}->{fout}"),
                CouplingKind::Resistive { fin, fout } => format!("conductances {fin}->{fout}"),
            };
            let (layer, of) = match l.kind {
                BlockKind::Resistive => (i, if i == 0 { " (input voltages)" } else { "" }),
                BlockKind::Hopfield => (i + 1, ""),
            };
            println!(
                "  layer {layer}: {}  via {desc}{of}",
                shape(&l.layers[layer])
            );
        }
    }
    let model = Model::new(p.model.clone(), 0)?;
    let t1 = vec![p.algo.t1; layouts.len()];
    match p.model.cost {
        crate::model::CostKind::CrossEntropy => println!(
            "readout {}->{}, cross-entropy; {} parameters",
            p.model.readout_inputs()?,
            p.model.classes,
            model.num_params()
        ),
        crate::model::CostKind::SquaredError => println!(
            "squared-error cost on the last layer ({} classes); {} parameters",
            p.model.classes,
            model.num_params()
        ),
    }
    println!(
        "per sample: free phase {}MAC, EP step {}MAC (SPEC §7 cost model{})",
        si(free_phase_macs(&costs, &t1, 1) as f64),
        si(ep_step_macs(&costs, &t1, p.algo.t2, 1) as f64),
        if p.algo.tol.is_some() {
            ", T1 at its cap"
        } else {
            ""
        }
    );
    Ok(())
}
