//! The software backend: libx264 in process.
//!
//! Built on `x264-sys` with a small safe layer of our own ([`Session`]), because the `x264` crate
//! cannot set CRF, the thread count or in-band SPS/PPS on every IDR, all of which
//! [`EncoderConfig`] needs. All of this module's `unsafe` is in [`Session`] and the log callback.
//!
//! Mapping of [`EncoderConfig`]: `preset` and `tune` are x264's own; `crf` is `--crf`; `gop_size`
//! is `--keyint`; `bframes` is `--bframes`; `threads` is `--threads` (0 = x264's automatic
//! choice); `rate_control` as `src/encoder/mapping.rs` says (ABR with a VBV for CBR and VBR, CQP). A rate change mid-stream goes through `x264_encoder_reconfig`, which
//! changes the bit rate and VBV in place (no IDR) but cannot switch modes. Output is Annex B with SPS/PPS repeated before every IDR (`--repeat-headers`), and
//! the time base is one frame.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::{self, NonNull};

use x264_sys as sys;

use crate::encoder::mapping::{self, X264Method, X264Rc};
use crate::encoder::{
    EncodedChunk, EncoderConfig, EncoderKind, Frame, FrameLayout, FrameType, InputGate,
    PixelFormat, RateControl, VideoEncoder,
};
use crate::error::Error;

const KIND: EncoderKind = EncoderKind::X264;

/// A libx264 encoder. Created with [`X264Encoder::new`]; see [`VideoEncoder`] for its use.
#[derive(Debug)]
pub struct X264Encoder {
    session: Session,
    gate: InputGate,
    config: EncoderConfig,
    layout: FrameLayout,
    csp: c_int,
    headers: Vec<u8>,
    chunks_out: u64,
}

impl X264Encoder {
    /// Opens libx264 with `config`.
    ///
    /// # Errors
    /// [`Error::Config`] if `config` does not validate; [`Error::Backend`] if libx264 refuses a
    /// setting or fails to open.
    pub fn new(config: &EncoderConfig) -> Result<Self, Error> {
        let gate = InputGate::new(KIND, config)?;
        let layout = config.pixel_format.plane_layout(config.resolution)?;
        let csp = match config.pixel_format {
            PixelFormat::I420 => sys::X264_CSP_I420 as c_int,
            PixelFormat::Nv12 => sys::X264_CSP_NV12 as c_int,
        };
        let mut param = Session::default_param(config)?;
        // Sizes and counts below were range-checked by `validate`, so the casts are lossless.
        param.i_width = config.resolution.width as c_int;
        param.i_height = config.resolution.height as c_int;
        param.i_csp = csp;
        param.i_threads = config.threads as c_int;
        param.i_fps_num = config.frame_rate.num;
        param.i_fps_den = config.frame_rate.den;
        param.i_timebase_num = config.frame_rate.den;
        param.i_timebase_den = config.frame_rate.num;
        // Rate control follows the nominal frame rate, not the caller's timestamps.
        param.b_vfr_input = 0;
        param.i_keyint_max = config.gop_size as c_int;
        // Zero latency means no B-frames on every backend (`mapping::bframes`), whatever
        // `bframes` says; x264's own zerolatency tune agrees.
        if let Some(bframes) = mapping::bframes(config) {
            param.i_bframe = bframes as c_int;
        }
        apply_rate_control(&mut param, &mapping::x264(config));
        param.b_repeat_headers = 1;
        param.b_annexb = 1;
        let mut session = Session::open(&mut param)?;
        let headers = session.sequence_headers()?;
        tracing::debug!(
            resolution = %config.resolution,
            format = %config.pixel_format,
            preset = %config.preset,
            tune = ?config.tune,
            crf = config.crf,
            rate_control = %config.rate_control,
            gop = config.gop_size,
            bframes = param.i_bframe,
            threads = param.i_threads,
            "opened x264"
        );
        Ok(X264Encoder {
            session,
            gate,
            config: config.clone(),
            layout,
            csp,
            headers,
            chunks_out: 0,
        })
    }

    fn push_chunk(&mut self, encoded: Encoded, out: &mut Vec<EncodedChunk>) {
        let frame_type = match encoded.pic_type as u32 {
            sys::X264_TYPE_IDR => FrameType::Idr,
            sys::X264_TYPE_I | sys::X264_TYPE_KEYFRAME => FrameType::I,
            sys::X264_TYPE_B | sys::X264_TYPE_BREF => FrameType::B,
            _ => FrameType::P,
        };
        self.chunks_out += 1;
        out.push(EncodedChunk {
            data: encoded.data,
            pts: encoded.pts,
            dts: encoded.dts,
            duration: 1,
            keyframe: encoded.keyframe,
            frame_type,
            frame_index: encoded.frame_index,
        });
    }
}

