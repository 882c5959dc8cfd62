//! Encodes a raw YUV file (or a built-in synthetic 1080p clip) to an H.264 Annex B stream.
//!
//! ```text
//! cargo run --release --example encode_yuv                      # built-in clip -> out.h264
//! cargo run --release --example encode_yuv -- in.yuv --size 1280x720 --pix-fmt nv12 -o out.h264
//! cargo run --release --example encode_yuv -- --size 1280x720 --bitrate 2M --rc cbr -e x264
//! cargo run --release --example encode_yuv -- -o - --format mp4 | ffplay -   # fragmented MP4
//! ffplay out.h264
//! ```
//! Options follow ffmpeg's and x264's names. Set `RUST_LOG=debug` to see backend selection.
//! Everything meant for people (progress, the summary, errors) goes to standard error, so
//! `-o -` gives a clean stream on standard output. The first Ctrl-C (or SIGTERM) stops reading,
//! flushes the encoder and writes every frame already read, then exits with status 130; a second
//! one exits at once.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use nvencode::pipeline::{EncodePipeline, FrameProducer, PipelineOptions, Received};
use nvencode::testsrc::TestPattern;
use nvencode::{
    Codec, EncodedChunk, EncoderChoice, EncoderConfig, FrameRate, PixelFormat, Preset, Resolution,
    Tune, VideoEncoder,
};

#[derive(Parser, Debug)]
#[command(about = "Encode raw YUV to H.264 or HEVC (Annex B or MP4) with NVENC, x264 or x265")]
struct Args {
    /// Raw YUV input file (`-` for stdin). Without one, a synthetic moving 1080p clip is encoded.
    input: Option<PathBuf>,
    /// Output file: MP4 for a `.mp4`/`.m4v` name (or --format mp4), Annex B otherwise
    /// (`-` for standard output). Annex B is written under a temporary name beside it and renamed
    /// into place when the run ends; crash-safe MP4 as soon as it holds its first fragment.
    #[arg(short, long, default_value = "out.h264")]
    output: PathBuf,
    #[command(flatten)]
    mp4: output::Mp4Args,
    /// Split the output into files of SECONDS each (FFmpeg's name), each starting with an IDR,
    /// each playable on its own and starting at time 0; the output is then a pattern such as
    /// seg-%03d.mp4 (files numbered from 0). Each file's name is printed when it is complete.
    #[arg(long = "segment-time", value_name = "SECONDS")]
    segment_time: Option<f64>,
    /// Frame size, WIDTHxHEIGHT (default 1920x1080).
    #[arg(short = 's', long = "size", value_parser = parse::<Resolution>)]
    size: Option<Resolution>,
    /// Codec: h264 or hevc (h265 is another name for it); FFmpeg's `-c:v hevc` works too. An
    /// encoder named with -e must encode it.
    #[arg(long, default_value = "h264", value_parser = parse::<Codec>)]
    codec: Codec,
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
    /// Serve Prometheus metrics at http://HOST:PORT/metrics while encoding (port 0: any free
    /// port, printed to stderr).
    #[arg(long = "metrics-addr", value_name = "HOST:PORT", value_parser = metrics_http::parse_addr)]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    rate: RateArgs,
}

/// Rate control, as ffmpeg spells it. Without any of these: constant quality at `--crf`.
#[derive(clap::Args, Debug)]
struct RateArgs {
    /// Target bit rate: 2M, 2500k or bits/s (implies --rc cbr, or vbr with --maxrate).
    #[arg(long, value_parser = parse::<nvencode::Bitrate>)]
    bitrate: Option<nvencode::Bitrate>,
    /// Maximum bit rate for --rc vbr (2M, 2500k, bits/s).
    #[arg(long, value_parser = parse::<nvencode::Bitrate>)]
    maxrate: Option<nvencode::Bitrate>,
    /// VBV buffer size in bits (1M, 500k, ...); default one second at the peak rate.
    #[arg(long, value_parser = parse::<nvencode::Bitrate>)]
    bufsize: Option<nvencode::Bitrate>,
    /// Rate control: cq (constant quality, --crf), cbr, vbr or cqp (constant QP, --qp).
    #[arg(long, value_parser = parse::<nvencode::RateControlMode>)]
    rc: Option<nvencode::RateControlMode>,
    /// Constant QP, 0-51 (implies --rc cqp).
    #[arg(long)]
    qp: Option<u32>,
}

