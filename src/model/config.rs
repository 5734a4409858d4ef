//! Model description (TOML), validated into per-block layer shapes (SPEC §1, §6).
//!
//! A block is described like the reference's `blocks_config`: `channels` lists the
//! channel chain of its convolutions **including the block input** (`[C_in, C_0, C_1, …]`:
//! the first conv is the feedforward conv `F_k`, the others are conv couplings), `pools`
//! has one character per conv (`m` = 2x2 max-pool after it, `-` = none), `fc` lists the
//! dense layers after the convs.

use crate::core::ConvAlgo;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// Normalisation in the feedforward transform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// BatchNorm2d (eps 1e-5, momentum 0.1, γ = 1, β = 0).
    #[default]
    Batchnorm,
    /// No normalisation; the feedforward conv has a bias.
    None,
}

/// The kind of energy-based block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    /// Deep Hopfield network (SPEC §1.2): conv couplings, then dense layers `fc`.
    #[default]
    Hopfield,
    /// Deep resistive network: dense layers `fc` of voltage nodes joined by conductances,
    /// hidden layers of ideal diodes, a linear output layer; the block input enters as
    /// voltage sources `gain·[u, −u]`.
    Resistive,
}

/// The cost the model is trained on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CostKind {
    /// Linear readout on the last layer and softmax cross-entropy (SPEC §1).
    #[default]
    CrossEntropy,
    /// `½‖s_n − onehot(y)‖²` on the last layer itself (no readout; it needs `classes` units).
    SquaredError,
}

/// One stage: feedforward transform + energy-based block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockConfig {
    /// `hopfield` (default) or `resistive`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub kind: BlockKind,
    /// Conv channel chain including the block input: `[C_in, C_0, C_1, …]`. Resistive
    /// blocks: `[C_in]` (no feedforward conv: the block input is the stage input) or
    /// `[C_in, C_0]` (one feedforward conv).
    pub channels: Vec<usize>,
    /// One character per conv: `m` (2x2/2 max-pool) or `-`.
    pub pools: String,
    /// Kernel size of every conv (default 3).
    #[serde(default = "default_kernel")]
    pub kernel: usize,
    /// Zero padding of every conv (default 1).
    #[serde(default = "default_padding")]
    pub padding: usize,
    /// Dense layer widths after the convs (resistive blocks: every layer, the last being the
    /// output; hidden widths even, half of the diodes pointing each way).
    #[serde(default)]
    pub fc: Vec<usize>,
    /// Resistive blocks: gain of the input voltage sources (default 1).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "short_f32::option::serialize"
    )]
    pub gain: Option<f32>,
    /// Resistive blocks: feed the input as `[u, −u]` (default true), which gives signed
    /// effective weights from non-negative conductances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
    #[serde(default)]
    pub norm: Norm,
    /// Pool after the normalisation instead of before it.
    #[serde(default)]
    pub norm_pool: bool,
    /// Apply the hard sigmoid to the block's last layer too.
    #[serde(default)]
    pub clamp_last: bool,
    /// Per-block activation slope (overrides the model's `alpha`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "short_f32::option::serialize"
    )]
    pub alpha: Option<f32>,
}

impl BlockConfig {
    /// A block of 3x3/pad-1 convs with the given channel chain (input included), pools
    /// (`m`/`-` per conv), dense layers, normalisation and last-layer clamping.
    pub fn new(
        channels: &[usize],
        pools: &str,
        fc: &[usize],
        norm: Norm,
        clamp_last: bool,
    ) -> Self {
        BlockConfig {
            kind: BlockKind::Hopfield,
            channels: channels.to_vec(),
            pools: pools.into(),
            kernel: 3,
            padding: 1,
            fc: fc.to_vec(),
            norm,
            norm_pool: false,
            clamp_last,
            alpha: None,
            gain: None,
            duplicate: None,
        }
    }

