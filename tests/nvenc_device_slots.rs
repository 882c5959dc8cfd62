//! Frames in CUDA device ring slots (`DeviceStorage`), written by a CUDA copy on the storage's
//! stream and committed, encoded by the emulated NVENC straight from the slots' surfaces
//! (`VideoEncoder::encode_slot` with `SlotFrame::Device`): no host copy inside the crate, each
//! slot registered with NVENC once; a slot of the wrong size is a typed rejection; after a
//! failover to x264 the held device slots are downloaded (one counted host copy per frame x264
//! encodes) and every frame still comes out.
//!
//! How copies are counted: the crate counts each host copy of a frame's bytes it makes
//! (`nvencode::metrics::host_frame_copies`: the fallback chain's held copy, NVENC's staging copy, a
//! device slot's download), and the CUDA emulator counts driver calls (every
//! `cuMemcpy2DAsync`, whoever queued it; the emulated NVENC reads each input surface with one
//! `cuMemcpyDtoH`, where a real engine reads video memory itself).
//!
//! Child halves (`#[ignore]`) run only in a child process against the emulated driver pair.

mod common;

use nvenc_emu_harness::EmuDriver;
use nvencode::cuda::Context;
use nvencode::encoder::SlotFrame;
use nvencode::metrics::host_frame_copies;
use nvencode::nvenc::NvencEncoder;
use nvencode::ring_buffer::{
    DeviceStorage, FrameFlags, FrameMeta, FrameRing, PinnedStorage, WriteSlot,
};
use nvencode::{EncodedChunk, EncoderConfig, EncoderKind, Error, FallbackEncoder, PixelFormat};
use nvencode::{FrameType, VideoEncoder};

const FRAMES: u64 = 30;
/// As in `nvenc_emulated.rs`: the emulated NVENC encodes with libx264 at crf 18.
const PSNR_FLOOR_DB: f64 = 38.0;
/// Slots of the device rings of the direct-NVENC runs: more than NVENC keeps in flight here
/// (B-frames, output delay), fewer than the frames, so every slot is used more than once.
const SLOTS: usize = 16;

fn assert_child() {
    assert!(
        std::env::var_os("NVENC_EMU_REPORT").is_some(),
        "this test runs only in a child process against the emulated driver (see the parent tests)"
    );
}

fn config(format: PixelFormat) -> EncoderConfig {
    EncoderConfig::new(320, 240)
        .with_pixel_format(format)
        .with_preset(nvencode::Preset::Veryfast)
        .with_crf(18.0)
        .with_bframes(Some(2))
}

/// A device ring whose slots hold one frame of `config` (`width` bytes by `height * 3 / 2`
/// rows, as `SlotFrame::Device` requires).
fn device_ring(
    config: &EncoderConfig,
    slots: usize,
) -> (
    nvencode::ring_buffer::Producer<DeviceStorage>,
    nvencode::ring_buffer::Consumer<DeviceStorage>,
) {
    let ctx = Context::open(0).expect("CUDA context");
    let (w, h) = (
        config.resolution.width as usize,
        config.resolution.height as usize,
    );
    let storage = DeviceStorage::new(&ctx, slots, w, h * 3 / 2).expect("device ring");
    FrameRing::with_storage(storage).expect("ring")
}

/// Queues the upload of `frame` into a reserved device slot (see
/// `common::upload_to_device_slot`).
fn upload(slot: &WriteSlot<'_, DeviceStorage>, frame: &[u8], config: &EncoderConfig) {
    // SAFETY: the surface is the slot's, its stream the ring storage's own; every caller keeps
    // `frame` (one of its input frames) alive and unchanged until the ring is gone.
    unsafe { common::upload_to_device_slot(slot.surface(), slot.storage().stream(), frame, config) }
}

/// Writes `input` into device slots of a ring of `slots` slots (pts = frame number) and encodes
/// each from its slot; returns the chunks. `input` must outlive nothing here: the ring is
/// dropped before this returns.
fn encode_device_slots(
    encoder: &mut dyn VideoEncoder,
    config: &EncoderConfig,
    input: &[Vec<u8>],
    slots: usize,
) -> Vec<EncodedChunk> {
    let (mut producer, mut consumer) = device_ring(config, slots);
    let mut chunks = Vec::new();
    for (i, frame) in input.iter().enumerate() {
        let slot = producer
            .try_reserve()
            .expect("a free slot: the encoder must give back the slots it has read back");
        upload(&slot, frame, config);
        slot.commit(FrameMeta {
            len: frame.len(),
            pts: i as i64,
            seq: i as u64,
            flags: FrameFlags::NONE,
        })
        .expect("commit");
        let lease = consumer.try_pop().expect("the frame just committed");
        encoder
            .encode_slot(&SlotFrame::from(lease), &mut chunks)
            .expect("encode_slot");
    }
    encoder.flush(&mut chunks).expect("flush");
    chunks
}

