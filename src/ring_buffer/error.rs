//! Errors (creation fails) and outcomes (a slot is not available now) of the ring.

/// Why a ring could not be created.
///
/// Every variant names the offending value and what would have been valid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The slot count is zero or larger than the ring supports.
    #[error("invalid slot count {slots} (expected >= 1, <= {max})")]
    InvalidSlotCount {
        /// The count asked for.
        slots: usize,
        /// The largest count a ring accepts.
        max: usize,
    },
    /// A slot of zero bytes was asked for.
    #[error("invalid slot length {slot_len} bytes (expected >= 1)")]
    InvalidSlotLen {
        /// The length asked for.
        slot_len: usize,
    },
    /// `slots × slot_len` (after alignment) does not fit in the address space.
    #[error("ring of {slots} slots x {slot_len} bytes overflows the address space (at most {max} bytes)")]
    SizeOverflow {
        /// The slot count asked for.
        slots: usize,
        /// The slot length asked for.
        slot_len: usize,
        /// The largest total size an allocation may have.
        max: usize,
    },
    /// The memory allocator (host, pinned or device) could not provide the ring's memory.
    #[error("could not allocate {bytes} bytes for the ring's slots")]
    AllocFailed {
        /// Bytes asked for.
        bytes: usize,
    },
    /// The ring backs an encoder that keeps more frames in flight than the ring has slots: it would
    /// deadlock at flush, so it is refused at creation.
    #[error(
        "ring of {slots} slots is too small for the encoder, which holds up to {required} frames in flight \
         (frame interval {frame_interval_p} + lookahead {lookahead} + extra output delay {extra_output_delay}); \
         expected slots >= {required}"
    )]
    TooSmall {
        /// Slots the ring was asked to have.
        slots: usize,
        /// Slots the encoder needs, see [`required_slots`](super::required_slots).
        required: usize,
        /// The encoder's P-frame interval (1 = no B-frames).
        frame_interval_p: u32,
        /// The encoder's lookahead depth.
        lookahead: u32,
        /// Extra output delay of the encoder.
        extra_output_delay: u32,
    },
    /// A device storage layout is invalid: zero width or rows.
    #[error(
        "invalid device surface layout {width_bytes} bytes x {rows} rows (expected both >= 1)"
    )]
    InvalidLayout {
        /// Width of a row in bytes.
        width_bytes: usize,
        /// Number of rows.
        rows: usize,
    },
    /// Allocating the ring's CUDA memory did not finish in time: the driver or GPU appears hung.
    /// The allocating thread is left inside the driver (it frees the memory if the call returns).
    #[error("allocating the ring's CUDA memory did not finish within {bound:?}: the driver or GPU appears hung")]
    AllocationHung {
        /// How long it was waited for.
        bound: std::time::Duration,
    },
    /// CUDA storage was asked for on a machine where CUDA cannot be used.
    #[error("CUDA is not available: {reason}")]
    CudaUnavailable {
        /// Why, in words for a "why won't this work on my machine" report.
        reason: String,
    },
    /// A CUDA driver call failed.
    #[error("CUDA call {call} failed: {source}")]
    Cuda {
        /// The driver entry point that failed.
        call: &'static str,
        /// The driver's error.
        #[source]
        source: crate::cuda::DriverError,
    },
}

/// Why [`Producer::try_reserve`](super::Producer::try_reserve) and its blocking and timed variants
/// returned no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReserveError {
    /// Every slot is queued or held by the consumer (only from `try_reserve`).
    #[error("ring is full")]
    Full,
    /// No slot became free before the deadline (only from `reserve_timeout`).
    #[error("timed out waiting for a free slot")]
    Timeout,
    /// The consumer is gone: dropped, or dropped while its thread panicked. Nothing more can be
    /// delivered.
    #[error("consumer is gone ({})", if *panicked { "it panicked" } else { "dropped" })]
    Disconnected {
        /// Whether the consumer was dropped during a panic.
        panicked: bool,
    },
}

/// Why [`WriteSlot::commit`](super::WriteSlot::commit) did not publish the frame. The slot is
/// given back to the producer unpublished in both cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The frame length in the metadata is larger than the slot.
    #[error(
        "frame of {len} bytes does not fit a slot of {slot_len} bytes (expected len <= {slot_len})"
    )]
    TooLong {
        /// The length given.
        len: usize,
        /// The slot's length.
        slot_len: usize,
    },
    /// The consumer is gone, so the frame would never be delivered; it was not accepted.
    #[error("consumer is gone ({})", if *panicked { "it panicked" } else { "dropped" })]
    Disconnected {
        /// Whether the consumer was dropped during a panic.
        panicked: bool,
    },
}

/// Why [`Consumer::try_pop`](super::Consumer::try_pop) and its blocking and timed variants returned
/// no frame. `Closed` and `Disconnected` come only after every committed frame was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PopError {
    /// No frame is queued now (only from `try_pop`).
    #[error("ring is empty")]
    Empty,
    /// No frame arrived before the deadline (only from `pop_timeout`).
    #[error("timed out waiting for a frame")]
    Timeout,
    /// The producer closed the ring and every frame was delivered: the end of the stream.
    #[error("producer closed the ring")]
    Closed,
    /// The producer was dropped without closing (or during a panic) and every frame it committed was
    /// delivered.
    #[error("producer is gone ({})", if *panicked { "it panicked" } else { "dropped without close" })]
    Disconnected {
        /// Whether the producer was dropped during a panic.
        panicked: bool,
    },
}

impl From<crate::cuda::CudaError> for RingError {
    fn from(e: crate::cuda::CudaError) -> Self {
        use crate::cuda::CudaError;
        match e {
            CudaError::Unavailable { reason } => RingError::CudaUnavailable { reason },
            CudaError::Call { call, source } => RingError::Cuda { call, source },
            CudaError::AllocFailed { bytes } => RingError::AllocFailed { bytes },
            CudaError::InvalidCopy {
                width_bytes, rows, ..
            } => RingError::InvalidLayout { width_bytes, rows },
            // `CudaError` is non-exhaustive only to the crate's users.
        }
    }
}
