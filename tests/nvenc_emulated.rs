//! The direct NVENC backend against the emulated driver pair (`tests/emu`): the production code
//! path, loaded through the production loaders, in child processes whose library path holds the
//! emulated `libcuda.so.1` and `libnvidia-encode.so.1`.
//!
//! Tests marked `#[ignore]` are the child halves: they run only inside a child started by one
//! of the parent tests below (which set `NVENC_EMU_REPORT`), never in the normal run. Each
//! parent then reads the emulators' report: no API rule broken, no handle leaked.

mod common;

use nvenc_emu_harness::EmuDriver;
use nvencode::nvenc::{NvencEncoder, NvencErrorKind, NvencOptions};
use nvencode::{EncoderConfig, EncoderKind, Error, FallbackEncoder, VideoEncoder};

/// Emulated NVENC encodes with libx264 at a quality derived from `targetQuality`; at crf 18 on
/// the synthetic pattern that is the same region as the x264 backend's tests (lowest frame 46.7
/// dB there), so the same 38 dB floor applies.
const PSNR_FLOOR_DB: f64 = 38.0;

fn open_nvenc(config: &EncoderConfig) -> Result<Box<dyn VideoEncoder>, Error> {
    assert_child();
    Ok(Box::new(NvencEncoder::new(config)?))
}

/// The child halves must not run outside the emulator: without it they would test nothing.
fn assert_child() {
    assert!(
        std::env::var_os("NVENC_EMU_REPORT").is_some(),
        "this test runs only in a child process against the emulated driver (see the parent tests)"
    );
}

contract_tests!(
    open_nvenc,
    #[ignore = "child half: runs against the emulated driver from emulated_contract_suite"]
);

/// Runs the child half `test` of this binary against `emu`, asserts it passed, and returns its
/// output.
fn run_child(emu: &EmuDriver, test: &str) -> String {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = emu.command(exe);
    cmd.args([
        "--ignored",
        "--exact",
        test,
        "--test-threads",
        "1",
        "--nocapture",
    ]);
    common::run_child_tests(cmd, 1, test)
}

#[test]
fn emulated_contract_suite() {
    let emu = EmuDriver::new();
    // Every contract test, in one child.
    let mut cmd = emu.command(std::env::current_exe().expect("test binary"));
    cmd.args(["--ignored", "--test-threads", "1", "--skip", "child_"]);
    common::run_child_tests(cmd, 10, "the contract tests against the emulator");
    emu.report().assert_clean();
}

#[test]
#[ignore = "child half of thousand_frames_with_bframes_in_flight"]
fn child_thousand_frames() {
    let config = EncoderConfig::new(320, 240)
        .with_preset(nvencode::Preset::Veryfast)
        .with_crf(18.0)
        .with_gop_size(60)
        .with_bframes(Some(3));
    let options = NvencOptions::default().with_extra_output_delay(3);
    assert_child();
    let mut encoder = NvencEncoder::with_options(&config, &options).expect("open");
    let input = common::clip(&config, 1000);
    let mut chunks = Vec::new();
    for frame in &input {
        encoder.encode_frame(frame, &mut chunks).expect("encode");
    }
    let max_in_flight = encoder.peak_in_flight();
    encoder.flush(&mut chunks).expect("flush");
    assert!(
        max_in_flight >= 4,
        "at most {max_in_flight} frames were in flight"
    );
    common::assert_accounting(&chunks, 1000);
    assert!(
        chunks
            .iter()
            .any(|c| c.frame_type == nvencode::FrameType::B),
        "no B-frames"
    );
    let decoded = common::decode_h264(&common::concat(&chunks), config.resolution);
    assert_eq!(decoded.len(), 1000);
    for (i, (want, got)) in input.iter().zip(&decoded).enumerate() {
        let p = common::psnr(want, got);
        assert!(p >= PSNR_FLOOR_DB, "frame {i}: PSNR {p:.2} dB");
    }
    eprintln!("max frames in flight: {max_in_flight}");
}

#[test]
fn thousand_frames_with_bframes_in_flight() {
    let emu = EmuDriver::new();
    run_child(&emu, "child_thousand_frames");
    emu.report().assert_clean();
}

/// What the fault children do: open, encode 12 frames, flush, drop; every failure must come back
/// as an error value (a panic or a crash fails the child), and is printed for the parent.
#[test]
#[ignore = "child half of the fault matrix"]
fn child_fault_scenario() {
    assert_child();
    let config = EncoderConfig::new(320, 240)
        .with_bframes(Some(2))
        .with_gop_size(30);
    let input = common::clip(&config, 12);
    let outcome = (|| -> Result<usize, Error> {
        let mut encoder = NvencEncoder::new(&config)?;
        let mut chunks = Vec::new();
        for frame in &input {
            encoder.encode_frame(frame, &mut chunks)?;
        }
        encoder.flush(&mut chunks)?;
        Ok(chunks.len())
    })();
    match outcome {
        Ok(n) => eprintln!("OUTCOME ok chunks={n}"),
        Err(e) => eprintln!("OUTCOME error {}", e.to_string().replace('\n', " ")),
    }
}

