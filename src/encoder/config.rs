//! The backend-neutral encoder configuration and the units it is made of.

use std::fmt;
use std::str::FromStr;

/// The video codec an encoder produces.
///
/// Only H.264 exists today; the enum is `#[non_exhaustive]` so HEVC or AV1 can join without a
/// breaking change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Codec {
    /// H.264 / AVC, written as an Annex B byte stream.
    #[default]
    H264,
}

impl Codec {
    /// Every codec name [`FromStr`] accepts.
    pub const NAMES: &'static [&'static str] = &["h264"];
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::H264 => "h264",
        })
    }
}

impl FromStr for Codec {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "h264" | "avc" | "h.264" => Ok(Codec::H264),
            _ => Err(ConfigError::UnknownCodec {
                name: s.to_owned(),
                valid: Self::NAMES,
            }),
        }
    }
}

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

/// Frames per second as an exact fraction (`30000/1001` for NTSC's 29.97).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameRate {
    /// Numerator.
    pub num: u32,
    /// Denominator.
    pub den: u32,
}

impl FrameRate {
    /// `num/den` frames per second.
    #[must_use]
    pub const fn new(num: u32, den: u32) -> Self {
        FrameRate { num, den }
    }

    /// A whole number of frames per second.
    #[must_use]
    pub const fn from_hz(fps: u32) -> Self {
        FrameRate { num: fps, den: 1 }
    }

    /// Frames per second as a float.
    #[must_use]
    pub fn as_f64(self) -> f64 {
        f64::from(self.num) / f64::from(self.den)
    }
}

impl fmt::Display for FrameRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

impl FromStr for FrameRate {
    type Err = ConfigError;

    /// Parses `30`, `30000/1001` or `29.97` (decimals up to three places).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::BadFrameRateSyntax { text: s.to_owned() };
        let s = s.trim();
        if let Some((n, d)) = s.split_once('/') {
            return Ok(FrameRate::new(
                n.trim().parse().map_err(|_| bad())?,
                d.trim().parse().map_err(|_| bad())?,
            ));
        }
        if let Ok(n) = s.parse::<u32>() {
            return Ok(FrameRate::from_hz(n));
        }
        let (int, frac) = s.split_once('.').ok_or_else(bad)?;
        if frac.is_empty() || frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let den = 10u32.pow(frac.len() as u32);
        let int: u32 = int.parse().map_err(|_| bad())?;
        let frac: u32 = frac.parse().map_err(|_| bad())?;
        let num = int
            .checked_mul(den)
            .and_then(|n| n.checked_add(frac))
            .ok_or_else(bad)?;
        Ok(FrameRate::new(num, den))
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

named_enum! {
    /// Speed/quality trade-off, named as x264 names its presets. Each backend maps it to its
    /// nearest setting (NVENC: `ultrafast`..`veryslow` onto P1..P7).
    Preset, UnknownPreset {
        /// Fastest, largest output.
        Ultrafast => "ultrafast",
        /// Second fastest.
        Superfast => "superfast",
        /// A common choice for live software encoding.
        Veryfast => "veryfast",
        /// Faster than `fast`.
        Faster => "faster",
        /// Faster than `medium`.
        Fast => "fast",
        /// The default.
        Medium => "medium",
        /// Better compression, slower.
        Slow => "slow",
        /// Slower still.
        Slower => "slower",
        /// Slowest sensible setting.
        Veryslow => "veryslow",
        /// Slowest; for tests of the limit only.
        Placebo => "placebo",
    }
}

named_enum! {
    /// Content or latency tuning, named as x264 names its tunes.
    Tune, UnknownTune {
        /// Live-action film.
        Film => "film",
        /// Cartoons and flat areas.
        Animation => "animation",
        /// Keep film grain.
        Grain => "grain",
        /// Slideshow-like content.
        Stillimage => "stillimage",
        /// Optimise for PSNR (disables psychovisual tweaks).
        Psnr => "psnr",
        /// Optimise for SSIM.
        Ssim => "ssim",
        /// Output that is cheaper to decode.
        Fastdecode => "fastdecode",
        /// No frame reordering or lookahead: every frame comes out of the encoder as soon as it
        /// is encoded. What live pipelines want.
        Zerolatency => "zerolatency",
    }
}

/// A bit rate in bits per second.
///
/// Parsed from `2M`, `2.5M`, `2500k` or plain bits per second (`2000000`), as FFmpeg's `-b:v`
/// takes it (`k` is 1,000 and `M` is 1,000,000, not powers of two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bitrate(u64);

impl Bitrate {
    /// The lowest bit rate accepted: 1 kbit/s (x264 counts in kbit/s).
    pub const MIN: Bitrate = Bitrate(1_000);
    /// The highest bit rate accepted: NVENC's rate fields are 32-bit bits per second.
    pub const MAX: Bitrate = Bitrate(u32::MAX as u64);

