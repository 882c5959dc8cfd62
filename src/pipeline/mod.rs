//! The pipeline stage: a frame ring between a source (a socket, a file, a camera) and an encoder
//! thread, fed synchronously or asynchronously, with encoded chunks coming out the other side.
//!
//! [`EncodePipeline::open`] opens the encoder ([`GpuEncoderConfig::open`]: the fallback chain with
//! mid-stream failover), creates the ring ([`GpuEncoderConfig::ring_buffer_size`] slots of exactly
//! one frame each) and starts the encoder thread. [`EncodePipeline::split`] gives the two ends:
//!
//! - a [`FrameProducer`] (`Send`): [`reserve`](FrameProducer::reserve) a slot, write the frame into
//!   it in place (a socket's `read_exact` straight into the slot), [`commit`](FrameSlot::commit)
//!   it with its pts and a force-keyframe flag; or [`push`](FrameProducer::push) a frame you
//!   already hold. Each has a `try_` and a `_timeout` variant, and an async one
//!   ([`reserve_async`](FrameProducer::reserve_async), [`push_async`](FrameProducer::push_async))
//!   that works on any executor;
//! - an [`EncodedOutput`]: the encoded chunks in decoding order, as an [`Iterator`] and as a
//!   [`futures_core::Stream`].
//!
//! ```
//! # #[cfg(feature = "x264")] {
//! use nvenc::pipeline::EncodePipeline;
//! use nvenc::{EncoderConfig, GpuEncoderConfig, EncoderKind};
//!
//! let config = EncoderConfig::new(64, 64);
//! let mut gpu = GpuEncoderConfig::default();
//! gpu.preferred_encoder = Some(EncoderKind::X264);
//! let (mut producer, output) = EncodePipeline::open(&config, &gpu)?.split();
//! let reader = std::thread::spawn(move || -> Result<(), nvenc::pipeline::PipelineError> {
//!     for pts in 0..10 {
//!         let mut slot = producer.reserve()?; // waits while the ring is full
//!         slot.fill(pts as u8);               // or: socket.read_exact(&mut slot)
//!         slot.commit(pts, false)?;
//!     }
//!     producer.finish()
//! });
//! let chunks = output.collect::<Result<Vec<_>, _>>()?;
//! assert_eq!(chunks.len(), 10);
//! reader.join().unwrap()?;
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Back-pressure
//!
//! [`BackPressure::Block`] (the default) never drops a frame: a producer that finds the ring full
//! waits. For live sources that must not stall, [`BackPressure::DropOldest`] discards the oldest
//! frame still queued (not yet taken by the encoder) and [`BackPressure::DropNewest`] discards the
//! frame being submitted (its slot is a scratch buffer, so the caller's read-into-the-slot code
//! stays the same, and `commit` says [`Submitted::Dropped`]). Every dropped frame is counted in
//! [`RingStats::dropped`] (which [`crate::metrics::Metered::with_ring`] exports as
//! `encoder_frames_dropped_total`) and in [`FrameProducer::dropped`]; none is dropped silently.
//!
//! # Closing
//!
//! - [`FrameProducer::finish`] closes the ring; the encoder thread encodes every committed frame,
//!   flushes the encoder, and the output ends (`None`) after the last chunk.
//! - A producer dropped without `finish`, or dropped while its thread panics: every frame it
//!   committed is still encoded and comes out, then the output yields
//!   [`PipelineError::ProducerDropped`] (`panicked` says which) and ends.
//! - An encoder failure the fallback chain cannot absorb comes out as
//!   [`PipelineError::Encoder`], after every chunk produced before it, and the output ends; the
//!   producer's next call returns [`PipelineError::EncoderStopped`]. The error says how many
//!   committed frames were not encoded (the one refused and those queued behind it); they are
//!   added to [`RingStats::dropped`], so no accepted frame disappears without a count.
//! - An [`EncodedOutput`] that is dropped stops the encoder thread (after the encoder call in
//!   progress), and the producer's next call, or the one it is blocked in, returns
//!   [`PipelineError::OutputDropped`].
//!
//! # Waits
//!
//! Every producer wait has a `try_` and a `_timeout` variant; the plain ones block by design
//! until a slot frees, the encoder thread stops or the output is dropped. The output's
//! [`recv`](EncodedOutput::recv) (and the `Iterator`) blocks by design until a chunk, an error or
//! the end arrives; [`recv_timeout`](EncodedOutput::recv_timeout) bounds it. The encoder thread
//! waits for room in the output queue (bounded, [`PipelineOptions::output_capacity`]), so a
//! program must read the output while it feeds the producer, from another thread or task.
//!
//! # Storage and failover
//!
//! The ring's slots are host memory ([`HostStorage`]), which every backend reads. The encoder
//! thread hands each slot's bytes to the encoder in one place (`encode_lease`); the encoder's
//! fallback chain copies the frames it has accepted but not yet delivered, so when it fails over
//! mid-stream the frames already in the ring are still encoded, by the next backend, from the
//! same host slots: a failover never changes or reallocates the ring's storage. (A CUDA-pinned or
//! device storage for NVENC would be a further variant of [`FrameSlot`]'s storage; it is not
//! offered yet.)

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;