/// Every NVENC and CUDA entry point the backend calls, failed on its first call (and the
/// per-frame ones also on a later call): the process stays healthy, the error is typed, and no
/// handle leaks.
#[test]
fn fault_matrix_leaves_no_leak_and_no_crash() {
    const NV_ENC_ERR_GENERIC: i32 = 20;
    const CUDA_ERROR_UNKNOWN: i32 = 999;
    let nvenc_entries = [
        ("nvEncOpenEncodeSessionEx", 1),
        ("nvEncGetEncodeGUIDCount", 1),
        ("nvEncGetEncodeGUIDs", 1),
        ("nvEncGetInputFormatCount", 1),
        ("nvEncGetInputFormats", 1),
        ("nvEncGetEncodeCaps", 1),
        ("nvEncGetEncodePresetConfigEx", 1),
        ("nvEncInitializeEncoder", 1),
        ("nvEncGetSequenceParams", 1),
        ("nvEncRegisterResource", 1),
        ("nvEncRegisterResource", 3),
        ("nvEncCreateBitstreamBuffer", 1),
        ("nvEncCreateBitstreamBuffer", 2),
        ("nvEncSetIOCudaStreams", 1),
        ("nvEncMapInputResource", 1),
        ("nvEncMapInputResource", 5),
        ("nvEncEncodePicture", 1),
        ("nvEncEncodePicture", 6),
        ("nvEncLockBitstream", 1),
        ("nvEncLockBitstream", 4),
        ("nvEncUnlockBitstream", 2),
        ("nvEncUnmapInputResource", 2),
        ("nvEncUnregisterResource", 1),
        ("nvEncDestroyBitstreamBuffer", 1),
        ("nvEncDestroyEncoder", 1),
    ];
    let cuda_entries = [
        ("cuInit", 1),
        ("cuDeviceGet", 1),
        ("cuDevicePrimaryCtxRetain", 1),
        ("cuCtxPushCurrent_v2", 1),
        ("cuCtxPushCurrent_v2", 4),
        ("cuCtxPopCurrent_v2", 2),
        ("cuStreamCreate", 1),
        ("cuMemAllocPitch_v2", 1),
        ("cuMemAllocPitch_v2", 3),
        ("cuMemHostAlloc", 1),
        ("cuMemcpy2DAsync_v2", 1),
        ("cuMemcpy2DAsync_v2", 7),
    ];
    let mut failures = Vec::new();
    let cases = nvenc_entries
        .iter()
        .map(|&(e, n)| (e, n, NV_ENC_ERR_GENERIC))
        .chain(
            cuda_entries
                .iter()
                .map(|&(e, n)| (e, n, CUDA_ERROR_UNKNOWN)),
        );
    for (entry, nth, status) in cases {
        let emu = EmuDriver::new().fault(entry, nth, status);
        // Not `run_child`: a failing child is recorded with the others, not fatal at once.
        let out = emu
            .command(std::env::current_exe().expect("test binary"))
            .args([
                "--ignored",
                "--exact",
                "child_fault_scenario",
                "--test-threads",
                "1",
                "--nocapture",
            ])
            .output()
            .expect("run child");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let report = emu.report();
        let outcome = text
            .lines()
            .find(|l| l.starts_with("OUTCOME"))
            .unwrap_or("no outcome")
            .to_owned();
        let fired = report.faults.iter().any(|f| f.contains(entry));
        // The C name without the ABI suffix (`cuMemAllocPitch_v2` is reported as
        // `cuMemAllocPitch`).
        let name = entry.trim_end_matches("_v2");
        let v: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
        if !out.status.success() || !text.contains("1 passed") {
            failures.push(format!("{entry}#{nth}: child crashed or failed:\n{text}"));
        } else if !fired {
            failures.push(format!("{entry}#{nth}: the fault never fired ({outcome})"));
        } else if !report.leaks().is_empty() {
            failures.push(format!(
                "{entry}#{nth}: leaked {:?} ({outcome})",
                report.leaks()
            ));
        } else if !v.is_empty() {
            // Every failure leaves a session that can be torn down in the API's order: unlock
            // and unmap before unregister, unregister and destroy the buffers before destroying
            // the session (nvEncodeAPI.h, NvEncUnmapInputResource, NvEncUnregisterResource and
            // NvEncDestroyEncoder docs). No violation is forced by the API.
            failures.push(format!("{entry}#{nth}: API violations {v:?} ({outcome})"));
        } else if let Some(error) = outcome.strip_prefix("OUTCOME error ") {
            if !error.contains(name) {
                failures.push(format!(
                    "{entry}#{nth}: the error does not name {name}: {error}"
                ));
            }
        } else if outcome != "OUTCOME ok chunks=12" {
            failures.push(format!(
                "{entry}#{nth}: recovered, but not every frame came out: {outcome}"
            ));
        }
        eprintln!("{entry}#{nth}: {outcome}");
    }
    assert!(
        failures.is_empty(),
        "fault matrix:\n{}",
        failures.join("\n")
    );
}

