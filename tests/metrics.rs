//! The metrics (`nvencode::metrics`): what a recorder sees after frames go through x264, the
//! emulated NVENC and a failover; the queue gauges over a real ring; the GPU sampler with a fake
//! NVML; the Grafana dashboard against the metric names; and a real Prometheus scrape of the
//! `encode_yuv` example.
//!
//! Each in-process test records into its own local `DebuggingRecorder`, so tests running in
//! parallel do not see each other's metrics. The emulated-NVENC tests run their body in a child
//! process against the emulated driver (`EmuDriver::command_self`); there the GPU sampler's thread
//! records into the global recorder, which the child installs (it is alone in its process).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use nvenc_emu_harness::{in_child, EmuDriver};
use nvencode::fallback::Opener;
use nvencode::ffmpeg::{FfmpegEncoder, FfmpegOptions};
use nvencode::metrics::{
    gpu_sampler_state, names, GpuSample, GpuSampler, GpuSamplerState, GpuUtilizationSource,
    LabelError, Metered, MetricLabels, NvmlSource,
};
use nvencode::ring_buffer::{FrameMeta, FrameRing, ReserveError};
use nvencode::{
    EncodedChunk, EncoderConfig, EncoderKind, FallbackEncoder, FfmpegFamily, Frame, Tune,
    VideoEncoder, X264Encoder,
};

/// One series: metric name and its labels, sorted.
type Series = (String, Vec<(String, String)>);

/// What a recorder held, summed over snapshots (a `DebuggingRecorder` snapshot resets counters
/// and gauges, so every snapshot taken is folded in here).
#[derive(Debug, Default)]
struct Seen {
    counters: BTreeMap<Series, u64>,
    /// The value of each gauge in the latest snapshot that had it.
    gauges: BTreeMap<Series, f64>,
    histograms: BTreeMap<Series, Vec<f64>>,
}

impl Seen {
    fn take(&mut self, snapshotter: &Snapshotter) {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            let series = (key.name().to_owned(), labels);
            match value {
                DebugValue::Counter(n) => *self.counters.entry(series).or_default() += n,
                DebugValue::Gauge(v) => {
                    self.gauges.insert(series, v.into_inner());
                }
                DebugValue::Histogram(v) => self
                    .histograms
                    .entry(series)
                    .or_default()
                    .extend(v.into_iter().map(|x| x.into_inner())),
            }
        }
    }

    /// Every series of `name`.
    fn series<'a, T>(
        map: &'a BTreeMap<Series, T>,
        name: &'a str,
    ) -> impl Iterator<Item = (&'a [(String, String)], &'a T)> + 'a {
        map.iter()
            .filter(move |((n, _), _)| n == name)
            .map(|((_, l), v)| (l.as_slice(), v))
    }

    /// The counter `name` with exactly `labels`.
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        self.counters.get(&series(name, labels)).copied()
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.gauges.get(&series(name, labels)).copied()
    }

    fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Option<&Vec<f64>> {
        self.histograms.get(&series(name, labels))
    }

    fn has(&self, name: &str) -> bool {
        Self::series(&self.counters, name).next().is_some()
            || Self::series(&self.gauges, name).next().is_some()
            || Self::series(&self.histograms, name).next().is_some()
    }
}

/// The series `name` with `labels`; an encoder's series (one with `encoder_type`, other than the
/// per-GPU utilization gauge) also has `codec`, `h264` in these tests unless given.
fn series(name: &str, labels: &[(&str, &str)]) -> Series {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let encoder = labels.iter().any(|(k, _)| k == "encoder_type");
    if encoder && name != names::GPU_UTILIZATION && !labels.iter().any(|(k, _)| k == "codec") {
        labels.push(("codec".to_owned(), "h264".to_owned()));
    }
    labels.sort();
    (name.to_owned(), labels)
}

fn bytes(chunks: &[EncodedChunk]) -> u64 {
    chunks.iter().map(|c| c.data.len() as u64).sum()
}

