//! The direct NVENC backend against the emulated driver pair (`tests/emu`): the production code
//! path, loaded through the production loaders, in child processes whose library path holds the
//! emulated `libcuda.so.1` and `libnvidia-encode.so.1`.
//!
//! Tests marked `#[ignore]` are the child halves: they run only inside a child started by one
//! of the parent tests below (which set `NVENC_EMU_REPORT`), never in the normal run. Each
//! parent then reads the emulators' report: no API rule broken, no handle leaked.

mod common;

use nvenc::nvenc::{NvencEncoder, NvencErrorKind, NvencOptions};
use nvenc::{EncoderConfig, EncoderKind, Error, FallbackEncoder, VideoEncoder};
use nvenc_emu_harness::EmuDriver;

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
    common::run_child_tests(cmd, 9, "the contract tests against the emulator");
    emu.report().assert_clean();
}

#[test]
#[ignore = "child half of thousand_frames_with_bframes_in_flight"]
fn child_thousand_frames() {
    let config = EncoderConfig::new(320, 240)
        .with_preset(nvenc::Preset::Veryfast)
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
        chunks.iter().any(|c| c.frame_type == nvenc::FrameType::B),
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
        Err(e) => eprintln!("OUTCOME error {e}"),
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
        if !out.status.success() || !text.contains("1 passed") {
            failures.push(format!("{entry}#{nth}: child crashed or failed:\n{text}"));
        } else if !fired {
            failures.push(format!("{entry}#{nth}: the fault never fired ({outcome})"));
        } else if !report.leaks().is_empty() {
            failures.push(format!(
                "{entry}#{nth}: leaked {:?} ({outcome})",
                report.leaks()
            ));
        } else if !outcome.starts_with("OUTCOME error") && !report.violations.is_empty() {
            // A fault the backend recovered from must leave a clean session behind.
            let v: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
            failures.push(format!(
                "{entry}#{nth}: recovered, but with API violations {v:?}"
            ));
        } else {
            // After a failed call, destroying the session with what it still holds is the
            // API's own remedy; the emulator notes it, and it is printed here for the record.
            eprintln!(
                "{entry}#{nth}: {outcome}; {} violation(s) noted",
                report.violations.len()
            );
            for v in &report.violations {
                eprintln!("    {v}");
            }
        }
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
        Error::NvencLoad(nvenc::LoadError::DriverTooOld { .. }) => "DriverTooOld".into(),
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
    assert!(
        emu.report().leaks().is_empty(),
        "{:?}",
        emu.report().leaks()
    );
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
        .with_preset(nvenc::Preset::Veryfast)
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
    assert!(report.leaks().is_empty(), "{:?}", report.leaks());
}

#[test]
#[ignore = "child half of device_frames_are_encoded_without_a_host_copy"]
fn child_device_frames() {
    assert_child();
    for format in [nvenc::PixelFormat::Nv12, nvenc::PixelFormat::I420] {
        let config = EncoderConfig::new(320, 240)
            .with_pixel_format(format)
            .with_crf(18.0)
            .with_bframes(Some(2));
        let mut encoder = NvencEncoder::new(&config).expect("open");
        let input = common::clip(&config, 30);
        let len = config.validate().expect("valid");
        let ctx = cudarc::driver::CudaContext::new(0).expect("CUDA context");
        ctx.bind_to_thread().expect("bind");
        // SAFETY: the primary context is current; `len` bytes are allocated and freed below,
        // after the encoder has been flushed.
        let dptr = unsafe { cudarc::driver::result::malloc_sync(len) }.expect("cuMemAlloc");
        let mut chunks = Vec::new();
        for frame in &input {
            // SAFETY: `dptr` holds `len` bytes and `frame` is `len` bytes long.
            unsafe { cudarc::driver::result::memcpy_htod_sync(dptr, frame) }.expect("upload");
            let device = nvenc::nvenc::DeviceFrame {
                device_ptr: dptr,
                pitch: 320,
                pts: None,
                force_keyframe: false,
            };
            // SAFETY: `dptr` is a live allocation of the encoder's (primary) context holding
            // the whole frame at pitch 320, and stays alive until after the flush below.
            unsafe { encoder.encode_device(device, &mut chunks) }.expect("encode_device");
            // The next upload overwrites the buffer: wait until the encoder's stream has read it.
            encoder.synchronize().expect("synchronize");
        }
        encoder.flush(&mut chunks).expect("flush");
        // SAFETY: allocated above; the encoder no longer reads it.
        unsafe { cudarc::driver::result::free_sync(dptr) }.expect("free");
        common::assert_accounting(&chunks, 30);
        let decoded = common::decode_h264(&common::concat(&chunks), config.resolution);
        assert_eq!(decoded.len(), 30);
        for (i, (want, got)) in input.iter().zip(&decoded).enumerate() {
            let p = common::psnr(&common::as_i420(&config, want), got);
            assert!(p >= PSNR_FLOOR_DB, "{format} frame {i}: PSNR {p:.2} dB");
        }
    }
}

#[test]
fn device_frames_are_encoded_without_a_host_copy() {
    let emu = EmuDriver::new();
    run_child(&emu, "child_device_frames");
    emu.report().assert_clean();
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
    let options = NvencOptions::default().with_tuning(Some(nvenc::nvenc::NvencTuning::Lossless));
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
