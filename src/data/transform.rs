//! Per-image transforms: zero padding of small images, horizontal flip, random crop with
//! edge replication, normalisation, and the seeded randomness that drives them.
//!
//! All functions take and return planar `C × H × W` u8 images. The random draws of sample
//! `position` (its index in the epoch's order) in epoch `epoch` depend only on
//! `(seed, epoch, position)`: a ChaCha8 generator keyed by the seed, on stream `epoch`,
//! positioned at word `16·position`. So augmentation never depends on thread timing,
//! batch size or prefetching.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::kind::DatasetKind;

/// Domain tags so that shuffling, augmentation and validation splits draw independent
/// streams from the same user seed.
pub(crate) const DOMAIN_SHUFFLE: u64 = 0x5348_5546_464c_4531; // "SHUFFLE1"
pub(crate) const DOMAIN_AUGMENT: u64 = 0x4155_474d_454e_5431; // "AUGMENT1"
pub(crate) const DOMAIN_VALSPLIT: u64 = 0x5641_4c53_504c_4931; // "VALSPLI1"

/// A ChaCha8 generator keyed by `(seed, domain)` on stream `stream`.
pub(crate) fn keyed_rng(seed: u64, domain: u64, stream: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&domain.to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(stream);
    rng
}

/// Training augmentation settings. SPEC §4 for CIFAR: random horizontal flip, then a
/// random 32x32 crop of the image padded by 4 pixels with edge replication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    /// Flip horizontally with probability 1/2.
    pub flip: bool,
    /// Pad by this many pixels (edge replication) and crop back at a uniformly random
    /// offset; 0 disables cropping.
    pub crop_padding: usize,
}

/// The random choices for one sample: flip or not, and the crop offsets (top `dy`, left
/// `dx`, each in `0..=2·padding`; `dy = dx = padding` is the un-shifted image).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AugmentDraw {
    /// Whether to flip horizontally.
    pub flip: bool,
    /// Crop offset from the top of the padded image.
    pub dy: usize,
    /// Crop offset from the left of the padded image.
    pub dx: usize,
}

impl Augment {
    /// No augmentation.
    pub const NONE: Augment = Augment {
        flip: false,
        crop_padding: 0,
    };

    /// Flip + crop with padding 4 (SPEC §4).
    pub const STANDARD: Augment = Augment {
        flip: true,
        crop_padding: 4,
    };

    /// The default training augmentation of a dataset: [`Augment::STANDARD`] for CIFAR and
    /// ImageNet32; none for the MNIST family (flipping digits or characters changes them).
    pub fn default_for(kind: DatasetKind) -> Augment {
        if kind.is_mnist_family() {
            Augment::NONE
        } else {
            Augment::STANDARD
        }
    }

    /// True if this does nothing.
    pub fn is_none(&self) -> bool {
        !self.flip && self.crop_padding == 0
    }

    /// The draws of sample `position` in epoch `epoch`: a pure function of its arguments.
    /// Order of draws: flip, then crop top, then crop left.
    pub fn draw(&self, seed: u64, epoch: u64, position: usize) -> AugmentDraw {
        let p = self.crop_padding;
        if self.is_none() {
            return AugmentDraw {
                flip: false,
                dy: p,
                dx: p,
            };
        }
        let mut rng = keyed_rng(seed, DOMAIN_AUGMENT, epoch);
        rng.set_word_pos(position as u128 * 16);
        let flip = rng.gen::<u32>() & 1 == 1;
        let (dy, dx) = if p > 0 {
            let m = 2 * p as u32;
            (rng.gen_range(0..=m) as usize, rng.gen_range(0..=m) as usize)
        } else {
            (0, 0)
        };
        AugmentDraw {
            flip: self.flip && flip,
            dy,
            dx,
        }
    }
}

/// Zero-pad (raw value 0) an image to `out_h × out_w`, centred: `(out_h - h) / 2` rows on
/// top, the rest at the bottom, and likewise for columns.
pub fn pad_center(img: &[u8], shape: [usize; 3], out_h: usize, out_w: usize) -> Vec<u8> {
    let [c, h, w] = shape;
    assert!(
        out_h >= h && out_w >= w,
        "pad_center: target smaller than image"
    );
    let (top, left) = ((out_h - h) / 2, (out_w - w) / 2);
    let mut out = vec![0u8; c * out_h * out_w];
    for ch in 0..c {
        for y in 0..h {
            let src = &img[(ch * h + y) * w..][..w];
            out[(ch * out_h + top + y) * out_w + left..][..w].copy_from_slice(src);
        }
    }
    out
}

/// Mirror an image left-right.
pub fn hflip(img: &[u8], shape: [usize; 3]) -> Vec<u8> {
    let [_, _, w] = shape;
    let mut out = img.to_vec();
    for row in out.chunks_exact_mut(w) {
        row.reverse();
    }
    out
}

/// Crop an `h × w` window at offset `(dy, dx)` out of the image padded by `pad` pixels on
/// every side with edge replication: output pixel `(y, x)` is input pixel
/// `(clamp(y + dy - pad, 0, h-1), clamp(x + dx - pad, 0, w-1))`.
pub fn crop_edge(img: &[u8], shape: [usize; 3], pad: usize, dy: usize, dx: usize) -> Vec<u8> {
    let [c, h, w] = shape;
    let clamp = |v: usize, n: usize| v.saturating_sub(pad).min(n - 1);
    let mut out = vec![0u8; c * h * w];
    for ch in 0..c {
        for y in 0..h {
            let sy = clamp(y + dy, h);
            let src = &img[(ch * h + sy) * w..][..w];
            let dst = &mut out[(ch * h + y) * w..][..w];
            for (x, d) in dst.iter_mut().enumerate() {
                *d = src[clamp(x + dx, w)];
            }
        }
    }
    out
}

/// Apply the transforms of one sample, in order: zero-pad to `out` size, flip, crop.
pub fn prepare(
    img: &[u8],
    shape: [usize; 3],
    out: [usize; 3],
    augment: &Augment,
    draw: &AugmentDraw,
) -> Vec<u8> {
    let mut x = if shape[1] != out[1] || shape[2] != out[2] {
        pad_center(img, shape, out[1], out[2])
    } else {
        img.to_vec()
    };
    if draw.flip {
        x = hflip(&x, out);
    }
    if augment.crop_padding > 0 {
        x = crop_edge(&x, out, augment.crop_padding, draw.dy, draw.dx);
    }
    x
}
