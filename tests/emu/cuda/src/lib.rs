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
//! allocates with plain `cuMemAlloc`), primary and created contexts with a per-thread current
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
//! | `NVENC_EMU_CUDA_MEM_MB` | device memory size in MiB (default 8192) |
//! | `NVENC_EMU_CUDA_UUID` | the device's UUID (`cuDeviceGetUuid`): up to 16 bytes of text (default `nvenc-emu-gpu-00`) |
//! | `NVENC_EMU_CUDA_DRIVER_VERSION` | what `cuDriverGetVersion` reports (default 12040) |
//!
//! Control functions for in-process use: [`nvenc_emu_cuda_violations`] and
//! [`nvenc_emu_cuda_live_handles`].

// The exported functions are C entry points with the CUDA driver's signatures; their safety
// contract is the CUDA documentation's, which a `# Safety` section per function would only repeat.
#![allow(clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::{LazyLock, Mutex};

use nvenc_emu_common::{guard, lock, Emu};

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
use status::*;

/// Layout of `CUDA_MEMCPY2D` (the `_v2` struct).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_snake_case, missing_docs)]
pub struct CudaMemcpy2D {
    pub srcXInBytes: usize,
    pub srcY: usize,
    pub srcMemoryType: c_uint,
    pub srcHost: *const c_void,
    pub srcDevice: u64,
    pub srcArray: *mut c_void,
    pub srcPitch: usize,
    pub dstXInBytes: usize,
    pub dstY: usize,
    pub dstMemoryType: c_uint,
    pub dstHost: *mut c_void,
    pub dstDevice: u64,
    pub dstArray: *mut c_void,
    pub dstPitch: usize,
    pub WidthInBytes: usize,
    pub Height: usize,
}

const MEMORYTYPE_HOST: c_uint = 1;
const MEMORYTYPE_DEVICE: c_uint = 2;
const MEMORYTYPE_ARRAY: c_uint = 3;
const MEMORYTYPE_UNIFIED: c_uint = 4;

const CTX_BASE: u64 = 0x00c0_0000_0000;
const STREAM_BASE: u64 = 0x00c1_0000_0000;
const EVENT_BASE: u64 = 0x00c2_0000_0000;
const HANDLE_STRIDE: u64 = 0x40;
const DEVICE_MEM_BASE: u64 = 0x7000_0000_0000;
const GUARD: u64 = 0x1_0000;
const PITCH_ALIGN: usize = 512;

static EMU: LazyLock<Emu> = LazyLock::new(|| Emu::from_env("cuda"));
static STATE: LazyLock<Mutex<State>> = LazyLock::new(|| Mutex::new(State::new()));

thread_local! {
    /// The calling thread's context stack; the last element is the current context.
    static CTX_STACK: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

#[derive(Debug)]
struct Ctx {
    primary: bool,
    /// Primary contexts: retain count; created contexts: 1 while alive.
    refs: u32,
    alive: bool,
}

#[derive(Debug)]
struct Alloc {
    data: Vec<u8>,
    ctx: u64,
}

#[derive(Debug)]
struct Stream {
    ctx: u64,
}

#[derive(Debug)]
struct Event {
    ctx: u64,
    recorded_at: Option<std::time::Instant>,
}

#[derive(Debug)]
struct State {
    initialized: bool,
    mem_limit: u64,
    mem_used: u64,
    next_id: u64,
    next_addr: u64,
    ctxs: HashMap<u64, Ctx>,
    primary: Option<u64>,
    primary_flags: u32,
    allocs: BTreeMap<u64, Alloc>,
    host_allocs: HashMap<usize, std::alloc::Layout>,
    streams: HashMap<u64, Stream>,
    events: HashMap<u64, Event>,
}

impl State {
    fn new() -> Self {
        let mb = std::env::var("NVENC_EMU_CUDA_MEM_MB")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(8192);
        Self {
            initialized: false,
            mem_limit: mb << 20,
            mem_used: 0,
            next_id: 1,
            next_addr: DEVICE_MEM_BASE,
            ctxs: HashMap::new(),
            primary: None,
            primary_flags: 0,
            allocs: BTreeMap::new(),
            host_allocs: HashMap::new(),
            streams: HashMap::new(),
            events: HashMap::new(),
        }
    }

    fn new_handle(&mut self, base: u64) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        base + id * HANDLE_STRIDE
    }

    fn live_ctx(&self, h: u64) -> bool {
        self.ctxs.get(&h).is_some_and(|c| c.alive)
    }

    /// The allocation holding `addr`: (base, offset).
    fn find(&self, addr: u64) -> Option<(u64, usize)> {
        let (&base, a) = self.allocs.range(..=addr).next_back()?;
        let off = addr - base;
        (off < a.data.len() as u64).then_some((base, off as usize))
    }

    fn live_line(&self) -> String {
        let contexts = self.ctxs.values().filter(|c| c.alive && !c.primary).count();
        let primary = self.ctxs.values().filter(|c| c.alive && c.primary).count();
        format!(
            "live_handles contexts={contexts} primary_active={primary} allocations={} bytes={} host_allocations={} streams={} events={}",
            self.allocs.len(),
            self.mem_used,
            self.host_allocs.len(),
            self.streams.len(),
            self.events.len()
        )
    }

    /// Frees everything owned by `ctx`; returns a description of what leaked, if anything.
    fn reap(&mut self, ctx: u64) -> Option<String> {
        let allocs: Vec<u64> = self
            .allocs
            .iter()
            .filter(|(_, a)| a.ctx == ctx)
            .map(|(&k, _)| k)
            .collect();
        let streams = self.streams.iter().filter(|(_, s)| s.ctx == ctx).count();
        let events = self.events.iter().filter(|(_, e)| e.ctx == ctx).count();
        for k in &allocs {
            if let Some(a) = self.allocs.remove(k) {
                self.mem_used -= a.data.len() as u64;
            }
        }
        self.streams.retain(|_, s| s.ctx != ctx);
        self.events.retain(|_, e| e.ctx != ctx);
        (!allocs.is_empty() || streams > 0 || events > 0).then(|| {
            format!(
                "{} allocation(s), {streams} stream(s), {events} event(s) still alive",
                allocs.len()
            )
        })
    }
}

fn state() -> std::sync::MutexGuard<'static, State> {
    lock(&STATE)
}

fn current_ctx() -> Option<u64> {
    CTX_STACK.with(|s| s.borrow().last().copied())
}

/// Counts the call, applies faults and the `cuInit` check.
fn enter(entry: &'static str) -> Option<i32> {
    if let Some(st) = EMU.enter(entry) {
        return Some(st);
    }
    if !state().initialized {
        EMU.violation(entry, "called before cuInit");
        return Some(NOT_INITIALIZED);
    }
    None
}

/// Requires a live current context.
fn need_ctx(entry: &'static str, st: &State) -> Result<u64, i32> {
    match current_ctx() {
        Some(c) if st.live_ctx(c) => Ok(c),
        Some(c) => {
            EMU.violation(entry, &format!("current context {c:#x} has been destroyed"));
            Err(INVALID_CONTEXT)
        }
        None => {
            EMU.violation(entry, "no current context on this thread");
            Err(INVALID_CONTEXT)
        }
    }
}

fn bad(entry: &'static str, code: i32, reason: &str) -> i32 {
    EMU.violation(entry, reason);
    code
}

