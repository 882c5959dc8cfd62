//! The hang watchdog: driver calls that may block forever run on a worker thread, and the
//! caller waits for each one at most a deadline.
//!
//! On Linux NVENC runs in synchronous mode only, so `nvEncLockBitstream` waits for the picture,
//! and a wedged driver or GPU (after a fault, a reset, an Xid error) can keep it, or more rarely
//! `nvEncEncodePicture`, waiting forever. A call that has not returned by its deadline is reported
//! as hung and the worker is abandoned, never joined: the caller's thread goes on at once.
//!
//! A call that is still inside the driver pins everything it may touch: the session cannot be
//! destroyed (no NVENC call may run beside it), nor may its surfaces, buffers, CUDA stream and
//! context be freed. The owner hands all of that to [`Watchdog::abandon`]; the worker keeps it
//! and, if the hung call ever returns, gives it the call's late reply and drops it (which tears
//! it down in the API's order); otherwise it stays until the process exits.
//!
//! One request is in flight at a time, handed over through a mutex-guarded slot: nothing is
//! allocated per call.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A call that did not return within its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hung {
    /// The driver entry point, by its C name.
    pub call: &'static str,
    /// How long the caller waited.
    pub deadline: Duration,
}

struct State<Q, R> {
    request: Option<Q>,
    reply: Option<R>,
    /// The owner is gone: the worker exits once it is idle.
    stop: bool,
    /// What a hung call may still be using: given the call's late reply and dropped by the
    /// worker if that call returns.
    abandoned: Option<Box<dyn FnOnce(Option<R>) + Send>>,
    /// The worker ran what it was given in `abandoned` and is about to exit.
    finished: bool,
}

struct Shared<Q, R> {
    state: Mutex<State<Q, R>>,
    to_worker: Condvar,
    to_caller: Condvar,
}

impl<Q, R> Shared<Q, R> {
    fn lock(&self) -> MutexGuard<'_, State<Q, R>> {
        // A panic never happens while the lock is held (only moves of plain values), so a
        // poisoned lock still guards consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A worker thread that runs requests `Q` into replies `R`, each awaited at most `deadline`.
pub(crate) struct Watchdog<Q: Send + 'static, R: Send + 'static> {
    shared: Arc<Shared<Q, R>>,
    thread: Option<JoinHandle<()>>,
    deadline: Duration,
    /// Set when a call did not return in time; no further request is sent.
    hung: std::cell::Cell<Option<Hung>>,
}

impl<Q: Send + 'static, R: Send + 'static> std::fmt::Debug for Watchdog<Q, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchdog")
            .field("deadline", &self.deadline)
            .field("hung", &self.hung.get())
            .finish_non_exhaustive()
    }
}

