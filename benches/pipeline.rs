//! Measurements of the pipeline stage, printed side by side in one run (not timed tests):
//!
//! 1. Jitter smoothing: a live source (bursty arrival at the encoder's own steady rate, stalls of
//!    up to 10 frame intervals followed by a burst that catches up) into the stage with
//!    `BackPressure::DropNewest` (frames lost) and `Block` (nothing lost; time the source was held
//!    back), for ring sizes 2, 4, 8, 16, 32: throughput as a fraction of the encoder alone, frames
//!    lost, highest ring depth.
//! 2. Submit-to-chunk latency p50/p99 at 1080p30, x264 ultrafast + zerolatency, real-time pacing.
//! 3. `encode_yuv`'s path (a reading thread filling ring slots from a file) vs the `x264` CLI on
//!    the same clip, preset ultrafast, crf 23, same threads.
//!
//! `cargo bench --bench pipeline` (env: PIPE_BENCH_FRAMES, PIPE_BENCH_THREADS).

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nvenc::pipeline::{BackPressure, EncodePipeline, PipelineOptions, Submitted};
use nvenc::testsrc::TestPattern;
use nvenc::{EncoderConfig, Preset, Tune, VideoEncoder, X264Encoder};

type BoxError = Box<dyn std::error::Error>;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn clip(config: &EncoderConfig, n: u64) -> Result<Vec<Vec<u8>>, BoxError> {
    let pattern = TestPattern::new(config.resolution, config.pixel_format)?;
    Ok((0..n).map(|i| pattern.frame(i)).collect())
}

/// Frames per second of the encoder alone, frames fed back to back.
fn encoder_alone(config: &EncoderConfig, frames: &[Vec<u8>]) -> Result<f64, BoxError> {
    let mut encoder = X264Encoder::new(config)?;
    let mut out = Vec::new();
    let started = Instant::now();
    for f in frames {
        encoder.encode_frame(f, &mut out)?;
    }
    encoder.flush(&mut out)?;
    Ok(frames.len() as f64 / started.elapsed().as_secs_f64())
}

struct Smoothing {
    fraction: f64,
    lost: u64,
    highest: usize,
    blocked: Duration,
}

/// Arrival: frame i is due at i * interval; one frame in eight is preceded by a stall of 1..=10
/// intervals, after which the late frames go out back to back (the mean rate stays 1/interval).
fn smoothing(
    config: &EncoderConfig,
    frames: &[Vec<u8>],
    slots: usize,
    alone_fps: f64,
    policy: BackPressure,
) -> Result<Smoothing, BoxError> {
    let encoder = X264Encoder::new(config)?;
    let options = PipelineOptions::default()
        .with_ring_slots(slots)
        .with_back_pressure(policy);
    let (mut producer, output) = EncodePipeline::with_encoder(Box::new(encoder), options)?.split();
    let interval = Duration::from_secs_f64(1.0 / alone_fps);
    let stats = producer.stats();
    let reader = std::thread::spawn(move || output.filter(Result::is_ok).count());
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut highest = 0;
    let started = Instant::now();
    let mut lost = 0;
    for (i, f) in frames.iter().enumerate() {
        if rng.below(8) == 0 {
            let stall = interval * (1 + rng.below(10) as u32);
            std::thread::sleep(stall);
        }
        // The schedule is kept, so the frames a stall delayed go out back to back (the burst).
        let due = started + interval.mul_f64(i as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if producer.push(&f[..])? == Submitted::Dropped {
            lost += 1;
        }
        highest = highest.max(stats.queue_depth() + stats.in_flight());
    }
    producer.finish()?;
    let out = reader.join().map_err(|_| "reader panicked")?;
    let secs = started.elapsed().as_secs_f64();
    Ok(Smoothing {
        fraction: (out as f64 / secs) / alone_fps,
        lost,
        highest,
        blocked: stats.producer_blocked(),
    })
}

/// Submit-to-chunk latency at real-time pacing (30 fps).
fn latency(config: &EncoderConfig, frames: &[Vec<u8>]) -> Result<(f64, f64), BoxError> {
    let encoder = X264Encoder::new(config)?;
    let (mut producer, output) =
        EncodePipeline::with_encoder(Box::new(encoder), PipelineOptions::default())?.split();
    let submitted: Arc<Vec<std::sync::atomic::AtomicU64>> =
        Arc::new((0..frames.len()).map(|_| Default::default()).collect());
    let epoch = Instant::now();
    let at = Arc::clone(&submitted);
    let reader = std::thread::spawn(move || {
        let mut lat = Vec::new();
        for chunk in output.flatten() {
            let now = epoch.elapsed().as_nanos() as u64;
            let sub = at[chunk.pts as usize].load(std::sync::atomic::Ordering::SeqCst);
            lat.push(now.saturating_sub(sub) as f64 / 1e6);
        }
        lat
    });
    let interval = Duration::from_secs_f64(1.0 / 30.0);
    for (i, f) in frames.iter().enumerate() {
        let due = epoch + interval.mul_f64(i as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut slot = producer.reserve()?;
        slot.copy_from_slice(f);
        submitted[i].store(
            epoch.elapsed().as_nanos() as u64,
            std::sync::atomic::Ordering::SeqCst,
        );
        let _ = slot.commit(i as i64, false)?;
    }
    producer.finish()?;
    let mut lat = reader.join().map_err(|_| "reader panicked")?;
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    Ok((pct(0.5), pct(0.99)))
}

/// `encode_yuv`'s path: a reading thread fills ring slots straight from the file.
fn stage_from_file(config: &EncoderConfig, path: &std::path::Path) -> Result<f64, BoxError> {
    let encoder = X264Encoder::new(config)?;
    let started = Instant::now();
    let (mut producer, output) = EncodePipeline::with_encoder(
        Box::new(encoder),
        PipelineOptions::default().with_ring_slots(8),
    )?
    .split();
    let path = path.to_owned();
    let reading = std::thread::spawn(move || -> Result<(), String> {
        let mut file =
            std::io::BufReader::new(std::fs::File::open(path).map_err(|e| e.to_string())?);
        let mut pts = 0;
        loop {
            let mut slot = producer.reserve().map_err(|e| e.to_string())?;
            match file.read_exact(&mut slot) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e.to_string()),
            }
            let _ = slot.commit(pts, false).map_err(|e| e.to_string())?;
            pts += 1;
        }
        producer.finish().map_err(|e| e.to_string())
    });
    let mut bytes = Vec::new();
    for chunk in output {
        bytes.extend_from_slice(&chunk?.data);
    }
    reading.join().map_err(|_| "reader panicked")??;
    std::hint::black_box(bytes);
    Ok(started.elapsed().as_secs_f64())
}