/// Encodes `frames` through `encoder`, snapshotting once before the flush (for the frame-rate
/// gauge, which the flush sets to 0) and once after; checks that the frame rate before the flush
/// is positive exactly when chunks had come out by then.
fn encode_recorded(
    encoder: &mut dyn VideoEncoder,
    frames: &[Vec<u8>],
    snapshotter: &Snapshotter,
    seen: &mut Seen,
) -> Vec<EncodedChunk> {
    let mut chunks = Vec::new();
    for frame in frames {
        encoder.encode_frame(frame, &mut chunks).expect("encode");
    }
    seen.take(snapshotter);
    let kind = encoder.kind().name();
    let gpu = encoder.gpu().map(|g| g.to_string());
    let mut labels = vec![("encoder_type", kind), ("camera", "cam-7")];
    if let Some(gpu) = &gpu {
        labels.push(("gpu", gpu.as_str()));
    }
    let fps = seen
        .gauge(names::FPS, &labels)
        .expect("encoder_fps is set before the flush");
    assert!(
        !chunks.is_empty(),
        "no chunk before the flush: use more frames"
    );
    assert!(fps > 0.0, "frame rate {fps} after {} chunks", chunks.len());
    encoder.flush(&mut chunks).expect("flush");
    seen.take(snapshotter);
    chunks
}

/// Checks the per-encoder metrics of a stream that ran entirely on `kind`.
fn assert_stream_metrics(
    seen: &Seen,
    chunks: &[EncodedChunk],
    frames: u64,
    kind: &str,
    gpu: Option<&str>,
) {
    let mut labels = vec![("encoder_type", kind), ("camera", "cam-7")];
    labels.extend(gpu.map(|g| ("gpu", g)));
    assert_eq!(chunks.len() as u64, frames);
    assert_eq!(
        seen.counter(names::FRAMES_TOTAL, &labels),
        Some(frames),
        "{seen:#?}"
    );
    assert_eq!(
        seen.counter(names::BYTES_TOTAL, &labels),
        Some(bytes(chunks))
    );
    let latency = seen
        .histogram(names::LATENCY_SECONDS, &labels)
        .expect("latency recorded");
    assert_eq!(latency.len() as u64, frames, "one latency sample per frame");
    assert!(
        latency.iter().all(|&s| (0.0..60.0).contains(&s)),
        "{latency:?}"
    );
    // Every series carries the encoder type and the application's label.
    for ((name, l), _) in seen.counters.iter() {
        assert!(
            l.iter().any(|(k, v)| k == "encoder_type" && v == kind)
                && l.iter().any(|(k, v)| k == "camera" && v == "cam-7"),
            "{name} {l:?}"
        );
    }
    assert!(!seen.has(names::ERRORS_TOTAL));
    assert!(!seen.has(names::GPU_UTILIZATION));
}

fn camera() -> MetricLabels {
    MetricLabels::new()
        .with("camera", "cam-7")
        .expect("valid label")
}

#[test]
fn x264_frames_bytes_latency_and_type() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let config = EncoderConfig::new(160, 96).with_bframes(Some(2));
    // More frames than x264's lookahead (40 at the default preset), so chunks come out before
    // the flush.
    let input = common::clip(&config, 80);
    let mut seen = Seen::default();
    let chunks = metrics::with_local_recorder(&recorder, || {
        let encoder = X264Encoder::new(&config).expect("x264 opens");
        let mut encoder = Metered::new(encoder).with_labels(&camera());
        encode_recorded(&mut encoder, &input, &snapshotter, &mut seen)
    });
    assert_stream_metrics(&seen, &chunks, 80, "x264", None);
    // No queue attached: no queue metrics.
    assert!(!seen.has(names::QUEUE_DEPTH));
    assert!(!seen.has(names::PRODUCER_BLOCKED_SECONDS_TOTAL));
}

#[test]
fn errors_are_counted_by_kind() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let config = EncoderConfig::new(160, 96);
    let mut seen = Seen::default();
    metrics::with_local_recorder(&recorder, || {
        let mut encoder = Metered::new(X264Encoder::new(&config).expect("x264 opens"));
        let mut chunks = Vec::new();
        let short = vec![0u8; 10];
        assert!(encoder.encode_frame(&short, &mut chunks).is_err());
        let frame = common::clip(&config, 1).remove(0);
        encoder
            .encode(Frame::new(&frame).with_pts(5), &mut chunks)
            .expect("encode");
        assert!(encoder
            .encode(Frame::new(&frame).with_pts(5), &mut chunks)
            .is_err());
        encoder.flush(&mut chunks).expect("flush");
        assert!(encoder.encode_frame(&frame, &mut chunks).is_err());
    });
    seen.take(&snapshotter);
    let kind = |k| {
        seen.counter(
            names::ERRORS_TOTAL,
            &[("encoder_type", "x264"), ("kind", k)],
        )
    };
    assert_eq!(kind("frame_size"), Some(1));
    assert_eq!(kind("non_monotonic_pts"), Some(1));
    assert_eq!(kind("finished"), Some(1));
    assert_eq!(
        seen.counter(names::FRAMES_TOTAL, &[("encoder_type", "x264")]),
        Some(1),
        "only the accepted frame counts"
    );
}

