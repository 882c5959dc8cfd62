//! NVENC-only settings, kept beside the backend-neutral [`EncoderConfig`], and how the neutral
//! settings map onto NVENC (the rules themselves are `crate::encoder::mapping`'s, shared with the
//! other backends).
//!
//! | `EncoderConfig` | NVENC |
//! |---|---|
//! | `preset` ultrafast, superfast / veryfast / faster, fast / medium / slow / slower / veryslow, placebo | P1 / P2 / P3 / P4 / P5 / P6 / P7 (unless [`NvencOptions::preset`] is set) |
//! | `tune` zerolatency | ultra-low-latency tuning, no B-frames, no lookahead, no output delay (each frame's bitstream is read back in the call that submitted it) |
//! | `tune` fastdecode | low-latency tuning |
//! | other tunes, or none | high-quality tuning (unless [`NvencOptions::tuning`] is set) |
//! | `crf` c | constant-quality VBR: `targetQuality = round(c)` clamped to 1..=51, no bitrate cap (NVENC has no CRF; its quality scale is the same 0-51 QP-like scale, and 0 would mean "automatic") |
//! | `rate_control` CBR / VBR / constant QP | `NV_ENC_PARAMS_RC_CBR` / `VBR` / `CONSTQP` with `averageBitRate`, `maxBitRate`, `vbvBufferSize`, `vbvInitialDelay`, `constQP`: see `src/encoder/mapping.rs` and the README's table |
//! | `gop_size` | `gopLength` and the codec's `idrPeriod` (H.264 or HEVC config): every keyframe is an IDR |
//! | `bframes` | `frameIntervalP = bframes + 1`; `None` keeps the preset's |
//! | `threads` | ignored (hardware) |
//!
//! SPS and PPS are repeated before every IDR (`repeatSPSPPS`), so a viewer can join at any
//! keyframe, and are also available out of band.

use std::fmt;
use std::str::FromStr;

use super::placement::GpuChoice;
use crate::encoder::mapping;
use crate::encoder::{Preset, Tune};
use crate::error::ConfigError;

/// NVENC's presets, fastest (P1) to best quality (P7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum NvencPreset {
    /// Fastest.
    P1,
    /// Faster.
    P2,
    /// Fast.
    P3,
    /// Medium (NVENC's default).
    P4,
    /// Slow.
    P5,
    /// Slower.
    P6,
    /// Slowest, best quality.
    P7,
}

impl NvencPreset {
    /// Names [`FromStr`] accepts.
    pub const NAMES: &'static [&'static str] = &["p1", "p2", "p3", "p4", "p5", "p6", "p7"];

    /// The nearest NVENC preset to an x264-named preset (see the module table).
    #[must_use]
    pub fn from_preset(preset: Preset) -> Self {
        match mapping::nvenc_preset_number(preset) {
            1 => NvencPreset::P1,
            2 => NvencPreset::P2,
            3 => NvencPreset::P3,
            4 => NvencPreset::P4,
            5 => NvencPreset::P5,
            6 => NvencPreset::P6,
            _ => NvencPreset::P7,
        }
    }

    pub(crate) fn guid(self) -> nvenc_sys::GUID {
        match self {
            NvencPreset::P1 => nvenc_sys::NV_ENC_PRESET_P1_GUID,
            NvencPreset::P2 => nvenc_sys::NV_ENC_PRESET_P2_GUID,
            NvencPreset::P3 => nvenc_sys::NV_ENC_PRESET_P3_GUID,
            NvencPreset::P4 => nvenc_sys::NV_ENC_PRESET_P4_GUID,
            NvencPreset::P5 => nvenc_sys::NV_ENC_PRESET_P5_GUID,
            NvencPreset::P6 => nvenc_sys::NV_ENC_PRESET_P6_GUID,
            NvencPreset::P7 => nvenc_sys::NV_ENC_PRESET_P7_GUID,
        }
    }
}

