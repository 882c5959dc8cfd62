//! The backend table: every backend this crate can open, in auto-selection order, with how it is
//! probed, how it is opened, and what a failure to open it means.
//!
//! Selection ([`crate::open_backend`], [`crate::open_encoder`]), the fallback chain
//! ([`crate::fallback`]) and detection ([`crate::detect`](mod@crate::detect)) all read [`BACKENDS`]: adding a
//! backend is one entry here.
//!
//! # Forcing the list
//! The environment variable [`BACKEND_ENV`] (`NVENC_RS_BACKEND`) replaces the order that
//! [`EncoderChoice::Auto`](crate::EncoderChoice::Auto) walks (and the preferred encoder) with a
//! comma-separated list of [`EncoderKind::NAMES`], e.g. `NVENC_RS_BACKEND=x264` or
//! `NVENC_RS_BACKEND=nvenc,ffmpeg-x264`. A name that is not a backend is a
//! [`ConfigError::BadBackendList`] naming it and the valid names; an explicit
//! [`EncoderChoice::Only`](crate::EncoderChoice::Only) is not affected.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::encoder::codecs;
use crate::encoder::{Codec, EncoderConfig, EncoderKind, FfmpegFamily, VideoEncoder};
use crate::error::{ConfigError, Error};
use crate::ffmpeg::{FfmpegEncoder, FfmpegOptions};
use crate::nvenc::{NvencErrorKind, NvencOptions};

/// The environment variable that forces the backend list of the fallback chain.
pub const BACKEND_ENV: &str = "NVENC_RS_BACKEND";

/// How detection finds out whether a backend works here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Probe {
    /// A probe session on every CUDA device (through `nvenc::probe`, cached per device and
    /// driver).
    NvencSession,
    /// FFmpeg lists the encoder, and a one-frame probe encode through it succeeds within a time
    /// limit (listing proves nothing: Debian's ffmpeg lists `h264_nvenc` on machines without it).
    FfmpegEncode(FfmpegFamily),
    /// Opening it (cheap, in process).
    Open,
}

/// How far a failure to open a backend reaches.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum FailureScope {
    /// Only this stream: the next stream tries the backend again.
    Stream,
    /// Failures that `permanent` judges unable to change while the process runs (no driver
    /// library, driver too old, no encode engine) disable the backend for the process; others
    /// (a likely session limit) only skip it for this stream.
    ProcessIf(fn(&Error) -> bool),
}

/// Opens one backend: its kind (one opener serves every FFmpeg encoder), the configuration, and
/// NVENC-only settings (ignored by the others).
pub type OpenFn =
    fn(EncoderKind, &EncoderConfig, &NvencOptions) -> Result<Box<dyn VideoEncoder>, Error>;

/// One backend of the table.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Backend {
    /// Which backend.
    pub kind: EncoderKind,
    /// Whether [`EncoderChoice::Auto`](crate::EncoderChoice::Auto) tries it (by default). The
    /// others open only when named: [`EncoderChoice::Only`](crate::EncoderChoice::Only), a
    /// preferred encoder, or [`BACKEND_ENV`].
    pub auto: bool,
    /// How detection checks it.
    pub probe: Probe,
    /// Whether the fallback chain opens it only where detection found it working: starting an
    /// ffmpeg process proves nothing until a frame has gone through.
    pub needs_detection: bool,
    /// How it is opened.
    pub open: OpenFn,
    /// What a failure to open it disables.
    pub failure: FailureScope,
}

/// Every backend, the [`EncoderChoice::Auto`](crate::EncoderChoice::Auto) ones first in priority
/// order (best first): NVENC (direct) > QSV > VideoToolbox > (VA-API) > the software encoder of
/// the codec (x264 for H.264; x265 for HEVC, or FFmpeg's `libx265` in a build without the `x265`
/// feature). Each codec's order is this one less the backends that do not encode it
/// ([`priority`]). FFmpeg's own NVENC and `libx264` are not tried by default: the direct backends
/// do the same work in process.
pub const BACKENDS: &[Backend] = &[
    Backend {
        kind: EncoderKind::Nvenc,
        auto: true,
        probe: Probe::NvencSession,
        needs_detection: false,
        open: open_nvenc,
        failure: FailureScope::ProcessIf(nvenc_failure_is_permanent),
    },
    ffmpeg(FfmpegFamily::Qsv, true),
    ffmpeg(FfmpegFamily::VideoToolbox, true),
    ffmpeg(FfmpegFamily::Vaapi, true),
    Backend {
        kind: EncoderKind::X264,
        auto: true,
        probe: Probe::Open,
        needs_detection: false,
        open: open_x264,
        failure: FailureScope::Stream,
    },
    Backend {
        kind: EncoderKind::X265,
        auto: true,
        probe: Probe::Open,
        needs_detection: false,
        open: open_x265,
        failure: FailureScope::Stream,
    },
    // The software HEVC backend of a build without the in-process one.
    ffmpeg(FfmpegFamily::Libx265, !cfg!(feature = "x265")),
    ffmpeg(FfmpegFamily::Nvenc, false),
    ffmpeg(FfmpegFamily::Libx264, false),
];

