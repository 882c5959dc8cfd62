//! Measurements of the pipeline stage, printed side by side in one run (not timed tests):
//!
//! 0. The stage's own cost: the encoder alone vs the stage with a source that floods it (`push`,
//!    one copy per frame; and reserve+commit in place, no copy), same frames, interleaved runs.
//! 1. Ring sizing under jitter (x264 ultrafast 1080p): a live source on a network (stalls of up to 10 frame intervals,
//!    after which what was sent during the stall arrives at once) at a utilisation of 0.8, 0.9,
//!    0.95 and 1.0 of the encoder's sustained rate, into rings of 2 to 32 slots: frames lost with
//!    `BackPressure::DropNewest` (median and worst of 5 runs), throughput as a fraction of the
//!    source's rate, highest depth, and how long `Block` held the source back; then the smallest
//!    ring that lost nothing beside what `pipeline::ring_slots_for` says.
//! 2. Submit-to-chunk latency p50/p99 at 1080p30, x264 ultrafast + zerolatency, real-time pacing.
//! 3. `encode_yuv`'s path (a reading thread filling ring slots from a file) vs the `x264` CLI on
//!    the same clip, preset ultrafast, crf 23, same threads.
//!
//! `cargo bench --bench pipeline` (env: PIPE_BENCH_SECTIONS, e.g. `13`, default `0123`, where 0 is
//! the stage's overhead and 1 the jitter runs;
//! PIPE_BENCH_FRAMES for section 3, default 300; PIPE_BENCH_OVERHEAD_FRAMES, default 1000;
//! PIPE_BENCH_JITTER_FRAMES, default 600;
//! PIPE_BENCH_JITTER_RUNS, default 5; PIPE_BENCH_UTILISATIONS, default `0.8,0.9,0.95,1.0`;
//! PIPE_BENCH_RING_SIZES, default `2,4,8,10,11,12,13,14,16,24,32`;
//! PIPE_BENCH_LATENCY_FRAMES, default 300; PIPE_BENCH_THREADS, default 2;
//! PIPE_BENCH_JITTER_THREADS for the jitter runs, default PIPE_BENCH_THREADS but at most the cores
//! less one, so the source has a core; PIPE_BENCH_ROUNDS, default 7; PIPE_BENCH_JITTER_TRIES,
//! default 4: a jitter run during which a canary thread was held back more than 2 intervals, or
//! whose encoder was more than 2% slower than measured before the runs, is run again, up to that
//! many times in all, and the table says how many were). Each section prints
//! the machine's load average: figures taken while other work runs are skewed.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nvencode::pipeline::{BackPressure, EncodePipeline, PipelineOptions, Received, Submitted};
use nvencode::testsrc::TestPattern;
use nvencode::{
    EncodedChunk, EncoderConfig, EncoderKind, Error, Frame, FrameType, Preset, Tune, VideoEncoder,
    X264Encoder,
};

#[path = "support/network_stalls.rs"]
mod network_stalls;

type BoxError = Box<dyn std::error::Error>;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn clip(config: &EncoderConfig, n: u64) -> Result<Vec<Vec<u8>>, BoxError> {
    let pattern = TestPattern::new(config.resolution, config.pixel_format)?;
    Ok((0..n).map(|i| pattern.frame(i)).collect())
}

/// Seconds the encoder alone takes for `frames`, fed back to back from memory, flush included
/// (the clock starts at the first frame, after the encoder has opened, as in [`stage`]).
fn encoder_alone(config: &EncoderConfig, frames: &[Vec<u8>]) -> Result<f64, BoxError> {
    let mut encoder = X264Encoder::new(config)?;
    let mut out = Vec::new();
    let started = Instant::now();
    for f in frames {
        encoder.encode_frame(f, &mut out)?;
        out.clear();
    }
    encoder.flush(&mut out)?;
    Ok(started.elapsed().as_secs_f64())
}

