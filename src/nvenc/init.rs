//! The initialize parameters of an NVENC session: a pure function of the configuration, the
//! NVENC options and what the driver reports ([`Driver`]: caps, input formats, the preset's
//! config), so it is tested without a driver. Also the checks every session starts with (the
//! codec's encode GUID), shared with `probe.rs`.

use nvenc_sys as sys;

use super::api::{h264_config, hevc_config, InitParams, RawEncoder};
use super::options::{NvencOptions, NvencPreset, NvencTuning};
use super::NvencError;
use crate::encoder::codecs;
use crate::encoder::mapping::{self, NvencRc, NvencRcMode};
use crate::encoder::{Codec, EncoderConfig, PixelFormat};
use crate::error::{ConfigError, Error};
use crate::ring_buffer::{required_slots, EncoderDepth};

/// What a session reports that the initialize parameters depend on, per codec (every
/// `NV_ENC_CAPS_*`, input format list and preset config is asked for one codec GUID).
pub(crate) trait Driver {
    /// `nvEncGetEncodeCaps`.
    fn cap(&self, codec: Codec, cap: sys::NV_ENC_CAPS) -> Result<i32, NvencError>;
    /// `nvEncGetInputFormats`.
    fn input_formats(&self, codec: Codec) -> Result<Vec<sys::NV_ENC_BUFFER_FORMAT>, NvencError>;
    /// `nvEncGetEncodePresetConfigEx`: the driver's config for a codec, preset and tuning.
    fn preset_config(
        &self,
        codec: Codec,
        preset: sys::GUID,
        tuning: sys::NV_ENC_TUNING_INFO,
    ) -> Result<sys::NV_ENC_CONFIG, NvencError>;
}

impl Driver for RawEncoder {
    fn cap(&self, codec: Codec, cap: sys::NV_ENC_CAPS) -> Result<i32, NvencError> {
        RawEncoder::cap(self, codecs::nvenc_codec_guid(codec), cap)
    }
    fn input_formats(&self, codec: Codec) -> Result<Vec<sys::NV_ENC_BUFFER_FORMAT>, NvencError> {
        RawEncoder::input_formats(self, codecs::nvenc_codec_guid(codec))
    }
    fn preset_config(
        &self,
        codec: Codec,
        preset: sys::GUID,
        tuning: sys::NV_ENC_TUNING_INFO,
    ) -> Result<sys::NV_ENC_CONFIG, NvencError> {
        RawEncoder::preset_config(self, codecs::nvenc_codec_guid(codec), preset, tuning)
            .map(|c| c.presetCfg)
    }
}

pub(crate) fn guid_eq(a: &sys::GUID, b: &sys::GUID) -> bool {
    a.Data1 == b.Data1 && a.Data2 == b.Data2 && a.Data3 == b.Data3 && a.Data4 == b.Data4
}

/// The codecs the session offers (`nvEncGetEncodeGUIDs`, asked once), in
/// [`Codec::ALL`] order.
pub(crate) fn offered(raw: &RawEncoder) -> Result<Vec<Codec>, NvencError> {
    let listed = raw.encode_guids()?;
    Ok(Codec::ALL
        .iter()
        .copied()
        .filter(|&c| {
            let guid = codecs::nvenc_codec_guid(c);
            listed.iter().any(|g| guid_eq(g, &guid))
        })
        .collect())
}

/// `Ok` where the session offers `codec`, else [`Error::NvencCapability`] naming the codec's
/// GUID (a GPU whose NVENC has no HEVC, as Kepler and the first Maxwell had none).
///
/// # Errors
/// As above; [`Error::Nvenc`] when the query fails.
pub(crate) fn require_codec(raw: &RawEncoder, codec: Codec) -> Result<(), Error> {
    if offered(raw).map_err(Error::Nvenc)?.contains(&codec) {
        Ok(())
    } else {
        Err(Error::NvencCapability {
            cap: codecs::nvenc_codec_guid_name(codec),
            value: 0,
            required: 1,
        })
    }
}

