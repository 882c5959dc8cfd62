//! CUDA storages for the ring: pinned host memory and pitched device memory, over the crate's
//! CUDA layer ([`crate::cuda`]), which makes every driver call.
//!
//! What the NVENC backend does with each (see [`crate::nvenc::NvencEncoder`]): a frame in a
//! [`PinnedStorage`] slot is uploaded from the slot itself (the DMA engine reads pinned memory
//! directly, with no staging copy); a frame in a [`DeviceStorage`] slot, written there by the
//! producer on the storage's [stream](DeviceStorage::stream), is encoded from the slot's own
//! surface, which NVENC registers once, with no copy at all.

use std::ptr::NonNull;
use std::sync::Arc;

use super::storage::{check_counts, DeviceSlots, DeviceSurface, HostSlots, SlotStorage};
use super::{RingError, WriteSlot};
use crate::cuda::{
    self, Context, CudaBytes, FrameCopyError, FrameLayout, PinnedBuffer, PitchedBuffer, Stream,
};
use crate::encoder::{PixelFormat, Resolution};

/// Page-locked host memory from `cuMemHostAlloc`, one allocation for all slots (see
/// [`PinnedBuffer`]: not write-combined, so the CPU may read the slots at full speed).
#[derive(Debug)]
pub struct PinnedStorage {
    buffer: PinnedBuffer,
    slots: usize,
    slot_len: usize,
    stride: usize,
}

impl PinnedStorage {
    /// Allocates `slots` zeroed slots of `slot_len` bytes of pinned memory in `ctx`.
    ///
    /// # Errors
    /// [`RingError::CudaUnavailable`] without a driver; count errors as for
    /// [`HostStorage::new`](super::HostStorage::new); [`RingError::Cuda`] when the driver refuses
    /// (`cuMemHostAlloc`).
    pub fn new(ctx: &Context, slots: usize, slot_len: usize) -> Result<Self, RingError> {
        check_counts(slots, slot_len)?;
        cuda::available()?;
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
        Ok(Self {
            buffer: PinnedBuffer::new(ctx, bytes)?,
            slots,
            slot_len,
            stride,
        })
    }

    /// Pinned storage on device `ordinal`'s primary context.
    ///
    /// # Errors
    /// As [`Context::open`] and [`new`](Self::new).
    pub fn on_device(ordinal: usize, slots: usize, slot_len: usize) -> Result<Self, RingError> {
        check_counts(slots, slot_len)?;
        Self::new(&Context::open(ordinal)?, slots, slot_len)
    }

    /// The CUDA context the memory belongs to.
    #[must_use]
    pub fn context(&self) -> &Context {
        self.buffer.context()
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
        unsafe { self.buffer.as_ptr().add(index * self.stride) }
    }
}

/// Pitched device memory, one `cuMemAllocPitch` allocation per slot, so each slot can be
/// registered with NVENC as its own input surface (`NV_ENC_INPUT_RESOURCE_TYPE_CUDADEVICEPTR` with
/// the slot's pitch). The CPU cannot touch it; slots expose [`DeviceSurface`]s only.
///
/// The storage owns a CUDA [`Stream`](crate::cuda::Stream) of its context
/// ([`DeviceStorage::stream`]): a producer queues its writes into a reserved slot on that stream
/// and commits the slot without waiting; whoever reads the slot orders itself after that stream
/// (NVENC with `cuStreamWaitEvent`, a download by queuing its copy on it). A slot is written
/// safely with [`WriteSlot::copy_from_device`] from a cudarc allocation (checked sizes, stream
/// ordering on both sides), or with the producer's own kernels and copies on the stream
/// ([`Stream::cudarc`], [`Stream::cu_stream`]; writing through a raw address is `unsafe` on the
/// producer's side, as it is in cudarc), or [`WriteSlot::copy_from_device_ptr`] from a raw
/// device address.
///
/// A storage made by [`for_frames`](DeviceStorage::for_frames) knows its frames' pixel format
/// ([`DeviceStorage::layout`]), so a copy into a slot writes each plane where NVENC reads it; one
/// made by [`new`](DeviceStorage::new) copies one plane of `width_bytes × rows`.
///
/// Each surface is held in an `Arc`, and an NVENC registration of a surface holds a clone, so a
/// registered surface stays allocated until it is unregistered, whichever of the ring and the
/// encoder goes first: the surfaces of a ring dropped before the encoder are freed when the
/// encoder unregisters them (when it evicts them from its bounded cache, or at its teardown).
///
#[derive(Debug)]
pub struct DeviceStorage {
    ctx: Context,
    layout: FrameLayout,
    /// Dropped (after waiting for it) in `Drop`, before the surfaces.
    stream: std::mem::ManuallyDrop<Stream>,
    surfaces: Vec<Arc<PitchedBuffer>>,
    slot_len: usize,
}