macro_rules! entry {
    ($name:literal, $body:block) => {
        guard(&EMU, $name, UNKNOWN, || {
            if let Some(st) = enter($name) {
                return st;
            }
            $body
        })
    };
}

/// Writes `v` through an out-pointer, or records a NULL out-pointer.
macro_rules! out {
    ($entry:literal, $ptr:expr, $v:expr) => {{
        let p = $ptr;
        if p.is_null() {
            return bad($entry, INVALID_VALUE, "NULL output pointer");
        }
        // SAFETY: the caller passes a pointer valid for writes of the out-parameter's type (CUDA
        // API contract); NULL was excluded above.
        unsafe { p.write($v) };
    }};
}

// ---------------------------------------------------------------------------------------------
// Initialisation and device queries

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

fn check_dev(entry: &'static str, dev: c_int) -> Result<(), i32> {
    if dev == 0 {
        Ok(())
    } else {
        Err(bad(entry, INVALID_DEVICE, &format!("no device {dev}")))
    }
}

/// `cuDeviceGetCount`.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetCount(n: *mut c_int) -> i32 {
    entry!("cuDeviceGetCount", {
        out!("cuDeviceGetCount", n, 1);
        SUCCESS
    })
}

/// `cuDeviceGet`.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGet(dev: *mut c_int, ordinal: c_int) -> i32 {
    entry!("cuDeviceGet", {
        if ordinal != 0 {
            return bad(
                "cuDeviceGet",
                INVALID_DEVICE,
                &format!("no device {ordinal}"),
            );
        }
        out!("cuDeviceGet", dev, 0);
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

fn uuid(entry: &'static str, out: *mut [u8; 16], dev: c_int) -> i32 {
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
fn attribute(attr: c_int) -> Option<c_int> {
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

// ---------------------------------------------------------------------------------------------
// Contexts

fn primary_retain(out: *mut *mut c_void, dev: c_int) -> i32 {
    if let Err(e) = check_dev("cuDevicePrimaryCtxRetain", dev) {
        return e;
    }
    if out.is_null() {
        return bad(
            "cuDevicePrimaryCtxRetain",
            INVALID_VALUE,
            "NULL output pointer",
        );
    }
    let mut st = state();
    let h = match st.primary {
        Some(h) => h,
        None => {
            let h = st.new_handle(CTX_BASE);
            st.ctxs.insert(
                h,
                Ctx {
                    primary: true,
                    refs: 0,
                    alive: false,
                },
            );
            st.primary = Some(h);
            h
        }
    };
    if let Some(c) = st.ctxs.get_mut(&h) {
        c.refs += 1;
        c.alive = true;
    }
    // SAFETY: `out` is non-null and points at a CUcontext slot (API contract).
    unsafe { out.write(h as *mut c_void) };
    SUCCESS
}

/// `cuDevicePrimaryCtxRetain`.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(out: *mut *mut c_void, dev: c_int) -> i32 {
    entry!("cuDevicePrimaryCtxRetain", { primary_retain(out, dev) })
}

fn primary_release(entry: &'static str, dev: c_int) -> i32 {
    if let Err(e) = check_dev(entry, dev) {
        return e;
    }
    let mut st = state();
    let Some(h) = st.primary else {
        return bad(entry, INVALID_CONTEXT, "primary context was never retained");
    };
    let Some(c) = st.ctxs.get_mut(&h) else {
        return UNKNOWN;
    };
    if c.refs == 0 {
        drop(st);
        return bad(
            entry,
            INVALID_CONTEXT,
            "primary context released more often than retained",
        );
    }
    c.refs -= 1;
    if c.refs == 0 {
        c.alive = false;
        let leak = st.reap(h);
        let line = st.live_line();
        drop(st);
        if let Some(leak) = leak {
            EMU.violation(
                entry,
                &format!("last reference of the primary context released with {leak}"),
            );
        }
        EMU.line(&line);
    }
    SUCCESS
}

/// `cuDevicePrimaryCtxRelease`.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRelease(dev: c_int) -> i32 {
    entry!("cuDevicePrimaryCtxRelease", {
        primary_release("cuDevicePrimaryCtxRelease", dev)
    })
}

/// `cuDevicePrimaryCtxRelease_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRelease_v2(dev: c_int) -> i32 {
    entry!("cuDevicePrimaryCtxRelease_v2", {
        primary_release("cuDevicePrimaryCtxRelease_v2", dev)
    })
}

fn primary_set_flags(entry: &'static str, dev: c_int, flags: c_uint) -> i32 {
    if let Err(e) = check_dev(entry, dev) {
        return e;
    }
    state().primary_flags = flags;
    SUCCESS
}

/// `cuDevicePrimaryCtxSetFlags`.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxSetFlags(dev: c_int, flags: c_uint) -> i32 {
    entry!("cuDevicePrimaryCtxSetFlags", {
        primary_set_flags("cuDevicePrimaryCtxSetFlags", dev, flags)
    })
}

/// `cuDevicePrimaryCtxSetFlags_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxSetFlags_v2(dev: c_int, flags: c_uint) -> i32 {
    entry!("cuDevicePrimaryCtxSetFlags_v2", {
        primary_set_flags("cuDevicePrimaryCtxSetFlags_v2", dev, flags)
    })
}

/// `cuDevicePrimaryCtxGetState`.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxGetState(
    dev: c_int,
    flags: *mut c_uint,
    active: *mut c_int,
) -> i32 {
    entry!("cuDevicePrimaryCtxGetState", {
        if let Err(e) = check_dev("cuDevicePrimaryCtxGetState", dev) {
            return e;
        }
        let st = state();
        let is_active = st.primary.is_some_and(|h| st.live_ctx(h));
        let f = st.primary_flags;
        drop(st);
        out!("cuDevicePrimaryCtxGetState", flags, f);
        out!("cuDevicePrimaryCtxGetState", active, c_int::from(is_active));
        SUCCESS
    })
}

fn primary_reset(entry: &'static str, dev: c_int) -> i32 {
    if let Err(e) = check_dev(entry, dev) {
        return e;
    }
    let mut st = state();
    if let Some(h) = st.primary {
        let leak = st.reap(h);
        drop(st);
        if let Some(leak) = leak {
            EMU.violation(entry, &format!("primary context reset with {leak}"));
        }
    }
    SUCCESS
}

/// `cuDevicePrimaryCtxReset`.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxReset(dev: c_int) -> i32 {
    entry!("cuDevicePrimaryCtxReset", {
        primary_reset("cuDevicePrimaryCtxReset", dev)
    })
}

/// `cuDevicePrimaryCtxReset_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxReset_v2(dev: c_int) -> i32 {
    entry!("cuDevicePrimaryCtxReset_v2", {
        primary_reset("cuDevicePrimaryCtxReset_v2", dev)
    })
}

/// `cuCtxCreate_v2`: creates a context and makes it current.
#[no_mangle]
pub unsafe extern "C" fn cuCtxCreate_v2(out: *mut *mut c_void, _flags: c_uint, dev: c_int) -> i32 {
    entry!("cuCtxCreate_v2", {
        if let Err(e) = check_dev("cuCtxCreate_v2", dev) {
            return e;
        }
        if out.is_null() {
            return bad("cuCtxCreate_v2", INVALID_VALUE, "NULL output pointer");
        }
        let mut st = state();
        let h = st.new_handle(CTX_BASE);
        st.ctxs.insert(
            h,
            Ctx {
                primary: false,
                refs: 1,
                alive: true,
            },
        );
        drop(st);
        CTX_STACK.with(|s| s.borrow_mut().push(h));
        // SAFETY: `out` is non-null and points at a CUcontext slot (API contract).
        unsafe { out.write(h as *mut c_void) };
        SUCCESS
    })
}