    /// `bps` bits per second (not validated until an encoder is built).
    #[must_use]
    pub const fn from_bps(bps: u64) -> Self {
        Bitrate(bps)
    }

    /// `kbps` kilobits (1,000 bits) per second, saturating.
    #[must_use]
    pub const fn from_kbps(kbps: u64) -> Self {
        Bitrate(kbps.saturating_mul(1_000))
    }

    /// Bits per second.
    #[must_use]
    pub const fn bps(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Bitrate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("0"),
            b if b % 1_000_000 == 0 => write!(f, "{}M", b / 1_000_000),
            b if b % 1_000 == 0 => write!(f, "{}k", b / 1_000),
            b => write!(f, "{b}"),
        }
    }
}

impl FromStr for Bitrate {
    type Err = ConfigError;

    /// Parses `2M`, `2.5M`, `2500k`, `2500K` or `2000000` (bits per second).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::BadBitrateSyntax { text: s.to_owned() };
        let t = s.trim();
        let (number, scale) = match t.as_bytes().last() {
            Some(b'k' | b'K') => (&t[..t.len() - 1], 1_000u64),
            Some(b'm' | b'M') => (&t[..t.len() - 1], 1_000_000),
            _ => (t, 1),
        };
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) || (number.contains('.') && frac.is_empty()) {
            return Err(bad());
        }
        let int: u64 = int.parse().map_err(|_| bad())?;
        let mut bps = int.checked_mul(scale).ok_or_else(bad)?;
        // Each decimal digit must still name whole bits per second.
        let mut unit = scale;
        for digit in frac.bytes() {
            if unit % 10 != 0 {
                return Err(bad());
            }
            unit /= 10;
            bps = bps
                .checked_add(u64::from(digit - b'0') * unit)
                .ok_or_else(bad)?;
        }
        Ok(Bitrate(bps))
    }
}

named_enum! {
    /// The rate-control modes by name, as `encode_yuv --rc` and [`crate::GpuEncoderConfig`]
    /// spell them. [`RateControl::from_parts`] turns one and its values into a [`RateControl`].
    RateControlMode, UnknownRateControl {
        /// Constant quality ([`RateControl::ConstantQuality`]).
        Cq => "cq",
        /// Constant bit rate ([`RateControl::Cbr`]).
        Cbr => "cbr",
        /// Variable bit rate with a maximum ([`RateControl::Vbr`]).
        Vbr => "vbr",
        /// Constant QP ([`RateControl::ConstantQp`]).
        Cqp => "cqp",
    }
}

