//! The direct NVENC backend.
//!
//! [`NvencEncoder`] drives an NVENC session on CUDA surfaces it registered once, at open; a
//! frame in a pinned [ring](crate::ring_buffer) slot is uploaded from the slot itself, and a
//! frame in a device slot ([`DeviceStorage`](crate::ring_buffer::DeviceStorage)) is encoded from
//! the slot's own surface, registered with NVENC the first time it is seen. The driver's `libnvidia-encode` and `libcuda` are loaded at
//! run time, so [`open`] says precisely why NVENC cannot be used on a machine (no driver, driver
//! too old, no CUDA device, a GPU without an encode engine, a session limit).
//!
//! Both codecs of [`EncoderConfig::codec`](crate::EncoderConfig::codec) go through the same
//! session: H.264 (the preset's profile; High 4:4:4 Predictive for lossless) and HEVC (Main,
//! 8-bit 4:2:0, VPS, SPS and PPS on every IDR). Every capability, input format and preset
//! configuration is asked for the configured codec's GUID; a GPU whose NVENC does not list the
//! codec (HEVC before the second Maxwell generation) is an [`Error::NvencCapability`] naming
//! that GUID.
//!
//! Layers: `api` is the only code that calls through the driver's function table, taking the
//! crate's CUDA types ([`crate::cuda`]); `init` computes a session's initialize parameters (a
//! pure function of the configuration and what the GPU reports); `session` owns a session's
//! surfaces, staging buffers and pictures in flight and tears them down in order; `encoder` is
//! the per-frame path.

use crate::encoder::{EncoderConfig, EncoderKind, VideoEncoder};
use crate::error::Error;

/// Opens an NVENC encoder for `config`.
///
/// # Errors
/// [`Error::Config`] for an invalid configuration; [`Error::NvencLoad`] when the driver library
/// cannot be loaded or is too old; [`Error::Unavailable`] otherwise, with the reason.
pub fn open(config: &EncoderConfig) -> Result<Box<dyn VideoEncoder>, Error> {
    open_with(config, &NvencOptions::default())
}

/// [`open`] with NVENC-only options.
///
/// # Errors
/// As [`open`].
pub fn open_with(
    config: &EncoderConfig,
    options: &NvencOptions,
) -> Result<Box<dyn VideoEncoder>, Error> {
    if !cfg!(nvenc_platform) {
        // A configuration error is reported in preference to the platform; on an NVENC platform
        // `NvencEncoder::with_options` validates first thing (its input gate), so it is not
        // validated twice there.
        config.validate()?;
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
    Ok(Box::new(NvencEncoder::with_options(config, options)?))
}

mod api;
mod bounded;
mod caps;
mod caps_cache;
mod encoder;
pub(crate) mod error;
mod fail;
mod init;
mod options;
mod placement;
mod probe;
mod session;
mod staged;
mod watchdog;

pub use caps::{CodecCaps, NvencCaps};
pub use encoder::NvencEncoder;
pub use error::{NvencError, NvencErrorKind};
pub use options::{NvencOptions, NvencPreset, NvencTuning};
pub use placement::GpuChoice;
pub use probe::probe;

/// Every CUDA device with its UUID as `nvidia-smi -L` prints it (`None` where CUDA cannot say),
/// listed within `deadline` (see [`NvencOptions::open_timeout`]).
pub(crate) fn cuda_gpus(
    deadline: std::time::Duration,
) -> Result<Vec<(usize, Option<String>)>, crate::error::Error> {
    Ok(placement::devices(deadline)?
        .into_iter()
        .map(|(d, hex)| (d, hex.map(|h| placement::display_uuid(&h))))
        .collect())
}
