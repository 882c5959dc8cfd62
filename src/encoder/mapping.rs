//! The one place where the neutral settings become each backend's own terms: the preset, the
//! tune (and "zerolatency means no B-frames"), the CRF, and the rate control ([`RateControl`],
//! with [`EncoderConfig::crf`] for constant quality). The x264 backend, the direct NVENC backend
//! and the ffmpeg subprocess backends all read them from here, and [`README_ROWS`] (the rows of
//! the README's mapping table) is checked against them by the tests below, so the documentation
//! cannot drift from what the code does.

use crate::encoder::{EncoderConfig, EncoderKind, FfmpegFamily, Preset, RateControl, Tune};
use crate::error::Error;

/// Whether the configuration asks for no reordering and no delay: the `zerolatency` tune. Every
/// backend then encodes without B-frames, and NVENC reads each frame's bitstream back in the call
/// that submitted it. [`EncoderConfig::bframes`] above 0 with it is refused by
/// [`EncoderConfig::validate`] ([`crate::ConfigError::BframesWithZeroLatency`]), not ignored.
pub(crate) fn zero_latency(config: &EncoderConfig) -> bool {
    config.tune == Some(Tune::Zerolatency)
}

/// The B-frames to ask for: none with zero latency (where validation admits only `bframes` 0 or
/// unset), otherwise [`EncoderConfig::bframes`] (`None` keeps the backend's or preset's own).
pub(crate) fn bframes(config: &EncoderConfig) -> Option<u32> {
    if zero_latency(config) {
        Some(0)
    } else {
        config.bframes
    }
}

/// The number of NVENC's preset `P1`..`P7` nearest to an x264-named preset (README table, column
/// "NVENC"): ultrafast P1; superfast, veryfast P2; faster, fast P3; medium P4; slow P5; slower
/// P6; veryslow, placebo P7.
pub(crate) fn nvenc_preset_number(preset: Preset) -> u8 {
    match preset {
        Preset::Ultrafast => 1,
        Preset::Superfast | Preset::Veryfast => 2,
        Preset::Faster | Preset::Fast => 3,
        Preset::Medium => 4,
        Preset::Slow => 5,
        Preset::Slower => 6,
        _ => 7,
    }
}

/// NVENC's tuning for an x264-named tune, by FFmpeg's `h264_nvenc` name: `ull` (ultra-low
/// latency) for zerolatency, `ll` (low latency) for fastdecode, `hq` (high quality) otherwise.
pub(crate) fn nvenc_tuning_name(tune: Option<Tune>) -> &'static str {
    match tune {
        Some(Tune::Zerolatency) => "ull",
        Some(Tune::Fastdecode) => "ll",
        _ => "hq",
    }
}

/// `h264_qsv`'s preset: the same name, within its range veryfast..veryslow.
fn qsv_preset(preset: Preset) -> &'static str {
    match preset {
        Preset::Ultrafast | Preset::Superfast => "veryfast",
        Preset::Placebo => "veryslow",
        other => other.name(),
    }
}

/// FFmpeg's preset, tune and GOP options for `encoder` (README table, the ffmpeg columns): the
/// arguments after `-c:v <encoder>` that come before the rate control ([`ffmpeg`]).
pub(crate) fn ffmpeg_tuning(encoder: FfmpegFamily, config: &EncoderConfig) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut push = |a: &str, b: String| {
        args.push(a.to_owned());
        args.push(b);
    };
    match encoder {
        FfmpegFamily::Libx264 => {
            push("-preset", config.preset.name().to_owned());
            if let Some(tune) = config.tune {
                push("-tune", tune.name().to_owned());
            }
            push("-threads", config.threads.to_string());
        }
        FfmpegFamily::Libx265 => {
            push("-preset", config.preset.name().to_owned());
            if let Some(tune) = config.tune.and_then(x265_tune) {
                push("-tune", tune.to_owned());
            }
            // libx265 logs its settings at info level on stderr whatever FFmpeg's -loglevel;
            // its GOPs are open by default (a CRA, not an IDR, every `-g` frames), and every
            // backend's keyframes are IDRs; FFmpeg's wrapper passes no thread count, so x265's
            // own pool size is given.
            let pools = match config.threads {
                0 => String::new(),
                n => format!(":pools={n}"),
            };
            push("-x265-params", format!("log-level=error:open-gop=0{pools}"));
        }
        FfmpegFamily::Nvenc => {
            push(
                "-preset",
                format!("p{}", nvenc_preset_number(config.preset)),
            );
            push("-tune", nvenc_tuning_name(config.tune).to_owned());
        }
        FfmpegFamily::Qsv => push("-preset", qsv_preset(config.preset).to_owned()),
        FfmpegFamily::VideoToolbox => {
            if zero_latency(config) {
                push("-realtime", "1".into());
            }
        }
        FfmpegFamily::Vaapi => {}
    }
    push("-g", config.gop_size.to_string());
    if let Some(b) = bframes(config) {
        push("-bf", b.to_string());
    }
    args
}