impl DeviceStorage {
    /// Allocates `slots` surfaces of `rows` rows of `width_bytes` bytes (for NV12 or I420 of a
    /// `w × h` frame: `width_bytes = w`, `rows = h * 3 / 2`) in `ctx`, and the storage's stream.
    /// The caller's current CUDA context is current again when this returns.
    ///
    /// # Errors
    /// [`RingError::CudaUnavailable`] without a driver; [`RingError::InvalidSlotCount`],
    /// [`RingError::InvalidLayout`] for zero width or rows; [`RingError::SizeOverflow`];
    /// [`RingError::Cuda`] when `cuMemAllocPitch` or `cuStreamCreate` fails (what was already
    /// allocated is freed).
    pub fn new(
        ctx: &Context,
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
        cuda::available()?;
        let mut surfaces = Vec::with_capacity(slots);
        for _ in 0..slots {
            // On an error the buffers allocated so far are freed as `surfaces` drops.
            surfaces.push(Arc::new(PitchedBuffer::new(ctx, width_bytes, rows)?));
        }
        let pitch = surfaces.first().map_or(width_bytes, |s| s.surface().pitch);
        let slot_len = pitch.checked_mul(rows).ok_or(RingError::SizeOverflow {
            slots,
            slot_len: pitch,
            max: usize::MAX,
        })?;
        // cudarc makes the context current to create the stream; the caller's comes back here.
        let stream = {
            let _callers = cuda::save_current()?;
            ctx.new_stream()?
        };
        Ok(Self {
            ctx: ctx.clone(),
            layout: FrameLayout::Rows { width_bytes, rows },
            stream: std::mem::ManuallyDrop::new(stream),
            surfaces,
            slot_len,
        })
    }

    /// Device storage on device `ordinal`'s primary context.
    ///
    /// # Errors
    /// As [`Context::open`] and [`new`](Self::new).
    pub fn on_device(
        ordinal: usize,
        slots: usize,
        width_bytes: usize,
        rows: usize,
    ) -> Result<Self, RingError> {
        check_counts(slots, 1)?;
        let _callers = cuda::save_current()?;
        Self::new(&Context::open(ordinal)?, slots, width_bytes, rows)
    }

    /// Allocates `slots` surfaces that each hold one frame of `format` at `resolution` (`width`
    /// bytes by `height * 3 / 2` rows, the layout
    /// [`SlotFrame::Device`](crate::encoder::SlotFrame::Device) describes) in `ctx`; the slot
    /// copies then write each plane where NVENC reads it ([`DeviceStorage::layout`]).
    ///
    /// # Errors
    /// [`RingError::InvalidLayout`] for a zero or odd side (4:2:0 needs even sizes); otherwise
    /// as [`new`](Self::new).
    pub fn for_frames(
        ctx: &Context,
        slots: usize,
        resolution: Resolution,
        format: PixelFormat,
    ) -> Result<Self, RingError> {
        let (width, height) = (resolution.width as usize, resolution.height as usize);
        let rows = height.saturating_mul(3) / 2;
        if format.frame_len(resolution).is_err() {
            return Err(RingError::InvalidLayout {
                width_bytes: width,
                rows,
            });
        }
        let mut storage = Self::new(ctx, slots, width, rows)?;
        storage.layout = match format {
            PixelFormat::Nv12 => FrameLayout::Nv12 { width, height },
            PixelFormat::I420 => FrameLayout::I420 { width, height },
        };
        Ok(storage)
    }

