//! Which backend: [`EncoderKind`] and the FFmpeg encoder families of the subprocess backend. Which
//! codecs each one encodes, and under which name, is [`super::codecs`]'s.

use std::fmt;

/// The encoder backends this crate knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EncoderKind {
    /// NVIDIA NVENC through the driver's `libnvidia-encode`, in process (H.264 and HEVC).
    Nvenc,
    /// One of FFmpeg's encoders, in an `ffmpeg` subprocess.
    Ffmpeg(FfmpegFamily),
    /// Software libx264, in process (H.264).
    X264,
    /// Software libx265, in process (HEVC).
    X265,
}

/// The FFmpeg encoders the subprocess backend can drive, by family: a hardware family encodes
/// every codec its FFmpeg build names (`h264_qsv`, `hevc_qsv`), a software one its own codec.
/// [`super::codecs::ffmpeg_name`] gives the FFmpeg encoder for a codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FfmpegFamily {
    /// `h264_nvenc`, `hevc_nvenc`: NVIDIA NVENC, as a cross-check of the direct backend.
    Nvenc,
    /// `h264_qsv`, `hevc_qsv`: Intel Quick Sync Video.
    Qsv,
    /// `h264_videotoolbox`, `hevc_videotoolbox`: Apple VideoToolbox.
    VideoToolbox,
    /// `h264_vaapi`, `hevc_vaapi`: VA-API (Intel, AMD on Linux).
    Vaapi,
    /// `libx264`: software H.264; what the subprocess backend is tested with where no GPU is.
    Libx264,
    /// `libx265`: software HEVC; the software HEVC backend of a build without the `x265` feature.
    Libx265,
}

/// The family's old name, from when the crate encoded only H.264.
#[deprecated(
    since = "0.2.0",
    note = "renamed to `FfmpegFamily`: the families encode HEVC too"
)]
pub type FfmpegH264Encoder = FfmpegFamily;

impl EncoderKind {
    /// Every name [`FromStr`](std::str::FromStr) accepts (besides FFmpeg's encoder names: see
    /// [`super::codecs`], where the parsing is, since it reads the names of FFmpeg's encoders).
    pub const NAMES: &'static [&'static str] = &[
        "nvenc",
        "x264",
        "x265",
        "ffmpeg-nvenc",
        "qsv",
        "videotoolbox",
        "vaapi",
        "ffmpeg-x264",
        "ffmpeg-x265",
    ];

    /// The short name used in logs, metrics labels and on the command line.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            EncoderKind::Nvenc => "nvenc",
            EncoderKind::X264 => "x264",
            EncoderKind::X265 => "x265",
            EncoderKind::Ffmpeg(FfmpegFamily::Nvenc) => "ffmpeg-nvenc",
            EncoderKind::Ffmpeg(FfmpegFamily::Qsv) => "qsv",
            EncoderKind::Ffmpeg(FfmpegFamily::VideoToolbox) => "videotoolbox",
            EncoderKind::Ffmpeg(FfmpegFamily::Vaapi) => "vaapi",
            EncoderKind::Ffmpeg(FfmpegFamily::Libx264) => "ffmpeg-x264",
            EncoderKind::Ffmpeg(FfmpegFamily::Libx265) => "ffmpeg-x265",
        }
    }
}

impl fmt::Display for EncoderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
