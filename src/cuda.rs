//! The crate's CUDA layer: the only module (besides `nvenc-sys`) that calls the CUDA driver.
//!
//! It wraps cudarc so that cudarc's types never appear in the crate's API: a [`Context`] (a
//! device's retained primary context), a [`Stream`], a [`ContextGuard`] that makes a context
//! current and restores the caller's, a [`SavedContext`] for code that calls into cudarc (which
//! makes its contexts current rather than pushing them), pinned host and pitched device
//! allocations ([`PinnedBuffer`], [`PitchedBuffer`]) and the 2D copies into a [`DeviceSurface`].
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
use std::ptr::NonNull;
use std::sync::Arc;

use cudarc::driver::{result, sys};

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
}

/// Page-locked host memory from `cuMemHostAlloc`, zeroed, freed (in its context) on drop.
///
/// Allocated with flags 0 (portable to this context only, **not** write-combined): the CPU may
/// read it (checksums, a software fallback encoder), and write-combined memory is very slow to
/// read. Writes from the CPU and DMA uploads run at full speed either way.
#[derive(Debug)]
pub struct PinnedBuffer {
    ctx: Context,
    base: NonNull<u8>,
    bytes: usize,
}

// SAFETY: the buffer owns its pinned allocation; nothing else aliases it. Freeing binds the owning
// context first, so it may happen on any thread.
unsafe impl Send for PinnedBuffer {}
// SAFETY: `&PinnedBuffer` hands out a raw pointer only; whoever writes through it (the ring)
// orders its accesses itself.
unsafe impl Sync for PinnedBuffer {}

impl PinnedBuffer {
    /// Allocates `bytes` (at least 1) zeroed bytes of pinned memory in `ctx`.
    ///
    /// # Errors
    /// [`CudaError::Call`] naming `cuMemHostAlloc` when the driver refuses;
    /// [`CudaError::AllocFailed`] for 0 bytes or a null allocation.
    pub fn new(ctx: &Context, bytes: usize) -> Result<Self, CudaError> {
        available()?;
        if bytes == 0 || bytes > isize::MAX as usize {
            return Err(CudaError::AllocFailed { bytes });
        }
        let _current = ctx.push()?;
        // SAFETY: the context is current on this thread; the returned memory is treated as
        // uninitialized until zeroed below.
        let raw = unsafe { result::malloc_host(bytes, 0) }.map_err(call("cuMemHostAlloc"))?;
        let base = NonNull::new(raw.cast::<u8>()).ok_or(CudaError::AllocFailed { bytes })?;
        // SAFETY: `base` points to `bytes` writable bytes just allocated and owned here.
        unsafe { base.as_ptr().write_bytes(0, bytes) };
        Ok(Self {
            ctx: ctx.clone(),
            base,
            bytes,
        })
    }

    /// The first byte; `len()` bytes from it are this buffer's for its whole life.
    #[must_use]
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.base
    }

    /// The size in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// Never true (a buffer has at least one byte).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// The context the memory belongs to.
    #[must_use]
    pub fn context(&self) -> &Context {
        &self.ctx
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        let current = self.ctx.push();
        if let Err(e) = &current {
            tracing::error!(error = %e, "leaking pinned memory: cannot bind its CUDA context");
            return;
        }
        // SAFETY: `base` came from `cuMemHostAlloc` in this context and is freed once, here;
        // whoever read it through `as_ptr` borrowed `self`, so no reader is left.
        if let Err(e) = unsafe { result::free_host(self.base.as_ptr().cast::<c_void>()) } {
            tracing::error!(error = %e, "cuMemFreeHost failed");
        }
    }
}

/// One 2D region of device memory: what a copy writes and what NVENC registers as an input
/// surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSurface {
    /// Device address of the first row (`CUdeviceptr`).
    pub device_ptr: u64,
    /// Bytes from one row to the next (the allocation pitch).
    pub pitch: usize,
    /// Bytes of payload in a row (at most `pitch`).
    pub width_bytes: usize,
    /// Number of rows.
    pub rows: usize,
}

