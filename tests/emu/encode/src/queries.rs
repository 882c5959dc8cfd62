//! What the emulated GPU offers: codec, profile, input-format and preset GUIDs, caps, and the
//! preset configurations (`nvEncGetEncode*`, `nvEncGetInputFormat*`, `nvEncGetEncodePreset*`).

use std::ffi::{c_int, c_void};

use nvenc_sys as nv;
use nvenc_sys::{GUID, NVENCSTATUS};

use crate::codec::Codec;
use crate::fail::{
    arg, check_version, f, guid_eq, guid_str, put, v, zero_ptr, zero_u32, Fail, INVALID_PARAM,
    INVALID_PTR, R, ST_SUCCESS,
};
use crate::state::{
    dyn_rate, run, Global, HEIGHT_MAX, HEIGHT_MIN, MAX_BFRAMES, WIDTH_MAX, WIDTH_MIN,
};

pub(crate) const PRESETS: [GUID; 7] = [
    nv::NV_ENC_PRESET_P1_GUID,
    nv::NV_ENC_PRESET_P2_GUID,
    nv::NV_ENC_PRESET_P3_GUID,
    nv::NV_ENC_PRESET_P4_GUID,
    nv::NV_ENC_PRESET_P5_GUID,
    nv::NV_ENC_PRESET_P6_GUID,
    nv::NV_ENC_PRESET_P7_GUID,
];

pub(crate) const PROFILES: [GUID; 4] = [
    nv::NV_ENC_CODEC_PROFILE_AUTOSELECT_GUID,
    nv::NV_ENC_H264_PROFILE_BASELINE_GUID,
    nv::NV_ENC_H264_PROFILE_MAIN_GUID,
    nv::NV_ENC_H264_PROFILE_HIGH_GUID,
];

pub(crate) const FORMATS: [nv::NV_ENC_BUFFER_FORMAT; 3] = [
    nv::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_NV12,
    nv::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_YV12,
    nv::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_IYUV,
];

/// The presets SDK 10 deprecated and SDK 12 removed, which the API 11.1 header still declares
/// (`NV_ENC_DEPRECATED`, nvEncodeAPI.h 11.1 lines 203-240) and drivers of that era still list
/// beside P1..P7 and accept. Each maps to a P preset and tuning as FFmpeg's `nvenc.c` maps them
/// (`PRESET_ALIAS`): (GUID, P index 0..6, tuning, name).
#[allow(deprecated)]
pub(crate) const LEGACY_PRESETS: [(GUID, usize, u32, &str); 9] = [
    (nv::NV_ENC_PRESET_DEFAULT_GUID, 3, TUNING_HQ, "DEFAULT"),
    (nv::NV_ENC_PRESET_HP_GUID, 0, TUNING_HQ, "HP"),
    (nv::NV_ENC_PRESET_HQ_GUID, 6, TUNING_HQ, "HQ"),
    (nv::NV_ENC_PRESET_BD_GUID, 4, TUNING_HQ, "BD"),
    (
        nv::NV_ENC_PRESET_LOW_LATENCY_DEFAULT_GUID,
        3,
        TUNING_LL,
        "LOW_LATENCY_DEFAULT",
    ),
    (
        nv::NV_ENC_PRESET_LOW_LATENCY_HP_GUID,
        0,
        TUNING_LL,
        "LOW_LATENCY_HP",
    ),
    (
        nv::NV_ENC_PRESET_LOW_LATENCY_HQ_GUID,
        6,
        TUNING_LL,
        "LOW_LATENCY_HQ",
    ),
    (
        nv::NV_ENC_PRESET_LOSSLESS_DEFAULT_GUID,
        3,
        TUNING_LOSSLESS,
        "LOSSLESS_DEFAULT",
    ),
    (
        nv::NV_ENC_PRESET_LOSSLESS_HP_GUID,
        0,
        TUNING_LOSSLESS,
        "LOSSLESS_HP",
    ),
];