/// x265's tune for an x264-named tune: the same name where x265 has it (`animation`, `grain`,
/// `psnr`, `ssim`, `fastdecode`, `zerolatency`); `film` and `stillimage`, which x265 lacks, keep
/// x265's default tuning (README table; the backends say so in their log at info level).
pub(crate) fn x265_tune(tune: Tune) -> Option<&'static str> {
    match tune {
        Tune::Film | Tune::Stillimage => {
            tracing::info!(
                tune = tune.name(),
                "x265 has no such tune: encoding with its default tuning"
            );
            None
        }
        other => Some(other.name()),
    }
}

/// The 1..=51 quality for a CRF, for every backend without a CRF of its own: NVENC's
/// `targetQuality` (its constant-quality scale is the same 0-51 QP-like scale, and 0 means
/// "automatic", hence the floor of 1), `h264_nvenc`'s `-cq`, `h264_qsv`'s `-global_quality` and
/// `h264_vaapi`'s `-qp`.
pub(crate) fn target_quality(crf: f32) -> u8 {
    crf.round().clamp(1.0, 51.0) as u8
}

/// Bits per second to x264's kbit/s (1,000 bits), rounded, at least 1.
#[cfg_attr(not(feature = "x264"), allow(dead_code))] // read by the x264 backend
fn kbit(bits: u64) -> u32 {
    u32::try_from(bits.saturating_add(500) / 1_000)
        .unwrap_or(u32::MAX)
        .max(1)
}

/// A value that fits NVENC's 32-bit fields (validation keeps every rate and buffer within).
fn u32_of(bits: u64) -> u32 {
    u32::try_from(bits).unwrap_or(u32::MAX)
}

/// x264's rate-control method.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(not(feature = "x264"), allow(dead_code))] // read by the x264 backend
pub(crate) enum X264Method {
    /// `X264_RC_CRF` with `f_rf_constant`.
    Crf(f32),
    /// `X264_RC_ABR` with `i_bitrate` and the VBV.
    Abr,
    /// `X264_RC_CQP` with `i_qp_constant`.
    Cqp(u8),
}

/// x264's `param.rc` fields for a configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(not(feature = "x264"), allow(dead_code))] // read by the x264 backend
pub(crate) struct X264Rc {
    pub(crate) method: X264Method,
    /// `i_bitrate`, kbit/s (0 unless ABR).
    pub(crate) bitrate_kbps: u32,
    /// `i_vbv_max_bitrate`, kbit/s (0: no VBV).
    pub(crate) vbv_max_kbps: u32,
    /// `i_vbv_buffer_size`, kbit (0: no VBV).
    pub(crate) vbv_buffer_kbit: u32,
}

// No filler data for CBR (x264's `b_filler`, NVENC's `enableFillerDataInsertion`): with it, a
// rate lowered mid-stream makes the encoder pad away the VBV fill it had at the old rate in one
// burst (x264 at 4 -> 1 Mbit/s with a 1 s buffer wrote a 350 KB filler NAL at the switch), the
// opposite of what a degraded link needs. Without it, CBR is the target rate capped by the VBV,
// and static content may come out below the target.

