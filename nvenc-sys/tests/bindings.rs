//! Checks of what the build script derived from the header text: version words, GUIDs, the
//! function table, and a few layouts. The expected values are recomputed here from the header
//! the crate was built against (read independently of build.rs), so a wrong derivation fails.

use std::mem::{offset_of, size_of};

use nvenc_sys::*;

/// The header text, with spaces removed from every line, so that `( 1u<<31 )` and `(1u << 31)`
/// read the same.
fn header_lines() -> Vec<String> {
    let path = env!("NVENC_SYS_HEADER_PATH");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    text.lines()
        .map(|l| l.chars().filter(|c| !c.is_whitespace()).collect())
        .collect()
}

/// `(n, has_high_bit)` of `#define NAME ... NVENCAPI_STRUCT_VERSION(n) ...`, read from the header.
fn struct_version_in_header(name: &str) -> (u32, bool) {
    let prefix = format!("#define{name}");
    let line = header_lines()
        .into_iter()
        .find(|l| l.starts_with(&prefix) && l.contains("NVENCAPI_STRUCT_VERSION("))
        .unwrap_or_else(|| panic!("{name} is not defined in the header"));
    let after = line.split("NVENCAPI_STRUCT_VERSION(").nth(1).unwrap();
    let n: u32 = after[..after.find(')').unwrap()].parse().unwrap();
    let high = line.contains("|(1u<<31)") || line.contains("|(1<<31)");
    (n, high)
}

fn define_in_header(name: &str) -> u32 {
    let prefix = format!("#define{name}");
    let line = header_lines()
        .into_iter()
        .find(|l| l.starts_with(&prefix))
        .unwrap();
    line[prefix.len()..].parse().unwrap()
}

#[test]
fn api_version_matches_header_and_formula() {
    assert_eq!(
        NVENCAPI_MAJOR_VERSION,
        define_in_header("NVENCAPI_MAJOR_VERSION")
    );
    assert_eq!(
        NVENCAPI_MINOR_VERSION,
        define_in_header("NVENCAPI_MINOR_VERSION")
    );
    assert_eq!(
        NVENCAPI_VERSION,
        NVENCAPI_MAJOR_VERSION | (NVENCAPI_MINOR_VERSION << 24)
    );
    assert_eq!(ApiVersion::header().to_header_encoding(), NVENCAPI_VERSION);
}

#[test]
fn struct_versions_follow_the_formula() {
    let checks: [(&str, u32); 12] = [
        ("NV_ENC_CAPS_PARAM_VER", NV_ENC_CAPS_PARAM_VER),
        (
            "NV_ENC_CREATE_BITSTREAM_BUFFER_VER",
            NV_ENC_CREATE_BITSTREAM_BUFFER_VER,
        ),
        (
            "NV_ENC_MAP_INPUT_RESOURCE_VER",
            NV_ENC_MAP_INPUT_RESOURCE_VER,
        ),
        ("NV_ENC_PRESET_CONFIG_VER", NV_ENC_PRESET_CONFIG_VER),
        (
            "NV_ENC_SEQUENCE_PARAM_PAYLOAD_VER",
            NV_ENC_SEQUENCE_PARAM_PAYLOAD_VER,
        ),
        ("NV_ENC_CONFIG_VER", NV_ENC_CONFIG_VER),
        ("NV_ENC_INITIALIZE_PARAMS_VER", NV_ENC_INITIALIZE_PARAMS_VER),
        ("NV_ENC_PIC_PARAMS_VER", NV_ENC_PIC_PARAMS_VER),
        ("NV_ENC_LOCK_BITSTREAM_VER", NV_ENC_LOCK_BITSTREAM_VER),
        ("NV_ENC_REGISTER_RESOURCE_VER", NV_ENC_REGISTER_RESOURCE_VER),
        (
            "NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER",
            NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER,
        ),
        (
            "NV_ENCODE_API_FUNCTION_LIST_VER",
            NV_ENCODE_API_FUNCTION_LIST_VER,
        ),
    ];
    for (name, value) in checks {
        let (n, high) = struct_version_in_header(name);
        let expected = NVENCAPI_VERSION | (n << 16) | (0x7 << 28) | if high { 1 << 31 } else { 0 };
        assert_eq!(
            value, expected,
            "{name}: expected {expected:#010x}, got {value:#010x}"
        );
    }
}

