//! Build script of the `nvenc` crate: short `cfg` names for the platform facts the backends
//! depend on, so the source says `#[cfg(nvenc_platform)]` instead of repeating a target list.

use cfg_aliases::cfg_aliases;

fn main() {
    cfg_aliases! {
        // Where NVIDIA ships libnvidia-encode with its display driver: Linux (x86_64, aarch64)
        // and 64-bit Windows.
        nvenc_platform: {
            any(
                all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")),
                all(target_os = "windows", target_arch = "x86_64")
            )
        },
        // Where bindgen's va_list type for x264's log callback matches the C library's
        // vsnprintf, so libx264's messages can be formatted and sent to tracing.
        x264_log_to_tracing: { all(target_os = "linux", target_arch = "x86_64") },
    }
}
