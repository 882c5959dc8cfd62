//! The encoder contract, run against the ffmpeg-subprocess backend with `libx264` (the one
//! FFmpeg encoder every machine here has), plus the subprocess failure modes: a missing ffmpeg,
//! a killed ffmpeg, and a hung ffmpeg each give their typed error within the timeout.

mod common;

use std::time::{Duration, Instant};

use nvencode::ffmpeg::{FfmpegEncoder, FfmpegOptions};
use nvencode::{EncoderConfig, FfmpegFamily, SubprocessProblem, VideoEncoder};

/// The same settings as the in-process x264 contract tests, through ffmpeg's libx264 (lowest
/// frame measured 46.7 dB there; ffmpeg's libx264 wrapper changes nothing that matters here).
const PSNR_FLOOR_DB: f64 = 38.0;

fn open_ffmpeg_x264(config: &EncoderConfig) -> Result<Box<dyn VideoEncoder>, nvencode::Error> {
    Ok(Box::new(FfmpegEncoder::new(
        config,
        &FfmpegOptions::new(FfmpegFamily::Libx264),
    )?))
}

contract_tests!(open_ffmpeg_x264);

/// FFmpeg's libx265, the software HEVC backend of a build without the in-process x265.
fn open_ffmpeg_x265(config: &EncoderConfig) -> Result<Box<dyn VideoEncoder>, nvencode::Error> {
    Ok(Box::new(FfmpegEncoder::new(
        config,
        &FfmpegOptions::new(FfmpegFamily::Libx265),
    )?))
}

contract_tests!(mod contract_hevc, Hevc, open_ffmpeg_x265);

/// A family without an encoder of the codec is refused when it opens, naming both, before any
/// ffmpeg starts.
#[test]
fn a_family_without_the_codec_is_refused_naming_both() {
    let hevc = EncoderConfig::new(64, 64).with_codec(nvencode::Codec::Hevc);
    let h264 = EncoderConfig::new(64, 64);
    for (family, config) in [
        (FfmpegFamily::Libx264, &hevc),
        (FfmpegFamily::Libx265, &h264),
    ] {
        let options = FfmpegOptions::new(family).with_program("/nonexistent/bin/ffmpeg");
        match FfmpegEncoder::new(config, &options) {
            Err(nvencode::Error::Config(nvencode::ConfigError::CodecUnsupported {
                backend,
                codec,
                ..
            })) => {
                assert_eq!(backend, nvencode::EncoderKind::Ffmpeg(family));
                assert_eq!(codec, config.codec);
            }
            other => panic!("{family:?} with {}: {:?}", config.codec, other.map(|_| ())),
        }
    }
}

fn subprocess_problem(err: nvencode::Error) -> SubprocessProblem {
    match err {
        nvencode::Error::Subprocess { problem, .. } => problem,
        other => panic!("expected a subprocess error, got {other:?}"),
    }
}

