//! The `encode_yuv` example, run as a user would: a raw file with a truncated last frame must
//! give an error naming the byte offset, after writing a valid stream of every whole frame.

mod common;

use std::path::PathBuf;
use std::process::Command;

use nvencode::testsrc::TestPattern;
use nvencode::{PixelFormat, Resolution};

/// The `encode_yuv` example, built with this test's profile and features.
fn example() -> PathBuf {
    common::example("encode_yuv")
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

/// Runs `cmd` to completion, killing it and failing the test if it takes longer than `limit`.
fn run_bounded(cmd: &mut Command, limit: std::time::Duration) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start example");
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reap");
            panic!(
                "example still running after {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

const RES: Resolution = Resolution::new(160, 96);

/// Writes `frames` frames of the I420 test pattern to `path`.
fn write_clip(path: &std::path::Path, frames: u64) -> Vec<u8> {
    let pattern = TestPattern::new(RES, PixelFormat::I420).expect("pattern");
    let raw: Vec<u8> = (0..frames).flat_map(|i| pattern.frame(i)).collect();
    std::fs::write(path, &raw).expect("write input");
    raw
}

fn x264_args() -> [&'static str; 5] {
    ["--size", "160x96", "--encoder", "x264", "-q"]
}

#[test]
fn a_hanging_ffmpeg_on_path_does_not_stop_auto_from_using_x264() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fake = dir.path().join("bin");
    std::fs::create_dir(&fake).expect("mkdir");
    common::script(&fake, "ffmpeg", "exec sleep 1000");
    let input = dir.path().join("in.yuv");
    write_clip(&input, 10);
    let output = dir.path().join("a.h264");
    let path = format!("{}:/usr/bin:/bin", fake.display());
    let run = run_bounded(
        Command::new(example())
            .arg(&input)
            .args(["--size", "160x96", "-e", "auto", "-q", "-o"])
            .arg(&output)
            .env("PATH", path),
        nvencode::detect::FFMPEG_QUERY_LIMIT * 4,
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.starts_with("x264:"), "{stderr}");
    let stream = std::fs::read(&output).expect("output");
    assert_eq!(common::decode_h264(&stream, RES).len(), 10);
}

#[test]
fn an_output_that_is_the_input_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("same.yuv");
    let raw = write_clip(&input, 3);
    let link = dir.path().join("link.yuv");
    std::os::unix::fs::symlink(&input, &link).expect("symlink");
    // The same name, and the same file under another name.
    for output in [&input, &link] {
        let run = run_bounded(
            Command::new(example())
                .arg(&input)
                .args(x264_args())
                .arg("-o")
                .arg(output),
            std::time::Duration::from_secs(60),
        );
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "writing over the input must fail");
        assert!(stderr.contains("is the input file"), "{stderr}");
        assert_eq!(std::fs::read(&input).expect("input"), raw, "input changed");
    }
}

#[test]
fn a_bad_input_leaves_an_existing_output_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("keep.h264");
    std::fs::write(&output, b"precious").expect("write");
    let adir = dir.path().join("adir");
    std::fs::create_dir(&adir).expect("mkdir");
    let empty = dir.path().join("empty.yuv");
    std::fs::write(&empty, b"").expect("write");
    for (input, says) in [(&adir, "is a directory"), (&empty, "holds no whole frame")] {
        let run = run_bounded(
            Command::new(example())
                .arg(input)
                .args(x264_args())
                .arg("-o")
                .arg(&output),
            std::time::Duration::from_secs(60),
        );
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{}: {stderr}", input.display());
        assert!(
            stderr.contains(says) && stderr.contains(&input.display().to_string()),
            "the error must name the input and the problem: {stderr}"
        );
        assert_eq!(std::fs::read(&output).expect("output"), b"precious");
    }
    // Nothing but the file we made is left in the folder (no temporary file).
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn dash_writes_a_clean_stream_to_standard_output() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("in.yuv");
    write_clip(&input, 12);
    let run = run_bounded(
        Command::new(example())
            .arg(&input)
            .args(["--size", "160x96", "--encoder", "auto", "-q", "-o", "-"])
            .env("RUST_LOG", "debug"),
        std::time::Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("12 frames"),
        "the summary goes to stderr: {stderr}"
    );
    assert!(stderr.contains("DEBUG"), "RUST_LOG=debug logs: {stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "no colour codes when stderr is not a terminal: {stderr:?}"
    );
    assert!(
        run.stdout.starts_with(&[0, 0, 0, 1]),
        "stdout must be the stream alone"
    );
    assert_eq!(common::decode_h264(&run.stdout, RES).len(), 12);
    assert!(!dir.path().join("-").exists(), "`-` is not a file name");
}

