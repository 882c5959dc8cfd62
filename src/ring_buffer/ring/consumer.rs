//! The reading end: [`Consumer`] and its [`ReadSlot`] leases.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use super::super::error::PopError;
use super::super::storage::{DeviceSlots, DeviceSurface, HostSlots, SlotStorage};
use super::super::sync::{fence, Arc, Ordering};
use super::shared::{
    backoff, next_index, sleep, spin_steps, FrameMeta, RingStats, Shared, Wait, CONSUMER_DROPPED,
    CONSUMER_PANICKED, PRODUCER_CLOSED, PRODUCER_GONE, PRODUCER_PANICKED,
};

/// The reading end: pops queued frames as [`ReadSlot`] leases.
///
/// `Send` but not `Sync`: one thread pops. The leases it hands out are owned values, so an encoder
/// can keep several in flight in its own state and release them later, from any thread.
pub struct Consumer<S: SlotStorage> {
    pub(super) shared: Arc<Shared<S>>,
    /// Local copy of `head` (only this end writes it).
    pub(super) head: usize,
    /// `head % capacity`, kept alongside so the hot path has no division.
    pub(super) index: usize,
    /// Last `tail` seen; refreshed only when the ring looks empty.
    pub(super) tail: usize,
    pub(super) _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl<S: SlotStorage> fmt::Debug for Consumer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<S: SlotStorage> Consumer<S> {
    /// Waits for a frame and leases its slot.
    ///
    /// # Errors
    /// Once every committed frame was delivered: [`PopError::Closed`] after
    /// [`Producer::close`](super::Producer::close), [`PopError::Disconnected`] after the producer
    /// was dropped or panicked.
    pub fn pop(&mut self) -> Result<ReadSlot<S>, PopError> {
        self.pop_inner(Wait::Forever)
    }

    /// Leases the oldest queued frame if there is one now.
    ///
    /// # Errors
    /// [`PopError::Empty`] when nothing is queued; `Closed`/`Disconnected` as for [`pop`](Self::pop).
    pub fn try_pop(&mut self) -> Result<ReadSlot<S>, PopError> {
        self.pop_inner(Wait::No)
    }

    /// Waits at most `timeout` for a frame.
    ///
    /// # Errors
    /// [`PopError::Timeout`] when none arrived in time; `Closed`/`Disconnected` as for
    /// [`pop`](Self::pop).
    pub fn pop_timeout(&mut self, timeout: Duration) -> Result<ReadSlot<S>, PopError> {
        self.pop_inner(Wait::timeout(timeout))
    }

    pub(super) fn producer_end(state: u8) -> Option<PopError> {
        if state & PRODUCER_GONE == 0 {
            None
        } else if state & PRODUCER_CLOSED != 0 {
            Some(PopError::Closed)
        } else {
            Some(PopError::Disconnected {
                panicked: state & PRODUCER_PANICKED != 0,
            })
        }
    }

    pub(super) fn refresh_tail(&mut self) -> bool {
        self.tail = self.shared.counters.tail.0.load(Ordering::Acquire);
        self.head != self.tail
    }

    pub(super) fn pop_inner(&mut self, wait: Wait) -> Result<ReadSlot<S>, PopError> {
        if self.head == self.tail && !self.refresh_tail() {
            // Empty. If the producer is gone, re-read tail: its last commit happened before the
            // state change that the acquire load shows, so no frame is missed.
            let state = self.shared.state.load(Ordering::Acquire);
            if let Some(end) = Self::producer_end(state) {
                if !self.refresh_tail() {
                    return Err(end);
                }
            } else if matches!(wait, Wait::No) {
                return Err(PopError::Empty);
            } else if !self.spin_for_frame() {
                self.wait_for_frame(wait)?;
            }
        }
        Ok(self.take())
    }

    /// Polls briefly before sleeping (see [`Producer`]'s twin); an end of the producer is left to
    /// `wait_for_frame`, which reports it.
    pub(super) fn spin_for_frame(&mut self) -> bool {
        for step in 0..spin_steps() {
            backoff(step);
            if self.refresh_tail() {
                return true;
            }
            if self.shared.state.load(Ordering::Acquire) & PRODUCER_GONE != 0 {
                return false;
            }
        }
        false
    }

    #[cold]
    pub(super) fn wait_for_frame(&mut self, wait: Wait) -> Result<(), PopError> {
        let shared = Arc::clone(&self.shared);
        let mut guard = shared.locked();
        loop {
            shared.consumer_waiting.store(true, Ordering::Relaxed);
            // Store-buffering pairing with `Producer::publish`.
            fence(Ordering::SeqCst);
            if self.refresh_tail() {
                shared.consumer_waiting.store(false, Ordering::Relaxed);
                return Ok(());
            }
            if let Some(end) = Self::producer_end(shared.state.load(Ordering::Acquire)) {
                shared.consumer_waiting.store(false, Ordering::Relaxed);
                return if self.refresh_tail() {
                    Ok(())
                } else {
                    Err(end)
                };
            }
            let (g, timed_out) = sleep(&shared.not_empty, guard, wait);
            guard = g;
            if timed_out {
                shared.consumer_waiting.store(false, Ordering::Relaxed);
                return if self.refresh_tail() {
                    Ok(())
                } else {
                    Err(PopError::Timeout)
                };
            }
        }
    }

    pub(super) fn take(&mut self) -> ReadSlot<S> {
        let capacity = self.shared.counters.capacity;
        let position = self.head;
        let index = self.index;
        self.index = next_index(index, capacity);
        // SAFETY: position < tail (acquired), so the producer's write of meta[index] happened before
        // and it will not write it again until this slot is released.
        let meta = unsafe { *self.shared.meta[index].get() };
        self.head = self.head.wrapping_add(1);
        self.shared
            .counters
            .head
            .0
            .store(self.head, Ordering::Release);
        ReadSlot {
            shared: Arc::clone(&self.shared),
            position,
            index,
            meta,
        }
    }

    /// Number of slots.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.shared.counters.capacity
    }