impl RateArgs {
    /// The rate control these options ask for; a value that does not apply to the mode is an
    /// error, not ignored.
    fn rate_control(&self) -> Result<nvencode::RateControl, nvencode::ConfigError> {
        nvencode::RateControl::from_parts(
            self.rc,
            self.bitrate,
            self.maxrate,
            self.bufsize.map(nvencode::Bitrate::bps),
            self.qp,
        )
    }
}

#[path = "support/cli.rs"]
mod cli;
#[path = "support/metrics_http.rs"]
mod metrics_http;
#[path = "support/output.rs"]
mod output;

use output::{Ending, Mp4Params, Sink};

fn parse<T: std::str::FromStr<Err = nvencode::ConfigError>>(s: &str) -> Result<T, String> {
    s.parse().map_err(|e: nvencode::ConfigError| e.to_string())
}

type BoxError = Box<dyn std::error::Error>;

/// Ring slots between the reading thread and the encoder: enough to absorb a slow read (a disk
/// seek, a pipe's writer pausing) without stalling the encoder; see the README's ring sizes.
const RING_SLOTS: usize = 8;

fn main() -> ExitCode {
    cli::init_logging();
    let args = Args::parse_from(cli::args());
    // First SIGINT/SIGTERM: stop the source, encode and write everything it gave, finish the
    // output, exit 130. Second: finish the output with what was encoded. Third: exit at once.
    let stop = cli::interrupt_flag("finishing the frames already read");
    match run(args, &stop) {
        Ok(Outcome::Finished) => ExitCode::SUCCESS,
        Ok(Outcome::Interrupted) => ExitCode::from(cli::INTERRUPTED),
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// How a run that did not fail ended.
enum Outcome {
    Finished,
    Interrupted,
}

/// Where frames come from.
enum Source {
    Synthetic {
        pattern: TestPattern,
        frames: u64,
    },
    Raw {
        reader: Box<dyn Read + Send>,
        name: String,
        /// Standard input: wait for it with `poll`, so an interrupt is seen between frames.
        is_stdin: bool,
    },
}

/// Opens the input and checks it before anything is written: an input that cannot be read must
/// not cost the user an existing output file.
fn open_input(
    args: &Args,
    resolution: Resolution,
    frame_len: usize,
) -> Result<(Source, Option<u64>, Option<fs::Metadata>), BoxError> {
    match &args.input {
        None => Ok((
            Source::Synthetic {
                pattern: TestPattern::new(resolution, args.pix_fmt)?,
                frames: args.frames,
            },
            Some(args.frames),
            None,
        )),
        Some(path) if path.as_os_str() == "-" => {
            let meta = stdin_metadata();
            Ok((
                Source::Raw {
                    reader: Box::new(io::stdin()),
                    name: "standard input".into(),
                    is_stdin: true,
                },
                None,
                meta,
            ))
        }
        Some(path) => {
            let file = File::open(path)
                .map_err(|e| format!("cannot open input {}: {e}", path.display()))?;
            let meta = file
                .metadata()
                .map_err(|e| format!("cannot read input {}: {e}", path.display()))?;
            if meta.is_dir() {
                return Err(format!(
                    "input {} is a directory, not a raw YUV file",
                    path.display()
                )
                .into());
            }
            let total = meta.is_file().then(|| meta.len() / frame_len as u64);
            Ok((
                Source::Raw {
                    reader: Box::new(io::BufReader::new(file)),
                    name: path.display().to_string(),
                    is_stdin: false,
                },
                total,
                Some(meta),
            ))
        }
    }
}

fn stdin_metadata() -> Option<fs::Metadata> {
    File::from(io::stdin().as_fd().try_clone_to_owned().ok()?)
        .metadata()
        .ok()
}

fn run(args: Args, stop: &Arc<AtomicBool>) -> Result<Outcome, BoxError> {
    let resolution = args.size.unwrap_or(Resolution::new(1920, 1080));
    let config = EncoderConfig::new(resolution.width, resolution.height)
        .with_codec(args.codec)
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

    // Input first, then the output (which refuses to be the input), then the encoder: nothing
    // is created or replaced before all three are known to work.
    let (source, total_frames, input_meta) = open_input(&args, resolution, frame_len)?;
    if total_frames == Some(0) {
        let what = match &source {
            Source::Raw { name, .. } => format!("input {name} holds no whole frame"),
            Source::Synthetic { .. } => "--frames 0".into(),
        };
        return Err(format!("{what}: nothing to encode, no output written").into());
    }
    let mp4 = Mp4Params {
        resolution,
        time_base: (config.frame_rate.den, config.frame_rate.num),
        args: args.mp4.clone(),
    };
    let mut segments = match args.segment_time {
        Some(secs) => Some(output::Segments::new(&args.output, secs, mp4.time_base)?),
        None => None,
    };
    let first = match &segments {
        Some(s) => s.name(0)?,
        None => args.output.clone(),
    };
    let mut sink = Sink::open(&first, input_meta.as_ref(), mp4.clone())?;
    if let Some(addr) = args.metrics_addr {
        metrics_http::serve(addr)?;
    }
    // Frames go through the pipeline stage: this thread reads them into ring slots while the
    // stage's encoder thread encodes, and the main thread writes the chunks.
    let ring_stats: Arc<std::sync::OnceLock<nvencode::ring_buffer::RingStats>> = Arc::default();
    let depth_stats = Arc::clone(&ring_stats);
    let encoder = nvencode::metrics::Metered::new(nvencode::open_encoder(args.encoder, &config)?)
        .with_queue_depth(move || depth_stats.get().map_or(0, |s| s.queue_depth()));
    let (producer, output) = EncodePipeline::with_encoder(
        Box::new(encoder),
        PipelineOptions::default().with_ring_slots(RING_SLOTS),
    )?
    .split();
    let _ = ring_stats.set(output.stats());
    let kind = output.encoder_kind();

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
    let name = match &source {
        Source::Raw { name, .. } => name.clone(),
        Source::Synthetic { .. } => "the built-in clip".into(),
    };
    let reading = {
        let stop = Arc::clone(stop);
        let pix_fmt = args.pix_fmt;
        let progress = progress.clone();
        let keyframes = segments.as_ref().map(|s| s.segmenter);
        std::thread::Builder::new()
            .name("encode_yuv-reader".into())
            .spawn(move || {
                let at = Stage {
                    stop: &stop,
                    progress: &progress,
                    resolution,
                    pix_fmt,
                    keyframes,
                };
                read_into_stage(source, producer, &at)
            })?
    };
    let mut chunks: Vec<EncodedChunk> = Vec::new();
    let mut bytes_out: u64 = 0;
    let mut chunks_out: u64 = 0;
    // Every chunk the encoder delivered is written; an in-band error (after them) is reported
    // once the stream has ended.
    let mut flushed: Result<(), nvencode::pipeline::PipelineError> = Ok(());
    let mut output = output;
    let mut quit = false;
    loop {
        match output.recv_timeout(cli::POLL) {
            Received::Item(Ok(chunk)) => {
                if let Some(segments) = &mut segments {
                    if segments.splitter.starts_segment(&chunk) {
                        let done = sink.finish(Ending::Complete)?;
                        eprintln!("segment complete: {done}");
                        let next = segments.next_name()?;
                        sink = Sink::open(&next, input_meta.as_ref(), mp4.clone())?;
                    }
                }
                chunks.push(chunk);
                bytes_out += sink.write_chunks(&mut chunks)?;
                chunks_out += 1;
            }
            Received::Item(Err(e)) => flushed = Err(e),
            Received::End => break,
            Received::Pending if cli::quit_now() => {
                // A second interrupt: what the encoder still holds is given up (a hung driver
                // call may keep it until its deadline); the output is finished with the rest.
                quit = true;
                break;
            }
            Received::Pending => {}
        }
    }
    let Reading {
        frames_in,
        failure,
        interrupted,
    } = if quit {
        // The reader may be waiting for a ring slot the encoder never frees: not joined.
        Reading {
            frames_in: output.stats().committed() as u64,
            failure: None,
            interrupted: true,
        }
    } else {
        reading.join().map_err(|_| "the reading thread panicked")?
    };
    let failure = failure.map(|f| -> BoxError { f.replace("{sink}", &sink.name()).into() });
    let failed = failure.is_some() || flushed.is_err();
    if frames_in == 0 && !failed && !interrupted {
        return Err(format!("input {name} is empty: nothing to encode, no output written").into());
    }
    // A run that ends with nothing encoded, by an error or an early interrupt, replaces nothing.
    let ending = if failed || chunks_out == 0 {
        Ending::Failed { chunks: chunks_out }
    } else {
        Ending::Complete
    };
    let output = match sink.finish(ending) {
        Ok(output) => output,
        // The run's own error comes first; the output's is said beside it.
        Err(e) if failed => {
            eprintln!("{e}");
            "an unfinished output".to_owned()
        }
        Err(e) => return Err(e.into()),
    };
    progress.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-9);

    eprintln!(
        "{}: {} frames {} {} in {:.2} s, {:.1} fps, {:.1} MB/s raw input, {:.2} MB out -> {}",
        kind,
        frames_in,
        resolution,
        args.pix_fmt,
        secs,
        frames_in as f64 / secs,
        (frames_in * frame_len as u64) as f64 / 1e6 / secs,
        bytes_out as f64 / 1e6,
        output
    );
    match (failure, flushed) {
        (Some(e), Err(flush_error)) => {
            eprintln!("the flush after the error failed too: {flush_error}");
            Err(e)
        }
        (Some(e), Ok(())) => Err(e),
        (None, Err(e)) => Err(e.into()),
        (None, Ok(())) if quit => {
            eprintln!(
                "quit after {frames_in} frames: {chunks_out} encoded frames were written to \
                 {output}; the rest were given up"
            );
            Ok(Outcome::Interrupted)
        }
        (None, Ok(())) if interrupted && chunks_out == 0 => {
            eprintln!("interrupted before any frame was encoded: {output}");
            Ok(Outcome::Interrupted)
        }
        (None, Ok(())) if interrupted => {
            eprintln!(
                "interrupted after {frames_in} frames: every frame read was encoded and written \
                 to {output}"
            );
            Ok(Outcome::Interrupted)
        }
        (None, Ok(())) => Ok(Outcome::Finished),
    }
}

/// What the reading thread did.
struct Reading {
    frames_in: u64,
    /// Why reading ended early (`{sink}` stands for the output's name).
    failure: Option<String>,
    interrupted: bool,
}

/// Reads frames straight into the stage's ring slots until the input ends, an interrupt, an
/// error, or the stage stops taking frames (its error comes out on the output side); then ends
/// the stage's input.
/// What the reading thread works with besides its source and the stage.
struct Stage<'a> {
    stop: &'a AtomicBool,
    progress: &'a ProgressBar,
    resolution: Resolution,
    pix_fmt: PixelFormat,
    /// Split recording: which frames must be IDRs.
    keyframes: Option<nvencode::sink::Segmenter>,
}

