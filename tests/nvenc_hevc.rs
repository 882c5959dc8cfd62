//! HEVC through the direct NVENC backend, against the emulated driver pair (`tests/emu`, whose
//! HEVC is libx265): host frames, pinned ring slots and device ring slots; with and without
//! B-frames; GOP, forced IDR, reconfiguration; what the driver was initialized with (the
//! emulator's report); and a GPU without HEVC (`NVENC_EMU_CODECS=h264`).
//!
//! Tests marked `#[ignore]` are child halves: they run only inside a child process started by
//! a parent test below, against the emulated driver; each parent then reads the emulators'
//! report (no API rule broken, no handle leaked) and what the child printed.

mod common;

use std::time::Duration;

use nvenc_emu_harness::{EmuDriver, Report};
use nvencode::cuda::Context;
use nvencode::encoder::SlotFrame;
use nvencode::nvenc::{NvencEncoder, NvencOptions};
use nvencode::ring_buffer::{DeviceStorage, FrameFlags, FrameMeta, FrameRing, PinnedStorage};
use nvencode::{
    Bitrate, Codec, EncodedChunk, EncoderConfig, EncoderKind, Error, FallbackEncoder, Frame,
    FrameType, PixelFormat, RateControl, VideoEncoder,
};

/// libx265 (behind the emulated NVENC) at the default crf 23 on the synthetic pattern: the
/// same floor as the H.264 tests.
const PSNR_FLOOR_DB: f64 = 38.0;
const FRAMES: usize = 60;
const GOP: u32 = 24;
/// The frame a keyframe is forced on (not on the GOP's own IDRs at 0, 24, 48).
const FORCED: usize = 31;
/// Longest a child may take (x265 at 640x360 in a debug-built emulator; the slowest child
/// encodes well under a second per frame).
const CHILD_LIMIT: Duration = Duration::from_secs(240);
/// Longest one ffmpeg decode may take.
const DECODE_LIMIT: Duration = Duration::from_secs(60);

fn assert_child() {
    assert!(
        std::env::var_os("NVENC_EMU_REPORT").is_some(),
        "this test runs only in a child process against the emulated driver (see the parent tests)"
    );
}

fn config() -> EncoderConfig {
    EncoderConfig::new(640, 360)
        .with_codec(Codec::Hevc)
        .with_gop_size(GOP)
}

/// Runs the child half `test` against `emu` (bounded), asserts it passed, returns its output.
fn run_child(emu: &EmuDriver, test: &str) -> String {
    let mut cmd = emu.command(std::env::current_exe().expect("test binary"));
    cmd.args([
        "--ignored",
        "--exact",
        test,
        "--test-threads",
        "1",
        "--nocapture",
    ]);
    let (ok, text) = common::run_bounded(cmd, CHILD_LIMIT, test);
    assert!(ok, "{test} failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "{test}: expected 1 passed:\n{text}"
    );
    for line in text.lines().filter(|l| l.starts_with("lowest PSNR")) {
        eprintln!("{test}: {line}");
    }
    text
}

