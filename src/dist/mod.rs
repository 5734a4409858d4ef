//! Data-parallel training over several processes (ranks): the [`Communicator`] a training
//! run talks to its peers through, with [`SingleProcess`] (no peers, no communication) and,
//! with the cargo feature `mpi`, an MPI implementation (`mpirun -n N ffebm train …`).
//!
//! One training run over N ranks: every rank loads the same global batch (same data order
//! and augmentation as a single process) and keeps its [`part_range`] of it, computes its
//! contribution to the gradient of the mean loss over the global batch (BatchNorm with the
//! global batch's statistics, summed through [`BatchSums`]), and the contributions are summed
//! ([`Communicator::sum_f64`]) so that every rank applies the same optimiser step.

use crate::core::batchnorm::{BatchSums, ChannelSums};
use crate::core::Tensor;
use crate::energy::BlockState;
use crate::model::Grads;
use anyhow::Result;
use std::ops::Range;

#[cfg(feature = "mpi")]
mod mpi_comm;
#[cfg(feature = "mpi")]
pub use mpi_comm::MpiCommunicator;

/// What a rank needs from its peers. Every rank calls the collective methods (all but
/// [`rank`](Communicator::rank), [`size`](Communicator::size) and
/// [`abort`](Communicator::abort)) the same number of times, in the same order, with
/// buffers of the same length.
pub trait Communicator: BatchSums {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Sums `values` over the ranks in place; every rank receives the same sums.
    fn sum_f64(&self, values: &mut [f64]);
    /// Every rank's `bytes`, in rank order.
    fn all_gather_bytes(&self, bytes: &[u8]) -> Vec<Vec<u8>>;
    /// Rank 0's `bytes` on every rank (`bytes` is replaced on the others).
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>);
    /// Ends every rank's process at once with exit status `code` (a rank that cannot take
    /// part in the next collective operation, e.g. after failing inside one).
    fn abort(&self, code: i32) -> !;
    /// What the transport is, for messages (`"MPI (Open MPI v4.1.4)"`).
    fn describe(&self) -> String;
    /// The same communicator summing BatchNorm statistics.
    fn batch_sums(&self) -> &dyn BatchSums;
    /// Seconds spent in [`sum_f64`](Communicator::sum_f64) so far (waiting for the slowest
    /// rank included).
    fn sum_seconds(&self) -> f64 {
        0.0
    }
}

/// One process holding every batch whole: no communication.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

impl BatchSums for SingleProcess {
    fn sum_parts(&self, _sums: &mut ChannelSums) {}
}

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum_f64(&self, _values: &mut [f64]) {}
    fn all_gather_bytes(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
        vec![bytes.to_vec()]
    }
    fn broadcast_bytes(&self, _bytes: &mut Vec<u8>) {}
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
    fn describe(&self) -> String {
        "a single process".into()
    }
    fn batch_sums(&self) -> &dyn BatchSums {
        self
    }
}

/// The samples `lo..hi` of a batch of `batch` samples that `rank` of `size` holds:
/// contiguous slices in rank order, the first `batch % size` ranks one sample more.
pub fn part_range(batch: usize, rank: usize, size: usize) -> Range<usize> {
    let (q, r) = (batch / size, batch % size);
    let lo = rank * q + rank.min(r);
    lo..lo + q + usize::from(rank < r)
}

/// Whether an MPI launcher (`mpirun`/`mpiexec` of Open MPI or MPICH, or `srun` with PMI or
/// PMIx) started this process, from its environment; `FFEBM_MPI=1` or `0` overrides. Gives
/// the number of ranks when the environment says it (`Some(None)`: launched, size unknown).
pub fn launched_by_mpi() -> Option<Option<usize>> {
    let var = |k: &str| std::env::var(k).ok();
    let size = [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_SIZE",
        "SLURM_NTASKS",
    ]
    .iter()
    .find_map(|k| var(k)?.trim().parse::<usize>().ok());
    match var("FFEBM_MPI").as_deref().map(str::trim) {
        Some("1") => return Some(size),
        Some("0") => return None,
        _ => {}
    }
    ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"]
        .iter()
        .any(|k| var(k).is_some())
        .then_some(size)
}

/// The communicator of `ffebm train`: MPI when this process was started by an MPI launcher
/// (and ffebm was built with `--features mpi`), else a single process. Started by a launcher
/// with several ranks but built without MPI is an error (N independent copies of one run
/// would fight over its directory). `FFEBM_MPI=0` runs a single process regardless.
pub fn from_environment() -> Result<Box<dyn Communicator>> {
    #[cfg(feature = "mpi")]
    {
        if launched_by_mpi().is_some() {
            return Ok(Box::new(MpiCommunicator::init()?));
        }
    }
    #[cfg(not(feature = "mpi"))]
    {
        if let Some(n) = launched_by_mpi().flatten().filter(|&n| n > 1) {
            anyhow::bail!(
                "started as one of {n} MPI ranks, but this ffebm was built without MPI support: \
                 rebuild with `cargo build --release --features mpi` (needs an MPI library such \
                 as Open MPI and libclang), or run a single process"
            );
        }
    }
    Ok(Box::new(SingleProcess))
}

