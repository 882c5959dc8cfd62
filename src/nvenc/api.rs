//! The thin layer over `nvenc-sys`: every call through the driver's function table is here, and
//! each returns `Result<_, NvencError>`. Above this module nothing touches a raw NVENC pointer.
//!
//! Handles (bitstream buffers, registered resources, mapped inputs) are owned, non-`Clone`
//! values that can only be created by [`RawEncoder`] and are given back to it by value to be
//! destroyed, so a handle cannot be used after it was freed or freed twice.

use std::ffi::{c_void, CStr};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use nvenc_sys as sys;
use nvenc_sys::{Library, GUID, NVENCSTATUS};

use super::error::NvencError;

/// How often `nvEncEncodePicture` is retried while it returns `NV_ENC_ERR_ENCODER_BUSY`, and the
/// pause between tries (GStreamer's nvcodec uses the same 100 x 1 ms; see NVENC-NOTES item 16).
const BUSY_RETRIES: u32 = 100;
const BUSY_PAUSE: Duration = Duration::from_millis(1);

/// An open NVENC session.
#[derive(Debug)]
pub(crate) struct RawEncoder {
    lib: Arc<Library>,
    handle: NonNull<c_void>,
}

// SAFETY: an NVENC session handle may be used from any thread in synchronous mode as long as
// calls on it are not concurrent; `RawEncoder` is only reachable through `&self`/`&mut self` of
// its single owner (the backend, which is `Send` but not `Sync`), and the function table in
// `Library` is immutable.
unsafe impl Send for RawEncoder {}

/// An output bitstream buffer created by `nvEncCreateBitstreamBuffer`.
#[derive(Debug)]
pub(crate) struct BitstreamBuffer(NonNull<c_void>);

/// An external CUDA surface registered with `nvEncRegisterResource`.
#[derive(Debug)]
pub(crate) struct Registered(NonNull<c_void>);

/// A registered surface mapped for encoding with `nvEncMapInputResource`.
#[derive(Debug)]
pub(crate) struct Mapped {
    ptr: NonNull<c_void>,
    format: sys::NV_ENC_BUFFER_FORMAT,
}

// SAFETY: the pointers of these three handle types are opaque driver handles, never dereferenced
// by this crate, and only passed back to the session that created them, which is `Send` itself.
unsafe impl Send for BitstreamBuffer {}
// SAFETY: as above.
unsafe impl Send for Registered {}
// SAFETY: as above.
unsafe impl Send for Mapped {}

/// The outcome of a successful `nvEncEncodePicture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Submitted {
    /// Every picture submitted so far has its output ready to lock.
    OutputReady,
    /// The picture was buffered for reordering (`NV_ENC_ERR_NEED_MORE_INPUT`): not an error.
    NeedMoreInput,
}

/// One picture to encode.
#[derive(Debug)]
pub(crate) struct PictureInput<'a> {
    pub input: &'a Mapped,
    pub output: &'a BitstreamBuffer,
    pub width: u32,
    pub height: u32,
    pub pitch: u32,
    pub timestamp: u64,
    pub force_idr: bool,
    pub output_spspps: bool,
}

/// What `nvEncLockBitstream` said about an output, besides its bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LockedInfo {
    pub timestamp: u64,
    pub picture_type: sys::NV_ENC_PIC_TYPE,
}

/// A picture flag as the `u32` of `NV_ENC_PIC_PARAMS::encodePicFlags`.
#[allow(clippy::unnecessary_cast)] // The C enum is `c_uint` on Linux but `c_int` on Windows.
fn flag(flag: sys::NV_ENC_PIC_FLAGS) -> u32 {
    flag.0 as u32
}

/// Builds a zeroed NVENC struct (every field, reserved ones included, is 0 or NULL, as the API
/// requires) with its version field set.
macro_rules! versioned {
    ($ty:ty, $ver:expr) => {{
        let mut value = <$ty>::default();
        value.version = $ver;
        value
    }};
}

