//! Copies between host and device memory (linear, 2D, synchronous and on a stream), memset, and
//! `cuPointerGetAttribute`; every device range is checked against one live allocation.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::state::{bad, need_ctx, state, State, DEVICE_MEM_BASE};
use crate::status::*;

/// Nanoseconds and bytes of every copy this emulator carried out on the CPU: on a GPU the copy
/// engine moves these bytes (a DMA from pinned host memory, or within device memory) and the
/// CPU does not. Reported at exit as `cuda copy_engine ns=.. bytes=..`, so a benchmark can tell
/// its client's own CPU time from the emulated GPU's.
pub(crate) static COPY_ENGINE_NS: AtomicU64 = AtomicU64::new(0);
pub(crate) static COPY_ENGINE_BYTES: AtomicU64 = AtomicU64::new(0);

/// Runs `copy`, the bytes-moving part of a copy entry point, counting it as copy-engine work.
fn copy_engine(bytes: usize, copy: impl FnOnce()) {
    let start = Instant::now();
    copy();
    let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    COPY_ENGINE_NS.fetch_add(ns, Ordering::Relaxed);
    COPY_ENGINE_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
}

/// The `copy_engine` report line.
pub(crate) fn copy_engine_line() -> String {
    format!(
        "copy_engine ns={} bytes={}",
        COPY_ENGINE_NS.load(Ordering::Relaxed),
        COPY_ENGINE_BYTES.load(Ordering::Relaxed)
    )
}

/// Layout of `CUDA_MEMCPY2D` (the `_v2` struct).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_snake_case, missing_docs)]
pub struct CudaMemcpy2D {
    pub srcXInBytes: usize,
    pub srcY: usize,
    pub srcMemoryType: c_uint,
    pub srcHost: *const c_void,
    pub srcDevice: u64,
    pub srcArray: *mut c_void,
    pub srcPitch: usize,
    pub dstXInBytes: usize,
    pub dstY: usize,
    pub dstMemoryType: c_uint,
    pub dstHost: *mut c_void,
    pub dstDevice: u64,
    pub dstArray: *mut c_void,
    pub dstPitch: usize,
    pub WidthInBytes: usize,
    pub Height: usize,
}

pub(crate) const MEMORYTYPE_HOST: c_uint = 1;
pub(crate) const MEMORYTYPE_DEVICE: c_uint = 2;
pub(crate) const MEMORYTYPE_ARRAY: c_uint = 3;
pub(crate) const MEMORYTYPE_UNIFIED: c_uint = 4;

/// One side of a copy, resolved.
#[derive(Clone, Copy)]
pub(crate) enum Side {
    Host(*mut u8),
    Dev(u64),
}

/// Resolves a device range `[addr, addr+len)` into a pointer into its allocation, or records why
/// it is out of bounds.
pub(crate) fn dev_ptr(
    entry: &'static str,
    st: &mut State,
    addr: u64,
    len: usize,
    what: &str,
) -> Result<*mut u8, i32> {
    let Some((base, off)) = st.find(addr) else {
        let hint = if addr < DEVICE_MEM_BASE {
            " (looks like a host pointer, or NULL)"
        } else {
            ""
        };
        return Err(bad(
            entry,
            INVALID_VALUE,
            &format!("{what} {addr:#x} is not inside a live device allocation{hint}"),
        ));
    };
    let Some(a) = st.allocs.get_mut(&base) else {
        return Err(UNKNOWN);
    };
    if off + len > a.data.len() {
        return Err(bad(
            entry,
            INVALID_VALUE,
            &format!(
                "{what} range {addr:#x}+{len} runs {} bytes past the end of the {}-byte allocation at {base:#x}",
                off + len - a.data.len(),
                a.data.len()
            ),
        ));
    }
    Ok(a.data[off..].as_mut_ptr())
}

pub(crate) fn resolve(
    entry: &'static str,
    st: &mut State,
    side: Side,
    len: usize,
    what: &str,
) -> Result<*mut u8, i32> {
    match side {
        Side::Host(p) if p.is_null() && len > 0 => Err(bad(
            entry,
            INVALID_VALUE,
            &format!("{what} host pointer is NULL"),
        )),
        Side::Host(p) => Ok(p),
        Side::Dev(a) => dev_ptr(entry, st, a, len, what),
    }
}

/// Unified addressing: an address inside a device allocation is device memory, anything else host.
pub(crate) fn unified(st: &State, addr: u64) -> Side {
    if st.find(addr).is_some() || (DEVICE_MEM_BASE..st.next_addr).contains(&addr) {
        Side::Dev(addr)
    } else {
        Side::Host(addr as *mut u8)
    }
}