/// `cuCtxDestroy_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuCtxDestroy_v2(ctx: *mut c_void) -> i32 {
    entry!("cuCtxDestroy_v2", {
        let h = ctx as u64;
        let mut st = state();
        match st.ctxs.get_mut(&h) {
            Some(c) if c.alive && !c.primary => {
                c.alive = false;
                c.refs = 0;
            }
            Some(c) if c.primary => {
                drop(st);
                return bad(
                    "cuCtxDestroy_v2",
                    INVALID_CONTEXT,
                    "cannot destroy a primary context",
                );
            }
            _ => {
                drop(st);
                return bad(
                    "cuCtxDestroy_v2",
                    INVALID_CONTEXT,
                    &format!("{h:#x} is not a live context"),
                );
            }
        }
        let leak = st.reap(h);
        let line = st.live_line();
        drop(st);
        // The real driver pops a destroyed context off the calling thread's stack.
        CTX_STACK.with(|s| s.borrow_mut().retain(|&c| c != h));
        if let Some(leak) = leak {
            EMU.violation("cuCtxDestroy_v2", &format!("context destroyed with {leak}"));
        }
        EMU.line(&line);
        SUCCESS
    })
}

fn check_live_ctx(entry: &'static str, h: u64) -> Result<(), i32> {
    if state().live_ctx(h) {
        Ok(())
    } else {
        Err(bad(
            entry,
            INVALID_CONTEXT,
            &format!("{h:#x} is not a live context"),
        ))
    }
}

/// `cuCtxPushCurrent_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuCtxPushCurrent_v2(ctx: *mut c_void) -> i32 {
    entry!("cuCtxPushCurrent_v2", {
        if let Err(e) = check_live_ctx("cuCtxPushCurrent_v2", ctx as u64) {
            return e;
        }
        CTX_STACK.with(|s| s.borrow_mut().push(ctx as u64));
        SUCCESS
    })
}

/// `cuCtxPopCurrent_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuCtxPopCurrent_v2(out: *mut *mut c_void) -> i32 {
    entry!("cuCtxPopCurrent_v2", {
        match CTX_STACK.with(|s| s.borrow_mut().pop()) {
            Some(h) => {
                if !out.is_null() {
                    // SAFETY: non-null `out` points at a CUcontext slot (API contract).
                    unsafe { out.write(h as *mut c_void) };
                }
                SUCCESS
            }
            None => bad(
                "cuCtxPopCurrent_v2",
                INVALID_CONTEXT,
                "no current context to pop",
            ),
        }
    })
}

/// `cuCtxSetCurrent`: replaces the top of the stack (NULL empties it).
#[no_mangle]
pub unsafe extern "C" fn cuCtxSetCurrent(ctx: *mut c_void) -> i32 {
    entry!("cuCtxSetCurrent", {
        let h = ctx as u64;
        if h != 0 {
            if let Err(e) = check_live_ctx("cuCtxSetCurrent", h) {
                return e;
            }
        }
        CTX_STACK.with(|s| {
            let mut s = s.borrow_mut();
            s.pop();
            if h != 0 {
                s.push(h);
            }
        });
        SUCCESS
    })
}

/// `cuCtxGetCurrent`.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCurrent(out: *mut *mut c_void) -> i32 {
    entry!("cuCtxGetCurrent", {
        let h = current_ctx().unwrap_or(0);
        out!("cuCtxGetCurrent", out, h as *mut c_void);
        SUCCESS
    })
}

/// `cuCtxGetDevice`.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetDevice(out: *mut c_int) -> i32 {
    entry!("cuCtxGetDevice", {
        if let Err(e) = need_ctx("cuCtxGetDevice", &state()) {
            return e;
        }
        out!("cuCtxGetDevice", out, 0);
        SUCCESS
    })
}

/// `cuCtxSynchronize`: everything is synchronous already.
#[no_mangle]
pub unsafe extern "C" fn cuCtxSynchronize() -> i32 {
    entry!("cuCtxSynchronize", {
        match need_ctx("cuCtxSynchronize", &state()) {
            Ok(_) => SUCCESS,
            Err(e) => e,
        }
    })
}

/// `cuCtxSetLimit`: accepted and ignored.
#[no_mangle]
pub unsafe extern "C" fn cuCtxSetLimit(_limit: c_int, _value: usize) -> i32 {
    entry!("cuCtxSetLimit", {
        match need_ctx("cuCtxSetLimit", &state()) {
            Ok(_) => SUCCESS,
            Err(e) => e,
        }
    })
}

/// `cuCtxGetStreamPriorityRange`.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetStreamPriorityRange(
    least: *mut c_int,
    greatest: *mut c_int,
) -> i32 {
    entry!("cuCtxGetStreamPriorityRange", {
        if !least.is_null() {
            // SAFETY: non-null out-pointer to an int (API contract).
            unsafe { least.write(0) };
        }
        if !greatest.is_null() {
            // SAFETY: non-null out-pointer to an int (API contract).
            unsafe { greatest.write(-5) };
        }
        SUCCESS
    })
}

// ---------------------------------------------------------------------------------------------
// Memory

fn alloc(entry: &'static str, out: *mut u64, bytes: usize) -> i32 {
    if out.is_null() {
        return bad(entry, INVALID_VALUE, "NULL output pointer");
    }
    if bytes == 0 {
        return bad(entry, INVALID_VALUE, "zero-byte allocation");
    }
    let mut st = state();
    let ctx = match need_ctx(entry, &st) {
        Ok(c) => c,
        Err(e) => return e,
    };
    if st.mem_used + bytes as u64 > st.mem_limit {
        return OUT_OF_MEMORY;
    }
    let addr = st.next_addr;
    st.next_addr += (bytes as u64).div_ceil(GUARD) * GUARD + GUARD;
    st.mem_used += bytes as u64;
    st.allocs.insert(
        addr,
        Alloc {
            data: vec![0; bytes],
            ctx,
        },
    );
    drop(st);
    // SAFETY: `out` is non-null and points at a CUdeviceptr slot (API contract).
    unsafe { out.write(addr) };
    SUCCESS
}

/// `cuMemAlloc_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemAlloc_v2(out: *mut u64, bytes: usize) -> i32 {
    entry!("cuMemAlloc_v2", { alloc("cuMemAlloc_v2", out, bytes) })
}

/// `cuMemAllocPitch_v2`: the pitch is the width rounded up to 512 bytes.
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocPitch_v2(
    out: *mut u64,
    pitch: *mut usize,
    width_bytes: usize,
    height: usize,
    elem: c_uint,
) -> i32 {
    entry!("cuMemAllocPitch_v2", {
        if !matches!(elem, 4 | 8 | 16) {
            return bad(
                "cuMemAllocPitch_v2",
                INVALID_VALUE,
                &format!("ElementSizeBytes must be 4, 8 or 16, not {elem}"),
            );
        }
        if pitch.is_null() || width_bytes == 0 || height == 0 {
            return bad(
                "cuMemAllocPitch_v2",
                INVALID_VALUE,
                "NULL pitch pointer or empty extent",
            );
        }
        let p = width_bytes.div_ceil(PITCH_ALIGN) * PITCH_ALIGN;
        let r = alloc("cuMemAllocPitch_v2", out, p * height);
        if r == SUCCESS {
            // SAFETY: `pitch` is non-null and points at a size_t (API contract).
            unsafe { pitch.write(p) };
        }
        r
    })
}