#[test]
fn application_labels_are_checked() {
    assert!(matches!(
        MetricLabels::new().with("encoder_type", "x"),
        Err(LabelError::Reserved { .. })
    ));
    assert!(matches!(
        MetricLabels::new().with("9lives", "x"),
        Err(LabelError::InvalidName { .. })
    ));
    assert!(matches!(
        MetricLabels::new().with("__name__", "x"),
        Err(LabelError::InvalidName { .. })
    ));
    assert!(matches!(
        camera().with("camera", "other"),
        Err(LabelError::Duplicate { .. })
    ));
    let two = camera().with("site", "berlin").expect("valid");
    assert_eq!(two.labels().len(), 2);
}

/// ffmpeg (libx264) is killed mid-stream and in-process x264 takes over (as in
/// tests/fallback.rs): the frames are split between the two `encoder_type`s, and the switch is
/// counted once with its `from` and `to`.
#[test]
fn failover_moves_the_label_and_counts_the_switch() {
    let config = EncoderConfig::new(160, 96)
        .with_gop_size(30)
        .with_tune(Some(Tune::Zerolatency));
    let pid = Arc::new(AtomicU32::new(0));
    let pid_in = Arc::clone(&pid);
    let ffmpeg: Opener = Box::new(move |c: &EncoderConfig| {
        let e = FfmpegEncoder::new(c, &FfmpegOptions::new(FfmpegFamily::Libx264))?;
        pid_in.store(e.pid(), Ordering::SeqCst);
        Ok(Box::new(e) as Box<dyn VideoEncoder>)
    });
    let x264: Opener =
        Box::new(|c: &EncoderConfig| Ok(Box::new(X264Encoder::new(c)?) as Box<dyn VideoEncoder>));
    let chain = vec![
        (EncoderKind::Ffmpeg(FfmpegFamily::Libx264), ffmpeg),
        (EncoderKind::X264, x264),
    ];
    let input = common::clip(&config, 40);
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let mut seen = Seen::default();
    let chunks = metrics::with_local_recorder(&recorder, || {
        let encoder = FallbackEncoder::with_chain(&config, chain).expect("open");
        let mut encoder = Metered::new(encoder)
            .with_labels(&camera())
            .with_queue_depth(|| 5);
        let mut chunks = Vec::new();
        for (i, frame) in input.iter().enumerate() {
            if i == 20 {
                let status = Command::new("kill")
                    .args(["-9", &pid.load(Ordering::SeqCst).to_string()])
                    .status()
                    .expect("kill");
                assert!(status.success());
            }
            encoder.encode_frame(frame, &mut chunks).expect("encode");
        }
        encoder.flush(&mut chunks).expect("flush");
        assert_eq!(encoder.inner().switches(), 1);
        chunks
    });
    seen.take(&snapshotter);
    common::assert_accounting(&chunks, 40);
    let frames = |kind| {
        seen.counter(
            names::FRAMES_TOTAL,
            &[("encoder_type", kind), ("camera", "cam-7")],
        )
        .unwrap_or(0)
    };
    let (before, after) = (frames("ffmpeg-x264"), frames("x264"));
    assert_eq!(before + after, 40, "{seen:#?}");
    assert!(after > 0, "no frame counted under x264 after the switch");
    let byte_total: u64 = Seen::series(&seen.counters, names::BYTES_TOTAL)
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(byte_total, bytes(&chunks));
    assert_eq!(
        seen.counter(
            names::FAILOVERS_TOTAL,
            &[
                ("encoder_type", "x264"),
                ("from", "ffmpeg-x264"),
                ("to", "x264"),
                ("camera", "cam-7"),
            ],
        ),
        Some(1),
        "{seen:#?}"
    );
    assert_eq!(
        seen.gauge(
            names::FPS,
            &[("encoder_type", "ffmpeg-x264"), ("camera", "cam-7")]
        ),
        Some(0.0),
        "the failed encoder's frame rate drops to 0"
    );
    // The queue now feeds the new encoder: its depth is under the new type, and the old type's
    // gauge does not keep the depth it had when it failed (checked against that stale value).
    let depth = |kind| {
        seen.gauge(
            names::QUEUE_DEPTH,
            &[("encoder_type", kind), ("camera", "cam-7")],
        )
    };
    assert_eq!(depth("x264"), Some(5.0), "{seen:#?}");
    assert_eq!(depth("ffmpeg-x264"), Some(0.0), "{seen:#?}");
}

