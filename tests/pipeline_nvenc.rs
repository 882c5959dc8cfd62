//! The pipeline stage on the emulated NVENC: the ring's slots are NVENC's pinned staging (no host
//! copy of a frame's bytes inside the crate, one upload per plane, nothing else), and a device
//! loss mid-pipeline fails over to x264 with every frame out and decodable.
//!
//! How copies are counted: the crate counts each host copy of a frame's bytes it makes
//! (`nvencode::metrics::host_frame_copies`), and the CUDA emulator counts the upload calls. The
//! producer's own write into its slot (here a `copy_from_slice`; in a receiver, the socket read)
//! is the test's.
//!
//! Device slots: a producer whose frames are on the GPU reserves device slots, writes each frame
//! by a CUDA copy on the slot's stream and commits it; NVENC encodes from the slot with no host
//! copy inside the crate.
//!
//! Child halves (`#[ignore]`) run only in a child process against the emulated driver pair.

mod common;

use std::time::Duration;

use std::sync::Arc;

use nvenc_emu_harness::EmuDriver;
use nvencode::metrics::host_frame_copies;
use nvencode::pipeline::{
    DeviceFrameSlot, EncodePipeline, PipelineError, PipelineOptions, SlotMemory,
};
use nvencode::{EncodedChunk, EncoderConfig, EncoderKind, GpuEncoderConfig};

const FRAMES: usize = 60;
/// As in `nvenc_emulated.rs`: the emulated NVENC encodes with libx264 at crf 18.
const PSNR_FLOOR_DB: f64 = 38.0;
/// Every wait of the producer and the reader.
const BOUND: Duration = Duration::from_secs(60);

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

/// Runs `input` through a stage opened as a user opens it (`Auto`: NVENC first), writing each
/// frame into its reserved slot; returns the chunks, the slot memory and the encoder kind at
/// open.
fn through_the_stage(
    config: &EncoderConfig,
    input: &[Vec<u8>],
) -> (Vec<EncodedChunk>, SlotMemory, EncoderKind) {
    let mut gpu = GpuEncoderConfig::default();
    gpu.ring_buffer_size = 4;
    let options = PipelineOptions::from_gpu_config(&gpu);
    let (mut producer, mut output) = EncodePipeline::open_with(config, &gpu, options)
        .expect("open")
        .split();
    let memory = producer.slot_memory();
    let kind = output.encoder_kind();
    let frames = input.to_vec();
    let feeder = std::thread::spawn(move || {
        for (pts, frame) in frames.iter().enumerate() {
            let mut slot = producer.reserve_timeout(BOUND).expect("a slot in time");
            slot.copy_from_slice(frame);
            let _ = slot.commit(pts as i64, false).expect("commit");
        }
        producer.finish().expect("finish");
    });
    let mut chunks = Vec::new();
    loop {
        match output.recv_timeout(BOUND) {
            nvencode::pipeline::Received::Item(item) => {
                chunks.push(item.expect("no in-band error"))
            }
            nvencode::pipeline::Received::End => break,
            nvencode::pipeline::Received::Pending => panic!("no chunk within {BOUND:?}"),
        }
    }
    feeder.join().expect("feeder");
    (chunks, memory, kind)
}

/// Runs the child test `name` against `emu`, checks the emulator saw no violation or leak, and
/// returns the child's output and the CUDA emulator's call counts.
fn run_child(emu: &EmuDriver, name: &str) -> (String, std::collections::BTreeMap<String, u64>) {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = emu.command(exe);
    cmd.args(["--ignored", "--exact", name, "--nocapture"]);
    let out = common::run_child_tests(cmd, 1, name);
    let report = emu.report();
    report.assert_clean();
    let cuda = report.calls.get("cuda").cloned().unwrap_or_default();
    (out, cuda)
}

fn assert_decodes(chunks: &[EncodedChunk], input: &[Vec<u8>], config: &EncoderConfig) {
    common::assert_accounting(chunks, input.len() as u64);
    let decoded = common::decode_h264(&common::concat(chunks), config.resolution);
    assert_eq!(decoded.len(), input.len(), "decoded frame count");
    for (i, (want, got)) in input.iter().zip(&decoded).enumerate() {
        let p = common::psnr(want, got);
        assert!(p >= PSNR_FLOOR_DB, "frame {i}: PSNR {p:.2} dB");
    }
}