/// Pitched device memory from `cuMemAllocPitch`, freed (in its context) on drop.
#[derive(Debug)]
pub struct PitchedBuffer {
    ctx: Context,
    surface: DeviceSurface,
}

impl PitchedBuffer {
    /// Allocates `rows` rows of `width_bytes` bytes (both at least 1) in `ctx`.
    ///
    /// # Errors
    /// [`CudaError::Unavailable`] without a driver; [`CudaError::Call`] naming
    /// `cuMemAllocPitch`; [`CudaError::AllocFailed`] for a zero size.
    pub fn new(ctx: &Context, width_bytes: usize, rows: usize) -> Result<Self, CudaError> {
        available()?;
        if width_bytes == 0 || rows == 0 {
            return Err(CudaError::AllocFailed { bytes: 0 });
        }
        let _current = ctx.push()?;
        let mut ptr: sys::CUdeviceptr = 0;
        let mut pitch: usize = 0;
        // SAFETY: the context is current; both out-pointers are valid locals; 16 is one of the
        // element sizes (4, 8, 16) the call accepts.
        unsafe { sys::cuMemAllocPitch_v2(&mut ptr, &mut pitch, width_bytes, rows, 16) }
            .result()
            .map_err(call("cuMemAllocPitch"))?;
        Ok(Self {
            ctx: ctx.clone(),
            surface: DeviceSurface {
                device_ptr: ptr,
                pitch,
                width_bytes,
                rows,
            },
        })
    }

    /// The allocation as a surface.
    #[must_use]
    pub fn surface(&self) -> DeviceSurface {
        self.surface
    }
}

impl Drop for PitchedBuffer {
    fn drop(&mut self) {
        let current = self.ctx.push();
        if let Err(e) = &current {
            tracing::error!(error = %e, "leaking device memory: cannot bind its CUDA context");
            return;
        }
        let ptr = self.surface.device_ptr;
        // SAFETY: the pointer came from `cuMemAllocPitch` in this context and is freed once, here.
        if let Err(e) = unsafe { result::free_sync(ptr) } {
            tracing::error!(error = %e, ptr, "cuMemFree failed");
        }
    }
}

/// Enqueues on `stream` a copy of `dst.rows` rows of `dst.width_bytes` bytes from host memory
/// `src` (rows `src_pitch` bytes apart) into the device surface `dst`. From pinned memory this is
/// a direct DMA; from pageable memory the driver stages it.
///
/// # Errors
/// [`CudaError::InvalidCopy`] when `src` is too short for the copy or `src_pitch <
/// dst.width_bytes`; [`CudaError::Call`] naming `cuMemcpy2DAsync` when the driver refuses.
///
/// # Safety
/// The copy runs after this returns: `src` must stay alive and unwritten, and `dst` allocated,
/// until the stream has passed this copy (synchronize the stream or wait on an event recorded
/// after it). `dst` must be device memory of `stream`'s context.
pub unsafe fn copy_host_to_device_async(
    src: &[u8],
    src_pitch: usize,
    dst: &DeviceSurface,
    stream: &Stream,
) -> Result<(), CudaError> {
    let needed = src_pitch
        .checked_mul(dst.rows.saturating_sub(1))
        .and_then(|b| b.checked_add(dst.width_bytes));
    if src_pitch < dst.width_bytes || needed.is_none_or(|n| n > src.len()) {
        return Err(CudaError::InvalidCopy {
            width_bytes: dst.width_bytes,
            rows: dst.rows,
            src_pitch,
            src_len: src.len(),
        });
    }
    // SAFETY: `src` is in bounds (checked above); the rest is this function's contract.
    unsafe {
        copy_2d_async(
            Source::Host(src.as_ptr().cast::<c_void>()),
            src_pitch,
            dst,
            stream,
        )
    }
}