/// The x264 mapping (README table, column "x264").
#[cfg_attr(not(feature = "x264"), allow(dead_code))] // read by the x264 backend
pub(crate) fn x264(config: &EncoderConfig) -> X264Rc {
    let rc = config.rate_control;
    let vbv = rc.vbv_buffer_bits().map_or(0, kbit);
    let none = X264Rc {
        method: X264Method::Crf(config.crf),
        bitrate_kbps: 0,
        vbv_max_kbps: 0,
        vbv_buffer_kbit: 0,
    };
    match rc {
        RateControl::Cbr { bitrate, .. } => X264Rc {
            method: X264Method::Abr,
            bitrate_kbps: kbit(bitrate.bps()),
            vbv_max_kbps: kbit(bitrate.bps()),
            vbv_buffer_kbit: vbv,
        },
        RateControl::Vbr {
            bitrate,
            max_bitrate,
            ..
        } => X264Rc {
            method: X264Method::Abr,
            bitrate_kbps: kbit(bitrate.bps()),
            vbv_max_kbps: kbit(max_bitrate.bps()),
            vbv_buffer_kbit: vbv,
        },
        RateControl::ConstantQp { qp } => X264Rc {
            method: X264Method::Cqp(qp),
            ..none
        },
        _ => none,
    }
}

/// NVENC's rate-control mode (`NV_ENC_PARAMS_RC_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NvencRcMode {
    /// `NV_ENC_PARAMS_RC_CONSTQP`.
    ConstQp,
    /// `NV_ENC_PARAMS_RC_VBR`.
    Vbr,
    /// `NV_ENC_PARAMS_RC_CBR`.
    Cbr,
}

impl NvencRcMode {
    /// The header's name.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) const fn name(self) -> &'static str {
        match self {
            NvencRcMode::ConstQp => "NV_ENC_PARAMS_RC_CONSTQP",
            NvencRcMode::Vbr => "NV_ENC_PARAMS_RC_VBR",
            NvencRcMode::Cbr => "NV_ENC_PARAMS_RC_CBR",
        }
    }
}

/// NVENC's `NV_ENC_RC_PARAMS` fields for a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NvencRc {
    pub(crate) mode: NvencRcMode,
    /// `averageBitRate`, bits/s (0 for constant quality and QP).
    pub(crate) average_bps: u32,
    /// `maxBitRate`, bits/s (0: no cap).
    pub(crate) max_bps: u32,
    /// `vbvBufferSize`, bits (0: the driver's default; never left 0 for CBR/VBR).
    pub(crate) vbv_buffer_bits: u32,
    /// `vbvInitialDelay`, bits: nine tenths of the buffer, x264's default initial fill.
    pub(crate) vbv_initial_delay_bits: u32,
    /// `targetQuality` (constant quality only, else 0).
    pub(crate) target_quality: u8,
    /// `constQP.qpIntra/qpInterP/qpInterB` (constant QP only, else 0).
    pub(crate) const_qp: u8,
}

/// The NVENC mapping (README table, column "NVENC").
pub(crate) fn nvenc(config: &EncoderConfig) -> NvencRc {
    let rc = config.rate_control;
    let vbv = rc.vbv_buffer_bits().map_or(0, u32_of);
    let base = NvencRc {
        mode: NvencRcMode::Vbr,
        average_bps: 0,
        max_bps: 0,
        vbv_buffer_bits: vbv,
        vbv_initial_delay_bits: (u64::from(vbv) * 9 / 10) as u32,
        target_quality: 0,
        const_qp: 0,
    };
    match rc {
        RateControl::Cbr { bitrate, .. } => NvencRc {
            mode: NvencRcMode::Cbr,
            average_bps: u32_of(bitrate.bps()),
            max_bps: u32_of(bitrate.bps()),
            ..base
        },
        RateControl::Vbr {
            bitrate,
            max_bitrate,
            ..
        } => NvencRc {
            mode: NvencRcMode::Vbr,
            average_bps: u32_of(bitrate.bps()),
            max_bps: u32_of(max_bitrate.bps()),
            ..base
        },
        RateControl::ConstantQp { qp } => NvencRc {
            mode: NvencRcMode::ConstQp,
            const_qp: qp,
            ..base
        },
        _ => NvencRc {
            target_quality: target_quality(config.crf),
            ..base
        },
    }
}

