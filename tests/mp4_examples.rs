//! The examples' MP4 output as a user meets it: a recording killed with `kill -9` is found under
//! the name the user gave and plays every complete fragment, and `-o - --format mp4` streams
//! fragments that a reader of the pipe decodes whole.
#![cfg(feature = "x264")]

mod common;
mod mp4_support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nvencode::testsrc::TestPattern;
use nvencode::{PixelFormat, Resolution};

/// Decodes the MP4 file at `path`: (frames, FFmpeg's complaints).
fn decode(path: &Path) -> (usize, String) {
    let out = common::ffmpeg()
        .arg("-i")
        .arg(path)
        .args(["-fps_mode", "passthrough", "-f", "framemd5", "-"])
        .output()
        .expect("run ffmpeg");
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    let mut errors = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        errors.push_str(&format!("(ffmpeg exited {})", out.status));
    }
    (frames, errors)
}

fn kill9(child: &mut std::process::Child) {
    let status = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not dead 10 s after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a killed recording left at `path`: every complete fragment decodes without an error,
/// and what follows the last one is less than a fragment. Returns the frames.
fn check_killed(path: &Path, what: &str) -> usize {
    let file = std::fs::read(path).unwrap_or_else(|e| panic!("{what}: {}: {e}", path.display()));
    let fragments = mp4_support::fragments(&file);
    let in_fragments: usize = fragments.iter().map(|&(_, n)| n).sum();
    let (decoded, errors) = decode(path);
    assert!(errors.is_empty(), "{what}: FFmpeg said {errors}");
    assert_eq!(
        decoded, in_fragments,
        "{what}: frames decoded, frames in whole fragments"
    );
    let end = fragments.last().map_or(0, |&(end, _)| end);
    let biggest = fragments
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or(end);
    assert!(
        file.len() - end < 2 * biggest.max(1),
        "{what}: {} bytes after the last whole fragment (fragments up to {biggest} bytes)",
        file.len() - end
    );
    decoded
}

/// `encode_yuv` writing 1080p MP4 from the built-in clip (x264 ultrafast), killed with SIGKILL
/// at several times: the recording replaced the file the user had, under its name, and plays.
#[test]
fn encode_yuv_killed_leaves_a_playable_recording_under_its_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut played = Vec::new();
    for (i, after) in [1.5f64, 3.0, 4.5].into_iter().enumerate() {
        let path = dir.path().join(format!("rec{i}.mp4"));
        std::fs::write(&path, b"the user's old file").expect("write");
        let mut child = Command::new(common::example("encode_yuv"))
            .args([
                "-e",
                "x264",
                "--preset",
                "ultrafast",
                "--frames",
                "3000",
                "-q",
                "-o",
            ])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start encode_yuv");
        std::thread::sleep(Duration::from_secs_f64(after));
        kill9(&mut child);
        let what = format!("killed after {after} s");
        if std::fs::read(&path).expect("read") == b"the user's old file" {
            // Not one fragment yet (a slow machine): the old file stays, the new one is beside.
            assert!(after < 3.0, "{what}: still no fragment");
            continue;
        }
        played.push((after, check_killed(&path, &what)));
    }
    assert!(
        played.iter().any(|&(_, frames)| frames > 0),
        "no kill left frames: {played:?}"
    );
    for pair in played.windows(2) {
        assert!(pair[0].1 <= pair[1].1, "later kills keep more: {played:?}");
    }
}

/// Frames fed through standard input at a known count, then SIGKILL once the example had time
/// to encode them: at most one fragment and the encoder's delay are lost.
#[test]
fn encode_yuv_killed_loses_at_most_the_last_fragment() {
    let res = Resolution::new(320, 240);
    let pattern = TestPattern::new(res, PixelFormat::I420).expect("pattern");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("fed.mp4");
    let mut child = Command::new(common::example("encode_yuv"))
        .args([
            "-",
            "-s",
            "320x240",
            "-e",
            "x264",
            "--preset",
            "ultrafast",
            "-g",
            "30",
        ])
        .args(["--fragment-duration", "0.5", "-q", "-o"])
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start encode_yuv");
    let mut stdin = child.stdin.take().expect("stdin");
    let sent = 100u64;
    for i in 0..sent {
        stdin.write_all(&pattern.frame(i)).expect("feed a frame");
    }
    stdin.flush().expect("flush");
    std::thread::sleep(Duration::from_secs(2));
    kill9(&mut child);
    drop(stdin);
    let frames = check_killed(&path, "fed 100 frames") as u64;
    // 15 frames a fragment; the encoder may hold a few frames back (lookahead, threads).
    let delay = 8;
    assert!(
        frames + 15 + delay >= sent && frames <= sent,
        "{frames} frames kept of {sent} sent"
    );
}

/// `pipeline` (a network source into the ring) killed with SIGKILL: the same.
#[test]
fn pipeline_killed_leaves_a_playable_recording_under_its_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("k.mp4");
    let mut child = Command::new(common::example("pipeline"))
        .args([
            "--frames",
            "3000",
            "--size",
            "1280x720",
            "--encoder",
            "x264",
        ])
        .args(["--preset", "ultrafast", "-q", "-o"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pipeline");
    std::thread::sleep(Duration::from_secs(4));
    kill9(&mut child);
    assert!(check_killed(&path, "pipeline killed after 4 s") > 0);
}

/// `encode_yuv -o - --format mp4 | ffprobe -count_frames -` counts every frame; the same for
/// `pipeline`.
#[test]
fn mp4_to_a_pipe_counts_every_frame() {
    let runs: [(&str, &[&str], u64); 2] = [
        (
            "encode_yuv",
            &[
                "-s",
                "320x240",
                "--frames",
                "90",
                "-e",
                "x264",
                "--bframes",
                "2",
            ],
            90,
        ),
        (
            "pipeline",
            &["--frames", "60", "--size", "320x240", "--encoder", "x264"],
            60,
        ),
    ];
    for (example, args, frames) in runs {
        let mut producer = Command::new(common::example(example))
            .args(args)
            .args(["-q", "-o", "-", "--format", "mp4"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the example");
        let pipe = producer.stdout.take().expect("stdout");
        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
            .args([
                "-show_entries",
                "stream=nb_read_frames",
                "-of",
                "csv=p=0",
                "-",
            ])
            .stdin(pipe)
            .output()
            .expect("run ffprobe");
        let done = producer.wait_with_output().expect("wait for the example");
        assert!(
            done.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&done.stderr)
        );
        let said = String::from_utf8_lossy(&probe.stdout);
        assert_eq!(
            said.trim(),
            frames.to_string(),
            "{example}: ffprobe counted {said:?}; {}",
            String::from_utf8_lossy(&probe.stderr)
        );
        assert!(
            probe.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&probe.stderr)
        );
    }
}

/// A `.mp4` output that is a named pipe gets fragments as they are written (it used to be
/// refused: MP4 needed a seekable file).
#[test]
fn an_mp4_name_that_is_a_pipe_streams_fragments() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("live.mp4");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let reader = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(&fifo)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffprobe on the pipe");
    let mut cmd = Command::new(common::example("encode_yuv"));
    cmd.args(["-s", "320x240", "--frames", "45", "-e", "x264", "-q", "-o"])
        .arg(&fifo);
    let (ok, text) = common::run_bounded(cmd, Duration::from_secs(60), "encode_yuv to a pipe");
    assert!(ok, "{text}");
    let counted = reader.wait_with_output().expect("ffprobe");
    assert_eq!(
        String::from_utf8_lossy(&counted.stdout).trim(),
        "45",
        "{}",
        String::from_utf8_lossy(&counted.stderr)
    );
}