/// How the source writes a frame into the stage.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    /// `push`: one copy of the frame into the slot (what a socket read into the slot costs).
    Copy,
    /// `reserve` + `commit` of the slot as it is: the stage's own cost per frame, no bytes moved.
    /// The first `slots` frames are pushed to fill the slots, so the encoder gets clip frames
    /// `i % slots` (compare with the encoder alone fed the same sequence).
    InPlace,
    /// As `InPlace`, but neither the source nor the reader ever sleeps in the stage: the source
    /// naps 1 ms while the ring is full and the reader polls the output every 1 ms, so the
    /// encoder thread has no one to wake per frame. Compared with `InPlace`, it shows what the
    /// per-frame wake-ups cost when x264's threads occupy every core.
    InPlaceQuiet,
}

struct Run {
    secs: f64,
    out: usize,
    lost: u64,
    highest: usize,
    blocked: Duration,
    /// The encoder's own time in `encode` and `flush`, over the run.
    busy: Duration,
}

/// x264 with a clock on it: the time spent in `encode` and `flush`, which is what the encoder
/// takes per frame on this machine at this moment (see [`Disturbance`]).
struct Timed {
    inner: X264Encoder,
    busy: Arc<std::sync::atomic::AtomicU64>,
}

impl Timed {
    fn time<T>(&mut self, f: impl FnOnce(&mut X264Encoder) -> T) -> T {
        let started = Instant::now();
        let out = f(&mut self.inner);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.busy.fetch_add(nanos, Ordering::Relaxed);
        out
    }
}

impl VideoEncoder for Timed {
    fn encode(&mut self, frame: Frame<'_>, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        self.time(|e| e.encode(frame, out))
    }
    fn flush(&mut self, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        self.time(|e| e.flush(out))
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
}

/// The stage fed with `frames` at `arrivals` (`None`: back to back, as fast as it takes them).
fn stage(
    config: &EncoderConfig,
    frames: &[Vec<u8>],
    arrivals: Option<&[Duration]>,
    slots: usize,
    policy: BackPressure,
    write: Write,
) -> Result<Run, BoxError> {
    let busy = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let encoder = Timed {
        inner: X264Encoder::new(config)?,
        busy: Arc::clone(&busy),
    };
    let options = PipelineOptions::default()
        .with_ring_slots(slots)
        .with_back_pressure(policy);
    let (mut producer, output) = EncodePipeline::with_encoder(Box::new(encoder), options)?.split();
    let stats = producer.stats();
    let reader = std::thread::spawn(move || {
        let mut output = output;
        let out = if write == Write::InPlaceQuiet {
            let mut out = 0;
            loop {
                match output.try_recv() {
                    Received::Item(item) => out += usize::from(item.is_ok()),
                    Received::Pending => std::thread::sleep(Duration::from_millis(1)),
                    Received::End => break out,
                }
            }
        } else {
            output.filter(Result::is_ok).count()
        };
        (out, Instant::now())
    });
    let mut highest = 0;
    let mut lost = 0;
    let started = Instant::now();
    for (i, f) in frames.iter().enumerate() {
        if let Some(arrivals) = arrivals {
            if let Some(wait) = (started + arrivals[i]).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let submitted = match write {
            Write::Copy => producer.push(&f[..])?,
            // The first pass over the slots fills them; later frames are what the slot holds.
            Write::InPlace | Write::InPlaceQuiet if i < slots => producer.push(&f[..])?,
            Write::InPlace => producer.reserve()?.commit(i as i64, false)?,
            Write::InPlaceQuiet => {
                // Only this source fills slots, so once one is free `reserve` does not wait.
                while stats.occupied() >= slots {
                    std::thread::sleep(Duration::from_millis(1));
                }
                producer.reserve()?.commit(i as i64, false)?
            }
        };
        if submitted == Submitted::Dropped {
            lost += 1;
        }
        // Frames queued and held by the encoder, the one slot added for the encoder's leases
        // not counted past the ring's size.
        highest = highest.max(stats.occupied().min(slots));
    }
    producer.finish()?;
    let (out, ended) = reader.join().map_err(|_| "reader panicked")?;
    Ok(Run {
        secs: ended.duration_since(started).as_secs_f64(),
        out,
        lost,
        highest,
        blocked: stats.producer_blocked(),
        busy: Duration::from_nanos(busy.load(Ordering::Relaxed)),
    })
}

/// Watches the machine during a run: a thread that asks to sleep 1 ms over and over and keeps
/// the longest it was kept waiting beyond that. On a quiet machine that is well under a
/// millisecond; another process taking the cores, or the machine's own pauses, show up as tens
/// of milliseconds, several of the jitter runs' intervals, which is a stall the benchmark did not
/// ask for.
struct Canary {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Duration>,
}

/// What a run was disturbed by: the canary's longest scheduling delay, and how much slower the
/// encoder was than measured before the runs (its mean time per frame in the run against the
/// one the section measured). A shared machine's capacity varies without pauses: another
/// tenant's work slows the encoder for seconds while every thread still wakes on time, its
/// utilisation is then higher than the one the run was set at, and a ring that was big enough
/// loses frames. Both are measured so that such a run is not read as a ring too small.
#[derive(Clone, Copy, Debug, Default)]
struct Disturbance {
    pause: Duration,
    slower: f64,
}

impl Canary {
    fn start() -> Canary {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let tick = Duration::from_millis(1);
            let mut worst = Duration::ZERO;
            while !flag.load(Ordering::Relaxed) {
                let asked = Instant::now();
                std::thread::sleep(tick);
                worst = worst.max(asked.elapsed().saturating_sub(tick));
            }
            worst
        });
        Canary { stop, thread }
    }