/// `cuMemFree_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemFree_v2(ptr: u64) -> i32 {
    entry!("cuMemFree_v2", {
        let mut st = state();
        if let Err(e) = need_ctx("cuMemFree_v2", &st) {
            return e;
        }
        match st.allocs.remove(&ptr) {
            Some(a) => {
                st.mem_used -= a.data.len() as u64;
                SUCCESS
            }
            None => {
                let inside = st.find(ptr).is_some();
                drop(st);
                bad(
                    "cuMemFree_v2",
                    INVALID_VALUE,
                    &if inside {
                        format!("{ptr:#x} points inside an allocation, not at its start")
                    } else {
                        format!("{ptr:#x} is not a live device allocation (double free?)")
                    },
                )
            }
        }
    })
}

fn host_alloc(entry: &'static str, out: *mut *mut c_void, bytes: usize) -> i32 {
    if out.is_null() || bytes == 0 {
        return bad(entry, INVALID_VALUE, "NULL output pointer or zero size");
    }
    let mut st = state();
    if let Err(e) = need_ctx(entry, &st) {
        return e;
    }
    let Ok(layout) = std::alloc::Layout::from_size_align(bytes, 4096) else {
        return OUT_OF_MEMORY;
    };
    // SAFETY: `layout` has a non-zero size (checked above).
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        return OUT_OF_MEMORY;
    }
    st.host_allocs.insert(p as usize, layout);
    drop(st);
    // SAFETY: `out` is non-null and points at a `void *` slot (API contract).
    unsafe { out.write(p.cast()) };
    SUCCESS
}

/// `cuMemHostAlloc`: page-aligned host memory, tracked so leaks are counted.
#[no_mangle]
pub unsafe extern "C" fn cuMemHostAlloc(
    out: *mut *mut c_void,
    bytes: usize,
    _flags: c_uint,
) -> i32 {
    entry!("cuMemHostAlloc", {
        host_alloc("cuMemHostAlloc", out, bytes)
    })
}

/// `cuMemAllocHost_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocHost_v2(out: *mut *mut c_void, bytes: usize) -> i32 {
    entry!("cuMemAllocHost_v2", {
        host_alloc("cuMemAllocHost_v2", out, bytes)
    })
}

/// `cuMemFreeHost`.
#[no_mangle]
pub unsafe extern "C" fn cuMemFreeHost(p: *mut c_void) -> i32 {
    entry!("cuMemFreeHost", {
        let mut st = state();
        match st.host_allocs.remove(&(p as usize)) {
            Some(layout) => {
                drop(st);
                // SAFETY: `p` was returned by `alloc_zeroed` with this layout and was just removed
                // from the live table, so it is freed exactly once.
                unsafe { std::alloc::dealloc(p.cast(), layout) };
                SUCCESS
            }
            None => {
                drop(st);
                bad(
                    "cuMemFreeHost",
                    INVALID_VALUE,
                    &format!("{p:p} is not live pinned host memory"),
                )
            }
        }
    })
}

/// One side of a copy, resolved.
#[derive(Clone, Copy)]
enum Side {
    Host(*mut u8),
    Dev(u64),
}

/// Resolves a device range `[addr, addr+len)` into a pointer into its allocation, or records why
/// it is out of bounds.
fn dev_ptr(
    entry: &'static str,
    st: &mut State,
    addr: u64,
    len: usize,
    what: &str,
) -> Result<*mut u8, i32> {
    let Some((base, off)) = st.find(addr) else {
        let hint = if addr < DEVICE_MEM_BASE {
            " (looks like a host pointer, or NULL)"
        } else {
            ""
        };
        return Err(bad(
            entry,
            INVALID_VALUE,
            &format!("{what} {addr:#x} is not inside a live device allocation{hint}"),
        ));
    };
    let Some(a) = st.allocs.get_mut(&base) else {
        return Err(UNKNOWN);
    };
    if off + len > a.data.len() {
        return Err(bad(
            entry,
            INVALID_VALUE,
            &format!(
                "{what} range {addr:#x}+{len} runs {} bytes past the end of the {}-byte allocation at {base:#x}",
                off + len - a.data.len(),
                a.data.len()
            ),
        ));
    }
    Ok(a.data[off..].as_mut_ptr())
}

fn resolve(
    entry: &'static str,
    st: &mut State,
    side: Side,
    len: usize,
    what: &str,
) -> Result<*mut u8, i32> {
    match side {
        Side::Host(p) if p.is_null() && len > 0 => Err(bad(
            entry,
            INVALID_VALUE,
            &format!("{what} host pointer is NULL"),
        )),
        Side::Host(p) => Ok(p),
        Side::Dev(a) => dev_ptr(entry, st, a, len, what),
    }
}

/// Unified addressing: an address inside a device allocation is device memory, anything else host.
fn unified(st: &State, addr: u64) -> Side {
    if st.find(addr).is_some() || (DEVICE_MEM_BASE..st.next_addr).contains(&addr) {
        Side::Dev(addr)
    } else {
        Side::Host(addr as *mut u8)
    }
}

fn check_stream(entry: &'static str, st: &State, s: *mut c_void) -> Result<(), i32> {
    let h = s as u64;
    // NULL, CU_STREAM_LEGACY (1) and CU_STREAM_PER_THREAD (2) are always valid.
    if h <= 2 || st.streams.contains_key(&h) {
        Ok(())
    } else {
        Err(bad(
            entry,
            INVALID_HANDLE,
            &format!("{h:#x} is not a live stream"),
        ))
    }
}

fn copy_linear(
    entry: &'static str,
    dst: Side,
    src: Side,
    n: usize,
    stream: Option<*mut c_void>,
) -> i32 {
    let mut st = state();
    if let Err(e) = need_ctx(entry, &st) {
        return e;
    }
    if let Some(s) = stream {
        if let Err(e) = check_stream(entry, &st, s) {
            return e;
        }
    }
    if n == 0 {
        return SUCCESS;
    }
    let d = match resolve(entry, &mut st, dst, n, "destination") {
        Ok(p) => p,
        Err(e) => return e,
    };
    let s = match resolve(entry, &mut st, src, n, "source") {
        Ok(p) => p,
        Err(e) => return e,
    };
    // SAFETY: device ranges were bounds-checked against their allocations (kept alive by the
    // held lock); host ranges are the caller's, valid for `n` bytes per the API contract. `copy`
    // tolerates overlap (device-to-device within one allocation).
    unsafe { std::ptr::copy(s, d, n) };
    SUCCESS
}

/// `cuMemcpy` (unified addressing).
#[no_mangle]
pub unsafe extern "C" fn cuMemcpy(dst: u64, src: u64, n: usize) -> i32 {
    entry!("cuMemcpy", {
        let (d, s) = {
            let st = state();
            (unified(&st, dst), unified(&st, src))
        };
        copy_linear("cuMemcpy", d, s, n, None)
    })
}

/// `cuMemcpyAsync` (unified addressing; runs synchronously).
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyAsync(dst: u64, src: u64, n: usize, stream: *mut c_void) -> i32 {
    entry!("cuMemcpyAsync", {
        let (d, s) = {
            let st = state();
            (unified(&st, dst), unified(&st, src))
        };
        copy_linear("cuMemcpyAsync", d, s, n, Some(stream))
    })
}

