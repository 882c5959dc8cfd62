//! The state both ends share: counters, flags, the sleep and wake helpers and [`RingStats`].

use std::cell::UnsafeCell;
use std::fmt;
use std::time::{Duration, Instant};

use super::super::storage::SlotStorage;
use super::super::sync::{
    Arc, AtomicBool, AtomicU8, AtomicUsize, Condvar, Mutex, MutexGuard, Ordering, StatCounter,
};

pub(super) const PRODUCER_CLOSED: u8 = 1;
pub(super) const PRODUCER_DROPPED: u8 = 1 << 1;
pub(super) const PRODUCER_PANICKED: u8 = 1 << 2;
pub(super) const CONSUMER_DROPPED: u8 = 1 << 3;
pub(super) const CONSUMER_PANICKED: u8 = 1 << 4;
pub(super) const PRODUCER_GONE: u8 = PRODUCER_CLOSED | PRODUCER_DROPPED | PRODUCER_PANICKED;
pub(super) const CONSUMER_GONE: u8 = CONSUMER_DROPPED | CONSUMER_PANICKED;

/// Flags that travel with a frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FrameFlags(u32);

impl FrameFlags {
    /// No flag set.
    pub const NONE: Self = Self(0);
    /// Ask the encoder to make this frame a keyframe (IDR).
    pub const FORCE_KEYFRAME: Self = Self(1);

    /// The raw bits.
    #[must_use]
    pub const fn bits(self) -> u32 {
        self.0
    }
    /// Flags from raw bits; unknown bits are kept and carried unchanged.
    #[must_use]
    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }
    /// Whether every flag of `other` is set in `self`.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
    /// `self` with the flags of `other` added.
    #[must_use]
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// What travels with a frame beside its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FrameMeta {
    /// Bytes of the slot that hold the frame (at most the slot length).
    pub len: usize,
    /// Presentation timestamp, in the pipeline's time base.
    pub pts: i64,
    /// A sequence number of the pipeline's own, carried unchanged.
    pub seq: u64,
    /// Per-frame flags.
    pub flags: FrameFlags,
}

impl FrameMeta {
    /// Metadata for a frame of `len` bytes, everything else zero.
    #[must_use]
    pub const fn with_len(len: usize) -> Self {
        Self {
            len,
            pts: 0,
            seq: 0,
            flags: FrameFlags::NONE,
        }
    }
}

/// Keeps a hot counter alone on its cache line(s), so the two sides do not false-share.
#[repr(align(128))]
pub(super) struct Padded<T>(pub(super) T);

/// The counters shared by both ends and every [`RingStats`] handle.
pub(super) struct Counters {
    pub(super) capacity: usize,
    pub(super) tail: Padded<AtomicUsize>,
    pub(super) head: Padded<AtomicUsize>,
    pub(super) released: Padded<AtomicUsize>,
    /// Statistics, not synchronization (`Relaxed`, written only on the slow path): nanoseconds
    /// the producer waited for a free slot, and frames the producer reported dropped.
    pub(super) blocked_ns: StatCounter,
    pub(super) dropped: StatCounter,
    /// How many slots the consumer's leases should keep at most (a hint for encoders that hold
    /// leases, see `Consumer::set_lease_budget`); `capacity` unless set. `Relaxed`: a plain
    /// setting, read by whoever holds a lease, not a synchronization point.
    pub(super) lease_budget: AtomicUsize,
}

/// Nothing is guarded by `Shared::lock` itself: it only orders sleeping against waking.
pub(super) type Locked = ();

pub(super) struct Shared<S> {
    /// Aligns `Shared` to 128 bytes, which puts it on other cache lines than the `Arc` reference
    /// counts before it: the consumer changes those for every lease, the producer reads the
    /// fields here for every frame.
    pub(super) _align: Padded<()>,
    pub(super) storage: S,
    pub(super) meta: Box<[UnsafeCell<FrameMeta>]>,
    pub(super) counters: Arc<Counters>,
    pub(super) state: AtomicU8,
    pub(super) consumer_waiting: AtomicBool,
    pub(super) producer_waiting: AtomicBool,
    /// `pending[i]`: slot `i` was released out of ring order and waits for the older slots.
    pub(super) pending: Box<[AtomicBool]>,
    pub(super) lock: Mutex<Locked>,
    pub(super) not_empty: Condvar,
    pub(super) not_full: Condvar,
}

// SAFETY: the only field that is not Sync is `meta`; `meta[i]` is written by the producer only while
// it owns slot `i` (before the release store of `tail` that publishes it) and read by the consumer
// only after the acquire load of `tail` that shows it, and never written again until the slot is
// released and the producer has acquired the new `released`. So no access to one `meta[i]`
// races with a write.
unsafe impl<S: SlotStorage> Sync for Shared<S> {}
// SAFETY: all fields are Send when S is (UnsafeCell<FrameMeta> holds plain data).
unsafe impl<S: SlotStorage> Send for Shared<S> {}

