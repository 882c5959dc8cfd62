//! One libx265 encoder behind the emulated hardware's HEVC: its parameters (including rate
//! control), the FFI calls that encode a picture, and the NAL units it returns. The counterpart
//! of [`crate::x264::X264`], driven by the same stream logic (`codec`).
//!
//! libx265 is reached through its `x265_api` table (`x265_api_get(8)`, as `x265.h` recommends);
//! every option is set with `param_parse`, x265's own option names (`x265 --help`), so no field
//! of `x265_param` is written directly.

use std::ffi::{c_int, CString};
use std::ptr::{self, NonNull};
use std::sync::OnceLock;

use nvencode_x265_sys as x;

use crate::codec::{Params, Picture, Rc, PIC_B, PIC_I, PIC_IDR, PIC_P};

/// HEVC NAL unit types the session adds itself (ITU-T H.265 Table 7-1): VPS, SPS, PPS.
const NAL_VPS: u32 = 32;
const NAL_SPS: u32 = 33;
const NAL_PPS: u32 = 34;

/// libx265's 8-bit API table, loaded once.
fn api() -> Result<&'static x::x265_api, String> {
    struct Api(&'static x::x265_api);
    // SAFETY: the table is immutable data and function pointers, valid for the process.
    unsafe impl Send for Api {}
    // SAFETY: as above; nothing in it is ever written.
    unsafe impl Sync for Api {}
    static API: OnceLock<Option<Api>> = OnceLock::new();
    API.get_or_init(|| {
        // SAFETY: x265_api_get takes a bit depth and returns a pointer to a static table, or
        // NULL where this libx265 has no such build.
        let p = unsafe { x::x265_api_get(8) };
        // SAFETY: non-null results point at libx265's static table, valid until exit.
        (!p.is_null()).then(|| Api(unsafe { &*p }))
    })
    .as_ref()
    .map(|a| a.0)
    .ok_or_else(|| "libx265 has no 8-bit build (x265_api_get(8) returned NULL)".to_owned())
}

fn missing(name: &str) -> String {
    format!("libx265's API table has no {name}")
}

/// An allocated `x265_param`, freed on drop.
struct Param {
    api: &'static x::x265_api,
    p: NonNull<x::x265_param>,
}

impl Param {
    fn new(api: &'static x::x265_api) -> Result<Self, String> {
        let alloc = api.param_alloc.ok_or_else(|| missing("param_alloc"))?;
        // SAFETY: param_alloc returns a fresh parameter set or NULL.
        let p = NonNull::new(unsafe { alloc() }).ok_or("x265 param_alloc failed")?;
        Ok(Self { api, p })
    }

    fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let parse = self.api.param_parse.ok_or_else(|| missing("param_parse"))?;
        let (n, v) = (
            CString::new(name).map_err(|e| e.to_string())?,
            CString::new(value).map_err(|e| e.to_string())?,
        );
        // SAFETY: `p` is a live parameter set; both strings are NUL-terminated and outlive the
        // call.
        match unsafe { parse(self.p.as_ptr(), n.as_ptr(), v.as_ptr()) } {
            0 => Ok(()),
            e => Err(format!(
                "x265 rejects {name}={value} (param_parse returned {e})"
            )),
        }
    }
}

impl Drop for Param {
    fn drop(&mut self) {
        if let Some(free) = self.api.param_free {
            // SAFETY: `p` came from param_alloc and is freed exactly once.
            unsafe { free(self.p.as_ptr()) };
        }
    }
}

/// Writes the rate-control options (x265's CLI names).
fn apply_rc(param: &mut Param, rc: &Rc) -> Result<(), String> {
    match *rc {
        Rc::Cqp(qp) => param.set("qp", &qp.min(51).to_string()),
        Rc::Crf(q) => param.set("crf", &q.to_string()),
        Rc::Abr {
            kbps,
            max_kbps,
            vbv_kbit,
            vbv_init,
            filler,
        } => {
            param.set("bitrate", &kbps.max(1).to_string())?;
            if max_kbps > 0 {
                param.set("vbv-maxrate", &max_kbps.to_string())?;
                // As for x264: vbvBufferSize 0 is one second at the maximum rate.
                let buf = if vbv_kbit > 0 { vbv_kbit } else { max_kbps };
                param.set("vbv-bufsize", &buf.to_string())?;
                if vbv_init > 0.0 {
                    param.set("vbv-init", &vbv_init.to_string())?;
                }
                if filler {
                    param.set("filler", "1")?;
                }
            }
            Ok(())
        }
    }
}

