//! How the NVENC backend's lower layers' failures become the crate's [`Error`]: one place, read
//! by the per-frame path (`encoder`) and the session (`session`).

use super::api::CallError;
use crate::cuda;
use crate::encoder::EncoderKind;
use crate::error::Error;

const KIND: EncoderKind = EncoderKind::Nvenc;

/// A driver call that failed, or did not return within the watchdog's deadline.
pub(crate) fn call_err(e: CallError) -> Error {
    match e {
        CallError::Failed(e) => Error::Nvenc(e),
        CallError::Hung(hung) => Error::Hung {
            backend: KIND,
            call: hung.call,
            deadline: hung.deadline,
        },
    }
}

/// A missing CUDA driver makes NVENC unavailable; any other CUDA failure (out of memory, a
/// failed copy) is an error of this encoder, which may not recur.
pub(crate) fn cuda_error(e: cuda::CudaError) -> Error {
    match e {
        cuda::CudaError::Unavailable { .. } => Error::Unavailable {
            backend: KIND,
            reason: e.to_string(),
        },
        other => Error::Backend {
            backend: KIND,
            call: "CUDA",
            message: other.to_string(),
        },
    }
}
