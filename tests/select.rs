//! Backend selection on a machine without an NVIDIA driver (CI, most developer machines).

use nvenc::{EncoderChoice, EncoderConfig, EncoderKind, Error};

fn has_nvidia_driver() -> bool {
    std::path::Path::new("/proc/driver/nvidia").exists()
        || std::env::var_os("NVENC_LIBRARY_PATH").is_some()
}

#[test]
fn nvenc_without_driver_is_a_typed_load_error() {
    if has_nvidia_driver() {
        eprintln!("skipped: this machine has an NVIDIA driver");
        return;
    }
    let config = EncoderConfig::new(320, 240);
    match nvenc::open_encoder(EncoderChoice::Only(EncoderKind::Nvenc), &config) {
        Err(Error::NvencLoad(nvenc::LoadError::LibraryNotFound { tried, .. })) => {
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
    if has_nvidia_driver() {
        eprintln!("skipped: this machine has an NVIDIA driver");
        return;
    }
    let config = EncoderConfig::new(320, 240);
    let encoder = nvenc::open_encoder(EncoderChoice::Auto, &config).expect("x264 always opens");
    assert_eq!(encoder.kind(), EncoderKind::X264);
}

#[test]
fn invalid_config_fails_before_any_backend_is_tried() {
    let config = EncoderConfig::new(320, 240).with_crf(99.0);
    match nvenc::open_encoder(EncoderChoice::Auto, &config) {
        Err(Error::Config(nvenc::ConfigError::CrfOutOfRange { .. })) => {}
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
            nvenc::FfmpegCodec::Nvenc
        )))
    );
    assert_eq!(
        "qsv".parse(),
        Ok(EncoderChoice::Only(EncoderKind::Ffmpeg(
            nvenc::FfmpegCodec::Qsv
        )))
    );
    assert!(matches!(
        "amf".parse::<EncoderChoice>(),
        Err(nvenc::ConfigError::UnknownEncoder { .. })
    ));
}
