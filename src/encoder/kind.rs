//! Which backend: [`EncoderKind`] and the FFmpeg encoders of the subprocess backend.

use std::fmt;
use std::str::FromStr;

use super::config::ConfigError;

/// The encoder backends this crate knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EncoderKind {
    /// NVIDIA NVENC through the driver's `libnvidia-encode`, in process.
    Nvenc,
    /// One of FFmpeg's H.264 encoders, in an `ffmpeg` subprocess.
    Ffmpeg(FfmpegH264Encoder),
    /// Software libx264, in process.
    X264,
}

/// The FFmpeg H.264 encoders the subprocess backend can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FfmpegH264Encoder {
    /// `h264_nvenc`: NVIDIA NVENC, as a cross-check of the direct backend.
    Nvenc,
    /// `h264_qsv`: Intel Quick Sync Video.
    Qsv,
    /// `h264_videotoolbox`: Apple VideoToolbox.
    VideoToolbox,
    /// `h264_vaapi`: VA-API (Intel, AMD on Linux).
    Vaapi,
    /// `libx264`: software; what the subprocess backend is tested with where no GPU is.
    Libx264,
}

impl FfmpegH264Encoder {
    /// FFmpeg's name for the encoder (`-c:v`).
    #[must_use]
    pub const fn ffmpeg_name(self) -> &'static str {
        match self {
            FfmpegH264Encoder::Nvenc => "h264_nvenc",
            FfmpegH264Encoder::Qsv => "h264_qsv",
            FfmpegH264Encoder::VideoToolbox => "h264_videotoolbox",
            FfmpegH264Encoder::Vaapi => "h264_vaapi",
            FfmpegH264Encoder::Libx264 => "libx264",
        }
    }
}

impl EncoderKind {
    /// Every name [`FromStr`] accepts.
    pub const NAMES: &'static [&'static str] = &[
        "nvenc",
        "x264",
        "ffmpeg-nvenc",
        "qsv",
        "videotoolbox",
        "vaapi",
        "ffmpeg-x264",
    ];

    /// The short name used in logs, metrics labels and on the command line.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            EncoderKind::Nvenc => "nvenc",
            EncoderKind::X264 => "x264",
            EncoderKind::Ffmpeg(FfmpegH264Encoder::Nvenc) => "ffmpeg-nvenc",
            EncoderKind::Ffmpeg(FfmpegH264Encoder::Qsv) => "qsv",
            EncoderKind::Ffmpeg(FfmpegH264Encoder::VideoToolbox) => "videotoolbox",
            EncoderKind::Ffmpeg(FfmpegH264Encoder::Vaapi) => "vaapi",
            EncoderKind::Ffmpeg(FfmpegH264Encoder::Libx264) => "ffmpeg-x264",
        }
    }
}

impl fmt::Display for EncoderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EncoderKind {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "nvenc" => Ok(EncoderKind::Nvenc),
            "x264" => Ok(EncoderKind::X264),
            "ffmpeg-nvenc" | "h264_nvenc" => Ok(EncoderKind::Ffmpeg(FfmpegH264Encoder::Nvenc)),
            "qsv" | "h264_qsv" => Ok(EncoderKind::Ffmpeg(FfmpegH264Encoder::Qsv)),
            "videotoolbox" | "h264_videotoolbox" => {
                Ok(EncoderKind::Ffmpeg(FfmpegH264Encoder::VideoToolbox))
            }
            "vaapi" | "h264_vaapi" => Ok(EncoderKind::Ffmpeg(FfmpegH264Encoder::Vaapi)),
            "ffmpeg-x264" | "libx264" => Ok(EncoderKind::Ffmpeg(FfmpegH264Encoder::Libx264)),
            _ => Err(ConfigError::UnknownEncoder {
                name: s.to_owned(),
                valid: Self::NAMES,
            }),
        }
    }
}
