//! Device slots: a producer whose frames are already in CUDA memory (a decoder's surfaces, a
//! renderer's output, a kernel's result) writes each frame into a ring slot on the GPU and
//! commits it; NVENC encodes from the slot with no copy. [`FrameProducer::reserve_device`] and
//! its `try_`, `_timeout` and async forms, and [`DeviceFrameSlot`].
//!
//! The slot's lifetime is the lease's: the surface is the producer's from `reserve_device` until
//! `commit` (or the slot's drop, which gives it back unpublished), then the encoder's until the
//! picture made from it has been read back; the ring hands it out again only after that. Work
//! the producer queues on [`DeviceFrameSlot::stream`] before committing is ordered before the
//! encoder's reads (NVENC waits on an event recorded on that stream), so the producer need not
//! wait for its own copies or kernels.
//!
//! Filling a slot needs no `unsafe` from a cudarc allocation:
//! [`DeviceFrameSlot::copy_from_device`] checks the source's size and pitch against the frame
//! and orders the copy against the source's stream on both sides. A producer's own kernels run on
//! [`DeviceFrameSlot::stream`] ([`Stream::cudarc`] for cudarc, [`Stream::cu_stream`] for driver
//! calls); passing them the slot's raw address is `unsafe` on the producer's side, as any raw
//! device pointer is in cudarc. [`DeviceFrameSlot::copy_from_device_ptr`] copies from a raw
//! device address under a stated contract.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::cuda::{CudaBytes, DeviceSurface, FrameCopyError, Stream};
use crate::ring_buffer::{DeviceStorage, RingStats, WriteSlot};

use super::producer::{poll_ready, reserve_ring, FrameProducer, SlotCtx};
use super::ring::{RingWrite, SlotMemory};
use super::state::{BackPressure, PipelineError, Submitted, WaitFor};

/// A reserved device slot of a ring in [`SlotMemory::Device`]: copy the frame in
/// ([`copy_from_device`](Self::copy_from_device) from a cudarc allocation) or write it into
/// [`surface`](Self::surface) (a `cuMemcpy2DAsync` from a decoder's surface, a kernel) with the
/// work ordered on [`stream`](Self::stream), then [`commit`](Self::commit). Dropped uncommitted,
/// it is given back and nothing is submitted.
///
/// The frame's layout in the surface (`pitch` bytes per row): for NV12, `height` luma rows then
/// `height / 2` interleaved chroma rows; for I420, `height` luma rows, then the U and V planes of
/// `height / 2` rows each at `pitch / 2` (NVENC's IYUV layout). See
/// [`SlotFrame::Device`](crate::encoder::SlotFrame::Device).
pub struct DeviceFrameSlot<'a> {
    storage: DeviceSlotRef<'a>,
    ctx: SlotCtx<'a>,
}

enum DeviceSlotRef<'a> {
    /// A slot of the ring.
    Ring(WriteSlot<'a, DeviceStorage>),
    /// The scratch surface a frame dropped under [`BackPressure::DropNewest`] is written into.
    Dropped {
        scratch: &'a DeviceStorage,
        stats: RingStats,
    },
}

impl fmt::Debug for DeviceFrameSlot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceFrameSlot")
            .field("surface", &self.surface())
            .field("dropping", &self.will_drop())
            .finish()
    }
}