/// The same outcome on every rank: `Ok` when every rank's `local` is `Ok`, else the error
/// of every failed rank (`rank R of N: …`) on every rank. A single process gets its own
/// result back unchanged.
pub fn agree<T>(comm: &dyn Communicator, local: Result<T>) -> Result<T> {
    if comm.size() == 1 {
        return local;
    }
    let mine = match &local {
        Ok(_) => Vec::new(),
        Err(e) => format!("{e:#}").into_bytes(),
    };
    let all = comm.all_gather_bytes(&mine);
    let failed: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(_, m)| !m.is_empty())
        .map(|(r, m)| {
            format!(
                "rank {r} of {}: {}",
                comm.size(),
                String::from_utf8_lossy(m)
            )
        })
        .collect();
    match (local, failed.is_empty()) {
        (Ok(v), true) => Ok(v),
        (Err(e), true) => Err(e), // unreachable: a failed rank sent its message
        _ => Err(anyhow::anyhow!("{}", failed.join("; "))),
    }
}

/// `local` unchanged on a single process; with several ranks an error prints
/// `error (rank R of N): …` and ends every rank (for failures where this rank cannot reach
/// the next collective operation, e.g. inside synchronised BatchNorm, or that only rank 0
/// sees, e.g. writing the run directory).
pub fn or_abort<T>(comm: &dyn Communicator, local: Result<T>) -> Result<T> {
    match local {
        Err(e) if comm.size() > 1 => {
            eprintln!(
                "error (rank {} of {}, stopping every rank): {e:#}",
                comm.rank(),
                comm.size()
            );
            comm.abort(1)
        }
        r => r,
    }
}

/// Rank 0's string on every rank.
pub fn broadcast_string(comm: &dyn Communicator, s: &str) -> Result<String> {
    let mut bytes = s.as_bytes().to_vec();
    comm.broadcast_bytes(&mut bytes);
    Ok(String::from_utf8(bytes)?)
}

/// Sums the gradients and `extra` values of every rank in one message (f64, so that the
/// sum of N float32 contributions is rounded once): every rank ends with the same sums.
pub fn sum_gradients(comm: &dyn Communicator, grads: &mut Grads, extra: &mut [f64]) {
    if comm.size() == 1 {
        return;
    }
    let total: usize = grads.entries.iter().map(|(_, t)| t.len()).sum();
    let mut buf = Vec::with_capacity(total + extra.len());
    for (_, t) in &grads.entries {
        buf.extend(t.data().iter().map(|&v| v as f64));
    }
    buf.extend_from_slice(extra);
    comm.sum_f64(&mut buf);
    let mut it = buf.into_iter();
    for (_, t) in grads.entries.iter_mut() {
        for (d, s) in t.data_mut().iter_mut().zip(&mut it) {
            *d = s as f32;
        }
    }
    for (d, s) in extra.iter_mut().zip(it) {
        *d = s;
    }
}

/// The block states of a whole batch on every rank, from each rank's `part` (the states of
/// its [`part_range`] of the batch): every layer's rows joined in rank order. A warm-started
/// run carries these to its next batch (each rank slices its part again, whatever the number
/// of ranks that resumes it) and saves them in checkpoints.
pub fn gather_batch_states(
    comm: &dyn Communicator,
    part: &[BlockState],
) -> Result<Vec<BlockState>> {
    if comm.size() == 1 {
        return Ok(part.to_vec());
    }
    let mine: Vec<u8> = part
        .iter()
        .flat_map(|b| &b.layers)
        .flat_map(|t| t.data().iter().flat_map(|v| v.to_le_bytes()))
        .collect();
    let all = comm.all_gather_bytes(&mine);
    // every rank's part has the same layers; only the number of rows differs
    let row_floats: usize = part
        .iter()
        .flat_map(|b| &b.layers)
        .map(Tensor::row_len)
        .sum();
    let mut rows = Vec::with_capacity(all.len());
    for (r, bytes) in all.iter().enumerate() {
        anyhow::ensure!(
            row_floats > 0 && bytes.len() % (4 * row_floats) == 0,
            "rank {r} sent {} bytes of block states, not whole samples of {row_floats} values",
            bytes.len()
        );
        rows.push(bytes.len() / (4 * row_floats));
    }
    let total: usize = rows.iter().sum();
    let mut offsets = vec![0usize; all.len()]; // bytes of each rank's message read so far
    let mut whole = Vec::with_capacity(part.len());
    for block in part {
        let mut layers = Vec::with_capacity(block.layers.len());
        for t in &block.layers {
            let mut data = Vec::with_capacity(total * t.row_len());
            for ((bytes, n), off) in all.iter().zip(&rows).zip(offsets.iter_mut()) {
                let len = 4 * n * t.row_len();
                data.extend(
                    bytes[*off..*off + len]
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                );
                *off += len;
            }
            let mut shape = t.shape().to_vec();
            shape[0] = total;
            layers.push(Tensor::from_vec(&shape, data)?);
        }
        whole.push(BlockState { layers });
    }
    Ok(whole)
}

