//! What both ends of the stage and its encoder thread share: the back-pressure policy, the
//! error, the output queue and the wake-ups.

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use atomic_waker::AtomicWaker;

use crate::encoder::{EncodedChunk, EncoderKind};
use crate::error::Error;
use crate::ring_buffer::RingError;

use super::ring::{RingConsumer, SlotMemory};

/// What a producer does when the ring is full. See the [module docs](super#back-pressure).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackPressure {
    /// Wait for a free slot; never drop a frame.
    #[default]
    Block,
    /// Discard the oldest frame still queued (counted), then take the slot it frees. The wait is
    /// at most the encoder call in progress.
    DropOldest,
    /// Discard the frame being submitted (counted); never wait.
    DropNewest,
}

/// What went wrong in the stage, on either side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// Opening the encoder failed, or its configuration is invalid.
    #[error("cannot open the pipeline's encoder: {0}")]
    Open(#[source] Error),
    /// The ring could not be created.
    #[error("cannot create the pipeline's ring: {0}")]
    Ring(#[source] RingError),
    /// The encoder thread could not be started.
    #[error("cannot start the pipeline's encoder thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The output queue capacity is 0 (expected at least 1).
    #[error("output capacity 0 (expected at least 1 chunk)")]
    OutputCapacity,
    /// No slot is free now (only from `try_reserve`/`try_push`, under [`BackPressure::Block`], or
    /// under [`BackPressure::DropOldest`] while the slot of a dropped frame waits for the encoder
    /// call in progress).
    #[error("the pipeline's ring is full")]
    Full,
    /// No slot freed before the deadline (only from the `_timeout` variants).
    #[error("timed out waiting for a free ring slot")]
    Timeout,
    /// The [`EncodedOutput`](super::EncodedOutput) was dropped: nothing more can be delivered.
    #[error("the pipeline's output was dropped; no more frames are accepted")]
    OutputDropped,
    /// The encoder thread stopped (an encoder failure, reported on the output side).
    #[error("the pipeline's encoder thread stopped; its error is on the output side")]
    EncoderStopped,
    /// The call does not fit the memory of the ring's slots: a host slot or a host frame for a
    /// ring in device memory, or a device slot for one in host or pinned memory.
    #[error("{call} cannot be used on a ring in {memory}; use {use_instead}")]
    WrongSlotMemory {
        /// The memory of the ring's slots.
        memory: SlotMemory,
        /// The producer call made.
        call: &'static str,
        /// What works on this ring instead.
        use_instead: &'static str,
    },
    /// A pushed frame's length is not one frame.
    #[error("frame of {len} bytes pushed (expected exactly {expected} bytes, one frame)")]
    FrameSize {
        /// Bytes given.
        len: usize,
        /// Bytes of one frame for the configuration.
        expected: usize,
    },
    /// A pts not above the previous one; the slot was given back unpublished.
    #[error("pts {pts} is not above the previous frame's pts {previous} (expected > {previous})")]
    NonMonotonicPts {
        /// The pts given.
        pts: i64,
        /// The previous frame's pts.
        previous: i64,
    },
    /// In-band on the output: the encoder failed (after failover, if the chain had any left).
    #[error(
        "encoder failed: {source}; {unencoded} committed frame(s) were not encoded: those the \
         encoder had accepted and not delivered, the one it failed on, and those still queued \
         (counted as dropped)"
    )]
    Encoder {
        /// The encoder's error.
        #[source]
        source: Error,
        /// Frames committed but never delivered: those the failed encoder had accepted and not
        /// yet given back, the one it refused, and those still queued behind it. They are added
        /// to
        /// [`RingStats::dropped`](crate::ring_buffer::RingStats::dropped).
        unencoded: usize,
    },
    /// In-band on the output, after every frame the producer committed came out: the producer was
    /// dropped without [`FrameProducer::finish`](super::FrameProducer::finish), or dropped while
    /// its thread panicked.
    #[error("the producer was {} before finishing; every frame it committed was encoded", if *panicked { "dropped during a panic" } else { "dropped" })]
    ProducerDropped {
        /// Whether the producer's thread was panicking.
        panicked: bool,
    },
    /// In-band on the output: the encoder panicked on the encoder thread.
    #[error("the encoder panicked on the pipeline's encoder thread")]
    EncoderPanicked,
}

/// What happened to a submitted frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use]
pub enum Submitted {
    /// Queued for the encoder; it will come out.
    Queued,
    /// Dropped under [`BackPressure::DropNewest`], and counted.
    Dropped,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) struct OutQueue {
    pub(super) items: VecDeque<Result<EncodedChunk, PipelineError>>,
    /// The encoder thread delivered its last item.
    pub(super) ended: bool,
    /// The output side was dropped.
    pub(super) output_gone: bool,
    /// The encoder's kind when the encoder thread ended (after a failover, the one failed over
    /// to); set with `ended`.
    pub(super) finished_by: Option<EncoderKind>,
}

pub(super) struct Shared {
    pub(super) out: Mutex<OutQueue>,
    pub(super) capacity: usize,
    /// Signalled when an item arrives or the stream ends.
    pub(super) ready: Condvar,
    /// Signalled when the output takes an item or goes away.
    pub(super) room: Condvar,
    /// The output's `Stream` waker.
    pub(super) out_waker: AtomicWaker,
    /// The async producer's waker: woken when a slot is released or the encoder thread ends.
    pub(super) space_waker: AtomicWaker,
    pub(super) output_gone: AtomicBool,
    pub(super) encoder_stopped: AtomicBool,
    /// Set, under its lock, when the encoder thread counts the frames it leaves in the ring;
    /// a commit publishes under the same lock and is refused once it is set, so every committed
    /// frame is either counted there or never committed.
    pub(super) ring_counted: Mutex<bool>,
}

pub(super) type SharedConsumer = Arc<Mutex<Option<RingConsumer>>>;

pub(super) enum WaitFor {
    No,
    Forever,
    Until(Instant),
}