/// How an encoder spends bits: one neutral setting that every backend maps onto its own (see
/// the README's mapping table, and `src/encoder/mapping.rs`, the one place that does it).
///
/// The VBV (HRD) buffer bounds how far the rate may stray from the target over short windows.
/// Left as `None` it defaults to one second at the target rate for CBR and one second at the
/// maximum rate for VBR ([`RateControl::vbv_buffer_bits`]); every backend is then given this
/// value, so no backend's own default applies (for the record: x264 has no VBV unless one is
/// set, NVENC's `vbvBufferSize = 0` leaves the size to the driver, and FFmpeg's `h264_nvenc`
/// uses two seconds at the target when `-bufsize` is absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum RateControl {
    /// Constant quality at [`EncoderConfig::crf`] (x264's CRF; NVENC's constant-quality VBR).
    /// The default.
    #[default]
    ConstantQuality,
    /// Constant bit rate: the stream averages `bitrate` and the VBV never overflows at it.
    Cbr {
        /// Target (and maximum) rate.
        bitrate: Bitrate,
        /// VBV buffer in bits; `None` for one second at `bitrate`.
        vbv_buffer_bits: Option<u64>,
    },
    /// Variable bit rate: averages `bitrate`, never above `max_bitrate` over the VBV buffer.
    Vbr {
        /// Average rate.
        bitrate: Bitrate,
        /// Peak rate, at least `bitrate`.
        max_bitrate: Bitrate,
        /// VBV buffer in bits; `None` for one second at `max_bitrate`.
        vbv_buffer_bits: Option<u64>,
    },
    /// Every picture at the same quantizer, 0 to 51 (0 is lossless on x264). No rate control.
    ConstantQp {
        /// The QP of every picture (NVENC: I, P and B alike).
        qp: u8,
    },
}

impl RateControl {
    /// Highest accepted QP (8-bit H.264).
    pub const QP_MAX: u8 = 51;
    /// Smallest accepted VBV buffer, in bits (x264 counts in kbit).
    pub const VBV_MIN_BITS: u64 = 1_000;
    /// Largest accepted VBV buffer, in bits (NVENC's field is 32-bit).
    pub const VBV_MAX_BITS: u64 = u32::MAX as u64;

    /// Constant bit rate at `bitrate`, with the default VBV buffer.
    #[must_use]
    pub const fn cbr(bitrate: Bitrate) -> Self {
        RateControl::Cbr {
            bitrate,
            vbv_buffer_bits: None,
        }
    }

    /// Variable bit rate averaging `bitrate`, peaking at `max_bitrate`, default VBV buffer.
    #[must_use]
    pub const fn vbr(bitrate: Bitrate, max_bitrate: Bitrate) -> Self {
        RateControl::Vbr {
            bitrate,
            max_bitrate,
            vbv_buffer_bits: None,
        }
    }

    /// Constant QP.
    #[must_use]
    pub const fn constant_qp(qp: u8) -> Self {
        RateControl::ConstantQp { qp }
    }

    /// Sets the VBV buffer of a CBR or VBR setting; the other modes have no VBV and are
    /// returned unchanged ([`RateControl::from_parts`] refuses a buffer for them instead).
    #[must_use]
    pub const fn with_vbv_buffer_bits(self, bits: u64) -> Self {
        match self {
            RateControl::Cbr { bitrate, .. } => RateControl::Cbr {
                bitrate,
                vbv_buffer_bits: Some(bits),
            },
            RateControl::Vbr {
                bitrate,
                max_bitrate,
                ..
            } => RateControl::Vbr {
                bitrate,
                max_bitrate,
                vbv_buffer_bits: Some(bits),
            },
            other => other,
        }
    }

    /// The mode's name.
    #[must_use]
    pub const fn mode(self) -> RateControlMode {
        match self {
            RateControl::ConstantQuality => RateControlMode::Cq,
            RateControl::Cbr { .. } => RateControlMode::Cbr,
            RateControl::Vbr { .. } => RateControlMode::Vbr,
            RateControl::ConstantQp { .. } => RateControlMode::Cqp,
        }
    }

    /// The target bit rate, for CBR and VBR.
    #[must_use]
    pub const fn bitrate(self) -> Option<Bitrate> {
        match self {
            RateControl::Cbr { bitrate, .. } | RateControl::Vbr { bitrate, .. } => Some(bitrate),
            _ => None,
        }
    }