#[test]
#[ignore = "child half of the device-error tests"]
fn child_open_error_kind() {
    assert_child();
    let config = EncoderConfig::new(320, 240);
    let err = NvencEncoder::new(&config).expect_err("the emulator is set to refuse");
    let kind = match &err {
        Error::Nvenc(e) => format!("{:?}", e.kind()),
        Error::NvencLoad(nvencode::LoadError::DriverTooOld { .. }) => "DriverTooOld".into(),
        other => format!("other: {other}"),
    };
    eprintln!("KIND {kind}");
    eprintln!("MESSAGE {err}");
    // The fallback chain takes x264 and keeps NVENC's reason.
    let encoder = FallbackEncoder::new(&config, None).expect("x264 opens");
    assert_eq!(encoder.current_kind(), EncoderKind::X264);
    assert_eq!(encoder.rejected()[0].0, EncoderKind::Nvenc);
}

fn open_error_kind(emu: &EmuDriver) -> (String, String) {
    let text = run_child(emu, "child_open_error_kind");
    let find = |tag: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(tag))
            .unwrap_or_default()
            .to_owned()
    };
    // A refused open leaves nothing behind and breaks no rule (and the emulators did report:
    // `assert_clean` fails on a missing report too).
    emu.report().assert_clean();
    (find("KIND "), find("MESSAGE "))
}

#[test]
fn no_encode_device_is_typed_and_falls_back_to_x264() {
    let (kind, message) = open_error_kind(&EmuDriver::new().no_device());
    assert_eq!(kind, format!("{:?}", NvencErrorKind::NoEncodeDevice));
    assert!(message.contains("no NVENC engine"), "{message}");
    let (kind, _) = open_error_kind(&EmuDriver::new().unsupported_device());
    assert_eq!(kind, format!("{:?}", NvencErrorKind::NoEncodeDevice));
}

#[test]
fn session_limit_is_typed_and_falls_back_to_x264() {
    let (kind, message) = open_error_kind(&EmuDriver::new().max_sessions(0));
    assert_eq!(
        kind,
        format!("{:?}", NvencErrorKind::SessionLimitOrOutOfMemory)
    );
    assert!(message.contains("session limit"), "{message}");
}

#[test]
fn old_driver_is_typed_and_falls_back_to_x264() {
    let old = nvenc_sys::ApiVersion::new(10, 0);
    let (kind, message) = open_error_kind(&EmuDriver::new().max_api(old));
    assert_eq!(kind, "DriverTooOld");
    assert!(message.contains("10.0"), "{message}");
}

#[test]
#[ignore = "child half of nvenc_chosen_and_failover_on_device_loss"]
fn child_failover() {
    assert_child();
    let config = EncoderConfig::new(320, 240)
        .with_preset(nvencode::Preset::Veryfast)
        .with_crf(18.0)
        .with_bframes(Some(2));
    let mut encoder = FallbackEncoder::new(&config, None).expect("open");
    assert_eq!(
        encoder.current_kind(),
        EncoderKind::Nvenc,
        "NVENC is chosen on the emulator"
    );
    let input = common::clip(&config, 60);
    let mut chunks = Vec::new();
    for frame in &input {
        encoder
            .encode_frame(frame, &mut chunks)
            .expect("encode continues across the failure");
    }
    encoder.flush(&mut chunks).expect("flush");
    assert_eq!(encoder.switches(), 1);
    assert_eq!(encoder.current_kind(), EncoderKind::X264);
    common::assert_accounting(&chunks, 60);
    let decoded = common::decode_h264(&common::concat(&chunks), config.resolution);
    assert_eq!(decoded.len(), 60);
    for (i, (want, got)) in input.iter().zip(&decoded).enumerate() {
        let p = common::psnr(want, got);
        assert!(p >= PSNR_FLOOR_DB, "frame {i}: PSNR {p:.2} dB");
    }
}

#[test]
fn nvenc_chosen_and_failover_on_device_loss() {
    // NV_ENC_ERR_DEVICE_NOT_EXIST (5) on the 25th picture.
    let emu = EmuDriver::new().fault("nvEncEncodePicture", 25, 5);
    run_child(&emu, "child_failover");
    let report = emu.report();
    assert!(report
        .faults
        .iter()
        .any(|f| f.contains("nvEncEncodePicture")));
    // The lost session is torn down in the API's order before x264 takes over.
    report.assert_clean();
}

#[test]
#[ignore = "child half of the caller's CUDA context is restored"]
fn child_callers_context_is_restored() {
    assert_child();
    use cudarc::driver::sys;
    cudarc::driver::result::init().expect("cuInit");
    let mut mine: sys::CUcontext = std::ptr::null_mut();
    // SAFETY: a valid out-pointer; device 0 exists on the emulator. `cuCtxCreate` also makes the
    // new context current on this thread.
    unsafe { sys::cuCtxCreate_v2(&mut mine, 0, 0) }
        .result()
        .expect("a context of the caller's");
    let before = cudarc::driver::result::ctx::get_current().expect("current");
    assert_eq!(before, Some(mine));
    let config = EncoderConfig::new(320, 240);
    let mut encoder = NvencEncoder::new(&config).expect("open");
    assert_eq!(
        cudarc::driver::result::ctx::get_current().expect("current"),
        before,
        "after open"
    );
    let mut chunks = Vec::new();
    for frame in common::clip(&config, 5) {
        encoder.encode_frame(&frame, &mut chunks).expect("encode");
    }
    assert_eq!(
        cudarc::driver::result::ctx::get_current().expect("current"),
        before,
        "after encode"
    );
    encoder.flush(&mut chunks).expect("flush");
    drop(encoder);
    assert_eq!(
        cudarc::driver::result::ctx::get_current().expect("current"),
        before,
        "after drop"
    );
    assert_eq!(chunks.len(), 5);
    // SAFETY: created above, current on this thread, and no longer used.
    unsafe { sys::cuCtxDestroy_v2(mine) }
        .result()
        .expect("destroy");
}

