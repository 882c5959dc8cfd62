//! Frames that sit in a ring slot, encoded from the slot (`VideoEncoder::encode_slot`) on the
//! emulated NVENC under `Auto` (the fallback chain), and the host copies of a frame's bytes on
//! that path counted, before (frames given as `&[u8]`) and after (frames in pinned slots).
//!
//! How copies are counted: the crate counts each host copy of a frame's bytes it makes
//! (`nvencode::metrics::host_frame_copies`: the fallback chain's held copy and NVENC's staging
//! copy), and the CUDA emulator counts the upload calls (`cuMemcpy2DAsync`, one per plane). The
//! caller's own copy into a slot is the test's, counted by the test.
//!
//! Child halves (`#[ignore]`) run only in a child process against the emulated driver pair.

mod common;

use nvenc_emu_harness::EmuDriver;
use nvencode::cuda::Context;
use nvencode::encoder::SlotFrame;
use nvencode::metrics::host_frame_copies;
use nvencode::ring_buffer::{FrameFlags, FrameMeta, FrameRing, PinnedStorage};
use nvencode::{EncoderConfig, EncoderKind, FallbackEncoder, VideoEncoder};

const FRAMES: u64 = 30;
/// As in `nvenc_emulated.rs`: the emulated NVENC encodes with libx264 at crf 18.
const PSNR_FLOOR_DB: f64 = 38.0;
/// The frame whose slot metadata asks for a keyframe.
const FORCED: usize = 10;

fn assert_child() {
    assert!(
        std::env::var_os("NVENC_EMU_REPORT").is_some(),
        "this test runs only in a child process against the emulated driver (see the parent tests)"
    );
}

fn config() -> EncoderConfig {
    EncoderConfig::new(320, 240)
        .with_preset(nvencode::Preset::Veryfast)
        .with_crf(18.0)
        .with_bframes(Some(2))
}

/// Slots of the test's ring: every frame the chain holds for a replay keeps its slot until
/// delivered, so the ring must cover the deepest delay of any encoder of the chain (x264 at
/// `veryfast` holds its lookahead and B-frames: more than NVENC's 7 frames in flight here).
const SLOTS: usize = 64;

