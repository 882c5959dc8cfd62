//! Opening and probing a session, bounded as a whole: the work runs on a thread of its own and
//! the caller waits at most a deadline for it.
//!
//! Opening a session is a dozen driver calls (loading the library, CUDA initialization,
//! `nvEncOpenEncodeSessionEx`, capability queries, `nvEncInitializeEncoder`, allocations,
//! registrations), any of which a wedged driver or GPU can keep forever. They run one after the
//! other on one short-lived thread, which notes each step in a [`Progress`] before taking it, so
//! a caller that gives up can say which call did not return. The thread is not joined when it
//! does not answer in time: it is left inside the driver. If the call ever returns, the thread
//! finishes its work and drops the result (an opened encoder is torn down in order, on that
//! thread); until then it keeps what it had allocated.
//!
//! A device on which an open hung is remembered for the life of the process, until that open
//! returns: a later open or probe on it fails at once with the same [`Error::Hung`], instead of
//! leaving one more thread inside the driver and making its caller wait the deadline again.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::encoder::EncoderKind;
use crate::error::Error;

/// The step a bounded thread is in, by the C name of the driver call it is about to make.
#[derive(Debug)]
pub(crate) struct Progress(Mutex<&'static str>);

impl Progress {
    /// Notes that `call` is about to be made.
    pub(crate) fn at(&self, call: &'static str) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = call;
    }

    fn current(&self) -> &'static str {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Devices with an open or probe that did not return, and the call it was in.
static WEDGED: Mutex<Vec<(usize, &'static str, Duration)>> = Mutex::new(Vec::new());

fn wedged(device: usize) -> Option<Error> {
    let list = WEDGED.lock().unwrap_or_else(PoisonError::into_inner);
    list.iter()
        .find(|(d, _, _)| *d == device)
        .map(|&(_, call, deadline)| Error::Hung {
            backend: EncoderKind::Nvenc,
            call,
            deadline,
        })
}

/// Runs `work` on a new thread named `name` and waits at most `deadline` for its result.
///
/// # Errors
/// What `work` returned; [`Error::Hung`] naming the step `work` was in when the deadline passed,
/// or at once when an earlier open on `device` has not returned yet; [`Error::Backend`] when the
/// operating system refuses a thread.
pub(crate) fn run<R: Send + 'static>(
    name: &str,
    device: usize,
    deadline: Duration,
    work: impl FnOnce(&Progress) -> Result<R, Error> + Send + 'static,
) -> Result<R, Error> {
    if let Some(hung) = wedged(device) {
        return Err(hung);
    }
    let shared = Arc::new(Handover {
        progress: Progress(Mutex::new("std::thread::spawn")),
        state: Mutex::new(Answer::Waiting),
        answered: Condvar::new(),
    });
    let worker = Arc::clone(&shared);
    let task = name.to_owned();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let result = work(&worker.progress);
            let mut state = worker.lock();
            if matches!(*state, Answer::GaveUp) {
                // The caller gave up: this thread was inside the driver past the deadline. The
                // device is usable again, and what was opened is torn down here, in order.
                WEDGED
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|(d, _, _)| *d != device);
                drop(state);
                tracing::warn!(
                    device,
                    "{task} did not return in time but finished after all; tearing down what it \
                     opened"
                );
                drop(result);
                return;
            }
            *state = Answer::Done(result);
            drop(state);
            worker.answered.notify_one();
        })
        .map_err(|e| Error::Backend {
            backend: EncoderKind::Nvenc,
            call: "std::thread::spawn",
            message: format!("cannot start a thread to open NVENC on: {e}"),
        })?;
    let until = Instant::now() + deadline;
    let mut state = shared.lock();
    loop {
        if let Answer::Done(_) = &*state {
            return match std::mem::replace(&mut *state, Answer::Taken) {
                Answer::Done(result) => result,
                _ => unreachable_answer(),
            };
        }
        let now = Instant::now();
        if now >= until {
            break;
        }
        state = shared
            .answered
            .wait_timeout(state, until - now)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    // Marked under the hand-over lock, so the thread, if it finishes, finds the mark to clear.
    *state = Answer::GaveUp;
    let call = shared.progress.current();
    WEDGED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((device, call, deadline));
    drop(state);
    tracing::error!(
        device,
        call,
        ?deadline,
        "{name} did not finish in time; its thread is left inside the driver, holding what it \
         had allocated, and it is not tried again (device key {device}) until that call returns"
    );
    Err(Error::Hung {
        backend: EncoderKind::Nvenc,
        call,
        deadline,
    })
}

/// What the caller and the bounded thread share.
struct Handover<R> {
    progress: Progress,
    state: Mutex<Answer<R>>,
    answered: Condvar,
}

impl<R> Handover<R> {
    fn lock(&self) -> MutexGuard<'_, Answer<R>> {
        // Only plain moves happen under the lock, so a poisoned one still holds a valid state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

enum Answer<R> {
    Waiting,
    Done(Result<R, Error>),
    /// The caller took the answer.
    Taken,
    /// The caller stopped waiting.
    GaveUp,
}

fn unreachable_answer<R>() -> Result<R, Error> {
    Err(Error::Backend {
        backend: EncoderKind::Nvenc,
        call: "std::thread::spawn",
        message: "the thread opening NVENC answered twice".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_comes_back_and_a_step_that_never_returns_is_named_and_remembered() {
        let ok = run("test-open", 900, Duration::from_secs(5), |p| {
            p.at("first");
            Ok(7)
        });
        assert_eq!(ok.expect("answers"), 7);
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let hung = run("test-open", 901, Duration::from_millis(200), move |p| {
            p.at("cuInit");
            let _ = release_rx.recv();
            Ok(())
        });
        assert!(
            matches!(hung, Err(Error::Hung { call: "cuInit", .. })),
            "{hung:?}"
        );
        // The device is remembered: no second thread goes in, the answer is immediate.
        let again = run("test-open", 901, Duration::from_secs(60), |_| Ok(()));
        assert!(
            matches!(again, Err(Error::Hung { call: "cuInit", .. })),
            "{again:?}"
        );
        // Another device is not affected.
        assert!(run("test-open", 902, Duration::from_secs(5), |_| Ok(())).is_ok());
        // The call returns: the device can be opened again.
        release_tx.send(()).expect("the thread waits");
        for _ in 0..500 {
            if run("test-open", 901, Duration::from_secs(5), |_| Ok(())).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("device 901 stayed marked after its open returned");
    }
}
