//! Which datasets exist, their shapes, normalisation constants, class names, default file
//! names and provenance.

use std::fmt;
use std::str::FromStr;

use super::error::DataError;

/// A supported dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DatasetKind {
    /// CIFAR-10, binary version: 32x32 RGB, 10 classes.
    #[serde(rename = "cifar10")]
    Cifar10,
    /// CIFAR-100, binary version: 32x32 RGB, 100 fine classes (coarse labels ignored).
    #[serde(rename = "cifar100")]
    Cifar100,
    /// Downsampled ImageNet 32x32 (Chrabaszcz et al. 2017): 32x32 RGB, 1000 classes.
    #[serde(rename = "imagenet32")]
    ImageNet32,
    /// MNIST digits, IDX files: 28x28 grayscale, 10 classes.
    #[serde(rename = "mnist")]
    Mnist,
    /// Fashion-MNIST, IDX files: 28x28 grayscale, 10 classes.
    #[serde(rename = "fashion-mnist")]
    FashionMnist,
    /// Kuzushiji-MNIST, IDX files: 28x28 grayscale, 10 classes.
    #[serde(rename = "kmnist")]
    Kmnist,
}

/// Which official split to load. For ImageNet32, `Test` is the official validation set
/// (`val_data`), which is what the literature reports as "test".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Split {
    /// The official training set.
    #[serde(rename = "train")]
    Train,
    /// The official test set (ImageNet32: `val_data`).
    #[serde(rename = "test")]
    Test,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// Per-channel normalisation applied after scaling raw bytes to `[0, 1]`:
/// `x = (byte / 255 - mean[c]) / std[c]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalization {
    /// Per-channel mean, in `[0, 1]` units.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, in `[0, 1]` units.
    pub std: Vec<f32>,
}

impl Normalization {
    /// Normalise one raw byte of channel `c`.
    #[inline]
    pub fn apply(&self, c: usize, byte: u8) -> f32 {
        (byte as f32 / 255.0 - self.mean[c]) / self.std[c]
    }

    /// The identity-like normalisation (`byte / 255`) for `channels` channels.
    pub fn unit(channels: usize) -> Self {
        Normalization {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }
}

const CIFAR10_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

#[rustfmt::skip]
const CIFAR100_NAMES: [&str; 100] = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
];

const MNIST_NAMES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

const FASHION_NAMES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

const KMNIST_NAMES: [&str; 10] = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"];

impl DatasetKind {
    /// Every supported dataset.
    pub const ALL: [DatasetKind; 6] = [
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
        DatasetKind::ImageNet32,
        DatasetKind::Mnist,
        DatasetKind::FashionMnist,
        DatasetKind::Kmnist,
    ];

