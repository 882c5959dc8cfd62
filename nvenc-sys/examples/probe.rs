//! Prints whether NVENC can be loaded on this machine, and why not.
//!
//! `cargo run -p nvenc-sys --example probe` (set `NVENC_LIBRARY_PATH` to try another file).

use std::process::ExitCode;

fn main() -> ExitCode {
    let header = nvenc_sys::ApiVersion::header();
    println!(
        "built against NVENC API {header} (needs NVIDIA driver >= {})",
        header.minimum_driver().unwrap_or("unknown")
    );
    match nvenc_sys::load() {
        Ok(lib) => {
            println!(
                "loaded {}: the driver supports NVENC API up to {}, {} entry points",
                lib.path().display(),
                lib.driver_max_version(),
                nvenc_sys::FunctionTable::ENTRY_NAMES.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("NVENC is not available: {e}");
            ExitCode::FAILURE
        }
    }
}
