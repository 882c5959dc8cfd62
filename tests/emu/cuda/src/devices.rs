//! Initialisation and device queries: `cuInit`, the driver version, the devices (one unless
//! `NVENC_EMU_CUDA_DEVICES` says more), their name, UUID, compute capability, attributes and
//! memory size.

use std::ffi::{c_char, c_int, c_uint};

use nvenc_emu_common::guard;

use crate::state::{bad, need_ctx, state, EMU, PITCH_ALIGN};
use crate::status::*;

/// `cuInit`.
#[no_mangle]
pub unsafe extern "C" fn cuInit(flags: c_uint) -> i32 {
    guard(&EMU, "cuInit", UNKNOWN, || {
        if let Some(st) = EMU.enter("cuInit") {
            return st;
        }
        if flags != 0 {
            return bad("cuInit", INVALID_VALUE, "flags must be 0");
        }
        if std::env::var("NVENC_EMU_CUDA_NO_DEVICE").is_ok_and(|v| v == "1") {
            return NO_DEVICE;
        }
        state().initialized = true;
        SUCCESS
    })
}

/// `cuDriverGetVersion` (works before `cuInit`, like the real one).
#[no_mangle]
pub unsafe extern "C" fn cuDriverGetVersion(v: *mut c_int) -> i32 {
    guard(&EMU, "cuDriverGetVersion", UNKNOWN, || {
        if let Some(st) = EMU.enter("cuDriverGetVersion") {
            return st;
        }
        // NVENC_EMU_CUDA_DRIVER_VERSION stands for a driver update (default 12040, CUDA 12.4).
        let version = std::env::var("NVENC_EMU_CUDA_DRIVER_VERSION")
            .ok()
            .and_then(|v| v.parse::<c_int>().ok())
            .unwrap_or(12040);
        out!("cuDriverGetVersion", v, version);
        SUCCESS
    })
}

/// The number of emulated devices: `NVENC_EMU_CUDA_DEVICES` (1 to 8), default 1. Every device
/// is the same GPU model; they share the one address space (as with unified addressing), and
/// each has its own primary context.
pub(crate) fn device_count() -> c_int {
    std::env::var("NVENC_EMU_CUDA_DEVICES")
        .ok()
        .and_then(|v| v.parse::<c_int>().ok())
        .filter(|n| (1..=8).contains(n))
        .unwrap_or(1)
}

pub(crate) fn check_dev(entry: &'static str, dev: c_int) -> Result<(), i32> {
    if (0..device_count()).contains(&dev) {
        Ok(())
    } else {
        Err(bad(entry, INVALID_DEVICE, &format!("no device {dev}")))
    }
}

/// `cuDeviceGetCount`.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetCount(n: *mut c_int) -> i32 {
    entry!("cuDeviceGetCount", {
        out!("cuDeviceGetCount", n, device_count());
        SUCCESS
    })
}

/// `cuDeviceGet`.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGet(dev: *mut c_int, ordinal: c_int) -> i32 {
    entry!("cuDeviceGet", {
        if !(0..device_count()).contains(&ordinal) {
            return bad(
                "cuDeviceGet",
                INVALID_DEVICE,
                &format!("no device {ordinal}"),
            );
        }
        out!("cuDeviceGet", dev, ordinal);
        SUCCESS
    })
}

/// `cuDeviceGetName`.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: c_int) -> i32 {
    entry!("cuDeviceGetName", {
        if let Err(e) = check_dev("cuDeviceGetName", dev) {
            return e;
        }
        if name.is_null() || len <= 0 {
            return bad(
                "cuDeviceGetName",
                INVALID_VALUE,
                "NULL or empty name buffer",
            );
        }
        // SAFETY: the caller passes `name` writable for `len` bytes (checked positive above).
        unsafe {
            nvenc_emu_common::write_c_buffer("Emulated NVENC GPU", name.cast(), len as usize)
        };
        SUCCESS
    })
}

pub(crate) fn uuid(entry: &'static str, out: *mut [u8; 16], dev: c_int) -> i32 {
    if let Err(e) = check_dev(entry, dev) {
        return e;
    }
    if out.is_null() {
        return bad(entry, INVALID_VALUE, "NULL output pointer");
    }
    // NVENC_EMU_CUDA_UUID stands for another GPU (its first 16 bytes, zero-padded).
    let mut id = *b"nvenc-emu-gpu-00";
    if let Ok(v) = std::env::var("NVENC_EMU_CUDA_UUID") {
        id = [0; 16];
        for (d, s) in id.iter_mut().zip(v.bytes()) {
            *d = s;
        }
    }
    // Every further device has its own UUID: the last two bytes are its ordinal.
    if dev > 0 {
        let ordinal = format!("{:02}", dev % 100);
        id[14..].copy_from_slice(ordinal.as_bytes());
    }
    // SAFETY: `out` is non-null and, per the API, points at a CUuuid (16 bytes).
    unsafe { out.write(id) };
    SUCCESS
}

