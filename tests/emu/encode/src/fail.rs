//! How an entry point fails, and the argument checks every entry point shares: struct
//! versions, reserved fields, client pointers, GUIDs.

use std::ffi::c_void;

use nvenc_sys::{GUID, NVENCSTATUS};

pub(crate) const ST_SUCCESS: NVENCSTATUS = NVENCSTATUS::NV_ENC_SUCCESS;

pub(crate) fn st(code: NVENCSTATUS) -> i32 {
    code.0 as i32
}

/// An entry point's failure: status, reason, and whether it is a client violation.
#[derive(Debug)]
pub(crate) struct Fail {
    pub(crate) status: NVENCSTATUS,
    pub(crate) reason: String,
    pub(crate) violation: bool,
}

pub(crate) type R = Result<NVENCSTATUS, Fail>;

/// A client violation.
pub(crate) fn v(status: NVENCSTATUS, reason: impl Into<String>) -> Fail {
    Fail {
        status,
        reason: reason.into(),
        violation: true,
    }
}

/// A legitimate failure (not the client's fault).
pub(crate) fn f(status: NVENCSTATUS, reason: impl Into<String>) -> Fail {
    Fail {
        status,
        reason: reason.into(),
        violation: false,
    }
}

pub(crate) const INVALID_PARAM: NVENCSTATUS = NVENCSTATUS::NV_ENC_ERR_INVALID_PARAM;
pub(crate) const INVALID_CALL: NVENCSTATUS = NVENCSTATUS::NV_ENC_ERR_INVALID_CALL;
pub(crate) const INVALID_VERSION: NVENCSTATUS = NVENCSTATUS::NV_ENC_ERR_INVALID_VERSION;
pub(crate) const INVALID_PTR: NVENCSTATUS = NVENCSTATUS::NV_ENC_ERR_INVALID_PTR;
pub(crate) const UNIMPLEMENTED: NVENCSTATUS = NVENCSTATUS::NV_ENC_ERR_UNIMPLEMENTED;
pub(crate) const NOT_INIT: NVENCSTATUS = NVENCSTATUS::NV_ENC_ERR_ENCODER_NOT_INITIALIZED;

pub(crate) fn guid_eq(a: &GUID, b: &GUID) -> bool {
    a.Data1 == b.Data1 && a.Data2 == b.Data2 && a.Data3 == b.Data3 && a.Data4 == b.Data4
}

/// A GUID the usual way: `{b2dfb705-4ebd-4c49-9b5f-24a777d3e587}`.
pub(crate) fn guid_str(g: &GUID) -> String {
    let d = g.Data4;
    format!(
        "{{{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}}}",
        g.Data1, g.Data2, g.Data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
    )
}

pub(crate) fn check_version(got: u32, want: u32, what: &str) -> Result<(), Fail> {
    if got == want {
        Ok(())
    } else {
        Err(v(
            INVALID_VERSION,
            format!("{what}.version is {got:#x}, expected {want:#x}"),
        ))
    }
}

pub(crate) fn zero_u32(s: &[u32], what: &str) -> Result<(), Fail> {
    match s.iter().position(|&x| x != 0) {
        None => Ok(()),
        Some(i) => Err(v(
            INVALID_PARAM,
            format!("{what}[{i}] is {:#x}, reserved fields must be 0", s[i]),
        )),
    }
}

pub(crate) fn zero_ptr(s: &[*mut c_void], what: &str) -> Result<(), Fail> {
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
pub(crate) unsafe fn arg<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T, Fail> {
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
pub(crate) unsafe fn put<T>(p: *mut T, val: T, what: &str) -> Result<(), Fail> {
    if p.is_null() {
        return Err(v(INVALID_PTR, format!("{what} is NULL")));
    }
    // SAFETY: non-null and writable per the caller's contract.
    unsafe { p.write(val) };
    Ok(())
}