    /// Bytes in one slot.
    #[must_use]
    pub fn slot_len(&self) -> usize {
        self.shared.storage.slot_len()
    }

    /// Frames committed and not yet popped.
    #[must_use]
    pub fn queue_depth(&self) -> usize {
        self.stats().queue_depth()
    }

    /// Slots popped and not yet released.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.stats().in_flight()
    }

    /// Sets how many slots this consumer's leases should keep at most, `1..=capacity` (a value
    /// outside is clamped): a hint for an encoder that keeps leases after
    /// [`VideoEncoder::encode_slot`](crate::VideoEncoder::encode_slot) returns (for a replay after
    /// a failover, or for an upload still in flight), read through
    /// [`ReadSlot::lease_budget`]. An encoder that would hold more copies the oldest held frame
    /// and releases its lease instead, so the producer always keeps `capacity - budget` slots to
    /// queue into. The ring itself does not enforce it. Default: `capacity` (no limit).
    pub fn set_lease_budget(&self, slots: usize) {
        let slots = slots.clamp(1, self.capacity());
        self.shared
            .counters
            .lease_budget
            .store(slots, Ordering::Relaxed);
    }

    /// A handle for reading the fill level from any thread.
    #[must_use]
    pub fn stats(&self) -> RingStats {
        RingStats {
            counters: Arc::clone(&self.shared.counters),
        }
    }

    /// The storage the slots live in.
    #[must_use]
    pub fn storage(&self) -> &S {
        &self.shared.storage
    }
}

