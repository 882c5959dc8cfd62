//! The software HEVC backend: libx265 in process (the `x265` feature).
//!
//! Built on `nvencode-x265-sys` (bindings generated at build time from the system's `x265.h`)
//! with a small safe layer of our own (`handle::X265Handle`), which reaches libx265 through its
//! 8-bit `x265_api` table (`x265_api_get(8)`) and checks that table against the bindings once per
//! process: a libx265 without an 8-bit encoder, or not the build nvencode was compiled against,
//! is [`Error::Unavailable`](crate::Error::Unavailable). All of this module's `unsafe` is in
//! `handle.rs`.
//!
//! Mapping of [`EncoderConfig`](crate::EncoderConfig) (`src/encoder/mapping/x265.rs`): `preset`
//! is x265's preset of the same name; `tune` is x265's where it has one (film and stillimage it
//! lacks); `crf` is `--crf`; `gop_size` is `--keyint` with a closed GOP (`--no-open-gop`, so
//! every keyframe is an IDR; `--min-keyint` stays x265's automatic one, as x264's); `bframes` is
//! `--bframes`; `threads` is the size of x265's thread pool (`--pools N`, from which x265 sizes
//! its frame threads; 0 = x265's automatic choice); `rate_control` is ABR with a VBV for CBR and
//! VBR, `--qp` for constant QP. A rate change mid-stream opens a new libx265 encoder, which
//! takes over at the next frame with an IDR (libx265 3.5's `x265_encoder_reconfig` reports
//! success but never reaches its rate control; see [`X265Encoder`]'s `reconfigure`).
//!
//! Output is HEVC Main (8-bit 4:2:0) in Annex B, with VPS/SPS/PPS repeated before every IDR
//! (`--repeat-headers`) and x265's settings in a user-data SEI on every keyframe; input is I420
//! or NV12 (split into I420 planes in a reused buffer: libx265 3.5 takes planar input only). The
//! time base is one frame. libx265 has no log callback: it writes to stderr, and only its errors
//! are let through (each also fails the call, which returns a typed error).

mod encoder;
mod handle;

pub use encoder::X265Encoder;

#[cfg(feature = "x265")]
use nvencode_x265_sys as sys;

/// A documentation build without the `x265` feature (docs.rs, which has no libx265 to build
/// `nvencode-x265-sys` against): placeholders with the names this module's signatures use, so
/// that the backend is documented. rustdoc does not type-check function bodies; no other build
/// compiles this module without the feature (see the crate root).
#[cfg(not(feature = "x265"))]
#[allow(non_camel_case_types, dead_code)]
mod sys {
    pub(crate) struct x265_api;
    pub(crate) struct x265_param;
    pub(crate) struct x265_picture;
    pub(crate) struct x265_encoder;
    pub(crate) struct x265_nal;
}
