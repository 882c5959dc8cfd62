//! [`ConfigError`] and the units its variants name ([`Resolution`], [`PixelFormat`],
//! [`RateControlMode`]), kept in one file so no import goes round in a circle; also the
//! `named_enum!` macro that the named units are built with.

use std::fmt;
use std::str::FromStr;

/// The layout of the raw frames handed to an encoder.
///
/// Supported: planar I420 (`yuv420p`) and semi-planar NV12. Both are 8-bit 4:2:0, so width and
/// height must be even. Other layouts (4:2:2, 4:4:4, 10-bit P010, packed RGB) are not supported:
/// convert before encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum PixelFormat {
    /// Planar Y, then U (Cb), then V (Cr), chroma subsampled 2x2 (FFmpeg's `yuv420p`).
    #[default]
    I420,
    /// Planar Y, then one plane of interleaved U/V pairs, chroma subsampled 2x2.
    Nv12,
}

impl PixelFormat {
    /// Every pixel-format name [`FromStr`] accepts, FFmpeg's spelling first.
    pub const NAMES: &'static [&'static str] = &["yuv420p", "i420", "nv12"];

    /// Bytes in one tightly packed frame of this format at `resolution`.
    ///
    /// # Errors
    /// [`ConfigError::ZeroResolution`] for a zero side, [`ConfigError::OddResolution`] for an odd
    /// side (4:2:0 needs even sizes), [`ConfigError::FrameSizeOverflow`] when the byte count does
    /// not fit in `usize`.
    pub fn frame_len(self, resolution: Resolution) -> Result<usize, ConfigError> {
        Ok(self.plane_layout(resolution)?.frame_len)
    }

    /// Offsets, strides and sizes of the planes of one tightly packed frame.
    ///
    /// # Errors
    /// As [`PixelFormat::frame_len`].
    pub fn plane_layout(self, resolution: Resolution) -> Result<FrameLayout, ConfigError> {
        let Resolution { width, height } = resolution;
        if width == 0 || height == 0 {
            return Err(ConfigError::ZeroResolution { width, height });
        }
        let overflow = || ConfigError::FrameSizeOverflow {
            width,
            height,
            format: self,
        };
        let w = usize::try_from(width).map_err(|_| overflow())?;
        let h = usize::try_from(height).map_err(|_| overflow())?;
        let luma = w.checked_mul(h).ok_or_else(overflow)?;
        // 4:2:0: two chroma planes of a quarter of the luma samples each, i.e. half a luma plane.
        let chroma = luma / 2;
        let frame_len = luma.checked_add(chroma).ok_or_else(overflow)?;
        if width % 2 != 0 || height % 2 != 0 {
            return Err(ConfigError::OddResolution {
                width,
                height,
                format: self,
            });
        }
        let layout = match self {
            PixelFormat::I420 => FrameLayout {
                frame_len,
                planes: vec![
                    Plane {
                        offset: 0,
                        stride: w,
                        rows: h,
                    },
                    Plane {
                        offset: luma,
                        stride: w / 2,
                        rows: h / 2,
                    },
                    Plane {
                        offset: luma + luma / 4,
                        stride: w / 2,
                        rows: h / 2,
                    },
                ],
            },
            PixelFormat::Nv12 => FrameLayout {
                frame_len,
                planes: vec![
                    Plane {
                        offset: 0,
                        stride: w,
                        rows: h,
                    },
                    Plane {
                        offset: luma,
                        stride: w,
                        rows: h / 2,
                    },
                ],
            },
        };
        Ok(layout)
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PixelFormat::I420 => "yuv420p",
            PixelFormat::Nv12 => "nv12",
        })
    }
}

impl FromStr for PixelFormat {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "yuv420p" | "i420" => Ok(PixelFormat::I420),
            "nv12" => Ok(PixelFormat::Nv12),
            _ => Err(ConfigError::UnknownPixelFormat {
                name: s.to_owned(),
                valid: Self::NAMES,
            }),
        }
    }
}

/// Where each plane of a tightly packed frame lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameLayout {
    /// Bytes in the whole frame.
    pub frame_len: usize,
    /// The planes in memory order (Y, U, V for I420; Y, UV for NV12).
    pub planes: Vec<Plane>,
}

/// One plane of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plane {
    /// Byte offset of the plane from the start of the frame.
    pub offset: usize,
    /// Bytes from one row to the next.
    pub stride: usize,
    /// Number of rows.
    pub rows: usize,
}