/// FFmpeg's rate-control options for `codec` (README table, the ffmpeg columns).
///
/// # Errors
/// [`Error::Unsupported`] for constant QP on `h264_videotoolbox`, which has none.
pub(crate) fn ffmpeg(codec: FfmpegFamily, config: &EncoderConfig) -> Result<Vec<String>, Error> {
    let rc = config.rate_control;
    let crf = config.crf;
    let mut args: Vec<String> = Vec::new();
    let mut push = |a: &str, b: String| {
        args.push(a.to_owned());
        args.push(b);
    };
    let rates = |push: &mut dyn FnMut(&str, String), bufsize: bool| {
        if let (Some(b), Some(m)) = (rc.bitrate(), rc.max_bitrate()) {
            push("-b:v", b.bps().to_string());
            push("-maxrate", m.bps().to_string());
            if bufsize {
                if let Some(v) = rc.vbv_buffer_bits() {
                    push("-bufsize", v.to_string());
                }
            }
        }
    };
    match (codec, rc) {
        (FfmpegFamily::Libx264, RateControl::ConstantQp { qp }) => push("-qp", qp.to_string()),
        (FfmpegFamily::Libx264, RateControl::Cbr { .. } | RateControl::Vbr { .. }) => {
            rates(&mut push, true)
        }
        (FfmpegFamily::Libx264, _) => push("-crf", format!("{crf}")),
        (FfmpegFamily::Libx265, RateControl::ConstantQp { qp }) => push("-qp", qp.to_string()),
        (FfmpegFamily::Libx265, RateControl::Cbr { .. } | RateControl::Vbr { .. }) => {
            rates(&mut push, true)
        }
        (FfmpegFamily::Libx265, _) => push("-crf", format!("{crf}")),
        (FfmpegFamily::Nvenc, RateControl::ConstantQp { qp }) => {
            push("-rc", "constqp".into());
            push("-qp", qp.to_string());
        }
        (FfmpegFamily::Nvenc, RateControl::Cbr { .. }) => {
            push("-rc", "cbr".into());
            rates(&mut push, true);
        }
        (FfmpegFamily::Nvenc, RateControl::Vbr { .. }) => {
            push("-rc", "vbr".into());
            rates(&mut push, true);
        }
        (FfmpegFamily::Nvenc, _) => {
            push("-rc", "vbr".into());
            push("-cq", format!("{}", target_quality(crf)));
        }
        // FFmpeg's QSV wrapper picks CQP with the qscale flag (-q:v), CBR when the maximum equals
        // the target and VBR when it is higher.
        (FfmpegFamily::Qsv, RateControl::ConstantQp { qp }) => push("-q:v", qp.to_string()),
        (FfmpegFamily::Qsv, RateControl::Cbr { .. } | RateControl::Vbr { .. }) => {
            rates(&mut push, true)
        }
        (FfmpegFamily::Qsv, _) => push("-global_quality", target_quality(crf).to_string()),
        (FfmpegFamily::VideoToolbox, RateControl::ConstantQp { .. }) => {
            return Err(Error::Unsupported {
                backend: EncoderKind::Ffmpeg(codec),
                feature: "constant QP (VideoToolbox has no constant-QP mode)",
            })
        }
        // VideoToolbox limits the data rate over one second; it takes no buffer size.
        (FfmpegFamily::VideoToolbox, RateControl::Cbr { .. } | RateControl::Vbr { .. }) => {
            rates(&mut push, false)
        }
        (FfmpegFamily::VideoToolbox, _) => push(
            "-q:v",
            format!("{}", (100.0 - 2.0 * crf).round().clamp(1.0, 100.0)),
        ),
        (FfmpegFamily::Vaapi, RateControl::ConstantQp { qp }) => {
            push("-rc_mode", "CQP".into());
            push("-qp", qp.to_string());
        }
        (FfmpegFamily::Vaapi, RateControl::Cbr { .. }) => {
            push("-rc_mode", "CBR".into());
            rates(&mut push, true);
        }
        (FfmpegFamily::Vaapi, RateControl::Vbr { .. }) => {
            push("-rc_mode", "VBR".into());
            rates(&mut push, true);
        }
        (FfmpegFamily::Vaapi, _) => {
            push("-rc_mode", "CQP".into());
            push("-qp", target_quality(crf).to_string());
        }
    }
    Ok(args)
}

