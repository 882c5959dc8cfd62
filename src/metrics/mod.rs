//! Encoder metrics, recorded through the [`metrics`] facade.
//!
//! The crate records; the application chooses the exporter (for example
//! `metrics-exporter-prometheus`, as the `encode_yuv` example's `--metrics-addr` does) by
//! installing a recorder. Without one, every record is a no-op. The crate never installs one.
//!
//! - [`Metered`] wraps any [`VideoEncoder`] (a [`FallbackEncoder`](crate::FallbackEncoder), a
//!   boxed encoder from [`open_encoder`](crate::open_encoder), a backend) and records frames,
//!   bytes, frame rate, latency and errors of each call, labelled with the `encoder_type` the
//!   wrapped encoder reports at that moment, so the label follows a failover. Attach the frame
//!   ring feeding it ([`Metered::with_ring`]) for the queue depth, the producer's blocked time
//!   and dropped frames.
//! - The fallback chain counts `encoder_failovers_total{from, to}` where it switches encoder.
//! - One process-wide sampler reads the NVENC engine utilization from NVML ([`gpu`]).
//! - [`host_frame_copies`] counts the frame copies the crate made on the host, to check that a
//!   pipeline meant to be zero-copy is.
//! - [`MetricLabels`] adds an application's own labels (a stream or camera id) to every metric
//!   of one encoder.
//!
//! Every metric, its type, unit, labels and when it is updated is listed in [`NAMES`] and in the
//! README's metrics table.
//!
//! ```
//! # #[cfg(feature = "x264")] { // the example opens the in-process x264 backend
//! use nvencode::metrics::{MetricLabels, Metered};
//! use nvencode::{EncoderChoice, EncoderConfig, EncoderKind, VideoEncoder};
//!
//! let config = EncoderConfig::new(320, 240);
//! let labels = MetricLabels::new().with("camera", "front-left")?;
//! let encoder = nvencode::open_encoder(EncoderChoice::Only(EncoderKind::X264), &config)?;
//! let mut encoder = Metered::new(encoder).with_labels(&labels);
//! let frame = vec![128u8; config.validate()?];
//! let mut chunks = Vec::new();
//! encoder.encode_frame(&frame, &mut chunks)?; // records to the installed recorder, if any
//! encoder.flush(&mut chunks)?;
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub(crate) mod copies;
pub mod gpu;
mod labels;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use ::metrics::{Counter, Gauge, Histogram, Label, Unit};

use crate::encoder::{
    Codec, EncodedChunk, EncoderConfig, EncoderKind, FfmpegFamily, Frame, VideoEncoder,
};
use crate::error::Error;
use crate::ring_buffer::RingStats;

pub use copies::host_frame_copies;
pub use gpu::{
    gpu_sampler_state, GpuSample, GpuSampler, GpuSamplerState, GpuUtilizationSource, NvmlSource,
};
use labels::{scope_labels, ScopeGuard};
pub use labels::{LabelError, MetricLabels};

/// The metric names, as the exporter shows them.
pub mod names {
    /// Counter: frames encoded (chunks out).
    pub const FRAMES_TOTAL: &str = "encoder_frames_total";
    /// Counter, bytes: encoded bytes out.
    pub const BYTES_TOTAL: &str = "encoder_bytes_total";
    /// Gauge, frames per second over [`FPS_WINDOW`](super::FPS_WINDOW).
    pub const FPS: &str = "encoder_fps";
    /// Histogram, seconds: from a frame's submission to its chunk.
    pub const LATENCY_SECONDS: &str = "encoder_latency_seconds";
    /// Counter: errors returned by the encoder, by kind.
    pub const ERRORS_TOTAL: &str = "encoder_errors_total";
    /// Counter: switches of the fallback chain to another encoder.
    pub const FAILOVERS_TOTAL: &str = "encoder_failovers_total";
    /// Gauge: frames waiting in the queue before the encoder.
    pub const QUEUE_DEPTH: &str = "encoder_queue_depth";
    /// Gauge (monotonic), seconds: time the producer waited on a full ring.
    pub const PRODUCER_BLOCKED_SECONDS_TOTAL: &str = "encoder_producer_blocked_seconds_total";
    /// Counter: frames the producer dropped instead of queueing.
    pub const FRAMES_DROPPED_TOTAL: &str = "encoder_frames_dropped_total";
    /// Gauge, percent: NVENC engine utilization of a GPU, from NVML.
    pub const GPU_UTILIZATION: &str = "encoder_gpu_utilization";
}