/// The encoder makes its own context current only for its own calls (push/pop): a pipeline's
/// own CUDA context on the same thread is left in place.
#[test]
fn callers_context_is_restored() {
    let emu = EmuDriver::new();
    run_child(&emu, "child_callers_context_is_restored");
    emu.report().assert_clean();
}

#[test]
#[ignore = "child half of a_panic_mid_stream_tears_down_cleanly"]
fn child_panic_mid_stream() {
    assert_child();
    let config = EncoderConfig::new(320, 240).with_bframes(Some(2));
    let input = common::clip(&config, 8);
    let result = std::panic::catch_unwind(|| {
        let mut encoder = NvencEncoder::new(&config).expect("open");
        let mut chunks = Vec::new();
        for frame in &input {
            encoder.encode_frame(frame, &mut chunks).expect("encode");
        }
        assert!(
            encoder.in_flight() > 0,
            "frames are in flight when the panic strikes"
        );
        panic!("a pipeline bug, mid-stream");
    });
    assert!(result.is_err());
}

/// A panic in the caller while frames are in flight unwinds through the encoder's `Drop`, which
/// must still tear the session down in order and leak nothing.
#[test]
fn a_panic_mid_stream_tears_down_cleanly() {
    let emu = EmuDriver::new();
    run_child(&emu, "child_panic_mid_stream");
    emu.report().assert_clean();
}

#[test]
#[ignore = "child half of lossless_is_checked_against_the_caps"]
fn child_lossless() {
    assert_child();
    // The parent says which GPU this is: lossless cap 1 (`NVENC_EMU_LOSSLESS=1`) or 0.
    let cap = std::env::var("NVENC_EMU_LOSSLESS").is_ok_and(|v| v == "1");
    let config = EncoderConfig::new(320, 240).with_bframes(Some(0));
    let options = NvencOptions::default().with_tuning(Some(nvencode::nvenc::NvencTuning::Lossless));
    let opened = NvencEncoder::with_options(&config, &options);
    if !cap {
        match opened {
            Err(Error::NvencCapability { cap, .. }) => {
                assert_eq!(cap, "NV_ENC_CAPS_SUPPORT_LOSSLESS_ENCODE");
            }
            Err(other) => panic!("lossless on a GPU without it: {other}"),
            Ok(_) => panic!("lossless tuning accepted on a GPU whose lossless cap is 0"),
        }
        return;
    }
    let mut encoder = opened.expect("lossless on a GPU with the cap");
    let input = common::clip(&config, 5);
    let chunks = common::encode_all(&mut encoder, &input);
    common::assert_accounting(&chunks, 5);
    let decoded = common::decode_h264(&common::concat(&chunks), config.resolution);
    assert_eq!(decoded.len(), 5);
    for (i, (want, got)) in input.iter().zip(&decoded).enumerate() {
        let want = common::as_i420(&config, want);
        // Bit-exact: infinite PSNR.
        assert!(
            want == *got,
            "frame {i} is not bit-exact (PSNR {:.2} dB)",
            common::psnr(&want, got)
        );
    }
}

/// Lossless tuning is checked against `NV_ENC_CAPS_SUPPORT_LOSSLESS_ENCODE` before the session is
/// initialized: a typed capability error where the cap is 0 (and no emulator violation, which
/// the emulator records when a client asks for lossless regardless), a bit-exact stream where it
/// is 1.
#[test]
fn lossless_is_checked_against_the_caps() {
    let emu = EmuDriver::new();
    run_child(&emu, "child_lossless");
    emu.report().assert_clean();
    let emu = EmuDriver::new().lossless();
    run_child(&emu, "child_lossless");
    emu.report().assert_clean();
}

/// The config of the fault-path and hang tests: the 320x240, B-frames in flight.
fn fault_config() -> EncoderConfig {
    EncoderConfig::new(320, 240)
        .with_preset(nvencode::Preset::Veryfast)
        .with_crf(18.0)
        .with_gop_size(30)
        .with_bframes(Some(2))
}

/// Decodes `chunks` and checks each decoded frame against the input frame it came from (the
/// frames whose chunks came out, in display order; automatic pts count frames).
fn assert_decodes_as(chunks: &[nvencode::EncodedChunk], input: &[Vec<u8>], config: &EncoderConfig) {
    let decoded = common::decode_h264(&common::concat(chunks), config.resolution);
    assert_eq!(
        decoded.len(),
        chunks.len(),
        "every chunk decodes to a frame"
    );
    let mut shown: Vec<usize> = chunks.iter().map(|c| c.pts as usize).collect();
    shown.sort_unstable();
    for (i, got) in shown.into_iter().zip(&decoded) {
        let p = common::psnr(&input[i], got);
        assert!(p >= PSNR_FLOOR_DB, "frame {i}: PSNR {p:.2} dB");
    }
}