#[test]
fn missing_ffmpeg_is_not_found() {
    let options = FfmpegOptions::new(FfmpegFamily::Libx264).with_program("/nonexistent/bin/ffmpeg");
    let err = FfmpegEncoder::new(&EncoderConfig::new(64, 64), &options).unwrap_err();
    match subprocess_problem(err) {
        SubprocessProblem::NotFound { program, .. } => assert!(program.contains("nonexistent")),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[test]
fn killed_ffmpeg_is_reported_as_exited() {
    let config = EncoderConfig::new(320, 240);
    let frames = common::clip(&config, 4);
    let options = FfmpegOptions::new(FfmpegFamily::Libx264).with_timeout(Duration::from_secs(5));
    let mut encoder = FfmpegEncoder::new(&config, &options).expect("open");
    let mut chunks = Vec::new();
    encoder
        .encode_frame(&frames[0], &mut chunks)
        .expect("first frame");
    let status = std::process::Command::new("kill")
        .args(["-9", &encoder.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let started = Instant::now();
    // The pipe may still take a frame or two before the writer sees the closed end.
    let err = (0..50)
        .find_map(|i| encoder.encode_frame(&frames[i % 4], &mut chunks).err())
        .expect("writing to a killed ffmpeg must fail");
    let problem = subprocess_problem(err);
    assert!(
        matches!(
            problem,
            SubprocessProblem::Exited { .. } | SubprocessProblem::Garbage { .. }
        ),
        "{problem:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // Once failed, the encoder keeps saying so instead of pretending.
    assert!(encoder.flush(&mut chunks).is_err());
}

#[test]
fn hung_ffmpeg_is_killed_after_the_timeout() {
    // A stand-in that never reads its input nor writes output.
    let dir = tempfile::tempdir().expect("temp dir");
    let script = fake_ffmpeg(dir.path(), "exec sleep 60");

    let config = EncoderConfig::new(1920, 1080);
    let frame = vec![16u8; config.validate().expect("valid")];
    let timeout = Duration::from_millis(700);
    let options = FfmpegOptions::new(FfmpegFamily::Libx264)
        .with_program(&script)
        .with_timeout(timeout);
    let mut encoder = FfmpegEncoder::new(&config, &options).expect("open");
    let mut chunks = Vec::new();
    let started = Instant::now();
    let err = (0..10)
        .find_map(|_| encoder.encode_frame(&frame, &mut chunks).err())
        .expect("a hung ffmpeg must fail an encode");
    assert_eq!(subprocess_problem(err), SubprocessProblem::Hung { timeout });
    // Not before the time limit, and not much after it.
    assert!(
        started.elapsed() >= timeout && started.elapsed() < timeout * 4,
        "took {:?}",
        started.elapsed()
    );
}

/// A stand-in `ffmpeg` with `body` in `dir`.
fn fake_ffmpeg(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    common::script(dir, "ffmpeg", body)
}

/// Whether a process is still running (gone, or a zombie waiting for its parent, is not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn forking_wrapper_is_killed_with_its_whole_group_and_drop_is_bounded() {
    // A wrapper that forks instead of exec-ing: the grandchild `sleep` holds ffmpeg's pipes.
    // Killing only the wrapper would leave the pipe threads blocked for 1000 s.
    let dir = tempfile::tempdir().expect("temp dir");
    let pidfile = dir.path().join("sleep.pid");
    let script = fake_ffmpeg(
        dir.path(),
        &format!("sleep 1000 &\necho $! > {}\nwait $!", pidfile.display()),
    );
    let config = EncoderConfig::new(1920, 1080);
    let frame = vec![16u8; config.validate().expect("valid")];
    let timeout = Duration::from_millis(700);
    let options = FfmpegOptions::new(FfmpegFamily::Libx264)
        .with_program(&script)
        .with_timeout(timeout);
    let mut encoder = FfmpegEncoder::new(&config, &options).expect("open");
    let mut chunks = Vec::new();
    let started = Instant::now();
    let err = (0..10)
        .find_map(|_| encoder.encode_frame(&frame, &mut chunks).err())
        .expect("a hung ffmpeg must fail an encode");
    assert_eq!(subprocess_problem(err), SubprocessProblem::Hung { timeout });
    drop(encoder);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "error and drop took {took:?}"
    );
    let sleep_pid: u32 = std::fs::read_to_string(&pidfile)
        .expect("the wrapper wrote its child's pid")
        .trim()
        .parse()
        .expect("a pid");
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(sleep_pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !running(sleep_pid),
        "the wrapper's child {sleep_pid} outlived the encoder"
    );
}

#[test]
fn dropping_a_running_forking_wrapper_is_bounded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = fake_ffmpeg(dir.path(), "sleep 1000\necho never");
    let config = EncoderConfig::new(64, 64);
    let options = FfmpegOptions::new(FfmpegFamily::Libx264).with_program(&script);
    let encoder = FfmpegEncoder::new(&config, &options).expect("open");
    // Give the wrapper time to fork its `sleep`, which inherits the pipes.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    drop(encoder);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "drop took {:?}",
        started.elapsed()
    );
}

#[test]
fn output_that_is_not_mpeg_ts_is_an_invalid_stream_not_a_signal() {
    // `cat` echoes the raw frames back: not MPEG-TS. The reader rejects it and stops reading,
    // `cat` then dies of SIGPIPE; the error must name the cause (invalid output), not the effect.
    let dir = tempfile::tempdir().expect("temp dir");
    let script = fake_ffmpeg(dir.path(), "exec cat");
    let config = EncoderConfig::new(320, 240);
    let frame = vec![16u8; config.validate().expect("valid")];
    let options = FfmpegOptions::new(FfmpegFamily::Libx264)
        .with_program(&script)
        .with_timeout(Duration::from_secs(5));
    let mut encoder = FfmpegEncoder::new(&config, &options).expect("open");
    let mut chunks = Vec::new();
    let err = (0..200)
        .find_map(|_| encoder.encode_frame(&frame, &mut chunks).err())
        .or_else(|| encoder.flush(&mut chunks).err())
        .expect("garbage output must fail the stream");
    let problem = subprocess_problem(err);
    assert!(
        matches!(problem, SubprocessProblem::Garbage { .. }),
        "expected an invalid-output error, got {problem:?}"
    );
}

#[test]
fn error_carries_what_ffmpeg_wrote_to_stderr() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = fake_ffmpeg(
        dir.path(),
        "echo 'Unknown encoder: the fake has none' >&2\nexit 1",
    );
    let config = EncoderConfig::new(320, 240);
    let frame = vec![16u8; config.validate().expect("valid")];
    let options = FfmpegOptions::new(FfmpegFamily::Libx264)
        .with_program(&script)
        .with_timeout(Duration::from_secs(5));
    let mut encoder = FfmpegEncoder::new(&config, &options).expect("open");
    let mut chunks = Vec::new();
    let err = (0..200)
        .find_map(|_| encoder.encode_frame(&frame, &mut chunks).err())
        .or_else(|| encoder.flush(&mut chunks).err())
        .expect("an ffmpeg that exits at once must fail the stream");
    match err {
        nvencode::Error::Subprocess { stderr, .. } => assert!(
            stderr.contains("Unknown encoder: the fake has none"),
            "stderr missing from the error: {stderr:?}"
        ),
        other => panic!("expected a subprocess error, got {other:?}"),
    }
}