fn x265_type(pic_type: u32) -> c_int {
    (match pic_type {
        PIC_IDR => x::X265_TYPE_IDR,
        PIC_B => x::X265_TYPE_B,
        PIC_I => x::X265_TYPE_I,
        _ => x::X265_TYPE_P,
    }) as c_int
}

fn pic_type(t: c_int) -> u32 {
    match t as u32 {
        x::X265_TYPE_IDR => PIC_IDR,
        x::X265_TYPE_I => PIC_I,
        x::X265_TYPE_B | x::X265_TYPE_BREF => PIC_B,
        _ => PIC_P,
    }
}

/// libx265 behind the emulated hardware.
pub struct X265 {
    api: &'static x::x265_api,
    enc: NonNull<x::x265_encoder>,
    headers: Vec<u8>,
    width: usize,
    height: usize,
    /// Pictures fed and not yet returned (x265 has no call that says).
    delayed: usize,
}

impl std::fmt::Debug for X265 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X265")
            .field("delayed", &self.delayed)
            .finish_non_exhaustive()
    }
}

// SAFETY: an x265_encoder may be used from any thread as long as calls are not concurrent; the
// session owning this value sits behind the emulator's global mutex.
unsafe impl Send for X265 {}

/// (type, payload) of each NAL unit x265 returned.
fn nal_units(nals: *mut x::x265_nal, count: u32) -> Vec<(u32, &'static [u8])> {
    let mut out = Vec::new();
    for i in 0..count as usize {
        // SAFETY: x265 returned `count` NAL descriptors at `nals`, valid until its next call on
        // this encoder; the caller copies the payloads before calling it again.
        let n = unsafe { &*nals.wrapping_add(i) };
        // SAFETY: each descriptor's payload is `sizeBytes` initialised bytes owned by x265.
        let bytes = unsafe { std::slice::from_raw_parts(n.payload, n.sizeBytes as usize) };
        out.push((n.type_, bytes));
    }
    out
}

impl X265 {
    /// Opens libx265 with settings that keep the GOP structure predictable and the output
    /// deterministic (one thread, no lookahead decisions, fixed B-frame pattern).
    pub fn open(p: &Params) -> Result<Self, String> {
        let api = api()?;
        let mut param = Param::new(api)?;
        let preset = api
            .param_default_preset
            .ok_or_else(|| missing("param_default_preset"))?;
        // Without B-frames, x265's zero-latency tuning: every picture comes out of the call
        // that fed it, as NVENC's does.
        let tune = if p.bframes == 0 {
            c"zerolatency".as_ptr()
        } else {
            ptr::null()
        };
        // SAFETY: `param` is live; the preset and tune names are NUL-terminated literals (or
        // NULL).
        if unsafe { preset(param.p.as_ptr(), c"ultrafast".as_ptr(), tune) } < 0 {
            return Err("x265 param_default_preset failed".into());
        }
        let keyint = p
            .idr_period
            .map_or("-1".to_owned(), |k| k.max(1).to_string());
        let options = [
            ("log-level", "none".to_owned()),
            ("input-res", format!("{}x{}", p.width, p.height)),
            ("input-csp", "i420".to_owned()),
            ("fps", format!("{}/{}", p.fps_num, p.fps_den)),
            // One thread, no frame parallelism: the same input gives the same bytes (replays).
            ("pools", "none".to_owned()),
            ("frame-threads", "1".to_owned()),
            ("wpp", "0".to_owned()),
            ("lookahead-slices", "0".to_owned()),
            ("bframes", p.bframes.to_string()),
            ("b-adapt", "0".to_owned()),
            ("b-pyramid", "0".to_owned()),
            ("scenecut", "0".to_owned()),
            // No lookahead beyond what the B-frames need (x265 wants a depth larger than the
            // B-frame run); none without B-frames (the zero-latency tuning).
            (
                "rc-lookahead",
                if p.bframes > 0 { p.bframes + 1 } else { 0 }.to_string(),
            ),
            ("cutree", "0".to_owned()),
            ("keyint", keyint),
            ("open-gop", "0".to_owned()),
            ("repeat-headers", "0".to_owned()),
            ("annexb", "1".to_owned()),
            ("aud", "0".to_owned()),
            ("info", "0".to_owned()),
        ];
        for (name, value) in &options {
            param.set(name, value)?;
        }
        apply_rc(&mut param, &p.rc)?;
        if p.rc == Rc::Cqp(0) {
            // Constant QP 0 is how NVENC is asked for lossless coding (the lossless tuning's
            // preset); QP 0 is not lossless in HEVC, x265's lossless mode is.
            param.set("lossless", "1")?;
        }
        if let Some(level) = p.level {
            // NV_ENC_LEVEL_HEVC_* is 30 x the level (NV_ENC_LEVEL_HEVC_41 = 123); x265 takes
            // "4.1".
            param.set("level-idc", &format!("{:.1}", f64::from(level) / 30.0))?;
        }
        if let Some(profile) = p.profile {
            let apply = api
                .param_apply_profile
                .ok_or_else(|| missing("param_apply_profile"))?;
            let name = CString::new(profile).map_err(|e| e.to_string())?;
            // SAFETY: `param` is live; `name` is NUL-terminated and outlives the call.
            if unsafe { apply(param.p.as_ptr(), name.as_ptr()) } < 0 {
                return Err(format!("x265 rejects profile {profile}"));
            }
        }
        let open = api.encoder_open.ok_or_else(|| missing("encoder_open"))?;
        // SAFETY: `param` is a complete parameter set; x265 copies it.
        let enc =
            NonNull::new(unsafe { open(param.p.as_ptr()) }).ok_or("x265 encoder_open failed")?;
        let mut this = Self {
            api,
            enc,
            headers: Vec::new(),
            width: p.width as usize,
            height: p.height as usize,
            delayed: 0,
        };
        let headers = api
            .encoder_headers
            .ok_or_else(|| missing("encoder_headers"))?;
        let mut nals: *mut x::x265_nal = ptr::null_mut();
        let mut count: u32 = 0;
        // SAFETY: `enc` is live; the out-pointers are writable.
        if unsafe { headers(enc.as_ptr(), &mut nals, &mut count) } < 0 {
            return Err("x265 encoder_headers failed".into());
        }
        for (t, bytes) in nal_units(nals, count) {
            if matches!(t, NAL_VPS | NAL_SPS | NAL_PPS) {
                this.headers.extend_from_slice(bytes);
            }
        }
        Ok(this)
    }