impl VideoEncoder for X264Encoder {
    fn encode(&mut self, frame: Frame<'_>, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        let (frame_index, pts) = self.gate.check(&frame)?;
        let input = Input {
            data: frame.data,
            layout: &self.layout,
            csp: self.csp,
            pts,
            frame_index,
            force_idr: frame.force_keyframe,
        };
        let encoded = self.session.encode(Some(input))?;
        self.gate.accept(pts);
        if let Some(encoded) = encoded {
            self.push_chunk(encoded, out);
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        if self.gate.is_finished() {
            return Ok(());
        }
        // Each call without input returns at most one delayed frame; x264 counts down what it
        // holds. The bound turns a library that never drains into an error instead of a hang.
        let mut tries = 0u32;
        while self.session.delayed_frames() > 0 {
            tries += 1;
            if tries > 100_000 {
                return Err(Error::Backend {
                    backend: KIND,
                    call: "x264_encoder_encode",
                    message: "the encoder did not drain its delayed frames".into(),
                });
            }
            if let Some(encoded) = self.session.encode(None)? {
                self.push_chunk(encoded, out);
            }
        }
        self.gate
            .finish_accounted(self.chunks_out, "x264_encoder_encode")
    }

    fn reconfigure(&mut self, rate_control: RateControl) -> Result<(), Error> {
        if self.gate.is_finished() {
            return Err(Error::Finished { backend: KIND });
        }
        rate_control.validate()?;
        let old = self.config.rate_control;
        let same_mode = old.mode() == rate_control.mode();
        // x264_encoder_reconfig copies the bit rate and VBV only when a VBV was on from the
        // start (CBR and VBR always have one here) and never the method, the QP or the filler
        // flag, so only CBR -> CBR and VBR -> VBR can change; constant quality has nothing to
        // change.
        match rate_control {
            RateControl::ConstantQuality if same_mode => return Ok(()),
            RateControl::Cbr { .. } | RateControl::Vbr { .. } if same_mode => {}
            _ => {
                return Err(Error::Unsupported {
                    backend: KIND,
                    feature: "changing the rate-control mode or the constant QP mid-stream \
                              (x264_encoder_reconfig changes only the bit rate and VBV)",
                })
            }
        }
        let new_config = self.config.clone().with_rate_control(rate_control);
        self.session.reconfigure(&mapping::x264(&new_config))?;
        tracing::debug!(from = %old, to = %rate_control, "reconfigured x264");
        self.config = new_config;
        Ok(())
    }

    fn kind(&self) -> EncoderKind {
        KIND
    }

    fn config(&self) -> &EncoderConfig {
        &self.config
    }

    fn sequence_headers(&self) -> &[u8] {
        &self.headers
    }
}

/// One input picture for [`Session::encode`].
struct Input<'a> {
    data: &'a [u8],
    layout: &'a FrameLayout,
    csp: c_int,
    pts: i64,
    frame_index: u64,
    force_idr: bool,
}

/// One output picture from [`Session::encode`].
struct Encoded {
    data: Vec<u8>,
    pts: i64,
    dts: i64,
    keyframe: bool,
    pic_type: c_int,
    frame_index: u64,
}

fn backend_error(call: &'static str, message: impl Into<String>) -> Error {
    Error::Backend {
        backend: KIND,
        call,
        message: message.into(),
    }
}

/// The owned `x264_t` handle: the thin unsafe layer over `x264-sys`.
#[derive(Debug)]
struct Session {
    handle: NonNull<sys::x264_t>,
}

// SAFETY: an x264_t may be used from any thread as long as calls on it are not concurrent; the
// handle is owned and only reachable through `&mut self`, so `Session` is `Send` but not `Sync`.
unsafe impl Send for Session {}

