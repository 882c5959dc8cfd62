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

mod consumer;
mod producer;
mod shared;

use std::cell::UnsafeCell;
use std::marker::PhantomData;

use super::storage::SlotStorage;
use super::sync::{Arc, AtomicBool, AtomicU8, AtomicUsize, Condvar, Mutex, StatCounter};

pub use consumer::{Consumer, ReadSlot, StorageHold};
pub use producer::{Producer, WriteSlot};
use shared::{Counters, Padded, Shared};
pub use shared::{FrameFlags, FrameMeta, RingStats};

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
        lease_budget: AtomicUsize::new(n),
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