impl fmt::Display for NvencPreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", *self as u8 + 1)
    }
}

impl FromStr for NvencPreset {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "p1" => Ok(NvencPreset::P1),
            "p2" => Ok(NvencPreset::P2),
            "p3" => Ok(NvencPreset::P3),
            "p4" => Ok(NvencPreset::P4),
            "p5" => Ok(NvencPreset::P5),
            "p6" => Ok(NvencPreset::P6),
            "p7" => Ok(NvencPreset::P7),
            _ => Err(ConfigError::UnknownPreset {
                name: s.to_owned(),
                valid: Self::NAMES,
            }),
        }
    }
}

/// NVENC's tuning information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NvencTuning {
    /// High quality (`hq`): for recording and offline work.
    HighQuality,
    /// Low latency (`ll`).
    LowLatency,
    /// Ultra-low latency (`ull`): no reordering, smallest delay.
    UltraLowLatency,
    /// Lossless (`lossless`), where the GPU supports it for the codec: constant QP 0, and for
    /// H.264 transform bypass with High 4:4:4 Predictive (HEVC stays Main).
    Lossless,
}

impl NvencTuning {
    /// Names [`FromStr`] accepts.
    pub const NAMES: &'static [&'static str] = &["hq", "ll", "ull", "lossless"];

    /// The tuning an x264-named tune maps to (see the module table).
    #[must_use]
    pub fn from_tune(tune: Option<Tune>) -> Self {
        match mapping::nvenc_tuning_name(tune) {
            "ull" => NvencTuning::UltraLowLatency,
            "ll" => NvencTuning::LowLatency,
            _ => NvencTuning::HighQuality,
        }
    }

    pub(crate) fn raw(self) -> nvenc_sys::NV_ENC_TUNING_INFO {
        match self {
            NvencTuning::HighQuality => {
                nvenc_sys::NV_ENC_TUNING_INFO::NV_ENC_TUNING_INFO_HIGH_QUALITY
            }
            NvencTuning::LowLatency => {
                nvenc_sys::NV_ENC_TUNING_INFO::NV_ENC_TUNING_INFO_LOW_LATENCY
            }
            NvencTuning::UltraLowLatency => {
                nvenc_sys::NV_ENC_TUNING_INFO::NV_ENC_TUNING_INFO_ULTRA_LOW_LATENCY
            }
            NvencTuning::Lossless => nvenc_sys::NV_ENC_TUNING_INFO::NV_ENC_TUNING_INFO_LOSSLESS,
        }
    }
}

impl fmt::Display for NvencTuning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NvencTuning::HighQuality => "hq",
            NvencTuning::LowLatency => "ll",
            NvencTuning::UltraLowLatency => "ull",
            NvencTuning::Lossless => "lossless",
        })
    }
}

impl FromStr for NvencTuning {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "hq" => Ok(NvencTuning::HighQuality),
            "ll" => Ok(NvencTuning::LowLatency),
            "ull" => Ok(NvencTuning::UltraLowLatency),
            "lossless" => Ok(NvencTuning::Lossless),
            _ => Err(ConfigError::UnknownTune {
                name: s.to_owned(),
                valid: Self::NAMES,
            }),
        }
    }
}