    /// [`for_frames`](Self::for_frames) on device `ordinal`'s primary context.
    ///
    /// # Errors
    /// As [`Context::open`] and [`for_frames`](Self::for_frames).
    pub fn on_device_for_frames(
        ordinal: usize,
        slots: usize,
        resolution: Resolution,
        format: PixelFormat,
    ) -> Result<Self, RingError> {
        check_counts(slots, 1)?;
        let _callers = cuda::save_current()?;
        Self::for_frames(&Context::open(ordinal)?, slots, resolution, format)
    }

    /// The CUDA context the memory belongs to.
    #[must_use]
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// How a frame lies in each slot: the planes of its pixel format for a storage made by
    /// [`for_frames`](Self::for_frames), one plane of `width_bytes × rows` for one made by
    /// [`new`](Self::new).
    #[must_use]
    pub fn layout(&self) -> FrameLayout {
        self.layout
    }

    /// The stream a producer orders its writes into a slot on (a kernel, a `cuMemcpy2DAsync`)
    /// before committing the slot: readers of the slot order themselves after this stream, so
    /// the producer need not wait for its own work. It belongs to [`DeviceStorage::context`].
    #[must_use]
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// The allocation of slot `index`, shared: an NVENC registration keeps a clone.
    ///
    /// # Panics
    /// When `index >= slot_count()`; the ring never asks for such an index.
    pub(crate) fn buffer(&self, index: usize) -> &Arc<PitchedBuffer> {
        &self.surfaces[index]
    }
}

impl Drop for DeviceStorage {
    fn drop(&mut self) {
        // Writes a producer queued into the surfaces must have run before they are freed. (A
        // wedged GPU makes this wait as long as it is wedged, like every CUDA free would.)
        if let Err(e) = self.stream.synchronize() {
            tracing::warn!(error = %e, "cuStreamSynchronize failed when dropping a device ring");
        }
        // cudarc makes the stream's context current to destroy it; the caller's comes back.
        let _callers = cuda::save_current();
        // SAFETY: the stream is dropped here once and never used again (`self` is being dropped).
        unsafe { std::mem::ManuallyDrop::drop(&mut self.stream) };
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
        self.surfaces[index].surface()
    }
}

impl DeviceStorage {
    /// [`WriteSlot::copy_from_device`] into `surface`, one of this storage's surfaces that the
    /// caller holds reserved (or the scratch surface of a frame being dropped).
    pub(crate) fn copy_into<S: CudaBytes + ?Sized>(
        &self,
        surface: &DeviceSurface,
        src: &S,
        src_pitch: usize,
    ) -> Result<(), FrameCopyError> {
        cuda::copy_from_cuda(src, src_pitch, surface, self.layout, &self.stream)
    }

    /// [`WriteSlot::copy_from_device_ptr`] into `surface`, as [`copy_into`](Self::copy_into).
    ///
    /// # Safety
    /// As [`WriteSlot::copy_from_device_ptr`].
    pub(crate) unsafe fn copy_ptr_into(
        &self,
        surface: &DeviceSurface,
        src: cudarc::driver::sys::CUdeviceptr,
        src_pitch: usize,
    ) -> Result<(), FrameCopyError> {
        // SAFETY: the caller's contract is this function's.
        unsafe { cuda::copy_from_device_ptr(src, src_pitch, surface, self.layout, &self.stream) }
    }
}

