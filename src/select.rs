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

impl std::str::FromStr for EncoderChoice {
    type Err = crate::ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            Ok(EncoderChoice::Auto)
        } else {
            s.parse().map(EncoderChoice::Only)
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
