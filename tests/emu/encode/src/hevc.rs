//! HEVC on the emulated GPU: its profile list, the caps that differ from H.264's, the preset
//! defaults of `NV_ENC_CONFIG_HEVC`, and the rules `nvEncInitializeEncoder` enforces on it.
//!
//! The emulated GPU is a Turing-or-later one for HEVC: B-frames (Turing added them for HEVC),
//! B-frames as reference in the middle mode, SAO. Its input formats are 8-bit 4:2:0 only (the
//! emulator lists no P010 or 4:4:4 buffer format), so `NV_ENC_CAPS_SUPPORT_10BIT_ENCODE` and
//! `NV_ENC_CAPS_SUPPORT_YUV444_ENCODE` are 0 and Main10 / FREXT are listed (as such a GPU lists
//! them) but refused at initialization with the cap named. Line numbers are those of Debian's
//! `nvEncodeAPI.h`, API 11.1.

use std::ffi::c_int;

use nvenc_sys as nv;
use nvenc_sys::{GUID, NVENCSTATUS};

use crate::fail::{guid_eq, guid_str, v, zero_ptr, zero_u32, Fail, INVALID_PARAM};
use crate::state::MAX_BFRAMES;

/// `nvEncGetEncodeProfileGUIDs` for HEVC, as a Turing-or-later GPU lists them.
pub(crate) const PROFILES: [GUID; 3] = [
    nv::NV_ENC_HEVC_PROFILE_MAIN_GUID,
    nv::NV_ENC_HEVC_PROFILE_MAIN10_GUID,
    nv::NV_ENC_HEVC_PROFILE_FREXT_GUID,
];

/// `NV_ENC_CAPS_SUPPORT_BFRAME_REF_MODE` for HEVC: 2, only the middle B-frame as reference
/// (API.h lines 1085-1091: 0 none, 1 each, 2 middle).
pub(crate) const BFRAME_REF_MODE: c_int = 2;

/// The HEVC levels of `NV_ENC_LEVEL` (API.h lines 451-463), 30 times the level number.
const LEVELS: [u32; 13] = [30, 60, 63, 90, 93, 120, 123, 150, 153, 156, 180, 183, 186];

/// The caps whose HEVC answer differs from H.264's (`queries::cap_value` has the rest).
pub(crate) fn cap_value(cap: u32) -> Option<c_int> {
    Some(match cap {
        0 => MAX_BFRAMES as c_int, // NUM_MAX_BFRAMES: B-frames for HEVC since Turing
        6 => 0,                    // BDIRECT_MODE: an H.264 tool
        8 => 0,                    // ADAPTIVE_TRANSFORM: H.264's 8x8 transform
        13 => 186,                 // LEVEL_MAX: NV_ENC_LEVEL_HEVC_62
        14 => 30,                  // LEVEL_MIN: NV_ENC_LEVEL_HEVC_1
        35 => 1,                   // SAO
        39 => 0,                   // 10BIT_ENCODE: no 10-bit input format is listed
        43 => BFRAME_REF_MODE,     // BFRAME_REF_MODE
        _ => return None,
    })
}

/// What a P1..P7 preset's `NV_ENC_CONFIG_HEVC` holds: the IDR period of the GOP, 4:2:0 8-bit,
/// level and tier chosen by the driver, 8x8 to 32x32 coding units (API.h line 1517: the only
/// largest CU the SDK supports), one slice.
pub(crate) fn preset_defaults(c: &mut nv::NV_ENC_CONFIG, lossless: bool) {
    let gop = c.gopLength;
    // SAFETY: writing the HEVC member of the codec-config union of a zeroed struct.
    let h = unsafe { &mut c.encodeCodecConfig.hevcConfig };
    h.idrPeriod = gop;
    h.set_chromaFormatIDC(1);
    h.set_pixelBitDepthMinus8(0);
    h.level = 0;
    h.tier = 0;
    h.minCUSize = nv::NV_ENC_HEVC_CUSIZE::NV_ENC_HEVC_CUSIZE_8x8;
    h.maxCUSize = nv::NV_ENC_HEVC_CUSIZE::NV_ENC_HEVC_CUSIZE_32x32;
    if lossless {
        // Lossless HEVC is constant QP 0 under the lossless tuning (the profile stays Main:
        // cu_transquant_bypass is a Main-profile tool).
        c.rcParams.rateControlMode = nv::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_CONSTQP;
        c.rcParams.constQP = nv::NV_ENC_QP {
            qpInterP: 0,
            qpInterB: 0,
            qpIntra: 0,
        };
    }
}

