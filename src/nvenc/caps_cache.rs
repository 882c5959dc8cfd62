//! The NVENC capability report kept on disk, so that a process starting on the same GPU and
//! driver skips the probe sessions ([`super::probe`] opens one per device, 0.3-0.5 s under
//! `--encoder auto`).
//!
//! The file is JSON, in `$NVENC_CAPS_CACHE` if that is set (`off` disables the cache), else
//! `$XDG_CACHE_HOME/nvencode/nvenc-caps.json`, else `~/.cache/nvencode/nvenc-caps.json`. Each entry
//! is one [`NvencCaps`] keyed by the GPU's UUID (`cuDeviceGetUuid`) and a driver fingerprint
//! (the CUDA driver version, the NVENC API version and the driver library file that was
//! loaded), so a changed GPU or driver misses and is probed again. A file that cannot be read or
//! parsed is ignored with a warning and replaced by the next probe's result, never trusted.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::caps::NvencCaps;

/// Environment variable: the cache file's path, or `off` for no cache.
pub const ENV: &str = "NVENC_CAPS_CACHE";

/// The file's layout version; a file of another version is ignored. 2: per-codec caps
/// (`h264_caps`, `hevc_caps`) and `hevc` probed (version 1 files said `hevc: false` for every
/// GPU, which must not be believed).
const FORMAT: u32 = 2;

/// What identifies a GPU and driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    /// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, as `nvidia-smi -L` prints it.
    pub gpu_uuid: String,
    /// CUDA driver version, NVENC API version and the loaded driver library file.
    pub driver: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    entries: Vec<NvencCaps>,
}

/// Where the cache lives, or `None` when it is off (or no home folder is known).
pub(crate) fn path() -> Option<PathBuf> {
    match std::env::var_os(ENV) {
        Some(v) if v == "off" || v.is_empty() => return None,
        Some(v) => return Some(PathBuf::from(v)),
        None => {}
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|h| h.join(".cache"))
        })?;
    Some(base.join("nvencode").join("nvenc-caps.json"))
}

/// The key of CUDA device `device` under the NVENC library `library`. Needs no context and opens
/// no session. `Err` (with the reason) where CUDA cannot say.
pub(crate) fn key(device: usize, library: &nvenc_sys::Library) -> Result<Key, String> {
    let b = crate::cuda::device_uuid(device).map_err(|e| e.to_string())?;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let gpu_uuid = super::placement::display_uuid(&hex);
    let cuda_version = crate::cuda::driver_version().map_err(|e| e.to_string())?;
    let driver = format!(
        "cuda {cuda_version}; nvenc api {}; {}",
        library.driver_max_version(),
        library_file(library.path())
    );
    Ok(Key { gpu_uuid, driver })
}

/// The driver library file that is mapped into this process (on Linux `libnvidia-encode.so.1`
/// links to `libnvidia-encode.so.<driver version>`), with its size and modification time; the
/// name it was opened by where that cannot be found.
fn library_file(opened: &Path) -> String {
    let stem = opened
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split(".so").next())
        .unwrap_or("libnvidia-encode")
        .to_owned();
    let mapped = std::fs::read_to_string("/proc/self/maps")
        .ok()
        .and_then(|maps| {
            maps.lines()
                .filter_map(|l| l.split_whitespace().nth(5))
                .find(|p| {
                    Path::new(p)
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&stem))
                })
                .map(PathBuf::from)
        });
    let Some(file) = mapped.or_else(|| opened.is_absolute().then(|| opened.to_path_buf())) else {
        return opened.display().to_string();
    };
    let real = std::fs::canonicalize(&file).unwrap_or(file);
    let meta = std::fs::metadata(&real).ok();
    let modified = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    format!(
        "{} ({} bytes, modified {modified})",
        real.display(),
        meta.map_or(0, |m| m.len())
    )
}

/// Reads the cache file; `None` if there is none. A file that cannot be parsed is reported with
/// a warning and treated as empty.
fn read(path: &Path) -> Option<CacheFile> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(
                "NVENC caps cache {} ignored: cannot read it: {e}",
                path.display()
            );
            return None;
        }
    };
    match serde_json::from_str::<CacheFile>(&text) {
        Ok(f) if f.format == FORMAT => Some(f),
        Ok(f) => {
            tracing::warn!(
                "NVENC caps cache {} ignored: format {} is not {FORMAT}",
                path.display(),
                f.format
            );
            None
        }
        Err(e) => {
            tracing::warn!("NVENC caps cache {} ignored: corrupt: {e}", path.display());
            None
        }
    }
}

/// The cached report for `key`, if the cache holds one.
pub(crate) fn load(key: &Key) -> Option<NvencCaps> {
    let path = path()?;
    let file = read(&path)?;
    file.entries
        .into_iter()
        .find(|c| c.gpu_uuid == key.gpu_uuid && c.driver_version == key.driver)
}

/// Adds (or replaces) `caps` in the cache. Failures are logged, never returned: the cache only
/// saves time.
pub(crate) fn store(caps: &NvencCaps) {
    let Some(path) = path() else {
        return;
    };
    let mut entries = read(&path).map(|f| f.entries).unwrap_or_default();
    entries.retain(|c| c.gpu_uuid != caps.gpu_uuid);
    entries.push(caps.clone());
    let file = CacheFile {
        format: FORMAT,
        entries,
    };
    let result = (|| -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(&file).map_err(std::io::Error::other)?;
        // Write beside it and rename, so a reader never sees half a file.
        let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = result {
        tracing::warn!("NVENC caps cache {} not written: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_round_trips_through_json() {
        let caps = NvencCaps {
            device: 0,
            h264: true,
            hevc: false,
            max_width: 4096,
            max_height: 4096,
            max_bframes: 4,
            lookahead: true,
            h264_caps: Some(crate::nvenc::CodecCaps {
                max_width: 4096,
                max_height: 4096,
                max_bframes: 4,
                lookahead: true,
                dyn_bitrate_change: true,
                ..Default::default()
            }),
            hevc_caps: None,
            engines: 1,
            driver_api: "11.1".into(),
            gpu_uuid: "GPU-6e76656e-632d-656d-752d-6770752d3030".into(),
            driver_version: "cuda 12040; nvenc api 11.1; x".into(),
        };
        let file = CacheFile {
            format: FORMAT,
            entries: vec![caps.clone()],
        };
        let text = serde_json::to_string(&file).unwrap();
        let back: CacheFile = serde_json::from_str(&text).unwrap();
        assert_eq!(back.entries, [caps]);
    }
}
