//! CPU time per frame of the direct NVENC backend beside FFmpeg's `h264_nvenc`, both driving the
//! emulated driver in fast mode (no pixel read-back, no encoding in the emulator), same raw clip
//! and frame count, in one run. What remains is each client's own work per frame: reading the
//! frame, staging and uploading it, the NVENC calls, reading the bitstream back.
//!
//! ```text
//! cargo bench --bench nvenc_overhead                       # 1080p I420, 300 frames
//! NVENC_BENCH_FRAMES=600 cargo bench --bench nvenc_overhead
//! ```
//! Needs `ffmpeg` with `h264_nvenc` (Debian's has it); without it that row is skipped with a
//! note (and the run fails when `NVENC_EMU_REQUIRE_FFMPEG` is set). CPU time is the children's
//! user + system time from `getrusage(RUSAGE_CHILDREN)`, so it counts every thread of each client.
//!
//! The run fails (non-zero exit) when a client fails, or when the emulator reports an API
//! violation or a leaked handle: a figure from a broken run is not a figure.

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use nvenc::nvenc::{NvencEncoder, NvencPreset};
use nvenc::testsrc::TestPattern;
use nvenc::{EncoderConfig, PixelFormat, Resolution, VideoEncoder};
use nvenc_emu_harness::EmuDriver;

const CHILD: &str = "NVENC_BENCH_CHILD";

fn children_cpu() -> Duration {
    // SAFETY: `rusage` is a plain C struct of integers, for which all-zero bytes are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `getrusage` writes one `rusage` into the valid local it is given.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The child: encode the raw file with the direct backend, frame by frame from disk.
fn child(path: &str, frames: u64) -> Result<(), Box<dyn std::error::Error>> {
    let config = EncoderConfig::new(1920, 1080);
    let options = nvenc::nvenc::NvencOptions::default().with_preset(Some(NvencPreset::P1));
    let mut encoder = NvencEncoder::with_options(&config, &options)?;
    let mut file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut frame = vec![0u8; config.validate()?];
    let mut chunks = Vec::new();
    let mut out = 0u64;
    for _ in 0..frames {
        file.read_exact(&mut frame)?;
        encoder.encode_frame(&frame, &mut chunks)?;
        out += chunks.drain(..).count() as u64;
    }
    encoder.flush(&mut chunks)?;
    out += chunks.len() as u64;
    eprintln!("child encoded {out} frames");
    if out != frames {
        return Err(format!("{out} of {frames} frames came out").into());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(path) = std::env::var(CHILD) {
        let frames = std::env::var("NVENC_BENCH_FRAMES_CHILD")?.parse()?;
        return child(&path, frames);
    }
    let frames: u64 = std::env::var("NVENC_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let res = Resolution::new(1920, 1080);
    let pattern = TestPattern::new(res, PixelFormat::I420)?;
    let dir = tempfile::tempdir()?;
    let raw = dir.path().join("clip.yuv");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&raw)?);
        let mut buf = Vec::new();
        for i in 0..frames {
            pattern.fill(i, &mut buf);
            f.write_all(&buf)?;
        }
    }
    let emu = EmuDriver::new().fast();
    let exe = std::env::current_exe()?;
    let with_ffmpeg = nvenc_emu_harness::video::ffmpeg_with_nvenc();
    let runs: [(&str, Command); 2] = [
        ("nvenc crate (direct)", {
            let mut c = emu.command(&exe);
            c.env(CHILD, &raw)
                .env("NVENC_BENCH_FRAMES_CHILD", frames.to_string());
            c
        }),
        ("ffmpeg -c:v h264_nvenc", {
            let mut c = emu.command("ffmpeg");
            c.args([
                "-hide_banner",
                "-nostdin",
                "-v",
                "error",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "yuv420p",
            ])
            .args(["-s", "1920x1080", "-r", "30", "-i"])
            .arg(&raw)
            .args(["-c:v", "h264_nvenc", "-preset", "p1", "-f", "null", "-"]);
            c
        }),
    ];
    println!("CPU time per frame against the emulated NVENC (fast mode): {frames} frames 1920x1080 yuv420p, preset p1");
    println!(
        "{:<26} {:>12} {:>10} {:>10}",
        "client", "CPU ms/frame", "wall s", "fps"
    );
    let mut failed = Vec::new();
    for (name, mut cmd) in runs {
        if name.starts_with("ffmpeg") && !with_ffmpeg {
            println!("{name:<26} skipped: ffmpeg has no h264_nvenc");
            continue;
        }
        let cpu0 = children_cpu();
        let t0 = Instant::now();
        let out = cmd.output()?;
        let wall = t0.elapsed();
        let cpu = children_cpu() - cpu0;
        if !out.status.success() {
            println!("{name}: failed: {}", String::from_utf8_lossy(&out.stderr));
            failed.push(format!("{name} failed ({})", out.status));
            continue;
        }
        println!(
            "{:<26} {:>12.3} {:>10.2} {:>10.1}",
            name,
            cpu.as_secs_f64() * 1e3 / frames as f64,
            wall.as_secs_f64(),
            frames as f64 / wall.as_secs_f64()
        );
    }
    let report = emu.report();
    for v in &report.violations {
        failed.push(format!("emulator violation: {v}"));
    }
    for leak in report.leaks() {
        failed.push(format!("emulator leak: {leak}"));
    }
    if report.live.is_empty() {
        failed.push("the emulator wrote no report: was it loaded?".into());
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("the benchmark run is not valid:\n{}", failed.join("\n")).into())
    }
}