/// `cuMemcpyHtoD_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(dst: u64, src: *const c_void, n: usize) -> i32 {
    entry!("cuMemcpyHtoD_v2", {
        copy_linear(
            "cuMemcpyHtoD_v2",
            Side::Dev(dst),
            Side::Host(src as *mut u8),
            n,
            None,
        )
    })
}

/// `cuMemcpyHtoDAsync_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoDAsync_v2(
    dst: u64,
    src: *const c_void,
    n: usize,
    s: *mut c_void,
) -> i32 {
    entry!("cuMemcpyHtoDAsync_v2", {
        copy_linear(
            "cuMemcpyHtoDAsync_v2",
            Side::Dev(dst),
            Side::Host(src as *mut u8),
            n,
            Some(s),
        )
    })
}

/// `cuMemcpyDtoH_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoH_v2(dst: *mut c_void, src: u64, n: usize) -> i32 {
    entry!("cuMemcpyDtoH_v2", {
        copy_linear(
            "cuMemcpyDtoH_v2",
            Side::Host(dst.cast()),
            Side::Dev(src),
            n,
            None,
        )
    })
}

/// `cuMemcpyDtoHAsync_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoHAsync_v2(
    dst: *mut c_void,
    src: u64,
    n: usize,
    s: *mut c_void,
) -> i32 {
    entry!("cuMemcpyDtoHAsync_v2", {
        copy_linear(
            "cuMemcpyDtoHAsync_v2",
            Side::Host(dst.cast()),
            Side::Dev(src),
            n,
            Some(s),
        )
    })
}

/// `cuMemcpyDtoD_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoD_v2(dst: u64, src: u64, n: usize) -> i32 {
    entry!("cuMemcpyDtoD_v2", {
        copy_linear("cuMemcpyDtoD_v2", Side::Dev(dst), Side::Dev(src), n, None)
    })
}

/// `cuMemcpyDtoDAsync_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoDAsync_v2(dst: u64, src: u64, n: usize, s: *mut c_void) -> i32 {
    entry!("cuMemcpyDtoDAsync_v2", {
        copy_linear(
            "cuMemcpyDtoDAsync_v2",
            Side::Dev(dst),
            Side::Dev(src),
            n,
            Some(s),
        )
    })
}

fn copy_2d(entry: &'static str, p: *const CudaMemcpy2D, stream: Option<*mut c_void>) -> i32 {
    if p.is_null() {
        return bad(entry, INVALID_VALUE, "NULL CUDA_MEMCPY2D");
    }
    // SAFETY: non-null pointer to a CUDA_MEMCPY2D (API contract); copied out by value.
    let c = unsafe { p.read() };
    let mut st = state();
    if let Err(e) = need_ctx(entry, &st) {
        return e;
    }
    if let Some(s) = stream {
        if let Err(e) = check_stream(entry, &st, s) {
            return e;
        }
    }
    if c.WidthInBytes == 0 || c.Height == 0 {
        return SUCCESS;
    }
    if c.srcPitch < c.WidthInBytes + c.srcXInBytes && c.Height > 1 {
        return bad(
            entry,
            INVALID_VALUE,
            &format!(
                "srcPitch {} < srcXInBytes + WidthInBytes {}",
                c.srcPitch,
                c.srcXInBytes + c.WidthInBytes
            ),
        );
    }
    if c.dstPitch < c.WidthInBytes + c.dstXInBytes && c.Height > 1 {
        return bad(
            entry,
            INVALID_VALUE,
            &format!(
                "dstPitch {} < dstXInBytes + WidthInBytes {}",
                c.dstPitch,
                c.dstXInBytes + c.WidthInBytes
            ),
        );
    }
    let side = |st: &State,
                ty: c_uint,
                host: *const c_void,
                dev: u64,
                what: &str|
     -> Result<(Side, u64), i32> {
        match ty {
            MEMORYTYPE_HOST => Ok((Side::Host(host as *mut u8), host as u64)),
            MEMORYTYPE_DEVICE => Ok((Side::Dev(dev), dev)),
            MEMORYTYPE_UNIFIED => Ok((unified(st, dev), dev)),
            MEMORYTYPE_ARRAY => Err(bad(
                entry,
                NOT_SUPPORTED,
                &format!("{what}: CUDA arrays are not emulated"),
            )),
            t => Err(bad(
                entry,
                INVALID_VALUE,
                &format!("{what}: memory type {t}"),
            )),
        }
    };
    let (src, src_base) = match side(&st, c.srcMemoryType, c.srcHost, c.srcDevice, "source") {
        Ok(s) => s,
        Err(e) => return e,
    };
    let (dst, dst_base) = match side(&st, c.dstMemoryType, c.dstHost, c.dstDevice, "destination") {
        Ok(s) => s,
        Err(e) => return e,
    };
    // The whole footprint of each side, first byte to last byte, must be in bounds.
    let span = |x: usize, y: usize, pitch: usize| y * pitch + x;
    let src_first = span(c.srcXInBytes, c.srcY, c.srcPitch);
    let dst_first = span(c.dstXInBytes, c.dstY, c.dstPitch);
    let src_len = (c.Height - 1) * c.srcPitch + c.WidthInBytes;
    let dst_len = (c.Height - 1) * c.dstPitch + c.WidthInBytes;
    let src_ptr = match src {
        Side::Dev(_) => resolve(
            entry,
            &mut st,
            Side::Dev(src_base + src_first as u64),
            src_len,
            "source",
        ),
        Side::Host(p) => resolve(
            entry,
            &mut st,
            Side::Host(p.wrapping_add(src_first)),
            src_len,
            "source",
        ),
    };
    let src_ptr = match src_ptr {
        Ok(p) => p,
        Err(e) => return e,
    };
    let dst_ptr = match dst {
        Side::Dev(_) => resolve(
            entry,
            &mut st,
            Side::Dev(dst_base + dst_first as u64),
            dst_len,
            "destination",
        ),
        Side::Host(p) => resolve(
            entry,
            &mut st,
            Side::Host(p.wrapping_add(dst_first)),
            dst_len,
            "destination",
        ),
    };
    let dst_ptr = match dst_ptr {
        Ok(p) => p,
        Err(e) => return e,
    };
    for row in 0..c.Height {
        // SAFETY: both footprints were bounds-checked above (device) or are the caller's buffers
        // described by the same parameters (host); row `row` starts `row * pitch` bytes in and is
        // `WidthInBytes` long, inside the checked span. `copy` tolerates overlap.
        let (from, to) = (
            src_ptr.wrapping_add(row * c.srcPitch),
            dst_ptr.wrapping_add(row * c.dstPitch),
        );
        // SAFETY: as above: `from` and `to` are row starts inside the checked spans.
        unsafe { std::ptr::copy(from, to, c.WidthInBytes) };
    }
    SUCCESS
}

/// `cuMemcpy2D_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpy2D_v2(p: *const CudaMemcpy2D) -> i32 {
    entry!("cuMemcpy2D_v2", { copy_2d("cuMemcpy2D_v2", p, None) })
}

/// `cuMemcpy2DUnaligned_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpy2DUnaligned_v2(p: *const CudaMemcpy2D) -> i32 {
    entry!("cuMemcpy2DUnaligned_v2", {
        copy_2d("cuMemcpy2DUnaligned_v2", p, None)
    })
}