#[test]
#[ignore = "child half of an_unmap_failure_retires_the_surface"]
fn child_unmap_failure() {
    assert_child();
    let config = fault_config();
    let input = common::clip(&config, 60);
    let mut encoder = NvencEncoder::new(&config).expect("open");
    let chunks = common::encode_all(&mut encoder, &input);
    common::assert_accounting(&chunks, 60);
    assert_decodes_as(&chunks, &input, &config);
}

/// `nvEncUnmapInputResource` fails once: the surface stays mapped, so it must never be mapped
/// again (`nvEncMapInputResource` on a mapped resource fails); the stream goes on without it and
/// the unmap is done at teardown.
#[test]
fn an_unmap_failure_retires_the_surface() {
    let emu = EmuDriver::new().fault("nvEncUnmapInputResource", 30, 20);
    run_child(&emu, "child_unmap_failure");
    let report = emu.report();
    assert!(report
        .faults
        .iter()
        .any(|f| f.contains("nvEncUnmapInputResource")));
    report.assert_clean();
}

#[test]
#[ignore = "child half of a_failed_session_is_torn_down_in_order"]
fn child_failed_session() {
    assert_child();
    let entry = std::env::var("FAULTED_CALL").expect("FAULTED_CALL");
    let config = fault_config();
    let input = common::clip(&config, 60);
    let mut encoder = NvencEncoder::new(&config).expect("open");
    let mut chunks = Vec::new();
    let mut error = None;
    for frame in &input {
        if let Err(e) = encoder.encode_frame(frame, &mut chunks) {
            error = Some(e);
            break;
        }
    }
    let error = match error {
        Some(e) => e,
        None => encoder
            .flush(&mut chunks)
            .expect_err("the fault fails the stream"),
    };
    assert!(
        matches!(&error, Error::Nvenc(e) if e.call == entry),
        "the error names {entry}: {error}"
    );
    // The encoder has failed: it says so again rather than going on.
    assert!(encoder.flush(&mut chunks).is_err());
    // Whatever came out before the failure is a valid stream.
    assert_decodes_as(&chunks, &input, &config);
    drop(encoder);
}

/// After a failed read-back (mid-stream) or a failed end of stream, the session is torn down in
/// the order nvEncodeAPI.h asks for: outputs locked and unlocked, inputs unmapped, then
/// unregistered, buffers destroyed, session destroyed.
#[test]
fn a_failed_session_is_torn_down_in_order() {
    // 60 frames are 60 pictures; the 61st nvEncEncodePicture is the end of stream.
    for (entry, nth) in [("nvEncLockBitstream", 20), ("nvEncEncodePicture", 61)] {
        let emu = EmuDriver::new()
            .fault(entry, nth, 20)
            .env("FAULTED_CALL", entry);
        run_child(&emu, "child_failed_session");
        let report = emu.report();
        assert!(
            report.faults.iter().any(|f| f.contains(entry)),
            "{entry}#{nth} fired"
        );
        report.assert_clean();
    }
}

#[test]
#[ignore = "child half of an_encode_error_means_the_frame_was_not_accepted"]
fn child_error_means_not_accepted() {
    assert_child();
    let config = fault_config();
    let input = common::clip(&config, 30);
    let mut encoder = NvencEncoder::new(&config).expect("open");
    let run = common::drive_through_errors(&mut encoder, &input, false);
    // The 5th read-back fails while frame 7 is being submitted: frame 7 is refused, and the
    // failed encoder refuses every later frame and the flush, so frame 7 never comes out.
    assert_eq!(
        run.refused.first().map(|r| r.0),
        Some(7),
        "{:?}",
        run.refused
    );
    assert!(
        run.refused[0].1.contains("nvEncLockBitstream"),
        "{:?}",
        run.refused
    );
    assert_eq!(run.accepted, (0..7).collect::<Vec<_>>());
    assert!(run.flush.is_err());
    assert!(run.chunks.iter().all(|c| c.pts < 7));
}

/// The contract on the emulated NVENC: an error from `encode` means the frame was not accepted
/// (`NVENC_EMU_FAULTS=nvEncLockBitstream:5:20`, 30 frames).
#[test]
fn an_encode_error_means_the_frame_was_not_accepted() {
    let emu = EmuDriver::new().fault("nvEncLockBitstream", 5, 20);
    run_child(&emu, "child_error_means_not_accepted");
    emu.report().assert_clean();
}

#[test]
#[ignore = "child half of a_stream_sync_failure_in_flush_is_a_backend_error"]
fn child_stream_sync_failure() {
    assert_child();
    let config = fault_config();
    let input = common::clip(&config, 10);
    let mut encoder = NvencEncoder::new(&config).expect("open");
    let mut chunks = Vec::new();
    for frame in &input {
        encoder.encode_frame(frame, &mut chunks).expect("encode");
    }
    let error = encoder.flush(&mut chunks).expect_err("the stream failed");
    assert!(
        matches!(
            error,
            Error::Backend {
                backend: EncoderKind::Nvenc,
                call: "cuStreamSynchronize",
                ..
            }
        ),
        "{error:?}"
    );
}

/// A failed `cuStreamSynchronize` during flush is a failure of this encoder
/// (`Error::Backend` naming the call), not "NVENC is not available here".
#[test]
fn a_stream_sync_failure_in_flush_is_a_backend_error() {
    let emu = EmuDriver::new().fault("cuStreamSynchronize", 1, 999);
    run_child(&emu, "child_stream_sync_failure");
    let report = emu.report();
    assert!(report
        .faults
        .iter()
        .any(|f| f.contains("cuStreamSynchronize")));
    report.assert_clean();
}

