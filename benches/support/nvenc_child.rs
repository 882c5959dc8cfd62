//! What the NVENC benches share: the 1080p raw clip on disk, the child that encodes it with the
//! direct backend, the children's CPU time, and the check that an emulated run was clean.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use nvenc_emu_harness::EmuDriver;
use nvencode::nvenc::{NvencEncoder, NvencOptions};
use nvencode::testsrc::TestPattern;
use nvencode::{EncoderConfig, PixelFormat, Resolution, VideoEncoder};

/// User + system CPU time of every child waited for so far (all of each child's threads).
pub fn children_cpu() -> Duration {
    // SAFETY: `rusage` is a plain C struct of integers, for which all-zero bytes are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `getrusage` writes one `rusage` into the valid local it is given.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Writes `frames` frames of the 1920x1080 I420 test pattern to `path`.
pub fn write_clip(path: &Path, frames: u64) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Write;
    let pattern = TestPattern::new(Resolution::new(1920, 1080), PixelFormat::I420)?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buf = Vec::new();
    for i in 0..frames {
        pattern.fill(i, &mut buf);
        f.write_all(&buf)?;
    }
    f.flush()?;
    Ok(())
}

/// The environment variable that tells a child which codec to encode (`h264`, `hevc`).
pub const CODEC_ENV: &str = "NVENC_BENCH_CODEC_CHILD";

/// The codec a child encodes: [`CODEC_ENV`], H.264 when unset.
pub fn bench_codec() -> Result<nvencode::Codec, Box<dyn std::error::Error>> {
    match std::env::var(CODEC_ENV) {
        Ok(name) => Ok(name.parse()?),
        Err(_) => Ok(nvencode::Codec::H264),
    }
}

/// The child's work: encodes the raw 1080p file with the direct backend, frame by frame from
/// disk, and checks that every frame came out.
pub fn encode_file(
    path: &str,
    frames: u64,
    options: &NvencOptions,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = EncoderConfig::new(1920, 1080).with_codec(bench_codec()?);
    let mut encoder = NvencEncoder::with_options(&config, options)?;
    let mut file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut frame = vec![0u8; config.validate()?];
    let mut chunks = Vec::new();
    let mut out = 0u64;
    for _ in 0..frames {
        file.read_exact(&mut frame)?;
        encoder.encode_frame(&frame, &mut chunks)?;
        out += chunks.drain(..).count() as u64;
    }
    encoder.flush(&mut chunks)?;
    out += chunks.len() as u64;
    if out != frames {
        return Err(format!("{out} of {frames} frames came out").into());
    }
    Ok(())
}

/// The child's work through the pipeline stage: the same file read with `read_exact` straight
/// into each reserved ring slot (pinned memory, NVENC's staging), the encoder on the stage's
/// thread, the chunks counted on this one.
#[allow(dead_code)] // Not every bench that includes this file runs the stage.
pub fn encode_file_through_stage(
    path: &str,
    frames: u64,
    options: &NvencOptions,
) -> Result<(), Box<dyn std::error::Error>> {
    use nvencode::pipeline::{EncodePipeline, PipelineOptions, SlotMemory};
    let config = EncoderConfig::new(1920, 1080).with_codec(bench_codec()?);
    let encoder = NvencEncoder::with_options(&config, options)?;
    let stage = PipelineOptions::default().with_slot_memory(SlotMemory::Pinned);
    let (mut producer, output) = EncodePipeline::with_encoder(Box::new(encoder), stage)?.split();
    let mut file = std::io::BufReader::new(std::fs::File::open(path)?);
    let reader = std::thread::spawn(move || -> Result<u64, String> {
        let mut out = 0u64;
        for chunk in output {
            chunk.map_err(|e| e.to_string())?;
            out += 1;
        }
        Ok(out)
    });
    for pts in 0..frames {
        let mut slot = producer.reserve()?;
        file.read_exact(&mut slot)?;
        let _ = slot.commit(pts as i64, false)?;
    }
    producer.finish()?;
    let out = reader.join().map_err(|_| "the reader thread panicked")??;
    if out != frames {
        return Err(format!("{out} of {frames} frames came out").into());
    }
    Ok(())
}

/// Submit-to-chunk latency through the stage at 1080p, paced at 30 fps: each frame is written
/// into its slot and committed at its tick, and the time from the commit to its chunk leaving
/// the output is taken per frame. Prints `latency <label> p50 <ms> p99 <ms> max <ms>`.
#[allow(dead_code)] // Not every bench that includes this file runs the stage.
pub fn stage_latency(
    frames: u64,
    zero_latency: bool,
    options: &NvencOptions,
) -> Result<(), Box<dyn std::error::Error>> {
    use nvencode::pipeline::{EncodePipeline, PipelineOptions, SlotMemory};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    let tune = zero_latency.then_some(nvencode::Tune::Zerolatency);
    let config = EncoderConfig::new(1920, 1080).with_tune(tune);
    let encoder = NvencEncoder::with_options(&config, options)?;
    let stage = PipelineOptions::default().with_slot_memory(SlotMemory::Pinned);
    let (mut producer, output) = EncodePipeline::with_encoder(Box::new(encoder), stage)?.split();
    let committed: Arc<Mutex<Vec<Option<Instant>>>> =
        Arc::new(Mutex::new(vec![None; frames as usize]));
    let seen = Arc::clone(&committed);
    let reader = std::thread::spawn(move || -> Result<Vec<f64>, String> {
        let mut latencies = Vec::new();
        for chunk in output {
            let chunk = chunk.map_err(|e| e.to_string())?;
            let at = seen
                .lock()
                .map_err(|_| "poisoned")?
                .get(chunk.pts as usize)
                .copied()
                .flatten()
                .ok_or("a chunk for a frame never committed")?;
            latencies.push(at.elapsed().as_secs_f64() * 1e3);
        }
        Ok(latencies)
    });
    let pattern = TestPattern::new(Resolution::new(1920, 1080), PixelFormat::I420)?;
    let clip: Vec<Vec<u8>> = (0..8).map(|i| pattern.frame(i)).collect();
    let interval = std::time::Duration::from_secs_f64(1.0 / 30.0);
    let start = Instant::now();
    for pts in 0..frames {
        if let Some(wait) = (start + interval * pts as u32).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut slot = producer.reserve()?;
        slot.copy_from_slice(&clip[pts as usize % clip.len()]);
        let now = Instant::now();
        if let Some(at) = committed
            .lock()
            .map_err(|_| "poisoned")?
            .get_mut(pts as usize)
        {
            *at = Some(now);
        }
        let _ = slot.commit(pts as i64, false)?;
    }
    producer.finish()?;
    let mut latencies = reader.join().map_err(|_| "the reader thread panicked")??;
    if latencies.len() as u64 != frames {
        return Err(format!("{} of {frames} frames came out", latencies.len()).into());
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let label = if zero_latency {
        "zerolatency"
    } else {
        "default"
    };
    println!(
        "latency {label} p50 {:.2} p99 {:.2} max {:.2}",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    Ok(())
}

/// Adds to `failed` every violation and leak the emulator reported, and a missing report: a
/// figure from a broken run is not a figure.
pub fn check_emulator(emu: &EmuDriver, failed: &mut Vec<String>) {
    let report = emu.report();
    for v in &report.violations {
        failed.push(format!("emulator violation: {v}"));
    }
    for leak in report.leaks() {
        failed.push(format!("emulator leak: {leak}"));
    }
    if report.live.is_empty() {
        failed.push("the emulator wrote no report: was it loaded?".into());
    }
}
