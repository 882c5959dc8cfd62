//! The emulator's validation rules, faults and limits, exercised by `nvenc-emu-client` (which
//! loads the driver through the production loader, `nvenc_sys::load`).

use std::process::Output;

use nvenc_emu_harness::{ApiVersion, EmuDriver, Report};

const CLIENT: &str = env!("CARGO_BIN_EXE_nvenc-emu-client");

fn run(emu: &EmuDriver, args: &[&str]) -> (Output, String, Report) {
    let out = emu
        .command(CLIENT)
        .args(args)
        .env("NVENC_EMU_QUIET", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = emu.report();
    (out, stdout, report)
}

fn assert_ok(out: &Output, report: &Report) {
    assert!(
        out.status.success(),
        "client failed: {}\n{}\nreport:\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        report.lines.join("\n")
    );
}

#[test]
fn loads_through_the_production_loader() {
    let (out, stdout, report) = run(&EmuDriver::new(), &["load"]);
    assert_ok(&out, &report);
    assert!(stdout.contains("load ok 11.1"), "{stdout}");
}

#[test]
fn driver_older_than_our_api_is_refused_by_the_loader() {
    let emu = EmuDriver::new().max_api(ApiVersion::new(10, 0));
    let (out, stdout, report) = run(&emu, &["load"]);
    assert_ok(&out, &report);
    assert!(stdout.contains("load err DriverTooOld"), "{stdout}");
}

#[test]
fn misuse_is_refused_with_the_drivers_status_and_recorded() {
    let (out, stdout, report) = run(&EmuDriver::new(), &["misuse"]);
    assert_ok(&out, &report);
    assert!(stdout.contains("ok lock out of submission order"));
    let expect = [
        ("nvEncOpenEncodeSessionEx", "version is"),
        ("nvEncOpenEncodeSessionEx", "reserved1[3]"),
        (
            "nvEncCreateBitstreamBuffer",
            "nvEncInitializeEncoder has not succeeded",
        ),
        (
            "nvEncInitializeEncoder",
            "{e7cbc309-4f7a-4b89-af2a-d537c92be310} is not a preset",
        ),
        ("nvEncInitializeEncoder", "enableEncodeAsync"),
        ("nvEncInitializeEncoder", "outside caps"),
        ("nvEncInitializeEncoder", "already initialized"),
        ("nvEncReconfigureEncoder", "exceeds maxEncodeWidth"),
        ("nvEncReconfigureEncoder", "version is"),
        ("nvEncRegisterResource", "less than the width"),
        ("nvEncRegisterResource", "remain in the allocation"),
        ("nvEncRegisterResource", "not a device allocation"),
        // Checked against the emulator accepting a second mapping of a mapped resource.
        ("nvEncMapInputResource", "already mapped"),
        ("nvEncUnregisterResource", "still mapped"),
        ("nvEncEncodePicture", "inputPitch"),
        ("nvEncEncodePicture", "pass the mappedResource"),
        ("nvEncLockBitstream", "no submitted frame"),
        (
            "nvEncUnmapInputResource",
            "before nvEncLockBitstream returned",
        ),
        ("nvEncEncodePicture", "reused before the output"),
        ("nvEncEncodePicture", "still pending or locked"),
        ("nvEncLockBitstream", "submission order"),
        ("nvEncUnmapInputResource", "not a mapped resource"),
        ("nvEncDestroyEncoder", "destroyed with live"),
        ("nvEncEncodePicture", "not a live encoder session"),
        ("cuMemFree_v2", "double free"),
    ];
    for (entry, text) in expect {
        assert!(
            report
                .violations_of(entry)
                .iter()
                .any(|v| v.reason.contains(text)),
            "no violation of {entry} mentioning {text:?}; got:\n{}",
            report.lines.join("\n")
        );
    }
    assert_eq!(
        report.violations.len(),
        expect.len(),
        "{:#?}",
        report.violations
    );
    // The in-process control API agrees with the report (NVENC's share of the violations).
    let nvenc = report
        .violations
        .iter()
        .filter(|v| v.lib == "encode")
        .count();
    let control = format!(
        "control violations={nvenc} live_handles sessions=0 input_buffers=0 \
         bitstream_buffers=0 registered=0 mapped=0"
    );
    assert!(stdout.contains(&control), "{stdout}");
    // The leaky destroy was cleaned up by the emulator, so nothing is left at exit.
    assert!(report.leaks().is_empty(), "{:?}", report.leaks());
}

/// External CUDA memory registers at every pitch the header allows (the allocation's pitch from
/// `cuMemAllocPitch`, the width in bytes of a `cuMemAlloc` allocation, any multiple of 4 that
/// fits; nvEncodeAPI.h 11.1 lines 2149-2154) and is refused with `NV_ENC_ERR_INVALID_PARAM` at
/// a pitch that is not a multiple of 4 (line 2154), which is recorded.
#[test]
fn registration_takes_every_pitch_the_header_allows() {
    let (out, stdout, report) = run(&EmuDriver::new(), &["pitches"]);
    assert_ok(&out, &report);
    for line in [
        "ok register at the cuMemAllocPitch pitch",
        "ok register at the width in bytes",
        "ok register at a wider pitch, a multiple of 4",
        "ok register at a width in bytes that is not a multiple of 4",
    ] {
        assert!(stdout.contains(line), "{line:?} missing:\n{stdout}");
    }
    assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
    assert!(report
        .violations_of("nvEncRegisterResource")
        .iter()
        .any(|v| v.reason.contains("not a multiple of 4")));
    assert!(report.leaks().is_empty(), "{:?}", report.leaks());
}

/// The frames `nvenc-emu-client encode` uploads (320x192 NV12: luma `x + y + 4n`, both chroma
/// planes `128 + ((i + n) & 31)`), as I420, for PSNR against the decoded stream.
fn client_frames(frames: usize) -> Vec<u8> {
    let (w, h) = (320usize, 192usize);
    let mut out = Vec::with_capacity(frames * w * h * 3 / 2);
    for n in 0..frames {
        for y in 0..h {
            out.extend((0..w).map(|x| ((x + y + n * 4) & 0xff) as u8));
        }
        for _plane in 0..2 {
            for _y in 0..h / 2 {
                out.extend((0..w / 2).map(|i| (128 + ((i + n) & 31)) as u8));
            }
        }
    }
    out
}

/// Decodes the client's stream and checks every frame against what it uploaded.
fn assert_decodes_to_client_frames(path: &std::path::Path, frames: usize) {
    let yuv = nvenc_emu_harness::video::decode_yuv420(path);
    assert_eq!(yuv.len(), frames * 320 * 192 * 3 / 2, "decoded frame count");
    let psnr = nvenc_emu_harness::video::psnr_yuv420(&yuv, &client_frames(frames), 320, 192);
    let min = psnr.iter().copied().fold(f64::INFINITY, f64::min);
    let avg = psnr.iter().sum::<f64>() / psnr.len() as f64;
    eprintln!("PSNR average {avg:.2} dB, lowest {min:.2} dB");
    // Measured: 73.3 dB average, 64.8 dB lowest (the pattern is smooth); a neighbouring frame in
    // its place compares at 20.3 dB, so the 35 dB floor separates right from wrong.
    assert!(min >= 35.0, "lowest frame PSNR {min:.2} dB: {psnr:?}");
}

/// B-frames through the CUDA path, read back the moment the header allows: this client locks
/// every pending output as soon as nvEncEncodePicture returns NV_ENC_SUCCESS (nvEncodeAPI.h 11.1
/// lines 577-589, `NV_ENC_ERR_NEED_MORE_INPUT`: "After receiving NV_ENC_SUCCESS status the
/// client can call NvEncLockBitstream() API on the output buffers in the same order"). NVENC's
/// NEED_MORE_INPUT pattern, outputs locked in submission order, real B-pictures with one IDR
/// only, and a stream that decodes to every frame.
#[test]
fn encode_with_b_frames_from_cuda_memory() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("b.h264");
    let emu = EmuDriver::new();
    let (out, stdout, report) = run(&emu, &["encode", out_path.to_str().unwrap(), "30", "3"]);
    assert_ok(&out, &report);
    report.assert_clean();
    // Every entry point called is listed with its count, for building fault matrices.
    assert_eq!(report.calls["encode"]["nvEncEncodePicture"], 31);
    assert_eq!(report.calls["encode"]["nvEncLockBitstream"], 30);
    assert!(report.calls["cuda"]["cuMemAllocPitch_v2"] >= 6);
    let log = stdout.lines().find_map(|l| l.strip_prefix("log ")).unwrap();
    let signals: String = log.split(' ').filter(|t| *t == "S" || *t == "N").collect();
    assert_eq!(signals, "SNNSNNSNNSNNSNNSNNSNNSNNSNNSNN");
    // (timestamp:picture type) in lock order: NVENC's decode order, anchor before its B-frames.
    let locked: Vec<&str> = log.split(' ').filter(|t| t.contains(':')).collect();
    assert_eq!(
        &locked[..7],
        ["0:3", "3000:0", "1000:1", "2000:1", "6000:0", "4000:1", "5000:1"]
    );
    let types = |t: &str| locked.iter().filter(|l| l.ends_with(t)).count();
    assert_eq!(types(":3"), 1, "one IDR only: {locked:?}");
    // Anchors 0, 3, .., 27; at EOS the last of the trailing 28, 29 becomes a P-frame.
    assert_eq!(types(":1"), 19, "B-frames: {locked:?}");
    assert_decodes_to_client_frames(&out_path, 30);
}

