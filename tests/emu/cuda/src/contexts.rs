//! Contexts: the primary context (retain, release, flags, state, reset), created contexts, the
//! per-thread context stack, and peer access (one device, and a device is never its own peer).

use std::ffi::{c_int, c_uint, c_void};

use crate::devices::check_dev;
use crate::state::{bad, current_ctx, need_ctx, state, Ctx, CTX_BASE, CTX_STACK, EMU};
use crate::status::*;

pub(crate) fn primary_retain(out: *mut *mut c_void, dev: c_int) -> i32 {
    if let Err(e) = check_dev("cuDevicePrimaryCtxRetain", dev) {
        return e;
    }
    if out.is_null() {
        return bad(
            "cuDevicePrimaryCtxRetain",
            INVALID_VALUE,
            "NULL output pointer",
        );
    }
    let mut st = state();
    let h = match st.primary.get(&dev) {
        Some(&h) => h,
        None => {
            let h = st.new_handle(CTX_BASE);
            st.ctxs.insert(
                h,
                Ctx {
                    primary: true,
                    device: dev,
                    refs: 0,
                    alive: false,
                },
            );
            st.primary.insert(dev, h);
            h
        }
    };
    if let Some(c) = st.ctxs.get_mut(&h) {
        c.refs += 1;
        c.alive = true;
    }
    // SAFETY: `out` is non-null and points at a CUcontext slot (API contract).
    unsafe { out.write(h as *mut c_void) };
    SUCCESS
}

/// `cuDevicePrimaryCtxRetain`.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(out: *mut *mut c_void, dev: c_int) -> i32 {
    entry!("cuDevicePrimaryCtxRetain", { primary_retain(out, dev) })
}

pub(crate) fn primary_release(entry: &'static str, dev: c_int) -> i32 {
    if let Err(e) = check_dev(entry, dev) {
        return e;
    }
    let mut st = state();
    let Some(h) = st.primary.get(&dev).copied() else {
        return bad(entry, INVALID_CONTEXT, "primary context was never retained");
    };
    let Some(c) = st.ctxs.get_mut(&h) else {
        return UNKNOWN;
    };
    if c.refs == 0 {
        drop(st);
        return bad(
            entry,
            INVALID_CONTEXT,
            "primary context released more often than retained",
        );
    }
    c.refs -= 1;
    if c.refs == 0 {
        c.alive = false;
        let leak = st.reap(h);
        let line = st.live_line();
        drop(st);
        if let Some(leak) = leak {
            EMU.violation(
                entry,
                &format!("last reference of the primary context released with {leak}"),
            );
        }
        EMU.line(&line);
    }
    SUCCESS
}

/// `cuDevicePrimaryCtxRelease`.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRelease(dev: c_int) -> i32 {
    entry!("cuDevicePrimaryCtxRelease", {
        primary_release("cuDevicePrimaryCtxRelease", dev)
    })
}

/// `cuDevicePrimaryCtxRelease_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRelease_v2(dev: c_int) -> i32 {
    entry!("cuDevicePrimaryCtxRelease_v2", {
        primary_release("cuDevicePrimaryCtxRelease_v2", dev)
    })
}

pub(crate) fn primary_set_flags(entry: &'static str, dev: c_int, flags: c_uint) -> i32 {
    if let Err(e) = check_dev(entry, dev) {
        return e;
    }
    state().primary_flags.insert(dev, flags);
    SUCCESS
}

/// `cuDevicePrimaryCtxSetFlags`.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxSetFlags(dev: c_int, flags: c_uint) -> i32 {
    entry!("cuDevicePrimaryCtxSetFlags", {
        primary_set_flags("cuDevicePrimaryCtxSetFlags", dev, flags)
    })
}

/// `cuDevicePrimaryCtxSetFlags_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxSetFlags_v2(dev: c_int, flags: c_uint) -> i32 {
    entry!("cuDevicePrimaryCtxSetFlags_v2", {
        primary_set_flags("cuDevicePrimaryCtxSetFlags_v2", dev, flags)
    })
}

/// `cuDevicePrimaryCtxGetState`.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxGetState(
    dev: c_int,
    flags: *mut c_uint,
    active: *mut c_int,
) -> i32 {
    entry!("cuDevicePrimaryCtxGetState", {
        if let Err(e) = check_dev("cuDevicePrimaryCtxGetState", dev) {
            return e;
        }
        let st = state();
        let is_active = st.primary.get(&dev).is_some_and(|&h| st.live_ctx(h));
        let f = st.primary_flags.get(&dev).copied().unwrap_or(0);
        drop(st);
        out!("cuDevicePrimaryCtxGetState", flags, f);
        out!("cuDevicePrimaryCtxGetState", active, c_int::from(is_active));
        SUCCESS
    })
}