/// A child that floods its stderr without newlines (10 MB in one line) does not grow the error's
/// stderr tail past its bound: 12 lines of at most 1 KiB. Checked against reading whole lines,
/// which kept the 10 MB.
#[test]
fn the_stderr_tail_is_bounded_in_bytes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = fake_ffmpeg(
        dir.path(),
        "head -c 10000000 /dev/zero | tr '\\0' x >&2\nexit 1",
    );
    let config = EncoderConfig::new(320, 240);
    let frame = vec![16u8; config.validate().expect("valid")];
    let options = FfmpegOptions::new(FfmpegFamily::Libx264)
        .with_program(&script)
        .with_timeout(Duration::from_secs(20));
    let mut encoder = FfmpegEncoder::new(&config, &options).expect("open");
    let mut chunks = Vec::new();
    let err = (0..200)
        .find_map(|_| encoder.encode_frame(&frame, &mut chunks).err())
        .or_else(|| encoder.flush(&mut chunks).err())
        .expect("an ffmpeg that exits must fail the stream");
    match err {
        nvencode::Error::Subprocess { stderr, .. } => {
            assert!(
                stderr.len() <= 12 * 1100,
                "{} bytes of stderr kept",
                stderr.len()
            );
            assert!(
                stderr.contains("xxx [...]"),
                "the cut line is marked: {:?}",
                &stderr[..stderr.len().min(200)]
            );
        }
        other => panic!("expected a subprocess error, got {other:?}"),
    }
}

