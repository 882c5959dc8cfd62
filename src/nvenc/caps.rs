//! [`NvencCaps`], what a probe learns of a GPU's NVENC: made by `probe`, kept on disk by
//! `caps_cache`.

use serde::{Deserialize, Serialize};

/// What one GPU's NVENC can do for H.264.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NvencCaps {
    /// CUDA device ordinal.
    pub device: usize,
    /// Whether the engine lists the H.264 codec.
    pub h264: bool,
    /// Whether the engine lists the HEVC codec (every NVENC since the second Maxwell
    /// generation). The caps below are H.264's.
    #[serde(default)]
    pub hevc: bool,
    /// Largest frame width (`NV_ENC_CAPS_WIDTH_MAX`).
    pub max_width: i32,
    /// Largest frame height (`NV_ENC_CAPS_HEIGHT_MAX`).
    pub max_height: i32,
    /// Most consecutive B-frames (`NV_ENC_CAPS_NUM_MAX_BFRAMES`).
    pub max_bframes: i32,
    /// Whether lookahead is supported (`NV_ENC_CAPS_SUPPORT_LOOKAHEAD`).
    pub lookahead: bool,
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
