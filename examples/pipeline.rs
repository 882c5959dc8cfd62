//! A network source feeding the pipeline stage: a sender thread streams raw frames of the built-in
//! clip over loopback TCP with injected jitter (bursts and stalls); a tokio receiver reads the
//! socket asynchronously straight into ring slots; the stage's encoder thread encodes; the main
//! thread writes MP4 (`.mp4`) or Annex B (anything else) and prints one summary line.
//!
//! ```text
//! cargo run --release --example pipeline -- --frames 300 --size 1280x720 --jitter-ms 0..200 \
//!     --encoder x264 --preset ultrafast -o out.mp4
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use nvencode::pipeline::{EncodePipeline, FrameProducer, PipelineOptions, Received as Next};
use nvencode::testsrc::TestPattern;
use nvencode::{
    EncoderConfig, EncoderKind, GpuEncoderConfig, PixelFormat, Preset, Resolution, Tune,
};
use tokio::io::AsyncReadExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[path = "support/cli.rs"]
mod cli;
#[path = "support/output.rs"]
mod destination;

use destination::{Ending, Mp4Params, Sink};

/// Loopback network source -> ring -> encoder thread -> MP4/Annex B.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Frames to send.
    #[arg(long, default_value_t = 300)]
    frames: u64,
    /// Frame size, WxH.
    #[arg(long, default_value = "1280x720", value_parser = parse::<Resolution>)]
    size: Resolution,
    /// Frame rate the sender keeps on average.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Range of stall lengths in milliseconds, A..B; after a stall the sender bursts to catch up.
    #[arg(long = "jitter-ms", default_value = "0..0", value_parser = parse_range)]
    jitter_ms: (u64, u64),
    /// Ring slots.
    #[arg(long, default_value_t = 8)]
    ring: usize,
    /// Preferred encoder (auto, nvenc, x264, ffmpeg-x264, ...); the fallback chain follows.
    #[arg(short = 'e', long, default_value = "auto")]
    encoder: String,
    /// Preset (ultrafast ... placebo).
    /// Codec: h264 or hevc (h265 is another name for it); FFmpeg's `-c:v hevc` works too.
    #[arg(long, default_value = "h264", value_parser = parse::<nvencode::Codec>)]
    codec: nvencode::Codec,
    #[arg(long, default_value = "medium", value_parser = parse::<Preset>)]
    preset: Preset,
    /// Tune (zerolatency, fastdecode, ...).
    #[arg(long, value_parser = parse::<Tune>)]
    tune: Option<Tune>,
    /// Consecutive B-frames (default: the preset's; none with --tune zerolatency).
    #[arg(long)]
    bframes: Option<u32>,
    /// Output file: .mp4 for MP4 (crash-safe: fragmented, finalized at the end), anything else
    /// Annex B; `-` for standard output (with --format mp4 for MP4).
    #[arg(short = 'o', long, default_value = "out.mp4")]
    output: PathBuf,
    #[command(flatten)]
    mp4: destination::Mp4Args,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
    /// Streams to run side by side, each its own source, pipeline and output, with one summary
    /// line each (naming the GPU NVENC placed it on). With more than one, stream k writes
    /// `NAME-k.EXT` beside `NAME.EXT` (`out.mp4`: `out-0.mp4`, `out-1.mp4`, ...).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    streams: u32,
}

fn parse<T: std::str::FromStr<Err = nvencode::ConfigError>>(s: &str) -> Result<T, String> {
    s.parse().map_err(|e: nvencode::ConfigError| e.to_string())
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("jitter range {s:?} (expected A..B in milliseconds, A <= B, e.g. 0..200)");
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let (a, b) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a > b {
        return Err(bad());
    }
    Ok((a, b))
}

/// xorshift64: the jitter needs no cryptographic randomness.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        if n == 0 {
            0
        } else {
            self.0 % n
        }
    }
}

/// Streams `frames` frames at `fps` on average; one frame in ten is preceded by a stall of A..B ms,
/// after which the frames that fell behind go out back to back (a burst).
/// Streams the frames; stops early (closing the socket, so the receiver sees the end) once
/// `stop` is set by an interrupt.
fn sender(
    addr: std::net::SocketAddr,
    args: &Args,
    pattern: &TestPattern,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut socket = std::net::TcpStream::connect(addr)?;
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.fps.max(1)));
    let (lo, hi) = args.jitter_ms;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    // A handful of distinct frames, rendered once, so the sender is never the bottleneck.
    let clip: Vec<Vec<u8>> = (0..30).map(|i| pattern.frame(i)).collect();
    let start = Instant::now();
    for i in 0..args.frames {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if hi > 0 && rng.below(10) == 0 {
            std::thread::sleep(Duration::from_millis(lo + rng.below(hi - lo + 1)));
        }
        let due = start + interval.mul_f64(i as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        socket.write_all(&clip[(i % 30) as usize])?;
    }
    socket.flush()
}

struct Received {
    frames: u64,
    highest_depth: usize,
    /// Per frame, milliseconds the receiver spent in `reserve` and `commit` (not in the socket
    /// read): the stage's cost to the producer, waits for a free slot included.
    submit_ms: Vec<f64>,
}

