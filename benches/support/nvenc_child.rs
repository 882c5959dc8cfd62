//! What the NVENC benches share: the 1080p raw clip on disk, the child that encodes it with the
//! direct backend, the children's CPU time, and the check that an emulated run was clean.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use nvenc::nvenc::{NvencEncoder, NvencOptions};
use nvenc::testsrc::TestPattern;
use nvenc::{EncoderConfig, PixelFormat, Resolution, VideoEncoder};
use nvenc_emu_harness::EmuDriver;

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

/// The child's work: encodes the raw 1080p file with the direct backend, frame by frame from
/// disk, and checks that every frame came out.
pub fn encode_file(
    path: &str,
    frames: u64,
    options: &NvencOptions,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = EncoderConfig::new(1920, 1080);
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