#[test]
#[ignore = "child half of nvenc_stage_uploads_from_pinned_slots_with_no_host_copy"]
fn child_stage_copies() {
    assert_child();
    let config = config();
    let input = common::clip(&config, FRAMES as u64);
    let before = host_frame_copies();
    let (chunks, memory, kind) = through_the_stage(&config, &input);
    let copies = host_frame_copies() - before;
    assert_eq!(kind, EncoderKind::Nvenc);
    assert_eq!(
        memory,
        SlotMemory::Pinned,
        "Auto puts NVENC's ring in pinned memory"
    );
    assert_decodes(&chunks, &input, &config);
    println!("STAGE COPIES {copies}");
    assert_eq!(copies, 0, "no host copy of a frame inside the crate");
}

#[test]
fn nvenc_stage_uploads_from_pinned_slots_with_no_host_copy() {
    let emu = EmuDriver::new();
    let (out, cuda) = run_child(&emu, "child_stage_copies");
    assert!(out.contains("STAGE COPIES 0"), "{out}");
    let calls = |entry: &str| cuda.get(entry).copied().unwrap_or(0);
    // I420: one upload per plane, three per frame, straight from the slot; no other host-to-device
    // copy. With the producer's own write into the slot, one host copy per frame in all.
    assert_eq!(calls("cuMemcpy2DAsync_v2"), 3 * FRAMES as u64, "{cuda:?}");
    for entry in ["cuMemcpyHtoD_v2", "cuMemcpyHtoDAsync_v2", "cuMemcpy2D_v2"] {
        assert_eq!(calls(entry), 0, "{entry}: {cuda:?}");
    }
    // One pinned allocation: the ring. NVENC's staging buffers, which only host frames need,
    // are never allocated for a stage that feeds it ring slots.
    assert_eq!(calls("cuMemHostAlloc"), 1, "{cuda:?}");
}

#[test]
#[ignore = "child half of nvenc_device_loss_mid_stage_fails_over_with_every_frame"]
fn child_stage_failover() {
    assert_child();
    let config = config();
    let input = common::clip(&config, FRAMES as u64);
    let (chunks, memory, kind) = through_the_stage(&config, &input);
    assert_eq!(kind, EncoderKind::Nvenc);
    assert_eq!(memory, SlotMemory::Pinned);
    // x264 reads the pinned slots as host memory: the frames queued when NVENC failed, and those
    // the chain held for a replay, come out of x264.
    assert_decodes(&chunks, &input, &config);
}

/// NVENC's device goes away at its 25th picture (`NV_ENC_ERR_DEVICE_NOT_EXIST`, 5): the chain
/// fails over to x264 inside the stage; every frame comes out once and decodes.
#[test]
fn nvenc_device_loss_mid_stage_fails_over_with_every_frame() {
    let emu = EmuDriver::new().fault("nvEncEncodePicture", 25, 5);
    let _ = run_child(&emu, "child_stage_failover");
}

/// Queues the upload of `frame` into a reserved device slot (see
/// `common::upload_to_device_slot`).
fn upload(slot: &DeviceFrameSlot<'_>, frame: &[u8], config: &EncoderConfig) {
    // SAFETY: the surface is the slot's, its stream the ring's own; the callers keep `frame`
    // (one of their input frames, in an `Arc` held until the end) alive and unchanged until the
    // stage has ended and its ring is gone.
    unsafe { common::upload_to_device_slot(slot.surface(), slot.stream(), frame, config) }
}