    /// A resistive block with dense `layers` (the last is the output), input `gain`, the
    /// input duplicated, and no feedforward conv (`channels = [C_in]`) or one (`[C_in, C_0]`
    /// with `pools` and `norm`).
    pub fn resistive(
        channels: &[usize],
        pools: &str,
        norm: Norm,
        layers: &[usize],
        gain: f32,
    ) -> Self {
        BlockConfig {
            kind: BlockKind::Resistive,
            gain: Some(gain),
            duplicate: Some(true),
            ..BlockConfig::new(channels, pools, layers, norm, false)
        }
    }
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn default_kernel() -> usize {
    3
}
fn default_padding() -> usize {
    1
}

/// A whole ff-EBM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Input image `[C, H, W]`.
    pub input: [usize; 3],
    /// Number of classes of the linear readout.
    pub classes: usize,
    /// Activation slope α of the hard sigmoid `clamp(α·x, 0, 1)`.
    #[serde(serialize_with = "short_f32::serialize")]
    pub alpha: f32,
    /// Variance scale V of the GOE conv initialisation.
    #[serde(serialize_with = "short_f32::serialize")]
    pub init_v: f32,
    pub blocks: Vec<BlockConfig>,
    /// Convolution algorithm (`auto` = Winograd where it applies).
    #[serde(default)]
    pub conv_algo: ConvAlgo,
    /// `cross-entropy` (a linear readout, default) or `squared-error` (on the last layer).
    #[serde(default, skip_serializing_if = "is_default")]
    pub cost: CostKind,
}

/// Per-sample shape of a layer: a channels-last map `[H, W, C]` or a dense vector `[F]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerShape {
    Map { h: usize, w: usize, c: usize },
    Dense { f: usize },
}

impl LayerShape {
    pub fn numel(&self) -> usize {
        match *self {
            LayerShape::Map { h, w, c } => h * w * c,
            LayerShape::Dense { f } => f,
        }
    }

    /// Batched tensor shape (`[B,H,W,C]` or `[B,F]`).
    pub fn batched(&self, b: usize) -> Vec<usize> {
        match *self {
            LayerShape::Map { h, w, c } => vec![b, h, w, c],
            LayerShape::Dense { f } => vec![b, f],
        }
    }
}

/// Coupling `i` between layers `i-1` and `i` of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CouplingKind {
    /// Conv `C_in → C_out` on maps of `h × w`, optionally max-pooled.
    Conv {
        cin: usize,
        cout: usize,
        h: usize,
        w: usize,
        pool: bool,
    },
    /// Dense `F_in → F_out` (a map input is flattened C-major).
    Dense { fin: usize, fout: usize },
    /// Conductances `F_in → F_out` of a resistive block (`F_in` counts the duplicated input
    /// voltages for the block's input coupling).
    Resistive { fin: usize, fout: usize },
}

/// The derived structure of one block.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockLayout {
    pub kind: BlockKind,
    pub input: LayerShape,
    /// Whether the feedforward transform has a conv (resistive blocks may have none: then
    /// `ff_cout = ff_cin` and the block input is the stage input).
    pub ff_conv: bool,
    /// Feedforward conv `C_in → C_0` on the input map, pooled or not.
    pub ff_cin: usize,
    pub ff_cout: usize,
    pub ff_pool: bool,
    pub kernel: usize,
    pub padding: usize,
    pub norm: Norm,
    pub norm_pool: bool,
    /// Shapes of `s_0 … s_{n−1}`.
    pub layers: Vec<LayerShape>,
    /// Hopfield: `couplings[i-1]` couples layers `i-1` and `i`. Resistive: `couplings[i]`
    /// feeds layer `i` (from the input voltages for `i = 0`).
    pub couplings: Vec<CouplingKind>,
    pub alpha: f32,
    pub clamp_last: bool,
    /// Resistive blocks: input gain and duplication.
    pub gain: f32,
    pub duplicate: bool,
}

impl BlockLayout {
    /// Shape of the drive `u = F(x)` (the block input after the feedforward transform).
    pub fn drive_shape(&self) -> LayerShape {
        match (self.kind, self.ff_conv) {
            (BlockKind::Resistive, false) => self.input,
            _ => self.layers[0],
        }
    }
}

impl ModelConfig {
    /// Reads a TOML model description.
    pub fn from_toml(text: &str) -> Result<Self> {
        let cfg: ModelConfig = toml::from_str(text).context("invalid model description")?;
        cfg.layouts()?;
        Ok(cfg)
    }