impl<Q: Send + 'static, R: Send + 'static> Watchdog<Q, R> {
    /// Starts the worker thread `name`, which runs each request through `run`.
    ///
    /// # Errors
    /// When the operating system refuses a new thread.
    pub(crate) fn spawn(
        name: &str,
        deadline: Duration,
        mut run: impl FnMut(Q) -> R + Send + 'static,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                request: None,
                reply: None,
                stop: false,
                abandoned: None,
                finished: false,
            }),
            to_worker: Condvar::new(),
            to_caller: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || loop {
                let mut state = worker.lock();
                while state.request.is_none() && !state.stop {
                    state = worker
                        .to_worker
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if let Some(request) = state.request.take() {
                    drop(state);
                    let reply = run(request);
                    worker.lock().reply = Some(reply);
                    worker.to_caller.notify_one();
                    continue;
                }
                // Stopped and idle: a hung call (if there was one) has returned, so what it
                // pinned can be torn down now, on this thread, knowing how the call ended.
                let abandoned = state.abandoned.take();
                let late = state.reply.take();
                drop(state);
                if let Some(finish) = abandoned {
                    if late.is_some() {
                        tracing::warn!(
                            "a hung driver call returned after all; tearing down what it pinned"
                        );
                    }
                    finish(late);
                }
                worker.lock().finished = true;
                worker.to_caller.notify_one();
                return;
            })?;
        Ok(Watchdog {
            shared,
            thread: Some(thread),
            deadline,
            hung: std::cell::Cell::new(None),
        })
    }

    /// The call that did not return, if one did not.
    pub(crate) fn hung(&self) -> Option<Hung> {
        self.hung.get()
    }

    /// Runs `request` on the worker and waits at most the deadline for its reply.
    ///
    /// # Errors
    /// [`Hung`] naming `call` when the reply did not come in time, or when an earlier call hung
    /// (the worker is still inside it, so nothing more is sent).
    pub(crate) fn call(&self, call: &'static str, request: Q) -> Result<R, Hung> {
        if let Some(hung) = self.hung.get() {
            return Err(hung);
        }
        let until = Instant::now() + self.deadline;
        let mut state = self.shared.lock();
        state.reply = None;
        state.request = Some(request);
        self.shared.to_worker.notify_one();
        loop {
            if let Some(reply) = state.reply.take() {
                return Ok(reply);
            }
            let now = Instant::now();
            if now >= until {
                let hung = Hung {
                    call,
                    deadline: self.deadline,
                };
                self.hung.set(Some(hung));
                return Err(hung);
            }
            state = self
                .shared
                .to_caller
                .wait_timeout(state, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Gives the worker what the session owns, as `finish`, to be torn down there, and lets
    /// the worker go. After a hung call the worker is not waited for: if the call ever returns,
    /// the worker runs `finish` with the call's late reply (which tears down what it owns);
    /// otherwise `finish` is kept, unrun, until the process exits. Without a hung call the
    /// worker runs `finish` at once, and the caller waits at most the deadline for it (a
    /// teardown call may hang too). Returns whether `finish` ran to its end in that time.
    pub(crate) fn abandon(mut self, finish: impl FnOnce(Option<R>) + Send + 'static) -> bool {
        let mut state = self.shared.lock();
        state.abandoned = Some(Box::new(finish));
        state.stop = true;
        self.shared.to_worker.notify_one();
        if self.hung.get().is_some() {
            drop(state);
            // Detached: joining would wait as long as the driver does.
            drop(self.thread.take());
            return false;
        }
        let until = Instant::now() + self.deadline;
        while !state.finished {
            let now = Instant::now();
            if now >= until {
                drop(state);
                self.hung.set(Some(Hung {
                    call: "teardown",
                    deadline: self.deadline,
                }));
                drop(self.thread.take());
                return false;
            }
            state = self
                .shared
                .to_caller
                .wait_timeout(state, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        // Finished: the join in `Drop` is immediate.
        true
    }
}

impl<Q: Send + 'static, R: Send + 'static> Drop for Watchdog<Q, R> {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.to_worker.notify_one();
        if let Some(thread) = self.thread.take() {
            if self.hung.get().is_none() && thread.thread().id() != std::thread::current().id() {
                // Bounded: no call is in progress (every call returned), so the worker is idle
                // or about to be, and exits as soon as it sees `stop`.
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn replies_come_back_and_a_call_that_never_returns_is_reported_hung() {
        let release = Arc::new(AtomicBool::new(false));
        let released = Arc::clone(&release);
        let dog = Watchdog::spawn("test-watchdog", Duration::from_secs(2), move |n: u32| {
            if n == 0 {
                while !released.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            n * 2
        })
        .expect("spawn");
        assert_eq!(dog.call("double", 21), Ok(42));
        assert_eq!(dog.call("double", 5), Ok(10));
        let hung = dog.call("block", 0).expect_err("hangs");
        assert_eq!(hung.call, "block");
        // Nothing more goes in once a call hung.
        assert_eq!(dog.call("double", 1), Err(hung));
        let late = Arc::new(Mutex::new(None));
        let late_in = Arc::clone(&late);
        assert!(!dog.abandon(move |reply| {
            *late_in.lock().expect("lock") = Some(reply);
        }));
        assert!(
            late.lock().expect("lock").is_none(),
            "pinned while the call is inside"
        );
        // The call returns: the worker hands its reply (0 * 2) to what it pinned.
        release.store(true, Ordering::SeqCst);
        for _ in 0..1000 {
            if let Some(reply) = *late.lock().expect("lock") {
                assert_eq!(reply, Some(0));
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("the worker never finished what the hung call pinned");
    }
}
