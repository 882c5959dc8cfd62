//! Choosing and opening a backend.

use crate::encoder::{EncoderConfig, EncoderKind, VideoEncoder};
use crate::error::Error;
use crate::x264::X264Encoder;

/// Which backend [`open_encoder`] should open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum EncoderChoice {
    /// The first backend that opens, in priority order: NVENC, then x264.
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

/// The order [`EncoderChoice::Auto`] tries backends in: the in-process backends, whose open
/// proves they work. (The ffmpeg-subprocess backends start a child that may only fail at the
/// first frame, so they are chosen through [`crate::detect`], which probes them.)
pub const AUTO_ORDER: &[EncoderKind] = &[EncoderKind::Nvenc, EncoderKind::X264];

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

/// Opens an encoder: the one named, or with [`EncoderChoice::Auto`] the first of [`AUTO_ORDER`]
/// that opens. Every rejected backend is logged at `debug` with its reason, and kept in
/// [`Error::NoEncoder`] if none opens.
///
/// # Errors
/// [`Error::Config`] at once for an invalid configuration (no backend would accept it); the
/// backend's error for [`EncoderChoice::Only`]; [`Error::NoEncoder`] when no backend opens.
pub fn open_encoder(
    choice: EncoderChoice,
    config: &EncoderConfig,
) -> Result<Box<dyn VideoEncoder>, Error> {
    config.validate()?;
    let kinds = match choice {
        EncoderChoice::Only(kind) => return open_backend(kind, config),
        EncoderChoice::Auto => AUTO_ORDER,
    };
    let mut rejected = Vec::new();
    for &kind in kinds {
        match open_backend(kind, config) {
            Ok(encoder) => {
                tracing::info!(encoder = %kind, skipped = rejected.len(), "encoder selected");
                return Ok(encoder);
            }
            Err(err) => {
                tracing::debug!(encoder = %kind, error = %err, "encoder rejected");
                rejected.push((kind, Box::new(err)));
            }
        }
    }
    Err(Error::NoEncoder(rejected))
}