/// Encodes `input` through `encoder` from slots of a pinned ring of [`SLOTS`] slots, with pts `2 * i`
/// and a keyframe asked for at [`FORCED`] through the slot's flags; returns the chunks and how
/// many host copies the test itself made (one per frame, into the slot).
fn encode_from_slots(
    encoder: &mut dyn VideoEncoder,
    input: &[Vec<u8>],
) -> (Vec<nvencode::EncodedChunk>, u64) {
    let len = input[0].len();
    let ctx = Context::open(0).expect("CUDA context");
    let storage = PinnedStorage::new(&ctx, SLOTS, len).expect("pinned ring");
    let (mut producer, mut consumer) = FrameRing::with_storage(storage).expect("ring");
    let mut chunks = Vec::new();
    let mut caller_copies = 0;
    for (i, frame) in input.iter().enumerate() {
        let mut slot = producer
            .try_reserve()
            .expect("a free slot: the encoders must not hold more leases than the ring has");
        slot[..len].copy_from_slice(frame);
        caller_copies += 1;
        let flags = if i == FORCED {
            FrameFlags::FORCE_KEYFRAME
        } else {
            FrameFlags::NONE
        };
        slot.commit(FrameMeta {
            len,
            pts: 2 * i as i64,
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
    (chunks, caller_copies)
}

fn assert_decodes(chunks: &[nvencode::EncodedChunk], input: &[Vec<u8>], config: &EncoderConfig) {
    // One chunk per frame, each frame once, dts increasing and never after pts (the pts are
    // checked by the callers: automatic, or the slots' own).
    assert_eq!(chunks.len(), input.len(), "one chunk per frame");
    let mut seen: Vec<u64> = chunks.iter().map(|c| c.frame_index).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..input.len() as u64).collect::<Vec<_>>());
    for c in chunks {
        assert!(c.dts <= c.pts, "dts {} after pts {}", c.dts, c.pts);
    }
    for pair in chunks.windows(2) {
        assert!(pair[0].dts < pair[1].dts, "dts must strictly increase");
    }
    assert!(chunks[0].keyframe, "the stream starts with a keyframe");
    let decoded = common::decode_h264(&common::concat(chunks), config.resolution);
    assert_eq!(decoded.len(), input.len());
    for (i, (want, got)) in input.iter().zip(&decoded).enumerate() {
        let p = common::psnr(want, got);
        assert!(p >= PSNR_FLOOR_DB, "frame {i}: PSNR {p:.2} dB");
    }
}

/// Each chunk carries the pts its slot's metadata gave, and the flagged frame is an IDR.
fn assert_slot_meta(chunks: &[nvencode::EncodedChunk]) {
    for chunk in chunks {
        assert_eq!(chunk.pts, 2 * chunk.frame_index as i64, "{chunk:?}");
    }
    let forced = chunks
        .iter()
        .find(|c| c.frame_index == FORCED as u64)
        .expect("the forced frame's chunk");
    assert!(forced.keyframe, "frame {FORCED} was flagged FORCE_KEYFRAME");
}

#[test]
#[ignore = "child half of auto_nvenc_from_pinned_slots_makes_two_host_copies"]
fn child_copy_count() {
    assert_child();
    let config = config();
    let input = common::clip(&config, FRAMES);

    // Before: frames given as byte slices. The chain holds a copy of each for a replay, NVENC
    // copies each into its pinned staging, and the upload is the third copy.
    let mut encoder = FallbackEncoder::new(&config, None).expect("open");
    assert_eq!(encoder.current_kind(), EncoderKind::Nvenc);
    let before = host_frame_copies();
    let chunks = common::encode_all(&mut encoder, &input);
    let copies = host_frame_copies() - before;
    common::assert_accounting(&chunks, FRAMES);
    assert_decodes(&chunks, &input, &config);
    drop(encoder);
    println!("COPIES bytes {copies}");
    assert_eq!(copies, 2 * FRAMES, "held copy + staging copy per frame");

    // After: frames in pinned slots, through `Auto` as a user opens it (a boxed chain). The
    // chain holds the lease, NVENC uploads from the slot.
    let mut encoder = nvencode::open_encoder(nvencode::EncoderChoice::Auto, &config).expect("open");
    assert_eq!(encoder.kind(), EncoderKind::Nvenc);
    let before = host_frame_copies();
    let (chunks, caller_copies) = encode_from_slots(&mut encoder, &input);
    let copies = host_frame_copies() - before;
    assert_eq!(encoder.kind(), EncoderKind::Nvenc, "no failover");
    assert_decodes(&chunks, &input, &config);
    assert_slot_meta(&chunks);
    println!("COPIES slots {copies} caller {caller_copies}");
    assert_eq!(
        copies, 0,
        "no host copy inside the crate from a pinned slot"
    );
    assert_eq!(caller_copies, FRAMES);
}

#[test]
fn auto_nvenc_from_pinned_slots_makes_two_host_copies() {
    let emu = EmuDriver::new();
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = emu.command(exe);
    cmd.args(["--ignored", "--exact", "child_copy_count", "--nocapture"]);
    let out = common::run_child_tests(cmd, 1, "child_copy_count");
    assert!(
        out.contains(&format!("COPIES bytes {}", 2 * FRAMES)),
        "{out}"
    );
    assert!(out.contains("COPIES slots 0 caller"), "{out}");
    let report = emu.report();
    report.assert_clean();
    let cuda = report
        .calls
        .get("cuda")
        .expect("the CUDA emulator's call counts");
    let calls = |entry: &str| cuda.get(entry).copied().unwrap_or(0);
    // I420: one upload per plane, three per frame, in both runs; nothing else copies host
    // bytes to the device. So per frame: before 3 host copies (held, staging, upload), after 2
    // (the caller's into the slot, the upload).
    assert_eq!(calls("cuMemcpy2DAsync_v2"), 2 * 3 * FRAMES, "{cuda:?}");
    for entry in ["cuMemcpyHtoD_v2", "cuMemcpyHtoDAsync_v2", "cuMemcpy2D_v2"] {
        assert_eq!(calls(entry), 0, "{entry}: {cuda:?}");
    }
}

#[test]
#[ignore = "child half of slot_leases_are_replayed_after_a_failover"]
fn child_slot_failover() {
    assert_child();
    let config = config();
    let input = common::clip(&config, 2 * FRAMES);
    let mut encoder = FallbackEncoder::new(&config, None).expect("open");
    assert_eq!(encoder.current_kind(), EncoderKind::Nvenc);
    let before = host_frame_copies();
    let (chunks, _) = encode_from_slots(&mut encoder, &input);
    assert_eq!(encoder.switches(), 1);
    assert_eq!(encoder.current_kind(), EncoderKind::X264);
    assert_eq!(
        host_frame_copies() - before,
        0,
        "held frames are slot leases, not copies"
    );
    assert_decodes(&chunks, &input, &config);
    assert_slot_meta(&chunks);
}

/// NVENC fails on its 25th picture: the chain replays the frames it holds, from their slot
/// leases, on x264, and nothing is lost (the ring has [`SLOTS`] slots: held leases must come
/// back to it).
#[test]
fn slot_leases_are_replayed_after_a_failover() {
    // NV_ENC_ERR_DEVICE_NOT_EXIST (5).
    let emu = EmuDriver::new().fault("nvEncEncodePicture", 25, 5);
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = emu.command(exe);
    cmd.args(["--ignored", "--exact", "child_slot_failover", "--nocapture"]);
    common::run_child_tests(cmd, 1, "child_slot_failover");
    emu.report().assert_clean();
}
