//! `ffebm gdd` (static gradient analysis) and `ffebm plot` (training curves).

use super::common::{check_batch, errln, outln, positive, Global, ModelArgs, PhaseArgs};
use crate::analysis::gdd::{analyse, beta_sweep, t2_sweep, GddConfig, GddReport};
use crate::analysis::plot::{
    plot_runs, BarSeries, CosineBars, SweepFigure, SweepSeries, TransientBlock, TransientFigure,
    TransientLayer,
};
use crate::core::Tensor;
use crate::data::{Dataset, DatasetKind, Layout, Loader, LoaderOptions, Split, Subset};
use crate::model::prepare;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct GddArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub batch: BatchArgs,
    #[command(flatten)]
    pub phases: PhaseArgs,
    /// Tracked coordinates per weight tensor in the transient curves.
    #[arg(long, default_value_t = 4, value_parser = positive)]
    pub coords: usize,
    /// Skip the transient curves (T2+1 truncated ID runs per block).
    #[arg(long)]
    pub no_transients: bool,
    /// Also tabulate and plot the EP–ID discrepancy for these β.
    #[arg(long, value_delimiter = ',')]
    pub betas: Vec<f32>,
    /// Also tabulate and plot the EP–ID discrepancy for these T2.
    #[arg(long, value_delimiter = ',')]
    pub t2s: Vec<usize>,
    /// ID variant drawn in the figures (`exact` or `reference`).
    #[arg(long, default_value = "exact")]
    pub id_variant: String,
    /// Output directory (JSON, CSV, PNG and SVG).
    #[arg(long)]
    pub out: PathBuf,
}

/// The first `n` training images of `kind` through the data pipeline `pipeline` (its
/// normalisation and image size: a preset's, see [`BatchArgs::load`]).
pub(super) fn default_batch(
    kind: DatasetKind,
    dir: Option<&Path>,
    n: usize,
    pipeline: Pipeline,
) -> Result<(Tensor, Vec<u32>)> {
    let root = crate::data::data_dir(dir)?;
    let ds = Dataset::load(
        kind,
        Split::Train,
        &crate::data::dataset_dir(&root, kind),
        None,
    )?;
    let sub = Subset::new(Arc::new(ds), (0..n).collect())?;
    let loader = Loader::new(
        sub,
        LoaderOptions {
            layout: Layout::Nhwc,
            normalization: pipeline.normalization,
            native_size: pipeline.native_size,
            ..LoaderOptions::eval(n)
        },
    )?;
    let b = loader.batch(0);
    Ok((Tensor::from_vec(&b.shape, b.x)?, b.y))
}

fn write_tables(out: &Path, rep: &GddReport) -> Result<()> {
    crate::io::atomic_write(
        &out.join("gdd.json"),
        serde_json::to_string_pretty(rep)?.as_bytes(),
    )?;
    let mut csv = String::from("tensor,block,cos_id_exact,rel_error_id_exact,norm_ratio_id_exact,sign_agreement_id_exact,cos_id_reference,rel_error_id_reference,norm_ratio_id_reference,sign_agreement_id_reference\n");
    for t in &rep.tensors {
        let (e, r) = (&t.vs_id_exact, &t.vs_id_reference);
        writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{}",
            t.name,
            t.block,
            e.cosine,
            e.rel_error,
            e.norm_ratio,
            e.sign_agreement,
            r.cosine,
            r.rel_error,
            r.norm_ratio,
            r.sign_agreement
        )?;
    }
    crate::io::atomic_write(&out.join("gdd.csv"), csv.as_bytes())?;
    if rep.tensors.iter().all(|t| t.ep.is_empty()) {
        return Ok(()); // no transients (--no-transients): no table
    }
    let mut tr = String::from("tensor,coord,t,ep,id_exact,id_reference\n");
    for t in &rep.tensors {
        for (step, ep) in t.ep.iter().enumerate() {
            for (j, c) in t.coords.iter().enumerate() {
                writeln!(
                    tr,
                    "{},{c},{step},{},{},{}",
                    t.name, ep[j], t.id_exact[step][j], t.id_reference[step][j]
                )?;
            }
        }
    }
    crate::io::atomic_write(&out.join("transients.csv"), tr.as_bytes())
}

