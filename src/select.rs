//! Choosing and opening a backend.

use crate::encoder::{EncoderConfig, EncoderKind, VideoEncoder};
use crate::error::{ConfigError, Error};
use crate::fallback::FallbackEncoder;
use crate::nvenc::NvencOptions;

/// Which backend [`open_encoder`] should open.
///
/// With [`EncoderChoice::Auto`] the order can be forced by the environment variable
/// `NVENC_RS_BACKEND` (see [`crate::backends`]).
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
        "x265",
        "ffmpeg-nvenc",
        "qsv",
        "videotoolbox",
        "vaapi",
        "ffmpeg-x264",
        "ffmpeg-x265",
    ];
}

impl std::str::FromStr for EncoderChoice {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            Ok(EncoderChoice::Auto)
        } else {
            s.parse().map(EncoderChoice::Only).map_err(|e| match e {
                ConfigError::UnknownEncoder { name, .. } => ConfigError::UnknownEncoder {
                    name,
                    valid: EncoderChoice::NAMES,
                },
                other => other,
            })
        }
    }
}

/// Opens one backend, through its entry of the [backend table](crate::backends).
///
/// # Errors
/// [`Error::Config`] for an invalid configuration, [`Error::Unavailable`] when the backend cannot
/// run on this machine, or the backend's own error.
pub fn open_backend(
    kind: EncoderKind,
    config: &EncoderConfig,
) -> Result<Box<dyn VideoEncoder>, Error> {
    crate::backends::open(kind, config, &NvencOptions::default())
}

/// Opens an encoder: exactly the one named, or with [`EncoderChoice::Auto`] a
/// [`FallbackEncoder`] over every encoder available here, best first
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
    // Each backend validates `config` where it goes live (its input gate); the fallback chain
    // reports a configuration error in preference to "no encoder".
    match choice {
        EncoderChoice::Only(kind) => open_backend(kind, config),
        EncoderChoice::Auto => Ok(Box::new(FallbackEncoder::new(config, None)?)),
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