/// Decodes an Annex B HEVC stream with FFmpeg (`-f hevc`) into I420 frames, display order.
fn decode_hevc(stream: &[u8], config: &EncoderConfig) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().expect("temp dir");
    let (input, output) = (dir.path().join("s.hevc"), dir.path().join("s.yuv"));
    std::fs::write(&input, stream).expect("write stream");
    let mut cmd = common::ffmpeg();
    cmd.args(["-v", "error", "-f", "hevc", "-i"])
        .arg(&input)
        .args([
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(&output);
    let (ok, text) = common::run_bounded(cmd, DECODE_LIMIT, "ffmpeg -f hevc");
    assert!(ok, "ffmpeg could not decode the HEVC stream: {text}");
    let len = PixelFormat::I420
        .frame_len(config.resolution)
        .expect("valid size");
    let raw = std::fs::read(&output).expect("decoded frames");
    assert_eq!(raw.len() % len, 0, "not a whole number of frames");
    raw.chunks(len).map(<[u8]>::to_vec).collect()
}

/// HEVC NAL unit types (ITU-T H.265 Table 7-1) of an Annex B access unit, in order.
fn nal_types(au: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut i = 0;
    while i + 3 < au.len() {
        if au[i..i + 3] == [0, 0, 1] {
            types.push((au[i + 3] >> 1) & 0x3f);
            i += 3;
        } else {
            i += 1;
        }
    }
    types
}

const NAL_VPS: u8 = 32;
const NAL_SPS: u8 = 33;
const NAL_PPS: u8 = 34;

/// One chunk per frame, decodable with `ffmpeg -f hevc`, every frame at least
/// [`PSNR_FLOOR_DB`]; every keyframe an IDR access unit led by VPS, SPS and PPS.
fn assert_hevc(chunks: &[EncodedChunk], input: &[Vec<u8>], config: &EncoderConfig) {
    common::assert_accounting(chunks, input.len() as u64);
    for c in chunks.iter().filter(|c| c.keyframe) {
        let types = nal_types(&c.data);
        assert_eq!(
            types.get(..3),
            Some(&[NAL_VPS, NAL_SPS, NAL_PPS][..]),
            "frame {}: an IDR without VPS/SPS/PPS first: {types:?}",
            c.frame_index
        );
        // IDR_W_RADL (19) or IDR_N_LP (20).
        assert!(
            types.iter().any(|&t| t == 19 || t == 20),
            "frame {}: keyframe without an IDR slice: {types:?}",
            c.frame_index
        );
    }
    let decoded = decode_hevc(&common::concat(chunks), config);
    assert_eq!(decoded.len(), input.len(), "decoded frames");
    let mut lowest = f64::INFINITY;
    for (i, (want, got)) in input.iter().zip(&decoded).enumerate() {
        let p = common::psnr(&common::as_i420(config, want), got);
        lowest = lowest.min(p);
        assert!(p >= PSNR_FLOOR_DB, "frame {i}: PSNR {p:.2} dB");
    }
    eprintln!("lowest PSNR {lowest:.2} dB over {} frames", input.len());
}

/// Keyframes exactly at the GOP starts and at the forced frame (`forced`, if any).
fn assert_keyframes(chunks: &[EncodedChunk], forced: Option<usize>) {
    let mut keys: Vec<u64> = chunks
        .iter()
        .filter(|c| c.keyframe)
        .map(|c| c.frame_index)
        .collect();
    keys.sort_unstable();
    // After a forced IDR the GOP counts from it (NVENC's own behaviour with enablePTD).
    let mut want = Vec::new();
    let mut next = 0u64;
    for i in 0..FRAMES as u64 {
        if i == next || forced == Some(i as usize) {
            want.push(i);
            next = i + u64::from(GOP);
        }
    }
    assert_eq!(keys, want, "keyframes");
}

fn encode_host(encoder: &mut dyn VideoEncoder, input: &[Vec<u8>]) -> Vec<EncodedChunk> {
    let mut chunks = Vec::new();
    for (i, frame) in input.iter().enumerate() {
        let frame = if i == FORCED {
            Frame::new(frame).with_force_keyframe()
        } else {
            Frame::new(frame)
        };
        encoder.encode(frame, &mut chunks).expect("encode");
    }
    encoder.flush(&mut chunks).expect("flush");
    chunks
}

/// The `session_init` lines of the emulated driver.
fn session_inits(report: &Report) -> Vec<&String> {
    report
        .lines
        .iter()
        .filter(|l| l.starts_with("encode session_init"))
        .collect()
}

// ---- host frames, with and without B-frames ----

#[test]
#[ignore = "child half of hevc_from_host_frames_with_b_frames"]
fn child_host_bframes() {
    assert_child();
    // The initialize line (debug) goes to stderr, where the parent looks for it.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("nvencode=debug")
        .try_init();
    let config = config().with_bframes(Some(2));
    let input = common::clip(&config, FRAMES as u64);
    let mut encoder = NvencEncoder::new(&config).expect("open HEVC on the emulated NVENC");
    assert_eq!(encoder.bframes_in_use(), Some(2));
    let headers = encoder.sequence_headers().to_vec();
    assert_eq!(
        nal_types(&headers),
        [NAL_VPS, NAL_SPS, NAL_PPS],
        "out-of-band headers"
    );
    let chunks = encode_host(&mut encoder, &input);
    assert!(
        chunks.iter().any(|c| c.frame_type == FrameType::B),
        "no B-frames"
    );
    assert_keyframes(&chunks, Some(FORCED));
    assert_hevc(&chunks, &input, &config);
}

#[test]
fn hevc_from_host_frames_with_b_frames() {
    let emu = EmuDriver::new();
    let text = run_child(&emu, "child_host_bframes");
    assert!(
        text.contains("NVENC initialize: codec HEVC, preset"),
        "the initialize log line does not name HEVC:\n{text}"
    );
    let report = emu.report();
    report.assert_clean();
    let inits = session_inits(&report);
    assert_eq!(inits.len(), 1, "{inits:?}");
    // What the driver was given: HEVC, Main, the GOP as IDR period, VPS/SPS/PPS on every IDR,
    // two B-frames (frameIntervalP 3).
    for want in [
        "codec=hevc",
        "profile=main",
        &format!("idr_period={GOP}"),
        "repeat_sps_pps=1",
        "frame_interval_p=3",
    ] {
        assert!(inits[0].contains(want), "{want} not in {}", inits[0]);
    }
}

#[test]
#[ignore = "child half of hevc_with_zero_latency_has_no_b_frames_and_no_delay"]
fn child_zero_latency() {
    assert_child();
    let config = config().with_tune(Some(nvencode::Tune::Zerolatency));
    let input = common::clip(&config, FRAMES as u64);
    let mut encoder = NvencEncoder::new(&config).expect("open");
    assert_eq!(encoder.bframes_in_use(), Some(0));
    let mut chunks = Vec::new();
    for (i, frame) in input.iter().enumerate() {
        let frame = if i == FORCED {
            Frame::new(frame).with_force_keyframe()
        } else {
            Frame::new(frame)
        };
        encoder.encode(frame, &mut chunks).expect("encode");
        // Zero latency: each frame's bitstream comes out of the call that submitted it.
        assert_eq!(chunks.len(), i + 1, "frame {i} was not read back at once");
    }
    encoder.flush(&mut chunks).expect("flush");
    assert!(chunks.iter().all(|c| c.frame_type != FrameType::B));
    assert_keyframes(&chunks, Some(FORCED));
    assert_hevc(&chunks, &input, &config);
}

#[test]
fn hevc_with_zero_latency_has_no_b_frames_and_no_delay() {
    let emu = EmuDriver::new();
    run_child(&emu, "child_zero_latency");
    let report = emu.report();
    report.assert_clean();
    let inits = session_inits(&report);
    assert!(inits[0].contains("frame_interval_p=1"), "{}", inits[0]);
    assert!(inits[0].contains("codec=hevc"), "{}", inits[0]);
}

// ---- ring slots: pinned and device ----

fn pts_and_flags(i: usize) -> (i64, FrameFlags) {
    let flags = if i == FORCED {
        FrameFlags::FORCE_KEYFRAME
    } else {
        FrameFlags::NONE
    };
    (i as i64, flags)
}

#[test]
#[ignore = "child half of hevc_from_pinned_and_device_slots"]
fn child_slots() {
    assert_child();
    // Pinned host slots: the upload reads the slot directly.
    let config = config().with_bframes(Some(2));
    let input = common::clip(&config, FRAMES as u64);
    let len = input[0].len();
    let ctx = Context::open(0).expect("CUDA context");
    let mut encoder = NvencEncoder::new(&config).expect("open");
    let storage = PinnedStorage::new(&ctx, 16, len).expect("pinned ring");
    let (mut producer, mut consumer) = FrameRing::with_storage(storage).expect("ring");
    let mut chunks = Vec::new();
    for (i, frame) in input.iter().enumerate() {
        let mut slot = producer.try_reserve().expect("a free pinned slot");
        slot[..len].copy_from_slice(frame);
        let (pts, flags) = pts_and_flags(i);
        slot.commit(FrameMeta {
            len,
            pts,
            seq: i as u64,
            flags,
        })
        .expect("commit");
        let slot = SlotFrame::from(consumer.try_pop().expect("the frame just committed"));
        encoder
            .encode_slot(&slot, &mut chunks)
            .expect("encode_slot");
    }
    encoder.flush(&mut chunks).expect("flush");
    drop(encoder);
    assert_keyframes(&chunks, Some(FORCED));
    assert_hevc(&chunks, &input, &config);

    // Device slots (NV12): NVENC encodes the slot's own surface, no copy.
    let config = config.with_pixel_format(PixelFormat::Nv12);
    let input = common::clip(&config, FRAMES as u64);
    let (w, h) = (
        config.resolution.width as usize,
        config.resolution.height as usize,
    );
    let mut encoder = NvencEncoder::new(&config).expect("open");
    let storage = DeviceStorage::new(&ctx, 16, w, h * 3 / 2).expect("device ring");
    let (mut producer, mut consumer) = FrameRing::with_storage(storage).expect("ring");
    let mut chunks = Vec::new();
    for (i, frame) in input.iter().enumerate() {
        let slot = producer.try_reserve().expect("a free device slot");
        // SAFETY: the surface is the slot's and its stream the ring storage's own; `input`
        // outlives the ring (dropped at the end of this function, after the flush).
        unsafe {
            common::upload_to_device_slot(slot.surface(), slot.storage().stream(), frame, &config)
        };
        let (pts, flags) = pts_and_flags(i);
        slot.commit(FrameMeta {
            len: frame.len(),
            pts,
            seq: i as u64,
            flags,
        })
        .expect("commit");
        let lease = consumer.try_pop().expect("the frame just committed");
        encoder
            .encode_slot(&SlotFrame::from(lease), &mut chunks)
            .expect("encode_slot");
    }
    encoder.flush(&mut chunks).expect("flush");
    drop(encoder);
    assert_keyframes(&chunks, Some(FORCED));
    assert_hevc(&chunks, &input, &config);
}

#[test]
fn hevc_from_pinned_and_device_slots() {
    let emu = EmuDriver::new();
    run_child(&emu, "child_slots");
    let report = emu.report();
    report.assert_clean();
    let inits = session_inits(&report);
    assert_eq!(inits.len(), 2, "{inits:?}");
    assert!(inits.iter().all(|l| l.contains("codec=hevc")), "{inits:?}");
}

// ---- reconfiguration ----

#[test]
#[ignore = "child half of hevc_rate_control_is_reconfigured_in_place"]
// A bit-rate change within VBR: NVENC changes it in place (SUPPORT_DYN_BITRATE_CHANGE), and so
// does the emulator (x265_encoder_reconfig). A change of mode with B-frames in flight is one the
// emulator cannot reproduce in place (libx264 and libx265 cannot change their method), for
// either codec.
fn child_reconfigure() {
    assert_child();
    let config = config()
        .with_bframes(Some(2))
        .with_rate_control(RateControl::Vbr {
            bitrate: Bitrate::from_kbps(2_000),
            max_bitrate: Bitrate::from_kbps(4_000),
            vbv_buffer_bits: None,
        });
    let input = common::clip(&config, FRAMES as u64);
    let mut encoder = NvencEncoder::new(&config).expect("open");
    let mut chunks = Vec::new();
    for (i, frame) in input.iter().enumerate() {
        if i == FRAMES / 2 {
            encoder
                .reconfigure(RateControl::Vbr {
                    bitrate: Bitrate::from_kbps(3_000),
                    max_bitrate: Bitrate::from_kbps(6_000),
                    vbv_buffer_bits: None,
                })
                .expect("reconfigure with B-frames in flight (dynamic bit-rate change)");
        }
        encoder
            .encode(Frame::new(frame), &mut chunks)
            .expect("encode");
    }
    encoder.flush(&mut chunks).expect("flush");
    assert_hevc(&chunks, &input, &config);
}

#[test]
fn hevc_rate_control_is_reconfigured_in_place() {
    let emu = EmuDriver::new();
    run_child(&emu, "child_reconfigure");
    let report = emu.report();
    report.assert_clean();
    let reconf: Vec<&String> = report
        .lines
        .iter()
        .filter(|l| l.starts_with("encode session_reconfigure"))
        .collect();
    assert_eq!(reconf.len(), 1, "{reconf:?}");
    assert!(session_inits(&report)[0].contains("rc=abr:2000/4000"));
    assert!(
        reconf[0].contains("codec=hevc") && reconf[0].contains("rc=abr:3000/6000"),
        "{}",
        reconf[0]
    );
    // In place: no reset and no IDR asked for (the GPU reports SUPPORT_DYN_BITRATE_CHANGE).
    assert!(
        reconf[0].contains("reset=0") && reconf[0].contains("force_idr=0"),
        "{}",
        reconf[0]
    );
}

// ---- a GPU without HEVC ----

#[test]
#[ignore = "child half of a_gpu_without_hevc_refuses_hevc_and_still_encodes_h264"]
fn child_no_hevc() {
    assert_child();
    // The direct backend: a capability error naming HEVC's GUID.
    match NvencEncoder::new(&config()) {
        Err(Error::NvencCapability { cap, value, .. }) => {
            assert!(cap.contains("HEVC"), "{cap}");
            assert_eq!(value, 0);
        }
        other => panic!("expected a capability error, got {:?}", other.map(|_| ())),
    }
    // The same GPU still encodes H.264 through the direct backend.
    let h264 = EncoderConfig::new(320, 240);
    let input = common::clip(&h264, 10);
    let mut encoder = NvencEncoder::with_options(&h264, &NvencOptions::default()).expect("H.264");
    let mut chunks = Vec::new();
    for frame in &input {
        encoder.encode_frame(frame, &mut chunks).expect("encode");
    }
    encoder.flush(&mut chunks).expect("flush");
    assert_eq!(chunks.len(), 10);
    drop(encoder);
    // Through the fallback chain: HEVC goes past NVENC to a software HEVC encoder, and that
    // disables NVENC for HEVC only; H.264 is still NVENC's.
    let mut hevc = FallbackEncoder::new(&config(), None).expect("an HEVC encoder");
    assert_ne!(hevc.current_kind(), EncoderKind::Nvenc);
    assert!(
        hevc.rejected()
            .iter()
            .any(|(k, e)| *k == EncoderKind::Nvenc && matches!(**e, Error::NvencCapability { .. })),
        "{:?}",
        hevc.rejected()
    );
    let mut out = Vec::new();
    hevc.encode_frame(&common::clip(&config(), 1)[0], &mut out)
        .expect("software HEVC encodes");
    hevc.flush(&mut out).expect("flush");
    assert!(!nvencode::backends::is_disabled(
        EncoderKind::Nvenc,
        Codec::H264
    ));
    let h264_chain = FallbackEncoder::new(&h264, None).expect("H.264");
    assert_eq!(h264_chain.current_kind(), EncoderKind::Nvenc);
    println!("NO_HEVC_OK");
}

#[test]
fn a_gpu_without_hevc_refuses_hevc_and_still_encodes_h264() {
    let emu = EmuDriver::new().env("NVENC_EMU_CODECS", "h264");
    let text = run_child(&emu, "child_no_hevc");
    assert!(text.contains("NO_HEVC_OK"), "{text}");
    let report = emu.report();
    report.assert_clean();
    // No HEVC session was ever initialized.
    assert!(session_inits(&report)
        .iter()
        .all(|l| l.contains("codec=h264")));
}

// ---- lossless ----

#[test]
#[ignore = "child half of hevc_lossless_is_bit_exact"]
fn child_lossless() {
    assert_child();
    let config = config().with_bframes(Some(0));
    let options = NvencOptions::default().with_tuning(Some(nvencode::nvenc::NvencTuning::Lossless));
    let mut encoder = NvencEncoder::with_options(&config, &options).expect("lossless HEVC");
    let input = common::clip(&config, 8);
    let chunks = common::encode_all(&mut encoder, &input);
    common::assert_accounting(&chunks, 8);
    let decoded = decode_hevc(&common::concat(&chunks), &config);
    assert_eq!(decoded.len(), 8);
    for (i, (want, got)) in input.iter().zip(&decoded).enumerate() {
        let want = common::as_i420(&config, want);
        assert!(
            want == *got,
            "frame {i} is not bit-exact (PSNR {:.2} dB)",
            common::psnr(&want, got)
        );
    }
}

/// Lossless tuning with HEVC: constant QP 0 and the Main profile (no H.264 transform-bypass
/// flag, no High 4:4:4), checked against the HEVC lossless cap, and a bit-exact stream.
#[test]
fn hevc_lossless_is_bit_exact() {
    let emu = EmuDriver::new().lossless();
    run_child(&emu, "child_lossless");
    let report = emu.report();
    report.assert_clean();
    let inits = session_inits(&report);
    assert!(
        inits[0].contains("codec=hevc")
            && inits[0].contains("tuning=lossless")
            && inits[0].contains("profile=main")
            && inits[0].contains("rc=cqp:0"),
        "{}",
        inits[0]
    );
}

// ---- a rate-control mode change with B-frames in flight ----

#[test]
#[ignore = "child half of a_mode_change_with_b_frames_in_flight_is_accepted"]
fn child_mode_change() {
    assert_child();
    for codec in [Codec::H264, Codec::Hevc] {
        let config = config().with_codec(codec).with_bframes(Some(2));
        let input = common::clip(&config, FRAMES as u64);
        let mut encoder = NvencEncoder::new(&config).expect("open");
        let mut chunks = Vec::new();
        for (i, frame) in input.iter().enumerate() {
            if i == 17 {
                // Constant quality to VBR with frame 16 (a B-frame: anchors are every third
                // frame from 0) held for reordering: a dynamic mode change
                // (SUPPORT_DYN_RCMODE_CHANGE), no reset.
                assert!(encoder.in_flight() > 0, "{codec}: nothing in flight");
                encoder
                    .reconfigure(RateControl::Vbr {
                        bitrate: Bitrate::from_kbps(3_000),
                        max_bitrate: Bitrate::from_kbps(6_000),
                        vbv_buffer_bits: None,
                    })
                    .unwrap_or_else(|e| panic!("{codec}: mode change: {e}"));
            }
            encoder
                .encode(Frame::new(frame), &mut chunks)
                .expect("encode");
        }
        encoder.flush(&mut chunks).expect("flush");
        match codec {
            Codec::Hevc => assert_hevc(&chunks, &input, &config),
            _ => {
                common::assert_accounting(&chunks, FRAMES as u64);
                let decoded = common::decode_h264(&common::concat(&chunks), config.resolution);
                assert_eq!(decoded.len(), FRAMES);
                for (i, (want, got)) in input.iter().zip(&decoded).enumerate() {
                    let p = common::psnr(want, got);
                    assert!(p >= PSNR_FLOOR_DB, "H.264 frame {i}: PSNR {p:.2} dB");
                }
            }
        }
    }
}

/// A GPU that reports `SUPPORT_DYN_RCMODE_CHANGE` takes a change of rate-control mode while
/// B-frames wait for their anchor (no reset, no IDR asked for); the emulator used to record it
/// as a violation ("encoder reset while B-frames are buffered"), for either codec. Both streams
/// decode to every frame.
#[test]
fn a_mode_change_with_b_frames_in_flight_is_accepted() {
    let emu = EmuDriver::new();
    run_child(&emu, "child_mode_change");
    let report = emu.report();
    report.assert_clean();
    let reconf: Vec<&String> = report
        .lines
        .iter()
        .filter(|l| l.starts_with("encode session_reconfigure"))
        .collect();
    assert_eq!(reconf.len(), 2, "{reconf:?}");
    assert!(reconf[0].contains("codec=h264") && reconf[1].contains("codec=hevc"));
    assert!(reconf
        .iter()
        .all(|l| l.contains("rc=abr:3000/6000") && l.contains("reset=0")));
}

fn open_nvenc_hevc(config: &EncoderConfig) -> Result<Box<dyn VideoEncoder>, Error> {
    assert_child();
    Ok(Box::new(NvencEncoder::new(config)?))
}

contract_tests!(
    mod contract_hevc,
    Hevc,
    open_nvenc_hevc,
    #[ignore = "child half: runs against the emulated driver from hevc_contract_suite"]
);

/// The HEVC contract suite against the emulated NVENC, in one child; the report stays clean.
#[test]
fn hevc_contract_suite() {
    let emu = EmuDriver::new();
    let mut cmd = emu.command(std::env::current_exe().expect("test binary"));
    cmd.args(["--ignored", "--test-threads", "1", "contract_hevc::"]);
    let (ok, text) = common::run_bounded(cmd, Duration::from_secs(900), "HEVC contract suite");
    assert!(ok, "{text}");
    assert!(text.contains("10 passed"), "{text}");
    emu.report().assert_clean();
}
