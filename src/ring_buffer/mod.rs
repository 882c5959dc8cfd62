//! A fixed ring of frame slots between one producer (the pipeline) and one consumer (the encoder).
//!
//! All memory is allocated once, at creation; moving a frame through the ring allocates nothing.
//! The producer [`reserve`](Producer::reserve)s a free slot, fills it in place (read a socket or a
//! file straight into it) and [`commit`](WriteSlot::commit)s it with its [`FrameMeta`]; the
//! consumer [`pop`](Consumer::pop)s a [`ReadSlot`] lease, reads the frame in place and releases it.
//!
//! ```
//! use nvencode::ring_buffer::{FrameMeta, FrameRing, PopError};
//!
//! let (mut producer, mut consumer) = FrameRing::new(4, 1024)?;
//! let encoder = std::thread::spawn(move || {
//!     let mut frames = 0;
//!     loop {
//!         match consumer.pop() {
//!             Ok(frame) => {
//!                 assert_eq!(frame[0], frame.meta().seq as u8);
//!                 frames += 1;
//!             } // dropping the lease gives the slot back
//!             Err(PopError::Closed) => return frames,
//!             Err(other) => panic!("{other}"),
//!         }
//!     }
//! });
//! for seq in 0..10u64 {
//!     let mut slot = producer.reserve()?; // waits while the ring is full
//!     slot[..100].fill(seq as u8);        // fill in place: no buffer of our own
//!     slot.commit(FrameMeta { len: 100, seq, ..FrameMeta::default() })?;
//! }
//! producer.close();
//! assert_eq!(encoder.join().unwrap(), 10);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Outcomes, never hangs
//!
//! Blocking calls have `try_` and `_timeout` variants; what they return when no slot is handed
//! over is a typed outcome ([`ReserveError`], [`PopError`]): `Full`/`Empty`, `Timeout`, `Closed`
//! (the producer called [`Producer::close`]) or `Disconnected { panicked }` (the other end was
//! dropped, or dropped while its thread panicked). A side blocked when the other goes away wakes at
//! once. The consumer always receives every committed frame, exactly once and in order, before it
//! sees `Closed` or `Disconnected`.
//!
//! # Leases
//!
//! A [`WriteSlot`] borrows the producer mutably: one slot is written at a time, and
//! [`commit`](WriteSlot::commit) takes it by value, so it cannot be committed twice; dropping it
//! unpublished gives the slot back. A [`ReadSlot`] is an *owned* lease (it shares the ring rather
//! than borrowing the consumer), because the NVENC backend keeps several input surfaces mapped
//! until their bitstreams are locked and must be able to store those leases in its own state next
//! to the consumer. Leases may be released in any order and from any thread; the producer gets
//! slots back in ring order, so a slot is never rewritten while a lease on it, or on an older slot,
//! is alive. `release(self)` consumes the lease, so a released slot cannot be read.
//!
//! # Storage
//!
//! The index logic (the `ring` submodule, no FFI) runs over any [`SlotStorage`]: [`HostStorage`]
//! (plain memory), [`PinnedStorage`] (CUDA page-locked host memory, so an upload is a direct DMA)
//! and [`DeviceStorage`] (pitched CUDA device memory from `cuMemAllocPitch`, which NVENC can
//! register; not stream-ordered memory, which it cannot). CUDA storage needs the CUDA driver at run
//! time; without it, asking for it returns [`RingError::CudaUnavailable`].
//!
//! # Sizing for an encoder
//!
//! Where the ring backs NVENC input surfaces, every frame the encoder holds for reordering,
//! lookahead and output delay occupies a slot; [`required_slots`] computes that count and
//! [`FrameRing::for_encoder`] refuses a smaller ring with [`RingError::TooSmall`] instead of letting
//! it deadlock at flush.
//!
//! # Observing the fill level
//!
//! [`RingStats`] (from [`Producer::stats`] or [`Consumer::stats`]) is a cheap cloneable handle
//! whose [`queue_depth`](RingStats::queue_depth) and [`capacity`](RingStats::capacity) any thread
//! may read at any time, for the `encoder_queue_depth` metric; its
//! [`producer_blocked`](RingStats::producer_blocked) and [`dropped`](RingStats::dropped) feed
//! `encoder_producer_blocked_seconds_total` and `encoder_frames_dropped_total`
//! ([`crate::metrics::Metered::with_ring`]).