    /// The peak rate: the target for CBR, the maximum for VBR.
    #[must_use]
    pub const fn max_bitrate(self) -> Option<Bitrate> {
        match self {
            RateControl::Cbr { bitrate, .. } => Some(bitrate),
            RateControl::Vbr { max_bitrate, .. } => Some(max_bitrate),
            _ => None,
        }
    }

    /// The VBV buffer every backend is given, in bits: the one set, or one second at the peak
    /// rate. `None` for the modes without a VBV.
    #[must_use]
    pub const fn vbv_buffer_bits(self) -> Option<u64> {
        match self {
            RateControl::Cbr {
                vbv_buffer_bits: Some(bits),
                ..
            }
            | RateControl::Vbr {
                vbv_buffer_bits: Some(bits),
                ..
            } => Some(bits),
            RateControl::Cbr { bitrate, .. } => Some(bitrate.bps()),
            RateControl::Vbr { max_bitrate, .. } => Some(max_bitrate.bps()),
            _ => None,
        }
    }

    /// Builds a setting from command-line style parts (`--rc`, `--bitrate`, `--maxrate`,
    /// `--bufsize`, `--qp`). `mode` `None` picks CBR when only a bit rate is given, VBR when a
    /// maximum is given too, constant QP when a QP is given, constant quality otherwise.
    ///
    /// # Errors
    /// [`ConfigError::RateControlMissingValue`] when the mode needs a value that is absent,
    /// [`ConfigError::RateControlExtraValue`] when a value does not apply to the mode (it would
    /// be silently ignored otherwise), [`ConfigError::QpOutOfRange`] for a QP above 51; the
    /// ranges are checked by [`RateControl::validate`].
    pub fn from_parts(
        mode: Option<RateControlMode>,
        bitrate: Option<Bitrate>,
        max_bitrate: Option<Bitrate>,
        vbv_buffer_bits: Option<u64>,
        qp: Option<u32>,
    ) -> Result<Self, ConfigError> {
        let mode = mode.unwrap_or(match (bitrate, max_bitrate, qp) {
            (_, _, Some(_)) => RateControlMode::Cqp,
            (Some(_), Some(_), _) => RateControlMode::Vbr,
            (Some(_), None, _) => RateControlMode::Cbr,
            _ => RateControlMode::Cq,
        });
        let missing = |value: &'static str| ConfigError::RateControlMissingValue { mode, value };
        let extra = |value: &'static str| ConfigError::RateControlExtraValue { mode, value };
        let rc = match mode {
            RateControlMode::Cq | RateControlMode::Cqp => {
                if bitrate.is_some() {
                    return Err(extra("bitrate"));
                }
                if max_bitrate.is_some() {
                    return Err(extra("maxrate"));
                }
                if vbv_buffer_bits.is_some() {
                    return Err(extra("bufsize"));
                }
                if mode == RateControlMode::Cq {
                    if qp.is_some() {
                        return Err(extra("qp"));
                    }
                    RateControl::ConstantQuality
                } else {
                    let qp = qp.ok_or_else(|| missing("qp"))?;
                    let qp = u8::try_from(qp).ok().filter(|q| *q <= Self::QP_MAX).ok_or(
                        ConfigError::QpOutOfRange {
                            qp,
                            max: Self::QP_MAX,
                        },
                    )?;
                    RateControl::ConstantQp { qp }
                }
            }
            RateControlMode::Cbr => {
                if qp.is_some() {
                    return Err(extra("qp"));
                }
                let bitrate = bitrate.ok_or_else(|| missing("bitrate"))?;
                // A maximum equal to the target is what CBR means; any other is a mistake.
                if max_bitrate.is_some_and(|m| m != bitrate) {
                    return Err(extra("maxrate"));
                }
                RateControl::Cbr {
                    bitrate,
                    vbv_buffer_bits,
                }
            }
            RateControlMode::Vbr => {
                if qp.is_some() {
                    return Err(extra("qp"));
                }
                RateControl::Vbr {
                    bitrate: bitrate.ok_or_else(|| missing("bitrate"))?,
                    max_bitrate: max_bitrate.ok_or_else(|| missing("maxrate"))?,
                    vbv_buffer_bits,
                }
            }
        };
        rc.validate()?;
        Ok(rc)
    }

