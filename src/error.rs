//! Errors. Flow control (a frame buffered for reordering, no output yet) is not an error: it is an
//! `Ok` with no chunks.

use crate::encoder::{EncoderKind, PixelFormat, Resolution};

/// The even number next to `v`: up, or down at `u32::MAX`.
fn nearest_even(v: u32) -> u32 {
    if v % 2 == 0 {
        v
    } else {
        v.checked_add(1).unwrap_or(v - 1)
    }
}

/// A configuration value that no encoder accepts. Each variant names the bad value and what would
/// be valid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A zero width or height.
    #[error("invalid resolution {width}x{height}: width and height must be at least 2")]
    ZeroResolution {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
    },
    /// An odd width or height for a 4:2:0 format.
    #[error(
        "invalid resolution {width}x{height} for {format}: 4:2:0 formats need an even width and \
         height (try {}x{})",
        nearest_even(*width),
        nearest_even(*height)
    )]
    OddResolution {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
        /// The 4:2:0 format.
        format: PixelFormat,
    },
    /// A side larger than any backend accepts.
    #[error("invalid resolution {width}x{height}: width and height must be at most {max}")]
    ResolutionTooLarge {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
        /// Largest accepted side.
        max: u32,
    },
    /// A frame whose byte count does not fit in memory.
    #[error("a {width}x{height} {format} frame is too large: its byte count overflows usize")]
    FrameSizeOverflow {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
        /// The pixel format.
        format: PixelFormat,
    },
    /// Text that is not `WIDTHxHEIGHT`.
    #[error("invalid size {text:?}: expected WIDTHxHEIGHT, e.g. 1920x1080")]
    BadResolutionSyntax {
        /// The text given.
        text: String,
    },
    /// A zero numerator or denominator.
    #[error("invalid frame rate {num}/{den}: numerator and denominator must both be at least 1")]
    InvalidFrameRate {
        /// Numerator.
        num: u32,
        /// Denominator.
        den: u32,
    },
    /// Text that is not a frame rate.
    #[error("invalid frame rate {text:?}: expected e.g. 30, 29.97 or 30000/1001")]
    BadFrameRateSyntax {
        /// The text given.
        text: String,
    },
    /// CRF outside its range (or NaN).
    #[error("crf {crf} is out of range: expected {min} to {max} (lower is better quality)")]
    CrfOutOfRange {
        /// Requested CRF.
        crf: f32,
        /// Lowest accepted.
        min: f32,
        /// Highest accepted.
        max: f32,
    },
    /// GOP size zero or too large.
    #[error("gop size {gop_size} is out of range: expected 1 to {max} frames")]
    GopSizeOutOfRange {
        /// Requested GOP size.
        gop_size: u32,
        /// Largest accepted.
        max: u32,
    },
    /// Too many consecutive B-frames.
    #[error("{bframes} B-frames is out of range: expected 0 to {max}")]
    BframesOutOfRange {
        /// Requested B-frames.
        bframes: u32,
        /// Largest accepted.
        max: u32,
    },
    /// Too many threads.
    #[error("{threads} threads is out of range: expected 0 (automatic) to {max}")]
    ThreadsOutOfRange {
        /// Requested threads.
        threads: u32,
        /// Largest accepted.
        max: u32,
    },
    /// An unknown codec name.
    #[error("unknown codec {name:?}: expected one of {}", valid.join(", "))]
    UnknownCodec {
        /// The name given.
        name: String,
        /// Accepted names.
        valid: &'static [&'static str],
    },
    /// An unknown preset name.
    #[error("unknown preset {name:?}: expected one of {}", valid.join(", "))]
    UnknownPreset {
        /// The name given.
        name: String,
        /// Accepted names.
        valid: &'static [&'static str],
    },
    /// An unknown tune name.
    #[error("unknown tune {name:?}: expected one of {}", valid.join(", "))]
    UnknownTune {
        /// The name given.
        name: String,
        /// Accepted names.
        valid: &'static [&'static str],
    },
    /// An unknown pixel-format name.
    #[error("unknown pixel format {name:?}: expected one of {}", valid.join(", "))]
    UnknownPixelFormat {
        /// The name given.
        name: String,
        /// Accepted names.
        valid: &'static [&'static str],
    },
    /// An NVENC output delay out of range.
    #[error("NVENC output delay {frames} is out of range: expected 0 to {max} frames")]
    OutputDelayOutOfRange {
        /// Requested frames.
        frames: u32,
        /// Largest accepted.
        max: u32,
    },
    /// A ring buffer size out of range.
    #[error("ring buffer size {frames} is out of range: expected 1 to {max} frames")]
    RingSizeOutOfRange {
        /// Requested frames.
        frames: usize,
        /// Largest accepted.
        max: usize,
    },
    /// An unknown encoder name.
    #[error("unknown encoder {name:?}: expected one of {}", valid.join(", "))]
    UnknownEncoder {
        /// The name given.
        name: String,
        /// Accepted names.
        valid: &'static [&'static str],
    },
    /// A backend list (the `NVENC_RS_BACKEND` environment variable) naming something that is
    /// not a backend, or nothing at all.
    #[error(
        "{variable}={value:?} names {name:?}, which is not a backend: expected a comma-separated \
         list of {}",
        valid.join(", ")
    )]
    BadBackendList {
        /// The environment variable read.
        variable: &'static str,
        /// Its whole value.
        value: String,
        /// The first name that is not a backend (empty for an empty list).
        name: String,
        /// Accepted names.
        valid: &'static [&'static str],
    },
    /// Text that is not a bit rate.
    #[error("invalid bit rate {text:?}: expected e.g. 2M, 2.5M, 2500k or 2000000 (bits/s)")]
    BadBitrateSyntax {
        /// The text given.
        text: String,
    },
    /// A bit rate outside what every backend accepts.
    #[error("{what} {bps} bit/s is out of range: expected {min} to {max} bit/s")]
    BitrateOutOfRange {
        /// Which rate (`bitrate`, `max bitrate`).
        what: &'static str,
        /// The rate given, in bits per second.
        bps: u64,
        /// Lowest accepted.
        min: u64,
        /// Highest accepted.
        max: u64,
    },
    /// A VBR maximum below its target.
    #[error(
        "max bitrate {max_bps} bit/s is below the target bitrate {target_bps} bit/s: the \
         maximum must be at least the target"
    )]
    MaxBitrateBelowTarget {
        /// The maximum given.
        max_bps: u64,
        /// The target given.
        target_bps: u64,
    },
    /// A VBV buffer size out of range.
    #[error("VBV buffer of {bits} bits is out of range: expected {min} to {max} bits")]
    VbvBufferOutOfRange {
        /// The size given, in bits.
        bits: u64,
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
    /// A constant QP out of range.
    #[error("QP {qp} is out of range: expected 0 to {max}")]
    QpOutOfRange {
        /// The QP given.
        qp: u32,
        /// Largest accepted.
        max: u8,
    },
    /// An unknown rate-control mode name.
    #[error("unknown rate control {name:?}: expected one of {}", valid.join(", "))]
    UnknownRateControl {
        /// The name given.
        name: String,
        /// Accepted names.
        valid: &'static [&'static str],
    },
    /// A rate-control mode without a value it needs.
    #[error("rate control {mode} needs a {value}")]
    RateControlMissingValue {
        /// The mode.
        mode: crate::encoder::RateControlMode,
        /// What is missing (`bitrate`, `maxrate`, `qp`).
        value: &'static str,
    },
    /// A value that the chosen rate-control mode does not use (refused rather than ignored).
    #[error("rate control {mode} does not use a {value}: remove it or choose another mode")]
    RateControlExtraValue {
        /// The mode.
        mode: crate::encoder::RateControlMode,
        /// The value given (`bitrate`, `maxrate`, `bufsize`, `qp`).
        value: &'static str,
    },
}

