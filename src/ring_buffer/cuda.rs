//! CUDA storages for the ring: pinned host memory and pitched device memory. All of the ring's
//! CUDA FFI is in this file.
//!
//! The driver is loaded at run time (cudarc's `dynamic-loading`). cudarc's loader panics when
//! `libcuda` is missing, so every entry point here first checks [`cuda_available`] and returns
//! [`RingError::CudaUnavailable`] instead.
//!
//! Memory comes from the non-stream-ordered allocators only: `cuMemHostAlloc` for pinned slots,
//! `cuMemAllocPitch` for device slots. NVENC cannot register stream-ordered (`cuMemAllocAsync`)
//! memory, which is what cudarc's `CudaStream::alloc` returns on GPUs with memory pools, and
//! cudarc's `CudaContext::alloc_pinned` asks for write-combined memory, which is slow to read on
//! the CPU. Both are avoided on purpose.
//!
//! The upload path for the NVENC backend: stage a frame in a [`PinnedStorage`] slot, then
//! [`copy_pinned_to_device_async`] into the next free [`DeviceStorage`] surface on the encoder's
//! input stream; the DMA engine reads pinned memory directly, with no staging copy.

use std::ffi::c_void;
use std::ptr::NonNull;

use cudarc::driver::{result, sys};
pub use cudarc::driver::{CudaContext, CudaStream};

use super::storage::{check_counts, DeviceSlots, DeviceSurface, HostSlots, SlotStorage};
use super::RingError;
use std::sync::Arc;