/// Settings only NVENC has.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NvencOptions {
    /// The GPU to encode on: [`GpuChoice::Auto`] (the default) places the session on the GPU
    /// with the fewest sessions this process has open, trying the others when one refuses (see
    /// `nvenc::placement`); an index or UUID names one GPU, and only it is tried.
    pub gpu: GpuChoice,
    /// Overrides the preset mapped from [`EncoderConfig::preset`](crate::EncoderConfig::preset).
    pub preset: Option<NvencPreset>,
    /// Overrides the tuning mapped from [`EncoderConfig::tune`](crate::EncoderConfig::tune).
    pub tuning: Option<NvencTuning>,
    /// Frames submitted ahead of the one whose output is read back, so upload, encode and
    /// read-back overlap (NVIDIA's sample encoder uses 3 and asks for at least 1). 0 reads each
    /// frame back before the next is submitted: lowest latency, least throughput. The
    /// `zerolatency` tune forces 0.
    pub extra_output_delay: u32,
    /// How long a call that may block forever (`nvEncLockBitstream`, `nvEncEncodePicture`) may
    /// take before the session is judged hung and [`Error::Hung`](crate::Error::Hung) is
    /// returned. Never less than [`NvencOptions::MIN_DEADLINE_FRAMES`] frame intervals at the
    /// configured frame rate, nor than [`NvencOptions::MIN_CALL_TIMEOUT`]. Default 5 s, or
    /// [`NvencOptions::CALL_TIMEOUT_ENV`] in milliseconds. The same deadline bounds every other
    /// call on an open session (mapping, unmapping, waiting for the CUDA stream) and the
    /// teardown of a session as a whole.
    pub call_timeout: std::time::Duration,
    /// How long opening a session may take as a whole (loading the driver, CUDA initialization,
    /// `nvEncOpenEncodeSessionEx`, the capability queries, `nvEncInitializeEncoder`, allocating
    /// and registering the surfaces), and a capability probe likewise, before it is judged hung
    /// and [`Error::Hung`](crate::Error::Hung) names the step it was in. Default 15 s (a first
    /// CUDA initialization on a node of several GPUs without the persistence daemon takes
    /// seconds), or [`NvencOptions::OPEN_TIMEOUT_ENV`] in milliseconds.
    pub open_timeout: std::time::Duration,
}

impl Default for NvencOptions {
    fn default() -> Self {
        NvencOptions {
            gpu: GpuChoice::Auto,
            preset: None,
            tuning: None,
            extra_output_delay: 3,
            call_timeout: env_millis(Self::CALL_TIMEOUT_ENV).unwrap_or(Self::DEFAULT_CALL_TIMEOUT),
            open_timeout: env_millis(Self::OPEN_TIMEOUT_ENV).unwrap_or(Self::DEFAULT_OPEN_TIMEOUT),
        }
    }
}

impl NvencOptions {
    /// The largest [`NvencOptions::extra_output_delay`] accepted (FFmpeg caps NVENC surfaces at
    /// 64 in all; 32 frames of delay is already more than a second at 30 fps).
    pub const MAX_OUTPUT_DELAY: u32 = 32;

    /// Sets [`NvencOptions::gpu`] to one CUDA device ordinal.
    #[must_use]
    pub fn with_device(mut self, device: usize) -> Self {
        self.gpu = GpuChoice::Index(device);
        self
    }

    /// Sets [`NvencOptions::gpu`].
    #[must_use]
    pub fn with_gpu(mut self, gpu: GpuChoice) -> Self {
        self.gpu = gpu;
        self
    }

    /// Sets [`NvencOptions::preset`].
    #[must_use]
    pub fn with_preset(mut self, preset: Option<NvencPreset>) -> Self {
        self.preset = preset;
        self
    }

    /// Sets [`NvencOptions::tuning`].
    #[must_use]
    pub fn with_tuning(mut self, tuning: Option<NvencTuning>) -> Self {
        self.tuning = tuning;
        self
    }

    /// Sets [`NvencOptions::extra_output_delay`].
    #[must_use]
    pub fn with_extra_output_delay(mut self, frames: u32) -> Self {
        self.extra_output_delay = frames;
        self
    }

    /// The default [`NvencOptions::call_timeout`]: a real encode takes milliseconds, and a
    /// healthy driver that is merely busy (another process's sessions, a reconfigure) comes
    /// back well within this.
    pub const DEFAULT_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

    /// The default [`NvencOptions::open_timeout`].
    pub const DEFAULT_OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

    /// Env var: [`NvencOptions::call_timeout`]'s default, in milliseconds.
    pub const CALL_TIMEOUT_ENV: &'static str = "NVENCODE_CALL_TIMEOUT_MS";