/// `cuMemcpy2DAsync_v2` (runs synchronously).
#[no_mangle]
pub unsafe extern "C" fn cuMemcpy2DAsync_v2(p: *const CudaMemcpy2D, s: *mut c_void) -> i32 {
    entry!("cuMemcpy2DAsync_v2", {
        copy_2d("cuMemcpy2DAsync_v2", p, Some(s))
    })
}

fn memset(entry: &'static str, dst: u64, v: u8, n: usize, stream: Option<*mut c_void>) -> i32 {
    let mut st = state();
    if let Err(e) = need_ctx(entry, &st) {
        return e;
    }
    if let Some(s) = stream {
        if let Err(e) = check_stream(entry, &st, s) {
            return e;
        }
    }
    match dev_ptr(entry, &mut st, dst, n, "destination") {
        Ok(p) => {
            // SAFETY: `[p, p+n)` was bounds-checked inside its allocation, kept alive by the lock.
            unsafe { std::ptr::write_bytes(p, v, n) };
            SUCCESS
        }
        Err(e) => e,
    }
}

/// `cuMemsetD8_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD8_v2(dst: u64, v: u8, n: usize) -> i32 {
    entry!("cuMemsetD8_v2", {
        memset("cuMemsetD8_v2", dst, v, n, None)
    })
}

/// `cuMemsetD8Async`.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD8Async(dst: u64, v: u8, n: usize, s: *mut c_void) -> i32 {
    entry!("cuMemsetD8Async", {
        memset("cuMemsetD8Async", dst, v, n, Some(s))
    })
}

/// `cuPointerGetAttribute`: CONTEXT (1), MEMORY_TYPE (2), DEVICE_POINTER (3), DEVICE_ORDINAL (9),
/// RANGE_START_ADDR (11), RANGE_SIZE (12) of a device pointer.
#[no_mangle]
pub unsafe extern "C" fn cuPointerGetAttribute(data: *mut c_void, attr: c_int, ptr: u64) -> i32 {
    entry!("cuPointerGetAttribute", {
        if data.is_null() {
            return bad("cuPointerGetAttribute", INVALID_VALUE, "NULL data pointer");
        }
        let st = state();
        let Some((base, _)) = st.find(ptr) else {
            // Not an error worth a violation: clients probe pointers this way.
            return INVALID_VALUE;
        };
        let Some(a) = st.allocs.get(&base) else {
            return UNKNOWN;
        };
        /// Writes the attribute value.
        ///
        /// # Safety
        ///
        /// `data` must be non-null and point at writable storage for a `T`.
        unsafe fn put<T>(data: *mut c_void, v: T) {
            // SAFETY: forwarded contract.
            unsafe { data.cast::<T>().write(v) }
        }
        // SAFETY (each arm): `data` is non-null (checked above) and, per the API, points at
        // storage of the attribute's type (CUcontext, unsigned int, CUdeviceptr, int, size_t).
        match attr {
            // SAFETY: see above.
            1 => unsafe { put(data, a.ctx as *mut c_void) },
            // SAFETY: see above.
            2 => unsafe { put::<c_uint>(data, MEMORYTYPE_DEVICE) },
            // SAFETY: see above.
            3 | 11 => unsafe { put::<u64>(data, if attr == 3 { ptr } else { base }) },
            // SAFETY: see above.
            9 => unsafe { put::<c_int>(data, 0) },
            // SAFETY: see above.
            12 => unsafe { put::<usize>(data, a.data.len()) },
            _ => return NOT_SUPPORTED,
        }
        SUCCESS
    })
}

// ---------------------------------------------------------------------------------------------
// Streams and events

fn stream_create(entry: &'static str, out: *mut *mut c_void) -> i32 {
    if out.is_null() {
        return bad(entry, INVALID_VALUE, "NULL output pointer");
    }
    let mut st = state();
    let ctx = match need_ctx(entry, &st) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let h = st.new_handle(STREAM_BASE);
    st.streams.insert(h, Stream { ctx });
    drop(st);
    // SAFETY: `out` is non-null and points at a CUstream slot (API contract).
    unsafe { out.write(h as *mut c_void) };
    SUCCESS
}

/// `cuStreamCreate`.
#[no_mangle]
pub unsafe extern "C" fn cuStreamCreate(out: *mut *mut c_void, _flags: c_uint) -> i32 {
    entry!("cuStreamCreate", { stream_create("cuStreamCreate", out) })
}

/// `cuStreamCreateWithPriority`.
#[no_mangle]
pub unsafe extern "C" fn cuStreamCreateWithPriority(
    out: *mut *mut c_void,
    _flags: c_uint,
    _prio: c_int,
) -> i32 {
    entry!("cuStreamCreateWithPriority", {
        stream_create("cuStreamCreateWithPriority", out)
    })
}

/// `cuStreamDestroy_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuStreamDestroy_v2(s: *mut c_void) -> i32 {
    entry!("cuStreamDestroy_v2", {
        if state().streams.remove(&(s as u64)).is_some() {
            SUCCESS
        } else {
            bad(
                "cuStreamDestroy_v2",
                INVALID_HANDLE,
                &format!("{s:p} is not a live stream"),
            )
        }
    })
}

/// `cuStreamDestroy`, the unversioned name a real `libcuda.so.1` still exports beside
/// `cuStreamDestroy_v2` (GStreamer's CUDA loader resolves it): the same call.
#[no_mangle]
pub unsafe extern "C" fn cuStreamDestroy(s: *mut c_void) -> i32 {
    entry!("cuStreamDestroy", {
        if state().streams.remove(&(s as u64)).is_some() {
            SUCCESS
        } else {
            bad(
                "cuStreamDestroy",
                INVALID_HANDLE,
                &format!("{s:p} is not a live stream"),
            )
        }
    })
}

fn stream_noop(entry: &'static str, s: *mut c_void) -> i32 {
    match check_stream(entry, &state(), s) {
        Ok(()) => SUCCESS,
        Err(e) => e,
    }
}

/// `cuStreamSynchronize`.
#[no_mangle]
pub unsafe extern "C" fn cuStreamSynchronize(s: *mut c_void) -> i32 {
    entry!("cuStreamSynchronize", {
        stream_noop("cuStreamSynchronize", s)
    })
}

/// `cuStreamQuery`: always complete.
#[no_mangle]
pub unsafe extern "C" fn cuStreamQuery(s: *mut c_void) -> i32 {
    entry!("cuStreamQuery", { stream_noop("cuStreamQuery", s) })
}

/// `cuStreamWaitEvent`.
#[no_mangle]
pub unsafe extern "C" fn cuStreamWaitEvent(s: *mut c_void, ev: *mut c_void, _flags: c_uint) -> i32 {
    entry!("cuStreamWaitEvent", {
        let st = state();
        if let Err(e) = check_stream("cuStreamWaitEvent", &st, s) {
            return e;
        }
        if !st.events.contains_key(&(ev as u64)) {
            drop(st);
            return bad(
                "cuStreamWaitEvent",
                INVALID_HANDLE,
                &format!("{ev:p} is not a live event"),
            );
        }
        SUCCESS
    })
}

/// `cuEventCreate`.
#[no_mangle]
pub unsafe extern "C" fn cuEventCreate(out: *mut *mut c_void, _flags: c_uint) -> i32 {
    entry!("cuEventCreate", {
        if out.is_null() {
            return bad("cuEventCreate", INVALID_VALUE, "NULL output pointer");
        }
        let mut st = state();
        let ctx = match need_ctx("cuEventCreate", &st) {
            Ok(c) => c,
            Err(e) => return e,
        };
        let h = st.new_handle(EVENT_BASE);
        st.events.insert(
            h,
            Event {
                ctx,
                recorded_at: None,
            },
        );
        drop(st);
        // SAFETY: `out` is non-null and points at a CUevent slot (API contract).
        unsafe { out.write(h as *mut c_void) };
        SUCCESS
    })
}

