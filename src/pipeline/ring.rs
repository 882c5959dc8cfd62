//! The stage's ring over the memory the active backend reads: [`SlotMemory`], and the two ends as
//! enums over the ring's storages, so the producer and the encoder thread are written once.

use std::time::Duration;

use crate::cuda::Context;
use crate::encoder::SlotFrame;
use crate::ring_buffer::{
    CommitError, Consumer, FrameMeta, FrameRing, HostStorage, PinnedStorage, PopError, Producer,
    ReserveError, RingError, RingStats, WriteSlot,
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
}

impl std::fmt::Display for SlotMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SlotMemory::Auto => "auto",
            SlotMemory::Host => "host memory",
            SlotMemory::Pinned => "CUDA pinned memory",
        })
    }
}

/// Applies `$body` to the storage-typed end inside an enum value.
macro_rules! each {
    ($value:expr, $end:ident => $body:expr) => {
        match $value {
            Ends::Host($end) => $body,
            Ends::Pinned($end) => $body,
        }
    };
}

/// One value per storage the stage's ring can be in.
pub(super) enum Ends<H, P> {
    Host(H),
    Pinned(P),
}

pub(super) type RingProducer = Ends<Producer<HostStorage>, Producer<PinnedStorage>>;
pub(super) type RingConsumer = Ends<Consumer<HostStorage>, Consumer<PinnedStorage>>;
pub(super) type RingWrite<'a> = Ends<WriteSlot<'a, HostStorage>, WriteSlot<'a, PinnedStorage>>;

/// Creates the ring: `slots` slots of `frame_len` bytes in `memory` (not `Auto`: resolved by the
/// caller).
pub(super) fn new_ring(
    memory: SlotMemory,
    cuda_device: usize,
    slots: usize,
    frame_len: usize,
) -> Result<(RingProducer, RingConsumer), RingError> {
    Ok(match memory {
        SlotMemory::Pinned => {
            let storage = PinnedStorage::new(&Context::open(cuda_device)?, slots, frame_len)?;
            let (p, c) = FrameRing::with_storage(storage)?;
            (Ends::Pinned(p), Ends::Pinned(c))
        }
        SlotMemory::Host | SlotMemory::Auto => {
            let (p, c) = FrameRing::new(slots, frame_len)?;
            (Ends::Host(p), Ends::Host(c))
        }
    })
}

impl RingProducer {
    pub(super) fn memory(&self) -> SlotMemory {
        match self {
            Ends::Host(_) => SlotMemory::Host,
            Ends::Pinned(_) => SlotMemory::Pinned,
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

    pub(super) fn try_reserve(&mut self) -> Result<RingWrite<'_>, ReserveError> {
        Ok(match self {
            Ends::Host(p) => Ends::Host(p.try_reserve()?),
            Ends::Pinned(p) => Ends::Pinned(p.try_reserve()?),
        })
    }

    /// Blocking by design (the stage's plain `reserve`); `reserve_timeout` bounds it.
    pub(super) fn reserve(&mut self) -> Result<RingWrite<'_>, ReserveError> {
        Ok(match self {
            Ends::Host(p) => Ends::Host(p.reserve()?),
            Ends::Pinned(p) => Ends::Pinned(p.reserve()?),
        })
    }

    pub(super) fn reserve_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<RingWrite<'_>, ReserveError> {
        Ok(match self {
            Ends::Host(p) => Ends::Host(p.reserve_timeout(timeout)?),
            Ends::Pinned(p) => Ends::Pinned(p.reserve_timeout(timeout)?),
        })
    }
}

impl RingWrite<'_> {
    pub(super) fn bytes(&self) -> &[u8] {
        each!(self, s => &s[..])
    }

    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        each!(self, s => &mut s[..])
    }

    pub(super) fn commit(self, meta: FrameMeta) -> Result<(), CommitError> {
        each!(self, s => s.commit(meta))
    }
}

impl RingConsumer {
    /// Waits at most `timeout` for a frame, and hands it over as the shared lease the encoder's
    /// `encode_slot` takes.
    pub(super) fn pop_timeout(&mut self, timeout: Duration) -> Result<SlotFrame, PopError> {
        Ok(match self {
            Ends::Host(c) => SlotFrame::from(c.pop_timeout(timeout)?),
            Ends::Pinned(c) => SlotFrame::from(c.pop_timeout(timeout)?),
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

    pub(super) fn stats(&self) -> RingStats {
        each!(self, c => c.stats())
    }

    pub(super) fn set_lease_budget(&self, slots: usize) {
        each!(self, c => c.set_lease_budget(slots));
    }
}
