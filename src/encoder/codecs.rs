//! The one place that knows codecs: which backend encodes which [`Codec`], and what each backend
//! (NVENC, each FFmpeg encoder family, the in-process software encoders) and each container
//! (MPEG-TS from ffmpeg) calls it.
//!
//! The backend table ([`crate::backends`]), the fallback chain, detection, the ffmpeg command
//! line, the NVENC session and the MPEG-TS demuxer read these functions; none of them matches on
//! a codec to name it. Adding a codec (AV1 with an NVENC API 12 header) is a [`Codec`] variant and
//! an arm in each function here, plus its bitstream parsing and its MP4 sample entry.
//!
//! | codec | NVENC codec / profile GUID | FFmpeg encoders | in process | MPEG-TS `stream_type` |
//! |---|---|---|---|---|
//! | H.264 | `NV_ENC_CODEC_H264_GUID` / the preset's (High 4:4:4 Predictive, `NV_ENC_H264_PROFILE_HIGH_444_GUID`, for lossless) | `h264_nvenc`, `h264_qsv`, `h264_videotoolbox`, `h264_vaapi`, `libx264` | x264 | `0x1B` |
//! | HEVC | `NV_ENC_CODEC_HEVC_GUID` / Main (`NV_ENC_HEVC_PROFILE_MAIN_GUID`) | `hevc_nvenc`, `hevc_qsv`, `hevc_videotoolbox`, `hevc_vaapi`, `libx265` | x265 | `0x24` |

use std::str::FromStr;

use super::config::{Codec, ConfigError};
use super::kind::{EncoderKind, FfmpegFamily};

/// Every FFmpeg family, for the reverse look-up of an FFmpeg encoder name.
const FAMILIES: &[FfmpegFamily] = &[
    FfmpegFamily::Nvenc,
    FfmpegFamily::Qsv,
    FfmpegFamily::VideoToolbox,
    FfmpegFamily::Vaapi,
    FfmpegFamily::Libx264,
    FfmpegFamily::Libx265,
];

/// FFmpeg's name of `family`'s encoder for `codec` (`-c:v`), or `None` where the family has no
/// encoder of that codec.
#[must_use]
pub const fn ffmpeg_name(family: FfmpegFamily, codec: Codec) -> Option<&'static str> {
    Some(match (family, codec) {
        (FfmpegFamily::Nvenc, Codec::H264) => "h264_nvenc",
        (FfmpegFamily::Nvenc, Codec::Hevc) => "hevc_nvenc",
        (FfmpegFamily::Qsv, Codec::H264) => "h264_qsv",
        (FfmpegFamily::Qsv, Codec::Hevc) => "hevc_qsv",
        (FfmpegFamily::VideoToolbox, Codec::H264) => "h264_videotoolbox",
        (FfmpegFamily::VideoToolbox, Codec::Hevc) => "hevc_videotoolbox",
        (FfmpegFamily::Vaapi, Codec::H264) => "h264_vaapi",
        (FfmpegFamily::Vaapi, Codec::Hevc) => "hevc_vaapi",
        (FfmpegFamily::Libx264, Codec::H264) => "libx264",
        (FfmpegFamily::Libx265, Codec::Hevc) => "libx265",
        (FfmpegFamily::Libx264 | FfmpegFamily::Libx265, _) => return None,
    })
}

/// The family and codec of an FFmpeg encoder name (`hevc_qsv` is QSV's HEVC).
#[must_use]
pub fn ffmpeg_family_of(name: &str) -> Option<(FfmpegFamily, Codec)> {
    FAMILIES.iter().find_map(|&family| {
        Codec::ALL
            .iter()
            .find(|&&codec| ffmpeg_name(family, codec) == Some(name))
            .map(|&codec| (family, codec))
    })
}

/// Whether `kind` can encode `codec` at all (whether it works on this machine is detection's).
#[must_use]
pub const fn encodes(kind: EncoderKind, codec: Codec) -> bool {
    match kind {
        EncoderKind::Nvenc => matches!(codec, Codec::H264 | Codec::Hevc),
        EncoderKind::X264 => matches!(codec, Codec::H264),
        EncoderKind::X265 => matches!(codec, Codec::Hevc),
        EncoderKind::Ffmpeg(family) => ffmpeg_name(family, codec).is_some(),
    }
}

/// The codecs `kind` can encode, in [`Codec::ALL`] order.
#[must_use]
pub fn codecs_of(kind: EncoderKind) -> Vec<Codec> {
    Codec::ALL
        .iter()
        .copied()
        .filter(|&c| encodes(kind, c))
        .collect()
}

/// `Ok` if `kind` encodes `codec`, else [`ConfigError::CodecUnsupported`] naming both and the
/// codecs `kind` does encode. The boundary check every opener runs.
///
/// # Errors
/// As above.
pub fn check(kind: EncoderKind, codec: Codec) -> Result<(), ConfigError> {
    if encodes(kind, codec) {
        Ok(())
    } else {
        Err(ConfigError::CodecUnsupported {
            backend: kind,
            codec,
            supported: codecs_of(kind),
        })
    }
}

/// The in-process software encoder of `codec`: the last resort of its fallback chain.
#[must_use]
pub const fn software(codec: Codec) -> EncoderKind {
    match codec {
        Codec::H264 => EncoderKind::X264,
        Codec::Hevc => EncoderKind::X265,
    }
}