impl Session {
    /// x264's defaults for the preset and tune, with libx264's log routed to `tracing`.
    fn default_param(config: &EncoderConfig) -> Result<sys::x264_param_t, Error> {
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

    fn open(param: &mut sys::x264_param_t) -> Result<Session, Error> {
        // SAFETY: `param` is a fully initialised x264_param_t (from x264_param_default_preset);
        // x264 copies it and does not keep the pointer.
        let handle = unsafe { sys::x264_encoder_open(param) };
        NonNull::new(handle)
            .map(|handle| Session { handle })
            .ok_or_else(|| {
                backend_error(
                    "x264_encoder_open",
                    "libx264 refused the parameters (its log, at tracing level warn, says which)",
                )
            })
    }

    /// The SPS and PPS NAL units, with start codes.
    fn sequence_headers(&mut self) -> Result<Vec<u8>, Error> {
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
    fn reconfigure(&mut self, rc: &X264Rc) -> Result<(), Error> {
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

    fn delayed_frames(&mut self) -> c_int {
        // SAFETY: the handle is a live encoder owned by `self`.
        unsafe { sys::x264_encoder_delayed_frames(self.handle.as_ptr()) }
    }

    /// Encodes one picture (or drains one delayed picture with `None`).
    fn encode(&mut self, input: Option<Input<'_>>) -> Result<Option<Encoded>, Error> {
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

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: the handle is a live encoder owned by `self` and never used after this.
        unsafe { sys::x264_encoder_close(self.handle.as_ptr()) };
    }
}

/// Writes the rate-control fields of `param` (the mapping itself is in `mapping::x264`).
fn apply_rate_control(param: &mut sys::x264_param_t, rc: &X264Rc) {
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

/// Routes libx264's log lines to `tracing` (target `nvenc::x264`).
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
            0 => tracing::error!(target: "nvenc::x264", "{text}"),
            1 => tracing::warn!(target: "nvenc::x264", "{text}"),
            2 => tracing::debug!(target: "nvenc::x264", "{text}"),
            _ => tracing::trace!(target: "nvenc::x264", "{text}"),
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
    use crate::encoder::Bitrate;

    impl Session {
        /// The encoder's current parameters (`x264_encoder_parameters`).
        fn parameters(&mut self) -> sys::x264_param_t {
            // SAFETY: all-zero is a valid x264_param_t, which the call overwrites.
            let mut param: sys::x264_param_t = unsafe { std::mem::zeroed() };
            // SAFETY: the handle is a live encoder owned by `self`; `param` is writable.
            unsafe { sys::x264_encoder_parameters(self.handle.as_ptr(), &mut param) };
            param
        }
    }

    /// The VBV reaches libx264 at open and through a reconfiguration (a rate test on smooth
    /// content cannot tell: x264's average-rate control alone stays under the maximum there).
    #[test]
    fn libx264_runs_with_the_mapped_vbv() {
        let rc = RateControl::vbr(Bitrate::from_bps(2_000_000), Bitrate::from_bps(2_500_000))
            .with_vbv_buffer_bits(250_000);
        let config = EncoderConfig::new(64, 64)
            .with_preset(crate::Preset::Ultrafast)
            .with_threads(1)
            .with_rate_control(rc);
        let mut encoder = X264Encoder::new(&config).unwrap();
        let p = encoder.session.parameters();
        assert_eq!(p.rc.i_rc_method, sys::X264_RC_ABR as c_int);
        assert_eq!(
            (
                p.rc.i_bitrate,
                p.rc.i_vbv_max_bitrate,
                p.rc.i_vbv_buffer_size
            ),
            (2_000, 2_500, 250)
        );
        let lower = RateControl::vbr(Bitrate::from_bps(1_000_000), Bitrate::from_bps(1_200_000))
            .with_vbv_buffer_bits(120_000);
        encoder.reconfigure(lower).unwrap();
        // x264 applies a reconfiguration at its next encode call (with one thread, to the
        // context x264_encoder_parameters reads).
        let frame = vec![128u8; config.validate().unwrap()];
        encoder.encode_frame(&frame, &mut Vec::new()).unwrap();
        let p = encoder.session.parameters();
        assert_eq!(
            (
                p.rc.i_bitrate,
                p.rc.i_vbv_max_bitrate,
                p.rc.i_vbv_buffer_size
            ),
            (1_000, 1_200, 120)
        );
        let cqp = EncoderConfig::new(64, 64).with_rate_control(RateControl::constant_qp(31));
        let mut encoder = X264Encoder::new(&cqp).unwrap();
        let p = encoder.session.parameters();
        assert_eq!(
            (p.rc.i_rc_method, p.rc.i_qp_constant),
            (sys::X264_RC_CQP as c_int, 31)
        );
    }
}
