//! The process-wide count of frame copies made on the host inside this crate.

use std::sync::atomic::{AtomicU64, Ordering};

static HOST_FRAME_COPIES: AtomicU64 = AtomicU64::new(0);

/// Counts one copy.
pub(crate) fn count() {
    HOST_FRAME_COPIES.fetch_add(1, Ordering::Relaxed);
}

/// How many times this process has copied a frame's bytes on the host inside this crate.
///
/// The crate copies a frame only where it must: the fallback chain's held copy of a frame it may
/// have to replay on the next encoder, NVENC's staging copy of a frame given as host bytes rather
/// than a pinned or device slot, and a device slot downloaded for a CPU encoder. A pipeline that
/// feeds NVENC from pinned or device ring slots keeps this at 0 in steady state; read it before
/// and after a run to check that yours does. It counts across every encoder of the process and
/// never resets.
#[must_use]
pub fn host_frame_copies() -> u64 {
    HOST_FRAME_COPIES.load(Ordering::Relaxed)
}