use crate::encoder::{EncodedChunk, EncoderKind, Frame, VideoEncoder};
use crate::error::Error;
use crate::ring_buffer::{
    CommitError, Consumer, FrameFlags, FrameMeta, FrameRing, HostStorage, PopError, Producer,
    ReadSlot, ReserveError, RingError, RingStats, WriteSlot,
};
use crate::{EncoderConfig, GpuEncoderConfig};

/// What a producer does when the ring is full. See the [module docs](self#back-pressure).
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

/// The stage's own settings beside the encoder's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PipelineOptions {
    /// Ring slots (frames queued plus the one being encoded); 1 to
    /// [`crate::ring_buffer::MAX_SLOTS`].
    pub ring_slots: usize,
    /// What a producer does when the ring is full.
    pub back_pressure: BackPressure,
    /// Chunks the output queue holds before the encoder thread waits for a reader (at least 1).
    pub output_capacity: usize,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            ring_slots: 8,
            back_pressure: BackPressure::Block,
            output_capacity: 64,
        }
    }
}

impl PipelineOptions {
    /// The options from a [`GpuEncoderConfig`]: `ring_buffer_size` slots, or one slot (no
    /// smoothing: each frame waits for the encoder) when `enable_ring_buffer` is false.
    #[must_use]
    pub fn from_gpu_config(gpu: &GpuEncoderConfig) -> Self {
        PipelineOptions {
            ring_slots: if gpu.enable_ring_buffer {
                gpu.ring_buffer_size
            } else {
                1
            },
            ..PipelineOptions::default()
        }
    }

    /// With `slots` ring slots.
    #[must_use]
    pub const fn with_ring_slots(mut self, slots: usize) -> Self {
        self.ring_slots = slots;
        self
    }

    /// With the back-pressure policy `policy`.
    #[must_use]
    pub const fn with_back_pressure(mut self, policy: BackPressure) -> Self {
        self.back_pressure = policy;
        self
    }

    /// With an output queue of `chunks` chunks.
    #[must_use]
    pub const fn with_output_capacity(mut self, chunks: usize) -> Self {
        self.output_capacity = chunks;
        self
    }
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
    /// The [`EncodedOutput`] was dropped: nothing more can be delivered.
    #[error("the pipeline's output was dropped; no more frames are accepted")]
    OutputDropped,
    /// The encoder thread stopped (an encoder failure, reported on the output side).
    #[error("the pipeline's encoder thread stopped; its error is on the output side")]
    EncoderStopped,
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
        "encoder failed: {source}; {unencoded} committed frame(s) from the one it failed on were \
         not encoded (counted as dropped)"
    )]
    Encoder {
        /// The encoder's error.
        #[source]
        source: Error,
        /// Frames committed but never encoded: the one the encoder refused and those still queued
        /// behind it. They are added to [`RingStats::dropped`].
        unencoded: usize,
    },
    /// In-band on the output, after every frame the producer committed came out: the producer was
    /// dropped without [`FrameProducer::finish`], or dropped while its thread panicked.
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