pub(crate) fn check_stream(entry: &'static str, st: &State, s: *mut c_void) -> Result<(), i32> {
    let h = s as u64;
    // NULL, CU_STREAM_LEGACY (1) and CU_STREAM_PER_THREAD (2) are always valid.
    if h <= 2 || st.streams.contains_key(&h) {
        Ok(())
    } else {
        Err(bad(
            entry,
            INVALID_HANDLE,
            &format!("{h:#x} is not a live stream"),
        ))
    }
}

pub(crate) fn copy_linear(
    entry: &'static str,
    dst: Side,
    src: Side,
    n: usize,
    stream: Option<*mut c_void>,
) -> i32 {
    let mut st = state();
    if let Err(e) = need_ctx(entry, &st) {
        return e;
    }
    if let Some(s) = stream {
        if let Err(e) = check_stream(entry, &st, s) {
            return e;
        }
    }
    if n == 0 {
        return SUCCESS;
    }
    let d = match resolve(entry, &mut st, dst, n, "destination") {
        Ok(p) => p,
        Err(e) => return e,
    };
    let s = match resolve(entry, &mut st, src, n, "source") {
        Ok(p) => p,
        Err(e) => return e,
    };
    // SAFETY: device ranges were bounds-checked against their allocations (kept alive by the
    // held lock); host ranges are the caller's, valid for `n` bytes per the API contract. `copy`
    // tolerates overlap (device-to-device within one allocation).
    copy_engine(n, || unsafe { std::ptr::copy(s, d, n) });
    SUCCESS
}

/// `cuMemcpy` (unified addressing).
#[no_mangle]
pub unsafe extern "C" fn cuMemcpy(dst: u64, src: u64, n: usize) -> i32 {
    entry!("cuMemcpy", {
        let (d, s) = {
            let st = state();
            (unified(&st, dst), unified(&st, src))
        };
        copy_linear("cuMemcpy", d, s, n, None)
    })
}

/// `cuMemcpyAsync` (unified addressing; runs synchronously).
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyAsync(dst: u64, src: u64, n: usize, stream: *mut c_void) -> i32 {
    entry!("cuMemcpyAsync", {
        let (d, s) = {
            let st = state();
            (unified(&st, dst), unified(&st, src))
        };
        copy_linear("cuMemcpyAsync", d, s, n, Some(stream))
    })
}

/// `cuMemcpyHtoD_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(dst: u64, src: *const c_void, n: usize) -> i32 {
    entry!("cuMemcpyHtoD_v2", {
        copy_linear(
            "cuMemcpyHtoD_v2",
            Side::Dev(dst),
            Side::Host(src as *mut u8),
            n,
            None,
        )
    })
}

/// `cuMemcpyHtoDAsync_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoDAsync_v2(
    dst: u64,
    src: *const c_void,
    n: usize,
    s: *mut c_void,
) -> i32 {
    entry!("cuMemcpyHtoDAsync_v2", {
        copy_linear(
            "cuMemcpyHtoDAsync_v2",
            Side::Dev(dst),
            Side::Host(src as *mut u8),
            n,
            Some(s),
        )
    })
}

/// `cuMemcpyDtoH_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoH_v2(dst: *mut c_void, src: u64, n: usize) -> i32 {
    entry!("cuMemcpyDtoH_v2", {
        copy_linear(
            "cuMemcpyDtoH_v2",
            Side::Host(dst.cast()),
            Side::Dev(src),
            n,
            None,
        )
    })
}

/// `cuMemcpyDtoHAsync_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoHAsync_v2(
    dst: *mut c_void,
    src: u64,
    n: usize,
    s: *mut c_void,
) -> i32 {
    entry!("cuMemcpyDtoHAsync_v2", {
        copy_linear(
            "cuMemcpyDtoHAsync_v2",
            Side::Host(dst.cast()),
            Side::Dev(src),
            n,
            Some(s),
        )
    })
}

/// `cuMemcpyDtoD_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoD_v2(dst: u64, src: u64, n: usize) -> i32 {
    entry!("cuMemcpyDtoD_v2", {
        copy_linear("cuMemcpyDtoD_v2", Side::Dev(dst), Side::Dev(src), n, None)
    })
}