fn transpose(v: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = v.first().map_or(0, |r| r.len());
    (0..n).map(|j| v.iter().map(|r| r[j]).collect()).collect()
}

fn figures(out: &Path, rep: &GddReport, blocks: usize, reference: bool, quiet: bool) -> Result<()> {
    let weights: Vec<_> = rep
        .tensors
        .iter()
        .filter(|t| t.is_weight && t.synapse.is_some())
        .collect();
    let names: Vec<String> = weights
        .iter()
        .map(|t| {
            t.name
                .trim_end_matches(".weight")
                .replace("blocks.", "b")
                .replace("synapses.", "s")
        })
        .collect();
    let bars = CosineBars::new(
        format!(
            "EP vs ID cosine per layer (beta {}, T2 {})",
            rep.beta, rep.t2
        ),
        names,
        vec![
            BarSeries {
                name: "vs ID-exact".into(),
                values: weights.iter().map(|t| t.vs_id_exact.cosine).collect(),
            },
            BarSeries {
                name: "vs ID-reference".into(),
                values: weights.iter().map(|t| t.vs_id_reference.cosine).collect(),
            },
        ],
    );
    let mut files = Vec::new();
    for ext in ["png", "svg"] {
        let p = out.join(format!("cosine.{ext}"));
        bars.save(&p)?;
        files.push(p);
    }
    if weights.iter().any(|t| !t.ep.is_empty()) {
        let blocks = (0..blocks)
            .map(|k| TransientBlock {
                layers: weights
                    .iter()
                    .filter(|t| t.block == k)
                    .map(|t| TransientLayer {
                        name: t.name.trim_end_matches(".weight").to_string(),
                        id: transpose(if reference {
                            &t.id_reference
                        } else {
                            &t.id_exact
                        }),
                        ep: transpose(&t.ep),
                    })
                    .collect(),
            })
            .collect();
        let fig = TransientFigure::new(
            format!(
                "EP (dashed) vs ID-{} (solid), beta {}",
                if reference { "reference" } else { "exact" },
                rep.beta
            ),
            blocks,
        );
        for ext in ["png", "svg"] {
            let p = out.join(format!("transients.{ext}"));
            fig.save(&p)?;
            files.push(p);
        }
    }
    if !quiet {
        for f in files {
            outln!("wrote {}", f.display());
        }
    }
    Ok(())
}

/// A bar for the transient curves on a terminal (None otherwise or with `--quiet`).
fn transient_bar(quiet: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    (!quiet && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "  transients [{bar:30}] {pos}/{len} truncated ID runs ({elapsed} < {eta})",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        b
    })
}

/// How the default batch's images are fed: normalisation (`None`: the dataset's) and
/// whether at their stored size (28x28 for the MNIST family) instead of padded to 32x32.
#[derive(Clone, Debug, Default)]
pub(super) struct Pipeline {
    pub normalization: Option<crate::data::Normalization>,
    pub native_size: bool,
}

impl Pipeline {
    /// A preset's pipeline (as its training runs feed the data), else the model's input size
    /// decides (28x28 models take MNIST-family images unpadded).
    fn of(
        model: &crate::model::Model,
        preset: Option<&crate::model::presets::Preset>,
    ) -> Result<Self> {
        Ok(match preset {
            Some(p) => {
                let data = crate::train::config::RunConfig::from_preset(p, 0)?.data;
                Pipeline {
                    normalization: data.normalization(),
                    native_size: !data.pad_to_32,
                }
            }
            None => Pipeline {
                normalization: None,
                native_size: model.config.input[1..] == [28, 28],
            },
        })
    }
}