    /// VPS, SPS and PPS, Annex B.
    pub fn headers(&self) -> &[u8] {
        &self.headers
    }

    /// Changes the rate control in place (`x265_encoder_reconfig`, which takes the bit rate,
    /// VBV and CRF of a running encoder); the caller checked [`Rc::reconfigurable_to`].
    pub fn reconfigure(&mut self, rc: &Rc) -> Result<(), String> {
        let mut param = Param::new(self.api)?;
        let read = self
            .api
            .encoder_parameters
            .ok_or_else(|| missing("encoder_parameters"))?;
        // SAFETY: `enc` is live; `param` is a writable parameter set.
        unsafe { read(self.enc.as_ptr(), param.p.as_ptr()) };
        apply_rc(&mut param, rc)?;
        let reconfig = self
            .api
            .encoder_reconfig
            .ok_or_else(|| missing("encoder_reconfig"))?;
        // SAFETY: `enc` is live; `param` is this encoder's own parameter set, changed.
        let ret = unsafe { reconfig(self.enc.as_ptr(), param.p.as_ptr()) };
        if ret < 0 {
            return Err(format!("x265 encoder_reconfig returned {ret}"));
        }
        Ok(())
    }

    /// Pictures x265 still holds.
    pub fn delayed(&self) -> usize {
        self.delayed
    }

    /// The picture as separate I420 planes (x265 reads 8-bit 4:2:0 as three planes).
    fn i420(&self, p: &Picture<'_>) -> Result<Vec<u8>, String> {
        let (w, h) = (self.width, self.height);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut out = Vec::with_capacity(w * h + 2 * cw * ch);
        let get = |off: usize, len: usize| {
            p.data
                .get(off..off + len)
                .ok_or_else(|| "plane outside the input".to_owned())
        };
        let &(y_off, y_stride) = p.planes.first().ok_or("no luma plane")?;
        for r in 0..h {
            out.extend_from_slice(get(y_off + r * y_stride, w)?);
        }
        if p.csp == x264_sys::X264_CSP_NV12 {
            let &(uv_off, uv_stride) = p.planes.get(1).ok_or("no chroma plane")?;
            let mut v = Vec::with_capacity(cw * ch);
            for r in 0..ch {
                let row = get(uv_off + r * uv_stride, 2 * cw)?;
                out.extend(row.iter().step_by(2));
                v.extend(row.iter().skip(1).step_by(2));
            }
            out.extend_from_slice(&v);
        } else {
            // I420 is Y U V; YV12 is Y V U.
            let order = if p.csp == x264_sys::X264_CSP_YV12 {
                [2, 1]
            } else {
                [1, 2]
            };
            for k in order {
                let &(off, stride) = p.planes.get(k).ok_or("missing chroma plane")?;
                for r in 0..ch {
                    out.extend_from_slice(get(off + r * stride, cw)?);
                }
            }
        }
        Ok(out)
    }