impl RawEncoder {
    /// `nvEncOpenEncodeSessionEx` on a CUDA context.
    ///
    /// # Safety
    /// `cuda_context` must be a live `CUcontext` that outlives the returned session.
    #[doc(alias = "nvEncOpenEncodeSessionEx")]
    pub(crate) unsafe fn open(
        lib: Arc<Library>,
        cuda_context: *mut c_void,
    ) -> Result<Self, NvencError> {
        let mut params = versioned!(
            sys::NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS,
            sys::NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER
        );
        params.deviceType = sys::NV_ENC_DEVICE_TYPE::NV_ENC_DEVICE_TYPE_CUDA;
        params.device = cuda_context;
        params.apiVersion = sys::NVENCAPI_VERSION;
        let mut handle: *mut c_void = std::ptr::null_mut();
        // SAFETY: `params` is a valid, versioned struct; `device` is a live CUDA context by this
        // function's contract; `handle` is a valid out-pointer.
        let status = unsafe { (lib.fns().open_encode_session_ex)(&mut params, &mut handle) };
        if status.is_success() {
            if let Some(handle) = NonNull::new(handle) {
                return Ok(RawEncoder { lib, handle });
            }
        }
        // "If the creation of encoder session fails, the client must call NvEncDestroyEncoder
        // API before exiting" (nvEncodeAPI.h): a failed open may still have returned a handle.
        let detail = match NonNull::new(handle) {
            Some(handle) => {
                let failed = RawEncoder { lib, handle };
                failed.last_error()
                // `failed` drops here and destroys the half-open session.
            }
            None => String::new(),
        };
        let status = if status.is_success() {
            NVENCSTATUS::NV_ENC_ERR_INVALID_PTR
        } else {
            status
        };
        Err(NvencError::new("nvEncOpenEncodeSessionEx", status, detail))
    }

    fn raw(&self) -> *mut c_void {
        self.handle.as_ptr()
    }

    /// `nvEncGetLastErrorString`, or an empty string.
    #[doc(alias = "nvEncGetLastErrorString")]
    pub(crate) fn last_error(&self) -> String {
        // SAFETY: the session handle is live for the lifetime of `self`.
        let text = unsafe { (self.lib.fns().get_last_error_string)(self.raw()) };
        if text.is_null() {
            return String::new();
        }
        // SAFETY: the driver returns a NUL-terminated string owned by the session, valid until
        // the next call on it; it is copied out at once.
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .trim()
            .to_owned()
    }

    fn check(&self, call: &'static str, status: NVENCSTATUS) -> Result<(), NvencError> {
        if status.is_success() {
            Ok(())
        } else {
            Err(NvencError::new(call, status, self.last_error()))
        }
    }

    /// `nvEncGetEncodeGUIDCount` + `nvEncGetEncodeGUIDs`.
    #[doc(alias = "nvEncGetEncodeGUIDs")]
    pub(crate) fn encode_guids(&self) -> Result<Vec<GUID>, NvencError> {
        let mut count = 0u32;
        // SAFETY: live session; valid out-pointer.
        let status = unsafe { (self.lib.fns().get_encode_guid_count)(self.raw(), &mut count) };
        self.check("nvEncGetEncodeGUIDCount", status)?;
        let mut guids = vec![GUID::default(); count as usize];
        let mut written = 0u32;
        // SAFETY: live session; `guids` has room for `count` GUIDs, the size passed.
        let status = unsafe {
            (self.lib.fns().get_encode_guids)(self.raw(), guids.as_mut_ptr(), count, &mut written)
        };
        self.check("nvEncGetEncodeGUIDs", status)?;
        guids.truncate(written.min(count) as usize);
        Ok(guids)
    }

    /// `nvEncGetInputFormatCount` + `nvEncGetInputFormats`.
    #[doc(alias = "nvEncGetInputFormats")]
    pub(crate) fn input_formats(
        &self,
        codec: GUID,
    ) -> Result<Vec<sys::NV_ENC_BUFFER_FORMAT>, NvencError> {
        let mut count = 0u32;
        // SAFETY: live session; valid out-pointer.
        let status =
            unsafe { (self.lib.fns().get_input_format_count)(self.raw(), codec, &mut count) };
        self.check("nvEncGetInputFormatCount", status)?;
        let mut formats =
            vec![sys::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_UNDEFINED; count as usize];
        let mut written = 0u32;
        // SAFETY: live session; `formats` has room for `count` entries, the size passed.
        let status = unsafe {
            (self.lib.fns().get_input_formats)(
                self.raw(),
                codec,
                formats.as_mut_ptr(),
                count,
                &mut written,
            )
        };
        self.check("nvEncGetInputFormats", status)?;
        formats.truncate(written.min(count) as usize);
        Ok(formats)
    }