/// A ring filled and drained in steps: after each encode of a popped frame the gauge equals the
/// frames still queued. A producer that times out on the full ring adds its wait to the blocked
/// time; frames it reports dropped are counted.
#[test]
fn queue_gauges_follow_the_ring() {
    let config = EncoderConfig::new(160, 96).with_tune(Some(Tune::Zerolatency));
    let frame_len = config.validate().expect("valid");
    let input = common::clip(&config, 20);
    let (mut producer, mut consumer) = FrameRing::new(6, frame_len).expect("ring");
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let mut seen = Seen::default();
    let labels = [("encoder_type", "x264")];
    metrics::with_local_recorder(&recorder, || {
        let mut encoder = Metered::new(X264Encoder::new(&config).expect("x264 opens"))
            .with_ring(producer.stats());
        let mut chunks = Vec::new();
        let mut next = 0usize;
        let mut fill = |producer: &mut nvencode::ring_buffer::Producer<_>, n: usize| {
            for _ in 0..n {
                let mut slot = producer.try_reserve().expect("a free slot");
                slot[..frame_len].copy_from_slice(&input[next]);
                slot.commit(FrameMeta {
                    len: frame_len,
                    seq: next as u64,
                    ..FrameMeta::default()
                })
                .expect("commit");
                next += 1;
            }
        };
        // (frames to add, frames to pop and encode) per step.
        let steps = [(5, 1), (0, 2), (3, 1), (0, 4), (4, 0), (0, 4)];
        let mut queued = 0usize;
        for (add, take) in steps {
            fill(&mut producer, add);
            queued += add;
            for _ in 0..take {
                let slot = consumer.try_pop().expect("a queued frame");
                encoder
                    .encode_frame(&slot[..frame_len], &mut chunks)
                    .expect("encode");
                queued -= 1;
                seen.take(&snapshotter);
                assert_eq!(
                    seen.gauge(names::QUEUE_DEPTH, &labels),
                    Some(queued as f64),
                    "after a pop with {queued} left"
                );
            }
        }
        assert_eq!(queued, 0);

        // Fill the ring; a reserve with a timeout then waits the whole timeout.
        fill(&mut producer, 6);
        let wait = Duration::from_millis(50);
        assert!(matches!(
            producer.reserve_timeout(wait),
            Err(ReserveError::Timeout)
        ));
        assert!(matches!(producer.try_reserve(), Err(ReserveError::Full)));
        producer.note_dropped(3);
        let slot = consumer.try_pop().expect("queued");
        encoder
            .encode_frame(&slot[..frame_len], &mut chunks)
            .expect("encode");
        drop(slot);
        seen.take(&snapshotter);
        assert_eq!(seen.gauge(names::QUEUE_DEPTH, &labels), Some(5.0));
        let blocked = seen
            .gauge(names::PRODUCER_BLOCKED_SECONDS_TOTAL, &labels)
            .expect("blocked time recorded");
        assert!(
            blocked >= wait.as_secs_f64(),
            "blocked {blocked} s after a {wait:?} timeout"
        );
        assert_eq!(seen.counter(names::FRAMES_DROPPED_TOTAL, &labels), Some(3));
    });
}

/// Holds frame k for `HOLD[k % 4]` calls, sleeping `call` in each, so chunks come out of input
/// order as with B-frames (frame 1 before frame 0); records when each call began and ended, so
/// the latency each frame should have is known exactly.
struct ReorderingEncoder {
    config: EncoderConfig,
    call: Duration,
    frames: u64,
    /// Frames not yet emitted: (index, the call that emits it).
    held: Vec<(u64, u64)>,
    /// (start, end) of each call: the encodes, then the flush.
    calls: Vec<(Instant, Instant)>,
}

impl ReorderingEncoder {
    /// Calls each frame is held for, by its index modulo 4.
    const HOLD: [u64; 4] = [3, 1, 1, 0];

    /// Emits, in input order, every held frame due by call `now`.
    fn emit_due(&mut self, out: &mut Vec<EncodedChunk>, now: u64) {
        let mut due: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(index, _)| *index)
            .collect();
        due.sort_unstable();
        self.held.retain(|(_, at)| *at > now);
        for index in due {
            out.push(EncodedChunk {
                data: vec![0, 0, 0, 1, 0x65],
                pts: index as i64,
                dts: index as i64,
                duration: 1,
                keyframe: index == 0,
                frame_type: nvencode::FrameType::P,
                frame_index: index,
            });
        }
    }

    /// The call that emits frame `k` of a stream of `frames` (the flush is call `frames`).
    fn emitted_in(k: u64, frames: u64) -> u64 {
        (k + Self::HOLD[(k % 4) as usize]).min(frames)
    }
}

