//! NVENC throughput for GPU CI runners: a 1080p clip encoded at presets p1, p4 and p7 by the
//! direct backend and by `ffmpeg -c:v h264_nvenc` (when that ffmpeg exists), same settings, in
//! one run: fps, CPU time per frame and the ratio, beside NVIDIA's published per-engine figure
//! for the GPU's generation.
//!
//! ```text
//! cargo bench --bench nvenc_throughput                        # 300 frames 1920x1080 I420
//! NVENC_BENCH_FRAMES=900 cargo bench --bench nvenc_throughput
//! ```
//! On a machine with NVENC the real driver is used. Without one, the same code path runs against
//! the project's emulated driver in fast mode (no pixel read-back, no encoding), and every figure
//! is labelled **emulated**: it then measures each client's own work per frame, not NVENC. The
//! run fails (non-zero exit) when a client fails or, on the emulator, when it reports an API
//! violation or a leaked handle.
//!
//! Published per-engine figures (NVIDIA's NVENC application note 13.0, H.264 1080p 4:2:0, fps):
//! Turing P1 855, Ampere P1 868, Ada P1 885 (high quality; 910 low latency), P3 ~650, P5 ~290,
//! P7 211, Blackwell P1 977. A session never exceeds one engine.

use std::process::Command;
use std::time::Instant;

use nvenc_emu_harness::EmuDriver;
use nvencode::nvenc::{NvencOptions, NvencPreset};
use nvencode::EncoderKind;

#[path = "support/nvenc_child.rs"]
mod support;

const CHILD: &str = "NVENC_THROUGHPUT_CHILD";

/// The presets measured, as the direct backend and ffmpeg name them.
const PRESETS: [(NvencPreset, &str); 3] = [
    (NvencPreset::P1, "p1"),
    (NvencPreset::P4, "p4"),
    (NvencPreset::P7, "p7"),
];

/// The child: encodes the raw file with the direct backend at one preset, frame by frame.
fn child(path: &str, frames: u64, preset: &str) -> Result<(), Box<dyn std::error::Error>> {
    let preset = PRESETS
        .iter()
        .find(|(_, name)| *name == preset)
        .map(|(p, _)| *p)
        .ok_or_else(|| format!("unknown preset {preset}"))?;
    support::encode_file(
        path,
        frames,
        &NvencOptions::default().with_preset(Some(preset)),
    )
}

/// NVIDIA's published per-engine H.264 1080p fps for a GPU name and preset, where the note gives
/// one.
fn published(gpu: &str, preset: &str) -> Option<u32> {
    let g = gpu.to_ascii_lowercase();
    let ada = g.contains("rtx 40") || g.contains(" l4") || g.contains("l40") || g.contains("ada");
    let ampere =
        g.contains("rtx 30") || g.contains("a10") || g.contains("a40") || g.contains("a16");
    let turing = g.contains("rtx 20") || g.contains("t4") || g.contains("gtx 16");
    let blackwell = g.contains("rtx 50") || g.contains("blackwell") || g.contains("rtx pro");
    match preset {
        "p1" if ada => Some(885),
        "p7" if ada => Some(211),
        "p1" if ampere => Some(868),
        "p1" if turing => Some(855),
        "p1" if blackwell => Some(977),
        _ => None,
    }
}

struct Row {
    fps: f64,
    cpu_ms: f64,
}

