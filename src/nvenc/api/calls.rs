//! The NVENC calls that may block, as free functions of the library and a session handle, so
//! they run the same on the caller's thread and on the watchdog's worker.

use std::ffi::{c_void, CStr};
use std::ptr::NonNull;

use nvenc_sys as sys;
use nvenc_sys::{Library, GUID, NVENCSTATUS};

use super::{LockedInfo, Submitted, BUSY_PAUSE, BUSY_RETRIES};
use crate::nvenc::watchdog::Hung;
use crate::nvenc::NvencError;

/// A session handle, for the watchdog's worker thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionPtr(pub(super) NonNull<c_void>);

// SAFETY: an opaque driver handle; the worker uses it only while the owner waits for the call
// (calls on the session are never concurrent), or, once a call hung, only to finish that call,
// and the owner then never touches the session again (it is handed to `Watchdog::abandon`).
unsafe impl Send for SessionPtr {}

/// A call that may block forever, as sent to the watchdog's worker.
// Moved through one fixed slot; boxing the large variant would allocate on every frame.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Blocking {
    /// `nvEncEncodePicture` with these parameters.
    Submit(PicParams),
    /// `nvEncLockBitstream` + copy + `nvEncUnlockBitstream` of this buffer into `out`.
    Lock { buffer: SessionPtr, out: Vec<u8> },
    /// `nvEncGetSequenceParams`.
    SequenceParams,
    /// `nvEncMapInputResource` of this registered resource.
    Map(SessionPtr),
    /// `nvEncUnmapInputResource` of this mapping.
    Unmap(SessionPtr),
    /// `cuStreamSynchronize` of the session's IO stream.
    Synchronize(crate::cuda::Stream),
    /// `cuMemHostAlloc` of a pinned staging buffer of this many bytes, in the session's context.
    Pinned(usize),
    /// `nvEncGetEncodeCaps` of this codec and capability.
    Caps(GUID, sys::NV_ENC_CAPS),
    /// `nvEncReconfigureEncoder` with these parameters (boxed: rare, and its config must stay at
    /// one address while the driver may read it, even past a hang).
    Reconfigure(Box<Reconfigure>),
    /// `cuMemcpy2DAsync` of a frame's planes into an input surface, on the session's IO stream.
    Upload(crate::cuda::PlannedUpload<crate::nvenc::staged::Staged>),
}

/// `NV_ENC_PIC_PARAMS`, to be moved to the worker.
pub(crate) struct PicParams(pub(super) sys::NV_ENC_PIC_PARAMS);

// SAFETY: the struct holds only plain values and opaque handles of the session (input, output),
// which the driver reads during the call; the owner keeps those handles alive past the call (or
// hands them to `Watchdog::abandon` with the session if the call hangs).
unsafe impl Send for PicParams {}

/// What a [`Blocking`] call returned.
pub(crate) enum Unblocked {
    Submitted(Result<Submitted, NvencError>),
    Locked(Result<LockedInfo, NvencError>, Vec<u8>),
    SequenceParams(Result<Vec<u8>, NvencError>),
    Mapped(Result<(SessionPtr, sys::NV_ENC_BUFFER_FORMAT), NvencError>),
    Unmapped(Result<(), NvencError>),
    Synchronized(Result<(), crate::cuda::CudaError>),
    Pinned(Result<crate::cuda::PinnedBuffer, crate::cuda::CudaError>),
    Caps(Result<i32, NvencError>),
    Reconfigured(Result<(), NvencError>),
    Uploaded(
        crate::cuda::Pending<crate::nvenc::staged::Staged>,
        Result<(), crate::cuda::CudaError>,
    ),
}

/// How a call that hung ended, once (if ever) it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LateEnd {
    /// It did what it was asked: a picture was submitted, or an output read and unlocked.
    Succeeded,
    /// It failed: nothing was submitted, or the output was not read.
    Failed,
    /// No reply was seen.
    Unknown,
}

