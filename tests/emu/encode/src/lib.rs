//! A software stand-in for NVIDIA's `libnvidia-encode` (NVENC API 11.1, H.264 and HEVC), for
//! tests on machines without NVENC.
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
//! is reported unsupported unless `NVENC_EMU_LOSSLESS=1`, and then coded losslessly (x264 at QP 0,
//! x265 in its lossless mode). HEVC has the same sizes and rate control, like a Turing or later
//! GPU: B-frames (4), the middle B-frame as reference, SAO; it lists the Main, Main10 and FREXT
//! profiles, but with 8-bit 4:2:0 input formats only it reports 10-bit and 4:4:4 unsupported and
//! refuses Main10 and FREXT at initialization (module `hevc`).
//!
//! Pixels are read through the CUDA driver API (`dlopen("libcuda.so.1")`: context push,
//! `cuMemcpyDtoH_v2`, `cuPointerGetAttribute`), so this library also runs on top of a *real*
//! libcuda. They are encoded by libx264 (H.264) or libx265 (HEVC; both one thread, fixed B-frame
//! pattern, no lookahead beyond the B-frames) into a real, decodable stream; every output buffer receives the next picture x264 emits in
//! decode order, with the picture type and timestamp of the picture it carries. Frame types are
//! forced to NVENC's pattern (IDR, then anchors every `frameIntervalP` pictures with B-pictures
//! between), so the stream has NVENC's structure. x264 holds `frameIntervalP - 1` pictures longer
//! than NVENC would; a client that keeps outputs unlocked for a while (FFmpeg by default) never
//! notices. A client that locks an output as soon as a submission returned `NV_ENC_SUCCESS`
//! (which the header allows) gets it all the same: the emulator re-encodes the GOP so far with a
//! fresh encoder and drains it (both encoders are deterministic, so the replay reproduces what
//! was already handed out; that is checked byte for byte), and the stream keeps its B-frames. Only where a
//! replay could not reproduce it (a rate control that carries state across GOPs, after a first
//! GOP read back lazily) does the stream continue with a fresh x264 without B-frames, starting
//! with an IDR that carries new SPS/PPS; the stream stays valid either way, and each output's type
//! and timestamp are those of the picture it actually carries.
//! libx265 holds more pictures than libx264 (its lookahead must be longer than the B-frame run,
//! and its frame encoder hands each picture back one call late), so with HEVC B-frames a client
//! that reads outputs back a few frames late (this crate's default of 3) is served by replays of
//! the GOP so far, whose cost grows with the square of the GOP length: tests with HEVC B-frames
//! keep their GOPs short (tens of frames). Without B-frames libx265 runs with its zero-latency
//! tuning and needs no replay.
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
//! HEVC's `NV_ENC_CONFIG_HEVC` rules (chroma format, bit depth and profile against the caps,
//! level and tier values, CU sizes, slice mode, DPB size, LTR, B-frame references, reference
//! counts, reserved fields: module `hevc`, each with its header line); the codec never changes in
//! a reconfiguration; `nvEncSetIOCudaStreams` pointers non-NULL and their streams the NULL stream
//! or live streams of the session's context (asked with `cuStreamGetCtx`);
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
//! | `NVENC_EMU_MAX_SESSIONS` | the `N+1`th concurrent session open on one device fails with `NV_ENC_ERR_OUT_OF_MEMORY` (GeForce limit, counted per GPU) |
//! | `NVENC_EMU_NO_ENCODER` | device ordinals, comma-separated (`1,3`): a session on one of them fails with `NV_ENC_ERR_NO_ENCODE_DEVICE` (a GPU without NVENC in a mixed node; its CUDA works) |
//! | `NVENC_EMU_MAX_API` | `major.minor` reported by `NvEncodeAPIGetMaxSupportedVersion` (default: the header's) |
//! | `NVENC_EMU_NO_DEVICE` | `1`: open fails with `NV_ENC_ERR_NO_ENCODE_DEVICE`; `unsupported`: `NV_ENC_ERR_UNSUPPORTED_DEVICE` |
//! | `NVENC_EMU_LOSSLESS` | `1`: `NV_ENC_CAPS_SUPPORT_LOSSLESS_ENCODE` is 1 and lossless tuning is accepted (default 0: refused) |
//! | `NVENC_EMU_FAST` | `1`: no pixel read-back and no encoding (overhead benchmarks) |
//! | `NVENC_EMU_CODECS` | codecs `nvEncGetEncodeGUIDs` lists, comma-separated (`h264`: a GPU without HEVC); default `h264,hevc` |
//! | `NVENC_EMU_NO_DYN_RATE` | `1`: a GPU without `SUPPORT_DYN_BITRATE_CHANGE` / `SUPPORT_DYN_RCMODE_CHANGE`: a rate change needs `resetEncoder` |
//! | `NVENC_EMU_REPORT` | report file: violations, faults, session open/close, `session_init` (preset, tuning, size, `frame_interval_p`, codec, profile, `idr_period`, `repeat_sps_pps`, rate control; HEVC's tier, DPB size, B-frame reference mode), `session_reconfigure` (codec, rate control, reset, forced IDR), `encode live_handles ...` |
//!
//! Control functions for in-process use: [`nvenc_emu_violations`], [`nvenc_emu_live_handles`].
//!
//! # Source layout
//!
//! One module per group of API objects: `queries` (GUIDs, caps, presets), `init` (sessions and
//! initialization), `buffers` (input and bitstream buffers), `resources` (registration and
//! mapping), `encode` (encoding and output locking), `control` (stats, sequence parameters,
//! reconfiguration, last error, IO streams). `state` holds the sessions and the `run` wrapper,
//! `fail` the shared argument checks, `codec` the x264/x265-backed stream (NVENC's frame types and
//! the B-frame replay), `x264` and `x265` the library handles, `hevc` HEVC's profiles, caps,
//! preset defaults and rules, and `cuda` the driver API calls that read
//! input pixels. This file holds the two exports and the function list.

