//! A software stand-in for NVIDIA's `libnvidia-encode` (NVENC API 11.1, H.264 only), for tests on
//! machines without NVENC.
//!
//! **Test infrastructure, not product.** Tests copy this cdylib into a fresh folder as
//! `libnvidia-encode.so.1` (next to the emulated `libcuda.so.1`) and start a child process with
//! `LD_LIBRARY_PATH` pointing there (see `nvenc-emu-harness`), so the production loader
//! (`nvenc_sys::load`) and third-party clients such as FFmpeg's `h264_nvenc` load it unchanged.
//!
//! # What is emulated
//!
//! The two exports, `NvEncodeAPIGetMaxSupportedVersion` and `NvEncodeAPICreateInstance`, and every
//! entry of `NV_ENCODE_API_FUNCTION_LIST`: sessions on a CUDA context, codec/profile/preset/format
//! queries, caps, P1..P7 preset configs, initialization, input buffers (lock/unlock), bitstream
//! buffers, registration and mapping of CUDA device memory, encoding with NVENC's B-frame
//! signalling (`NV_ENC_ERR_NEED_MORE_INPUT` while B-frames are buffered, `NV_ENC_SUCCESS` when the
//! anchor arrives; outputs are locked in submission order), EOS flush, SPS/PPS retrieval,
//! reconfiguration, encode stats and per-session last-error strings. Async mode, motion-estimation
//! only mode, CUDA arrays and D3D/OpenGL resources are not emulated (`NV_ENC_ERR_UNIMPLEMENTED`).
//!
//! The caps are those of a recent consumer GPU for H.264 (temporal AQ, B-frames as reference,
//! weighted prediction, intra refresh, constrained encoding and dynamic slices are reported as
//! supported so clients can enable them); those features are accepted but not reproduced by the
//! software encoder. YUV 4:4:4, 10-bit, LTR, async and ME-only are reported unsupported; lossless
//! is reported unsupported unless `NVENC_EMU_LOSSLESS=1`, and then coded losslessly (x264 at QP 0).
//!
//! Pixels are read through the CUDA driver API (`dlopen("libcuda.so.1")`: context push,
//! `cuMemcpyDtoH_v2`, `cuPointerGetAttribute`), so this library also runs on top of a *real*
//! libcuda. They are encoded by libx264 (one thread, fixed B-frame pattern, no lookahead) into a
//! real, decodable H.264 stream; every output buffer receives the next picture x264 emits in
//! decode order, with the picture type and timestamp of the picture it carries. Frame types are
//! forced to NVENC's pattern (IDR, then anchors every `frameIntervalP` pictures with B-pictures
//! between), so the stream has NVENC's structure. x264 holds `frameIntervalP - 1` pictures longer
//! than NVENC would; a client that keeps outputs unlocked for a while (FFmpeg by default) never
//! notices. A client that locks an output as soon as a submission returned `NV_ENC_SUCCESS`
//! (which the header allows) gets it all the same: the emulator re-encodes the GOP so far with a
//! fresh x264 and drains it (x264 is deterministic, so the replay reproduces what was already
//! handed out; that is checked byte for byte), and the stream keeps its B-frames. Only where a
//! replay could not reproduce it (a rate control that carries state across GOPs, after a first
//! GOP read back lazily) does the stream continue with a fresh x264 without B-frames, starting
//! with an IDR that carries new SPS/PPS; the stream stays valid either way, and each output's type
//! and timestamp are those of the picture it actually carries.
//! `NVENC_EMU_FAST=1` skips reading and encoding: every output is a fixed 20-byte access unit, and
//! the order and types follow NVENC's pattern exactly (anchor first, then its B-pictures).
//!
//! # What is validated (a violation returns the real driver's status and is recorded)
//!
//! Struct `version` words (`NV_ENC_ERR_INVALID_VERSION`); reserved fields and reserved bit-fields
//! zero (`NV_ENC_ERR_INVALID_PARAM`); handles live and owned by the session; call order
//! (initialize once, before buffers and encoding); sizes within the reported caps; listed presets
//! only (P1..P7 and the header's deprecated presets, mapped to a P preset and tuning); lossless
//! only where the lossless cap is 1; `enableEncodeAsync = 0`; `frameIntervalP - 1` within `NUM_MAX_BFRAMES`;
//! registered CUDA memory is a live device allocation with `pitch >= width`, pitch a multiple of
//! 4 and `pitch * rows` inside the allocation; only registered resources are mapped, only mapped
//! ones unmapped, none unregistered while mapped; encode input mapped (or an unlocked input
//! buffer), not in flight, with width/height/pitch/format equal to its registration; output
//! buffer not already pending; `FORCEIDR` only with `enablePTD`; outputs locked in submission
//! order, only once their frame is ready, never a buffer that was not submitted; unmap only after
//! the frame's output was locked; teardown with no live buffers, registrations or mappings.
//!
//! # Environment
//!
//! | Variable | Meaning |
//! |---|---|
//! | `NVENC_EMU_FAULTS` | `entry:N:status,...`: the `N`th call of `entry` (e.g. `nvEncEncodePicture:5:8`) returns `status`; the status `hang` makes that call block until the process exits, `hang=MS` for `MS` milliseconds (then it runs) |
//! | `NVENC_EMU_MAX_SESSIONS` | the `N+1`th concurrent session open fails with `NV_ENC_ERR_OUT_OF_MEMORY` (GeForce limit) |
//! | `NVENC_EMU_MAX_API` | `major.minor` reported by `NvEncodeAPIGetMaxSupportedVersion` (default: the header's) |
//! | `NVENC_EMU_NO_DEVICE` | `1`: open fails with `NV_ENC_ERR_NO_ENCODE_DEVICE`; `unsupported`: `NV_ENC_ERR_UNSUPPORTED_DEVICE` |
//! | `NVENC_EMU_LOSSLESS` | `1`: `NV_ENC_CAPS_SUPPORT_LOSSLESS_ENCODE` is 1 and lossless tuning is accepted (default 0: refused) |
//! | `NVENC_EMU_FAST` | `1`: no pixel read-back and no encoding (overhead benchmarks) |
//! | `NVENC_EMU_NO_DYN_RATE` | `1`: a GPU without `SUPPORT_DYN_BITRATE_CHANGE` / `SUPPORT_DYN_RCMODE_CHANGE`: a rate change needs `resetEncoder` |
//! | `NVENC_EMU_REPORT` | report file: violations, faults, session open/close, `encode live_handles ...` |
//!
//! Control functions for in-process use: [`nvenc_emu_violations`], [`nvenc_emu_live_handles`].

// The exported functions are C entry points with NVENC's signatures; their safety contract is
// the NVENC API documentation's, which a `# Safety` section on each would only repeat.
#![allow(clippy::missing_safety_doc)]
// The exports keep the C names so that FFmpeg and the nvenc-sys loader find them.
#![allow(non_snake_case)]

mod codec;
mod cuda;

use std::collections::{HashMap, VecDeque};
use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::{LazyLock, Mutex};

use nvenc_emu_common::{guard, lock, Emu};
use nvenc_sys as nv;
use nvenc_sys::{GUID, NVENCSTATUS};

use codec::{Coded, Picture, Rc, X264Stream};

static EMU: LazyLock<Emu> = LazyLock::new(|| Emu::from_env("encode"));
static G: LazyLock<Mutex<Global>> = LazyLock::new(|| Mutex::new(Global::default()));

const ENC_BASE: u64 = 0x00e0_0000_0000;
const INBUF_BASE: u64 = 0x00e1_0000_0000;
const BS_BASE: u64 = 0x00e2_0000_0000;
const REG_BASE: u64 = 0x00e3_0000_0000;
const MAP_BASE: u64 = 0x00e4_0000_0000;
const STRIDE: u64 = 0x40;

/// Caps the emulated hardware reports.
const WIDTH_MAX: u32 = 4096;
const HEIGHT_MAX: u32 = 4096;
const WIDTH_MIN: u32 = 33;
const HEIGHT_MIN: u32 = 17;
const MAX_BFRAMES: u32 = 4;
/// Input-buffer pitch alignment (a client that assumes pitch == width is caught).
const INPUT_PITCH_ALIGN: u32 = 256;

const ST_SUCCESS: NVENCSTATUS = NVENCSTATUS::NV_ENC_SUCCESS;

fn st(code: NVENCSTATUS) -> i32 {
    code.0 as i32
}

/// An entry point's failure: status, reason, and whether it is a client violation.
#[derive(Debug)]
struct Fail {
    status: NVENCSTATUS,
    reason: String,
    violation: bool,
}

type R = Result<NVENCSTATUS, Fail>;

/// A client violation.
fn v(status: NVENCSTATUS, reason: impl Into<String>) -> Fail {
    Fail {
        status,
        reason: reason.into(),
        violation: true,
    }
}

/// A legitimate failure (not the client's fault).
fn f(status: NVENCSTATUS, reason: impl Into<String>) -> Fail {
    Fail {
        status,
        reason: reason.into(),
        violation: false,
    }
}

const INVALID_PARAM: NVENCSTATUS = NVENCSTATUS::NV_ENC_ERR_INVALID_PARAM;
const INVALID_CALL: NVENCSTATUS = NVENCSTATUS::NV_ENC_ERR_INVALID_CALL;
const INVALID_VERSION: NVENCSTATUS = NVENCSTATUS::NV_ENC_ERR_INVALID_VERSION;
const INVALID_PTR: NVENCSTATUS = NVENCSTATUS::NV_ENC_ERR_INVALID_PTR;
const UNIMPLEMENTED: NVENCSTATUS = NVENCSTATUS::NV_ENC_ERR_UNIMPLEMENTED;
const NOT_INIT: NVENCSTATUS = NVENCSTATUS::NV_ENC_ERR_ENCODER_NOT_INITIALIZED;

fn guid_eq(a: &GUID, b: &GUID) -> bool {
    a.Data1 == b.Data1 && a.Data2 == b.Data2 && a.Data3 == b.Data3 && a.Data4 == b.Data4
}

/// A GUID the usual way: `{b2dfb705-4ebd-4c49-9b5f-24a777d3e587}`.
fn guid_str(g: &GUID) -> String {
    let d = g.Data4;
    format!(
        "{{{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}}}",
        g.Data1, g.Data2, g.Data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
    )
}

const PRESETS: [GUID; 7] = [
    nv::NV_ENC_PRESET_P1_GUID,
    nv::NV_ENC_PRESET_P2_GUID,
    nv::NV_ENC_PRESET_P3_GUID,
    nv::NV_ENC_PRESET_P4_GUID,
    nv::NV_ENC_PRESET_P5_GUID,
    nv::NV_ENC_PRESET_P6_GUID,
    nv::NV_ENC_PRESET_P7_GUID,
];

const PROFILES: [GUID; 4] = [
    nv::NV_ENC_CODEC_PROFILE_AUTOSELECT_GUID,
    nv::NV_ENC_H264_PROFILE_BASELINE_GUID,
    nv::NV_ENC_H264_PROFILE_MAIN_GUID,
    nv::NV_ENC_H264_PROFILE_HIGH_GUID,
];

const FORMATS: [nv::NV_ENC_BUFFER_FORMAT; 3] = [
    nv::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_NV12,
    nv::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_YV12,
    nv::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_IYUV,
];

/// The presets SDK 10 deprecated and SDK 12 removed, which the API 11.1 header still declares
/// (`NV_ENC_DEPRECATED`, nvEncodeAPI.h 11.1 lines 203-240) and drivers of that era still list
/// beside P1..P7 and accept. Each maps to a P preset and tuning as FFmpeg's `nvenc.c` maps them
/// (`PRESET_ALIAS`): (GUID, P index 0..6, tuning, name).
#[allow(deprecated)]
const LEGACY_PRESETS: [(GUID, usize, u32, &str); 9] = [
    (nv::NV_ENC_PRESET_DEFAULT_GUID, 3, TUNING_HQ, "DEFAULT"),
    (nv::NV_ENC_PRESET_HP_GUID, 0, TUNING_HQ, "HP"),
    (nv::NV_ENC_PRESET_HQ_GUID, 6, TUNING_HQ, "HQ"),
    (nv::NV_ENC_PRESET_BD_GUID, 4, TUNING_HQ, "BD"),
    (
        nv::NV_ENC_PRESET_LOW_LATENCY_DEFAULT_GUID,
        3,
        TUNING_LL,
        "LOW_LATENCY_DEFAULT",
    ),
    (
        nv::NV_ENC_PRESET_LOW_LATENCY_HP_GUID,
        0,
        TUNING_LL,
        "LOW_LATENCY_HP",
    ),
    (
        nv::NV_ENC_PRESET_LOW_LATENCY_HQ_GUID,
        6,
        TUNING_LL,
        "LOW_LATENCY_HQ",
    ),
    (
        nv::NV_ENC_PRESET_LOSSLESS_DEFAULT_GUID,
        3,
        TUNING_LOSSLESS,
        "LOSSLESS_DEFAULT",
    ),
    (
        nv::NV_ENC_PRESET_LOSSLESS_HP_GUID,
        0,
        TUNING_LOSSLESS,
        "LOSSLESS_HP",
    ),
];

/// `NV_ENC_TUNING_INFO` values.
const TUNING_HQ: u32 = 1;
const TUNING_LL: u32 = 2;
const TUNING_LOSSLESS: u32 = 4;