    /// `nvEncGetEncodeCaps` for one capability.
    #[doc(alias = "nvEncGetEncodeCaps")]
    pub(crate) fn cap(&self, codec: GUID, cap: sys::NV_ENC_CAPS) -> Result<i32, NvencError> {
        let mut param = versioned!(sys::NV_ENC_CAPS_PARAM, sys::NV_ENC_CAPS_PARAM_VER);
        param.capsToQuery = cap;
        let mut value = 0i32;
        // SAFETY: live session; `param` is a valid versioned struct; valid out-pointer.
        let status =
            unsafe { (self.lib.fns().get_encode_caps)(self.raw(), codec, &mut param, &mut value) };
        self.check("nvEncGetEncodeCaps", status)?;
        Ok(value)
    }

    /// `nvEncGetEncodePresetConfigEx`: the driver's configuration for a preset and tuning.
    #[doc(alias = "nvEncGetEncodePresetConfigEx")]
    pub(crate) fn preset_config(
        &self,
        codec: GUID,
        preset: GUID,
        tuning: sys::NV_ENC_TUNING_INFO,
    ) -> Result<Box<sys::NV_ENC_PRESET_CONFIG>, NvencError> {
        let mut config = Box::new(versioned!(
            sys::NV_ENC_PRESET_CONFIG,
            sys::NV_ENC_PRESET_CONFIG_VER
        ));
        config.presetCfg.version = sys::NV_ENC_CONFIG_VER;
        // SAFETY: live session; `config` is a valid versioned struct with a versioned inner
        // config, which the driver fills.
        let status = unsafe {
            (self.lib.fns().get_encode_preset_config_ex)(
                self.raw(),
                codec,
                preset,
                tuning,
                &mut *config,
            )
        };
        self.check("nvEncGetEncodePresetConfigEx", status)?;
        Ok(config)
    }

    /// `nvEncInitializeEncoder`.
    ///
    /// `params.encodeConfig` must be null or point at a config that lives through the call; the
    /// caller builds both together (see `session.rs`).
    #[doc(alias = "nvEncInitializeEncoder")]
    pub(crate) fn initialize(
        &self,
        params: &mut sys::NV_ENC_INITIALIZE_PARAMS,
    ) -> Result<(), NvencError> {
        // SAFETY: live session; `params` is a valid versioned struct whose `encodeConfig` is
        // null or points at a live config (the caller's contract above); the driver copies both.
        let status = unsafe { (self.lib.fns().initialize_encoder)(self.raw(), params) };
        self.check("nvEncInitializeEncoder", status)
    }

    /// `nvEncReconfigureEncoder`: `params.reInitEncodeParams` is a full copy of the init params
    /// (API.h: "Encoder session re-initialization parameters"), with its `encodeConfig` pointing
    /// at a config that lives through the call.
    #[doc(alias = "nvEncReconfigureEncoder")]
    pub(crate) fn reconfigure(
        &self,
        params: &mut sys::NV_ENC_RECONFIGURE_PARAMS,
    ) -> Result<(), NvencError> {
        // SAFETY: live, initialized session; `params` is a valid versioned struct whose
        // `reInitEncodeParams.encodeConfig` is null or points at a live config (the caller's
        // contract above); the driver copies both.
        let status = unsafe { (self.lib.fns().reconfigure_encoder)(self.raw(), params) };
        self.check("nvEncReconfigureEncoder", status)
    }

    /// `nvEncCreateBitstreamBuffer`.
    #[doc(alias = "nvEncCreateBitstreamBuffer")]
    pub(crate) fn create_bitstream_buffer(&self) -> Result<BitstreamBuffer, NvencError> {
        let mut params = versioned!(
            sys::NV_ENC_CREATE_BITSTREAM_BUFFER,
            sys::NV_ENC_CREATE_BITSTREAM_BUFFER_VER
        );
        // SAFETY: live session; valid versioned struct.
        let status = unsafe { (self.lib.fns().create_bitstream_buffer)(self.raw(), &mut params) };
        self.check("nvEncCreateBitstreamBuffer", status)?;
        NonNull::new(params.bitstreamBuffer)
            .map(BitstreamBuffer)
            .ok_or_else(|| {
                NvencError::new(
                    "nvEncCreateBitstreamBuffer",
                    NVENCSTATUS::NV_ENC_ERR_INVALID_PTR,
                    "null buffer".into(),
                )
            })
    }

