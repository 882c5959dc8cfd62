//! Prints which encoders this machine can use, codec by codec (H.264, HEVC), and why the others
//! cannot: a table, or JSON with `--json` (for a GPU CI runner's log).
//!
//! ```text
//! cargo run --example detect
//! cargo run --example detect -- --json
//! cargo run --example detect -- --require nvenc        # CI gate: exit 1, with the reason, without it
//! cargo run --example detect -- --require nvenc:hevc   # the same for one codec
//! ```

use std::process::ExitCode;

use clap::Parser;
use nvencode::{Codec, EncoderKind};

#[derive(Parser, Debug)]
#[command(about = "Detect the encoders available on this machine, for each codec")]
struct Args {
    /// Print the whole report as JSON.
    #[arg(long)]
    json: bool,
    /// Fail (exit status 1, the reason on stderr) unless this encoder is available, as
    /// `ENCODER` (for the first codec it encodes: H.264 where it does) or `ENCODER:CODEC`
    /// (`nvenc:hevc`); may be given several times or as a comma-separated list. Encoders: nvenc,
    /// x264, x265, qsv, vaapi, videotoolbox, ffmpeg-nvenc, ffmpeg-x264, ffmpeg-x265; codecs:
    /// h264, hevc.
    #[arg(long, value_delimiter = ',', value_parser = parse_requirement)]
    require: Vec<(EncoderKind, Codec)>,
}

fn parse_requirement(s: &str) -> Result<(EncoderKind, Codec), String> {
    let text = |e: nvencode::ConfigError| e.to_string();
    let (kind, codec) = match s.split_once(':') {
        Some((kind, codec)) => (
            kind.parse().map_err(text)?,
            Some(codec.parse().map_err(text)?),
        ),
        None => (s.parse().map_err(text)?, None),
    };
    let codec = match codec {
        Some(codec) => codec,
        None => *nvencode::encoder::codecs::codecs_of(kind)
            .first()
            .ok_or_else(|| format!("{kind} encodes no codec"))?,
    };
    nvencode::encoder::codecs::check(kind, codec).map_err(text)?;
    Ok((kind, codec))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let report = nvencode::detect();
    if let Err(e) = print(&args, report) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let mut missing = 0;
    for &(kind, codec) in &args.require {
        match report.candidate(kind, codec) {
            Some(c) if c.available => {}
            Some(c) => {
                missing += 1;
                eprintln!(
                    "required encoder {kind} for {codec} is unavailable: {}",
                    c.reason.as_deref().unwrap_or("no reason recorded")
                );
            }
            // Not among auto-selection's candidates (ffmpeg-nvenc, ffmpeg-x264): judged by
            // encoding one frame with it.
            None => {
                if let Err(reason) = probe_encode(kind, codec) {
                    missing += 1;
                    eprintln!("required encoder {kind} for {codec} is unavailable: {reason}");
                }
            }
        }
    }
    if missing > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Opens `kind` and encodes one 256x256 frame of `codec` with it.
fn probe_encode(kind: EncoderKind, codec: Codec) -> Result<(), String> {
    let config = nvencode::EncoderConfig::new(256, 256).with_codec(codec);
    let frame = vec![128u8; config.validate().map_err(|e| e.to_string())?];
    let mut encoder = nvencode::open_backend(kind, &config).map_err(|e| e.to_string())?;
    let mut chunks = Vec::new();
    encoder
        .encode_frame(&frame, &mut chunks)
        .and_then(|()| encoder.flush(&mut chunks))
        .map_err(|e| e.to_string())?;
    match chunks.len() {
        1 => Ok(()),
        n => Err(format!("a one-frame probe encode produced {n} chunks")),
    }
}

fn print(
    args: &Args,
    report: &nvencode::DetectionReport,
) -> Result<(), Box<dyn std::error::Error>> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    println!(
        "{:<6} {:<14} {:<11} reason",
        "codec", "encoder", "available"
    );
    for c in &report.candidates {
        let reason = c.reason.as_deref().unwrap_or("");
        println!(
            "{:<6} {:<14} {:<11} {}",
            c.codec.name(),
            c.kind.name(),
            if c.available { "yes" } else { "no" },
            reason
        );
    }
    let n = &report.nvidia;
    println!();
    println!(
        "nvidia-smi: {}",
        n.nvidia_smi
            .as_ref()
            .map_or("not on PATH".to_owned(), |p| p.display().to_string())
    );
    match (&n.driver_version, &n.nvml_error) {
        (Some(v), _) => println!("driver: {v} (NVML), {} GPU(s)", n.gpus.len()),
        (None, Some(e)) => println!("driver: {e}"),
        _ => println!("driver: unknown"),
    }
    for gpu in &n.gpus {
        println!(
            "  GPU {}: {} {} encoder utilization {:?}% H.264 capacity {:?}%",
            gpu.index, gpu.name, gpu.uuid, gpu.encoder_utilization, gpu.encoder_capacity_h264
        );
    }
    match (&n.cuda_devices, &n.cuda_error) {
        (Some(d), _) => println!("CUDA: {d} device(s)"),
        (None, Some(e)) => println!("CUDA: {e}"),
        _ => {}
    }
    for (i, probe) in n.nvenc.iter().enumerate() {
        match probe {
            Ok(caps) => println!(
                "  NVENC {i}: H.264 {} HEVC {} max {}x{} B-frames {} engines {} (API {})",
                caps.h264,
                caps.hevc,
                caps.max_width,
                caps.max_height,
                caps.max_bframes,
                caps.engines,
                caps.driver_api
            ),
            Err(e) => println!("  NVENC {i}: {e}"),
        }
    }
    for gpu in &n.cuda_gpus {
        let uuid = gpu.uuid.as_deref().unwrap_or("(no UUID)");
        match &gpu.reason {
            None => println!(
                "  GPU {} {uuid}: NVENC ({})",
                gpu.ordinal,
                gpu.codecs
                    .iter()
                    .map(|c| c.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some(why) => println!("  GPU {} {uuid}: no NVENC: {why}", gpu.ordinal),
        }
    }
    let f = &report.ffmpeg;
    match &f.error {
        Some(e) => println!("ffmpeg: {e}"),
        None => println!(
            "ffmpeg: {} lists {}",
            f.version.as_deref().unwrap_or("?"),
            f.encoders.join(", ")
        ),
    }
    Ok(())
}
