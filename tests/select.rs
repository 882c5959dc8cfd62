//! Backend selection on a machine without an NVIDIA driver (CI, most developer machines).

mod common;

use nvencode::{EncoderChoice, EncoderConfig, EncoderKind, Error};

/// Whether `test`, which expects the default NVENC library to be missing, runs here.
fn without_nvenc_library(test: &str) -> bool {
    if std::env::var_os("NVENC_LIBRARY_PATH").is_some() {
        common::skipped(test, "NVENC_LIBRARY_PATH names a library to load instead");
        return false;
    }
    common::without_nvidia_driver(test)
}

#[test]
fn nvenc_without_driver_is_a_typed_load_error() {
    if !without_nvenc_library("nvenc_without_driver_is_a_typed_load_error") {
        return;
    }
    let config = EncoderConfig::new(320, 240);
    match nvencode::open_encoder(EncoderChoice::Only(EncoderKind::Nvenc), &config) {
        Err(Error::NvencLoad(nvencode::LoadError::LibraryNotFound { tried, .. })) => {
            assert!(
                tried.iter().any(|t| t.contains("libnvidia-encode")),
                "{tried:?}"
            );
        }
        Err(other) => panic!("expected LibraryNotFound, got {other:?}"),
        Ok(_) => panic!("NVENC opened without a driver"),
    }
}

#[cfg(feature = "x264")]
#[test]
fn auto_falls_back_to_x264_without_driver() {
    if !without_nvenc_library("auto_falls_back_to_x264_without_driver") {
        return;
    }
    let config = EncoderConfig::new(320, 240);
    let encoder = nvencode::open_encoder(EncoderChoice::Auto, &config).expect("x264 always opens");
    assert_eq!(encoder.kind(), EncoderKind::X264);
}

#[test]
fn invalid_config_fails_before_any_backend_is_tried() {
    let config = EncoderConfig::new(320, 240).with_crf(99.0);
    match nvencode::open_encoder(EncoderChoice::Auto, &config) {
        Err(Error::Config(nvencode::ConfigError::CrfOutOfRange { .. })) => {}
        Err(other) => panic!("expected CrfOutOfRange, got {other:?}"),
        Ok(_) => panic!("accepted crf 99"),
    }
}

#[test]
fn choice_parses_auto_and_backend_names() {
    assert_eq!("auto".parse(), Ok(EncoderChoice::Auto));
    assert_eq!("x264".parse(), Ok(EncoderChoice::Only(EncoderKind::X264)));
    assert_eq!("nvenc".parse(), Ok(EncoderChoice::Only(EncoderKind::Nvenc)));
    // FFmpeg's encoder names select the subprocess backend.
    assert_eq!(
        "h264_nvenc".parse(),
        Ok(EncoderChoice::Only(EncoderKind::Ffmpeg(
            nvencode::FfmpegFamily::Nvenc
        )))
    );
    assert_eq!(
        "qsv".parse(),
        Ok(EncoderChoice::Only(EncoderKind::Ffmpeg(
            nvencode::FfmpegFamily::Qsv
        )))
    );
    assert!(matches!(
        "amf".parse::<EncoderChoice>(),
        Err(nvencode::ConfigError::UnknownEncoder { .. })
    ));
}

/// Runs `name` (an ignored test of this binary) in a child process with `NVENC_RS_BACKEND` set to
/// `value`: the variable is process-wide, so it is never set in this process, where other tests
/// run in parallel. The child is bounded by the test's own work (one small encoder opened).
fn run_child_with_backend_env(name: &str, value: &str) {
    let exe = std::env::current_exe().expect("test binary path");
    let out = std::process::Command::new(exe)
        .args(["--exact", name, "--ignored", "--nocapture"])
        .env("NVENC_RS_BACKEND", value)
        .output()
        .expect("run the child test");
    assert!(
        out.status.success(),
        "child {name} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The child ran its test (a filter that matched nothing would also exit 0).
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn backend_env_forces_the_auto_list() {
    run_child_with_backend_env("child_backend_env_forces_ffmpeg_x264", " ffmpeg-x264 ");
}

#[test]
#[ignore = "child half of backend_env_forces_the_auto_list"]
fn child_backend_env_forces_ffmpeg_x264() {
    assert_eq!(
        std::env::var("NVENC_RS_BACKEND").as_deref(),
        Ok(" ffmpeg-x264 ")
    );
    let config = EncoderConfig::new(64, 64);
    // Without the variable Auto never tries ffmpeg-x264 (the in-process x264 does that work).
    let encoder = nvencode::open_encoder(EncoderChoice::Auto, &config).expect("ffmpeg-x264 opens");
    assert_eq!(
        encoder.kind(),
        EncoderKind::Ffmpeg(nvencode::FfmpegFamily::Libx264)
    );
    // An explicit choice is not affected.
    let only = nvencode::open_encoder(EncoderChoice::Only(EncoderKind::Nvenc), &config);
    assert!(!matches!(only, Err(Error::Config(_))));
}

#[test]
fn a_bad_backend_env_is_a_typed_error_naming_the_value() {
    run_child_with_backend_env("child_bad_backend_env", "x264,nvidia");
}

#[test]
#[ignore = "child half of a_bad_backend_env_is_a_typed_error_naming_the_value"]
fn child_bad_backend_env() {
    let config = EncoderConfig::new(64, 64);
    match nvencode::open_encoder(EncoderChoice::Auto, &config) {
        Err(Error::Config(nvencode::ConfigError::BadBackendList {
            variable,
            name,
            valid,
            ..
        })) => {
            assert_eq!(variable, "NVENC_RS_BACKEND");
            assert_eq!(name, "nvidia");
            assert_eq!(valid, EncoderKind::NAMES);
        }
        Err(other) => panic!("expected BadBackendList, got {other:?}"),
        Ok(encoder) => panic!("opened {} with a bad NVENC_RS_BACKEND", encoder.kind()),
    }
}
