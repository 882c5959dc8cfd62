//! The owned libx264 handle ([`X264Handle`]) over `x264-sys`: all of the x264 backend's `unsafe`
//! is here (the handle's calls and the log callback).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::{self, NonNull};

use super::sys;

use crate::encoder::mapping::{X264Method, X264Rc};
use crate::encoder::{EncoderConfig, EncoderKind, FrameLayout};
use crate::error::Error;

/// The backend's kind, for errors.
pub(super) const KIND: EncoderKind = EncoderKind::X264;

/// One input picture for [`X264Handle::encode`].
pub(super) struct Input<'a> {
    pub(super) data: &'a [u8],
    pub(super) layout: &'a FrameLayout,
    pub(super) csp: c_int,
    pub(super) pts: i64,
    pub(super) frame_index: u64,
    pub(super) force_idr: bool,
}

/// One output picture from [`X264Handle::encode`].
pub(super) struct Encoded {
    pub(super) data: Vec<u8>,
    pub(super) pts: i64,
    pub(super) dts: i64,
    pub(super) keyframe: bool,
    pub(super) pic_type: c_int,
    pub(super) frame_index: u64,
}

pub(super) fn backend_error(call: &'static str, message: impl Into<String>) -> Error {
    Error::Backend {
        backend: KIND,
        call,
        message: message.into(),
    }
}

/// The owned `x264_t` handle: the thin unsafe layer over `x264-sys`.
#[derive(Debug)]
pub(super) struct X264Handle {
    handle: NonNull<sys::x264_t>,
}

// SAFETY: an x264_t may be used from any thread as long as calls on it are not concurrent; the
// handle is owned and only reachable through `&mut self`, so `X264Handle` is `Send` but not `Sync`.
unsafe impl Send for X264Handle {}

impl X264Handle {
    /// x264's defaults for the preset and tune, with libx264's log routed to `tracing`.
    pub(super) fn default_param(config: &EncoderConfig) -> Result<sys::x264_param_t, Error> {
        let preset = CString::new(config.preset.name())
            .map_err(|_| backend_error("x264_param_default_preset", "preset name has a NUL"))?;
        let tune = config
            .tune
            .map(|t| CString::new(t.name()))
            .transpose()
            .map_err(|_| backend_error("x264_param_default_preset", "tune name has a NUL"))?;
        // SAFETY: x264_param_t is a plain C struct for which all-zero bytes are a valid value
        // (integers, floats, and nullable pointers), and x264_param_default_preset fills it in.
        let mut param: sys::x264_param_t = unsafe { std::mem::zeroed() };
        // SAFETY: `param` is a valid, writable x264_param_t; `preset` and `tune` are
        // NUL-terminated strings that outlive the call (x264 only reads them during it).
        let rc = unsafe {
            sys::x264_param_default_preset(
                &mut param,
                preset.as_ptr(),
                tune.as_ref().map_or(ptr::null(), |t| t.as_ptr()),
            )
        };
        if rc < 0 {
            return Err(backend_error(
                "x264_param_default_preset",
                format!(
                    "libx264 rejected preset {:?} with tune {:?}",
                    config.preset.name(),
                    config.tune.map(|t| t.name())
                ),
            ));
        }
        install_log(&mut param);
        Ok(param)
    }

    pub(super) fn open(param: &mut sys::x264_param_t) -> Result<X264Handle, Error> {
        // SAFETY: `param` is a fully initialised x264_param_t (from x264_param_default_preset);
        // x264 copies it and does not keep the pointer.
        let handle = unsafe { sys::x264_encoder_open(param) };
        NonNull::new(handle)
            .map(|handle| X264Handle { handle })
            .ok_or_else(|| {
                backend_error(
                    "x264_encoder_open",
                    "libx264 refused the parameters (its log, at tracing level warn, says which)",
                )
            })
    }

    /// The SPS and PPS NAL units, with start codes.
    pub(super) fn sequence_headers(&mut self) -> Result<Vec<u8>, Error> {
        let mut nals: *mut sys::x264_nal_t = ptr::null_mut();
        let mut count: c_int = 0;
        // SAFETY: the handle is a live encoder owned by `self`; the out-pointers are valid.
        let rc = unsafe { sys::x264_encoder_headers(self.handle.as_ptr(), &mut nals, &mut count) };
        if rc < 0 || nals.is_null() {
            return Err(backend_error(
                "x264_encoder_headers",
                format!("returned {rc}"),
            ));
        }
        // SAFETY: on success x264 returned `count` NAL descriptors at `nals`, valid until the
        // next call on this encoder; `count` is non-negative.
        let nals = unsafe { std::slice::from_raw_parts(nals, count.max(0) as usize) };
        let mut headers = Vec::new();
        for nal in nals {
            // 7 = SPS, 8 = PPS; x264's version SEI is left out.
            if matches!(nal.i_type, 7 | 8) && !nal.p_payload.is_null() {
                // SAFETY: each NAL's payload is `i_payload` bytes at `p_payload`, owned by the
                // encoder and valid until its next call.
                let bytes = unsafe {
                    std::slice::from_raw_parts(nal.p_payload, nal.i_payload.max(0) as usize)
                };
                headers.extend_from_slice(bytes);
            }
        }
        Ok(headers)
    }

