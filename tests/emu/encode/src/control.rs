//! Everything else a session answers: encode stats, SPS/PPS retrieval, reconfiguration, IO
//! streams, the last-error string, and the entry points that are not emulated.

use std::ffi::{c_char, c_void};

use nvenc_emu_common::lock;
use nvenc_sys as nv;
use nvenc_sys::NVENCSTATUS;

use crate::codec::{self, Coded};
use crate::encode::{assign, flush};
use crate::fail::Fail;
use crate::fail::{
    arg, check_version, f, put, v, zero_ptr, zero_u32, INVALID_CALL, INVALID_PARAM, INVALID_PTR, R,
    ST_SUCCESS, UNIMPLEMENTED,
};
use crate::init::{need_init, open_engine, validate_init};
use crate::state::{dyn_rate, run, Engine, Init, Session, EMU, G};

pub(crate) unsafe extern "C" fn nvEncGetEncodeStats(
    enc: *mut c_void,
    p: *mut nv::NV_ENC_STAT,
) -> NVENCSTATUS {
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

pub(crate) fn write_headers(hdr: &[u8], p: &mut nv::NV_ENC_SEQUENCE_PARAM_PAYLOAD) -> R {
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

pub(crate) unsafe extern "C" fn nvEncGetSequenceParams(
    enc: *mut c_void,
    p: *mut nv::NV_ENC_SEQUENCE_PARAM_PAYLOAD,
) -> NVENCSTATUS {
    run("nvEncGetSequenceParams", enc, |g| {
        let s = g.sess(enc)?;
        need_init(s)?;
        // SAFETY: the client's struct (API contract).
        let p = unsafe { arg(p, "sequenceParamPayload") }?;
        let hdr = match s.engine.as_ref() {
            Some(Engine::Coded(x)) => x.headers().to_vec(),
            _ => codec::FAST_HEADERS.to_vec(),
        };
        write_headers(&hdr, p)
    })
}

pub(crate) unsafe extern "C" fn nvEncGetSequenceParamEx(
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
            Engine::Coded(x) => x.headers().to_vec(),
            Engine::Fast => codec::FAST_HEADERS.to_vec(),
        };
        write_headers(&hdr, p)
    })
}

/// Finishes what the session's encoder holds (every pending output gets its picture), then
/// starts a new one for `init`: the next picture is an IDR with new parameter sets.
fn reopen(s: &mut Session, init: &Init) -> Result<(), Fail> {
    flush(s)?;
    let produced: Vec<Coded> = Vec::new();
    assign(s, produced);
    if s.queue.iter().any(|q| q.coded.is_none()) {
        return Err(f(
            NVENCSTATUS::NV_ENC_ERR_GENERIC,
            "pending outputs without pictures at reset",
        ));
    }
    s.engine = Some(open_engine(init)?);
    s.serial = s.serial.max(1);
    s.since_idr = u64::MAX / 2;
    s.headers_sent = false;
    s.reopen_pending = false;
    Ok(())
}

/// A reopen deferred by a rate-control mode change with B-frames in flight, done once no
/// picture waits for an anchor any more; called before each new submission.
pub(crate) fn reopen_deferred(s: &mut Session) -> Result<(), Fail> {
    if !s.reopen_pending || s.queue.iter().any(|q| !q.ready) {
        return Ok(());
    }
    let Some(init) = s.init.take() else {
        return Ok(());
    };
    let done = reopen(s, &init);
    s.init = Some(init);
    done
}

