//! The `detect` example as a GPU CI runner uses it: `--require NAME` exits 0 when that encoder is
//! available and 1 with the reason when it is not.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The `detect` example, built with this test's profile and features.
fn example() -> PathBuf {
    common::example("detect")
}

/// Runs `cmd`, failing the test if it takes longer than a minute.
fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start detect");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("detect still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn require_an_available_encoder_exits_zero() {
    let out = run(Command::new(example()).args(["--require", "x264,ffmpeg-x264"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs on every machine, GPU runners included: NVENC is made missing by naming a driver library
/// that does not exist (`NVENC_LIBRARY_PATH`), so the gate's failure path is checked where it
/// matters most. (It used to skip wherever a driver was installed.)
#[test]
fn require_a_missing_encoder_exits_one_with_the_reason() {
    let out = run(Command::new(example())
        .args(["--require", "x264", "--require", "nvenc"])
        .env("NVENC_LIBRARY_PATH", "/nonexistent/libnvidia-encode.so.1"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("required encoder nvenc for h264 is unavailable")
            && stderr.contains("libnvidia-encode"),
        "{stderr}"
    );
    assert!(!stderr.contains("x264 for h264 is unavailable"), "{stderr}");
}

/// A codec named with the encoder: the gate checks that codec, and a codec the encoder cannot
/// encode is refused as an argument, naming both.
#[test]
fn require_takes_a_codec_and_refuses_one_the_encoder_lacks() {
    let out = run(Command::new(example())
        .args(["--require", "nvenc:hevc"])
        .env("NVENC_LIBRARY_PATH", "/nonexistent/libnvidia-encode.so.1"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("required encoder nvenc for hevc is unavailable"),
        "{stderr}"
    );
    let out = run(Command::new(example()).args(["--require", "x264:hevc"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "clap's usage error: {stderr}");
    assert!(stderr.contains("x264 cannot encode hevc"), "{stderr}");
}

#[test]
fn require_nvenc_hevc_passes_on_the_emulated_driver() {
    let emu = nvenc_emu_harness::EmuDriver::new();
    let out = run(emu
        .command(example())
        .args(["--require", "nvenc:hevc,x264:h264"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    emu.report().assert_clean();
}

#[test]
fn require_nvenc_passes_on_the_emulated_driver() {
    let emu = nvenc_emu_harness::EmuDriver::new();
    let out = run(emu.command(example()).args(["--require", "nvenc"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    emu.report().assert_clean();
}

#[test]
fn an_unknown_name_is_refused_with_the_valid_ones() {
    let out = run(Command::new(example()).args(["--require", "amf"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("unknown encoder \"amf\"") && stderr.contains("nvenc"),
        "{stderr}"
    );
}

/// A mixed node of two emulated GPUs, GPU 0 without NVENC: `detect --json` lists both CUDA
/// devices with their UUIDs, GPU 0 with the reason it cannot encode, GPU 1 encoding H.264.
#[test]
fn json_lists_every_gpu_with_its_uuid_and_nvenc() {
    let emu = nvenc_emu_harness::EmuDriver::new()
        .cuda_devices(2)
        .no_encoder_on(&[0]);
    let out = run(emu.command(example()).arg("--json"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let gpus = report["nvidia"]["cuda_gpus"].as_array().expect("cuda_gpus");
    assert_eq!(gpus.len(), 2, "{gpus:?}");
    let uuids: Vec<&str> = gpus.iter().filter_map(|g| g["uuid"].as_str()).collect();
    assert_eq!(uuids.len(), 2, "{gpus:?}");
    assert_ne!(uuids[0], uuids[1], "each GPU its own UUID");
    assert!(uuids.iter().all(|u| u.starts_with("GPU-")), "{uuids:?}");
    assert_eq!(gpus[0]["nvenc"], false);
    assert!(
        gpus[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no NVENC engine")),
        "{:?}",
        gpus[0]
    );
    assert_eq!(gpus[1]["nvenc"], true);
    assert_eq!(gpus[1]["codecs"], serde_json::json!(["h264", "hevc"]));
    emu.report().assert_clean();
}