/// The same derivation with numbers written out, for the 11.1 header only (Debian's
/// `libffmpeg-nvenc-dev`): NVENCAPI_VERSION = 11 | 1 << 24 = 0x0100000b, and the struct numbers
/// 11.1 states (CONFIG 7 | 1<<31, INITIALIZE_PARAMS 5 | 1<<31, FUNCTION_LIST 2).
#[test]
fn struct_versions_of_the_11_1_header() {
    if (NVENCAPI_MAJOR_VERSION, NVENCAPI_MINOR_VERSION) != (11, 1) {
        eprintln!(
            "skipped: built against API {}, not 11.1",
            ApiVersion::header()
        );
        return;
    }
    assert_eq!(NVENCAPI_VERSION, 0x0100_000b);
    assert_eq!(
        NV_ENC_CONFIG_VER,
        0x0100_000b | (7 << 16) | (0x7 << 28) | (1 << 31)
    );
    assert_eq!(NV_ENC_CONFIG_VER, 0xf107_000b);
    assert_eq!(NV_ENC_INITIALIZE_PARAMS_VER, 0xf105_000b);
    assert_eq!(NV_ENCODE_API_FUNCTION_LIST_VER, 0x7102_000b);
    // The five the formula test above also reads: CAPS_PARAM 1, CREATE_BITSTREAM_BUFFER 1,
    // MAP_INPUT_RESOURCE 4, PRESET_CONFIG 4 | 1<<31, SEQUENCE_PARAM_PAYLOAD 1 (11.1 lines 1161,
    // 1213, 2083, 1765, 2228).
    assert_eq!(NV_ENC_CAPS_PARAM_VER, 0x7101_000b);
    assert_eq!(NV_ENC_CREATE_BITSTREAM_BUFFER_VER, 0x7101_000b);
    assert_eq!(NV_ENC_MAP_INPUT_RESOURCE_VER, 0x7104_000b);
    assert_eq!(NV_ENC_PRESET_CONFIG_VER, 0xf104_000b);
    assert_eq!(NV_ENC_SEQUENCE_PARAM_PAYLOAD_VER, 0x7101_000b);
}

