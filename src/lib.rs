//! Direct NVIDIA NVENC H.264 encoding with a software x264 fallback.

// The frame ring between the pipeline and the encoder (its docs are the module's own `//!`, so
// that their intra-doc links resolve inside the module).
pub mod ring_buffer;
