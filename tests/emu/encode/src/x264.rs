//! One libx264 encoder behind the emulated hardware: its parameters (including rate control), the
//! FFI calls that encode a picture, and the NAL units it returns.

use std::ffi::{c_int, c_void, CString};
use std::ptr::{self, NonNull};

use x264_sys as x;

use crate::codec::{Params, Picture, Rc, PIC_B, PIC_I, PIC_IDR, PIC_P};

/// Writes the rate-control fields of an x264 parameter set.
fn apply_rc(param: &mut x::x264_param_t, rc: &Rc) {
    match *rc {
        Rc::Cqp(qp) => {
            param.rc.i_rc_method = x::X264_RC_CQP as c_int;
            param.rc.i_qp_constant = qp.min(51) as c_int;
        }
        Rc::Crf(q) => {
            param.rc.i_rc_method = x::X264_RC_CRF as c_int;
            param.rc.f_rf_constant = q;
        }
        Rc::Abr {
            kbps,
            max_kbps,
            vbv_kbit,
            vbv_init,
            filler,
        } => {
            param.rc.i_rc_method = x::X264_RC_ABR as c_int;
            param.rc.i_bitrate = kbps.max(1) as c_int;
            if max_kbps > 0 {
                param.rc.i_vbv_max_bitrate = max_kbps as c_int;
                // vbvBufferSize 0 is "the default VBV buffer size" (API.h), unspecified: one
                // second at the maximum rate here. A given size is used as it is.
                param.rc.i_vbv_buffer_size =
                    if vbv_kbit > 0 { vbv_kbit } else { max_kbps } as c_int;
                if vbv_init > 0.0 {
                    param.rc.f_vbv_buffer_init = vbv_init;
                }
                param.rc.b_filler = c_int::from(filler);
            }
        }
    }
}

/// libx264 behind the emulated hardware.
#[derive(Debug)]
pub struct X264 {
    h: NonNull<x::x264_t>,
    headers: Vec<u8>,
}

// SAFETY: an x264_t may be used from any thread as long as calls are not concurrent; the session
// owning this value sits behind the emulator's global mutex.
unsafe impl Send for X264 {}

fn nal_units(nals: *mut x::x264_nal_t, count: c_int) -> Vec<(c_int, &'static [u8])> {
    let mut out = Vec::new();
    for i in 0..count.max(0) as usize {
        // SAFETY: x264 returned `count` NAL descriptors at `nals`, valid until its next call; the
        // caller copies the payloads before calling x264 again.
        let n = unsafe { &*nals.wrapping_add(i) };
        // SAFETY: each descriptor's payload is `i_payload` initialised bytes owned by x264.
        let bytes = unsafe { std::slice::from_raw_parts(n.p_payload, n.i_payload as usize) };
        out.push((n.i_type, bytes));
    }
    out
}

fn pic_type(t: c_int) -> u32 {
    match t as u32 {
        x::X264_TYPE_IDR => PIC_IDR,
        x::X264_TYPE_I | x::X264_TYPE_KEYFRAME => PIC_I,
        x::X264_TYPE_B | x::X264_TYPE_BREF => PIC_B,
        _ => PIC_P,
    }
}

impl X264 {
    /// Opens libx264 with settings that keep the GOP structure predictable.
    pub fn open(p: &Params) -> Result<Self, String> {
        // SAFETY: x264_param_t is a plain C struct (integers, floats, nullable pointers) for
        // which all-zero bytes are valid; x264_param_default_preset fills it in.
        let mut param: x::x264_param_t = unsafe { std::mem::zeroed() };
        let preset = c"ultrafast";
        // SAFETY: `param` is writable; the preset name is a NUL-terminated literal; tune is NULL.
        let rc = unsafe { x::x264_param_default_preset(&mut param, preset.as_ptr(), ptr::null()) };
        if rc < 0 {
            return Err("x264_param_default_preset failed".into());
        }
        param.i_log_level = x::X264_LOG_NONE;
        param.i_threads = 1;
        param.i_lookahead_threads = 1;
        param.b_sliced_threads = 0;
        param.i_sync_lookahead = 0;
        param.i_width = p.width as c_int;
        param.i_height = p.height as c_int;
        param.i_csp = x::X264_CSP_I420 as c_int;
        param.i_fps_num = p.fps_num;
        param.i_fps_den = p.fps_den;
        param.i_timebase_num = p.fps_den;
        param.i_timebase_den = p.fps_num;
        param.b_vfr_input = 0;
        param.i_bframe = p.bframes as c_int;
        param.i_bframe_adaptive = x::X264_B_ADAPT_NONE as c_int;
        param.i_bframe_pyramid = 0;
        param.i_scenecut_threshold = 0;
        param.rc.i_lookahead = 0;
        param.rc.b_mb_tree = 0;
        let keyint = p
            .idr_period
            .map_or(x::X264_KEYINT_MAX_INFINITE as c_int, |k| k.max(1) as c_int);
        param.i_keyint_max = keyint;
        param.i_keyint_min = keyint;
        param.b_repeat_headers = 1;
        param.b_annexb = 1;
        param.b_aud = 0;
        apply_rc(&mut param, &p.rc);
        param.b_cabac = c_int::from(p.cabac);
        if let Some(level) = p.level {
            param.i_level_idc = level as c_int;
        }
        if p.profile == Some("high") {
            // High profile's tool: the 8x8 transform (x264 then signals High, as NVENC does
            // when asked for it).
            param.analyse.b_transform_8x8 = 1;
        }
        if let Some(profile) = p.profile {
            let name = CString::new(profile).map_err(|e| e.to_string())?;
            // SAFETY: `param` is initialised; `name` is NUL-terminated and outlives the call.
            if unsafe { x::x264_param_apply_profile(&mut param, name.as_ptr()) } < 0 {
                return Err(format!("x264 rejects profile {profile}"));
            }
        }
        // SAFETY: `param` is a fully initialised x264_param_t.
        let h = unsafe { x::x264_encoder_open(&mut param) };
        let h = NonNull::new(h).ok_or("x264_encoder_open failed")?;
        let mut nals: *mut x::x264_nal_t = ptr::null_mut();
        let mut count: c_int = 0;
        // SAFETY: `h` is a live encoder; the out-pointers are valid for writes.
        let rc = unsafe { x::x264_encoder_headers(h.as_ptr(), &mut nals, &mut count) };
        let mut headers = Vec::new();
        if rc >= 0 {
            for (t, bytes) in nal_units(nals, count) {
                if t == x::nal_unit_type_e_NAL_SPS as c_int
                    || t == x::nal_unit_type_e_NAL_PPS as c_int
                {
                    headers.extend_from_slice(bytes);
                }
            }
        }
        Ok(Self { h, headers })
    }

