//! `encode_yuv`'s rate-control options, run as a user would: `--bitrate 2M --rc cbr -e x264` on
//! the built-in 720p clip gives a file whose size over the clip's duration is within 10% of
//! 2 Mbit/s, and options that do not fit the mode are refused with the error naming them.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// The `encode_yuv` example, built with this test's profile and features.
fn example() -> PathBuf {
    common::example("encode_yuv")
}

#[test]
fn bitrate_2m_cbr_on_x264_gives_2_mbits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("out.h264");
    // The built-in clip: 300 frames at 30 fps, ten seconds.
    let run = Command::new(example())
        .args([
            "--size",
            "1280x720",
            "--frames",
            "300",
            "--preset",
            "ultrafast",
        ])
        .args([
            "--bitrate",
            "2M",
            "--rc",
            "cbr",
            "-e",
            "x264",
            "--quiet",
            "-o",
        ])
        .arg(&output)
        .output()
        .expect("run encode_yuv");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let bytes = std::fs::metadata(&output).expect("output").len();
    let rate = bytes as f64 * 8.0 / 10.0;
    eprintln!("encode_yuv --bitrate 2M --rc cbr -e x264: {rate:.0} bit/s");
    assert!((rate / 2e6 - 1.0).abs() <= 0.10, "{rate} bit/s");
}

#[test]
fn rate_options_that_do_not_fit_the_mode_are_refused() {
    for (args, message) in [
        (&["--rc", "vbr", "--bitrate", "2M"][..], "needs a maxrate"),
        (
            &["--rc", "cq", "--bitrate", "2M"][..],
            "does not use a bitrate",
        ),
        (
            &["--qp", "60"][..],
            "QP 60 is out of range: expected 0 to 51",
        ),
        (&["--bitrate", "2G"][..], "invalid bit rate \"2G\""),
        (&["--rc", "abr"][..], "unknown rate control \"abr\""),
        (
            &["--bitrate", "2M", "--maxrate", "1M"][..],
            "max bitrate 1000000 bit/s is below the target bitrate 2000000 bit/s",
        ),
    ] {
        let run = Command::new(example())
            .args(["--size", "64x64", "--frames", "1", "-e", "x264", "--quiet"])
            .args(args)
            .arg("-o")
            .arg(std::env::temp_dir().join("encode_yuv_rate_refused.h264"))
            .output()
            .expect("run encode_yuv");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}