/// Every metric this crate records.
pub const NAMES: &[&str] = &[
    names::FRAMES_TOTAL,
    names::BYTES_TOTAL,
    names::FPS,
    names::LATENCY_SECONDS,
    names::ERRORS_TOTAL,
    names::FAILOVERS_TOTAL,
    names::QUEUE_DEPTH,
    names::PRODUCER_BLOCKED_SECONDS_TOTAL,
    names::FRAMES_DROPPED_TOTAL,
    names::GPU_UTILIZATION,
];

/// The labels the crate sets itself, which [`MetricLabels`] refuses.
pub const RESERVED_LABELS: &[&str] = &["encoder_type", "codec", "kind", "from", "to", "gpu"];

/// `encoder_fps` counts the chunks that came out in this trailing window (or since the first
/// frame, while the stream is younger) and divides by its length.
pub const FPS_WINDOW: Duration = Duration::from_secs(5);

/// Histogram buckets for `encoder_latency_seconds`, in seconds, for exporters that need them
/// configured (Prometheus: `set_buckets_for_metric`): 1 ms to 10 s, about three per decade.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// At most this many frames are remembered between submission and chunk for the latency; an
/// encoder holding more (it cannot, by the contract) loses only their latency samples.
const MAX_PENDING: usize = 4096;

/// Registers the help text and unit of every metric with the recorder installed now. [`Metered`]
/// calls it when it records its first frame; call it yourself to have the descriptions before.
pub fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(names::FRAMES_TOTAL, "Frames encoded (chunks out)");
    describe_counter!(names::BYTES_TOTAL, Unit::Bytes, "Encoded bytes out");
    describe_gauge!(
        names::FPS,
        "Chunks out per second over the last 5 seconds (or since the stream started)"
    );
    describe_histogram!(
        names::LATENCY_SECONDS,
        Unit::Seconds,
        "Time from a frame's submission to its chunk"
    );
    describe_counter!(
        names::ERRORS_TOTAL,
        "Errors returned by the encoder, by kind"
    );
    describe_counter!(
        names::FAILOVERS_TOTAL,
        "Switches of the fallback chain from one encoder to the next"
    );
    describe_gauge!(names::QUEUE_DEPTH, "Frames waiting before the encoder");
    describe_gauge!(
        names::PRODUCER_BLOCKED_SECONDS_TOTAL,
        Unit::Seconds,
        "Total time the producer waited for a free ring slot"
    );
    describe_counter!(
        names::FRAMES_DROPPED_TOTAL,
        "Frames the producer dropped instead of queueing"
    );
    describe_gauge!(
        names::GPU_UTILIZATION,
        Unit::Percent,
        "NVENC engine utilization of the GPU, from NVML"
    );
}

/// Counts one switch of the fallback chain, with the labels of the metered encoder it runs in
/// (if any) and `encoder_type` set to the encoder now running.
pub(crate) fn record_failover(from: EncoderKind, to: EncoderKind, codec: Codec) {
    let labels = scope_labels().with_kind(
        to,
        codec,
        &[
            Label::from_static_parts("from", from.name()),
            Label::from_static_parts("to", to.name()),
        ],
    );
    ::metrics::counter!(names::FAILOVERS_TOTAL, labels).increment(1);
}

/// The `kind` label of `encoder_errors_total`.
#[must_use]
pub fn error_kind(error: &Error) -> &'static str {
    match error {
        Error::Config(_) => "config",
        Error::FrameSize { .. } => "frame_size",
        Error::NonMonotonicPts { .. } => "non_monotonic_pts",
        Error::Finished { .. } => "finished",
        Error::Unavailable { .. } => "unavailable",
        Error::NoEncoder(_) => "no_encoder",
        Error::Backend { .. } => "backend",
        Error::Nvenc(_) => "nvenc",
        Error::NvencCapability { .. } => "nvenc_capability",
        Error::Unsupported { .. } => "unsupported",
        Error::Subprocess { .. } => "subprocess",
        Error::NvencLoad(_) => "nvenc_load",
        Error::Hung { .. } => "hung",
        Error::NoGpuAccepted { .. } => "no_gpu_accepted",
    }
}