fn assert_decodes(chunks: &[EncodedChunk], input: &[Vec<u8>], config: &EncoderConfig) {
    common::assert_accounting(chunks, input.len() as u64);
    let decoded = common::decode_h264(&common::concat(chunks), config.resolution);
    assert_eq!(decoded.len(), input.len(), "decoded frames");
    for (i, (want, got)) in input.iter().zip(&decoded).enumerate() {
        let p = common::psnr(&common::as_i420(config, want), got);
        assert!(
            p >= PSNR_FLOOR_DB,
            "{} frame {i}: PSNR {p:.2} dB",
            config.pixel_format
        );
    }
}

#[test]
#[ignore = "child half of device_slots_are_encoded_with_no_host_copy"]
fn child_device_slots() {
    assert_child();
    for format in [PixelFormat::Nv12, PixelFormat::I420] {
        let config = config(format);
        let input = common::clip(&config, FRAMES);
        let mut encoder = NvencEncoder::new(&config).expect("open");
        let before = host_frame_copies();
        let chunks = encode_device_slots(&mut encoder, &config, &input, SLOTS);
        let copies = host_frame_copies() - before;
        assert!(
            chunks.iter().any(|c| c.frame_type == FrameType::B),
            "no B-frames: the slots were not kept in flight"
        );
        drop(encoder);
        assert_decodes(&chunks, &input, &config);
        println!("COPIES device {format} {copies}");
        assert_eq!(copies, 0, "no host copy of a frame from a device slot");
    }

    // Pinned slots, side by side: NVENC uploads from the slot itself (the test's own copy into
    // the slot is not the crate's).
    let config = config(PixelFormat::Nv12);
    let input = common::clip(&config, FRAMES);
    let mut encoder = NvencEncoder::new(&config).expect("open");
    let ctx = Context::open(0).expect("CUDA context");
    let storage = PinnedStorage::new(&ctx, SLOTS, input[0].len()).expect("pinned ring");
    let (mut producer, mut consumer) = FrameRing::with_storage(storage).expect("ring");
    let before = host_frame_copies();
    let mut chunks = Vec::new();
    for (i, frame) in input.iter().enumerate() {
        let mut slot = producer.try_reserve().expect("a free slot");
        slot[..frame.len()].copy_from_slice(frame);
        slot.commit(FrameMeta {
            len: frame.len(),
            pts: i as i64,
            seq: i as u64,
            flags: FrameFlags::NONE,
        })
        .expect("commit");
        let lease = consumer.try_pop().expect("the frame just committed");
        encoder
            .encode_slot(&SlotFrame::from(lease), &mut chunks)
            .expect("encode_slot");
    }
    encoder.flush(&mut chunks).expect("flush");
    let copies = host_frame_copies() - before;
    assert_decodes(&chunks, &input, &config);
    println!("COPIES pinned {copies}");
    assert_eq!(copies, 0, "no host copy of a frame from a pinned slot");
}