    /// Checks the values: bit rates within [`Bitrate::MIN`]..=[`Bitrate::MAX`], a maximum at
    /// least the target, a VBV buffer within [`RateControl::VBV_MIN_BITS`]..=
    /// [`RateControl::VBV_MAX_BITS`], a QP of at most 51.
    ///
    /// # Errors
    /// The first bad value, as a [`ConfigError`] naming it and the valid range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check_rate = |what: &'static str, rate: Bitrate| {
            if (Bitrate::MIN..=Bitrate::MAX).contains(&rate) {
                Ok(())
            } else {
                Err(ConfigError::BitrateOutOfRange {
                    what,
                    bps: rate.bps(),
                    min: Bitrate::MIN.bps(),
                    max: Bitrate::MAX.bps(),
                })
            }
        };
        match *self {
            RateControl::ConstantQuality => {}
            RateControl::ConstantQp { qp } => {
                if qp > Self::QP_MAX {
                    return Err(ConfigError::QpOutOfRange {
                        qp: u32::from(qp),
                        max: Self::QP_MAX,
                    });
                }
            }
            RateControl::Cbr { bitrate, .. } => check_rate("bitrate", bitrate)?,
            RateControl::Vbr {
                bitrate,
                max_bitrate,
                ..
            } => {
                check_rate("bitrate", bitrate)?;
                check_rate("max bitrate", max_bitrate)?;
                if max_bitrate < bitrate {
                    return Err(ConfigError::MaxBitrateBelowTarget {
                        max_bps: max_bitrate.bps(),
                        target_bps: bitrate.bps(),
                    });
                }
            }
        }
        if let Some(bits) = self.vbv_buffer_bits() {
            if !(Self::VBV_MIN_BITS..=Self::VBV_MAX_BITS).contains(&bits) {
                return Err(ConfigError::VbvBufferOutOfRange {
                    bits,
                    min: Self::VBV_MIN_BITS,
                    max: Self::VBV_MAX_BITS,
                });
            }
        }
        Ok(())
    }
}

impl fmt::Display for RateControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RateControl::ConstantQuality => f.write_str("constant quality")?,
            RateControl::ConstantQp { qp } => write!(f, "constant QP {qp}")?,
            RateControl::Cbr { bitrate, .. } => write!(f, "CBR {bitrate}")?,
            RateControl::Vbr {
                bitrate,
                max_bitrate,
                ..
            } => write!(f, "VBR {bitrate} max {max_bitrate}")?,
        }
        if let Some(bits) = self.vbv_buffer_bits() {
            write!(f, " VBV {}", Bitrate(bits))?;
        }
        Ok(())
    }
}

/// Everything an encoder needs to know about the stream, for any backend.
///
/// Built with [`EncoderConfig::new`] and the `with_` methods; checked by
/// [`EncoderConfig::validate`], which every backend runs when it opens, so a bad value fails there
/// with a [`ConfigError`] that names it and what would be valid.
///
/// ```
/// use nvenc::{EncoderConfig, PixelFormat, Preset, Tune, FrameRate};
///
/// let config = EncoderConfig::new(1920, 1080)
///     .with_pixel_format(PixelFormat::Nv12)
///     .with_frame_rate(FrameRate::new(30000, 1001))
///     .with_preset(Preset::Veryfast)
///     .with_tune(Some(Tune::Zerolatency))
///     .with_crf(21.0)
///     .with_gop_size(60);
/// assert_eq!(config.validate()?, 1920 * 1080 * 3 / 2);
/// # Ok::<(), nvenc::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EncoderConfig {
    /// Output codec.
    pub codec: Codec,
    /// Frame size in pixels.
    pub resolution: Resolution,
    /// Layout of the input frames.
    pub pixel_format: PixelFormat,
    /// Input frame rate; timestamps count frames at this rate unless the caller gives its own.
    pub frame_rate: FrameRate,
    /// Speed/quality preset.
    pub preset: Preset,
    /// Optional content/latency tune.
    pub tune: Option<Tune>,
    /// Constant rate factor, `0.0..=51.0`: lower is better quality and larger output; 23 is
    /// x264's default. Backends without CRF map it to their constant-quality mode. Used when
    /// [`EncoderConfig::rate_control`] is [`RateControl::ConstantQuality`].
    pub crf: f32,
    /// Rate control: constant quality (at `crf`, the default), CBR, VBR or constant QP.
    pub rate_control: RateControl,
    /// Largest distance between keyframes (IDR pictures), in frames.
    pub gop_size: u32,
    /// Consecutive B-frames allowed, or `None` for the preset's (and tune's) choice.
    pub bframes: Option<u32>,
    /// Encoder threads, `0` for the backend's automatic choice. Ignored by hardware backends.
    pub threads: u32,
}