// The exported functions are C entry points with NVENC's signatures; their safety contract is
// the NVENC API documentation's, which a `# Safety` section on each would only repeat.
#![allow(clippy::missing_safety_doc)]
// The exports keep the C names so that FFmpeg and the nvenc-sys loader find them.
#![allow(non_snake_case)]

mod buffers;
mod codec;
mod control;
mod cuda;
mod encode;
mod fail;
mod hevc;
mod init;
mod queries;
mod resources;
mod state;
mod x264;
mod x265;

use nvenc_emu_common::lock;
use nvenc_sys as nv;
use nvenc_sys::NVENCSTATUS;

use crate::buffers::{
    nvEncCreateBitstreamBuffer, nvEncCreateInputBuffer, nvEncDestroyBitstreamBuffer,
    nvEncDestroyInputBuffer, nvEncLockInputBuffer, nvEncUnlockInputBuffer,
};
use crate::control::{
    nvEncCreateMVBuffer, nvEncDestroyMVBuffer, nvEncGetEncodeStats, nvEncGetLastErrorString,
    nvEncGetSequenceParamEx, nvEncGetSequenceParams, nvEncInvalidateRefFrames,
    nvEncReconfigureEncoder, nvEncRegisterAsyncEvent, nvEncRunMotionEstimationOnly,
    nvEncSetIOCudaStreams, nvEncUnregisterAsyncEvent,
};
use crate::encode::{nvEncEncodePicture, nvEncLockBitstream, nvEncUnlockBitstream};
use crate::fail::{arg, check_version, put, v, INVALID_PARAM, ST_SUCCESS};
use crate::init::{
    nvEncDestroyEncoder, nvEncInitializeEncoder, nvEncOpenEncodeSession, nvEncOpenEncodeSessionEx,
};
use crate::queries::{
    nvEncGetEncodeCaps, nvEncGetEncodeGUIDCount, nvEncGetEncodeGUIDs, nvEncGetEncodePresetConfig,
    nvEncGetEncodePresetConfigEx, nvEncGetEncodePresetCount, nvEncGetEncodePresetGUIDs,
    nvEncGetEncodeProfileGUIDCount, nvEncGetEncodeProfileGUIDs, nvEncGetInputFormatCount,
    nvEncGetInputFormats,
};
use crate::resources::{
    nvEncMapInputResource, nvEncRegisterResource, nvEncUnmapInputResource, nvEncUnregisterResource,
};
use crate::state::{run, EMU, G};

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
