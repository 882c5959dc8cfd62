//! Many streams in one process, over two emulated GPUs: N pipeline stages (N = 1, 4, 16, 64) of
//! 1080p I420 sources paced at 30 fps, NVENC placed by `GpuChoice::Auto`, the emulated driver in
//! fast mode (no pixel read-back, no encoding: what remains is each client's own work). Beside
//! it, in the same run, N `ffmpeg -c:v h264_nvenc` processes on the same emulated driver, each
//! encoding FFmpeg's own 1080p test source paced at 30 fps (`-re`).
//!
//! ```text
//! cargo bench --bench streams                          # N = 1, 4, 16, 64; 90 frames a stream
//! STREAMS_BENCH_N=1,4 STREAMS_BENCH_FRAMES=150 cargo bench --bench streams
//! ```
//!
//! Per N: the streams that kept 30 fps with no frame lost (every frame out, the last one within
//! half a second of the source's schedule), CPU time per stream-frame (the children's user +
//! system time, all threads), pinned memory per stream (the stage's ring: what the ring and NVENC
//! hold, by construction; NVENC's staging is not allocated for ring slots), threads per stream
//! (the process's threads at their peak, less those of an idle process and the bench's own
//! source and reader threads, over N: the crate's), memory per
//! stream (the child's peak RSS over N; for FFmpeg, the mean of each process's peak RSS), and
//! where NVENC placed the streams. The source's own work differs: the stage's producer copies a
//! prepared frame into its slot; FFmpeg draws `testsrc2` and converts it.
//!
//! The run fails when a child fails or the emulator reports an API violation or a leaked handle.

use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nvenc_emu_harness::EmuDriver;
use nvencode::pipeline::{EncodePipeline, PipelineOptions, Received};
use nvencode::testsrc::TestPattern;
use nvencode::{EncoderConfig, FrameRate, GpuEncoderConfig, PixelFormat, Resolution};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CHILD: &str = "STREAMS_BENCH_CHILD";
const FPS: u32 = 30;
/// How late the last chunk of a stream may come, past its source's schedule, for the stream to
/// count as having kept its rate.
const LATE: Duration = Duration::from_millis(500);

fn main() -> Result<(), BoxError> {
    let frames: u64 = std::env::var("STREAMS_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(90);
    if let Ok(n) = std::env::var(CHILD) {
        return child(n.parse()?, frames);
    }
    let counts: Vec<usize> = std::env::var("STREAMS_BENCH_N")
        .unwrap_or_else(|_| "1,4,16,64".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let exe = std::env::current_exe()?;
    let with_ffmpeg = nvenc_emu_harness::video::ffmpeg_with_nvenc();
    println!(
        "{} cores; 1920x1080 yuv420p at {FPS} fps, {frames} frames a stream; 2 emulated GPUs, fast mode",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "{:<24} {:>4} {:>10} {:>14} {:>12} {:>12} {:>12}  placement",
        "client", "N", "sustained", "CPU ms/frame", "pinned MB", "threads", "RSS MB"
    );
    let mut failed = Vec::new();
    for &n in &counts {
        // The stage: one process, N streams.
        let emu = EmuDriver::new().fast().cuda_devices(2);
        let mut cmd = emu.command(&exe);
        cmd.env(CHILD, n.to_string())
            .env("STREAMS_BENCH_FRAMES", frames.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = cmd.output()?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            failed.push(format!(
                "stage N={n} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
            continue;
        }
        let v = emu.report().violations;
        if !v.is_empty() {
            failed.push(format!("stage N={n}: emulator violations {v:?}"));
        }
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or("?")
                .to_owned()
        };
        println!(
            "{:<24} {:>4} {:>10} {:>14} {:>12} {:>12} {:>12}  {}",
            "nvencode stage",
            n,
            format!("{}/{n}", field("sustained")),
            field("cpu_ms_per_frame"),
            field("pinned_mb_per_stream"),
            field("threads_per_stream"),
            field("rss_mb_per_stream"),
            field("placement")
        );
        if !with_ffmpeg {
            println!(
                "{:<24} {n:>4} skipped: ffmpeg has no h264_nvenc",
                "ffmpeg -c:v h264_nvenc"
            );
            continue;
        }
        match ffmpeg_row(n, frames) {
            Ok(row) => println!(
                "{:<24} {:>4} {:>10} {:>14.3} {:>12} {:>12} {:>12.1}  (one process a stream)",
                "ffmpeg -c:v h264_nvenc",
                n,
                format!("{}/{n}", row.sustained),
                row.cpu_ms_per_frame,
                "-",
                "-",
                row.rss_mb
            ),
            Err(e) => failed.push(format!("ffmpeg N={n}: {e}")),
        }
    }
    if !failed.is_empty() {
        return Err(failed.join("\n").into());
    }
    Ok(())
}

fn tv(t: libc::timeval) -> Duration {
    Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000)
}

/// This process's own user + system time (all threads) and peak RSS in MB.
fn self_usage() -> (Duration, f64) {
    // SAFETY: `rusage` is a plain C struct of integers, for which all-zero bytes are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `getrusage` writes one `rusage` into the valid local it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    (
        tv(usage.ru_utime) + tv(usage.ru_stime),
        usage.ru_maxrss as f64 / 1024.0,
    )
}

/// Threads of this process now.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count)
}

