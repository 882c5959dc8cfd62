//! `cuGetErrorName` and `cuGetErrorString` for the statuses this driver returns.

use std::ffi::c_char;

use nvenc_emu_common::guard;

use crate::state::EMU;
use crate::status::*;

pub(crate) fn error_name(e: i32) -> &'static [u8] {
    match e {
        SUCCESS => b"CUDA_SUCCESS\0",
        INVALID_VALUE => b"CUDA_ERROR_INVALID_VALUE\0",
        OUT_OF_MEMORY => b"CUDA_ERROR_OUT_OF_MEMORY\0",
        NOT_INITIALIZED => b"CUDA_ERROR_NOT_INITIALIZED\0",
        NO_DEVICE => b"CUDA_ERROR_NO_DEVICE\0",
        INVALID_DEVICE => b"CUDA_ERROR_INVALID_DEVICE\0",
        INVALID_CONTEXT => b"CUDA_ERROR_INVALID_CONTEXT\0",
        INVALID_HANDLE => b"CUDA_ERROR_INVALID_HANDLE\0",
        NOT_READY => b"CUDA_ERROR_NOT_READY\0",
        NOT_SUPPORTED => b"CUDA_ERROR_NOT_SUPPORTED\0",
        PEER_ACCESS_UNSUPPORTED => b"CUDA_ERROR_PEER_ACCESS_UNSUPPORTED\0",
        PEER_ACCESS_NOT_ENABLED => b"CUDA_ERROR_PEER_ACCESS_NOT_ENABLED\0",
        _ => b"CUDA_ERROR_UNKNOWN\0",
    }
}

pub(crate) fn error_text(e: i32) -> &'static [u8] {
    match e {
        SUCCESS => b"no error\0",
        INVALID_VALUE => b"invalid argument\0",
        OUT_OF_MEMORY => b"out of memory\0",
        NOT_INITIALIZED => b"initialization error\0",
        NO_DEVICE => b"no CUDA-capable device is detected\0",
        INVALID_DEVICE => b"invalid device ordinal\0",
        INVALID_CONTEXT => b"invalid device context\0",
        INVALID_HANDLE => b"invalid resource handle\0",
        NOT_READY => b"device not ready\0",
        NOT_SUPPORTED => b"operation not supported\0",
        PEER_ACCESS_UNSUPPORTED => b"peer access is not supported between these two devices\0",
        PEER_ACCESS_NOT_ENABLED => b"peer access has not been enabled\0",
        _ => b"unknown error\0",
    }
}

/// `cuGetErrorName` (works before `cuInit`).
#[no_mangle]
pub unsafe extern "C" fn cuGetErrorName(e: i32, out: *mut *const c_char) -> i32 {
    guard(&EMU, "cuGetErrorName", UNKNOWN, || {
        out!("cuGetErrorName", out, error_name(e).as_ptr().cast());
        SUCCESS
    })
}

/// `cuGetErrorString` (works before `cuInit`).
#[no_mangle]
pub unsafe extern "C" fn cuGetErrorString(e: i32, out: *mut *const c_char) -> i32 {
    guard(&EMU, "cuGetErrorString", UNKNOWN, || {
        out!("cuGetErrorString", out, error_text(e).as_ptr().cast());
        SUCCESS
    })
}