/// `NV_ENC_TUNING_INFO` values.
pub(crate) const TUNING_HQ: u32 = 1;
pub(crate) const TUNING_LL: u32 = 2;
pub(crate) const TUNING_LOSSLESS: u32 = 4;

/// Whether the emulated GPU reports `NV_ENC_CAPS_SUPPORT_LOSSLESS_ENCODE` = 1
/// (`NVENC_EMU_LOSSLESS=1`; default 0).
pub(crate) fn lossless_cap() -> bool {
    std::env::var("NVENC_EMU_LOSSLESS").is_ok_and(|v| v == "1")
}

/// Every preset GUID `nvEncGetEncodePresetGUIDs` lists: P1..P7, then the legacy ones (the
/// lossless ones only where the GPU encodes lossless).
pub(crate) fn listed_presets() -> Vec<GUID> {
    let lossless = lossless_cap();
    PRESETS
        .iter()
        .copied()
        .chain(
            LEGACY_PRESETS
                .iter()
                .filter(|l| lossless || l.2 != TUNING_LOSSLESS)
                .map(|l| l.0),
        )
        .collect()
}

/// A listed preset: its P index and, for a legacy preset, the tuning it implies.
pub(crate) fn preset_index(g: &GUID) -> Option<(usize, Option<u32>)> {
    if let Some(i) = PRESETS.iter().position(|p| guid_eq(p, g)) {
        return Some((i, None));
    }
    LEGACY_PRESETS
        .iter()
        .find(|l| guid_eq(&l.0, g))
        .map(|l| (l.1, Some(l.2)))
}

/// The "not a preset" failure.
pub(crate) fn unknown_preset(what: &str, g: &GUID) -> Fail {
    v(
        INVALID_PARAM,
        format!(
            "{what} {} is not a preset this driver lists (P1..P7 and the API 11.x legacy presets)",
            guid_str(g)
        ),
    )
}

/// Lossless coding asked of a GPU whose `NV_ENC_CAPS_SUPPORT_LOSSLESS_ENCODE` is 0: refused, as
/// the header asks clients to check that cap first (nvEncodeAPI.h 11.1 lines 1433-1434).
pub(crate) fn check_lossless(what: &str) -> Result<(), Fail> {
    if lossless_cap() {
        Ok(())
    } else {
        Err(v(
            NVENCSTATUS::NV_ENC_ERR_UNSUPPORTED_PARAM,
            format!("{what} asks for lossless encoding, but NV_ENC_CAPS_SUPPORT_LOSSLESS_ENCODE is 0 on this GPU"),
        ))
    }
}

/// The codecs the emulated GPU lists, in `nvEncGetEncodeGUIDs` order: H.264 and HEVC (every
/// NVENC GPU since Maxwell GM206 encodes HEVC), unless `NVENC_EMU_CODECS` names fewer
/// (`h264`: a GPU without HEVC, as the first Maxwell and Kepler were).
pub(crate) fn listed_codecs() -> Vec<Codec> {
    let all = [Codec::H264, Codec::Hevc];
    match std::env::var("NVENC_EMU_CODECS") {
        Ok(list) => all
            .into_iter()
            .filter(|c| {
                list.split(',')
                    .any(|n| n.trim().eq_ignore_ascii_case(c.name()))
            })
            .collect(),
        Err(_) => all.to_vec(),
    }
}

fn codec_guid(c: Codec) -> GUID {
    match c {
        Codec::H264 => nv::NV_ENC_CODEC_H264_GUID,
        Codec::Hevc => nv::NV_ENC_CODEC_HEVC_GUID,
    }
}

/// The codec a GUID names, if this GPU lists it. A query about a codec the GPU does not list is
/// answered with `NV_ENC_ERR_INVALID_PARAM` (a client may well ask before listing the codecs:
/// not a violation); an unknown GUID is one.
pub(crate) fn check_codec(g: &GUID) -> Result<Codec, Fail> {
    let known = [Codec::H264, Codec::Hevc]
        .into_iter()
        .find(|&c| guid_eq(g, &codec_guid(c)));
    match known {
        Some(c) if listed_codecs().contains(&c) => Ok(c),
        Some(c) => Err(f(
            INVALID_PARAM,
            format!(
                "{} is not offered by this emulated device (NVENC_EMU_CODECS; nvEncGetEncodeGUIDs does not list it)",
                c.name()
            ),
        )),
        None => Err(v(
            INVALID_PARAM,
            format!("unknown codec GUID {}", guid_str(g)),
        )),
    }
}