    /// The longest delay seen since [`Canary::start`].
    fn stop(self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(Duration::MAX)
    }
}

/// A jitter run of [`stage`] on a machine that was not disturbed: a run during which the
/// [`Canary`] was held back more than `pause`, or the encoder was more than [`SLOWER_MAX`] slower
/// than `service` (its time per frame measured before), is run again, up to `tries` times in
/// all; returns the run, what disturbed it, and how many runs were thrown away.
#[allow(clippy::too_many_arguments)]
fn quiet_stage(
    config: &EncoderConfig,
    frames: &[Vec<u8>],
    arrivals: &[Duration],
    slots: usize,
    policy: BackPressure,
    pause: Duration,
    service: Duration,
    tries: u32,
) -> Result<(Run, Disturbance, u32), BoxError> {
    let mut discarded = 0;
    loop {
        let canary = Canary::start();
        let run = stage(config, frames, Some(arrivals), slots, policy, Write::Copy)?;
        let per_frame = run.busy.as_secs_f64() / frames.len().max(1) as f64;
        let seen = Disturbance {
            pause: canary.stop(),
            slower: per_frame / service.as_secs_f64() - 1.0,
        };
        let quiet = seen.pause <= pause && seen.slower <= SLOWER_MAX;
        if quiet || discarded + 1 >= tries {
            return Ok((run, seen, discarded));
        }
        discarded += 1;
    }
}

/// How much slower than measured the encoder may be in a jitter run: 2% raises a utilisation of
/// 0.95 to 0.97, which is already a different question. Its natural variation (the coefficient
/// the section prints, 5-10% per frame) averages out over a run's hundreds of frames.
const SLOWER_MAX: f64 = 0.02;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// An encoder that does no work: one 1 KiB chunk per frame, at once. Through the stage it shows
/// the stage's own cost per frame (the ring hand-off, the encoder thread's wake-ups, the output
/// queue), with nothing to hide it.
struct Null {
    config: EncoderConfig,
    next: u64,
}

