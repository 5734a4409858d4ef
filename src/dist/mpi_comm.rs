//! The [`Communicator`] over MPI (the `mpi` crate on the system's Open MPI or MPICH).

use super::Communicator;
use crate::core::batchnorm::{BatchSums, ChannelSums};
use anyhow::Result;
use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::environment::{Threading, Universe};
use mpi::topology::SimpleCommunicator;
use mpi::traits::Communicator as _;
use mpi::traits::*;
use mpi::Count;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::ThreadId;
use std::time::Instant;

/// Values per MPI call (MPI counts are C ints).
const CHUNK: usize = 1 << 28;

/// `MPI_COMM_WORLD` of an initialised MPI environment (finalised when dropped). MPI is
/// initialised with `MPI_THREAD_FUNNELED`: only the thread that created the communicator
/// calls MPI (rayon's workers never do); a call from another thread panics.
pub struct MpiCommunicator {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    thread: ThreadId,
    library: String,
    /// Nanoseconds spent in `sum_f64`.
    sum_nanos: AtomicU64,
    // last: finalises MPI after `world` is gone
    _universe: Universe,
}

// SAFETY: the communicator is only used from the thread that initialised MPI (checked by
// `MpiCommunicator::on_main_thread` before every MPI call); `Sync` is needed because the
// batch-statistics reducer is borrowed by structures shared with rayon's workers, which
// never call it.
unsafe impl Sync for MpiCommunicator {}
unsafe impl Send for MpiCommunicator {}

impl MpiCommunicator {
    /// Initialises MPI (once per process).
    pub fn init() -> Result<MpiCommunicator> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Funneled)
            .ok_or_else(|| anyhow::anyhow!("MPI was already initialised in this process"))?;
        anyhow::ensure!(
            threading != Threading::Single,
            "the MPI library provides thread level {threading:?}, ffebm needs at least Funneled"
        );
        let world = universe.world();
        let library = mpi::environment::library_version()
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or("")
            .split(',')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        Ok(MpiCommunicator {
            rank: world.rank() as usize,
            size: world.size() as usize,
            world,
            thread: std::thread::current().id(),
            library,
            sum_nanos: AtomicU64::new(0),
            _universe: universe,
        })
    }

    fn on_main_thread(&self) {
        assert_eq!(
            std::thread::current().id(),
            self.thread,
            "MPI called from a thread other than the one that initialised it"
        );
    }
}

impl BatchSums for MpiCommunicator {
    fn sum_parts(&self, sums: &mut ChannelSums) {
        self.sum_f64(sums.values_mut());
    }
}

impl Communicator for MpiCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn sum_f64(&self, values: &mut [f64]) {
        self.on_main_thread();
        let t = Instant::now();
        let mut out = vec![0.0f64; values.len().min(CHUNK)];
        for chunk in values.chunks_mut(CHUNK) {
            let out = &mut out[..chunk.len()];
            self.world
                .all_reduce_into(&chunk[..], out, SystemOperation::sum());
            chunk.copy_from_slice(out);
        }
        let ns = t.elapsed().as_nanos() as u64;
        self.sum_nanos.fetch_add(ns, Ordering::Relaxed);
    }

    fn all_gather_bytes(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.on_main_thread();
        // never an empty buffer: Open MPI refuses a send buffer at the address of the
        // receive buffer, which two empty Vecs share (a dangling pointer); the first byte
        // of each message is dropped again below
        let framed: Vec<u8> = std::iter::once(0u8).chain(bytes.iter().copied()).collect();
        let bytes = &framed[..];
        let mut counts = vec![0 as Count; self.size];
        let len = Count::try_from(bytes.len()).expect("message under 2 GiB");
        self.world.all_gather_into(&len, &mut counts[..]);
        let displs: Vec<Count> = counts
            .iter()
            .scan(0, |acc, &c| {
                let d = *acc;
                *acc += c;
                Some(d)
            })
            .collect();
        let total = counts.iter().map(|&c| c as usize).sum();
        let mut all = vec![0u8; total];
        {
            let mut part = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            self.world.all_gather_varcount_into(bytes, &mut part);
        }
        counts
            .iter()
            .zip(&displs)
            .map(|(&c, &d)| all[d as usize + 1..(d + c) as usize].to_vec())
            .collect()
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>) {
        self.on_main_thread();
        let root = self.world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        for chunk in bytes.chunks_mut(CHUNK) {
            root.broadcast_into(chunk);
        }
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    fn describe(&self) -> String {
        format!("MPI ({})", self.library)
    }

    fn batch_sums(&self) -> &dyn BatchSums {
        self
    }

    fn sum_seconds(&self) -> f64 {
        self.sum_nanos.load(Ordering::Relaxed) as f64 * 1e-9
    }
}
