//! The concurrency core: indices, blocking, close and disconnect. No FFI here.
//!
//! Three monotonically increasing (wrapping) counters describe the ring:
//!
//! - `tail`: frames committed by the producer (written only by the producer);
//! - `head`: frames popped by the consumer (written only by the consumer);
//! - `released`: popped frames whose slots were given back, in ring order (written by whichever
//!   thread releases the oldest lease, see `ReadSlot::drop`).
//!
//! `released <= head <= tail` and `tail - released <= capacity`. The producer owns slot
//! `tail % capacity` while it is free (`tail - released < capacity`); the consumer owns slots
//! `[released, tail)`: queued ones `[head, tail)` and leased ones `[released, head)`.
//!
//! Fast paths are lock-free. A side polls briefly, then takes `lock` only to sleep on a condition
//! variable; the other side takes it only to notify a side that said it sleeps, or to record its
//! own end. Lost wake-ups are excluded by the store-buffering pattern: a sleeper stores its
//! waiting flag, issues a `SeqCst` fence and re-reads the counter it waits on (under the lock);
//! the waker stores the counter, issues a `SeqCst` fence and reads the flag; at least one of the
//! two sees the other, and the waker notifies under the lock, so it cannot slip in between the
//! sleeper's check and its wait.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use super::error::{CommitError, PopError, ReserveError};
use super::storage::{DeviceSlots, DeviceSurface, HostSlots, SlotStorage};
use super::sync::{
    fence, Arc, AtomicBool, AtomicU8, AtomicUsize, Condvar, Mutex, MutexGuard, Ordering,
    StatCounter,
};

const PRODUCER_CLOSED: u8 = 1;
const PRODUCER_DROPPED: u8 = 1 << 1;
const PRODUCER_PANICKED: u8 = 1 << 2;
const CONSUMER_DROPPED: u8 = 1 << 3;
const CONSUMER_PANICKED: u8 = 1 << 4;
const PRODUCER_GONE: u8 = PRODUCER_CLOSED | PRODUCER_DROPPED | PRODUCER_PANICKED;
const CONSUMER_GONE: u8 = CONSUMER_DROPPED | CONSUMER_PANICKED;

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
struct Padded<T>(T);

/// The counters shared by both ends and every [`RingStats`] handle.
struct Counters {
    capacity: usize,
    tail: Padded<AtomicUsize>,
    head: Padded<AtomicUsize>,
    released: Padded<AtomicUsize>,
    /// Statistics, not synchronization (`Relaxed`, written only on the slow path): nanoseconds
    /// the producer waited for a free slot, and frames the producer reported dropped.
    blocked_ns: StatCounter,
    dropped: StatCounter,
}

/// Nothing is guarded by `Shared::lock` itself: it only orders sleeping against waking.
type Locked = ();

struct Shared<S> {
    /// Aligns `Shared` to 128 bytes, which puts it on other cache lines than the `Arc` reference
    /// counts before it: the consumer changes those for every lease, the producer reads the
    /// fields here for every frame.
    _align: Padded<()>,
    storage: S,
    meta: Box<[UnsafeCell<FrameMeta>]>,
    counters: Arc<Counters>,
    state: AtomicU8,
    consumer_waiting: AtomicBool,
    producer_waiting: AtomicBool,
    /// `pending[i]`: slot `i` was released out of ring order and waits for the older slots.
    pending: Box<[AtomicBool]>,
    lock: Mutex<Locked>,
    not_empty: Condvar,
    not_full: Condvar,
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
    fn locked(&self) -> MutexGuard<'_, Locked> {
        // The guarded state is updated in single steps that cannot be left half done by a panic,
        // so a poisoned lock still holds consistent data.
        self.lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a peer's end under the lock and wakes every sleeper.
    fn set_state(&self, bits: u8) {
        let _guard = self.locked();
        self.state.fetch_or(bits, Ordering::AcqRel);
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }
}

/// Polls before a blocking call sleeps: a few spins, then a few yields (under loom, none: the
/// model explores the sleeping path).
fn spin_steps() -> u32 {
    if cfg!(all(test, loom)) {
        0
    } else {
        20
    }
}

fn backoff(step: u32) {
    if step < 10 {
        for _ in 0..(1u32 << step) {
            std::hint::spin_loop();
        }
    } else {
        std::thread::yield_now();
    }
}

/// The slot after `index` in a ring of `capacity` slots.
fn next_index(index: usize, capacity: usize) -> usize {
    if index + 1 == capacity {
        0
    } else {
        index + 1
    }
}

/// How long a blocking call may wait.
#[derive(Clone, Copy)]
enum Wait {
    No,
    Forever,
    Until(Instant),
}

impl Wait {
    fn timeout(d: Duration) -> Self {
        // A duration too long to add is as good as forever.
        Instant::now()
            .checked_add(d)
            .map_or(Wait::Forever, Wait::Until)
    }
}

/// Sleeps on `cv`; returns the guard and whether the deadline has passed.
fn sleep<'a>(
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

