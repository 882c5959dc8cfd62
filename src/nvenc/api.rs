//! The thin layer over `nvenc-sys`: every call through the driver's function table is here, and
//! each returns `Result<_, NvencError>`. Above this module nothing touches a raw NVENC pointer.
//!
//! Handles (bitstream buffers, registered resources, mapped inputs) are owned, non-`Clone`
//! values that can only be created by [`RawEncoder`] and are given back to it by value to be
//! destroyed, so a handle cannot be used after it was freed or freed twice.

use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use nvenc_sys as sys;

use crate::cuda::{Context, PitchedBuffer};
use nvenc_sys::{Library, GUID, NVENCSTATUS};

use super::error::NvencError;
use super::watchdog::{Hung, Watchdog};

/// How often `nvEncEncodePicture` is retried while it returns `NV_ENC_ERR_ENCODER_BUSY`, and the
/// pause between tries (GStreamer's nvcodec uses the same 100 x 1 ms; see NVENC-NOTES item 16).
const BUSY_RETRIES: u32 = 100;
const BUSY_PAUSE: Duration = Duration::from_millis(1);

/// An open NVENC session.
#[derive(Debug)]
pub(crate) struct RawEncoder {
    lib: Arc<Library>,
    handle: NonNull<c_void>,
    /// Where the calls that may block forever run, once [`RawEncoder::start_watchdog`] was
    /// called; without it they run on the caller's thread.
    watchdog: Option<Watchdog<Blocking, Unblocked>>,
    /// The session's CUDA context, retained until after the session is destroyed (fields drop
    /// after `Drop::drop`).
    _context: Context,
    /// The stream given to `nvEncSetIOCudaStreams`, kept (at a fixed address) for the session.
    io_stream: Option<IoStream>,
}

mod params;
use params::IoStream;
pub(crate) use params::{h264_config, hevc_config, InitParams};

pub(crate) use calls::{Blocking, CallError, LateEnd, PicParams, SessionPtr, Unblocked};

// SAFETY: an NVENC session handle may be used from any thread in synchronous mode as long as
// calls on it are not concurrent; `RawEncoder` is only reachable through `&self`/`&mut self` of
// its single owner (the backend, which is `Send` but not `Sync`), whose calls through the
// watchdog's worker wait for the worker (or, once one hung, stop calling altogether), and the
// function table in `Library` is immutable.
unsafe impl Send for RawEncoder {}

/// An output bitstream buffer created by `nvEncCreateBitstreamBuffer`.
#[derive(Debug)]
pub(crate) struct BitstreamBuffer(NonNull<c_void>);

/// An external CUDA surface registered with `nvEncRegisterResource`, holding its memory until
/// it is unregistered.
#[derive(Debug)]
pub(crate) struct Registered {
    ptr: NonNull<c_void>,
    memory: Arc<PitchedBuffer>,
}

