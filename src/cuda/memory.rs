//! Pinned host memory and pitched device memory, each freed in its own context on drop.

use std::ffi::c_void;
use std::ptr::NonNull;

use cudarc::driver::{result, sys};

use super::{available, call, Context, CudaError};

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