/// Whether the emulated GPU reports `NV_ENC_CAPS_SUPPORT_LOSSLESS_ENCODE` = 1
/// (`NVENC_EMU_LOSSLESS=1`; default 0).
fn lossless_cap() -> bool {
    std::env::var("NVENC_EMU_LOSSLESS").is_ok_and(|v| v == "1")
}

/// Every preset GUID `nvEncGetEncodePresetGUIDs` lists: P1..P7, then the legacy ones (the
/// lossless ones only where the GPU encodes lossless).
fn listed_presets() -> Vec<GUID> {
    let lossless = lossless_cap();
    PRESETS
        .iter()
        .copied()
        .chain(
            LEGACY_PRESETS
                .iter()
                .filter(|l| lossless || l.2 != TUNING_LOSSLESS)
                .map(|l| l.0),
        )
        .collect()
}

/// A listed preset: its P index and, for a legacy preset, the tuning it implies.
fn preset_index(g: &GUID) -> Option<(usize, Option<u32>)> {
    if let Some(i) = PRESETS.iter().position(|p| guid_eq(p, g)) {
        return Some((i, None));
    }
    LEGACY_PRESETS
        .iter()
        .find(|l| guid_eq(&l.0, g))
        .map(|l| (l.1, Some(l.2)))
}

/// The "not a preset" failure.
fn unknown_preset(what: &str, g: &GUID) -> Fail {
    v(
        INVALID_PARAM,
        format!(
            "{what} {} is not a preset this driver lists (P1..P7 and the API 11.x legacy presets)",
            guid_str(g)
        ),
    )
}

/// Lossless coding asked of a GPU whose `NV_ENC_CAPS_SUPPORT_LOSSLESS_ENCODE` is 0: refused, as
/// the header asks clients to check that cap first (nvEncodeAPI.h 11.1 lines 1433-1434).
fn check_lossless(what: &str) -> Result<(), Fail> {
    if lossless_cap() {
        Ok(())
    } else {
        Err(v(
            NVENCSTATUS::NV_ENC_ERR_UNSUPPORTED_PARAM,
            format!("{what} asks for lossless encoding, but NV_ENC_CAPS_SUPPORT_LOSSLESS_ENCODE is 0 on this GPU"),
        ))
    }
}

fn check_codec(g: &GUID) -> Result<(), Fail> {
    if guid_eq(g, &nv::NV_ENC_CODEC_H264_GUID) {
        Ok(())
    } else if guid_eq(g, &nv::NV_ENC_CODEC_HEVC_GUID) {
        // Every NVENC GPU since Maxwell GM206 encodes HEVC, so a client may well ask about it
        // before (or instead of) listing the codecs: a normal query, answered with an error
        // because the emulator only encodes H.264, and not recorded as a violation.
        Err(f(
            INVALID_PARAM,
            "HEVC is not offered by this emulated device (only H.264 is listed by nvEncGetEncodeGUIDs)",
        ))
    } else {
        Err(v(
            INVALID_PARAM,
            format!("unknown codec GUID {}", guid_str(g)),
        ))
    }
}

fn check_version(got: u32, want: u32, what: &str) -> Result<(), Fail> {
    if got == want {
        Ok(())
    } else {
        Err(v(
            INVALID_VERSION,
            format!("{what}.version is {got:#x}, expected {want:#x}"),
        ))
    }
}

fn zero_u32(s: &[u32], what: &str) -> Result<(), Fail> {
    match s.iter().position(|&x| x != 0) {
        None => Ok(()),
        Some(i) => Err(v(
            INVALID_PARAM,
            format!("{what}[{i}] is {:#x}, reserved fields must be 0", s[i]),
        )),
    }
}

fn zero_ptr(s: &[*mut c_void], what: &str) -> Result<(), Fail> {
    match s.iter().position(|p| !p.is_null()) {
        None => Ok(()),
        Some(i) => Err(v(
            INVALID_PARAM,
            format!("{what}[{i}] is non-NULL, reserved fields must be NULL"),
        )),
    }
}

/// Reads a client struct by reference.
///
/// # Safety
///
/// `p` must be null or point at a valid, initialised `T` for the duration of the borrow.
unsafe fn arg<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T, Fail> {
    if p.is_null() {
        return Err(v(INVALID_PTR, format!("{what} is NULL")));
    }
    // SAFETY: non-null, and the caller guarantees validity (NVENC API contract).
    Ok(unsafe { &mut *p })
}