/// `cuDeviceGetUuid`.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetUuid(out: *mut [u8; 16], dev: c_int) -> i32 {
    entry!("cuDeviceGetUuid", { uuid("cuDeviceGetUuid", out, dev) })
}

/// `cuDeviceGetUuid_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetUuid_v2(out: *mut [u8; 16], dev: c_int) -> i32 {
    entry!("cuDeviceGetUuid_v2", {
        uuid("cuDeviceGetUuid_v2", out, dev)
    })
}

/// `cuDeviceComputeCapability`.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceComputeCapability(
    major: *mut c_int,
    minor: *mut c_int,
    dev: c_int,
) -> i32 {
    entry!("cuDeviceComputeCapability", {
        if let Err(e) = check_dev("cuDeviceComputeCapability", dev) {
            return e;
        }
        out!("cuDeviceComputeCapability", major, 8);
        out!("cuDeviceComputeCapability", minor, 6);
        SUCCESS
    })
}

/// The value of a device attribute (`CUdevice_attribute` numbers).
pub(crate) fn attribute(attr: c_int) -> Option<c_int> {
    Some(match attr {
        1 => 1024,                // MAX_THREADS_PER_BLOCK
        2 | 3 => 1024,            // MAX_BLOCK_DIM_X/Y
        4 => 64,                  // MAX_BLOCK_DIM_Z
        5 => 2_147_483_647,       // MAX_GRID_DIM_X
        6 | 7 => 65535,           // MAX_GRID_DIM_Y/Z
        8 => 49152,               // MAX_SHARED_MEMORY_PER_BLOCK
        9 => 65536,               // TOTAL_CONSTANT_MEMORY
        10 => 32,                 // WARP_SIZE
        11 => 2_147_483_647,      // MAX_PITCH
        12 => 65536,              // MAX_REGISTERS_PER_BLOCK
        13 => 1_700_000,          // CLOCK_RATE (kHz)
        14 => PITCH_ALIGN as i32, // TEXTURE_ALIGNMENT
        15 => 1,                  // GPU_OVERLAP
        16 => 28,                 // MULTIPROCESSOR_COUNT
        17 => 0,                  // KERNEL_EXEC_TIMEOUT
        18 => 0,                  // INTEGRATED
        19 => 1,                  // CAN_MAP_HOST_MEMORY
        20 => 0,                  // COMPUTE_MODE default
        36 => 7_000_000,          // MEMORY_CLOCK_RATE
        37 => 256,                // GLOBAL_MEMORY_BUS_WIDTH
        38 => 4 << 20,            // L2_CACHE_SIZE
        39 => 1536,               // MAX_THREADS_PER_MULTIPROCESSOR
        40 => 2,                  // ASYNC_ENGINE_COUNT
        41 => 1,                  // UNIFIED_ADDRESSING
        50 => 0,                  // PCI_DOMAIN_ID
        33 => 1,                  // PCI_BUS_ID
        34 => 0,                  // PCI_DEVICE_ID
        51 => PITCH_ALIGN as i32, // TEXTURE_PITCH_ALIGNMENT
        75 => 8,                  // COMPUTE_CAPABILITY_MAJOR
        76 => 6,                  // COMPUTE_CAPABILITY_MINOR
        81 => 102_400,            // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
        82 => 65536,              // MAX_REGISTERS_PER_MULTIPROCESSOR
        83 => 0,                  // MANAGED_MEMORY
        97 => 101_376,            // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
        115 => 0,                 // MEMORY_POOLS_SUPPORTED: no, so cudarc uses cuMemAlloc
        a if (0..=130).contains(&a) => 0,
        _ => return None,
    })
}

/// `cuDeviceGetAttribute`.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetAttribute(v: *mut c_int, attr: c_int, dev: c_int) -> i32 {
    entry!("cuDeviceGetAttribute", {
        if let Err(e) = check_dev("cuDeviceGetAttribute", dev) {
            return e;
        }
        match attribute(attr) {
            Some(a) => {
                out!("cuDeviceGetAttribute", v, a);
                SUCCESS
            }
            None => bad(
                "cuDeviceGetAttribute",
                INVALID_VALUE,
                &format!("unknown attribute {attr}"),
            ),
        }
    })
}

/// `cuDeviceTotalMem_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: c_int) -> i32 {
    entry!("cuDeviceTotalMem_v2", {
        if let Err(e) = check_dev("cuDeviceTotalMem_v2", dev) {
            return e;
        }
        let total = state().mem_limit as usize;
        out!("cuDeviceTotalMem_v2", bytes, total);
        SUCCESS
    })
}

/// `cuMemGetInfo_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> i32 {
    entry!("cuMemGetInfo_v2", {
        let st = state();
        if let Err(e) = need_ctx("cuMemGetInfo_v2", &st) {
            return e;
        }
        let (t, u) = (st.mem_limit as usize, st.mem_used as usize);
        drop(st);
        out!("cuMemGetInfo_v2", free, t - u);
        out!("cuMemGetInfo_v2", total, t);
        SUCCESS
    })
}
