//! Encodes a raw YUV file (or a built-in synthetic 1080p clip) to an H.264 Annex B stream.
//!
//! ```text
//! cargo run --release --example encode_yuv                      # built-in clip -> out.h264
//! cargo run --release --example encode_yuv -- in.yuv --size 1280x720 --pix-fmt nv12 -o out.h264
//! cargo run --release --example encode_yuv -- --size 1280x720 --bitrate 2M --rc cbr -e x264
//! ffplay out.h264
//! ```
//! Options follow ffmpeg's and x264's names. Set `RUST_LOG=debug` to see backend selection.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use nvenc::testsrc::TestPattern;
use nvenc::{
    EncodedChunk, EncoderChoice, EncoderConfig, FrameRate, PixelFormat, Preset, Resolution, Tune,
    VideoEncoder,
};

#[derive(Parser, Debug)]
#[command(about = "Encode raw YUV to H.264 (Annex B) with NVENC or x264")]
struct Args {
    /// Raw YUV input file (`-` for stdin). Without one, a synthetic moving 1080p clip is encoded.
    input: Option<PathBuf>,
    /// Output H.264 Annex B file.
    #[arg(short, long, default_value = "out.h264")]
    output: PathBuf,
    /// Frame size, WIDTHxHEIGHT (default 1920x1080).
    #[arg(short = 's', long = "size", value_parser = parse::<Resolution>)]
    size: Option<Resolution>,
    /// Input pixel format: yuv420p (I420) or nv12.
    #[arg(long = "pix-fmt", default_value = "yuv420p", value_parser = parse::<PixelFormat>)]
    pix_fmt: PixelFormat,
    /// Frame rate: 30, 29.97 or 30000/1001.
    #[arg(short = 'r', long, default_value = "30", value_parser = parse::<FrameRate>)]
    fps: FrameRate,
    /// Preset: ultrafast, superfast, veryfast, faster, fast, medium, slow, slower, veryslow.
    #[arg(long, default_value = "medium", value_parser = parse::<Preset>)]
    preset: Preset,
    /// Tune: film, animation, grain, stillimage, psnr, ssim, fastdecode, zerolatency.
    #[arg(long, value_parser = parse::<Tune>)]
    tune: Option<Tune>,
    /// Constant rate factor, 0-51 (lower is better).
    #[arg(long, default_value_t = 23.0)]
    crf: f32,
    /// Keyframe interval in frames.
    #[arg(short = 'g', long, default_value_t = 250)]
    gop: u32,
    /// Consecutive B-frames (default: the preset's).
    #[arg(long)]
    bframes: Option<u32>,
    /// Encoder threads (0 = automatic; software encoders only).
    #[arg(long, default_value_t = 0)]
    threads: u32,
    /// Encoder: auto (the best that works here, with failover), nvenc, qsv, videotoolbox, vaapi,
    /// ffmpeg-nvenc, ffmpeg-x264 or x264.
    #[arg(short = 'e', long, default_value = "auto", value_parser = parse::<EncoderChoice>)]
    encoder: EncoderChoice,
    /// Frames of the built-in clip (ignored with an input file).
    #[arg(long, default_value_t = 300)]
    frames: u64,
    /// Hide the progress bar.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    rate: RateArgs,
}

/// Rate control, as ffmpeg spells it. Without any of these: constant quality at `--crf`.
#[derive(clap::Args, Debug)]
struct RateArgs {
    /// Target bit rate: 2M, 2500k or bits/s (implies --rc cbr, or vbr with --maxrate).
    #[arg(long, value_parser = parse::<nvenc::Bitrate>)]
    bitrate: Option<nvenc::Bitrate>,
    /// Maximum bit rate for --rc vbr (2M, 2500k, bits/s).
    #[arg(long, value_parser = parse::<nvenc::Bitrate>)]
    maxrate: Option<nvenc::Bitrate>,
    /// VBV buffer size in bits (1M, 500k, ...); default one second at the peak rate.
    #[arg(long, value_parser = parse::<nvenc::Bitrate>)]
    bufsize: Option<nvenc::Bitrate>,
    /// Rate control: cq (constant quality, --crf), cbr, vbr or cqp (constant QP, --qp).
    #[arg(long, value_parser = parse::<nvenc::RateControlMode>)]
    rc: Option<nvenc::RateControlMode>,
    /// Constant QP, 0-51 (implies --rc cqp).
    #[arg(long)]
    qp: Option<u32>,
}

