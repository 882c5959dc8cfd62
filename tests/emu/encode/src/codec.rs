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
    /// CABAC (`true`) or CAVLC entropy coding.
    pub cabac: bool,
    /// `level_idc` the client asked for (41 for 4.1), if any.
    pub level: Option<u32>,
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

/// A picture kept for a replay: its pixels, layout, serial and NVENC picture type.
#[derive(Debug)]
struct Held {
    data: Vec<u8>,
    csp: u32,
    planes: Vec<(usize, usize)>,
    serial: u64,
    pic_type: u32,
}

impl Held {
    fn picture(&self) -> Picture<'_> {
        Picture {
            data: &self.data,
            csp: self.csp,
            planes: self.planes.clone(),
        }
    }
}

/// How [`X264Stream`] produces its pictures.
#[derive(Debug)]
enum Mode {
    /// One libx264 encoder fed as pictures arrive. It holds `bframes` pictures longer than NVENC
    /// would (its frame-type decision waits for later input); a client that keeps outputs
    /// unlocked for a while (FFmpeg by default) never notices.
    Live(X264),
    /// A client locked an output that the live encoder had not produced: each time outputs are
    /// needed, a fresh encoder re-encodes the kept pictures from their GOP's IDR up to the last
    /// anchor and is drained. libx264 is deterministic for the same input and frame types, so a
    /// replay reproduces the pictures already handed out (checked, byte for byte) and adds the
    /// new ones.
    Replay,
    /// The fallback where a replay cannot reproduce what was handed out (a rate control that
    /// carries state across GOPs, or a GOP past [`REPLAY_LIMIT_BYTES`]): a fresh encoder without
    /// B-frames, starting with an IDR and new SPS/PPS.
    ZeroLag(X264),
}

/// The most pixel data kept for replays (then [`Mode::ZeroLag`] takes over).
const REPLAY_LIMIT_BYTES: usize = 256 << 20;

/// libx264 behind NVENC's B-frame contract: with `frameIntervalP > 1`, pictures held for
/// reordering return `NV_ENC_ERR_NEED_MORE_INPUT`, and once a submission returns
/// `NV_ENC_SUCCESS` every pending output can be locked at once (nvEncodeAPI.h 11.1,
/// `NV_ENC_ERR_NEED_MORE_INPUT`), whatever the client's read-back pattern. Frame types are forced
/// to the session's NVENC pattern, so x264's stream has NVENC's structure, and a client that
/// locks each output as soon as it may still gets real B-frames (see [`Mode`]).
#[derive(Debug)]
pub struct X264Stream {
    params: Params,
    mode: Mode,
    headers: Arc<Vec<u8>>,
    first: bool,
    /// Pictures from the IDR of the oldest GOP not yet all handed out (only with B-frames).
    history: Vec<Held>,
    history_bytes: usize,
    /// Whether `history` holds every such picture (false once it overflowed).
    history_complete: bool,
    /// Coded pictures handed out, in decode order.
    emitted: u64,
    /// Decode index (= serial) of `history[0]`, an IDR: every picture before it decodes before it.
    base: u64,
    /// (serial, digest) of the pictures handed out since `base`, in decode order, to check
    /// replays against.
    handed: Vec<(u64, u64)>,
    /// The next picture of a zero-lag restart must be an IDR.
    idr_next: bool,
}

