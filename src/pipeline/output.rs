//! The output end: [`EncodedOutput`].

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::encoder::{EncodedChunk, EncoderKind};
use crate::ring_buffer::RingStats;

use super::state::{lock, OutQueue, PipelineError, Shared};

/// The output end: encoded chunks in decoding order, then the end (`None`), with an error in-band
/// before the end when the stream did not finish cleanly. An [`Iterator`] (blocking) and a
/// [`futures_core::Stream`]. Dropping it stops the encoder thread.
pub struct EncodedOutput {
    pub(super) shared: Arc<Shared>,
    pub(super) thread: Option<JoinHandle<()>>,
    pub(super) kind: EncoderKind,
    pub(super) gpu: Option<usize>,
    pub(super) headers: Vec<u8>,
    pub(super) time_base: (u32, u32),
    pub(super) stats: RingStats,
}

impl fmt::Debug for EncodedOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedOutput")
            .field("encoder", &self.kind)
            .finish_non_exhaustive()
    }
}

/// What [`EncodedOutput::recv_timeout`] and [`EncodedOutput::try_recv`] return.
#[derive(Debug)]
pub enum Received {
    /// A chunk, or the in-band error that ends the stream.
    Item(Result<EncodedChunk, PipelineError>),
    /// Nothing yet.
    Pending,
    /// The stream has ended.
    End,
}

impl EncodedOutput {
    /// The encoder that opened (the first of the fallback chain that worked).
    #[must_use]
    pub fn encoder_kind(&self) -> EncoderKind {
        self.kind
    }

    /// The CUDA device ordinal of the GPU the encoder opened on (NVENC: where it was placed), or
    /// `None` for an encoder that runs on none.
    #[must_use]
    pub fn gpu(&self) -> Option<usize> {
        self.gpu
    }

    /// The encoder that finished the stream: after a mid-stream failover, the one the fallback
    /// chain failed over to (otherwise the same as [`encoder_kind`](Self::encoder_kind)). `None`
    /// until the encoder thread has ended, which the output shows by ending (`None` from the
    /// `Iterator` or the `Stream`).
    #[must_use]
    pub fn finished_by(&self) -> Option<EncoderKind> {
        lock(&self.shared.out).finished_by
    }

    /// The encoder's SPS/PPS as it opened.
    #[must_use]
    pub fn sequence_headers(&self) -> &[u8] {
        &self.headers
    }

    /// The chunks' time base (numerator, denominator) in seconds.
    #[must_use]
    pub fn time_base(&self) -> (u32, u32) {
        self.time_base
    }

    /// The ring's statistics.
    #[must_use]
    pub fn stats(&self) -> RingStats {
        self.stats.clone()
    }

    fn take(&mut self, out: &mut OutQueue) -> Option<Received> {
        if let Some(item) = out.items.pop_front() {
            self.shared.room.notify_all();
            return Some(Received::Item(item));
        }
        if out.ended {
            if let Some(thread) = self.thread.take() {
                // The thread has delivered its last item and is returning.
                let _ = thread.join();
            }
            return Some(Received::End);
        }
        None
    }

    fn recv_until(&mut self, deadline: Option<Instant>) -> Received {
        let shared = Arc::clone(&self.shared);
        let mut out = lock(&shared.out);
        loop {
            if let Some(r) = self.take(&mut out) {
                return r;
            }
            match deadline {
                None => {
                    out = shared
                        .ready
                        .wait(out)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Received::Pending;
                    }
                    out = shared
                        .ready
                        .wait_timeout(out, left)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
            }
        }
    }

    /// The next chunk or in-band error, or `None` at the end. Blocks by design until one arrives
    /// (see [`recv_timeout`](Self::recv_timeout)).
    pub fn recv(&mut self) -> Option<Result<EncodedChunk, PipelineError>> {
        match self.recv_until(None) {
            Received::Item(item) => Some(item),
            _ => None,
        }
    }

    /// The next item, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Received {
        // A timeout too long to represent waits without a deadline.
        self.recv_until(Instant::now().checked_add(timeout))
    }

    /// The next item, without waiting.
    pub fn try_recv(&mut self) -> Received {
        self.recv_until(Some(Instant::now()))
    }
}

impl Iterator for EncodedOutput {
    type Item = Result<EncodedChunk, PipelineError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.recv()
    }
}

impl futures_core::Stream for EncodedOutput {
    type Item = Result<EncodedChunk, PipelineError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let shared = Arc::clone(&this.shared);
        let mut out = lock(&shared.out);
        // Registered under the lock: an item pushed after this check wakes this waker.
        shared.out_waker.register(cx.waker());
        match this.take(&mut out) {
            Some(Received::Item(item)) => Poll::Ready(Some(item)),
            Some(_) => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

impl Drop for EncodedOutput {
    fn drop(&mut self) {
        self.shared.output_gone.store(true, Ordering::SeqCst);
        lock(&self.shared.out).output_gone = true;
        self.shared.room.notify_all();
        self.shared.space_waker.wake();
        // The encoder thread is not joined: it stops after the encoder call in progress (each
        // bounded by the backend's own limits) and drops the ring's consumer, which wakes a
        // producer blocked in the ring.
    }
}