/// The contract on the subprocess backend: once ffmpeg is killed, every `encode` fails and the
/// frames it refused never come out (not from a later call, not from `flush`).
#[test]
fn frames_refused_after_a_kill_never_come_out() {
    let config = EncoderConfig::new(320, 240).with_bframes(Some(0));
    let encoder = FfmpegEncoder::new(&config, &FfmpegOptions::new(FfmpegFamily::Libx264))
        .expect("ffmpeg with libx264");
    let pid = encoder.pid();
    let mut encoder: Box<dyn VideoEncoder> = Box::new(encoder);
    let input = common::clip(&config, 30);
    let mut chunks = Vec::new();
    for (i, frame) in input[..10].iter().enumerate() {
        encoder
            .encode(nvencode::Frame::new(frame).with_pts(i as i64), &mut chunks)
            .expect("encode before the kill");
    }
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    // Frames 10.. go to a dead process: the pipe may still take a few before the death shows.
    let mut rest = chunks;
    let mut accepted: Vec<i64> = (0..10).collect();
    let mut refused = Vec::new();
    for (i, frame) in input.iter().enumerate().skip(10) {
        let pts = i as i64;
        match encoder.encode(nvencode::Frame::new(frame).with_pts(pts), &mut rest) {
            Ok(()) => accepted.push(pts),
            Err(_) => refused.push(pts),
        }
    }
    assert!(!refused.is_empty(), "a killed ffmpeg must refuse frames");
    assert!(
        encoder.flush(&mut rest).is_err(),
        "flush reports the dead process"
    );
    for c in &rest {
        assert!(
            !refused.contains(&c.pts),
            "frame {} came out although encode refused it",
            c.pts
        );
        assert!(accepted.contains(&c.pts));
    }
}

/// A wrapper `ffmpeg` in `dir` that first starts a background job holding the pipes it inherits
/// (its stdout is ffmpeg's output pipe), then runs the real `ffmpeg` from `PATH` with its
/// arguments: with `exec`, or as a child it waits for. The job writes its pid to `pidfile` and
/// sleeps 30 s; `launcher` (such as `setsid`) is put in front of it.
fn wrapper_with_background_job(
    dir: &std::path::Path,
    pidfile: &std::path::Path,
    launcher: &str,
    exec: bool,
) -> std::path::PathBuf {
    let body = format!(
        "{launcher} sh -c 'echo $$ > {}; exec sleep 30' &\n{}ffmpeg \"$@\"",
        pidfile.display(),
        if exec { "exec " } else { "" }
    );
    common::script(dir, "ffmpeg-wrapper", &body)
}