/// The hang tests' deadline: short, so the suite stays quick.
const HANG_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

/// How long after the deadline a hung call may take to fail: the watchdog's own reaction plus a
/// loaded machine's scheduling. A watchdog that waits a multiple of the deadline fails the hang
/// tests (checked with the deadline multiplied by 100).
const HANG_SLACK: std::time::Duration = std::time::Duration::from_secs(2);

/// Checks that a call stuck in the driver failed after `waited`: not before the deadline, and
/// not much after it.
fn assert_failed_at_the_deadline(waited: std::time::Duration) {
    assert!(
        waited >= HANG_DEADLINE && waited < HANG_DEADLINE + HANG_SLACK,
        "the hung call failed after {waited:?}; the deadline is {HANG_DEADLINE:?}"
    );
}

#[test]
#[ignore = "child half of a_hung_lock_fails_the_encoder_within_the_deadline"]
fn child_hung_lock() {
    assert_child();
    let config = fault_config();
    let input = common::clip(&config, 60);
    let options = NvencOptions::default().with_call_timeout(HANG_DEADLINE);
    let mut encoder = NvencEncoder::with_options(&config, &options).expect("open");
    let mut chunks = Vec::new();
    let mut failed = None;
    for (i, frame) in input.iter().enumerate() {
        let started = std::time::Instant::now();
        if let Err(e) = encoder.encode_frame(frame, &mut chunks) {
            failed = Some((i, e, started.elapsed()));
            break;
        }
    }
    let (at, error, waited) = failed.expect("the 20th read-back hangs");
    match &error {
        Error::Hung { call, deadline, .. } => {
            assert_eq!(*call, "nvEncLockBitstream");
            assert_eq!(*deadline, HANG_DEADLINE);
        }
        other => panic!("expected Error::Hung, got {other}"),
    }
    assert!(error.to_string().contains("nvEncLockBitstream"), "{error}");
    assert_failed_at_the_deadline(waited);
    eprintln!("frame {at}: {error} (after {waited:?})");
    // A hung encoder stays failed and says so again, without calling into the driver.
    let again = encoder.flush(&mut chunks).expect_err("still hung");
    assert!(matches!(again, Error::Hung { .. }), "{again}");
    // Every chunk that came out before the hang decodes.
    assert!(
        chunks.len() >= 15,
        "{} chunks before the hang",
        chunks.len()
    );
    assert_decodes_as(&chunks, &input, &config);
    // Dropping it hands the session to the stuck worker; it must not wait for the driver.
    drop(encoder);
    println!("HUNG_AT {at}");
}

/// Runs a child test that may hang when the watchdog does not work, with a bound: killed after
/// `limit` (the test then fails instead of hanging the suite).
fn run_child_bounded(emu: &EmuDriver, test: &str, limit: std::time::Duration) -> String {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = emu.command(exe);
    cmd.args([
        "--ignored",
        "--exact",
        test,
        "--test-threads",
        "1",
        "--nocapture",
    ]);
    let (success, text) = common::run_bounded(cmd, limit, test);
    assert!(success, "{test} failed:\n{text}");
    text
}

/// `NVENC_EMU_FAULTS=nvEncLockBitstream:20:hang`: the 20th read-back never returns. The caller
/// gets `Error::Hung` naming the call after the deadline, everything before it decodes, and the
/// hung session is left behind (not destroyed under the call), with no API rule broken.
#[test]
fn a_hung_lock_fails_the_encoder_within_the_deadline() {
    let emu = EmuDriver::new().hang("nvEncLockBitstream", 20);
    let text = run_child_bounded(&emu, "child_hung_lock", std::time::Duration::from_secs(120));
    assert!(text.contains("1 passed"), "{text}");
    let report = emu.report();
    assert!(
        report.faults.iter().any(|f| f.contains("status=hang")),
        "{:?}",
        report.faults
    );
    let v: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
    assert!(v.is_empty(), "{v:?}");
    // What a hung session leaves behind until the process exits: the session itself (with its
    // buffers and registrations) and its CUDA memory. Nothing was destroyed under the call.
    let live = report.live.get("encode").expect("encode live_handles");
    assert_eq!(live.get("sessions"), Some(&1), "{live:?}");
}