/// Reads whole frames from the socket straight into ring slots.
async fn receive(
    listener: tokio::net::TcpListener,
    mut producer: FrameProducer,
    submitted: Arc<Vec<AtomicU64>>,
    epoch: Instant,
) -> Result<Received, BoxError> {
    let (mut socket, _) = listener.accept().await?;
    let stats = producer.stats();
    let mut got = Received {
        frames: 0,
        highest_depth: 0,
        submit_ms: Vec::new(),
    };
    loop {
        let reserving = Instant::now();
        let mut slot = producer.reserve_async().await?;
        let reserved = reserving.elapsed();
        match socket.read_exact(&mut slot).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        let pts = got.frames as i64;
        if let Some(at) = submitted.get(got.frames as usize) {
            at.store(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        let committing = Instant::now();
        let _ = slot.commit(pts, false)?;
        got.submit_ms
            .push((reserved + committing.elapsed()).as_secs_f64() * 1e3);
        got.frames += 1;
        got.highest_depth = got.highest_depth.max(stats.occupied());
    }
    producer.finish()?;
    Ok(got)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// How a run that did not fail ended.
enum Outcome {
    Finished,
    Interrupted,
}

fn run(args: Args, stop: &Arc<AtomicBool>) -> Result<Outcome, BoxError> {
    let config = EncoderConfig::new(args.size.width, args.size.height)
        .with_codec(args.codec)
        .with_pixel_format(PixelFormat::I420)
        .with_frame_rate(nvencode::FrameRate::new(args.fps, 1))
        .with_preset(args.preset)
        .with_tune(args.tune)
        .with_bframes(args.bframes);
    // Checked before anything is opened, so a contradiction (B-frames with zerolatency) is
    // reported as the configuration error it is.
    config.validate()?;
    let mut gpu = GpuEncoderConfig::default();
    gpu.ring_buffer_size = args.ring;
    gpu.preferred_encoder = match args.encoder.as_str() {
        "auto" => None,
        name => Some(name.parse::<EncoderKind>()?),
    };
    let pattern = TestPattern::new(args.size, PixelFormat::I420)?;
    let pipeline =
        EncodePipeline::open_with(&config, &gpu, PipelineOptions::from_gpu_config(&gpu))?;
    let (producer, output) = pipeline.split();

    // Written under a temporary name and put in place at the end (an existing file is never
    // replaced by less); `/dev/stdout` and pipes directly. MP4 for `.mp4` / `.m4v`.
    let mut sink = Sink::open(
        &args.output,
        None,
        Mp4Params {
            resolution: args.size,
            time_base: output.time_base(),
            args: args.mp4.clone(),
        },
    )?;

    let epoch = Instant::now();
    let submitted: Arc<Vec<AtomicU64>> =
        Arc::new((0..args.frames).map(|_| AtomicU64::new(0)).collect());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let receiver = {
        let submitted = Arc::clone(&submitted);
        std::thread::spawn(move || runtime.block_on(receive(listener, producer, submitted, epoch)))
    };
    let send_args = args.clone();
    let send_stop = Arc::clone(stop);
    let sender = std::thread::spawn(move || sender(addr, &send_args, &pattern, &send_stop));
    let progress = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(args.frames);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} frames",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    let mut output = output;
    let opened = output.encoder_kind();
    let stats = output.stats();
    let mut latencies_ms = Vec::with_capacity(args.frames as usize);
    let mut frames_out = 0u64;
    // One buffer for the whole stream: `write_chunks` drains it.
    let mut pending = Vec::with_capacity(1);
    let mut failure: Option<BoxError> = None;
    let mut quit = false;
    loop {
        let item = match output.recv_timeout(cli::POLL) {
            Next::Item(item) => item,
            Next::End => break,
            Next::Pending if cli::quit_now() => {
                // A second interrupt: what the encoder still holds is given up (a hung driver
                // call may keep it until its deadline); the output is finished with the rest.
                quit = true;
                break;
            }
            Next::Pending => continue,
        };
        match item {
            Ok(chunk) => {
                let now = epoch.elapsed().as_nanos() as u64;
                if let Some(at) = usize::try_from(chunk.pts)
                    .ok()
                    .and_then(|i| submitted.get(i))
                {
                    latencies_ms
                        .push((now.saturating_sub(at.load(Ordering::Relaxed))) as f64 / 1e6);
                }
                pending.push(chunk);
                sink.write_chunks(&mut pending)?;
                frames_out += 1;
                progress.inc(1);
            }
            Err(e) => failure = Some(e.into()),
        }
    }
    progress.finish_and_clear();
    // A run that ends with nothing encoded, by an error or an early interrupt, replaces nothing.
    let ending = if failure.is_some() || frames_out == 0 {
        Ending::Failed { chunks: frames_out }
    } else {
        Ending::Complete
    };
    let finished = sink.finish(ending);
    if quit {
        // The sender and receiver may wait for ring slots the encoder never frees: not joined.
        eprintln!(
            "quit: {frames_out} encoded frames were written to {}; the rest were given up",
            finished?
        );
        return Ok(Outcome::Interrupted);
    }
    let sent_result = sender.join().map_err(|_| "sender thread panicked")?;
    let received = receiver.join().map_err(|_| "receiver thread panicked")?;
    // The stream's own error (the encoder's, in band after every chunk before it) is what the
    // user sees; the receiver's "encoder stopped", the sender's broken pipe and an output that
    // cannot be finished without frames all follow from it.
    if let Some(failure) = failure {
        match &finished {
            Ok(written_to) => eprintln!("{frames_out} frames written: {written_to}"),
            Err(e) => eprintln!("the output could not be finished either: {e}"),
        }
        return Err(failure);
    }
    let written_to = finished?;
    let mut received = received?;
    sent_result?;
    latencies_ms.sort_by(f64::total_cmp);
    received.submit_ms.sort_by(f64::total_cmp);
    // The output has ended, so it knows which encoder finished the stream.
    let mut encoder = match output.finished_by() {
        Some(last) if last != opened => format!("{opened}->{last}"),
        _ => opened.to_string(),
    };
    if let Some(gpu) = output.gpu() {
        encoder.push_str(&format!(" on GPU {gpu}"));
    }
    // On standard error, like the progress and the errors: standard output may be the stream.
    eprintln!(
        "encoder {encoder}: frames in {}, frames out {frames_out}, lost {}, highest ring depth \
         {}/{}, producer blocked {:.1} ms, submit (reserve+commit) p50 {:.3} ms p99 {:.3} ms, \
         submit-to-chunk latency p50 {:.1} ms p99 {:.1} ms -> {}",
        received.frames,
        args.frames.saturating_sub(frames_out),
        received.highest_depth,
        stats.capacity(),
        stats.producer_blocked().as_secs_f64() * 1e3,
        percentile(&received.submit_ms, 0.50),
        percentile(&received.submit_ms, 0.99),
        percentile(&latencies_ms, 0.50),
        percentile(&latencies_ms, 0.99),
        written_to
    );
    if stop.load(Ordering::SeqCst) {
        eprintln!(
            "interrupted after {} frames: every frame received was encoded and written",
            received.frames
        );
        return Ok(Outcome::Interrupted);
    }
    Ok(Outcome::Finished)
}

fn main() -> ExitCode {
    cli::init_logging();
    let args = Args::parse_from(cli::args());
    // First SIGINT/SIGTERM: stop the source, encode and write everything it gave, finish the
    // output, exit 130. Second: finish the output with what was encoded. Third: exit at once.
    let stop = cli::interrupt_flag("finishing the frames already received");
    if args.streams == 1 {
        return exit_code(&[run(args, &stop)]);
    }
    let streams = match per_stream(&args) {
        Ok(streams) => streams,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Side by side: each stream on its own thread, its summary (or error) on its own line.
    let handles: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(k, stream_args)| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let outcome = run(stream_args, &stop);
                if let Err(e) = &outcome {
                    eprintln!("stream {k}: error: {e}");
                }
                outcome.map_err(|e| -> BoxError { e.to_string().into() })
            })
        })
        .collect();
    let outcomes: Vec<_> = handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err("a stream's thread panicked".into()))
        })
        .collect();
    exit_code(&outcomes)
}