/// HEVC through the same client and path (libx265 behind the emulated NVENC): NVENC's
/// NEED_MORE_INPUT pattern, outputs locked the moment the header allows (libx265 holds more
/// pictures than that, so the emulator replays the GOP to hand them out), one IDR, B-pictures,
/// and a stream that decodes to every frame.
#[test]
fn hevc_with_b_frames_from_cuda_memory() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("b.hevc");
    let emu = EmuDriver::new();
    let (out, stdout, report) = run(
        &emu,
        &["encode", out_path.to_str().unwrap(), "30", "3", "hevc"],
    );
    assert_ok(&out, &report);
    report.assert_clean();
    assert!(report
        .lines
        .iter()
        .any(|l| l.starts_with("encode session_init") && l.contains("codec=hevc")));
    let log = stdout.lines().find_map(|l| l.strip_prefix("log ")).unwrap();
    let signals: String = log.split(' ').filter(|t| *t == "S" || *t == "N").collect();
    assert_eq!(signals, "SNNSNNSNNSNNSNNSNNSNNSNNSNNSNN");
    let locked: Vec<&str> = log.split(' ').filter(|t| t.contains(':')).collect();
    assert_eq!(&locked[..4], ["0:3", "3000:0", "1000:1", "2000:1"]);
    let types = |t: &str| locked.iter().filter(|l| l.ends_with(t)).count();
    assert_eq!(types(":3"), 1, "one IDR only: {locked:?}");
    assert!(types(":1") >= 18, "B-frames: {locked:?}");
    assert_decodes_to_client_frames(&out_path, 30);
}

