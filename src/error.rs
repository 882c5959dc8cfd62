//! Errors. Flow control (a frame buffered for reordering, no output yet) is not an error: it is an
//! `Ok` with no chunks.

use crate::encoder::config::{PixelFormat, Resolution};
use crate::encoder::kind::EncoderKind;

/// Configuration errors live beside the values they judge (`encoder/config.rs`), so that the
/// configuration does not import this module back; they are re-exported here and at the root.
pub use crate::encoder::config::ConfigError;

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
    /// NVENC with [`GpuChoice::Auto`](crate::nvenc::GpuChoice::Auto): every GPU refused a
    /// session. Each GPU's own error is kept, in the order they were tried.
    #[error("no GPU accepted an NVENC session: {}", refusals.iter().map(|(gpu, e)| format!("GPU {gpu}: {e}")).collect::<Vec<_>>().join("; "))]
    NoGpuAccepted {
        /// Each GPU tried (CUDA ordinal) with its refusal.
        refusals: Vec<(usize, Error)>,
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