impl VideoEncoder for Null {
    fn encode(&mut self, _frame: Frame<'_>, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        out.push(EncodedChunk {
            data: vec![0; 1024],
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

/// The stage's own cost per frame: `frames` frames committed in place (no bytes written) through
/// an encoder that does no work, ring 8; wall and CPU microseconds per frame, best of 5.
fn stage_cost(frames: u64) -> Result<(f64, f64), BoxError> {
    let config = EncoderConfig::new(64, 64);
    let (mut wall, mut cpu) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        let encoder = Null {
            config: config.clone(),
            next: 0,
        };
        let (mut producer, output) =
            EncodePipeline::with_encoder(Box::new(encoder), PipelineOptions::default())?.split();
        let reader = std::thread::spawn(move || output.filter(Result::is_ok).count());
        let cpu_at = cpu_secs();
        let started = Instant::now();
        for pts in 0..frames {
            let _ = producer.reserve()?.commit(pts as i64, false)?;
        }
        producer.finish()?;
        let out = reader.join().map_err(|_| "reader panicked")?;
        if out as u64 != frames {
            return Err(format!("{frames} frames in, {out} out").into());
        }
        wall = wall.min(started.elapsed().as_secs_f64());
        cpu = cpu.min(cpu_secs() - cpu_at);
    }
    Ok((wall * 1e6 / frames as f64, cpu * 1e6 / frames as f64))
}

/// Section 1a: the stage's own cost, over an encoder that does no work and over x264.
fn stage_overhead(frames: u64, threads: &[u32]) -> Result<(), BoxError> {
    let load = load_average();
    let (wall_us, cpu_us) = stage_cost(100_000)?;
    println!("stage cost: 100000 frames through an encoder that does no work, reserve+commit in place, ring 8, best of 5: {wall_us:.1} us wall, {cpu_us:.1} us CPU per frame (all threads); load average before {load}");
    let rounds: usize = env_or("PIPE_BENCH_ROUNDS", 7);
    for &threads in threads {
        let load = load_average();
        let config = EncoderConfig::new(1280, 720)
            .with_preset(Preset::Ultrafast)
            .with_threads(threads);
        let input = clip(&config, frames)?;
        let n = input.len() as f64;
        // The sequence the in-place source gives the encoder (see `Write::InPlace`).
        let cyclic: Vec<Vec<u8>> = (0..input.len()).map(|i| input[i % 8].clone()).collect();
        // Wall seconds and process CPU seconds (every thread: x264's, the stage's, the source's).
        let flood = |frames: &[Vec<u8>], write| -> Result<(f64, f64), BoxError> {
            let cpu = cpu_secs();
            let run = stage(&config, frames, None, 8, BackPressure::Block, write)?;
            if run.out != frames.len() {
                return Err(format!("{} frames in, {} out", frames.len(), run.out).into());
            }
            Ok((run.secs, cpu_secs() - cpu))
        };
        let alone = |frames: &[Vec<u8>]| -> Result<(f64, f64), BoxError> {
            let cpu = cpu_secs();
            let secs = encoder_alone(&config, frames)?;
            Ok((secs, cpu_secs() - cpu))
        };
        // Warm-up (page faults, x264's tables, the CPU's clock), then rounds of four runs back to
        // back, so that load from elsewhere on the machine falls on a round's runs alike; each
        // stage run is compared with the encoder-alone run of its own round (a paired ratio).
        alone(&input)?;
        let (mut copy_ratio, mut in_place_ratio, mut quiet_ratio) = (vec![], vec![], vec![]);
        let (mut cpu_alone, mut cpu_copy, mut cpu_cyclic, mut cpu_in_place) =
            (vec![], vec![], vec![], vec![]);
        let mut fps_alone = vec![];
        for _ in 0..rounds {
            let a = alone(&input)?;
            let c = flood(&input, Write::Copy)?;
            let ac = alone(&cyclic)?;
            let i = flood(&input, Write::InPlace)?;
            let q = flood(&input, Write::InPlaceQuiet)?;
            copy_ratio.push(a.0 / c.0);
            in_place_ratio.push(ac.0 / i.0);
            quiet_ratio.push(ac.0 / q.0);
            fps_alone.push(n / a.0);
            cpu_alone.push(a.1 * 1e3 / n);
            cpu_copy.push(c.1 * 1e3 / n);
            cpu_cyclic.push(ac.1 * 1e3 / n);
            cpu_in_place.push(i.1 * 1e3 / n);
        }
        let spread = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::MAX, f64::min);
            let hi = v.iter().copied().fold(f64::MIN, f64::max);
            format!("{lo:.3}-{hi:.3}")
        };
        println!("stage overhead: x264 ultrafast 1280x720 threads {threads}, {frames} frames fed back to back, ring 8, {rounds} interleaved rounds, medians; load average before {load}");
        println!(
            "  encoder alone {:.0} fps, {:.2} CPU ms/frame",
            median(fps_alone),
            median(cpu_alone)
        );
        println!("  stage, push (one copy per frame): {:.3} of the encoder alone's rate (rounds {}), {:.2} CPU ms/frame",
            median(copy_ratio.clone()), spread(&copy_ratio), median(cpu_copy));
        println!("  stage, reserve+commit in place (no copy; frames i % 8): {:.3} of the encoder alone on the same frames (rounds {}), {:.2} CPU ms/frame against {:.2}",
            median(in_place_ratio.clone()), spread(&in_place_ratio), median(cpu_in_place), median(cpu_cyclic));
        println!("  the same with no per-frame wake-ups (source naps while full, reader polls every 1 ms): {:.3} (rounds {})",
            median(quiet_ratio.clone()), spread(&quiet_ratio));
    }
    Ok(())
}

