//! The encoders behind the emulated session: libx264 (real, decodable H.264) or a fast stub.

use std::ffi::{c_int, c_void, CString};
use std::ptr::{self, NonNull};
use std::sync::Arc;

use x264_sys as x;

/// Picture types as NVENC reports them (`NV_ENC_PIC_TYPE`).
pub const PIC_P: u32 = 0;
/// `NV_ENC_PIC_TYPE_B`.
pub const PIC_B: u32 = 1;
/// `NV_ENC_PIC_TYPE_I`.
pub const PIC_I: u32 = 2;
/// `NV_ENC_PIC_TYPE_IDR`.
pub const PIC_IDR: u32 = 3;

/// Rate control derived from `NV_ENC_RC_PARAMS`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rc {
    /// Constant QP (`NV_ENC_PARAMS_RC_CONSTQP`).
    Cqp(u32),
    /// Constant quality (`targetQuality`), mapped to x264's CRF.
    Crf(f32),
    /// Average bit rate in kbit/s, with an optional VBV (max kbit/s, buffer kbit).
    Abr {
        kbps: u32,
        max_kbps: u32,
        vbv_kbit: u32,
        /// Initial VBV fill as a fraction of the buffer (`vbvInitialDelay / vbvBufferSize`;
        /// 0 for x264's default).
        vbv_init: f32,
        /// Filler data to hold the rate (CBR with `enableFillerDataInsertion`).
        filler: bool,
    },
}

impl Rc {
    /// Whether `other` only changes values x264 can change in place (`x264_encoder_reconfig`
    /// copies the bit rate and VBV, or the CRF, but never the method, the QP or the filler flag,
    /// and cannot turn a VBV on).
    pub fn reconfigurable_to(&self, other: &Rc) -> bool {
        match (self, other) {
            (Rc::Crf(_), Rc::Crf(_)) => true,
            (
                Rc::Abr {
                    max_kbps: a,
                    filler: fa,
                    ..
                },
                Rc::Abr {
                    max_kbps: b,
                    filler: fb,
                    ..
                },
            ) => fa == fb && (*a > 0) == (*b > 0),
            _ => self == other,
        }
    }
}

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

/// What the encoder is opened with (from the initialize params).
#[derive(Debug, Clone)]
pub struct Params {
    /// Coded width.
    pub width: u32,
    /// Coded height.
    pub height: u32,
    /// Frame rate numerator.
    pub fps_num: u32,
    /// Frame rate denominator.
    pub fps_den: u32,
    /// B-frames between anchors (`frameIntervalP - 1`).
    pub bframes: u32,
    /// IDR period in frames; `None` is infinite.
    pub idr_period: Option<u32>,
    /// Rate control.
    pub rc: Rc,
    /// x264 profile name (`baseline`, `main`, `high`), if the client chose one.
    pub profile: Option<&'static str>,
}

/// One input picture: planes inside `data` as (offset, stride), with an x264 colour space.
#[derive(Debug)]
pub struct Picture<'a> {
    /// The pixels.
    pub data: &'a [u8],
    /// x264 colour space (`X264_CSP_I420`, `X264_CSP_YV12`, `X264_CSP_NV12`).
    pub csp: u32,
    /// (offset, stride) of each plane.
    pub planes: Vec<(usize, usize)>,
}

/// One coded picture, in decode order.
#[derive(Debug, Clone)]
pub struct Coded {
    /// Annex B NAL units (SPS/PPS already stripped; the session adds them where NVENC would).
    pub nals: Vec<u8>,
    /// NVENC picture type.
    pub pic_type: u32,
    /// Serial number of the input picture this carries.
    pub serial: u64,
    /// SPS and PPS of the encoder that coded it.
    pub headers: Arc<Vec<u8>>,
    /// The first picture of a (re)opened encoder: its SPS/PPS must precede it.
    pub first: bool,
}