    /// Short machine name (`cifar10`, `cifar100`, `imagenet32`, `mnist`, `fashion-mnist`,
    /// `kmnist`); also the default sub-folder of a data root.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::ImageNet32 => "imagenet32",
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Kmnist => "kmnist",
        }
    }

    /// Human-readable name, e.g. "CIFAR-10".
    pub fn display_name(self) -> &'static str {
        match self {
            DatasetKind::Cifar10 => "CIFAR-10",
            DatasetKind::Cifar100 => "CIFAR-100",
            DatasetKind::ImageNet32 => "ImageNet32",
            DatasetKind::Mnist => "MNIST",
            DatasetKind::FashionMnist => "Fashion-MNIST",
            DatasetKind::Kmnist => "KMNIST",
        }
    }

    /// Number of classes.
    pub fn num_classes(self) -> usize {
        match self {
            DatasetKind::Cifar100 => 100,
            DatasetKind::ImageNet32 => 1000,
            _ => 10,
        }
    }

    /// Images in the official training split (ImageNet32: 1 281 167).
    pub fn train_images(self) -> usize {
        match self {
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => 50_000,
            DatasetKind::ImageNet32 => 1_281_167,
            _ => 60_000,
        }
    }

    /// True for the 28x28 grayscale IDX datasets.
    pub fn is_mnist_family(self) -> bool {
        matches!(
            self,
            DatasetKind::Mnist | DatasetKind::FashionMnist | DatasetKind::Kmnist
        )
    }

    /// Shape `[C, H, W]` of the images as stored in the files.
    pub fn stored_shape(self) -> [usize; 3] {
        if self.is_mnist_family() {
            [1, 28, 28]
        } else {
            [3, 32, 32]
        }
    }

    /// Shape `[C, H, W]` of the network input: every dataset is fed as 32x32
    /// (28x28 images are zero-padded, see the module docs).
    pub fn input_shape(self) -> [usize; 3] {
        [self.stored_shape()[0], 32, 32]
    }

    /// The normalisation of SPEC §4: CIFAR-10 and CIFAR-100 share mean
    /// (0.4914, 0.4822, 0.4465) and std 3×(0.2023, 0.1994, 0.2010); ImageNet32 uses mean
    /// (0.485, 0.456, 0.406) and std 1.5×(0.229, 0.224, 0.225); the MNIST family uses the
    /// MNIST constants mean 0.1307, std 0.3081.
    pub fn normalization(self) -> Normalization {
        match self {
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => Normalization {
                mean: vec![0.4914, 0.4822, 0.4465],
                std: vec![3.0 * 0.2023, 3.0 * 0.1994, 3.0 * 0.2010],
            },
            DatasetKind::ImageNet32 => Normalization {
                mean: vec![0.485, 0.456, 0.406],
                std: vec![1.5 * 0.229, 1.5 * 0.224, 1.5 * 0.225],
            },
            _ => Normalization {
                mean: vec![0.1307],
                std: vec![0.3081],
            },
        }
    }

    /// Class names in label order, where known (`None` for ImageNet32, whose class order
    /// is that of the downsampled release, not of ILSVRC synset ids).
    pub fn class_names(self) -> Option<&'static [&'static str]> {
        match self {
            DatasetKind::Cifar10 => Some(&CIFAR10_NAMES),
            DatasetKind::Cifar100 => Some(&CIFAR100_NAMES),
            DatasetKind::ImageNet32 => None,
            DatasetKind::Mnist => Some(&MNIST_NAMES),
            DatasetKind::FashionMnist => Some(&FASHION_NAMES),
            DatasetKind::Kmnist => Some(&KMNIST_NAMES),
        }
    }

    /// Where the dataset officially comes from (page or archive URL).
    pub fn source_url(self) -> &'static str {
        match self {
            DatasetKind::Cifar10 => "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            DatasetKind::Cifar100 => "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
            DatasetKind::ImageNet32 => {
                "https://image-net.org/download-images (Downsampled ImageNet 32x32, login required)"
            }
            DatasetKind::Mnist => "https://ossci-datasets.s3.amazonaws.com/mnist/",
            DatasetKind::FashionMnist => {
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
            }
            DatasetKind::Kmnist => "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        }
    }

    /// What to tell a user whose files are missing or corrupt.
    pub fn advice(self) -> String {
        let how = match self {
            DatasetKind::ImageNet32 => {
                "there is no automatic download: place train_data_batch_1..10 and val_data \
                 (pickle, or .npz with the same keys) in the dataset folder"
            }
            _ => {
                "fetch it with `--download` (verified by checksum, into the cache folder), or \
                 point `--data-dir`/FFEBM_DATA at a folder holding the official files"
            }
        };
        format!(
            "{} comes from {}; {how}.",
            self.display_name(),
            self.source_url()
        )
    }

    /// Like [`DatasetKind::advice`], for a command that cannot download: only where the
    /// dataset comes from and that `--data-dir`/FFEBM_DATA must point at it.
    pub fn offline_advice(self) -> String {
        format!(
            "{} comes from {}; point `--data-dir` (or FFEBM_DATA) at a folder holding its files.",
            self.display_name(),
            self.source_url()
        )
    }

    /// Default file names of a split, relative to the dataset folder. For the MNIST family
    /// these are the uncompressed names; a `.gz` sibling is used when present.
    pub fn default_files(self, split: Split) -> Vec<String> {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        match (self, split) {
            (DatasetKind::Cifar10, Split::Train) => {
                (1..=5).map(|i| format!("data_batch_{i}.bin")).collect()
            }
            (DatasetKind::Cifar10, Split::Test) => s(&["test_batch.bin"]),
            (DatasetKind::Cifar100, Split::Train) => s(&["train.bin"]),
            (DatasetKind::Cifar100, Split::Test) => s(&["test.bin"]),
            (DatasetKind::ImageNet32, Split::Train) => {
                (1..=10).map(|i| format!("train_data_batch_{i}")).collect()
            }
            (DatasetKind::ImageNet32, Split::Test) => s(&["val_data"]),
            (_, Split::Train) => s(&["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]),
            (_, Split::Test) => s(&["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = DataError;

    /// Accepts the machine names and common spellings, case-insensitively
    /// (`cifar-10`, `CIFAR10`, `fashion_mnist`, `fmnist`, `imagenet-32`, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key: String = s
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        Ok(match key.as_str() {
            "cifar10" => DatasetKind::Cifar10,
            "cifar100" => DatasetKind::Cifar100,
            "imagenet32" | "downsampledimagenet32" => DatasetKind::ImageNet32,
            "mnist" => DatasetKind::Mnist,
            "fashionmnist" | "fmnist" => DatasetKind::FashionMnist,
            "kmnist" | "kuzushijimnist" => DatasetKind::Kmnist,
            _ => {
                return Err(DataError::Config(format!(
                    "unknown dataset `{s}`; known: cifar10, cifar100, imagenet32, mnist, \
                     fashion-mnist, kmnist"
                )))
            }
        })
    }
}

impl FromStr for Split {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "test" | "val" => Ok(Split::Test),
            _ => Err(DataError::Config(format!(
                "unknown split `{s}`; expected train or test"
            ))),
        }
    }
}