/// `cuMemcpyDtoDAsync_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoDAsync_v2(dst: u64, src: u64, n: usize, s: *mut c_void) -> i32 {
    entry!("cuMemcpyDtoDAsync_v2", {
        copy_linear(
            "cuMemcpyDtoDAsync_v2",
            Side::Dev(dst),
            Side::Dev(src),
            n,
            Some(s),
        )
    })
}

pub(crate) fn copy_2d(
    entry: &'static str,
    p: *const CudaMemcpy2D,
    stream: Option<*mut c_void>,
) -> i32 {
    if p.is_null() {
        return bad(entry, INVALID_VALUE, "NULL CUDA_MEMCPY2D");
    }
    // SAFETY: non-null pointer to a CUDA_MEMCPY2D (API contract); copied out by value.
    let c = unsafe { p.read() };
    let mut st = state();
    if let Err(e) = need_ctx(entry, &st) {
        return e;
    }
    if let Some(s) = stream {
        if let Err(e) = check_stream(entry, &st, s) {
            return e;
        }
    }
    if c.WidthInBytes == 0 || c.Height == 0 {
        return SUCCESS;
    }
    if c.srcPitch < c.WidthInBytes + c.srcXInBytes && c.Height > 1 {
        return bad(
            entry,
            INVALID_VALUE,
            &format!(
                "srcPitch {} < srcXInBytes + WidthInBytes {}",
                c.srcPitch,
                c.srcXInBytes + c.WidthInBytes
            ),
        );
    }
    if c.dstPitch < c.WidthInBytes + c.dstXInBytes && c.Height > 1 {
        return bad(
            entry,
            INVALID_VALUE,
            &format!(
                "dstPitch {} < dstXInBytes + WidthInBytes {}",
                c.dstPitch,
                c.dstXInBytes + c.WidthInBytes
            ),
        );
    }
    let side = |st: &State,
                ty: c_uint,
                host: *const c_void,
                dev: u64,
                what: &str|
     -> Result<(Side, u64), i32> {
        match ty {
            MEMORYTYPE_HOST => Ok((Side::Host(host as *mut u8), host as u64)),
            MEMORYTYPE_DEVICE => Ok((Side::Dev(dev), dev)),
            MEMORYTYPE_UNIFIED => Ok((unified(st, dev), dev)),
            MEMORYTYPE_ARRAY => Err(bad(
                entry,
                NOT_SUPPORTED,
                &format!("{what}: CUDA arrays are not emulated"),
            )),
            t => Err(bad(
                entry,
                INVALID_VALUE,
                &format!("{what}: memory type {t}"),
            )),
        }
    };
    let (src, src_base) = match side(&st, c.srcMemoryType, c.srcHost, c.srcDevice, "source") {
        Ok(s) => s,
        Err(e) => return e,
    };
    let (dst, dst_base) = match side(&st, c.dstMemoryType, c.dstHost, c.dstDevice, "destination") {
        Ok(s) => s,
        Err(e) => return e,
    };
    // The whole footprint of each side, first byte to last byte, must be in bounds.
    let span = |x: usize, y: usize, pitch: usize| y * pitch + x;
    let src_first = span(c.srcXInBytes, c.srcY, c.srcPitch);
    let dst_first = span(c.dstXInBytes, c.dstY, c.dstPitch);
    let src_len = (c.Height - 1) * c.srcPitch + c.WidthInBytes;
    let dst_len = (c.Height - 1) * c.dstPitch + c.WidthInBytes;
    let src_ptr = match src {
        Side::Dev(_) => resolve(
            entry,
            &mut st,
            Side::Dev(src_base + src_first as u64),
            src_len,
            "source",
        ),
        Side::Host(p) => resolve(
            entry,
            &mut st,
            Side::Host(p.wrapping_add(src_first)),
            src_len,
            "source",
        ),
    };
    let src_ptr = match src_ptr {
        Ok(p) => p,
        Err(e) => return e,
    };
    let dst_ptr = match dst {
        Side::Dev(_) => resolve(
            entry,
            &mut st,
            Side::Dev(dst_base + dst_first as u64),
            dst_len,
            "destination",
        ),
        Side::Host(p) => resolve(
            entry,
            &mut st,
            Side::Host(p.wrapping_add(dst_first)),
            dst_len,
            "destination",
        ),
    };
    let dst_ptr = match dst_ptr {
        Ok(p) => p,
        Err(e) => return e,
    };
    copy_engine(c.Height * c.WidthInBytes, || {
        for row in 0..c.Height {
            // SAFETY: both footprints were bounds-checked above (device) or are the caller's buffers
            // described by the same parameters (host); row `row` starts `row * pitch` bytes in and is
            // `WidthInBytes` long, inside the checked span. `copy` tolerates overlap.
            let (from, to) = (
                src_ptr.wrapping_add(row * c.srcPitch),
                dst_ptr.wrapping_add(row * c.dstPitch),
            );
            // SAFETY: as above: `from` and `to` are row starts inside the checked spans.
            unsafe { std::ptr::copy(from, to, c.WidthInBytes) };
        }
    });
    SUCCESS
}