impl WriteSlot<'_, DeviceStorage> {
    /// Queues on the storage's [stream](DeviceStorage::stream) the copy of one frame from `src`,
    /// device memory of the storage's context allocated with cudarc (a [`CudaSlice<u8>`] or a
    /// view of one), with rows `src_pitch` bytes apart, into this slot, in the storage's
    /// [layout](DeviceStorage::layout) (for I420, the source's chroma rows are `src_pitch / 2`
    /// apart, as in the slot). Returns without waiting for the copy: commit the slot at once.
    ///
    /// The copy is ordered after the work queued on `src`'s stream so far (what the producer's
    /// kernels wrote there), and `src`'s stream is ordered after the copy, so `src` may be
    /// dropped or rewritten as soon as this returns; with cudarc's event tracking (its default
    /// once a context has several streams) its uses on other streams are ordered too. The
    /// source may be longer than one frame.
    ///
    /// # Errors
    /// [`FrameCopyError::InvalidPitch`] for `src_pitch` below the frame's width (or odd for
    /// I420); [`FrameCopyError::SourceTooShort`] when `src` holds less than one frame at that
    /// pitch; [`FrameCopyError::OtherContext`] for memory of another context;
    /// [`FrameCopyError::Cuda`] when the driver refuses (naming the call). Nothing is queued
    /// except after a driver refusal.
    ///
    /// [`CudaSlice<u8>`]: cudarc::driver::CudaSlice
    pub fn copy_from_device<S: CudaBytes + ?Sized>(
        &mut self,
        src: &S,
        src_pitch: usize,
    ) -> Result<(), FrameCopyError> {
        let surface = self.surface();
        self.storage().copy_into(&surface, src, src_pitch)
    }

    /// As [`copy_from_device`](Self::copy_from_device), from the raw device address `src` (a
    /// decoder's surface, memory of another library), with no ordering added between the copy
    /// and the source's own stream. Only the pitch can be checked.
    ///
    /// # Errors
    /// As [`copy_from_device`](Self::copy_from_device), without `SourceTooShort` and
    /// `OtherContext`.
    ///
    /// # Safety
    /// - `src` is device memory that the storage's context can read (its own allocation, or
    ///   memory reachable from it by unified addressing), holding one frame of the storage's
    ///   [layout](DeviceStorage::layout) at `src_pitch`: at least
    ///   `src_pitch × (rows - 1) + width` bytes for one plane, and the chroma planes after the
    ///   luma plane for I420 (rows `src_pitch / 2` apart).
    /// - Every write of that frame is ordered before the work queued on the storage's stream
    ///   from now on (queued on that stream, or waited for with an event or a synchronize).
    /// - The memory stays allocated and is not written until the storage's stream has run the
    ///   copy (wait on an event recorded on it after this call, or synchronize it).
    pub unsafe fn copy_from_device_ptr(
        &mut self,
        src: cudarc::driver::sys::CUdeviceptr,
        src_pitch: usize,
    ) -> Result<(), FrameCopyError> {
        let surface = self.surface();
        // SAFETY: `surface` is this reserved slot's; the source is this function's contract.
        unsafe { self.storage().copy_ptr_into(&surface, src, src_pitch) }
    }

    /// The stream to queue the slot's writes on (the storage's).
    #[must_use]
    pub fn stream(&self) -> &Stream {
        self.storage().stream()
    }
}

// SAFETY: a lease's bytes are a slot of the ring's storage, which does not move while the ring
// (which the lease shares) lives; the producer cannot reserve, so cannot write, a slot while a
// lease on it (or on an older slot) is alive (see the module docs of the ring).
unsafe impl<S: HostSlots> cuda::HostBytes for super::ReadSlot<S>
where
    super::ReadSlot<S>: Send,
{
    fn host_bytes(&self) -> &[u8] {
        self
    }
}
