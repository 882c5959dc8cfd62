//! Choosing and opening a backend.

use crate::encoder::{EncoderConfig, EncoderKind, VideoEncoder};
use crate::error::Error;
use crate::x264::X264Encoder;

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
        EncoderKind::X264 => Ok(Box::new(X264Encoder::new(config)?)),
        EncoderKind::Nvenc => crate::nvenc::open(config),
        EncoderKind::Ffmpeg(codec) => Ok(Box::new(crate::ffmpeg::FfmpegEncoder::new(
            config,
            &crate::ffmpeg::FfmpegOptions::new(codec),
        )?)),
    }
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
}
