//! Placeholders for a documentation build (`DOCS_RS` set at build time, as on docs.rs), where
//! neither `nvEncodeAPI.h` nor libclang is available to generate the bindings.
//!
//! Each item carries a C name of the header so that this crate, and the crates documented above
//! it, compile for rustdoc; none has the C layout or value, so nothing here may reach the driver:
//! [`load`](crate::load) refuses to open a library in such a build. Only the names that this crate
//! and `nvencode` name in their item signatures are declared.

#![allow(non_camel_case_types, non_upper_case_globals)]

/// `NVENCAPI_MAJOR_VERSION`: 0 in a documentation build, which has no header.
pub const NVENCAPI_MAJOR_VERSION: u32 = 0;
/// `NVENCAPI_MINOR_VERSION`: 0 in a documentation build, which has no header.
pub const NVENCAPI_MINOR_VERSION: u32 = 0;
/// `NVENCAPI_VERSION`: 0 in a documentation build, which has no header.
pub const NVENCAPI_VERSION: u32 = 0;
/// `NV_ENCODE_API_FUNCTION_LIST_VER`: 0 in a documentation build, which has no header.
pub const NV_ENCODE_API_FUNCTION_LIST_VER: u32 = 0;

/// `NVENCSTATUS`: in a real build, a `#[repr(transparent)]` newtype over the C enum's integer
/// with one associated constant per status of the header.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct NVENCSTATUS(pub i32);

impl NVENCSTATUS {
    /// `NV_ENC_SUCCESS`.
    pub const NV_ENC_SUCCESS: Self = Self(0);

    /// The C name of this status; always `None` in a documentation build, which has no header.
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        None
    }
}

/// Declares placeholders for C structs and enums that this build cannot generate.
macro_rules! placeholders {
    ($($name:ident),* $(,)?) => {$(
        #[doc = concat!(
            "`", stringify!($name), "` from `nvEncodeAPI.h`: in a real build, bindgen's ",
            "declaration of it. A placeholder without fields in this documentation build."
        )]
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $name {
            _private: (),
        }
    )*};
}

placeholders!(
    GUID,
    NV_ENCODE_API_FUNCTION_LIST,
    NV_ENC_BUFFER_FORMAT,
    NV_ENC_CAPS,
    NV_ENC_CONFIG,
    NV_ENC_CONFIG_H264,
    NV_ENC_CONFIG_HEVC,
    NV_ENC_CUSTREAM_PTR,
    NV_ENC_INITIALIZE_PARAMS,
    NV_ENC_PIC_FLAGS,
    NV_ENC_PIC_PARAMS,
    NV_ENC_PIC_TYPE,
    NV_ENC_PRESET_CONFIG,
    NV_ENC_RECONFIGURE_PARAMS,
    NV_ENC_TUNING_INFO,
);

/// Every entry point of `NV_ENCODE_API_FUNCTION_LIST`: in a real build, one function-pointer field
/// per entry of the header. Empty in a documentation build.
#[derive(Clone, Debug)]
pub struct FunctionTable {
    _private: (),
}

impl FunctionTable {
    /// The C names of the entries: none in a documentation build.
    pub const ENTRY_NAMES: [&'static str; 0] = [];
}
