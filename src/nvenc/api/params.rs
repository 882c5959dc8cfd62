//! What a session keeps for the driver: its init params and config, the boxed IO stream handle,
//! and the codec members (H.264, HEVC) of the config union.

use nvenc_sys as sys;

use crate::cuda::Stream;

/// A `CUstream` handle in a box, so the address given to `nvEncSetIOCudaStreams` stays put, with
/// the stream it names, kept alive as long as the box.
pub(super) struct IoStream {
    pub(super) stream: Stream,
    pub(super) handle: Box<sys::NV_ENC_CUSTREAM_PTR>,
}

impl std::fmt::Debug for IoStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoStream").finish_non_exhaustive()
    }
}

// SAFETY: the box holds an opaque CUDA stream handle that this crate never dereferences; CUDA
// stream handles may be used from any thread.
unsafe impl Send for IoStream {}

/// The init params and config a session runs with: `nvEncReconfigureEncoder` takes a full copy
/// of them with the changed fields (API.h, `NV_ENC_RECONFIGURE_PARAMS::reInitEncodeParams`).
/// `params.encodeConfig` is null here; each call points it at `config` for its duration.
pub(crate) struct InitParams {
    pub params: sys::NV_ENC_INITIALIZE_PARAMS,
    pub config: Box<sys::NV_ENC_CONFIG>,
}

impl std::fmt::Debug for InitParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitParams")
            .field("width", &self.params.encodeWidth)
            .field("height", &self.params.encodeHeight)
            .field("frame_interval_p", &self.config.frameIntervalP)
            .finish_non_exhaustive()
    }
}

// SAFETY: both structs are plain data; their only pointers are `encodeConfig` (kept null),
// `privData` and the reserved arrays (null, as the API requires), so nothing is shared with
// another thread by moving them.
unsafe impl Send for InitParams {}

/// The H.264 member of an NVENC config's codec union: the one the driver reads when
/// `encodeGUID` is H.264's (`init::plan` writes it only then).
pub(crate) fn h264_config(config: &mut sys::NV_ENC_CONFIG) -> &mut sys::NV_ENC_CONFIG_H264 {
    // SAFETY: every member of the codec-config union is plain integers, enums of `u32`
    // newtypes and bit fields, with no invalid bit patterns (bindgen's enums here are
    // `#[repr(transparent)]` newtypes, not Rust enums), and the union is zero-initialized by
    // `Default`, so its bytes are a valid `NV_ENC_CONFIG_H264` whichever member was written
    // last.
    unsafe { &mut config.encodeCodecConfig.h264Config }
}

/// The HEVC member of an NVENC config's codec union: the one the driver reads when
/// `encodeGUID` is HEVC's (`init::plan` writes it only then).
pub(crate) fn hevc_config(config: &mut sys::NV_ENC_CONFIG) -> &mut sys::NV_ENC_CONFIG_HEVC {
    // SAFETY: as for `h264_config`: every member of the union is plain integers, `u32`
    // newtype enums and bit fields, with no invalid bit patterns, so its bytes are a valid
    // `NV_ENC_CONFIG_HEVC` whichever member was written last.
    unsafe { &mut config.encodeCodecConfig.hevcConfig }
}