/// The same over several GOPs (IDR every 30 frames): each GOP keeps its B-frames and has exactly
/// one IDR, and the stream decodes to every frame.
#[test]
fn b_frames_read_back_at_once_over_several_gops() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("gops.h264");
    let emu = EmuDriver::new();
    let (out, stdout, report) = run(&emu, &["encode", out_path.to_str().unwrap(), "70", "3"]);
    assert_ok(&out, &report);
    report.assert_clean();
    let log = stdout.lines().find_map(|l| l.strip_prefix("log ")).unwrap();
    let locked: Vec<&str> = log.split(' ').filter(|t| t.contains(':')).collect();
    let idrs: Vec<&str> = locked
        .iter()
        .filter(|l| l.ends_with(":3"))
        .copied()
        .collect();
    assert_eq!(idrs, ["0:3", "30000:3", "60000:3"], "{locked:?}");
    let b = locked.iter().filter(|l| l.ends_with(":1")).count();
    assert!(b >= 40, "{b} B-frames: {locked:?}");
    assert_decodes_to_client_frames(&out_path, 70);
}

/// Fast mode reproduces NVENC's output order exactly: each anchor's output comes before the
/// B-pictures it follows in display order.
#[test]
fn fast_mode_reorders_like_nvenc() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("f.h264");
    let emu = EmuDriver::new().fast();
    let (out, stdout, report) = run(&emu, &["encode", out_path.to_str().unwrap(), "7", "3"]);
    assert_ok(&out, &report);
    report.assert_clean();
    let log = stdout.lines().find_map(|l| l.strip_prefix("log ")).unwrap();
    let locked: Vec<&str> = log.split(' ').filter(|t| t.contains(':')).collect();
    // (timestamp:picture type) in lock order: IDR 0, then P 3 before B 1 and B 2, ...
    assert_eq!(
        locked,
        ["0:3", "3000:0", "1000:1", "2000:1", "6000:0", "4000:1", "5000:1"]
    );
}