/// The arguments of each of `--streams` streams: its own output, `NAME-k.EXT`, and no progress
/// bar (the summary lines say it all).
fn per_stream(args: &Args) -> Result<Vec<Args>, BoxError> {
    let (stem, ext) = match (args.output.file_stem(), args.output.extension()) {
        (Some(stem), ext) if args.output.as_os_str() != "-" && !args.output.starts_with("/dev") => {
            (
                stem.to_string_lossy().into_owned(),
                ext.map(|e| e.to_string_lossy().into_owned()),
            )
        }
        _ => {
            return Err(format!(
                "--streams {} needs a file output to number (got {}): stream k writes NAME-k.EXT",
                args.streams,
                args.output.display()
            )
            .into())
        }
    };
    Ok((0..args.streams)
        .map(|k| {
            let mut one = args.clone();
            let name = match &ext {
                Some(ext) => format!("{stem}-{k}.{ext}"),
                None => format!("{stem}-{k}"),
            };
            one.output = args.output.with_file_name(name);
            one.quiet = true;
            one
        })
        .collect())
}

/// Failure if any stream failed; interrupted if any was; success otherwise.
fn exit_code(outcomes: &[Result<Outcome, BoxError>]) -> ExitCode {
    if outcomes.len() == 1 {
        if let Some(Err(e)) = outcomes.first() {
            eprintln!("error: {e}");
        }
    }
    if outcomes.iter().any(Result::is_err) {
        ExitCode::FAILURE
    } else if outcomes
        .iter()
        .any(|o| matches!(o, Ok(Outcome::Interrupted)))
    {
        ExitCode::from(cli::INTERRUPTED)
    } else {
        ExitCode::SUCCESS
    }
}