#[test]
fn dev_stdout_redirected_to_a_file_gives_a_decodable_stream() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("in.yuv");
    write_clip(&input, 12);
    let file = dir.path().join("file.h264");
    let run = run_bounded(
        Command::new("sh").arg("-c").arg(format!(
            "exec '{}' '{}' --size 160x96 --encoder x264 -q -o /dev/stdout > '{}'",
            example().display(),
            input.display(),
            file.display()
        )),
        std::time::Duration::from_secs(60),
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stream = std::fs::read(&file).expect("file");
    assert_eq!(common::decode_h264(&stream, RES).len(), 12);
}

/// Sends `signal` to `pid`.
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Waits up to `limit` for `child` to exit.
fn wait_bounded(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("example still running after {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn first_interrupt_flushes_and_writes_every_frame_read_then_exits_130() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("out.h264");
    let pattern = TestPattern::new(RES, PixelFormat::I420).expect("pattern");
    // B-frames, so that frames are still inside the encoder when the signal comes.
    let mut child = Command::new(example())
        .args([
            "-",
            "--size",
            "160x96",
            "--encoder",
            "x264",
            "--bframes",
            "3",
            "-q",
            "-o",
        ])
        .arg(&output)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start example");
    let mut stdin = child.stdin.take().expect("stdin");
    for i in 0..6 {
        stdin.write_all(&pattern.frame(i)).expect("feed");
    }
    stdin.flush().expect("flush");
    std::thread::sleep(std::time::Duration::from_secs(2));
    signal(child.id(), "INT");
    // A reader blocked on stdin sees the request only when its read returns, and the frame that
    // unblocks it may be read before the handler has set the flag: feed one frame every 500 ms
    // until the process exits (bounded: 20 frames, then the wait below fails the test).
    let mut sent = 6;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
        if sent < 26 && stdin.write_all(&pattern.frame(sent)).is_ok() {
            let _ = stdin.flush();
            sent += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let status = wait_bounded(&mut child, std::time::Duration::from_secs(30));
    drop(stdin);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(130), "{stderr}");
    let frames: usize = stderr
        .split("interrupted after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no interruption summary: {stderr}"));
    assert!(
        (6..=sent as usize).contains(&frames),
        "{frames} frames, {sent} sent: {stderr}"
    );
    let stream = std::fs::read(&output).expect("output written");
    assert_eq!(common::decode_h264(&stream, RES).len(), frames);
}

#[test]
fn second_interrupt_exits_at_once() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(example())
        .args(["-", "--size", "160x96", "--encoder", "x264", "-q", "-o"])
        .arg(dir.path().join("out.h264"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start example");
    // Blocked reading an input that never comes: only the second signal can end it.
    std::thread::sleep(std::time::Duration::from_secs(1));
    signal(child.id(), "INT");
    std::thread::sleep(std::time::Duration::from_millis(300));
    signal(child.id(), "TERM");
    let status = wait_bounded(&mut child, std::time::Duration::from_secs(10));
    assert_eq!(status.code(), Some(130));
}

#[test]
fn chunks_delivered_before_an_encoder_error_are_written() {
    // The emulated driver fails cuStreamSynchronize from its first call on, which ends the
    // stream during the flush with B-frames; every chunk the encoder delivered before the error
    // must be in the file.
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("in60.yuv");
    let res = Resolution::new(320, 240);
    let pattern = TestPattern::new(res, PixelFormat::I420).expect("pattern");
    let raw: Vec<u8> = (0..60).flat_map(|i| pattern.frame(i)).collect();
    std::fs::write(&input, &raw).expect("write input");
    let output = dir.path().join("s.h264");
    let emu = nvenc_emu_harness::EmuDriver::new().fault("cuStreamSynchronize", 1, 999);
    let run = run_bounded(
        emu.command(example())
            .arg(&input)
            .args(["-s", "320x240", "--bframes", "2", "-e", "nvenc", "-q", "-o"])
            .arg(&output),
        std::time::Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success(),
        "the fault must fail the run: {stderr}"
    );
    let summary_frames: usize = stderr
        .split("nvenc: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary: {stderr}"));
    let stream = std::fs::read(&output).expect("output written despite the error");
    let decoded = common::decode_h264(&stream, res).len();
    // The emulated flush delivers every frame's chunk, then fails on the final synchronize.
    assert_eq!(summary_frames, 60, "{stderr}");
    assert_eq!(decoded, 60, "delivered chunks were not written: {stderr}");
}