    /// Feeds one picture with NVENC's picture type (or drains one with `None`); returns (NAL
    /// units without VPS/SPS/PPS, NVENC picture type, serial) of the picture x265 emitted, if
    /// any.
    #[allow(clippy::type_complexity)]
    pub(crate) fn encode(
        &mut self,
        pic: Option<(&Picture<'_>, u64, u32)>,
    ) -> Result<Option<(Vec<u8>, u32, u64)>, String> {
        let init = self
            .api
            .picture_init
            .ok_or_else(|| missing("picture_init"))?;
        let encode = self
            .api
            .encoder_encode
            .ok_or_else(|| missing("encoder_encode"))?;
        let param = Param::new(self.api)?;
        let read = self
            .api
            .encoder_parameters
            .ok_or_else(|| missing("encoder_parameters"))?;
        // SAFETY: `enc` is live; `param` is writable.
        unsafe { read(self.enc.as_ptr(), param.p.as_ptr()) };
        // SAFETY: all-zero is a valid x265_picture (integers, nullable pointers);
        // picture_init fills in the defaults.
        let mut pin: x::x265_picture = unsafe { std::mem::zeroed() };
        // SAFETY: as above; x265 fills the output picture.
        let mut pout: x::x265_picture = unsafe { std::mem::zeroed() };
        // SAFETY: `param` is this encoder's parameter set; both pictures are writable.
        unsafe { init(param.p.as_ptr(), &mut pout) };
        let planes;
        let pin_ptr = match pic {
            Some((p, serial, nvenc_type)) => {
                planes = self.i420(p)?;
                // SAFETY: as above.
                unsafe { init(param.p.as_ptr(), &mut pin) };
                let (w, h) = (self.width, self.height);
                let cw = w.div_ceil(2);
                let ysize = w * h;
                let csize = cw * h.div_ceil(2);
                let base = planes.as_ptr().cast_mut();
                pin.planes = [
                    base.cast(),
                    base.wrapping_add(ysize).cast(),
                    base.wrapping_add(ysize + csize).cast(),
                ];
                pin.stride = [w as c_int, cw as c_int, cw as c_int];
                pin.bitDepth = 8;
                pin.colorSpace = x::X265_CSP_I420 as c_int;
                pin.pts = serial as i64;
                // The session's NVENC picture type, so x265's stream has NVENC's structure.
                pin.sliceType = x265_type(nvenc_type);
                &mut pin as *mut x::x265_picture
            }
            None => ptr::null_mut(),
        };
        let mut nals: *mut x::x265_nal = ptr::null_mut();
        let mut count: u32 = 0;
        // SAFETY: `enc` is live; `pin_ptr` is NULL or a picture whose planes point into
        // `planes` (sized for the whole frame above, alive until the call returns; x265 copies
        // the pixels); the out-pointers are writable.
        let got = unsafe { encode(self.enc.as_ptr(), &mut nals, &mut count, pin_ptr, &mut pout) };
        if got < 0 {
            return Err(format!("x265 encoder_encode returned {got}"));
        }
        if !pin_ptr.is_null() {
            self.delayed += 1;
        }
        if got == 0 || count == 0 {
            if pin_ptr.is_null() {
                // Drained.
                self.delayed = 0;
            }
            return Ok(None);
        }
        self.delayed = self.delayed.saturating_sub(1);
        let mut out = Vec::new();
        for (t, bytes) in nal_units(nals, count) {
            if !matches!(t, NAL_VPS | NAL_SPS | NAL_PPS) {
                out.extend_from_slice(bytes);
            }
        }
        Ok(Some((out, pic_type(pout.sliceType), pout.pts as u64)))
    }
}

impl Drop for X265 {
    fn drop(&mut self) {
        if let Some(close) = self.api.encoder_close {
            // SAFETY: `enc` is a live encoder owned by `self`, closed exactly once.
            unsafe { close(self.enc.as_ptr()) };
        }
    }
}