impl VideoEncoder for ReorderingEncoder {
    fn encode(
        &mut self,
        _frame: Frame<'_>,
        out: &mut Vec<EncodedChunk>,
    ) -> Result<(), nvencode::Error> {
        let start = Instant::now();
        std::thread::sleep(self.call);
        let k = self.frames;
        self.held.push((k, k + Self::HOLD[(k % 4) as usize]));
        self.emit_due(out, k);
        self.frames += 1;
        self.calls.push((start, Instant::now()));
        Ok(())
    }
    fn flush(&mut self, out: &mut Vec<EncodedChunk>) -> Result<(), nvencode::Error> {
        let start = Instant::now();
        self.emit_due(out, u64::MAX);
        self.calls.push((start, Instant::now()));
        Ok(())
    }
    fn kind(&self) -> EncoderKind {
        EncoderKind::X264
    }
    fn config(&self) -> &EncoderConfig {
        &self.config
    }
    fn sequence_headers(&self) -> &[u8] {
        &[]
    }
}

/// Each latency sample is the time from its own frame's submission to its chunk: frame k,
/// submitted in call k and delivered in a later call (or the flush), took from the start of the
/// one call to the end of the other, whatever order the chunks come out in. The counts-only
/// checks above cannot see a sample matched to the wrong frame; this test was checked against two
/// such breakages: chunks matched to the oldest pending frame instead of their own (right only
/// without reordering), and to the frame after their own.
#[test]
fn latency_is_measured_from_each_frames_own_submission() {
    const FRAMES: u64 = 10;
    let call = Duration::from_millis(25);
    let config = EncoderConfig::new(16, 16);
    let frame = vec![0u8; config.validate().expect("valid")];
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let mut seen = Seen::default();
    let calls = metrics::with_local_recorder(&recorder, || {
        let mut encoder = Metered::new(ReorderingEncoder {
            config: config.clone(),
            call,
            frames: 0,
            held: Vec::new(),
            calls: Vec::new(),
        });
        let mut chunks = Vec::new();
        for _ in 0..FRAMES {
            encoder.encode_frame(&frame, &mut chunks).expect("encode");
        }
        encoder.flush(&mut chunks).expect("flush");
        let order: Vec<u64> = chunks.iter().map(|c| c.frame_index).collect();
        assert_eq!(order.len() as u64, FRAMES);
        assert!(
            order.windows(2).any(|w| w[0] > w[1]),
            "the test needs chunks out of input order: {order:?}"
        );
        encoder.into_inner().calls
    });
    seen.take(&snapshotter);
    let at = |i: u64| usize::try_from(i).expect("small");
    let mut expected: Vec<f64> = (0..FRAMES)
        .map(|k| {
            let delivered = calls[at(ReorderingEncoder::emitted_in(k, FRAMES))].1;
            delivered.duration_since(calls[at(k)].0).as_secs_f64()
        })
        .collect();
    let mut measured = seen
        .histogram(names::LATENCY_SECONDS, &[("encoder_type", "x264")])
        .expect("latency recorded")
        .clone();
    assert_eq!(measured.len() as u64, FRAMES);
    expected.sort_by(f64::total_cmp);
    measured.sort_by(f64::total_cmp);
    // The wrapper's clock reads sit just outside the encoder's own: microseconds, or a
    // preemption. A sample of another frame is off by at least one call (25 ms).
    let slack = call.as_secs_f64() / 3.0;
    for (want, got) in expected.iter().zip(&measured) {
        assert!(
            (got - want).abs() < slack,
            "latencies {measured:?}, expected {expected:?} (seconds)"
        );
    }
}

/// `with_queue_depth` exports whatever depth the application's own queue reports, at each call.
/// Checked against the gauge left at 0.
#[test]
fn queue_depth_of_an_applications_own_queue() {
    let config = EncoderConfig::new(160, 96).with_tune(Some(Tune::Zerolatency));
    let input = common::clip(&config, 4);
    let depth = Arc::new(AtomicU32::new(0));
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let mut seen = Seen::default();
    metrics::with_local_recorder(&recorder, || {
        let reported = Arc::clone(&depth);
        let mut encoder = Metered::new(X264Encoder::new(&config).expect("x264 opens"))
            .with_queue_depth(move || reported.load(Ordering::SeqCst) as usize);
        let mut chunks = Vec::new();
        for (frame, queued) in input.iter().zip([7u32, 3, 12, 0]) {
            depth.store(queued, Ordering::SeqCst);
            encoder.encode_frame(frame, &mut chunks).expect("encode");
            seen.take(&snapshotter);
            assert_eq!(
                seen.gauge(names::QUEUE_DEPTH, &[("encoder_type", "x264")]),
                Some(f64::from(queued))
            );
        }
    });
}