/// The API 11.1 header still declares the deprecated presets (`NV_ENC_DEPRECATED`, nvEncodeAPI.h
/// 11.1 lines 203-240) and drivers of that era list them beside P1..P7: an 11.x client may
/// list, configure and initialize with any of them. The lossless ones are listed only where the
/// lossless cap is 1.
#[test]
fn legacy_presets_are_listed_and_accepted() {
    for (emu, listed) in [(EmuDriver::new(), 14), (EmuDriver::new().lossless(), 16)] {
        let (out, stdout, report) = run(&emu, &["queries"]);
        assert_ok(&out, &report);
        let presets = stdout
            .lines()
            .find_map(|l| l.strip_prefix("presets "))
            .unwrap();
        let (n, guids) = presets.split_once(' ').unwrap();
        assert_eq!(n.parse::<usize>().unwrap(), listed, "{presets}");
        assert_eq!(guids.split(',').count(), listed);
        // P1 first, NV_ENC_PRESET_DEFAULT_GUID among them, both formatted the usual way.
        assert!(
            guids.starts_with("{fc0a8d3e-45f8-4cf8-80c7-298871590ebf},"),
            "{guids}"
        );
        assert!(
            guids.contains("{b2dfb705-4ebd-4c49-9b5f-24a777d3e587}"),
            "{guids}"
        );
        for name in [
            "DEFAULT",
            "HP",
            "HQ",
            "BD",
            "LOW_LATENCY_DEFAULT",
            "LOW_LATENCY_HQ",
            "LOW_LATENCY_HP",
        ] {
            assert!(
                stdout.contains(&format!("legacy {name} ok\n")),
                "{name}:\n{stdout}"
            );
        }
    }
}

/// NVENC GPUs since Maxwell GM206 encode HEVC, so asking for HEVC's profiles is a normal query:
/// answered on the emulated GPU (Turing-like, HEVC listed), and on one without HEVC
/// (`NVENC_EMU_CODECS=h264`) answered with an error and recorded as no violation.
#[test]
fn hevc_profile_query_is_not_a_violation() {
    let (out, stdout, report) = run(&EmuDriver::new().lossless(), &["queries"]);
    assert_ok(&out, &report);
    assert!(stdout.contains("hevc profiles 0\n"), "{stdout}");
    report.assert_clean();
    let emu = EmuDriver::new().lossless().env("NVENC_EMU_CODECS", "h264");
    let (out, stdout, report) = run(&emu, &["queries"]);
    assert_ok(&out, &report);
    assert!(stdout.contains("hevc profiles 8\n"), "{stdout}");
    report.assert_clean();
}

/// HEVC on the emulated GPU: both codecs listed, HEVC's profiles (Main, Main10, FREXT) and
/// caps (B-frames, middle B-frame references, SAO; no 10-bit input), the preset's
/// `NV_ENC_CONFIG_HEVC` (IDR period = GOP, 4:2:0, 8-bit); every rule of `NV_ENC_CONFIG_HEVC` the
/// emulator enforces refuses its breach with the driver's status (the client checks each) and
/// records it; a valid configuration with FFmpeg's fields is accepted; another codec in a
/// reconfiguration is refused.
#[test]
fn hevc_rules_are_enforced_and_recorded() {
    let (out, stdout, report) = run(&EmuDriver::new(), &["hevc-rules"]);
    assert_ok(&out, &report);
    for line in [
        "codecs 2 hevc true",
        "hevc profiles 3 max_bframes 4 b_ref_mode 2 10bit 0 sao 1",
        "hevc preset idr_period 250 gop 250 chroma 1 depth 0",
        "ok hevc init valid: NV_ENC_SUCCESS",
    ] {
        assert!(stdout.contains(line), "{line:?} missing:\n{stdout}");
    }
    let expect = [
        "chromaFormatIDC 2",
        "chromaFormatIDC 3 (4:4:4) needs NV_ENC_CAPS_SUPPORT_YUV444_ENCODE",
        "pixelBitDepthMinus8 2 (10-bit) needs NV_ENC_CAPS_SUPPORT_10BIT_ENCODE",
        "pixelBitDepthMinus8 1",
        "profile Main10",
        "is not an HEVC profile",
        "level 42",
        "tier 2",
        "maxCUSize 4",
        "sliceMode 4",
        "maxNumRefFramesInDPB 17",
        "LTRs are not supported with B-frames",
        "useBFramesAsRef 1",
        "NV_ENC_CONFIG_HEVC.reserved1[5]",
        "needs 5 B-frames",
    ];
    let init = report.violations_of("nvEncInitializeEncoder");
    for text in expect {
        assert!(
            init.iter().any(|v| v.reason.contains(text)),
            "no violation mentioning {text:?}; got:\n{}",
            report.lines.join("\n")
        );
    }
    assert!(report
        .violations_of("nvEncReconfigureEncoder")
        .iter()
        .any(|v| v.reason.contains("encodeGUID cannot change")));
    assert_eq!(
        report.violations.len(),
        expect.len() + 1,
        "{:#?}",
        report.violations
    );
    assert!(report.leaks().is_empty(), "{:?}", report.leaks());
}