/// The rate-control rows of the README's mapping table, cell by cell: `EncoderConfig`, x264,
/// NVENC (direct), ffmpeg `h264_nvenc`, `h264_qsv`, `h264_videotoolbox`, `h264_vaapi`. `b` is
/// the target, `m` the maximum, `v` the VBV buffer ([`RateControl::vbv_buffer_bits`]), `q` the QP.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const README_ROWS: &[[&str; 7]] = &[
    [
        "`rate_control` `Cbr` (`b`, VBV `v`)",
        "`i_rc_method` ABR, `i_bitrate` = `i_vbv_max_bitrate` = b, `i_vbv_buffer_size` = v (kbit), no filler",
        "`NV_ENC_PARAMS_RC_CBR`, `averageBitRate` = `maxBitRate` = b, `vbvBufferSize` = v, `vbvInitialDelay` = 0.9 v, no filler",
        "`-rc cbr -b:v b -maxrate b -bufsize v`",
        "`-b:v b -maxrate b -bufsize v` (CBR)",
        "`-b:v b -maxrate b` (1 s data-rate limit)",
        "`-rc_mode CBR -b:v b -maxrate b -bufsize v`",
    ],
    [
        "`rate_control` `Vbr` (`b`, max `m`, VBV `v`)",
        "`i_rc_method` ABR, `i_bitrate` = b, `i_vbv_max_bitrate` = m, `i_vbv_buffer_size` = v (kbit)",
        "`NV_ENC_PARAMS_RC_VBR`, `averageBitRate` = b, `maxBitRate` = m, `vbvBufferSize` = v, `vbvInitialDelay` = 0.9 v",
        "`-rc vbr -b:v b -maxrate m -bufsize v`",
        "`-b:v b -maxrate m -bufsize v` (VBR)",
        "`-b:v b -maxrate m` (1 s data-rate limit)",
        "`-rc_mode VBR -b:v b -maxrate m -bufsize v`",
    ],
    [
        "`rate_control` `ConstantQp` (`q`, 0-51)",
        "`i_rc_method` CQP, `i_qp_constant` = q",
        "`NV_ENC_PARAMS_RC_CONSTQP`, `constQP` = q for I, P and B",
        "`-rc constqp -qp q`",
        "`-q:v q` (CQP)",
        "refused: `Error::Unsupported`",
        "`-rc_mode CQP -qp q`",
    ],
    [
        "`reconfigure` (new `Cbr`/`Vbr` rates mid-stream)",
        "`x264_encoder_reconfig`, no IDR (same mode only)",
        "`nvEncReconfigureEncoder`, no IDR; reset with an IDR where `SUPPORT_DYN_BITRATE_CHANGE` is 0",
        "ffmpeg restarted: IDR at the next frame",
        "ffmpeg restarted: IDR at the next frame",
        "ffmpeg restarted: IDR at the next frame",
        "ffmpeg restarted: IDR at the next frame",
    ],
];

/// The preset, tune and CRF rows of the README's mapping table, cell by cell (columns as in
/// [`README_ROWS`]), checked against [`nvenc_preset_number`], [`nvenc_tuning_name`],
/// [`ffmpeg_tuning`] and [`ffmpeg`] below.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const README_NEUTRAL_ROWS: &[[&str; 7]] = &[
    [
        "`preset` ultrafast / superfast, veryfast / faster, fast / medium / slow / slower / veryslow, placebo",
        "same name",
        "P1 / P2 / P3 / P4 / P5 / P6 / P7",
        "same as NVENC",
        "same name (ultrafast, superfast → veryfast; placebo → veryslow)",
        "none",
        "none",
    ],
    [
        "`tune` zerolatency",
        "`zerolatency`",
        "ultra-low-latency tuning, no B-frames",
        "`-tune ull`, `-bf 0`",
        "`-bf 0`",
        "`-realtime 1`, `-bf 0`",
        "`-bf 0`",
    ],
    [
        "`tune` fastdecode / others",
        "same name",
        "low-latency / high-quality tuning",
        "`-tune ll` / `hq`",
        "none",
        "none",
        "none",
    ],
    [
        "`crf` c (0-51)",
        "`--crf c`",
        "constant-quality VBR, `targetQuality = round(c)` in 1..=51",
        "`-rc vbr -cq round(c)`",
        "`-global_quality` (ICQ)",
        "`-q:v 100 - 2c`",
        "`-rc_mode CQP -qp round(c)`",
    ],
];

#[cfg(test)]
mod tests;
pub(crate) mod x265;