/// Parent: NV12 and I420 from device slots, then NV12 from pinned slots, each 30 frames, on the
/// emulated driver pair.
#[test]
fn device_slots_are_encoded_with_no_host_copy() {
    let emu = EmuDriver::new();
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = emu.command(exe);
    cmd.args(["--ignored", "--exact", "child_device_slots", "--nocapture"]);
    let out = common::run_child_tests(cmd, 1, "child_device_slots");
    for line in [
        "COPIES device nv12 0",
        "COPIES device yuv420p 0",
        "COPIES pinned 0",
    ] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }
    let report = emu.report();
    report.assert_clean();
    let count = |lib: &str, entry: &str| {
        report
            .calls
            .get(lib)
            .and_then(|calls| calls.get(entry))
            .copied()
            .unwrap_or(0)
    };
    let frames = FRAMES;
    // Every 2D copy is the test's own upload into a device slot (one per NV12 frame, three per
    // I420 frame) or NVENC's upload from a pinned slot (one per NV12 frame): the backend copies
    // no device frame anywhere.
    assert_eq!(
        count("cuda", "cuMemcpy2DAsync_v2"),
        frames + 3 * frames + frames,
        "{:?}",
        report.calls
    );
    // The emulated NVENC reads each picture's input once; nothing else reads device memory
    // back, and nothing copies device to device.
    assert_eq!(
        count("cuda", "cuMemcpyDtoH_v2"),
        3 * frames,
        "{:?}",
        report.calls
    );
    for entry in [
        "cuMemcpyDtoD_v2",
        "cuMemcpyDtoDAsync_v2",
        "cuMemcpyHtoD_v2",
        "cuMemcpyHtoDAsync_v2",
        "cuMemcpyDtoHAsync_v2",
        "cuMemcpy2D_v2",
    ] {
        assert_eq!(count("cuda", entry), 0, "{entry}: {:?}", report.calls);
    }
    // NVENC is ordered after each device slot's stream without a host wait.
    assert_eq!(
        count("cuda", "cuStreamWaitEvent"),
        2 * frames,
        "{:?}",
        report.calls
    );
    // Every picture is mapped once; each device slot is registered once however often it is
    // used (the 16 slots of each ring carry 30 frames), besides each session's own surfaces
    // (one output buffer per own surface, so those are the bitstream buffers created).
    assert_eq!(
        count("encode", "nvEncMapInputResource"),
        3 * frames,
        "{:?}",
        report.calls
    );
    assert_eq!(
        count("encode", "nvEncRegisterResource"),
        count("encode", "nvEncCreateBitstreamBuffer") + 2 * SLOTS as u64,
        "{:?}",
        report.calls
    );
    assert_eq!(
        count("encode", "nvEncUnregisterResource"),
        count("encode", "nvEncRegisterResource"),
        "every registration undone at teardown: {:?}",
        report.calls
    );
}

#[test]
#[ignore = "child half of a_device_slot_of_the_wrong_size_is_rejected"]
fn child_wrong_size() {
    assert_child();
    let config = config(PixelFormat::Nv12);
    let input = common::clip(&config, 1);
    let ctx = Context::open(0).expect("CUDA context");
    let mut encoder = NvencEncoder::new(&config).expect("open");
    let mut chain = FallbackEncoder::new(&config, None).expect("open");
    assert_eq!(chain.current_kind(), EncoderKind::Nvenc);
    let mut out = Vec::new();
    // Too few rows (a ring for a 320x80 frame), then too narrow (a ring for 160x240).
    for (width, rows, actual) in [(320, 120, 320 * 120), (160, 360, 160 * 360)] {
        let storage = DeviceStorage::new(&ctx, 2, width, rows).expect("device ring");
        let (mut producer, mut consumer) = FrameRing::with_storage(storage).expect("ring");
        producer
            .try_reserve()
            .expect("slot")
            .commit(FrameMeta::default())
            .expect("commit");
        let slot = SlotFrame::from(consumer.try_pop().expect("committed"));
        for (name, result) in [
            ("nvenc", encoder.encode_slot(&slot, &mut out)),
            ("chain", chain.encode_slot(&slot, &mut out)),
        ] {
            match result {
                Err(Error::FrameSize {
                    frame_index: 0,
                    expected,
                    actual: got,
                    ..
                }) => {
                    assert_eq!(expected, 320 * 240 * 3 / 2, "{name}");
                    assert_eq!(got, actual, "{name}");
                }
                other => panic!("{name}: {width}x{rows} slot: expected FrameSize, got {other:?}"),
            }
        }
    }
    assert_eq!(
        chain.switches(),
        0,
        "a rejected frame is no encoder failure"
    );
    // Both are still usable: a slot of the right size is encoded.
    for encoder in [&mut encoder as &mut dyn VideoEncoder, &mut chain] {
        let chunks = encode_device_slots(encoder, &config, &input, 2);
        assert_decodes(&chunks, &input, &config);
    }
}

#[test]
fn a_device_slot_of_the_wrong_size_is_rejected() {
    let emu = EmuDriver::new();
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = emu.command(exe);
    cmd.args(["--ignored", "--exact", "child_wrong_size", "--nocapture"]);
    common::run_child_tests(cmd, 1, "child_wrong_size");
    emu.report().assert_clean();
}

