//! Streams and events. A stream runs every operation synchronously, so it is always idle.

use std::ffi::{c_int, c_uint, c_void};

use crate::copies::check_stream;
use crate::state::{bad, need_ctx, state, Event, Stream, EVENT_BASE, STREAM_BASE};
use crate::status::*;

pub(crate) fn stream_create(entry: &'static str, out: *mut *mut c_void) -> i32 {
    if out.is_null() {
        return bad(entry, INVALID_VALUE, "NULL output pointer");
    }
    let mut st = state();
    let ctx = match need_ctx(entry, &st) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let h = st.new_handle(STREAM_BASE);
    st.streams.insert(h, Stream { ctx });
    drop(st);
    // SAFETY: `out` is non-null and points at a CUstream slot (API contract).
    unsafe { out.write(h as *mut c_void) };
    SUCCESS
}

/// `cuStreamCreate`.
#[no_mangle]
pub unsafe extern "C" fn cuStreamCreate(out: *mut *mut c_void, _flags: c_uint) -> i32 {
    entry!("cuStreamCreate", { stream_create("cuStreamCreate", out) })
}

/// `cuStreamCreateWithPriority`.
#[no_mangle]
pub unsafe extern "C" fn cuStreamCreateWithPriority(
    out: *mut *mut c_void,
    _flags: c_uint,
    _prio: c_int,
) -> i32 {
    entry!("cuStreamCreateWithPriority", {
        stream_create("cuStreamCreateWithPriority", out)
    })
}

/// `cuStreamDestroy_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuStreamDestroy_v2(s: *mut c_void) -> i32 {
    entry!("cuStreamDestroy_v2", {
        if state().streams.remove(&(s as u64)).is_some() {
            SUCCESS
        } else {
            bad(
                "cuStreamDestroy_v2",
                INVALID_HANDLE,
                &format!("{s:p} is not a live stream"),
            )
        }
    })
}

/// `cuStreamDestroy`, the unversioned name a real `libcuda.so.1` still exports beside
/// `cuStreamDestroy_v2` (GStreamer's CUDA loader resolves it): the same call.
#[no_mangle]
pub unsafe extern "C" fn cuStreamDestroy(s: *mut c_void) -> i32 {
    entry!("cuStreamDestroy", {
        if state().streams.remove(&(s as u64)).is_some() {
            SUCCESS
        } else {
            bad(
                "cuStreamDestroy",
                INVALID_HANDLE,
                &format!("{s:p} is not a live stream"),
            )
        }
    })
}

pub(crate) fn stream_noop(entry: &'static str, s: *mut c_void) -> i32 {
    match check_stream(entry, &state(), s) {
        Ok(()) => SUCCESS,
        Err(e) => e,
    }
}

/// `cuStreamSynchronize`.
#[no_mangle]
pub unsafe extern "C" fn cuStreamSynchronize(s: *mut c_void) -> i32 {
    entry!("cuStreamSynchronize", {
        stream_noop("cuStreamSynchronize", s)
    })
}

/// `cuStreamGetCtx` (public since CUDA 9.2): the context a stream belongs to. A live stream
/// answers its own context; the NULL stream, `CU_STREAM_LEGACY` and `CU_STREAM_PER_THREAD`
/// belong to the calling thread's current context (`CUDA_ERROR_INVALID_CONTEXT` without one).
/// Errors as the other stream calls: a handle that is not a live stream is
/// `CUDA_ERROR_INVALID_HANDLE`, a NULL out pointer `CUDA_ERROR_INVALID_VALUE`.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetCtx(s: *mut c_void, pctx: *mut *mut c_void) -> i32 {
    entry!("cuStreamGetCtx", {
        let st = state();
        if let Err(e) = check_stream("cuStreamGetCtx", &st, s) {
            return e;
        }
        let ctx = match st.streams.get(&(s as u64)) {
            Some(stream) => stream.ctx,
            None => match need_ctx("cuStreamGetCtx", &st) {
                Ok(c) => c,
                Err(e) => return e,
            },
        };
        drop(st);
        out!("cuStreamGetCtx", pctx, ctx as *mut c_void);
        SUCCESS
    })
}

/// `cuStreamQuery`: always complete.
#[no_mangle]
pub unsafe extern "C" fn cuStreamQuery(s: *mut c_void) -> i32 {
    entry!("cuStreamQuery", { stream_noop("cuStreamQuery", s) })
}