    /// SPS and PPS, Annex B.
    pub fn headers(&self) -> &[u8] {
        &self.headers
    }

    /// Changes the rate control in place (`x264_encoder_reconfig`); the caller checked
    /// [`Rc::reconfigurable_to`].
    pub fn reconfigure(&mut self, rc: &Rc) -> Result<(), String> {
        // SAFETY: all-zero is a valid x264_param_t; x264_encoder_parameters overwrites it.
        let mut param: x::x264_param_t = unsafe { std::mem::zeroed() };
        // SAFETY: `h` is a live encoder; `param` is writable.
        unsafe { x::x264_encoder_parameters(self.h.as_ptr(), &mut param) };
        apply_rc(&mut param, rc);
        // SAFETY: `h` is live; `param` is this encoder's own complete parameter set, copied.
        let ret = unsafe { x::x264_encoder_reconfig(self.h.as_ptr(), &mut param) };
        if ret < 0 {
            return Err(format!("x264_encoder_reconfig returned {ret}"));
        }
        Ok(())
    }

    /// Frames x264 still holds.
    pub fn delayed(&self) -> usize {
        // SAFETY: `h` is a live encoder owned by `self`.
        unsafe { x::x264_encoder_delayed_frames(self.h.as_ptr()) }.max(0) as usize
    }

    /// Feeds one picture (or drains one with `None`); returns (NAL units without SPS/PPS, NVENC
    /// picture type, serial) of the picture x264 emitted, if any.
    #[allow(clippy::type_complexity)]
    pub(crate) fn encode(
        &mut self,
        pic: Option<(&Picture<'_>, u64, c_int)>,
    ) -> Result<Option<(Vec<u8>, u32, u64)>, String> {
        // SAFETY: all-zero is a valid x264_picture_t; x264_picture_init sets the defaults.
        let mut pin: x::x264_picture_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above; x264 fills the output picture.
        let mut pout: x::x264_picture_t = unsafe { std::mem::zeroed() };
        let pin_ptr = match pic {
            Some((p, serial, x264_type)) => {
                // SAFETY: `pin` is a valid, writable x264_picture_t.
                unsafe { x::x264_picture_init(&mut pin) };
                pin.img.i_csp = p.csp as c_int;
                pin.img.i_plane = p.planes.len() as c_int;
                for (k, &(off, stride)) in p.planes.iter().enumerate() {
                    if off >= p.data.len() {
                        return Err("plane outside the input".into());
                    }
                    pin.img.i_stride[k] = stride as c_int;
                    // x264 only reads input planes (it copies them into its own frames).
                    pin.img.plane[k] = p.data[off..].as_ptr().cast_mut();
                }
                pin.i_pts = serial as i64;
                // The session's NVENC picture type, so x264's stream has NVENC's structure.
                pin.i_type = x264_type;
                pin.opaque = ptr::null_mut::<c_void>();
                &mut pin as *mut x::x264_picture_t
            }
            None => ptr::null_mut(),
        };
        let mut nals: *mut x::x264_nal_t = ptr::null_mut();
        let mut count: c_int = 0;
        // SAFETY: `h` is live; `pin_ptr` is NULL or an initialised picture whose planes point
        // into `data`, which the caller sized for the whole frame (checked at registration or
        // buffer creation); x264 copies the pixels before returning. Out-pointers are writable.
        let size = unsafe {
            x::x264_encoder_encode(self.h.as_ptr(), &mut nals, &mut count, pin_ptr, &mut pout)
        };
        if size < 0 {
            return Err(format!("x264_encoder_encode returned {size}"));
        }
        if size == 0 || count <= 0 {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(size as usize);
        for (t, bytes) in nal_units(nals, count) {
            if t != x::nal_unit_type_e_NAL_SPS as c_int && t != x::nal_unit_type_e_NAL_PPS as c_int
            {
                out.extend_from_slice(bytes);
            }
        }
        Ok(Some((out, pic_type(pout.i_type), pout.i_pts as u64)))
    }
}

impl Drop for X264 {
    fn drop(&mut self) {
        // SAFETY: `h` is a live encoder owned by `self`, closed exactly once.
        unsafe { x::x264_encoder_close(self.h.as_ptr()) };
    }
}