/// Slots of the failover run's ring: the chain holds every frame's lease until delivered, and
/// x264 at `veryfast` holds its lookahead and B-frames (as in `nvenc_slots.rs`).
const FAILOVER_SLOTS: usize = 64;
/// NVENC fails on this picture (`NV_ENC_ERR_DEVICE_NOT_EXIST`).
const FAILING_PICTURE: u64 = 25;

#[test]
#[ignore = "child half of device_slots_are_replayed_on_x264_after_a_failover"]
fn child_device_failover() {
    assert_child();
    let config = config(PixelFormat::I420);
    let input = common::clip(&config, 2 * FRAMES);
    let mut encoder = FallbackEncoder::new(&config, None).expect("open");
    assert_eq!(encoder.current_kind(), EncoderKind::Nvenc);
    let before = host_frame_copies();
    let chunks = encode_device_slots(&mut encoder, &config, &input, FAILOVER_SLOTS);
    let copies = host_frame_copies() - before;
    assert_eq!(encoder.switches(), 1);
    assert_eq!(encoder.current_kind(), EncoderKind::X264);
    assert_decodes(&chunks, &input, &config);
    println!("COPIES failover {copies}");
    // One download per frame x264 encoded: every frame NVENC had not delivered when its
    // picture 25 failed (held as leases, not copies), and every later frame. At most 24
    // pictures went through NVENC.
    let frames = 2 * FRAMES;
    assert!(
        (frames - (FAILING_PICTURE - 1)..=frames).contains(&copies),
        "{copies} host copies for {frames} frames"
    );

    // x264 on its own (the default `encode_slot`): exactly one download per frame.
    let mut x264 =
        nvencode::open_encoder(nvencode::EncoderChoice::Only(EncoderKind::X264), &config)
            .expect("open x264");
    let input = common::clip(&config, FRAMES);
    let before = host_frame_copies();
    let chunks = encode_device_slots(&mut x264, &config, &input, FAILOVER_SLOTS);
    let copies = host_frame_copies() - before;
    assert_decodes(&chunks, &input, &config);
    println!("COPIES x264 {copies}");
    assert_eq!(copies, FRAMES, "one download per frame");
}

#[test]
fn device_slots_are_replayed_on_x264_after_a_failover() {
    // NV_ENC_ERR_DEVICE_NOT_EXIST (5).
    let emu = EmuDriver::new().fault("nvEncEncodePicture", FAILING_PICTURE, 5);
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = emu.command(exe);
    cmd.args([
        "--ignored",
        "--exact",
        "child_device_failover",
        "--nocapture",
    ]);
    let out = common::run_child_tests(cmd, 1, "child_device_failover");
    assert!(out.contains(&format!("COPIES x264 {FRAMES}")), "{out}");
    for line in out.lines().filter(|l| l.starts_with("COPIES")) {
        eprintln!("{line}");
    }
    let report = emu.report();
    assert!(report
        .faults
        .iter()
        .any(|f| f.contains("nvEncEncodePicture")));
    report.assert_clean();
}

/// A device ring of more slots than NVENC keeps registered at once (at least 64).
const MANY_SLOTS: usize = 80;
const MANY_FRAMES: u64 = 100;

#[test]
#[ignore = "child half of a_ring_larger_than_the_registration_cache_is_encoded"]
fn child_many_slots() {
    assert_child();
    let config = config(PixelFormat::Nv12);
    let input = common::clip(&config, MANY_FRAMES);
    let mut encoder = NvencEncoder::new(&config).expect("open");
    let chunks = encode_device_slots(&mut encoder, &config, &input, MANY_SLOTS);
    drop(encoder);
    assert_decodes(&chunks, &input, &config);
}

/// The registration cache is bounded: a ring of 80 slots used in turn by 100 frames misses the
/// cache of 64 on every frame, so each frame registers its slot, evicting the registration
/// used least recently (unregistered at once), and the session still ends with nothing left
/// registered.
#[test]
fn a_ring_larger_than_the_registration_cache_is_encoded() {
    let emu = EmuDriver::new();
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = emu.command(exe);
    cmd.args(["--ignored", "--exact", "child_many_slots", "--nocapture"]);
    common::run_child_tests(cmd, 1, "child_many_slots");
    let report = emu.report();
    report.assert_clean();
    let count = |entry: &str| {
        report
            .calls
            .get("encode")
            .and_then(|calls| calls.get(entry))
            .copied()
            .unwrap_or(0)
    };
    // Own surfaces (one output buffer each), plus one registration per frame: more than the
    // ring's 80 slots, so slots were registered again after being evicted.
    let own = count("nvEncCreateBitstreamBuffer");
    assert_eq!(
        count("nvEncRegisterResource"),
        own + MANY_FRAMES,
        "{:?}",
        report.calls
    );
    assert_eq!(
        count("nvEncUnregisterResource"),
        count("nvEncRegisterResource"),
        "{:?}",
        report.calls
    );
}

