//! The pipeline stage with real encoders: x264 through the stage decodes to every frame, a
//! failover mid-pipeline (ffmpeg's libx264 killed) loses none, and the example's MP4 is read by
//! ffprobe with every frame.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nvencode::fallback::Opener;
use nvencode::ffmpeg::{FfmpegEncoder, FfmpegOptions};
use nvencode::pipeline::{EncodePipeline, EncodedOutput, PipelineOptions};
use nvencode::{
    EncodedChunk, EncoderConfig, EncoderKind, FallbackEncoder, FfmpegFamily, GpuEncoderConfig,
    VideoEncoder, X264Encoder,
};

const BOUND: Duration = Duration::from_secs(60);

fn collect(output: &mut EncodedOutput) -> Vec<EncodedChunk> {
    output
        .by_ref()
        .map(|item| item.expect("no in-band error"))
        .collect()
}

#[test]
fn x264_through_the_stage_decodes_every_frame() {
    let config = EncoderConfig::new(160, 96)
        .with_preset(nvencode::Preset::Veryfast)
        .with_bframes(Some(3));
    let mut gpu = GpuEncoderConfig::default();
    gpu.preferred_encoder = Some(EncoderKind::X264);
    gpu.ring_buffer_size = 4;
    let (mut producer, mut output) = EncodePipeline::open(&config, &gpu).expect("open").split();
    let input = common::clip(&config, 120);
    let frames = input.clone();
    let feeder = std::thread::spawn(move || {
        for (pts, frame) in frames.iter().enumerate() {
            let mut slot = producer.reserve_timeout(BOUND).expect("reserve");
            slot.copy_from_slice(frame);
            let _ = slot.commit(pts as i64, pts == 60).expect("commit");
        }
        producer.finish().expect("finish");
    });
    let chunks = collect(&mut output);
    feeder.join().expect("feeder");
    assert_eq!(output.encoder_kind(), EncoderKind::X264);
    assert_eq!(output.finished_by(), Some(EncoderKind::X264), "no failover");
    common::assert_accounting(&chunks, 120);
    assert!(
        chunks.iter().any(|c| c.pts == 60 && c.keyframe),
        "forced keyframe at 60"
    );
    let decoded = common::decode_h264(&common::concat(&chunks), config.resolution);
    assert_eq!(decoded.len(), 120, "decoded frame count");
    for (i, (want, got)) in input.iter().zip(&decoded).enumerate() {
        let p = common::psnr(want, got);
        assert!(p >= 38.0, "frame {i}: PSNR {p:.2} dB");
    }
}

#[test]
fn failover_mid_pipeline_loses_no_frame() {
    let config = EncoderConfig::new(320, 240)
        .with_preset(nvencode::Preset::Veryfast)
        .with_gop_size(30)
        .with_bframes(Some(2));
    let pid = Arc::new(AtomicU32::new(0));
    let pid_in = Arc::clone(&pid);
    let ffmpeg: Opener = Box::new(move |c: &EncoderConfig| {
        let e = FfmpegEncoder::new(c, &FfmpegOptions::new(FfmpegFamily::Libx264))?;
        pid_in.store(e.pid(), Ordering::SeqCst);
        Ok(Box::new(e) as Box<dyn VideoEncoder>)
    });
    let x264: Opener =
        Box::new(|c: &EncoderConfig| Ok(Box::new(X264Encoder::new(c)?) as Box<dyn VideoEncoder>));
    let chain = vec![
        (EncoderKind::Ffmpeg(FfmpegFamily::Libx264), ffmpeg),
        (EncoderKind::X264, x264),
    ];
    let encoder = FallbackEncoder::with_chain(&config, chain).expect("open");
    let (mut producer, mut output) =
        EncodePipeline::with_encoder(Box::new(encoder), PipelineOptions::default())
            .expect("stage")
            .split();
    let input = common::clip(&config, 60);
    let frames = input.clone();
    let feeder = std::thread::spawn(move || {
        for (i, frame) in frames.iter().enumerate() {
            if i == 20 {
                let status = std::process::Command::new("kill")
                    .args(["-9", &pid.load(Ordering::SeqCst).to_string()])
                    .status()
                    .expect("kill");
                assert!(status.success());
            }
            let _ = producer.push_timeout(&frame[..], BOUND).expect("push");
        }
        producer.finish().expect("finish");
    });
    let chunks = collect(&mut output);
    feeder.join().expect("feeder");
    // The output names both ends of the failover: the encoder that opened and the one that
    // finished the stream.
    assert_eq!(
        output.encoder_kind(),
        EncoderKind::Ffmpeg(FfmpegFamily::Libx264)
    );
    assert_eq!(output.finished_by(), Some(EncoderKind::X264));
    common::assert_accounting(&chunks, 60);
    let decoded = common::decode_h264(&common::concat(&chunks), config.resolution);
    assert_eq!(decoded.len(), 60, "every frame decodes across the failover");
}