    /// Env var: [`NvencOptions::open_timeout`]'s default, in milliseconds.
    pub const OPEN_TIMEOUT_ENV: &'static str = "NVENCODE_OPEN_TIMEOUT_MS";

    /// Sets [`NvencOptions::open_timeout`].
    #[must_use]
    pub fn with_open_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.open_timeout = timeout;
        self
    }

    /// The deadline is never shorter than this many frame intervals: a stream at a low frame
    /// rate may legitimately wait that long for a picture held for reordering.
    pub const MIN_DEADLINE_FRAMES: u32 = 8;

    /// The shortest deadline at any frame rate.
    pub const MIN_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

    /// Sets [`NvencOptions::call_timeout`].
    #[must_use]
    pub fn with_call_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The deadline that applies at `frame_rate`: [`NvencOptions::call_timeout`], raised to
    /// [`NvencOptions::MIN_DEADLINE_FRAMES`] frame intervals and [`NvencOptions::MIN_CALL_TIMEOUT`].
    #[must_use]
    pub fn call_deadline(&self, frame_rate: crate::encoder::FrameRate) -> std::time::Duration {
        let frames = std::time::Duration::from_secs(u64::from(frame_rate.den))
            .saturating_mul(Self::MIN_DEADLINE_FRAMES)
            .checked_div(frame_rate.num.max(1))
            .unwrap_or(Self::DEFAULT_CALL_TIMEOUT);
        self.call_timeout.max(frames).max(Self::MIN_CALL_TIMEOUT)
    }
}

/// `name` as a whole number of milliseconds, if set to one; anything else is ignored with a
/// warning (an operator's typo must not stop an encoder from opening).
fn env_millis(name: &str) -> Option<std::time::Duration> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse::<u64>() {
        Ok(ms) => Some(std::time::Duration::from_millis(ms)),
        Err(_) => {
            tracing::warn!("{name}={value:?} is not a whole number of milliseconds; ignored");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neutral_settings_map_as_documented() {
        assert_eq!(NvencPreset::from_preset(Preset::Ultrafast), NvencPreset::P1);
        assert_eq!(NvencPreset::from_preset(Preset::Medium), NvencPreset::P4);
        assert_eq!(NvencPreset::from_preset(Preset::Veryslow), NvencPreset::P7);
        assert_eq!(
            NvencTuning::from_tune(Some(Tune::Zerolatency)),
            NvencTuning::UltraLowLatency
        );
        assert_eq!(NvencTuning::from_tune(None), NvencTuning::HighQuality);
        assert_eq!("P5".parse(), Ok(NvencPreset::P5));
        assert_eq!(NvencPreset::P7.to_string(), "p7");
        assert!(matches!(
            "p8".parse::<NvencPreset>(),
            Err(ConfigError::UnknownPreset { .. })
        ));
        assert_eq!("ull".parse(), Ok(NvencTuning::UltraLowLatency));
    }

    #[test]
    fn call_deadline_is_never_below_several_frame_intervals() {
        use std::time::Duration;
        let fps = |num, den| crate::encoder::FrameRate::new(num, den);
        let options = NvencOptions::default();
        assert_eq!(options.call_deadline(fps(30, 1)), Duration::from_secs(5));
        let short = options
            .clone()
            .with_call_timeout(Duration::from_millis(300));
        assert_eq!(short.call_deadline(fps(60, 1)), Duration::from_millis(300));
        // At 1 fps, 8 frame intervals are 8 s.
        assert_eq!(short.call_deadline(fps(1, 1)), Duration::from_secs(8));
        assert_eq!(
            short.call_deadline(fps(30000, 1001)),
            Duration::from_millis(300)
        );
        let zero = options.with_call_timeout(Duration::ZERO);
        assert_eq!(
            zero.call_deadline(fps(1000, 1)),
            NvencOptions::MIN_CALL_TIMEOUT
        );
    }
}