/// What a session is initialized with, and the sizes that follow from it.
#[derive(Debug)]
pub(crate) struct Plan {
    pub init: InitParams,
    pub preset: NvencPreset,
    pub tuning: NvencTuning,
    pub format: sys::NV_ENC_BUFFER_FORMAT,
    pub frame_interval_p: u32,
    /// Outputs are read back this many frames behind the newest submission.
    pub extra_output_delay: usize,
    /// Input surfaces (and staging buffers) the session needs: every picture held for
    /// reordering, plus the output delay, plus the one being submitted.
    pub surfaces: usize,
}

/// Writes the rate-control fields of an NVENC config (the mapping itself is `mapping::nvenc`).
pub(crate) fn apply_rate_control(enc: &mut sys::NV_ENC_CONFIG, rc: &NvencRc) {
    let rcp = &mut enc.rcParams;
    rcp.rateControlMode = match rc.mode {
        NvencRcMode::ConstQp => sys::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_CONSTQP,
        NvencRcMode::Vbr => sys::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_VBR,
        NvencRcMode::Cbr => sys::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_CBR,
    };
    rcp.averageBitRate = rc.average_bps;
    rcp.maxBitRate = rc.max_bps;
    rcp.vbvBufferSize = rc.vbv_buffer_bits;
    rcp.vbvInitialDelay = rc.vbv_initial_delay_bits;
    rcp.targetQuality = rc.target_quality;
    rcp.targetQualityLSB = 0;
    // In the other modes constQP is the rate control's initial QP (API.h): the preset's stays.
    if rc.mode == NvencRcMode::ConstQp {
        let qp = u32::from(rc.const_qp);
        rcp.constQP = sys::NV_ENC_QP {
            qpInterP: qp,
            qpInterB: qp,
            qpIntra: qp,
        };
    }
}