#[test]
fn pipeline_example_writes_an_mp4_ffprobe_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.mp4");
    let status = std::process::Command::new(env!("CARGO"))
        .args([
            "run",
            "--quiet",
            "--example",
            "pipeline",
            "--",
            "--frames",
            "60",
        ])
        .args(["--size", "320x240", "--jitter-ms", "0..30", "--fps", "120"])
        .args([
            "--encoder",
            "x264",
            "--preset",
            "ultrafast",
            "--ring",
            "8",
            "-q",
            "-o",
        ])
        .arg(&out)
        .output()
        .expect("run the example");
    // The summary is on standard error: standard output may be the stream.
    assert!(
        status.stdout.is_empty(),
        "nothing but the stream on standard output"
    );
    let stdout = String::from_utf8_lossy(&status.stderr);
    assert!(
        status.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        stdout.contains("encoder x264: frames in 60, frames out 60, lost 0"),
        "{stdout}"
    );
    // The summary's figures: each present, a number, and consistent with the others.
    let depth = field(&stdout, "highest ring depth ");
    assert!(
        (1.0..=8.0).contains(&depth),
        "depth {depth} within the ring's 8 slots: {stdout}"
    );
    assert!(field(&stdout, "producer blocked ") >= 0.0, "{stdout}");
    let (submit_p50, submit_p99) = p50_p99(&stdout, "submit (reserve+commit)");
    assert!(
        submit_p50 >= 0.0 && submit_p50 <= submit_p99,
        "submit p50 {submit_p50} <= p99 {submit_p99}: {stdout}"
    );
    let (latency_p50, latency_p99) = p50_p99(&stdout, "submit-to-chunk latency");
    assert!(
        latency_p50 > 0.0 && latency_p50 <= latency_p99,
        "latency p50 {latency_p50} <= p99 {latency_p99}: {stdout}"
    );
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(&out)
        .output()
        .expect("ffprobe");
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "60");
}

/// `-o /dev/stdout > f.h264`: the file is the stream alone, every frame decodable. Checked against
/// the summary line printed on standard output, which overwrote the stream's first bytes.
#[test]
fn pipeline_example_to_standard_output_writes_only_the_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("f.h264");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec '{}' --frames 60 --size 320x240 --encoder x264 -q -o /dev/stdout > '{}'",
            common::example("pipeline").display(),
            file.display()
        ))
        .output()
        .expect("run the example");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let stream = std::fs::read(&file).expect("the stream");
    let decoded = common::decode_h264(&stream, nvencode::Resolution::new(320, 240));
    assert_eq!(decoded.len(), 60);
}