    /// `nvEncDestroyBitstreamBuffer`.
    #[doc(alias = "nvEncDestroyBitstreamBuffer")]
    /// On failure the buffer is given back, so the caller can try again.
    pub(crate) fn destroy_bitstream_buffer(
        &self,
        buffer: BitstreamBuffer,
    ) -> Result<(), (BitstreamBuffer, NvencError)> {
        // SAFETY: live session; the buffer was created by it; on success it is consumed here and
        // never used again, on failure it is handed back still owned.
        let status =
            unsafe { (self.lib.fns().destroy_bitstream_buffer)(self.raw(), buffer.0.as_ptr()) };
        self.check("nvEncDestroyBitstreamBuffer", status)
            .map_err(|e| (buffer, e))
    }

    /// `nvEncRegisterResource` for a pitched CUDA device allocation.
    ///
    /// # Safety
    /// `device_ptr` must be a live device allocation of at least `pitch * rows` bytes (rows of the
    /// whole frame, chroma included) that stays allocated until the returned handle is given to
    /// [`RawEncoder::unregister`].
    #[doc(alias = "nvEncRegisterResource")]
    pub(crate) unsafe fn register_cuda(
        &self,
        device_ptr: u64,
        width: u32,
        height: u32,
        pitch: u32,
        format: sys::NV_ENC_BUFFER_FORMAT,
    ) -> Result<Registered, NvencError> {
        let mut params = versioned!(
            sys::NV_ENC_REGISTER_RESOURCE,
            sys::NV_ENC_REGISTER_RESOURCE_VER
        );
        params.resourceType =
            sys::NV_ENC_INPUT_RESOURCE_TYPE::NV_ENC_INPUT_RESOURCE_TYPE_CUDADEVICEPTR;
        params.width = width;
        params.height = height;
        params.pitch = pitch;
        params.resourceToRegister = device_ptr as usize as *mut c_void;
        params.bufferFormat = format;
        params.bufferUsage = sys::NV_ENC_BUFFER_USAGE::NV_ENC_INPUT_IMAGE;
        // SAFETY: live session; valid versioned struct; the device allocation is live and large
        // enough by this function's contract.
        let status = unsafe { (self.lib.fns().register_resource)(self.raw(), &mut params) };
        self.check("nvEncRegisterResource", status)?;
        NonNull::new(params.registeredResource)
            .map(Registered)
            .ok_or_else(|| {
                NvencError::new(
                    "nvEncRegisterResource",
                    NVENCSTATUS::NV_ENC_ERR_INVALID_PTR,
                    "null resource".into(),
                )
            })
    }

    /// `nvEncUnregisterResource`.
    #[doc(alias = "nvEncUnregisterResource")]
    /// On failure the resource is given back, so the caller can try again.
    pub(crate) fn unregister(&self, resource: Registered) -> Result<(), (Registered, NvencError)> {
        // SAFETY: live session; the resource was registered by it; consumed on success, handed
        // back on failure.
        let status =
            unsafe { (self.lib.fns().unregister_resource)(self.raw(), resource.0.as_ptr()) };
        self.check("nvEncUnregisterResource", status)
            .map_err(|e| (resource, e))
    }

    /// `nvEncMapInputResource`.
    #[doc(alias = "nvEncMapInputResource")]
    pub(crate) fn map(&self, resource: &Registered) -> Result<Mapped, NvencError> {
        let mut params = versioned!(
            sys::NV_ENC_MAP_INPUT_RESOURCE,
            sys::NV_ENC_MAP_INPUT_RESOURCE_VER
        );
        params.registeredResource = resource.0.as_ptr();
        // SAFETY: live session; valid versioned struct naming a resource registered by it.
        let status = unsafe { (self.lib.fns().map_input_resource)(self.raw(), &mut params) };
        self.check("nvEncMapInputResource", status)?;
        NonNull::new(params.mappedResource)
            .map(|ptr| Mapped {
                ptr,
                format: params.mappedBufferFmt,
            })
            .ok_or_else(|| {
                NvencError::new(
                    "nvEncMapInputResource",
                    NVENCSTATUS::NV_ENC_ERR_INVALID_PTR,
                    "null mapping".into(),
                )
            })
    }

