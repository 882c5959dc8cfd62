//! A software stand-in for the CUDA driver API (`libcuda`), for tests on machines without a GPU.
//!
//! **Test infrastructure, not product.** Tests copy this cdylib into a fresh folder as
//! `libcuda.so.1` / `libcuda.so` and start a child process with `LD_LIBRARY_PATH` pointing there
//! (see the `nvenc-emu-harness` crate), so the child's CUDA users (FFmpeg's `dynlink_loader`,
//! cudarc, the emulated NVENC) load it instead of a real driver. The artifact itself is never
//! named like a driver, so it cannot shadow one by accident.
//!
//! # What is emulated
//!
//! One device ("Emulated NVENC GPU", compute capability 8.6, 8 GiB, no memory pools, so cudarc
//! allocates with plain `cuMemAlloc`; more identical ones with `NVENC_EMU_CUDA_DEVICES`), primary
//! and created contexts with a per-thread current
//! context stack, device memory, pinned host memory, streams and events. "Device memory" is host
//! memory this library owns, handed out at fake addresses from `0x7000_0000_0000` upward with a
//! guard gap after every allocation, so a host pointer used as a device pointer, or an access
//! past the end of an allocation, is caught. Streams execute every operation synchronously.
//! Every other symbol FFmpeg's loader requires is exported and returns `CUDA_ERROR_NOT_SUPPORTED`.
//!
//! # What is checked (each failure returns the real driver's status and is recorded as a violation)
//!
//! - `cuInit` before anything else (`CUDA_ERROR_NOT_INITIALIZED`);
//! - a current context for memory, stream and event calls (`CUDA_ERROR_INVALID_CONTEXT`);
//! - context, stream and event handles are live ones of the right kind (`CUDA_ERROR_INVALID_CONTEXT`
//!   / `CUDA_ERROR_INVALID_HANDLE`); popping an empty stack;
//! - every device address and every byte range a copy or memset touches lies inside one live
//!   allocation (`CUDA_ERROR_INVALID_VALUE`); freeing an unknown or already freed pointer;
//! - destroying a context, or releasing the last reference of a primary context, while memory,
//!   streams or events created in it are still alive (leak, still cleaned up).
//!
//! # Environment
//!
//! | Variable | Meaning |
//! |---|---|
//! | `NVENC_EMU_FAULTS` | `entry:N:status,...`: the `N`th call of `entry` (e.g. `cuMemAllocPitch_v2:1:2`) returns `status` |
//! | `NVENC_EMU_REPORT` | file to append report lines to (violations, faults, `cuda live_handles ...`) |
//! | `NVENC_EMU_CUDA_NO_DEVICE` | `1`: `cuInit` fails with `CUDA_ERROR_NO_DEVICE` |
//! | `NVENC_EMU_CUDA_DEVICES` | how many devices (1 to 8, default 1), each with its own primary context and UUID (the last two bytes of device `n > 0`'s are `n`) |
//! | `NVENC_EMU_CUDA_MEM_MB` | device memory size in MiB (default 8192) |
//! | `NVENC_EMU_CUDA_UUID` | the device's UUID (`cuDeviceGetUuid`): up to 16 bytes of text (default `nvenc-emu-gpu-00`) |
//! | `NVENC_EMU_CUDA_DRIVER_VERSION` | what `cuDriverGetVersion` reports (default 12040) |
//!
//! Control functions for in-process use: [`nvenc_emu_cuda_violations`] and
//! [`nvenc_emu_cuda_live_handles`].
//!
//! # Source layout
//!
//! One module per group of API objects: `devices` (initialisation and device queries),
//! `contexts` (primary and created contexts, the context stack, peer access), `memory` (device
//! and pinned host allocations), `copies` (copies, memset, pointer attributes), `streams`
//! (streams and events), `errors` (error names and strings) and `unsupported` (exported symbols
//! that are not emulated). `state` holds the driver's tables and the checks every entry point
//! makes. This file holds the status codes and the control API; every export is re-exported here.

// The exported functions are C entry points with the CUDA driver's signatures; their safety
// contract is the CUDA documentation's, which a `# Safety` section per function would only repeat.
#![allow(clippy::missing_safety_doc)]

#[macro_use]
mod state;
mod contexts;
mod copies;
mod devices;
mod errors;
mod memory;
mod streams;
mod unsupported;

// Every export stays at the crate root, where it was before the split into modules.
pub use contexts::*;
pub use copies::*;
pub use devices::*;
pub use errors::*;
pub use memory::*;
pub use streams::*;
pub use unsupported::*;

use crate::state::{state, EMU, STATE};

/// `CUresult` values used here.
#[allow(missing_docs)]
pub mod status {
    pub const SUCCESS: i32 = 0;
    pub const INVALID_VALUE: i32 = 1;
    pub const OUT_OF_MEMORY: i32 = 2;
    pub const NOT_INITIALIZED: i32 = 3;
    pub const NO_DEVICE: i32 = 100;
    pub const INVALID_DEVICE: i32 = 101;
    pub const INVALID_CONTEXT: i32 = 201;
    pub const PEER_ACCESS_UNSUPPORTED: i32 = 217;
    pub const INVALID_HANDLE: i32 = 400;
    pub const NOT_READY: i32 = 600;
    pub const PEER_ACCESS_NOT_ENABLED: i32 = 705;
    pub const NOT_SUPPORTED: i32 = 801;
    pub const UNKNOWN: i32 = 999;
}

// ---------------------------------------------------------------------------------------------
// Control API and exit report

/// Number of violations recorded in this process by the emulated CUDA driver.
#[no_mangle]
pub extern "C" fn nvenc_emu_cuda_violations() -> u64 {
    EMU.violations()
}

/// Writes the live-handle line (`live_handles contexts=.. allocations=.. ...`) NUL-terminated
/// into `buf` (up to `len` bytes); returns the length of the full line.
///
/// # Safety
///
/// `buf` must be null or writable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvenc_emu_cuda_live_handles(buf: *mut u8, len: usize) -> usize {
    let line = state().live_line();
    // SAFETY: forwarded caller contract.
    unsafe { nvenc_emu_common::write_c_buffer(&line, buf, len) }
}

extern "C" fn at_exit() {
    // Never panic here: this runs from the loader's destructor list.
    let _ = std::panic::catch_unwind(|| {
        if let Ok(st) = STATE.try_lock() {
            let line = st.live_line();
            drop(st);
            EMU.line(&EMU.calls_line());
            EMU.line(&copies::copy_engine_line());
            EMU.line(&format!("{line} at=exit"));
        }
    });
}

/// Runs [`at_exit`] when the process exits or the library is unloaded, so the report always ends
/// with the final handle counts.
#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = at_exit;