#[test]
#[ignore = "child half of a_device_slot_of_another_context_is_rejected"]
fn child_other_context() {
    assert_child();
    let config = config(PixelFormat::Nv12);
    let input = common::clip(&config, 1);
    let (w, h) = (
        config.resolution.width as usize,
        config.resolution.height as usize,
    );
    // The encoders are on device 0's primary context (named: placement would put the second on
    // device 1); the ring on device 1's.
    let on_0 = nvencode::nvenc::NvencOptions::default().with_device(0);
    let mut encoder = NvencEncoder::with_options(&config, &on_0).expect("open");
    let chain = nvencode::fallback::chain_with(None, &on_0).expect("a chain");
    let mut chain = FallbackEncoder::with_chain(&config, chain).expect("open");
    assert_eq!(chain.current_kind(), EncoderKind::Nvenc);
    let mut x264 =
        nvencode::open_encoder(nvencode::EncoderChoice::Only(EncoderKind::X264), &config)
            .expect("open x264");
    let storage = DeviceStorage::on_device(1, 2, w, h * 3 / 2).expect("a ring on device 1");
    let (mut producer, mut consumer) = FrameRing::with_storage(storage).expect("ring");
    let slot = producer.try_reserve().expect("slot");
    upload(&slot, &input[0], &config);
    slot.commit(FrameMeta {
        len: input[0].len(),
        ..FrameMeta::default()
    })
    .expect("commit");
    let slot = SlotFrame::from(consumer.try_pop().expect("committed"));
    let mut out = Vec::new();
    for (name, result) in [
        ("nvenc", encoder.encode_slot(&slot, &mut out)),
        ("chain", chain.encode_slot(&slot, &mut out)),
    ] {
        assert!(
            matches!(result, Err(Error::Unsupported { backend: EncoderKind::Nvenc, feature })
                if feature.contains("another CUDA context")),
            "{name}: {result:?}"
        );
    }
    assert_eq!(
        chain.switches(),
        0,
        "a rejected frame is no encoder failure"
    );
    // x264 downloads the slot on its own context's stream: that works from any device.
    x264.encode_slot(&slot, &mut out)
        .expect("x264 from a device-1 slot");
    x264.flush(&mut out).expect("flush");
    assert_decodes(&out, &input, &config);
    // The NVENC encoders are still usable.
    drop(slot);
    drop((producer, consumer));
    for encoder in [&mut encoder as &mut dyn VideoEncoder, &mut chain] {
        let chunks = encode_device_slots(encoder, &config, &input, 2);
        assert_decodes(&chunks, &input, &config);
    }
}

/// Two emulated devices: a device slot of device 1's context given to NVENC on device 0 is
/// rejected with a typed error, the encoder (and the chain around it) stays usable, and x264
/// encodes the same slot (downloaded on the slot's own stream).
#[test]
fn a_device_slot_of_another_context_is_rejected() {
    let emu = EmuDriver::new().cuda_devices(2);
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = emu.command(exe);
    cmd.args(["--ignored", "--exact", "child_other_context", "--nocapture"]);
    common::run_child_tests(cmd, 1, "child_other_context");
    emu.report().assert_clean();
}

// ---------------------------------------------------------------------------------------------
// Device slots filled from the producer's own cudarc allocations, with no `unsafe` anywhere:
// `DeviceFrameSlot::copy_from_device` (through the pipeline stage) and
// `WriteSlot::copy_from_device` (ring and encoder driven by hand).

/// Bytes between source rows in the producer's allocations: wider than the frame, so that the
/// copies must honour the source pitch (and, for I420, the half pitch of its chroma rows).
const SOURCE_PITCH: usize = 384;