impl DeviceFrameSlot<'_> {
    /// The device surface to write the frame into: its address (`CUdeviceptr`), pitch, row
    /// width and rows, in the ring's CUDA context (that of [`PipelineOptions::cuda_device`]).
    ///
    /// [`PipelineOptions::cuda_device`]: super::PipelineOptions::cuda_device
    #[must_use]
    pub fn surface(&self) -> DeviceSurface {
        use crate::ring_buffer::DeviceSlots;
        match &self.storage {
            DeviceSlotRef::Ring(slot) => slot.surface(),
            DeviceSlotRef::Dropped { scratch, .. } => scratch.surface(0),
        }
    }

    /// The CUDA stream to queue the work that writes the frame on, before committing; the
    /// encoder orders its reads after it. For the producer's own kernels: the cudarc stream is
    /// [`Stream::cudarc`] (launch on it, or `join` it with the producer's streams), the driver
    /// handle [`Stream::cu_stream`].
    #[must_use]
    pub fn stream(&self) -> &Stream {
        self.device_storage().stream()
    }

    /// Queues on the slot's [stream](Self::stream) the copy of one frame from `src`, the
    /// producer's own device memory allocated with cudarc (a `CudaSlice<u8>` or a view of one,
    /// in the ring's context), with rows `src_pitch` bytes apart, into the slot, plane by plane
    /// in the layout the encoder reads (for I420 the source's chroma rows are `src_pitch / 2`
    /// apart). Returns without waiting: commit the slot at once. `src` may be dropped or
    /// rewritten as soon as this returns: its stream is ordered after the copy, and the copy
    /// after the work already queued on its stream (see
    /// [`WriteSlot::copy_from_device`](crate::ring_buffer::WriteSlot::copy_from_device)).
    ///
    /// # Errors
    /// [`FrameCopyError::InvalidPitch`] (below the frame's width, or odd for I420),
    /// [`FrameCopyError::SourceTooShort`] (less than one frame at that pitch),
    /// [`FrameCopyError::OtherContext`], [`FrameCopyError::Cuda`] naming the failed call. The
    /// slot stays reserved: copy again or drop it.
    pub fn copy_from_device<S: CudaBytes + ?Sized>(
        &mut self,
        src: &S,
        src_pitch: usize,
    ) -> Result<(), FrameCopyError> {
        let surface = self.surface();
        self.device_storage().copy_into(&surface, src, src_pitch)
    }

    /// As [`copy_from_device`](Self::copy_from_device), from a raw device address (a
    /// decoder's surface, another library's memory), with no ordering added between the copy
    /// and the source's own stream; only the pitch can be checked.
    ///
    /// # Errors
    /// As [`copy_from_device`](Self::copy_from_device), without `SourceTooShort` and
    /// `OtherContext`.
    ///
    /// # Safety
    /// As [`WriteSlot::copy_from_device_ptr`](crate::ring_buffer::WriteSlot::copy_from_device_ptr),
    /// with the slot's [stream](Self::stream): `src` is device memory the ring's context can
    /// read, holding one frame at `src_pitch`, written before the work queued on that stream
    /// from now on, and neither freed nor written until that stream has run the copy.
    pub unsafe fn copy_from_device_ptr(
        &mut self,
        src: cudarc::driver::sys::CUdeviceptr,
        src_pitch: usize,
    ) -> Result<(), FrameCopyError> {
        let surface = self.surface();
        // SAFETY: `surface` is this reserved slot's (or the scratch surface, which only frames
        // being dropped are written into); the source is this function's contract.
        unsafe {
            self.device_storage()
                .copy_ptr_into(&surface, src, src_pitch)
        }
    }

    fn device_storage(&self) -> &DeviceStorage {
        match &self.storage {
            DeviceSlotRef::Ring(slot) => slot.storage(),
            DeviceSlotRef::Dropped { scratch, .. } => scratch,
        }
    }

    /// Whether committing this slot will drop the frame ([`BackPressure::DropNewest`] on a full
    /// ring; the surface is then a scratch surface, so the producer's code stays the same).
    #[must_use]
    pub fn will_drop(&self) -> bool {
        matches!(self.storage, DeviceSlotRef::Dropped { .. })
    }

    /// Publishes the frame with presentation timestamp `pts` (above the previous frame's) and,
    /// if `force_keyframe`, a request for an IDR. The work queued on [`stream`](Self::stream)
    /// need not have run: the encoder waits for it on the GPU.
    ///
    /// # Errors
    /// [`PipelineError::NonMonotonicPts`] (the slot is given back), or, when the encoder thread
    /// is gone, [`PipelineError::OutputDropped`] / [`PipelineError::EncoderStopped`].
    pub fn commit(self, pts: i64, force_keyframe: bool) -> Result<Submitted, PipelineError> {
        let DeviceFrameSlot { storage, ctx } = self;
        let commit = match storage {
            DeviceSlotRef::Ring(slot) => Ok(move |meta| slot.commit(meta)),
            DeviceSlotRef::Dropped { stats, .. } => Err(stats),
        };
        ctx.publish(pts, force_keyframe, commit)
    }
}

