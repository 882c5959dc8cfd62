//! 2D copies into device memory, and [`Pending`]: queued copies that own their memory until
//! they are known to have run.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::sys;

use super::{call, CudaError, DeviceSurface, PinnedBuffer, PitchedBuffer, Stream};

/// Enqueues on `stream` a copy of `dst.rows` rows of `dst.width_bytes` bytes from host memory
/// `src` (rows `src_pitch` bytes apart) into the device surface `dst`. From pinned memory this is
/// a direct DMA; from pageable memory the driver stages it.
///
/// # Errors
/// [`CudaError::InvalidCopy`] when `src` is too short for the copy or `src_pitch <
/// dst.width_bytes`; [`CudaError::Call`] naming `cuMemcpy2DAsync` when the driver refuses.
///
/// To fill a ring slot, prefer the slot's safe copies
/// ([`WriteSlot::copy_from_device`](crate::ring_buffer::WriteSlot::copy_from_device)); this
/// stays `unsafe` because `dst` is any address a [`DeviceSurface`] names and `src` is only
/// borrowed while the copy runs later.
///
/// # Safety
/// - The copy runs after this returns: `src` must stay alive and unwritten until the stream
///   has passed this copy (synchronize the stream or wait on an event recorded after it).
/// - `dst` must be device memory of `stream`'s context, `dst.rows` rows of `dst.width_bytes`
///   bytes `dst.pitch` apart, allocated and neither read nor written by other work until the
///   stream has passed this copy (a reserved ring slot's surface, on its storage's stream,
///   qualifies).
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
#[derive(Debug, Clone, Copy)]
pub(super) enum Source {
    Host(*const c_void),
    Device(sys::CUdeviceptr),
}

/// `cuMemcpy2DAsync` of `dst.rows` rows of `dst.width_bytes` bytes into device surface `dst`:
/// the one copy both upload paths share.
///
/// # Safety
/// The source holds that many rows at `src_pitch` and, like `dst`, stays alive and untouched
/// until the stream has run the copy; `dst` is device memory of `stream`'s context.
pub(super) unsafe fn copy_2d_async(
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

/// Host memory that a queued copy may read after the call that queued it has returned.
///
/// # Safety
/// `host_bytes` returns the same bytes, at the same address, for as long as the value lives,
/// wherever the value is moved, and nothing can write them but through a `&mut` borrow of the
/// value (which a [`Pending`] that owns it never takes).
pub unsafe trait HostBytes: Send {
    /// The bytes a copy reads.
    fn host_bytes(&self) -> &[u8];
}

// SAFETY: the allocation is the buffer's own and does not move with it; the only writer is
// `as_mut_slice`, which needs `&mut PinnedBuffer`.
unsafe impl HostBytes for PinnedBuffer {
    fn host_bytes(&self) -> &[u8] {
        self.as_slice()
    }
}

// SAFETY: an `Arc` does not move its contents; `&mut T` is reachable only through `&mut Arc`
// (`Arc::get_mut`), a `&mut` borrow of the value, as the contract allows.
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

// SAFETY: each variant keeps its own guarantee; the variant can change only through a `&mut`
// borrow of the value, which the trait's contract already allows for.
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
    /// Replaces the host source by `f(source)`, which must keep the memory the copies read
    /// allocated (it need not give access to it): the copies may still run.
    pub(crate) fn map_source(&mut self, f: impl FnOnce(T) -> T) {
        if let Some(PlaneSource::Host(t)) = self.src.take() {
            self.src = Some(PlaneSource::Host(f(t)));
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
    let planned = plan(pending, planes)?;
    // SAFETY: `pending` owns the source and destination the descriptors name and keeps them
    // until the stream has run the copies (see `PlannedCopies::queue`).
    unsafe { planned.queue() }
}

/// The copies of a frame, checked and described but not queued yet.
struct PlannedCopies {
    copies: [Option<(Source, usize, DeviceSurface)>; 3],
    stream: Stream,
}

// SAFETY: the descriptors hold addresses only: of host memory and device memory owned by the
// `Pending` planned with them, which is what keeps them valid (see `PlannedCopies::queue`); no
// Rust reference to that memory is made from them. `Stream` is `Send`.
unsafe impl Send for PlannedCopies {}

impl PlannedCopies {
    /// Queues the copies on their stream (`cuMemcpy2DAsync`, one per plane).
    ///
    /// # Errors
    /// [`CudaError::Call`] naming `cuMemcpy2DAsync`; the copies before it stay queued.
    ///
    /// # Safety
    /// The [`Pending`] planned with these copies must not have been dropped, waited for or
    /// given up ([`Pending::ran`]) yet: it keeps the memory they read and write until the stream
    /// has run them.
    unsafe fn queue(&self) -> Result<(), CudaError> {
        for (src, src_pitch, target) in self.copies.iter().flatten() {
            // SAFETY: each plane was checked to lie inside its source and destination when it
            // was planned; both stay alive and untouched until the stream ran the copy, by this
            // function's contract.
            unsafe { copy_2d_async(*src, *src_pitch, target, &self.stream) }?;
        }
        Ok(())
    }
}

/// Copies checked and described, with the [`Pending`] that owns their memory, not queued yet:
/// [`PlannedUpload::queue`] queues them and gives the `Pending` back, so the memory the copies
/// use is owned by whoever holds this until then. That can be another thread: NVENC queues its
/// uploads on its session's worker, which bounds the call.
pub(crate) struct PlannedUpload<T> {
    pending: Pending<T>,
    copies: PlannedCopies,
}

impl<T> PlannedUpload<T> {
    /// Queues the copies (`cuMemcpy2DAsync`, one per plane) and gives back what owns their
    /// memory until they ran, with the outcome: on an error the copies before it stay queued.
    pub(crate) fn queue(self) -> (Pending<T>, Result<(), CudaError>) {
        // SAFETY: `self.pending` was planned with these copies and is alive here; it is given
        // back, and keeps the memory until the stream has run the copies.
        let queued = unsafe { self.copies.queue() };
        (self.pending, queued)
    }

    /// Replaces the host source by `f(source)`, which must keep the memory the copies read
    /// allocated (the planned copies hold its address); see [`Pending::map_source`].
    pub(crate) fn map_source(&mut self, f: impl FnOnce(T) -> T) {
        self.pending.map_source(f);
    }
}

impl<T> std::fmt::Debug for PlannedUpload<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannedUpload").finish_non_exhaustive()
    }
}