/// How long the encoder thread waits for a frame before it looks at the output side again. Under
/// [`BackPressure::DropOldest`] the producer takes the same lock to drop a frame, so it is short.
const POP_WAIT: Duration = Duration::from_millis(20);
const POP_WAIT_DROP_OLDEST: Duration = Duration::from_millis(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct OutQueue {
    items: VecDeque<Result<EncodedChunk, PipelineError>>,
    /// The encoder thread delivered its last item.
    ended: bool,
    /// The output side was dropped.
    output_gone: bool,
}

struct Shared {
    out: Mutex<OutQueue>,
    capacity: usize,
    /// Signalled when an item arrives or the stream ends.
    ready: Condvar,
    /// Signalled when the output takes an item or goes away.
    room: Condvar,
    /// The output's `Stream` waker.
    out_waker: AtomicWaker,
    /// The async producer's waker: woken when a slot is released or the encoder thread ends.
    space_waker: AtomicWaker,
    output_gone: AtomicBool,
    encoder_stopped: AtomicBool,
}

type SharedConsumer = Arc<Mutex<Option<Consumer<HostStorage>>>>;

/// The stage: an encoder thread reading a frame ring. [`split`](Self::split) it into its producer
/// and output ends. See the [module docs](self).
#[derive(Debug)]
pub struct EncodePipeline {
    producer: FrameProducer,
    output: EncodedOutput,
}

impl EncodePipeline {
    /// Opens the encoder `gpu` chooses for `config` ([`GpuEncoderConfig::open`]: the fallback
    /// chain, metered with the ring's statistics) and a ring of
    /// [`PipelineOptions::from_gpu_config`] slots.
    ///
    /// # Errors
    /// [`PipelineError::Open`] when the configuration is invalid or no encoder opens;
    /// [`PipelineError::Ring`] when the ring cannot be allocated.
    pub fn open(config: &EncoderConfig, gpu: &GpuEncoderConfig) -> Result<Self, PipelineError> {
        let options = PipelineOptions::from_gpu_config(gpu);
        Self::open_with(config, gpu, options)
    }

    /// As [`open`](Self::open), with the stage's options given.
    ///
    /// # Errors
    /// As [`open`](Self::open), and [`PipelineError::OutputCapacity`].
    pub fn open_with(
        config: &EncoderConfig,
        gpu: &GpuEncoderConfig,
        options: PipelineOptions,
    ) -> Result<Self, PipelineError> {
        let encoder = gpu.open(config).map_err(PipelineError::Open)?;
        Self::with_encoder_metered(Box::new(encoder), options)
    }

    fn with_encoder_metered(
        encoder: Box<dyn VideoEncoder>,
        options: PipelineOptions,
    ) -> Result<Self, PipelineError> {
        let frame_len = encoder
            .config()
            .validate()
            .map_err(|e| PipelineError::Open(e.into()))?;
        let (ring, consumer) = new_ring(options, frame_len)?;
        let metered = crate::metrics::Metered::new(encoder).with_ring(ring.stats());
        Self::start(Box::new(metered), ring, consumer, options, frame_len)
    }

    /// A stage around an encoder you opened yourself (a [`crate::FallbackEncoder`] with a chain of
    /// your own, a metered encoder, a test double).
    ///
    /// # Errors
    /// [`PipelineError::Open`] when the encoder's configuration is invalid,
    /// [`PipelineError::Ring`], [`PipelineError::OutputCapacity`].
    pub fn with_encoder(
        encoder: Box<dyn VideoEncoder>,
        options: PipelineOptions,
    ) -> Result<Self, PipelineError> {
        let frame_len = encoder
            .config()
            .validate()
            .map_err(|e| PipelineError::Open(e.into()))?;
        let (ring, consumer) = new_ring(options, frame_len)?;
        Self::start(encoder, ring, consumer, options, frame_len)
    }

    fn start(
        encoder: Box<dyn VideoEncoder>,
        ring: Producer<HostStorage>,
        consumer: Consumer<HostStorage>,
        options: PipelineOptions,
        frame_len: usize,
    ) -> Result<Self, PipelineError> {
        if options.output_capacity == 0 {
            return Err(PipelineError::OutputCapacity);
        }
        let shared = Arc::new(Shared {
            out: Mutex::new(OutQueue {
                items: VecDeque::with_capacity(options.output_capacity),
                ended: false,
                output_gone: false,
            }),
            capacity: options.output_capacity,
            ready: Condvar::new(),
            room: Condvar::new(),
            out_waker: AtomicWaker::new(),
            space_waker: AtomicWaker::new(),
            output_gone: AtomicBool::new(false),
            encoder_stopped: AtomicBool::new(false),
        });
        let kind = encoder.kind();
        let headers = encoder.sequence_headers().to_vec();
        let time_base = encoder.time_base();
        let consumer: SharedConsumer = Arc::new(Mutex::new(Some(consumer)));
        let pop_wait = if options.back_pressure == BackPressure::DropOldest {
            POP_WAIT_DROP_OLDEST
        } else {
            POP_WAIT
        };
        let thread = {
            let shared = Arc::clone(&shared);
            let consumer = Arc::clone(&consumer);
            std::thread::Builder::new()
                .name("nvenc-pipeline".into())
                .spawn(move || encoder_thread(encoder, &consumer, &shared, pop_wait))
                .map_err(PipelineError::Spawn)?
        };
        let stats = ring.stats();
        Ok(EncodePipeline {
            producer: FrameProducer {
                scratch: if options.back_pressure == BackPressure::DropNewest {
                    vec![0; frame_len]
                } else {
                    Vec::new()
                },
                ring,
                consumer,
                shared: Arc::clone(&shared),
                policy: options.back_pressure,
                frame_len,
                seq: 0,
                last_pts: None,
                dropped: 0,
            },
            output: EncodedOutput {
                shared,
                thread: Some(thread),
                kind,
                headers,
                time_base,
                stats,
            },
        })
    }

    /// The producer and the output ends.
    #[must_use]
    pub fn split(self) -> (FrameProducer, EncodedOutput) {
        (self.producer, self.output)
    }

    /// The ring's statistics (depth, blocked time, dropped frames).
    #[must_use]
    pub fn stats(&self) -> RingStats {
        self.producer.stats()
    }
}

fn new_ring(
    options: PipelineOptions,
    frame_len: usize,
) -> Result<(Producer<HostStorage>, Consumer<HostStorage>), PipelineError> {
    FrameRing::new(options.ring_slots, frame_len).map_err(PipelineError::Ring)
}

/// The encoder thread's body: pops leases until the ring ends, the encoder fails or the output
/// goes away, then delivers its last item.
fn encoder_thread(
    mut encoder: Box<dyn VideoEncoder>,
    consumer: &SharedConsumer,
    shared: &Shared,
    pop_wait: Duration,
) {
    let end = catch_unwind(AssertUnwindSafe(|| {
        encode_loop(encoder.as_mut(), consumer, shared, pop_wait)
    }))
    .unwrap_or(Some(PipelineError::EncoderPanicked));
    // Dropping the consumer wakes a producer blocked in the ring; the waker wakes an async one.
    shared.encoder_stopped.store(true, Ordering::SeqCst);
    let leftover = lock(consumer).take();
    let queued = leftover.as_ref().map_or(0, Consumer::queue_depth);
    let mut lost = queued;
    let end = end.map(|e| match e {
        PipelineError::Encoder { source, unencoded } => {
            lost += unencoded;
            PipelineError::Encoder {
                source,
                unencoded: lost,
            }
        }
        other => other,
    });
    if let Some(c) = &leftover {
        // Frames never encoded (an encoder failure, or the output gone) are counted, not silent.
        c.stats().note_dropped(lost as u64);
    }
    drop(leftover);
    shared.space_waker.wake();
    let mut out = lock(&shared.out);
    if let Some(error) = end {
        out.items.push_back(Err(error));
    }
    out.ended = true;
    drop(out);
    shared.ready.notify_all();
    shared.out_waker.wake();
}

/// `None`: the stream ended normally or the output is gone; `Some`: the in-band error to end with.
fn encode_loop(
    encoder: &mut dyn VideoEncoder,
    consumer: &SharedConsumer,
    shared: &Shared,
    pop_wait: Duration,
) -> Option<PipelineError> {
    let mut chunks = Vec::new();
    loop {
        if shared.output_gone.load(Ordering::SeqCst) {
            return None;
        }
        let popped = match lock(consumer).as_mut() {
            Some(c) => c.pop_timeout(pop_wait),
            None => Err(PopError::Closed),
        };
        match popped {
            Ok(lease) => {
                let encoded = encode_lease(encoder, &lease, &mut chunks);
                drop(lease);
                shared.space_waker.wake();
                if !deliver(shared, &mut chunks) {
                    return None;
                }
                if let Err(source) = encoded {
                    // The frame was not accepted: it is lost with the encoder.
                    return Some(PipelineError::Encoder {
                        source,
                        unencoded: 1,
                    });
                }
            }
            Err(PopError::Timeout | PopError::Empty) => {}
            Err(PopError::Closed) => {
                let flushed = encoder.flush(&mut chunks);
                if !deliver(shared, &mut chunks) {
                    return None;
                }
                return flushed.err().map(|source| PipelineError::Encoder {
                    source,
                    unencoded: 0,
                });
            }
            Err(PopError::Disconnected { panicked }) => {
                let flushed = encoder.flush(&mut chunks);
                if !deliver(shared, &mut chunks) {
                    return None;
                }
                return Some(match flushed {
                    Err(source) => PipelineError::Encoder {
                        source,
                        unencoded: 0,
                    },
                    Ok(()) => PipelineError::ProducerDropped { panicked },
                });
            }
        }
    }
}

/// Feeds one ring slot to the encoder: the one place that hands a slot's bytes to the backend.
fn encode_lease(
    encoder: &mut dyn VideoEncoder,
    lease: &ReadSlot<HostStorage>,
    out: &mut Vec<EncodedChunk>,
) -> Result<(), Error> {
    let meta = lease.meta();
    let bytes = lease.slot().get(..meta.len).unwrap_or(lease.slot());
    let mut frame = Frame::new(bytes).with_pts(meta.pts);
    if meta.flags.contains(FrameFlags::FORCE_KEYFRAME) {
        frame = frame.with_force_keyframe();
    }
    encoder.encode(frame, out)
}

/// Moves `chunks` into the output queue, waiting for room (by design, until the output reads or is
/// dropped). `false` when the output is gone.
fn deliver(shared: &Shared, chunks: &mut Vec<EncodedChunk>) -> bool {
    if chunks.is_empty() {
        return !shared.output_gone.load(Ordering::SeqCst);
    }
    let mut out = lock(&shared.out);
    for chunk in chunks.drain(..) {
        while out.items.len() >= shared.capacity && !out.output_gone {
            out = shared
                .room
                .wait(out)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if out.output_gone {
            return false;
        }
        out.items.push_back(Ok(chunk));
        shared.ready.notify_all();
        shared.out_waker.wake();
    }
    true
}

enum WaitFor {
    No,
    Forever,
    Until(Instant),
}

/// The producer end: reserve/write/commit or push, blocking, `try_`, timed or async. `Send`.
pub struct FrameProducer {
    ring: Producer<HostStorage>,
    consumer: SharedConsumer,
    shared: Arc<Shared>,
    policy: BackPressure,
    frame_len: usize,
    scratch: Vec<u8>,
    seq: u64,
    last_pts: Option<i64>,
    dropped: u64,
}

impl fmt::Debug for FrameProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameProducer")
            .field("policy", &self.policy)
            .field("frame_len", &self.frame_len)
            .field("stats", &self.ring.stats())
            .finish_non_exhaustive()
    }
}

