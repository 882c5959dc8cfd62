//! CPU time per frame of the direct NVENC backend by where the frame is: a host buffer
//! (`encode`: a staging copy, then the upload), a pinned ring slot (`encode_slot`: the upload
//! reads the slot), a device ring slot (`encode_slot`: NVENC encodes the slot's surface, no
//! copy), against the emulated driver in fast mode (no pixel read-back, no encoding), in one run.
//!
//! ```text
//! cargo bench --bench nvenc_device_slots                     # 1080p I420, 300 frames
//! NVENC_BENCH_FRAMES=600 cargo bench --bench nvenc_device_slots
//! ```
//! Each mode runs in its own child process; the ring's 16 slots are filled once before the
//! clock starts and then committed again as they come back (a slot keeps its bytes), so what is
//! measured is the encoder's own work per frame, not the producer's. The child's CPU time is
//! `getrusage(RUSAGE_SELF)` (every thread, the watchdog's worker included) over the encode loop.
//!
//! On the emulator, "device memory" is host memory: an upload (`cuMemcpy2DAsync`) is a CPU
//! memcpy there, where a GPU's copy engine would do it without the CPU. The pinned and host rows
//! therefore include that memcpy; the device row has none to include.
//!
//! The run fails (non-zero exit) when a child fails, or when the emulator reports an API
//! violation or a leaked handle: a figure from a broken run is not a figure.

use std::time::{Duration, Instant};

use nvenc_emu_harness::EmuDriver;
use nvencode::cuda::{copy_host_to_device_async, Context, DeviceSurface};
use nvencode::encoder::SlotFrame;
use nvencode::nvenc::{NvencEncoder, NvencOptions, NvencPreset};
use nvencode::ring_buffer::{
    Consumer, DeviceStorage, FrameMeta, FrameRing, PinnedStorage, Producer, SlotStorage,
};
use nvencode::testsrc::TestPattern;
use nvencode::{EncodedChunk, EncoderConfig, PixelFormat, VideoEncoder};

#[path = "support/nvenc_child.rs"]
#[allow(dead_code)]
mod support;