fn read_into_stage(mut source: Source, mut producer: FrameProducer, at: &Stage<'_>) -> Reading {
    let Stage {
        stop,
        progress,
        resolution,
        pix_fmt,
        mut keyframes,
    } = *at;
    let frame_len = producer.frame_len();
    let mut frames_in: u64 = 0;
    let mut failure = None;
    let mut interrupted = false;
    let mut synthetic = Vec::new();
    loop {
        if stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        if let Source::Synthetic { frames, .. } = &source {
            if frames_in == *frames {
                break;
            }
        }
        if matches!(source, Source::Raw { is_stdin: true, .. }) && !stdin_ready(stop) {
            interrupted = true;
            break;
        }
        // Blocks while the ring is full: the encoder sets the pace. It ends when the encoder
        // thread stops (an encoder error, reported by the output side).
        let Ok(mut slot) = producer.reserve() else {
            break;
        };
        match &mut source {
            Source::Synthetic { pattern, .. } => {
                pattern.fill(frames_in, &mut synthetic);
                slot.copy_from_slice(&synthetic);
            }
            Source::Raw { reader, name, .. } => match read_frame(reader.as_mut(), &mut slot) {
                Ok(0) => break,
                Ok(n) if n < frame_len => {
                    failure = Some(format!(
                        "input ends with a partial frame at byte offset {}: {n} of {frame_len} \
                         bytes ({resolution} {pix_fmt}); the {frames_in} whole frames before it \
                         were encoded and {{sink}} is a valid stream",
                        frames_in * frame_len as u64,
                    ));
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    failure = Some(format!("cannot read input {name}: {e}"));
                    break;
                }
            },
        }
        let pts = frames_in as i64;
        let force = keyframes.as_mut().is_some_and(|k| k.force_keyframe(pts));
        if slot.commit(pts, force).is_err() {
            break;
        }
        frames_in += 1;
        progress.inc(1);
    }
    // An error here means the stage already stopped; its reason is on the output side.
    let _ = producer.finish();
    Reading {
        frames_in,
        failure,
        interrupted,
    }
}

/// Waits until standard input has data (or its end) to read, looking at `stop` every 100 ms, so an
/// interrupt between frames is seen without another frame arriving. `false`: stop was requested.
/// A `poll` error returns `true` and leaves the outcome to the read.
fn stdin_ready(stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let mut fds = [libc::pollfd {
            fd: libc::STDIN_FILENO,
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: `fds` is a valid array of one initialized pollfd, alive for the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) };
        if ready != 0 {
            return true;
        }
    }
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

// Keep the trait in scope for `encode_frame`/`flush` on the boxed encoder.
#[allow(unused_imports)]
use VideoEncoder as _;