/// The profile GUIDs listed for a codec.
pub(crate) fn profiles(c: Codec) -> &'static [GUID] {
    match c {
        Codec::H264 => &PROFILES,
        Codec::Hevc => &crate::hevc::PROFILES,
    }
}

pub(crate) unsafe extern "C" fn nvEncGetEncodeGUIDCount(
    enc: *mut c_void,
    n: *mut u32,
) -> NVENCSTATUS {
    run("nvEncGetEncodeGUIDCount", enc, |g| {
        g.sess(enc)?;
        // SAFETY: out-pointer per the API.
        unsafe { put(n, listed_codecs().len() as u32, "encodeGUIDCount") }?;
        Ok(ST_SUCCESS)
    })
}

/// Writes `items` into a client array of `size` entries.
///
/// # Safety
///
/// `arr` must be null or writable for `size` entries; `count` null or writable.
pub(crate) unsafe fn fill<T: Copy>(items: &[T], arr: *mut T, size: u32, count: *mut u32) -> R {
    if arr.is_null() {
        return Err(v(INVALID_PTR, "array is NULL"));
    }
    if (size as usize) < items.len() {
        return Err(v(
            INVALID_PARAM,
            format!(
                "array holds {size} entries, {} needed (ask for the count first)",
                items.len()
            ),
        ));
    }
    for (i, it) in items.iter().enumerate() {
        // SAFETY: `i < items.len() <= size` and the client's array holds `size` entries.
        unsafe { arr.wrapping_add(i).write(*it) };
    }
    // SAFETY: forwarded contract.
    unsafe { put(count, items.len() as u32, "count") }?;
    Ok(ST_SUCCESS)
}

pub(crate) unsafe extern "C" fn nvEncGetEncodeGUIDs(
    enc: *mut c_void,
    guids: *mut GUID,
    size: u32,
    count: *mut u32,
) -> NVENCSTATUS {
    run("nvEncGetEncodeGUIDs", enc, |g| {
        g.sess(enc)?;
        // SAFETY: the client's array and count pointers (API contract).
        let listed: Vec<GUID> = listed_codecs().into_iter().map(codec_guid).collect();
        // SAFETY: the client's array and count pointers (API contract).
        unsafe { fill(&listed, guids, size, count) }
    })
}

pub(crate) unsafe extern "C" fn nvEncGetEncodeProfileGUIDCount(
    enc: *mut c_void,
    codec: GUID,
    n: *mut u32,
) -> NVENCSTATUS {
    run("nvEncGetEncodeProfileGUIDCount", enc, |g| {
        g.sess(enc)?;
        let c = check_codec(&codec)?;
        // SAFETY: out-pointer per the API.
        unsafe { put(n, profiles(c).len() as u32, "encodeProfileGUIDCount") }?;
        Ok(ST_SUCCESS)
    })
}

pub(crate) unsafe extern "C" fn nvEncGetEncodeProfileGUIDs(
    enc: *mut c_void,
    codec: GUID,
    guids: *mut GUID,
    size: u32,
    count: *mut u32,
) -> NVENCSTATUS {
    run("nvEncGetEncodeProfileGUIDs", enc, |g| {
        g.sess(enc)?;
        let c = check_codec(&codec)?;
        // SAFETY: the client's array and count pointers (API contract).
        unsafe { fill(profiles(c), guids, size, count) }
    })
}

pub(crate) unsafe extern "C" fn nvEncGetInputFormatCount(
    enc: *mut c_void,
    codec: GUID,
    n: *mut u32,
) -> NVENCSTATUS {
    run("nvEncGetInputFormatCount", enc, |g| {
        g.sess(enc)?;
        check_codec(&codec)?;
        // SAFETY: out-pointer per the API.
        unsafe { put(n, FORMATS.len() as u32, "inputFmtCount") }?;
        Ok(ST_SUCCESS)
    })
}