impl LateEnd {
    /// From the reply the watchdog's worker kept for a call that hung.
    pub(crate) fn of(reply: Option<Unblocked>) -> Self {
        match reply {
            Some(
                Unblocked::Submitted(Ok(_))
                | Unblocked::Locked(Ok(_), _)
                | Unblocked::Mapped(Ok(_))
                | Unblocked::Unmapped(Ok(()))
                | Unblocked::Uploaded(_, Ok(())),
            ) => LateEnd::Succeeded,
            Some(_) => LateEnd::Failed,
            None => LateEnd::Unknown,
        }
    }
}

/// A failed call that may block: it failed, or it did not return within the deadline.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The driver returned an error.
    Failed(NvencError),
    /// The call did not return in time; the session must be abandoned, not destroyed.
    Hung(Hung),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Failed(e) => e.fmt(f),
            CallError::Hung(hung) => {
                write!(f, "{} did not return within {:?}", hung.call, hung.deadline)
            }
        }
    }
}

impl From<NvencError> for CallError {
    fn from(e: NvencError) -> Self {
        CallError::Failed(e)
    }
}

/// Runs a blocking call on the watchdog's worker, in the session's `context`.
pub(super) fn run_blocking(
    lib: &Library,
    session: SessionPtr,
    context: &crate::cuda::Context,
    call: Blocking,
) -> Unblocked {
    match call {
        Blocking::Pinned(len) => Unblocked::Pinned(crate::cuda::PinnedBuffer::new(context, len)),
        Blocking::Caps(codec, cap) => Unblocked::Caps(caps_on(lib, session.0.as_ptr(), codec, cap)),
        Blocking::Reconfigure(mut request) => {
            Unblocked::Reconfigured(reconfigure_on(lib, session.0.as_ptr(), &mut request))
        }
        Blocking::Submit(mut params) => {
            Unblocked::Submitted(submit_on(lib, session.0.as_ptr(), &mut params.0))
        }
        Blocking::Lock { buffer, mut out } => {
            let locked = lock_on(lib, session.0.as_ptr(), buffer.0.as_ptr(), &mut out);
            Unblocked::Locked(locked, out)
        }
        Blocking::SequenceParams => {
            Unblocked::SequenceParams(sequence_params_on(lib, session.0.as_ptr()))
        }
        Blocking::Map(resource) => Unblocked::Mapped(map_on(lib, session.0.as_ptr(), resource)),
        Blocking::Unmap(mapped) => {
            Unblocked::Unmapped(unmap_on(lib, session.0.as_ptr(), mapped.0.as_ptr()))
        }
        Blocking::Synchronize(stream) => Unblocked::Synchronized(stream.synchronize()),
        Blocking::Upload(planned) => {
            let (pending, queued) = planned.queue();
            Unblocked::Uploaded(pending, queued)
        }
    }
}

/// `nvEncReconfigureEncoder`'s parameters with the config they point at, owned together.
pub(crate) struct Reconfigure {
    pub(super) params: sys::NV_ENC_RECONFIGURE_PARAMS,
    pub(super) config: sys::NV_ENC_CONFIG,
}

// SAFETY: plain values, and pointers into the session's own initialize parameters or (after
// `reconfigure_on` points it there) into `config`, which moves with the struct; the driver reads
// them only during the call, made by whichever thread holds the struct.
unsafe impl Send for Reconfigure {}

/// `nvEncGetEncodeCaps`.
pub(super) fn caps_on(
    lib: &Library,
    session: *mut c_void,
    codec: GUID,
    cap: sys::NV_ENC_CAPS,
) -> Result<i32, NvencError> {
    let mut param = versioned!(sys::NV_ENC_CAPS_PARAM, sys::NV_ENC_CAPS_PARAM_VER);
    param.capsToQuery = cap;
    let mut value = 0i32;
    // SAFETY: a live session of `lib`; `param` is a valid versioned struct; valid out-pointer.
    let status = unsafe { (lib.fns().get_encode_caps)(session, codec, &mut param, &mut value) };
    if status.is_success() {
        Ok(value)
    } else {
        Err(NvencError::new(
            "nvEncGetEncodeCaps",
            status,
            last_error_of(lib, session),
        ))
    }
}