#[test]
fn an_mp4_name_writes_mp4_that_ffprobe_reads_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("in.yuv");
    write_clip(&input, 40);
    let output = dir.path().join("out.mp4");
    let run = run_bounded(
        Command::new(example())
            .arg(&input)
            .args(x264_args())
            .args(["--bframes", "3", "-r", "25", "-o"])
            .arg(&output),
        std::time::Duration::from_secs(60),
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=codec_name,nb_read_frames,duration:format=format_name",
            "-of",
            "default=nw=1",
        ])
        .arg(&output)
        .output()
        .expect("ffprobe");
    let text = String::from_utf8_lossy(&probe.stdout);
    for expected in [
        "codec_name=h264",
        "nb_read_frames=40",
        "duration=1.600000",
        "format_name=mov,mp4",
    ] {
        assert!(text.contains(expected), "{expected} missing: {text}");
    }
    // A `.mp4` name that is a pipe gets fragmented MP4 as it is written: a reader of the pipe
    // decodes every frame.
    let fifo = dir.path().join("pipe.mp4");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let reader = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(&fifo)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ffprobe on the pipe");
    let run = run_bounded(
        Command::new(example())
            .arg(&input)
            .args(x264_args())
            .arg("-o")
            .arg(&fifo),
        std::time::Duration::from_secs(60),
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let counted = reader.wait_with_output().expect("ffprobe");
    assert_eq!(String::from_utf8_lossy(&counted.stdout).trim(), "40");
}

/// The names in `dir`, sorted.
fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A run whose encoder fails before delivering anything leaves an existing output exactly as it
/// was (Annex B and MP4), removes its temporary file, and reports the encoder's error (not the
/// MP4 writer's complaint about an empty stream). Checked against the temporary file persisted
/// over the output whatever the run wrote, which emptied the file.
#[test]
fn a_run_that_encodes_nothing_leaves_an_existing_output_as_it_was() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("in.yuv");
    write_clip(&input, 12);
    for name in ["k.h264", "k.mp4"] {
        let output = dir.path().join(name);
        std::fs::write(&output, b"X\n").expect("write");
        // NV_ENC_ERR_INVALID_PARAM (8) from the first read-back: nothing is ever delivered.
        let emu = nvenc_emu_harness::EmuDriver::new().fault("nvEncLockBitstream", 1, 8);
        let run = run_bounded(
            emu.command(example())
                .arg(&input)
                .args(["--size", "160x96", "-e", "nvenc", "-q", "-o"])
                .arg(&output),
            std::time::Duration::from_secs(120),
        );
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{name}: {stderr}");
        assert_eq!(
            std::fs::read(&output).expect("output"),
            b"X\n",
            "{name}: {stderr}"
        );
        assert!(
            stderr.contains("left as it was") && stderr.contains("nvEncLockBitstream"),
            "{name}: the encoder's error and what became of the output: {stderr}"
        );
        assert!(!stderr.contains("SPS/PPS"), "{name}: {stderr}");
    }
    assert_eq!(names_in(dir.path()), ["in.yuv", "k.h264", "k.mp4"]);
}

/// A run that fails after delivering frames keeps them beside an existing output
/// (`NAME.partial.EXT`) and leaves the output itself as it was. Checked against the partial
/// stream written over the existing file.
#[test]
fn a_run_that_fails_midway_keeps_its_frames_beside_an_existing_output() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("in60.yuv");
    let res = Resolution::new(320, 240);
    let pattern = TestPattern::new(res, PixelFormat::I420).expect("pattern");
    let raw: Vec<u8> = (0..60).flat_map(|i| pattern.frame(i)).collect();
    std::fs::write(&input, &raw).expect("write input");
    let output = dir.path().join("s.h264");
    std::fs::write(&output, b"X\n").expect("write");
    // Every chunk is delivered, then the final synchronize of the flush fails.
    let emu = nvenc_emu_harness::EmuDriver::new().fault("cuStreamSynchronize", 1, 999);
    let run = run_bounded(
        emu.command(example())
            .arg(&input)
            .args(["-s", "320x240", "--bframes", "2", "-e", "nvenc", "-q", "-o"])
            .arg(&output),
        std::time::Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert_eq!(std::fs::read(&output).expect("output"), b"X\n", "{stderr}");
    let partial = dir.path().join("s.partial.h264");
    let stream = std::fs::read(&partial).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(common::decode_h264(&stream, res).len(), 60, "{stderr}");
    assert!(stderr.contains("s.partial.h264"), "{stderr}");
}