pub(crate) unsafe extern "C" fn nvEncGetInputFormats(
    enc: *mut c_void,
    codec: GUID,
    fmts: *mut nv::NV_ENC_BUFFER_FORMAT,
    size: u32,
    count: *mut u32,
) -> NVENCSTATUS {
    run("nvEncGetInputFormats", enc, |g| {
        g.sess(enc)?;
        check_codec(&codec)?;
        // SAFETY: the client's array and count pointers (API contract).
        unsafe { fill(&FORMATS, fmts, size, count) }
    })
}

/// `nvEncGetEncodeCaps` of `cap` for `codec`: H.264's table, with HEVC's own answers first
/// (`hevc::cap_value`).
pub(crate) fn cap_value(codec: Codec, cap: u32) -> Option<c_int> {
    if codec == Codec::Hevc {
        if let Some(v) = crate::hevc::cap_value(cap) {
            return Some(v);
        }
    }
    Some(match cap {
        0 => MAX_BFRAMES as c_int,                             // NUM_MAX_BFRAMES
        1 => 0x7,                                              // SUPPORTED_RATECONTROL_MODES
        2 => 0,                                                // FIELD_ENCODING
        3 => 0,                                                // MONOCHROME
        4 => 0,                                                // FMO
        5 => 1,                                                // QPELMV
        6 => 1,                                                // BDIRECT_MODE
        7 => 1,                                                // CABAC
        8 => 1,                                                // ADAPTIVE_TRANSFORM
        9 => 0,                                                // STEREO_MVC
        10 => 1,                                               // NUM_MAX_TEMPORAL_LAYERS
        11 | 12 => 0,                                          // HIERARCHICAL P/B
        13 => 52,                                              // LEVEL_MAX (5.2)
        14 => 10,                                              // LEVEL_MIN (1.0)
        15 => 0,                                               // SEPARATE_COLOUR_PLANE
        16 => WIDTH_MAX as c_int,                              // WIDTH_MAX
        17 => HEIGHT_MAX as c_int,                             // HEIGHT_MAX
        18 => 0,                                               // TEMPORAL_SVC
        19 => 1,                                               // DYN_RES_CHANGE
        20 => c_int::from(dyn_rate()),                         // DYN_BITRATE_CHANGE
        21 => 1,                                               // DYN_FORCE_CONSTQP
        22 => c_int::from(dyn_rate()),                         // DYN_RCMODE_CHANGE
        23 => 0,                                               // SUBFRAME_READBACK
        24 => 1,                                               // CONSTRAINED_ENCODING
        25 => 1,                                               // INTRA_REFRESH
        26 => 1,                                               // CUSTOM_VBV_BUF_SIZE
        27 => 1,                                               // DYNAMIC_SLICE_MODE
        28 => 0,                                               // REF_PIC_INVALIDATION
        29 => 0,                                               // PREPROC_SUPPORT
        30 => 0,                                               // ASYNC_ENCODE_SUPPORT (Linux)
        31 => ((WIDTH_MAX / 16) * (HEIGHT_MAX / 16)) as c_int, // MB_NUM_MAX
        32 => 983_040,                                         // MB_PER_SEC_MAX
        33 => 0,                                               // YUV444_ENCODE
        34 => c_int::from(lossless_cap()),                     // LOSSLESS_ENCODE
        35 => 0,                                               // SAO (HEVC)
        36 => 0,                                               // MEONLY_MODE
        37 => 1,                                               // LOOKAHEAD
        38 => 1,                                               // TEMPORAL_AQ
        39 => 0,                                               // 10BIT_ENCODE
        40 => 0,                                               // NUM_MAX_LTR_FRAMES
        41 => 1,                                               // WEIGHTED_PREDICTION
        42 => 100,                                             // DYNAMIC_QUERY_ENCODER_CAPACITY
        43 => 1,                                               // BFRAME_REF_MODE
        44 => 0,                                               // EMPHASIS_LEVEL_MAP
        45 => WIDTH_MIN as c_int,                              // WIDTH_MIN
        46 => HEIGHT_MIN as c_int,                             // HEIGHT_MIN
        47 => 1,                                               // MULTIPLE_REF_FRAMES
        48 => 0,                                               // ALPHA_LAYER_ENCODING
        49 => 1,                                               // NUM_ENCODER_ENGINES
        50 => 0,                                               // SINGLE_SLICE_INTRA_REFRESH
        _ => return None,
    })
}