/// Whether `kind` encodes on an NVIDIA GPU's NVENC engine (so the GPU sampler should run).
fn on_gpu(kind: EncoderKind) -> bool {
    matches!(
        kind,
        EncoderKind::Nvenc | EncoderKind::Ffmpeg(FfmpegFamily::Nvenc)
    )
}

/// The `gpu` label of an encoder on GPU `on` (its CUDA ordinal), none for one on no GPU.
fn gpu_label(on: Option<usize>) -> Vec<Label> {
    on.map(|g| Label::new("gpu", g.to_string()))
        .into_iter()
        .collect()
}

/// Where the queue depth comes from.
enum Queue {
    Ring(RingStats),
    Depth(Box<dyn Fn() -> usize + Send>),
}

/// The registered metrics of one encoder type (on one GPU, for an encoder on one).
struct Handles {
    kind: EncoderKind,
    /// The stream's codec, the `codec` label.
    codec: Codec,
    /// The encoder's GPU ([`VideoEncoder::gpu`]), the `gpu` label.
    on: Option<usize>,
    frames: Counter,
    bytes: Counter,
    fps: Gauge,
    latency: Histogram,
    queue_depth: Option<Gauge>,
    blocked: Option<Gauge>,
    dropped: Option<Counter>,
}

impl Handles {
    fn register(
        labels: &MetricLabels,
        kind: EncoderKind,
        codec: Codec,
        on: Option<usize>,
        queue: Option<&Queue>,
    ) -> Handles {
        let l = labels.with_kind(kind, codec, &gpu_label(on));
        let ring = matches!(queue, Some(Queue::Ring(_)));
        Handles {
            kind,
            codec,
            on,
            frames: ::metrics::counter!(names::FRAMES_TOTAL, l.clone()),
            bytes: ::metrics::counter!(names::BYTES_TOTAL, l.clone()),
            fps: ::metrics::gauge!(names::FPS, l.clone()),
            latency: ::metrics::histogram!(names::LATENCY_SECONDS, l.clone()),
            queue_depth: queue.map(|_| ::metrics::gauge!(names::QUEUE_DEPTH, l.clone())),
            blocked: ring
                .then(|| ::metrics::gauge!(names::PRODUCER_BLOCKED_SECONDS_TOTAL, l.clone())),
            dropped: ring.then(|| ::metrics::counter!(names::FRAMES_DROPPED_TOTAL, l)),
        }
    }
}

/// Chunks out per second over [`FPS_WINDOW`].
#[derive(Debug, Default)]
struct FpsWindow {
    /// When chunks came out, and how many at that moment, oldest first.
    marks: VecDeque<(Instant, u64)>,
    in_window: u64,
    started: Option<Instant>,
}

impl FpsWindow {
    fn start(&mut self, now: Instant) {
        self.started.get_or_insert(now);
    }

    fn add(&mut self, now: Instant, chunks: u64) {
        if chunks > 0 {
            self.marks.push_back((now, chunks));
            self.in_window += chunks;
        }
    }

    fn rate(&mut self, now: Instant) -> f64 {
        while let Some(&(at, n)) = self.marks.front() {
            if now.saturating_duration_since(at) <= FPS_WINDOW {
                break;
            }
            self.marks.pop_front();
            self.in_window -= n;
        }
        let span = self
            .started
            .map_or(FPS_WINDOW, |s| now.saturating_duration_since(s))
            .min(FPS_WINDOW);
        if span.is_zero() {
            return 0.0;
        }
        self.in_window as f64 / span.as_secs_f64()
    }
}

/// A [`VideoEncoder`] that records metrics for the encoder it wraps. See the
/// [module docs](self); each metric and when it is updated is in the README's table.
///
/// Handles are registered with the recorder in force at the first call (and again whenever the
/// wrapped encoder's type changes), so install the recorder before encoding.
pub struct Metered<E> {
    inner: E,
    labels: MetricLabels,
    queue: Option<Queue>,
    handles: Option<Handles>,
    described: bool,
    /// Submission times of accepted frames not yet out, by frame index from `pending_base`.
    pending: VecDeque<Option<Instant>>,
    pending_base: u64,
    accepted: u64,
    fps: FpsWindow,
    seen_blocked: Duration,
    seen_dropped: u64,
    gpu: Option<gpu::GpuLease>,
}