fn with_event<R>(
    entry: &'static str,
    ev: *mut c_void,
    f: impl FnOnce(&mut Event) -> R,
) -> Result<R, i32> {
    let mut st = state();
    match st.events.get_mut(&(ev as u64)) {
        Some(e) => Ok(f(e)),
        None => {
            drop(st);
            Err(bad(
                entry,
                INVALID_HANDLE,
                &format!("{ev:p} is not a live event"),
            ))
        }
    }
}

/// `cuEventRecord`.
#[no_mangle]
pub unsafe extern "C" fn cuEventRecord(ev: *mut c_void, s: *mut c_void) -> i32 {
    entry!("cuEventRecord", {
        if let Err(e) = check_stream("cuEventRecord", &state(), s) {
            return e;
        }
        match with_event("cuEventRecord", ev, |e| {
            e.recorded_at = Some(std::time::Instant::now())
        }) {
            Ok(()) => SUCCESS,
            Err(e) => e,
        }
    })
}

/// `cuEventSynchronize`.
#[no_mangle]
pub unsafe extern "C" fn cuEventSynchronize(ev: *mut c_void) -> i32 {
    entry!("cuEventSynchronize", {
        with_event("cuEventSynchronize", ev, |_| SUCCESS).unwrap_or_else(|e| e)
    })
}

/// `cuEventQuery`.
#[no_mangle]
pub unsafe extern "C" fn cuEventQuery(ev: *mut c_void) -> i32 {
    entry!("cuEventQuery", {
        with_event("cuEventQuery", ev, |_| SUCCESS).unwrap_or_else(|e| e)
    })
}

/// `cuEventDestroy_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuEventDestroy_v2(ev: *mut c_void) -> i32 {
    entry!("cuEventDestroy_v2", {
        if state().events.remove(&(ev as u64)).is_some() {
            SUCCESS
        } else {
            bad(
                "cuEventDestroy_v2",
                INVALID_HANDLE,
                &format!("{ev:p} is not a live event"),
            )
        }
    })
}

fn elapsed(entry: &'static str, ms: *mut f32, a: *mut c_void, b: *mut c_void) -> i32 {
    let st = state();
    let (Some(ea), Some(eb)) = (st.events.get(&(a as u64)), st.events.get(&(b as u64))) else {
        drop(st);
        return bad(entry, INVALID_HANDLE, "not a live event");
    };
    let (Some(ta), Some(tb)) = (ea.recorded_at, eb.recorded_at) else {
        return NOT_READY;
    };
    drop(st);
    let d = if tb >= ta {
        (tb - ta).as_secs_f32() * 1000.0
    } else {
        -((ta - tb).as_secs_f32() * 1000.0)
    };
    out!("cuEventElapsedTime", ms, d);
    SUCCESS
}

/// `cuEventElapsedTime`.
#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime(ms: *mut f32, a: *mut c_void, b: *mut c_void) -> i32 {
    entry!("cuEventElapsedTime", {
        elapsed("cuEventElapsedTime", ms, a, b)
    })
}

/// `cuEventElapsedTime_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime_v2(
    ms: *mut f32,
    a: *mut c_void,
    b: *mut c_void,
) -> i32 {
    entry!("cuEventElapsedTime_v2", {
        elapsed("cuEventElapsedTime_v2", ms, a, b)
    })
}

// ---------------------------------------------------------------------------------------------
// Peer access: one device, and a device is never its own peer.

/// `cuDeviceCanAccessPeer`: the emulated machine has one device, and the driver answers 0 when
/// a device is asked about itself (peer access is between two different devices).
#[no_mangle]
pub unsafe extern "C" fn cuDeviceCanAccessPeer(can: *mut c_int, dev: c_int, peer: c_int) -> i32 {
    entry!("cuDeviceCanAccessPeer", {
        if let Err(e) = check_dev("cuDeviceCanAccessPeer", dev) {
            return e;
        }
        if let Err(e) = check_dev("cuDeviceCanAccessPeer", peer) {
            return e;
        }
        out!("cuDeviceCanAccessPeer", can, 0);
        SUCCESS
    })
}

/// Checks `cuCtx{Enable,Disable}PeerAccess`'s arguments: a current context and a live peer.
fn peer_args(entry: &'static str, peer: *mut c_void) -> Result<(), i32> {
    let st = state();
    need_ctx(entry, &st)?;
    if !st.live_ctx(peer as u64) {
        return Err(bad(
            entry,
            INVALID_CONTEXT,
            &format!("peerContext {peer:p} is not a live context"),
        ));
    }
    Ok(())
}

/// `cuCtxEnablePeerAccess`: every context here is on the one device, whose
/// `cuDeviceCanAccessPeer` with itself is 0, so the driver's answer is
/// `CUDA_ERROR_PEER_ACCESS_UNSUPPORTED` (not a client error: asking is how a client finds out).
#[no_mangle]
pub unsafe extern "C" fn cuCtxEnablePeerAccess(peer: *mut c_void, flags: c_uint) -> i32 {
    entry!("cuCtxEnablePeerAccess", {
        if flags != 0 {
            return bad("cuCtxEnablePeerAccess", INVALID_VALUE, "Flags must be 0");
        }
        match peer_args("cuCtxEnablePeerAccess", peer) {
            Ok(()) => PEER_ACCESS_UNSUPPORTED,
            Err(e) => e,
        }
    })
}