/// The batch of a one-batch analysis (`gdd`, `robustness`, `solvers`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BatchArgs {
    /// Batch file (safetensors with `x` NCHW float32 and `y` int); default: the first
    /// --batch-size training images of the preset's dataset.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Data root for the default batch (default: $FFEBM_DATA).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Dataset of the default batch (default: the preset's, else cifar10).
    #[arg(long)]
    pub dataset: Option<DatasetKind>,
    /// Size of the default batch (default: 64 for `solvers`, 2 for the other analyses).
    #[arg(long, value_parser = positive)]
    pub batch_size: Option<usize>,
}

impl BatchArgs {
    /// The `input` file, else the first `batch_size` (else `default_size`) training images
    /// of `dataset` (default: the preset's, else CIFAR-10); checked against the model.
    /// Returns the batch and where it came from (for messages).
    pub(super) fn load(
        &self,
        model: &crate::model::Model,
        preset: Option<&crate::model::presets::Preset>,
        default_size: usize,
    ) -> Result<(Tensor, Vec<u32>, PathBuf)> {
        let input = self.input.as_deref();
        let (x, y) = match input {
            Some(p) => super::grad::read_batch(p)?,
            None => {
                let kind = match (self.dataset, preset) {
                    (Some(k), _) => k,
                    (None, Some(p)) => p.train.dataset.parse()?,
                    (None, None) => DatasetKind::Cifar10,
                };
                let n = self.batch_size.unwrap_or(default_size);
                let pipeline = Pipeline::of(model, preset)?;
                default_batch(kind, self.data_dir.as_deref(), n, pipeline)
                    .context("loading the default batch (or pass --input BATCH.safetensors)")?
            }
        };
        let source = input.map_or_else(|| PathBuf::from("(the default batch)"), Path::to_path_buf);
        check_batch(model, &x, &source)?;
        Ok((x, y, source))
    }
}