/// Everything that can go wrong while opening an encoder or encoding with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration was rejected before any encoder was opened.
    #[error("invalid encoder configuration: {0}")]
    Config(#[from] ConfigError),
    /// A frame whose length does not match the configured size and format. The frame was not
    /// encoded; the encoder is still usable.
    #[error(
        "frame {frame_index} is {actual} bytes, but one {resolution} {format} frame is {expected} \
         bytes; the frame was rejected and the encoder is still usable"
    )]
    FrameSize {
        /// Index the frame would have had (the count of frames accepted before it).
        frame_index: u64,
        /// Bytes expected.
        expected: usize,
        /// Bytes given.
        actual: usize,
        /// Configured resolution.
        resolution: Resolution,
        /// Configured pixel format.
        format: PixelFormat,
    },
    /// A caller-supplied timestamp that does not increase. The frame was not encoded; the
    /// encoder is still usable.
    #[error(
        "frame {frame_index} has pts {pts}, which is not after the previous frame's pts \
         {previous}; timestamps must strictly increase"
    )]
    NonMonotonicPts {
        /// Index the frame would have had.
        frame_index: u64,
        /// The timestamp given.
        pts: i64,
        /// The previous frame's timestamp.
        previous: i64,
    },
    /// `encode` after `flush`: a flushed encoder has ended its stream.
    #[error("the {backend} encoder was already flushed; open a new encoder for a new stream")]
    Finished {
        /// The backend.
        backend: EncoderKind,
    },
    /// A backend could not be used on this machine. `reason` says why and what would fix it.
    #[error("the {backend} encoder is not available: {reason}")]
    Unavailable {
        /// The backend.
        backend: EncoderKind,
        /// Why, written for a "why won't this work on my machine" report.
        reason: String,
    },
    /// No backend could be opened; each one tried is listed with its reason.
    #[error("no encoder could be opened: {}", format_rejections(.0))]
    NoEncoder(Vec<(EncoderKind, Box<Error>)>),
    /// The backend library failed a call.
    #[error("{backend}: {call} failed: {message}")]
    Backend {
        /// The backend.
        backend: EncoderKind,
        /// The library call that failed.
        call: &'static str,
        /// What the library reported.
        message: String,
    },
    /// An NVENC call failed. [`NvencError::kind`](crate::nvenc::NvencError::kind) says what it
    /// means: no encode device, likely session limit, invalid parameter, device lost, ...
    #[error(transparent)]
    Nvenc(#[from] crate::nvenc::error::NvencError),
    /// The GPU's NVENC lacks a capability the configuration needs.
    #[error(
        "this GPU's NVENC cannot encode the configured stream: {cap} is {value}, the \
         configuration needs {required}"
    )]
    NvencCapability {
        /// The capability (`NV_ENC_CAPS_*` name, or what was looked for).
        cap: &'static str,
        /// What the GPU reported.
        value: i32,
        /// What the configuration needs.
        required: i64,
    },
    /// A backend cannot do what a frame or a call asked for (a forced keyframe through a pipe, a
    /// mid-stream reconfiguration it cannot make); nothing was done (the frame was not encoded,
    /// the settings did not change) and the encoder is still usable.
    #[error(
        "the {backend} encoder does not support {feature}; nothing was done and the encoder is \
         still usable"
    )]
    Unsupported {
        /// The backend.
        backend: EncoderKind,
        /// What it cannot do.
        feature: &'static str,
    },
    /// The encoder's child process failed. `stderr` holds its last lines.
    #[error("the {backend} encoder's ffmpeg process {problem}{}", stderr_text(.stderr))]
    Subprocess {
        /// The backend.
        backend: EncoderKind,
        /// What went wrong.
        problem: SubprocessProblem,
        /// The last lines ffmpeg wrote to its stderr.
        stderr: String,
    },
    /// Loading the NVIDIA encode library failed: no driver, an old driver, or a wrong library.
    #[error(transparent)]
    NvencLoad(#[from] nvenc_sys::LoadError),
    /// A driver call did not return within its deadline: the driver or GPU is wedged. The
    /// encoder is failed (every later call returns this error again); it could not be torn down
    /// while the call is inside the driver, so its session and memory stay allocated until the
    /// call returns (they are then released) or the process exits.
    /// [`FallbackEncoder`](crate::FallbackEncoder) fails over and loses no accepted frame.
    #[error(
        "the {backend} encoder's {call} did not return within {deadline:?}: the driver or GPU \
         appears hung; the session was abandoned (released if the call ever returns)"
    )]
    Hung {
        /// The backend.
        backend: EncoderKind,
        /// The driver call that did not return, by its C name.
        call: &'static str,
        /// How long the caller waited for it.
        deadline: std::time::Duration,
    },
}

