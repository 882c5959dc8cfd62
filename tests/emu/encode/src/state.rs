//! The driver's state: handle bases, the caps limits, sessions and the objects they own
//! (input buffers, bitstream buffers, registrations, mappings, submissions), and [`run`], which
//! every entry point goes through (fault injection, panic guard, violation report, last error).

use std::collections::{HashMap, VecDeque};
use std::ffi::{c_void, CString};
use std::sync::{LazyLock, Mutex};

use nvenc_emu_common::{guard, lock, Emu};
use nvenc_sys as nv;
use nvenc_sys::NVENCSTATUS;

use crate::codec::{self, Coded, CodedStream};
use crate::cuda;
use crate::fail::{st, v, Fail, INVALID_PARAM, INVALID_PTR, R};

pub(crate) static EMU: LazyLock<Emu> = LazyLock::new(|| Emu::from_env("encode"));
pub(crate) static G: LazyLock<Mutex<Global>> = LazyLock::new(|| Mutex::new(Global::default()));

pub(crate) const ENC_BASE: u64 = 0x00e0_0000_0000;
pub(crate) const INBUF_BASE: u64 = 0x00e1_0000_0000;
pub(crate) const BS_BASE: u64 = 0x00e2_0000_0000;
pub(crate) const REG_BASE: u64 = 0x00e3_0000_0000;
pub(crate) const MAP_BASE: u64 = 0x00e4_0000_0000;
pub(crate) const STRIDE: u64 = 0x40;

/// Caps the emulated hardware reports.
pub(crate) const WIDTH_MAX: u32 = 4096;
pub(crate) const HEIGHT_MAX: u32 = 4096;
pub(crate) const WIDTH_MIN: u32 = 33;
pub(crate) const HEIGHT_MIN: u32 = 17;
pub(crate) const MAX_BFRAMES: u32 = 4;
/// Input-buffer pitch alignment (a client that assumes pitch == width is caught).
pub(crate) const INPUT_PITCH_ALIGN: u32 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fmt {
    Nv12,
    Yv12,
    Iyuv,
}

impl Fmt {
    pub(crate) fn from(f: nv::NV_ENC_BUFFER_FORMAT) -> Option<Self> {
        match f {
            nv::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_NV12 => Some(Self::Nv12),
            nv::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_YV12 => Some(Self::Yv12),
            nv::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_IYUV => Some(Self::Iyuv),
            _ => None,
        }
    }

    pub(crate) fn raw(self) -> nv::NV_ENC_BUFFER_FORMAT {
        match self {
            Self::Nv12 => nv::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_NV12,
            Self::Yv12 => nv::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_YV12,
            Self::Iyuv => nv::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_IYUV,
        }
    }

