//! The crate's CUDA layer: the only module (besides `nvenc-sys`) that calls the CUDA driver.
//!
//! It wraps cudarc: a [`Context`] (a device's retained primary context), a [`Stream`], a
//! [`ContextGuard`] that makes a context current and restores the caller's, a [`SavedContext`]
//! for code that calls into cudarc (which makes its contexts current rather than pushing them),
//! pinned host and pitched device allocations ([`PinnedBuffer`], [`PitchedBuffer`]) and the 2D
//! copies into a [`DeviceSurface`].
//!
//! cudarc appears in the API in two places only, for a producer that writes ring slots from its
//! own GPU work: a slot can be filled from a cudarc [`CudaSlice`](cudarc::driver::CudaSlice) or
//! view ([`CudaBytes`]), and [`Stream::cudarc`] / [`Context::cudarc`] hand out the cudarc
//! handles so the producer's kernels run on a slot's stream. The cudarc version this crate
//! uses is re-exported as [`cuda::cudarc`](cudarc); use it (or the same version) for those.
//!
//! The driver is loaded at run time (cudarc's `dynamic-loading`). cudarc's loader panics when
//! `libcuda` is missing, so every entry point here first checks [`available`] and returns
//! [`CudaError::Unavailable`] instead.
//!
//! Memory comes from the non-stream-ordered allocators only: `cuMemHostAlloc` for pinned memory,
//! `cuMemAllocPitch` for device memory. NVENC cannot register stream-ordered (`cuMemAllocAsync`)
//! memory, which is what cudarc's `CudaStream::alloc` returns on GPUs with memory pools, and
//! cudarc's `CudaContext::alloc_pinned` asks for write-combined memory, which is slow to read on
//! the CPU. Both are avoided on purpose.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::{result, sys};

mod copy;
mod frame_copy;
mod memory;

/// The cudarc crate, at the version this crate's API takes ([`CudaBytes`], [`Stream::cudarc`]).
pub use cudarc;

pub use copy::{
    copy_device_to_device_async, copy_host_to_device_async, copy_planes_async, download_planes,
    DeviceSource, Either, HostBytes, Pending, Plane, PlaneSource,
};
pub(crate) use copy::{plan_planes_async, PlannedUpload};
pub(crate) use frame_copy::{copy_from_cuda, copy_from_device_ptr};
pub use frame_copy::{CudaBytes, FrameCopyError, FrameLayout};
pub use memory::{DeviceSurface, PinnedBuffer, PitchedBuffer};

/// A CUDA driver call's failure: the `CUresult` code and the driver's description of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (CUresult {code})")]
pub struct DriverError {
    code: u32,
    message: String,
}

impl DriverError {
    fn of(e: &cudarc::driver::DriverError) -> Self {
        Self {
            code: e.0 as u32,
            message: e.to_string(),
        }
    }

    /// The driver's `CUresult` code.
    #[must_use]
    pub fn code(&self) -> u32 {
        self.code
    }
}

/// Why the CUDA layer could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CudaError {
    /// The CUDA driver cannot be used on this machine.
    #[error("CUDA is not available: {reason}")]
    Unavailable {
        /// Why, in words for a "why won't this work on my machine" report.
        reason: String,
    },
    /// A driver call failed.
    #[error("CUDA call {call} failed: {source}")]
    Call {
        /// The driver entry point that failed.
        call: &'static str,
        /// The driver's error.
        #[source]
        source: DriverError,
    },
    /// The driver returned no memory for an allocation that it reported as successful.
    #[error("could not allocate {bytes} bytes of CUDA memory")]
    AllocFailed {
        /// Bytes asked for.
        bytes: usize,
    },
    /// A 2D copy whose source is too short or whose pitch is smaller than a row.
    #[error(
        "invalid 2D copy of {rows} rows x {width_bytes} bytes from a source of {src_len} bytes \
         with pitch {src_pitch} (expected pitch >= {width_bytes} and len >= \
         pitch x (rows - 1) + width)"
    )]
    InvalidCopy {
        /// Bytes in a row of the destination.
        width_bytes: usize,
        /// Rows of the destination.
        rows: usize,
        /// Bytes between source rows.
        src_pitch: usize,
        /// Bytes of the source (`usize::MAX` for device memory, whose length is not known).
        src_len: usize,
    },
}