impl<S: SlotStorage> Consumer<S> {
    /// Keeps the ring's storage allocated past this consumer: for a stage that must end the
    /// consumer now (so the producer sees it gone) but free the ring's memory, a driver call that
    /// may block, elsewhere.
    #[must_use]
    pub fn hold_storage(&self) -> StorageHold<S> {
        StorageHold {
            _shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: SlotStorage> Drop for Consumer<S> {
    fn drop(&mut self) {
        self.shared.set_state(if std::thread::panicking() {
            CONSUMER_PANICKED
        } else {
            CONSUMER_DROPPED
        });
    }
}

/// A frame leased to the consumer. Read it in place; [`release`](Self::release) it (or drop it) to
/// give the slot back.
///
/// The lease is an owned value (it shares the ring, not a borrow of the consumer), so an encoder may
/// hold several at once — one per input surface in flight — and release them in any order, from any
/// thread. The producer gets slots back in ring order: a slot released early stays reserved until
/// every older lease is released too, so a slot is never rewritten while any lease on it is alive.
///
/// Hence the one way to wait on yourself: a consumer thread that blocks in
/// [`Consumer::pop`] while its own leases, counted from the oldest one it still holds, cover the
/// whole ring waits until some other thread releases one. Release (at least the oldest) before
/// blocking, or use `try_pop`/`pop_timeout`; [`Consumer::in_flight`] shows how many slots the
/// consumer's leases keep from the producer.
#[must_use = "dropping a lease releases its slot at once"]
pub struct ReadSlot<S: SlotStorage> {
    pub(super) shared: Arc<Shared<S>>,
    pub(super) position: usize,
    pub(super) index: usize,
    pub(super) meta: FrameMeta,
}

impl<S: SlotStorage> fmt::Debug for ReadSlot<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadSlot")
            .field("index", &self.index)
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl<S: SlotStorage> ReadSlot<S> {
    /// The frame's metadata as committed.
    #[must_use]
    pub fn meta(&self) -> &FrameMeta {
        &self.meta
    }

    /// Index of the slot in the storage (`0..capacity`).
    #[must_use]
    pub fn index(&self) -> usize {
        self.index
    }

    /// The ring's storage (for device storage: its context and stream).
    #[must_use]
    pub fn storage(&self) -> &S {
        &self.shared.storage
    }

    /// Gives the slot back (the same as dropping the lease, spelled out).
    pub fn release(self) {}

    /// Keeps the ring's storage allocated without keeping this slot: for an encoder that must
    /// give the slot back while a device may still read it (a driver call that never returned):
    /// the producer may then write the slot again, but its memory is not freed while the hold
    /// lives.
    #[must_use]
    pub fn hold_storage(&self) -> StorageHold<S> {
        StorageHold {
            _shared: Arc::clone(&self.shared),
        }
    }

    /// How many slots the consumer's leases should keep at most (see
    /// [`Consumer::set_lease_budget`]).
    #[must_use]
    pub fn lease_budget(&self) -> usize {
        self.shared.counters.lease_budget.load(Ordering::Relaxed)
    }
}

impl<S: HostSlots> ReadSlot<S> {
    /// The whole slot, including bytes past `meta().len`.
    #[must_use]
    pub fn slot(&self) -> &[u8] {
        let ptr = self.shared.storage.slot_ptr(self.index);
        // SAFETY: HostSlots guarantees slot_len initialized bytes; the lease keeps the slot from the
        // producer until it is released, which `&self` outlives; only shared references exist.
        unsafe { std::slice::from_raw_parts(ptr.as_ptr(), self.shared.storage.slot_len()) }
    }
}

impl<S: HostSlots> std::ops::Deref for ReadSlot<S> {
    type Target = [u8];
    /// The frame's bytes: the first `meta().len` bytes of the slot.
    fn deref(&self) -> &[u8] {
        let len = self.meta.len;
        self.slot().get(..len).unwrap_or_default()
    }
}

impl<S: DeviceSlots> ReadSlot<S> {
    /// The device surface holding the frame.
    #[must_use]
    pub fn surface(&self) -> DeviceSurface {
        self.shared.storage.surface(self.index)
    }
}

/// Keeps a ring's storage allocated, holding no slot ([`ReadSlot::hold_storage`]).
pub struct StorageHold<S: SlotStorage> {
    _shared: Arc<Shared<S>>,
}

impl<S: SlotStorage> fmt::Debug for StorageHold<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageHold").finish_non_exhaustive()
    }
}

impl<S: SlotStorage> Drop for ReadSlot<S> {
    /// Gives the slot back. `released` moves only from the oldest lease forward; whoever moves it
    /// past position `p` (the holder of lease `p`, or the thread that claims `pending[p]`) is the
    /// only one that may move it, so no lock is needed. A lease released early marks itself
    /// pending; a store-buffering pair of `SeqCst` fences guarantees that either it sees that the
    /// older slots are back (and claims itself) or the thread that brought them back sees its mark.
    fn drop(&mut self) {
        let shared = &self.shared;
        let capacity = shared.counters.capacity;
        let released = &shared.counters.released.0;
        let mut position = self.position;
        let mut index = self.index;
        if released.load(Ordering::Acquire) != position {
            let Some(mark) = shared.pending.get(self.index) else {
                return;
            };
            mark.store(true, Ordering::Release);
            fence(Ordering::SeqCst);
            // A compare-exchange, not a swap: it writes nothing when the mark is already taken.
            if released.load(Ordering::Acquire) != position
                || mark
                    .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                // The older slots are still out, or their releaser claimed this one too.
                return;
            }
        }
        // This thread now owns the advance past `position`.
        loop {
            position = position.wrapping_add(1);
            index = next_index(index, capacity);
            released.store(position, Ordering::Release);
            // Pairs with an early releaser's mark + fence + load, and with the producer's waiting
            // flag + fence + load.
            fence(Ordering::SeqCst);
            match shared.pending.get(index) {
                // A plain load first: the next slot is rarely marked, and a compare-exchange is a
                // locked instruction even when it fails.
                Some(mark)
                    if mark.load(Ordering::Acquire)
                        && mark
                            .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
                            .is_ok() => {}
                _ => break,
            }
        }
        if shared.producer_waiting.load(Ordering::Relaxed) {
            let _guard = shared.locked();
            shared.not_full.notify_one();
        }
    }
}
