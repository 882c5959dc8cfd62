//! The stage's ring over the memory the active backend reads: [`SlotMemory`], and the two ends as
//! enums over the ring's storages, so the producer and the encoder thread are written once.

use std::time::Duration;

use crate::cuda::Context;
use crate::encoder::{EncoderConfig, SlotFrame};
use crate::ring_buffer::{
    CommitError, Consumer, DeviceStorage, FrameMeta, FrameRing, HostStorage, PinnedStorage,
    PopError, Producer, ReserveError, RingError, RingStats, StorageHold, WriteSlot,
};

/// Which memory the stage's ring slots live in. See the [module docs](super#storage-and-failover).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SlotMemory {
    /// CUDA pinned host memory when the encoder that opened is NVENC, plain host memory
    /// otherwise.
    #[default]
    Auto,
    /// Plain host memory (64-byte aligned), which every backend reads.
    Host,
    /// CUDA pinned (page-locked) host memory on [`PipelineOptions::cuda_device`]: NVENC uploads
    /// a frame from its slot by DMA, with no host copy; the CPU backends read it as host memory.
    /// Needs the CUDA driver.
    ///
    /// [`PipelineOptions::cuda_device`]: super::PipelineOptions::cuda_device
    Pinned,
    /// CUDA device memory on [`PipelineOptions::cuda_device`], one pitched surface per slot, for
    /// a producer whose frames are already on the GPU: it reserves a
    /// [`DeviceFrameSlot`](super::DeviceFrameSlot) ([`FrameProducer::reserve_device`]), writes
    /// the frame on the slot's stream (safely from a cudarc allocation with
    /// [`DeviceFrameSlot::copy_from_device`](super::DeviceFrameSlot::copy_from_device), or with
    /// its own kernels) and commits it; NVENC encodes from the slot with no copy. Host frames
    /// cannot be [`push`](super::FrameProducer::push)ed into a device ring (a typed error). A
    /// backend that reads host memory (after a failover from NVENC) downloads each frame. Needs
    /// the CUDA driver; never chosen by `Auto`.
    ///
    /// [`PipelineOptions::cuda_device`]: super::PipelineOptions::cuda_device
    /// [`FrameProducer::reserve_device`]: super::FrameProducer::reserve_device
    Device,
}

impl std::fmt::Display for SlotMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SlotMemory::Auto => "auto",
            SlotMemory::Host => "host memory",
            SlotMemory::Pinned => "CUDA pinned memory",
            SlotMemory::Device => "CUDA device memory",
        })
    }
}

/// Applies `$body` to the storage-typed end inside an [`Ends`] value.
macro_rules! each {
    ($value:expr, $end:ident => $body:expr) => {
        match $value {
            Ends::Host($end) => $body,
            Ends::Pinned($end) => $body,
            Ends::Device($end) => $body,
        }
    };
}

/// One value per storage the stage's ring can be in.
pub(super) enum Ends<H, P, D> {
    Host(H),
    Pinned(P),
    Device(D),
}

pub(super) type RingProducer =
    Ends<Producer<HostStorage>, Producer<PinnedStorage>, Producer<DeviceStorage>>;
pub(super) type RingConsumer =
    Ends<Consumer<HostStorage>, Consumer<PinnedStorage>, Consumer<DeviceStorage>>;

/// A ring's memory, kept allocated without either end.
pub(super) type RingHold =
    Ends<StorageHold<HostStorage>, StorageHold<PinnedStorage>, StorageHold<DeviceStorage>>;

/// How long [`RingProducer::reserve`] waits for a free slot.
#[derive(Clone, Copy)]
pub(super) enum Reserve {
    Now,
    Forever,
    For(Duration),
}

