//! The pipeline stage with a cheap fake encoder (no GPU, no x264): ordering and checksums under
//! random stalls, the async producer under cancellation, back-pressure accounting, and closing.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use nvencode::pipeline::{
    BackPressure, EncodePipeline, EncodedOutput, FrameProducer, PipelineError, PipelineOptions,
    SlotMemory, Submitted,
};
use nvencode::ring_buffer::RingError;
use nvencode::{EncodedChunk, EncoderConfig, EncoderKind, Error, Frame, FrameType, VideoEncoder};

/// Every wait in these tests ends within this bound or the test fails.
const BOUND: Duration = Duration::from_secs(60);

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Emits one chunk per frame holding its pts and a checksum of its bytes; can stall at random,
/// fail or panic at a given frame.
struct FakeEncoder {
    config: EncoderConfig,
    frames: u64,
    rng: Rng,
    stall_one_in: u64,
    stall: Duration,
    sleep: Duration,
    fail_at: Option<u64>,
    panic_at: Option<u64>,
}

impl FakeEncoder {
    fn new(config: &EncoderConfig) -> Self {
        FakeEncoder {
            config: config.clone(),
            frames: 0,
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            stall_one_in: 0,
            stall: Duration::from_micros(200),
            sleep: Duration::ZERO,
            fail_at: None,
            panic_at: None,
        }
    }
}