#[test]
#[ignore = "child half of device_slots_through_the_stage_are_encoded_with_no_host_copy"]
fn child_stage_device_slots() {
    assert_child();
    let config = config();
    let input = Arc::new(common::clip(&config, FRAMES as u64));
    let mut gpu = GpuEncoderConfig::default();
    gpu.ring_buffer_size = 4;
    let options = PipelineOptions::from_gpu_config(&gpu).with_slot_memory(SlotMemory::Device);
    let (mut producer, mut output) = EncodePipeline::open_with(&config, &gpu, options)
        .expect("open")
        .split();
    assert_eq!(output.encoder_kind(), EncoderKind::Nvenc);
    assert_eq!(producer.slot_memory(), SlotMemory::Device);
    // Host frames have no way into a device ring but the GPU: typed errors, nothing lost.
    match producer.push(input[0].as_slice()) {
        Err(PipelineError::WrongSlotMemory { memory, call, .. }) => {
            assert_eq!((memory, call), (SlotMemory::Device, "push"));
        }
        other => panic!("expected WrongSlotMemory, got {other:?}"),
    }
    assert!(matches!(
        producer.try_reserve(),
        Err(PipelineError::WrongSlotMemory { .. })
    ));
    let before = host_frame_copies();
    let frames = Arc::clone(&input);
    let feeder = std::thread::spawn(move || {
        for (pts, frame) in frames.iter().enumerate() {
            let slot = producer
                .reserve_device_timeout(BOUND)
                .expect("a slot in time");
            upload(&slot, frame, &self::config());
            let _ = slot.commit(pts as i64, pts == 30).expect("commit");
        }
        producer.finish().expect("finish");
    });
    let mut chunks = Vec::new();
    loop {
        match output.recv_timeout(BOUND) {
            nvencode::pipeline::Received::Item(item) => {
                chunks.push(item.expect("no in-band error"))
            }
            nvencode::pipeline::Received::End => break,
            nvencode::pipeline::Received::Pending => panic!("no chunk within {BOUND:?}"),
        }
    }
    feeder.join().expect("feeder");
    drop(output);
    let copies = host_frame_copies() - before;
    assert_decodes(&chunks, &input, &config);
    assert!(
        chunks.iter().any(|c| c.pts == 30 && c.keyframe),
        "the keyframe asked for at commit"
    );
    println!("DEVICE STAGE COPIES {copies}");
    assert_eq!(copies, 0, "no host copy of a frame inside the crate");
}

#[test]
fn device_slots_through_the_stage_are_encoded_with_no_host_copy() {
    let emu = EmuDriver::new();
    let (out, cuda) = run_child(&emu, "child_stage_device_slots");
    assert!(out.contains("DEVICE STAGE COPIES 0"), "{out}");
    let calls = |entry: &str| cuda.get(entry).copied().unwrap_or(0);
    // The producer's uploads only (three planes a frame); the crate copies nothing on the
    // device either: NVENC reads the registered slot.
    assert_eq!(calls("cuMemcpy2DAsync_v2"), 3 * FRAMES as u64, "{cuda:?}");
    for entry in ["cuMemcpyDtoDAsync_v2", "cuMemcpyDtoD_v2", "cuMemcpyHtoD_v2"] {
        assert_eq!(calls(entry), 0, "{entry}: {cuda:?}");
    }
}

/// Device slots on CUDA device 1 of two: the stage opens NVENC on the ring's device, so every
/// frame is encoded by NVENC from its slot (none is refused as another context's surface).
#[test]
#[ignore = "child half of a_ring_on_device_1_has_nvenc_on_device_1"]
fn child_stage_on_device_1() {
    assert_child();
    device_slots_on_nvenc_only(Some(1));
}

/// No device named, GPU 0 without NVENC: NVENC is placed on GPU 1 and the ring follows it there.
#[test]
#[ignore = "child half of the_ring_follows_nvenc_to_the_gpu_it_was_placed_on"]
fn child_stage_follows_placement() {
    assert_child();
    device_slots_on_nvenc_only(None);
}

/// Feeds the clip through a stage of device slots on `device` (or where NVENC is placed) and
/// checks that NVENC encoded every frame from its slot, with no failover.
fn device_slots_on_nvenc_only(device: Option<usize>) {
    let config = config();
    let input = Arc::new(common::clip(&config, FRAMES as u64));
    let mut gpu = GpuEncoderConfig::default();
    gpu.ring_buffer_size = 4;
    gpu.preferred_encoder = Some(EncoderKind::Nvenc);
    let mut options = PipelineOptions::from_gpu_config(&gpu).with_slot_memory(SlotMemory::Device);
    if let Some(device) = device {
        options = options.with_cuda_device(device);
    }
    let (mut producer, mut output) = EncodePipeline::open_with(&config, &gpu, options)
        .expect("open")
        .split();
    assert_eq!(output.encoder_kind(), EncoderKind::Nvenc);
    let frames = Arc::clone(&input);
    let feeder = std::thread::spawn(move || {
        for (pts, frame) in frames.iter().enumerate() {
            let Ok(slot) = producer.reserve_device_timeout(BOUND) else {
                return; // the encoder stopped: the reader reports why
            };
            upload(&slot, frame, &self::config());
            if slot.commit(pts as i64, false).is_err() {
                return;
            }
        }
        let _ = producer.finish();
    });
    let mut chunks = Vec::new();
    loop {
        match output.recv_timeout(BOUND) {
            nvencode::pipeline::Received::Item(item) => {
                chunks.push(item.expect("every frame encoded from its device slot"))
            }
            nvencode::pipeline::Received::End => break,
            nvencode::pipeline::Received::Pending => panic!("no chunk within {BOUND:?}"),
        }
    }
    feeder.join().expect("feeder");
    assert_eq!(
        output.finished_by(),
        Some(EncoderKind::Nvenc),
        "no failover"
    );
    drop(output);
    assert_decodes(&chunks, &input, &config);
}

