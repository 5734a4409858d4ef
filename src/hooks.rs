//! Hooks for programs that embed ffebm (the Python binding): cancelling a long computation
//! from another thread, and observing the end of every training epoch.
//!
//! Both are scoped to the calling thread: [`cancellable`] and [`observe_epochs`] install a
//! hook for the duration of a closure, and the library polls it at fixed points — before
//! every relaxation sweep ([`check_cancelled`], so a cancelled gradient, analysis or
//! evaluation stops within one sweep) and after each epoch's checkpoint is written
//! ([`epoch_finished`]). Without a hook installed both are no-ops.

use crate::train::metrics::EpochRecord;
use anyhow::Result;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A computation was cancelled through the flag given to [`cancellable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted (cancelled by the caller)")]
pub struct Cancelled;

type EpochObserver = Box<dyn FnMut(&EpochRecord) -> Result<()>>;

thread_local! {
    static CANCEL: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
    static EPOCH: RefCell<Option<EpochObserver>> = const { RefCell::new(None) };
}

/// Restores the previous hook of a thread-local slot when dropped (also on panic).
struct Restore<T: 'static> {
    slot: &'static std::thread::LocalKey<RefCell<Option<T>>>,
    previous: Option<T>,
}

impl<T: 'static> Drop for Restore<T> {
    fn drop(&mut self) {
        let previous = self.previous.take();
        self.slot.with(|s| *s.borrow_mut() = previous);
    }
}

fn install<T: 'static>(
    slot: &'static std::thread::LocalKey<RefCell<Option<T>>>,
    hook: T,
) -> Restore<T> {
    let previous = slot.with(|s| s.borrow_mut().replace(hook));
    Restore { slot, previous }
}

/// Runs `f` on this thread; while it runs, setting `flag` makes the library's relaxations
/// fail with [`Cancelled`] before their next sweep.
pub fn cancellable<T>(flag: Arc<AtomicBool>, f: impl FnOnce() -> T) -> T {
    let _restore = install(&CANCEL, flag);
    f()
}

/// `Err(Cancelled)` when the flag of the enclosing [`cancellable`] is set.
pub fn check_cancelled() -> Result<(), Cancelled> {
    CANCEL.with(|s| match s.borrow().as_ref() {
        Some(flag) if flag.load(Ordering::Relaxed) => Err(Cancelled),
        _ => Ok(()),
    })
}

/// Runs `f` on this thread, calling `observer` with each epoch record the trainer writes
/// (after that epoch's checkpoints). An error from `observer` stops training with it.
pub fn observe_epochs<T>(
    observer: impl FnMut(&EpochRecord) -> Result<()> + 'static,
    f: impl FnOnce() -> T,
) -> T {
    let _restore = install(&EPOCH, Box::new(observer) as EpochObserver);
    f()
}

/// Reports a finished epoch to the observer of the enclosing [`observe_epochs`].
pub fn epoch_finished(record: &EpochRecord) -> Result<()> {
    // take the observer out while it runs, so that it may itself call into the library
    let Some(mut observer) = EPOCH.with(|s| s.borrow_mut().take()) else {
        return Ok(());
    };
    let result = observer(record);
    EPOCH.with(|s| *s.borrow_mut() = Some(observer));
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn cancellation_is_scoped_to_the_closure_and_thread() {
        let flag = Arc::new(AtomicBool::new(false));
        assert_eq!(check_cancelled(), Ok(()));
        cancellable(flag.clone(), || {
            assert_eq!(check_cancelled(), Ok(()));
            flag.store(true, Ordering::SeqCst);
            assert_eq!(check_cancelled(), Err(Cancelled));
            // another thread has no hook installed
            std::thread::scope(|s| {
                s.spawn(|| assert_eq!(check_cancelled(), Ok(())));
            });
        });
        assert_eq!(check_cancelled(), Ok(()), "hook removed after the closure");
    }

    #[test]
    fn epoch_observer_sees_records_and_can_fail() {
        let rec = EpochRecord {
            kind: "epoch".into(),
            epoch: 3,
            step: 30,
            lr: 1e-3,
            train_loss: 1.0,
            train_top1: 50.0,
            train_top5: 90.0,
            val_loss: None,
            val_top1: None,
            val_top5: None,
            test_name: "test".into(),
            test_loss: 1.1,
            test_top1: 45.0,
            test_top5: 88.0,
            evals: BTreeMap::new(),
            free_sweeps: 30.0,
            images_per_s: 100.0,
            epoch_time: 1.0,
            time: 3.0,
            power: BTreeMap::new(),
            sweeps_per_block: None,
            pulses: None,
            refresh_pulses: None,
        };
        assert!(epoch_finished(&rec).is_ok(), "no observer: no-op");
        let seen = std::rc::Rc::new(RefCell::new(Vec::new()));
        let s = seen.clone();
        let r = observe_epochs(
            move |r: &EpochRecord| {
                s.borrow_mut().push(r.epoch);
                anyhow::ensure!(r.epoch < 4, "stop at 4");
                Ok(())
            },
            || {
                epoch_finished(&rec).unwrap();
                epoch_finished(&EpochRecord {
                    epoch: 4,
                    ..rec.clone()
                })
            },
        );
        assert_eq!(r.unwrap_err().to_string(), "stop at 4");
        assert_eq!(*seen.borrow(), vec![3, 4]);
        assert!(epoch_finished(&rec).is_ok(), "observer removed");
        assert_eq!(seen.borrow().len(), 2);
    }
}