    /// Changes the bit rate and VBV of the open encoder (`x264_encoder_reconfig`), from its
    /// current parameters.
    pub(super) fn reconfigure(&mut self, rc: &X264Rc) -> Result<(), Error> {
        // SAFETY: x264_param_t is a plain C struct for which all-zero bytes are valid;
        // x264_encoder_parameters overwrites it.
        let mut param: sys::x264_param_t = unsafe { std::mem::zeroed() };
        // SAFETY: the handle is a live encoder owned by `self`; `param` is writable.
        unsafe { sys::x264_encoder_parameters(self.handle.as_ptr(), &mut param) };
        apply_rate_control(&mut param, rc);
        // SAFETY: the handle is live; `param` is a complete parameter set from this encoder,
        // which x264 copies (its log callback and pointers are the encoder's own).
        let ret = unsafe { sys::x264_encoder_reconfig(self.handle.as_ptr(), &mut param) };
        if ret < 0 {
            return Err(backend_error(
                "x264_encoder_reconfig",
                format!("returned {ret} (its log, at tracing level warn, says why)"),
            ));
        }
        Ok(())
    }

    pub(super) fn delayed_frames(&mut self) -> c_int {
        // SAFETY: the handle is a live encoder owned by `self`.
        unsafe { sys::x264_encoder_delayed_frames(self.handle.as_ptr()) }
    }

    /// Encodes one picture (or drains one delayed picture with `None`).
    pub(super) fn encode(&mut self, input: Option<Input<'_>>) -> Result<Option<Encoded>, Error> {
        // SAFETY: x264_picture_t is a plain C struct; all-zero is valid, and
        // x264_picture_init sets its defaults.
        let mut pic_in: sys::x264_picture_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above, and x264 fills the output picture.
        let mut pic_out: sys::x264_picture_t = unsafe { std::mem::zeroed() };
        let pic_in_ptr = match &input {
            Some(input) => {
                // SAFETY: `pic_in` is a valid, writable x264_picture_t.
                unsafe { sys::x264_picture_init(&mut pic_in) };
                pic_in.img.i_csp = input.csp;
                pic_in.img.i_plane = input.layout.planes.len() as c_int;
                for (k, plane) in input.layout.planes.iter().enumerate() {
                    // `plane_layout` derived these from a validated resolution and the caller
                    // checked `data.len()` against the frame length, so every plane lies within
                    // `data`; `get` keeps that a checked fact instead of an assumption.
                    let bytes = input
                        .data
                        .get(plane.offset..plane.offset + plane.stride * plane.rows)
                        .ok_or_else(|| {
                            backend_error("x264_encoder_encode", "plane out of range")
                        })?;
                    pic_in.img.i_stride[k] = plane.stride as c_int;
                    // x264 only reads input planes (it copies them into its own frames).
                    pic_in.img.plane[k] = bytes.as_ptr().cast_mut();
                }
                pic_in.i_pts = input.pts;
                pic_in.i_type = if input.force_idr {
                    sys::X264_TYPE_IDR as c_int
                } else {
                    sys::X264_TYPE_AUTO as c_int
                };
                // Carried through reordering to the output picture; identifies the input frame.
                pic_in.opaque = input.frame_index as usize as *mut c_void;
                &mut pic_in as *mut sys::x264_picture_t
            }
            None => ptr::null_mut(),
        };
        let mut nals: *mut sys::x264_nal_t = ptr::null_mut();
        let mut count: c_int = 0;
        // SAFETY: the handle is a live encoder owned by `self`; `pic_in_ptr` is null or points at
        // an initialised picture whose planes borrow `input.data`, alive for this call (x264
        // copies the pixels before returning); the out-pointers are valid for writes.
        let size = unsafe {
            sys::x264_encoder_encode(
                self.handle.as_ptr(),
                &mut nals,
                &mut count,
                pic_in_ptr,
                &mut pic_out,
            )
        };
        if size < 0 {
            return Err(backend_error(
                "x264_encoder_encode",
                format!("returned {size} (its log, at tracing level warn, says why)"),
            ));
        }
        if size == 0 || count <= 0 || nals.is_null() {
            return Ok(None);
        }
        // SAFETY: on success with `count > 0`, `nals` points at `count` initialised NAL
        // descriptors owned by the encoder, valid until its next call.
        let first = unsafe { &*nals };
        // SAFETY: with Annex B output x264 guarantees the payloads of all NALs of one call are
        // contiguous, starting at the first NAL's payload and `size` bytes long in total; the
        // memory is the encoder's and valid until its next call, and it is copied out here.
        let data = unsafe { std::slice::from_raw_parts(first.p_payload, size as usize) }.to_vec();
        Ok(Some(Encoded {
            data,
            pts: pic_out.i_pts,
            dts: pic_out.i_dts,
            keyframe: pic_out.b_keyframe != 0,
            pic_type: pic_out.i_type,
            frame_index: pic_out.opaque as usize as u64,
        }))
    }
}

