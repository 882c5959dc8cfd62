//! Raw bindings to NVIDIA nvEncodeAPI.
