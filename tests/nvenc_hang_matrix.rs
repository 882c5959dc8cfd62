//! The hang matrix: a driver call that never returns, at every NVENC and CUDA entry point the
//! backend uses (opening, per frame, teardown), under `encode_yuv -e auto` writing MP4, as a
//! user runs it. Each run must end within a bound, and the file must hold every frame, decodable:
//! the open or the call is given up at its deadline, and the fallback chain goes on with x264
//! (replaying what NVENC had accepted) or finishes the stream.
//!
//! The deadlines are shortened through their env overrides (`NVENCODE_CALL_TIMEOUT_MS`,
//! `NVENCODE_OPEN_TIMEOUT_MS`) so the matrix stays quick; the defaults (5 s and 15 s) are what
//! the 30 s bound was set against.

mod common;

use nvenc_emu_harness::EmuDriver;

/// Every entry point the backend calls that can block, and which call of it hangs: the first for
/// calls made once (at open or teardown), a later one for calls made per frame, so that frames
/// are in flight when it hangs.
const MATRIX: &[(&str, u64)] = &[
    // Opening (and the capability probe `auto` runs first).
    ("cuInit", 1),
    ("cuDevicePrimaryCtxRetain", 1),
    ("cuStreamCreate", 1),
    ("nvEncOpenEncodeSessionEx", 1),
    ("nvEncGetEncodeCaps", 1),
    ("nvEncGetEncodePresetConfigEx", 1),
    ("nvEncInitializeEncoder", 1),
    ("cuMemAllocPitch_v2", 1),
    ("cuMemHostAlloc", 1),
    ("nvEncRegisterResource", 1),
    ("nvEncCreateBitstreamBuffer", 1),
    ("nvEncGetSequenceParams", 1),
    ("nvEncSetIOCudaStreams", 1),
    // Per frame.
    ("cuMemcpy2DAsync_v2", 10),
    ("nvEncMapInputResource", 10),
    ("nvEncEncodePicture", 10),
    ("nvEncLockBitstream", 10),
    ("nvEncUnmapInputResource", 10),
    // Flush and teardown.
    ("cuStreamSynchronize", 1),
    ("nvEncUnregisterResource", 1),
    ("nvEncDestroyBitstreamBuffer", 1),
    ("nvEncDestroyEncoder", 1),
    ("cuMemFree_v2", 1),
    ("cuMemFreeHost", 1),
    ("cuStreamDestroy_v2", 1),
];

const FRAMES: usize = 60;

