//! The software backend: libx264 in process.
//!
//! Built on `x264-sys` with a small safe layer of our own (`handle::X264Handle`), because the `x264` crate
//! cannot set CRF, the thread count or in-band SPS/PPS on every IDR, all of which
//! [`EncoderConfig`](crate::EncoderConfig) needs. All of this module's `unsafe` is in `handle.rs` (the handle and the log callback).
//!
//! Mapping of [`EncoderConfig`](crate::EncoderConfig): `preset` and `tune` are x264's own; `crf` is `--crf`; `gop_size`
//! is `--keyint`; `bframes` is `--bframes`; `threads` is `--threads` (0 = x264's automatic
//! choice); `rate_control` as `src/encoder/mapping.rs` says (ABR with a VBV for CBR and VBR, CQP). A rate change mid-stream goes through `x264_encoder_reconfig`, which
//! changes the bit rate and VBV in place (no IDR) but cannot switch modes. Output is Annex B with SPS/PPS repeated before every IDR (`--repeat-headers`), and
//! the time base is one frame.

mod encoder;
mod handle;

pub use encoder::X264Encoder;

#[cfg(feature = "x264")]
use x264_sys as sys;

/// A documentation build without the `x264` feature (docs.rs, which has no libx264 to build
/// `x264-sys` against): placeholders with the names this module's signatures use, so that the
/// backend is documented. rustdoc does not type-check function bodies; no other build compiles
/// this module without the feature (see the crate root).
#[cfg(not(feature = "x264"))]
#[allow(non_camel_case_types, dead_code)]
mod sys {
    pub(crate) struct x264_t;
    pub(crate) struct x264_param_t;
    pub(crate) struct x264_nal_t;
    pub(crate) struct x264_picture_t;
    pub(crate) struct __va_list_tag;
}