/// Section 1b: ring sizing under jitter. The source runs at a set utilisation of the rate the
/// encoder sustains in the stage fed by this source (measured just before), with the network
/// stalls of `support/network_stalls.rs` (1 to 10 intervals). For each utilisation and ring size: frames lost
/// with `DropNewest` (median and worst of the runs, each run its own stall pattern, the same
/// patterns in every invocation), throughput as a fraction of the source's rate, the highest
/// depth, and the time a `Block` source was held back instead (one run); then the smallest ring
/// that lost nothing in every run beside what `pipeline::ring_slots_for` says it needs.
fn jitter_smoothing(frames: u64, threads: u32) -> Result<(), BoxError> {
    let load = load_average();
    let runs: u64 = env_or("PIPE_BENCH_JITTER_RUNS", 5);
    let utilisations: Vec<f64> = env_or("PIPE_BENCH_UTILISATIONS", "0.8,0.9,0.95,1.0".to_owned())
        .split(',')
        .filter_map(|u| u.trim().parse().ok())
        .collect();
    let sizes: Vec<usize> = env_or(
        "PIPE_BENCH_RING_SIZES",
        "2,4,8,10,11,12,13,14,16,24,32".to_owned(),
    )
    .split(',')
    .filter_map(|n| n.trim().parse().ok())
    .collect();
    // 1080p: an interval of ~6 ms at this machine's x264 rate, so that the machine's own
    // hiccups (tens of milliseconds) are a few intervals, not the dozen they are at 720p.
    let config = EncoderConfig::new(1920, 1080)
        .with_preset(Preset::Ultrafast)
        .with_threads(threads);
    let input = clip(&config, frames)?;
    let n = input.len() as f64;
    // The encoder's steady rate in the stage fed back to back by this source (warm-up, then 5
    // rounds, median), and the spread of its time per frame alone (what a ring must also absorb).
    stage(&config, &input, None, 8, BackPressure::Block, Write::Copy)?;
    let mut flooded = vec![];
    let mut busy = vec![];
    for _ in 0..5 {
        let r = stage(&config, &input, None, 8, BackPressure::Block, Write::Copy)?;
        flooded.push(r.secs);
        busy.push(r.busy.as_secs_f64());
    }
    let flooded_fps = n / median(flooded);
    // The encoder's own time per frame, fed back to back: what each jitter run's is compared to.
    let service = Duration::from_secs_f64(median(busy) / n);
    let cv = service_time_cv(&config, &input)?;
    let longest_stall = network_stalls::LONGEST_STALL;
    // A run the machine paused for longer than this (the canary's delay) is run again, up to
    // `tries` times: 2 intervals at the highest utilisation, a stall as long as the shortest the
    // benchmark sends.
    let tries: u32 = env_or("PIPE_BENCH_JITTER_TRIES", 4);
    println!("ring sizing under jitter: x264 ultrafast 1920x1080 threads {threads}, {frames} frames a run, {runs} runs a setting; encoder in the stage fed back to back by the source {flooded_fps:.0} fps, its time per frame alone varies by {:.1}% (coefficient of variation); load average before {load}", cv * 100.0);
    println!("  the source pushes each frame (one copy) at the utilisation's share of {flooded_fps:.0} fps; one frame in 8 starts a stall of 1-{longest_stall} intervals, and what was sent during it arrives at once when it ends");
    println!(
        "{:>5} {:>5} | {:>12} {:>6} {:>8} {:>8} | {:>11} | {:>20}",
        "util",
        "ring",
        "lost med/max",
        "of",
        "through",
        "highest",
        "Block: held",
        "pause slower/re"
    );
    let mut discarded_total = 0;
    let mut paused_kept = 0;
    for &u in &utilisations {
        let interval = Duration::from_secs_f64(1.0 / (u * flooded_fps));
        let pause = interval * 2;
        let patterns: Vec<Vec<Duration>> = (1..=runs)
            .map(|run| {
                network_stalls::arrivals(input.len(), network_stalls::seed(run))
                    .into_iter()
                    .map(|at| interval.mul_f64(at))
                    .collect()
            })
            .collect();
        let mut smallest_lossless = None;
        let mut lossless_in_a_row = 0;
        for &slots in &sizes {
            if lossless_in_a_row >= 2 {
                println!(
                    "{u:>5.2} {slots:>5} | not run: the two sizes below lost nothing in every run"
                );
                continue;
            }
            let mut lost = vec![];
            let mut through = vec![];
            let mut highest = 0;
            let mut worst_pause = Duration::ZERO;
            let mut worst_slower = f64::MIN;
            let mut discarded = 0;
            for pattern in &patterns {
                let (r, seen, thrown) = quiet_stage(
                    &config,
                    &input,
                    pattern,
                    slots,
                    BackPressure::DropNewest,
                    pause,
                    service,
                    tries,
                )?;
                worst_pause = worst_pause.max(seen.pause);
                worst_slower = worst_slower.max(seen.slower);
                discarded += thrown;
                if seen.pause > pause || seen.slower > SLOWER_MAX {
                    paused_kept += 1;
                }
                lost.push(r.lost as f64);
                through.push(r.out as f64 / r.secs / (u * flooded_fps));
                highest = highest.max(r.highest);
            }
            let held = stage(
                &config,
                &input,
                Some(&patterns[0]),
                slots,
                BackPressure::Block,
                Write::Copy,
            )?
            .blocked;
            let worst = lost.iter().copied().fold(0.0, f64::max);
            if worst == 0.0 {
                lossless_in_a_row += 1;
                smallest_lossless.get_or_insert(slots);
            } else {
                lossless_in_a_row = 0;
                smallest_lossless = None;
            }
            discarded_total += discarded;
            println!(
                "{u:>5.2} {slots:>5} | {:>5.0} / {:>4.0} {:>6} {:>8.3} {:>8} | {:>8.0} ms | {:>6.1} ms {:>+5.1}% / {discarded}",
                median(lost),
                worst,
                frames,
                median(through),
                highest,
                held.as_secs_f64() * 1e3,
                worst_pause.as_secs_f64() * 1e3,
                worst_slower * 100.0,
            );
        }
        let arithmetic = nvencode::pipeline::ring_slots_for(longest_stall, u).map_or_else(
            || "no finite ring (no headroom)".to_owned(),
            |s| format!("{s} slots"),
        );
        let measured = smallest_lossless.map_or_else(
            || "none of these sizes".to_owned(),
            |s| format!("{s} slots"),
        );
        println!("{u:>5.2}  arithmetic: {arithmetic}; smallest ring that lost nothing in all {runs} runs: {measured}");
    }
    println!(
        "  pause: the canary thread's longest wait beyond its 1 ms sleeps in a setting's runs; \
         slower: the most the encoder's mean time per frame in one of them exceeded the one \
         measured before the runs; re: runs run again because the pause exceeded 2 intervals or \
         the encoder was more than {:.0}% slower \
         ({discarded_total} in all; {paused_kept} kept after {tries} tries); load average after {}",
        SLOWER_MAX * 100.0,
        load_average()
    );
    Ok(())
}