/// Enqueues on `stream` a copy of `dst.rows` rows of `dst.width_bytes` bytes from device memory
/// at `src` (rows `src_pitch` bytes apart) into the device surface `dst`: how a frame that is
/// already on the GPU is copied without passing through the host.
///
/// # Errors
/// [`CudaError::InvalidCopy`] when `src_pitch < dst.width_bytes`; [`CudaError::Call`] naming
/// `cuMemcpy2DAsync` when the driver refuses, e.g. for an address that is not device memory.
///
/// # Safety
/// `src` must be device memory of `stream`'s context holding `dst.rows` rows of
/// `dst.width_bytes` bytes at `src_pitch`, alive and unwritten until the stream has passed this
/// copy; `dst` as for [`copy_host_to_device_async`].
pub unsafe fn copy_device_to_device_async(
    src: u64,
    src_pitch: usize,
    dst: &DeviceSurface,
    stream: &Stream,
) -> Result<(), CudaError> {
    if src_pitch < dst.width_bytes {
        return Err(CudaError::InvalidCopy {
            width_bytes: dst.width_bytes,
            rows: dst.rows,
            src_pitch,
            src_len: usize::MAX,
        });
    }
    // SAFETY: this function's contract is `copy_2d_async`'s.
    unsafe { copy_2d_async(Source::Device(src), src_pitch, dst, stream) }
}

/// Where a 2D copy reads from.
enum Source {
    Host(*const c_void),
    Device(sys::CUdeviceptr),
}

/// `cuMemcpy2DAsync` of `dst.rows` rows of `dst.width_bytes` bytes into device surface `dst`:
/// the one copy both upload paths share.
///
/// # Safety
/// The source holds that many rows at `src_pitch` and, like `dst`, stays alive and untouched
/// until the stream has run the copy; `dst` is device memory of `stream`'s context.
unsafe fn copy_2d_async(
    src: Source,
    src_pitch: usize,
    dst: &DeviceSurface,
    stream: &Stream,
) -> Result<(), CudaError> {
    let _current = stream.context().push()?;
    let (src_type, src_host, src_device) = match src {
        Source::Host(p) => (sys::CUmemorytype::CU_MEMORYTYPE_HOST, p, 0),
        Source::Device(d) => (sys::CUmemorytype::CU_MEMORYTYPE_DEVICE, std::ptr::null(), d),
    };
    let copy = sys::CUDA_MEMCPY2D {
        srcXInBytes: 0,
        srcY: 0,
        srcMemoryType: src_type,
        srcHost: src_host,
        srcDevice: src_device,
        srcArray: std::ptr::null_mut(),
        srcPitch: src_pitch,
        dstXInBytes: 0,
        dstY: 0,
        dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
        dstHost: std::ptr::null_mut(),
        dstDevice: dst.device_ptr,
        dstArray: std::ptr::null_mut(),
        dstPitch: dst.pitch,
        WidthInBytes: dst.width_bytes,
        Height: dst.rows,
    };
    // SAFETY: the descriptor is fully initialized; source and destination are in bounds and
    // alive until the copy has run, by this function's contract; the stream belongs to the
    // bound context.
    unsafe { sys::cuMemcpy2DAsync_v2(&copy, stream.0.cu_stream()) }
        .result()
        .map_err(call("cuMemcpy2DAsync"))
}

impl PinnedBuffer {
    /// The bytes, for the CPU to read.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `base` points to `bytes` initialized (zeroed at allocation) bytes owned by
        // `self`; the shared borrow of `self` rules out a writer through `as_mut_slice`.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.bytes) }
    }

    /// The bytes, for the CPU to write.
    #[must_use]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as `as_slice`; the exclusive borrow of `self` makes this the only access. (A
        // copy queued from this buffer holds it inside a `Pending`, so no `&mut` exists then.)
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), self.bytes) }
    }
}

/// Host memory that a queued copy may read after the call that queued it has returned.
///
/// # Safety
/// `host_bytes` returns the same bytes, at the same address, for as long as the value lives,
/// wherever the value is moved, and nothing writes them while it lives.
pub unsafe trait HostBytes: Send {
    /// The bytes a copy reads.
    fn host_bytes(&self) -> &[u8];
}

// SAFETY: the allocation is the buffer's own and does not move with it; a writer needs
// `&mut PinnedBuffer`, which the holder of a queued copy (a `Pending`) never gives out.
unsafe impl HostBytes for PinnedBuffer {
    fn host_bytes(&self) -> &[u8] {
        self.as_slice()
    }
}