/// What initialization takes from a valid `NV_ENC_CONFIG_HEVC`.
#[derive(Debug)]
pub(crate) struct Fields {
    pub(crate) idr_period: u32,
    pub(crate) repeat_sps_pps: bool,
    pub(crate) filler: bool,
    pub(crate) level: Option<u32>,
    pub(crate) profile: &'static str,
    pub(crate) tier: u32,
    pub(crate) max_dpb: u32,
    pub(crate) use_b_as_ref: u32,
}

fn unsupported(reason: String) -> Fail {
    v(NVENCSTATUS::NV_ENC_ERR_UNSUPPORTED_PARAM, reason)
}

/// The rules of `NV_ENC_CONFIG_HEVC` (each cites its header line) for a session with
/// `frame_interval_p`.
pub(crate) fn validate(c: &nv::NV_ENC_CONFIG, frame_interval_p: i32) -> Result<Fields, Fail> {
    // SAFETY: the HEVC member of the union, as selected by encodeGUID (checked by the caller).
    let h = unsafe { &c.encodeCodecConfig.hevcConfig };
    // Lines 1552, 1583, 1584: reserved bit-fields and arrays must be zero / NULL; the VUI
    // struct's reserved words too (line 1365).
    if h.reserved() != 0 {
        return Err(v(
            INVALID_PARAM,
            "NV_ENC_CONFIG_HEVC reserved bit-fields must be 0",
        ));
    }
    zero_u32(&h.reserved1, "NV_ENC_CONFIG_HEVC.reserved1")?;
    zero_ptr(&h.reserved2, "NV_ENC_CONFIG_HEVC.reserved2")?;
    zero_u32(
        &h.hevcVUIParameters.reserved,
        "NV_ENC_CONFIG_HEVC.hevcVUIParameters.reserved",
    )?;
    // Line 1533: chromaFormatIDC is 1 for 4:2:0 input, 3 for 4:4:4 (which needs
    // SUPPORT_YUV444_ENCODE, 0 here). 0 (a zeroed config) is taken as 4:2:0, as for H.264.
    match h.chromaFormatIDC() {
        0 | 1 => {}
        3 => {
            return Err(unsupported(
                "chromaFormatIDC 3 (4:4:4) needs NV_ENC_CAPS_SUPPORT_YUV444_ENCODE, 0 on this GPU"
                    .into(),
            ))
        }
        other => {
            return Err(v(
                INVALID_PARAM,
                format!("chromaFormatIDC {other} is neither 1 (4:2:0) nor 3 (4:4:4)"),
            ))
        }
    }
    // Line 1534: pixelBitDepthMinus8 is 0 for 8-bit input, 2 for 10-bit (which needs
    // SUPPORT_10BIT_ENCODE, 0 here).
    match h.pixelBitDepthMinus8() {
        0 => {}
        2 => return Err(unsupported(
            "pixelBitDepthMinus8 2 (10-bit) needs NV_ENC_CAPS_SUPPORT_10BIT_ENCODE, 0 on this GPU"
                .into(),
        )),
        other => {
            return Err(v(
                INVALID_PARAM,
                format!("pixelBitDepthMinus8 {other} is neither 0 (8-bit) nor 2 (10-bit)"),
            ))
        }
    }
    // Profiles (lines 190-199): Main for 8-bit 4:2:0; Main10 and FREXT need the 10-bit or
    // 4:4:4 caps. Autoselect is the driver's choice (Main here).
    let g = &c.profileGUID;
    let profile = if guid_eq(g, &nv::NV_ENC_CODEC_PROFILE_AUTOSELECT_GUID)
        || guid_eq(g, &nv::NV_ENC_HEVC_PROFILE_MAIN_GUID)
    {
        "main"
    } else if guid_eq(g, &nv::NV_ENC_HEVC_PROFILE_MAIN10_GUID) {
        return Err(unsupported(
            "profile Main10 needs NV_ENC_CAPS_SUPPORT_10BIT_ENCODE, 0 on this GPU".into(),
        ));
    } else if guid_eq(g, &nv::NV_ENC_HEVC_PROFILE_FREXT_GUID) {
        return Err(unsupported(
            "profile FREXT needs NV_ENC_CAPS_SUPPORT_YUV444_ENCODE or SUPPORT_10BIT_ENCODE, 0 on this GPU".into(),
        ));
    } else {
        return Err(v(
            INVALID_PARAM,
            format!(
                "profileGUID {} is not an HEVC profile nvEncGetEncodeProfileGUIDs lists",
                guid_str(g)
            ),
        ));
    };
    // Lines 451-466: level 0 (autoselect) or one of NV_ENC_LEVEL_HEVC_*; tier Main (0) or
    // High (1).
    if h.level != 0 && !LEVELS.contains(&h.level) {
        return Err(v(
            INVALID_PARAM,
            format!(
                "level {} is not 0 (autoselect) nor an NV_ENC_LEVEL_HEVC_* value {LEVELS:?}",
                h.level
            ),
        ));
    }
    if h.tier > 1 {
        return Err(v(
            INVALID_PARAM,
            format!(
                "tier {} is neither NV_ENC_TIER_HEVC_MAIN (0) nor HIGH (1)",
                h.tier
            ),
        ));
    }
    // Lines 1141-1148, 1516-1517: CU sizes are NV_ENC_HEVC_CUSIZE values; the largest CU is
    // 32x32 or left to the driver; the smallest no larger than the largest.
    let (min_cu, max_cu) = (h.minCUSize.0, h.maxCUSize.0);
    if min_cu > 4 || max_cu > 4 {
        return Err(v(
            INVALID_PARAM,
            format!(
                "minCUSize {min_cu} / maxCUSize {max_cu} are not NV_ENC_HEVC_CUSIZE values (0..4)"
            ),
        ));
    }
    if max_cu != 0 && max_cu != 3 {
        return Err(unsupported(format!(
            "maxCUSize {max_cu}: NVENC supports only NV_ENC_HEVC_CUSIZE_32x32 (3) or autoselect (0) (nvEncodeAPI.h line 1517)"
        )));
    }
    if min_cu != 0 && max_cu != 0 && min_cu > max_cu {
        return Err(v(
            INVALID_PARAM,
            format!("minCUSize {min_cu} is larger than maxCUSize {max_cu}"),
        ));
    }
    // Lines 1564-1571: sliceMode 0 (CTUs), 1 (bytes), 2 (CTU rows) or 3 (slice count).
    if h.sliceMode > 3 {
        return Err(v(
            INVALID_PARAM,
            format!("sliceMode {} is not 0..3", h.sliceMode),
        ));
    }
    // Line 1557: maxNumRefFramesInDPB; an HEVC DPB holds at most 16 pictures (H.265 A.4.2,
    // MaxDpbSize <= 16).
    if h.maxNumRefFramesInDPB > 16 {
        return Err(v(
            INVALID_PARAM,
            format!(
                "maxNumRefFramesInDPB {} exceeds the HEVC DPB of 16 pictures",
                h.maxNumRefFramesInDPB
            ),
        ));
    }
    // Lines 1523-1529: no LTR with B-frames; and this GPU reports NUM_MAX_LTR_FRAMES = 0.
    if h.enableLTR() != 0 {
        let why = if frame_interval_p > 1 {
            "LTRs are not supported with B-frames (nvEncodeAPI.h line 1529)"
        } else {
            "NV_ENC_CAPS_NUM_MAX_LTR_FRAMES is 0 on this GPU"
        };
        return Err(unsupported(format!("enableLTR: {why}")));
    }
    // Line 1548: alpha layer encoding needs SUPPORT_ALPHA_LAYER_ENCODING (0 here).
    if h.enableAlphaLayerEncoding() != 0 {
        return Err(unsupported(
            "enableAlphaLayerEncoding needs NV_ENC_CAPS_SUPPORT_ALPHA_LAYER_ENCODING, 0 on this GPU"
                .into(),
        ));
    }
    // Lines 670-672, 1085-1091, 1578: useBFramesAsRef is a NV_ENC_BFRAME_REF_MODE the cap
    // allows (this GPU: middle only).
    let b_ref = h.useBFramesAsRef.0;
    match b_ref {
        0 => {}
        1 | 2 if b_ref as c_int == BFRAME_REF_MODE => {}
        1 | 2 => {
            return Err(unsupported(format!(
                "useBFramesAsRef {b_ref} is not supported: NV_ENC_CAPS_SUPPORT_BFRAME_REF_MODE is {BFRAME_REF_MODE}"
            )))
        }
        other => {
            return Err(v(
                INVALID_PARAM,
                format!("useBFramesAsRef {other} is not a NV_ENC_BFRAME_REF_MODE (0..2)"),
            ))
        }
    }
    // Lines 1579-1582, 777: numRefL0/L1 are NV_ENC_NUM_REF_FRAMES (0 autoselect .. 7).
    if h.numRefL0.0 > 7 || h.numRefL1.0 > 7 {
        return Err(v(
            INVALID_PARAM,
            format!(
                "numRefL0 {} / numRefL1 {} are not NV_ENC_NUM_REF_FRAMES values (0..7)",
                h.numRefL0.0, h.numRefL1.0
            ),
        ));
    }
    Ok(Fields {
        idr_period: h.idrPeriod,
        repeat_sps_pps: h.repeatSPSPPS() != 0,
        filler: h.enableFillerDataInsertion() != 0,
        level: (h.level != 0).then_some(h.level),
        profile,
        tier: h.tier,
        max_dpb: h.maxNumRefFramesInDPB,
        use_b_as_ref: b_ref,
    })
}