impl<E: fmt::Debug> fmt::Debug for Metered<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metered")
            .field("inner", &self.inner)
            .field("labels", &self.labels)
            .field("accepted", &self.accepted)
            .finish_non_exhaustive()
    }
}

impl<E: VideoEncoder> Metered<E> {
    /// Wraps `inner`, with no labels of the application's and no queue.
    pub fn new(inner: E) -> Self {
        Metered {
            inner,
            labels: MetricLabels::default(),
            queue: None,
            handles: None,
            described: false,
            pending: VecDeque::new(),
            pending_base: 0,
            accepted: 0,
            fps: FpsWindow::default(),
            seen_blocked: Duration::ZERO,
            seen_dropped: 0,
            gpu: None,
        }
    }

    /// Adds `labels` to every metric of this encoder.
    #[must_use]
    pub fn with_labels(mut self, labels: &MetricLabels) -> Self {
        self.labels = labels.clone();
        self.handles = None;
        self
    }

    /// Reads `encoder_queue_depth`, `encoder_producer_blocked_seconds_total` and
    /// `encoder_frames_dropped_total` from the frame ring that feeds this encoder, at each
    /// call.
    #[must_use]
    pub fn with_ring(mut self, stats: RingStats) -> Self {
        self.queue = Some(Queue::Ring(stats));
        self.handles = None;
        self
    }

    /// Reads `encoder_queue_depth` from `depth` at each call: for a queue that is not a frame
    /// ring (a channel's length; a constant 0 where frames are read and encoded one at a time).
    #[must_use]
    pub fn with_queue_depth(mut self, depth: impl Fn() -> usize + Send + 'static) -> Self {
        self.queue = Some(Queue::Depth(Box::new(depth)));
        self.handles = None;
        self
    }

    /// The wrapped encoder.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// The wrapped encoder, mutably (what is encoded through it directly is not recorded).
    pub fn inner_mut(&mut self) -> &mut E {
        &mut self.inner
    }

    /// Unwraps the encoder.
    pub fn into_inner(self) -> E {
        self.inner
    }

    /// Registers the handles of the encoder type running now, if it changed: the previous
    /// type's frame rate drops to 0, and the GPU sampler runs while the type is on a GPU.
    fn register(&mut self) {
        let kind = self.inner.kind();
        let on = self.inner.gpu();
        if self
            .handles
            .as_ref()
            .is_some_and(|h| h.kind == kind && h.on == on)
        {
            return;
        }
        if let Some(old) = self.handles.take() {
            old.fps.set(0.0);
            // The queue feeds the new encoder now; the old type's gauge must not keep its depth.
            if let Some(depth) = &old.queue_depth {
                depth.set(0.0);
            }
        }
        if !self.described {
            describe();
            self.described = true;
        }
        self.gpu = on_gpu(kind).then(gpu::GpuLease::acquire);
        self.handles = Some(Handles::register(
            &self.labels,
            kind,
            self.inner.config().codec,
            on,
            self.queue.as_ref(),
        ));
    }