/// `cuStreamGetCtx` answers a live stream's context, and the current context for the NULL
/// stream; a handle that is not a stream is `CUDA_ERROR_INVALID_HANDLE` (400) and a NULL out
/// pointer `CUDA_ERROR_INVALID_VALUE` (1), both recorded, as for the other stream calls.
/// `nvEncSetIOCudaStreams` reads the `CUstream` each argument points at: a NULL pointer is
/// `NV_ENC_ERR_INVALID_PTR`, a handle that is not a live stream of the session's context
/// (none at all, another context's, a destroyed one) `NV_ENC_ERR_INVALID_PARAM`; the session's
/// own stream and the NULL stream are accepted. Each refusal is recorded (a stream that is not
/// one is recorded by CUDA's `cuStreamGetCtx` too, which the emulated NVENC asks).
#[test]
fn io_streams_are_checked_and_cu_stream_get_ctx_answers() {
    let (out, stdout, report) = run(&EmuDriver::new(), &["io-streams"]);
    assert_ok(&out, &report);
    for line in [
        "stream_ctx own 0 true",
        "stream_ctx null_stream 0 true",
        "stream_ctx bogus 400",
        "stream_ctx null_out 1",
        "ok io streams: the session's stream: NV_ENC_SUCCESS",
        "ok io streams: the NULL stream: NV_ENC_SUCCESS",
    ] {
        assert!(stdout.contains(line), "{line:?} missing:\n{stdout}");
    }
    let io = report.violations_of("nvEncSetIOCudaStreams");
    for text in [
        "inputStream is NULL",
        "outputStream 0xdead0000 is not a live CUDA stream",
        "belongs to context",
        "is not a live CUDA stream (cuStreamGetCtx returned 400)",
    ] {
        assert!(
            io.iter().any(|v| v.reason.contains(text)),
            "no nvEncSetIOCudaStreams violation mentioning {text:?}:\n{}",
            report.lines.join("\n")
        );
    }
    assert_eq!(io.len(), 4, "{io:#?}");
    // The client's own two bad calls, and the emulated NVENC's two look-ups of bad handles.
    assert_eq!(report.violations_of("cuStreamGetCtx").len(), 4);
    assert_eq!(report.violations.len(), 8, "{:#?}", report.violations);
    assert!(report.leaks().is_empty(), "{:?}", report.leaks());
}

/// `NV_ENC_CAPS_SUPPORT_LOSSLESS_ENCODE` is switchable; lossless tuning is refused (and recorded:
/// the header asks clients to check the cap, nvEncodeAPI.h 11.1 lines 1433-1434) where it is 0,
/// and accepted where it is 1.
#[test]
fn lossless_follows_its_cap() {
    let (out, stdout, report) = run(&EmuDriver::new(), &["queries"]);
    assert_ok(&out, &report);
    assert!(stdout.contains("lossless preset 12\n"), "{stdout}");
    assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
    assert!(report.violations[0]
        .reason
        .contains("NV_ENC_CAPS_SUPPORT_LOSSLESS_ENCODE is 0"));
    let (out, stdout, report) = run(&EmuDriver::new().lossless(), &["queries"]);
    assert_ok(&out, &report);
    assert!(stdout.contains("lossless preset 0\n"), "{stdout}");
    report.assert_clean();
}

