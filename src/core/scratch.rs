//! Per-thread scratch buffers for the kernels (im2col patches, Winograd tiles), reused
//! across calls so that hot loops do not allocate or page-fault.

use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Floats of slack that let the slice start on a 64-byte (cache line) boundary.
const ALIGN: usize = 16;

/// Runs `f` with a scratch slice of `n` floats (contents unspecified) that starts on a
/// cache-line boundary, so that 16-float vectors at multiples of 16 do not straddle lines.
///
/// The buffer is taken out of the thread-local slot while `f` runs, so a nested call
/// (e.g. from a rayon task stolen by this thread) gets a fresh buffer instead of panicking.
pub fn with_scratch<R>(n: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if buf.len() < n + ALIGN {
        // grow without copying the old contents (they are unspecified anyway)
        buf = Vec::new();
        buf.resize(n + ALIGN, 0.0);
    }
    let off = buf.as_ptr().align_offset(64).min(ALIGN);
    let r = f(&mut buf[off..off + n]);
    SCRATCH.with(|s| {
        let mut slot = s.borrow_mut();
        if slot.len() < buf.len() {
            *slot = buf;
        }
    });
    r
}