impl EncoderConfig {
    /// Lowest accepted [`EncoderConfig::crf`].
    pub const CRF_MIN: f32 = 0.0;
    /// Highest accepted [`EncoderConfig::crf`] (8-bit H.264).
    pub const CRF_MAX: f32 = 51.0;
    /// Highest accepted [`EncoderConfig::gop_size`].
    pub const GOP_MAX: u32 = i32::MAX as u32;
    /// Highest accepted [`EncoderConfig::bframes`] (H.264 encoders allow at most 16).
    pub const BFRAMES_MAX: u32 = 16;
    /// Highest accepted [`EncoderConfig::threads`].
    pub const THREADS_MAX: u32 = 128;

    /// A configuration for `width` x `height` I420 H.264 at 30 fps, preset `medium`, constant
    /// quality at crf 23,
    /// keyframes at least every 250 frames, the preset's B-frames, automatic threads.
    #[must_use]
    pub fn new(width: u32, height: u32) -> Self {
        EncoderConfig {
            codec: Codec::H264,
            resolution: Resolution::new(width, height),
            pixel_format: PixelFormat::I420,
            frame_rate: FrameRate::from_hz(30),
            preset: Preset::Medium,
            tune: None,
            crf: 23.0,
            rate_control: RateControl::ConstantQuality,
            gop_size: 250,
            bframes: None,
            threads: 0,
        }
    }

    /// Sets [`EncoderConfig::codec`].
    #[must_use]
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Sets [`EncoderConfig::resolution`].
    #[must_use]
    pub fn with_resolution(mut self, resolution: Resolution) -> Self {
        self.resolution = resolution;
        self
    }

    /// Sets [`EncoderConfig::pixel_format`].
    #[must_use]
    pub fn with_pixel_format(mut self, pixel_format: PixelFormat) -> Self {
        self.pixel_format = pixel_format;
        self
    }

    /// Sets [`EncoderConfig::frame_rate`].
    #[must_use]
    pub fn with_frame_rate(mut self, frame_rate: FrameRate) -> Self {
        self.frame_rate = frame_rate;
        self
    }

    /// Sets [`EncoderConfig::preset`].
    #[must_use]
    pub fn with_preset(mut self, preset: Preset) -> Self {
        self.preset = preset;
        self
    }

    /// Sets [`EncoderConfig::tune`].
    #[must_use]
    pub fn with_tune(mut self, tune: Option<Tune>) -> Self {
        self.tune = tune;
        self
    }

    /// Sets [`EncoderConfig::crf`].
    #[must_use]
    pub fn with_crf(mut self, crf: f32) -> Self {
        self.crf = crf;
        self
    }

    /// Sets [`EncoderConfig::rate_control`].
    #[must_use]
    pub fn with_rate_control(mut self, rate_control: RateControl) -> Self {
        self.rate_control = rate_control;
        self
    }

    /// Sets [`EncoderConfig::gop_size`].
    #[must_use]
    pub fn with_gop_size(mut self, gop_size: u32) -> Self {
        self.gop_size = gop_size;
        self
    }