/// nvEncodeAPI.h 11.1 line 1916: `inputPitch` "If pitch value is not known, set this to
/// inputWidth"; clients (NVIDIA's sample encoder class among them) leave it 0. Both encode
/// cleanly and decode to every frame.
#[test]
fn input_pitch_zero_or_input_width_is_accepted() {
    for mode in ["pitch0", "pitchw"] {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.h264");
        let (out, _stdout, report) = run(
            &EmuDriver::new(),
            &["encode", p.to_str().unwrap(), "10", "1", mode],
        );
        assert_ok(&out, &report);
        report.assert_clean();
        let yuv = nvenc_emu_harness::video::decode_yuv420(&p);
        assert_eq!(yuv.len(), 10 * 320 * 192 * 3 / 2, "{mode}");
    }
}

/// A real `libcuda.so.1` exports the peer-access and GL-interop entry points and the unversioned
/// `cuStreamDestroy`; a loader that resolves its whole table (GStreamer's) refuses a library that
/// lacks one. The emulated one exports them with the codes a driver gives on one device (CUDA
/// driver API reference: `cuDeviceCanAccessPeer` is 0 for a device and itself;
/// `cuCtxEnablePeerAccess` returns `CUDA_ERROR_PEER_ACCESS_UNSUPPORTED` (217) when that says no;
/// `cuCtxDisablePeerAccess` returns `CUDA_ERROR_PEER_ACCESS_NOT_ENABLED` (705) when access was
/// never enabled), GL interop as not supported (801), and `cuStreamDestroy` as
/// `cuStreamDestroy_v2`. None of these is a violation.
#[test]
fn every_symbol_a_whole_table_loader_needs_is_exported() {
    let (out, stdout, report) = run(&EmuDriver::new(), &["symbols"]);
    assert_ok(&out, &report);
    for line in [
        "cuDeviceCanAccessPeer 0",
        "can_access_peer 0",
        "cuCtxEnablePeerAccess 217",
        "cuCtxDisablePeerAccess 705",
        "cuGraphicsGLRegisterBuffer 801",
        "cuGraphicsResourceSetMapFlags_v2 801",
        "cuStreamDestroy 0",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line}:\n{stdout}");
    }
    // The stream destroyed through the unversioned name is gone: no leak, no violation.
    report.assert_clean();
}

#[test]
fn session_limit_like_geforce() {
    let emu = EmuDriver::new().max_sessions(2);
    let (out, stdout, report) = run(&emu, &["sessions", "3"]);
    assert_ok(&out, &report);
    assert!(stdout.contains("sessions 0,0,10"), "{stdout}");
    report.assert_clean();
}

/// Session open on a GPU without NVENC: `NV_ENC_ERR_NO_ENCODE_DEVICE` (1) or
/// `NV_ENC_ERR_UNSUPPORTED_DEVICE` (2), with nothing left behind in either case.
#[test]
fn no_encode_device() {
    for (emu, want) in [
        (EmuDriver::new().no_device(), "sessions 1"),
        (EmuDriver::new().unsupported_device(), "sessions 2"),
    ] {
        let (out, stdout, report) = run(&emu, &["sessions", "1"]);
        assert_ok(&out, &report);
        // The whole line: `sessions 1` must not match `sessions 10` (the session limit's code).
        assert!(stdout.lines().any(|l| l == want), "{want}:\n{stdout}");
        report.assert_clean();
    }
}

#[test]
fn fault_fires_on_the_nth_call() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.h264");
    let emu = EmuDriver::new().fault("nvEncEncodePicture", 5, 8);
    let (out, stdout, report) = run(
        &emu,
        &["encode", p.to_str().unwrap(), "10", "1", "stop-on-error"],
    );
    assert_ok(&out, &report);
    assert!(
        stdout.contains("stopped: encode 4: NV_ENC_ERR_INVALID_PARAM (8)"),
        "{stdout}"
    );
    assert_eq!(report.faults, ["entry=nvEncEncodePicture call=5 status=8"]);
}

