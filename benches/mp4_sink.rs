//! Cost per frame of the MP4 sink's layouts, side by side in one run: the old progressive writer
//! (one `mdat`, index at the end), the crash-safe fragmented writer (default durability: each
//! fragment flushed to the OS), and the fragmented writer syncing each fragment to the disk
//! (`Durability::Sync`). Each writes the same pre-encoded chunks (x264 ultrafast, the built-in
//! 1080p clip) to a file in `MP4_BENCH_DIR` (default: the system temporary folder; put it on the
//! disk you record to), including `finish` (the finalization for the fragmented layout).
//!
//! ```text
//! cargo bench --bench mp4_sink                    # 300 frames at 30 fps, 1 s fragments
//! MP4_BENCH_FRAMES=600 MP4_BENCH_DIR=/data cargo bench --bench mp4_sink
//! ```
//! Each writer runs five times, alternating; the median counts. The encoder is not timed.

use std::io::BufWriter;
use std::path::Path;
use std::time::{Duration, Instant};

use nvencode::sink::{Durability, Layout, Mp4Options, Mp4Writer};
use nvencode::testsrc::TestPattern;
use nvencode::{EncodedChunk, EncoderConfig, Preset, VideoEncoder, X264Encoder};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn write(
    path: &Path,
    config: &EncoderConfig,
    chunks: &[EncodedChunk],
    options: Mp4Options,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let rate = config.frame_rate;
    let started = Instant::now();
    let file = BufWriter::new(std::fs::File::create(path)?);
    let mut mp4 = Mp4Writer::with_options(file, config.resolution, (rate.den, rate.num), options)?
        .with_sync();
    for chunk in chunks {
        mp4.write(chunk)?;
    }
    mp4.finish()?;
    Ok(started.elapsed())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let frames: u64 = env_or("MP4_BENCH_FRAMES", 300);
    let config = EncoderConfig::new(1920, 1080)
        .with_preset(Preset::Ultrafast)
        .with_gop_size(250);
    let pattern = TestPattern::new(config.resolution, config.pixel_format)?;
    let mut encoder = X264Encoder::new(&config)?;
    let mut chunks = Vec::new();
    let mut frame = Vec::new();
    for i in 0..frames {
        pattern.fill(i, &mut frame);
        encoder.encode_frame(&frame, &mut chunks)?;
    }
    encoder.flush(&mut chunks)?;
    let bytes: usize = chunks.iter().map(|c| c.data.len()).sum();
    let dir = match std::env::var_os("MP4_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let contenders: [(&str, Mp4Options); 3] = [
        (
            "progressive (old: one mdat, index at the end)",
            Mp4Options::default().with_layout(Layout::Progressive),
        ),
        ("fragmented, flushed (default)", Mp4Options::default()),
        (
            "fragmented, fdatasync each fragment",
            Mp4Options::default().with_durability(Durability::Sync),
        ),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); contenders.len()];
    for _ in 0..5 {
        for (i, (_, options)) in contenders.iter().enumerate() {
            let path = dir.path().join(format!("bench{i}.mp4"));
            times[i].push(write(&path, &config, &chunks, *options)?);
        }
    }
    println!(
        "{frames} frames 1920x1080 x264 ultrafast, {:.2} MB of H.264, 1 s fragments, in {}",
        bytes as f64 / 1e6,
        dir.path().display()
    );
    let mut base = None;
    for ((name, _), mut t) in contenders.iter().zip(times) {
        t.sort_unstable();
        let median = t[t.len() / 2];
        let per_frame = median.as_secs_f64() * 1e6 / frames as f64;
        let versus = base.map_or(String::new(), |b: f64| {
            format!(" ({:+.1} us/frame vs. progressive)", per_frame - b)
        });
        base.get_or_insert(per_frame);
        println!(
            "{name:48} {per_frame:8.1} us/frame, {:7.1} ms in all{versus}",
            median.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