const CHILD: &str = "NVENC_BENCH_DEVICE_SLOTS_MODE";
const SLOTS: usize = 16;
const MODES: [&str; 3] = ["host bytes", "pinned slots", "device slots"];

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let frames: u64 = std::env::var("NVENC_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    if let Ok(mode) = std::env::var(CHILD) {
        return child(&mode, frames);
    }
    let emu = EmuDriver::new().fast();
    let exe = std::env::current_exe()?;
    println!(
        "CPU time per frame against the emulated NVENC (fast mode): {frames} frames 1920x1080 \
         yuv420p, preset p1, ring of {SLOTS} slots"
    );
    println!(
        "{:<14} {:>12} {:>10} {:>10}",
        "frames from", "CPU ms/frame", "wall s", "fps"
    );
    let mut failed = Vec::new();
    for mode in MODES {
        let t0 = Instant::now();
        let out = emu
            .command(&exe)
            .env(CHILD, mode)
            .env("NVENC_BENCH_FRAMES", frames.to_string())
            .output()?;
        let wall = t0.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let cpu_ns = stdout
            .lines()
            .find_map(|l| l.strip_prefix("CPU_NS "))
            .and_then(|v| v.trim().parse::<u64>().ok());
        let (true, Some(cpu_ns)) = (out.status.success(), cpu_ns) else {
            println!("{mode}: failed: {}", String::from_utf8_lossy(&out.stderr));
            failed.push(format!("{mode} failed ({})", out.status));
            continue;
        };
        println!(
            "{:<14} {:>12.3} {:>10.2} {:>10.1}",
            mode,
            cpu_ns as f64 / 1e6 / frames as f64,
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

/// This process's CPU time so far (every thread).
fn self_cpu() -> Duration {
    // SAFETY: `rusage` is a plain C struct of integers, for which all-zero bytes are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `getrusage` writes one `rusage` into the valid local it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn child(mode: &str, frames: u64) -> Result<()> {
    let config = EncoderConfig::new(1920, 1080);
    let options = NvencOptions::default().with_preset(Some(NvencPreset::P1));
    let mut encoder = NvencEncoder::with_options(&config, &options)?;
    let pattern = TestPattern::new(config.resolution, PixelFormat::I420)?;
    let clip: Vec<Vec<u8>> = (0..SLOTS as u64).map(|i| pattern.frame(i)).collect();
    let len = clip[0].len();
    let mut chunks = Vec::new();
    let (cpu, out) = match mode {
        "host bytes" => {
            let start = self_cpu();
            for i in 0..frames {
                encoder.encode_frame(&clip[i as usize % SLOTS], &mut chunks)?;
            }
            encoder.flush(&mut chunks)?;
            (self_cpu() - start, chunks.len())
        }
        "pinned slots" => {
            let ctx = Context::open(0)?;
            let (mut producer, consumer) =
                FrameRing::with_storage(PinnedStorage::new(&ctx, SLOTS, len)?)?;
            for frame in &clip {
                let mut slot = producer.try_reserve()?;
                slot[..len].copy_from_slice(frame);
                slot.commit(FrameMeta::default())?;
            }
            run_slots(&mut encoder, producer, consumer, frames, len)?
        }
        "device slots" => {
            let ctx = Context::open(0)?;
            let (w, h) = (1920, 1080);
            let storage = DeviceStorage::new(&ctx, SLOTS, w, h * 3 / 2)?;
            let (mut producer, consumer) = FrameRing::with_storage(storage)?;
            for frame in &clip {
                let slot = producer.try_reserve()?;
                let s = slot.surface();
                let (sc, dc) = (w / 2, s.pitch / 2);
                let planes = [
                    (0, w, 0, s.pitch, w, h),
                    (w * h, sc, s.pitch * h, dc, w / 2, h / 2),
                    (
                        w * h + sc * (h / 2),
                        sc,
                        s.pitch * h + dc * (h / 2),
                        dc,
                        w / 2,
                        h / 2,
                    ),
                ];
                for (src, src_pitch, dst, dst_pitch, width, rows) in planes {
                    let target = DeviceSurface {
                        device_ptr: s.device_ptr + dst as u64,
                        pitch: dst_pitch,
                        width_bytes: width,
                        rows,
                    };
                    // SAFETY: `target` lies inside the slot's surface, a live allocation of the
                    // storage's context; `clip` stays alive and unchanged until the stream has
                    // been waited for just below.
                    unsafe {
                        copy_host_to_device_async(
                            &frame[src..],
                            src_pitch,
                            &target,
                            slot.storage().stream(),
                        )
                    }?;
                }
                slot.commit(FrameMeta::default())?;
            }
            producer.storage().stream().synchronize()?;
            run_slots(&mut encoder, producer, consumer, frames, len)?
        }
        other => return Err(format!("unknown mode {other}").into()),
    };
    if out as u64 != frames {
        return Err(format!("{out} of {frames} frames came out").into());
    }
    println!("CPU_NS {}", cpu.as_nanos());
    Ok(())
}

/// Takes back the filled slots (committed once each, to move the ring through all of them), then
/// commits each slot again with the frame it already holds, pops it and encodes it from the
/// slot; returns the CPU time and the chunks out.
fn run_slots<S: SlotStorage>(
    encoder: &mut NvencEncoder,
    mut producer: Producer<S>,
    mut consumer: Consumer<S>,
    frames: u64,
    len: usize,
) -> Result<(Duration, usize)>
where
    SlotFrame: From<nvencode::ring_buffer::ReadSlot<S>>,
{
    while let Ok(filled) = consumer.try_pop() {
        filled.release();
    }
    let mut chunks: Vec<EncodedChunk> = Vec::new();
    let start = self_cpu();
    for i in 0..frames {
        producer.try_reserve()?.commit(FrameMeta {
            len,
            pts: i as i64,
            seq: i,
            ..FrameMeta::default()
        })?;
        let slot = SlotFrame::from(consumer.try_pop()?);
        encoder.encode_slot(&slot, &mut chunks)?;
    }
    encoder.flush(&mut chunks)?;
    Ok((self_cpu() - start, chunks.len()))
}