#[test]
#[ignore = "child half of a_hung_call_that_returns_late_is_torn_down"]
fn child_hung_lock_returns_late() {
    assert_child();
    let config = fault_config();
    let input = common::clip(&config, 60);
    let options = NvencOptions::default().with_call_timeout(HANG_DEADLINE);
    let mut encoder = NvencEncoder::with_options(&config, &options).expect("open");
    let mut chunks = Vec::new();
    let (error, waited) = input
        .iter()
        .find_map(|frame| {
            let started = std::time::Instant::now();
            let result = encoder.encode_frame(frame, &mut chunks);
            result.err().map(|e| (e, started.elapsed()))
        })
        .expect("the 20th read-back outlasts the deadline");
    // It fails at the deadline (1 s), not when the driver returns (3 s).
    assert_failed_at_the_deadline(waited);
    assert!(
        matches!(
            error,
            Error::Hung {
                call: "nvEncLockBitstream",
                ..
            }
        ),
        "{error}"
    );
    // Abandoned to the worker, which tears everything down once the call returns.
    drop(encoder);
    // Wait, bounded, for that teardown to finish: the session destroyed, then the CUDA
    // context's last reference (the worker's) released.
    let report = std::env::var("NVENC_EMU_REPORT").expect("report path");
    let done = |text: &str| {
        text.lines()
            .skip_while(|l| !l.contains("session_close"))
            .any(|l| l.starts_with("cuda live_handles") && l.contains("primary_active=0"))
    };
    for _ in 0..600 {
        if done(&std::fs::read_to_string(&report).unwrap_or_default()) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the abandoned session was not torn down within 60 s of the call returning");
}

/// A driver that recovers: `nvEncLockBitstream` #20 returns after 3 s, past the 1 s deadline.
/// The encoder has already failed with `Error::Hung` and been dropped; the worker then tears
/// the abandoned session down in the API's order, and nothing is left behind.
#[test]
fn a_hung_call_that_returns_late_is_torn_down() {
    let emu =
        EmuDriver::new().hang_for("nvEncLockBitstream", 20, std::time::Duration::from_secs(3));
    run_child_bounded(
        &emu,
        "child_hung_lock_returns_late",
        std::time::Duration::from_secs(120),
    );
    let report = emu.report();
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.contains("returned after the hang")),
        "{:?}",
        report.faults
    );
    report.assert_clean();
}

#[test]
#[ignore = "child half of a_hung_lock_fails_over_and_loses_no_frame"]
fn child_hung_lock_fallback() {
    assert_child();
    let hung_call = std::env::var("HUNG_CALL").expect("HUNG_CALL");
    let config = fault_config();
    let input = common::clip(&config, 60);
    let options = NvencOptions::default().with_call_timeout(HANG_DEADLINE);
    let chain = nvencode::fallback::chain_with(None, &options).expect("chain");
    let mut encoder = FallbackEncoder::with_chain(&config, chain).expect("open");
    assert_eq!(encoder.current_kind(), EncoderKind::Nvenc);
    // Each call timed: the one that met the hung driver call (an encode, or the flush) waited
    // for the deadline and no longer, then failed over within it.
    let mut chunks = Vec::new();
    let mut slowest = std::time::Duration::ZERO;
    for frame in &input {
        let started = std::time::Instant::now();
        encoder.encode_frame(frame, &mut chunks).expect("encode");
        slowest = slowest.max(started.elapsed());
    }
    let started = std::time::Instant::now();
    encoder.flush(&mut chunks).expect("flush");
    slowest = slowest.max(started.elapsed());
    // The replay on x264 adds its own encode time to the call that failed over.
    assert!(
        slowest >= HANG_DEADLINE && slowest < HANG_DEADLINE + HANG_SLACK * 2,
        "the slowest call took {slowest:?}; the deadline is {HANG_DEADLINE:?}"
    );
    assert_eq!(encoder.switches(), 1);
    assert_eq!(encoder.current_kind(), EncoderKind::X264);
    assert!(
        matches!(
            *encoder.rejected()[0].1,
            Error::Hung { call, .. } if call == hung_call
        ),
        "{:?}",
        encoder.rejected()
    );
    common::assert_accounting(&chunks, 60);
    assert_decodes_as(&chunks, &input, &config);
}

/// With the fallback chain, a hung read-back, a hung submission, or a hung end of stream (the
/// 61st nvEncEncodePicture, in flush) fails over to x264 and replays: all 60 frames come out
/// and decode.
#[test]
fn a_hung_lock_fails_over_and_loses_no_frame() {
    for (entry, nth) in [
        ("nvEncLockBitstream", 20),
        ("nvEncEncodePicture", 10),
        ("nvEncEncodePicture", 61),
    ] {
        let emu = EmuDriver::new().hang(entry, nth).env("HUNG_CALL", entry);
        run_child_bounded(
            &emu,
            "child_hung_lock_fallback",
            std::time::Duration::from_secs(120),
        );
        let report = emu.report();
        assert!(
            report.faults.iter().any(|f| f.contains(entry)),
            "{entry}#{nth} fired"
        );
        let v: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
        assert!(v.is_empty(), "{entry}#{nth}: {v:?}");
    }
}

/// The `encode_yuv` example as a user runs it, with `NVENC_EMU_FAULTS=nvEncLockBitstream:20:hang`
/// and the default deadline: `-e auto` fails over and writes all 60 frames; `-e nvenc` exits
/// with an error naming the hung call, and the frames before it decode.
#[test]
fn encode_yuv_survives_a_hung_lock() {
    let example = common::example("encode_yuv");
    let config = EncoderConfig::new(320, 240);
    let dir = tempfile::tempdir().expect("temp dir");
    for (choice, succeeds) in [("auto", true), ("nvenc", false)] {
        let emu = EmuDriver::new().hang("nvEncLockBitstream", 20);
        let output = dir.path().join(format!("{choice}.h264"));
        let mut cmd = emu.command(&example);
        cmd.args([
            "--size", "320x240", "--frames", "60", "-e", choice, "-q", "-o",
        ])
        .arg(&output);
        // Bounded at 30 s: the default deadline is 5 s.
        let limit = std::time::Duration::from_secs(30);
        let (success, text) = common::run_bounded(cmd, limit, choice);
        let decoded = common::decode_h264(
            &std::fs::read(&output).expect("output written"),
            config.resolution,
        );
        if succeeds {
            assert!(success, "-e {choice} failed:\n{text}");
            assert_eq!(decoded.len(), 60, "{text}");
        } else {
            assert!(!success, "-e {choice} should have failed:\n{text}");
            assert!(text.contains("nvEncLockBitstream"), "{text}");
            assert!(
                !decoded.is_empty() && decoded.len() < 60,
                "{} frames decoded",
                decoded.len()
            );
        }
        let v: Vec<String> = emu
            .report()
            .violations
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(v.is_empty(), "-e {choice}: {v:?}");
    }
}

