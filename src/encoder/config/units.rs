//! The units of an [`super::EncoderConfig`] that no [`ConfigError`] variant names: codec,
//! frame rate, preset, tune and bit rate.

use std::fmt;
use std::str::FromStr;

use super::error::{named_enum, ConfigError};

/// The video codec an encoder produces.
///
/// What each backend calls a codec, and which backends encode it, is
/// [`crate::encoder::codecs`]'s: adding a codec is an entry there, in the bitstream module and in
/// the MP4 sink. The enum is `#[non_exhaustive]` so AV1 can join without a breaking change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[non_exhaustive]
pub enum Codec {
    /// H.264 / AVC, written as an Annex B byte stream.
    #[default]
    H264,
    /// H.265 / HEVC, Main profile (8-bit 4:2:0), written as an Annex B byte stream.
    Hevc,
}

impl Codec {
    /// Every codec, in the order of [`Codec::NAMES`].
    pub const ALL: &'static [Codec] = &[Codec::H264, Codec::Hevc];
    /// Every codec name [`FromStr`] accepts (case-insensitive; `avc`, `h.264`, `h265` and
    /// `h.265` are aliases).
    pub const NAMES: &'static [&'static str] = &["h264", "hevc"];

    /// The short name used in logs, metrics labels, `detect --json` and on the command line
    /// (`h264`, `hevc`); FFmpeg's codec name too.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::Hevc => "hevc",
        }
    }

    /// The name people read: `H.264`, `HEVC`.
    #[must_use]
    pub const fn display_name(self) -> &'static str {
        match self {
            Codec::H264 => "H.264",
            Codec::Hevc => "HEVC",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// By name (`"hevc"`), as in `detect --json` and the TOML configuration.
impl serde::Serialize for Codec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Any name [`FromStr`] accepts; an unknown one is an error naming the valid ones.
impl<'de> serde::Deserialize<'de> for Codec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Codec {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "h264" | "avc" | "h.264" => Ok(Codec::H264),
            "hevc" | "h265" | "h.265" => Ok(Codec::Hevc),
            _ => Err(ConfigError::UnknownCodec {
                name: s.to_owned(),
                valid: Self::NAMES,
            }),
        }
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
pub struct Bitrate(pub(super) u64);

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