/// [`copy_planes_async`] without queuing: checks the planes and describes the copies, to be
/// queued with [`PlannedUpload::queue`].
///
/// # Errors
/// As [`copy_planes_async`], except that nothing is queued (the host source comes back at once).
#[allow(clippy::type_complexity)]
pub(crate) fn plan_planes_async<T: HostBytes>(
    src: PlaneSource<T>,
    planes: &[Plane],
    dst: &Arc<PitchedBuffer>,
    stream: &Stream,
) -> Result<PlannedUpload<T>, (CudaError, Option<T>)> {
    let mut pending = Pending {
        src: Some(src),
        dst: Arc::clone(dst),
        stream: stream.clone(),
    };
    match plan(&pending, planes) {
        Ok(copies) => Ok(PlannedUpload { pending, copies }),
        // Nothing was queued: the source goes back without a wait.
        Err(e) => match pending.src.take() {
            Some(PlaneSource::Host(t)) => Err((e, Some(t))),
            _ => Err((e, None)),
        },
    }
}

/// Checks `planes` against the memory of `pending` and describes their copies.
fn plan<T: HostBytes>(pending: &Pending<T>, planes: &[Plane]) -> Result<PlannedCopies, CudaError> {
    let surface = pending.dst.surface();
    let dst_len = surface.pitch.saturating_mul(surface.rows);
    let mut copies: [Option<(Source, usize, DeviceSurface)>; 3] = [None, None, None];
    if planes.len() > copies.len() {
        return Err(CudaError::InvalidCopy {
            width_bytes: 0,
            rows: planes.len(),
            src_pitch: 0,
            src_len: 0,
        });
    }
    for (plane, slot) in planes.iter().zip(copies.iter_mut()) {
        let src_len = match &pending.src {
            Some(PlaneSource::Host(t)) => t.host_bytes().len(),
            _ => usize::MAX,
        };
        let invalid = || CudaError::InvalidCopy {
            width_bytes: plane.width,
            rows: plane.rows,
            src_pitch: plane.src_pitch,
            src_len,
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
        let source = match &pending.src {
            Some(PlaneSource::Host(t)) => {
                let bytes = t.host_bytes().get(plane.src_offset..).unwrap_or_default();
                let src_end = Plane::span(plane.src_pitch, plane.width, plane.rows);
                if src_end.is_none_or(|end| end > bytes.len()) {
                    return Err(invalid());
                }
                Source::Host(bytes.as_ptr().cast::<c_void>())
            }
            Some(PlaneSource::Device(d)) => Source::Device(
                d.ptr
                    .checked_add(plane.src_offset as u64)
                    .ok_or_else(invalid)?,
            ),
            None => continue,
        };
        *slot = Some((source, plane.src_pitch, target));
    }
    Ok(PlannedCopies {
        copies,
        stream: pending.stream.clone(),
    })
}

/// Copies `planes` of the device allocation `src` into a new host buffer of `len` bytes: each
/// plane's rows from `src_offset` in `src` (rows `src_pitch` apart) to `dst_offset` in the
/// buffer (rows `dst_pitch` apart). The copies are queued on `stream` (so they run after the work
/// queued there before, e.g. a producer's writes into `src`) and waited for (`cuStreamSynchronize`)
/// before this returns: a download, the one device-to-host copy of a frame for an encoder that
/// reads host memory.
///
/// # Errors
/// [`CudaError::InvalidCopy`] for a plane outside `src` or the buffer, or with a pitch smaller
/// than its width; [`CudaError::Call`] naming `cuMemcpy2DAsync` or `cuStreamSynchronize` when the
/// driver refuses. When the stream cannot be waited for, the buffer is leaked (a copy may still
/// write it).
pub fn download_planes(
    src: &PitchedBuffer,
    planes: &[Plane],
    len: usize,
    stream: &Stream,
) -> Result<Vec<u8>, CudaError> {
    let surface = src.surface();
    let src_len = surface.pitch.saturating_mul(surface.rows);
    for plane in planes {
        let src_end = Plane::span(plane.src_pitch, plane.width, plane.rows)
            .and_then(|s| s.checked_add(plane.src_offset));
        let dst_end = Plane::span(plane.dst_pitch, plane.width, plane.rows)
            .and_then(|s| s.checked_add(plane.dst_offset));
        if plane.src_pitch < plane.width
            || plane.dst_pitch < plane.width
            || src_end.is_none_or(|end| end > src_len)
            || dst_end.is_none_or(|end| end > len)
        {
            return Err(CudaError::InvalidCopy {
                width_bytes: plane.width,
                rows: plane.rows,
                src_pitch: plane.src_pitch,
                src_len,
            });
        }
    }
    let mut host = vec![0u8; len];
    let _current = stream.context().push()?;
    let mut queued = Ok(());
    for plane in planes {
        let copy = sys::CUDA_MEMCPY2D {
            srcXInBytes: 0,
            srcY: 0,
            srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
            srcHost: std::ptr::null(),
            srcDevice: surface.device_ptr + plane.src_offset as u64,
            srcArray: std::ptr::null_mut(),
            srcPitch: plane.src_pitch,
            dstXInBytes: 0,
            dstY: 0,
            dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_HOST,
            dstHost: host[plane.dst_offset..].as_mut_ptr().cast::<c_void>(),
            dstDevice: 0,
            dstArray: std::ptr::null_mut(),
            dstPitch: plane.dst_pitch,
            WidthInBytes: plane.width,
            Height: plane.rows,
        };
        // SAFETY: the descriptor is fully initialized; both regions lie inside their buffers
        // (checked above): `src` is a live allocation that `&PitchedBuffer` keeps allocated for
        // this call, and `host` is not read, moved out or freed until the stream has been
        // waited for below (or is leaked when that fails). The stream belongs to the context
        // made current above.
        queued = unsafe { sys::cuMemcpy2DAsync_v2(&copy, stream.0.cu_stream()) }
            .result()
            .map_err(call("cuMemcpy2DAsync"));
        if queued.is_err() {
            break;
        }
    }
    // Whatever was queued must have run before `host` is touched again, even after an error.
    if let Err(e) = stream.synchronize() {
        std::mem::forget(host);
        return Err(e);
    }
    queued.map(|()| host)
}