pub(crate) unsafe extern "C" fn nvEncGetEncodeCaps(
    enc: *mut c_void,
    codec: GUID,
    p: *mut nv::NV_ENC_CAPS_PARAM,
    val: *mut c_int,
) -> NVENCSTATUS {
    run("nvEncGetEncodeCaps", enc, |g| {
        g.sess(enc)?;
        let codec = check_codec(&codec)?;
        // SAFETY: the client's caps struct (API contract).
        let p = unsafe { arg(p, "capsParam") }?;
        check_version(p.version, nv::NV_ENC_CAPS_PARAM_VER, "NV_ENC_CAPS_PARAM")?;
        zero_u32(&p.reserved, "NV_ENC_CAPS_PARAM.reserved")?;
        let c = cap_value(codec, p.capsToQuery.0)
            .ok_or_else(|| v(INVALID_PARAM, format!("unknown cap {}", p.capsToQuery.0)))?;
        // SAFETY: out-pointer per the API.
        unsafe { put(val, c, "capsVal") }?;
        Ok(ST_SUCCESS)
    })
}

pub(crate) unsafe extern "C" fn nvEncGetEncodePresetCount(
    enc: *mut c_void,
    codec: GUID,
    n: *mut u32,
) -> NVENCSTATUS {
    run("nvEncGetEncodePresetCount", enc, |g| {
        g.sess(enc)?;
        check_codec(&codec)?;
        // SAFETY: out-pointer per the API.
        unsafe { put(n, listed_presets().len() as u32, "encodePresetGUIDCount") }?;
        Ok(ST_SUCCESS)
    })
}

pub(crate) unsafe extern "C" fn nvEncGetEncodePresetGUIDs(
    enc: *mut c_void,
    codec: GUID,
    guids: *mut GUID,
    size: u32,
    count: *mut u32,
) -> NVENCSTATUS {
    run("nvEncGetEncodePresetGUIDs", enc, |g| {
        g.sess(enc)?;
        check_codec(&codec)?;
        // SAFETY: the client's array and count pointers (API contract).
        unsafe { fill(&listed_presets(), guids, size, count) }
    })
}

/// The NV_ENC_CONFIG a preset and tuning give for `codec`.
pub(crate) fn preset_config(codec: Codec, preset: usize, tuning: u32) -> nv::NV_ENC_CONFIG {
    // SAFETY: NV_ENC_CONFIG is a plain C struct (integers, GUIDs, unions of such, NULL pointers)
    // for which all-zero bytes are valid; the API itself asks clients to zero it.
    let mut c: nv::NV_ENC_CONFIG = unsafe { std::mem::zeroed() };
    let low_latency = matches!(tuning, 2 | 3);
    c.version = nv::NV_ENC_CONFIG_VER;
    c.profileGUID = nv::NV_ENC_CODEC_PROFILE_AUTOSELECT_GUID;
    c.gopLength = if low_latency {
        nv::NVENC_INFINITE_GOPLENGTH
    } else {
        250
    };
    c.frameIntervalP = 1;
    c.frameFieldMode = nv::NV_ENC_PARAMS_FRAME_FIELD_MODE::NV_ENC_PARAMS_FRAME_FIELD_MODE_FRAME;
    c.rcParams.version = nv::NV_ENC_RC_PARAMS_VER;
    c.rcParams.rateControlMode = if low_latency {
        nv::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_CBR
    } else {
        nv::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_VBR
    };
    c.rcParams.averageBitRate = 5_000_000 - 400_000 * preset as u32;
    c.rcParams.constQP = nv::NV_ENC_QP {
        qpInterP: 28,
        qpInterB: 31,
        qpIntra: 25,
    };
    if codec == Codec::Hevc {
        crate::hevc::preset_defaults(&mut c, tuning == TUNING_LOSSLESS);
        return c;
    }
    // SAFETY: writing the H.264 member of the codec-config union of a zeroed struct.
    let h = unsafe { &mut c.encodeCodecConfig.h264Config };
    h.idrPeriod = c.gopLength;
    h.chromaFormatIDC = 1;
    h.level = 0;
    if tuning == TUNING_LOSSLESS {
        // What the header asks of a lossless encode (nvEncodeAPI.h 11.1 line 1433): transform
        // bypass, constant QP 0, High 4:4:4 Predictive.
        h.set_qpPrimeYZeroTransformBypassFlag(1);
        c.profileGUID = nv::NV_ENC_H264_PROFILE_HIGH_444_GUID;
        c.rcParams.rateControlMode = nv::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_CONSTQP;
        c.rcParams.constQP = nv::NV_ENC_QP {
            qpInterP: 0,
            qpInterB: 0,
            qpIntra: 0,
        };
    }
    c
}

