// The README is the crate documentation; its examples run the in-process x264 backend, so a build
// without the `x264` feature documents itself in one line instead. docs.rs (`docsrs`) builds
// without the feature, for lack of libx264, and shows the README and the x264 backend all the same.
#![cfg_attr(any(feature = "x264", docsrs), doc = include_str!("../README.md"))]
#![cfg_attr(
    not(any(feature = "x264", docsrs)),
    doc = "H.264 and HEVC encoding for video pipelines: NVIDIA NVENC direct, ffmpeg subprocess backends (built without the in-process `x264` feature). See README.md."
)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
// docs.rs (nightly rustdoc) marks feature-gated items with the feature they need.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backends;
pub mod bitstream;
pub mod cuda;
pub mod detect;
pub mod encoder;
pub mod error;
pub mod fallback;
pub mod ffmpeg;
mod gpu_config;
/// H.264 Annex B parsing, at its old path; see [`bitstream`] for every codec.
pub use bitstream::h264;
pub mod metrics;
pub mod nvenc;
pub mod pipeline;
pub mod ring_buffer;
mod select;
pub mod sink;
pub mod testsrc;
// docs.rs documents it without the feature (and without libx264; see `x264/mod.rs`).
#[cfg(any(feature = "x264", docsrs))]
#[cfg_attr(docsrs, doc(cfg(feature = "x264")))]
pub mod x264;
// As x264: docs.rs documents it without the feature (and without libx265; see `x265/mod.rs`).
#[cfg(any(feature = "x265", docsrs))]
#[cfg_attr(docsrs, doc(cfg(feature = "x265")))]
pub mod x265;

/// Entry points for the fuzz targets in `fuzz/` (the `fuzzing` feature): not a stable API.
#[cfg(feature = "fuzzing")]
#[cfg_attr(docsrs, doc(cfg(feature = "fuzzing")))]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::ffmpeg::ts::fuzz_demux as ts_demux;
    pub use crate::sink::fuzz_hvcc as hvcc;
}

pub use detect::{detect, detect_available_encoders, DetectionReport};
#[allow(deprecated)]
pub use encoder::FfmpegH264Encoder;
pub use encoder::{
    Bitrate, Codec, EncodedChunk, EncoderConfig, EncoderKind, FfmpegFamily, Frame, FrameRate,
    FrameType, PixelFormat, Preset, RateControl, RateControlMode, Resolution, SlotFrame, Tune,
    VideoEncoder,
};
pub use error::{ConfigError, Error, SubprocessProblem};
pub use fallback::FallbackEncoder;
pub use ffmpeg::{FfmpegEncoder, FfmpegOptions};
pub use gpu_config::{GpuEncoderConfig, HostRing};
pub use nvenc::{NvencEncoder, NvencError, NvencErrorKind, NvencOptions, NvencPreset, NvencTuning};
pub use nvenc_sys::LoadError;
pub use pipeline::{
    BackPressure, EncodePipeline, EncodedOutput, FrameProducer, PipelineError, PipelineOptions,
    SlotMemory,
};
pub use ring_buffer::FrameRing;
pub use select::{open_backend, open_encoder, EncoderChoice};
pub use sink::{AnnexBWriter, Durability, Layout, Mp4Options, Mp4Writer, SinkError};
// Every backend's encoder type is at the root (x264's only where it is built).
#[cfg(any(feature = "x264", docsrs))]
#[cfg_attr(docsrs, doc(cfg(feature = "x264")))]
pub use x264::X264Encoder;
#[cfg(any(feature = "x265", docsrs))]
#[cfg_attr(docsrs, doc(cfg(feature = "x265")))]
pub use x265::X265Encoder;
