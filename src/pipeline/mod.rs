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
//! use nvencode::pipeline::EncodePipeline;
//! use nvencode::{EncoderConfig, GpuEncoderConfig, EncoderKind};
//!
//! let config = EncoderConfig::new(64, 64);
//! let mut gpu = GpuEncoderConfig::default();
//! gpu.preferred_encoder = Some(EncoderKind::X264);
//! let (mut producer, output) = EncodePipeline::open(&config, &gpu)?.split();
//! let reader = std::thread::spawn(move || -> Result<(), nvencode::pipeline::PipelineError> {
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
//! The ring lives in the memory the encoder that opened reads ([`PipelineOptions::memory`],
//! [`SlotMemory::Auto`] by default): CUDA pinned host memory when it is NVENC, so a frame written
//! into a slot is uploaded from there by DMA and never copied again on the host (NVENC's staging
//! *is* the ring); plain host memory for x264 and the ffmpeg-subprocess backends. The encoder
//! thread hands each frame to the encoder as its slot ([`VideoEncoder::encode_slot`]), in one
//! place: NVENC keeps the slot's lease until the picture's bitstream is read back, and the
//! fallback chain keeps it to replay the frame after a failover.
//!
//! Because the encoder keeps slots, the ring has [`PipelineOptions::ring_slots`] for the producer
//! to queue into *plus* the most leases the encoder keeps
//! ([`VideoEncoder::max_slot_leases`]: NVENC's frames in flight and the chain's reordering
//! depth), and it announces that count as its lease budget
//! ([`crate::ring_buffer::Consumer::set_lease_budget`]). An encoder that would keep more (x264's
//! lookahead at slower presets, or a backend the chain failed over to) copies the oldest held
//! frame and gives its slot back, so the producer never waits on slots the encoder holds. With
//! x264 and the ffmpeg backends, which copy each frame into their own buffers and keep no
//! leases, no slots are added: the chain keeps the newest frame's lease and copies each older
//! frame it must hold for a replay once (none with `zerolatency`, where a frame's chunk comes
//! out in the call that took it).
//!
//! When the fallback chain fails over mid-stream, the ring's storage does not change and is not
//! reallocated: the frames already in the ring, and those the chain holds, are encoded by the
//! next backend from the same slots (pinned memory is host memory to x264 and ffmpeg). Pinned
//! slots cost nothing extra to a CPU backend; they stay pinned until the stage ends.
//!
//! # Device slots
//!
//! A producer whose frames are already on the GPU (a hardware decoder's surfaces, a renderer, a
//! CUDA kernel) opens the stage with [`SlotMemory::Device`]: every slot is a pitched surface in
//! device memory. It [`reserve_device`](FrameProducer::reserve_device)s a slot (or
//! `try_`/`_timeout`/[`reserve_device_async`](FrameProducer::reserve_device_async)), fills it and
//! commits it without waiting for the GPU work: with no `unsafe`, by
//! [`copy_from_device`](DeviceFrameSlot::copy_from_device) from a cudarc allocation (checked
//! against the frame's layout, ordered on the slot's stream, the source free to reuse at once);
//! or with its own kernel or copy queued on the slot's [`stream`](DeviceFrameSlot::stream)
//! ([`Stream::cudarc`](crate::cuda::Stream::cudarc) for cudarc,
//! [`Stream::cu_stream`](crate::cuda::Stream::cu_stream) for raw driver calls). NVENC orders its
//! reads after that stream and encodes from the registered slot, with no copy. The slot's lease
//! is what keeps the surface alive and unwritten while NVENC reads it, so nothing rests on the
//! caller's discipline. Should the chain fail over to a backend that reads host memory, each
//! frame is downloaded from its slot (one device-to-host copy).
//!
//! ```no_run
//! use nvencode::cuda::cudarc::driver::CudaContext;
//! use nvencode::pipeline::{EncodePipeline, PipelineOptions, SlotMemory};
//! use nvencode::{EncoderConfig, GpuEncoderConfig};
//!
//! let config = EncoderConfig::new(1920, 1080);
//! let gpu = GpuEncoderConfig::default();
//! let options = PipelineOptions::from_gpu_config(&gpu).with_slot_memory(SlotMemory::Device);
//! let (mut producer, output) = EncodePipeline::open_with(&config, &gpu, options)?.split();
//! # let _ = output;
//! // A frame the producer's own GPU work made: NV12, 1920 bytes a row.
//! let stream = CudaContext::new(0)?.default_stream();
//! let frame = stream.alloc_zeros::<u8>(1920 * 1080 * 3 / 2)?;
//! let mut slot = producer.reserve_device()?;
//! slot.copy_from_device(&frame, 1920)?; // queued on the slot's stream
//! slot.commit(0, false)?; // no wait for the GPU work
//! producer.finish()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Choosing the ring size
//!
//! `ring_slots` is the smoothing depth: how far the producer may run ahead of the encoder. It
//! depends on the source's longest stall `s` (in frame intervals; a network source delivers what
//! it sent during a stall at once when the stall ends) and on its utilisation, its mean rate as a
//! fraction of the rate the encoder sustains: `s + 2` slots with 10% headroom or more, `s + 3`
//! with less, and no finite ring without headroom, where a ring only delays the loss.
//! [`ring_slots_for`] computes it; the README has the measurements behind it. The default 8 (of
//! [`GpuEncoderConfig::ring_buffer_size`]) covers stalls of up to 6 intervals (200 ms at 30 fps)
//! with 10% headroom. More slots cost memory (`ring_slots × frame length`, pinned for NVENC) and
//! add latency only while they are full.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use atomic_waker::AtomicWaker;

