//! NVENC status codes as typed errors, classified for the fallback chain.

use nvenc_sys::NVENCSTATUS;

/// What an NVENC failure means for the caller; the fallback chain acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NvencErrorKind {
    /// The GPU has no NVENC engine (A100/H100-class data-centre chips, some mobile and mining
    /// SKUs), or the container was not given video capabilities: NVENC cannot work here at all.
    NoEncodeDevice,
    /// Opening a session ran out of resources: on GeForce cards this is how the per-system
    /// concurrent-session limit shows itself, and it is also real video-memory exhaustion.
    /// Another session may succeed later.
    SessionLimitOrOutOfMemory,
    /// A parameter the driver or hardware does not accept.
    InvalidParam,
    /// A struct version the driver does not know: the driver and this build's header disagree.
    InvalidVersion,
    /// A call made in the wrong order or state.
    InvalidCall,
    /// The device was lost; the session must be destroyed and a new one created.
    DeviceLost,
    /// The encoder stayed busy past the retry limit.
    Busy,
    /// A feature this driver or GPU does not implement.
    Unsupported,
    /// Anything else.
    Other,
}

/// A failed NVENC call: the call, the status it returned, and the driver's own explanation.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{call} returned {status}: {}{}", kind_text(*.status), detail_text(.detail))]
pub struct NvencError {
    /// The NVENC entry point, by its C name.
    pub call: &'static str,
    /// The status it returned.
    pub status: NVENCSTATUS,
    /// `nvEncGetLastErrorString` for the session, where there was one and it said anything.
    pub detail: String,
}

impl NvencError {
    pub(crate) fn new(call: &'static str, status: NVENCSTATUS, detail: String) -> Self {
        NvencError {
            call,
            status,
            detail,
        }
    }

    /// The class of failure, from the status.
    #[must_use]
    pub fn kind(&self) -> NvencErrorKind {
        classify(self.status)
    }
}

fn classify(status: NVENCSTATUS) -> NvencErrorKind {
    match status {
        NVENCSTATUS::NV_ENC_ERR_NO_ENCODE_DEVICE | NVENCSTATUS::NV_ENC_ERR_UNSUPPORTED_DEVICE => {
            NvencErrorKind::NoEncodeDevice
        }
        // GeForce drivers answer an open past the session limit with OUT_OF_MEMORY, some with
        // INCOMPATIBLE_CLIENT_KEY; both also mean what they say. See NVENC-NOTES "Error triage".
        NVENCSTATUS::NV_ENC_ERR_OUT_OF_MEMORY | NVENCSTATUS::NV_ENC_ERR_INCOMPATIBLE_CLIENT_KEY => {
            NvencErrorKind::SessionLimitOrOutOfMemory
        }
        NVENCSTATUS::NV_ENC_ERR_INVALID_PARAM
        | NVENCSTATUS::NV_ENC_ERR_INVALID_PTR
        | NVENCSTATUS::NV_ENC_ERR_INVALID_ENCODERDEVICE => NvencErrorKind::InvalidParam,
        NVENCSTATUS::NV_ENC_ERR_INVALID_VERSION => NvencErrorKind::InvalidVersion,
        NVENCSTATUS::NV_ENC_ERR_INVALID_CALL
        | NVENCSTATUS::NV_ENC_ERR_ENCODER_NOT_INITIALIZED
        | NVENCSTATUS::NV_ENC_ERR_RESOURCE_NOT_REGISTERED
        | NVENCSTATUS::NV_ENC_ERR_RESOURCE_NOT_MAPPED
        | NVENCSTATUS::NV_ENC_ERR_RESOURCE_REGISTER_FAILED => NvencErrorKind::InvalidCall,
        NVENCSTATUS::NV_ENC_ERR_DEVICE_NOT_EXIST | NVENCSTATUS::NV_ENC_ERR_INVALID_DEVICE => {
            NvencErrorKind::DeviceLost
        }
        NVENCSTATUS::NV_ENC_ERR_ENCODER_BUSY | NVENCSTATUS::NV_ENC_ERR_LOCK_BUSY => {
            NvencErrorKind::Busy
        }
        NVENCSTATUS::NV_ENC_ERR_UNSUPPORTED_PARAM | NVENCSTATUS::NV_ENC_ERR_UNIMPLEMENTED => {
            NvencErrorKind::Unsupported
        }
        _ => NvencErrorKind::Other,
    }
}

fn kind_text(status: NVENCSTATUS) -> &'static str {
    match classify(status) {
        NvencErrorKind::NoEncodeDevice => {
            "this GPU has no NVENC engine (data-centre GPUs such as A100/H100 have none), or a \
             container was started without video capabilities (NVIDIA_DRIVER_CAPABILITIES must \
             include `video`)"
        }
        NvencErrorKind::SessionLimitOrOutOfMemory => {
            "likely the concurrent encode-session limit (GeForce cards allow a few sessions per \
             system) or out of video memory; another session may succeed later"
        }
        NvencErrorKind::InvalidParam => "the driver rejected a parameter",
        NvencErrorKind::InvalidVersion => {
            "the driver does not know this struct version: the driver is older than the \
             nvEncodeAPI.h this crate was built with"
        }
        NvencErrorKind::InvalidCall => "call made in the wrong state or order",
        NvencErrorKind::DeviceLost => "the GPU was lost; the session must be recreated",
        NvencErrorKind::Busy => "the encoder stayed busy",
        NvencErrorKind::Unsupported => "not supported by this GPU or driver",
        NvencErrorKind::Other => "NVENC failed",
    }
}

fn detail_text(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" (driver: {detail})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_kinds_the_fallback_chain_needs() {
        let kind = |s| NvencError::new("nvEncOpenEncodeSessionEx", s, String::new()).kind();
        assert_eq!(
            kind(NVENCSTATUS::NV_ENC_ERR_NO_ENCODE_DEVICE),
            NvencErrorKind::NoEncodeDevice
        );
        assert_eq!(
            kind(NVENCSTATUS::NV_ENC_ERR_UNSUPPORTED_DEVICE),
            NvencErrorKind::NoEncodeDevice
        );
        assert_eq!(
            kind(NVENCSTATUS::NV_ENC_ERR_OUT_OF_MEMORY),
            NvencErrorKind::SessionLimitOrOutOfMemory
        );
        assert_eq!(
            kind(NVENCSTATUS::NV_ENC_ERR_INVALID_PARAM),
            NvencErrorKind::InvalidParam
        );
        assert_eq!(
            kind(NVENCSTATUS::NV_ENC_ERR_INVALID_VERSION),
            NvencErrorKind::InvalidVersion
        );
        assert_eq!(
            kind(NVENCSTATUS::NV_ENC_ERR_DEVICE_NOT_EXIST),
            NvencErrorKind::DeviceLost
        );
        assert_eq!(kind(NVENCSTATUS(9999)), NvencErrorKind::Other);
    }

    #[test]
    fn message_names_call_status_and_driver_detail() {
        let e = NvencError::new(
            "nvEncOpenEncodeSessionEx",
            NVENCSTATUS::NV_ENC_ERR_OUT_OF_MEMORY,
            "no more sessions".into(),
        );
        let text = e.to_string();
        assert!(text.starts_with("nvEncOpenEncodeSessionEx returned NV_ENC_ERR_OUT_OF_MEMORY (10)"));
        assert!(text.contains("session limit") && text.contains("(driver: no more sessions)"));
    }
}