fn call(call: &'static str) -> impl Fn(cudarc::driver::DriverError) -> CudaError {
    move |e| CudaError::Call {
        call,
        source: DriverError::of(&e),
    }
}

/// Checks, without panicking, that the CUDA driver library can be loaded.
///
/// # Errors
/// [`CudaError::Unavailable`] when `libcuda` (`nvcuda.dll`) cannot be loaded, saying so.
pub fn available() -> Result<(), CudaError> {
    if cfg!(miri) {
        return Err(CudaError::Unavailable {
            reason: "the CUDA driver cannot be loaded under Miri".to_owned(),
        });
    }
    // SAFETY: `is_culib_present` only tries `dlopen` on the driver's library names and closes what
    // it opened; loading the NVIDIA driver library runs no initialization that could break Rust
    // invariants.
    let present = unsafe { sys::is_culib_present() };
    if present {
        Ok(())
    } else {
        Err(CudaError::Unavailable {
            reason: "the CUDA driver library (libcuda.so.1 / nvcuda.dll) was not found; \
                     is the NVIDIA driver installed (and, in a container, injected)?"
                .to_owned(),
        })
    }
}

/// Runs `cuInit` after checking that the driver is present (`cuInit` may run any number of times).
fn init() -> Result<(), CudaError> {
    available()?;
    result::init().map_err(call("cuInit"))
}

/// The number of CUDA devices (`cuDeviceGetCount`).
///
/// # Errors
/// [`CudaError::Unavailable`] without a driver; [`CudaError::Call`] when `cuInit` or the count
/// fails.
pub fn device_count() -> Result<usize, CudaError> {
    init()?;
    let count = result::device::get_count().map_err(call("cuDeviceGetCount"))?;
    Ok(usize::try_from(count).unwrap_or(0))
}

/// The UUID of device `ordinal` (`cuDeviceGetUuid`), as 16 bytes.
///
/// # Errors
/// As [`device_count`], naming `cuDeviceGet` or `cuDeviceGetUuid`.
pub fn device_uuid(ordinal: usize) -> Result<[u8; 16], CudaError> {
    init()?;
    let device = i32::try_from(ordinal).unwrap_or(i32::MAX);
    let dev = result::device::get(device).map_err(call("cuDeviceGet"))?;
    let uuid = result::device::get_uuid(dev).map_err(call("cuDeviceGetUuid"))?;
    Ok(uuid.bytes.map(|c| c as u8))
}

/// The CUDA version the driver supports (`cuDriverGetVersion`, e.g. 12040 for 12.4).
///
/// # Errors
/// As [`device_count`], naming `cuDriverGetVersion`.
pub fn driver_version() -> Result<i32, CudaError> {
    available()?;
    let mut version = 0;
    // SAFETY: the driver is loaded (checked above); the call writes one int through a valid
    // pointer and needs no `cuInit`.
    unsafe { sys::cuDriverGetVersion(&mut version) }
        .result()
        .map_err(call("cuDriverGetVersion"))?;
    Ok(version)
}

/// The primary CUDA context of a device, retained while any clone of this handle lives (cudarc
/// releases it when the last one drops).
#[derive(Debug, Clone)]
pub struct Context(Arc<cudarc::driver::CudaContext>);

impl Context {
    /// Retains the primary context of device `ordinal`, after checking that the driver is present.
    ///
    /// cudarc makes the context current on this thread; keep a [`SavedContext`] from
    /// [`save_current`] around the call to give the caller's context back.
    ///
    /// # Errors
    /// [`CudaError::Unavailable`] without a driver; [`CudaError::Call`] naming `cuInit`,
    /// `cuDeviceGet` or `cuDevicePrimaryCtxRetain` (no device, bad ordinal).
    pub fn open(ordinal: usize) -> Result<Self, CudaError> {
        // cudarc's `CudaContext::new` runs cuInit, cuDeviceGet and cuDevicePrimaryCtxRetain but
        // does not say which failed; the first two are run here first so an error names its call.
        init()?;
        let device = i32::try_from(ordinal).unwrap_or(i32::MAX);
        result::device::get(device).map_err(call("cuDeviceGet"))?;
        cudarc::driver::CudaContext::new(ordinal)
            .map(Self)
            .map_err(call("cuDevicePrimaryCtxRetain"))
    }