    /// Plane (offset, stride) list and total bytes of a frame with luma pitch `pitch`.
    pub(crate) fn layout(self, pitch: usize, height: usize) -> (Vec<(usize, usize)>, usize) {
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

    pub(crate) fn csp(self) -> u32 {
        match self {
            Self::Nv12 => x264_sys::X264_CSP_NV12,
            Self::Yv12 => x264_sys::X264_CSP_YV12,
            Self::Iyuv => x264_sys::X264_CSP_I420,
        }
    }
}

pub(crate) fn fmt_check(f: nv::NV_ENC_BUFFER_FORMAT, what: &str) -> Result<Fmt, Fail> {
    Fmt::from(f).ok_or_else(|| v(INVALID_PARAM, format!("{what} {:#x} is not among the formats nvEncGetInputFormats lists (NV12, YV12, IYUV)", f.0)))
}

#[derive(Debug)]
pub(crate) struct InputBuf {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) fmt: Fmt,
    pub(crate) pitch: u32,
    pub(crate) data: Vec<u8>,
    pub(crate) locked: bool,
    pub(crate) in_flight: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BsState {
    Idle,
    Queued,
    Locked,
}

#[derive(Debug)]
pub(crate) struct Bitstream {
    pub(crate) state: BsState,
    pub(crate) data: Vec<u8>,
}

#[derive(Debug)]
pub(crate) struct Reg {
    pub(crate) ptr: u64,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) pitch: u32,
    pub(crate) fmt: Fmt,
    pub(crate) mapped: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct Mapped {
    pub(crate) reg: u64,
    pub(crate) in_flight: bool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum InputRef {
    Buf(u64),
    Map(u64),
}

#[derive(Debug)]
pub(crate) struct Submission {
    pub(crate) bs: u64,
    pub(crate) ready: bool,
    pub(crate) input: InputRef,
    pub(crate) coded: Option<Coded>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameMeta {
    pub(crate) ts: u64,
    pub(crate) dur: u64,
    pub(crate) frame_idx: u32,
}

#[derive(Debug)]
pub(crate) struct Init {
    /// The preset asked for: 0 for P1 .. 6 for P7 (a legacy preset, the P-preset it stands for).
    pub(crate) preset: usize,
    /// `tuningInfo` as it applies (a legacy preset's implied tuning where the client gave none).
    pub(crate) tuning: u32,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) max_width: u32,
    pub(crate) max_height: u32,
    pub(crate) ptd: bool,
    /// `frameIntervalP` (1 = no B-frames).
    pub(crate) interval: u32,
    pub(crate) idr_period: Option<u32>,
    pub(crate) repeat_sps_pps: bool,
    /// The codec (`encodeGUID`).
    pub(crate) codec: codec::Codec,
    /// What an HEVC session's `NV_ENC_CONFIG_HEVC` asked for (`None` for H.264).
    pub(crate) hevc: Option<crate::hevc::Fields>,
    pub(crate) params: codec::Params,
}

#[derive(Debug)]
pub(crate) enum Engine {
    Coded(Box<CodedStream>),
    Fast,
}

#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) ctx: u64,
    /// The CUDA device ordinal of `ctx`: the GPU whose session limit this session counts in.
    pub(crate) device: i32,
    pub(crate) init: Option<Init>,
    pub(crate) inputs: HashMap<u64, InputBuf>,
    pub(crate) bitstreams: HashMap<u64, Bitstream>,
    pub(crate) regs: HashMap<u64, Reg>,
    pub(crate) maps: HashMap<u64, Mapped>,
    pub(crate) queue: VecDeque<Submission>,
    pub(crate) engine: Option<Engine>,
    /// Metadata of submitted pictures by serial number.
    pub(crate) meta: HashMap<u64, FrameMeta>,
    pub(crate) serial: u64,
    pub(crate) since_idr: u64,
    pub(crate) since_anchor: u32,
    /// Fast mode: pictures waiting for their anchor (serial, type).
    pub(crate) fast_pending: Vec<u64>,
    pub(crate) headers_sent: bool,
    pub(crate) force_headers: bool,
    /// A rate-control mode change arrived while B-frames waited for their anchor: the encoder
    /// is reopened at the next submission after they are out (`control::reopen_deferred`).
    pub(crate) reopen_pending: bool,
    pub(crate) last_error: CString,
    pub(crate) last_stats: Option<(u32, u32)>,
}

#[derive(Debug, Default)]
pub(crate) struct Global {
    pub(crate) next_id: u64,
    pub(crate) sessions: HashMap<u64, Session>,
    pub(crate) cuda: Option<std::sync::Arc<cuda::Cuda>>,
}

impl Global {
    pub(crate) fn handle(&mut self, base: u64) -> u64 {
        self.next_id += 1;
        base + self.next_id * STRIDE
    }

    pub(crate) fn live_line(&self) -> String {
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

    pub(crate) fn sess(&mut self, enc: *mut c_void) -> Result<&mut Session, Fail> {
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
pub(crate) fn dyn_rate() -> bool {
    !std::env::var("NVENC_EMU_NO_DYN_RATE").is_ok_and(|v| v == "1")
}

pub(crate) fn fast_mode() -> bool {
    std::env::var("NVENC_EMU_FAST").is_ok_and(|v| v == "1")
}

/// Runs an NVENC entry point: fault injection, panic guard, violation recording, last error.
pub(crate) fn run(
    entry: &'static str,
    enc: *mut c_void,
    body: impl FnOnce(&mut Global) -> R,
) -> NVENCSTATUS {
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
