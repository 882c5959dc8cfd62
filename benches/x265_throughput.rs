//! Throughput of the in-process x265 backend beside FFmpeg's `-c:v libx265` and the `x265`
//! command line, on the built-in synthetic clip, with the same preset, CRF, keyint, B-frames and
//! thread pool, in one run: wall and CPU time per frame, their ratios to ours, and whether the
//! outputs are byte-identical.
//!
//! ```text
//! cargo bench --bench x265_throughput                  # 640x360, 120 frames, ultrafast and medium, 2 threads
//! X265_BENCH_PRESETS=veryfast X265_BENCH_FRAMES=60 X265_BENCH_THREADS=4 cargo bench --bench x265_throughput
//! ```
//! Needs `ffmpeg` (with libx265) and `x265` on PATH (Debian: `apt-get install ffmpeg x265`); a
//! peer that is missing is reported as such and skipped. Each contender runs `X265_BENCH_RUNS`
//! times (default 3), the three taking turns; the best wall time counts, with the CPU time (user
//! plus system, every thread; the peers' from `getrusage(RUSAGE_CHILDREN)`) of that run. Our
//! encoder reads frames from memory, the peers from a file in the page cache.
//!
//! The settings every contender gets: the preset, `crf`, `keyint`, `bframes`, a thread pool of
//! `threads` (`pools`), a closed GOP with VPS/SPS/PPS on every keyframe, Main profile. Outputs
//! are compared as whole elementary streams, then without SEI NAL units (types 39 and 40), since
//! x265's settings SEI names each tool's own options, then slices only (FFmpeg's wrapper also
//! signals the video format in the SPS).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nvencode::testsrc::TestPattern;
use nvencode::{Codec, EncoderConfig, Preset, VideoEncoder, X265Encoder};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User plus system CPU time of this process (every thread) or of its waited-for children.
fn cpu_time(who: libc::c_int) -> Duration {
    // SAFETY: all-zero bytes are a valid `rusage` (integers only), which getrusage overwrites.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage; `who` is RUSAGE_SELF or RUSAGE_CHILDREN.
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Builds a peer's command line writing to the given output file.
type MakeCommand<'a> = dyn Fn(&Path) -> Command + 'a;

struct Run {
    name: String,
    wall: Duration,
    cpu: Duration,
    stream: Vec<u8>,
}

/// The NAL units of an HEVC elementary stream whose type passes `keep`.
fn nal_units(stream: &[u8], keep: fn(u8) -> bool) -> Vec<&[u8]> {
    nvencode::bitstream::nal_units(stream)
        .filter(|nal| nal.first().is_some_and(|b| keep((b >> 1) & 0x3f)))
        .collect()
}

/// How far `theirs` is the same stream as `ours`: whole, without SEI (prefix 39, suffix 40), or
/// in its slices only (the VCL NAL units, types 0..=31: every coding decision), where the
/// parameter sets differ (FFmpeg's wrapper, for one, signals the video format in the SPS's VUI).
fn sameness(ours: &[u8], theirs: &[u8]) -> &'static str {
    let no_sei = |t: u8| !matches!(t, 39 | 40);
    if ours == theirs {
        "yes, byte for byte"
    } else if nal_units(ours, no_sei) == nal_units(theirs, no_sei) {
        "yes without SEI (the settings SEI differs)"
    } else if nal_units(ours, |t| t < 32) == nal_units(theirs, |t| t < 32) {
        "slices identical; parameter sets and SEI differ"
    } else {
        "no: the slices differ"
    }
}