// SAFETY: an `Arc` does not move its contents, and shares only `&T`, through which `T`'s
// guarantee holds.
unsafe impl<T: HostBytes + Sync> HostBytes for Arc<T> {
    fn host_bytes(&self) -> &[u8] {
        (**self).host_bytes()
    }
}

/// One of two host sources (an encoder's own staging buffer, or a caller's ring slot).
#[derive(Debug)]
pub enum Either<A, B> {
    /// The first kind.
    Left(A),
    /// The second kind.
    Right(B),
}

// SAFETY: each variant keeps its own guarantee; the variant never changes while the value lives
// (a `Pending` owns it and gives out no `&mut`).
unsafe impl<A: HostBytes, B: HostBytes> HostBytes for Either<A, B> {
    fn host_bytes(&self) -> &[u8] {
        match self {
            Either::Left(a) => a.host_bytes(),
            Either::Right(b) => b.host_bytes(),
        }
    }
}

/// Device memory holding a frame that this layer did not allocate (a caller's frame).
#[derive(Debug, Clone, Copy)]
pub struct DeviceSource {
    ptr: u64,
}

impl DeviceSource {
    /// The device memory at `ptr`.
    ///
    /// # Safety
    /// `ptr` must be device memory of the context of the stream it is copied on, holding every
    /// plane the copy reads, allocated and unwritten until the stream has run the copy.
    #[must_use]
    pub unsafe fn new(ptr: u64) -> Self {
        Self { ptr }
    }
}

/// Where a frame is copied from: host bytes the copy owns until it is known to have run, or a
/// caller's device memory.
#[derive(Debug)]
pub enum PlaneSource<T> {
    /// Host bytes (pinned for a direct DMA).
    Host(T),
    /// Device memory.
    Device(DeviceSource),
}

/// One plane of a frame copy: `rows` rows of `width` bytes from `src_offset` in the source (rows
/// `src_pitch` apart) to `dst_offset` in the destination buffer (rows `dst_pitch` apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plane {
    /// Where the plane starts in the source, in bytes.
    pub src_offset: usize,
    /// Bytes between source rows.
    pub src_pitch: usize,
    /// Where the plane starts in the destination, in bytes.
    pub dst_offset: usize,
    /// Bytes between destination rows.
    pub dst_pitch: usize,
    /// Bytes of payload in a row.
    pub width: usize,
    /// Number of rows.
    pub rows: usize,
}

impl Plane {
    /// The bytes the plane spans from its start: `pitch * (rows - 1) + width`, if it fits.
    fn span(pitch: usize, width: usize, rows: usize) -> Option<usize> {
        pitch
            .checked_mul(rows.saturating_sub(1))
            .and_then(|b| b.checked_add(width))
    }
}

/// Copies queued on a stream that may still read their source and write their destination: it
/// owns both until the copies are known to have run. Dropping it waits for the stream
/// (`cuStreamSynchronize`); [`Pending::ran`] gives the source back without waiting, for a caller
/// that knows otherwise that the stream has passed the copies.
#[derive(Debug)]
#[must_use = "dropping it waits for the stream"]
pub struct Pending<T> {
    src: Option<PlaneSource<T>>,
    dst: Arc<PitchedBuffer>,
    stream: Stream,
}

impl<T> Pending<T> {
    /// The destination of the copies.
    #[must_use]
    pub fn destination(&self) -> &Arc<PitchedBuffer> {
        &self.dst
    }

    /// Gives the source back without waiting for the stream.
    ///
    /// # Safety
    /// The stream must have run the copies (e.g. work queued after them on the same stream is
    /// known to have completed).
    pub unsafe fn ran(mut self) -> Option<T> {
        match self.src.take() {
            Some(PlaneSource::Host(t)) => Some(t),
            _ => None,
        }
    }
}

impl<T> Pending<T> {
    /// Waits for the stream (`cuStreamSynchronize`), then gives the host source back.
    ///
    /// # Errors
    /// [`CudaError::Call`] naming `cuStreamSynchronize`; the source and destination are then
    /// leaked, since a copy may still use them.
    pub fn wait(mut self) -> Result<Option<T>, CudaError> {
        if let Err(e) = self.stream.synchronize() {
            if let Some(src) = self.src.take() {
                std::mem::forget(src);
            }
            std::mem::forget(Arc::clone(&self.dst));
            return Err(e);
        }
        match self.src.take() {
            Some(PlaneSource::Host(t)) => Ok(Some(t)),
            _ => Ok(None),
        }
    }
}