impl Registered {
    /// The registered memory.
    pub(crate) fn memory(&self) -> &Arc<PitchedBuffer> {
        &self.memory
    }
}

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
    /// `nvEncOpenEncodeSessionEx` on a CUDA context, which the session keeps retained.
    #[doc(alias = "nvEncOpenEncodeSessionEx")]
    pub(crate) fn open(lib: Arc<Library>, context: &Context) -> Result<Self, NvencError> {
        let mut params = versioned!(
            sys::NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS,
            sys::NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER
        );
        params.deviceType = sys::NV_ENC_DEVICE_TYPE::NV_ENC_DEVICE_TYPE_CUDA;
        params.device = context.raw();
        params.apiVersion = sys::NVENCAPI_VERSION;
        let mut handle: *mut c_void = std::ptr::null_mut();
        // SAFETY: `params` is a valid, versioned struct; `device` is a live CUDA context, which
        // the session keeps retained (`_context`); `handle` is a valid out-pointer.
        let status = unsafe { (lib.fns().open_encode_session_ex)(&mut params, &mut handle) };
        if status.is_success() {
            if let Some(handle) = NonNull::new(handle) {
                return Ok(RawEncoder {
                    lib,
                    handle,
                    watchdog: None,
                    _context: context.clone(),
                    io_stream: None,
                });
            }
        }
        // "If the creation of encoder session fails, the client must call NvEncDestroyEncoder
        // API before exiting" (nvEncodeAPI.h): a failed open may still have returned a handle.
        let detail = match NonNull::new(handle) {
            Some(handle) => {
                let failed = RawEncoder {
                    lib,
                    handle,
                    watchdog: None,
                    _context: context.clone(),
                    io_stream: None,
                };
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
        last_error_of(&self.lib, self.raw())
    }

    /// Runs the calls that may block forever (`nvEncEncodePicture`, `nvEncLockBitstream`) on a
    /// worker thread from now on, each awaited at most `deadline` (see `watchdog.rs`).
    ///
    /// # Errors
    /// When the operating system refuses a new thread.
    pub(crate) fn start_watchdog(
        &mut self,
        deadline: Duration,
        context: Context,
    ) -> std::io::Result<()> {
        let lib = Arc::clone(&self.lib);
        let session = SessionPtr(self.handle);
        let mut entered = false;
        let worker = Watchdog::spawn("nvenc-watchdog", deadline, move |call| {
            if !entered {
                // The session's CUDA context stays current on the worker for its whole life,
                // as it is on the caller's thread around every NVENC call. (The worker also
                // keeps the context alive while a hung call may still use it.)
                match context.push() {
                    Ok(guard) => {
                        std::mem::forget(guard);
                        entered = true;
                    }
                    Err(e) => tracing::warn!(error = %e, "NVENC worker without its CUDA context"),
                }
            }
            run_blocking(&lib, session, &context, call)
        })?;
        self.watchdog = Some(worker);
        Ok(())
    }

    /// The call that did not return within the watchdog's deadline, if one did not: the session
    /// must then not be called again, nor destroyed (see [`Watchdog::abandon`]).
    pub(crate) fn hung(&self) -> Option<Hung> {
        self.watchdog.as_ref().and_then(Watchdog::hung)
    }

    /// Takes the watchdog out, so the session can be handed with everything a hung call may use
    /// to [`Watchdog::abandon`]; from then on calls run on the caller's thread (the worker's,
    /// once the hung call has returned and it tears the session down).
    pub(crate) fn take_watchdog(&mut self) -> Option<Watchdog<Blocking, Unblocked>> {
        self.watchdog.take()
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

    /// `nvEncInitializeEncoder` with `init`'s params and config.
    #[doc(alias = "nvEncInitializeEncoder")]
    pub(crate) fn initialize(&self, init: &mut InitParams) -> Result<(), NvencError> {
        let mut params = init.params;
        params.encodeConfig = &mut *init.config;
        // SAFETY: live session; `params` is a valid versioned struct whose `encodeConfig`
        // points at `init.config`, alive through the call; the driver copies both.
        let status = unsafe { (self.lib.fns().initialize_encoder)(self.raw(), &mut params) };
        self.check("nvEncInitializeEncoder", status)
    }

    /// `nvEncReconfigureEncoder`: a full copy of the init params (API.h: "Encoder session
    /// re-initialization parameters") with `config` as the new config; `reset` resets the
    /// encoder and forces an IDR.
    #[doc(alias = "nvEncReconfigureEncoder")]
    pub(crate) fn reconfigure(
        &self,
        init: &InitParams,
        config: &sys::NV_ENC_CONFIG,
        reset: bool,
    ) -> Result<(), CallError> {
        let mut params = versioned!(
            sys::NV_ENC_RECONFIGURE_PARAMS,
            sys::NV_ENC_RECONFIGURE_PARAMS_VER
        );
        params.reInitEncodeParams = init.params;
        params.set_resetEncoder(u32::from(reset));
        params.set_forceIDR(u32::from(reset));
        let mut request = Box::new(calls::Reconfigure {
            params,
            config: *config,
        });
        let Some(worker) = &self.watchdog else {
            return Ok(calls::reconfigure_on(&self.lib, self.raw(), &mut request)?);
        };
        match worker.call("nvEncReconfigureEncoder", Blocking::Reconfigure(request)) {
            Ok(Unblocked::Reconfigured(result)) => Ok(result?),
            Ok(_) => Err(CallError::Failed(mixed_up())),
            Err(hung) => Err(CallError::Hung(hung)),
        }
    }

    /// `nvEncGetEncodeCaps` on an open session: on the watchdog's worker once it runs.
    #[doc(alias = "nvEncGetEncodeCaps")]
    pub(crate) fn cap_bounded(&self, codec: GUID, cap: sys::NV_ENC_CAPS) -> Result<i32, CallError> {
        let Some(worker) = &self.watchdog else {
            return Ok(calls::caps_on(&self.lib, self.raw(), codec, cap)?);
        };
        match worker.call("nvEncGetEncodeCaps", Blocking::Caps(codec, cap)) {
            Ok(Unblocked::Caps(result)) => Ok(result?),
            Ok(_) => Err(CallError::Failed(mixed_up())),
            Err(hung) => Err(CallError::Hung(hung)),
        }
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

    /// `nvEncRegisterResource` for a pitched CUDA device allocation of the session's context,
    /// holding a `width x height` frame of `format` (`height * 3 / 2` rows); the registration
    /// keeps the memory allocated until it is unregistered.
    #[doc(alias = "nvEncRegisterResource")]
    pub(crate) fn register_cuda(
        &self,
        memory: Arc<PitchedBuffer>,
        width: u32,
        height: u32,
        format: sys::NV_ENC_BUFFER_FORMAT,
    ) -> Result<Registered, NvencError> {
        let surface = memory.surface();
        let pitch = u32::try_from(surface.pitch).ok();
        let fits = surface.width_bytes >= width as usize
            && surface.rows >= height as usize / 2 * 3 + (height as usize % 2);
        let Some(pitch) = pitch.filter(|_| fits) else {
            return Err(NvencError::new(
                "nvEncRegisterResource",
                NVENCSTATUS::NV_ENC_ERR_INVALID_PARAM,
                format!(
                    "a surface of {} rows x {} bytes (pitch {}) cannot hold a {width}x{height} \
                     frame (expected >= {} rows of >= {width} bytes, pitch < 2^32)",
                    surface.rows,
                    surface.width_bytes,
                    surface.pitch,
                    height as usize * 3 / 2
                ),
            ));
        };
        let mut params = versioned!(
            sys::NV_ENC_REGISTER_RESOURCE,
            sys::NV_ENC_REGISTER_RESOURCE_VER
        );
        params.resourceType =
            sys::NV_ENC_INPUT_RESOURCE_TYPE::NV_ENC_INPUT_RESOURCE_TYPE_CUDADEVICEPTR;
        params.width = width;
        params.height = height;
        params.pitch = pitch;
        params.resourceToRegister = surface.device_ptr as usize as *mut c_void;
        params.bufferFormat = format;
        params.bufferUsage = sys::NV_ENC_BUFFER_USAGE::NV_ENC_INPUT_IMAGE;
        // SAFETY: live session; valid versioned struct; the device allocation holds the whole
        // frame (checked above) and stays allocated while the registration (which keeps
        // `memory`) lives.
        let status = unsafe { (self.lib.fns().register_resource)(self.raw(), &mut params) };
        self.check("nvEncRegisterResource", status)?;
        NonNull::new(params.registeredResource)
            .map(|ptr| Registered { ptr, memory })
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
            unsafe { (self.lib.fns().unregister_resource)(self.raw(), resource.ptr.as_ptr()) };
        self.check("nvEncUnregisterResource", status)
            .map_err(|e| (resource, e))
    }
}

impl Drop for RawEncoder {
    fn drop(&mut self) {
        if let Some(hung) = self.hung() {
            // A call is still inside the session: destroying it now is not allowed. The owner
            // hands hung sessions to `Watchdog::abandon` instead; this is the safe default.
            tracing::error!(
                call = hung.call,
                "an NVENC session with a hung call is left open"
            );
            return;
        }
        // A failed destroy is tried once more: a session left open holds video memory (and a
        // GeForce session slot) until the process ends.
        for attempt in 1..=2 {
            // SAFETY: the session handle is live (a failed destroy leaves it so) and never used
            // after a successful one; the owner frees its buffers, registrations and mappings
            // before dropping the session (`NvencSession::teardown`).
            let status = unsafe { (self.lib.fns().destroy_encoder)(self.raw()) };
            if status.is_success() {
                return;
            }
            tracing::warn!(%status, attempt, "nvEncDestroyEncoder failed");
        }
    }
}

// The raw calls that run on the caller's thread or on the watchdog's worker (after the
// `versioned!` macro, which they use).
mod calls;
mod frames;
use calls::{last_error_of, mixed_up, run_blocking};