    /// The device ordinal.
    #[must_use]
    pub fn ordinal(&self) -> usize {
        self.0.ordinal()
    }

    /// A new stream in this context (`cuStreamCreate`, non-blocking).
    ///
    /// # Errors
    /// [`CudaError::Call`] naming `cuStreamCreate`.
    pub fn new_stream(&self) -> Result<Stream, CudaError> {
        self.0
            .new_stream()
            .map(Stream)
            .map_err(call("cuStreamCreate"))
    }

    /// Makes this context current on this thread until the guard drops, which restores the
    /// context that was current before (`cuCtxPushCurrent` / `cuCtxPopCurrent`), so a caller's
    /// own CUDA context is never replaced behind its back.
    ///
    /// # Errors
    /// [`CudaError::Call`] naming `cuCtxPushCurrent`.
    pub fn push(&self) -> Result<ContextGuard, CudaError> {
        // SAFETY: `self` is alive (borrowed), so its CUcontext handle is live; pushing it onto
        // this thread's stack has no other precondition.
        unsafe { sys::cuCtxPushCurrent_v2(self.0.cu_ctx()) }
            .result()
            .map_err(call("cuCtxPushCurrent"))?;
        Ok(ContextGuard {
            _not_send: std::marker::PhantomData,
        })
    }

    /// Whether `self` and `other` are the same driver context.
    #[must_use]
    pub fn same(&self, other: &Context) -> bool {
        self.raw() == other.raw()
    }

    /// The driver handle, for the NVENC layer (`nvEncOpenEncodeSessionEx`'s device) and ring
    /// storage; valid while `self` lives.
    pub(crate) fn raw(&self) -> *mut c_void {
        self.0.cu_ctx().cast::<c_void>()
    }

    /// The cudarc context: to load a module and its kernels into this context (a device's
    /// primary context, the one cudarc's `CudaContext::new(ordinal)` also retains), or to
    /// allocate the device memory a slot is filled from.
    #[must_use]
    pub fn cudarc(&self) -> &Arc<cudarc::driver::CudaContext> {
        &self.0
    }
}

/// A context made current by [`Context::push`]; dropping it pops it.
#[must_use = "the context is popped when the guard drops"]
#[derive(Debug)]
pub struct ContextGuard {
    /// The push and the pop must happen on the same thread.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for ContextGuard {
    fn drop(&mut self) {
        let mut popped: sys::CUcontext = std::ptr::null_mut();
        // SAFETY: the guard is not `Send`, so this runs on the thread whose stack
        // `Context::push` pushed; `popped` is a valid out-pointer.
        if let Err(e) = unsafe { sys::cuCtxPopCurrent_v2(&mut popped) }.result() {
            tracing::warn!(error = %e, "cuCtxPopCurrent failed");
        }
    }
}

/// The context that was current on this thread when [`save_current`] ran, made current again
/// when this drops: for code that calls into cudarc, which makes its own context current
/// (`cuCtxSetCurrent`) rather than pushing it.
#[derive(Debug)]
pub struct SavedContext(sys::CUcontext);

// SAFETY: a CUcontext is an opaque driver handle that may be made current on any thread; this
// crate never dereferences it.
unsafe impl Send for SavedContext {}

/// Remembers this thread's current CUDA context (possibly none); see [`SavedContext`].
///
/// # Errors
/// [`CudaError::Unavailable`] without a CUDA driver; [`CudaError::Call`] when the driver refuses.
pub fn save_current() -> Result<SavedContext, CudaError> {
    // Asking for the current context needs an initialized driver.
    init()?;
    let mut current: sys::CUcontext = std::ptr::null_mut();
    // SAFETY: the driver library is present (checked above); `current` is a valid out-pointer.
    unsafe { sys::cuCtxGetCurrent(&mut current) }
        .result()
        .map_err(call("cuCtxGetCurrent"))?;
    Ok(SavedContext(current))
}

