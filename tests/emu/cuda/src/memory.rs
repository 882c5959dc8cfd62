//! Allocation: device memory (linear and pitched, at fake addresses with a guard gap after each
//! allocation) and pinned host memory.

use std::ffi::{c_uint, c_void};

use crate::state::{bad, need_ctx, state, Alloc, GUARD, PITCH_ALIGN};
use crate::status::*;

pub(crate) fn alloc(entry: &'static str, out: *mut u64, bytes: usize) -> i32 {
    if out.is_null() {
        return bad(entry, INVALID_VALUE, "NULL output pointer");
    }
    if bytes == 0 {
        return bad(entry, INVALID_VALUE, "zero-byte allocation");
    }
    let mut st = state();
    let ctx = match need_ctx(entry, &st) {
        Ok(c) => c,
        Err(e) => return e,
    };
    if st.mem_used + bytes as u64 > st.mem_limit {
        return OUT_OF_MEMORY;
    }
    let addr = st.next_addr;
    st.next_addr += (bytes as u64).div_ceil(GUARD) * GUARD + GUARD;
    st.mem_used += bytes as u64;
    st.allocs.insert(
        addr,
        Alloc {
            data: vec![0; bytes],
            ctx,
        },
    );
    drop(st);
    // SAFETY: `out` is non-null and points at a CUdeviceptr slot (API contract).
    unsafe { out.write(addr) };
    SUCCESS
}

/// `cuMemAlloc_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemAlloc_v2(out: *mut u64, bytes: usize) -> i32 {
    entry!("cuMemAlloc_v2", { alloc("cuMemAlloc_v2", out, bytes) })
}

/// `cuMemAllocPitch_v2`: the pitch is the width rounded up to 512 bytes.
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocPitch_v2(
    out: *mut u64,
    pitch: *mut usize,
    width_bytes: usize,
    height: usize,
    elem: c_uint,
) -> i32 {
    entry!("cuMemAllocPitch_v2", {
        if !matches!(elem, 4 | 8 | 16) {
            return bad(
                "cuMemAllocPitch_v2",
                INVALID_VALUE,
                &format!("ElementSizeBytes must be 4, 8 or 16, not {elem}"),
            );
        }
        if pitch.is_null() || width_bytes == 0 || height == 0 {
            return bad(
                "cuMemAllocPitch_v2",
                INVALID_VALUE,
                "NULL pitch pointer or empty extent",
            );
        }
        let p = width_bytes.div_ceil(PITCH_ALIGN) * PITCH_ALIGN;
        let r = alloc("cuMemAllocPitch_v2", out, p * height);
        if r == SUCCESS {
            // SAFETY: `pitch` is non-null and points at a size_t (API contract).
            unsafe { pitch.write(p) };
        }
        r
    })
}

/// `cuMemFree_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemFree_v2(ptr: u64) -> i32 {
    entry!("cuMemFree_v2", {
        let mut st = state();
        if let Err(e) = need_ctx("cuMemFree_v2", &st) {
            return e;
        }
        match st.allocs.remove(&ptr) {
            Some(a) => {
                st.mem_used -= a.data.len() as u64;
                SUCCESS
            }
            None => {
                let inside = st.find(ptr).is_some();
                drop(st);
                bad(
                    "cuMemFree_v2",
                    INVALID_VALUE,
                    &if inside {
                        format!("{ptr:#x} points inside an allocation, not at its start")
                    } else {
                        format!("{ptr:#x} is not a live device allocation (double free?)")
                    },
                )
            }
        }
    })
}

pub(crate) fn host_alloc(entry: &'static str, out: *mut *mut c_void, bytes: usize) -> i32 {
    if out.is_null() || bytes == 0 {
        return bad(entry, INVALID_VALUE, "NULL output pointer or zero size");
    }
    let mut st = state();
    if let Err(e) = need_ctx(entry, &st) {
        return e;
    }
    let Ok(layout) = std::alloc::Layout::from_size_align(bytes, 4096) else {
        return OUT_OF_MEMORY;
    };
    // SAFETY: `layout` has a non-zero size (checked above).
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        return OUT_OF_MEMORY;
    }
    st.host_allocs.insert(p as usize, layout);
    drop(st);
    // SAFETY: `out` is non-null and points at a `void *` slot (API contract).
    unsafe { out.write(p.cast()) };
    SUCCESS
}

/// `cuMemHostAlloc`: page-aligned host memory, tracked so leaks are counted.
#[no_mangle]
pub unsafe extern "C" fn cuMemHostAlloc(
    out: *mut *mut c_void,
    bytes: usize,
    _flags: c_uint,
) -> i32 {
    entry!("cuMemHostAlloc", {
        host_alloc("cuMemHostAlloc", out, bytes)
    })
}

/// `cuMemAllocHost_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocHost_v2(out: *mut *mut c_void, bytes: usize) -> i32 {
    entry!("cuMemAllocHost_v2", {
        host_alloc("cuMemAllocHost_v2", out, bytes)
    })
}

/// `cuMemFreeHost`.
#[no_mangle]
pub unsafe extern "C" fn cuMemFreeHost(p: *mut c_void) -> i32 {
    entry!("cuMemFreeHost", {
        let mut st = state();
        match st.host_allocs.remove(&(p as usize)) {
            Some(layout) => {
                drop(st);
                // SAFETY: `p` was returned by `alloc_zeroed` with this layout and was just removed
                // from the live table, so it is freed exactly once.
                unsafe { std::alloc::dealloc(p.cast(), layout) };
                SUCCESS
            }
            None => {
                drop(st);
                bad(
                    "cuMemFreeHost",
                    INVALID_VALUE,
                    &format!("{p:p} is not live pinned host memory"),
                )
            }
        }
    })
}