fn measure(mut cmd: Command, frames: u64) -> Result<Row, String> {
    let cpu0 = support::children_cpu();
    let t0 = Instant::now();
    let out = cmd.output().map_err(|e| format!("cannot start: {e}"))?;
    let wall = t0.elapsed();
    let cpu = support::children_cpu() - cpu0;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(Row {
        fps: frames as f64 / wall.as_secs_f64(),
        cpu_ms: cpu.as_secs_f64() * 1e3 / frames as f64,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(path) = std::env::var(CHILD) {
        let frames = std::env::var("NVENC_THROUGHPUT_FRAMES_CHILD")?.parse()?;
        let preset = std::env::var("NVENC_THROUGHPUT_PRESET")?;
        return child(&path, frames, &preset);
    }
    let frames: u64 = std::env::var("NVENC_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let report = nvencode::detect();
    let real = report
        .candidate(EncoderKind::Nvenc, nvencode::Codec::H264)
        .is_some_and(|c| c.available);
    let gpu = report
        .nvidia
        .gpus
        .first()
        .map_or_else(|| "unknown GPU".to_owned(), |g| g.name.clone());
    let emu = EmuDriver::new().fast();
    let (label, with_ffmpeg) = if real {
        (
            format!("real NVENC on {gpu}"),
            ffmpeg_has_nvenc(false, &emu),
        )
    } else {
        (
            "EMULATED driver (fast mode: no encoding; figures are each client's own work, not NVENC)"
                .to_owned(),
            ffmpeg_has_nvenc(true, &emu),
        )
    };

    let dir = tempfile::tempdir()?;
    let raw = dir.path().join("clip.yuv");
    support::write_clip(&raw, frames)?;
    let exe = std::env::current_exe()?;
    let command = |program: &std::ffi::OsStr| -> Command {
        if real {
            Command::new(program)
        } else {
            emu.command(program)
        }
    };

    println!("NVENC throughput, {label}: {frames} frames 1920x1080 yuv420p");
    println!(
        "{:<7} {:>11} {:>12} {:>11} {:>12} {:>13} {:>18}",
        "preset",
        "direct fps",
        "direct CPU",
        "ffmpeg fps",
        "ffmpeg CPU",
        "direct/ffmpeg",
        "published/engine"
    );
    let mut failed = Vec::new();
    for (_, name) in PRESETS {
        let mut direct_cmd = command(exe.as_os_str());
        direct_cmd
            .env(CHILD, &raw)
            .env("NVENC_THROUGHPUT_FRAMES_CHILD", frames.to_string())
            .env("NVENC_THROUGHPUT_PRESET", name);
        let direct = measure(direct_cmd, frames);
        let ffmpeg = if with_ffmpeg {
            let mut c = command(std::ffi::OsStr::new("ffmpeg"));
            c.args(["-hide_banner", "-nostdin", "-v", "error", "-f", "rawvideo"])
                .args(["-pix_fmt", "yuv420p", "-s", "1920x1080", "-r", "30", "-i"])
                .arg(&raw)
                .args(["-c:v", "h264_nvenc", "-preset", name, "-f", "null", "-"]);
            Some(measure(c, frames))
        } else {
            None
        };
        let cell = |r: &Result<Row, String>| match r {
            Ok(r) => (format!("{:.1}", r.fps), format!("{:.3} ms", r.cpu_ms)),
            Err(_) => ("failed".into(), "-".into()),
        };
        let (dfps, dcpu) = cell(&direct);
        let (ffps, fcpu) = match &ffmpeg {
            Some(r) => cell(r),
            None => ("no h264_nvenc".into(), "-".into()),
        };
        let ratio = match (&direct, &ffmpeg) {
            (Ok(d), Some(Ok(f))) => format!("{:.2}x", d.fps / f.fps),
            _ => "-".into(),
        };
        let published = match (real, published(&gpu, name)) {
            (true, Some(fps)) => fps.to_string(),
            (true, None) => "not in the note".into(),
            (false, _) => "n/a (emulated)".into(),
        };
        println!(
            "{name:<7} {dfps:>11} {dcpu:>12} {ffps:>11} {fcpu:>12} {ratio:>13} {published:>18}"
        );
        if let Err(e) = direct {
            failed.push(format!("direct backend at {name}: {e}"));
        }
        if let Some(Err(e)) = ffmpeg {
            failed.push(format!("ffmpeg h264_nvenc at {name}: {e}"));
        }
    }
    if !real {
        support::check_emulator(&emu, &mut failed);
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("the benchmark run is not valid:\n{}", failed.join("\n")).into())
    }
}

/// Whether `ffmpeg` here has `h264_nvenc` (on the emulator: against the emulated driver).
fn ffmpeg_has_nvenc(emulated: bool, emu: &EmuDriver) -> bool {
    let mut c = if emulated {
        emu.command("ffmpeg")
    } else {
        Command::new("ffmpeg")
    };
    let listed = c
        .args(["-hide_banner", "-encoders"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("h264_nvenc"))
        .unwrap_or(false);
    if !listed {
        println!("(ffmpeg without h264_nvenc: its column is skipped)");
    }
    listed && (!emulated || nvenc_emu_harness::video::ffmpeg_with_nvenc())
}