/// Frame size in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Resolution {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl Resolution {
    /// The largest width or height any backend accepts. Backends may accept less (NVENC reports
    /// its own maximum through its caps).
    pub const MAX_SIDE: u32 = 16_384;

    /// A resolution of `width` x `height` pixels (not validated until an encoder is built).
    #[must_use]
    pub const fn new(width: u32, height: u32) -> Self {
        Resolution { width, height }
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

impl FromStr for Resolution {
    type Err = ConfigError;

    /// Parses `WIDTHxHEIGHT`, e.g. `1920x1080`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::BadResolutionSyntax { text: s.to_owned() };
        let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
        Ok(Resolution {
            width: w.trim().parse().map_err(|_| bad())?,
            height: h.trim().parse().map_err(|_| bad())?,
        })
    }
}

macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $err:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every name [`FromStr`] accepts, in order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];
            /// Every value, in the order of [`Self::NAMES`].
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The lowercase name, as the x264 and FFmpeg command lines spell it.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $name {
            type Err = ConfigError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let lower = s.to_ascii_lowercase();
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.name() == lower)
                    .ok_or_else(|| ConfigError::$err {
                        name: s.to_owned(),
                        valid: Self::NAMES,
                    })
            }
        }
    };
}

pub(crate) use named_enum;

named_enum! {
    /// The rate-control modes by name, as `encode_yuv --rc` and [`crate::GpuEncoderConfig`]
    /// spell them. [`RateControl::from_parts`](super::RateControl::from_parts) turns one and its
    /// values into a [`RateControl`](super::RateControl).
    RateControlMode, UnknownRateControl {
        /// Constant quality
        /// ([`RateControl::ConstantQuality`](super::RateControl::ConstantQuality)).
        Cq => "cq",
        /// Constant bit rate ([`RateControl::Cbr`](super::RateControl::Cbr)).
        Cbr => "cbr",
        /// Variable bit rate with a maximum ([`RateControl::Vbr`](super::RateControl::Vbr)).
        Vbr => "vbr",
        /// Constant QP ([`RateControl::ConstantQp`](super::RateControl::ConstantQp)).
        Cqp => "cqp",
    }
}

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
    /// B-frames asked for together with the `zerolatency` tune, which encodes without them
    /// (refused rather than silently dropped). `bframes` 0 or unset is valid with it.
    #[error(
        "bframes {bframes} with tune zerolatency: zero-latency encodes without B-frames; drop \
         --bframes (or set it to 0) or choose another tune"
    )]
    BframesWithZeroLatency {
        /// Requested B-frames (at least 1).
        bframes: u32,
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
    /// The backend cannot encode the codec asked for (checked once, when it opens).
    #[error(
        "{backend} cannot encode {codec}: it encodes {}",
        supported.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
    )]
    CodecUnsupported {
        /// The backend.
        backend: crate::encoder::EncoderKind,
        /// The codec asked for.
        codec: super::Codec,
        /// The codecs the backend encodes.
        supported: Vec<super::Codec>,
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
    /// A pipeline whose ring and NVENC were given different CUDA devices: NVENC uploads from,
    /// or encodes straight from, the ring's slots, which belong to one device's context.
    #[error(
        "the pipeline's ring is set to CUDA device {ring} (PipelineOptions::cuda_device) but \
         NVENC to device {nvenc} (GpuEncoderConfig::gpu): both must be the same device; \
         set only one of them, or both to the same ordinal"
    )]
    CudaDeviceMismatch {
        /// The device the pipeline's options put the ring on.
        ring: usize,
        /// The device the encoder settings put NVENC on.
        nvenc: usize,
    },
    /// A GPU choice that is none of `auto`, an ordinal or a UUID.
    #[error("invalid GPU {value:?}: expected {expected}")]
    BadGpu {
        /// The value given.
        value: String,
        /// What would be valid.
        expected: &'static str,
    },
    /// A GPU choice that names no device of this machine.
    #[error("no GPU {choice} among this machine's {devices} CUDA device(s) (expected an ordinal below {devices}, a UUID `nvidia-smi -L` lists, or auto)")]
    GpuNotFound {
        /// The choice given.
        choice: String,
        /// How many CUDA devices there are.
        devices: usize,
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
        mode: RateControlMode,
        /// What is missing (`bitrate`, `maxrate`, `qp`).
        value: &'static str,
    },
    /// A value that the chosen rate-control mode does not use (refused rather than ignored).
    #[error("rate control {mode} does not use a {value}: remove it or choose another mode")]
    RateControlExtraValue {
        /// The mode.
        mode: RateControlMode,
        /// The value given (`bitrate`, `maxrate`, `bufsize`, `qp`).
        value: &'static str,
    },
}