impl VideoEncoder for FakeEncoder {
    fn encode(&mut self, frame: Frame<'_>, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        if self.fail_at == Some(self.frames) {
            return Err(Error::Finished {
                backend: EncoderKind::X264,
            });
        }
        assert!(
            self.panic_at != Some(self.frames),
            "fake encoder panics on purpose"
        );
        if self.stall_one_in > 0 && self.rng.below(self.stall_one_in) == 0 {
            std::thread::sleep(self.stall);
        }
        if !self.sleep.is_zero() {
            std::thread::sleep(self.sleep);
        }
        let pts = frame.pts.unwrap_or(0);
        let mut data = pts.to_le_bytes().to_vec();
        data.extend_from_slice(&fnv(frame.data).to_le_bytes());
        out.push(EncodedChunk {
            data,
            pts,
            dts: pts,
            duration: 1,
            keyframe: frame.force_keyframe,
            frame_type: FrameType::P,
            frame_index: self.frames,
        });
        self.frames += 1;
        Ok(())
    }
    fn flush(&mut self, _out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
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

fn config() -> EncoderConfig {
    EncoderConfig::new(16, 16)
}

fn frame_for(pts: i64, len: usize) -> Vec<u8> {
    let mut rng = Rng(pts as u64 * 2 + 1);
    (0..len).map(|_| rng.next() as u8).collect()
}

fn open(fake: FakeEncoder, options: PipelineOptions) -> (FrameProducer, EncodedOutput) {
    EncodePipeline::with_encoder(Box::new(fake), options)
        .expect("open")
        .split()
}

/// Checks that chunk `i` is frame `want_pts` with its checksum intact.
fn check_chunk(chunk: &EncodedChunk, want_pts: i64, len: usize) {
    assert_eq!(chunk.pts, want_pts, "chunks out of order or missing");
    let sum = u64::from_le_bytes(chunk.data[8..16].try_into().unwrap());
    assert_eq!(
        sum,
        fnv(&frame_for(want_pts, len)),
        "frame {want_pts} corrupted"
    );
}

#[test]
fn hundred_thousand_frames_with_stalls_both_sides_come_out_once_in_order() {
    const N: i64 = 100_000;
    let mut fake = FakeEncoder::new(&config());
    fake.stall_one_in = 500;
    let (mut producer, mut output) = open(fake, PipelineOptions::default().with_ring_slots(4));
    let len = producer.frame_len();
    let feeder = std::thread::spawn(move || {
        let mut rng = Rng(42);
        for pts in 0..N {
            if rng.below(500) == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
            let mut slot = producer.reserve_timeout(BOUND).expect("reserve");
            // Written in place, as a socket read would.
            slot.copy_from_slice(&frame_for(pts, len));
            assert_eq!(
                slot.commit(pts, pts % 1000 == 0).expect("commit"),
                Submitted::Queued
            );
        }
        let stats = producer.stats();
        producer.finish().expect("finish");
        stats
    });
    let mut rng = Rng(7);
    let mut next = 0i64;
    for item in output.by_ref() {
        let chunk = item.expect("no error");
        check_chunk(&chunk, next, len);
        assert_eq!(
            chunk.keyframe,
            next % 1000 == 0,
            "force-keyframe flag carried"
        );
        next += 1;
        if rng.below(500) == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    assert_eq!(next, N, "every frame out exactly once");
    let stats = feeder.join().expect("feeder");
    assert_eq!(stats.dropped(), 0);
    assert_eq!(stats.committed(), N as usize);
}

/// (chunks' pts, pts reported dropped, drops counted by the producer, drops in the ring's
/// stats, the producer's blocked time in the ring's stats)
fn run_policy(policy: BackPressure, frames: i64) -> (Vec<i64>, Vec<i64>, u64, u64, Duration) {
    let mut fake = FakeEncoder::new(&config());
    fake.sleep = Duration::from_micros(300);
    let (mut producer, output) = open(
        fake,
        PipelineOptions::default()
            .with_ring_slots(4)
            .with_back_pressure(policy),
    );
    let len = producer.frame_len();
    let reader = std::thread::spawn(move || {
        output
            .map(|item| item.expect("no error"))
            .inspect(|c| check_chunk(c, c.pts, len))
            .map(|c| c.pts)
            .collect::<Vec<_>>()
    });
    let mut reported_dropped = Vec::new();
    for pts in 0..frames {
        let frame = frame_for(pts, len);
        match producer
            .push_timeout(Frame::new(&frame).with_pts(pts), BOUND)
            .expect("push")
        {
            Submitted::Queued => {}
            Submitted::Dropped => reported_dropped.push(pts),
        }
    }
    let counted_by_producer = producer.dropped();
    let stats = producer.stats();
    producer.finish().expect("finish");
    let out = reader.join().expect("reader");
    (
        out,
        reported_dropped,
        counted_by_producer,
        stats.dropped(),
        stats.producer_blocked(),
    )
}

#[test]
fn block_never_drops() {
    let (out, reported, counted, stats, blocked) = run_policy(BackPressure::Block, 300);
    assert_eq!(out, (0..300).collect::<Vec<_>>());
    assert!(reported.is_empty());
    assert_eq!((counted, stats), (0, 0));
    // The encoder takes at least 300 x 300 µs; the producer, which pushes as fast as it can into
    // 4 slots, waits for nearly all of it. Checked against the ring never adding its waits.
    assert!(
        blocked >= Duration::from_millis(40),
        "producer blocked {blocked:?} behind a 90 ms encoder"
    );
}

#[test]
fn drop_newest_drops_exactly_the_counted_frames() {
    let (out, reported, counted, stats, _) = run_policy(BackPressure::DropNewest, 300);
    assert!(
        !reported.is_empty(),
        "a 300 µs encoder behind a fast producer must drop"
    );
    assert_eq!(counted, reported.len() as u64);
    assert_eq!(stats, counted);
    let expected: Vec<i64> = (0..300).filter(|p| !reported.contains(p)).collect();
    assert_eq!(
        out, expected,
        "every frame not reported dropped came out, in order"
    );
}

#[test]
fn drop_oldest_drops_exactly_the_counted_frames() {
    let (out, reported, counted, stats, _) = run_policy(BackPressure::DropOldest, 300);
    assert!(
        reported.is_empty(),
        "DropOldest drops queued frames, not the one pushed"
    );
    assert!(
        counted > 0,
        "a 300 µs encoder behind a fast producer must drop"
    );
    assert_eq!(stats, counted);
    assert_eq!(
        out.len() as u64 + counted,
        300,
        "frames out + counted drops = frames in"
    );
    assert!(out.windows(2).all(|w| w[0] < w[1]), "in order");
    assert_eq!(
        out.last(),
        Some(&299),
        "the newest frame is never the one dropped"
    );
}

/// An async source held back by a full ring is blocked as a sync one is: its waits count in the
/// ring's blocked time (and so in `encoder_producer_blocked_seconds_total`). Checked against the
/// async reserve not adding its waits, which left the figure at 0 under back-pressure.
#[test]
fn async_waits_count_as_blocked_time() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut fake = FakeEncoder::new(&config());
    fake.sleep = Duration::from_millis(2);
    let (mut producer, output) = open(fake, PipelineOptions::default().with_ring_slots(2));
    let len = producer.frame_len();
    let reader = std::thread::spawn(move || output.filter(Result::is_ok).count());
    let stats = producer.stats();
    rt.block_on(async {
        for pts in 0..50 {
            let frame = frame_for(pts, len);
            let pushed = producer
                .push_async(Frame::new(&frame).with_pts(pts))
                .await
                .expect("push");
            assert_eq!(pushed, Submitted::Queued);
        }
    });
    producer.finish().expect("finish");
    assert_eq!(reader.join().expect("reader"), 50);
    // The encoder takes at least 50 x 2 ms; the source, two slots ahead, waits for most of it.
    assert!(
        stats.producer_blocked() >= Duration::from_millis(50),
        "blocked {:?} behind a 100 ms encoder",
        stats.producer_blocked()
    );
}

/// A minimal `select!`-free timeout: polls `fut` until it is ready or `sleep` is.
async fn race<F: Future>(fut: F, sleep: tokio::time::Sleep) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut sleep = std::pin::pin!(sleep);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

#[test]
fn async_producer_with_random_cancellations_loses_nothing_and_holds_nothing() {
    const N: i64 = 3_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    let mut fake = FakeEncoder::new(&config());
    // Stalls of 5 ms in one frame of ten keep the ring full for longer than many of the random
    // timeouts below (0-3 ms), so pending futures do get cancelled.
    fake.stall_one_in = 10;
    fake.stall = Duration::from_millis(5);
    let (mut producer, mut output) = open(fake, PipelineOptions::default().with_ring_slots(3));
    let len = producer.frame_len();
    let cancelled = Arc::new(AtomicU64::new(0));
    let cancelled_in = Arc::clone(&cancelled);
    let result = rt.block_on(async move {
        let feed = tokio::spawn(async move {
            let mut rng = Rng(99);
            for pts in 0..N {
                let frame = frame_for(pts, len);
                loop {
                    let wait = Duration::from_micros(rng.below(3000));
                    // Half the time through reserve + write + commit, half through push.
                    let done = if pts % 2 == 0 {
                        race(producer.reserve_async(), tokio::time::sleep(wait))
                            .await
                            .map(|slot| {
                                let mut slot = slot.expect("reserve");
                                slot.copy_from_slice(&frame);
                                slot.commit(pts, false).expect("commit")
                            })
                    } else {
                        race(
                            producer.push_async(Frame::new(&frame).with_pts(pts)),
                            tokio::time::sleep(wait),
                        )
                        .await
                        .map(|r| r.expect("push"))
                    };
                    match done {
                        Some(submitted) => {
                            assert_eq!(submitted, Submitted::Queued);
                            break;
                        }
                        None => {
                            cancelled_in.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            // Nothing is held by a cancelled future: every slot can be reserved again.
            for _ in 0..producer.stats().capacity() {
                drop(
                    tokio::time::timeout(BOUND, producer.reserve_async())
                        .await
                        .expect("a slot frees")
                        .expect("reserve"),
                );
            }
            producer.finish().expect("finish");
        });
        let read = tokio::spawn(async move {
            let mut next = 0i64;
            while let Some(item) = std::future::poll_fn(|cx| {
                futures_core::Stream::poll_next(Pin::new(&mut output), cx)
            })
            .await
            {
                check_chunk(&item.expect("no error"), next, len);
                next += 1;
            }
            next
        });
        tokio::time::timeout(BOUND, async {
            feed.await.expect("feeder");
            read.await.expect("reader")
        })
        .await
    });
    assert_eq!(
        result.expect("bounded"),
        N,
        "every frame out exactly once, in order"
    );
    assert!(
        cancelled.load(Ordering::Relaxed) > 0,
        "the test must actually cancel pending futures"
    );
}

fn collect_bounded(mut output: EncodedOutput) -> (Vec<i64>, Option<PipelineError>) {
    let mut pts = Vec::new();
    loop {
        match output.recv_timeout(BOUND) {
            nvencode::pipeline::Received::Item(Ok(c)) => pts.push(c.pts),
            nvencode::pipeline::Received::Item(Err(e)) => {
                assert!(
                    matches!(
                        output.recv_timeout(BOUND),
                        nvencode::pipeline::Received::End
                    ),
                    "the stream ends after its error"
                );
                return (pts, Some(e));
            }
            nvencode::pipeline::Received::End => return (pts, None),
            nvencode::pipeline::Received::Pending => panic!("no item within {BOUND:?}"),
        }
    }
}

#[test]
fn producer_dropped_unfinished_ends_with_an_error_after_every_frame() {
    let (mut producer, output) = open(FakeEncoder::new(&config()), PipelineOptions::default());
    let len = producer.frame_len();
    for pts in 0..20 {
        let _ = producer.push(&frame_for(pts, len)[..]).expect("push");
    }
    drop(producer);
    let (pts, end) = collect_bounded(output);
    assert_eq!(pts, (0..20).collect::<Vec<_>>());
    assert!(
        matches!(
            end,
            Some(PipelineError::ProducerDropped { panicked: false })
        ),
        "{end:?}"
    );
}

#[test]
fn producer_panic_ends_with_an_error_saying_so_after_every_frame() {
    let (mut producer, output) = open(FakeEncoder::new(&config()), PipelineOptions::default());
    let len = producer.frame_len();
    let feeder = std::thread::spawn(move || {
        for pts in 0..20 {
            let _ = producer.push(&frame_for(pts, len)[..]).expect("push");
        }
        panic!("the producer's thread panics on purpose");
    });
    assert!(feeder.join().is_err());
    let (pts, end) = collect_bounded(output);
    assert_eq!(pts, (0..20).collect::<Vec<_>>());
    assert!(
        matches!(end, Some(PipelineError::ProducerDropped { panicked: true })),
        "{end:?}"
    );
}

#[test]
fn output_dropped_fails_the_producers_next_call_and_a_blocked_one() {
    let (mut producer, output) = open(
        FakeEncoder::new(&config()),
        PipelineOptions::default()
            .with_ring_slots(2)
            .with_output_capacity(1),
    );
    let len = producer.frame_len();
    let frame = frame_for(0, len);
    // Nobody reads: fill the output queue and the ring until a push cannot get a slot.
    let mut pushed = 0;
    loop {
        match producer.push_timeout(&frame[..], Duration::from_millis(100)) {
            Ok(_) => pushed += 1,
            Err(PipelineError::Timeout) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(pushed < 100, "the stage must fill up");
    }
    let dropper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        drop(output);
    });
    // Blocked (no timeout) when the output goes: woken with the typed error.
    let blocked = producer.push(&frame[..]);
    assert!(
        matches!(blocked, Err(PipelineError::OutputDropped)),
        "{blocked:?}"
    );
    dropper.join().expect("dropper");
    let next = producer.try_push(&frame[..]);
    assert!(
        matches!(next, Err(PipelineError::OutputDropped)),
        "{next:?}"
    );
    assert!(matches!(
        producer.finish(),
        Err(PipelineError::OutputDropped)
    ));
}

#[test]
fn encoder_failure_comes_in_band_after_earlier_chunks_and_stops_the_producer() {
    let mut fake = FakeEncoder::new(&config());
    fake.fail_at = Some(5);
    let (mut producer, output) = open(fake, PipelineOptions::default());
    let len = producer.frame_len();
    let mut stopped = None;
    for pts in 0..1000 {
        if let Err(e) = producer.push_timeout(&frame_for(pts, len)[..], BOUND) {
            stopped = Some(e);
            break;
        }
    }
    assert!(
        matches!(stopped, Some(PipelineError::EncoderStopped)),
        "{stopped:?}"
    );
    let stats = producer.stats();
    let (pts, end) = collect_bounded(output);
    assert_eq!(pts, (0..5).collect::<Vec<_>>());
    match end {
        Some(PipelineError::Encoder {
            source: Error::Finished { .. },
            unencoded,
        }) => {
            // Every committed frame either came out or is reported unencoded, and counted.
            assert_eq!(5 + unencoded, stats.committed());
            assert_eq!(stats.dropped(), unencoded as u64);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn encoder_panic_comes_in_band() {
    let mut fake = FakeEncoder::new(&config());
    fake.panic_at = Some(3);
    let (mut producer, output) = open(fake, PipelineOptions::default());
    let len = producer.frame_len();
    for pts in 0..5 {
        let _ = producer.push_timeout(&frame_for(pts, len)[..], BOUND);
    }
    drop(producer);
    let (pts, end) = collect_bounded(output);
    assert_eq!(pts, vec![0, 1, 2]);
    assert!(
        matches!(end, Some(PipelineError::EncoderPanicked)),
        "{end:?}"
    );
}

#[test]
fn bad_frames_get_typed_errors_and_submit_nothing() {
    let (mut producer, output) = open(FakeEncoder::new(&config()), PipelineOptions::default());
    let len = producer.frame_len();
    let short = vec![0u8; len - 1];
    assert!(matches!(
        producer.push(&short[..]),
        Err(PipelineError::FrameSize { len: l, expected }) if l == len - 1 && expected == len
    ));
    let frame = frame_for(5, len);
    let _ = producer.push(Frame::new(&frame).with_pts(5)).expect("push");
    let slot = producer.reserve().expect("reserve");
    assert!(matches!(
        slot.commit(5, false),
        Err(PipelineError::NonMonotonicPts {
            pts: 5,
            previous: 5
        })
    ));
    let _ = producer.push(Frame::new(&frame).with_pts(6)).expect("push");
    producer.finish().expect("finish");
    let (pts, end) = collect_bounded(output);
    assert_eq!(pts, vec![5, 6]);
    assert!(end.is_none());
}

#[test]
fn async_producer_waiting_on_a_full_ring_is_woken_by_the_encoder() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut fake = FakeEncoder::new(&config());
    fake.sleep = Duration::from_millis(2);
    let (mut producer, output) = open(fake, PipelineOptions::default().with_ring_slots(2));
    let len = producer.frame_len();
    let reader = std::thread::spawn(move || collect_bounded(output));
    let fed = rt.block_on(async move {
        tokio::time::timeout(BOUND, async move {
            for pts in 0..50 {
                // No timeout around the future: only the encoder's wake-up can complete it.
                let mut slot = producer.reserve_async().await.expect("reserve");
                slot.copy_from_slice(&frame_for(pts, len));
                let _ = slot.commit(pts, false).expect("commit");
            }
            producer.finish().expect("finish");
        })
        .await
    });
    assert!(fed.is_ok(), "the async producer was never woken");
    let (pts, end) = reader.join().expect("reader");
    assert_eq!(pts, (0..50).collect::<Vec<_>>());
    assert!(end.is_none());
}

/// A device slot asked of a ring in host memory is a typed error naming the call and what to use
/// instead; the producer stays usable.
#[test]
fn a_device_slot_from_a_host_ring_is_a_typed_error() {
    let encoder = FakeEncoder::new(&config());
    let (mut producer, output) =
        EncodePipeline::with_encoder(Box::new(encoder), PipelineOptions::default())
            .expect("open")
            .split();
    assert_eq!(producer.slot_memory(), SlotMemory::Host);
    match producer.try_reserve_device() {
        Err(PipelineError::WrongSlotMemory { memory, call, .. }) => {
            assert_eq!(memory, SlotMemory::Host);
            assert_eq!(call, "reserve_device");
        }
        other => panic!("expected WrongSlotMemory, got {other:?}"),
    }
    // The async form resolves at once with the same error (it does not wait for a slot).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let waited =
        rt.block_on(async { tokio::time::timeout(BOUND, producer.reserve_device_async()).await });
    assert!(
        matches!(
            waited,
            Ok(Err(PipelineError::WrongSlotMemory {
                call: "reserve_device",
                ..
            }))
        ),
        "{waited:?}"
    );
    let frame = vec![7u8; producer.frame_len()];
    let _ = producer.push(frame.as_slice()).expect("still usable");
    producer.finish().expect("finish");
    assert_eq!(output.count(), 1);
}

/// Device slots need the CUDA driver: without one, opening a device ring is a typed error (with
/// one, it opens).
#[test]
fn a_device_ring_without_a_cuda_driver_is_a_typed_error() {
    let encoder = FakeEncoder::new(&config());
    let options = PipelineOptions::default().with_slot_memory(SlotMemory::Device);
    let opened = EncodePipeline::with_encoder(Box::new(encoder), options);
    if nvencode::cuda::available().is_ok() {
        let (producer, _output) = opened.expect("a CUDA driver is here").split();
        assert_eq!(producer.slot_memory(), SlotMemory::Device);
        return;
    }
    match opened {
        Err(PipelineError::Ring(RingError::CudaUnavailable { .. })) => {}
        other => panic!("expected Ring(CudaUnavailable), got {other:?}"),
    }
}

/// The ring and NVENC are on one CUDA device: options that put the ring on device 1 while the
/// encoder settings put NVENC on device 0 do not open, and the error names both ordinals. No
/// encoder is opened (the check comes first), so this needs no GPU. Checked against a
/// `gpu_with` that let the options win silently (the stage then opened).
#[test]
fn ring_and_nvenc_on_different_cuda_devices_is_refused() {
    let mut gpu = nvencode::GpuEncoderConfig::default();
    gpu.gpu = nvencode::nvenc::GpuChoice::Index(0);
    let options = PipelineOptions::from_gpu_config(&gpu).with_cuda_device(1);
    match EncodePipeline::open_with(&config(), &gpu, options) {
        Err(PipelineError::Open(Error::Config(nvencode::ConfigError::CudaDeviceMismatch {
            ring: 1,
            nvenc: 0,
        }))) => {}
        Err(other) => panic!("expected CudaDeviceMismatch {{ ring: 1, nvenc: 0 }}, got {other}"),
        Ok(_) => panic!("a ring on device 1 with NVENC on device 0 must not open"),
    }
    // Named once, either side: that device for both.
    assert_eq!(gpu.gpu_with(None), Ok(nvencode::nvenc::GpuChoice::Index(0)));
    assert_eq!(
        nvencode::GpuEncoderConfig::default().gpu_with(Some(1)),
        Ok(nvencode::nvenc::GpuChoice::Index(1))
    );
}
