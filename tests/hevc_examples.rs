//! HEVC as a user runs it: `encode_yuv --codec hevc` on a raw 640x360 clip of 90 frames at 30 fps,
//! to MP4, through the in-process x265, through NVENC on the emulated driver with B-frames, and
//! through `-e auto` with NVENC failing mid-stream and x265 taking over. Each file is checked
//! with FFmpeg: codec `hevc` in an `hvc1`/`hev1` sample entry, 90 frames, 3.0 s, and the decoded
//! pictures against the input (PSNR).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nvenc_emu_harness::EmuDriver;

const SIZE: &str = "640x360";
const WIDTH: usize = 640;
const HEIGHT: usize = 360;
const FRAMES: usize = 90;
/// The floor for the default crf (23) on this clip.
const PSNR_FLOOR_DB: f64 = 38.0;
/// Each run's bound: a 640x360 clip of 90 frames takes a few seconds here.
const LIMIT: Duration = Duration::from_secs(120);

/// A raw I420 clip made by FFmpeg's `testsrc2` (moving content, so that a P- or B-frame is not
/// a copy of the last one), with its frames.
fn raw_clip(dir: &Path) -> (PathBuf, Vec<Vec<u8>>) {
    let path = dir.join("in.yuv");
    let status = common::ffmpeg()
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={SIZE}:rate=30"),
            "-frames:v",
            &FRAMES.to_string(),
            "-pix_fmt",
            "yuv420p",
            "-f",
            "rawvideo",
            "-y",
        ])
        .arg(&path)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg could not make the clip");
    let bytes = std::fs::read(&path).expect("read the clip");
    let frame = WIDTH * HEIGHT * 3 / 2;
    assert_eq!(bytes.len(), frame * FRAMES);
    (path, bytes.chunks(frame).map(<[u8]>::to_vec).collect())
}

/// `ffprobe`'s view of the video stream: codec name, sample entry, frames counted by decoding,
/// duration in seconds.
fn probe(path: &Path) -> (String, String, usize, f64) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=codec_name,codec_tag_string,nb_read_frames:format=duration",
            "-of",
            "default=noprint_wrappers=1",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .to_owned()
    };
    (
        field("codec_name"),
        field("codec_tag_string"),
        field("nb_read_frames").parse().unwrap_or(0),
        field("duration").parse().unwrap_or(0.0),
    )
}

/// The decoded pictures of an MP4 file, as I420.
fn decode(path: &Path) -> Vec<Vec<u8>> {
    let out = common::ffmpeg()
        .arg("-i")
        .arg(path)
        .args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg could not decode {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks(WIDTH * HEIGHT * 3 / 2)
        .map(<[u8]>::to_vec)
        .collect()
}

/// Checks an HEVC MP4 of the clip and returns its mean PSNR against the input.
fn check_file(path: &Path, input: &[Vec<u8>], what: &str) -> f64 {
    let (codec, tag, frames, duration) = probe(path);
    assert_eq!(codec, "hevc", "{what}: codec");
    assert!(
        tag == "hvc1" || tag == "hev1",
        "{what}: sample entry {tag:?}"
    );
    assert_eq!(frames, FRAMES, "{what}: frames");
    assert!((duration - 3.0).abs() < 0.01, "{what}: duration {duration}");
    let decoded = decode(path);
    assert_eq!(decoded.len(), FRAMES, "{what}: decoded frames");
    let psnr: Vec<f64> = input
        .iter()
        .zip(&decoded)
        .map(|(a, b)| common::psnr(a, b).min(99.0))
        .collect();
    let mean = psnr.iter().sum::<f64>() / psnr.len() as f64;
    let lowest = psnr.iter().copied().fold(f64::INFINITY, f64::min);
    eprintln!("{what}: mean PSNR {mean:.2} dB, lowest {lowest:.2} dB");
    assert!(mean >= PSNR_FLOOR_DB, "{what}: mean PSNR {mean:.2} dB");
    mean
}

fn encode_yuv_args(cmd: &mut Command, input: &Path, encoder: &str, output: &Path) {
    cmd.arg(input)
        .args(["--size", SIZE, "--codec", "hevc", "-e", encoder, "-q", "-o"])
        .arg(output);
}

#[test]
fn encode_yuv_hevc_with_x265_to_mp4() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (input, frames) = raw_clip(dir.path());
    let output = dir.path().join("x265.mp4");
    let mut cmd = Command::new(common::example("encode_yuv"));
    encode_yuv_args(&mut cmd, &input, "x265", &output);
    let (ok, text) = common::run_bounded(cmd, LIMIT, "encode_yuv -e x265");
    assert!(ok, "{text}");
    check_file(&output, &frames, "x265");
}