/// The coefficient of variation of the encoder's time per frame, alone, over `frames`.
fn service_time_cv(config: &EncoderConfig, frames: &[Vec<u8>]) -> Result<f64, BoxError> {
    let mut encoder = X264Encoder::new(config)?;
    let mut out = Vec::new();
    let mut times = Vec::with_capacity(frames.len());
    for f in frames {
        let started = Instant::now();
        encoder.encode_frame(f, &mut out)?;
        times.push(started.elapsed().as_secs_f64());
        out.clear();
    }
    encoder.flush(&mut out)?;
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let var = times.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / times.len() as f64;
    Ok(var.sqrt() / mean)
}

/// Submit-to-chunk latency at real-time pacing (30 fps).
fn latency(config: &EncoderConfig, frames: &[Vec<u8>]) -> Result<(f64, f64, f64), BoxError> {
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
    if lat.len() != frames.len() {
        return Err(format!("{} frames in, {} chunks out", frames.len(), lat.len()).into());
    }
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    Ok((pct(0.5), pct(0.99), pct(1.0)))
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

    let sections: String = env_or("PIPE_BENCH_SECTIONS", "0123".to_owned());

    // 0. Stage overhead; 1. jitter smoothing.
    if sections.contains('0') || sections.contains('1') {
        let jitter_frames: u64 = env_or("PIPE_BENCH_JITTER_FRAMES", 600);
        // On a machine of few cores, x264 on every core leaves the source none: its copy and the
        // stage's threads then slow the encoder below the rate they are paced at, whatever the
        // ring. The jitter run is about the ring, so by default x264 leaves the source one core.
        let jitter_threads: u32 = env_or(
            "PIPE_BENCH_JITTER_THREADS",
            std::thread::available_parallelism()
                .map_or(1, |n| n.get() as u32 - 1)
                .min(threads)
                .max(1),
        );
        let mut overhead_threads = vec![jitter_threads];
        if threads != jitter_threads {
            overhead_threads.push(threads);
        }
        if sections.contains('0') {
            stage_overhead(
                env_or("PIPE_BENCH_OVERHEAD_FRAMES", 1000),
                &overhead_threads,
            )?;
        }
        if sections.contains('1') {
            jitter_smoothing(jitter_frames, jitter_threads)?;
        }
    }
    if sections.contains('2') {
        latency_section(env_or("PIPE_BENCH_LATENCY_FRAMES", 300), threads)?;
    }
    if sections.contains('3') {
        versus_cli(frames, threads)?;
    }
    Ok(())
}