struct SlotCtx<'a> {
    seq: &'a mut u64,
    last_pts: &'a mut Option<i64>,
    dropped: &'a mut u64,
    frame_len: usize,
    shared: &'a Shared,
}

impl FrameProducer {
    /// Bytes of one frame (the length of every slot and of every pushed frame).
    #[must_use]
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// The ring's statistics.
    #[must_use]
    pub fn stats(&self) -> RingStats {
        self.ring.stats()
    }

    /// Frames this producer dropped under its back-pressure policy.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The back-pressure policy.
    #[must_use]
    pub fn back_pressure(&self) -> BackPressure {
        self.policy
    }

    fn gone_error(&self) -> Option<PipelineError> {
        if self.shared.output_gone.load(Ordering::SeqCst) {
            Some(PipelineError::OutputDropped)
        } else if self.shared.encoder_stopped.load(Ordering::SeqCst) {
            Some(PipelineError::EncoderStopped)
        } else {
            None
        }
    }

    /// Whether a `try_reserve` on the ring would succeed now (conservative: a stale read says
    /// "no", never a wrong "yes", because only this producer fills slots).
    fn has_space(&self) -> bool {
        let stats = self.ring.stats();
        stats.queue_depth() + stats.in_flight() < stats.capacity()
    }

    /// Drops the oldest queued frame (for [`BackPressure::DropOldest`]); `true` if one was.
    fn drop_oldest(&mut self) -> bool {
        let popped = match lock(&self.consumer).as_mut() {
            Some(c) => c.try_pop(),
            None => return false,
        };
        match popped {
            Ok(lease) => {
                drop(lease);
                self.ring.note_dropped(1);
                self.dropped += 1;
                true
            }
            Err(_) => false,
        }
    }