/// The initialize parameters for `config` with `options` on a GPU that reports what `driver`
/// says.
///
/// # Errors
/// [`Error::NvencCapability`] when the GPU lacks something the configuration needs (input format,
/// size, B-frames, lossless); [`Error::Nvenc`] when a query fails.
pub(crate) fn plan(
    config: &EncoderConfig,
    options: &NvencOptions,
    driver: &impl Driver,
) -> Result<Plan, Error> {
    // Checked before the `+ 1` below, which a delay near u32::MAX would overflow.
    if options.extra_output_delay > NvencOptions::MAX_OUTPUT_DELAY {
        return Err(ConfigError::OutputDelayOutOfRange {
            frames: options.extra_output_delay,
            max: NvencOptions::MAX_OUTPUT_DELAY,
        }
        .into());
    }
    let preset = options
        .preset
        .unwrap_or_else(|| NvencPreset::from_preset(config.preset));
    let tuning = options
        .tuning
        .unwrap_or_else(|| NvencTuning::from_tune(config.tune));
    let zero_latency = crate::encoder::mapping::zero_latency(config);
    let (width, height) = (config.resolution.width, config.resolution.height);
    let format = match config.pixel_format {
        PixelFormat::Nv12 => sys::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_NV12,
        _ => sys::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_IYUV,
    };
    let codec = config.codec;
    let formats = driver.input_formats(codec).map_err(Error::Nvenc)?;
    if !formats.contains(&format) {
        return Err(Error::NvencCapability {
            cap: "input format (nvEncGetInputFormats)",
            value: 0,
            required: 1,
        });
    }
    let cap = |c, name| {
        driver
            .cap(codec, c)
            .map(|v| (name, v))
            .map_err(Error::Nvenc)
    };
    // (cap, its name, the size it bounds, whether it is a maximum)
    let limits = [
        (
            sys::NV_ENC_CAPS::NV_ENC_CAPS_WIDTH_MAX,
            "NV_ENC_CAPS_WIDTH_MAX",
            width,
            true,
        ),
        (
            sys::NV_ENC_CAPS::NV_ENC_CAPS_HEIGHT_MAX,
            "NV_ENC_CAPS_HEIGHT_MAX",
            height,
            true,
        ),
        (
            sys::NV_ENC_CAPS::NV_ENC_CAPS_WIDTH_MIN,
            "NV_ENC_CAPS_WIDTH_MIN",
            width,
            false,
        ),
        (
            sys::NV_ENC_CAPS::NV_ENC_CAPS_HEIGHT_MIN,
            "NV_ENC_CAPS_HEIGHT_MIN",
            height,
            false,
        ),
    ];
    for (c, name, size, is_max) in limits {
        let (name, value) = cap(c, name)?;
        if is_max {
            require_at_least(name, value, size)?;
        } else {
            require_at_most(name, value, size)?;
        }
    }
    if tuning == NvencTuning::Lossless {
        let (name, lossless) = cap(
            sys::NV_ENC_CAPS::NV_ENC_CAPS_SUPPORT_LOSSLESS_ENCODE,
            "NV_ENC_CAPS_SUPPORT_LOSSLESS_ENCODE",
        )?;
        require_at_least(name, lossless, 1)?;
    }

    let mut enc = driver
        .preset_config(codec, preset.guid(), tuning.raw())
        .map_err(Error::Nvenc)?;
    enc.gopLength = config.gop_size;
    let asked = crate::encoder::mapping::bframes(config);
    if let Some(b) = asked {
        enc.frameIntervalP = b as i32 + 1;
    }
    if enc.frameIntervalP > 1 {
        // The codec's own cap: HEVC B-frames came with Turing, H.264 ones long before.
        let (name, max_b) = cap(
            sys::NV_ENC_CAPS::NV_ENC_CAPS_NUM_MAX_BFRAMES,
            "NV_ENC_CAPS_NUM_MAX_BFRAMES",
        )?;
        let wanted = enc.frameIntervalP - 1;
        if asked.is_none() && wanted > max_b {
            // B-frames the preset chose, not the configuration: as many as the GPU has.
            tracing::warn!(
                codec = %codec, preset_bframes = wanted, max_bframes = max_b,
                "the preset's B-frames exceed NV_ENC_CAPS_NUM_MAX_BFRAMES; using the GPU's maximum"
            );
            enc.frameIntervalP = max_b.max(0) + 1;
        }
        require_at_least(name, max_b, (enc.frameIntervalP - 1).max(0) as u32)?;
    }
    let frame_interval_p = enc.frameIntervalP.max(1) as u32;
    apply_rate_control(&mut enc, &mapping::nvenc(config));
    // No lookahead: it would need more surfaces in flight and is what other wrappers found
    // to lose frames and deadlock at end of stream when the ring was sized without it.
    enc.rcParams.set_enableLookahead(0);
    enc.rcParams.lookaheadDepth = 0;
    let lossless = tuning == NvencTuning::Lossless;
    if lossless {
        // Constant QP 0 (nvEncodeAPI.h 11.1, qpPrimeYZeroTransformBypassFlag, for H.264; HEVC's
        // lossless tuning is the same rate control): a quality target would make the stream
        // lossy again.
        enc.rcParams.rateControlMode = sys::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_CONSTQP;
        enc.rcParams.targetQuality = 0;
        enc.rcParams.constQP = sys::NV_ENC_QP {
            qpInterP: 0,
            qpInterB: 0,
            qpIntra: 0,
        };
    }
    match codec {
        Codec::H264 => {
            let h264 = h264_config(&mut enc);
            h264.idrPeriod = config.gop_size;
            h264.set_repeatSPSPPS(1);
            if lossless {
                // The rest of the header's recipe: transform bypass, High 4:4:4 Predictive.
                h264.set_qpPrimeYZeroTransformBypassFlag(1);
                if let Some(profile) = codecs::nvenc_profile_guid(codec, true) {
                    enc.profileGUID = profile;
                }
            }
        }
        Codec::Hevc => {
            if let Some(profile) = codecs::nvenc_profile_guid(codec, false) {
                enc.profileGUID = profile;
            }
            let hevc = hevc_config(&mut enc);
            hevc.idrPeriod = config.gop_size;
            // VPS, SPS and PPS on every IDR (nvEncodeAPI.h 11.1, NV_ENC_CONFIG_HEVC), as for
            // H.264: a late joiner decodes from the next IDR.
            hevc.set_repeatSPSPPS(1);
            hevc.set_disableSPSPPS(0);
            // 8-bit 4:2:0 input, Main profile (lines 1533-1534 of the 11.1 header).
            hevc.set_chromaFormatIDC(1);
            hevc.set_pixelBitDepthMinus8(0);
        }
    }

    let params = sys::NV_ENC_INITIALIZE_PARAMS {
        version: sys::NV_ENC_INITIALIZE_PARAMS_VER,
        encodeGUID: codecs::nvenc_codec_guid(codec),
        presetGUID: preset.guid(),
        encodeWidth: width,
        encodeHeight: height,
        darWidth: width,
        darHeight: height,
        frameRateNum: config.frame_rate.num,
        frameRateDen: config.frame_rate.den,
        enableEncodeAsync: 0,
        enablePTD: 1,
        // Pointed at `config` by each call that takes these (`RawEncoder::initialize`).
        encodeConfig: std::ptr::null_mut(),
        maxEncodeWidth: width,
        maxEncodeHeight: height,
        tuningInfo: tuning.raw(),
        ..Default::default()
    };
    // Zero latency means every frame's output is read back in the call that submitted it.
    let extra_output_delay = if zero_latency {
        0
    } else {
        options.extra_output_delay
    };
    let surfaces = required_slots(EncoderDepth {
        frame_interval_p,
        lookahead: 0,
        extra_output_delay: extra_output_delay + 1,
    });
    log_initialize(codec, &params, &enc, preset, tuning);
    Ok(Plan {
        init: InitParams {
            params,
            config: Box::new(enc),
        },
        preset,
        tuning,
        format,
        frame_interval_p,
        extra_output_delay: extra_output_delay as usize,
        surfaces,
    })
}