/// `nvEncReconfigureEncoder` with `request`, its config pointer set to the config it owns.
pub(super) fn reconfigure_on(
    lib: &Library,
    session: *mut c_void,
    request: &mut Reconfigure,
) -> Result<(), NvencError> {
    request.params.reInitEncodeParams.encodeConfig = &mut request.config;
    // SAFETY: a live, initialized session of `lib`; `params` is a valid versioned struct whose
    // `reInitEncodeParams.encodeConfig` points at `request.config`, alive (boxed, not moved)
    // through the call; the driver copies both.
    let status = unsafe { (lib.fns().reconfigure_encoder)(session, &mut request.params) };
    if status.is_success() {
        Ok(())
    } else {
        Err(NvencError::new(
            "nvEncReconfigureEncoder",
            status,
            last_error_of(lib, session),
        ))
    }
}

/// `nvEncMapInputResource` of `resource`, a resource registered with `session`.
pub(super) fn map_on(
    lib: &Library,
    session: *mut c_void,
    resource: SessionPtr,
) -> Result<(SessionPtr, sys::NV_ENC_BUFFER_FORMAT), NvencError> {
    let mut params = versioned!(
        sys::NV_ENC_MAP_INPUT_RESOURCE,
        sys::NV_ENC_MAP_INPUT_RESOURCE_VER
    );
    params.registeredResource = resource.0.as_ptr();
    // SAFETY: a live session of `lib`; a valid versioned struct naming a resource registered by
    // it, which its owner keeps registered past the call.
    let status = unsafe { (lib.fns().map_input_resource)(session, &mut params) };
    if !status.is_success() {
        return Err(NvencError::new(
            "nvEncMapInputResource",
            status,
            last_error_of(lib, session),
        ));
    }
    NonNull::new(params.mappedResource)
        .map(|ptr| (SessionPtr(ptr), params.mappedBufferFmt))
        .ok_or_else(|| {
            NvencError::new(
                "nvEncMapInputResource",
                NVENCSTATUS::NV_ENC_ERR_INVALID_PTR,
                "null mapping".into(),
            )
        })
}

/// `nvEncUnmapInputResource` of `mapped`, a mapping made by `session`.
pub(super) fn unmap_on(
    lib: &Library,
    session: *mut c_void,
    mapped: *mut c_void,
) -> Result<(), NvencError> {
    // SAFETY: a live session of `lib`; the mapping was made by it and is not used again unless
    // this fails (the owner then keeps it, to try again).
    let status = unsafe { (lib.fns().unmap_input_resource)(session, mapped) };
    if status.is_success() {
        Ok(())
    } else {
        Err(NvencError::new(
            "nvEncUnmapInputResource",
            status,
            last_error_of(lib, session),
        ))
    }
}

pub(super) fn mixed_up() -> NvencError {
    NvencError::new(
        "nvenc watchdog",
        NVENCSTATUS::NV_ENC_ERR_GENERIC,
        "the worker answered a different call".into(),
    )
}

/// `nvEncGetLastErrorString` of `session`, or an empty string.
pub(super) fn last_error_of(lib: &Library, session: *mut c_void) -> String {
    // SAFETY: the caller passes a live session handle of `lib`.
    let text = unsafe { (lib.fns().get_last_error_string)(session) };
    if text.is_null() {
        return String::new();
    }
    // SAFETY: the driver returns a NUL-terminated string owned by the session, valid until the
    // next call on it; it is copied out at once.
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .trim()
        .to_owned()
}

/// `nvEncEncodePicture`, retried while the encoder is busy.
pub(super) fn submit_on(
    lib: &Library,
    session: *mut c_void,
    params: &mut sys::NV_ENC_PIC_PARAMS,
) -> Result<Submitted, NvencError> {
    for _ in 0..BUSY_RETRIES {
        // SAFETY: `session` is a live session of `lib` (its owner keeps it open while a call is
        // inside it); `params` is a valid versioned struct whose input and output handles (if
        // any) belong to this session and are kept alive by the owner past the call.
        let status = unsafe { (lib.fns().encode_picture)(session, params) };
        match status {
            NVENCSTATUS::NV_ENC_SUCCESS => return Ok(Submitted::OutputReady),
            NVENCSTATUS::NV_ENC_ERR_NEED_MORE_INPUT => return Ok(Submitted::NeedMoreInput),
            NVENCSTATUS::NV_ENC_ERR_ENCODER_BUSY => std::thread::sleep(BUSY_PAUSE),
            other => {
                return Err(NvencError::new(
                    "nvEncEncodePicture",
                    other,
                    last_error_of(lib, session),
                ))
            }
        }
    }
    Err(NvencError::new(
        "nvEncEncodePicture",
        NVENCSTATUS::NV_ENC_ERR_ENCODER_BUSY,
        format!("still busy after {BUSY_RETRIES} tries {BUSY_PAUSE:?} apart"),
    ))
}

