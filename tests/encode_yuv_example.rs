//! The `encode_yuv` example, run as a user would: a raw file with a truncated last frame must
//! give an error naming the byte offset, after writing a valid stream of every whole frame.

mod common;

use std::path::PathBuf;
use std::process::Command;

use nvenc::testsrc::TestPattern;
use nvenc::{PixelFormat, Resolution};

/// `cargo test` builds the examples next to the test binaries' `deps/` folder.
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join("examples").join("encode_yuv");
    assert!(path.exists(), "example not built at {}", path.display());
    path
}

#[test]
fn truncated_input_reports_offset_after_writing_whole_frames() {
    let res = Resolution::new(160, 96);
    let pattern = TestPattern::new(res, PixelFormat::Nv12).expect("pattern");
    let frame_len = pattern.frame_len();
    let mut raw: Vec<u8> = (0..7).flat_map(|i| pattern.frame(i)).collect();
    raw.extend_from_slice(&pattern.frame(7)[..1000]);
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("in.yuv");
    let output = dir.path().join("out.h264");
    std::fs::write(&input, &raw).expect("write input");

    let run = Command::new(example())
        .arg(&input)
        .args([
            "--size",
            "160x96",
            "--pix-fmt",
            "nv12",
            "--encoder",
            "x264",
            "-q",
            "-o",
        ])
        .arg(&output)
        .output()
        .expect("run example");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "a truncated frame must fail the run");
    let offset = 7 * frame_len;
    assert!(
        stderr.contains(&format!("byte offset {offset}")) && stderr.contains("1000 of"),
        "stderr does not name the offset {offset}: {stderr}"
    );
    let stream = std::fs::read(&output).expect("output written");
    let decoded = common::decode_h264(&stream, res);
    assert_eq!(
        decoded.len(),
        7,
        "every whole frame before the truncation is in the stream"
    );
}

#[test]
fn bad_options_are_rejected_with_the_valid_values() {
    let run = Command::new(example())
        .args(["--tune", "fastest", "--frames", "1"])
        .output()
        .expect("run example");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("unknown tune \"fastest\"") && stderr.contains("zerolatency"),
        "{stderr}"
    );
}