struct FakeNvml(Result<Vec<GpuSample>, String>);

impl GpuUtilizationSource for FakeNvml {
    fn sample(&mut self, out: &mut Vec<GpuSample>) -> Result<(), String> {
        out.extend(self.0.clone()?);
        Ok(())
    }
}

#[test]
fn gpu_sampler_sets_one_gauge_per_gpu_from_its_source() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let mut seen = Seen::default();
    metrics::with_local_recorder(&recorder, || {
        let mut sampler = GpuSampler::new(Box::new(FakeNvml(Ok(vec![
            GpuSample {
                gpu: 0,
                percent: 37,
            },
            GpuSample {
                gpu: 1,
                percent: 80,
            },
        ]))));
        assert_eq!(sampler.sample_once(), Ok(2));
    });
    seen.take(&snapshotter);
    let gpu = |i| {
        seen.gauge(
            names::GPU_UTILIZATION,
            &[("encoder_type", "nvenc"), ("gpu", i)],
        )
    };
    assert_eq!(gpu("0"), Some(37.0));
    assert_eq!(gpu("1"), Some(80.0));
}

#[test]
fn gpu_sampler_emits_nothing_when_its_source_fails() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let mut seen = Seen::default();
    metrics::with_local_recorder(&recorder, || {
        let mut sampler = GpuSampler::new(Box::new(FakeNvml(Err("no driver".into()))));
        assert_eq!(sampler.sample_once(), Err("no driver".to_owned()));
        assert_eq!(sampler.sample_once(), Err("no driver".to_owned()));
    });
    seen.take(&snapshotter);
    assert!(!seen.has(names::GPU_UTILIZATION), "{seen:#?}");
}

#[test]
fn nvml_is_unavailable_on_this_machine() {
    if !common::without_nvidia_driver("nvml_is_unavailable_on_this_machine") {
        return;
    }
    let err = NvmlSource::init().expect_err("no NVML without an NVIDIA driver");
    assert!(err.contains("NVML"), "{err}");
}

/// Runs this test's body in a child against the emulated driver (or, in the child, says so).
fn in_emulator(test: &str, emu: &EmuDriver) -> bool {
    if in_child() {
        return true;
    }
    let output = common::run_child_tests(emu.command_self(test), 1, test);
    eprintln!("{output}");
    emu.report().assert_clean();
    false
}