#[test]
fn h264_codec_guid_matches_header_text() {
    // Stable across SDK releases, and checked against the text of the header built from.
    assert_eq!(NV_ENC_CODEC_H264_GUID.Data1, 0x6bc8_2762);
    assert_eq!(NV_ENC_CODEC_H264_GUID.Data2, 0x4e63);
    assert_eq!(NV_ENC_CODEC_H264_GUID.Data3, 0x4ca4);
    assert_eq!(
        NV_ENC_CODEC_H264_GUID.Data4,
        [0xaa, 0x85, 0x1e, 0x50, 0xf3, 0x21, 0xf6, 0xbf]
    );

    let lines = header_lines();
    let at = lines
        .iter()
        .position(|l| l.contains("GUIDNV_ENC_CODEC_H264_GUID="))
        .unwrap();
    let init = format!("{}{}", lines[at], lines[at + 1]);
    let g = NV_ENC_CODEC_H264_GUID;
    let expected = format!(
        "{{{:#x},{:#x},{:#x},{{{}}}}};",
        g.Data1,
        g.Data2,
        g.Data3,
        g.Data4
            .iter()
            .map(|b| format!("{b:#x}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(
        init.ends_with(&expected),
        "header has `{init}`, constant is `{expected}`"
    );
}

#[test]
fn presets_p1_to_p7_are_distinct() {
    let presets = [
        NV_ENC_PRESET_P1_GUID,
        NV_ENC_PRESET_P2_GUID,
        NV_ENC_PRESET_P3_GUID,
        NV_ENC_PRESET_P4_GUID,
        NV_ENC_PRESET_P5_GUID,
        NV_ENC_PRESET_P6_GUID,
        NV_ENC_PRESET_P7_GUID,
    ];
    for (i, a) in presets.iter().enumerate() {
        for b in &presets[i + 1..] {
            assert_ne!(
                (a.Data1, a.Data2, a.Data3, a.Data4),
                (b.Data1, b.Data2, b.Data3, b.Data4)
            );
        }
    }
}

#[test]
fn layouts() {
    assert_eq!(size_of::<GUID>(), 16);
    assert_eq!(size_of::<NVENCSTATUS>(), 4);
    assert_eq!(offset_of!(NV_ENC_CONFIG, version), 0);
    assert_eq!(offset_of!(NV_ENC_INITIALIZE_PARAMS, version), 0);
    assert!(size_of::<NV_ENC_INITIALIZE_PARAMS>() > size_of::<GUID>() * 2);
    // version, reserved, then one pointer per slot (entry points and reserved pointers).
    let ptr = size_of::<*mut core::ffi::c_void>();
    let list = size_of::<NV_ENCODE_API_FUNCTION_LIST>();
    assert_eq!(
        offset_of!(NV_ENCODE_API_FUNCTION_LIST, nvEncOpenEncodeSession),
        8
    );
    assert_eq!((list - 8) % ptr, 0);
    assert!((list - 8) / ptr > FunctionTable::ENTRY_NAMES.len());
}

/// Exact sizes and offsets of the structs the driver reads, as the 11.1 header lays them out on a
/// 64-bit target. The figures are C's own: `sizeof`/`offsetof` of Debian's
/// `/usr/include/ffnvcodec/nvEncodeAPI.h` compiled by gcc 12.2 for x86-64. Two by hand:
/// `NV_ENC_CAPS_PARAM` = version 4 + capsToQuery 4 + reserved[62] 248 = 256;
/// `NV_ENC_CREATE_BITSTREAM_BUFFER` = 4 u32 16 + two pointers 16 + reserved1[58] 232 +
/// reserved2[64] pointers 512 = 776. A struct bindgen laid out differently from C (a lost
/// bit-field, a union sized wrong, a padding difference) would make the driver read the wrong
/// bytes; this fails instead.
#[test]
fn layouts_of_the_11_1_header() {
    if (NVENCAPI_MAJOR_VERSION, NVENCAPI_MINOR_VERSION) != (11, 1)
        || size_of::<*mut core::ffi::c_void>() != 8
    {
        eprintln!(
            "skipped: built against API {} (sizes here are the 11.1 header's, 64-bit)",
            ApiVersion::header()
        );
        return;
    }
    let sizes = [
        ("NV_ENC_CONFIG", size_of::<NV_ENC_CONFIG>(), 3584),
        ("NV_ENC_CONFIG_H264", size_of::<NV_ENC_CONFIG_H264>(), 1792),
        (
            "NV_ENC_CODEC_CONFIG",
            size_of::<NV_ENC_CODEC_CONFIG>(),
            1792,
        ),
        ("NV_ENC_RC_PARAMS", size_of::<NV_ENC_RC_PARAMS>(), 128),
        (
            "NV_ENC_INITIALIZE_PARAMS",
            size_of::<NV_ENC_INITIALIZE_PARAMS>(),
            1808,
        ),
        (
            "NV_ENC_RECONFIGURE_PARAMS",
            size_of::<NV_ENC_RECONFIGURE_PARAMS>(),
            1824,
        ),
        ("NV_ENC_PIC_PARAMS", size_of::<NV_ENC_PIC_PARAMS>(), 3344),
        (
            "NV_ENC_CODEC_PIC_PARAMS",
            size_of::<NV_ENC_CODEC_PIC_PARAMS>(),
            1536,
        ),
        (
            "NV_ENC_LOCK_BITSTREAM",
            size_of::<NV_ENC_LOCK_BITSTREAM>(),
            1544,
        ),
        (
            "NV_ENC_REGISTER_RESOURCE",
            size_of::<NV_ENC_REGISTER_RESOURCE>(),
            1536,
        ),
        (
            "NV_ENC_MAP_INPUT_RESOURCE",
            size_of::<NV_ENC_MAP_INPUT_RESOURCE>(),
            1544,
        ),
        (
            "NV_ENC_PRESET_CONFIG",
            size_of::<NV_ENC_PRESET_CONFIG>(),
            5128,
        ),
        ("NV_ENC_CAPS_PARAM", size_of::<NV_ENC_CAPS_PARAM>(), 256),
        (
            "NV_ENC_CREATE_BITSTREAM_BUFFER",
            size_of::<NV_ENC_CREATE_BITSTREAM_BUFFER>(),
            776,
        ),
        (
            "NV_ENC_CREATE_INPUT_BUFFER",
            size_of::<NV_ENC_CREATE_INPUT_BUFFER>(),
            776,
        ),
        (
            "NV_ENC_LOCK_INPUT_BUFFER",
            size_of::<NV_ENC_LOCK_INPUT_BUFFER>(),
            1544,
        ),
        (
            "NV_ENC_SEQUENCE_PARAM_PAYLOAD",
            size_of::<NV_ENC_SEQUENCE_PARAM_PAYLOAD>(),
            1544,
        ),
        (
            "NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS",
            size_of::<NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS>(),
            1552,
        ),
        (
            "NV_ENCODE_API_FUNCTION_LIST",
            size_of::<NV_ENCODE_API_FUNCTION_LIST>(),
            2552,
        ),
        ("NV_ENC_STAT", size_of::<NV_ENC_STAT>(), 1544),
    ];
    for (name, got, want) in sizes {
        assert_eq!(got, want, "sizeof({name})");
    }
    let offsets = [
        (
            "NV_ENC_CONFIG.rcParams",
            offset_of!(NV_ENC_CONFIG, rcParams),
            40,
        ),
        (
            "NV_ENC_CONFIG.encodeCodecConfig",
            offset_of!(NV_ENC_CONFIG, encodeCodecConfig),
            168,
        ),
        (
            "NV_ENC_INITIALIZE_PARAMS.encodeConfig",
            offset_of!(NV_ENC_INITIALIZE_PARAMS, encodeConfig),
            88,
        ),
        (
            "NV_ENC_INITIALIZE_PARAMS.tuningInfo",
            offset_of!(NV_ENC_INITIALIZE_PARAMS, tuningInfo),
            136,
        ),
        (
            "NV_ENC_PIC_PARAMS.encodePicFlags",
            offset_of!(NV_ENC_PIC_PARAMS, encodePicFlags),
            16,
        ),
        (
            "NV_ENC_PIC_PARAMS.inputBuffer",
            offset_of!(NV_ENC_PIC_PARAMS, inputBuffer),
            40,
        ),
        (
            "NV_ENC_PIC_PARAMS.codecPicParams",
            offset_of!(NV_ENC_PIC_PARAMS, codecPicParams),
            80,
        ),
        (
            "NV_ENC_LOCK_BITSTREAM.bitstreamBufferPtr",
            offset_of!(NV_ENC_LOCK_BITSTREAM, bitstreamBufferPtr),
            56,
        ),
        (
            "NV_ENC_REGISTER_RESOURCE.registeredResource",
            offset_of!(NV_ENC_REGISTER_RESOURCE, registeredResource),
            32,
        ),
        (
            "NV_ENCODE_API_FUNCTION_LIST.nvEncGetEncodePresetConfigEx",
            offset_of!(NV_ENCODE_API_FUNCTION_LIST, nvEncGetEncodePresetConfigEx),
            320,
        ),
        (
            "NV_ENCODE_API_FUNCTION_LIST.nvEncGetSequenceParamEx",
            offset_of!(NV_ENCODE_API_FUNCTION_LIST, nvEncGetSequenceParamEx),
            328,
        ),
    ];
    for (name, got, want) in offsets {
        assert_eq!(got, want, "offsetof({name})");
    }
}

#[test]
fn status_codes_are_newtypes_with_names() {
    // Values from the header's enum order (NVENC notes item 23).
    assert_eq!(NVENCSTATUS::NV_ENC_SUCCESS.0, 0);
    assert_eq!(NVENCSTATUS::NV_ENC_ERR_OUT_OF_MEMORY.0, 10);
    assert_eq!(NVENCSTATUS::NV_ENC_ERR_INVALID_VERSION.0, 15);
    assert_eq!(NVENCSTATUS::NV_ENC_ERR_NEED_MORE_INPUT.0, 17);
    assert!(NVENCSTATUS::NV_ENC_SUCCESS.is_success());
    assert!(!NVENCSTATUS::NV_ENC_ERR_GENERIC.is_success());
    assert_eq!(
        NVENCSTATUS::NV_ENC_ERR_INVALID_VERSION.name(),
        Some("NV_ENC_ERR_INVALID_VERSION")
    );
    assert_eq!(
        NVENCSTATUS::NV_ENC_ERR_INVALID_VERSION.to_string(),
        "NV_ENC_ERR_INVALID_VERSION (15)"
    );
    // A value no header defines is representable, and says so.
    let unknown = NVENCSTATUS(9999);
    assert_eq!(unknown.name(), None);
    assert_eq!(unknown.to_string(), "unknown NVENCSTATUS (9999)");
}

#[test]
fn pic_flags_combine_as_bits() {
    let flags = NV_ENC_PIC_FLAGS::NV_ENC_PIC_FLAG_FORCEIDR
        | NV_ENC_PIC_FLAGS::NV_ENC_PIC_FLAG_OUTPUT_SPSPPS;
    assert_eq!(flags.0, 2 | 4);
}

#[test]
fn function_table_from_zeroed_list_names_the_first_entry() {
    let list = NV_ENCODE_API_FUNCTION_LIST::default();
    assert_eq!(FunctionTable::ENTRY_NAMES[0], "nvEncOpenEncodeSession");
    assert_eq!(
        FunctionTable::from_list(&list).err(),
        Some("nvEncOpenEncodeSession")
    );
}

unsafe extern "C" fn fake_open(
    _device: *mut core::ffi::c_void,
    _device_type: u32,
    _encoder: *mut *mut core::ffi::c_void,
) -> NVENCSTATUS {
    NVENCSTATUS::NV_ENC_ERR_UNIMPLEMENTED
}

#[test]
fn function_table_reports_the_first_null_entry_in_header_order() {
    let list = NV_ENCODE_API_FUNCTION_LIST {
        nvEncOpenEncodeSession: Some(fake_open),
        ..Default::default()
    };
    assert_eq!(
        FunctionTable::from_list(&list).err(),
        Some(FunctionTable::ENTRY_NAMES[1])
    );
    assert_eq!(FunctionTable::ENTRY_NAMES[1], "nvEncGetEncodeGUIDCount");
}

#[test]
fn function_table_covers_every_list_entry() {
    let names = FunctionTable::ENTRY_NAMES;
    for required in [
        "nvEncOpenEncodeSessionEx",
        "nvEncEncodePicture",
        "nvEncLockBitstream",
        "nvEncDestroyEncoder",
    ] {
        assert!(
            names.contains(&required),
            "{required} missing from {names:?}"
        );
    }
    assert!(names.iter().all(|n| n.starts_with("nvEnc")));
    // Every `PNVENC... nvEnc...;` field of the list in the header, and nothing else.
    let lines = header_lines();
    let start = lines
        .iter()
        .position(|l| l.starts_with("typedefstruct_NV_ENCODE_API_FUNCTION_LIST"))
        .unwrap();
    let fields = lines[start..]
        .iter()
        .take_while(|l| !l.starts_with("}NV_ENCODE_API_FUNCTION_LIST;"))
        .filter(|l| l.starts_with("PNVENC"))
        .count();
    assert_eq!(fields, names.len());
}