    fn reserve_inner(&mut self, wait: WaitFor) -> Result<FrameSlot<'_>, PipelineError> {
        if let Some(gone) = self.gone_error() {
            return Err(gone);
        }
        if self.policy == BackPressure::DropOldest && !self.has_space() {
            self.drop_oldest();
        }
        let stats = self.ring.stats();
        let reserved = match wait {
            WaitFor::No => self.ring.try_reserve(),
            _ if self.policy == BackPressure::DropNewest => self.ring.try_reserve(),
            WaitFor::Forever => self.ring.reserve(),
            WaitFor::Until(deadline) => self
                .ring
                .reserve_timeout(deadline.saturating_duration_since(Instant::now())),
        };
        let ctx = SlotCtx {
            seq: &mut self.seq,
            last_pts: &mut self.last_pts,
            dropped: &mut self.dropped,
            frame_len: self.frame_len,
            shared: &self.shared,
        };
        match reserved {
            Ok(slot) => Ok(FrameSlot {
                storage: SlotStorageRef::Ring(slot),
                ctx,
            }),
            Err(ReserveError::Full) if self.policy == BackPressure::DropNewest => Ok(FrameSlot {
                storage: SlotStorageRef::Dropped {
                    buf: &mut self.scratch,
                    stats,
                },
                ctx,
            }),
            Err(e) => Err(map_reserve_error(e, &self.shared)),
        }
    }

    /// Reserves a slot of exactly one frame, waiting while the ring is full (under
    /// [`BackPressure::Block`]; blocking by design, see [`reserve_timeout`](Self::reserve_timeout)).
    ///
    /// # Errors
    /// [`PipelineError::OutputDropped`], [`PipelineError::EncoderStopped`].
    pub fn reserve(&mut self) -> Result<FrameSlot<'_>, PipelineError> {
        self.reserve_inner(WaitFor::Forever)
    }

    /// Reserves a slot without waiting.
    ///
    /// # Errors
    /// [`PipelineError::Full`], and as [`reserve`](Self::reserve).
    pub fn try_reserve(&mut self) -> Result<FrameSlot<'_>, PipelineError> {
        self.reserve_inner(WaitFor::No)
    }

    /// Reserves a slot, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`PipelineError::Timeout`], and as [`reserve`](Self::reserve).
    pub fn reserve_timeout(&mut self, timeout: Duration) -> Result<FrameSlot<'_>, PipelineError> {
        self.reserve_inner(match Instant::now().checked_add(timeout) {
            Some(deadline) => WaitFor::Until(deadline),
            None => WaitFor::Forever,
        })
    }

    /// Reserves a slot asynchronously, on any executor. Cancellation-safe: the slot is taken only
    /// in the poll that returns it, so dropping the pending future reserves nothing; dropping the
    /// returned slot uncommitted gives it back.
    pub fn reserve_async(&mut self) -> ReserveFuture<'_> {
        ReserveFuture {
            producer: Some(self),
        }
    }

    fn push_inner(&mut self, frame: Frame<'_>, wait: WaitFor) -> Result<Submitted, PipelineError> {
        if frame.data.len() != self.frame_len {
            return Err(PipelineError::FrameSize {
                len: frame.data.len(),
                expected: self.frame_len,
            });
        }
        let pts = self.next_pts(frame.pts)?;
        let mut slot = self.reserve_inner(wait)?;
        slot.copy_from_slice(frame.data);
        slot.commit(pts, frame.force_keyframe)
    }

    fn next_pts(&self, pts: Option<i64>) -> Result<i64, PipelineError> {
        match (pts, self.last_pts) {
            (Some(pts), _) => Ok(pts),
            (None, Some(previous)) => {
                previous
                    .checked_add(1)
                    .ok_or(PipelineError::NonMonotonicPts {
                        pts: previous,
                        previous,
                    })
            }
            (None, None) => Ok(0),
        }
    }

    /// Copies `frame` (exactly one frame; its pts, or the previous pts + 1, or 0 first) into a
    /// slot and commits it, waiting while the ring is full (blocking by design; see
    /// [`push_timeout`](Self::push_timeout)).
    ///
    /// # Errors
    /// [`PipelineError::FrameSize`], [`PipelineError::NonMonotonicPts`], and as
    /// [`reserve`](Self::reserve).
    pub fn push<'f>(&mut self, frame: impl Into<Frame<'f>>) -> Result<Submitted, PipelineError> {
        self.push_inner(frame.into(), WaitFor::Forever)
    }

    /// As [`push`](Self::push), without waiting.
    ///
    /// # Errors
    /// [`PipelineError::Full`], and as [`push`](Self::push).
    pub fn try_push<'f>(
        &mut self,
        frame: impl Into<Frame<'f>>,
    ) -> Result<Submitted, PipelineError> {
        self.push_inner(frame.into(), WaitFor::No)
    }

    /// As [`push`](Self::push), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`PipelineError::Timeout`], and as [`push`](Self::push).
    pub fn push_timeout<'f>(
        &mut self,
        frame: impl Into<Frame<'f>>,
        timeout: Duration,
    ) -> Result<Submitted, PipelineError> {
        let wait = match Instant::now().checked_add(timeout) {
            Some(deadline) => WaitFor::Until(deadline),
            None => WaitFor::Forever,
        };
        self.push_inner(frame.into(), wait)
    }

    /// As [`push`](Self::push), asynchronously. Cancellation-safe: the frame is copied and
    /// committed in the poll that gets the slot, so a dropped future submitted nothing.
    ///
    /// # Errors
    /// As [`push`](Self::push).
    pub async fn push_async(&mut self, frame: Frame<'_>) -> Result<Submitted, PipelineError> {
        if frame.data.len() != self.frame_len {
            return Err(PipelineError::FrameSize {
                len: frame.data.len(),
                expected: self.frame_len,
            });
        }
        let pts = self.next_pts(frame.pts)?;
        let mut slot = self.reserve_async().await?;
        slot.copy_from_slice(frame.data);
        slot.commit(pts, frame.force_keyframe)
    }

    /// Ends the input: the encoder thread encodes every committed frame, flushes, and the output
    /// ends after the last chunk.
    ///
    /// # Errors
    /// [`PipelineError::OutputDropped`] or [`PipelineError::EncoderStopped`] when the frames
    /// cannot all come out (the ring is closed all the same).
    pub fn finish(self) -> Result<(), PipelineError> {
        let gone = self.gone_error();
        self.ring.close();
        gone.map_or(Ok(()), Err)
    }
}