/// A reserved slot: one the CPU writes, or a device one.
pub(super) enum RingWrite<'a> {
    Host(HostWrite<'a>),
    Device(WriteSlot<'a, DeviceStorage>),
}

/// A reserved slot the CPU can write: host or pinned memory.
pub(super) enum HostWrite<'a> {
    Host(WriteSlot<'a, HostStorage>),
    Pinned(WriteSlot<'a, PinnedStorage>),
}

/// Creates the ring: `slots` slots for frames of `config` (`frame_len` bytes each) in `memory`
/// (not `Auto`: resolved by the caller).
pub(super) fn new_ring(
    memory: SlotMemory,
    cuda_device: usize,
    slots: usize,
    config: &EncoderConfig,
    frame_len: usize,
) -> Result<(RingProducer, RingConsumer), RingError> {
    Ok(match memory {
        SlotMemory::Pinned => {
            let storage = PinnedStorage::new(&Context::open(cuda_device)?, slots, frame_len)?;
            let (p, c) = FrameRing::with_storage(storage)?;
            (Ends::Pinned(p), Ends::Pinned(c))
        }
        SlotMemory::Device => {
            let storage = device_storage(cuda_device, slots, config)?;
            let (p, c) = FrameRing::with_storage(storage)?;
            (Ends::Device(p), Ends::Device(c))
        }
        SlotMemory::Host | SlotMemory::Auto => {
            let (p, c) = FrameRing::new(slots, frame_len)?;
            (Ends::Host(p), Ends::Host(c))
        }
    })
}

/// Device storage of `slots` surfaces that each hold one frame of `config` in the layout
/// [`SlotFrame::Device`] describes (`width` bytes by `height * 3 / 2` rows), knowing the pixel
/// format so that the slots' copies write each plane where NVENC reads it.
pub(super) fn device_storage(
    cuda_device: usize,
    slots: usize,
    config: &EncoderConfig,
) -> Result<DeviceStorage, RingError> {
    DeviceStorage::on_device_for_frames(cuda_device, slots, config.resolution, config.pixel_format)
}

impl RingProducer {
    pub(super) fn memory(&self) -> SlotMemory {
        match self {
            Ends::Host(_) => SlotMemory::Host,
            Ends::Pinned(_) => SlotMemory::Pinned,
            Ends::Device(_) => SlotMemory::Device,
        }
    }

    pub(super) fn stats(&self) -> RingStats {
        each!(self, p => p.stats())
    }

    pub(super) fn note_dropped(&self, frames: u64) {
        each!(self, p => p.note_dropped(frames));
    }

    pub(super) fn is_abandoned(&self) -> bool {
        each!(self, p => p.is_abandoned())
    }

    pub(super) fn close(self) {
        each!(self, p => p.close());
    }

    /// Reserves a slot: without waiting, waiting as long as it takes (blocking by design; the
    /// stage's plain `reserve`), or at most `timeout`.
    pub(super) fn reserve(&mut self, wait: Reserve) -> Result<RingWrite<'_>, ReserveError> {
        fn one<S: crate::ring_buffer::SlotStorage>(
            p: &mut Producer<S>,
            wait: Reserve,
        ) -> Result<WriteSlot<'_, S>, ReserveError> {
            match wait {
                Reserve::Now => p.try_reserve(),
                Reserve::Forever => p.reserve(),
                Reserve::For(timeout) => p.reserve_timeout(timeout),
            }
        }
        Ok(match self {
            Ends::Host(p) => RingWrite::Host(HostWrite::Host(one(p, wait)?)),
            Ends::Pinned(p) => RingWrite::Host(HostWrite::Pinned(one(p, wait)?)),
            Ends::Device(p) => RingWrite::Device(one(p, wait)?),
        })
    }
}

impl HostWrite<'_> {
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            HostWrite::Host(s) => &s[..],
            HostWrite::Pinned(s) => &s[..],
        }
    }

    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            HostWrite::Host(s) => &mut s[..],
            HostWrite::Pinned(s) => &mut s[..],
        }
    }

    pub(super) fn commit(self, meta: FrameMeta) -> Result<(), CommitError> {
        match self {
            HostWrite::Host(s) => s.commit(meta),
            HostWrite::Pinned(s) => s.commit(meta),
        }
    }
}

impl RingConsumer {
    /// Waits at most `timeout` for a frame, and hands it over as the shared lease the encoder's
    /// `encode_slot` takes.
    pub(super) fn pop_timeout(&mut self, timeout: Duration) -> Result<SlotFrame, PopError> {
        Ok(match self {
            Ends::Host(c) => SlotFrame::from(c.pop_timeout(timeout)?),
            Ends::Pinned(c) => SlotFrame::from(c.pop_timeout(timeout)?),
            Ends::Device(c) => SlotFrame::from(c.pop_timeout(timeout)?),
        })
    }

    /// Takes the oldest queued frame and releases it at once (a frame dropped under
    /// `DropOldest`); `false` when none is queued.
    pub(super) fn drop_oldest(&mut self) -> bool {
        each!(self, c => c.try_pop().is_ok())
    }

    pub(super) fn queue_depth(&self) -> usize {
        each!(self, c => c.queue_depth())
    }

    /// The ring's memory, held past the consumer (see [`Consumer::hold_storage`]).
    pub(super) fn hold_storage(&self) -> RingHold {
        match self {
            Ends::Host(c) => Ends::Host(c.hold_storage()),
            Ends::Pinned(c) => Ends::Pinned(c.hold_storage()),
            Ends::Device(c) => Ends::Device(c.hold_storage()),
        }
    }

    pub(super) fn stats(&self) -> RingStats {
        each!(self, c => c.stats())
    }

    pub(super) fn set_lease_budget(&self, slots: usize) {
        each!(self, c => c.set_lease_budget(slots));
    }
}
