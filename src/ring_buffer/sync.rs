//! The synchronization primitives of the ring, from one place.
//!
//! Under `cfg(all(test, loom))` these are loom's model-checked versions, so the ring's unit tests
//! explore every interleaving of its atomics, mutex and condition variables; otherwise std's. The
//! rest of the ring names only what this module exports, never `std::sync` directly.

#[cfg(all(test, loom))]
pub(crate) use loom::sync::{
    atomic::{fence, AtomicU8, AtomicUsize, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};

#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::{
    atomic::{fence, AtomicU8, AtomicUsize, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};

#[cfg(all(test, loom))]
pub(crate) use loom::sync::atomic::AtomicBool;
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::atomic::AtomicBool;

/// For statistics only (the producer's blocked time, frames it reported dropped): never read to
/// order anything, so always std's atomic, and loom does not explore it.
pub(crate) use std::sync::atomic::AtomicU64 as StatCounter;