/// Section 2: latency at 1080p30.
fn latency_section(frames: u64, threads: u32) -> Result<(), BoxError> {
    let load = load_average();
    let config = EncoderConfig::new(1920, 1080)
        .with_preset(Preset::Ultrafast)
        .with_tune(Some(Tune::Zerolatency));
    let input = clip(&config, frames)?;
    // zerolatency is x264's sliced threads (one frame split across threads, no frame delay): one
    // thread and the configured count side by side.
    for threads in [1, threads] {
        let (p50, p99, max) = latency(&config.clone().with_threads(threads), &input)?;
        println!("latency: 1080p30 x264 ultrafast zerolatency threads {threads}, {frames} frames paced at 30 fps: submit-to-chunk p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms (frame interval 33.3 ms); load average before {load}");
    }
    Ok(())
}

/// CPU seconds this process has used, all threads, user and system.
fn cpu_secs() -> f64 {
    // SAFETY: `rusage` is a plain C struct of integers, for which all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `getrusage` writes only into the `rusage` it is given, which is valid and writable.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// The 1-minute load average (`/proc/loadavg`): other work on the machine skews every figure. Read
/// before a section starts, since the bench's own threads raise it while they run.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// Section 3: `encode_yuv`'s path vs the x264 CLI.
fn versus_cli(frames: u64, threads: u32) -> Result<(), BoxError> {
    let load = load_average();
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
    println!("encode_yuv path vs x264 CLI: 1280x720 {frames} frames ultrafast crf 23 threads {threads}, best of 3: stage {stage:.3} s, CLI {cli:.3} s, ratio {:.2}; load average before {load}", stage / cli);
    Ok(())
}