pub(crate) fn preset_common(
    g: &mut Global,
    enc: *mut c_void,
    codec: &GUID,
    preset: &GUID,
    tuning: Option<u32>,
    p: *mut nv::NV_ENC_PRESET_CONFIG,
) -> R {
    g.sess(enc)?;
    let codec = check_codec(codec)?;
    let (idx, implied) = preset_index(preset).ok_or_else(|| unknown_preset("preset", preset))?;
    // A legacy preset carries its tuning; nvEncGetEncodePresetConfig (no tuning argument) gives
    // P presets their high-quality configuration.
    let tuning = match (tuning, implied) {
        (None | Some(0), Some(t)) => t,
        (None, None) => TUNING_HQ,
        (Some(t), _) => t,
    };
    if tuning == TUNING_LOSSLESS {
        check_lossless("the preset configuration")?;
    }
    if tuning == 0 || tuning > 4 {
        return Err(v(
            INVALID_PARAM,
            format!("tuningInfo {tuning} is not HIGH_QUALITY..LOSSLESS (1..4)"),
        ));
    }
    // SAFETY: the client's preset config struct (API contract).
    let p = unsafe { arg(p, "presetConfig") }?;
    check_version(
        p.version,
        nv::NV_ENC_PRESET_CONFIG_VER,
        "NV_ENC_PRESET_CONFIG",
    )?;
    check_version(
        p.presetCfg.version,
        nv::NV_ENC_CONFIG_VER,
        "NV_ENC_PRESET_CONFIG.presetCfg",
    )?;
    zero_u32(&p.reserved1, "NV_ENC_PRESET_CONFIG.reserved1")?;
    zero_ptr(&p.reserved2, "NV_ENC_PRESET_CONFIG.reserved2")?;
    p.presetCfg = preset_config(codec, idx, tuning);
    Ok(ST_SUCCESS)
}

pub(crate) unsafe extern "C" fn nvEncGetEncodePresetConfig(
    enc: *mut c_void,
    codec: GUID,
    preset: GUID,
    p: *mut nv::NV_ENC_PRESET_CONFIG,
) -> NVENCSTATUS {
    run("nvEncGetEncodePresetConfig", enc, |g| {
        preset_common(g, enc, &codec, &preset, None, p)
    })
}

pub(crate) unsafe extern "C" fn nvEncGetEncodePresetConfigEx(
    enc: *mut c_void,
    codec: GUID,
    preset: GUID,
    tuning: nv::NV_ENC_TUNING_INFO,
    p: *mut nv::NV_ENC_PRESET_CONFIG,
) -> NVENCSTATUS {
    run("nvEncGetEncodePresetConfigEx", enc, |g| {
        preset_common(g, enc, &codec, &preset, Some(tuning.0), p)
    })
}