/// What the driver is given, in one line at `debug` (`RUST_LOG=nvencode=debug`), read from the
/// structs themselves so it cannot drift from them.
fn log_initialize(
    codec: Codec,
    params: &sys::NV_ENC_INITIALIZE_PARAMS,
    enc: &sys::NV_ENC_CONFIG,
    preset: NvencPreset,
    tuning: NvencTuning,
) {
    let rc = &enc.rcParams;
    let mode = rc.rateControlMode;
    let mode = if mode == sys::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_CBR {
        "CBR"
    } else if mode == sys::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_VBR {
        "VBR"
    } else if mode == sys::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_CONSTQP {
        "CONSTQP"
    } else {
        "other"
    };
    let tuning = match tuning {
        NvencTuning::HighQuality => "high-quality",
        NvencTuning::LowLatency => "low-latency",
        NvencTuning::UltraLowLatency => "ultra-low-latency",
        NvencTuning::Lossless => "lossless",
    };
    tracing::debug!(
        "NVENC initialize: codec {}, preset {}, tuning {tuning}, rate control {mode} \
         (average {} bit/s, max {} bit/s, VBV {} bit, initial delay {} bit, target quality {}, \
         QP {}), GOP {}, B-frames {}, {}x{} at {}/{} fps",
        codec.display_name(),
        preset.to_string().to_uppercase(),
        rc.averageBitRate,
        rc.maxBitRate,
        rc.vbvBufferSize,
        rc.vbvInitialDelay,
        rc.targetQuality,
        rc.constQP.qpIntra,
        enc.gopLength,
        enc.frameIntervalP.max(1) - 1,
        params.encodeWidth,
        params.encodeHeight,
        params.frameRateNum,
        params.frameRateDen,
    );
}