pub(crate) fn primary_reset(entry: &'static str, dev: c_int) -> i32 {
    if let Err(e) = check_dev(entry, dev) {
        return e;
    }
    let mut st = state();
    if let Some(h) = st.primary.get(&dev).copied() {
        let leak = st.reap(h);
        drop(st);
        if let Some(leak) = leak {
            EMU.violation(entry, &format!("primary context reset with {leak}"));
        }
    }
    SUCCESS
}

/// `cuDevicePrimaryCtxReset`.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxReset(dev: c_int) -> i32 {
    entry!("cuDevicePrimaryCtxReset", {
        primary_reset("cuDevicePrimaryCtxReset", dev)
    })
}

/// `cuDevicePrimaryCtxReset_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxReset_v2(dev: c_int) -> i32 {
    entry!("cuDevicePrimaryCtxReset_v2", {
        primary_reset("cuDevicePrimaryCtxReset_v2", dev)
    })
}

/// `cuCtxCreate_v2`: creates a context and makes it current.
#[no_mangle]
pub unsafe extern "C" fn cuCtxCreate_v2(out: *mut *mut c_void, _flags: c_uint, dev: c_int) -> i32 {
    entry!("cuCtxCreate_v2", {
        if let Err(e) = check_dev("cuCtxCreate_v2", dev) {
            return e;
        }
        if out.is_null() {
            return bad("cuCtxCreate_v2", INVALID_VALUE, "NULL output pointer");
        }
        let mut st = state();
        let h = st.new_handle(CTX_BASE);
        st.ctxs.insert(
            h,
            Ctx {
                primary: false,
                device: dev,
                refs: 1,
                alive: true,
            },
        );
        drop(st);
        CTX_STACK.with(|s| s.borrow_mut().push(h));
        // SAFETY: `out` is non-null and points at a CUcontext slot (API contract).
        unsafe { out.write(h as *mut c_void) };
        SUCCESS
    })
}

/// `cuCtxDestroy_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuCtxDestroy_v2(ctx: *mut c_void) -> i32 {
    entry!("cuCtxDestroy_v2", {
        let h = ctx as u64;
        let mut st = state();
        match st.ctxs.get_mut(&h) {
            Some(c) if c.alive && !c.primary => {
                c.alive = false;
                c.refs = 0;
            }
            Some(c) if c.primary => {
                drop(st);
                return bad(
                    "cuCtxDestroy_v2",
                    INVALID_CONTEXT,
                    "cannot destroy a primary context",
                );
            }
            _ => {
                drop(st);
                return bad(
                    "cuCtxDestroy_v2",
                    INVALID_CONTEXT,
                    &format!("{h:#x} is not a live context"),
                );
            }
        }
        let leak = st.reap(h);
        let line = st.live_line();
        drop(st);
        // The real driver pops a destroyed context off the calling thread's stack.
        CTX_STACK.with(|s| s.borrow_mut().retain(|&c| c != h));
        if let Some(leak) = leak {
            EMU.violation("cuCtxDestroy_v2", &format!("context destroyed with {leak}"));
        }
        EMU.line(&line);
        SUCCESS
    })
}

pub(crate) fn check_live_ctx(entry: &'static str, h: u64) -> Result<(), i32> {
    if state().live_ctx(h) {
        Ok(())
    } else {
        Err(bad(
            entry,
            INVALID_CONTEXT,
            &format!("{h:#x} is not a live context"),
        ))
    }
}

/// `cuCtxPushCurrent_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuCtxPushCurrent_v2(ctx: *mut c_void) -> i32 {
    entry!("cuCtxPushCurrent_v2", {
        if let Err(e) = check_live_ctx("cuCtxPushCurrent_v2", ctx as u64) {
            return e;
        }
        CTX_STACK.with(|s| s.borrow_mut().push(ctx as u64));
        SUCCESS
    })
}

/// `cuCtxPopCurrent_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuCtxPopCurrent_v2(out: *mut *mut c_void) -> i32 {
    entry!("cuCtxPopCurrent_v2", {
        match CTX_STACK.with(|s| s.borrow_mut().pop()) {
            Some(h) => {
                if !out.is_null() {
                    // SAFETY: non-null `out` points at a CUcontext slot (API contract).
                    unsafe { out.write(h as *mut c_void) };
                }
                SUCCESS
            }
            None => bad(
                "cuCtxPopCurrent_v2",
                INVALID_CONTEXT,
                "no current context to pop",
            ),
        }
    })
}

/// `cuCtxSetCurrent`: replaces the top of the stack (NULL empties it).
#[no_mangle]
pub unsafe extern "C" fn cuCtxSetCurrent(ctx: *mut c_void) -> i32 {
    entry!("cuCtxSetCurrent", {
        let h = ctx as u64;
        if h != 0 {
            if let Err(e) = check_live_ctx("cuCtxSetCurrent", h) {
                return e;
            }
        }
        CTX_STACK.with(|s| {
            let mut s = s.borrow_mut();
            s.pop();
            if h != 0 {
                s.push(h);
            }
        });
        SUCCESS
    })
}