/// The `session_init` lines the emulated driver wrote: what each session was initialized with.
fn session_inits(report: &nvenc_emu_harness::Report) -> Vec<&String> {
    report
        .lines
        .iter()
        .filter(|l| l.starts_with("encode session_init"))
        .collect()
}

#[test]
#[ignore = "child half of the neutral_preset_and_tune_reach_nvenc tests"]
fn child_neutral_preset_and_tune_through_gpu_config() {
    assert_child();
    let config = EncoderConfig::new(320, 240)
        .with_preset(nvencode::Preset::Ultrafast)
        .with_tune(Some(nvencode::Tune::Zerolatency));
    let input = common::clip(&config, 5);
    // A GpuEncoderConfig that names no NVENC preset or tune, as a configuration file would.
    let gpu = nvencode::GpuEncoderConfig::default();
    let mut chain = gpu.open(&config).expect("open");
    assert_eq!(chain.current_kind(), EncoderKind::Nvenc);
    common::assert_accounting(&common::encode_all(&mut chain, &input), 5);
    drop(chain);
    let (mut producer, output) = gpu.open_pipeline(&config).expect("pipeline").split();
    for frame in &input {
        assert_eq!(
            producer.push(frame.as_slice()).expect("push"),
            nvencode::pipeline::Submitted::Queued
        );
    }
    producer.finish().expect("finish");
    assert_eq!(output.filter(Result::is_ok).count(), 5);
}

/// `EncoderConfig`'s preset and tune decide NVENC's when the `GpuEncoderConfig` sets no NVENC
/// override: `ultrafast` + `zerolatency` reaches the driver as P1 with ultra-low-latency tuning,
/// through `GpuEncoderConfig::open`, `open_pipeline` and the pipeline example (whose debug log
/// says so in one line). Checked against the old defaults (P4, high quality) always passed.
#[test]
fn neutral_preset_and_tune_reach_nvenc() {
    let emu = EmuDriver::new();
    run_child_bounded(
        &emu,
        "child_neutral_preset_and_tune_through_gpu_config",
        std::time::Duration::from_secs(120),
    );
    let report = emu.report();
    let inits = session_inits(&report);
    assert_eq!(inits.len(), 2, "{:?}", report.lines);
    for line in &inits {
        assert!(
            line.contains("preset=P1 tuning=ull") && line.contains("frame_interval_p=1"),
            "{line}"
        );
    }
    report.assert_clean();

    let dir = tempfile::tempdir().expect("temp dir");
    let emu = EmuDriver::new();
    let out = emu
        .command(common::example("pipeline"))
        .args(["--frames", "10", "--size", "320x240", "--encoder", "nvenc"])
        .args(["--preset", "ultrafast", "--tune", "zerolatency", "-q", "-o"])
        .arg(dir.path().join("out.h264"))
        .env("RUST_LOG", "nvencode=debug")
        .output()
        .expect("run the pipeline example");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("NVENC initialize: codec H.264, preset P1, tuning ultra-low-latency"),
        "{stderr}"
    );
    let report = emu.report();
    let inits = session_inits(&report);
    assert_eq!(inits.len(), 1, "{:?}", report.lines);
    assert!(inits[0].contains("preset=P1 tuning=ull"), "{}", inits[0]);
}

/// When the whole chain fails (only NVENC allowed, and it fails), the pipeline example reports
/// the encoder's own error, not the receiver's "encoder thread stopped" that follows from it.
/// Checked against the receiver's error returned first.
#[test]
fn the_pipeline_example_reports_the_encoders_own_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("out.mp4");
    std::fs::write(&output, b"X\n").expect("write");
    // NV_ENC_ERR_INVALID_PARAM (8) from the fifth read-back on.
    let emu = EmuDriver::new().fault("nvEncLockBitstream", 5, 8);
    let out = emu
        .command(common::example("pipeline"))
        .args(["--frames", "30", "--size", "320x240", "-q", "-o"])
        .arg(&output)
        .env("NVENC_RS_BACKEND", "nvenc")
        .output()
        .expect("run the pipeline example");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("nvEncLockBitstream"), "{stderr}");
    assert!(
        !stderr.contains("its error is on the output side"),
        "{stderr}"
    );
    // The failed run left the existing file as it was (what it encoded, if anything, is beside
    // it as out.partial.mp4).
    assert_eq!(std::fs::read(&output).expect("output"), b"X\n", "{stderr}");
}
