//! The writing end: [`Producer`] and its [`WriteSlot`].

use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use super::super::error::{CommitError, ReserveError};
use super::super::storage::{DeviceSlots, DeviceSurface, HostSlots, SlotStorage};
use super::super::sync::{fence, Arc, Ordering};
use super::shared::{
    backoff, next_index, sleep, spin_steps, FrameMeta, RingStats, Shared, Wait, CONSUMER_GONE,
    CONSUMER_PANICKED, PRODUCER_CLOSED, PRODUCER_DROPPED, PRODUCER_PANICKED,
};

/// The writing end: reserves a free slot, fills it in place, commits it.
///
/// `Send` (it may move to the pipeline's thread) but not `Sync`: one thread writes.
pub struct Producer<S: SlotStorage> {
    pub(super) shared: Arc<Shared<S>>,
    /// Local copy of `tail` (only this end writes it).
    pub(super) tail: usize,
    /// `tail % capacity`, kept alongside so the hot path has no division.
    pub(super) index: usize,
    /// Last `released` seen; refreshed only when the ring looks full.
    pub(super) released: usize,
    pub(super) _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl<S: SlotStorage> fmt::Debug for Producer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<S: SlotStorage> Producer<S> {
    /// Waits until a slot is free and lends it for writing.
    ///
    /// # Errors
    /// [`ReserveError::Disconnected`] once the consumer is gone (also while waiting).
    pub fn reserve(&mut self) -> Result<WriteSlot<'_, S>, ReserveError> {
        self.reserve_inner(Wait::Forever)
    }

    /// Lends a free slot if there is one now.
    ///
    /// # Errors
    /// [`ReserveError::Full`] when every slot is queued or held, [`ReserveError::Disconnected`] once
    /// the consumer is gone.
    pub fn try_reserve(&mut self) -> Result<WriteSlot<'_, S>, ReserveError> {
        self.reserve_inner(Wait::No)
    }

    /// Waits at most `timeout` for a free slot.
    ///
    /// # Errors
    /// [`ReserveError::Timeout`] when none became free in time, [`ReserveError::Disconnected`] once
    /// the consumer is gone.
    pub fn reserve_timeout(&mut self, timeout: Duration) -> Result<WriteSlot<'_, S>, ReserveError> {
        self.reserve_inner(Wait::timeout(timeout))
    }

    pub(super) fn consumer_gone(&self) -> Option<ReserveError> {
        let state = self.shared.state.load(Ordering::Acquire);
        (state & CONSUMER_GONE != 0).then_some(ReserveError::Disconnected {
            panicked: state & CONSUMER_PANICKED != 0,
        })
    }

    pub(super) fn has_space(&self) -> bool {
        self.tail.wrapping_sub(self.released) < self.shared.counters.capacity
    }

    pub(super) fn reserve_inner(&mut self, wait: Wait) -> Result<WriteSlot<'_, S>, ReserveError> {
        if let Some(gone) = self.consumer_gone() {
            return Err(gone);
        }
        if !self.has_space() {
            self.released = self.shared.counters.released.0.load(Ordering::Acquire);
            if !self.has_space() {
                if matches!(wait, Wait::No) {
                    return Err(ReserveError::Full);
                }
                let started = Instant::now();
                let waited = if self.spin_for_space() {
                    Ok(())
                } else {
                    self.wait_for_space(wait)
                };
                let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.shared
                    .counters
                    .blocked_ns
                    .fetch_add(ns, Ordering::Relaxed);
                waited?;
            }
        }
        let index = self.index;
        Ok(WriteSlot {
            producer: self,
            index,
        })
    }

    /// Polls briefly before sleeping: the consumer usually frees a slot within microseconds, and
    /// a futex sleep and wake-up cost more than that.
    pub(super) fn spin_for_space(&mut self) -> bool {
        for step in 0..spin_steps() {
            backoff(step);
            self.released = self.shared.counters.released.0.load(Ordering::Acquire);
            if self.has_space() {
                return true;
            }
            if self.consumer_gone().is_some() {
                return false;
            }
        }
        false
    }

    #[cold]
    pub(super) fn wait_for_space(&mut self, wait: Wait) -> Result<(), ReserveError> {
        let shared = Arc::clone(&self.shared);
        let mut guard = shared.locked();
        loop {
            if let Some(gone) = self.consumer_gone() {
                return Err(gone);
            }
            shared.producer_waiting.store(true, Ordering::Relaxed);
            // Store-buffering pairing with the release of a slot (`ReadSlot::drop`).
            fence(Ordering::SeqCst);
            self.released = shared.counters.released.0.load(Ordering::Acquire);
            if self.has_space() {
                shared.producer_waiting.store(false, Ordering::Relaxed);
                return Ok(());
            }
            let (g, timed_out) = sleep(&shared.not_full, guard, wait);
            guard = g;
            shared.producer_waiting.store(false, Ordering::Relaxed);
            if timed_out {
                self.released = shared.counters.released.0.load(Ordering::Acquire);
                if self.has_space() {
                    return Ok(());
                }
                return Err(match self.consumer_gone() {
                    Some(gone) => gone,
                    None => ReserveError::Timeout,
                });
            }
        }
    }

    /// Marks the end of the stream: the consumer receives every committed frame, then
    /// [`PopError::Closed`](super::super::PopError::Closed).
    pub fn close(self) {
        self.shared.set_state(PRODUCER_CLOSED);
        // Drop sees PRODUCER_CLOSED and records nothing more.
    }

    /// Counts `frames` that the caller dropped instead of committing (a drop policy is the
    /// caller's: the ring never drops a frame itself). Read back with [`RingStats::dropped`].
    pub fn note_dropped(&self, frames: u64) {
        self.shared
            .counters
            .dropped
            .fetch_add(frames, Ordering::Relaxed);
    }

    /// Whether the consumer is gone (dropped or panicked); nothing more can be delivered.
    #[must_use]
    pub fn is_abandoned(&self) -> bool {
        self.consumer_gone().is_some()
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

    pub(super) fn publish(&mut self, index: usize, meta: FrameMeta) {
        // SAFETY: the producer owns slot `index` (it is free: tail - released < capacity, and
        // index == tail % capacity); the consumer reads meta[index] only after the release store
        // below, so this write does not race.
        unsafe { *self.shared.meta[index].get() = meta };
        self.tail = self.tail.wrapping_add(1);
        self.index = next_index(index, self.shared.counters.capacity);
        self.shared
            .counters
            .tail
            .0
            .store(self.tail, Ordering::Release);
        // Store-buffering pairing with the consumer's `consumer_waiting` store + fence + tail load.
        fence(Ordering::SeqCst);
        if self.shared.consumer_waiting.load(Ordering::Relaxed) {
            let _guard = self.shared.locked();
            self.shared.not_empty.notify_one();
        }
    }
}