/// `cuCtxGetCurrent`.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCurrent(out: *mut *mut c_void) -> i32 {
    entry!("cuCtxGetCurrent", {
        let h = current_ctx().unwrap_or(0);
        out!("cuCtxGetCurrent", out, h as *mut c_void);
        SUCCESS
    })
}

/// `cuCtxGetDevice`.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetDevice(out: *mut c_int) -> i32 {
    entry!("cuCtxGetDevice", {
        let st = state();
        let device = match need_ctx("cuCtxGetDevice", &st) {
            Ok(ctx) => st.ctxs.get(&ctx).map_or(0, |c| c.device),
            Err(e) => return e,
        };
        drop(st);
        out!("cuCtxGetDevice", out, device);
        SUCCESS
    })
}

/// `cuCtxSynchronize`: everything is synchronous already.
#[no_mangle]
pub unsafe extern "C" fn cuCtxSynchronize() -> i32 {
    entry!("cuCtxSynchronize", {
        match need_ctx("cuCtxSynchronize", &state()) {
            Ok(_) => SUCCESS,
            Err(e) => e,
        }
    })
}

/// `cuCtxSetLimit`: accepted and ignored.
#[no_mangle]
pub unsafe extern "C" fn cuCtxSetLimit(_limit: c_int, _value: usize) -> i32 {
    entry!("cuCtxSetLimit", {
        match need_ctx("cuCtxSetLimit", &state()) {
            Ok(_) => SUCCESS,
            Err(e) => e,
        }
    })
}

/// `cuCtxGetStreamPriorityRange`.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetStreamPriorityRange(
    least: *mut c_int,
    greatest: *mut c_int,
) -> i32 {
    entry!("cuCtxGetStreamPriorityRange", {
        if !least.is_null() {
            // SAFETY: non-null out-pointer to an int (API contract).
            unsafe { least.write(0) };
        }
        if !greatest.is_null() {
            // SAFETY: non-null out-pointer to an int (API contract).
            unsafe { greatest.write(-5) };
        }
        SUCCESS
    })
}

/// `cuDeviceCanAccessPeer`: 0. The driver answers 0 when a device is asked about itself (peer
/// access is between two different devices), and the emulated devices (more than one only with
/// `NVENC_EMU_CUDA_DEVICES`) are not peers.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceCanAccessPeer(can: *mut c_int, dev: c_int, peer: c_int) -> i32 {
    entry!("cuDeviceCanAccessPeer", {
        if let Err(e) = check_dev("cuDeviceCanAccessPeer", dev) {
            return e;
        }
        if let Err(e) = check_dev("cuDeviceCanAccessPeer", peer) {
            return e;
        }
        out!("cuDeviceCanAccessPeer", can, 0);
        SUCCESS
    })
}

/// Checks `cuCtx{Enable,Disable}PeerAccess`'s arguments: a current context and a live peer.
pub(crate) fn peer_args(entry: &'static str, peer: *mut c_void) -> Result<(), i32> {
    let st = state();
    need_ctx(entry, &st)?;
    if !st.live_ctx(peer as u64) {
        return Err(bad(
            entry,
            INVALID_CONTEXT,
            &format!("peerContext {peer:p} is not a live context"),
        ));
    }
    Ok(())
}

/// `cuCtxEnablePeerAccess`: every context here is on the one device, whose
/// `cuDeviceCanAccessPeer` with itself is 0, so the driver's answer is
/// `CUDA_ERROR_PEER_ACCESS_UNSUPPORTED` (not a client error: asking is how a client finds out).
#[no_mangle]
pub unsafe extern "C" fn cuCtxEnablePeerAccess(peer: *mut c_void, flags: c_uint) -> i32 {
    entry!("cuCtxEnablePeerAccess", {
        if flags != 0 {
            return bad("cuCtxEnablePeerAccess", INVALID_VALUE, "Flags must be 0");
        }
        match peer_args("cuCtxEnablePeerAccess", peer) {
            Ok(()) => PEER_ACCESS_UNSUPPORTED,
            Err(e) => e,
        }
    })
}

/// `cuCtxDisablePeerAccess`: access was never enabled (it cannot be here), so
/// `CUDA_ERROR_PEER_ACCESS_NOT_ENABLED`.
#[no_mangle]
pub unsafe extern "C" fn cuCtxDisablePeerAccess(peer: *mut c_void) -> i32 {
    entry!("cuCtxDisablePeerAccess", {
        match peer_args("cuCtxDisablePeerAccess", peer) {
            Ok(()) => PEER_ACCESS_NOT_ENABLED,
            Err(e) => e,
        }
    })
}
