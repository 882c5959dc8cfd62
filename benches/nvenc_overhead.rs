//! CPU time per frame of the direct NVENC backend beside FFmpeg's `h264_nvenc` and, for HEVC,
//! `hevc_nvenc`, both driving the emulated driver in fast mode (no pixel read-back, no encoding in the emulator), same raw clip
//! and frame count, in one run. What remains is each client's own work per frame: reading the
//! frame, staging and uploading it, the NVENC calls, reading the bitstream back. The crate runs
//! twice: frame by frame on the encoder, and through the pipeline stage, where the file is read
//! straight into the ring's pinned slots and the encoder thread uploads from them.
//!
//!
//! Then the submit-to-chunk latency through the stage at 1080p paced at 30 fps, with NVENC's
//! zero-latency tuning (no B-frames, no output delay) and with the defaults.
//!
//! ```text
//! cargo bench --bench nvenc_overhead                       # 1080p I420, 300 frames, H.264 and HEVC
//! NVENC_BENCH_FRAMES=600 cargo bench --bench nvenc_overhead
//! NVENC_BENCH_CODECS=hevc cargo bench --bench nvenc_overhead # one codec
//! ```
//! Needs `ffmpeg` with `h264_nvenc` (Debian's has it); without it that row is skipped with a
//! note (and the run fails when `NVENC_EMU_REQUIRE_FFMPEG` is set). CPU time is the children's
//! user + system time from `getrusage(RUSAGE_CHILDREN)`, so it counts every thread of each client.
//!
//! The run fails (non-zero exit) when a client fails, or when the emulator reports an API
//! violation or a leaked handle: a figure from a broken run is not a figure.

use std::process::Command;
use std::time::Instant;

use nvenc_emu_harness::EmuDriver;
use nvencode::nvenc::NvencPreset;

#[path = "support/nvenc_child.rs"]
mod support;

const CHILD: &str = "NVENC_BENCH_CHILD";
const STAGE: &str = "NVENC_BENCH_STAGE";
const LATENCY: &str = "NVENC_BENCH_LATENCY";
/// Frames of each latency run: 5 s at 30 fps.
const LATENCY_FRAMES: u64 = 150;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(mode) = std::env::var(LATENCY) {
        let options = nvencode::nvenc::NvencOptions::default().with_preset(Some(NvencPreset::P1));
        return support::stage_latency(LATENCY_FRAMES, mode == "zerolatency", &options);
    }
    if let Ok(path) = std::env::var(CHILD) {
        let frames = std::env::var("NVENC_BENCH_FRAMES_CHILD")?.parse()?;
        let options = nvencode::nvenc::NvencOptions::default().with_preset(Some(NvencPreset::P1));
        if std::env::var_os(STAGE).is_some() {
            return support::encode_file_through_stage(&path, frames, &options);
        }
        return support::encode_file(&path, frames, &options);
    }
    let frames: u64 = std::env::var("NVENC_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir()?;
    let raw = dir.path().join("clip.yuv");
    support::write_clip(&raw, frames)?;
    let exe = std::env::current_exe()?;
    let with_ffmpeg = nvenc_emu_harness::video::ffmpeg_with_nvenc();
    // One emulator (one report) per client, so each row's copy-engine time is its own.
    let codecs: Vec<nvencode::Codec> = std::env::var("NVENC_BENCH_CODECS")
        .unwrap_or_else(|_| "h264,hevc".to_owned())
        .split(',')
        .map(|c| c.trim().parse())
        .collect::<Result<_, _>>()?;
    let mut failed = Vec::new();
    for codec in codecs {
        overhead_rows(codec, &exe, &raw, frames, with_ffmpeg, &mut failed)?;
    }
    latency_rows(&exe, &mut failed)?;
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("the benchmark run is not valid:\n{}", failed.join("\n")).into())
    }
}

