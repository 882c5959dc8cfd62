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
use super::RingError;
use crate::cuda::{self, Context, PinnedBuffer, PitchedBuffer, Stream};

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
/// ([`DeviceStorage::stream`]): a producer queues its writes into a slot (a kernel, a
/// `cuMemcpy2DAsync` from a decoder's surface, [`copy_host_to_device_async`]) on that stream and
/// commits the slot without waiting; whoever reads the slot orders itself after that stream
/// (NVENC with `cuStreamWaitEvent`, a download by queuing its copy on it).
///
/// Each surface is held in an `Arc`, and an NVENC registration of a surface holds a clone, so a
/// registered surface stays allocated until it is unregistered, whichever of the ring and the
/// encoder goes first: the surfaces of a ring dropped before the encoder are freed when the
/// encoder unregisters them (when it evicts them from its bounded cache, or at its teardown).
///
/// [`copy_host_to_device_async`]: crate::cuda::copy_host_to_device_async
#[derive(Debug)]
pub struct DeviceStorage {
    ctx: Context,
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

    /// The CUDA context the memory belongs to.
    #[must_use]
    pub fn context(&self) -> &Context {
        &self.ctx
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