/// Checks, without panicking, that the CUDA driver library can be loaded.
///
/// # Errors
/// [`RingError::CudaUnavailable`] when `libcuda` (`nvcuda.dll`) cannot be loaded, saying so.
pub fn cuda_available() -> Result<(), RingError> {
    if cfg!(miri) {
        return Err(RingError::CudaUnavailable {
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
        Err(RingError::CudaUnavailable {
            reason: "the CUDA driver library (libcuda.so.1 / nvcuda.dll) was not found; \
                     is the NVIDIA driver installed (and, in a container, injected)?"
                .to_owned(),
        })
    }
}

/// Opens (retains) the primary CUDA context of device `ordinal`, after checking that the driver
/// is present.
///
/// # Errors
/// [`RingError::CudaUnavailable`] without a driver; [`RingError::Cuda`] when `cuInit` or the
/// context creation fails (no device, bad ordinal).
pub fn open_context(ordinal: usize) -> Result<Arc<CudaContext>, RingError> {
    cuda_available()?;
    // cudarc's `CudaContext::new` runs cuInit, cuDeviceGet and cuDevicePrimaryCtxRetain but does
    // not say which failed; the first two are run here first so an error names its call.
    cudarc::driver::result::init().map_err(|source| RingError::Cuda {
        call: "cuInit",
        source,
    })?;
    let device = i32::try_from(ordinal).unwrap_or(i32::MAX);
    cudarc::driver::result::device::get(device).map_err(|source| RingError::Cuda {
        call: "cuDeviceGet",
        source,
    })?;
    CudaContext::new(ordinal).map_err(|source| RingError::Cuda {
        call: "cuDevicePrimaryCtxRetain",
        source,
    })
}

/// `ctx` made current on this thread until the guard drops, which restores the context that was
/// current before (`cuCtxPushCurrent` / `cuCtxPopCurrent`), so a caller's own CUDA context is
/// never replaced behind its back.
#[must_use = "the context is popped when the guard drops"]
#[derive(Debug)]
pub struct ContextGuard {
    /// The push and the pop must happen on the same thread.
    _not_send: std::marker::PhantomData<*const ()>,
}

/// Pushes `ctx` onto this thread's context stack; see [`ContextGuard`].
///
/// # Errors
/// [`RingError::Cuda`] when the driver refuses.
pub fn push_context(ctx: &CudaContext) -> Result<ContextGuard, RingError> {
    // SAFETY: `ctx` is alive (borrowed), so its CUcontext handle is live; pushing it onto this
    // thread's stack has no other precondition.
    unsafe { sys::cuCtxPushCurrent_v2(ctx.cu_ctx()) }
        .result()
        .map_err(|source| RingError::Cuda {
            call: "cuCtxPushCurrent",
            source,
        })?;
    Ok(ContextGuard {
        _not_send: std::marker::PhantomData,
    })
}

impl Drop for ContextGuard {
    fn drop(&mut self) {
        let mut popped: sys::CUcontext = std::ptr::null_mut();
        // SAFETY: the guard is not `Send`, so this runs on the thread whose stack
        // `push_context` pushed; `popped` is a valid out-pointer.
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
/// [`RingError::CudaUnavailable`] without a CUDA driver; [`RingError::Cuda`] when the driver
/// refuses.
pub fn save_current() -> Result<SavedContext, RingError> {
    cuda_available()?;
    // Asking for the current context needs an initialized driver; `cuInit` may be called any
    // number of times.
    result::init().map_err(|source| RingError::Cuda {
        call: "cuInit",
        source,
    })?;
    let mut current: sys::CUcontext = std::ptr::null_mut();
    // SAFETY: the driver library is present (checked above); `current` is a valid out-pointer.
    unsafe { sys::cuCtxGetCurrent(&mut current) }
        .result()
        .map_err(|source| RingError::Cuda {
            call: "cuCtxGetCurrent",
            source,
        })?;
    Ok(SavedContext(current))
}

impl SavedContext {
    /// Whether the saved context is `ctx`.
    #[must_use]
    pub fn is(&self, ctx: &CudaContext) -> bool {
        self.0 == ctx.cu_ctx()
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

fn bind(ctx: &CudaContext) -> Result<ContextGuard, RingError> {
    push_context(ctx)
}

/// Page-locked host memory from `cuMemHostAlloc`, one allocation for all slots.
///
/// Allocated with flags 0 (portable to this context only, **not** write-combined): the CPU may read
/// these slots (checksums, a software fallback encoder), and write-combined memory is very slow to
/// read. Writes from the CPU and DMA uploads run at full speed either way.
#[derive(Debug)]
pub struct PinnedStorage {
    ctx: Arc<CudaContext>,
    base: NonNull<u8>,
    slots: usize,
    slot_len: usize,
    stride: usize,
}

// SAFETY: the storage owns its pinned allocation; nothing else aliases it. Freeing binds the
// owning context first, so it may happen on any thread.
unsafe impl Send for PinnedStorage {}
// SAFETY: `&PinnedStorage` hands out raw pointers only; the ring gives each slot to one side at a
// time with acquire/release ordering.
unsafe impl Sync for PinnedStorage {}

impl PinnedStorage {
    /// Allocates `slots` zeroed slots of `slot_len` bytes of pinned memory in `ctx`.
    ///
    /// # Errors
    /// [`RingError::CudaUnavailable`] without a driver; count errors as for
    /// [`HostStorage::new`](super::HostStorage::new); [`RingError::Cuda`] when the driver refuses
    /// (`cuMemHostAlloc`).
    pub fn new(ctx: &Arc<CudaContext>, slots: usize, slot_len: usize) -> Result<Self, RingError> {
        check_counts(slots, slot_len)?;
        cuda_available()?;
        let overflow = || RingError::SizeOverflow {
            slots,
            slot_len,
            max: isize::MAX as usize,
        };
        let stride = slot_len
            .checked_next_multiple_of(super::HOST_SLOT_ALIGN)
            .ok_or_else(overflow)?;
        let bytes = stride
            .checked_mul(slots)
            .filter(|b| *b <= isize::MAX as usize)
            .ok_or_else(overflow)?;
        let _current = bind(ctx)?;
        // SAFETY: the context is current on this thread; the returned memory is treated as
        // uninitialized until zeroed below.
        let raw = unsafe { result::malloc_host(bytes, 0) }.map_err(|source| RingError::Cuda {
            call: "cuMemHostAlloc",
            source,
        })?;
        let base = NonNull::new(raw.cast::<u8>()).ok_or(RingError::AllocFailed { bytes })?;
        // SAFETY: `base` points to `bytes` writable bytes just allocated and owned here.
        unsafe { base.as_ptr().write_bytes(0, bytes) };
        Ok(Self {
            ctx: Arc::clone(ctx),
            base,
            slots,
            slot_len,
            stride,
        })
    }

    /// Pinned storage on device `ordinal`'s primary context.
    ///
    /// # Errors
    /// As [`open_context`] and [`new`](Self::new).
    pub fn on_device(ordinal: usize, slots: usize, slot_len: usize) -> Result<Self, RingError> {
        check_counts(slots, slot_len)?;
        Self::new(&open_context(ordinal)?, slots, slot_len)
    }

    /// The CUDA context the memory belongs to.
    #[must_use]
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
}

impl SlotStorage for PinnedStorage {
    fn slot_count(&self) -> usize {
        self.slots
    }
    fn slot_len(&self) -> usize {
        self.slot_len
    }
}

// SAFETY: slot `i` is bytes `[i*stride, i*stride + slot_len)` of one zeroed pinned allocation that
// lives until Drop; `slot_len <= stride`, so slots are disjoint.
unsafe impl HostSlots for PinnedStorage {
    fn slot_ptr(&self, index: usize) -> NonNull<u8> {
        assert!(index < self.slots, "slot index {index} out of range");
        // SAFETY: index < slots keeps the offset inside the allocation of slots*stride bytes.
        unsafe { self.base.add(index * self.stride) }
    }
}

impl Drop for PinnedStorage {
    fn drop(&mut self) {
        let _current = bind(&self.ctx);
        if let Err(e) = &_current {
            tracing::error!(error = %e, "leaking pinned ring memory: cannot bind its CUDA context");
            return;
        }
        // SAFETY: `base` came from `cuMemHostAlloc` in this context and is freed once, here; the
        // ring (and every lease) that could read it is gone, since they own this storage.
        if let Err(e) = unsafe { result::free_host(self.base.as_ptr().cast::<c_void>()) } {
            tracing::error!(error = %e, "cuMemFreeHost failed for the ring's pinned slots");
        }
    }
}

/// Pitched device memory, one `cuMemAllocPitch` allocation per slot, so each slot can be
/// registered with NVENC as its own input surface (`NV_ENC_INPUT_RESOURCE_TYPE_CUDADEVICEPTR` with
/// the slot's pitch). The CPU cannot touch it; slots expose [`DeviceSurface`]s only.
#[derive(Debug)]
pub struct DeviceStorage {
    ctx: Arc<CudaContext>,
    surfaces: Vec<DeviceSurface>,
    slot_len: usize,
}

impl DeviceStorage {
    /// Allocates `slots` surfaces of `rows` rows of `width_bytes` bytes (for NV12 of a
    /// `w × h` frame: `width_bytes = w`, `rows = h * 3 / 2`) in `ctx`.
    ///
    /// # Errors
    /// [`RingError::CudaUnavailable`] without a driver; [`RingError::InvalidSlotCount`],
    /// [`RingError::InvalidLayout`] for zero width or rows; [`RingError::SizeOverflow`];
    /// [`RingError::Cuda`] when `cuMemAllocPitch` fails (what was already allocated is freed).
    pub fn new(
        ctx: &Arc<CudaContext>,
        slots: usize,
        width_bytes: usize,
        rows: usize,
    ) -> Result<Self, RingError> {
        check_counts(slots, 1)?;
        if width_bytes == 0 || rows == 0 {
            return Err(RingError::InvalidLayout { width_bytes, rows });
        }
        if width_bytes.checked_mul(rows).is_none() {
            return Err(RingError::SizeOverflow {
                slots,
                slot_len: width_bytes,
                max: usize::MAX,
            });
        }
        cuda_available()?;
        let _current = bind(ctx)?;
        let mut storage = Self {
            ctx: Arc::clone(ctx),
            surfaces: Vec::with_capacity(slots),
            slot_len: 0,
        };
        for _ in 0..slots {
            let mut ptr: sys::CUdeviceptr = 0;
            let mut pitch: usize = 0;
            // SAFETY: the context is current; both out-pointers are valid locals; 16 is one of the
            // element sizes (4, 8, 16) the call accepts.
            let status =
                unsafe { sys::cuMemAllocPitch_v2(&mut ptr, &mut pitch, width_bytes, rows, 16) };
            // On error `storage`'s Drop frees the surfaces allocated so far.
            status.result().map_err(|source| RingError::Cuda {
                call: "cuMemAllocPitch",
                source,
            })?;
            storage.surfaces.push(DeviceSurface {
                device_ptr: ptr,
                pitch,
                width_bytes,
                rows,
            });
        }
        let pitch = storage.surfaces.first().map_or(width_bytes, |s| s.pitch);
        storage.slot_len = pitch.checked_mul(rows).ok_or(RingError::SizeOverflow {
            slots,
            slot_len: pitch,
            max: usize::MAX,
        })?;
        Ok(storage)
    }

    /// Device storage on device `ordinal`'s primary context.
    ///
    /// # Errors
    /// As [`open_context`] and [`new`](Self::new).
    pub fn on_device(
        ordinal: usize,
        slots: usize,
        width_bytes: usize,
        rows: usize,
    ) -> Result<Self, RingError> {
        check_counts(slots, 1)?;
        Self::new(&open_context(ordinal)?, slots, width_bytes, rows)
    }

    /// The CUDA context the memory belongs to.
    #[must_use]
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
}

impl SlotStorage for DeviceStorage {
    fn slot_count(&self) -> usize {
        self.surfaces.len()
    }
    /// `pitch × rows` of the first surface (the driver gives every surface of one layout the same
    /// pitch).
    fn slot_len(&self) -> usize {
        self.slot_len
    }
}

impl DeviceSlots for DeviceStorage {
    fn surface(&self, index: usize) -> DeviceSurface {
        self.surfaces[index]
    }
}

impl Drop for DeviceStorage {
    fn drop(&mut self) {
        if self.surfaces.is_empty() {
            return;
        }
        let _current = bind(&self.ctx);
        if let Err(e) = &_current {
            tracing::error!(error = %e, "leaking device ring surfaces: cannot bind their CUDA context");
            return;
        }
        for surface in self.surfaces.drain(..) {
            // SAFETY: each pointer came from `cuMemAllocPitch` in this context and is freed once;
            // no lease can outlive the storage that owns it.
            if let Err(e) = unsafe { result::free_sync(surface.device_ptr) } {
                tracing::error!(error = %e, ptr = surface.device_ptr, "cuMemFree failed for a ring surface");
            }
        }
    }
}

/// Enqueues on `stream` a copy of `dst.rows` rows of `dst.width_bytes` bytes from host memory
/// `src` (rows `src_pitch` bytes apart) into the device surface `dst`. With `src` in a
/// [`PinnedStorage`] slot this is a direct DMA; from pageable memory the driver stages it.
///
/// # Errors
/// [`RingError::InvalidLayout`] when `src` is too short for the copy or `src_pitch <
/// dst.width_bytes`; [`RingError::Cuda`] when the driver refuses (`cuMemcpy2DAsync`).
///
/// # Safety
/// The copy runs after this returns: `src` must stay alive and unwritten (keep its
/// [`ReadSlot`](super::ReadSlot) lease) and `dst` must stay allocated until the stream has passed
/// this copy (synchronize the stream or wait on an event recorded after it). `dst` must be a
/// surface of a [`DeviceStorage`] in `stream`'s context.
pub unsafe fn copy_pinned_to_device_async(
    src: &[u8],
    src_pitch: usize,
    dst: &DeviceSurface,
    stream: &CudaStream,
) -> Result<(), RingError> {
    let needed = src_pitch
        .checked_mul(dst.rows.saturating_sub(1))
        .and_then(|b| b.checked_add(dst.width_bytes));
    if src_pitch < dst.width_bytes || needed.is_none_or(|n| n > src.len()) {
        return Err(RingError::InvalidLayout {
            width_bytes: dst.width_bytes,
            rows: dst.rows,
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
    stream: &CudaStream,
) -> Result<(), RingError> {
    let _current = bind(stream.context())?;
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
    unsafe { sys::cuMemcpy2DAsync_v2(&copy, stream.cu_stream()) }
        .result()
        .map_err(|source| RingError::Cuda {
            call: "cuMemcpy2DAsync",
            source,
        })
}

/// Enqueues on `stream` a copy of `dst.rows` rows of `dst.width_bytes` bytes from device memory
/// at `src` (rows `src_pitch` bytes apart) into the device surface `dst`: how a frame that is
/// already on the GPU enters the ring without passing through the host.
///
/// # Errors
/// [`RingError::InvalidLayout`] when `src_pitch < dst.width_bytes`; [`RingError::Cuda`] when the
/// driver refuses (`cuMemcpy2DAsync`), e.g. for an address that is not device memory.
///
/// # Safety
/// `src` must be device memory of `stream`'s context holding `dst.rows` rows of
/// `dst.width_bytes` bytes at `src_pitch`, alive and unwritten until the stream has passed this
/// copy; `dst` as for [`copy_pinned_to_device_async`].
pub unsafe fn copy_device_to_device_async(
    src: sys::CUdeviceptr,
    src_pitch: usize,
    dst: &DeviceSurface,
    stream: &CudaStream,
) -> Result<(), RingError> {
    if src_pitch < dst.width_bytes {
        return Err(RingError::InvalidLayout {
            width_bytes: dst.width_bytes,
            rows: dst.rows,
        });
    }
    // SAFETY: this function's contract is `copy_2d_async`'s.
    unsafe { copy_2d_async(Source::Device(src), src_pitch, dst, stream) }
}