pub(crate) unsafe extern "C" fn nvEncReconfigureEncoder(
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
        if new.codec != old.codec {
            // A reconfiguration continues the session's stream; a configuration incompatible with
            // it fails (nvEncodeAPI.h 11.1 lines 1726-1737), and another codec is the most
            // incompatible there is.
            return Err(v(
                INVALID_PARAM,
                format!(
                    "encodeGUID cannot change in a reconfiguration ({} to {})",
                    old.codec.name(),
                    new.codec.name()
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
        let client_reset = p.resetEncoder() != 0
            || p.forceIDR() != 0
            || new.width != old.width
            || new.height != old.height;
        if needs_new_engine && s.queue.iter().any(|q| !q.ready) {
            if client_reset {
                return Err(v(
                    INVALID_CALL,
                    "encoder reset while B-frames are buffered (flush with EOS first)",
                ));
            }
            // A dynamic rate-control mode change (SUPPORT_DYN_RCMODE_CHANGE) while B-frames
            // wait for their anchor: the GPU applies it from the next picture. The software
            // encoder can neither change its method in place nor be reopened while it holds
            // those pictures, so it is reopened at the first submission after they are out
            // (`reopen_deferred`), with an IDR the real driver would not emit.
            s.reopen_pending = true;
        } else if needs_new_engine {
            reopen(s, &new)?;
        } else if rc_in_place {
            if let Some(Engine::Coded(x)) = s.engine.as_mut() {
                x.reconfigure(new.params.rc)
                    .map_err(|e| f(NVENCSTATUS::NV_ENC_ERR_GENERIC, e))?;
            }
        }
        EMU.line(&format!(
            "session_reconfigure handle={enc:p} codec={} rc={} reset={} force_idr={}",
            new.codec.name(),
            new.params.rc.short(),
            p.resetEncoder(),
            p.forceIDR()
        ));
        let mut new = new;
        new.max_width = keep_max.0;
        new.max_height = keep_max.1;
        s.init = Some(new);
        Ok(ST_SUCCESS)
    })
}

/// `nvEncSetIOCudaStreams`: each argument points at a `CUstream` (nvEncodeAPI.h 11.1 lines
/// 2816-2824), which the driver reads: a NULL pointer is `NV_ENC_ERR_INVALID_PTR` (one of the
/// statuses the header lists for this call, lines 2826-2835). The stream it names must be the
/// NULL stream, `CU_STREAM_LEGACY` / `CU_STREAM_PER_THREAD`, or a live stream of the session's
/// own context (`cuStreamGetCtx`): NVENC's pre- and post-processing runs on it in that context,
/// so anything else is `NV_ENC_ERR_INVALID_PARAM`.
pub(crate) unsafe extern "C" fn nvEncSetIOCudaStreams(
    enc: *mut c_void,
    input: nv::NV_ENC_CUSTREAM_PTR,
    output: nv::NV_ENC_CUSTREAM_PTR,
) -> NVENCSTATUS {
    run("nvEncSetIOCudaStreams", enc, |g| {
        let cuda = g.cuda.clone();
        let s = g.sess(enc)?;
        need_init(s)?;
        for (name, ptr) in [("inputStream", input), ("outputStream", output)] {
            if ptr.is_null() {
                return Err(v(
                    INVALID_PTR,
                    format!(
                        "{name} is NULL; it must point at a CUstream (NULL for the default stream)"
                    ),
                ));
            }
            // SAFETY: a non-null NV_ENC_CUSTREAM_PTR points at a CUstream (API contract).
            let stream = unsafe { ptr.cast::<*mut c_void>().read() } as u64;
            // The NULL stream (0), CU_STREAM_LEGACY (1), CU_STREAM_PER_THREAD (2): the
            // context's own.
            if stream <= 2 {
                continue;
            }
            let Some(owner) = cuda.as_ref().and_then(|c| c.stream_ctx(s.ctx, stream)) else {
                continue;
            };
            match owner {
                Ok(c) if c == s.ctx => {}
                Ok(c) => {
                    return Err(v(
                        INVALID_PARAM,
                        format!(
                            "{name} {stream:#x} belongs to context {c:#x}, not the session's {:#x}",
                            s.ctx
                        ),
                    ))
                }
                Err(e) => {
                    return Err(v(
                        INVALID_PARAM,
                        format!("{name} {stream:#x} is not a live CUDA stream ({e})"),
                    ))
                }
            }
        }
        Ok(ST_SUCCESS)
    })
}

pub(crate) unsafe extern "C" fn nvEncGetLastErrorString(enc: *mut c_void) -> *const c_char {
    static EMPTY: &[u8] = b"\0";
    let g = lock(&G);
    match g.sessions.get(&(enc as u64)) {
        // The string lives in the session until its next failure or its destruction, as the
        // API documents for the driver's own string.
        Some(s) => s.last_error.as_ptr(),
        None => EMPTY.as_ptr().cast(),
    }
}

macro_rules! unimplemented_entry {
    ($name:ident ( $($arg:ident : $ty:ty),* ), $why:literal) => {
        pub(crate) unsafe extern "C" fn $name(enc: *mut c_void $(, $arg: $ty)*) -> NVENCSTATUS {
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
