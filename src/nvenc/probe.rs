//! Probing a GPU's NVENC: open a session, read codecs and caps, destroy it.
//!
//! Compute capability says nothing about NVENC (an A100 or H100 passes any such check and has no
//! encode engine), so the only reliable test is a real session. The probe session is always
//! destroyed (a leaked one costs video memory per probe), and results are cached per device and
//! driver version for the life of the process, so asking twice costs nothing, and on disk per GPU
//! UUID and driver (see `caps_cache`: `NVENC_CAPS_CACHE`), so the next process on the same GPU
//! and driver opens no probe session at all.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use nvenc_sys as sys;

use super::api::RawEncoder;
use super::caps::{CodecCaps, NvencCaps};
use crate::encoder::{codecs, Codec};
use crate::error::Error;

type Cache = Mutex<HashMap<(usize, String), NvencCaps>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Cache::default)
}

/// Probes NVENC on CUDA device `device`, or returns the cached result of an earlier probe of the
/// same device under the same driver.
///
/// # Errors
/// [`Error::NvencLoad`] without the driver's library; [`Error::Unavailable`] without CUDA or the
/// device; [`Error::Nvenc`] from the session open (no encode device, session limit, ...);
/// [`Error::Hung`] when the probe did not finish within
/// [`NvencOptions::open_timeout`](super::NvencOptions::open_timeout) (by default; its env
/// override applies), naming the call it was in: the probe runs on a thread of its own, which is
/// left inside the driver (see [`NvencEncoder`](super::NvencEncoder)'s open).
pub fn probe(device: usize) -> Result<NvencCaps, Error> {
    let deadline = super::NvencOptions::default()
        .open_timeout
        .max(super::NvencOptions::MIN_CALL_TIMEOUT);
    super::bounded::run("nvenc-probe", device, deadline, move |progress| {
        probe_here(device, progress)
    })
}

fn probe_here(device: usize, progress: &super::bounded::Progress) -> Result<NvencCaps, Error> {
    progress.at("dlopen(libnvidia-encode)");
    let library = nvenc_sys::load()?;
    let key = (device, library.driver_max_version().to_string());
    if let Some(hit) = cache().lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(hit);
    }
    // The report another process kept for this GPU and driver, if any.
    progress.at("cuDeviceGetUuid");
    let disk_key = super::caps_cache::key(device, &library)
        .map_err(|e| tracing::debug!("NVENC caps cache not used for device {device}: {e}"))
        .ok();
    if let Some(mut hit) = disk_key.as_ref().and_then(super::caps_cache::load) {
        hit.device = device;
        tracing::debug!("NVENC caps of device {device} from the cache (no probe session)");
        if let Ok(mut c) = cache().lock() {
            c.insert(key, hit.clone());
        }
        return Ok(hit);
    }
    // cudarc makes the context it creates current; the caller's comes back when this drops
    // (declared before `context`, so it drops after it).
    let _callers = crate::cuda::save_current().map_err(|e| Error::Unavailable {
        backend: crate::encoder::EncoderKind::Nvenc,
        reason: e.to_string(),
    })?;
    progress.at("cuDevicePrimaryCtxRetain");
    let context = crate::cuda::Context::open(device).map_err(|e| Error::Unavailable {
        backend: crate::encoder::EncoderKind::Nvenc,
        reason: e.to_string(),
    })?;
    let _current = context.push().map_err(|e| Error::Unavailable {
        backend: crate::encoder::EncoderKind::Nvenc,
        reason: e.to_string(),
    })?;
    // The session keeps the context retained until it is destroyed.
    progress.at("nvEncOpenEncodeSessionEx");
    let raw = RawEncoder::open(library, &context)?;
    progress.at("nvEncGetEncodeGUIDs");
    let offered = super::init::offered(&raw)?;
    let (h264, hevc) = (
        offered.contains(&Codec::H264),
        offered.contains(&Codec::Hevc),
    );
    progress.at("nvEncGetEncodeCaps");
    // Every cap is asked for one codec's GUID; a codec the engine does not list is not asked.
    let h264_caps = h264.then(|| codec_caps(&raw, Codec::H264));
    let hevc_caps = hevc.then(|| codec_caps(&raw, Codec::Hevc));
    let h264_or_default = h264_caps.clone().unwrap_or_default();
    let engines = [(h264, Codec::H264), (hevc, Codec::Hevc)]
        .into_iter()
        .find(|(listed, _)| *listed)
        .map_or(0, |(_, c)| {
            raw.cap(
                codecs::nvenc_codec_guid(c),
                sys::NV_ENC_CAPS::NV_ENC_CAPS_NUM_ENCODER_ENGINES,
            )
            .unwrap_or(0)
        });
    let caps = NvencCaps {
        device,
        h264,
        hevc,
        max_width: h264_or_default.max_width,
        max_height: h264_or_default.max_height,
        max_bframes: h264_or_default.max_bframes,
        lookahead: h264_or_default.lookahead,
        h264_caps,
        hevc_caps,
        engines,
        driver_api: key.1.clone(),
        gpu_uuid: disk_key
            .as_ref()
            .map(|k| k.gpu_uuid.clone())
            .unwrap_or_default(),
        driver_version: disk_key
            .as_ref()
            .map(|k| k.driver.clone())
            .unwrap_or_default(),
    };
    progress.at("nvEncDestroyEncoder");
    drop(raw);
    if disk_key.is_some() {
        super::caps_cache::store(&caps);
    }
    if let Ok(mut c) = cache().lock() {
        c.insert(key, caps.clone());
    }
    Ok(caps)
}

/// The caps of `codec` the crate reads (a query that fails reads as 0: not supported).
fn codec_caps(raw: &RawEncoder, codec: Codec) -> CodecCaps {
    let guid = codecs::nvenc_codec_guid(codec);
    let cap = |c| raw.cap(guid, c).unwrap_or(0);
    CodecCaps {
        max_width: cap(sys::NV_ENC_CAPS::NV_ENC_CAPS_WIDTH_MAX),
        max_height: cap(sys::NV_ENC_CAPS::NV_ENC_CAPS_HEIGHT_MAX),
        max_bframes: cap(sys::NV_ENC_CAPS::NV_ENC_CAPS_NUM_MAX_BFRAMES),
        lookahead: cap(sys::NV_ENC_CAPS::NV_ENC_CAPS_SUPPORT_LOOKAHEAD) != 0,
        dyn_bitrate_change: cap(sys::NV_ENC_CAPS::NV_ENC_CAPS_SUPPORT_DYN_BITRATE_CHANGE) != 0,
        dyn_rcmode_change: cap(sys::NV_ENC_CAPS::NV_ENC_CAPS_SUPPORT_DYN_RCMODE_CHANGE) != 0,
        lossless: cap(sys::NV_ENC_CAPS::NV_ENC_CAPS_SUPPORT_LOSSLESS_ENCODE) != 0,
        ten_bit: cap(sys::NV_ENC_CAPS::NV_ENC_CAPS_SUPPORT_10BIT_ENCODE) != 0,
    }
}