/// Each run's bound: the 30 s, which holds with the default deadlines too.
const LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Decodes an MP4 file with FFmpeg: the number of frames, and FFmpeg's complaints.
fn decode_mp4(path: &std::path::Path) -> (usize, String) {
    let out = common::ffmpeg()
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
        .output()
        .expect("run ffmpeg");
    let frame = 320 * 240 * 3 / 2;
    (
        out.stdout.len() / frame,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_call_that_never_returns_anywhere_ends_the_run_in_time_with_every_frame() {
    let example = common::example("encode_yuv");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut failures = Vec::new();
    for &(entry, nth) in MATRIX {
        let emu = EmuDriver::new()
            .hang(entry, nth)
            .env("NVENCODE_CALL_TIMEOUT_MS", "300")
            .env("NVENCODE_OPEN_TIMEOUT_MS", "1500");
        let output = dir.path().join(format!("{entry}-{nth}.mp4"));
        let mut cmd = emu.command(&example);
        cmd.args(["--size", "320x240", "--frames", "60", "-e", "auto", "-o"])
            .arg(&output);
        let started = std::time::Instant::now();
        let (success, text) = common::run_bounded(cmd, LIMIT, entry);
        let took = started.elapsed();
        let fired = emu
            .report()
            .faults
            .iter()
            .any(|f| f.contains(entry) && f.contains("hang"));
        let (frames, complaints) = if output.exists() {
            decode_mp4(&output)
        } else {
            (0, "no output file".into())
        };
        eprintln!("{entry}#{nth}: fired {fired}, {took:?}, exit ok {success}, {frames} frames");
        if !success || frames != FRAMES || !complaints.is_empty() {
            failures.push(format!(
                "{entry}#{nth}: exit ok {success}, {frames} frames, ffmpeg: {complaints}\n{text}"
            ));
        }
        if !fired {
            failures.push(format!(
                "{entry}#{nth}: the hang never fired (the matrix no longer reaches this call)"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// A hung read-back with a long deadline (20 s): a first SIGINT stops the source, and the run
/// waits for the encoder; a second one finishes the MP4 at once with what came out, and the
/// example exits 130 well within the deadline, the file playable.
#[test]
fn a_second_interrupt_finishes_the_output_without_waiting_for_a_hung_call() {
    let example = common::example("encode_yuv");
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("quit.mp4");
    let emu = EmuDriver::new()
        .hang("nvEncLockBitstream", 20)
        .env("NVENCODE_CALL_TIMEOUT_MS", "20000");
    let mut cmd = emu.command(&example);
    cmd.args(["--size", "320x240", "--frames", "600", "-e", "nvenc", "-o"])
        .arg(&output)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("start the example");
    let interrupt = |child: &std::process::Child| {
        let status = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    // The hang fires at the 20th read-back, well within a second at this size.
    std::thread::sleep(std::time::Duration::from_secs(2));
    interrupt(&child);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let second = std::time::Instant::now();
    interrupt(&child);
    let bound = std::time::Duration::from_secs(5);
    while child.try_wait().expect("wait").is_none() {
        if second.elapsed() > bound {
            let _ = child.kill();
            panic!("the example did not end within {bound:?} of the second SIGINT");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("quit after"), "{stderr}");
    let (frames, complaints) = decode_mp4(&output);
    // The 19 read back before the hang.
    assert_eq!(frames, 19, "{stderr}");
    assert!(complaints.is_empty(), "{complaints}");
}

#[test]
#[ignore = "child half of a_hung_reconfigure_is_bounded"]
fn child_hung_reconfigure() {
    use nvencode::nvenc::{NvencEncoder, NvencOptions};
    use nvencode::{Bitrate, Error, RateControl, VideoEncoder};
    assert!(std::env::var_os("NVENC_EMU_REPORT").is_some(), "child only");
    let config = nvencode::EncoderConfig::new(320, 240);
    let options = NvencOptions::default().with_call_timeout(std::time::Duration::from_millis(300));
    let mut encoder = NvencEncoder::with_options(&config, &options).expect("open");
    let started = std::time::Instant::now();
    let rate = RateControl::cbr(Bitrate::from_bps(1_000_000));
    let result = encoder.reconfigure(rate);
    assert!(
        matches!(
            result,
            Err(Error::Hung {
                call: "nvEncReconfigureEncoder",
                ..
            })
        ),
        "{result:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // The encoder is failed for good, and dropping it does not wait for the driver.
    let frame = vec![0u8; config.validate().expect("valid")];
    assert!(matches!(
        encoder.encode_frame(&frame, &mut Vec::new()),
        Err(Error::Hung { .. })
    ));
    let dropped = std::time::Instant::now();
    drop(encoder);
    assert!(dropped.elapsed() < std::time::Duration::from_secs(1));
}

/// `nvEncReconfigureEncoder` that never returns: the rate change fails with `Error::Hung`
/// naming it within the deadline (it used to run on the caller's thread, unbounded).
#[test]
fn a_hung_reconfigure_is_bounded() {
    let emu = EmuDriver::new().hang("nvEncReconfigureEncoder", 1);
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = emu.command(exe);
    cmd.args([
        "--ignored",
        "--exact",
        "child_hung_reconfigure",
        "--nocapture",
    ]);
    // Bounded, so a reconfigure that hangs again fails the test instead of hanging the suite.
    let (success, text) = common::run_bounded(cmd, LIMIT, "child_hung_reconfigure");
    assert!(success && text.contains("1 passed"), "{text}");
}