/// libx264 as a continuous stream: reopened (with an IDR) when more pictures follow a drain.
///
/// x264 cannot take new pictures once drained, and it holds `bframes` pictures longer than
/// NVENC's "all pending outputs are ready on SUCCESS" promise allows. A client that locks an
/// output before x264 produced it makes the session drain x264 mid-stream; from then on the
/// stream continues with a fresh encoder without B-frames (zero delay), so no further drains are
/// needed. Clients that lock late (FFmpeg keeps several frames in flight) never trigger this and
/// get real B-frames throughout.
#[derive(Debug)]
pub struct X264Stream {
    params: Params,
    enc: X264,
    headers: Arc<Vec<u8>>,
    drained: bool,
    zero_lag: bool,
    first: bool,
}

impl X264Stream {
    /// Opens the first encoder.
    pub fn open(params: &Params) -> Result<Self, String> {
        let enc = X264::open(params)?;
        Ok(Self {
            headers: Arc::new(enc.headers().to_vec()),
            params: params.clone(),
            enc,
            drained: false,
            zero_lag: false,
            first: true,
        })
    }

    /// SPS/PPS of the current encoder.
    pub fn headers(&self) -> &[u8] {
        &self.headers
    }

    /// Changes the rate control of the running encoder without an IDR (a dynamic bit-rate
    /// change); encoders opened later (after a drain) use it too.
    pub fn reconfigure(&mut self, rc: Rc) -> Result<(), String> {
        self.enc.reconfigure(&rc)?;
        self.params.rc = rc;
        Ok(())
    }

    fn wrap(&mut self, c: Option<(Vec<u8>, u32, u64)>) -> Option<Coded> {
        let (nals, pic_type, serial) = c?;
        let first = std::mem::take(&mut self.first);
        Some(Coded {
            nals,
            pic_type,
            serial,
            headers: self.headers.clone(),
            first,
        })
    }

    /// Feeds one picture; returns what x264 emitted.
    pub fn encode(
        &mut self,
        pic: &Picture<'_>,
        serial: u64,
        force_idr: bool,
    ) -> Result<Option<Coded>, String> {
        let mut force_idr = force_idr;
        if self.drained {
            let mut p = self.params.clone();
            if self.zero_lag {
                p.bframes = 0;
            }
            self.enc = X264::open(&p)?;
            self.headers = Arc::new(self.enc.headers().to_vec());
            self.drained = false;
            self.first = true;
            force_idr = true;
        }
        let c = self.enc.encode(Some((pic, serial, force_idr)))?;
        Ok(self.wrap(c))
    }

    /// Drains one picture; `mid_stream` when the client is not flushing (EOS).
    pub fn drain_one(&mut self, mid_stream: bool) -> Result<Option<Coded>, String> {
        if self.enc.delayed() == 0 {
            return Ok(None);
        }
        self.drained = true;
        self.zero_lag |= mid_stream;
        let c = self.enc.encode(None)?;
        Ok(self.wrap(c))
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
    fn encode(
        &mut self,
        pic: Option<(&Picture<'_>, u64, bool)>,
    ) -> Result<Option<(Vec<u8>, u32, u64)>, String> {
        // SAFETY: all-zero is a valid x264_picture_t; x264_picture_init sets the defaults.
        let mut pin: x::x264_picture_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above; x264 fills the output picture.
        let mut pout: x::x264_picture_t = unsafe { std::mem::zeroed() };
        let pin_ptr = match pic {
            Some((p, serial, force_idr)) => {
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
                pin.i_type = if force_idr {
                    x::X264_TYPE_IDR as c_int
                } else {
                    x::X264_TYPE_AUTO as c_int
                };
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

/// The access unit fast mode emits for every picture: an access unit delimiter and a filler NAL.
pub const FAST_AU: &[u8] = &[
    0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x0c, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x80,
];

/// Fixed SPS/PPS for fast mode (a 16x16 baseline stream description; nothing decodes it).
pub const FAST_HEADERS: &[u8] = &[
    0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x0a, 0xda, 0x0f, 0x88, 0x8c, 0x04, 0x40, 0, 0, 0, 1, 0x68, 0xce,
    0x3c, 0x80,
];
