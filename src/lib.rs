//! Direct NVIDIA NVENC H.264 encoding with a software x264 fallback.

/// The frame ring between the pipeline and the encoder: fixed slots, zero-copy leases, host or CUDA memory.
pub mod ring_buffer;