/// `frame` (tightly packed, `config`'s format) laid out at `pitch`: the luma rows (and NV12's
/// chroma rows) `pitch` apart, I420's chroma rows `pitch / 2` apart; padding bytes are 0xEE so
/// that a copy which ignored the pitch would show in the picture.
fn at_pitch(config: &EncoderConfig, frame: &[u8], pitch: usize) -> Vec<u8> {
    let (w, h) = (
        config.resolution.width as usize,
        config.resolution.height as usize,
    );
    // (source offset, width, rows, destination pitch)
    let planes = match config.pixel_format {
        PixelFormat::Nv12 => vec![(0, w, h * 3 / 2, pitch)],
        _ => vec![
            (0, w, h, pitch),
            (w * h, w / 2, h / 2, pitch / 2),
            (w * h + (w / 2) * (h / 2), w / 2, h / 2, pitch / 2),
        ],
    };
    let mut out = Vec::new();
    for (offset, width, rows, dst_pitch) in planes {
        for row in 0..rows {
            let start = offset + row * width;
            out.extend_from_slice(&frame[start..start + width]);
            out.resize(out.len() + dst_pitch - width, 0xEE);
        }
    }
    out
}

fn stage_through_device_slots(config: &EncoderConfig, input: &[Vec<u8>]) -> Vec<EncodedChunk> {
    use nvencode::cuda::cudarc::driver::CudaContext;
    use nvencode::pipeline::{EncodePipeline, PipelineOptions, Received, SlotMemory};
    use nvencode::GpuEncoderConfig;

    const BOUND: std::time::Duration = std::time::Duration::from_secs(60);
    let mut gpu = GpuEncoderConfig::default();
    gpu.ring_buffer_size = 4;
    let options = PipelineOptions::from_gpu_config(&gpu).with_slot_memory(SlotMemory::Device);
    let (mut producer, mut output) = EncodePipeline::open_with(config, &gpu, options)
        .expect("open")
        .split();
    assert_eq!(output.encoder_kind(), EncoderKind::Nvenc);
    let frames: Vec<Vec<u8>> = input
        .iter()
        .map(|f| at_pitch(config, f, SOURCE_PITCH))
        .collect();
    let feeder = std::thread::spawn(move || {
        // The producer's own context handle and stream (device 0's primary context, the
        // ring's), as a producer with its own kernels has them.
        let ctx = CudaContext::new(0).expect("cudarc context");
        let stream = ctx.new_stream().expect("cudarc stream");
        for (pts, frame) in frames.iter().enumerate() {
            let source = stream.clone_htod(frame).expect("cudarc upload");
            let mut slot = producer.reserve_device_timeout(BOUND).expect("a slot");
            slot.copy_from_device(&source, SOURCE_PITCH)
                .expect("copy_from_device");
            // The source may go at once: its stream is ordered after the copy.
            drop(source);
            let _ = slot.commit(pts as i64, false).expect("commit");
        }
        producer.finish().expect("finish");
    });
    let mut chunks = Vec::new();
    loop {
        match output.recv_timeout(BOUND) {
            Received::Item(item) => chunks.push(item.expect("no in-band error")),
            Received::End => break,
            Received::Pending => panic!("no chunk within {BOUND:?}"),
        }
    }
    feeder.join().expect("feeder");
    chunks
}

#[test]
#[ignore = "child half of device_slots_are_filled_from_cudarc_allocations_without_unsafe"]
fn child_cudarc_sources() {
    assert_child();
    for format in [PixelFormat::Nv12, PixelFormat::I420] {
        let config = config(format);
        let input = common::clip(&config, FRAMES);
        let chunks = stage_through_device_slots(&config, &input);
        assert_decodes(&chunks, &input, &config);
        println!("STAGE {format} {}", chunks.len());
    }
}

/// A producer fills device slots from its own cudarc allocations (one per frame, on its own
/// stream, dropped right after the copy) through safe calls only
/// (`DeviceFrameSlot::copy_from_device`, source pitch wider than the frame): NV12 and I420
/// through the pipeline stage on the emulated NVENC; every frame decodes to what was written
/// (PSNR), and each copy is one `cuMemcpy2DAsync` per plane into the slot. Checked against the
/// copy skipped in `cuda::frame_copy` (PSNR 6 dB on the first frame) and against I420 chroma
/// read at the full source pitch (the copy refused, the feeder's `expect` fails).
#[test]
fn device_slots_are_filled_from_cudarc_allocations_without_unsafe() {
    let emu = EmuDriver::new();
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = emu.command(exe);
    cmd.args([
        "--ignored",
        "--exact",
        "child_cudarc_sources",
        "--nocapture",
    ]);
    let out = common::run_child_tests(cmd, 1, "child_cudarc_sources");
    for line in [
        format!("STAGE nv12 {FRAMES}"),
        format!("STAGE yuv420p {FRAMES}"),
    ] {
        assert!(out.contains(&line), "{line:?} missing:\n{out}");
    }
    let report = emu.report();
    report.assert_clean();
    let count = |entry: &str| {
        report
            .calls
            .get("cuda")
            .and_then(|calls| calls.get(entry))
            .copied()
            .unwrap_or(0)
    };
    // The slot copies only: one plane per NV12 frame, three per I420 frame; NVENC reads the
    // slots themselves.
    assert_eq!(
        count("cuMemcpy2DAsync_v2"),
        FRAMES + 3 * FRAMES,
        "{:?}",
        report.calls
    );
}

