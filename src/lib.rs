//! Direct NVIDIA NVENC H.264 encoding with a software x264 fallback.