/// The CPU rows of one codec: the crate direct and through the stage, and FFmpeg's encoder of
/// the NVENC family for that codec.
fn overhead_rows(
    codec: nvencode::Codec,
    exe: &std::path::Path,
    raw: &std::path::Path,
    frames: u64,
    with_ffmpeg: bool,
    failed: &mut Vec<String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let ffmpeg_encoder =
        nvencode::encoder::codecs::ffmpeg_name(nvencode::FfmpegFamily::Nvenc, codec)
            .ok_or("no FFmpeg NVENC encoder for this codec")?;
    let child = |stage: bool| {
        let emu = EmuDriver::new().fast();
        let mut c = emu.command(exe);
        c.env(CHILD, raw)
            .env("NVENC_BENCH_FRAMES_CHILD", frames.to_string())
            .env(support::CODEC_ENV, codec.name());
        if stage {
            c.env(STAGE, "1");
        }
        (emu, c)
    };
    let ffmpeg = {
        let emu = EmuDriver::new().fast();
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
        .arg(raw)
        .args(["-c:v", ffmpeg_encoder, "-preset", "p1", "-f", "null", "-"]);
        (emu, c)
    };
    let ffmpeg_row = format!("ffmpeg -c:v {ffmpeg_encoder}");
    let runs: [(&str, (EmuDriver, Command)); 3] = [
        ("nvencode (direct)", child(false)),
        ("nvencode (stage)", child(true)),
        (&ffmpeg_row, ffmpeg),
    ];
    println!(
        "\n{} CPU time per frame against the emulated NVENC (fast mode): {frames} frames 1920x1080 yuv420p, preset p1",
        codec.display_name()
    );
    println!(
        "(copy engine: the CPU time the CUDA emulator spent on copies a GPU's copy engine makes without the CPU; \
         client: CPU minus copy engine)"
    );
    println!(
        "{:<26} {:>12} {:>12} {:>12} {:>10} {:>8} {:>10}",
        "client", "CPU ms/frame", "copy engine", "client ms", "vs ffmpeg", "wall s", "fps"
    );
    let mut rows = Vec::new();
    for (name, (emu, mut cmd)) in runs {
        if name.starts_with("ffmpeg") && !with_ffmpeg {
            println!("{name:<26} skipped: ffmpeg has no {ffmpeg_encoder}");
            continue;
        }
        let cpu0 = support::children_cpu();
        let t0 = Instant::now();
        let out = cmd.output()?;
        let wall = t0.elapsed();
        let cpu = support::children_cpu() - cpu0;
        if !out.status.success() {
            println!("{name}: failed: {}", String::from_utf8_lossy(&out.stderr));
            failed.push(format!("{name} failed ({})", out.status));
            continue;
        }
        let (engine_ns, _) = emu.report().copy_engine();
        support::check_emulator(&emu, failed);
        let per_frame = |ns: f64| ns / 1e6 / frames as f64;
        let cpu_ms = per_frame(cpu.as_nanos() as f64);
        let engine_ms = per_frame(engine_ns as f64);
        rows.push((name, cpu_ms, engine_ms, cpu_ms - engine_ms, wall));
    }
    let ffmpeg_client = rows.iter().find(|r| r.0.starts_with("ffmpeg")).map(|r| r.3);
    for (name, cpu_ms, engine_ms, client_ms, wall) in &rows {
        let ratio = ffmpeg_client.map_or("-".to_owned(), |f| format!("{:.2}x", client_ms / f));
        println!(
            "{:<26} {:>12.3} {:>12.3} {:>12.3} {:>10} {:>8.2} {:>10.1}",
            name,
            cpu_ms,
            engine_ms,
            client_ms,
            ratio,
            wall.as_secs_f64(),
            frames as f64 / wall.as_secs_f64()
        );
    }
    Ok(())
}

/// The submit-to-chunk latency rows (H.264).
fn latency_rows(
    exe: &std::path::Path,
    failed: &mut Vec<String>,
) -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "\nsubmit-to-chunk latency through the stage, 1080p paced at 30 fps, {LATENCY_FRAMES} frames, preset p1 (ms):"
    );
    for mode in ["zerolatency", "default"] {
        let emu = EmuDriver::new().fast();
        let out = emu.command(exe).env(LATENCY, mode).output()?;
        if !out.status.success() {
            failed.push(format!(
                "latency {mode} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.starts_with("latency ") {
                println!("{line}");
            }
        }
        support::check_emulator(&emu, failed);
    }
    Ok(())
}