    /// `nvEncUnmapInputResource`.
    #[doc(alias = "nvEncUnmapInputResource")]
    /// On failure the mapping is given back, so the caller can try again.
    pub(crate) fn unmap(&self, mapped: Mapped) -> Result<(), (Mapped, NvencError)> {
        // SAFETY: live session; the mapping was made by it; consumed on success, handed back on
        // failure.
        let status =
            unsafe { (self.lib.fns().unmap_input_resource)(self.raw(), mapped.ptr.as_ptr()) };
        self.check("nvEncUnmapInputResource", status)
            .map_err(|e| (mapped, e))
    }

    fn submit(&self, params: &mut sys::NV_ENC_PIC_PARAMS) -> Result<Submitted, NvencError> {
        for _ in 0..BUSY_RETRIES {
            // SAFETY: live session; `params` is a valid versioned struct whose input and output
            // handles (if any) belong to this session and are alive (they are borrowed by the
            // caller for the duration of this call).
            let status = unsafe { (self.lib.fns().encode_picture)(self.raw(), params) };
            match status {
                NVENCSTATUS::NV_ENC_SUCCESS => return Ok(Submitted::OutputReady),
                NVENCSTATUS::NV_ENC_ERR_NEED_MORE_INPUT => return Ok(Submitted::NeedMoreInput),
                NVENCSTATUS::NV_ENC_ERR_ENCODER_BUSY => std::thread::sleep(BUSY_PAUSE),
                other => {
                    return Err(NvencError::new(
                        "nvEncEncodePicture",
                        other,
                        self.last_error(),
                    ))
                }
            }
        }
        Err(NvencError::new(
            "nvEncEncodePicture",
            NVENCSTATUS::NV_ENC_ERR_ENCODER_BUSY,
            format!("still busy after {BUSY_RETRIES} tries {BUSY_PAUSE:?} apart"),
        ))
    }

    /// `nvEncEncodePicture` for one frame.
    #[doc(alias = "nvEncEncodePicture")]
    pub(crate) fn encode_picture(
        &self,
        picture: &PictureInput<'_>,
    ) -> Result<Submitted, NvencError> {
        let mut params = versioned!(sys::NV_ENC_PIC_PARAMS, sys::NV_ENC_PIC_PARAMS_VER);
        params.inputWidth = picture.width;
        params.inputHeight = picture.height;
        params.inputPitch = picture.pitch;
        params.inputBuffer = picture.input.ptr.as_ptr();
        params.bufferFmt = picture.input.format;
        params.outputBitstream = picture.output.0.as_ptr();
        params.inputTimeStamp = picture.timestamp;
        params.inputDuration = 1;
        params.pictureStruct = sys::NV_ENC_PIC_STRUCT::NV_ENC_PIC_STRUCT_FRAME;
        let mut flags = 0u32;
        if picture.force_idr {
            flags |= flag(sys::NV_ENC_PIC_FLAGS::NV_ENC_PIC_FLAG_FORCEIDR);
        }
        if picture.output_spspps {
            flags |= flag(sys::NV_ENC_PIC_FLAGS::NV_ENC_PIC_FLAG_OUTPUT_SPSPPS);
        }
        params.encodePicFlags = flags;
        self.submit(&mut params)
    }

    /// `nvEncEncodePicture` with `NV_ENC_PIC_FLAG_EOS` and no input: drains the encoder.
    #[doc(alias = "nvEncEncodePicture")]
    pub(crate) fn end_of_stream(&self) -> Result<Submitted, NvencError> {
        let mut params = versioned!(sys::NV_ENC_PIC_PARAMS, sys::NV_ENC_PIC_PARAMS_VER);
        params.encodePicFlags = flag(sys::NV_ENC_PIC_FLAGS::NV_ENC_PIC_FLAG_EOS);
        self.submit(&mut params)
    }

