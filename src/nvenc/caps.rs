//! [`NvencCaps`], what a probe learns of a GPU's NVENC: made by `probe`, kept on disk by
//! `caps_cache`.

use serde::{Deserialize, Serialize};

/// What one GPU's NVENC can do for one codec (`nvEncGetEncodeCaps` with that codec's GUID: every
/// `NV_ENC_CAPS_*` is per codec).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CodecCaps {
    /// Largest frame width (`NV_ENC_CAPS_WIDTH_MAX`).
    pub max_width: i32,
    /// Largest frame height (`NV_ENC_CAPS_HEIGHT_MAX`).
    pub max_height: i32,
    /// Most consecutive B-frames (`NV_ENC_CAPS_NUM_MAX_BFRAMES`; 0 for HEVC before Turing).
    pub max_bframes: i32,
    /// Whether lookahead is supported (`NV_ENC_CAPS_SUPPORT_LOOKAHEAD`).
    pub lookahead: bool,
    /// Whether the bit rate changes without a reset (`NV_ENC_CAPS_SUPPORT_DYN_BITRATE_CHANGE`).
    pub dyn_bitrate_change: bool,
    /// Whether the rate-control mode changes without a reset
    /// (`NV_ENC_CAPS_SUPPORT_DYN_RCMODE_CHANGE`).
    pub dyn_rcmode_change: bool,
    /// Whether lossless encoding is supported (`NV_ENC_CAPS_SUPPORT_LOSSLESS_ENCODE`).
    pub lossless: bool,
    /// Whether 10-bit encoding is supported (`NV_ENC_CAPS_SUPPORT_10BIT_ENCODE`).
    pub ten_bit: bool,
}

/// What one GPU's NVENC can do. The top-level size and B-frame fields are H.264's (as before HEVC
/// was probed); each codec's own are in [`NvencCaps::codec_caps`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NvencCaps {
    /// CUDA device ordinal.
    pub device: usize,
    /// Whether the engine lists the H.264 codec.
    pub h264: bool,
    /// Whether the engine lists the HEVC codec (every NVENC since the second Maxwell
    /// generation).
    #[serde(default)]
    pub hevc: bool,
    /// H.264's largest frame width (`NV_ENC_CAPS_WIDTH_MAX`).
    pub max_width: i32,
    /// H.264's largest frame height (`NV_ENC_CAPS_HEIGHT_MAX`).
    pub max_height: i32,
    /// H.264's most consecutive B-frames (`NV_ENC_CAPS_NUM_MAX_BFRAMES`).
    pub max_bframes: i32,
    /// Whether H.264 lookahead is supported (`NV_ENC_CAPS_SUPPORT_LOOKAHEAD`).
    pub lookahead: bool,
    /// H.264's caps, where the engine lists H.264.
    #[serde(default)]
    pub h264_caps: Option<CodecCaps>,
    /// HEVC's caps, where the engine lists HEVC.
    #[serde(default)]
    pub hevc_caps: Option<CodecCaps>,
    /// Encode engines on the GPU (`NV_ENC_CAPS_NUM_ENCODER_ENGINES`, 0 where the driver does not
    /// say).
    pub engines: i32,
    /// The driver's highest NVENC API version, e.g. `"12.2"`.
    pub driver_api: String,
    /// The GPU's UUID (`cuDeviceGetUuid`), as `nvidia-smi -L` prints it
    /// (`GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`); empty where CUDA could not say.
    #[serde(default)]
    pub gpu_uuid: String,
    /// What identifies the driver: CUDA driver version, NVENC API version and the driver
    /// library file; empty where CUDA could not say.
    #[serde(default)]
    pub driver_version: String,
}

impl NvencCaps {
    /// Whether the engine lists `codec`.
    #[must_use]
    pub fn encodes(&self, codec: crate::encoder::Codec) -> bool {
        match codec {
            crate::encoder::Codec::H264 => self.h264,
            crate::encoder::Codec::Hevc => self.hevc,
        }
    }

    /// The caps of `codec`, where the engine lists it.
    #[must_use]
    pub fn codec_caps(&self, codec: crate::encoder::Codec) -> Option<&CodecCaps> {
        match codec {
            crate::encoder::Codec::H264 => self.h264_caps.as_ref(),
            crate::encoder::Codec::Hevc => self.hevc_caps.as_ref(),
        }
    }

    /// The codecs the engine lists, in [`Codec::ALL`](crate::encoder::Codec::ALL) order.
    #[must_use]
    pub fn codecs(&self) -> Vec<crate::encoder::Codec> {
        crate::encoder::Codec::ALL
            .iter()
            .copied()
            .filter(|&c| self.encodes(c))
            .collect()
    }
}