    /// Sets [`EncoderConfig::bframes`].
    #[must_use]
    pub fn with_bframes(mut self, bframes: Option<u32>) -> Self {
        self.bframes = bframes;
        self
    }

    /// Sets [`EncoderConfig::threads`].
    #[must_use]
    pub fn with_threads(mut self, threads: u32) -> Self {
        self.threads = threads;
        self
    }

    /// Checks every field and returns the byte length of one input frame.
    ///
    /// # Errors
    /// The first invalid field, as a [`ConfigError`] naming the value and the valid range.
    pub fn validate(&self) -> Result<usize, ConfigError> {
        let frame_len = self.pixel_format.frame_len(self.resolution)?;
        let Resolution { width, height } = self.resolution;
        if width > Resolution::MAX_SIDE || height > Resolution::MAX_SIDE {
            return Err(ConfigError::ResolutionTooLarge {
                width,
                height,
                max: Resolution::MAX_SIDE,
            });
        }
        let FrameRate { num, den } = self.frame_rate;
        if num == 0 || den == 0 {
            return Err(ConfigError::InvalidFrameRate { num, den });
        }
        // `contains` is false for NaN, so NaN is rejected here too.
        if !(Self::CRF_MIN..=Self::CRF_MAX).contains(&self.crf) {
            return Err(ConfigError::CrfOutOfRange {
                crf: self.crf,
                min: Self::CRF_MIN,
                max: Self::CRF_MAX,
            });
        }
        self.rate_control.validate()?;
        if self.gop_size == 0 || self.gop_size > Self::GOP_MAX {
            return Err(ConfigError::GopSizeOutOfRange {
                gop_size: self.gop_size,
                max: Self::GOP_MAX,
            });
        }
        if let Some(bframes) = self.bframes {
            if bframes > Self::BFRAMES_MAX {
                return Err(ConfigError::BframesOutOfRange {
                    bframes,
                    max: Self::BFRAMES_MAX,
                });
            }
        }
        if self.threads > Self::THREADS_MAX {
            return Err(ConfigError::ThreadsOutOfRange {
                threads: self.threads,
                max: Self::THREADS_MAX,
            });
        }
        Ok(frame_len)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes_rates_and_names() {
        assert_eq!("1920x1080".parse(), Ok(Resolution::new(1920, 1080)));
        assert!(matches!(
            "1920*1080".parse::<Resolution>(),
            Err(ConfigError::BadResolutionSyntax { .. })
        ));
        assert_eq!("30".parse(), Ok(FrameRate::new(30, 1)));
        assert_eq!("30000/1001".parse(), Ok(FrameRate::new(30000, 1001)));
        assert_eq!("29.97".parse(), Ok(FrameRate::new(2997, 100)));
        assert!(matches!(
            "fast".parse::<FrameRate>(),
            Err(ConfigError::BadFrameRateSyntax { .. })
        ));
        assert_eq!("VeryFast".parse(), Ok(Preset::Veryfast));
        assert_eq!("zerolatency".parse(), Ok(Tune::Zerolatency));
        assert_eq!("yuv420p".parse(), Ok(PixelFormat::I420));
        assert_eq!("NV12".parse(), Ok(PixelFormat::Nv12));
        match "p4".parse::<Preset>() {
            Err(ConfigError::UnknownPreset { name, valid }) => {
                assert_eq!(name, "p4");
                assert!(valid.contains(&"medium"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            "rgb24".parse::<PixelFormat>(),
            Err(ConfigError::UnknownPixelFormat { .. })
        ));
    }

    #[test]
    fn parses_bitrates_and_builds_rate_control() {
        assert_eq!("2M".parse(), Ok(Bitrate::from_bps(2_000_000)));
        assert_eq!("2.5M".parse(), Ok(Bitrate::from_bps(2_500_000)));
        assert_eq!("2500k".parse(), Ok(Bitrate::from_kbps(2_500)));
        assert_eq!("2500K".parse(), Ok(Bitrate::from_bps(2_500_000)));
        assert_eq!("2000000".parse(), Ok(Bitrate::from_bps(2_000_000)));
        assert_eq!(Bitrate::from_bps(2_500_000).to_string(), "2500k");
        assert_eq!(Bitrate::from_bps(2_000_000).to_string(), "2M");
        for bad in [
            "",
            "M",
            "2G",
            "-1M",
            "1.5",
            "2.M",
            "1.2345k",
            "99999999999999999999",
        ] {
            assert!(
                matches!(
                    bad.parse::<Bitrate>(),
                    Err(ConfigError::BadBitrateSyntax { .. })
                ),
                "{bad:?}"
            );
        }
        let m = |v: u64| Some(Bitrate::from_bps(v * 1_000_000));
        assert_eq!(
            RateControl::from_parts(None, m(2), None, None, None),
            Ok(RateControl::cbr(Bitrate::from_bps(2_000_000)))
        );
        assert_eq!(
            RateControl::from_parts(None, m(2), m(3), Some(1_500_000), None),
            Ok(
                RateControl::vbr(Bitrate::from_bps(2_000_000), Bitrate::from_bps(3_000_000))
                    .with_vbv_buffer_bits(1_500_000)
            )
        );
        assert_eq!(
            RateControl::from_parts(Some(RateControlMode::Cqp), None, None, None, Some(30)),
            Ok(RateControl::constant_qp(30))
        );
        assert_eq!(
            RateControl::from_parts(None, None, None, None, None),
            Ok(RateControl::ConstantQuality)
        );
        assert!(matches!(
            RateControl::from_parts(Some(RateControlMode::Vbr), m(2), None, None, None),
            Err(ConfigError::RateControlMissingValue {
                value: "maxrate",
                ..
            })
        ));
        assert!(matches!(
            RateControl::from_parts(Some(RateControlMode::Cq), m(2), None, None, None),
            Err(ConfigError::RateControlExtraValue {
                value: "bitrate",
                ..
            })
        ));
        assert!(matches!(
            RateControl::from_parts(Some(RateControlMode::Cqp), None, None, None, Some(300)),
            Err(ConfigError::QpOutOfRange { qp: 300, max: 51 })
        ));
        assert!(matches!(
            "abr".parse::<RateControlMode>(),
            Err(ConfigError::UnknownRateControl { .. })
        ));
        // The default VBV: one second at the target (CBR) or the maximum (VBR).
        assert_eq!(
            RateControl::cbr(Bitrate::from_bps(2_000_000)).vbv_buffer_bits(),
            Some(2_000_000)
        );
        let err = EncoderConfig::new(64, 64)
            .with_rate_control(RateControl::vbr(
                Bitrate::from_bps(3_000_000),
                Bitrate::from_bps(2_000_000),
            ))
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "max bitrate 2000000 bit/s is below the target bitrate 3000000 bit/s: the maximum \
             must be at least the target"
        );
        let err = RateControl::cbr(Bitrate::from_bps(500))
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "bitrate 500 bit/s is out of range: expected 1000 to 4294967295 bit/s"
        );
    }

    #[test]
    fn plane_layouts_cover_the_frame_exactly() {
        for format in [PixelFormat::I420, PixelFormat::Nv12] {
            let layout = format.plane_layout(Resolution::new(6, 4)).unwrap();
            assert_eq!(layout.frame_len, 36);
            let last = layout.planes.last().unwrap();
            assert_eq!(last.offset + last.stride * last.rows, 36, "{format}");
        }
    }

    #[test]
    fn error_messages_name_value_and_valid_range() {
        let err = EncoderConfig::new(320, 240)
            .with_crf(60.0)
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "crf 60 is out of range: expected 0 to 51 (lower is better quality)"
        );
        let err = EncoderConfig::new(7, 8).validate().unwrap_err();
        assert!(err.to_string().contains("try 8x8"), "{err}");
    }
}
