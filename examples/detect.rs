//! Prints which H.264 encoders this machine can use and why the others cannot: a table, or JSON
//! with `--json` (for a GPU CI runner's log).
//!
//! ```text
//! cargo run --example detect
//! cargo run --example detect -- --json
//! ```

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Detect the H.264 encoders available on this machine")]
struct Args {
    /// Print the whole report as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let report = nvenc::detect();
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
