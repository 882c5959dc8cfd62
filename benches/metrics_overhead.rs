//! What the metrics cost per frame, in one run:
//!
//! 1. Over an encoder that does no work (one 1 KiB chunk per frame, at once), so the wrapper's
//!    own cost is visible: the bare encoder, `Metered` with no recorder installed, with
//!    `metrics-util`'s debugging recorder, with the Prometheus recorder, and with the
//!    Prometheus recorder and a frame ring attached.
//! 2. Real encoding with x264 (640x360, ultrafast, zerolatency, one thread): bare and `Metered`
//!    with the Prometheus recorder, interleaved, where the wrapper's cost is within the
//!    encoder's noise.
//!
//! ```text
//! cargo bench --bench metrics_overhead
//! METRICS_BENCH_FRAMES=1000000 cargo bench --bench metrics_overhead
//! ```
//! Each figure is the best of 5 runs. Recorders are installed as the
//! thread's local recorder for the measured loop only.

use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusBuilder;
use metrics_util::debugging::DebuggingRecorder;
use nvencode::metrics::Metered;
use nvencode::ring_buffer::FrameRing;
use nvencode::testsrc::TestPattern;
use nvencode::{
    EncodedChunk, EncoderConfig, EncoderKind, Error, Frame, FrameType, Preset, Tune, VideoEncoder,
    X264Encoder,
};

/// An encoder that returns one fixed chunk per frame at once.
struct Null {
    config: EncoderConfig,
    next: u64,
    chunk: Vec<u8>,
}

impl VideoEncoder for Null {
    fn encode(&mut self, _frame: Frame<'_>, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        out.push(EncodedChunk {
            data: self.chunk.clone(),
            pts: self.next as i64,
            dts: self.next as i64,
            duration: 1,
            keyframe: self.next == 0,
            frame_type: FrameType::P,
            frame_index: self.next,
        });
        self.next += 1;
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

fn null(config: &EncoderConfig) -> Null {
    Null {
        config: config.clone(),
        next: 0,
        chunk: vec![0u8; 1024],
    }
}

/// Time per frame of encoding `frames` frames through `encoder`, chunks drained after each call.
fn per_frame(encoder: &mut dyn VideoEncoder, frame: &[u8], frames: u64) -> Duration {
    let mut chunks = Vec::new();
    let start = Instant::now();
    for _ in 0..frames {
        if let Err(e) = encoder.encode_frame(frame, &mut chunks) {
            panic!("encode failed: {e}");
        }
        chunks.clear();
    }
    start.elapsed() / frames as u32
}

fn best_of(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..runs).map(|_| f()).min().unwrap_or_default()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let frames: u64 = std::env::var("METRICS_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let config = EncoderConfig::new(64, 64);
    let frame = vec![0u8; config.validate()?];
    let debugging = DebuggingRecorder::new();
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(
                nvencode::metrics::names::LATENCY_SECONDS.into(),
            ),
            nvencode::metrics::LATENCY_BUCKETS,
        )?
        .build_recorder();
    let (producer, _consumer) = FrameRing::new(8, 64)?;

    println!("1. wrapper cost over an encoder that does no work ({frames} frames, best of 5)");
    let bare = best_of(5, || per_frame(&mut null(&config), &frame, frames));
    let row = |name: &str, t: Duration| {
        println!(
            "  {name:<44} {:>8.0} ns/frame  (+{:.0} ns)",
            t.as_nanos() as f64,
            t.as_nanos() as f64 - bare.as_nanos() as f64
        );
    };
    row("bare encoder", bare);
    row(
        "Metered, no recorder installed",
        best_of(5, || {
            per_frame(&mut Metered::new(null(&config)), &frame, frames)
        }),
    );
    row(
        "Metered, debugging recorder",
        best_of(5, || {
            metrics::with_local_recorder(&debugging, || {
                per_frame(&mut Metered::new(null(&config)), &frame, frames)
            })
        }),
    );
    row(
        "Metered, Prometheus recorder",
        best_of(5, || {
            metrics::with_local_recorder(&prometheus, || {
                per_frame(&mut Metered::new(null(&config)), &frame, frames)
            })
        }),
    );
    row(
        "Metered, Prometheus recorder, ring attached",
        best_of(5, || {
            metrics::with_local_recorder(&prometheus, || {
                let mut e = Metered::new(null(&config)).with_ring(producer.stats());
                per_frame(&mut e, &frame, frames)
            })
        }),
    );

    let x264_frames = 300;
    let config = EncoderConfig::new(640, 360)
        .with_preset(Preset::Ultrafast)
        .with_tune(Some(Tune::Zerolatency))
        .with_threads(1);
    let pattern = TestPattern::new(config.resolution, config.pixel_format)?;
    let frame = pattern.frame(0);
    println!(
        "2. x264 640x360 ultrafast zerolatency, 1 thread ({x264_frames} frames, best of 5, \
         the two interleaved)"
    );
    let open = || X264Encoder::new(&config).unwrap_or_else(|e| panic!("x264: {e}"));
    let (mut bare, mut metered) = (Duration::MAX, Duration::MAX);
    for _ in 0..5 {
        bare = bare.min(per_frame(&mut open(), &frame, x264_frames));
        metered = metered.min(metrics::with_local_recorder(&prometheus, || {
            per_frame(&mut Metered::new(open()), &frame, x264_frames)
        }));
    }
    println!(
        "  bare x264                                    {:>8.1} us/frame",
        bare.as_nanos() as f64 / 1e3
    );
    println!(
        "  Metered x264, Prometheus recorder            {:>8.1} us/frame  ({:+.1} us)",
        metered.as_nanos() as f64 / 1e3,
        (metered.as_nanos() as f64 - bare.as_nanos() as f64) / 1e3
    );
    Ok(())
}