/// `cuMemcpy2D_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpy2D_v2(p: *const CudaMemcpy2D) -> i32 {
    entry!("cuMemcpy2D_v2", { copy_2d("cuMemcpy2D_v2", p, None) })
}

/// `cuMemcpy2DUnaligned_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpy2DUnaligned_v2(p: *const CudaMemcpy2D) -> i32 {
    entry!("cuMemcpy2DUnaligned_v2", {
        copy_2d("cuMemcpy2DUnaligned_v2", p, None)
    })
}

/// `cuMemcpy2DAsync_v2` (runs synchronously).
#[no_mangle]
pub unsafe extern "C" fn cuMemcpy2DAsync_v2(p: *const CudaMemcpy2D, s: *mut c_void) -> i32 {
    entry!("cuMemcpy2DAsync_v2", {
        copy_2d("cuMemcpy2DAsync_v2", p, Some(s))
    })
}

pub(crate) fn memset(
    entry: &'static str,
    dst: u64,
    v: u8,
    n: usize,
    stream: Option<*mut c_void>,
) -> i32 {
    let mut st = state();
    if let Err(e) = need_ctx(entry, &st) {
        return e;
    }
    if let Some(s) = stream {
        if let Err(e) = check_stream(entry, &st, s) {
            return e;
        }
    }
    match dev_ptr(entry, &mut st, dst, n, "destination") {
        Ok(p) => {
            // SAFETY: `[p, p+n)` was bounds-checked inside its allocation, kept alive by the lock.
            unsafe { std::ptr::write_bytes(p, v, n) };
            SUCCESS
        }
        Err(e) => e,
    }
}

/// `cuMemsetD8_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD8_v2(dst: u64, v: u8, n: usize) -> i32 {
    entry!("cuMemsetD8_v2", {
        memset("cuMemsetD8_v2", dst, v, n, None)
    })
}

/// `cuMemsetD8Async`.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD8Async(dst: u64, v: u8, n: usize, s: *mut c_void) -> i32 {
    entry!("cuMemsetD8Async", {
        memset("cuMemsetD8Async", dst, v, n, Some(s))
    })
}

/// `cuPointerGetAttribute`: CONTEXT (1), MEMORY_TYPE (2), DEVICE_POINTER (3), DEVICE_ORDINAL (9),
/// RANGE_START_ADDR (11), RANGE_SIZE (12) of a device pointer.
#[no_mangle]
pub unsafe extern "C" fn cuPointerGetAttribute(data: *mut c_void, attr: c_int, ptr: u64) -> i32 {
    entry!("cuPointerGetAttribute", {
        if data.is_null() {
            return bad("cuPointerGetAttribute", INVALID_VALUE, "NULL data pointer");
        }
        let st = state();
        let Some((base, _)) = st.find(ptr) else {
            // Not an error worth a violation: clients probe pointers this way.
            return INVALID_VALUE;
        };
        let Some(a) = st.allocs.get(&base) else {
            return UNKNOWN;
        };
        /// Writes the attribute value.
        ///
        /// # Safety
        ///
        /// `data` must be non-null and point at writable storage for a `T`.
        unsafe fn put<T>(data: *mut c_void, v: T) {
            // SAFETY: forwarded contract.
            unsafe { data.cast::<T>().write(v) }
        }
        // SAFETY (each arm): `data` is non-null (checked above) and, per the API, points at
        // storage of the attribute's type (CUcontext, unsigned int, CUdeviceptr, int, size_t).
        match attr {
            // SAFETY: see above.
            1 => unsafe { put(data, a.ctx as *mut c_void) },
            // SAFETY: see above.
            2 => unsafe { put::<c_uint>(data, MEMORYTYPE_DEVICE) },
            // SAFETY: see above.
            3 | 11 => unsafe { put::<u64>(data, if attr == 3 { ptr } else { base }) },
            // SAFETY: see above.
            9 => unsafe { put::<c_int>(data, 0) },
            // SAFETY: see above.
            12 => unsafe { put::<usize>(data, a.data.len()) },
            _ => return NOT_SUPPORTED,
        }
        SUCCESS
    })
}
