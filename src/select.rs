//! Choosing and opening a backend.

use crate::encoder::{EncoderConfig, EncoderKind, VideoEncoder};
use crate::error::Error;

/// Which backend [`open_encoder`] should open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum EncoderChoice {
    /// The best backend available here, with failover (see [`open_encoder`]).
    #[default]
    Auto,
    /// Exactly this backend, or an error saying why it cannot be used.
    Only(EncoderKind),
}

impl EncoderChoice {
    /// Every name [`FromStr`](std::str::FromStr) accepts: `auto` and every
    /// [`EncoderKind::NAMES`] entry.
    pub const NAMES: &'static [&'static str] = &[
        "auto",
        "nvenc",
        "x264",
        "ffmpeg-nvenc",
        "qsv",
        "videotoolbox",
        "vaapi",
        "ffmpeg-x264",
    ];
}

impl std::str::FromStr for EncoderChoice {
    type Err = crate::ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            Ok(EncoderChoice::Auto)
        } else {
            s.parse().map(EncoderChoice::Only).map_err(|e| match e {
                crate::ConfigError::UnknownEncoder { name, .. } => {
                    crate::ConfigError::UnknownEncoder {
                        name,
                        valid: EncoderChoice::NAMES,
                    }
                }
                other => other,
            })
        }
    }
}

/// Opens one backend.
///
/// # Errors
/// [`Error::Config`] for an invalid configuration, [`Error::Unavailable`] when the backend cannot
/// run on this machine, or the backend's own error.
pub fn open_backend(
    kind: EncoderKind,
    config: &EncoderConfig,
) -> Result<Box<dyn VideoEncoder>, Error> {
    match kind {
        EncoderKind::X264 => open_x264(config),
        EncoderKind::Nvenc => crate::nvenc::open(config),
        EncoderKind::Ffmpeg(codec) => Ok(Box::new(crate::ffmpeg::FfmpegEncoder::new(
            config,
            &crate::ffmpeg::FfmpegOptions::new(codec),
        )?)),
    }
}

#[cfg(feature = "x264")]
fn open_x264(config: &EncoderConfig) -> Result<Box<dyn VideoEncoder>, Error> {
    Ok(Box::new(crate::x264::X264Encoder::new(config)?))
}

/// Why x264 cannot be opened in a build without the `x264` feature.
#[cfg(not(feature = "x264"))]
const X264_NOT_BUILT: &str =
    "this build of the nvenc crate has no in-process x264: it was compiled without its `x264` \
     feature (which links libx264, GPL-2.0-or-later); enable the feature, or use ffmpeg-x264";

#[cfg(not(feature = "x264"))]
fn open_x264(_config: &EncoderConfig) -> Result<Box<dyn VideoEncoder>, Error> {
    Err(Error::Unavailable {
        backend: EncoderKind::X264,
        reason: X264_NOT_BUILT.into(),
    })
}

/// Opens an encoder: exactly the one named, or with [`EncoderChoice::Auto`] a
/// [`FallbackEncoder`](crate::FallbackEncoder) over every encoder available here, best first
/// (see [`crate::fallback`]): it keeps each rejected backend's reason, and fails over to the next
/// backend if the one encoding fails mid-stream.
///
/// # Errors
/// [`Error::Config`] at once for an invalid configuration (no backend would accept it); the
/// backend's error for [`EncoderChoice::Only`]; [`Error::NoEncoder`] when no backend opens.
pub fn open_encoder(
    choice: EncoderChoice,
    config: &EncoderConfig,
) -> Result<Box<dyn VideoEncoder>, Error> {
    config.validate()?;
    match choice {
        EncoderChoice::Only(kind) => open_backend(kind, config),
        EncoderChoice::Auto => Ok(Box::new(crate::FallbackEncoder::new(config, None)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_names_are_auto_and_every_encoder_name() {
        assert_eq!(EncoderChoice::NAMES[0], "auto");
        assert_eq!(&EncoderChoice::NAMES[1..], EncoderKind::NAMES);
        for name in EncoderChoice::NAMES {
            assert!(name.parse::<EncoderChoice>().is_ok(), "{name}");
        }
        let err = "nvidia".parse::<EncoderChoice>().unwrap_err().to_string();
        assert!(err.contains("auto, nvenc"), "{err}");
    }

    #[cfg(not(feature = "x264"))]
    #[test]
    fn without_the_x264_feature_x264_is_unavailable_and_says_why() {
        let config = EncoderConfig::new(64, 64);
        match open_backend(EncoderKind::X264, &config) {
            Err(Error::Unavailable { backend, reason }) => {
                assert_eq!(backend, EncoderKind::X264);
                assert!(reason.contains("`x264` feature"), "{reason}");
            }
            other => panic!("expected Unavailable, got {:?}", other.map(|e| e.kind())),
        }
        // The fallback chain keeps that reason among its rejections.
        match open_encoder(EncoderChoice::Auto, &config) {
            Ok(encoder) => assert_ne!(encoder.kind(), EncoderKind::X264),
            Err(Error::NoEncoder(rejected)) => {
                let x264 = rejected
                    .iter()
                    .find(|(kind, _)| *kind == EncoderKind::X264)
                    .map(|(_, e)| e.to_string())
                    .unwrap_or_default();
                assert!(x264.contains("`x264` feature"), "{rejected:?}");
            }
            Err(other) => panic!("expected NoEncoder, got {other:?}"),
        }
    }
}