use crate::encoder::EncoderConfig;
use crate::encoder::{EncodedChunk, EncoderKind, VideoEncoder};
use crate::gpu_config::GpuEncoderConfig;
use crate::ring_buffer::{PopError, RingError, RingStats, MAX_SLOTS};

mod device;
mod output;
mod producer;
mod ring;
mod sizing;
mod state;
mod teardown;

pub use device::{DeviceFrameSlot, ReserveDeviceFuture};

pub use output::{EncodedOutput, Received};
pub use producer::{FrameProducer, FrameSlot, ReserveFuture};
pub use ring::SlotMemory;
use ring::{RingConsumer, RingProducer};
pub use sizing::ring_slots_for;
use state::{lock, OutQueue, Shared, SharedConsumer};
pub use state::{BackPressure, PipelineError, Submitted};

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
    /// The memory the ring's slots live in.
    pub memory: SlotMemory,
    /// The CUDA device (ordinal) pinned and device slots are allocated on, which is also the
    /// one NVENC encodes on when the stage opens the encoder ([`EncodePipeline::open_with`]):
    /// `None` (the default) takes the device [`GpuEncoderConfig::gpu`] names, or the one NVENC
    /// was placed on; set to another device than that one, opening fails with
    /// [`ConfigError::CudaDeviceMismatch`](crate::ConfigError::CudaDeviceMismatch)
    /// ([`GpuEncoderConfig::gpu_with`] decides). An encoder given to
    /// [`EncodePipeline::with_encoder`] is the caller's: open its NVENC on this device
    /// ([`crate::nvenc::NvencOptions::with_device`]).
    pub cuda_device: Option<usize>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            ring_slots: 8,
            back_pressure: BackPressure::Block,
            output_capacity: 64,
            memory: SlotMemory::Auto,
            cuda_device: None,
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
            cuda_device: match gpu.gpu {
                crate::nvenc::GpuChoice::Index(device) => Some(device),
                _ => None,
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

    /// With the ring's slots in `memory`.
    #[must_use]
    pub const fn with_slot_memory(mut self, memory: SlotMemory) -> Self {
        self.memory = memory;
        self
    }

    /// With the ring's pinned or device slots, and NVENC when the stage opens it, on CUDA device
    /// `ordinal` (see [`PipelineOptions::cuda_device`]).
    #[must_use]
    pub const fn with_cuda_device(mut self, ordinal: usize) -> Self {
        self.cuda_device = Some(ordinal);
        self
    }

    /// The device the ring's CUDA slots go on: [`PipelineOptions::cuda_device`], 0 when unset.
    fn device(&self) -> usize {
        self.cuda_device.unwrap_or(0)
    }
}