/// `nvEncLockBitstream` (waiting), copy into `out`, `nvEncUnlockBitstream`.
pub(super) fn lock_on(
    lib: &Library,
    session: *mut c_void,
    buffer: *mut c_void,
    out: &mut Vec<u8>,
) -> Result<LockedInfo, NvencError> {
    let check = |call, status: NVENCSTATUS| {
        if status.is_success() {
            Ok(())
        } else {
            Err(NvencError::new(call, status, last_error_of(lib, session)))
        }
    };
    let mut lock = versioned!(sys::NV_ENC_LOCK_BITSTREAM, sys::NV_ENC_LOCK_BITSTREAM_VER);
    lock.outputBitstream = buffer;
    // SAFETY: live session of `lib`; valid versioned struct naming a bitstream buffer of this
    // session whose picture was submitted (the owner locks only submitted buffers, in order).
    let status = unsafe { (lib.fns().lock_bitstream)(session, &mut lock) };
    check("nvEncLockBitstream", status)?;
    let size = lock.bitstreamSizeInBytes as usize;
    let copied = if size == 0 {
        Ok(())
    } else if lock.bitstreamBufferPtr.is_null() {
        Err(NvencError::new(
            "nvEncLockBitstream",
            NVENCSTATUS::NV_ENC_ERR_INVALID_PTR,
            "null bitstream pointer".into(),
        ))
    } else {
        // SAFETY: while locked, the driver guarantees `bitstreamSizeInBytes` readable bytes at
        // `bitstreamBufferPtr`; they are copied before the unlock below.
        let bytes =
            unsafe { std::slice::from_raw_parts(lock.bitstreamBufferPtr.cast::<u8>(), size) };
        out.extend_from_slice(bytes);
        Ok(())
    };
    // Unlock even when the copy failed, so the buffer can be destroyed; a failed unlock is
    // tried once more, since a buffer left locked can be neither locked again nor destroyed.
    // SAFETY: live session; the buffer was locked above.
    let mut status = unsafe { (lib.fns().unlock_bitstream)(session, buffer) };
    if !status.is_success() {
        tracing::warn!(%status, "nvEncUnlockBitstream failed; trying again");
        // SAFETY: as above; the buffer is still locked, since the unlock failed.
        status = unsafe { (lib.fns().unlock_bitstream)(session, buffer) };
    }
    copied?;
    check("nvEncUnlockBitstream", status)?;
    Ok(LockedInfo {
        timestamp: lock.outputTimeStamp,
        picture_type: lock.pictureType,
    })
}

/// `nvEncGetSequenceParams`: the SPS and PPS, Annex B.
pub(super) fn sequence_params_on(
    lib: &Library,
    session: *mut c_void,
) -> Result<Vec<u8>, NvencError> {
    let mut buf = vec![0u8; sys::NV_MAX_SEQ_HDR_LEN as usize];
    let mut size = 0u32;
    let mut payload = versioned!(
        sys::NV_ENC_SEQUENCE_PARAM_PAYLOAD,
        sys::NV_ENC_SEQUENCE_PARAM_PAYLOAD_VER
    );
    payload.inBufferSize = buf.len() as u32;
    payload.spsppsBuffer = buf.as_mut_ptr().cast();
    payload.outSPSPPSPayloadSize = &mut size;
    // SAFETY: a live session of `lib`; `payload` points at `buf` (its real size given) and at
    // `size`, both alive for the call.
    let status = unsafe { (lib.fns().get_sequence_params)(session, &mut payload) };
    if !status.is_success() {
        return Err(NvencError::new(
            "nvEncGetSequenceParams",
            status,
            last_error_of(lib, session),
        ));
    }
    buf.truncate((size as usize).min(buf.len()));
    Ok(buf)
}
