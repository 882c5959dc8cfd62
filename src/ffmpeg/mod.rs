//! The subprocess backend: one of FFmpeg's H.264 or HEVC encoders (`h264_qsv`, `hevc_qsv`,
//! `h264_videotoolbox`, `h264_vaapi`, `h264_nvenc`, `libx264`, `libx265`, …: the family of
//! [`FfmpegOptions::family`] for [`EncoderConfig::codec`](crate::EncoderConfig::codec), named by
//! [`crate::encoder::codecs::ffmpeg_name`]) in an `ffmpeg` child process.
//!
//! Raw frames go into ffmpeg's stdin from a writer thread; ffmpeg writes MPEG-TS to its stdout,
//! which a reader thread demuxes into access units with their timestamps (`ts.rs`); a third
//! thread keeps the last lines of ffmpeg's stderr for error reports. Reading and writing run
//! concurrently, so neither pipe can fill up and block the other side. Every wait is bounded by
//! [`FfmpegOptions::timeout`]: a child that hangs is killed and reported, a child that dies or
//! writes garbage gives a typed error with its last stderr lines, and the child is always reaped.
//! A flush ends at ffmpeg's exit, not at the end of file on its stdout, which a process it (or a
//! wrapper script) forked may hold back: see `FfmpegEncoder::finish_child` for the bounds.
//!
//! Mapping of [`EncoderConfig`](crate::EncoderConfig) (FFmpeg option names):
//!
//! The HEVC encoders of the hardware families take the arguments of their H.264 counterparts;
//! `libx265` takes x265's preset and tune names (x265 has no `film` or `stillimage`: none then),
//! `-crf`, `-qp` and the rates as `libx264` does, and `-x265-params log-level=error:open-gop=0`
//! (IDR keyframes, as every backend's; x265's GOPs are open by default).
//!
//! | config | libx264 | h264_nvenc | h264_qsv | h264_videotoolbox | h264_vaapi |
//! |---|---|---|---|---|---|
//! | preset | `-preset` | `-preset p1..p7` (as the direct NVENC backend maps it) | `-preset` (veryfast..veryslow; ultrafast/superfast → veryfast, placebo → veryslow) | none | none |
//! | tune | `-tune` | `-tune hq/ll/ull` | none | `-realtime 1` for zerolatency | none |
//! | crf | `-crf` | `-rc vbr -cq` | `-global_quality` (ICQ) | `-q:v` (100 - 2 x crf) | `-rc_mode CQP -qp` |
//! | gop_size | `-g` | `-g` | `-g` | `-g` | `-g` |
//! | bframes | `-bf` | `-bf` | `-bf` | `-bf` | `-bf` |
//! | threads | `-threads` | none | none | none | none |
//! | rate_control CBR / VBR / constant QP | `-b:v -maxrate -bufsize` / `-qp` | see the README's table | | | |
//!
//! The rate-control options come from `src/encoder/mapping.rs`, the one place that maps
//! [`crate::RateControl`] for every backend; the README's table lists them.
//!
//! Per-frame forced keyframes cannot be passed through a raw-video pipe: a frame asking for one
//! is rejected with [`Error::Unsupported`](crate::Error::Unsupported) (and not counted), so the caller can resend it plain.

mod args;
pub(crate) mod child;
mod encoder;
mod io;
pub(crate) mod ts;

pub use args::FfmpegOptions;
pub use encoder::FfmpegEncoder;