fn require_at_least(cap: &'static str, value: i32, required: u32) -> Result<(), Error> {
    if i64::from(value) >= i64::from(required) {
        Ok(())
    } else {
        Err(Error::NvencCapability {
            cap,
            value,
            required: i64::from(required),
        })
    }
}

fn require_at_most(cap: &'static str, value: i32, required: u32) -> Result<(), Error> {
    if i64::from(value) <= i64::from(required) {
        Ok(())
    } else {
        Err(Error::NvencCapability {
            cap,
            value,
            required: i64::from(required),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GPU that reports fixed caps and returns a zeroed preset config.
    struct Fake {
        max_width: i32,
        max_bframes: i32,
        lossless: i32,
        hevc: bool,
        formats: Vec<sys::NV_ENC_BUFFER_FORMAT>,
    }

    impl Default for Fake {
        fn default() -> Self {
            Fake {
                max_width: 4096,
                max_bframes: 4,
                lossless: 1,
                hevc: true,
                formats: vec![
                    sys::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_NV12,
                    sys::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_IYUV,
                ],
            }
        }
    }

    impl Driver for Fake {
        fn cap(&self, codec: Codec, cap: sys::NV_ENC_CAPS) -> Result<i32, NvencError> {
            if codec == Codec::Hevc && !self.hevc {
                return Err(NvencError::new(
                    "nvEncGetEncodeCaps",
                    sys::NVENCSTATUS::NV_ENC_ERR_INVALID_PARAM,
                    String::new(),
                ));
            }
            Ok(match cap {
                sys::NV_ENC_CAPS::NV_ENC_CAPS_WIDTH_MAX => self.max_width,
                sys::NV_ENC_CAPS::NV_ENC_CAPS_HEIGHT_MAX => 4096,
                sys::NV_ENC_CAPS::NV_ENC_CAPS_WIDTH_MIN
                | sys::NV_ENC_CAPS::NV_ENC_CAPS_HEIGHT_MIN => 33,
                sys::NV_ENC_CAPS::NV_ENC_CAPS_NUM_MAX_BFRAMES => self.max_bframes,
                sys::NV_ENC_CAPS::NV_ENC_CAPS_SUPPORT_LOSSLESS_ENCODE => self.lossless,
                _ => 0,
            })
        }
        fn input_formats(&self, _: Codec) -> Result<Vec<sys::NV_ENC_BUFFER_FORMAT>, NvencError> {
            Ok(self.formats.clone())
        }
        fn preset_config(
            &self,
            _: Codec,
            _: sys::GUID,
            _: sys::NV_ENC_TUNING_INFO,
        ) -> Result<sys::NV_ENC_CONFIG, NvencError> {
            Ok(sys::NV_ENC_CONFIG {
                version: sys::NV_ENC_CONFIG_VER,
                frameIntervalP: 1,
                ..Default::default()
            })
        }
    }

    #[test]
    fn the_plan_follows_the_configuration() {
        let config = EncoderConfig::new(1280, 720)
            .with_bframes(Some(2))
            .with_gop_size(120);
        let mut plan = plan(&config, &NvencOptions::default(), &Fake::default()).unwrap();
        assert_eq!(plan.init.params.encodeWidth, 1280);
        assert_eq!(plan.init.params.encodeHeight, 720);
        assert!(plan.init.params.encodeConfig.is_null());
        assert_eq!(plan.frame_interval_p, 3);
        assert_eq!(plan.init.config.frameIntervalP, 3);
        assert_eq!(plan.init.config.gopLength, 120);
        assert_eq!(h264_config(&mut plan.init.config).idrPeriod, 120);
        assert_eq!(plan.init.config.rcParams.lookaheadDepth, 0);
        assert_eq!(
            plan.format,
            sys::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_IYUV
        );
        // Frame interval 3 + extra output delay 3 + the picture being submitted.
        assert_eq!(plan.surfaces, 7);
        assert_eq!(plan.extra_output_delay, 3);
    }

    /// An output delay past the documented maximum is a typed error naming both, not an
    /// overflow (`u32::MAX + 1` panicked in debug builds before the check).
    #[test]
    fn an_output_delay_out_of_range_is_refused_by_name() {
        let config = EncoderConfig::new(320, 240);
        for frames in [NvencOptions::MAX_OUTPUT_DELAY + 1, u32::MAX] {
            let options = NvencOptions::default().with_extra_output_delay(frames);
            match plan(&config, &options, &Fake::default()) {
                Err(Error::Config(ConfigError::OutputDelayOutOfRange { frames: f, max })) => {
                    assert_eq!((f, max), (frames, NvencOptions::MAX_OUTPUT_DELAY));
                }
                other => panic!("{frames}: {:?}", other.err()),
            }
        }
        let at_max =
            NvencOptions::default().with_extra_output_delay(NvencOptions::MAX_OUTPUT_DELAY);
        assert!(plan(&config, &at_max, &Fake::default()).is_ok());
    }

    #[test]
    fn zero_latency_means_no_b_frames_and_no_output_delay() {
        let config = EncoderConfig::new(640, 480)
            .with_bframes(Some(3))
            .with_tune(Some(crate::encoder::Tune::Zerolatency));
        let plan = plan(&config, &NvencOptions::default(), &Fake::default()).unwrap();
        assert_eq!(plan.frame_interval_p, 1);
        assert_eq!(plan.extra_output_delay, 0);
        assert_eq!(plan.surfaces, 2);
    }

    #[test]
    fn what_the_gpu_lacks_is_a_capability_error_naming_it() {
        let config = EncoderConfig::new(1920, 1080).with_bframes(Some(3));
        let narrow = Fake {
            max_width: 1280,
            ..Fake::default()
        };
        match plan(&config, &NvencOptions::default(), &narrow) {
            Err(Error::NvencCapability {
                cap,
                value,
                required,
            }) => {
                assert_eq!(cap, "NV_ENC_CAPS_WIDTH_MAX");
                assert_eq!((value, required), (1280, 1920));
            }
            other => panic!("expected a capability error, got {other:?}"),
        }
        let few_b = Fake {
            max_bframes: 2,
            ..Fake::default()
        };
        match plan(&config, &NvencOptions::default(), &few_b) {
            Err(Error::NvencCapability { cap, .. }) => {
                assert_eq!(cap, "NV_ENC_CAPS_NUM_MAX_BFRAMES");
            }
            other => panic!("expected a capability error, got {other:?}"),
        }
        let no_nv12 = Fake {
            formats: vec![sys::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_IYUV],
            ..Fake::default()
        };
        let nv12 = EncoderConfig::new(640, 480).with_pixel_format(PixelFormat::Nv12);
        assert!(matches!(
            plan(&nv12, &NvencOptions::default(), &no_nv12),
            Err(Error::NvencCapability { .. })
        ));
    }

    #[test]
    fn lossless_takes_the_headers_recipe_and_needs_the_cap() {
        let config = EncoderConfig::new(640, 480);
        let options = NvencOptions::default().with_tuning(Some(NvencTuning::Lossless));
        let mut plan = plan(&config, &options, &Fake::default()).unwrap();
        assert_eq!(
            plan.init.config.rcParams.rateControlMode,
            sys::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_CONSTQP
        );
        assert_eq!(plan.init.config.rcParams.constQP.qpIntra, 0);
        assert_eq!(
            h264_config(&mut plan.init.config).qpPrimeYZeroTransformBypassFlag(),
            1
        );
        let without = Fake {
            lossless: 0,
            ..Fake::default()
        };
        assert!(matches!(
            super::plan(&config, &options, &without),
            Err(Error::NvencCapability { .. })
        ));
    }

    #[test]
    fn hevc_gets_its_codec_guid_main_profile_and_hevc_config() {
        let config = EncoderConfig::new(640, 360)
            .with_codec(Codec::Hevc)
            .with_bframes(Some(2))
            .with_gop_size(48);
        let mut plan = plan(&config, &NvencOptions::default(), &Fake::default()).unwrap();
        assert!(guid_eq(
            &plan.init.params.encodeGUID,
            &sys::NV_ENC_CODEC_HEVC_GUID
        ));
        assert!(guid_eq(
            &plan.init.config.profileGUID,
            &sys::NV_ENC_HEVC_PROFILE_MAIN_GUID
        ));
        assert_eq!(plan.init.config.frameIntervalP, 3);
        assert_eq!(plan.init.config.gopLength, 48);
        let hevc = hevc_config(&mut plan.init.config);
        assert_eq!(hevc.idrPeriod, 48);
        assert_eq!(hevc.repeatSPSPPS(), 1);
        assert_eq!(hevc.chromaFormatIDC(), 1);
        assert_eq!(hevc.pixelBitDepthMinus8(), 0);
        // H.264 keeps its own GUID.
        let h264 = plan_h264();
        assert!(guid_eq(
            &h264.init.params.encodeGUID,
            &sys::NV_ENC_CODEC_H264_GUID
        ));
    }

    fn plan_h264() -> Plan {
        plan(
            &EncoderConfig::new(640, 360),
            &NvencOptions::default(),
            &Fake::default(),
        )
        .unwrap()
    }

    #[test]
    fn hevc_caps_are_asked_for_hevc() {
        // A GPU that answers H.264's caps but not HEVC's: the HEVC plan fails on the query, the
        // H.264 one does not.
        let no_hevc = Fake {
            hevc: false,
            ..Fake::default()
        };
        let config = EncoderConfig::new(640, 360).with_codec(Codec::Hevc);
        assert!(matches!(
            plan(&config, &NvencOptions::default(), &no_hevc),
            Err(Error::Nvenc(_))
        ));
        assert!(plan(
            &EncoderConfig::new(640, 360),
            &NvencOptions::default(),
            &no_hevc
        )
        .is_ok());
    }

    #[test]
    fn the_presets_b_frames_are_clamped_to_the_cap_and_asked_ones_are_refused() {
        // A GPU whose HEVC has no B-frames (before Turing) and a preset that asks for two.
        struct PresetWithB(Fake);
        impl Driver for PresetWithB {
            fn cap(&self, codec: Codec, cap: sys::NV_ENC_CAPS) -> Result<i32, NvencError> {
                self.0.cap(codec, cap)
            }
            fn input_formats(
                &self,
                codec: Codec,
            ) -> Result<Vec<sys::NV_ENC_BUFFER_FORMAT>, NvencError> {
                self.0.input_formats(codec)
            }
            fn preset_config(
                &self,
                codec: Codec,
                preset: sys::GUID,
                tuning: sys::NV_ENC_TUNING_INFO,
            ) -> Result<sys::NV_ENC_CONFIG, NvencError> {
                let mut c = self.0.preset_config(codec, preset, tuning)?;
                c.frameIntervalP = 3;
                Ok(c)
            }
        }
        let gpu = PresetWithB(Fake {
            max_bframes: 0,
            ..Fake::default()
        });
        let auto = EncoderConfig::new(640, 360).with_codec(Codec::Hevc);
        let plan = plan(&auto, &NvencOptions::default(), &gpu).unwrap();
        assert_eq!(plan.frame_interval_p, 1, "clamped to the GPU's 0 B-frames");
        let asked = auto.with_bframes(Some(2));
        match super::plan(&asked, &NvencOptions::default(), &gpu) {
            Err(Error::NvencCapability {
                cap,
                value,
                required,
            }) => {
                assert_eq!(cap, "NV_ENC_CAPS_NUM_MAX_BFRAMES");
                assert_eq!((value, required), (0, 2));
            }
            other => panic!("expected a capability error, got {other:?}"),
        }
    }
}