impl<S: SlotStorage> Drop for Producer<S> {
    fn drop(&mut self) {
        if self.shared.state.load(Ordering::Acquire) & PRODUCER_CLOSED != 0 {
            return;
        }
        self.shared.set_state(if std::thread::panicking() {
            PRODUCER_PANICKED
        } else {
            PRODUCER_DROPPED
        });
    }
}

/// A free slot lent to the producer. Fill it in place, then [`commit`](Self::commit) it; dropping it
/// instead gives the slot back unpublished.
///
/// Borrows the producer mutably, so there is one write slot at a time and it cannot outlive its
/// ring; `commit(self)` consumes it, so a slot cannot be committed twice.
#[must_use = "a reserved slot is published only by commit()"]
pub struct WriteSlot<'a, S: SlotStorage> {
    pub(super) producer: &'a mut Producer<S>,
    pub(super) index: usize,
}

impl<S: SlotStorage> fmt::Debug for WriteSlot<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteSlot")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl<S: SlotStorage> WriteSlot<'_, S> {
    /// Index of the slot in the storage (`0..capacity`); stable, so an encoder can register each
    /// slot once and look it up by index.
    #[must_use]
    pub fn index(&self) -> usize {
        self.index
    }

    /// Bytes in the slot.
    #[must_use]
    pub fn slot_len(&self) -> usize {
        self.producer.slot_len()
    }

    /// The ring's storage (for device storage: the stream to queue the slot's writes on).
    #[must_use]
    pub fn storage(&self) -> &S {
        self.producer.storage()
    }

    /// Publishes the slot to the consumer with `meta` (whose `len` is the frame's byte count).
    ///
    /// # Errors
    /// [`CommitError::TooLong`] when `meta.len` exceeds the slot length;
    /// [`CommitError::Disconnected`] when the consumer is gone. In both cases nothing is published
    /// and the slot stays free.
    pub fn commit(self, meta: FrameMeta) -> Result<(), CommitError> {
        let slot_len = self.slot_len();
        if meta.len > slot_len {
            return Err(CommitError::TooLong {
                len: meta.len,
                slot_len,
            });
        }
        if let Some(ReserveError::Disconnected { panicked }) = self.producer.consumer_gone() {
            return Err(CommitError::Disconnected { panicked });
        }
        self.producer.publish(self.index, meta);
        Ok(())
    }
}

impl<S: HostSlots> WriteSlot<'_, S> {
    pub(super) fn raw(&self) -> NonNull<u8> {
        self.producer.shared.storage.slot_ptr(self.index)
    }
}

impl<S: HostSlots> std::ops::Deref for WriteSlot<'_, S> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: HostSlots guarantees slot_len initialized bytes at this pointer; the producer owns
        // this free slot exclusively until commit, and `&self` borrows the slot for the slice's life.
        unsafe { std::slice::from_raw_parts(self.raw().as_ptr(), self.slot_len()) }
    }
}

impl<S: HostSlots> std::ops::DerefMut for WriteSlot<'_, S> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only live reference to the slot's bytes.
        unsafe { std::slice::from_raw_parts_mut(self.raw().as_ptr(), self.slot_len()) }
    }
}

impl<S: DeviceSlots> WriteSlot<'_, S> {
    /// The device surface to fill (by a copy or a kernel) before committing.
    #[must_use]
    pub fn surface(&self) -> DeviceSurface {
        self.producer.shared.storage.surface(self.index)
    }
}