impl RateArgs {
    /// The rate control these options ask for; a value that does not apply to the mode is an
    /// error, not ignored.
    fn rate_control(&self) -> Result<nvenc::RateControl, nvenc::ConfigError> {
        nvenc::RateControl::from_parts(
            self.rc,
            self.bitrate,
            self.maxrate,
            self.bufsize.map(nvenc::Bitrate::bps),
            self.qp,
        )
    }
}

fn parse<T: std::str::FromStr<Err = nvenc::ConfigError>>(s: &str) -> Result<T, String> {
    s.parse().map_err(|e: nvenc::ConfigError| e.to_string())
}

type BoxError = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Where frames come from.
enum Source {
    Synthetic { pattern: TestPattern, frames: u64 },
    Raw(Box<dyn Read>),
}

fn run(args: Args) -> Result<(), BoxError> {
    let resolution = args.size.unwrap_or(Resolution::new(1920, 1080));
    let config = EncoderConfig::new(resolution.width, resolution.height)
        .with_pixel_format(args.pix_fmt)
        .with_frame_rate(args.fps)
        .with_preset(args.preset)
        .with_tune(args.tune)
        .with_crf(args.crf)
        .with_gop_size(args.gop)
        .with_bframes(args.bframes)
        .with_threads(args.threads)
        .with_rate_control(args.rate.rate_control()?);
    let frame_len = config.validate()?;

    let (mut source, total_frames) = match &args.input {
        None => (
            Source::Synthetic {
                pattern: TestPattern::new(resolution, args.pix_fmt)?,
                frames: args.frames,
            },
            Some(args.frames),
        ),
        Some(path) if path.as_os_str() == "-" => (Source::Raw(Box::new(io::stdin().lock())), None),
        Some(path) => {
            let file = File::open(path)
                .map_err(|e| format!("cannot open input {}: {e}", path.display()))?;
            let total = file.metadata().ok().map(|m| m.len() / frame_len as u64);
            (Source::Raw(Box::new(io::BufReader::new(file))), total)
        }
    };

    let mut encoder = nvenc::open_encoder(args.encoder, &config)?;
    let file = File::create(&args.output)
        .map_err(|e| format!("cannot create {}: {e}", args.output.display()))?;
    let mut out = BufWriter::new(file);

    let progress = match total_frames {
        Some(n) if !args.quiet && n >= 60 => {
            let bar = ProgressBar::new(n);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} frames ({per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        }
        _ => ProgressBar::hidden(),
    };

    let started = Instant::now();
    let mut frame = vec![0u8; frame_len];
    let mut chunks: Vec<EncodedChunk> = Vec::new();
    let mut frames_in: u64 = 0;
    let mut bytes_out: u64 = 0;
    let mut truncated = None;
    loop {
        match &mut source {
            Source::Synthetic { pattern, frames } => {
                if frames_in == *frames {
                    break;
                }
                pattern.fill(frames_in, &mut frame);
            }
            Source::Raw(reader) => match read_frame(reader.as_mut(), &mut frame)? {
                0 => break,
                n if n < frame_len => {
                    truncated = Some((frames_in * frame_len as u64, n));
                    break;
                }
                _ => {}
            },
        }
        encoder.encode_frame(&frame, &mut chunks)?;
        frames_in += 1;
        bytes_out += write_chunks(&mut out, &mut chunks)?;
        progress.inc(1);
    }
    encoder.flush(&mut chunks)?;
    bytes_out += write_chunks(&mut out, &mut chunks)?;
    out.flush()?;
    progress.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-9);

    println!(
        "{}: {} frames {} {} in {:.2} s, {:.1} fps, {:.1} MB/s raw input, {:.2} MB out -> {}",
        encoder.kind(),
        frames_in,
        resolution,
        args.pix_fmt,
        secs,
        frames_in as f64 / secs,
        (frames_in * frame_len as u64) as f64 / 1e6 / secs,
        bytes_out as f64 / 1e6,
        args.output.display()
    );
    if let Some((offset, got)) = truncated {
        return Err(format!(
            "input ends with a partial frame at byte offset {offset}: {got} of {frame_len} bytes \
             ({} {}); the {frames_in} whole frames before it were encoded and {} is a valid stream",
            resolution,
            args.pix_fmt,
            args.output.display()
        )
        .into());
    }
    Ok(())
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_frame(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn write_chunks(out: &mut impl Write, chunks: &mut Vec<EncodedChunk>) -> io::Result<u64> {
    let mut bytes = 0;
    for chunk in chunks.drain(..) {
        out.write_all(&chunk.data)?;
        bytes += chunk.data.len() as u64;
    }
    Ok(bytes)
}

// Keep the trait in scope for `encode_frame`/`flush` on the boxed encoder.
#[allow(unused_imports)]
use VideoEncoder as _;
