//! Allocating and releasing what the stage holds, bounded: allocating or freeing a ring's CUDA
//! memory (`cuMemHostAlloc`, `cuMemAllocPitch`, `cuMemFreeHost`, `cuMemFree`) is a driver call,
//! which a wedged driver or GPU can keep forever, and the stage must still open (on host memory)
//! or announce its end.

use std::time::Duration;

/// How long the encoder thread waits for a release before it announces the stage's end anyway:
/// the default NVENC call deadline (a healthy driver frees memory in microseconds).
pub(crate) const RELEASE_BOUND: Duration = Duration::from_secs(5);

/// Drops `value` on a thread of its own and waits at most `bound` for it. When the drop does not
/// finish in time, that thread is left with it (inside the driver) and this returns: the memory
/// is freed if the call ever returns, or stays until the process exits. When no thread can be
/// started, `value` is dropped here.
pub(crate) fn drop_bounded<T: Send + 'static>(value: T, what: &'static str, bound: Duration) {
    let (done, finished) = std::sync::mpsc::sync_channel::<()>(1);
    let spawned = std::thread::Builder::new()
        .name("nvencode-release".into())
        .spawn(move || {
            drop(value);
            let _ = done.send(());
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no thread to release {what} on; releasing it here");
        return;
    }
    if finished.recv_timeout(bound).is_err() {
        tracing::error!(
            ?bound,
            "releasing {what} did not finish in time (a driver call is not returning); its \
             memory stays with a thread left inside the driver"
        );
    }
}

/// Runs `make` on a thread of its own and waits at most `bound` for its result; `None` when it
/// did not finish in time (that thread is left inside the driver, and drops the result if it
/// ever finishes) or no thread could be started.
pub(crate) fn run_bounded<T: Send + 'static>(
    what: &'static str,
    bound: Duration,
    make: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (done, result) = std::sync::mpsc::sync_channel::<T>(1);
    let spawned = std::thread::Builder::new()
        .name("nvencode-alloc".into())
        .spawn(move || {
            // When nobody waits any more, the value is dropped here (its memory freed).
            let _ = done.send(make());
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no thread to allocate {what} on");
        return None;
    }
    match result.recv_timeout(bound) {
        Ok(value) => Some(value),
        Err(_) => {
            tracing::error!(
                ?bound,
                "allocating {what} did not finish in time (a driver call is not returning); its \
                 thread is left inside the driver"
            );
            None
        }
    }
}