/// `cuCtxDisablePeerAccess`: access was never enabled (it cannot be here), so
/// `CUDA_ERROR_PEER_ACCESS_NOT_ENABLED`.
#[no_mangle]
pub unsafe extern "C" fn cuCtxDisablePeerAccess(peer: *mut c_void) -> i32 {
    entry!("cuCtxDisablePeerAccess", {
        match peer_args("cuCtxDisablePeerAccess", peer) {
            Ok(()) => PEER_ACCESS_NOT_ENABLED,
            Err(e) => e,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Errors

fn error_name(e: i32) -> &'static [u8] {
    match e {
        SUCCESS => b"CUDA_SUCCESS\0",
        INVALID_VALUE => b"CUDA_ERROR_INVALID_VALUE\0",
        OUT_OF_MEMORY => b"CUDA_ERROR_OUT_OF_MEMORY\0",
        NOT_INITIALIZED => b"CUDA_ERROR_NOT_INITIALIZED\0",
        NO_DEVICE => b"CUDA_ERROR_NO_DEVICE\0",
        INVALID_DEVICE => b"CUDA_ERROR_INVALID_DEVICE\0",
        INVALID_CONTEXT => b"CUDA_ERROR_INVALID_CONTEXT\0",
        INVALID_HANDLE => b"CUDA_ERROR_INVALID_HANDLE\0",
        NOT_READY => b"CUDA_ERROR_NOT_READY\0",
        NOT_SUPPORTED => b"CUDA_ERROR_NOT_SUPPORTED\0",
        PEER_ACCESS_UNSUPPORTED => b"CUDA_ERROR_PEER_ACCESS_UNSUPPORTED\0",
        PEER_ACCESS_NOT_ENABLED => b"CUDA_ERROR_PEER_ACCESS_NOT_ENABLED\0",
        _ => b"CUDA_ERROR_UNKNOWN\0",
    }
}

fn error_text(e: i32) -> &'static [u8] {
    match e {
        SUCCESS => b"no error\0",
        INVALID_VALUE => b"invalid argument\0",
        OUT_OF_MEMORY => b"out of memory\0",
        NOT_INITIALIZED => b"initialization error\0",
        NO_DEVICE => b"no CUDA-capable device is detected\0",
        INVALID_DEVICE => b"invalid device ordinal\0",
        INVALID_CONTEXT => b"invalid device context\0",
        INVALID_HANDLE => b"invalid resource handle\0",
        NOT_READY => b"device not ready\0",
        NOT_SUPPORTED => b"operation not supported\0",
        PEER_ACCESS_UNSUPPORTED => b"peer access is not supported between these two devices\0",
        PEER_ACCESS_NOT_ENABLED => b"peer access has not been enabled\0",
        _ => b"unknown error\0",
    }
}

/// `cuGetErrorName` (works before `cuInit`).
#[no_mangle]
pub unsafe extern "C" fn cuGetErrorName(e: i32, out: *mut *const c_char) -> i32 {
    guard(&EMU, "cuGetErrorName", UNKNOWN, || {
        out!("cuGetErrorName", out, error_name(e).as_ptr().cast());
        SUCCESS
    })
}

/// `cuGetErrorString` (works before `cuInit`).
#[no_mangle]
pub unsafe extern "C" fn cuGetErrorString(e: i32, out: *mut *const c_char) -> i32 {
    guard(&EMU, "cuGetErrorString", UNKNOWN, || {
        out!("cuGetErrorString", out, error_text(e).as_ptr().cast());
        SUCCESS
    })
}

// ---------------------------------------------------------------------------------------------
// Exported but not emulated: FFmpeg's and GStreamer's loaders require these symbols (a loader that
// resolves its whole table refuses a library that lacks one), cudarc may reference some. The
// names are those of the CUDA 12 driver API (`cuda.h`, with its `_v2` renames) that a client of
// this emulator could plausibly resolve at load time.

macro_rules! unsupported {
    ($($name:ident),* $(,)?) => {$(
        /// Not emulated: returns `CUDA_ERROR_NOT_SUPPORTED`.
        #[no_mangle]
        pub extern "C" fn $name() -> i32 {
            guard(&EMU, stringify!($name), UNKNOWN, || {
                EMU.enter(stringify!($name)).unwrap_or(NOT_SUPPORTED)
            })
        }
    )*};
}

unsupported!(
    cuMemAllocManaged,
    cuMemAllocAsync,
    cuMemFreeAsync,
    cuMemAllocFromPoolAsync,
    cuStreamAddCallback,
    cuLaunchHostFunc,
    cuLaunchKernel,
    cuLinkCreate,
    cuLinkAddData,
    cuLinkComplete,
    cuLinkDestroy,
    cuModuleLoad,
    cuModuleLoadData,
    cuModuleUnload,
    cuModuleGetFunction,
    cuModuleGetGlobal,
    cuModuleGetGlobal_v2,
    cuTexObjectCreate,
    cuTexObjectDestroy,
    cuGLGetDevices,
    cuGLGetDevices_v2,
    cuGraphicsGLRegisterImage,
    cuGraphicsGLRegisterBuffer,
    cuGraphicsResourceSetMapFlags,
    cuGraphicsResourceSetMapFlags_v2,
    cuGraphicsResourceGetMappedPointer,
    cuGraphicsResourceGetMappedMipmappedArray,
    cuIpcGetEventHandle,
    cuIpcOpenEventHandle,
    cuIpcGetMemHandle,
    cuIpcOpenMemHandle,
    cuIpcOpenMemHandle_v2,
    cuIpcCloseMemHandle,
    cuDeviceGetP2PAttribute,
    cuModuleLoadDataEx,
    cuModuleLoadFatBinary,
    cuFuncGetAttribute,
    cuFuncSetAttribute,
    cuFuncSetCacheConfig,
    cuOccupancyMaxActiveBlocksPerMultiprocessor,
    cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags,
    cuOccupancyMaxPotentialBlockSize,
    cuMemHostRegister,
    cuMemHostRegister_v2,
    cuMemHostUnregister,
    cuMemHostGetDevicePointer_v2,
    cuMemAddressReserve,
    cuMemAddressFree,
    cuMemCreate,
    cuMemRelease,
    cuMemMap,
    cuMemUnmap,
    cuMemSetAccess,
    cuMemGetAccess,
    cuMemGetAllocationGranularity,
    cuMemGetAllocationPropertiesFromHandle,
    cuMemExportToShareableHandle,
    cuMemImportFromShareableHandle,
    cuMemRetainAllocationHandle,
    cuArrayCreate_v2,
    cuArrayGetDescriptor_v2,
    cuArray3DGetDescriptor_v2,
    cuMemcpy3D_v2,
    cuMemcpy3DAsync_v2,
    cuMemcpyAtoH_v2,
    cuMemcpyHtoA_v2,
    cuStreamBeginCapture_v2,
    cuStreamEndCapture,
    cuStreamIsCapturing,
    cuGraphInstantiate,
    cuGraphInstantiateWithFlags,
    cuGraphLaunch,
    cuGraphDestroy,
    cuGraphExecDestroy,
    cuCtxGetApiVersion,
    cuCtxGetFlags,
    cuCtxGetLimit,
    cuStreamGetFlags,
    cuStreamGetPriority,
    cuDeviceGetLuid,
    cuDeviceGetPCIBusId,
    cuDeviceGetByPCIBusId,
    cuMemGetAddressRange_v2,
    cuPointerGetAttributes,
    cuMemsetD16_v2,
    cuMemsetD32_v2,
    cuMemsetD32Async,
    cuMemsetD2D8_v2,
    cuMemPrefetchAsync,
    cuMemAdvise,
    cuGraphicsUnregisterResource,
    cuGraphicsMapResources,
    cuGraphicsUnmapResources,
    cuGraphicsSubResourceGetMappedArray,
    cuGraphicsResourceGetMappedPointer_v2,
    cuImportExternalMemory,
    cuDestroyExternalMemory,
    cuExternalMemoryGetMappedBuffer,
    cuExternalMemoryGetMappedMipmappedArray,
    cuMipmappedArrayGetLevel,
    cuMipmappedArrayDestroy,
    cuImportExternalSemaphore,
    cuDestroyExternalSemaphore,
    cuSignalExternalSemaphoresAsync,
    cuWaitExternalSemaphoresAsync,
    cuArray3DCreate_v2,
    cuArrayDestroy,
    cuEGLStreamProducerConnect,
    cuEGLStreamProducerDisconnect,
    cuEGLStreamConsumerDisconnect,
    cuEGLStreamProducerPresentFrame,
    cuEGLStreamProducerReturnFrame,
    cuDeviceGetDefaultMemPool,
    cuDeviceGetMemPool,
    cuMemPoolCreate,
    cuMemPoolDestroy,
    cuMemPoolSetAttribute,
    cuMemPoolGetAttribute,
    cuMemPoolTrimTo,
    cuCtxCreate_v3,
    cuCtxCreate_v4,
);

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
            EMU.line(&format!("{line} at=exit"));
        }
    });
}

/// Runs [`at_exit`] when the process exits or the library is unloaded, so the report always ends
/// with the final handle counts.
#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = at_exit;