/// `-o /dev/stdout` with standard output opened for appending appends: the shell's file is
/// written through its own descriptor, not replaced. Checked against the earlier behaviour, which
/// replaced the redirected file with a new one.
#[test]
fn dev_stdout_opened_for_appending_is_appended_to() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("in.yuv");
    write_clip(&input, 12);
    let file = dir.path().join("f.h264");
    // A first stream, then a second appended to it: two whole streams, 24 frames.
    for _ in 0..2 {
        let run = run_bounded(
            Command::new("sh").arg("-c").arg(format!(
                "exec '{}' '{}' --size 160x96 --encoder x264 -q -o /dev/stdout >> '{}'",
                example().display(),
                input.display(),
                file.display()
            )),
            std::time::Duration::from_secs(60),
        );
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let stream = std::fs::read(&file).expect("file");
    assert_eq!(common::decode_h264(&stream, RES).len(), 24);
    assert_eq!(names_in(dir.path()), ["f.h264", "in.yuv"]);
}

/// `--tune zerolatency --bframes 2` is refused with the configuration error naming both and what
/// would be valid, before any output is created; `--bframes 0` with it encodes. Checked against
/// validation without the check, where the B-frames were dropped in silence and the run
/// succeeded.
#[test]
fn bframes_with_zerolatency_are_refused_naming_both() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("z.h264");
    let run = run_bounded(
        Command::new(example())
            .args(["--frames", "2", "--tune", "zerolatency", "--bframes", "2"])
            .args(x264_args())
            .arg("-o")
            .arg(&output),
        std::time::Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(
        stderr.contains("bframes 2 with tune zerolatency")
            && stderr.contains("without B-frames")
            && stderr.contains("choose another tune"),
        "{stderr}"
    );
    assert!(!output.exists(), "nothing written on a configuration error");
    let run = run_bounded(
        Command::new(example())
            .args(["--frames", "2", "--tune", "zerolatency", "--bframes", "0"])
            .args(x264_args())
            .arg("-o")
            .arg(&output),
        std::time::Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "bframes 0 is valid with zerolatency: {stderr}"
    );
    assert_eq!(
        common::decode_h264(&std::fs::read(&output).expect("output"), RES).len(),
        2
    );
}

/// A run killed outright (SIGKILL) leaves its temporary file, named after the output and its
/// PID; the next run writing the same output removes it, and leaves alone the temporary files of
/// a run still going (here: this test's own PID) and of other outputs. Checked against the
/// earlier random temporary names, which no run ever removed.
#[test]
fn a_killed_runs_temporary_file_is_removed_by_the_next_run() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("k.h264");
    let live = format!(".k.h264.{}.aB3dE9.part", std::process::id());
    let other = ".k.h264.1.x.part.k.h264"; // another output's name, not a temporary of k.h264
    let dead = {
        let mut gone = Command::new("true").spawn().expect("run true");
        gone.wait().expect("reap true");
        gone.id()
    };
    let other_output = format!(".k.h264.mp4.{dead}.aB3dE9.part");
    for name in [live.as_str(), other, other_output.as_str()] {
        std::fs::write(dir.path().join(name), b"not ours").expect("write");
    }

    // Frames come through stdin, so the run is still going (its temporary file open) when it is
    // killed.
    let mut child = Command::new(example())
        .args(["-", "--size", "160x96", "--encoder", "x264", "-q", "-o"])
        .arg(&output)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start example");
    let pattern = TestPattern::new(RES, PixelFormat::I420).expect("pattern");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&pattern.frame(0)).expect("feed a frame");
    let killed_name = format!(".k.h264.{}.", child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let stale = loop {
        if let Some(name) = names_in(dir.path())
            .into_iter()
            .find(|n| n.starts_with(&killed_name) && n.ends_with(".part"))
        {
            break name;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no temporary file {killed_name}XXXXXX.part within 60 s: {:?}",
            names_in(dir.path())
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    signal(child.id(), "KILL");
    let _ = wait_bounded(&mut child, std::time::Duration::from_secs(30));
    drop(stdin);
    assert!(
        dir.path().join(&stale).exists(),
        "SIGKILL cleans up nothing"
    );

    let input = dir.path().join("in.yuv");
    write_clip(&input, 3);
    let run = run_bounded(
        Command::new(example())
            .arg(&input)
            .args(x264_args())
            .arg("-o")
            .arg(&output),
        std::time::Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains(&stale), "the removal is reported: {stderr}");
    let mut want = vec![
        live.clone(),
        other.to_owned(),
        other_output.clone(),
        "in.yuv".to_owned(),
        "k.h264".to_owned(),
    ];
    want.sort();
    assert_eq!(names_in(dir.path()), want, "{stderr}");
    assert_eq!(
        common::decode_h264(&std::fs::read(&output).expect("output"), RES).len(),
        3
    );
}
