//! What an upload into an NVENC input surface reads from: a staging buffer of the session, or a
//! caller's pinned ring slot.

use std::sync::Arc;

use crate::cuda::{Either, HostBytes, PinnedBuffer};
use crate::ring_buffer::{PinnedStorage, ReadSlot, StorageHold};

/// The host memory an upload reads: one of the session's staging buffers (the frame was copied
/// there), or the caller's pinned ring slot (no copy).
pub(crate) type Staged = Either<PinnedBuffer, SlotUpload>;

/// A caller's pinned ring slot as an upload source.
#[derive(Debug)]
pub(crate) enum SlotUpload {
    /// The slot's lease: the slot stays the encoder's until the upload is known to have run.
    Lease(Arc<ReadSlot<PinnedStorage>>),
    /// The slot given back when the session was abandoned on a hung call (so the producer can go
    /// on with the next encoder), its ring's memory still held: the upload may yet run.
    /// (Held, never read: what it keeps alive is the point.)
    Released(#[allow(dead_code)] StorageHold<PinnedStorage>),
}

// SAFETY: a lease's bytes are its slot's, which the lease keeps from the producer and the ring
// keeps allocated (see `ReadSlot`'s impl); a released upload gives no bytes at all (an empty
// slice is always valid), so nothing can read memory the producer writes again.
unsafe impl HostBytes for SlotUpload {
    fn host_bytes(&self) -> &[u8] {
        match self {
            SlotUpload::Lease(lease) => lease.host_bytes(),
            SlotUpload::Released(_) => &[],
        }
    }
}