impl<S> Shared<S> {
    pub(super) fn locked(&self) -> MutexGuard<'_, Locked> {
        // The guarded state is updated in single steps that cannot be left half done by a panic,
        // so a poisoned lock still holds consistent data.
        self.lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a peer's end under the lock and wakes every sleeper.
    pub(super) fn set_state(&self, bits: u8) {
        let _guard = self.locked();
        self.state.fetch_or(bits, Ordering::AcqRel);
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }
}

/// Polls before a blocking call sleeps: a few spins, then a few yields (under loom, none: the
/// model explores the sleeping path).
pub(super) fn spin_steps() -> u32 {
    if cfg!(all(test, loom)) {
        0
    } else {
        20
    }
}

pub(super) fn backoff(step: u32) {
    if step < 10 {
        for _ in 0..(1u32 << step) {
            std::hint::spin_loop();
        }
    } else {
        std::thread::yield_now();
    }
}

/// The slot after `index` in a ring of `capacity` slots.
pub(super) fn next_index(index: usize, capacity: usize) -> usize {
    if index + 1 == capacity {
        0
    } else {
        index + 1
    }
}

/// How long a blocking call may wait.
#[derive(Clone, Copy)]
pub(super) enum Wait {
    No,
    Forever,
    Until(Instant),
}

impl Wait {
    pub(super) fn timeout(d: Duration) -> Self {
        // A duration too long to add is as good as forever.
        Instant::now()
            .checked_add(d)
            .map_or(Wait::Forever, Wait::Until)
    }
}

/// Sleeps on `cv`; returns the guard and whether the deadline has passed.
pub(super) fn sleep<'a>(
    cv: &Condvar,
    guard: MutexGuard<'a, Locked>,
    wait: Wait,
) -> (MutexGuard<'a, Locked>, bool) {
    match wait {
        Wait::No => (guard, true),
        Wait::Forever => (
            cv.wait(guard)
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            false,
        ),
        Wait::Until(deadline) => {
            let now = Instant::now();
            if now >= deadline {
                return (guard, true);
            }
            let (g, _) = cv
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (g, Instant::now() >= deadline)
        }
    }
}

/// A cheap, cloneable view of a ring's fill level, readable from any thread (for example by a
/// metrics exporter feeding `encoder_queue_depth`). It does not keep the slots' memory alive.
#[derive(Clone)]
pub struct RingStats {
    pub(super) counters: Arc<Counters>,
}

impl RingStats {
    /// Number of slots.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.counters.capacity
    }
    /// Frames committed and not yet popped: the encoder's input queue.
    #[must_use]
    pub fn queue_depth(&self) -> usize {
        // Read head first: tail only grows, so tail - head read in this order never underflows
        // below the true value at the time head was read.
        let head = self.counters.head.0.load(Ordering::Acquire);
        let tail = self.counters.tail.0.load(Ordering::Acquire);
        tail.wrapping_sub(head).min(self.counters.capacity)
    }
    /// Frames popped and not yet released: slots the consumer (the encoder) still holds.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        let released = self.counters.released.0.load(Ordering::Acquire);
        let head = self.counters.head.0.load(Ordering::Acquire);
        head.wrapping_sub(released).min(self.counters.capacity)
    }
    /// Slots the producer cannot write now: frames queued plus those the consumer still holds
    /// (`queue_depth + in_flight`, read as one difference so the two cannot disagree). Read
    /// `released` first: it only grows and never passes `tail`, so a stale value makes the count
    /// too high, never too low or wrapped; capped at the capacity.
    #[must_use]
    pub fn occupied(&self) -> usize {
        let released = self.counters.released.0.load(Ordering::Acquire);
        let tail = self.counters.tail.0.load(Ordering::Acquire);
        tail.wrapping_sub(released).min(self.counters.capacity)
    }
    /// Frames committed in total since creation (wrapping at `usize::MAX`).
    #[must_use]
    pub fn committed(&self) -> usize {
        self.counters.tail.0.load(Ordering::Acquire)
    }
    /// Total time the producer has waited in [`Producer::reserve`](super::Producer::reserve) or
    /// [`Producer::reserve_timeout`](super::Producer::reserve_timeout) because every slot was
    /// taken (for `encoder_producer_blocked_seconds_total`). A wait is added when it ends.
    #[must_use]
    pub fn producer_blocked(&self) -> Duration {
        Duration::from_nanos(self.counters.blocked_ns.load(Ordering::Relaxed))
    }
    /// Frames the producer reported dropped with
    /// [`Producer::note_dropped`](super::Producer::note_dropped) (for
    /// `encoder_frames_dropped_total`).
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Counts `frames` dropped, as [`Producer::note_dropped`](super::Producer::note_dropped) does,
    /// from a handle that does not borrow the producer (the pipeline stage's scratch slot for a
    /// frame it drops).
    pub(crate) fn note_dropped(&self, frames: u64) {
        self.counters.dropped.fetch_add(frames, Ordering::Relaxed);
    }

    /// Adds a wait of the producer's that the ring did not see (an async reserve that waited for
    /// its waker) to [`RingStats::producer_blocked`].
    pub(crate) fn note_blocked(&self, waited: Duration) {
        let ns = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.counters.blocked_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl fmt::Debug for RingStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingStats")
            .field("capacity", &self.capacity())
            .field("queue_depth", &self.queue_depth())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}