/// Waits (at most 10 s) for the process-wide GPU sampler to give up on NVML.
fn wait_for_sampler_to_give_up() -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match gpu_sampler_state() {
            GpuSamplerState::Unavailable(reason) => return reason,
            state if Instant::now() > deadline => panic!("GPU sampler still {state:?} after 10 s"),
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

#[test]
fn emulated_nvenc_counts_and_no_gpu_gauge_without_nvml() {
    if !in_emulator(
        "emulated_nvenc_counts_and_no_gpu_gauge_without_nvml",
        &EmuDriver::new(),
    ) {
        return;
    }
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the child's only recorder");
    let config = EncoderConfig::new(320, 240).with_bframes(Some(2));
    let input = common::clip(&config, 24);
    let encoder = nvencode::nvenc::NvencEncoder::new(&config).expect("emulated NVENC opens");
    let mut encoder = Metered::new(encoder).with_labels(&camera());
    let mut seen = Seen::default();
    let chunks = encode_recorded(&mut encoder, &input, &snapshotter, &mut seen);
    // The encoder ran on NVENC, so the sampler was started; without NVML it gives up, and the
    // gauge never appears.
    let reason = wait_for_sampler_to_give_up();
    eprintln!("GPU sampler: {reason}");
    assert!(reason.contains("NVML"), "{reason}");
    seen.take(&snapshotter);
    // NVENC's series carry the GPU the session was placed on.
    assert_stream_metrics(&seen, &chunks, 24, "nvenc", Some("0"));
}

#[test]
fn emulated_nvenc_failover_to_x264_moves_the_label() {
    // NV_ENC_ERR_DEVICE_NOT_EXIST (5) on the 25th picture.
    let emu = EmuDriver::new().fault("nvEncEncodePicture", 25, 5);
    if !in_child() {
        common::run_child_tests(
            emu.command_self("emulated_nvenc_failover_to_x264_moves_the_label"),
            1,
            "failover child",
        );
        assert!(
            emu.report().leaks().is_empty(),
            "{:?}",
            emu.report().leaks()
        );
        return;
    }
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let config = EncoderConfig::new(320, 240).with_bframes(Some(2));
    let input = common::clip(&config, 60);
    let mut seen = Seen::default();
    let chunks = metrics::with_local_recorder(&recorder, || {
        let encoder = FallbackEncoder::new(&config, None).expect("open");
        assert_eq!(encoder.current_kind(), EncoderKind::Nvenc);
        let mut encoder = Metered::new(encoder).with_labels(&camera());
        common::encode_all(&mut encoder, &input)
    });
    seen.take(&snapshotter);
    common::assert_accounting(&chunks, 60);
    let nvenc = seen
        .counter(
            names::FRAMES_TOTAL,
            &[("encoder_type", "nvenc"), ("camera", "cam-7"), ("gpu", "0")],
        )
        .unwrap_or(0);
    let x264 = seen
        .counter(
            names::FRAMES_TOTAL,
            &[("encoder_type", "x264"), ("camera", "cam-7")],
        )
        .unwrap_or(0);
    assert!(nvenc > 0 && x264 > 0, "{seen:#?}");
    assert_eq!(nvenc + x264, 60);
    assert_eq!(
        seen.counter(
            names::FAILOVERS_TOTAL,
            &[
                ("encoder_type", "x264"),
                ("from", "nvenc"),
                ("to", "x264"),
                ("camera", "cam-7"),
            ],
        ),
        Some(1),
        "{seen:#?}"
    );
}

// ---- The Grafana dashboard and the README table name only metrics the crate records. ----

/// `expr` without label matchers (`{...}`) and grouping lists (`by (...)`, `without (...)`), which
/// name labels, not metrics.
fn without_labels(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find(['{', '(']) {
        let (before, from) = rest.split_at(i);
        let grouping = from.starts_with('(')
            && ["by", "without"]
                .iter()
                .any(|kw| before.trim_end().ends_with(kw));
        out.push_str(before);
        if from.starts_with('{') || grouping {
            let close = if from.starts_with('{') { '}' } else { ')' };
            rest = from.find(close).map_or("", |j| &from[j + 1..]);
        } else {
            out.push('(');
            rest = &from[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Metric names in a PromQL expression: identifiers starting with `encoder_` outside label
/// matchers and grouping lists, with a histogram's `_bucket`, `_sum`, `_count` series mapped to
/// the histogram.
fn metrics_in(expr: &str) -> Vec<String> {
    let expr = &without_labels(expr);
    let mut found = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word && expr[i..].starts_with("encoder_") {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(expr.len(), |n| i + n);
            let name = &expr[i..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| *b == names::LATENCY_SECONDS)
                .unwrap_or(name);
            found.push(base.to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    found
}

fn exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn dashboard_queries_only_metrics_the_crate_records() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dashboards/nvenc-encoders.json"
    );
    let text = std::fs::read_to_string(path).expect("dashboard file");
    let json: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut queries = Vec::new();
    exprs(&json, &mut queries);
    assert!(!queries.is_empty(), "no query in the dashboard");
    let mut used = std::collections::BTreeSet::new();
    for q in &queries {
        let found = metrics_in(q);
        assert!(!found.is_empty(), "query names no encoder metric: {q}");
        for name in found {
            assert!(
                nvencode::metrics::NAMES.contains(&name.as_str()),
                "the dashboard queries {name}, which the crate does not record ({q})"
            );
            used.insert(name);
        }
    }
    for needed in [
        names::FRAMES_TOTAL,
        names::FPS,
        names::QUEUE_DEPTH,
        names::GPU_UTILIZATION,
        names::LATENCY_SECONDS,
    ] {
        assert!(
            used.contains(needed),
            "the dashboard has no panel for {needed}"
        );
    }
    assert!(
        queries.iter().any(|q| q.contains("encoder_type")),
        "no panel shows the encoder type"
    );
}

#[test]
fn metrics_in_finds_names_and_maps_histogram_series() {
    assert_eq!(
        metrics_in(
            "histogram_quantile(0.95, sum by (le) (rate(encoder_latency_seconds_bucket[1m])))"
        ),
        vec!["encoder_latency_seconds"]
    );
    assert_eq!(
        metrics_in("sum(rate(encoder_frames_total{x=\"y\"}[1m])) / my_encoder_fps"),
        vec!["encoder_frames_total"]
    );
    assert_eq!(
        metrics_in(
            "count by (encoder_type) (encoder_fps{encoder_type=~\"x\"} > 0) + encoder_queue_depth"
        ),
        vec!["encoder_fps", "encoder_queue_depth"]
    );
}

#[test]
fn readme_table_lists_every_metric() {
    let readme = include_str!("../README.md");
    for name in nvencode::metrics::NAMES {
        assert!(
            readme
                .lines()
                .any(|l| l.starts_with(&format!("| `{name}` |"))),
            "the README's metrics table has no row for {name}"
        );
    }
}

// ---- A real scrape of the example. ----

/// The `encode_yuv` example, built with this test's profile and features.
fn example() -> std::path::PathBuf {
    common::example("encode_yuv")
}

/// GET `/metrics` from `addr`: the body, or why not (connect, send and read bounded by 5 s).
fn scrape(addr: &str) -> Result<String, String> {
    let addr: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {response:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("status: {head}"));
    }
    Ok(body.to_owned())
}

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format (the subset an exporter writes: no escapes in our label
/// values, no timestamps).
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|e| panic!("{line}: {e}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').expect("labels end with }");
                let labels = inner
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').expect("label=value");
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                (name, labels)
            }
            None => (series, BTreeMap::new()),
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

fn x264_value(samples: &[Sample], name: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name && s.labels.get("encoder_type").map(String::as_str) == Some("x264")
        })
        .map(|s| s.value)
}

/// Kills and reaps the example if the test fails half-way.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn scrape_of_encode_yuv_shows_the_seed_metrics() {
    const FRAMES: u64 = 20;
    let config = EncoderConfig::new(160, 96);
    let input = common::clip(&config, FRAMES);
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("out.h264");
    // Frames come through stdin, so the run lasts until the test closes it: the scrape happens
    // while the example is encoding, whatever the machine's speed.
    let child = Command::new(example())
        .args([
            "-",
            "--size",
            "160x96",
            "--encoder",
            "x264",
            "--tune",
            "zerolatency",
            "-q",
            "--metrics-addr",
            "127.0.0.1:0",
            "-o",
        ])
        .arg(&output)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run example");
    let mut child = Reap(child);
    let stderr = child.0.stderr.take().expect("stderr piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the example prints the metrics address within 60 s");
        if let Some(url) = line.split("http://").nth(1) {
            break url.trim_end_matches("/metrics").to_owned();
        }
    };
    assert!(!addr.ends_with(":0"), "port 0 must be replaced: {addr}");

    let mut stdin = child.0.stdin.take().expect("stdin piped");
    for frame in &input {
        stdin.write_all(frame).expect("feed a frame");
    }
    stdin.flush().expect("flush stdin");

    // Scrape until every frame fed has been counted (zerolatency: each comes out at once).
    let deadline = Instant::now() + Duration::from_secs(60);
    let samples = loop {
        let last = scrape(&addr);
        if let Ok(body) = &last {
            let samples = parse_exposition(body);
            if x264_value(&samples, names::FRAMES_TOTAL) == Some(FRAMES as f64) {
                eprintln!("scrape:\n{body}");
                break samples;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no scrape with {FRAMES} frames within 60 s; last: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let fps = x264_value(&samples, names::FPS).expect("encoder_fps{encoder_type=\"x264\"}");
    assert!(fps > 0.0, "fps {fps} while running");
    assert_eq!(x264_value(&samples, names::QUEUE_DEPTH), Some(0.0));
    assert!(x264_value(&samples, names::BYTES_TOTAL).is_some_and(|b| b > 0.0));
    assert_eq!(
        x264_value(&samples, "encoder_latency_seconds_count"),
        Some(FRAMES as f64)
    );
    // No NVML here, and x264 is not on a GPU: the GPU gauge is absent, not 0.
    assert!(
        samples.iter().all(|s| s.name != names::GPU_UTILIZATION),
        "encoder_gpu_utilization must not be emitted without NVML"
    );

    drop(stdin); // end of input: the example flushes and exits
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait for the example") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the example did not exit within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "example failed: {status}");
    let decoded = common::decode_h264(&std::fs::read(&output).expect("output"), config.resolution);
    assert_eq!(decoded.len() as u64, FRAMES);
}