/// How an encoder's child process failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubprocessProblem {
    /// The program could not be started.
    #[error("could not be started from {program:?}: {reason} (install ffmpeg, or set its path)")]
    NotFound {
        /// The program tried.
        program: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The process ended before the stream did, or with a failure status.
    #[error("exited: {status}")]
    Exited {
        /// Its exit status, or what was seen of its end.
        status: String,
    },
    /// The process stopped making progress; it was killed.
    #[error("made no progress for {timeout:?} and was killed")]
    Hung {
        /// The limit that passed.
        timeout: std::time::Duration,
    },
    /// The process wrote something that is not the expected stream; it was killed.
    #[error("wrote an invalid stream ({what}) and was killed")]
    Garbage {
        /// What was wrong.
        what: String,
    },
}

fn stderr_text(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!("; its stderr ended with:\n{}", stderr.trim_end())
    }
}

fn format_rejections(list: &[(EncoderKind, Box<Error>)]) -> String {
    list.iter()
        .map(|(kind, err)| format!("[{kind}] {err}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_resolution_hint_never_overflows() {
        let e = ConfigError::OddResolution {
            width: u32::MAX,
            height: 3,
            format: PixelFormat::I420,
        };
        assert!(e.to_string().contains("try 4294967294x4"), "{e}");
    }
}