/// How long the encoder thread waits for a frame before it looks at the output side again. Under
/// [`BackPressure::DropOldest`] the producer takes the same lock to drop a frame, so it is short.
const POP_WAIT: Duration = Duration::from_millis(20);
const POP_WAIT_DROP_OLDEST: Duration = Duration::from_millis(1);

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
    /// The ring and NVENC are on one CUDA device, which
    /// [`GpuEncoderConfig::gpu_with`] chooses from `gpu` and `options`.
    ///
    /// # Errors
    /// As [`open`](Self::open), and [`PipelineError::OutputCapacity`];
    /// [`PipelineError::Open`] with
    /// [`ConfigError::CudaDeviceMismatch`](crate::ConfigError::CudaDeviceMismatch) when `gpu` and
    /// `options` name different CUDA devices.
    pub fn open_with(
        config: &EncoderConfig,
        gpu: &GpuEncoderConfig,
        options: PipelineOptions,
    ) -> Result<Self, PipelineError> {
        let choice = gpu
            .gpu_with(options.cuda_device)
            .map_err(|e| PipelineError::Open(e.into()))?;
        let encoder = gpu.open_on(config, choice).map_err(PipelineError::Open)?;
        // The ring goes on NVENC's GPU: the one named, or where NVENC was placed (or the one a
        // UUID named, which must then be the ring's if the options named one).
        if let (Some(ring), Some(nvenc)) = (options.cuda_device, encoder.gpu()) {
            if ring != nvenc {
                return Err(PipelineError::Open(
                    crate::error::ConfigError::CudaDeviceMismatch { ring, nvenc }.into(),
                ));
            }
        }
        let ring_device = options.cuda_device.or_else(|| encoder.gpu()).unwrap_or(0);
        Self::with_encoder_metered(Box::new(encoder), options.with_cuda_device(ring_device))
    }

    fn with_encoder_metered(
        encoder: Box<dyn VideoEncoder>,
        options: PipelineOptions,
    ) -> Result<Self, PipelineError> {
        let frame_len = encoder
            .config()
            .validate()
            .map_err(|e| PipelineError::Open(e.into()))?;
        let (ring, consumer) = stage_ring(encoder.as_ref(), options, frame_len)?;
        let metered = crate::metrics::Metered::new(encoder).with_ring(ring.stats());
        Self::start(Box::new(metered), ring, consumer, options, frame_len)
    }

    /// A stage around an encoder you opened yourself (a [`crate::FallbackEncoder`] with a chain of
    /// your own, a metered encoder, a test double). The ring's CUDA slots go on
    /// [`PipelineOptions::cuda_device`] (0 when unset): an NVENC encoder must be on that device.
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
        let (ring, consumer) = stage_ring(encoder.as_ref(), options, frame_len)?;
        Self::start(encoder, ring, consumer, options, frame_len)
    }

    fn start(
        encoder: Box<dyn VideoEncoder>,
        ring: RingProducer,
        consumer: RingConsumer,
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
                finished_by: None,
            }),
            capacity: options.output_capacity,
            ready: Condvar::new(),
            room: Condvar::new(),
            out_waker: AtomicWaker::new(),
            space_waker: AtomicWaker::new(),
            output_gone: AtomicBool::new(false),
            encoder_stopped: AtomicBool::new(false),
            ring_counted: Mutex::new(false),
        });
        let gpu = encoder.gpu();
        let kind = encoder.kind();
        let encoder_config = &encoder.config().clone();
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
        let device_scratch = device::drop_scratch(
            ring.memory(),
            options.back_pressure,
            options.device(),
            encoder_config,
        )?;
        Ok(EncodePipeline {
            producer: FrameProducer {
                device_scratch,
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
                gpu,
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

// The pipeline's constructor on `GpuEncoderConfig` lives here, not in `gpu_config.rs`, so that
// module does not import this one (which imports it).
impl GpuEncoderConfig {
    /// Opens the [pipeline stage](crate::pipeline) with these settings: the encoder as
    /// [`open`](Self::open) does, a ring of `ring_buffer_size` slots (one slot when
    /// `enable_ring_buffer` is false), back-pressure `Block`.
    ///
    /// # Errors
    /// As [`crate::pipeline::EncodePipeline::open`].
    pub fn open_pipeline(&self, config: &EncoderConfig) -> Result<EncodePipeline, PipelineError> {
        EncodePipeline::open(config, self)
    }
}

/// The stage's ring for `encoder`: in the memory it reads ([`SlotMemory::Auto`]: pinned for
/// NVENC, host otherwise), with `ring_slots` slots for the producer to queue into plus the slots
/// the encoder may keep leased ([`VideoEncoder::max_slot_leases`]), which is also the lease
/// budget the ring's consumer announces (so a fallback chain that fails over to an encoder that
/// keeps frames longer holds copies beyond it, never the producer's slots).
fn stage_ring(
    encoder: &dyn VideoEncoder,
    options: PipelineOptions,
    frame_len: usize,
) -> Result<(RingProducer, RingConsumer), PipelineError> {
    if options.ring_slots == 0 || options.ring_slots > MAX_SLOTS {
        return Err(PipelineError::Ring(RingError::InvalidSlotCount {
            slots: options.ring_slots,
            max: MAX_SLOTS,
        }));
    }
    // At least one: an encoder whose output is late by a frame it did not announce must not
    // hold the producer's only slot.
    let held = encoder.max_slot_leases().max(1);
    let config = encoder.config();
    let slots = options.ring_slots.saturating_add(held).min(MAX_SLOTS);
    // CUDA memory is allocated on a bounded side thread (see `teardown.rs`): a wedged driver
    // must not keep the stage from opening. The bound is NVENC's open deadline.
    let bound = crate::nvenc::NvencOptions::default().open_timeout;
    let (device, encoder_config) = (options.device(), config.clone());
    let cuda_ring = move |memory: SlotMemory| {
        let config = encoder_config.clone();
        teardown::run_bounded("the frame ring", bound, move || {
            ring::new_ring(memory, device, slots, &config, frame_len)
        })
        .unwrap_or(Err(RingError::AllocationHung { bound }))
    };
    let made = match options.memory {
        SlotMemory::Auto if encoder.kind() == EncoderKind::Nvenc => {
            match cuda_ring(SlotMemory::Pinned) {
                Ok(ends) => Ok(ends),
                Err(e) => {
                    tracing::warn!(error = %e, "no pinned ring for NVENC; using host memory (one host copy per frame)");
                    ring::new_ring(SlotMemory::Host, device, slots, config, frame_len)
                }
            }
        }
        memory @ (SlotMemory::Pinned | SlotMemory::Device) => cuda_ring(memory),
        memory => ring::new_ring(memory, device, slots, config, frame_len),
    };
    let (producer, consumer) = made.map_err(PipelineError::Ring)?;
    consumer.set_lease_budget(held);
    Ok((producer, consumer))
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
    let queued = {
        let mut counted = lock(&shared.ring_counted);
        *counted = true;
        leftover.as_ref().map_or(0, RingConsumer::queue_depth)
    };
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
    // The consumer ends now (a producer still committing sees it gone, so no frame slips in
    // uncounted), but the ring's memory, which may be freed with it (CUDA memory, when the
    // producer is gone already), is freed on a bounded side thread.
    let memory = leftover.as_ref().map(RingConsumer::hold_storage);
    drop(leftover);
    teardown::drop_bounded(memory, "the frame ring", teardown::RELEASE_BOUND);
    shared.space_waker.wake();
    let finished_by = encoder.kind();
    // Torn down before the end is announced, so the output's join of this thread (done under the
    // output lock) waits for nothing: each backend's drop is bounded (a child's group kill and
    // reap, NVENC teardown; a hung NVENC call is abandoned, not waited for).
    drop(encoder);
    let mut out = lock(&shared.out);
    if let Some(error) = end {
        out.items.push_back(Err(error));
    }
    out.ended = true;
    out.finished_by = Some(finished_by);
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
    // Frames the encoder accepted, and chunks that came out (one per accepted frame, by the
    // encoder contract): when the encoder fails, the difference is what it took down with it.
    let (mut accepted, mut delivered) = (0usize, 0usize);
    let mut out_of = |chunks: &mut Vec<EncodedChunk>| {
        delivered += chunks.len();
        let alive = deliver(shared, chunks);
        (alive, delivered)
    };
    loop {
        if shared.output_gone.load(Ordering::SeqCst) {
            return None;
        }
        let popped = match lock(consumer).as_mut() {
            Some(c) => c.pop_timeout(pop_wait),
            None => Err(PopError::Closed),
        };
        match popped {
            Ok(slot) => {
                // The one place the stage hands a frame to the encoder: as its ring slot, so
                // NVENC uploads from a pinned slot and the fallback chain holds the lease for a
                // replay, with no host copy of the bytes.
                let encoded = encoder.encode_slot(&slot, &mut chunks);
                drop(slot);
                shared.space_waker.wake();
                if encoded.is_ok() {
                    accepted += 1;
                }
                let (alive, delivered) = out_of(&mut chunks);
                if !alive {
                    return None;
                }
                if let Err(source) = encoded {
                    // This frame was not accepted, and those accepted but not delivered are
                    // lost with the encoder.
                    return Some(PipelineError::Encoder {
                        source,
                        unencoded: 1 + accepted.saturating_sub(delivered),
                    });
                }
            }
            Err(PopError::Timeout | PopError::Empty) => {}
            Err(PopError::Closed) => {
                let flushed = encoder.flush(&mut chunks);
                let (alive, delivered) = out_of(&mut chunks);
                if !alive {
                    return None;
                }
                return flushed.err().map(|source| PipelineError::Encoder {
                    source,
                    unencoded: accepted.saturating_sub(delivered),
                });
            }
            Err(PopError::Disconnected { panicked }) => {
                let flushed = encoder.flush(&mut chunks);
                let (alive, delivered) = out_of(&mut chunks);
                if !alive {
                    return None;
                }
                return Some(match flushed {
                    Err(source) => PipelineError::Encoder {
                        source,
                        unencoded: accepted.saturating_sub(delivered),
                    },
                    Ok(()) => PipelineError::ProducerDropped { panicked },
                });
            }
        }
    }
}

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

#[cfg(test)]
mod tests;
