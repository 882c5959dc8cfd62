//! The emulated NVENC's view of CUDA: the driver API, opened with `dlopen("libcuda.so.1")`.
//!
//! The emulated NVENC reads surfaces through the CUDA driver API instead of peeking into the
//! emulated libcuda's tables, so it works on top of either driver: the emulated `libcuda` in CI,
//! or a real one on a GPU machine (surfaces in real device memory, read back by the real driver).

use std::ffi::{c_int, c_void};

/// The CUDA entry points the emulated NVENC calls.
#[derive(Debug)]
pub struct Cuda {
    _lib: libloading::Library,
    push: unsafe extern "C" fn(*mut c_void) -> c_int,
    pop: unsafe extern "C" fn(*mut *mut c_void) -> c_int,
    dtoh: unsafe extern "C" fn(*mut c_void, u64, usize) -> c_int,
    attr: unsafe extern "C" fn(*mut c_void, c_int, u64) -> c_int,
    get_device: unsafe extern "C" fn(*mut c_int) -> c_int,
    /// `cuStreamGetCtx` (CUDA 9.2 and later; `None` on an older driver, which cannot say).
    stream_ctx: Option<unsafe extern "C" fn(*mut c_void, *mut *mut c_void) -> c_int>,
}

const ATTR_RANGE_START_ADDR: c_int = 11;
const ATTR_RANGE_SIZE: c_int = 12;

impl Cuda {
    /// Opens `libcuda.so.1` and resolves the entry points.
    pub fn open() -> Result<Self, String> {
        // SAFETY: loading the CUDA driver runs its initialisers, which have no preconditions.
        let lib = unsafe { libloading::Library::new("libcuda.so.1") }.map_err(|e| e.to_string())?;
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the symbol has the C signature of the CUDA driver API function of this
                // name, which the field's type spells out.
                *unsafe { lib.get($name) }.map_err(|e| e.to_string())?
            };
        }
        let push = sym!(b"cuCtxPushCurrent_v2\0");
        let pop = sym!(b"cuCtxPopCurrent_v2\0");
        let dtoh = sym!(b"cuMemcpyDtoH_v2\0");
        let attr = sym!(b"cuPointerGetAttribute\0");
        let get_device = sym!(b"cuCtxGetDevice\0");
        // SAFETY: as `sym!`: the C signature of cuStreamGetCtx.
        let stream_ctx = unsafe { lib.get(b"cuStreamGetCtx\0") }.ok().map(|f| *f);
        Ok(Self {
            _lib: lib,
            push,
            pop,
            dtoh,
            attr,
            get_device,
            stream_ctx,
        })
    }

    /// The context `stream` belongs to, asked with `ctx` current (`cuStreamGetCtx`); `None`
    /// where the driver predates that call.
    pub fn stream_ctx(&self, ctx: u64, stream: u64) -> Option<Result<u64, String>> {
        let get = self.stream_ctx?;
        Some(self.with_ctx(ctx, || {
            let mut owner: *mut c_void = std::ptr::null_mut();
            // SAFETY: cuStreamGetCtx validates the stream handle; the out-pointer is a valid,
            // writable local.
            let rc = unsafe { get(stream as *mut c_void, &mut owner) };
            if rc == 0 {
                Ok(owner as u64)
            } else {
                Err(format!("cuStreamGetCtx returned {rc}"))
            }
        }))
    }

    /// Runs `f` with `ctx` pushed as the current context.
    fn with_ctx<R>(&self, ctx: u64, f: impl FnOnce() -> Result<R, String>) -> Result<R, String> {
        // SAFETY: cuCtxPushCurrent_v2 takes any CUcontext value and validates it.
        let rc = unsafe { (self.push)(ctx as *mut c_void) };
        if rc != 0 {
            return Err(format!("cuCtxPushCurrent_v2({ctx:#x}) returned {rc}"));
        }
        let r = f();
        let mut popped: *mut c_void = std::ptr::null_mut();
        // SAFETY: pops the context pushed above; the out-pointer is valid for writes.
        unsafe { (self.pop)(&mut popped) };
        r
    }

    /// Whether `ctx` is a context the driver accepts.
    pub fn check_ctx(&self, ctx: u64) -> Result<(), String> {
        self.with_ctx(ctx, || Ok(()))
    }

    /// The ordinal of the device `ctx` belongs to (`cuCtxGetDevice` with it current).
    pub fn device_of(&self, ctx: u64) -> Result<i32, String> {
        self.with_ctx(ctx, || {
            let mut device: c_int = -1;
            // SAFETY: the out-pointer is a valid, writable local.
            let rc = unsafe { (self.get_device)(&mut device) };
            if rc == 0 {
                Ok(device)
            } else {
                Err(format!("cuCtxGetDevice returned {rc}"))
            }
        })
    }

    /// The allocation containing `ptr`: (start, size).
    pub fn range(&self, ctx: u64, ptr: u64) -> Result<(u64, usize), String> {
        self.with_ctx(ctx, || {
            let mut start: u64 = 0;
            let mut size: usize = 0;
            // SAFETY: RANGE_START_ADDR writes a CUdeviceptr and RANGE_SIZE a size_t into the
            // given, correctly typed locals.
            let a =
                unsafe { (self.attr)((&mut start as *mut u64).cast(), ATTR_RANGE_START_ADDR, ptr) };
            // SAFETY: as above.
            let b = unsafe { (self.attr)((&mut size as *mut usize).cast(), ATTR_RANGE_SIZE, ptr) };
            if a != 0 || b != 0 {
                return Err(format!(
                    "{ptr:#x} is not a device allocation (cuPointerGetAttribute: {a}, {b})"
                ));
            }
            Ok((start, size))
        })
    }

    /// Copies `dst.len()` bytes from device address `src`.
    pub fn read(&self, ctx: u64, src: u64, dst: &mut [u8]) -> Result<(), String> {
        self.with_ctx(ctx, || {
            // SAFETY: `dst` is a writable host buffer of exactly the length passed; the driver
            // validates the device range.
            let rc = unsafe { (self.dtoh)(dst.as_mut_ptr().cast(), src, dst.len()) };
            if rc == 0 {
                Ok(())
            } else {
                Err(format!("cuMemcpyDtoH_v2 returned {rc}"))
            }
        })
    }
}
