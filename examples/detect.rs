//! Prints which H.264 encoders this machine can use and why the others cannot: a table, or JSON
//! with `--json` (for a GPU CI runner's log).
//!
//! ```text
//! cargo run --example detect
//! cargo run --example detect -- --json
//! cargo run --example detect -- --require nvenc     # CI gate: exit 1, with the reason, without it
//! ```

use std::process::ExitCode;

use clap::Parser;
use nvencode::EncoderKind;

#[derive(Parser, Debug)]
#[command(about = "Detect the H.264 encoders available on this machine")]
struct Args {
    /// Print the whole report as JSON.
    #[arg(long)]
    json: bool,
    /// Fail (exit status 1, the reason on stderr) unless this encoder is available; may be given
    /// several times or as a comma-separated list (nvenc, x264, qsv, vaapi, videotoolbox,
    /// ffmpeg-nvenc, ffmpeg-x264).
    #[arg(long, value_delimiter = ',', value_parser = parse_kind)]
    require: Vec<EncoderKind>,
}

fn parse_kind(s: &str) -> Result<EncoderKind, String> {
    s.parse().map_err(|e: nvencode::ConfigError| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let report = nvencode::detect();
    if let Err(e) = print(&args, report) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let mut missing = 0;
    for kind in &args.require {
        match report.candidate(*kind) {
            Some(c) if c.available => {}
            Some(c) => {
                missing += 1;
                eprintln!(
                    "required encoder {kind} is unavailable: {}",
                    c.reason.as_deref().unwrap_or("no reason recorded")
                );
            }
            // Not among auto-selection's candidates (ffmpeg-nvenc, ffmpeg-x264): judged by
            // encoding one frame with it.
            None => {
                if let Err(reason) = probe_encode(*kind) {
                    missing += 1;
                    eprintln!("required encoder {kind} is unavailable: {reason}");
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

/// Opens `kind` and encodes one 256x256 frame with it.
fn probe_encode(kind: EncoderKind) -> Result<(), String> {
    let config = nvencode::EncoderConfig::new(256, 256);
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
    println!("{:<14} {:<11} reason", "encoder", "available");
    for c in &report.candidates {
        let reason = c.reason.as_deref().unwrap_or("");
        println!(
            "{:<14} {:<11} {}",
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
                "  NVENC {i}: H.264 {} max {}x{} B-frames {} engines {} (API {})",
                caps.h264,
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
                gpu.codecs.join(", ")
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
