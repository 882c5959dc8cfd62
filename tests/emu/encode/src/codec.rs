//! The encoders behind the emulated session: libx264 (real, decodable H.264), libx265 (real,
//! decodable HEVC) or a fast stub. This module holds the stream logic (NVENC's frame types, the
//! B-frame replay), the same for both codecs; the encoder handles it drives are [`X264`] and
//! [`X265`], behind [`Coder`].

use std::ffi::c_int;
use std::sync::Arc;

use x264_sys as x;

use crate::x264::X264;
use crate::x265::X265;

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
    /// A short form for the emulator's report, without spaces: `cqp:23`, `crf:18`,
    /// `abr:2000/4000` (average/maximum kbit/s).
    pub fn short(&self) -> String {
        match *self {
            Rc::Cqp(qp) => format!("cqp:{qp}"),
            Rc::Crf(q) => format!("crf:{q}"),
            Rc::Abr { kbps, max_kbps, .. } => format!("abr:{kbps}/{max_kbps}"),
        }
    }

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

/// The codec a session encodes (`NV_ENC_INITIALIZE_PARAMS::encodeGUID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// `NV_ENC_CODEC_H264_GUID`: libx264.
    H264,
    /// `NV_ENC_CODEC_HEVC_GUID`: libx265.
    Hevc,
}

impl Codec {
    /// The name the emulator's report uses.
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::Hevc => "hevc",
        }
    }
}

/// What the encoder is opened with (from the initialize params).
#[derive(Debug, Clone)]
pub struct Params {
    /// Which codec, hence which library.
    pub codec: Codec,
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
    /// x264 profile name (`baseline`, `main`, `high`) or x265 profile name (`main`), if the
    /// client chose one.
    pub profile: Option<&'static str>,
    /// CABAC (`true`) or CAVLC entropy coding.
    pub cabac: bool,
    /// The level the client asked for, in NVENC's numbering (`NV_ENC_LEVEL_H264_41` = 41,
    /// `NV_ENC_LEVEL_HEVC_41` = 123), if any.
    pub level: Option<u32>,
}

/// One libx264 or libx265 encoder, as the stream logic drives it.
#[derive(Debug)]
pub enum Coder {
    /// H.264.
    X264(X264),
    /// HEVC.
    X265(X265),
}

impl Coder {
    /// Opens the encoder of `p.codec`.
    pub fn open(p: &Params) -> Result<Self, String> {
        match p.codec {
            Codec::H264 => X264::open(p).map(Coder::X264),
            Codec::Hevc => X265::open(p).map(Coder::X265),
        }
    }

    /// The parameter sets (SPS/PPS; VPS/SPS/PPS for HEVC), Annex B.
    pub fn headers(&self) -> &[u8] {
        match self {
            Coder::X264(e) => e.headers(),
            Coder::X265(e) => e.headers(),
        }
    }

    /// Changes the rate control in place.
    pub fn reconfigure(&mut self, rc: &Rc) -> Result<(), String> {
        match self {
            Coder::X264(e) => e.reconfigure(rc),
            Coder::X265(e) => e.reconfigure(rc),
        }
    }

    /// Pictures the encoder still holds.
    pub fn delayed(&self) -> usize {
        match self {
            Coder::X264(e) => e.delayed(),
            Coder::X265(e) => e.delayed(),
        }
    }

    /// Feeds one picture with its NVENC picture type, or drains one with `None`: (NAL units
    /// without parameter sets, NVENC picture type, serial) of the picture emitted, if any.
    #[allow(clippy::type_complexity)]
    pub fn encode(
        &mut self,
        pic: Option<(&Picture<'_>, u64, u32)>,
    ) -> Result<Option<(Vec<u8>, u32, u64)>, String> {
        match self {
            Coder::X264(e) => e.encode(pic.map(|(p, s, t)| (p, s, x264_type(t)))),
            Coder::X265(e) => e.encode(pic),
        }
    }
}

fn x264_type(pic_type: u32) -> c_int {
    (match pic_type {
        PIC_IDR => x::X264_TYPE_IDR,
        PIC_B => x::X264_TYPE_B,
        PIC_I => x::X264_TYPE_I,
        _ => x::X264_TYPE_P,
    }) as c_int
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

/// How [`CodedStream`] produces its pictures.
#[derive(Debug)]
enum Mode {
    /// One libx264 encoder fed as pictures arrive. It holds `bframes` pictures longer than NVENC
    /// would (its frame-type decision waits for later input); a client that keeps outputs
    /// unlocked for a while (FFmpeg by default) never notices.
    Live(Coder),
    /// A client locked an output that the live encoder had not produced: each time outputs are
    /// needed, a fresh encoder re-encodes the kept pictures from their GOP's IDR up to the last
    /// anchor and is drained. libx264 is deterministic for the same input and frame types, so a
    /// replay reproduces the pictures already handed out (checked, byte for byte) and adds the
    /// new ones.
    Replay,
    /// The fallback where a replay cannot reproduce what was handed out (a rate control that
    /// carries state across GOPs, or a GOP past [`REPLAY_LIMIT_BYTES`]): a fresh encoder without
    /// B-frames, starting with an IDR and new SPS/PPS.
    ZeroLag(Coder),
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
pub struct CodedStream {
    params: Params,
    mode: Mode,
    headers: Arc<Vec<u8>>,
    first: bool,
    /// Pictures from the IDR of the oldest GOP not yet all handed out (only with B-frames).
    history: Vec<Held>,
    history_bytes: usize,
    /// Whether `history` holds every such picture (false once it overflowed).
    history_complete: bool,
    /// The decode index (serial) of the next picture to hand out: the first serial fed plus the
    /// pictures handed out since.
    emitted: u64,
    /// Whether a picture was fed yet: the first one's serial is where `emitted` starts (an
    /// encoder reopened mid-session starts at that session's next serial, not 0).
    started: bool,
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

impl CodedStream {
    /// Opens the first encoder.
    pub fn open(params: &Params) -> Result<Self, String> {
        let enc = Coder::open(params)?;
        Ok(Self {
            headers: Arc::new(enc.headers().to_vec()),
            params: params.clone(),
            mode: Mode::Live(enc),
            first: true,
            history: Vec::new(),
            history_bytes: 0,
            history_complete: true,
            emitted: 0,
            started: false,
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
        if !self.started {
            self.started = true;
            self.emitted = serial;
        }
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
            Mode::Live(enc) => enc.encode(Some((pic, serial, pic_type)))?,
            Mode::ZeroLag(enc) => {
                let t = if pic_type == PIC_IDR || std::mem::take(&mut self.idr_next) {
                    PIC_IDR
                } else {
                    PIC_P
                };
                enc.encode(Some((pic, serial, t)))?
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
        let mut enc = Coder::open(&self.params)?;
        let mut coded = Vec::new();
        for h in &self.history[..end] {
            let pic = h.picture();
            if let Some(c) = enc.encode(Some((&pic, h.serial, h.pic_type)))? {
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
        let mut enc = Coder::open(&p)?;
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
            if let Some(c) = enc.encode(Some((&pic, h.serial, t)))? {
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

/// The access unit fast mode emits for every picture: an access unit delimiter and a filler NAL.
pub const FAST_AU: &[u8] = &[
    0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x0c, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x80,
];

/// Fixed SPS/PPS for fast mode (a 16x16 baseline stream description; nothing decodes it).
pub const FAST_HEADERS: &[u8] = &[
    0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x0a, 0xda, 0x0f, 0x88, 0x8c, 0x04, 0x40, 0, 0, 0, 1, 0x68, 0xce,
    0x3c, 0x80,
];