fn digest(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn x264_type(pic_type: u32) -> c_int {
    (match pic_type {
        PIC_IDR => x::X264_TYPE_IDR,
        PIC_B => x::X264_TYPE_B,
        PIC_I => x::X264_TYPE_I,
        _ => x::X264_TYPE_P,
    }) as c_int
}

impl X264Stream {
    /// Opens the first encoder.
    pub fn open(params: &Params) -> Result<Self, String> {
        let enc = X264::open(params)?;
        Ok(Self {
            headers: Arc::new(enc.headers().to_vec()),
            params: params.clone(),
            mode: Mode::Live(enc),
            first: true,
            history: Vec::new(),
            history_bytes: 0,
            history_complete: true,
            emitted: 0,
            base: 0,
            handed: Vec::new(),
            idr_next: false,
        })
    }

    /// SPS/PPS of the current encoder.
    pub fn headers(&self) -> &[u8] {
        &self.headers
    }

    /// Changes the rate control of the running encoder without an IDR (a dynamic bit-rate
    /// change); encoders opened later (a replay, a zero-lag restart) use it too. A replay that
    /// re-encodes pictures handed out before the change cannot reproduce them and falls back to
    /// the zero-lag restart, as for any rate control that carries state across pictures.
    pub fn reconfigure(&mut self, rc: Rc) -> Result<(), String> {
        match &mut self.mode {
            Mode::Live(enc) | Mode::ZeroLag(enc) => enc.reconfigure(&rc)?,
            Mode::Replay => {}
        }
        self.params.rc = rc;
        Ok(())
    }

    /// Wraps what an encoder emitted and counts it as handed out.
    fn wrap(&mut self, c: (Vec<u8>, u32, u64)) -> Coded {
        let (nals, pic_type, serial) = c;
        let first = std::mem::take(&mut self.first);
        self.emitted += 1;
        if self.params.bframes > 0 {
            self.handed.push((serial, digest(&nals)));
        }
        Coded {
            nals,
            pic_type,
            serial,
            headers: self.headers.clone(),
            first,
        }
    }

    /// Drops the GOPs whose pictures have all been handed out.
    fn trim(&mut self) {
        let emitted = self.emitted;
        let Some(i) = self
            .history
            .iter()
            .rposition(|h| h.pic_type == PIC_IDR && h.serial <= emitted)
        else {
            return;
        };
        if i == 0 {
            return;
        }
        let new_base = self.history[i].serial;
        let drop = ((new_base - self.base) as usize).min(self.handed.len());
        self.handed.drain(..drop);
        self.history_bytes -= self.history[..i]
            .iter()
            .map(|h| h.data.len())
            .sum::<usize>();
        self.history.drain(..i);
        self.base = new_base;
    }

    /// Feeds one picture with NVENC's picture type for it (`PIC_IDR`, `PIC_P` or `PIC_B`);
    /// returns what was coded, if anything.
    pub fn encode(
        &mut self,
        pic: &Picture<'_>,
        serial: u64,
        pic_type: u32,
    ) -> Result<Vec<Coded>, String> {
        let mut out = Vec::new();
        if self.params.bframes > 0 && self.history_complete {
            if self.history.is_empty() {
                self.base = serial;
            }
            self.history_bytes += pic.data.len();
            self.history.push(Held {
                data: pic.data.to_vec(),
                csp: pic.csp,
                planes: pic.planes.clone(),
                serial,
                pic_type,
            });
            if self.history_bytes > REPLAY_LIMIT_BYTES {
                if let Mode::Replay = self.mode {
                    // Code what is kept now, while it is still there.
                    return self.restart();
                }
                self.history.clear();
                self.history_bytes = 0;
                self.history_complete = false;
            }
        }
        let c = match &mut self.mode {
            Mode::Live(enc) => enc.encode(Some((pic, serial, x264_type(pic_type))))?,
            Mode::ZeroLag(enc) => {
                let t = if pic_type == PIC_IDR || std::mem::take(&mut self.idr_next) {
                    PIC_IDR
                } else {
                    PIC_P
                };
                enc.encode(Some((pic, serial, x264_type(t))))?
            }
            Mode::Replay => None,
        };
        if let Some(c) = c {
            out.push(self.wrap(c));
        }
        self.trim();
        Ok(out)
    }

    /// Every coded picture the pictures submitted up to the last anchor give that has not been
    /// handed out yet, in decode order: what NVENC has ready once a submission returned
    /// `NV_ENC_SUCCESS`. Called when a client locks an output the live encoder has not produced.
    pub fn catch_up(&mut self) -> Result<Vec<Coded>, String> {
        if let Mode::ZeroLag(_) = self.mode {
            // Zero delay: everything fed was coded at once.
            return Ok(Vec::new());
        }
        let last_anchor = self.history.iter().rposition(|h| h.pic_type != PIC_B);
        match (self.history_complete, last_anchor) {
            (true, Some(end)) => match self.produce(end + 1)? {
                Some(out) => {
                    self.mode = Mode::Replay;
                    Ok(out)
                }
                None => self.restart(),
            },
            _ => self.restart(),
        }
    }

    /// End of stream: every picture fed is coded and handed out.
    pub fn finish(&mut self) -> Result<Vec<Coded>, String> {
        if let Mode::Replay = self.mode {
            return match self.produce(self.history.len())? {
                Some(out) => Ok(out),
                None => self.restart(),
            };
        }
        let mut raw = Vec::new();
        if let Mode::Live(enc) | Mode::ZeroLag(enc) = &mut self.mode {
            while enc.delayed() > 0 {
                match enc.encode(None)? {
                    Some(c) => raw.push(c),
                    None => break,
                }
            }
        }
        Ok(raw.into_iter().map(|c| self.wrap(c)).collect())
    }

    /// Replays `history[..end]` GOP by GOP (each from a fresh encoder at its IDR) and returns
    /// what was not handed out yet; `None` when a replay does not reproduce what was.
    fn produce(&mut self, mut end: usize) -> Result<Option<Vec<Coded>>, String> {
        let mut out = Vec::new();
        loop {
            let next_idr = self.history[..end]
                .iter()
                .skip(1)
                .position(|h| h.pic_type == PIC_IDR)
                .map(|i| i + 1);
            let seg = next_idr.unwrap_or(end);
            match self.replay(seg)? {
                Some(c) => out.extend(c),
                None => return Ok(None),
            }
            let Some(i) = next_idr else {
                return Ok(Some(out));
            };
            // The GOP before history[i] is all handed out now.
            if self.emitted != self.history[i].serial {
                return Ok(None);
            }
            self.trim();
            end -= i;
        }
    }

    /// Re-encodes `history[..end]` with a fresh encoder and drains it; checks that what it gives
    /// for the pictures already handed out is the same bytes, and hands out the rest. `None` when
    /// the check fails.
    fn replay(&mut self, end: usize) -> Result<Option<Vec<Coded>>, String> {
        let mut enc = X264::open(&self.params)?;
        let mut coded = Vec::new();
        for h in &self.history[..end] {
            let pic = h.picture();
            if let Some(c) = enc.encode(Some((&pic, h.serial, x264_type(h.pic_type))))? {
                coded.push(c);
            }
        }
        while enc.delayed() > 0 {
            match enc.encode(None)? {
                Some(c) => coded.push(c),
                None => break,
            }
        }
        let done = self.handed.len();
        let same = coded.len() >= done
            && coded
                .iter()
                .zip(&self.handed)
                .all(|(c, &(serial, d))| c.2 == serial && digest(&c.0) == d);
        if !same {
            return Ok(None);
        }
        Ok(Some(
            coded.into_iter().skip(done).map(|c| self.wrap(c)).collect(),
        ))
    }

    /// The fallback: a fresh encoder without B-frames (zero delay) codes every picture that has
    /// not been handed out, starting with an IDR (and new SPS/PPS).
    fn restart(&mut self) -> Result<Vec<Coded>, String> {
        let mut raw = Vec::new();
        if !self.history_complete {
            // The pictures are only inside the live encoder: drain it.
            if let Mode::Live(enc) = &mut self.mode {
                while enc.delayed() > 0 {
                    match enc.encode(None)? {
                        Some(c) => raw.push(c),
                        None => break,
                    }
                }
            }
        }
        let mut out: Vec<Coded> = raw.into_iter().map(|c| self.wrap(c)).collect();
        let mut p = self.params.clone();
        p.bframes = 0;
        let mut enc = X264::open(&p)?;
        self.headers = Arc::new(enc.headers().to_vec());
        self.first = true;
        self.idr_next = true;
        let pending = std::mem::take(&mut self.history);
        let mut coded = Vec::new();
        let handed: Vec<u64> = self.handed.iter().map(|&(serial, _)| serial).collect();
        for h in pending.iter().filter(|h| !handed.contains(&h.serial)) {
            let t = if std::mem::take(&mut self.idr_next) {
                PIC_IDR
            } else {
                PIC_P
            };
            let pic = h.picture();
            if let Some(c) = enc.encode(Some((&pic, h.serial, x264_type(t))))? {
                coded.push(c);
            }
        }
        self.params.bframes = 0;
        self.history_bytes = 0;
        self.handed.clear();
        out.extend(coded.into_iter().map(|c| self.wrap(c)));
        self.mode = Mode::ZeroLag(enc);
        Ok(out)
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
    fn encode(
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

/// The access unit fast mode emits for every picture: an access unit delimiter and a filler NAL.
pub const FAST_AU: &[u8] = &[
    0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x0c, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x80,
];

/// Fixed SPS/PPS for fast mode (a 16x16 baseline stream description; nothing decodes it).
pub const FAST_HEADERS: &[u8] = &[
    0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x0a, 0xda, 0x0f, 0x88, 0x8c, 0x04, 0x40, 0, 0, 0, 1, 0x68, 0xce,
    0x3c, 0x80,
];