#[test]
#[ignore = "child half of a_device_ring_is_filled_from_views_of_one_cudarc_allocation"]
fn child_cudarc_ring() {
    use nvencode::cuda::cudarc::driver::CudaContext;

    assert_child();
    // Every frame in one cudarc allocation, each slot filled from a view of it (a source
    // longer than one frame), on the context's default stream (cudarc's single-stream mode: no
    // event tracking of its own).
    let config = config(PixelFormat::I420);
    let input = common::clip(&config, FRAMES);
    let ctx = CudaContext::new(0).expect("cudarc context");
    let stream = ctx.default_stream();
    let all: Vec<u8> = input
        .iter()
        .flat_map(|f| at_pitch(&config, f, SOURCE_PITCH))
        .collect();
    let frame_bytes = all.len() / input.len();
    let source = stream.clone_htod(&all).expect("cudarc upload");
    let nvenc_ctx = Context::open(0).expect("CUDA context");
    let storage =
        DeviceStorage::for_frames(&nvenc_ctx, SLOTS, config.resolution, config.pixel_format)
            .expect("device ring");
    let (mut producer, mut consumer) = FrameRing::with_storage(storage).expect("ring");
    let mut encoder = NvencEncoder::new(&config).expect("open");
    let mut chunks = Vec::new();
    for i in 0..input.len() {
        let mut slot = producer.try_reserve().expect("a free slot");
        let view = source.slice(i * frame_bytes..);
        slot.copy_from_device(&view, SOURCE_PITCH)
            .expect("copy_from_device");
        slot.commit(FrameMeta {
            pts: i as i64,
            seq: i as u64,
            ..FrameMeta::default()
        })
        .expect("commit");
        let lease = consumer.try_pop().expect("the frame just committed");
        encoder
            .encode_slot(&SlotFrame::from(lease), &mut chunks)
            .expect("encode_slot");
    }
    encoder.flush(&mut chunks).expect("flush");
    drop(encoder);
    assert_decodes(&chunks, &input, &config);
    println!("RING yuv420p {}", chunks.len());
}