/// One stream's outcome.
struct Stream {
    gpu: Option<usize>,
    frames_out: u64,
    lost: u64,
    late: Duration,
    pinned_bytes: usize,
}

/// The child: N stages side by side, then one line per figure on standard output.
fn child(n: usize, frames: u64) -> Result<(), BoxError> {
    let size = Resolution::new(1920, 1080);
    let config = EncoderConfig::new(size.width, size.height)
        .with_pixel_format(PixelFormat::I420)
        .with_frame_rate(FrameRate::new(FPS, 1))
        .with_preset(nvencode::Preset::Ultrafast)
        .with_tune(Some(nvencode::Tune::Zerolatency));
    let frame_len = config.validate()?;
    let pattern = TestPattern::new(size, PixelFormat::I420)?;
    let mut frame = Vec::new();
    pattern.fill(0, &mut frame);
    let frame = Arc::new(frame);
    let idle_threads = threads();
    let (cpu0, _) = self_usage();
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(idle_threads));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (Arc::clone(&peak), Arc::clone(&sampling));
        std::thread::spawn(move || {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(threads(), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (config, frame) = (config.clone(), Arc::clone(&frame));
            std::thread::spawn(move || stream(&config, &frame, frame_len, frames))
        })
        .collect();
    let mut streams = Vec::new();
    for h in handles {
        streams.push(h.join().map_err(|_| "a stream's thread panicked")??);
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.join();
    let (cpu1, rss_mb) = self_usage();
    let sustained = streams
        .iter()
        .filter(|s| s.lost == 0 && s.frames_out == frames && s.late <= LATE)
        .count();
    let mut placement = std::collections::BTreeMap::new();
    for s in &streams {
        *placement
            .entry(s.gpu.map_or("software".to_owned(), |g| format!("GPU {g}")))
            .or_insert(0) += 1;
    }
    let placement: Vec<String> = placement.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let pinned = streams.iter().map(|s| s.pinned_bytes).sum::<usize>() as f64 / n as f64 / 1e6;
    // One thread samples the count, and each stream has two of this bench's own (its source
    // and its reader): what is left is the crate's.
    let stream_threads = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(idle_threads + 1 + 2 * n);
    let mut out = std::io::stdout().lock();
    writeln!(out, "sustained {sustained}")?;
    writeln!(
        out,
        "cpu_ms_per_frame {:.3}",
        (cpu1 - cpu0).as_secs_f64() * 1e3 / (n as f64 * frames as f64)
    )?;
    writeln!(out, "pinned_mb_per_stream {pinned:.1}")?;
    writeln!(
        out,
        "threads_per_stream {:.1}",
        stream_threads as f64 / n as f64
    )?;
    writeln!(out, "rss_mb_per_stream {:.1}", rss_mb / n as f64)?;
    writeln!(out, "placement {}", placement.join(", "))?;
    Ok(())
}

/// One stage: a source paced at `FPS` copying `frame` into its slots, and its output drained.
fn stream(
    config: &EncoderConfig,
    frame: &[u8],
    frame_len: usize,
    frames: u64,
) -> Result<Stream, BoxError> {
    let gpu = GpuEncoderConfig::default();
    let (mut producer, mut output) =
        EncodePipeline::open_with(config, &gpu, PipelineOptions::from_gpu_config(&gpu))?.split();
    let on = output.gpu();
    let stats = output.stats();
    let pinned_bytes = if matches!(
        producer.slot_memory(),
        nvencode::pipeline::SlotMemory::Pinned
    ) {
        stats.capacity() * frame_len
    } else {
        0
    };
    let interval = Duration::from_secs(1) / FPS;
    let started = Instant::now();
    let source = {
        let frame = frame.to_vec();
        std::thread::spawn(move || -> Result<(), BoxError> {
            for i in 0..frames {
                let due = started + interval * i as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let mut slot = producer.reserve_timeout(Duration::from_secs(30))?;
                slot.copy_from_slice(&frame);
                let _ = slot.commit(i as i64, false)?;
            }
            producer.finish()?;
            Ok(())
        })
    };
    let mut frames_out = 0u64;
    loop {
        match output.recv_timeout(Duration::from_secs(60)) {
            Received::Item(Ok(_)) => frames_out += 1,
            Received::Item(Err(e)) => return Err(e.into()),
            Received::End => break,
            Received::Pending => return Err("no chunk within 60 s".into()),
        }
    }
    let schedule = interval * frames as u32;
    let late = started.elapsed().saturating_sub(schedule);
    source.join().map_err(|_| "the source panicked")??;
    Ok(Stream {
        gpu: on,
        frames_out,
        lost: stats.dropped(),
        late,
        pinned_bytes,
    })
}

/// N FFmpeg processes side by side, each `-re` paced: how many kept their rate (every frame out
/// by the schedule plus `LATE`), CPU per stream-frame, mean peak RSS.
struct FfmpegRow {
    sustained: usize,
    cpu_ms_per_frame: f64,
    rss_mb: f64,
}

fn ffmpeg_row(n: usize, frames: u64) -> Result<FfmpegRow, BoxError> {
    let mut children = Vec::new();
    let mut emus = Vec::new();
    let started = Instant::now();
    for _ in 0..n {
        let emu = EmuDriver::new().fast().cuda_devices(2);
        let mut cmd = emu.command("ffmpeg");
        cmd.args([
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!("testsrc2=size=1920x1080:rate={FPS}"))
        .args(["-frames:v", &frames.to_string(), "-pix_fmt", "yuv420p"])
        .args([
            "-c:v",
            "h264_nvenc",
            "-preset",
            "p1",
            "-tune",
            "ull",
            "-f",
            "null",
            "-",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        children.push(cmd.spawn()?);
        emus.push(emu);
    }
    let schedule = Duration::from_secs(1) / FPS * frames as u32;
    let mut sustained = 0;
    let mut cpu = Duration::ZERO;
    let mut rss_kb = 0i64;
    for child in children {
        // SAFETY: `rusage` is plain integers; all-zero is valid.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let mut status = 0;
        // SAFETY: waits for our own child by its pid, writing into valid locals; the `Child`
        // handle is not waited for again.
        let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
        if pid <= 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            return Err(format!("an ffmpeg process failed (status {status})").into());
        }
        if started.elapsed() <= schedule + LATE {
            sustained += 1;
        }
        cpu += tv(usage.ru_utime) + tv(usage.ru_stime);
        rss_kb += usage.ru_maxrss;
    }
    for emu in &emus {
        let v = emu.report().violations;
        if !v.is_empty() {
            return Err(format!("emulator violations {v:?}").into());
        }
    }
    Ok(FfmpegRow {
        sustained,
        cpu_ms_per_frame: cpu.as_secs_f64() * 1e3 / (n as f64 * frames as f64),
        rss_mb: rss_kb as f64 / 1024.0 / n as f64,
    })
}