pub fn gdd(g: &Global, a: GddArgs) -> Result<()> {
    let (model, preset, _) = a.model.build(g.seed)?;
    let (x, y, _) = a.batch.load(&model, preset.as_ref(), 2)?;
    let algo = a.phases.resolve(preset.as_ref())?;
    algo.validate()?;
    let (t1, t2, beta) = (algo.t1, algo.t2, algo.beta);
    let reference = match a.id_variant.as_str() {
        "exact" => false,
        "reference" => true,
        v => anyhow::bail!("--id-variant {v}: expected `exact` or `reference`"),
    };
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let kernels = prepare(&model)?;
    let t = std::time::Instant::now();
    let bar = transient_bar(g.quiet);
    let rep = analyse(
        &model,
        &kernels,
        &x,
        &y,
        &GddConfig {
            algo: algo.clone(),
            coords: a.coords,
            seed: g.seed,
            transients: !a.no_transients,
        },
        &mut |done, total| match &bar {
            Some(b) => {
                b.set_length(total as u64);
                b.set_position(done as u64);
            }
            // plain lines when not on a terminal
            None if !g.quiet && (done == total || done % 10 == 0) => errln!(
                "transients: {done}/{total} truncated ID runs ({:.0} s)",
                t.elapsed().as_secs_f64()
            ),
            None => {}
        },
    )?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    write_tables(&a.out, &rep)?;
    figures(&a.out, &rep, model.blocks.len(), reference, g.quiet)?;
    if !g.quiet {
        outln!("static gradient analysis of {} samples (beta {beta}, T1 {t1}, T2 {t2}) in {:.1} s; loss {:.4}", y.len(), t.elapsed().as_secs_f64(), rep.loss);
        outln!(
            "{:<40} {:>12} {:>12} {:>12}",
            "tensor",
            "cos ID-exact",
            "cos ID-ref",
            "rel err"
        );
        for r in rep.tensors.iter().filter(|r| r.is_weight) {
            outln!(
                "{:<40} {:>12.6} {:>12.6} {:>12.3e}",
                r.name,
                r.vs_id_exact.cosine,
                r.vs_id_reference.cosine,
                r.vs_id_exact.rel_error
            );
        }
        outln!(
            "total relative EP-ID error: {:.3e} (exact), {:.3e} (reference)",
            rep.total_rel_error_exact,
            rep.total_rel_error_reference
        );
    }
    if !a.betas.is_empty() {
        let rows = beta_sweep(&model, &kernels, &x, &y, &algo, &a.betas)?;
        let mut csv = String::from("beta,total_rel_error");
        let names: Vec<String> = rows[0].per_weight.iter().map(|(n, _)| n.clone()).collect();
        for n in &names {
            write!(csv, ",{n}")?;
        }
        csv.push('\n');
        for r in &rows {
            let (b, tot) = (r.beta, r.total);
            write!(csv, "{b},{tot}")?;
            for (_, e) in &r.per_weight {
                write!(csv, ",{e}")?;
            }
            csv.push('\n');
            if !g.quiet {
                outln!("beta {b}: EP-ID relative error {tot:.3e}");
            }
        }
        crate::io::atomic_write(&a.out.join("beta_sweep.csv"), csv.as_bytes())?;
        let mut series = vec![SweepSeries {
            x: Vec::new(),
            name: "all tensors".into(),
            y: rows.iter().map(|r| r.total).collect(),
        }];
        series.extend(names.iter().enumerate().map(|(i, n)| SweepSeries {
            x: Vec::new(),
            name: n.clone(),
            y: rows.iter().map(|r| r.per_weight[i].1).collect(),
        }));
        let mut fig = SweepFigure::vs_beta(rows.iter().map(|r| r.beta as f64).collect(), series);
        fig.title = format!("EP vs ID-exact against beta (T2 {t2})");
        fig.save(&a.out.join("beta_sweep.png"))?;
        fig.save(&a.out.join("beta_sweep.svg"))?;
    }
    if !a.t2s.is_empty() {
        let rows = t2_sweep(&model, &kernels, &x, &y, &algo, &a.t2s)?;
        let mut csv = String::from("t2,rel_error_id_exact,rel_error_id_reference\n");
        for (t, e, r) in &rows {
            writeln!(csv, "{t},{e},{r}")?;
            if !g.quiet {
                outln!("T2 {t}: EP-ID relative error {e:.3e} (exact), {r:.3e} (reference)");
            }
        }
        crate::io::atomic_write(&a.out.join("t2_sweep.csv"), csv.as_bytes())?;
        let series = vec![
            SweepSeries {
                x: Vec::new(),
                name: "vs ID-exact".into(),
                y: rows.iter().map(|r| r.1).collect(),
            },
            SweepSeries {
                x: Vec::new(),
                name: "vs ID-reference".into(),
                y: rows.iter().map(|r| r.2).collect(),
            },
        ];
        let mut fig = SweepFigure::vs_t2(rows.iter().map(|r| r.0 as f64).collect(), series);
        fig.title = format!("EP vs ID against T2 (beta {beta})");
        fig.save(&a.out.join("t2_sweep.png"))?;
        fig.save(&a.out.join("t2_sweep.svg"))?;
    }
    outln!("wrote {}", a.out.display());
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct PlotArgs {
    /// Run directories (each with a metrics.jsonl).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Output figure (.png or .svg).
    #[arg(long, default_value = "training.png")]
    pub out: PathBuf,
}

pub fn plot(g: &Global, a: PlotArgs) -> Result<()> {
    let warnings = plot_runs(&a.runs, &a.out)?;
    if !g.quiet {
        for w in warnings {
            eprintln!("warning: {w}");
        }
    }
    println!("wrote {}", a.out.display());
    Ok(())
}