/// The pid the background job wrote (it may still be starting: waits up to 5 s).
fn job_pid(pidfile: &std::path::Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(pid) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "the job wrote no pid");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` has ended within 2 s.
fn ends_soon(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while running(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    !running(pid)
}

/// Encodes 30 frames through `script` and flushes; returns the chunks and how long the flush
/// took. The timeout (10 s of silence) is under the job's 30 s sleep, so a flush that waits for
/// the job fails with `Hung` instead of passing late.
fn encode_30_through(
    script: &std::path::Path,
    config: &EncoderConfig,
) -> (Vec<nvencode::EncodedChunk>, Duration) {
    let options = FfmpegOptions::new(FfmpegFamily::Libx264)
        .with_program(script)
        .with_timeout(Duration::from_secs(10));
    let mut encoder = FfmpegEncoder::new(config, &options).expect("open");
    let mut chunks = Vec::new();
    for frame in &common::clip(config, 30) {
        encoder.encode_frame(frame, &mut chunks).expect("encode");
    }
    let started = Instant::now();
    encoder.flush(&mut chunks).expect("flush");
    (chunks, started.elapsed())
}

/// A flush ends at ffmpeg's exit, not at the end of file on its output: a wrapper's background
/// job holding the output pipe does not hold back the last frame (the stall was 20 s and the
/// last frame was lost), and the job dies with ffmpeg's group.
fn background_job_holding_stdout(exec: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let pidfile = dir.path().join("job.pid");
    let script = wrapper_with_background_job(dir.path(), &pidfile, "", exec);
    let config = EncoderConfig::new(320, 240);
    let (chunks, took) = encode_30_through(&script, &config);
    assert!(
        took < Duration::from_secs(5),
        "flush took {took:?} (the job sleeps 30 s)"
    );
    common::assert_accounting(&chunks, 30);
    let decoded = common::decode_h264(&common::concat(&chunks), config.resolution);
    assert_eq!(decoded.len(), 30, "decoded frame count");
    let job = job_pid(&pidfile);
    assert!(
        ends_soon(job),
        "the wrapper's background job {job} outlived the flush"
    );
}

#[test]
fn a_background_job_of_an_exec_wrapper_does_not_hold_back_the_flush() {
    background_job_holding_stdout(true);
}

#[test]
fn a_background_job_of_a_forking_wrapper_does_not_hold_back_the_flush() {
    background_job_holding_stdout(false);
}

/// A job that left ffmpeg's group (`setsid`) cannot be killed with it and holds the output pipe
/// open for 30 s: the flush still ends with every frame, within its drain bound (2 s after
/// ffmpeg's exit).
#[test]
fn a_job_outside_the_group_holding_stdout_does_not_hold_back_the_flush() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pidfile = dir.path().join("job.pid");
    let script = wrapper_with_background_job(dir.path(), &pidfile, "setsid", true);
    let config = EncoderConfig::new(320, 240);
    let (chunks, took) = encode_30_through(&script, &config);
    let job = job_pid(&pidfile);
    // Not ours to leave behind: it escaped the group on purpose.
    let _ = std::process::Command::new("kill")
        .args(["-9", &job.to_string()])
        .status();
    assert!(
        took < Duration::from_secs(5),
        "flush took {took:?} (the job sleeps 30 s)"
    );
    common::assert_accounting(&chunks, 30);
    let decoded = common::decode_h264(&common::concat(&chunks), config.resolution);
    assert_eq!(decoded.len(), 30, "decoded frame count");
}

/// The `N of M accepted frame(s) not encoded` in an error's text.
fn frames_not_encoded(text: &str) -> Option<(u64, u64)> {
    let end = text.find(" accepted frame(s) not encoded")?;
    let mut words = text[..end].rsplit(' ');
    let accepted = words.next()?.parse().ok()?;
    (words.next()? == "of").then_some(())?;
    let lost = words.next()?.parse().ok()?;
    Some((lost, accepted))
}

/// ffmpeg killed mid-stream behind a wrapper whose background job holds the output pipe: the
/// flush reports the exit at once (not a hang after the timeout) with the count of frames lost,
/// accepted minus delivered, and the job is killed with the group. Frames are fed until some have
/// come out (ffmpeg writes its output in 32 KiB blocks), so that the count is told apart from
/// the frames accepted.
#[test]
fn frames_lost_with_a_killed_ffmpeg_are_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pidfile = dir.path().join("job.pid");
    let script = wrapper_with_background_job(dir.path(), &pidfile, "", true);
    let config = EncoderConfig::new(320, 240);
    let options = FfmpegOptions::new(FfmpegFamily::Libx264)
        .with_program(&script)
        .with_timeout(Duration::from_secs(10));
    let mut encoder = FfmpegEncoder::new(&config, &options).expect("open");
    let mut chunks = Vec::new();
    let input = common::clip(&config, 60);
    let mut accepted = 0u64;
    let feeding = Instant::now();
    while chunks.is_empty() {
        assert!(
            feeding.elapsed() < Duration::from_secs(30),
            "no frame came out of {accepted} sent"
        );
        let frame = &input[(accepted % 60) as usize];
        encoder.encode_frame(frame, &mut chunks).expect("encode");
        accepted += 1;
    }
    let job = job_pid(&pidfile);
    // `exec`: the encoder's child is the real ffmpeg.
    let status = std::process::Command::new("kill")
        .args(["-9", &encoder.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let started = Instant::now();
    let err = encoder
        .flush(&mut chunks)
        .expect_err("flush after ffmpeg was killed must fail");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "flush took {took:?}");
    let text = err.to_string();
    let problem = subprocess_problem(err);
    assert!(
        matches!(problem, SubprocessProblem::Exited { .. }),
        "{problem:?}"
    );
    let delivered = chunks.len() as u64;
    assert!(
        delivered > 0 && delivered < accepted,
        "{delivered} of {accepted} came out (libx264's lookahead holds frames back)"
    );
    assert_eq!(
        frames_not_encoded(&text),
        Some((accepted - delivered, accepted)),
        "accepted {accepted}, delivered {delivered}: {text}"
    );
    assert!(
        ends_soon(job),
        "the wrapper's background job {job} outlived the failure"
    );
}