    /// Records what one call produced: `out[start..]` and its error, if any.
    fn record(&mut self, start: usize, out: &[EncodedChunk], error: Option<&Error>, now: Instant) {
        self.register();
        let Some(h) = self.handles.take() else {
            return;
        };
        let chunks = out.get(start..).unwrap_or_default();
        let mut bytes = 0u64;
        for chunk in chunks {
            bytes += chunk.data.len() as u64;
            if let Some(at) = self.take_pending(chunk.frame_index) {
                h.latency
                    .record(now.saturating_duration_since(at).as_secs_f64());
            }
        }
        h.frames.increment(chunks.len() as u64);
        h.bytes.increment(bytes);
        self.fps.add(now, chunks.len() as u64);
        h.fps.set(self.fps.rate(now));
        match &self.queue {
            Some(Queue::Ring(stats)) => {
                if let Some(gauge) = &h.queue_depth {
                    gauge.set(stats.queue_depth() as f64);
                }
                let blocked = stats.producer_blocked();
                if let Some(gauge) = &h.blocked {
                    let delta = blocked.saturating_sub(self.seen_blocked);
                    if !delta.is_zero() {
                        gauge.increment(delta.as_secs_f64());
                    }
                }
                self.seen_blocked = blocked;
                let dropped = stats.dropped();
                if let Some(counter) = &h.dropped {
                    counter.increment(dropped.saturating_sub(self.seen_dropped));
                }
                self.seen_dropped = dropped;
            }
            Some(Queue::Depth(depth)) => {
                if let Some(gauge) = &h.queue_depth {
                    gauge.set(depth() as f64);
                }
            }
            None => {}
        }
        if let Some(e) = error {
            let mut extra = gpu_label(h.on);
            extra.push(Label::from_static_parts("kind", error_kind(e)));
            let labels = self.labels.with_kind(h.kind, h.codec, &extra);
            ::metrics::counter!(names::ERRORS_TOTAL, labels).increment(1);
        }
        self.handles = Some(h);
    }

    /// Remembers when the frame with the next index was submitted.
    fn submitted(&mut self, at: Instant) {
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
            self.pending_base += 1;
        }
        self.pending.push_back(Some(at));
        self.accepted += 1;
    }

    fn take_pending(&mut self, frame_index: u64) -> Option<Instant> {
        let at = frame_index
            .checked_sub(self.pending_base)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.pending.get_mut(i))
            .and_then(Option::take);
        while let Some(None) = self.pending.front() {
            self.pending.pop_front();
            self.pending_base += 1;
        }
        at
    }
}

impl<E: VideoEncoder> Metered<E> {
    /// One frame through `encode` (or `encode_slot`), measured.
    fn metered_encode(
        &mut self,
        out: &mut Vec<EncodedChunk>,
        encode: impl FnOnce(&mut E, &mut Vec<EncodedChunk>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let submitted = Instant::now();
        self.fps.start(submitted);
        if self.pending.is_empty() {
            // Nothing pending: the next chunk's index is the next accepted frame's.
            self.pending_base = self.accepted;
        }
        let start = out.len();
        let result = {
            let _scope = ScopeGuard::enter(&self.labels);
            encode(&mut self.inner, out)
        };
        if result.is_ok() {
            self.submitted(submitted);
        }
        self.record(start, out, result.as_ref().err(), Instant::now());
        result
    }
}

impl<E: VideoEncoder> VideoEncoder for Metered<E> {
    fn encode(&mut self, frame: Frame<'_>, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        self.metered_encode(out, |inner, out| inner.encode(frame, out))
    }

    fn encode_slot(
        &mut self,
        slot: &crate::encoder::SlotFrame,
        out: &mut Vec<EncodedChunk>,
    ) -> Result<(), Error> {
        self.metered_encode(out, |inner, out| inner.encode_slot(slot, out))
    }
    fn max_slot_leases(&self) -> usize {
        self.inner.max_slot_leases()
    }

    fn gpu(&self) -> Option<usize> {
        self.inner.gpu()
    }

    fn bframes_in_use(&self) -> Option<u32> {
        self.inner.bframes_in_use()
    }

    fn flush(&mut self, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        let start = out.len();
        let result = {
            let _scope = ScopeGuard::enter(&self.labels);
            self.inner.flush(out)
        };
        self.record(start, out, result.as_ref().err(), Instant::now());
        if result.is_ok() {
            // The stream has ended: it produces no more frames.
            if let Some(h) = &self.handles {
                h.fps.set(0.0);
            }
            self.gpu = None;
        }
        result
    }

    fn kind(&self) -> EncoderKind {
        self.inner.kind()
    }

    fn config(&self) -> &EncoderConfig {
        self.inner.config()
    }

    fn sequence_headers(&self) -> &[u8] {
        self.inner.sequence_headers()
    }

    fn time_base(&self) -> (u32, u32) {
        self.inner.time_base()
    }

    fn reconfigure(&mut self, rate_control: crate::encoder::RateControl) -> Result<(), Error> {
        let _scope = ScopeGuard::enter(&self.labels);
        self.inner.reconfigure(rate_control)
    }
}

#[cfg(test)]
mod tests;
