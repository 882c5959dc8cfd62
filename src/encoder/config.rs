//! The backend-neutral encoder configuration and the units it is made of.

mod error;
mod rate_control;
mod units;

pub use error::{ConfigError, FrameLayout, PixelFormat, Plane, RateControlMode, Resolution};
pub use rate_control::RateControl;
pub use units::{Bitrate, Codec, FrameRate, Preset, Tune};

/// Everything an encoder needs to know about the stream, for any backend.
///
/// Built with [`EncoderConfig::new`] and the `with_` methods; checked by
/// [`EncoderConfig::validate`], which every backend runs when it opens, so a bad value fails there
/// with a [`ConfigError`] that names it and what would be valid.
///
/// ```
/// use nvencode::{EncoderConfig, PixelFormat, Preset, Tune, FrameRate};
///
/// let config = EncoderConfig::new(1920, 1080)
///     .with_pixel_format(PixelFormat::Nv12)
///     .with_frame_rate(FrameRate::new(30000, 1001))
///     .with_preset(Preset::Veryfast)
///     .with_tune(Some(Tune::Zerolatency))
///     .with_crf(21.0)
///     .with_gop_size(60);
/// assert_eq!(config.validate()?, 1920 * 1080 * 3 / 2);
/// # Ok::<(), nvencode::ConfigError>(())
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
    /// Consecutive B-frames allowed, or `None` for the preset's (and tune's) choice. Above 0 with
    /// the `zerolatency` tune it is an error ([`ConfigError::BframesWithZeroLatency`]).
    pub bframes: Option<u32>,
    /// Encoder threads, `0` for the backend's automatic choice. Ignored by hardware backends.
    pub threads: u32,
}

impl EncoderConfig {
    /// Lowest accepted [`EncoderConfig::crf`].
    pub const CRF_MIN: f32 = 0.0;
    /// Highest accepted [`EncoderConfig::crf`] (8-bit H.264 and HEVC).
    pub const CRF_MAX: f32 = 51.0;
    /// Highest accepted [`EncoderConfig::gop_size`].
    pub const GOP_MAX: u32 = i32::MAX as u32;
    /// Highest accepted [`EncoderConfig::bframes`] (x264 and x265 allow at most 16; NVENC as its
    /// capabilities for the codec say).
    pub const BFRAMES_MAX: u32 = 16;
    /// Highest accepted [`EncoderConfig::threads`].
    pub const THREADS_MAX: u32 = 128;

    /// A configuration for `width` x `height` I420 H.264 (see [`EncoderConfig::with_codec`]) at
    /// 30 fps, preset `medium`, constant
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
            // Zero latency means no reordering on every backend (`mapping::bframes`): B-frames
            // asked for with it are a contradiction to report, not a wish to drop in silence.
            if bframes > 0 && self.tune == Some(Tune::Zerolatency) {
                return Err(ConfigError::BframesWithZeroLatency { bframes });
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
mod tests;