impl FrameProducer {
    fn reserve_device_inner(
        &mut self,
        wait: WaitFor,
    ) -> Result<DeviceFrameSlot<'_>, PipelineError> {
        let memory = self.ring.memory();
        let wrong = PipelineError::WrongSlotMemory {
            memory,
            call: "reserve_device",
            use_instead:
                "reserve or push (a ring opened with SlotMemory::Device takes device slots)",
        };
        if memory != SlotMemory::Device {
            return Err(wrong);
        }
        self.before_reserve()?;
        let stats = self.ring.stats();
        let reserved = reserve_ring(&mut self.ring, self.policy, &wait, &self.shared)?;
        let ctx = SlotCtx {
            seq: &mut self.seq,
            last_pts: &mut self.last_pts,
            dropped: &mut self.dropped,
            frame_len: self.frame_len,
            shared: &self.shared,
        };
        let storage = match reserved {
            Some(RingWrite::Device(slot)) => DeviceSlotRef::Ring(slot),
            // Not reached: the ring is in device memory (checked above).
            Some(RingWrite::Host(_)) => return Err(wrong),
            None => match &self.device_scratch {
                Some(scratch) => DeviceSlotRef::Dropped { scratch, stats },
                // Not reached: a device ring under DropNewest is opened with its scratch.
                None => return Err(PipelineError::Full),
            },
        };
        Ok(DeviceFrameSlot { storage, ctx })
    }

    /// Reserves a device slot (a ring in [`SlotMemory::Device`]), waiting while the ring is full
    /// (under [`BackPressure::Block`]; blocking by design, see
    /// [`reserve_device_timeout`](Self::reserve_device_timeout)).
    ///
    /// # Errors
    /// [`PipelineError::WrongSlotMemory`] for a ring in host or pinned memory;
    /// [`PipelineError::OutputDropped`], [`PipelineError::EncoderStopped`].
    pub fn reserve_device(&mut self) -> Result<DeviceFrameSlot<'_>, PipelineError> {
        self.reserve_device_inner(WaitFor::Forever)
    }

    /// Reserves a device slot without waiting.
    ///
    /// # Errors
    /// [`PipelineError::Full`], and as [`reserve_device`](Self::reserve_device).
    pub fn try_reserve_device(&mut self) -> Result<DeviceFrameSlot<'_>, PipelineError> {
        self.reserve_device_inner(WaitFor::No)
    }

    /// Reserves a device slot, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`PipelineError::Timeout`], and as [`reserve_device`](Self::reserve_device).
    pub fn reserve_device_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<DeviceFrameSlot<'_>, PipelineError> {
        self.reserve_device_inner(match Instant::now().checked_add(timeout) {
            Some(deadline) => WaitFor::Until(deadline),
            None => WaitFor::Forever,
        })
    }

    /// Reserves a device slot asynchronously, on any executor. Cancellation-safe as
    /// [`reserve_async`](Self::reserve_async): the slot is taken only in the poll that returns
    /// it.
    pub fn reserve_device_async(&mut self) -> ReserveDeviceFuture<'_> {
        ReserveDeviceFuture {
            producer: Some(self),
            waiting_since: None,
        }
    }
}

/// The future of [`FrameProducer::reserve_device_async`].
#[must_use = "futures do nothing unless polled"]
pub struct ReserveDeviceFuture<'a> {
    producer: Option<&'a mut FrameProducer>,
    /// When it first found the ring full: its wait counts as the producer's blocked time.
    waiting_since: Option<std::time::Instant>,
}

impl Drop for ReserveDeviceFuture<'_> {
    fn drop(&mut self) {
        super::producer::count_wait(&mut self.producer, &mut self.waiting_since);
    }
}

impl fmt::Debug for ReserveDeviceFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReserveDeviceFuture")
            .field("done", &self.producer.is_none())
            .finish()
    }
}

impl<'a> Future for ReserveDeviceFuture<'a> {
    type Output = Result<DeviceFrameSlot<'a>, PipelineError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let wrong_memory = |p: &FrameProducer| p.ring.memory() != SlotMemory::Device;
        let this = &mut *self;
        poll_ready(
            &mut this.producer,
            &mut this.waiting_since,
            cx,
            wrong_memory,
        )
        .map(|producer| match producer {
            Some(producer) => producer.reserve_device_inner(WaitFor::No),
            None => Err(PipelineError::EncoderStopped),
        })
    }
}

/// Under [`BackPressure::DropNewest`], a device ring needs one surface for frames that are
/// dropped; `None` otherwise.
pub(super) fn drop_scratch(
    memory: SlotMemory,
    policy: BackPressure,
    cuda_device: usize,
    config: &crate::encoder::EncoderConfig,
) -> Result<Option<DeviceStorage>, PipelineError> {
    if memory != SlotMemory::Device || policy != BackPressure::DropNewest {
        return Ok(None);
    }
    super::ring::device_storage(cuda_device, 1, config)
        .map(Some)
        .map_err(PipelineError::Ring)
}