    /// `nvEncLockBitstream` (waiting), copy into `out`, `nvEncUnlockBitstream`.
    #[doc(alias = "nvEncLockBitstream")]
    pub(crate) fn read_bitstream(
        &self,
        buffer: &BitstreamBuffer,
        out: &mut Vec<u8>,
    ) -> Result<LockedInfo, NvencError> {
        let mut lock = versioned!(sys::NV_ENC_LOCK_BITSTREAM, sys::NV_ENC_LOCK_BITSTREAM_VER);
        lock.outputBitstream = buffer.0.as_ptr();
        // SAFETY: live session; valid versioned struct naming a bitstream buffer of this session
        // whose picture was submitted (the caller locks only submitted buffers, in order).
        let status = unsafe { (self.lib.fns().lock_bitstream)(self.raw(), &mut lock) };
        self.check("nvEncLockBitstream", status)?;
        let size = lock.bitstreamSizeInBytes as usize;
        let copied = if size == 0 {
            Ok(())
        } else if lock.bitstreamBufferPtr.is_null() {
            Err(NvencError::new(
                "nvEncLockBitstream",
                NVENCSTATUS::NV_ENC_ERR_INVALID_PTR,
                "null bitstream pointer".into(),
            ))
        } else {
            // SAFETY: while locked, the driver guarantees `bitstreamSizeInBytes` readable bytes
            // at `bitstreamBufferPtr`; they are copied before the unlock below.
            let bytes =
                unsafe { std::slice::from_raw_parts(lock.bitstreamBufferPtr.cast::<u8>(), size) };
            out.extend_from_slice(bytes);
            Ok(())
        };
        // Unlock even when the copy failed, so the buffer can be destroyed.
        // SAFETY: live session; the buffer was locked above.
        let status = unsafe { (self.lib.fns().unlock_bitstream)(self.raw(), buffer.0.as_ptr()) };
        copied?;
        self.check("nvEncUnlockBitstream", status)?;
        Ok(LockedInfo {
            timestamp: lock.outputTimeStamp,
            picture_type: lock.pictureType,
        })
    }

    /// `nvEncSetIOCudaStreams`: NVENC's input pre-processing and output post-processing run on
    /// `stream` instead of the default stream, ordered after the uploads queued there.
    ///
    /// # Safety
    /// `stream` must point at a live `CUstream` of the session's context that stays alive (and at
    /// the same address) for the life of the session.
    #[doc(alias = "nvEncSetIOCudaStreams")]
    pub(crate) unsafe fn set_io_cuda_streams(&self, stream: *mut c_void) -> Result<(), NvencError> {
        // SAFETY: live session; `stream` points at a live CUstream by this function's contract.
        let status = unsafe { (self.lib.fns().set_io_cuda_streams)(self.raw(), stream, stream) };
        self.check("nvEncSetIOCudaStreams", status)
    }

    /// `nvEncGetSequenceParams`: the SPS and PPS, Annex B.
    #[doc(alias = "nvEncGetSequenceParams")]
    pub(crate) fn sequence_params(&self) -> Result<Vec<u8>, NvencError> {
        let mut buf = vec![0u8; sys::NV_MAX_SEQ_HDR_LEN as usize];
        let mut size = 0u32;
        let mut payload = versioned!(
            sys::NV_ENC_SEQUENCE_PARAM_PAYLOAD,
            sys::NV_ENC_SEQUENCE_PARAM_PAYLOAD_VER
        );
        payload.inBufferSize = buf.len() as u32;
        payload.spsppsBuffer = buf.as_mut_ptr().cast();
        payload.outSPSPPSPayloadSize = &mut size;
        // SAFETY: live session; `payload` points at `buf` (its real size given) and at `size`,
        // both alive for the call.
        let status = unsafe { (self.lib.fns().get_sequence_params)(self.raw(), &mut payload) };
        self.check("nvEncGetSequenceParams", status)?;
        buf.truncate((size as usize).min(buf.len()));
        Ok(buf)
    }
}

impl Drop for RawEncoder {
    fn drop(&mut self) {
        // A failed destroy is tried once more: a session left open holds video memory (and a
        // GeForce session slot) until the process ends.
        for attempt in 1..=2 {
            // SAFETY: the session handle is live (a failed destroy leaves it so) and never used
            // after a successful one; the owner frees its buffers, registrations and mappings
            // before dropping the session (encoder.rs).
            let status = unsafe { (self.lib.fns().destroy_encoder)(self.raw()) };
            if status.is_success() {
                return;
            }
            tracing::warn!(%status, attempt, "nvEncDestroyEncoder failed");
        }
    }
}
