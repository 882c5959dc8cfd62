//! [`GpuEncoderConfig`]: the pipeline-level settings (which encoder to prefer, the
//! ring buffer, NVENC's preset and tune), as a pipeline keeps them in its configuration file.
//!
//! NVENC's preset and tune are overrides: unset (the default), NVENC follows the
//! [`EncoderConfig`]'s `preset` and `tune` as every other backend does (`ultrafast` +
//! `zerolatency` is P1 with ultra-low-latency tuning); set, they replace those for NVENC only.
//!
//! ```
//! let text = r#"
//!     preferred_encoder = "nvenc"
//!     enable_ring_buffer = true
//!     ring_buffer_size = 16
//!     nvenc_preset = "p4"
//!     nvenc_tune = "ll"
//! "#;
//! let config: nvencode::GpuEncoderConfig = toml::from_str(text)?;
//! config.validate()?;
//! assert_eq!(config.nvenc_preset, Some(nvencode::nvenc::NvencPreset::P4));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::encoder::{Bitrate, Codec, EncoderConfig, EncoderKind, RateControl, RateControlMode};
use crate::error::ConfigError;
use crate::error::Error;
use crate::fallback::FallbackEncoder;
use crate::nvenc::{GpuChoice, NvencOptions, NvencPreset, NvencTuning};
use crate::ring_buffer::{Consumer, FrameRing, HostStorage, Producer, RingError, MAX_SLOTS};

/// Both ends of a host-memory frame ring.
pub type HostRing = (Producer<HostStorage>, Consumer<HostStorage>);

/// Pipeline-level encoder settings. Every field has a default, so a configuration file names
/// only what it changes; unknown fields are an error (a misspelt option must not be ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct GpuEncoderConfig {
    /// The codec, `h264` or `hevc` (`h265` is another name for it), in place of the
    /// `EncoderConfig`'s; unset (or `"auto"`): the `EncoderConfig`'s own.
    #[serde(with = "by_name_opt", skip_serializing_if = "Option::is_none")]
    pub codec: Option<Codec>,
    /// The backend to try first; `None` follows the priority order. It must encode the codec
    /// ([`ConfigError::CodecUnsupported`] otherwise).
    #[serde(with = "by_name_opt")]
    pub preferred_encoder: Option<EncoderKind>,
    /// Whether frames pass through the frame ring between the pipeline and the encoder.
    pub enable_ring_buffer: bool,
    /// Frames the ring holds (1 to 65,536).
    pub ring_buffer_size: usize,
    /// NVENC preset, `p1` (fastest) to `p7` (best), in place of the one the `EncoderConfig`'s
    /// `preset` maps to; unset (or `"auto"`): that one.
    #[serde(with = "by_name_opt", skip_serializing_if = "Option::is_none")]
    pub nvenc_preset: Option<NvencPreset>,
    /// NVENC tuning, `hq`, `ll`, `ull` (or `lossless`), in place of the one the `EncoderConfig`'s
    /// `tune` maps to; unset (or `"auto"`): that one.
    #[serde(with = "by_name_opt", skip_serializing_if = "Option::is_none")]
    pub nvenc_tune: Option<NvencTuning>,
    /// Rate control: `cq`, `cbr`, `vbr` or `cqp`. Unset: implied by `bitrate`, `max_bitrate` and
    /// `qp` as [`RateControl::from_parts`] says; with none of them, the `EncoderConfig` given to
    /// [`GpuEncoderConfig::open`] keeps its own.
    #[serde(with = "by_name_opt", skip_serializing_if = "Option::is_none")]
    pub rate_control: Option<RateControlMode>,
    /// Target bit rate for CBR and VBR: `"2M"`, `"2500k"` or bits per second.
    #[serde(with = "by_name_opt", skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<Bitrate>,
    /// Maximum bit rate for VBR.
    #[serde(with = "by_name_opt", skip_serializing_if = "Option::is_none")]
    pub max_bitrate: Option<Bitrate>,
    /// VBV buffer in bits (`"1M"` is 1,000,000 bits); unset: one second at the peak rate.
    #[serde(with = "by_name_opt", skip_serializing_if = "Option::is_none")]
    pub vbv_buffer: Option<Bitrate>,
    /// Constant QP, 0-51.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qp: Option<u32>,
    /// The GPU NVENC encodes on, and a pipeline's ring is allocated on: `"auto"` (the default;
    /// see [`GpuChoice::Auto`]), a CUDA ordinal (`gpu = 1`) or a UUID (`gpu = "GPU-…"`).
    /// `cuda_device` is accepted as another name for it. A pipeline's
    /// [`PipelineOptions::cuda_device`](crate::pipeline::PipelineOptions::cuda_device), when set,
    /// must agree; [`GpuEncoderConfig::gpu_with`] decides.
    #[serde(
        alias = "cuda_device",
        with = "gpu_choice",
        skip_serializing_if = "is_auto"
    )]
    pub gpu: GpuChoice,
}

