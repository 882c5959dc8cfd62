// The README is the crate documentation; its examples run the in-process x264 backend, so a build
// without the `x264` feature documents itself in one line instead.
#![cfg_attr(feature = "x264", doc = include_str!("../README.md"))]
#![cfg_attr(
    not(feature = "x264"),
    doc = "H.264 encoding for video pipelines: NVIDIA NVENC direct, ffmpeg subprocess backends (built without the in-process `x264` feature). See README.md."
)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod backends;
pub mod cuda;
pub mod detect;
pub mod encoder;
pub mod error;
pub mod fallback;
pub mod ffmpeg;
mod gpu_config;
pub mod h264;
pub mod metrics;
pub mod nvenc;
pub mod pipeline;
pub mod ring_buffer;
mod select;
pub mod sink;
/// Not part of the stable API: a synthetic test pattern for this crate's tests, examples and
/// benchmarks (hidden from the documentation).
#[doc(hidden)]
pub mod testsrc;
#[cfg(feature = "x264")]
pub mod x264;

/// Entry points for the fuzz targets in `fuzz/` (the `fuzzing` feature): not a stable API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::ffmpeg::ts::fuzz_demux as ts_demux;
}

pub use detect::{detect, detect_available_encoders, DetectionReport};
pub use encoder::{
    Bitrate, Codec, EncodedChunk, EncoderConfig, EncoderKind, FfmpegH264Encoder, Frame, FrameRate,
    FrameType, PixelFormat, Preset, RateControl, RateControlMode, Resolution, Tune, VideoEncoder,
};
pub use error::{ConfigError, Error, SubprocessProblem};
pub use fallback::FallbackEncoder;
pub use ffmpeg::{FfmpegEncoder, FfmpegOptions};
pub use gpu_config::{GpuEncoderConfig, HostRing};
pub use nvenc::{NvencEncoder, NvencOptions, NvencPreset, NvencTuning};
pub use nvenc_sys::LoadError;
pub use select::{open_backend, open_encoder, EncoderChoice};
// Every backend's encoder type is at the root (x264's only where it is built).
#[cfg(feature = "x264")]
pub use x264::X264Encoder;