fn map_reserve_error(e: ReserveError, shared: &Shared) -> PipelineError {
    match e {
        ReserveError::Full => PipelineError::Full,
        ReserveError::Timeout => PipelineError::Timeout,
        _ if shared.output_gone.load(Ordering::SeqCst) => PipelineError::OutputDropped,
        _ => PipelineError::EncoderStopped,
    }
}

/// The future of [`FrameProducer::reserve_async`].
#[must_use = "futures do nothing unless polled"]
pub struct ReserveFuture<'a> {
    producer: Option<&'a mut FrameProducer>,
}

impl fmt::Debug for ReserveFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReserveFuture")
            .field("done", &self.producer.is_none())
            .finish()
    }
}

impl<'a> Future for ReserveFuture<'a> {
    type Output = Result<FrameSlot<'a>, PipelineError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(producer) = self.producer.take() else {
            return Poll::Ready(Err(PipelineError::EncoderStopped));
        };
        for attempt in 0..2 {
            let ready = producer.gone_error().is_some()
                || producer.ring.is_abandoned()
                || producer.policy == BackPressure::DropNewest
                || producer.has_space()
                || (producer.policy == BackPressure::DropOldest
                    && producer.drop_oldest()
                    && producer.has_space());
            if ready {
                return Poll::Ready(producer.reserve_inner(WaitFor::No));
            }
            if attempt == 0 {
                // Register, then look again: a release between the first look and the
                // registration wakes this waker.
                producer.shared.space_waker.register(cx.waker());
            }
        }
        self.producer = Some(producer);
        Poll::Pending
    }
}