/// One run of a peer: its wall and CPU time, or why it could not run.
fn run_peer(make: &MakeCommand<'_>, out: &Path) -> Result<(Duration, Duration), String> {
    let cpu_before = cpu_time(libc::RUSAGE_CHILDREN);
    let start = Instant::now();
    let status = make(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status();
    let wall = start.elapsed();
    let cpu = cpu_time(libc::RUSAGE_CHILDREN).saturating_sub(cpu_before);
    match status {
        Ok(s) if s.success() => Ok((wall, cpu)),
        Ok(s) => Err(format!("exited with {s}")),
        Err(e) => Err(format!("not runnable ({e})")),
    }
}

/// One run of our encoder over `clip`.
fn run_ours(config: &EncoderConfig, clip: &[Vec<u8>]) -> Result<Run, nvencode::Error> {
    let cpu_before = cpu_time(libc::RUSAGE_SELF);
    let start = Instant::now();
    let mut encoder = X265Encoder::new(config)?;
    let mut chunks = Vec::new();
    for frame in clip {
        encoder.encode_frame(frame, &mut chunks)?;
    }
    encoder.flush(&mut chunks)?;
    drop(encoder);
    Ok(Run {
        name: "nvencode, x265 backend".into(),
        wall: start.elapsed(),
        cpu: cpu_time(libc::RUSAGE_SELF).saturating_sub(cpu_before),
        stream: chunks.iter().flat_map(|c| c.data.iter().copied()).collect(),
    })
}

fn bench_preset(
    preset: Preset,
    clip: &[Vec<u8>],
    yuv: &Path,
    dir: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let threads: u32 = env_or("X265_BENCH_THREADS", 2);
    let runs: u32 = env_or("X265_BENCH_RUNS", 3).max(1);
    let (width, height) = (640u32, 360u32);
    let (crf, keyint, bframes) = (23.0f32, 60u32, 3u32);
    let frames = clip.len() as u64;
    let config = EncoderConfig::new(width, height)
        .with_codec(Codec::Hevc)
        .with_preset(preset)
        .with_crf(crf)
        .with_gop_size(keyint)
        .with_bframes(Some(bframes))
        .with_threads(threads);
    println!(
        "\npreset {preset}: {frames} frames {width}x{height} yuv420p (synthetic), crf {crf}, keyint \
         {keyint}, bframes {bframes}, pools {threads}, best of {runs}"
    );

    let size = format!("{width}x{height}");
    // Ours leaves the minimum GOP to x265's automatic min(keyint / 10, fps); FFmpeg's wrapper
    // would give its own default (25), so the peers are told the automatic value.
    let min_keyint = (keyint / 10).min(30);
    let x265_params = format!(
        "log-level=error:pools={threads}:open-gop=0:repeat-headers=1:bframes={bframes}:\
         min-keyint={min_keyint}"
    );
    let ffmpeg = |out: &Path| {
        let mut c = Command::new("ffmpeg");
        c.args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
            .args([
                "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", &size, "-r", "30", "-i",
            ])
            .arg(yuv)
            .args([
                "-c:v",
                "libx265",
                "-preset",
                preset.name(),
                "-profile:v",
                "main",
            ])
            .args(["-crf", &crf.to_string(), "-g", &keyint.to_string()])
            .args(["-x265-params", &x265_params, "-f", "hevc"])
            .arg(out);
        c
    };
    let cli = |out: &Path| {
        let mut c = Command::new("x265");
        c.args([
            "--log-level",
            "error",
            "--no-progress",
            "--preset",
            preset.name(),
        ])
        .args(["--profile", "main", "--crf", &crf.to_string()])
        .args([
            "--keyint",
            &keyint.to_string(),
            "--bframes",
            &bframes.to_string(),
        ])
        .args(["--min-keyint", &min_keyint.to_string()])
        .args([
            "--pools",
            &threads.to_string(),
            "--no-open-gop",
            "--repeat-headers",
        ])
        .args(["--input-res", &size, "--fps", "30/1", "--input-depth", "8"])
        .args(["--input"])
        .arg(yuv)
        .arg("-o")
        .arg(out);
        c
    };
    let peers: [(&str, &MakeCommand<'_>); 2] =
        [("ffmpeg -c:v libx265", &ffmpeg), ("x265 CLI", &cli)];
    // The contenders take turns, run by run, so that a change in the load of a shared machine
    // falls on all of them alike; each keeps its best wall time.
    let mut ours: Option<Run> = None;
    let mut theirs: Vec<Option<Run>> = vec![None, None];
    let mut failed = [false, false];
    for _ in 0..runs {
        let run = run_ours(&config, clip)?;
        if ours.as_ref().is_none_or(|b| run.wall < b.wall) {
            ours = Some(run);
        }
        for (i, (name, make)) in peers.iter().enumerate() {
            if failed[i] {
                continue;
            }
            let out = dir.join(format!("peer{i}-{preset}.hevc"));
            match run_peer(*make, &out) {
                Ok((wall, cpu)) if theirs[i].as_ref().is_none_or(|b| wall < b.wall) => {
                    theirs[i] = Some(Run {
                        name: (*name).into(),
                        wall,
                        cpu,
                        stream: std::fs::read(&out)?,
                    });
                }
                Ok(_) => {}
                Err(why) => {
                    println!("{name}: {why}; skipped");
                    failed[i] = true;
                    theirs[i] = None;
                }
            }
        }
    }
    let results: Vec<Run> = ours
        .into_iter()
        .chain(theirs.into_iter().flatten())
        .collect();

    let Some(ours) = results.first() else {
        return Ok(());
    };
    let per_frame = |d: Duration| d.as_secs_f64() * 1e3 / frames as f64;
    println!(
        "{:<24} {:>8} {:>11} {:>11} {:>9} {:>9} {:>10}  identical to ours",
        "encoder", "fps", "wall ms/fr", "CPU ms/fr", "wall/ours", "CPU/ours", "bytes"
    );
    for run in &results {
        let identical = if run.name == ours.name {
            "-"
        } else {
            sameness(&ours.stream, &run.stream)
        };
        println!(
            "{:<24} {:>8.1} {:>11.2} {:>11.2} {:>8.2}x {:>8.2}x {:>10}  {identical}",
            run.name,
            frames as f64 / run.wall.as_secs_f64(),
            per_frame(run.wall),
            per_frame(run.cpu),
            run.wall.as_secs_f64() / ours.wall.as_secs_f64(),
            run.cpu.as_secs_f64() / ours.cpu.as_secs_f64().max(1e-9),
            run.stream.len(),
        );
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let frames: u64 = env_or("X265_BENCH_FRAMES", 120);
    let presets: Vec<Preset> = std::env::var("X265_BENCH_PRESETS")
        .unwrap_or_else(|_| "ultrafast,medium".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let pattern = TestPattern::new(
        nvencode::Resolution::new(640, 360),
        nvencode::PixelFormat::I420,
    )?;
    let clip: Vec<Vec<u8>> = (0..frames).map(|i| pattern.frame(i)).collect();
    let dir = tempfile::tempdir()?;
    let yuv = dir.path().join("clip.yuv");
    std::fs::write(&yuv, clip.concat())?;
    println!(
        "x265 throughput (CPUs available: {})",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for preset in presets {
        bench_preset(preset, &clip, &yuv, dir.path())?;
    }
    Ok(())
}
