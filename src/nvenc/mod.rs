//! The direct NVENC backend.
//!
//! Today this module loads the driver's `libnvidia-encode` through [`nvenc_sys::load`] and checks
//! its API version, so [`open`] says precisely why NVENC cannot be used on this machine (no
//! driver, driver too old, wrong library). Encode sessions on CUDA surfaces are not built yet:
//! where the driver loads, [`open`] reports [`Error::Unavailable`] saying so.

use crate::encoder::{EncoderConfig, EncoderKind, VideoEncoder};
use crate::error::Error;

/// Opens an NVENC encoder for `config`.
///
/// # Errors
/// [`Error::Config`] for an invalid configuration; [`Error::NvencLoad`] when the driver library
/// cannot be loaded or is too old; [`Error::Unavailable`] otherwise, with the reason.
pub fn open(config: &EncoderConfig) -> Result<Box<dyn VideoEncoder>, Error> {
    config.validate()?;
    if !cfg!(nvenc_platform) {
        return Err(Error::Unavailable {
            backend: EncoderKind::Nvenc,
            reason: format!(
                "NVIDIA ships NVENC drivers for Linux (x86_64, aarch64) and 64-bit Windows only, \
                 not {}-{}",
                std::env::consts::OS,
                std::env::consts::ARCH
            ),
        });
    }
    let library = nvenc_sys::load()?;
    Err(Error::Unavailable {
        backend: EncoderKind::Nvenc,
        reason: format!(
            "the driver's libnvidia-encode loaded ({}, NVENC API up to {}), but this build of the \
             crate cannot open encode sessions yet",
            library.path().display(),
            library.driver_max_version()
        ),
    })
}

#[allow(dead_code)] // Used by the session layer, which lands next.
mod api;
mod error;

pub use error::{NvencError, NvencErrorKind};
