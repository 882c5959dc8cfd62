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

use std::process::Command;
use std::time::Instant;

use nvenc::nvenc::NvencPreset;
use nvenc_emu_harness::EmuDriver;

#[path = "support/nvenc_child.rs"]
mod support;

const CHILD: &str = "NVENC_BENCH_CHILD";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(path) = std::env::var(CHILD) {
        let frames = std::env::var("NVENC_BENCH_FRAMES_CHILD")?.parse()?;
        let options = nvenc::nvenc::NvencOptions::default().with_preset(Some(NvencPreset::P1));
        return support::encode_file(&path, frames, &options);
    }
    let frames: u64 = std::env::var("NVENC_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir()?;
    let raw = dir.path().join("clip.yuv");
    support::write_clip(&raw, frames)?;
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
        println!(
            "{:<26} {:>12.3} {:>10.2} {:>10.1}",
            name,
            cpu.as_secs_f64() * 1e3 / frames as f64,
            wall.as_secs_f64(),
            frames as f64 / wall.as_secs_f64()
        );
    }
    support::check_emulator(&emu, &mut failed);
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("the benchmark run is not valid:\n{}", failed.join("\n")).into())
    }
}
