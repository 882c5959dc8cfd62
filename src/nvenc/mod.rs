//! The direct NVENC backend.

use crate::encoder::{EncoderConfig, EncoderKind, VideoEncoder};
use crate::error::Error;

/// Opens an NVENC session for `config`.
///
/// # Errors
/// [`Error::Unavailable`] with the reason NVENC cannot be used here.
pub fn open(config: &EncoderConfig) -> Result<Box<dyn VideoEncoder>, Error> {
    config.validate()?;
    Err(Error::Unavailable {
        backend: EncoderKind::Nvenc,
        reason: "not wired yet".into(),
    })
}