/// The ring and `NvencEncoder::encode_slot` by hand, I420: each slot filled from a view of one
/// cudarc allocation holding every frame. Every frame decodes; each copy is three plane copies,
/// ordered by the crate against the source's stream on both sides (two `cuStreamWaitEvent`s:
/// cudarc adds none of its own here), besides NVENC's one wait on the slot's stream per frame.
/// Checked against the two stream orderings removed from `cuda::frame_copy` (30 waits, not 90).
#[test]
fn a_device_ring_is_filled_from_views_of_one_cudarc_allocation() {
    let emu = EmuDriver::new();
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = emu.command(exe);
    cmd.args(["--ignored", "--exact", "child_cudarc_ring", "--nocapture"]);
    let out = common::run_child_tests(cmd, 1, "child_cudarc_ring");
    assert!(out.contains(&format!("RING yuv420p {FRAMES}")), "{out}");
    let report = emu.report();
    report.assert_clean();
    let count = |entry: &str| {
        report
            .calls
            .get("cuda")
            .and_then(|calls| calls.get(entry))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(
        count("cuMemcpy2DAsync_v2"),
        3 * FRAMES,
        "{:?}",
        report.calls
    );
    assert_eq!(
        count("cuStreamWaitEvent"),
        FRAMES + 2 * FRAMES,
        "the slot stream waits for the source's, the source's for the slot's: {:?}",
        report.calls
    );
}

#[test]
#[ignore = "child half of a_wrong_cudarc_source_is_a_typed_error"]
fn child_cudarc_source_errors() {
    use nvencode::cuda::cudarc::driver::CudaContext;
    use nvencode::cuda::{FrameCopyError, FrameLayout};

    assert_child();
    let config = config(PixelFormat::I420);
    let input = common::clip(&config, 1);
    let frame = &input[0];
    let layout = FrameLayout::I420 {
        width: 320,
        height: 240,
    };
    let ctx = CudaContext::new(0).expect("cudarc context");
    let stream = ctx.default_stream();
    let nvenc_ctx = Context::open(0).expect("CUDA context");
    let storage = DeviceStorage::for_frames(&nvenc_ctx, 2, config.resolution, config.pixel_format)
        .expect("device ring");
    assert_eq!(storage.layout(), layout);
    let (mut producer, mut consumer) = FrameRing::with_storage(storage).expect("ring");
    let mut slot = producer.try_reserve().expect("slot");

    // One byte short of a tightly packed frame.
    let short = stream
        .clone_htod(&frame[..frame.len() - 1])
        .expect("cudarc upload");
    match slot.copy_from_device(&short, 320) {
        Err(e @ FrameCopyError::SourceTooShort { .. }) => {
            let FrameCopyError::SourceTooShort {
                len,
                needed,
                pitch,
                layout: l,
            } = e.clone()
            else {
                unreachable!()
            };
            assert_eq!(
                (len, needed, pitch, l),
                (frame.len() - 1, frame.len(), 320, layout)
            );
            let text = e.to_string();
            assert!(
                text.contains("115199 bytes") && text.contains("at least 115200 bytes"),
                "{text}"
            );
        }
        other => panic!("expected SourceTooShort, got {other:?}"),
    }
    // A whole frame, at a pitch it does not have: too long a pitch makes it too short.
    let tight = stream.clone_htod(frame).expect("cudarc upload");
    assert!(matches!(
        slot.copy_from_device(&tight, SOURCE_PITCH),
        Err(FrameCopyError::SourceTooShort { needed, .. }) if needed > frame.len()
    ));
    // Pitches below the width, or odd for I420's half-pitch chroma.
    for pitch in [319, 321] {
        match slot.copy_from_device(&tight, pitch) {
            Err(FrameCopyError::InvalidPitch {
                pitch: p,
                min: 320,
                even: true,
                ..
            }) => assert_eq!(p, pitch),
            other => panic!("pitch {pitch}: expected InvalidPitch, got {other:?}"),
        }
    }
    // Memory of device 1's context.
    let other = CudaContext::new(1).expect("device 1");
    let elsewhere = other.default_stream().clone_htod(frame).expect("upload");
    assert!(
        matches!(
            slot.copy_from_device(&elsewhere, 320),
            Err(FrameCopyError::OtherContext {
                source_device: 1,
                slot_device: 0
            })
        ),
        "a source of another context"
    );

    // The slot is still the producer's: the right source fills it, and the frame decodes.
    slot.copy_from_device(&tight, 320)
        .expect("copy_from_device");
    slot.commit(FrameMeta::default()).expect("commit");
    let mut encoder = NvencEncoder::new(&config).expect("open");
    let mut chunks = Vec::new();
    let lease = consumer.try_pop().expect("committed");
    encoder
        .encode_slot(&SlotFrame::from(lease), &mut chunks)
        .expect("encode_slot");
    encoder.flush(&mut chunks).expect("flush");
    drop(encoder);
    assert_decodes(&chunks, &input, &config);
}

/// A cudarc source one byte short of a frame, a source at a pitch it does not have, pitches
/// below the width or odd (I420), and a source of another device's context are typed errors
/// naming the bad value and the valid one, and queue nothing; the slot then takes the right
/// source and encodes. Checked against the source-length check removed (the driver's
/// `CUDA_ERROR_INVALID_VALUE` instead of `SourceTooShort`) and against the copy skipped.
#[test]
fn a_wrong_cudarc_source_is_a_typed_error() {
    let emu = EmuDriver::new().cuda_devices(2);
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = emu.command(exe);
    cmd.args([
        "--ignored",
        "--exact",
        "child_cudarc_source_errors",
        "--nocapture",
    ]);
    common::run_child_tests(cmd, 1, "child_cudarc_source_errors");
    let report = emu.report();
    report.assert_clean();
    let copies = report
        .calls
        .get("cuda")
        .and_then(|calls| calls.get("cuMemcpy2DAsync_v2"))
        .copied()
        .unwrap_or(0);
    assert_eq!(
        copies, 3,
        "only the valid copy was queued: {:?}",
        report.calls
    );
}
