//! The backend-neutral encoder configuration and the units it is made of.

use std::fmt;
use std::str::FromStr;

use crate::error::ConfigError;

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
    /// x264's default. Backends without CRF map it to their constant-quality mode.
    pub crf: f32,
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

    /// A configuration for `width` x `height` I420 H.264 at 30 fps, preset `medium`, crf 23,
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