/// FFmpeg's spelling of the codec option, and the x265 backend named by it.
#[test]
fn encode_yuv_takes_ffmpegs_codec_option() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (input, frames) = raw_clip(dir.path());
    let output = dir.path().join("cv.mp4");
    let mut cmd = Command::new(common::example("encode_yuv"));
    cmd.arg(&input)
        .args(["--size", SIZE, "-c:v", "h265", "-e", "x265", "-q", "-o"])
        .arg(&output);
    let (ok, text) = common::run_bounded(cmd, LIMIT, "encode_yuv -c:v h265");
    assert!(ok, "{text}");
    check_file(&output, &frames, "-c:v h265");
}

/// An encoder that cannot encode the codec is refused, naming both, and nothing is written.
#[test]
fn encode_yuv_refuses_x264_for_hevc_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (input, _) = raw_clip(dir.path());
    let output = dir.path().join("refused.mp4");
    let mut cmd = Command::new(common::example("encode_yuv"));
    encode_yuv_args(&mut cmd, &input, "x264", &output);
    let (ok, text) = common::run_bounded(cmd, LIMIT, "encode_yuv -e x264 --codec hevc");
    assert!(!ok, "{text}");
    assert!(
        text.contains("x264 cannot encode hevc"),
        "the error names both: {text}"
    );
    assert!(!output.exists());
}

#[test]
fn encode_yuv_hevc_on_emulated_nvenc_with_bframes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (input, frames) = raw_clip(dir.path());
    let output = dir.path().join("nvenc.mp4");
    let emu = EmuDriver::new();
    let mut cmd = emu.command(common::example("encode_yuv"));
    encode_yuv_args(&mut cmd, &input, "nvenc", &output);
    cmd.args(["--bframes", "2"]);
    let (ok, text) = common::run_bounded(cmd, LIMIT, "encode_yuv -e nvenc --codec hevc");
    assert!(ok, "{text}");
    let report = emu.report();
    report.assert_clean();
    check_file(&output, &frames, "NVENC (emulated) with B-frames");
    // The stream has B-frames: some picture is decoded before one shown earlier.
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=pict_type",
            "-of",
            "csv=p=0",
        ])
        .arg(&output)
        .output()
        .expect("ffprobe");
    let types = String::from_utf8_lossy(&out.stdout);
    assert!(
        types.lines().any(|t| t.trim() == "B"),
        "no B picture in the NVENC HEVC stream: {types}"
    );
}

/// `-e auto`: NVENC (emulated) opens, fails at its 40th read-back, and x265 finishes the stream
/// from an IDR without losing an accepted frame; the MP4 holds the 90 frames, decodable across
/// the switch of parameter sets.
#[test]
fn encode_yuv_hevc_auto_fails_over_from_nvenc_to_x265() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (input, frames) = raw_clip(dir.path());
    let output = dir.path().join("auto.mp4");
    // NV_ENC_ERR_GENERIC (20) at the 40th nvEncLockBitstream.
    let emu = EmuDriver::new().fault("nvEncLockBitstream", 40, 20);
    let mut cmd = emu.command(common::example("encode_yuv"));
    encode_yuv_args(&mut cmd, &input, "auto", &output);
    cmd.env("RUST_LOG", "nvencode=info");
    let (ok, text) = common::run_bounded(cmd, LIMIT, "encode_yuv -e auto --codec hevc");
    assert!(ok, "{text}");
    let report = emu.report();
    assert!(
        report
            .faults
            .iter()
            .any(|f| f.contains("nvEncLockBitstream")),
        "the fault never fired: {:?}",
        report.faults
    );
    assert!(
        text.contains("x265"),
        "the run does not say x265 took over: {text}"
    );
    check_file(&output, &frames, "NVENC then x265");
}