/// `cuStreamWaitEvent`.
#[no_mangle]
pub unsafe extern "C" fn cuStreamWaitEvent(s: *mut c_void, ev: *mut c_void, _flags: c_uint) -> i32 {
    entry!("cuStreamWaitEvent", {
        let st = state();
        if let Err(e) = check_stream("cuStreamWaitEvent", &st, s) {
            return e;
        }
        if !st.events.contains_key(&(ev as u64)) {
            drop(st);
            return bad(
                "cuStreamWaitEvent",
                INVALID_HANDLE,
                &format!("{ev:p} is not a live event"),
            );
        }
        SUCCESS
    })
}

/// `cuEventCreate`.
#[no_mangle]
pub unsafe extern "C" fn cuEventCreate(out: *mut *mut c_void, _flags: c_uint) -> i32 {
    entry!("cuEventCreate", {
        if out.is_null() {
            return bad("cuEventCreate", INVALID_VALUE, "NULL output pointer");
        }
        let mut st = state();
        let ctx = match need_ctx("cuEventCreate", &st) {
            Ok(c) => c,
            Err(e) => return e,
        };
        let h = st.new_handle(EVENT_BASE);
        st.events.insert(
            h,
            Event {
                ctx,
                recorded_at: None,
            },
        );
        drop(st);
        // SAFETY: `out` is non-null and points at a CUevent slot (API contract).
        unsafe { out.write(h as *mut c_void) };
        SUCCESS
    })
}

pub(crate) fn with_event<R>(
    entry: &'static str,
    ev: *mut c_void,
    f: impl FnOnce(&mut Event) -> R,
) -> Result<R, i32> {
    let mut st = state();
    match st.events.get_mut(&(ev as u64)) {
        Some(e) => Ok(f(e)),
        None => {
            drop(st);
            Err(bad(
                entry,
                INVALID_HANDLE,
                &format!("{ev:p} is not a live event"),
            ))
        }
    }
}

/// `cuEventRecord`.
#[no_mangle]
pub unsafe extern "C" fn cuEventRecord(ev: *mut c_void, s: *mut c_void) -> i32 {
    entry!("cuEventRecord", {
        if let Err(e) = check_stream("cuEventRecord", &state(), s) {
            return e;
        }
        match with_event("cuEventRecord", ev, |e| {
            e.recorded_at = Some(std::time::Instant::now())
        }) {
            Ok(()) => SUCCESS,
            Err(e) => e,
        }
    })
}

/// `cuEventSynchronize`.
#[no_mangle]
pub unsafe extern "C" fn cuEventSynchronize(ev: *mut c_void) -> i32 {
    entry!("cuEventSynchronize", {
        with_event("cuEventSynchronize", ev, |_| SUCCESS).unwrap_or_else(|e| e)
    })
}

/// `cuEventQuery`.
#[no_mangle]
pub unsafe extern "C" fn cuEventQuery(ev: *mut c_void) -> i32 {
    entry!("cuEventQuery", {
        with_event("cuEventQuery", ev, |_| SUCCESS).unwrap_or_else(|e| e)
    })
}

/// `cuEventDestroy_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuEventDestroy_v2(ev: *mut c_void) -> i32 {
    entry!("cuEventDestroy_v2", {
        if state().events.remove(&(ev as u64)).is_some() {
            SUCCESS
        } else {
            bad(
                "cuEventDestroy_v2",
                INVALID_HANDLE,
                &format!("{ev:p} is not a live event"),
            )
        }
    })
}

pub(crate) fn elapsed(entry: &'static str, ms: *mut f32, a: *mut c_void, b: *mut c_void) -> i32 {
    let st = state();
    let (Some(ea), Some(eb)) = (st.events.get(&(a as u64)), st.events.get(&(b as u64))) else {
        drop(st);
        return bad(entry, INVALID_HANDLE, "not a live event");
    };
    let (Some(ta), Some(tb)) = (ea.recorded_at, eb.recorded_at) else {
        return NOT_READY;
    };
    drop(st);
    let d = if tb >= ta {
        (tb - ta).as_secs_f32() * 1000.0
    } else {
        -((ta - tb).as_secs_f32() * 1000.0)
    };
    out!("cuEventElapsedTime", ms, d);
    SUCCESS
}

/// `cuEventElapsedTime`.
#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime(ms: *mut f32, a: *mut c_void, b: *mut c_void) -> i32 {
    entry!("cuEventElapsedTime", {
        elapsed("cuEventElapsedTime", ms, a, b)
    })
}

/// `cuEventElapsedTime_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime_v2(
    ms: *mut f32,
    a: *mut c_void,
    b: *mut c_void,
) -> i32 {
    entry!("cuEventElapsedTime_v2", {
        elapsed("cuEventElapsedTime_v2", ms, a, b)
    })
}