fn x264_cli(config: &EncoderConfig, path: &std::path::Path, threads: u32) -> Result<f64, BoxError> {
    let started = Instant::now();
    let status = Command::new("x264")
        .args([
            "--preset",
            "ultrafast",
            "--crf",
            "23",
            "--threads",
            &threads.to_string(),
        ])
        .args([
            "--input-res",
            &format!("{}x{}", config.resolution.width, config.resolution.height),
        ])
        .args(["--fps", "30", "--quiet", "-o", "/dev/null"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("x264 CLI failed: {status}").into());
    }
    Ok(started.elapsed().as_secs_f64())
}

fn main() -> Result<(), BoxError> {
    let frames: u64 = env_or("PIPE_BENCH_FRAMES", 300);
    let threads: u32 = env_or("PIPE_BENCH_THREADS", 2);

    // 1. Jitter smoothing.
    let config = EncoderConfig::new(1280, 720)
        .with_preset(Preset::Ultrafast)
        .with_threads(threads);
    let input = clip(&config, frames)?;
    let alone = encoder_alone(&config, &input)?;
    println!("jitter smoothing: x264 ultrafast 1280x720, {frames} frames, encoder alone {alone:.0} fps; arrival at that rate, stalls 1-10 intervals then a burst");
    println!(
        "{:>5} | {:>22} {:>6} {:>8} | {:>16} {:>12} {:>8}",
        "ring",
        "DropNewest: fraction",
        "lost",
        "highest",
        "Block: fraction",
        "blocked ms",
        "highest"
    );
    for slots in [2, 4, 8, 16, 32] {
        let d = smoothing(&config, &input, slots, alone, BackPressure::DropNewest)?;
        let b = smoothing(&config, &input, slots, alone, BackPressure::Block)?;
        println!(
            "{slots:>5} | {:>22.3} {:>6} {:>8} | {:>16.3} {:>12.0} {:>8}",
            d.fraction,
            d.lost,
            d.highest,
            b.fraction,
            b.blocked.as_secs_f64() * 1e3,
            b.highest
        );
    }

    // 2. Latency at 1080p30.
    let config = EncoderConfig::new(1920, 1080)
        .with_preset(Preset::Ultrafast)
        .with_tune(Some(Tune::Zerolatency))
        .with_threads(threads);
    let input = clip(&config, 90)?;
    let (p50, p99) = latency(&config, &input)?;
    println!("latency: 1080p30 x264 ultrafast zerolatency, 90 frames at 30 fps: submit-to-chunk p50 {p50:.1} ms, p99 {p99:.1} ms (frame interval 33.3 ms)");

    // 3. encode_yuv's path vs the x264 CLI.
    let config = EncoderConfig::new(1280, 720)
        .with_preset(Preset::Ultrafast)
        .with_crf(23.0)
        .with_threads(threads);
    let input = clip(&config, frames)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("clip.yuv");
    std::fs::write(&path, input.concat())?;
    drop(input);
    let mut stage = f64::MAX;
    let mut cli = f64::MAX;
    for _ in 0..3 {
        stage = stage.min(stage_from_file(&config, &path)?);
        cli = cli.min(x264_cli(&config, &path, threads)?);
    }
    println!("encode_yuv path vs x264 CLI: 1280x720 {frames} frames ultrafast crf 23 threads {threads}, best of 3: stage {stage:.3} s, CLI {cli:.3} s, ratio {:.2}", stage / cli);
    Ok(())
}