impl<T> Drop for Pending<T> {
    fn drop(&mut self) {
        if self.src.is_none() {
            return;
        }
        if let Err(e) = self.stream.synchronize() {
            tracing::warn!(error = %e, "waiting for a queued copy failed; its memory is leaked");
            // The copy may still run: neither its source nor its destination may be freed.
            if let Some(src) = self.src.take() {
                std::mem::forget(src);
            }
            std::mem::forget(Arc::clone(&self.dst));
        }
    }
}

/// Queues on `stream` the copy of `planes` from `src` into `dst`, and returns the copies with
/// the memory they use ([`Pending`]). Every plane is checked to lie inside `dst`, and inside `src`
/// for host memory.
///
/// # Errors
/// [`CudaError::InvalidCopy`] for a plane outside its source or destination or with a pitch
/// smaller than its width; [`CudaError::Call`] naming `cuMemcpy2DAsync` when the driver refuses.
/// With the error comes the host source, once the copies queued before it have run (`None` when
/// the stream could not be waited for: the source is then leaked, since a copy may still read it).
#[allow(clippy::type_complexity)]
pub fn copy_planes_async<T: HostBytes>(
    src: PlaneSource<T>,
    planes: &[Plane],
    dst: &Arc<PitchedBuffer>,
    stream: &Stream,
) -> Result<Pending<T>, (CudaError, Option<T>)> {
    let pending = Pending {
        src: Some(src),
        dst: Arc::clone(dst),
        stream: stream.clone(),
    };
    match queue_planes(&pending, planes) {
        Ok(()) => Ok(pending),
        Err(e) => Err((e, pending.wait().ok().flatten())),
    }
}

fn queue_planes<T: HostBytes>(pending: &Pending<T>, planes: &[Plane]) -> Result<(), CudaError> {
    let surface = pending.dst.surface();
    let dst_len = surface.pitch.saturating_mul(surface.rows);
    for plane in planes {
        let invalid = || CudaError::InvalidCopy {
            width_bytes: plane.width,
            rows: plane.rows,
            src_pitch: plane.src_pitch,
            src_len: match &pending.src {
                Some(PlaneSource::Host(t)) => t.host_bytes().len(),
                _ => usize::MAX,
            },
        };
        let dst_end = Plane::span(plane.dst_pitch, plane.width, plane.rows)
            .and_then(|s| s.checked_add(plane.dst_offset));
        if plane.src_pitch < plane.width
            || plane.dst_pitch < plane.width
            || dst_end.is_none_or(|end| end > dst_len)
        {
            return Err(invalid());
        }
        let target = DeviceSurface {
            device_ptr: surface.device_ptr + plane.dst_offset as u64,
            pitch: plane.dst_pitch,
            width_bytes: plane.width,
            rows: plane.rows,
        };
        match &pending.src {
            Some(PlaneSource::Host(t)) => {
                let bytes = t.host_bytes().get(plane.src_offset..).unwrap_or_default();
                // SAFETY: `bytes` stays alive and unwritten until the copy ran: `pending` owns
                // it (HostBytes) and waits for the stream before giving it up, unless the caller
                // of `Pending::ran` vouches that the copy ran; `target` lies inside `dst`
                // (checked above), which `pending` keeps allocated the same way. The source's
                // length is checked by the callee.
                unsafe {
                    copy_host_to_device_async(bytes, plane.src_pitch, &target, &pending.stream)
                }?;
            }
            Some(PlaneSource::Device(d)) => {
                let from = d
                    .ptr
                    .checked_add(plane.src_offset as u64)
                    .ok_or_else(invalid)?;
                // SAFETY: `DeviceSource::new`'s contract covers the source; `target` as above.
                unsafe {
                    copy_device_to_device_async(from, plane.src_pitch, &target, &pending.stream)
                }?;
            }
            None => {}
        }
    }
    Ok(())
}