impl SavedContext {
    /// Whether the saved context is `ctx`.
    #[must_use]
    pub fn is(&self, ctx: &Context) -> bool {
        self.0 == ctx.0.cu_ctx()
    }

    /// Drops the saved context without making it current again (for when it is about to be
    /// destroyed).
    pub fn discard(self) {
        std::mem::forget(self);
    }
}

impl Drop for SavedContext {
    fn drop(&mut self) {
        // SAFETY: the handle was current when saved (or is null, which unbinds); making it current
        // again has no other precondition.
        if let Err(e) = unsafe { sys::cuCtxSetCurrent(self.0) }.result() {
            tracing::warn!(error = %e, "restoring the caller's CUDA context failed");
        }
    }
}

/// A CUDA stream, destroyed when the last clone drops (it keeps its [`Context`] retained).
#[derive(Debug, Clone)]
pub struct Stream(Arc<cudarc::driver::CudaStream>);

impl Stream {
    /// Waits until everything queued on the stream has run (`cuStreamSynchronize`).
    ///
    /// # Errors
    /// [`CudaError::Call`] naming `cuStreamSynchronize` when the driver reports a failure of the
    /// stream (a failed copy, a lost device).
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.0.synchronize().map_err(call("cuStreamSynchronize"))
    }

    /// The context the stream belongs to.
    #[must_use]
    pub fn context(&self) -> Context {
        Context(Arc::clone(self.0.context()))
    }

    /// The driver handle, for the NVENC layer (`nvEncSetIOCudaStreams`); valid while `self` lives.
    pub(crate) fn raw(&self) -> *mut c_void {
        self.0.cu_stream().cast::<c_void>()
    }

    /// The cudarc stream, to queue work on it with cudarc: a kernel launch
    /// (`stream.launch_builder(&function)`), an event (`record_event`), or an order between it
    /// and the producer's own streams (`join`). Work queued on a ring slot's stream before the
    /// slot is committed runs before the encoder reads the slot. A clone of the `Arc` keeps the
    /// stream alive; never destroy it by other means.
    #[must_use]
    pub fn cudarc(&self) -> &Arc<cudarc::driver::CudaStream> {
        &self.0
    }

    /// The driver handle (`CUstream`), for the producer's own driver calls (`cuLaunchKernel`,
    /// `cuMemcpy2DAsync`, `cuStreamWaitEvent`). Valid while `self` (or a clone) lives; never
    /// pass it to `cuStreamDestroy`.
    #[must_use]
    pub fn cu_stream(&self) -> cudarc::driver::sys::CUstream {
        self.0.cu_stream()
    }

    /// Orders everything queued on `self` from now on after everything queued on `other` so far,
    /// without waiting on the host: an event recorded on `other` (`cuEventRecord`) that `self`
    /// waits for (`cuStreamWaitEvent`). Both streams must belong to the same context. The
    /// caller's current context is restored afterwards.
    ///
    /// # Errors
    /// [`CudaError::Call`] naming `cuCtxPushCurrent`, `cuEventCreate`, `cuEventRecord` or
    /// `cuStreamWaitEvent` (e.g. `CUDA_ERROR_INVALID_CONTEXT` for streams of two contexts).
    pub fn wait_for(&self, other: &Stream) -> Result<(), CudaError> {
        let _current = self.context().push()?;
        // The event may be destroyed (when it drops, below) while the wait is pending: the
        // driver releases it once the wait has completed (cuEventDestroy's documentation).
        let event = other
            .0
            .context()
            .new_event(None)
            .map_err(call("cuEventCreate"))?;
        event.record(&other.0).map_err(call("cuEventRecord"))?;
        self.0.wait(&event).map_err(call("cuStreamWaitEvent"))
    }
}
