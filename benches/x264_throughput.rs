//! Throughput of the x264 backend beside FFmpeg's `-c:v libx264` and the `x264` command line, on
//! the built-in synthetic 1080p clip, with the same preset, CRF and thread count, in one run.
//!
//! ```text
//! cargo bench --bench x264_throughput                     # veryfast, 2 threads, 150 frames
//! X264_BENCH_PRESET=medium X264_BENCH_THREADS=2 X264_BENCH_FRAMES=120 cargo bench --bench x264_throughput
//! ```
//! Needs `ffmpeg` and `x264` on PATH (Debian: `apt-get install ffmpeg x264`); a peer that is
//! missing is reported as such and skipped. Each contender runs three times; the best run
//! counts. Our encoder reads frames from memory, the peers from a file in the page cache (a
//! 1080p frame copy costs ~0.5 ms, under 2% of a frame's encode time at these presets). Output
//! sizes are printed as a check that the settings really match.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nvencode::testsrc::TestPattern;
use nvencode::{EncoderConfig, Preset, VideoEncoder, X264Encoder};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    name: String,
    best: Duration,
    bytes: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let preset: Preset = std::env::var("X264_BENCH_PRESET")
        .unwrap_or_else(|_| "veryfast".into())
        .parse()?;
    let threads: u32 = env_or("X264_BENCH_THREADS", 2);
    let frames: u64 = env_or("X264_BENCH_FRAMES", 150);
    let crf = 23.0;
    let config = EncoderConfig::new(1920, 1080)
        .with_preset(preset)
        .with_crf(crf)
        .with_threads(threads);
    let frame_len = config.validate()?;
    let pattern = TestPattern::new(config.resolution, config.pixel_format)?;
    let clip: Vec<Vec<u8>> = (0..frames).map(|i| pattern.frame(i)).collect();
    let dir = tempfile::tempdir()?;
    let yuv = dir.path().join("clip.yuv");
    std::fs::write(&yuv, clip.concat())?;
    println!(
        "x264 throughput: {frames} frames 1920x1080 yuv420p (synthetic), preset {preset}, crf {crf}, \
         threads {threads}, best of 3"
    );

    let mut runs = Vec::new();

    let mut best = Duration::MAX;
    let mut bytes = 0;
    for _ in 0..3 {
        let start = Instant::now();
        let mut encoder = X264Encoder::new(&config)?;
        let mut chunks = Vec::new();
        for frame in &clip {
            encoder.encode_frame(frame, &mut chunks)?;
        }
        encoder.flush(&mut chunks)?;
        best = best.min(start.elapsed());
        bytes = chunks.iter().map(|c| c.data.len() as u64).sum();
    }
    runs.push(Run {
        name: "nvencode, x264 backend".into(),
        best,
        bytes,
    });

    let out = dir.path().join("peer.h264");
    let size = format!("{}x{}", 1920, 1080);
    let ffmpeg = |out: &std::path::Path| {
        let mut c = Command::new("ffmpeg");
        c.args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
            .args([
                "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", &size, "-r", "30", "-i",
            ])
            .arg(&yuv)
            .args(["-c:v", "libx264", "-preset", preset.name()])
            .args(["-crf", &crf.to_string(), "-threads", &threads.to_string()])
            .args(["-f", "h264"])
            .arg(out);
        c
    };
    let x264 = |out: &std::path::Path| {
        let mut c = Command::new("x264");
        c.args(["--quiet", "--no-progress", "--preset", preset.name()])
            .args(["--crf", &crf.to_string(), "--threads", &threads.to_string()])
            .args([
                "--demuxer",
                "raw",
                "--input-csp",
                "i420",
                "--input-res",
                &size,
            ])
            .args(["--fps", "30", "-o"])
            .arg(out)
            .arg(&yuv);
        c
    };
    for (name, make) in [
        (
            "ffmpeg -c:v libx264",
            &ffmpeg as &dyn Fn(&std::path::Path) -> Command,
        ),
        ("x264 CLI", &x264),
    ] {
        let mut best = Duration::MAX;
        let mut ok = true;
        for _ in 0..3 {
            let start = Instant::now();
            let status = make(&out)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .status();
            match status {
                Ok(s) if s.success() => best = best.min(start.elapsed()),
                Ok(s) => {
                    println!("{name}: exited with {s}; skipped");
                    ok = false;
                    break;
                }
                Err(e) => {
                    println!("{name}: not runnable ({e}); skipped");
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            runs.push(Run {
                name: name.into(),
                best,
                bytes: std::fs::metadata(&out)?.len(),
            });
        }
    }

    let ours = runs[0].best.as_secs_f64();
    println!(
        "{:<28} {:>9} {:>10} {:>12} {:>10}",
        "encoder", "fps", "MB/s in", "bytes out", "vs ours"
    );
    for run in &runs {
        let secs = run.best.as_secs_f64();
        println!(
            "{:<28} {:>9.1} {:>10.1} {:>12} {:>9.2}x",
            run.name,
            frames as f64 / secs,
            (frames * frame_len as u64) as f64 / 1e6 / secs,
            run.bytes,
            ours / secs
        );
    }
    Ok(())
}