enum SlotStorageRef<'a> {
    /// A ring slot in host memory. (Pinned or device storage would be further variants.)
    Ring(WriteSlot<'a, HostStorage>),
    /// The scratch buffer a frame dropped under [`BackPressure::DropNewest`] is written into.
    Dropped { buf: &'a mut [u8], stats: RingStats },
}

/// A reserved slot of exactly one frame: write the frame into it (it derefs to `[u8]`), then
/// [`commit`](Self::commit). Dropped uncommitted, it is given back and nothing is submitted.
pub struct FrameSlot<'a> {
    storage: SlotStorageRef<'a>,
    ctx: SlotCtx<'a>,
}

impl fmt::Debug for FrameSlot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameSlot")
            .field("len", &self.ctx.frame_len)
            .field("dropping", &self.will_drop())
            .finish()
    }
}

impl FrameSlot<'_> {
    /// Whether committing this slot will drop the frame ([`BackPressure::DropNewest`] on a full
    /// ring): a caller that reads from a socket still reads into it, to stay in step.
    #[must_use]
    pub fn will_drop(&self) -> bool {
        matches!(self.storage, SlotStorageRef::Dropped { .. })
    }

    /// Publishes the frame with presentation timestamp `pts` (above the previous frame's) and,
    /// if `force_keyframe`, a request for an IDR.
    ///
    /// # Errors
    /// [`PipelineError::NonMonotonicPts`] (the slot is given back), or, when the encoder thread
    /// is gone, [`PipelineError::OutputDropped`] / [`PipelineError::EncoderStopped`].
    pub fn commit(self, pts: i64, force_keyframe: bool) -> Result<Submitted, PipelineError> {
        let FrameSlot { storage, ctx } = self;
        if let Some(previous) = *ctx.last_pts {
            if pts <= previous {
                return Err(PipelineError::NonMonotonicPts { pts, previous });
            }
        }
        match storage {
            SlotStorageRef::Ring(slot) => {
                let flags = if force_keyframe {
                    FrameFlags::FORCE_KEYFRAME
                } else {
                    FrameFlags::NONE
                };
                let meta = FrameMeta {
                    len: ctx.frame_len,
                    pts,
                    seq: *ctx.seq,
                    flags,
                };
                slot.commit(meta).map_err(|e| match e {
                    CommitError::Disconnected { .. } => map_reserve_error(
                        ReserveError::Disconnected { panicked: false },
                        ctx.shared,
                    ),
                    _ => PipelineError::EncoderStopped,
                })?;
                *ctx.seq += 1;
                *ctx.last_pts = Some(pts);
                Ok(Submitted::Queued)
            }
            SlotStorageRef::Dropped { stats, .. } => {
                stats.note_dropped(1);
                *ctx.dropped += 1;
                *ctx.last_pts = Some(pts);
                Ok(Submitted::Dropped)
            }
        }
    }
}

impl std::ops::Deref for FrameSlot<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let len = self.ctx.frame_len;
        match &self.storage {
            SlotStorageRef::Ring(slot) => &slot[..len],
            SlotStorageRef::Dropped { buf, .. } => &buf[..len],
        }
    }
}

impl std::ops::DerefMut for FrameSlot<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.ctx.frame_len;
        match &mut self.storage {
            SlotStorageRef::Ring(slot) => &mut slot[..len],
            SlotStorageRef::Dropped { buf, .. } => &mut buf[..len],
        }
    }
}

/// The output end: encoded chunks in decoding order, then the end (`None`), with an error in-band
/// before the end when the stream did not finish cleanly. An [`Iterator`] (blocking) and a
/// [`futures_core::Stream`]. Dropping it stops the encoder thread.
pub struct EncodedOutput {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    kind: EncoderKind,
    headers: Vec<u8>,
    time_base: (u32, u32),
    stats: RingStats,
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