/// How many entries of [`BACKENDS`] are tried by default.
const AUTO_COUNT: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < BACKENDS.len() {
        if BACKENDS[i].auto {
            n += 1;
        }
        i += 1;
    }
    n
};

/// The backends [`EncoderChoice::Auto`](crate::EncoderChoice::Auto) tries, best first: the
/// `auto` entries of [`BACKENDS`], in order.
pub const PRIORITY: &[EncoderKind] = &{
    let mut out = [EncoderKind::X264; AUTO_COUNT];
    let (mut i, mut n) = (0, 0);
    while i < BACKENDS.len() {
        if BACKENDS[i].auto {
            out[n] = BACKENDS[i].kind;
            n += 1;
        }
        i += 1;
    }
    out
};

const fn ffmpeg(encoder: FfmpegFamily, auto: bool) -> Backend {
    Backend {
        kind: EncoderKind::Ffmpeg(encoder),
        auto,
        probe: Probe::FfmpegEncode(encoder),
        needs_detection: true,
        open: open_ffmpeg,
        failure: FailureScope::Stream,
    }
}

/// The backends [`EncoderChoice::Auto`](crate::EncoderChoice::Auto) tries for `codec`, best
/// first: [`PRIORITY`] less those that do not encode it.
#[must_use]
pub fn priority(codec: Codec) -> Vec<EncoderKind> {
    PRIORITY
        .iter()
        .copied()
        .filter(|&k| codecs::encodes(k, codec))
        .collect()
}

/// The table entry of `kind`.
#[must_use]
pub fn backend(kind: EncoderKind) -> Option<&'static Backend> {
    BACKENDS.iter().find(|b| b.kind == kind)
}

/// Set per entry of [`BACKENDS`] (same index) and codec (index in [`Codec::ALL`]) once a failure
/// disabled it for the process: a GPU whose NVENC lacks HEVC still encodes H.264.
static DISABLED: [[AtomicBool; CODECS]; BACKENDS.len()] =
    [const { [const { AtomicBool::new(false) }; CODECS] }; BACKENDS.len()];

/// How many codecs there are.
const CODECS: usize = Codec::ALL.len();

fn codec_index(codec: Codec) -> usize {
    Codec::ALL.iter().position(|&c| c == codec).unwrap_or(0)
}

fn index_of(kind: EncoderKind) -> Option<usize> {
    BACKENDS.iter().position(|b| b.kind == kind)
}

/// Whether a failure disabled `kind` for `codec` for the rest of the process.
#[must_use]
pub fn is_disabled(kind: EncoderKind, codec: Codec) -> bool {
    index_of(kind).is_some_and(|i| DISABLED[i][codec_index(codec)].load(Ordering::Relaxed))
}

/// Opens `kind` through its table entry, with no detection gate and no disabling: what
/// [`crate::open_backend`] does.
///
/// # Errors
/// As [`crate::open_backend`].
pub(crate) fn open(
    kind: EncoderKind,
    config: &EncoderConfig,
    nvenc: &NvencOptions,
) -> Result<Box<dyn VideoEncoder>, Error> {
    match backend(kind) {
        Some(b) => (b.open)(kind, config, nvenc),
        None => Err(Error::Unavailable {
            backend: kind,
            reason: "not a backend of this build".into(),
        }),
    }
}

/// Opens `kind` for a fallback chain: refuses at once a backend disabled for the process, and
/// records a failure that disables it (see [`FailureScope`]). The detection gate
/// ([`Backend::needs_detection`]) is the caller's.
///
/// # Errors
/// [`Error::Unavailable`] for a disabled backend; otherwise as [`crate::open_backend`].
pub(crate) fn open_recording(
    kind: EncoderKind,
    config: &EncoderConfig,
    nvenc: &NvencOptions,
) -> Result<Box<dyn VideoEncoder>, Error> {
    let Some(i) = index_of(kind) else {
        return open(kind, config, nvenc);
    };
    let disabled = &DISABLED[i][codec_index(config.codec)];
    if disabled.load(Ordering::Relaxed) {
        return Err(Error::Unavailable {
            backend: kind,
            reason: "disabled for this process after an earlier permanent failure".into(),
        });
    }
    let result = (BACKENDS[i].open)(kind, config, nvenc);
    if let (Err(e), FailureScope::ProcessIf(permanent)) = (&result, BACKENDS[i].failure) {
        if permanent(e) {
            disabled.store(true, Ordering::Relaxed);
            tracing::info!(encoder = %kind, codec = %config.codec, error = %e, "backend disabled for this process");
        }
    }
    result
}

