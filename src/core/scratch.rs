//! Per-thread scratch buffers for the kernels (im2col patches, Winograd tiles), reused
//! across calls so that hot loops do not allocate or page-fault.

use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a scratch slice of `n` floats (contents unspecified).
///
/// The buffer is taken out of the thread-local slot while `f` runs, so a nested call
/// (e.g. from a rayon task stolen by this thread) gets a fresh buffer instead of panicking.
pub fn with_scratch<R>(n: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    let r = f(&mut buf[..n]);
    SCRATCH.with(|s| {
        let mut slot = s.borrow_mut();
        if slot.len() < buf.len() {
            *slot = buf;
        }
    });
    r
}
