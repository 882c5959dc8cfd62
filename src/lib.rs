#![doc = include_str!("../README.md")]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod detect;
pub mod encoder;
pub mod error;
pub mod fallback;
pub mod ffmpeg;
mod gpu_config;
pub mod nvenc;
pub mod ring_buffer;
mod select;
pub mod testsrc;
pub mod x264;

pub use detect::{detect, detect_available_encoders, DetectionReport};
pub use encoder::{
    Bitrate, Codec, EncodedChunk, EncoderConfig, EncoderKind, FfmpegCodec, Frame, FrameRate,
    FrameType, PixelFormat, Preset, RateControl, RateControlMode, Resolution, Tune, VideoEncoder,
};
pub use error::{ConfigError, Error, SubprocessProblem};
pub use fallback::FallbackEncoder;
pub use gpu_config::{GpuEncoderConfig, HostRing};
pub use nvenc_sys::LoadError;
pub use select::{open_backend, open_encoder, EncoderChoice};
pub use x264::X264Encoder;