impl Drop for X264Handle {
    fn drop(&mut self) {
        // SAFETY: the handle is a live encoder owned by `self` and never used after this.
        unsafe { sys::x264_encoder_close(self.handle.as_ptr()) };
    }
}

/// Writes the rate-control fields of `param` (the mapping itself is in `mapping::x264`).
pub(super) fn apply_rate_control(param: &mut sys::x264_param_t, rc: &X264Rc) {
    // Values come from a validated configuration: rates and buffers fit in c_int kbit.
    let int = |v: u32| c_int::try_from(v).unwrap_or(c_int::MAX);
    match rc.method {
        X264Method::Crf(crf) => {
            param.rc.i_rc_method = sys::X264_RC_CRF as c_int;
            param.rc.f_rf_constant = crf;
        }
        X264Method::Cqp(qp) => {
            param.rc.i_rc_method = sys::X264_RC_CQP as c_int;
            param.rc.i_qp_constant = c_int::from(qp);
        }
        X264Method::Abr => {
            param.rc.i_rc_method = sys::X264_RC_ABR as c_int;
            param.rc.i_bitrate = int(rc.bitrate_kbps);
        }
    }
    param.rc.i_vbv_max_bitrate = int(rc.vbv_max_kbps);
    param.rc.i_vbv_buffer_size = int(rc.vbv_buffer_kbit);
}

/// Routes libx264's log lines to `tracing` (target `nvencode::x264`).
#[cfg(x264_log_to_tracing)]
fn install_log(param: &mut sys::x264_param_t) {
    extern "C" {
        // The C library's formatter, declared with the va_list type bindgen generated for
        // x264's log callback on this target.
        fn vsnprintf(
            buf: *mut c_char,
            len: usize,
            fmt: *const c_char,
            args: *mut sys::__va_list_tag,
        ) -> c_int;
    }

    unsafe extern "C" fn log(
        _private: *mut c_void,
        level: c_int,
        fmt: *const c_char,
        args: *mut sys::__va_list_tag,
    ) {
        let mut buf = [0 as c_char; 512];
        // SAFETY: x264 passes a valid format string and its matching va_list; vsnprintf writes
        // at most `buf.len()` bytes including the NUL terminator.
        let n = unsafe { vsnprintf(buf.as_mut_ptr(), buf.len(), fmt, args) };
        if n < 0 {
            return;
        }
        // SAFETY: vsnprintf NUL-terminated `buf` (n >= 0 means it wrote a terminated string).
        let text = unsafe { CStr::from_ptr(buf.as_ptr()) };
        let text = text.to_string_lossy();
        let text = text.trim_end();
        // Nothing here can panic, but a panic must never cross back into C.
        let _ = std::panic::catch_unwind(|| match level {
            0 => tracing::error!(target: "nvencode::x264", "{text}"),
            1 => tracing::warn!(target: "nvencode::x264", "{text}"),
            2 => tracing::debug!(target: "nvencode::x264", "{text}"),
            _ => tracing::trace!(target: "nvencode::x264", "{text}"),
        });
    }

    param.pf_log = Some(log);
    param.p_log_private = ptr::null_mut();
    param.i_log_level = sys::X264_LOG_INFO as c_int;
}

/// Elsewhere libx264 stays silent: its messages cannot be formatted portably from Rust.
#[cfg(not(x264_log_to_tracing))]
fn install_log(param: &mut sys::x264_param_t) {
    param.i_log_level = sys::X264_LOG_NONE;
}

#[cfg(test)]
mod tests {
    use super::*;

    impl X264Handle {
        /// The encoder's current parameters (`x264_encoder_parameters`).
        pub(in crate::x264) fn parameters(&mut self) -> sys::x264_param_t {
            // SAFETY: all-zero is a valid x264_param_t, which the call overwrites.
            let mut param: sys::x264_param_t = unsafe { std::mem::zeroed() };
            // SAFETY: the handle is a live encoder owned by `self`; `param` is writable.
            unsafe { sys::x264_encoder_parameters(self.handle.as_ptr(), &mut param) };
            param
        }
    }
}