/// Creates the two ends over `storage`. Counts were validated by the caller.
pub(crate) fn split<S: SlotStorage>(storage: S) -> (Producer<S>, Consumer<S>) {
    let n = storage.slot_count();
    let meta = (0..n)
        .map(|_| UnsafeCell::new(FrameMeta::default()))
        .collect();
    let counters = Arc::new(Counters {
        capacity: n,
        tail: Padded(AtomicUsize::new(0)),
        head: Padded(AtomicUsize::new(0)),
        released: Padded(AtomicUsize::new(0)),
        blocked_ns: StatCounter::new(0),
        dropped: StatCounter::new(0),
    });
    let shared = Arc::new(Shared {
        _align: Padded(()),
        storage,
        meta,
        counters,
        state: AtomicU8::new(0),
        consumer_waiting: AtomicBool::new(false),
        producer_waiting: AtomicBool::new(false),
        pending: (0..n).map(|_| AtomicBool::new(false)).collect(),
        lock: Mutex::new(()),
        not_empty: Condvar::new(),
        not_full: Condvar::new(),
    });
    let producer = Producer {
        shared: Arc::clone(&shared),
        tail: 0,
        index: 0,
        released: 0,
        _not_sync: PhantomData,
    };
    let consumer = Consumer {
        shared,
        head: 0,
        index: 0,
        tail: 0,
        _not_sync: PhantomData,
    };
    (producer, consumer)
}

/// A cheap, cloneable view of a ring's fill level, readable from any thread (for example by a
/// metrics exporter feeding `encoder_queue_depth`). It does not keep the slots' memory alive.
#[derive(Clone)]
pub struct RingStats {
    counters: Arc<Counters>,
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
    /// Frames committed in total since creation (wrapping at `usize::MAX`).
    #[must_use]
    pub fn committed(&self) -> usize {
        self.counters.tail.0.load(Ordering::Acquire)
    }
    /// Total time the producer has waited in [`Producer::reserve`] or
    /// [`Producer::reserve_timeout`] because every slot was taken (for
    /// `encoder_producer_blocked_seconds_total`). A wait is added when it ends.
    #[must_use]
    pub fn producer_blocked(&self) -> Duration {
        Duration::from_nanos(self.counters.blocked_ns.load(Ordering::Relaxed))
    }
    /// Frames the producer reported dropped with [`Producer::note_dropped`] (for
    /// `encoder_frames_dropped_total`).
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Counts `frames` dropped, as [`Producer::note_dropped`] does, from a handle that does not
    /// borrow the producer (the pipeline stage's scratch slot for a frame it drops).
    pub(crate) fn note_dropped(&self, frames: u64) {
        self.counters.dropped.fetch_add(frames, Ordering::Relaxed);
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

/// The writing end: reserves a free slot, fills it in place, commits it.
///
/// `Send` (it may move to the pipeline's thread) but not `Sync`: one thread writes.
pub struct Producer<S: SlotStorage> {
    shared: Arc<Shared<S>>,
    /// Local copy of `tail` (only this end writes it).
    tail: usize,
    /// `tail % capacity`, kept alongside so the hot path has no division.
    index: usize,
    /// Last `released` seen; refreshed only when the ring looks full.
    released: usize,
    _not_sync: PhantomData<std::cell::Cell<()>>,
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

    fn consumer_gone(&self) -> Option<ReserveError> {
        let state = self.shared.state.load(Ordering::Acquire);
        (state & CONSUMER_GONE != 0).then_some(ReserveError::Disconnected {
            panicked: state & CONSUMER_PANICKED != 0,
        })
    }

    fn has_space(&self) -> bool {
        self.tail.wrapping_sub(self.released) < self.shared.counters.capacity
    }

    fn reserve_inner(&mut self, wait: Wait) -> Result<WriteSlot<'_, S>, ReserveError> {
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
    fn spin_for_space(&mut self) -> bool {
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
    fn wait_for_space(&mut self, wait: Wait) -> Result<(), ReserveError> {
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
    /// [`PopError::Closed`].
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

    fn publish(&mut self, index: usize, meta: FrameMeta) {
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
    producer: &'a mut Producer<S>,
    index: usize,
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
    fn raw(&self) -> NonNull<u8> {
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

/// The reading end: pops queued frames as [`ReadSlot`] leases.
///
/// `Send` but not `Sync`: one thread pops. The leases it hands out are owned values, so an encoder
/// can keep several in flight in its own state and release them later, from any thread.
pub struct Consumer<S: SlotStorage> {
    shared: Arc<Shared<S>>,
    /// Local copy of `head` (only this end writes it).
    head: usize,
    /// `head % capacity`, kept alongside so the hot path has no division.
    index: usize,
    /// Last `tail` seen; refreshed only when the ring looks empty.
    tail: usize,
    _not_sync: PhantomData<std::cell::Cell<()>>,
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
    /// [`Producer::close`], [`PopError::Disconnected`] after the producer was dropped or panicked.
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

    fn producer_end(state: u8) -> Option<PopError> {
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

    fn refresh_tail(&mut self) -> bool {
        self.tail = self.shared.counters.tail.0.load(Ordering::Acquire);
        self.head != self.tail
    }

    fn pop_inner(&mut self, wait: Wait) -> Result<ReadSlot<S>, PopError> {
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
    fn spin_for_frame(&mut self) -> bool {
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
    fn wait_for_frame(&mut self, wait: Wait) -> Result<(), PopError> {
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

    fn take(&mut self) -> ReadSlot<S> {
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
    shared: Arc<Shared<S>>,
    position: usize,
    index: usize,
    meta: FrameMeta,
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

    /// Gives the slot back (the same as dropping the lease, spelled out).
    pub fn release(self) {}
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