/// Rows `range` of every layer of `states` (this rank's part of a whole batch's states).
pub fn part_of_states(states: &[BlockState], range: Range<usize>) -> Vec<BlockState> {
    states
        .iter()
        .map(|b| BlockState {
            layers: b.layers.iter().map(|t| t.rows(range.clone())).collect(),
        })
        .collect()
}

/// Bytes per value of the gradient message [`sum_gradients`] sends.
pub const GRADIENT_BYTES_PER_VALUE: usize = std::mem::size_of::<f64>();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_batch_in_order() {
        for batch in [1usize, 2, 7, 64, 65] {
            for size in 1..=batch.min(5) {
                let parts: Vec<Range<usize>> =
                    (0..size).map(|r| part_range(batch, r, size)).collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts[size - 1].end, batch);
                for w in parts.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let (min, max) = parts
                    .iter()
                    .map(|p| p.len())
                    .fold((usize::MAX, 0), |(a, b), l| (a.min(l), b.max(l)));
                assert!(max - min <= 1 && min >= 1, "{batch}/{size}: {parts:?}");
            }
        }
        assert_eq!(part_range(10, 1, 3), 4..7);
    }

    /// Rank 0 of two ranks whose peer sends `peer` in every all-gather.
    struct RankZeroOfTwo {
        peer: Vec<u8>,
    }
    impl BatchSums for RankZeroOfTwo {
        fn sum_parts(&self, _sums: &mut ChannelSums) {}
    }
    impl Communicator for RankZeroOfTwo {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            2
        }
        fn sum_f64(&self, _values: &mut [f64]) {}
        fn all_gather_bytes(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
            vec![bytes.to_vec(), self.peer.clone()]
        }
        fn broadcast_bytes(&self, _bytes: &mut Vec<u8>) {}
        fn abort(&self, code: i32) -> ! {
            panic!("abort {code}")
        }
        fn describe(&self) -> String {
            "a test".into()
        }
        fn batch_sums(&self) -> &dyn BatchSums {
            self
        }
    }

    /// Block states of `rows` samples with values `first`, `first + 1`, … in each layer.
    fn states(rows: usize, first: f32) -> Vec<BlockState> {
        let layer = |shape: &[usize]| {
            let n: usize = shape.iter().product();
            Tensor::from_vec(shape, (0..n).map(|i| first + i as f32).collect()).unwrap()
        };
        vec![
            BlockState {
                layers: vec![layer(&[rows, 2, 3]), layer(&[rows, 1])],
            },
            BlockState {
                layers: vec![layer(&[rows, 4])],
            },
        ]
    }

    #[test]
    fn block_states_of_the_parts_join_in_rank_order() {
        // rank 0 holds 3 samples, rank 1 holds 2: the whole batch has 5, rank 0's first
        let (mine, peer) = (states(3, 0.0), states(2, 100.0));
        let peer_bytes: Vec<u8> = peer
            .iter()
            .flat_map(|b| &b.layers)
            .flat_map(|t| t.data().iter().flat_map(|v| v.to_le_bytes()))
            .collect();
        let comm = RankZeroOfTwo { peer: peer_bytes };
        let whole = gather_batch_states(&comm, &mine).unwrap();
        for (k, block) in whole.iter().enumerate() {
            for (l, t) in block.layers.iter().enumerate() {
                let (a, b) = (&mine[k].layers[l], &peer[k].layers[l]);
                assert_eq!(t.shape()[0], 5);
                assert_eq!(&t.shape()[1..], &a.shape()[1..]);
                assert_eq!(&t.data()[..a.len()], a.data(), "block {k} layer {l}");
                assert_eq!(&t.data()[a.len()..], b.data(), "block {k} layer {l}");
            }
        }
        // and each rank's part of the whole is its own states again
        assert_eq!(part_of_states(&whole, part_range(5, 0, 2)), mine);
        assert_eq!(part_of_states(&whole, part_range(5, 1, 2)), peer);
        // a message that is not whole samples is refused
        let comm = RankZeroOfTwo { peer: vec![0; 12] };
        let e = gather_batch_states(&comm, &mine).unwrap_err();
        assert!(format!("{e}").contains("rank 1 sent 12 bytes"), "{e}");
    }

    #[test]
    fn a_single_process_passes_results_through() {
        let comm = SingleProcess;
        let e = agree::<()>(&comm, Err(anyhow::anyhow!("bad file"))).unwrap_err();
        assert_eq!(format!("{e}"), "bad file");
        assert_eq!(agree(&comm, Ok(3)).unwrap(), 3);
        assert_eq!(broadcast_string(&comm, "x").unwrap(), "x");
    }
}
