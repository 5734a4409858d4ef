//! Issue 13, item 11: a checkpoint carries a checksum of its contents; a flipped byte
//! anywhere in its tensors or its metadata is an error naming the file.

use crate::common::TINY_MODEL_TOML;
use crate::data_util::TempDir;
use ffebm::model::{Model, ModelConfig};
use ffebm::train::checkpoint::{load_checkpoint, save_checkpoint, LoopState};
use ffebm::train::optim::{OptimConfig, Optimizer};

fn model() -> Model {
    Model::new(ModelConfig::from_toml(TINY_MODEL_TOML).unwrap(), 4).unwrap()
}

/// The byte offset where the tensor data starts (after the 8-byte length and the header).
fn data_start(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

#[test]
fn a_flipped_byte_in_a_checkpoint_is_an_error_naming_the_file() {
    let t = TempDir::new("ckpt-sum");
    let path = t.join("checkpoint_last.safetensors");
    let m = model();
    let opt = Optimizer::new(OptimConfig::default(), &m);
    let state = LoopState {
        epoch: 1,
        step: 12,
        ..Default::default()
    };
    save_checkpoint(&path, &m, &opt, &state, "seed = 0\n# lr = 0.001\n", None).unwrap();
    let good = std::fs::read(&path).unwrap();
    let load = || {
        let mut m2 = model();
        let mut o2 = Optimizer::new(OptimConfig::default(), &m2);
        load_checkpoint(&path, &mut m2, &mut o2).map(|s| (s, m2))
    };
    let (s, m2) = load().unwrap();
    assert_eq!(s, state);
    assert_eq!(m2, m);
    // a byte of tensor data: the first weight, the middle, the last byte of the file
    let start = data_start(&good);
    for at in [start + 1, (start + good.len()) / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        std::fs::write(&path, &bad).unwrap();
        let e = format!("{:#}", load().unwrap_err());
        assert!(
            e.contains(&path.display().to_string()) && e.contains("checksum"),
            "byte {at}: {e}"
        );
    }
    // a digit of the embedded configuration (metadata)
    let header = std::str::from_utf8(&good[8..start]).unwrap();
    let at = 8 + header.find("0.001").unwrap() + 4;
    let mut bad = good.clone();
    bad[at] = b'7';
    std::fs::write(&path, &bad).unwrap();
    let e = format!("{:#}", load().unwrap_err());
    assert!(e.contains("checksum"), "{e}");
    std::fs::write(&path, &good).unwrap();
    assert!(load().is_ok());
}