    /// Validates the description and derives every block's layout.
    pub fn layouts(&self) -> Result<Vec<BlockLayout>> {
        ensure!(
            !self.blocks.is_empty(),
            "model: `blocks` is empty; an ff-EBM needs at least one block"
        );
        ensure!(self.classes >= 1, "model: `classes` must be at least 1");
        ensure!(
            self.alpha > 0.0 && self.alpha.is_finite(),
            "model: `alpha` = {} must be a positive number",
            self.alpha
        );
        let [c, h, w] = self.input;
        let mut input = LayerShape::Map { h, w, c };
        let mut out = Vec::with_capacity(self.blocks.len());
        for (k, b) in self.blocks.iter().enumerate() {
            let layout = block_layout(k, b, input, self.alpha)
                .with_context(|| format!("model: blocks[{k}]"))?;
            input = *layout.layers.last().expect("at least one layer");
            out.push(layout);
        }
        let last = out.last().expect("non-empty");
        if self.cost == CostKind::SquaredError {
            let units = last.layers.last().expect("a layer").numel();
            ensure!(
                last.kind == BlockKind::Resistive,
                "model: `cost = \"squared-error\"` acts on the last layer, which must be a resistive block's linear output (a hopfield block's last layer has no quadratic cost term); use `cross-entropy`"
            );
            ensure!(
                units == self.classes,
                "model: `cost = \"squared-error\"` needs the last layer to have one unit per class: it has {units}, `classes` = {}",
                self.classes
            );
        }
        Ok(out)
    }

    /// Whether the model has a linear readout (cross-entropy cost).
    pub fn has_readout(&self) -> bool {
        self.cost == CostKind::CrossEntropy
    }

    /// Input width of the readout (flattened last layer of the last block).
    pub fn readout_inputs(&self) -> Result<usize> {
        Ok(self
            .layouts()?
            .last()
            .expect("non-empty")
            .layers
            .last()
            .expect("non-empty")
            .numel())
    }
}

fn block_layout(k: usize, b: &BlockConfig, input: LayerShape, alpha: f32) -> Result<BlockLayout> {
    match b.kind {
        BlockKind::Hopfield => {
            ensure!(
                b.gain.is_none() && b.duplicate.is_none(),
                "`gain` and `duplicate` describe the input of resistive blocks; this block is `hopfield` (set `kind = \"resistive\"`)"
            );
            hopfield_layout(k, b, input, alpha)
        }
        BlockKind::Resistive => resistive_layout(k, b, input, alpha),
    }
}

/// A resistive block: an optional feedforward conv, then dense layers `fc` of voltage nodes.
fn resistive_layout(
    k: usize,
    b: &BlockConfig,
    input: LayerShape,
    alpha: f32,
) -> Result<BlockLayout> {
    ensure!(
        !b.clamp_last && b.alpha.is_none(),
        "`clamp_last` and `alpha` describe hard-sigmoid layers; a resistive block has diodes and a linear output"
    );
    ensure!(
        !b.fc.is_empty(),
        "a resistive block needs its layers in `fc` (hidden widths, then the output width)"
    );
    for (j, &f) in b.fc.iter().enumerate() {
        ensure!(f > 0, "`fc`[{j}] must be positive");
        if j + 1 < b.fc.len() {
            ensure!(
                f % 2 == 0,
                "`fc`[{j}] = {f}: a hidden layer of diodes needs an even width (half of the diodes conduct each way)"
            );
        }
    }
    let gain = b.gain.unwrap_or(1.0);
    ensure!(
        gain > 0.0 && gain.is_finite(),
        "`gain` = {gain} must be a positive number"
    );
    let duplicate = b.duplicate.unwrap_or(true);
    let mut layout = match b.channels.len() {
        1 => {
            let width = match input {
                LayerShape::Map { c, .. } => c,
                LayerShape::Dense { f } => f,
            };
            ensure!(
                b.channels[0] == width,
                "`channels` = {:?} but the block input has {width} {} (from {})",
                b.channels,
                if matches!(input, LayerShape::Map { .. }) { "channels" } else { "units" },
                if k == 0 { "the image" } else { "the previous block's last layer" }
            );
            BlockLayout {
                kind: BlockKind::Resistive,
                input,
                ff_conv: false,
                ff_cin: width,
                ff_cout: width,
                ff_pool: false,
                kernel: b.kernel,
                padding: b.padding,
                norm: Norm::None,
                norm_pool: false,
                layers: Vec::new(),
                couplings: Vec::new(),
                alpha,
                clamp_last: false,
                gain,
                duplicate,
            }
        }
        2 => {
            let conv_only = BlockConfig {
                kind: BlockKind::Hopfield,
                fc: Vec::new(),
                gain: None,
                duplicate: None,
                ..b.clone()
            };
            BlockLayout {
                kind: BlockKind::Resistive,
                gain,
                duplicate,
                ..hopfield_layout(k, &conv_only, input, alpha)?
            }
        }
        _ => bail!(
            "`channels` = {:?}: a resistive block has at most one (feedforward) conv; give `[C_in]` or `[C_in, C_0]`",
            b.channels
        ),
    };
    ensure!(
        layout.ff_conv || b.norm == Norm::None,
        "`norm = batchnorm` needs a feedforward conv (`channels = [C_in, C_0]`); set `norm = \"none\"`"
    );
    let mut fin = layout.drive_shape().numel() * if duplicate { 2 } else { 1 };
    layout.layers.clear();
    layout.couplings.clear();
    for &f in &b.fc {
        layout
            .couplings
            .push(CouplingKind::Resistive { fin, fout: f });
        layout.layers.push(LayerShape::Dense { f });
        fin = f;
    }
    Ok(layout)
}