/// Writes an out-parameter.
///
/// # Safety
///
/// `p` must be null or valid for a write of `T`.
unsafe fn put<T>(p: *mut T, val: T, what: &str) -> Result<(), Fail> {
    if p.is_null() {
        return Err(v(INVALID_PTR, format!("{what} is NULL")));
    }
    // SAFETY: non-null and writable per the caller's contract.
    unsafe { p.write(val) };
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Session state

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fmt {
    Nv12,
    Yv12,
    Iyuv,
}

impl Fmt {
    fn from(f: nv::NV_ENC_BUFFER_FORMAT) -> Option<Self> {
        match f {
            nv::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_NV12 => Some(Self::Nv12),
            nv::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_YV12 => Some(Self::Yv12),
            nv::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_IYUV => Some(Self::Iyuv),
            _ => None,
        }
    }

    fn raw(self) -> nv::NV_ENC_BUFFER_FORMAT {
        match self {
            Self::Nv12 => nv::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_NV12,
            Self::Yv12 => nv::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_YV12,
            Self::Iyuv => nv::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_IYUV,
        }
    }

    /// Plane (offset, stride) list and total bytes of a frame with luma pitch `pitch`.
    fn layout(self, pitch: usize, height: usize) -> (Vec<(usize, usize)>, usize) {
        let ch = height.div_ceil(2);
        let y = pitch * height;
        match self {
            Self::Nv12 => (vec![(0, pitch), (y, pitch)], y + pitch * ch),
            Self::Yv12 | Self::Iyuv => {
                let cp = pitch / 2;
                (
                    vec![(0, pitch), (y, cp), (y + cp * ch, cp)],
                    y + 2 * cp * ch,
                )
            }
        }
    }

    fn csp(self) -> u32 {
        match self {
            Self::Nv12 => x264_sys::X264_CSP_NV12,
            Self::Yv12 => x264_sys::X264_CSP_YV12,
            Self::Iyuv => x264_sys::X264_CSP_I420,
        }
    }
}

fn fmt_check(f: nv::NV_ENC_BUFFER_FORMAT, what: &str) -> Result<Fmt, Fail> {
    Fmt::from(f).ok_or_else(|| v(INVALID_PARAM, format!("{what} {:#x} is not among the formats nvEncGetInputFormats lists (NV12, YV12, IYUV)", f.0)))
}

#[derive(Debug)]
struct InputBuf {
    width: u32,
    height: u32,
    fmt: Fmt,
    pitch: u32,
    data: Vec<u8>,
    locked: bool,
    in_flight: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BsState {
    Idle,
    Queued,
    Locked,
}

#[derive(Debug)]
struct Bitstream {
    state: BsState,
    data: Vec<u8>,
}

#[derive(Debug)]
struct Reg {
    ptr: u64,
    width: u32,
    height: u32,
    pitch: u32,
    fmt: Fmt,
    mapped: Option<u64>,
}

#[derive(Debug)]
struct Mapped {
    reg: u64,
    in_flight: bool,
}

#[derive(Debug, Clone, Copy)]
enum InputRef {
    Buf(u64),
    Map(u64),
}

#[derive(Debug)]
struct Submission {
    bs: u64,
    ready: bool,
    input: InputRef,
    coded: Option<Coded>,
}

#[derive(Debug, Clone, Copy)]
struct FrameMeta {
    ts: u64,
    dur: u64,
    frame_idx: u32,
}

#[derive(Debug)]
struct Init {
    width: u32,
    height: u32,
    max_width: u32,
    max_height: u32,
    ptd: bool,
    /// `frameIntervalP` (1 = no B-frames).
    interval: u32,
    idr_period: Option<u32>,
    repeat_sps_pps: bool,
    params: codec::Params,
}

#[derive(Debug)]
enum Engine {
    X264(Box<X264Stream>),
    Fast,
}

#[derive(Debug)]
struct Session {
    ctx: u64,
    init: Option<Init>,
    inputs: HashMap<u64, InputBuf>,
    bitstreams: HashMap<u64, Bitstream>,
    regs: HashMap<u64, Reg>,
    maps: HashMap<u64, Mapped>,
    queue: VecDeque<Submission>,
    engine: Option<Engine>,
    /// Metadata of submitted pictures by serial number.
    meta: HashMap<u64, FrameMeta>,
    serial: u64,
    since_idr: u64,
    since_anchor: u32,
    /// Fast mode: pictures waiting for their anchor (serial, type).
    fast_pending: Vec<u64>,
    headers_sent: bool,
    force_headers: bool,
    last_error: CString,
    last_stats: Option<(u32, u32)>,
}

#[derive(Debug, Default)]
struct Global {
    next_id: u64,
    sessions: HashMap<u64, Session>,
    cuda: Option<std::sync::Arc<cuda::Cuda>>,
}

impl Global {
    fn handle(&mut self, base: u64) -> u64 {
        self.next_id += 1;
        base + self.next_id * STRIDE
    }

    fn live_line(&self) -> String {
        let s = &self.sessions;
        format!(
            "live_handles sessions={} input_buffers={} bitstream_buffers={} registered={} mapped={}",
            s.len(),
            s.values().map(|x| x.inputs.len()).sum::<usize>(),
            s.values().map(|x| x.bitstreams.len()).sum::<usize>(),
            s.values().map(|x| x.regs.len()).sum::<usize>(),
            s.values().map(|x| x.maps.len()).sum::<usize>(),
        )
    }

    fn sess(&mut self, enc: *mut c_void) -> Result<&mut Session, Fail> {
        if enc.is_null() {
            return Err(v(INVALID_PTR, "encoder handle is NULL"));
        }
        self.sessions.get_mut(&(enc as u64)).ok_or_else(|| {
            v(
                INVALID_PARAM,
                format!("{enc:p} is not a live encoder session (destroyed, or never opened)"),
            )
        })
    }
}

/// Whether the emulated GPU changes bit rate and rate-control mode without a reset (the caps
/// `SUPPORT_DYN_BITRATE_CHANGE` and `SUPPORT_DYN_RCMODE_CHANGE`); `NVENC_EMU_NO_DYN_RATE=1` turns
/// both off.
fn dyn_rate() -> bool {
    !std::env::var("NVENC_EMU_NO_DYN_RATE").is_ok_and(|v| v == "1")
}

fn fast_mode() -> bool {
    std::env::var("NVENC_EMU_FAST").is_ok_and(|v| v == "1")
}

/// Runs an NVENC entry point: fault injection, panic guard, violation recording, last error.
fn run(entry: &'static str, enc: *mut c_void, body: impl FnOnce(&mut Global) -> R) -> NVENCSTATUS {
    let code = guard(&EMU, entry, st(NVENCSTATUS::NV_ENC_ERR_GENERIC), || {
        if let Some(s) = EMU.enter(entry) {
            let mut g = lock(&G);
            if let Some(sess) = g.sessions.get_mut(&(enc as u64)) {
                sess.last_error =
                    CString::new(format!("{entry}: injected fault {s}")).unwrap_or_default();
            }
            return s;
        }
        let mut g = lock(&G);
        match body(&mut g) {
            Ok(s) => st(s),
            Err(e) => {
                if e.violation {
                    EMU.violation(entry, &e.reason);
                }
                if let Some(sess) = g.sessions.get_mut(&(enc as u64)) {
                    sess.last_error =
                        CString::new(format!("{entry}: {}", e.reason).replace('\0', " "))
                            .unwrap_or_default();
                }
                st(e.status)
            }
        }
    });
    NVENCSTATUS(code as u32)
}

// ---------------------------------------------------------------------------------------------
// Exports

fn max_api() -> u32 {
    let hdr = (nv::NVENCAPI_MAJOR_VERSION << 4) | nv::NVENCAPI_MINOR_VERSION;
    std::env::var("NVENC_EMU_MAX_API")
        .ok()
        .and_then(|s| {
            let (a, b) = s.split_once('.')?;
            Some((a.trim().parse::<u32>().ok()? << 4) | b.trim().parse::<u32>().ok()?)
        })
        .unwrap_or(hdr)
}

/// `NvEncodeAPIGetMaxSupportedVersion`: `(major << 4) | minor`.
#[no_mangle]
pub unsafe extern "C" fn NvEncodeAPIGetMaxSupportedVersion(version: *mut u32) -> NVENCSTATUS {
    run(
        "NvEncodeAPIGetMaxSupportedVersion",
        std::ptr::null_mut(),
        |_| {
            // SAFETY: out-pointer per the API.
            unsafe { put(version, max_api(), "version") }?;
            Ok(ST_SUCCESS)
        },
    )
}

/// `NvEncodeAPICreateInstance`: fills every entry of the function list.
#[no_mangle]
pub unsafe extern "C" fn NvEncodeAPICreateInstance(
    list: *mut nv::NV_ENCODE_API_FUNCTION_LIST,
) -> NVENCSTATUS {
    run("NvEncodeAPICreateInstance", std::ptr::null_mut(), |_| {
        // SAFETY: the client passes its function list (API contract).
        let l = unsafe { arg(list, "functionList") }?;
        check_version(
            l.version,
            nv::NV_ENCODE_API_FUNCTION_LIST_VER,
            "NV_ENCODE_API_FUNCTION_LIST",
        )?;
        if l.reserved != 0 {
            return Err(v(
                INVALID_PARAM,
                "NV_ENCODE_API_FUNCTION_LIST.reserved must be 0",
            ));
        }
        l.nvEncOpenEncodeSession = Some(nvEncOpenEncodeSession);
        l.nvEncGetEncodeGUIDCount = Some(nvEncGetEncodeGUIDCount);
        l.nvEncGetEncodeProfileGUIDCount = Some(nvEncGetEncodeProfileGUIDCount);
        l.nvEncGetEncodeProfileGUIDs = Some(nvEncGetEncodeProfileGUIDs);
        l.nvEncGetEncodeGUIDs = Some(nvEncGetEncodeGUIDs);
        l.nvEncGetInputFormatCount = Some(nvEncGetInputFormatCount);
        l.nvEncGetInputFormats = Some(nvEncGetInputFormats);
        l.nvEncGetEncodeCaps = Some(nvEncGetEncodeCaps);
        l.nvEncGetEncodePresetCount = Some(nvEncGetEncodePresetCount);
        l.nvEncGetEncodePresetGUIDs = Some(nvEncGetEncodePresetGUIDs);
        l.nvEncGetEncodePresetConfig = Some(nvEncGetEncodePresetConfig);
        l.nvEncInitializeEncoder = Some(nvEncInitializeEncoder);
        l.nvEncCreateInputBuffer = Some(nvEncCreateInputBuffer);
        l.nvEncDestroyInputBuffer = Some(nvEncDestroyInputBuffer);
        l.nvEncCreateBitstreamBuffer = Some(nvEncCreateBitstreamBuffer);
        l.nvEncDestroyBitstreamBuffer = Some(nvEncDestroyBitstreamBuffer);
        l.nvEncEncodePicture = Some(nvEncEncodePicture);
        l.nvEncLockBitstream = Some(nvEncLockBitstream);
        l.nvEncUnlockBitstream = Some(nvEncUnlockBitstream);
        l.nvEncLockInputBuffer = Some(nvEncLockInputBuffer);
        l.nvEncUnlockInputBuffer = Some(nvEncUnlockInputBuffer);
        l.nvEncGetEncodeStats = Some(nvEncGetEncodeStats);
        l.nvEncGetSequenceParams = Some(nvEncGetSequenceParams);
        l.nvEncRegisterAsyncEvent = Some(nvEncRegisterAsyncEvent);
        l.nvEncUnregisterAsyncEvent = Some(nvEncUnregisterAsyncEvent);
        l.nvEncMapInputResource = Some(nvEncMapInputResource);
        l.nvEncUnmapInputResource = Some(nvEncUnmapInputResource);
        l.nvEncDestroyEncoder = Some(nvEncDestroyEncoder);
        l.nvEncInvalidateRefFrames = Some(nvEncInvalidateRefFrames);
        l.nvEncOpenEncodeSessionEx = Some(nvEncOpenEncodeSessionEx);
        l.nvEncRegisterResource = Some(nvEncRegisterResource);
        l.nvEncUnregisterResource = Some(nvEncUnregisterResource);
        l.nvEncReconfigureEncoder = Some(nvEncReconfigureEncoder);
        l.nvEncCreateMVBuffer = Some(nvEncCreateMVBuffer);
        l.nvEncDestroyMVBuffer = Some(nvEncDestroyMVBuffer);
        l.nvEncRunMotionEstimationOnly = Some(nvEncRunMotionEstimationOnly);
        l.nvEncGetLastErrorString = Some(nvEncGetLastErrorString);
        l.nvEncSetIOCudaStreams = Some(nvEncSetIOCudaStreams);
        l.nvEncGetEncodePresetConfigEx = Some(nvEncGetEncodePresetConfigEx);
        l.nvEncGetSequenceParamEx = Some(nvEncGetSequenceParamEx);
        Ok(ST_SUCCESS)
    })
}

unsafe extern "C" fn nvEncOpenEncodeSession(
    _d: *mut c_void,
    _t: u32,
    _e: *mut *mut c_void,
) -> NVENCSTATUS {
    run("nvEncOpenEncodeSession", std::ptr::null_mut(), |_| {
        Err(v(
            UNIMPLEMENTED,
            "nvEncOpenEncodeSession is deprecated; use nvEncOpenEncodeSessionEx",
        ))
    })
}

unsafe extern "C" fn nvEncOpenEncodeSessionEx(
    p: *mut nv::NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS,
    encoder: *mut *mut c_void,
) -> NVENCSTATUS {
    run("nvEncOpenEncodeSessionEx", std::ptr::null_mut(), |g| {
        if encoder.is_null() {
            return Err(v(INVALID_PTR, "encoder out-pointer is NULL"));
        }
        // SAFETY: checked non-null; the client passes a writable `void **` (API contract).
        unsafe { encoder.write(std::ptr::null_mut()) };
        // SAFETY: the client passes its params struct (API contract).
        let p = unsafe { arg(p, "openSessionExParams") }?;
        check_version(
            p.version,
            nv::NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER,
            "NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS",
        )?;
        if !p.reserved.is_null() {
            return Err(v(
                INVALID_PARAM,
                "NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS.reserved must be NULL",
            ));
        }
        zero_u32(
            &p.reserved1,
            "NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS.reserved1",
        )?;
        zero_ptr(
            &p.reserved2,
            "NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS.reserved2",
        )?;
        if p.apiVersion != nv::NVENCAPI_VERSION {
            return Err(v(
                INVALID_VERSION,
                format!(
                    "apiVersion {:#x} is not NVENCAPI_VERSION {:#x} (11.1)",
                    p.apiVersion,
                    nv::NVENCAPI_VERSION
                ),
            ));
        }
        let hdr = (nv::NVENCAPI_MAJOR_VERSION << 4) | nv::NVENCAPI_MINOR_VERSION;
        if hdr > max_api() {
            return Err(v(
                INVALID_VERSION,
                format!(
                    "apiVersion 11.1 is newer than this driver's maximum {}.{}",
                    max_api() >> 4,
                    max_api() & 15
                ),
            ));
        }
        if p.deviceType != nv::NV_ENC_DEVICE_TYPE::NV_ENC_DEVICE_TYPE_CUDA {
            return Err(v(
                NVENCSTATUS::NV_ENC_ERR_UNSUPPORTED_DEVICE,
                format!(
                    "deviceType {} is not supported on Linux by this emulator (only CUDA)",
                    p.deviceType.0
                ),
            ));
        }
        match std::env::var("NVENC_EMU_NO_DEVICE").as_deref() {
            Ok("1") => {
                return Err(f(
                    NVENCSTATUS::NV_ENC_ERR_NO_ENCODE_DEVICE,
                    "no NVENC engine (NVENC_EMU_NO_DEVICE=1)",
                ))
            }
            Ok("unsupported") => {
                return Err(f(
                    NVENCSTATUS::NV_ENC_ERR_UNSUPPORTED_DEVICE,
                    "device has no NVENC (NVENC_EMU_NO_DEVICE=unsupported)",
                ))
            }
            _ => {}
        }
        if g.cuda.is_none() {
            g.cuda = Some(std::sync::Arc::new(cuda::Cuda::open().map_err(|e| {
                f(
                    NVENCSTATUS::NV_ENC_ERR_NO_ENCODE_DEVICE,
                    format!("cannot load libcuda.so.1: {e}"),
                )
            })?));
        }
        let ctx = p.device as u64;
        if let Some(c) = &g.cuda {
            c.check_ctx(ctx).map_err(|e| {
                v(
                    NVENCSTATUS::NV_ENC_ERR_INVALID_DEVICE,
                    format!("device {ctx:#x} is not a live CUcontext: {e}"),
                )
            })?;
        }
        if let Some(max) = std::env::var("NVENC_EMU_MAX_SESSIONS")
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        {
            if g.sessions.len() >= max {
                return Err(f(
                    NVENCSTATUS::NV_ENC_ERR_OUT_OF_MEMORY,
                    format!("{} sessions already open; this device allows {max} (GeForce-style session limit)", g.sessions.len()),
                ));
            }
        }
        let h = g.handle(ENC_BASE);
        g.sessions.insert(
            h,
            Session {
                ctx,
                init: None,
                inputs: HashMap::new(),
                bitstreams: HashMap::new(),
                regs: HashMap::new(),
                maps: HashMap::new(),
                queue: VecDeque::new(),
                engine: None,
                meta: HashMap::new(),
                serial: 0,
                since_idr: 0,
                since_anchor: 0,
                fast_pending: Vec::new(),
                headers_sent: false,
                force_headers: false,
                last_error: CString::default(),
                last_stats: None,
            },
        );
        EMU.line(&format!(
            "session_open handle={h:#x} sessions={}",
            g.sessions.len()
        ));
        // SAFETY: checked non-null above.
        unsafe { encoder.write(h as *mut c_void) };
        Ok(ST_SUCCESS)
    })
}

unsafe extern "C" fn nvEncGetEncodeGUIDCount(enc: *mut c_void, n: *mut u32) -> NVENCSTATUS {
    run("nvEncGetEncodeGUIDCount", enc, |g| {
        g.sess(enc)?;
        // SAFETY: out-pointer per the API.
        unsafe { put(n, 1, "encodeGUIDCount") }?;
        Ok(ST_SUCCESS)
    })
}

/// Writes `items` into a client array of `size` entries.
///
/// # Safety
///
/// `arr` must be null or writable for `size` entries; `count` null or writable.
unsafe fn fill<T: Copy>(items: &[T], arr: *mut T, size: u32, count: *mut u32) -> R {
    if arr.is_null() {
        return Err(v(INVALID_PTR, "array is NULL"));
    }
    if (size as usize) < items.len() {
        return Err(v(
            INVALID_PARAM,
            format!(
                "array holds {size} entries, {} needed (ask for the count first)",
                items.len()
            ),
        ));
    }
    for (i, it) in items.iter().enumerate() {
        // SAFETY: `i < items.len() <= size` and the client's array holds `size` entries.
        unsafe { arr.wrapping_add(i).write(*it) };
    }
    // SAFETY: forwarded contract.
    unsafe { put(count, items.len() as u32, "count") }?;
    Ok(ST_SUCCESS)
}

unsafe extern "C" fn nvEncGetEncodeGUIDs(
    enc: *mut c_void,
    guids: *mut GUID,
    size: u32,
    count: *mut u32,
) -> NVENCSTATUS {
    run("nvEncGetEncodeGUIDs", enc, |g| {
        g.sess(enc)?;
        // SAFETY: the client's array and count pointers (API contract).
        unsafe { fill(&[nv::NV_ENC_CODEC_H264_GUID], guids, size, count) }
    })
}

unsafe extern "C" fn nvEncGetEncodeProfileGUIDCount(
    enc: *mut c_void,
    codec: GUID,
    n: *mut u32,
) -> NVENCSTATUS {
    run("nvEncGetEncodeProfileGUIDCount", enc, |g| {
        g.sess(enc)?;
        check_codec(&codec)?;
        // SAFETY: out-pointer per the API.
        unsafe { put(n, PROFILES.len() as u32, "encodeProfileGUIDCount") }?;
        Ok(ST_SUCCESS)
    })
}

unsafe extern "C" fn nvEncGetEncodeProfileGUIDs(
    enc: *mut c_void,
    codec: GUID,
    guids: *mut GUID,
    size: u32,
    count: *mut u32,
) -> NVENCSTATUS {
    run("nvEncGetEncodeProfileGUIDs", enc, |g| {
        g.sess(enc)?;
        check_codec(&codec)?;
        // SAFETY: the client's array and count pointers (API contract).
        unsafe { fill(&PROFILES, guids, size, count) }
    })
}

unsafe extern "C" fn nvEncGetInputFormatCount(
    enc: *mut c_void,
    codec: GUID,
    n: *mut u32,
) -> NVENCSTATUS {
    run("nvEncGetInputFormatCount", enc, |g| {
        g.sess(enc)?;
        check_codec(&codec)?;
        // SAFETY: out-pointer per the API.
        unsafe { put(n, FORMATS.len() as u32, "inputFmtCount") }?;
        Ok(ST_SUCCESS)
    })
}

unsafe extern "C" fn nvEncGetInputFormats(
    enc: *mut c_void,
    codec: GUID,
    fmts: *mut nv::NV_ENC_BUFFER_FORMAT,
    size: u32,
    count: *mut u32,
) -> NVENCSTATUS {
    run("nvEncGetInputFormats", enc, |g| {
        g.sess(enc)?;
        check_codec(&codec)?;
        // SAFETY: the client's array and count pointers (API contract).
        unsafe { fill(&FORMATS, fmts, size, count) }
    })
}

fn cap_value(cap: u32) -> Option<c_int> {
    Some(match cap {
        0 => MAX_BFRAMES as c_int,                             // NUM_MAX_BFRAMES
        1 => 0x7,                                              // SUPPORTED_RATECONTROL_MODES
        2 => 0,                                                // FIELD_ENCODING
        3 => 0,                                                // MONOCHROME
        4 => 0,                                                // FMO
        5 => 1,                                                // QPELMV
        6 => 1,                                                // BDIRECT_MODE
        7 => 1,                                                // CABAC
        8 => 1,                                                // ADAPTIVE_TRANSFORM
        9 => 0,                                                // STEREO_MVC
        10 => 1,                                               // NUM_MAX_TEMPORAL_LAYERS
        11 | 12 => 0,                                          // HIERARCHICAL P/B
        13 => 52,                                              // LEVEL_MAX (5.2)
        14 => 10,                                              // LEVEL_MIN (1.0)
        15 => 0,                                               // SEPARATE_COLOUR_PLANE
        16 => WIDTH_MAX as c_int,                              // WIDTH_MAX
        17 => HEIGHT_MAX as c_int,                             // HEIGHT_MAX
        18 => 0,                                               // TEMPORAL_SVC
        19 => 1,                                               // DYN_RES_CHANGE
        20 => c_int::from(dyn_rate()),                         // DYN_BITRATE_CHANGE
        21 => 1,                                               // DYN_FORCE_CONSTQP
        22 => c_int::from(dyn_rate()),                         // DYN_RCMODE_CHANGE
        23 => 0,                                               // SUBFRAME_READBACK
        24 => 1,                                               // CONSTRAINED_ENCODING
        25 => 1,                                               // INTRA_REFRESH
        26 => 1,                                               // CUSTOM_VBV_BUF_SIZE
        27 => 1,                                               // DYNAMIC_SLICE_MODE
        28 => 0,                                               // REF_PIC_INVALIDATION
        29 => 0,                                               // PREPROC_SUPPORT
        30 => 0,                                               // ASYNC_ENCODE_SUPPORT (Linux)
        31 => ((WIDTH_MAX / 16) * (HEIGHT_MAX / 16)) as c_int, // MB_NUM_MAX
        32 => 983_040,                                         // MB_PER_SEC_MAX
        33 => 0,                                               // YUV444_ENCODE
        34 => c_int::from(lossless_cap()),                     // LOSSLESS_ENCODE
        35 => 0,                                               // SAO (HEVC)
        36 => 0,                                               // MEONLY_MODE
        37 => 1,                                               // LOOKAHEAD
        38 => 1,                                               // TEMPORAL_AQ
        39 => 0,                                               // 10BIT_ENCODE
        40 => 0,                                               // NUM_MAX_LTR_FRAMES
        41 => 1,                                               // WEIGHTED_PREDICTION
        42 => 100,                                             // DYNAMIC_QUERY_ENCODER_CAPACITY
        43 => 1,                                               // BFRAME_REF_MODE
        44 => 0,                                               // EMPHASIS_LEVEL_MAP
        45 => WIDTH_MIN as c_int,                              // WIDTH_MIN
        46 => HEIGHT_MIN as c_int,                             // HEIGHT_MIN
        47 => 1,                                               // MULTIPLE_REF_FRAMES
        48 => 0,                                               // ALPHA_LAYER_ENCODING
        49 => 1,                                               // NUM_ENCODER_ENGINES
        50 => 0,                                               // SINGLE_SLICE_INTRA_REFRESH
        _ => return None,
    })
}

unsafe extern "C" fn nvEncGetEncodeCaps(
    enc: *mut c_void,
    codec: GUID,
    p: *mut nv::NV_ENC_CAPS_PARAM,
    val: *mut c_int,
) -> NVENCSTATUS {
    run("nvEncGetEncodeCaps", enc, |g| {
        g.sess(enc)?;
        check_codec(&codec)?;
        // SAFETY: the client's caps struct (API contract).
        let p = unsafe { arg(p, "capsParam") }?;
        check_version(p.version, nv::NV_ENC_CAPS_PARAM_VER, "NV_ENC_CAPS_PARAM")?;
        zero_u32(&p.reserved, "NV_ENC_CAPS_PARAM.reserved")?;
        let c = cap_value(p.capsToQuery.0)
            .ok_or_else(|| v(INVALID_PARAM, format!("unknown cap {}", p.capsToQuery.0)))?;
        // SAFETY: out-pointer per the API.
        unsafe { put(val, c, "capsVal") }?;
        Ok(ST_SUCCESS)
    })
}

unsafe extern "C" fn nvEncGetEncodePresetCount(
    enc: *mut c_void,
    codec: GUID,
    n: *mut u32,
) -> NVENCSTATUS {
    run("nvEncGetEncodePresetCount", enc, |g| {
        g.sess(enc)?;
        check_codec(&codec)?;
        // SAFETY: out-pointer per the API.
        unsafe { put(n, listed_presets().len() as u32, "encodePresetGUIDCount") }?;
        Ok(ST_SUCCESS)
    })
}

unsafe extern "C" fn nvEncGetEncodePresetGUIDs(
    enc: *mut c_void,
    codec: GUID,
    guids: *mut GUID,
    size: u32,
    count: *mut u32,
) -> NVENCSTATUS {
    run("nvEncGetEncodePresetGUIDs", enc, |g| {
        g.sess(enc)?;
        check_codec(&codec)?;
        // SAFETY: the client's array and count pointers (API contract).
        unsafe { fill(&listed_presets(), guids, size, count) }
    })
}

/// The NV_ENC_CONFIG a preset and tuning give.
fn preset_config(preset: usize, tuning: u32) -> nv::NV_ENC_CONFIG {
    // SAFETY: NV_ENC_CONFIG is a plain C struct (integers, GUIDs, unions of such, NULL pointers)
    // for which all-zero bytes are valid; the API itself asks clients to zero it.
    let mut c: nv::NV_ENC_CONFIG = unsafe { std::mem::zeroed() };
    let low_latency = matches!(tuning, 2 | 3);
    c.version = nv::NV_ENC_CONFIG_VER;
    c.profileGUID = nv::NV_ENC_CODEC_PROFILE_AUTOSELECT_GUID;
    c.gopLength = if low_latency {
        nv::NVENC_INFINITE_GOPLENGTH
    } else {
        250
    };
    c.frameIntervalP = 1;
    c.frameFieldMode = nv::NV_ENC_PARAMS_FRAME_FIELD_MODE::NV_ENC_PARAMS_FRAME_FIELD_MODE_FRAME;
    c.rcParams.version = nv::NV_ENC_RC_PARAMS_VER;
    c.rcParams.rateControlMode = if low_latency {
        nv::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_CBR
    } else {
        nv::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_VBR
    };
    c.rcParams.averageBitRate = 5_000_000 - 400_000 * preset as u32;
    c.rcParams.constQP = nv::NV_ENC_QP {
        qpInterP: 28,
        qpInterB: 31,
        qpIntra: 25,
    };
    // SAFETY: writing the H.264 member of the codec-config union of a zeroed struct.
    let h = unsafe { &mut c.encodeCodecConfig.h264Config };
    h.idrPeriod = c.gopLength;
    h.chromaFormatIDC = 1;
    h.level = 0;
    if tuning == TUNING_LOSSLESS {
        // What the header asks of a lossless encode (nvEncodeAPI.h 11.1 line 1433): transform
        // bypass, constant QP 0, High 4:4:4 Predictive.
        h.set_qpPrimeYZeroTransformBypassFlag(1);
        c.profileGUID = nv::NV_ENC_H264_PROFILE_HIGH_444_GUID;
        c.rcParams.rateControlMode = nv::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_CONSTQP;
        c.rcParams.constQP = nv::NV_ENC_QP {
            qpInterP: 0,
            qpInterB: 0,
            qpIntra: 0,
        };
    }
    c
}

fn preset_common(
    g: &mut Global,
    enc: *mut c_void,
    codec: &GUID,
    preset: &GUID,
    tuning: Option<u32>,
    p: *mut nv::NV_ENC_PRESET_CONFIG,
) -> R {
    g.sess(enc)?;
    check_codec(codec)?;
    let (idx, implied) = preset_index(preset).ok_or_else(|| unknown_preset("preset", preset))?;
    // A legacy preset carries its tuning; nvEncGetEncodePresetConfig (no tuning argument) gives
    // P presets their high-quality configuration.
    let tuning = match (tuning, implied) {
        (None | Some(0), Some(t)) => t,
        (None, None) => TUNING_HQ,
        (Some(t), _) => t,
    };
    if tuning == TUNING_LOSSLESS {
        check_lossless("the preset configuration")?;
    }
    if tuning == 0 || tuning > 4 {
        return Err(v(
            INVALID_PARAM,
            format!("tuningInfo {tuning} is not HIGH_QUALITY..LOSSLESS (1..4)"),
        ));
    }
    // SAFETY: the client's preset config struct (API contract).
    let p = unsafe { arg(p, "presetConfig") }?;
    check_version(
        p.version,
        nv::NV_ENC_PRESET_CONFIG_VER,
        "NV_ENC_PRESET_CONFIG",
    )?;
    check_version(
        p.presetCfg.version,
        nv::NV_ENC_CONFIG_VER,
        "NV_ENC_PRESET_CONFIG.presetCfg",
    )?;
    zero_u32(&p.reserved1, "NV_ENC_PRESET_CONFIG.reserved1")?;
    zero_ptr(&p.reserved2, "NV_ENC_PRESET_CONFIG.reserved2")?;
    p.presetCfg = preset_config(idx, tuning);
    Ok(ST_SUCCESS)
}

unsafe extern "C" fn nvEncGetEncodePresetConfig(
    enc: *mut c_void,
    codec: GUID,
    preset: GUID,
    p: *mut nv::NV_ENC_PRESET_CONFIG,
) -> NVENCSTATUS {
    run("nvEncGetEncodePresetConfig", enc, |g| {
        preset_common(g, enc, &codec, &preset, None, p)
    })
}

unsafe extern "C" fn nvEncGetEncodePresetConfigEx(
    enc: *mut c_void,
    codec: GUID,
    preset: GUID,
    tuning: nv::NV_ENC_TUNING_INFO,
    p: *mut nv::NV_ENC_PRESET_CONFIG,
) -> NVENCSTATUS {
    run("nvEncGetEncodePresetConfigEx", enc, |g| {
        preset_common(g, enc, &codec, &preset, Some(tuning.0), p)
    })
}

/// Validates initialize params (also used by reconfigure and GetSequenceParamEx).
fn validate_init(p: &nv::NV_ENC_INITIALIZE_PARAMS) -> Result<Init, Fail> {
    check_version(
        p.version,
        nv::NV_ENC_INITIALIZE_PARAMS_VER,
        "NV_ENC_INITIALIZE_PARAMS",
    )?;
    zero_u32(&p.reserved, "NV_ENC_INITIALIZE_PARAMS.reserved")?;
    zero_ptr(&p.reserved2, "NV_ENC_INITIALIZE_PARAMS.reserved2")?;
    if p.reservedBitFields() != 0 {
        return Err(v(
            INVALID_PARAM,
            "NV_ENC_INITIALIZE_PARAMS.reservedBitFields must be 0",
        ));
    }
    check_codec(&p.encodeGUID)?;
    let (preset, implied) =
        preset_index(&p.presetGUID).ok_or_else(|| unknown_preset("presetGUID", &p.presetGUID))?;
    let tuning = match (p.tuningInfo.0, implied) {
        (0, Some(t)) => t,
        (t, _) => t.max(TUNING_HQ),
    };
    let (w, h) = (p.encodeWidth, p.encodeHeight);
    if !(WIDTH_MIN..=WIDTH_MAX).contains(&w) || !(HEIGHT_MIN..=HEIGHT_MAX).contains(&h) {
        return Err(v(INVALID_PARAM, format!("encode size {w}x{h} outside caps {WIDTH_MIN}x{HEIGHT_MIN}..{WIDTH_MAX}x{HEIGHT_MAX}")));
    }
    if p.frameRateNum == 0 || p.frameRateDen == 0 {
        return Err(v(
            INVALID_PARAM,
            format!(
                "frame rate {}/{} must be non-zero",
                p.frameRateNum, p.frameRateDen
            ),
        ));
    }
    if p.enableEncodeAsync != 0 {
        return Err(v(NVENCSTATUS::NV_ENC_ERR_UNSUPPORTED_PARAM, "enableEncodeAsync must be 0: asynchronous mode is not supported on Linux (ASYNC_ENCODE_SUPPORT = 0)"));
    }
    if p.enableMEOnlyMode() != 0 {
        return Err(v(
            UNIMPLEMENTED,
            "motion-estimation-only mode is not emulated",
        ));
    }
    if !p.privData.is_null() || p.privDataSize != 0 {
        return Err(v(INVALID_PARAM, "privData/privDataSize must be NULL/0"));
    }
    let (mw, mh) = (p.maxEncodeWidth, p.maxEncodeHeight);
    if (mw != 0 && (mw < w || mw > WIDTH_MAX)) || (mh != 0 && (mh < h || mh > HEIGHT_MAX)) {
        return Err(v(INVALID_PARAM, format!("maxEncodeWidth/Height {mw}x{mh} must be 0 or between {w}x{h} and {WIDTH_MAX}x{HEIGHT_MAX}")));
    }
    let config = if p.encodeConfig.is_null() {
        preset_config(preset, tuning)
    } else {
        // SAFETY: non-null encodeConfig points at the client's NV_ENC_CONFIG (API contract).
        let c = unsafe { &*p.encodeConfig };
        check_version(c.version, nv::NV_ENC_CONFIG_VER, "NV_ENC_CONFIG")?;
        zero_u32(&c.reserved, "NV_ENC_CONFIG.reserved")?;
        zero_ptr(&c.reserved2, "NV_ENC_CONFIG.reserved2")?;
        zero_u32(&c.rcParams.reserved, "NV_ENC_RC_PARAMS.reserved")?;
        // SAFETY: the H.264 member of the union, as selected by encodeGUID (checked above).
        let h264 = unsafe { &c.encodeCodecConfig.h264Config };
        zero_u32(&h264.reserved1, "NV_ENC_CONFIG_H264.reserved1")?;
        zero_ptr(&h264.reserved2, "NV_ENC_CONFIG_H264.reserved2")?;
        *c
    };
    if config.frameIntervalP < 0 || config.frameIntervalP as u32 > MAX_BFRAMES + 1 {
        return Err(v(
            INVALID_PARAM,
            format!(
                "frameIntervalP {} needs {} B-frames; NUM_MAX_BFRAMES is {MAX_BFRAMES}",
                config.frameIntervalP,
                config.frameIntervalP - 1
            ),
        ));
    }
    if p.enableWeightedPrediction() != 0 && config.frameIntervalP > 1 {
        return Err(v(
            INVALID_PARAM,
            "weighted prediction is not supported together with B-frames",
        ));
    }
    if config.monoChromeEncoding != 0 {
        return Err(v(
            INVALID_PARAM,
            "monoChromeEncoding is not supported (SUPPORT_MONOCHROME = 0)",
        ));
    }
    // SAFETY: the H.264 member of the union (encodeGUID is H.264).
    let h264 = unsafe { &config.encodeCodecConfig.h264Config };
    if h264.chromaFormatIDC > 1 {
        return Err(v(
            INVALID_PARAM,
            format!(
                "chromaFormatIDC {} needs YUV444 (SUPPORT_YUV444_ENCODE = 0)",
                h264.chromaFormatIDC
            ),
        ));
    }
    // Lossless is asked for by the tuning (or a legacy lossless preset) or by the transform
    // bypass flag (nvEncodeAPI.h 11.1 line 1433).
    let lossless = tuning == TUNING_LOSSLESS || h264.qpPrimeYZeroTransformBypassFlag() != 0;
    if lossless {
        check_lossless("NV_ENC_INITIALIZE_PARAMS")?;
    }
    let ptd = p.enablePTD != 0;
    let interval = (config.frameIntervalP.max(1)) as u32;
    if !ptd && interval > 1 {
        return Err(v(
            UNIMPLEMENTED,
            "B-frames with enablePTD = 0 (client-side reordering) are not emulated",
        ));
    }
    let gop = config.gopLength;
    let idr = if h264.idrPeriod != 0 {
        h264.idrPeriod
    } else {
        gop
    };
    let idr_period = (idr != nv::NVENC_INFINITE_GOPLENGTH && idr != 0).then_some(idr);
    let rc = &config.rcParams;
    let cbr = rc.rateControlMode == nv::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_CBR;
    let rcm = if rc.rateControlMode == nv::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_CONSTQP {
        Rc::Cqp(if rc.constQP.qpInterP == 0 {
            23
        } else {
            rc.constQP.qpInterP
        })
    } else if !cbr && rc.targetQuality > 0 {
        // API.h: targetQuality is the "Target CQ (Constant Quality) level for VBR mode"; CBR
        // ignores it.
        Rc::Crf(f32::from(rc.targetQuality))
    } else if rc.averageBitRate > 0 {
        let kbps = rc.averageBitRate / 1000;
        // API.h: maxBitRate "is used for VBR and ignored for CBR mode".
        let max = if cbr { kbps } else { rc.maxBitRate / 1000 };
        // API.h: vbvInitialDelay is in bits, like vbvBufferSize; 0 for the default.
        let vbv_init = if rc.vbvBufferSize > 0 && rc.vbvInitialDelay > 0 {
            (rc.vbvInitialDelay as f32 / rc.vbvBufferSize as f32).min(1.0)
        } else {
            0.0
        };
        Rc::Abr {
            kbps,
            max_kbps: max,
            vbv_kbit: rc.vbvBufferSize / 1000,
            vbv_init,
            // API.h: enableFillerDataInsertion "will take effect only when one of the CBR rate
            // control modes ... is in use" (frame rate non-zero is checked above).
            filler: cbr && h264.enableFillerDataInsertion() != 0,
        }
    } else {
        Rc::Crf(23.0)
    };
    // Transform bypass with constant QP 0 is lossless coding (the header's recipe, line 1433),
    // which x264 does at QP 0.
    let cqp0 = rc.rateControlMode == nv::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_CONSTQP
        && rc.constQP.qpInterP == 0
        && rc.constQP.qpIntra == 0;
    let rcm = if lossless && cqp0 { Rc::Cqp(0) } else { rcm };
    let profile = if guid_eq(&config.profileGUID, &nv::NV_ENC_H264_PROFILE_BASELINE_GUID) {
        Some("baseline")
    } else if guid_eq(&config.profileGUID, &nv::NV_ENC_H264_PROFILE_MAIN_GUID) {
        Some("main")
    } else if guid_eq(&config.profileGUID, &nv::NV_ENC_H264_PROFILE_HIGH_GUID) {
        Some("high")
    } else {
        None
    };
    let params = codec::Params {
        width: w,
        height: h,
        fps_num: p.frameRateNum,
        fps_den: p.frameRateDen,
        bframes: interval - 1,
        idr_period,
        rc: rcm,
        profile,
        // NV_ENC_CONFIG_H264::entropyCodingMode: CAVLC where asked for (FFmpeg `-coder cavlc`)
        // or where the profile has no CABAC (Baseline); otherwise CABAC, as NVENC codes Main
        // and High.
        cabac: h264.entropyCodingMode
            != nv::NV_ENC_H264_ENTROPY_CODING_MODE::NV_ENC_H264_ENTROPY_CODING_MODE_CAVLC
            && profile != Some("baseline"),
        // NV_ENC_CONFIG_H264::level (NV_ENC_LEVEL_H264_41 = 41, as x264 numbers them); 0 is
        // autoselect.
        level: (h264.level != 0).then_some(h264.level),
    };
    Ok(Init {
        width: w,
        height: h,
        max_width: if mw == 0 { w } else { mw },
        max_height: if mh == 0 { h } else { mh },
        ptd,
        interval,
        idr_period,
        repeat_sps_pps: h264.repeatSPSPPS() != 0,
        params,
    })
}

fn open_engine(init: &Init) -> Result<Engine, Fail> {
    if fast_mode() {
        Ok(Engine::Fast)
    } else {
        X264Stream::open(&init.params)
            .map(|x| Engine::X264(Box::new(x)))
            .map_err(|e| f(NVENCSTATUS::NV_ENC_ERR_GENERIC, e))
    }
}

unsafe extern "C" fn nvEncInitializeEncoder(
    enc: *mut c_void,
    p: *mut nv::NV_ENC_INITIALIZE_PARAMS,
) -> NVENCSTATUS {
    run("nvEncInitializeEncoder", enc, |g| {
        let s = g.sess(enc)?;
        if s.init.is_some() {
            return Err(v(
                INVALID_CALL,
                "encoder already initialized (use nvEncReconfigureEncoder)",
            ));
        }
        // SAFETY: the client's init params (API contract).
        let p = unsafe { arg(p, "createEncodeParams") }?;
        let init = validate_init(p)?;
        s.engine = Some(open_engine(&init)?);
        s.init = Some(init);
        Ok(ST_SUCCESS)
    })
}

fn need_init(s: &Session) -> Result<&Init, Fail> {
    s.init.as_ref().ok_or_else(|| {
        v(
            NOT_INIT,
            "nvEncInitializeEncoder has not succeeded on this session yet",
        )
    })
}

unsafe extern "C" fn nvEncCreateInputBuffer(
    enc: *mut c_void,
    p: *mut nv::NV_ENC_CREATE_INPUT_BUFFER,
) -> NVENCSTATUS {
    run("nvEncCreateInputBuffer", enc, |g| {
        let h = g.handle(INBUF_BASE);
        let s = g.sess(enc)?;
        need_init(s)?;
        // SAFETY: the client's struct (API contract).
        let p = unsafe { arg(p, "createInputBufferParams") }?;
        check_version(
            p.version,
            nv::NV_ENC_CREATE_INPUT_BUFFER_VER,
            "NV_ENC_CREATE_INPUT_BUFFER",
        )?;
        if p.reserved != 0 {
            return Err(v(
                INVALID_PARAM,
                "NV_ENC_CREATE_INPUT_BUFFER.reserved must be 0",
            ));
        }
        zero_u32(&p.reserved1, "NV_ENC_CREATE_INPUT_BUFFER.reserved1")?;
        zero_ptr(&p.reserved2, "NV_ENC_CREATE_INPUT_BUFFER.reserved2")?;
        if !(1..=WIDTH_MAX).contains(&p.width) || !(1..=HEIGHT_MAX).contains(&p.height) {
            return Err(v(
                INVALID_PARAM,
                format!("input buffer {}x{} outside caps", p.width, p.height),
            ));
        }
        let fmt = fmt_check(p.bufferFmt, "bufferFmt")?;
        let pitch = p.width.div_ceil(INPUT_PITCH_ALIGN) * INPUT_PITCH_ALIGN;
        let (_, total) = fmt.layout(pitch as usize, p.height as usize);
        s.inputs.insert(
            h,
            InputBuf {
                width: p.width,
                height: p.height,
                fmt,
                pitch,
                data: vec![0; total],
                locked: false,
                in_flight: false,
            },
        );
        p.inputBuffer = h as *mut c_void;
        Ok(ST_SUCCESS)
    })
}

unsafe extern "C" fn nvEncDestroyInputBuffer(
    enc: *mut c_void,
    buf: nv::NV_ENC_INPUT_PTR,
) -> NVENCSTATUS {
    run("nvEncDestroyInputBuffer", enc, |g| {
        let s = g.sess(enc)?;
        let b = s.inputs.remove(&(buf as u64)).ok_or_else(|| {
            v(
                INVALID_PARAM,
                format!("{buf:p} is not a live input buffer of this session"),
            )
        })?;
        if b.in_flight {
            return Err(v(
                INVALID_CALL,
                "input buffer destroyed while its frame is still in flight (lock its output first)",
            ));
        }
        if b.locked {
            return Err(v(INVALID_CALL, "input buffer destroyed while locked"));
        }
        Ok(ST_SUCCESS)
    })
}

unsafe extern "C" fn nvEncLockInputBuffer(
    enc: *mut c_void,
    p: *mut nv::NV_ENC_LOCK_INPUT_BUFFER,
) -> NVENCSTATUS {
    run("nvEncLockInputBuffer", enc, |g| {
        let s = g.sess(enc)?;
        // SAFETY: the client's struct (API contract).
        let p = unsafe { arg(p, "lockInputBufferParams") }?;
        check_version(
            p.version,
            nv::NV_ENC_LOCK_INPUT_BUFFER_VER,
            "NV_ENC_LOCK_INPUT_BUFFER",
        )?;
        if p.reservedBitFields() != 0 {
            return Err(v(
                INVALID_PARAM,
                "NV_ENC_LOCK_INPUT_BUFFER.reservedBitFields must be 0",
            ));
        }
        zero_u32(&p.reserved1, "NV_ENC_LOCK_INPUT_BUFFER.reserved1")?;
        zero_ptr(&p.reserved2, "NV_ENC_LOCK_INPUT_BUFFER.reserved2")?;
        let b = s.inputs.get_mut(&(p.inputBuffer as u64)).ok_or_else(|| {
            v(
                INVALID_PARAM,
                format!(
                    "{:p} is not a live input buffer of this session",
                    p.inputBuffer
                ),
            )
        })?;
        if b.locked {
            return Err(v(INVALID_CALL, "input buffer is already locked"));
        }
        if b.in_flight {
            return Err(v(INVALID_CALL, "input buffer locked while its previous frame is still in flight (lock that frame's output first)"));
        }
        b.locked = true;
        p.bufferDataPtr = b.data.as_mut_ptr().cast();
        p.pitch = b.pitch;
        Ok(ST_SUCCESS)
    })
}

unsafe extern "C" fn nvEncUnlockInputBuffer(
    enc: *mut c_void,
    buf: nv::NV_ENC_INPUT_PTR,
) -> NVENCSTATUS {
    run("nvEncUnlockInputBuffer", enc, |g| {
        let s = g.sess(enc)?;
        let b = s.inputs.get_mut(&(buf as u64)).ok_or_else(|| {
            v(
                INVALID_PARAM,
                format!("{buf:p} is not a live input buffer of this session"),
            )
        })?;
        if !b.locked {
            return Err(v(INVALID_CALL, "input buffer is not locked"));
        }
        b.locked = false;
        Ok(ST_SUCCESS)
    })
}

unsafe extern "C" fn nvEncCreateBitstreamBuffer(
    enc: *mut c_void,
    p: *mut nv::NV_ENC_CREATE_BITSTREAM_BUFFER,
) -> NVENCSTATUS {
    run("nvEncCreateBitstreamBuffer", enc, |g| {
        let h = g.handle(BS_BASE);
        let s = g.sess(enc)?;
        need_init(s)?;
        // SAFETY: the client's struct (API contract).
        let p = unsafe { arg(p, "createBitstreamBufferParams") }?;
        check_version(
            p.version,
            nv::NV_ENC_CREATE_BITSTREAM_BUFFER_VER,
            "NV_ENC_CREATE_BITSTREAM_BUFFER",
        )?;
        if p.reserved != 0 {
            return Err(v(
                INVALID_PARAM,
                "NV_ENC_CREATE_BITSTREAM_BUFFER.reserved must be 0",
            ));
        }
        zero_u32(&p.reserved1, "NV_ENC_CREATE_BITSTREAM_BUFFER.reserved1")?;
        zero_ptr(&p.reserved2, "NV_ENC_CREATE_BITSTREAM_BUFFER.reserved2")?;
        s.bitstreams.insert(
            h,
            Bitstream {
                state: BsState::Idle,
                data: Vec::new(),
            },
        );
        p.bitstreamBuffer = h as *mut c_void;
        p.bitstreamBufferPtr = std::ptr::null_mut();
        Ok(ST_SUCCESS)
    })
}

unsafe extern "C" fn nvEncDestroyBitstreamBuffer(
    enc: *mut c_void,
    buf: nv::NV_ENC_OUTPUT_PTR,
) -> NVENCSTATUS {
    run("nvEncDestroyBitstreamBuffer", enc, |g| {
        let s = g.sess(enc)?;
        let b = s.bitstreams.remove(&(buf as u64)).ok_or_else(|| {
            v(
                INVALID_PARAM,
                format!("{buf:p} is not a live bitstream buffer of this session"),
            )
        })?;
        match b.state {
            BsState::Idle => Ok(ST_SUCCESS),
            BsState::Queued => {
                s.queue.retain(|q| q.bs != buf as u64);
                Err(v(INVALID_CALL, "bitstream buffer destroyed while its frame is pending (lock it, or flush with EOS, first)"))
            }
            BsState::Locked => Err(v(INVALID_CALL, "bitstream buffer destroyed while locked")),
        }
    })
}

unsafe extern "C" fn nvEncRegisterResource(
    enc: *mut c_void,
    p: *mut nv::NV_ENC_REGISTER_RESOURCE,
) -> NVENCSTATUS {
    run("nvEncRegisterResource", enc, |g| {
        let h = g.handle(REG_BASE);
        let cuda_ctx = g.sess(enc)?.ctx;
        // SAFETY: the client's struct (API contract).
        let p = unsafe { arg(p, "registerResParams") }?;
        check_version(
            p.version,
            nv::NV_ENC_REGISTER_RESOURCE_VER,
            "NV_ENC_REGISTER_RESOURCE",
        )?;
        zero_u32(&p.reserved1, "NV_ENC_REGISTER_RESOURCE.reserved1")?;
        zero_ptr(&p.reserved2, "NV_ENC_REGISTER_RESOURCE.reserved2")?;
        if !p.pInputFencePoint.is_null() || !p.pOutputFencePoint.is_null() {
            return Err(v(
                INVALID_PARAM,
                "fence points are for D3D12 resources only",
            ));
        }
        match p.resourceType {
            nv::NV_ENC_INPUT_RESOURCE_TYPE::NV_ENC_INPUT_RESOURCE_TYPE_CUDADEVICEPTR => {}
            nv::NV_ENC_INPUT_RESOURCE_TYPE::NV_ENC_INPUT_RESOURCE_TYPE_CUDAARRAY => {
                return Err(f(
                    UNIMPLEMENTED,
                    "CUDA arrays are not emulated (use CUDADEVICEPTR)",
                ))
            }
            t => {
                return Err(v(
                    INVALID_PARAM,
                    format!("resourceType {} is not usable on a CUDA session", t.0),
                ))
            }
        }
        if p.bufferUsage != nv::NV_ENC_BUFFER_USAGE::NV_ENC_INPUT_IMAGE {
            return Err(v(
                INVALID_PARAM,
                format!("bufferUsage {} is not NV_ENC_INPUT_IMAGE", p.bufferUsage.0),
            ));
        }
        if p.subResourceIndex != 0 {
            return Err(v(
                INVALID_PARAM,
                "subResourceIndex must be 0 for CUDA device memory",
            ));
        }
        let fmt = fmt_check(p.bufferFormat, "bufferFormat")?;
        if !(1..=WIDTH_MAX).contains(&p.width) || !(1..=HEIGHT_MAX).contains(&p.height) {
            return Err(v(
                INVALID_PARAM,
                format!("resource {}x{} outside caps", p.width, p.height),
            ));
        }
        if p.pitch < p.width {
            return Err(v(
                INVALID_PARAM,
                format!(
                    "pitch {} is less than the width in bytes {}",
                    p.pitch, p.width
                ),
            ));
        }
        if p.pitch % 4 != 0 {
            return Err(v(
                INVALID_PARAM,
                format!("pitch {} is not a multiple of 4", p.pitch),
            ));
        }
        let ptr = p.resourceToRegister as u64;
        let (_, total) = fmt.layout(p.pitch as usize, p.height as usize);
        let cuda = g
            .cuda
            .as_ref()
            .ok_or_else(|| f(NVENCSTATUS::NV_ENC_ERR_GENERIC, "CUDA not loaded"))?;
        let (start, size) = cuda.range(cuda_ctx, ptr).map_err(|e| {
            v(
                NVENCSTATUS::NV_ENC_ERR_RESOURCE_REGISTER_FAILED,
                format!("resourceToRegister: {e}"),
            )
        })?;
        let avail = (start + size as u64).saturating_sub(ptr);
        if (total as u64) > avail {
            return Err(v(
                NVENCSTATUS::NV_ENC_ERR_RESOURCE_REGISTER_FAILED,
                format!("{fmt:?} {}x{} at pitch {} needs {total} bytes, but only {avail} remain in the allocation at {start:#x}", p.width, p.height, p.pitch),
            ));
        }
        let s = g.sess(enc)?;
        s.regs.insert(
            h,
            Reg {
                ptr,
                width: p.width,
                height: p.height,
                pitch: p.pitch,
                fmt,
                mapped: None,
            },
        );
        p.registeredResource = h as *mut c_void;
        Ok(ST_SUCCESS)
    })
}

unsafe extern "C" fn nvEncUnregisterResource(
    enc: *mut c_void,
    reg: nv::NV_ENC_REGISTERED_PTR,
) -> NVENCSTATUS {
    run("nvEncUnregisterResource", enc, |g| {
        let s = g.sess(enc)?;
        let r = s.regs.get(&(reg as u64)).ok_or_else(|| {
            v(
                INVALID_PARAM,
                format!("{reg:p} is not a registered resource of this session"),
            )
        })?;
        if r.mapped.is_some() {
            return Err(v(
                INVALID_CALL,
                "resource unregistered while still mapped (unmap it first)",
            ));
        }
        s.regs.remove(&(reg as u64));
        Ok(ST_SUCCESS)
    })
}

unsafe extern "C" fn nvEncMapInputResource(
    enc: *mut c_void,
    p: *mut nv::NV_ENC_MAP_INPUT_RESOURCE,
) -> NVENCSTATUS {
    run("nvEncMapInputResource", enc, |g| {
        let h = g.handle(MAP_BASE);
        let s = g.sess(enc)?;
        // SAFETY: the client's struct (API contract).
        let p = unsafe { arg(p, "mapInputResParams") }?;
        check_version(
            p.version,
            nv::NV_ENC_MAP_INPUT_RESOURCE_VER,
            "NV_ENC_MAP_INPUT_RESOURCE",
        )?;
        zero_u32(&p.reserved1, "NV_ENC_MAP_INPUT_RESOURCE.reserved1")?;
        zero_ptr(&p.reserved2, "NV_ENC_MAP_INPUT_RESOURCE.reserved2")?;
        let reg = p.registeredResource as u64;
        let r = s.regs.get_mut(&reg).ok_or_else(|| {
            v(
                NVENCSTATUS::NV_ENC_ERR_RESOURCE_NOT_REGISTERED,
                format!("{reg:#x} is not a registered resource of this session"),
            )
        })?;
        if r.mapped.is_some() {
            return Err(v(
                NVENCSTATUS::NV_ENC_ERR_MAP_FAILED,
                "resource is already mapped (unmap it after its output was locked)",
            ));
        }
        r.mapped = Some(h);
        p.mappedResource = h as *mut c_void;
        p.mappedBufferFmt = r.fmt.raw();
        s.maps.insert(
            h,
            Mapped {
                reg,
                in_flight: false,
            },
        );
        Ok(ST_SUCCESS)
    })
}

unsafe extern "C" fn nvEncUnmapInputResource(
    enc: *mut c_void,
    mapped: nv::NV_ENC_INPUT_PTR,
) -> NVENCSTATUS {
    run("nvEncUnmapInputResource", enc, |g| {
        let s = g.sess(enc)?;
        let m = s.maps.get(&(mapped as u64)).ok_or_else(|| {
            v(
                NVENCSTATUS::NV_ENC_ERR_RESOURCE_NOT_MAPPED,
                format!("{mapped:p} is not a mapped resource of this session"),
            )
        })?;
        if m.in_flight {
            return Err(v(
                INVALID_CALL,
                "input unmapped before nvEncLockBitstream returned for its frame",
            ));
        }
        let reg = m.reg;
        s.maps.remove(&(mapped as u64));
        if let Some(r) = s.regs.get_mut(&reg) {
            r.mapped = None;
        }
        Ok(ST_SUCCESS)
    })
}

/// Reads the pixels of a submitted input.
fn read_input(
    cuda: Option<&cuda::Cuda>,
    s: &Session,
    input: InputRef,
) -> Result<(Vec<u8>, Fmt, u32, u32), Fail> {
    match input {
        InputRef::Buf(h) => {
            let b = &s.inputs[&h];
            Ok((b.data.clone(), b.fmt, b.pitch, b.height))
        }
        InputRef::Map(h) => {
            let r = &s.regs[&s.maps[&h].reg];
            let (_, total) = r.fmt.layout(r.pitch as usize, r.height as usize);
            let mut data = vec![0u8; total];
            let cuda = cuda.ok_or_else(|| f(NVENCSTATUS::NV_ENC_ERR_GENERIC, "CUDA not loaded"))?;
            cuda.read(s.ctx, r.ptr, &mut data).map_err(|e| {
                v(NVENCSTATUS::NV_ENC_ERR_MAP_FAILED, format!("reading the registered surface failed (was its memory freed while registered?): {e}"))
            })?;
            Ok((data, r.fmt, r.pitch, r.height))
        }
    }
}

/// Gives coded pictures to the oldest submissions that have none yet.
fn assign(s: &mut Session, coded: impl IntoIterator<Item = Coded>) {
    for c in coded {
        if let Some(sub) = s.queue.iter_mut().find(|q| q.coded.is_none()) {
            sub.coded = Some(c);
        }
    }
}

unsafe extern "C" fn nvEncEncodePicture(
    enc: *mut c_void,
    p: *mut nv::NV_ENC_PIC_PARAMS,
) -> NVENCSTATUS {
    run("nvEncEncodePicture", enc, |g| {
        let cuda = g.cuda.clone();
        let s = g.sess(enc)?;
        // SAFETY: the client's struct (API contract).
        let p = unsafe { arg(p, "encodePicParams") }?;
        check_version(p.version, nv::NV_ENC_PIC_PARAMS_VER, "NV_ENC_PIC_PARAMS")?;
        zero_u32(&p.reserved1, "NV_ENC_PIC_PARAMS.reserved1")?;
        zero_ptr(&p.reserved2, "NV_ENC_PIC_PARAMS.reserved2")?;
        zero_u32(&p.reserved3, "NV_ENC_PIC_PARAMS.reserved3")?;
        zero_ptr(&p.reserved4, "NV_ENC_PIC_PARAMS.reserved4")?;
        if p.reservedBitFields != 0 {
            return Err(v(
                INVALID_PARAM,
                "NV_ENC_PIC_PARAMS.reservedBitFields must be 0",
            ));
        }
        if !p.completionEvent.is_null() {
            return Err(v(
                INVALID_PARAM,
                "completionEvent must be NULL in synchronous mode",
            ));
        }
        let init = need_init(s)?;
        let flags = p.encodePicFlags;
        let eos = flags & nv::NV_ENC_PIC_FLAGS::NV_ENC_PIC_FLAG_EOS.0 != 0;
        if eos {
            if !p.inputBuffer.is_null() || !p.outputBitstream.is_null() {
                return Err(v(
                    INVALID_PARAM,
                    "an EOS picture must carry no input or output buffer",
                ));
            }
            flush(s)?;
            return Ok(ST_SUCCESS);
        }
        let force_idr = flags & nv::NV_ENC_PIC_FLAGS::NV_ENC_PIC_FLAG_FORCEIDR.0 != 0;
        if force_idr && !init.ptd {
            return Err(v(
                INVALID_PARAM,
                "NV_ENC_PIC_FLAG_FORCEIDR requires enablePTD = 1",
            ));
        }
        if p.pictureStruct != nv::NV_ENC_PIC_STRUCT::NV_ENC_PIC_STRUCT_FRAME {
            return Err(v(
                INVALID_PARAM,
                format!(
                    "pictureStruct {} is not NV_ENC_PIC_STRUCT_FRAME",
                    p.pictureStruct.0
                ),
            ));
        }
        let out_h = p.outputBitstream as u64;
        let bs = s.bitstreams.get(&out_h).ok_or_else(|| {
            v(
                INVALID_PARAM,
                format!("outputBitstream {out_h:#x} is not a bitstream buffer of this session"),
            )
        })?;
        if bs.state != BsState::Idle {
            return Err(v(
                INVALID_CALL,
                "outputBitstream is still pending or locked from an earlier frame",
            ));
        }
        let in_h = p.inputBuffer as u64;
        let (input, width, height, pitch, fmt) = if let Some(b) = s.inputs.get(&in_h) {
            if b.locked {
                return Err(v(
                    INVALID_CALL,
                    "input buffer is still locked (nvEncUnlockInputBuffer first)",
                ));
            }
            if b.in_flight {
                return Err(v(
                    INVALID_CALL,
                    "input buffer reused before the output of its previous frame was locked",
                ));
            }
            (InputRef::Buf(in_h), b.width, b.height, b.pitch, b.fmt)
        } else if let Some(m) = s.maps.get(&in_h) {
            if m.in_flight {
                return Err(v(
                    INVALID_CALL,
                    "mapped input reused before the output of its previous frame was locked",
                ));
            }
            let r = &s.regs[&m.reg];
            (InputRef::Map(in_h), r.width, r.height, r.pitch, r.fmt)
        } else if s.regs.contains_key(&in_h) {
            return Err(v(NVENCSTATUS::NV_ENC_ERR_RESOURCE_NOT_MAPPED, "inputBuffer is a registered resource; pass the mappedResource from nvEncMapInputResource"));
        } else {
            return Err(v(INVALID_PARAM, format!("inputBuffer {in_h:#x} is neither a mapped resource nor an input buffer of this session")));
        };
        // 0x0 means "the input's own size": FFmpeg 5.1 leaves both 0 for mapped CUDA frames
        // and works on real drivers, so only a non-zero size that disagrees is refused.
        let sized = p.inputWidth != 0 || p.inputHeight != 0;
        if sized && (p.inputWidth != width || p.inputHeight != height) {
            return Err(v(
                INVALID_PARAM,
                format!(
                    "inputWidth/Height {}x{} differ from the input's {width}x{height}",
                    p.inputWidth, p.inputHeight
                ),
            ));
        }
        // nvEncodeAPI.h 11.1 line 1916: "If pitch value is not known, set this to inputWidth";
        // NVIDIA's sample encoder class (NvEncoder) leaves it 0. 0, inputWidth (as passed, or
        // the input's width when inputWidth is 0) and the real pitch are accepted.
        let width_given = if p.inputWidth != 0 {
            p.inputWidth
        } else {
            width
        };
        if p.inputPitch != 0 && p.inputPitch != pitch && p.inputPitch != width_given {
            return Err(v(
                INVALID_PARAM,
                format!(
                    "inputPitch {} is neither 0, inputWidth {width_given} nor the input's pitch {pitch}",
                    p.inputPitch
                ),
            ));
        }
        if Fmt::from(p.bufferFmt) != Some(fmt) {
            return Err(v(
                INVALID_PARAM,
                format!(
                    "bufferFmt {:#x} differs from the input's format {fmt:?}",
                    p.bufferFmt.0
                ),
            ));
        }
        if width < init.width || height < init.height {
            return Err(v(
                INVALID_PARAM,
                format!(
                    "input {width}x{height} is smaller than the encode size {}x{}",
                    init.width, init.height
                ),
            ));
        }
        // Decide NVENC's picture structure.
        let (interval, idr_period) = (init.interval, init.idr_period);
        let is_idr =
            s.serial == 0 || force_idr || idr_period.is_some_and(|k| s.since_idr >= u64::from(k));
        let anchor = is_idr || s.since_anchor + 1 >= interval;
        let display_type = if is_idr {
            codec::PIC_IDR
        } else if anchor {
            codec::PIC_P
        } else {
            codec::PIC_B
        };
        if flags & nv::NV_ENC_PIC_FLAGS::NV_ENC_PIC_FLAG_OUTPUT_SPSPPS.0 != 0 {
            s.force_headers = true;
        }
        let serial = s.serial;
        s.serial += 1;
        s.since_idr = if is_idr { 1 } else { s.since_idr + 1 };
        s.since_anchor = if anchor { 0 } else { s.since_anchor + 1 };
        s.meta.insert(
            serial,
            FrameMeta {
                ts: p.inputTimeStamp,
                dur: p.inputDuration,
                frame_idx: p.frameIdx,
            },
        );
        // Encode.
        let engine = s
            .engine
            .as_mut()
            .ok_or_else(|| f(NVENCSTATUS::NV_ENC_ERR_GENERIC, "no engine"))?;
        let mut produced = Vec::new();
        match engine {
            Engine::Fast => {
                s.fast_pending.push(serial);
                if anchor {
                    // NVENC's decode order: the anchor, then the B-pictures before it.
                    let a = s.fast_pending.pop().unwrap_or(serial);
                    produced.push(fast_coded(display_type, a));
                    for b in s.fast_pending.drain(..) {
                        produced.push(fast_coded(codec::PIC_B, b));
                    }
                }
            }
            Engine::X264(_) => {
                let (data, fmt, pitch, h) = read_input(cuda.as_deref(), s, input)?;
                let (planes, _) = fmt.layout(pitch as usize, h as usize);
                let pic = Picture {
                    data: &data,
                    csp: fmt.csp(),
                    planes,
                };
                if let Some(Engine::X264(x)) = s.engine.as_mut() {
                    produced.extend(
                        x.encode(&pic, serial, display_type)
                            .map_err(|e| f(NVENCSTATUS::NV_ENC_ERR_GENERIC, e))?,
                    );
                }
            }
        }
        s.queue.push_back(Submission {
            bs: out_h,
            ready: false,
            input,
            coded: None,
        });
        if let Some(b) = s.bitstreams.get_mut(&out_h) {
            b.state = BsState::Queued;
        }
        match input {
            InputRef::Buf(h) => {
                if let Some(b) = s.inputs.get_mut(&h) {
                    b.in_flight = true;
                }
            }
            InputRef::Map(h) => {
                if let Some(m) = s.maps.get_mut(&h) {
                    m.in_flight = true;
                }
            }
        }
        assign(s, produced);
        if anchor {
            for q in s.queue.iter_mut() {
                q.ready = true;
            }
            Ok(ST_SUCCESS)
        } else {
            Ok(NVENCSTATUS::NV_ENC_ERR_NEED_MORE_INPUT)
        }
    })
}

/// A fast-mode picture.
fn fast_coded(pic_type: u32, serial: u64) -> Coded {
    static HDR: LazyLock<std::sync::Arc<Vec<u8>>> =
        LazyLock::new(|| std::sync::Arc::new(codec::FAST_HEADERS.to_vec()));
    Coded {
        nals: codec::FAST_AU.to_vec(),
        pic_type,
        serial,
        headers: HDR.clone(),
        first: false,
    }
}

/// EOS: everything pending becomes ready; x264 is drained.
fn flush(s: &mut Session) -> Result<(), Fail> {
    let mut produced = Vec::new();
    match s.engine.as_mut() {
        Some(Engine::Fast) => {
            for b in s.fast_pending.drain(..) {
                produced.push(fast_coded(codec::PIC_P, b));
            }
        }
        Some(Engine::X264(x)) => {
            produced = x
                .finish()
                .map_err(|e| f(NVENCSTATUS::NV_ENC_ERR_GENERIC, e))?;
        }
        None => {}
    }
    assign(s, produced);
    for q in s.queue.iter_mut() {
        q.ready = true;
    }
    Ok(())
}

unsafe extern "C" fn nvEncLockBitstream(
    enc: *mut c_void,
    p: *mut nv::NV_ENC_LOCK_BITSTREAM,
) -> NVENCSTATUS {
    run("nvEncLockBitstream", enc, |g| {
        let s = g.sess(enc)?;
        // SAFETY: the client's struct (API contract).
        let p = unsafe { arg(p, "lockBitstreamBufferParams") }?;
        check_version(
            p.version,
            nv::NV_ENC_LOCK_BITSTREAM_VER,
            "NV_ENC_LOCK_BITSTREAM",
        )?;
        if p.reservedBitFields() != 0 {
            return Err(v(
                INVALID_PARAM,
                "NV_ENC_LOCK_BITSTREAM.reservedBitFields must be 0",
            ));
        }
        zero_u32(&p.reserved, "NV_ENC_LOCK_BITSTREAM.reserved")?;
        zero_u32(&p.reserved1, "NV_ENC_LOCK_BITSTREAM.reserved1")?;
        zero_ptr(&p.reserved2, "NV_ENC_LOCK_BITSTREAM.reserved2")?;
        let h = p.outputBitstream as u64;
        let state = s.bitstreams.get(&h).map(|b| b.state).ok_or_else(|| {
            v(
                INVALID_PARAM,
                format!("{h:#x} is not a bitstream buffer of this session"),
            )
        })?;
        match state {
            BsState::Idle => {
                // What a driver does here is not documented; one client's notes (RIVET,
                // NVENC-NOTES 17) report a 13.x driver busy-waiting forever, so never block.
                return Err(v(INVALID_CALL, "locking a bitstream buffer that carries no submitted frame (undefined by the API; drivers have been reported to wait forever here)"));
            }
            BsState::Locked => {
                return Err(v(
                    NVENCSTATUS::NV_ENC_ERR_LOCK_BUSY,
                    "bitstream buffer is already locked",
                ))
            }
            BsState::Queued => {}
        }
        let pos = s
            .queue
            .iter()
            .position(|q| q.bs == h)
            .ok_or_else(|| f(NVENCSTATUS::NV_ENC_ERR_GENERIC, "queue out of sync"))?;
        if pos != 0 {
            return Err(v(INVALID_CALL, format!("outputs must be locked in submission order: {pos} earlier output(s) are still unlocked")));
        }
        if !s.queue[0].ready && p.doNotWait() != 0 {
            // Polling is allowed; the frame is simply not done yet.
            return Err(f(
                NVENCSTATUS::NV_ENC_ERR_LOCK_BUSY,
                "frame not ready yet (doNotWait)",
            ));
        }
        if !s.queue[0].ready {
            return Err(v(
                INVALID_CALL,
                "locking an output whose frame returned NV_ENC_ERR_NEED_MORE_INPUT before a later submission returned NV_ENC_SUCCESS (nvEncodeAPI.h 11.1, NV_ENC_ERR_NEED_MORE_INPUT: a client in synchronous mode cannot lock it)",
            ));
        }
        // Make sure x264 has coded the picture for this output: a client may lock it as soon
        // as a submission returned NV_ENC_SUCCESS, before libx264's own delay let it out.
        if s.queue[0].coded.is_none() {
            let Some(Engine::X264(x)) = s.engine.as_mut() else {
                return Err(f(
                    NVENCSTATUS::NV_ENC_ERR_GENERIC,
                    "no coded picture for a ready output",
                ));
            };
            let produced = x
                .catch_up()
                .map_err(|e| f(NVENCSTATUS::NV_ENC_ERR_GENERIC, e))?;
            assign(s, produced);
            if s.queue[0].coded.is_none() {
                return Err(f(
                    NVENCSTATUS::NV_ENC_ERR_GENERIC,
                    "x264 produced no picture for a ready output",
                ));
            }
        }
        let Some(sub) = s.queue.pop_front() else {
            return Err(f(NVENCSTATUS::NV_ENC_ERR_GENERIC, "queue out of sync"));
        };
        let Some(coded) = sub.coded else {
            return Err(f(NVENCSTATUS::NV_ENC_ERR_GENERIC, "queue out of sync"));
        };
        match sub.input {
            InputRef::Buf(i) => {
                if let Some(b) = s.inputs.get_mut(&i) {
                    b.in_flight = false;
                }
            }
            InputRef::Map(m) => {
                if let Some(m) = s.maps.get_mut(&m) {
                    m.in_flight = false;
                }
            }
        }
        let meta = s.meta.remove(&coded.serial).unwrap_or(FrameMeta {
            ts: 0,
            dur: 0,
            frame_idx: 0,
        });
        let keyframe = coded.pic_type == codec::PIC_IDR;
        let repeat = s.init.as_ref().is_some_and(|i| i.repeat_sps_pps);
        let need_headers =
            !s.headers_sent || s.force_headers || coded.first || (repeat && keyframe);
        let mut data = Vec::with_capacity(coded.nals.len() + 64);
        if need_headers {
            data.extend_from_slice(&coded.headers);
            s.headers_sent = true;
            s.force_headers = false;
        }
        data.extend_from_slice(&coded.nals);
        let b = s
            .bitstreams
            .get_mut(&h)
            .ok_or_else(|| f(NVENCSTATUS::NV_ENC_ERR_GENERIC, "buffer vanished"))?;
        b.state = BsState::Locked;
        b.data = data;
        p.bitstreamBufferPtr = b.data.as_mut_ptr().cast();
        p.bitstreamSizeInBytes = b.data.len() as u32;
        p.outputTimeStamp = meta.ts;
        p.outputDuration = meta.dur;
        p.frameIdx = meta.frame_idx;
        p.pictureType = nv::NV_ENC_PIC_TYPE(coded.pic_type);
        p.pictureStruct = nv::NV_ENC_PIC_STRUCT::NV_ENC_PIC_STRUCT_FRAME;
        p.hwEncodeStatus = 0;
        p.numSlices = 1;
        p.frameAvgQP = 26;
        s.last_stats = Some((b.data.len() as u32, coded.pic_type));
        Ok(ST_SUCCESS)
    })
}

unsafe extern "C" fn nvEncUnlockBitstream(
    enc: *mut c_void,
    buf: nv::NV_ENC_OUTPUT_PTR,
) -> NVENCSTATUS {
    run("nvEncUnlockBitstream", enc, |g| {
        let s = g.sess(enc)?;
        let b = s.bitstreams.get_mut(&(buf as u64)).ok_or_else(|| {
            v(
                INVALID_PARAM,
                format!("{buf:p} is not a bitstream buffer of this session"),
            )
        })?;
        if b.state != BsState::Locked {
            return Err(v(INVALID_CALL, "bitstream buffer is not locked"));
        }
        b.state = BsState::Idle;
        Ok(ST_SUCCESS)
    })
}

unsafe extern "C" fn nvEncGetEncodeStats(enc: *mut c_void, p: *mut nv::NV_ENC_STAT) -> NVENCSTATUS {
    run("nvEncGetEncodeStats", enc, |g| {
        let s = g.sess(enc)?;
        // SAFETY: the client's struct (API contract).
        let p = unsafe { arg(p, "encodeStats") }?;
        check_version(p.version, nv::NV_ENC_STAT_VER, "NV_ENC_STAT")?;
        let (size, ty) = s.last_stats.unwrap_or((0, 0));
        p.bitStreamSize = size;
        p.picType = ty;
        Ok(ST_SUCCESS)
    })
}

fn write_headers(hdr: &[u8], p: &mut nv::NV_ENC_SEQUENCE_PARAM_PAYLOAD) -> R {
    check_version(
        p.version,
        nv::NV_ENC_SEQUENCE_PARAM_PAYLOAD_VER,
        "NV_ENC_SEQUENCE_PARAM_PAYLOAD",
    )?;
    zero_u32(&p.reserved, "NV_ENC_SEQUENCE_PARAM_PAYLOAD.reserved")?;
    zero_ptr(&p.reserved2, "NV_ENC_SEQUENCE_PARAM_PAYLOAD.reserved2")?;
    if p.spsppsBuffer.is_null() {
        return Err(v(INVALID_PTR, "spsppsBuffer is NULL"));
    }
    if (p.inBufferSize as usize) < hdr.len() {
        return Err(v(
            NVENCSTATUS::NV_ENC_ERR_NOT_ENOUGH_BUFFER,
            format!(
                "inBufferSize {} < {} bytes of SPS/PPS",
                p.inBufferSize,
                hdr.len()
            ),
        ));
    }
    // SAFETY: the client's buffer holds `inBufferSize >= hdr.len()` bytes (API contract).
    unsafe { std::ptr::copy_nonoverlapping(hdr.as_ptr(), p.spsppsBuffer.cast::<u8>(), hdr.len()) };
    // SAFETY: out-pointer per the API.
    unsafe {
        put(
            p.outSPSPPSPayloadSize,
            hdr.len() as u32,
            "outSPSPPSPayloadSize",
        )
    }?;
    Ok(ST_SUCCESS)
}

unsafe extern "C" fn nvEncGetSequenceParams(
    enc: *mut c_void,
    p: *mut nv::NV_ENC_SEQUENCE_PARAM_PAYLOAD,
) -> NVENCSTATUS {
    run("nvEncGetSequenceParams", enc, |g| {
        let s = g.sess(enc)?;
        need_init(s)?;
        // SAFETY: the client's struct (API contract).
        let p = unsafe { arg(p, "sequenceParamPayload") }?;
        let hdr = match s.engine.as_ref() {
            Some(Engine::X264(x)) => x.headers().to_vec(),
            _ => codec::FAST_HEADERS.to_vec(),
        };
        write_headers(&hdr, p)
    })
}

unsafe extern "C" fn nvEncGetSequenceParamEx(
    enc: *mut c_void,
    ip: *mut nv::NV_ENC_INITIALIZE_PARAMS,
    p: *mut nv::NV_ENC_SEQUENCE_PARAM_PAYLOAD,
) -> NVENCSTATUS {
    run("nvEncGetSequenceParamEx", enc, |g| {
        g.sess(enc)?;
        // SAFETY: the client's structs (API contract).
        let ip = unsafe { arg(ip, "encInitParams") }?;
        // SAFETY: as above.
        let p = unsafe { arg(p, "sequenceParamPayload") }?;
        let init = validate_init(ip)?;
        let hdr = match open_engine(&init)? {
            Engine::X264(x) => x.headers().to_vec(),
            Engine::Fast => codec::FAST_HEADERS.to_vec(),
        };
        write_headers(&hdr, p)
    })
}

unsafe extern "C" fn nvEncReconfigureEncoder(
    enc: *mut c_void,
    p: *mut nv::NV_ENC_RECONFIGURE_PARAMS,
) -> NVENCSTATUS {
    run("nvEncReconfigureEncoder", enc, |g| {
        let s = g.sess(enc)?;
        let old = need_init(s)?;
        // SAFETY: the client's struct (API contract).
        let p = unsafe { arg(p, "reInitEncodeParams") }?;
        check_version(
            p.version,
            nv::NV_ENC_RECONFIGURE_PARAMS_VER,
            "NV_ENC_RECONFIGURE_PARAMS",
        )?;
        if p.reserved() != 0 {
            return Err(v(
                INVALID_PARAM,
                "NV_ENC_RECONFIGURE_PARAMS reserved bits must be 0",
            ));
        }
        let new = validate_init(&p.reInitEncodeParams)?;
        if new.width > old.max_width || new.height > old.max_height {
            return Err(v(
                INVALID_PARAM,
                format!(
                    "new size {}x{} exceeds maxEncodeWidth/Height {}x{} given at initialization",
                    new.width, new.height, old.max_width, old.max_height
                ),
            ));
        }
        if new.interval != old.interval {
            return Err(v(
                INVALID_PARAM,
                "frameIntervalP cannot change in a reconfiguration",
            ));
        }
        let keep_max = (old.max_width, old.max_height);
        // A rate change without a reset is a dynamic bit-rate / rate-control-mode change, which
        // the caps advertise (SUPPORT_DYN_BITRATE_CHANGE, SUPPORT_DYN_RCMODE_CHANGE): it applies
        // from the next picture without an IDR. x264 can change rates in place; a change it
        // cannot make in place (another mode) reopens the engine, which costs an IDR the real
        // driver would not emit.
        let rc_changed = old.params.rc != new.params.rc;
        let rc_in_place = rc_changed && old.params.rc.reconfigurable_to(&new.params.rc);
        if rc_changed && !dyn_rate() && p.resetEncoder() == 0 {
            return Err(v(
                NVENCSTATUS::NV_ENC_ERR_UNSUPPORTED_PARAM,
                "a rate-control change without resetEncoder needs SUPPORT_DYN_BITRATE_CHANGE / \
                 SUPPORT_DYN_RCMODE_CHANGE, which this GPU reports as 0 (NVENC_EMU_NO_DYN_RATE)",
            ));
        }
        let needs_new_engine = p.resetEncoder() != 0
            || p.forceIDR() != 0
            || new.width != old.width
            || new.height != old.height
            || !old.params.rc.reconfigurable_to(&new.params.rc);
        if needs_new_engine {
            if s.queue.iter().any(|q| !q.ready) {
                return Err(v(
                    INVALID_CALL,
                    "encoder reset while B-frames are buffered (flush with EOS first)",
                ));
            }
            // Finish what the old encoder holds, then start over with an IDR.
            flush(s)?;
            let produced: Vec<Coded> = Vec::new();
            assign(s, produced);
            if s.queue.iter().any(|q| q.coded.is_none()) {
                return Err(f(
                    NVENCSTATUS::NV_ENC_ERR_GENERIC,
                    "pending outputs without pictures at reset",
                ));
            }
            s.engine = Some(open_engine(&new)?);
            s.serial = s.serial.max(1);
            s.since_idr = u64::MAX / 2;
            s.headers_sent = false;
        } else if rc_in_place {
            if let Some(Engine::X264(x)) = s.engine.as_mut() {
                x.reconfigure(new.params.rc)
                    .map_err(|e| f(NVENCSTATUS::NV_ENC_ERR_GENERIC, e))?;
            }
        }
        let mut new = new;
        new.max_width = keep_max.0;
        new.max_height = keep_max.1;
        s.init = Some(new);
        Ok(ST_SUCCESS)
    })
}

unsafe extern "C" fn nvEncSetIOCudaStreams(
    enc: *mut c_void,
    _i: nv::NV_ENC_CUSTREAM_PTR,
    _o: nv::NV_ENC_CUSTREAM_PTR,
) -> NVENCSTATUS {
    run("nvEncSetIOCudaStreams", enc, |g| {
        need_init(g.sess(enc)?)?;
        Ok(ST_SUCCESS)
    })
}

unsafe extern "C" fn nvEncGetLastErrorString(enc: *mut c_void) -> *const c_char {
    static EMPTY: &[u8] = b"\0";
    let g = lock(&G);
    match g.sessions.get(&(enc as u64)) {
        // The string lives in the session until its next failure or its destruction, as the
        // API documents for the driver's own string.
        Some(s) => s.last_error.as_ptr(),
        None => EMPTY.as_ptr().cast(),
    }
}

unsafe extern "C" fn nvEncDestroyEncoder(enc: *mut c_void) -> NVENCSTATUS {
    run("nvEncDestroyEncoder", enc, |g| {
        if enc.is_null() {
            // The API asks clients to call this even when the open failed; that is fine.
            return Ok(ST_SUCCESS);
        }
        g.sess(enc)?;
        let Some(mut s) = g.sessions.remove(&(enc as u64)) else {
            return Err(f(NVENCSTATUS::NV_ENC_ERR_GENERIC, "session vanished"));
        };
        let mut leaks = Vec::new();
        if !s.maps.is_empty() {
            leaks.push(format!("{} mapped input(s)", s.maps.len()));
        }
        if !s.regs.is_empty() {
            leaks.push(format!("{} registered resource(s)", s.regs.len()));
        }
        if !s.inputs.is_empty() {
            leaks.push(format!("{} input buffer(s)", s.inputs.len()));
        }
        if !s.bitstreams.is_empty() {
            leaks.push(format!("{} bitstream buffer(s)", s.bitstreams.len()));
        }
        let pending = s.queue.len();
        s.engine = None;
        EMU.line(&format!(
            "session_close handle={enc:p} sessions={}",
            g.sessions.len()
        ));
        EMU.line(&g.live_line());
        if !leaks.is_empty() {
            EMU.violation(
                "nvEncDestroyEncoder",
                &format!(
                    "session destroyed with live {} (freed now)",
                    leaks.join(", ")
                ),
            );
        } else if pending > 0 {
            EMU.line(&format!(
                "note entry=nvEncDestroyEncoder pending_outputs={pending}"
            ));
        }
        Ok(ST_SUCCESS)
    })
}

macro_rules! unimplemented_entry {
    ($name:ident ( $($arg:ident : $ty:ty),* ), $why:literal) => {
        unsafe extern "C" fn $name(enc: *mut c_void $(, $arg: $ty)*) -> NVENCSTATUS {
            $(let _ = $arg;)*
            run(stringify!($name), enc, |g| {
                g.sess(enc)?;
                Err(f(UNIMPLEMENTED, $why))
            })
        }
    };
}

unimplemented_entry!(nvEncRegisterAsyncEvent(p: *mut nv::NV_ENC_EVENT_PARAMS), "asynchronous mode is not supported on Linux");
unimplemented_entry!(nvEncUnregisterAsyncEvent(p: *mut nv::NV_ENC_EVENT_PARAMS), "asynchronous mode is not supported on Linux");
unimplemented_entry!(nvEncInvalidateRefFrames(ts: u64), "reference invalidation is not emulated (SUPPORT_REF_PIC_INVALIDATION = 0)");
unimplemented_entry!(nvEncCreateMVBuffer(p: *mut nv::NV_ENC_CREATE_MV_BUFFER), "motion-estimation-only mode is not emulated");
unimplemented_entry!(nvEncDestroyMVBuffer(p: nv::NV_ENC_OUTPUT_PTR), "motion-estimation-only mode is not emulated");
unimplemented_entry!(nvEncRunMotionEstimationOnly(p: *mut nv::NV_ENC_MEONLY_PARAMS), "motion-estimation-only mode is not emulated");

// ---------------------------------------------------------------------------------------------
// Control API and exit report

/// Number of violations recorded in this process by the emulated NVENC.
#[no_mangle]
pub extern "C" fn nvenc_emu_violations() -> u64 {
    EMU.violations()
}

/// Writes the live-handle line (`live_handles sessions=.. input_buffers=.. ...`) NUL-terminated
/// into `buf` (up to `len` bytes); returns the length of the full line.
///
/// # Safety
///
/// `buf` must be null or writable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvenc_emu_live_handles(buf: *mut u8, len: usize) -> usize {
    let line = lock(&G).live_line();
    // SAFETY: forwarded caller contract.
    unsafe { nvenc_emu_common::write_c_buffer(&line, buf, len) }
}

extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(|| {
        if let Ok(g) = G.try_lock() {
            let line = g.live_line();
            drop(g);
            EMU.line(&EMU.calls_line());
            EMU.line(&format!("{line} at=exit"));
        }
    });
}

/// Runs [`at_exit`] at process exit or unload, so the report ends with the final counts.
#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = at_exit;