/// With no device named, NVENC is placed by `GpuChoice::Auto` (GPU 0 has no NVENC engine, so on
/// GPU 1) and the stage puts its device ring on the GPU NVENC was placed on: every frame is
/// encoded from its slot. Checked against the ring staying on device 0: NVENC refused the first slot as
/// another context's surface.
#[test]
fn the_ring_follows_nvenc_to_the_gpu_it_was_placed_on() {
    let emu = EmuDriver::new().cuda_devices(2).no_encoder_on(&[0]);
    let _ = run_child(&emu, "child_stage_follows_placement");
}

/// `PipelineOptions::with_cuda_device(1)` puts the ring on device 1 and, through the one place
/// that decides the device (`GpuEncoderConfig::gpu_with`), NVENC too. Checked against
/// `open_with` opening NVENC on device 0 whatever the options said: NVENC then
/// refused the first device-1 slot and the stage ended with an encoder error.
#[test]
fn a_ring_on_device_1_has_nvenc_on_device_1() {
    let emu = EmuDriver::new().cuda_devices(2);
    let _ = run_child(&emu, "child_stage_on_device_1");
}

/// A slow CPU encoder (as x264 is to a GPU producer): emits one chunk per frame carrying its pts
/// and a checksum of the bytes it was given.
struct SlowChecksum {
    config: EncoderConfig,
    frames: u64,
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl nvencode::VideoEncoder for SlowChecksum {
    fn encode(
        &mut self,
        frame: nvencode::Frame<'_>,
        out: &mut Vec<EncodedChunk>,
    ) -> Result<(), nvencode::Error> {
        std::thread::sleep(Duration::from_millis(5));
        let pts = frame.pts.unwrap_or(0);
        out.push(EncodedChunk {
            data: fnv(frame.data).to_le_bytes().to_vec(),
            pts,
            dts: pts,
            duration: 1,
            keyframe: true,
            frame_type: nvencode::FrameType::I,
            frame_index: self.frames,
        });
        self.frames += 1;
        Ok(())
    }
    fn flush(&mut self, _out: &mut Vec<EncodedChunk>) -> Result<(), nvencode::Error> {
        Ok(())
    }
    fn kind(&self) -> EncoderKind {
        EncoderKind::X264
    }
    fn config(&self) -> &EncoderConfig {
        &self.config
    }
    fn sequence_headers(&self) -> &[u8] {
        &[]
    }
}

#[test]
#[ignore = "child half of a_device_ring_feeds_a_cpu_encoder_and_drops_newest_counted"]
fn child_device_ring_cpu_encoder_drop_newest() {
    assert_child();
    let config = config();
    let input = Arc::new(common::clip(&config, FRAMES as u64));
    let encoder = SlowChecksum {
        config: config.clone(),
        frames: 0,
    };
    let options = PipelineOptions::default()
        .with_ring_slots(2)
        .with_slot_memory(SlotMemory::Device)
        .with_back_pressure(nvencode::pipeline::BackPressure::DropNewest);
    let (mut producer, output) = EncodePipeline::with_encoder(Box::new(encoder), options)
        .expect("open")
        .split();
    let frames = Arc::clone(&input);
    let feeder = std::thread::spawn(move || {
        let mut dropped = 0u64;
        for (pts, frame) in frames.iter().enumerate() {
            // Never waits: a full ring hands out the scratch surface, and the frame is dropped.
            let slot = producer.reserve_device().expect("reserve_device");
            let will_drop = slot.will_drop();
            upload(&slot, frame, &self::config());
            let submitted = slot.commit(pts as i64, false).expect("commit");
            assert_eq!(
                submitted == nvencode::pipeline::Submitted::Dropped,
                will_drop,
                "frame {pts}"
            );
            dropped += u64::from(will_drop);
        }
        assert_eq!(producer.dropped(), dropped);
        assert_eq!(producer.stats().dropped(), dropped);
        producer.finish().expect("finish");
        dropped
    });
    let chunks: Vec<EncodedChunk> = output.map(|item| item.expect("no in-band error")).collect();
    let dropped = feeder.join().expect("feeder");
    println!("DEVICE DROP NEWEST out {} dropped {dropped}", chunks.len());
    assert!(
        dropped > 0,
        "a 5 ms encoder behind a producer that never waits drops frames"
    );
    assert_eq!(
        chunks.len() as u64 + dropped,
        FRAMES as u64,
        "every frame out or counted"
    );
    // Each frame that came out was downloaded intact from its device slot.
    for chunk in &chunks {
        let want = fnv(&input[chunk.pts as usize]).to_le_bytes();
        assert_eq!(chunk.data, want, "frame {} downloaded intact", chunk.pts);
    }
}

/// A device ring feeding an encoder that reads host memory (what the chain does after failing
/// over from NVENC): each frame is downloaded from its slot, intact; under `DropNewest` a full
/// ring hands the producer a scratch surface, and every dropped frame is counted.
#[test]
fn a_device_ring_feeds_a_cpu_encoder_and_drops_newest_counted() {
    let emu = EmuDriver::new();
    let (out, _) = run_child(&emu, "child_device_ring_cpu_encoder_drop_newest");
    let line = out
        .lines()
        .find(|l| l.starts_with("DEVICE DROP NEWEST"))
        .unwrap_or_else(|| panic!("the child's summary line:\n{out}"));
    println!("{line}");
}

#[test]
#[ignore = "child half of a_failed_nvenc_counts_the_frames_it_took_down"]
fn child_stage_nvenc_fails() {
    assert_child();
    let config = config();
    let input = common::clip(&config, FRAMES as u64);
    // NVENC alone: no chain to fail over to.
    let encoder = nvencode::nvenc::NvencEncoder::new(&config).expect("NVENC opens");
    let (mut producer, mut output) =
        EncodePipeline::with_encoder(Box::new(encoder), PipelineOptions::default())
            .expect("open")
            .split();
    let feeder = std::thread::spawn(move || {
        let mut committed = 0u64;
        for (pts, frame) in input.iter().enumerate() {
            let Ok(mut slot) = producer.reserve_timeout(BOUND) else {
                break;
            };
            slot.copy_from_slice(frame);
            if slot.commit(pts as i64, false).is_err() {
                break;
            }
            committed += 1;
        }
        let stats = producer.stats();
        let _ = producer.finish();
        (committed, stats)
    });
    let mut delivered = 0usize;
    let mut end = None;
    loop {
        match output.recv_timeout(BOUND) {
            nvencode::pipeline::Received::Item(Ok(_)) => delivered += 1,
            nvencode::pipeline::Received::Item(Err(e)) => end = Some(e),
            nvencode::pipeline::Received::End => break,
            nvencode::pipeline::Received::Pending => panic!("no chunk within {BOUND:?}"),
        }
    }
    let (committed, stats) = feeder.join().expect("feeder");
    let Some(PipelineError::Encoder { unencoded, .. }) = end else {
        panic!("the stage should end with the encoder's failure: {end:?}");
    };
    println!("committed {committed}, delivered {delivered}, unencoded {unencoded}");
    // The 10th read-back fails: 9 chunks came out, and the frames NVENC had accepted behind
    // them (held for B-frames and for the output delay) are counted with the rest.
    assert_eq!(delivered, 9);
    assert_eq!(delivered + unencoded, stats.committed());
    assert_eq!(stats.committed() as u64, committed);
    assert_eq!(stats.dropped(), unencoded as u64);
}

/// NVENC alone (no chain to fail over to) fails at its 10th read-back: the in-band error counts
/// every committed frame that did not come out, those inside the failed encoder included, and
/// the ring's dropped count agrees.
#[test]
fn a_failed_nvenc_counts_the_frames_it_took_down() {
    let emu = EmuDriver::new().fault("nvEncLockBitstream", 10, 8);
    let (out, _) = run_child(&emu, "child_stage_nvenc_fails");
    assert!(out.contains("delivered 9"), "{out}");
}