fn is_auto(choice: &GpuChoice) -> bool {
    *choice == GpuChoice::Auto
}

/// (De)serializes a [`GpuChoice`]: an integer is an ordinal, a string `auto` or a UUID (or an
/// ordinal), with the crate's own error naming the bad value.
mod gpu_choice {
    use super::GpuChoice;
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Ordinal(usize),
        Text(String),
    }

    pub(super) fn serialize<S: Serializer>(v: &GpuChoice, s: S) -> Result<S::Ok, S::Error> {
        match v {
            GpuChoice::Index(i) => s.serialize_u64(*i as u64),
            other => s.serialize_str(&other.to_string()),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<GpuChoice, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Ordinal(i) => Ok(GpuChoice::Index(i)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Default for GpuEncoderConfig {
    fn default() -> Self {
        GpuEncoderConfig {
            codec: None,
            preferred_encoder: None,
            enable_ring_buffer: true,
            ring_buffer_size: 8,
            nvenc_preset: None,
            nvenc_tune: None,
            rate_control: None,
            bitrate: None,
            max_bitrate: None,
            vbv_buffer: None,
            qp: None,
            gpu: GpuChoice::Auto,
        }
    }
}

impl GpuEncoderConfig {
    /// Checks the values the types do not already constrain.
    ///
    /// # Errors
    /// [`ConfigError::RingSizeOutOfRange`] for a ring of 0 or more than 65,536 frames; the
    /// errors of [`GpuEncoderConfig::rate`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ring_buffer_size == 0 || self.ring_buffer_size > MAX_SLOTS {
            return Err(ConfigError::RingSizeOutOfRange {
                frames: self.ring_buffer_size,
                max: MAX_SLOTS,
            });
        }
        self.rate()?;
        Ok(())
    }

    /// The rate control these settings ask for, or `None` when they name none.
    ///
    /// # Errors
    /// As [`RateControl::from_parts`]: a missing or unused value, or one out of range.
    pub fn rate(&self) -> Result<Option<RateControl>, ConfigError> {
        if self.rate_control.is_none()
            && self.bitrate.is_none()
            && self.max_bitrate.is_none()
            && self.vbv_buffer.is_none()
            && self.qp.is_none()
        {
            return Ok(None);
        }
        RateControl::from_parts(
            self.rate_control,
            self.bitrate,
            self.max_bitrate,
            self.vbv_buffer.map(Bitrate::bps),
            self.qp,
        )
        .map(Some)
    }

    /// Opens the fallback chain these settings describe: `preferred_encoder` first, then every
    /// available encoder in priority order (or the list `NVENC_RS_BACKEND` forces: see
    /// [`crate::backends`]), NVENC with `nvenc_preset` and `nvenc_tune` where set, and the
    /// rate control of these settings (if they name one) in place of `config`'s. A running
    /// stream's rates change with [`crate::VideoEncoder::reconfigure`] on the encoder returned.
    ///
    /// # Errors
    /// [`ConfigError`]s of these settings or of `config` (as [`Error::Config`]); otherwise as
    /// [`FallbackEncoder::new`].
    pub fn open(&self, config: &EncoderConfig) -> Result<FallbackEncoder, Error> {
        self.open_on(config, self.gpu_with(None)?)
    }

    /// As [`open`](Self::open), with NVENC on the GPU `gpu` (which
    /// [`gpu_with`](Self::gpu_with) chose).
    pub(crate) fn open_on(
        &self,
        config: &EncoderConfig,
        gpu: GpuChoice,
    ) -> Result<FallbackEncoder, Error> {
        self.validate()?;
        let mut config = config.clone();
        if let Some(rate) = self.rate()? {
            config.rate_control = rate;
        }
        if let Some(codec) = self.codec {
            config.codec = codec;
        }
        // Up front, before detection probes any backend: a bad value fails at once, as itself.
        config.validate()?;
        if let Some(preferred) = self.preferred_encoder {
            crate::encoder::codecs::check(preferred, config.codec)?;
        }
        let nvenc = self.nvenc_options().with_gpu(gpu);
        let chain = crate::fallback::chain_with(self.preferred_encoder, &nvenc)?;
        FallbackEncoder::with_chain(&config, chain)
    }

    /// The GPU NVENC encodes on and a pipeline's ring is allocated on, given the device the
    /// pipeline's options name (`ring`, `None` when they name none): the one place that decides,
    /// so the two are always the same device. [`GpuEncoderConfig::gpu`] when it names a device,
    /// else `ring` when set, else [`GpuChoice::Auto`] (a pipeline's ring then follows NVENC to
    /// the GPU it was placed on). A UUID is resolved when NVENC opens; the pipeline checks the
    /// ring's device against it then.
    ///
    /// # Errors
    /// [`ConfigError::CudaDeviceMismatch`] when both name different ordinals.
    pub fn gpu_with(&self, ring: Option<usize>) -> Result<GpuChoice, ConfigError> {
        match (&self.gpu, ring) {
            (GpuChoice::Index(nvenc), Some(ring)) if *nvenc != ring => {
                Err(ConfigError::CudaDeviceMismatch {
                    ring,
                    nvenc: *nvenc,
                })
            }
            (GpuChoice::Auto, Some(ring)) => Ok(GpuChoice::Index(ring)),
            (choice, _) => Ok(choice.clone()),
        }
    }

    /// The frame ring a pipeline puts between its producer and the encoder: `ring_buffer_size`
    /// slots of `frame_len` bytes in host memory, or `None` with `enable_ring_buffer` off.
    ///
    /// # Errors
    /// [`RingError`] for a zero `frame_len` or an allocation that fails.
    pub fn frame_ring(&self, frame_len: usize) -> Result<Option<HostRing>, RingError> {
        if !self.enable_ring_buffer {
            return Ok(None);
        }
        FrameRing::new(self.ring_buffer_size, frame_len).map(Some)
    }

    /// The NVENC options these settings choose: the overrides that are set and the GPU
    /// ([`GpuEncoderConfig::gpu`]), nothing else.
    #[must_use]
    pub fn nvenc_options(&self) -> NvencOptions {
        NvencOptions::default()
            .with_preset(self.nvenc_preset)
            .with_tuning(self.nvenc_tune)
            .with_gpu(self.gpu.clone())
    }
}

/// (De)serializes an optional type through its `Display`/`FromStr` names (`"auto"` or absent:
/// `None`), so a bad value's error is the crate's own, naming the value and the valid ones.
mod by_name_opt {
    use super::*;

    pub(super) fn serialize<T: fmt::Display, S: Serializer>(
        v: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr<Err = ConfigError>,
        D: Deserializer<'de>,
    {
        /// A value as written: text, or a bare number (`bitrate = 2000000` in TOML).
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Number(u64),
        }
        let text = match Option::<Written>::deserialize(d)? {
            Some(Written::Text(text)) => text,
            Some(Written::Number(n)) => n.to_string(),
            None => return Ok(None),
        };
        if text.eq_ignore_ascii_case("auto") {
            return Ok(None);
        }
        text.parse().map(Some).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_toml_with_defaults_and_round_trips() {
        // A bit rate as a bare number of bits per second, as well as text.
        let config: GpuEncoderConfig = toml::from_str("bitrate = 2000000").unwrap();
        assert_eq!(config.bitrate, Some(Bitrate::from_bps(2_000_000)));
        let config: GpuEncoderConfig = toml::from_str("bitrate = \"2M\"").unwrap();
        assert_eq!(config.bitrate, Some(Bitrate::from_bps(2_000_000)));
        let config: GpuEncoderConfig = toml::from_str("nvenc_tune = \"ull\"").unwrap();
        assert_eq!(config.nvenc_tune, Some(NvencTuning::UltraLowLatency));
        assert_eq!(config.ring_buffer_size, 8);
        assert_eq!(config.preferred_encoder, None);
        let full = GpuEncoderConfig {
            preferred_encoder: Some(EncoderKind::X264),
            rate_control: Some(RateControlMode::Vbr),
            bitrate: Some(Bitrate::from_bps(2_500_000)),
            max_bitrate: Some(Bitrate::from_bps(4_000_000)),
            ..GpuEncoderConfig::default()
        };
        let text = toml::to_string(&full).unwrap();
        assert_eq!(toml::from_str::<GpuEncoderConfig>(&text).unwrap(), full);
    }

    #[cfg(feature = "x264")]
    #[test]
    fn settings_open_the_chain_and_size_the_ring() {
        let gpu = GpuEncoderConfig {
            preferred_encoder: Some(EncoderKind::X264),
            ring_buffer_size: 4,
            ..GpuEncoderConfig::default()
        };
        let encoder = gpu.open(&EncoderConfig::new(64, 64)).unwrap();
        assert_eq!(encoder.current_kind(), EncoderKind::X264);
        assert_eq!(
            encoder.config().rate_control,
            crate::RateControl::ConstantQuality
        );
        let cbr = GpuEncoderConfig {
            bitrate: Some(Bitrate::from_bps(500_000)),
            ..gpu.clone()
        };
        let mut encoder = cbr.open(&EncoderConfig::new(64, 64)).unwrap();
        assert_eq!(
            encoder.config().rate_control,
            RateControl::cbr(Bitrate::from_bps(500_000))
        );
        use crate::VideoEncoder as _;
        encoder
            .reconfigure(RateControl::cbr(Bitrate::from_bps(250_000)))
            .unwrap();
        let (producer, _consumer) = gpu.frame_ring(6144).unwrap().unwrap();
        assert_eq!((producer.capacity(), producer.slot_len()), (4, 6144));
        let off = GpuEncoderConfig {
            enable_ring_buffer: false,
            ..gpu
        };
        assert!(off.frame_ring(6144).unwrap().is_none());
    }

    /// B-frames with zerolatency reach `open` as the configuration error itself, before any
    /// backend is tried. Checked against `EncoderConfig::validate` without the check, where
    /// `open` succeeded and the B-frames were dropped in silence.
    #[test]
    fn open_refuses_bframes_with_zerolatency_as_a_config_error() {
        let config = EncoderConfig::new(64, 64)
            .with_tune(Some(crate::Tune::Zerolatency))
            .with_bframes(Some(2));
        match GpuEncoderConfig::default().open(&config) {
            Err(Error::Config(ConfigError::BframesWithZeroLatency { bframes: 2 })) => {}
            other => panic!("expected BframesWithZeroLatency, got {other:?}"),
        }
    }

    /// One place decides the CUDA device of NVENC and of a pipeline's ring: whichever of the
    /// settings and the pipeline's options names one, 0 when neither does, and a typed error
    /// naming both when they differ.
    #[test]
    fn one_cuda_device_for_nvenc_and_the_ring() {
        let unset = GpuEncoderConfig::default();
        assert_eq!(unset.gpu_with(None), Ok(GpuChoice::Auto));
        assert_eq!(unset.gpu_with(Some(1)), Ok(GpuChoice::Index(1)));
        assert_eq!(unset.nvenc_options().gpu, GpuChoice::Auto);
        let one: GpuEncoderConfig = toml::from_str("cuda_device = 1").unwrap();
        assert_eq!(one.gpu, GpuChoice::Index(1));
        let named: GpuEncoderConfig = toml::from_str("gpu = 1").unwrap();
        assert_eq!(named.gpu, GpuChoice::Index(1));
        let uuid = "GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9";
        let by_uuid: GpuEncoderConfig = toml::from_str(&format!("gpu = \"{uuid}\"")).unwrap();
        assert_eq!(by_uuid.gpu, GpuChoice::Uuid(uuid.into()));
        // Written back as it was read.
        let again: GpuEncoderConfig = toml::from_str(&toml::to_string(&by_uuid).unwrap()).unwrap();
        assert_eq!(again.gpu, by_uuid.gpu);
        let bad = toml::from_str::<GpuEncoderConfig>("gpu = \"the big one\"").unwrap_err();
        assert!(bad.to_string().contains("the big one"), "{bad}");
        assert_eq!(one.nvenc_options().gpu, GpuChoice::Index(1));
        assert_eq!(one.gpu_with(None), Ok(GpuChoice::Index(1)));
        assert_eq!(one.gpu_with(Some(1)), Ok(GpuChoice::Index(1)));
        let err = one.gpu_with(Some(0)).unwrap_err();
        assert_eq!(err, ConfigError::CudaDeviceMismatch { ring: 0, nvenc: 1 });
        let text = err.to_string();
        assert!(
            text.contains("CUDA device 0") && text.contains("device 1") && text.contains("same"),
            "{text}"
        );
    }

    #[test]
    fn the_codec_is_read_by_name_and_reaches_the_encoder_or_is_refused_by_name() {
        let hevc: GpuEncoderConfig = toml::from_str("codec = \"h265\"").unwrap();
        assert_eq!(hevc.codec, Some(Codec::Hevc));
        let again: GpuEncoderConfig = toml::from_str(&toml::to_string(&hevc).unwrap()).unwrap();
        assert_eq!(again.codec, Some(Codec::Hevc));
        let auto: GpuEncoderConfig = toml::from_str("codec = \"auto\"").unwrap();
        assert_eq!(auto.codec, None);
        let err = toml::from_str::<GpuEncoderConfig>("codec = \"vp9\"").unwrap_err();
        assert!(
            err.to_string().contains("\"vp9\"") && err.to_string().contains("h264, hevc"),
            "{err}"
        );
        // A preferred encoder that cannot encode the codec is refused, naming both, before any
        // backend is probed.
        let x264: GpuEncoderConfig =
            toml::from_str("codec = \"hevc\"\npreferred_encoder = \"x264\"").unwrap();
        match x264.open(&EncoderConfig::new(64, 64)) {
            Err(Error::Config(ConfigError::CodecUnsupported { backend, codec, .. })) => {
                assert_eq!((backend, codec), (EncoderKind::X264, Codec::Hevc));
            }
            other => panic!("expected CodecUnsupported, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn bad_values_name_the_value_and_the_valid_ones() {
        let err = toml::from_str::<GpuEncoderConfig>("nvenc_preset = \"p9\"").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"p9\"") && text.contains("p1, p2"), "{text}");
        let err = toml::from_str::<GpuEncoderConfig>("nvenc_tune = \"fast\"").unwrap_err();
        assert!(err.to_string().contains("hq, ll, ull"), "{err}");
        let err = toml::from_str::<GpuEncoderConfig>("preferred_encoder = \"amf\"").unwrap_err();
        assert!(err.to_string().contains("unknown encoder \"amf\""), "{err}");
        let err = toml::from_str::<GpuEncoderConfig>("ring_size = 4").unwrap_err();
        assert!(err.to_string().contains("ring_size"), "{err}");
        let err = toml::from_str::<GpuEncoderConfig>("bitrate = \"fast\"").unwrap_err();
        assert!(
            err.to_string().contains("invalid bit rate \"fast\""),
            "{err}"
        );
        let vbr: GpuEncoderConfig =
            toml::from_str("rate_control = \"vbr\"\nbitrate = \"2M\"").unwrap();
        assert!(matches!(
            vbr.validate(),
            Err(ConfigError::RateControlMissingValue {
                value: "maxrate",
                ..
            })
        ));
        let zero: GpuEncoderConfig = toml::from_str("ring_buffer_size = 0").unwrap();
        assert!(matches!(
            zero.validate(),
            Err(ConfigError::RingSizeOutOfRange {
                frames: 0,
                max: 65536
            })
        ));
    }
}
