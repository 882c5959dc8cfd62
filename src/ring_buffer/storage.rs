//! Where the slots live: the [`SlotStorage`] trait and plain host memory.
//!
//! The ring's index logic never touches memory itself; it asks the storage for slot `i`. Host
//! and CUDA pinned storage give a host pointer ([`HostSlots`]), CUDA device storage gives a
//! device pointer and pitch ([`DeviceSlots`]).

use std::alloc::Layout;
use std::ptr::NonNull;

use super::RingError;
pub(crate) use crate::cuda::DeviceSurface;

/// The largest number of slots a ring accepts.
pub const MAX_SLOTS: usize = 1 << 16;

/// Alignment of every host slot: a cache line, so two slots never share one.
pub const HOST_SLOT_ALIGN: usize = 64;

/// N slots of a fixed number of bytes, allocated once.
pub trait SlotStorage: Send + Sync {
    /// Number of slots; constant for the storage's life.
    fn slot_count(&self) -> usize;
    /// Bytes in one slot; constant for the storage's life.
    fn slot_len(&self) -> usize;
}

/// Storage whose slots the CPU can read and write.
///
/// # Safety
/// For every `index < slot_count()`, `slot_ptr(index)` must return the same pointer for the whole
/// life of the storage, pointing to `slot_len()` initialized bytes that are readable and writable
/// through that pointer from any thread, that belong to no other slot, and that nothing but the
/// ring reads or writes while the storage is alive.
pub unsafe trait HostSlots: SlotStorage {
    /// First byte of slot `index`.
    ///
    /// # Panics
    /// May panic when `index >= slot_count()`; the ring never asks for such an index.
    fn slot_ptr(&self, index: usize) -> NonNull<u8>;
}

/// Storage whose slots live in device memory: no host access, only addresses.
pub trait DeviceSlots: SlotStorage {
    /// The surface of slot `index`; the same for the storage's life.
    ///
    /// # Panics
    /// May panic when `index >= slot_count()`; the ring never asks for such an index.
    fn surface(&self, index: usize) -> DeviceSurface;
}

pub(crate) fn check_counts(slots: usize, slot_len: usize) -> Result<(), RingError> {
    if slots == 0 || slots > MAX_SLOTS {
        return Err(RingError::InvalidSlotCount {
            slots,
            max: MAX_SLOTS,
        });
    }
    if slot_len == 0 {
        return Err(RingError::InvalidSlotLen { slot_len });
    }
    Ok(())
}

/// Plain host memory: one zeroed, 64-byte aligned allocation of `slots × stride` bytes made at
/// creation, where `stride` is `slot_len` rounded up to [`HOST_SLOT_ALIGN`].
#[derive(Debug)]
pub struct HostStorage {
    base: NonNull<u8>,
    layout: Layout,
    slots: usize,
    slot_len: usize,
    stride: usize,
}

// SAFETY: HostStorage owns its allocation outright (no aliasing handle exists elsewhere); the bytes
// are plain `u8`, so moving the owner to another thread is sound.
unsafe impl Send for HostStorage {}
// SAFETY: `&HostStorage` only hands out raw pointers; every access through them is made by the ring,
// which gives each slot to one side at a time with acquire/release ordering between them.
unsafe impl Sync for HostStorage {}

impl HostStorage {
    /// Allocates `slots` slots of `slot_len` bytes, zeroed.
    ///
    /// # Errors
    /// [`RingError::InvalidSlotCount`] for 0 or more than [`MAX_SLOTS`] slots,
    /// [`RingError::InvalidSlotLen`] for 0 bytes, [`RingError::SizeOverflow`] when the total does
    /// not fit in `isize::MAX`, [`RingError::AllocFailed`] when the allocator refuses.
    pub fn new(slots: usize, slot_len: usize) -> Result<Self, RingError> {
        check_counts(slots, slot_len)?;
        let overflow = RingError::SizeOverflow {
            slots,
            slot_len,
            max: isize::MAX as usize,
        };
        let stride =
            slot_len
                .checked_next_multiple_of(HOST_SLOT_ALIGN)
                .ok_or(RingError::SizeOverflow {
                    slots,
                    slot_len,
                    max: isize::MAX as usize,
                })?;
        let bytes = stride.checked_mul(slots).ok_or(overflow)?;
        let layout = Layout::from_size_align(bytes, HOST_SLOT_ALIGN).map_err(|_| {
            RingError::SizeOverflow {
                slots,
                slot_len,
                max: isize::MAX as usize,
            }
        })?;
        // SAFETY: `layout` has a non-zero size (slots >= 1, stride >= 64) as `alloc_zeroed` requires.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let base = NonNull::new(raw).ok_or(RingError::AllocFailed { bytes })?;
        Ok(Self {
            base,
            layout,
            slots,
            slot_len,
            stride,
        })
    }
}

impl SlotStorage for HostStorage {
    fn slot_count(&self) -> usize {
        self.slots
    }
    fn slot_len(&self) -> usize {
        self.slot_len
    }
}

// SAFETY: slot `i` is bytes `[i*stride, i*stride + slot_len)` of one zeroed allocation that lives
// until Drop; `slot_len <= stride`, so slots are disjoint, and the pointer never changes.
unsafe impl HostSlots for HostStorage {
    fn slot_ptr(&self, index: usize) -> NonNull<u8> {
        assert!(index < self.slots, "slot index {index} out of range");
        // SAFETY: index < slots, so the offset index*stride stays inside the allocation of
        // slots*stride bytes (which did not overflow at creation).
        unsafe { self.base.add(index * self.stride) }
    }
}

impl Drop for HostStorage {
    fn drop(&mut self) {
        // SAFETY: `base` was returned by `alloc_zeroed(self.layout)` and is freed only here, once.
        unsafe { std::alloc::dealloc(self.base.as_ptr(), self.layout) };
    }
}