/// The backend list forced by [`BACKEND_ENV`], if it is set.
///
/// # Errors
/// [`ConfigError::BadBackendList`] for a name that is not a backend, or an empty list.
pub fn forced() -> Result<Option<Vec<EncoderKind>>, ConfigError> {
    match std::env::var(BACKEND_ENV) {
        Ok(value) => parse_list(&value).map(Some),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(raw)) => Err(ConfigError::BadBackendList {
            variable: BACKEND_ENV,
            value: raw.to_string_lossy().into_owned(),
            name: raw.to_string_lossy().into_owned(),
            valid: EncoderKind::NAMES,
        }),
    }
}

/// Parses a comma-separated backend list (`nvenc,x264`); blanks around names are ignored, a
/// repeated name counts once.
///
/// # Errors
/// [`ConfigError::BadBackendList`] naming the first name that is not a backend (an empty list
/// names the empty string).
pub fn parse_list(value: &str) -> Result<Vec<EncoderKind>, ConfigError> {
    let bad = |name: &str| ConfigError::BadBackendList {
        variable: BACKEND_ENV,
        value: value.to_owned(),
        name: name.to_owned(),
        valid: EncoderKind::NAMES,
    };
    let mut kinds = Vec::new();
    for name in value.split(',').map(str::trim) {
        let kind: EncoderKind = name.parse().map_err(|_| bad(name))?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if kinds.is_empty() {
        return Err(bad(""));
    }
    Ok(kinds)
}

/// The order the fallback chain tries: the [`BACKEND_ENV`] list where it is set; otherwise
/// `preferred` first (if any), then [`PRIORITY`].
///
/// # Errors
/// As [`forced`].
pub fn chain_order(preferred: Option<EncoderKind>) -> Result<Vec<EncoderKind>, ConfigError> {
    if let Some(kinds) = forced()? {
        tracing::info!(backends = ?kinds, "{BACKEND_ENV} forces the backend list");
        return Ok(kinds);
    }
    let mut kinds: Vec<EncoderKind> = preferred.into_iter().collect();
    kinds.extend(PRIORITY.iter().copied().filter(|k| Some(*k) != preferred));
    Ok(kinds)
}

fn open_nvenc(
    _kind: EncoderKind,
    config: &EncoderConfig,
    nvenc: &NvencOptions,
) -> Result<Box<dyn VideoEncoder>, Error> {
    crate::nvenc::open_with(config, nvenc)
}

fn open_ffmpeg(
    kind: EncoderKind,
    config: &EncoderConfig,
    _nvenc: &NvencOptions,
) -> Result<Box<dyn VideoEncoder>, Error> {
    let EncoderKind::Ffmpeg(encoder) = kind else {
        return Err(Error::Unavailable {
            backend: kind,
            reason: "not an FFmpeg encoder".into(),
        });
    };
    Ok(Box::new(FfmpegEncoder::new(
        config,
        &FfmpegOptions::new(encoder),
    )?))
}

#[cfg(feature = "x264")]
fn open_x264(
    _kind: EncoderKind,
    config: &EncoderConfig,
    _nvenc: &NvencOptions,
) -> Result<Box<dyn VideoEncoder>, Error> {
    Ok(Box::new(crate::x264::X264Encoder::new(config)?))
}

#[cfg(feature = "x265")]
fn open_x265(
    _kind: EncoderKind,
    config: &EncoderConfig,
    _nvenc: &NvencOptions,
) -> Result<Box<dyn VideoEncoder>, Error> {
    Ok(Box::new(crate::x265::X265Encoder::new(config)?))
}

#[cfg(not(feature = "x265"))]
fn open_x265(
    _kind: EncoderKind,
    _config: &EncoderConfig,
    _nvenc: &NvencOptions,
) -> Result<Box<dyn VideoEncoder>, Error> {
    Err(Error::Unavailable {
        backend: EncoderKind::X265,
        reason: "this build of nvencode has no in-process x265: it was compiled without its \
                 `x265` feature (which links libx265, GPL-2.0-or-later); enable the feature, or \
                 use ffmpeg-x265"
            .into(),
    })
}

/// Why x264 cannot be opened in a build without the `x264` feature.
#[cfg(not(feature = "x264"))]
const X264_NOT_BUILT: &str =
    "this build of nvencode has no in-process x264: it was compiled without its `x264` \
     feature (which links libx264, GPL-2.0-or-later); enable the feature, or use ffmpeg-x264";

#[cfg(not(feature = "x264"))]
fn open_x264(
    _kind: EncoderKind,
    _config: &EncoderConfig,
    _nvenc: &NvencOptions,
) -> Result<Box<dyn VideoEncoder>, Error> {
    Err(Error::Unavailable {
        backend: EncoderKind::X264,
        reason: X264_NOT_BUILT.into(),
    })
}

/// Whether an NVENC error cannot go away while the process runs.
fn nvenc_failure_is_permanent(e: &Error) -> bool {
    match e {
        Error::NvencLoad(_) => true,
        Error::Nvenc(n) => matches!(
            n.kind(),
            NvencErrorKind::NoEncodeDevice | NvencErrorKind::InvalidVersion
        ),
        // No driver library, no device: cannot change. (Transient CUDA failures such as an out of
        // memory come back as `Error::Backend`, which is not permanent.)
        Error::Unavailable { .. } => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_backend_has_one_entry_and_priority_is_the_auto_entries() {
        for name in EncoderKind::NAMES {
            let kind: EncoderKind = name.parse().unwrap();
            assert_eq!(
                BACKENDS.iter().filter(|b| b.kind == kind).count(),
                1,
                "{name}"
            );
        }
        assert_eq!(BACKENDS.len(), EncoderKind::NAMES.len());
        let auto: Vec<EncoderKind> = BACKENDS.iter().filter(|b| b.auto).map(|b| b.kind).collect();
        assert_eq!(PRIORITY, auto.as_slice());
        assert_eq!(PRIORITY.first(), Some(&EncoderKind::Nvenc));
        assert_eq!(priority(Codec::H264).last(), Some(&EncoderKind::X264));
        let hevc = priority(Codec::Hevc);
        assert_eq!(hevc.first(), Some(&EncoderKind::Nvenc));
        let software = if cfg!(feature = "x265") {
            EncoderKind::X265
        } else {
            EncoderKind::Ffmpeg(FfmpegFamily::Libx265)
        };
        assert_eq!(hevc.last(), Some(&software));
        for codec in Codec::ALL {
            assert!(priority(*codec).iter().all(|k| codecs::encodes(*k, *codec)));
        }
        // Only NVENC can be disabled for the process; the ffmpeg backends wait for detection.
        for b in BACKENDS {
            let process = matches!(b.failure, FailureScope::ProcessIf(_));
            assert_eq!(process, b.kind == EncoderKind::Nvenc, "{}", b.kind);
            assert_eq!(
                b.needs_detection,
                matches!(b.kind, EncoderKind::Ffmpeg(_)),
                "{}",
                b.kind
            );
        }
    }

    #[test]
    fn backend_lists_parse_and_bad_names_are_named() {
        assert_eq!(parse_list("x264").unwrap(), vec![EncoderKind::X264]);
        assert_eq!(
            parse_list(" nvenc , x264,nvenc").unwrap(),
            vec![EncoderKind::Nvenc, EncoderKind::X264]
        );
        assert_eq!(
            parse_list("h264_qsv").unwrap(),
            vec![EncoderKind::Ffmpeg(FfmpegFamily::Qsv)]
        );
        for (value, bad) in [("x264,nvidia", "nvidia"), ("", ""), ("x264,,nvenc", "")] {
            match parse_list(value) {
                Err(ConfigError::BadBackendList {
                    variable,
                    value: v,
                    name,
                    valid,
                }) => {
                    assert_eq!(variable, BACKEND_ENV);
                    assert_eq!(v, value);
                    assert_eq!(name, bad, "{value:?}");
                    assert_eq!(valid, EncoderKind::NAMES);
                }
                other => panic!("{value:?}: expected BadBackendList, got {other:?}"),
            }
        }
        let message = parse_list("x264,nvidia").unwrap_err().to_string();
        assert!(message.contains("NVENC_RS_BACKEND"), "{message}");
        assert!(message.contains("\"nvidia\""), "{message}");
        assert!(message.contains("nvenc, x264"), "{message}");
    }

    #[test]
    fn nvenc_failures_that_cannot_change_disable_it_and_a_session_limit_does_not() {
        let FailureScope::ProcessIf(permanent) = backend(EncoderKind::Nvenc).unwrap().failure
        else {
            panic!("NVENC's failures are judged per process");
        };
        assert!(permanent(&Error::Unavailable {
            backend: EncoderKind::Nvenc,
            reason: "no CUDA device".into(),
        }));
        assert!(!permanent(&Error::Backend {
            backend: EncoderKind::Nvenc,
            call: "cuMemAlloc",
            message: "out of memory".into(),
        }));
    }
}