#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cuda_storage;
mod error;
mod ring;
mod storage;
mod sync;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(test)]
mod tests;

pub use crate::cuda::DeviceSurface;
pub use cuda_storage::{DeviceStorage, PinnedStorage};
pub use error::{CommitError, PopError, ReserveError, RingError};
pub use ring::{
    Consumer, FrameFlags, FrameMeta, Producer, ReadSlot, RingStats, StorageHold, WriteSlot,
};
pub use storage::{DeviceSlots, HostSlots, HostStorage, SlotStorage, HOST_SLOT_ALIGN, MAX_SLOTS};

/// What an encoder keeps in flight, in frames, for [`required_slots`] and
/// [`FrameRing::for_encoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EncoderDepth {
    /// Distance between P frames, NVENC's `frameIntervalP`: 1 without B-frames, B-frames + 1 with.
    pub frame_interval_p: u32,
    /// Lookahead depth in frames (0 without lookahead).
    pub lookahead: u32,
    /// Extra output delay in frames (NVIDIA's sample encoder uses 3 and asks for at least 1).
    pub extra_output_delay: u32,
}

/// Slots a ring backing an encoder's input surfaces needs: the encoder holds
/// `frame_interval_p + lookahead + extra_output_delay` frames in flight (the sizing of NVIDIA's
/// `NvEncoder` sample class). A `frame_interval_p` of 0 counts as 1; the result is at least 1.
#[must_use]
pub const fn required_slots(depth: EncoderDepth) -> usize {
    let interval = if depth.frame_interval_p == 0 {
        1
    } else {
        depth.frame_interval_p
    };
    (interval as usize)
        .saturating_add(depth.lookahead as usize)
        .saturating_add(depth.extra_output_delay as usize)
}

/// Creates rings. See the [module docs](self).
#[derive(Debug)]
#[non_exhaustive]
pub struct FrameRing;

impl FrameRing {
    /// A ring of `slots` slots of `slot_len` bytes in host memory.
    ///
    /// # Errors
    /// [`RingError::InvalidSlotCount`] (0 or more than [`MAX_SLOTS`]), [`RingError::InvalidSlotLen`]
    /// (0), [`RingError::SizeOverflow`], [`RingError::AllocFailed`].
    #[allow(clippy::new_ret_no_self)]
    pub fn new(
        slots: usize,
        slot_len: usize,
    ) -> Result<(Producer<HostStorage>, Consumer<HostStorage>), RingError> {
        Self::with_storage(HostStorage::new(slots, slot_len)?)
    }

    /// A ring over `storage` (host, pinned, device, or a storage of your own).
    ///
    /// # Errors
    /// [`RingError::InvalidSlotCount`] or [`RingError::InvalidSlotLen`] when the storage reports 0
    /// (or too many) slots or 0-byte slots.
    pub fn with_storage<S: SlotStorage>(
        storage: S,
    ) -> Result<(Producer<S>, Consumer<S>), RingError> {
        storage::check_counts(storage.slot_count(), storage.slot_len())?;
        Ok(ring::split(storage))
    }

    /// A ring over `storage` that backs the input surfaces of an encoder keeping `depth` frames in
    /// flight.
    ///
    /// # Errors
    /// [`RingError::TooSmall`] when the storage has fewer than [`required_slots`]`(depth)` slots;
    /// otherwise as [`with_storage`](Self::with_storage).
    pub fn for_encoder<S: SlotStorage>(
        storage: S,
        depth: EncoderDepth,
    ) -> Result<(Producer<S>, Consumer<S>), RingError> {
        let required = required_slots(depth);
        let slots = storage.slot_count();
        if slots < required {
            return Err(RingError::TooSmall {
                slots,
                required,
                frame_interval_p: depth.frame_interval_p,
                lookahead: depth.lookahead,
                extra_output_delay: depth.extra_output_delay,
            });
        }
        Self::with_storage(storage)
    }
}