/// FFmpeg's software encoder of `codec`, in a subprocess: the software backend of a build
/// without the in-process one's feature.
#[must_use]
pub const fn ffmpeg_software(codec: Codec) -> FfmpegFamily {
    match codec {
        Codec::H264 => FfmpegFamily::Libx264,
        Codec::Hevc => FfmpegFamily::Libx265,
    }
}

/// NVENC's `encodeGUID` for `codec` (`nvEncodeAPI.h`, "Encode Codec GUIDS supported by the
/// NvEncodeAPI interface").
#[must_use]
pub(crate) fn nvenc_codec_guid(codec: Codec) -> nvenc_sys::GUID {
    match codec {
        Codec::H264 => nvenc_sys::NV_ENC_CODEC_H264_GUID,
        Codec::Hevc => nvenc_sys::NV_ENC_CODEC_HEVC_GUID,
    }
}

/// The C name of [`nvenc_codec_guid`]'s GUID, for errors that say which codec the GPU lacks.
#[must_use]
pub(crate) const fn nvenc_codec_guid_name(codec: Codec) -> &'static str {
    match codec {
        Codec::H264 => "NV_ENC_CODEC_H264_GUID (nvEncGetEncodeGUIDs)",
        Codec::Hevc => "NV_ENC_CODEC_HEVC_GUID (nvEncGetEncodeGUIDs)",
    }
}

/// NVENC's `profileGUID` for `codec`, `high_444` for H.264's lossless 4:4:4 recipe, or `None`
/// to keep the one the preset configuration chose (H.264 otherwise). HEVC is always Main: 8-bit
/// 4:2:0 (4:4:4 would be the Format Range Extensions profile, which this crate does not ask for).
#[must_use]
pub(crate) fn nvenc_profile_guid(codec: Codec, high_444: bool) -> Option<nvenc_sys::GUID> {
    match (codec, high_444) {
        (Codec::H264, false) => None,
        (Codec::H264, true) => Some(nvenc_sys::NV_ENC_H264_PROFILE_HIGH_444_GUID),
        (Codec::Hevc, _) => Some(nvenc_sys::NV_ENC_HEVC_PROFILE_MAIN_GUID),
    }
}

/// The MPEG-TS `stream_type` of `codec` (ISO/IEC 13818-1, Table 2-34: `0x1B` AVC, `0x24` HEVC),
/// as ffmpeg writes it into the PMT.
#[must_use]
pub(crate) const fn ts_stream_type(codec: Codec) -> u8 {
    match codec {
        Codec::H264 => 0x1B,
        Codec::Hevc => 0x24,
    }
}

/// Parsing lives here rather than beside [`EncoderKind`] because it reads FFmpeg's encoder names,
/// which are this module's.
impl FromStr for EncoderKind {
    type Err = ConfigError;

    /// A name of [`EncoderKind::NAMES`], or FFmpeg's name of one of its encoders (`h264_qsv`,
    /// `hevc_qsv`, `libx265`, …), case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        let kind = match lower.as_str() {
            "nvenc" => Some(EncoderKind::Nvenc),
            "x264" => Some(EncoderKind::X264),
            "x265" => Some(EncoderKind::X265),
            "ffmpeg-nvenc" => Some(EncoderKind::Ffmpeg(FfmpegFamily::Nvenc)),
            "qsv" => Some(EncoderKind::Ffmpeg(FfmpegFamily::Qsv)),
            "videotoolbox" => Some(EncoderKind::Ffmpeg(FfmpegFamily::VideoToolbox)),
            "vaapi" => Some(EncoderKind::Ffmpeg(FfmpegFamily::Vaapi)),
            "ffmpeg-x264" => Some(EncoderKind::Ffmpeg(FfmpegFamily::Libx264)),
            "ffmpeg-x265" => Some(EncoderKind::Ffmpeg(FfmpegFamily::Libx265)),
            other => ffmpeg_family_of(other).map(|(family, _)| EncoderKind::Ffmpeg(family)),
        };
        kind.ok_or_else(|| ConfigError::UnknownEncoder {
            name: s.to_owned(),
            valid: Self::NAMES,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ffmpeg_name_maps_back_to_its_family_and_codec() {
        for &family in FAMILIES {
            for &codec in Codec::ALL {
                if let Some(name) = ffmpeg_name(family, codec) {
                    assert_eq!(ffmpeg_family_of(name), Some((family, codec)), "{name}");
                    assert_eq!(
                        name.parse::<EncoderKind>().ok(),
                        Some(EncoderKind::Ffmpeg(family))
                    );
                }
            }
        }
        assert_eq!(ffmpeg_family_of("libx266"), None);
    }

    #[test]
    fn every_codec_has_a_software_encoder_that_encodes_it() {
        for &codec in Codec::ALL {
            assert!(encodes(software(codec), codec));
            assert!(encodes(EncoderKind::Ffmpeg(ffmpeg_software(codec)), codec));
            assert!(encodes(EncoderKind::Nvenc, codec));
        }
    }

    #[test]
    fn a_backend_without_the_codec_is_refused_naming_both() {
        let e = check(EncoderKind::X264, Codec::Hevc).unwrap_err();
        assert!(matches!(
            &e,
            ConfigError::CodecUnsupported { backend: EncoderKind::X264, codec: Codec::Hevc, supported }
                if supported == &[Codec::H264]
        ));
        let text = e.to_string();
        assert!(
            text.contains("x264") && text.contains("hevc") && text.contains("h264"),
            "{text}"
        );
        assert!(check(EncoderKind::X265, Codec::Hevc).is_ok());
    }
}