/// Every NVENC and CUDA entry point the client's encode path calls, failing on its first and on
/// a later call: the client stops, tears down, and no handle is left in either library.
#[test]
fn fault_matrix_leaves_no_handles() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.h264");
    let cases: &[(&str, &[u64], i32)] = &[
        ("nvEncOpenEncodeSessionEx", &[1], 10),
        ("nvEncGetEncodePresetConfigEx", &[1], 8),
        ("nvEncInitializeEncoder", &[1], 8),
        ("nvEncRegisterResource", &[1, 3], 23),
        ("nvEncCreateBitstreamBuffer", &[1, 3], 10),
        ("nvEncMapInputResource", &[1, 4], 16),
        ("nvEncEncodePicture", &[1, 4], 5),
        ("nvEncLockBitstream", &[1, 2], 20),
        ("nvEncUnlockBitstream", &[1], 20),
        ("cuInit", &[1], 100),
        ("cuCtxCreate_v2", &[1], 2),
        ("cuMemAllocPitch_v2", &[1, 3], 2),
        ("cuMemcpyHtoD_v2", &[1, 5], 1),
    ];
    for &(entry, nths, status) in cases {
        for &nth in nths {
            let emu = EmuDriver::new().fault(entry, nth, status);
            let (out, stdout, report) = run(
                &emu,
                &["encode", p.to_str().unwrap(), "8", "2", "stop-on-error"],
            );
            assert_ok(&out, &report);
            assert_eq!(
                report.faults.len(),
                1,
                "{entry}#{nth} did not fire:\n{stdout}"
            );
            assert!(
                stdout.contains("stopped:"),
                "{entry}#{nth}: the client did not see the failure:\n{stdout}"
            );
            assert!(
                report.leaks().is_empty(),
                "{entry}#{nth}: leaked {:?}",
                report.leaks()
            );
        }
    }
}

#[test]
fn cuda_without_a_device() {
    let (out, _stdout, report) = run(&EmuDriver::new().no_cuda_device(), &["sessions", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cuInit: 100"));
    assert!(report.violations.is_empty());
}

/// cudarc (context, stream, plain/pitched/pinned memory, copies) runs unchanged on the emulated
/// libcuda, and releases everything it took.
#[test]
fn cudarc_runs_on_the_emulated_libcuda() {
    let emu = EmuDriver::new();
    let out = emu
        .command(env!("CARGO_BIN_EXE_nvenc-emu-cudarc"))
        .output()
        .unwrap();
    let report = emu.report();
    assert_ok(&out, &report);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("cudarc ok device=\"Emulated NVENC GPU\" pitch=1024"),
        "{stdout}"
    );
    report.assert_clean();
}

/// The build never produces a file under a driver's name, so `cargo test` (which puts
/// `target/<profile>` on `LD_LIBRARY_PATH`) cannot make other tests load an emulator.
#[test]
fn artifacts_never_shadow_a_driver() {
    let libs = nvenc_emu_harness::libs();
    for artifact in [&libs.cuda, &libs.encode] {
        let name = artifact.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("libnvenc_emu_"), "{name}");
        let dir = artifact.parent().unwrap();
        for entry in std::fs::read_dir(dir).unwrap() {
            let n = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                !n.starts_with("libcuda.so") && !n.starts_with("libnvidia-encode.so"),
                "{} holds {n}",
                dir.display()
            );
        }
    }
}

/// On a GPU machine: the emulated NVENC on top of the real libcuda (real device memory, read back
/// through the real driver). Ignored by default (CI has no GPU); run with `--ignored`, it fails
/// where there is no real libcuda.
#[test]
#[ignore = "needs a real libcuda.so.1 (a GPU machine): run with --ignored"]
fn emulated_nvenc_on_a_real_libcuda() {
    assert!(
        nvenc_emu_harness::real_cuda_available(),
        "asked to run on a real libcuda, but no libcuda.so.1 loads on this machine"
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("gpu.h264");
    let emu = EmuDriver::new().real_cuda();
    let (out, stdout, report) = run(&emu, &["encode", p.to_str().unwrap(), "30", "3"]);
    assert_ok(&out, &report);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert!(stdout.contains("log "));
    assert!(std::fs::metadata(&p).unwrap().len() > 1000);
}

/// A test body run in a child against the emulator (the pattern for backend tests): the
/// production loader finds the emulated driver there, and the report shows the session.
#[test]
fn test_body_in_a_child_process() {
    if nvenc_emu_harness::in_child() {
        let lib = nvenc_sys::load().expect("the emulated driver loads");
        assert_eq!(lib.driver_max_version(), ApiVersion::new(11, 1));
        return;
    }
    let emu = EmuDriver::new();
    let out = emu
        .command_self("test_body_in_a_child_process")
        .output()
        .unwrap();
    let report = emu.report();
    assert_ok(&out, &report);
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    assert_eq!(report.calls["encode"]["NvEncodeAPICreateInstance"], 1);
}