/// A Hopfield block: the feedforward conv, conv couplings, then dense couplings.
fn hopfield_layout(
    k: usize,
    b: &BlockConfig,
    input: LayerShape,
    alpha: f32,
) -> Result<BlockLayout> {
    let LayerShape::Map { h, w, c } = input else {
        bail!("the input of a hopfield block must be a map (its feedforward transform is a conv), but the previous block ends with a dense layer")
    };
    ensure!(
        b.channels.len() >= 2,
        "`channels` = {:?} needs the input channels and at least one conv",
        b.channels
    );
    ensure!(
        b.channels[0] == c,
        "`channels[0]` = {} but the block input has {c} channels (from {})",
        b.channels[0],
        if k == 0 {
            "the image"
        } else {
            "the previous block's last layer"
        }
    );
    let nconv = b.channels.len() - 1;
    let pools: Vec<char> = b.pools.chars().collect();
    ensure!(
        pools.len() >= nconv,
        "`pools` = {:?} has {} entries for {nconv} convs (one of `m`/`-` per conv)",
        b.pools,
        pools.len()
    );
    let mut pool_flags = Vec::with_capacity(nconv);
    for (i, p) in pools.iter().take(nconv).enumerate() {
        pool_flags.push(match p {
            'm' => true,
            '-' => false,
            other => bail!("`pools`[{i}] = {other:?}: expected `m` (max-pool) or `-` (none)"),
        });
    }
    ensure!(
        b.kernel % 2 == 1 && b.kernel >= 1,
        "`kernel` = {} must be odd",
        b.kernel
    );
    ensure!(
        b.padding < b.kernel,
        "`padding` = {} must be smaller than the kernel {}",
        b.padding,
        b.kernel
    );
    let conv_out = |h: usize, w: usize, what: &str| -> Result<(usize, usize)> {
        let (oh, ow) = (
            (h + 2 * b.padding + 1).checked_sub(b.kernel),
            (w + 2 * b.padding + 1).checked_sub(b.kernel),
        );
        match (oh, ow) {
            (Some(oh), Some(ow)) if oh > 0 && ow > 0 => Ok((oh, ow)),
            _ => bail!(
                "{what}: a {}x{} map is too small for a {}x{} kernel with padding {}",
                h,
                w,
                b.kernel,
                b.kernel,
                b.padding
            ),
        }
    };
    let pooled = |h: usize, w: usize, pool: bool, what: &str| -> Result<(usize, usize)> {
        if pool {
            ensure!(h >= 2 && w >= 2, "{what}: cannot max-pool a {h}x{w} map");
            Ok((h / 2, w / 2))
        } else {
            Ok((h, w))
        }
    };
    let (mut ch, mut cw) = conv_out(h, w, "feedforward conv")?;
    (ch, cw) = pooled(ch, cw, pool_flags[0], "feedforward conv")?;
    let mut layers = vec![LayerShape::Map {
        h: ch,
        w: cw,
        c: b.channels[1],
    }];
    let mut couplings = Vec::new();
    for (i, &pool) in pool_flags.iter().enumerate().skip(1) {
        let (cin, cout) = (b.channels[i], b.channels[i + 1]);
        let what = format!("conv coupling {i}");
        let (oh, ow) = conv_out(ch, cw, &what)?;
        couplings.push(CouplingKind::Conv {
            cin,
            cout,
            h: ch,
            w: cw,
            pool,
        });
        (ch, cw) = pooled(oh, ow, pool, &what)?;
        layers.push(LayerShape::Map {
            h: ch,
            w: cw,
            c: cout,
        });
    }
    let mut fin = ch * cw * b.channels[nconv];
    for (j, &f) in b.fc.iter().enumerate() {
        ensure!(f > 0, "`fc`[{j}] must be positive");
        couplings.push(CouplingKind::Dense { fin, fout: f });
        layers.push(LayerShape::Dense { f });
        fin = f;
    }
    let alpha = b.alpha.unwrap_or(alpha);
    ensure!(
        alpha > 0.0 && alpha.is_finite(),
        "`alpha` = {alpha} must be a positive number"
    );
    Ok(BlockLayout {
        kind: BlockKind::Hopfield,
        input,
        ff_conv: true,
        ff_cin: b.channels[0],
        ff_cout: b.channels[1],
        ff_pool: pool_flags[0],
        kernel: b.kernel,
        padding: b.padding,
        norm: b.norm,
        norm_pool: b.norm_pool,
        layers,
        couplings,
        alpha,
        clamp_last: b.clamp_last,
        gain: 1.0,
        duplicate: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(channels: &[usize], pools: &str, fc: &[usize]) -> BlockConfig {
        BlockConfig::new(channels, pools, fc, Norm::Batchnorm, false)
    }

    #[test]
    fn derives_shapes_of_a_two_block_model() {
        let cfg = ModelConfig {
            input: [3, 32, 32],
            classes: 10,
            alpha: 1.0,
            init_v: 1e-4,
            blocks: vec![
                block(&[3, 128, 256, 256], "mmm", &[]),
                block(&[256, 512, 512], "mm", &[256]),
            ],
            conv_algo: ConvAlgo::Auto,
            cost: Default::default(),
        };
        let l = cfg.layouts().unwrap();
        assert_eq!(
            l[0].layers,
            vec![
                LayerShape::Map {
                    h: 16,
                    w: 16,
                    c: 128
                },
                LayerShape::Map { h: 8, w: 8, c: 256 },
                LayerShape::Map { h: 4, w: 4, c: 256 }
            ]
        );
        assert_eq!(
            l[1].couplings[0],
            CouplingKind::Conv {
                cin: 512,
                cout: 512,
                h: 2,
                w: 2,
                pool: true
            }
        );
        assert_eq!(
            l[1].couplings[1],
            CouplingKind::Dense {
                fin: 512,
                fout: 256
            }
        );
        assert_eq!(cfg.readout_inputs().unwrap(), 256);
    }

    #[test]
    fn rejects_bad_descriptions_with_the_key() {
        let mut cfg = ModelConfig {
            input: [3, 8, 8],
            classes: 10,
            alpha: 1.0,
            init_v: 1e-4,
            blocks: vec![block(&[1, 4], "m", &[])],
            conv_algo: ConvAlgo::Auto,
            cost: Default::default(),
        };
        let e = format!("{:#}", cfg.layouts().unwrap_err());
        assert!(
            e.contains("blocks[0]") && e.contains("`channels[0]` = 1"),
            "{e}"
        );
        cfg.blocks = vec![block(&[3, 4], "x", &[])];
        assert!(format!("{:#}", cfg.layouts().unwrap_err()).contains("`pools`[0] = 'x'"));
        cfg.blocks = vec![block(&[3, 4], "m", &[8]), block(&[4, 4], "-", &[])];
        assert!(format!("{:#}", cfg.layouts().unwrap_err()).contains("ends with a dense layer"));
        let e = ModelConfig::from_toml(
            "input = [3, 8, 8]\nclasses = 10\nalpha = 1.0\ninit_v = 1e-4\nblocks = []\nbogus = 1\n",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("unknown field `bogus`"), "{e:#}");
    }
}

/// Serialises an `f32` config value as the `f64` with the same shortest decimal form
/// (`0.2`, not `0.20000000298023224`), so written configs read as they were typed.
pub(crate) mod short_f32 {
    use serde::Serializer;

    fn widen(x: f32) -> f64 {
        format!("{x}").parse().unwrap_or(x as f64)
    }

    pub fn serialize<S: Serializer>(x: &f32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(widen(*x))
    }

    /// The same for an optional value (used with `skip_serializing_if = "Option::is_none"`).
    pub mod option {
        use serde::Serializer;

        pub fn serialize<S: Serializer>(x: &Option<f32>, s: S) -> Result<S::Ok, S::Error> {
            match x {
                Some(v) => s.serialize_some(&super::widen(*v)),
                None => s.serialize_none(),
            }
        }
    }
}