/// The first SIGINT stops the source; everything received is encoded, the MP4 is finished and
/// put in place, and the example exits 130. Checked against the example without a handler,
/// which died at the signal and left no playable file.
#[test]
fn pipeline_example_interrupted_finishes_a_playable_mp4() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.mp4");
    let mut child = std::process::Command::new(common::example("pipeline"))
        .args(["--frames", "3000", "--size", "320x240", "--fps", "30"])
        .args(["--encoder", "x264", "--preset", "ultrafast", "-q", "-o"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the example");
    std::thread::sleep(Duration::from_secs(2));
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the example did not finish within 30 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    let frames_out: u64 = stderr
        .split("frames out ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary: {stderr}"));
    assert!(frames_out > 10, "{stderr}");
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(&out)
        .output()
        .expect("ffprobe");
    assert_eq!(
        String::from_utf8_lossy(&probe.stdout).trim(),
        frames_out.to_string(),
        "{stderr}"
    );
}

/// x264 at `medium` keeps ~40 frames for its lookahead, far more than the slots the stage adds
/// for the encoder's leases: the fallback chain must copy the oldest held frames beyond the
/// ring's lease budget rather than keep their slots, or the producer waits for a slot while the
/// encoder waits for a frame. Every wait is bounded, so a starved producer fails the test.
#[test]
fn deep_lookahead_with_a_one_slot_ring_never_starves_the_producer() {
    let config = EncoderConfig::new(64, 48).with_preset(nvencode::Preset::Medium);
    let mut gpu = GpuEncoderConfig::default();
    gpu.preferred_encoder = Some(EncoderKind::X264);
    let options = PipelineOptions::from_gpu_config(&gpu).with_ring_slots(1);
    let (mut producer, output) = EncodePipeline::open_with(&config, &gpu, options)
        .expect("open")
        .split();
    let input = common::clip(&config, 150);
    let frames = input.clone();
    let feeder = std::thread::spawn(move || {
        for frame in &frames {
            let _ = producer
                .push_timeout(frame.as_slice(), Duration::from_secs(20))
                .expect("a slot within 20 s: the encoder must not hold every slot");
        }
        producer.finish().expect("finish");
    });
    let mut output = output;
    let chunks = collect(&mut output);
    feeder.join().expect("feeder");
    common::assert_accounting(&chunks, 150);
    let decoded = common::decode_h264(&common::concat(&chunks), config.resolution);
    assert_eq!(decoded.len(), 150, "decoded frame count");
}

/// The number that follows `label` in `text`, and the text after it.
fn number_after<'a>(text: &'a str, label: &str) -> (f64, &'a str) {
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("{label:?} in {text}"));
    let rest = &text[at + label.len()..];
    let len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let number = rest[..len]
        .parse()
        .unwrap_or_else(|_| panic!("a number after {label:?} in {text}"));
    (number, &rest[len..])
}

/// The figure after `label` in the example's summary line.
fn field(summary: &str, label: &str) -> f64 {
    number_after(summary, label).0
}

/// The pair `LABEL p50 X ms p99 Y` in the example's summary line.
fn p50_p99(summary: &str, label: &str) -> (f64, f64) {
    let (p50, rest) = number_after(summary, &format!("{label} p50 "));
    let (p99, _) = number_after(rest, " p99 ");
    (p50, p99)
}

/// The pipeline example refuses `--tune zerolatency --bframes 2` with the configuration error
/// naming both, before anything is opened or written. Checked against the example without the
/// `--bframes` flag and validation without the check (the B-frames were dropped in silence).
#[test]
fn pipeline_example_refuses_bframes_with_zerolatency() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("z.h264");
    let run = std::process::Command::new(common::example("pipeline"))
        .args([
            "--frames",
            "2",
            "--size",
            "64x64",
            "--encoder",
            "x264",
            "-q",
        ])
        .args(["--tune", "zerolatency", "--bframes", "2", "-o"])
        .arg(&out)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the example");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(
        stderr.contains("bframes 2 with tune zerolatency")
            && stderr.contains("without B-frames")
            && stderr.contains("choose another tune"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing written on a configuration error");
}
