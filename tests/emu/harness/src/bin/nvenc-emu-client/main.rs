//! A small NVENC client for the emulator tests: it loads the driver through the production loader
//! (`nvenc_sys::load`) and CUDA through `dlopen("libcuda.so.1")`, then runs one scenario, named by
//! the first argument, that uses the API correctly or deliberately wrongly. It checks the statuses
//! itself and exits non-zero on the first unexpected one; the test then checks the emulator's
//! report. Test infrastructure, not product.
//!
//! Scenarios: `load`, `sessions N`, `misuse`, `pitches`, `queries`, `symbols`, `hevc-rules`,
//! `io-streams` (the last two in `hevc.rs`),
//! `encode OUT FRAMES INTERVAL [stop-on-error] [pitch0 | pitchw] [hevc]` (`pitch0`: every
//! `NV_ENC_PIC_PARAMS::inputPitch` 0; `pitchw`: `inputWidth`; by default the allocation's pitch;
//! `hevc`: HEVC instead of H.264).

// A test client talking to C APIs: the unsafe blocks are FFI calls whose contracts are NVENC's
// and CUDA's; each still carries a SAFETY note.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_int, c_uint, c_void};
use std::io::Write;
use std::process::ExitCode;

use nvenc_sys as nv;
use nvenc_sys::NVENCSTATUS as S;

mod hevc;

/// The CUDA driver entry points this client needs.
struct Cu {
    _lib: libloading::Library,
    init: unsafe extern "C" fn(c_uint) -> c_int,
    ctx_create: unsafe extern "C" fn(*mut *mut c_void, c_uint, c_int) -> c_int,
    ctx_destroy: unsafe extern "C" fn(*mut c_void) -> c_int,
    ctx_pop: unsafe extern "C" fn(*mut *mut c_void) -> c_int,
    ctx_push: unsafe extern "C" fn(*mut c_void) -> c_int,
    alloc_pitch: unsafe extern "C" fn(*mut u64, *mut usize, usize, usize, c_uint) -> c_int,
    alloc: unsafe extern "C" fn(*mut u64, usize) -> c_int,
    free: unsafe extern "C" fn(u64) -> c_int,
    htod: unsafe extern "C" fn(u64, *const c_void, usize) -> c_int,
    stream_create: unsafe extern "C" fn(*mut *mut c_void, c_uint) -> c_int,
    stream_destroy: unsafe extern "C" fn(*mut c_void) -> c_int,
    stream_get_ctx: unsafe extern "C" fn(*mut c_void, *mut *mut c_void) -> c_int,
}

impl Cu {
    fn open() -> Result<Self, String> {
        // SAFETY: loading the CUDA driver library runs its initialisers only.
        let lib = unsafe { libloading::Library::new("libcuda.so.1") }.map_err(|e| e.to_string())?;
        macro_rules! sym {
            ($n:literal) => {
                // SAFETY: the field type is the C signature of the CUDA function of this name.
                *unsafe { lib.get($n) }.map_err(|e| e.to_string())?
            };
        }
        Ok(Self {
            init: sym!(b"cuInit\0"),
            ctx_create: sym!(b"cuCtxCreate_v2\0"),
            ctx_destroy: sym!(b"cuCtxDestroy_v2\0"),
            ctx_pop: sym!(b"cuCtxPopCurrent_v2\0"),
            ctx_push: sym!(b"cuCtxPushCurrent_v2\0"),
            alloc_pitch: sym!(b"cuMemAllocPitch_v2\0"),
            alloc: sym!(b"cuMemAlloc_v2\0"),
            free: sym!(b"cuMemFree_v2\0"),
            htod: sym!(b"cuMemcpyHtoD_v2\0"),
            stream_create: sym!(b"cuStreamCreate\0"),
            stream_destroy: sym!(b"cuStreamDestroy_v2\0"),
            stream_get_ctx: sym!(b"cuStreamGetCtx\0"),
            _lib: lib,
        })
    }

    /// cuInit + a context, left current.
    fn context(&self) -> Result<*mut c_void, String> {
        let mut ctx = std::ptr::null_mut();
        // SAFETY: plain CUDA calls with valid out-pointers.
        let rc = unsafe { (self.init)(0) };
        if rc != 0 {
            return Err(format!("cuInit: {rc}"));
        }
        // SAFETY: as above.
        let rc = unsafe { (self.ctx_create)(&mut ctx, 0, 0) };
        if rc != 0 {
            return Err(format!("cuCtxCreate: {rc}"));
        }
        Ok(ctx)
    }
}

fn fail(msg: String) -> Result<(), String> {
    Err(msg)
}

/// Compares a status with the expected one.
fn expect(what: &str, got: S, want: S) -> Result<(), String> {
    if got == want {
        println!("ok {what}: {got}");
        Ok(())
    } else {
        fail(format!("{what}: got {got}, expected {want}"))
    }
}

struct Session {
    f: nv::FunctionTable,
    enc: *mut c_void,
}

fn open(lib: &nv::Library, ctx: *mut c_void) -> (S, Session) {
    let f = lib.fns().clone();
    let mut p = nv::NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS {
        version: nv::NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER,
        deviceType: nv::NV_ENC_DEVICE_TYPE::NV_ENC_DEVICE_TYPE_CUDA,
        device: ctx,
        apiVersion: nv::NVENCAPI_VERSION,
        ..Default::default()
    };
    let mut enc = std::ptr::null_mut();
    // SAFETY: a zero-initialised params struct and a valid out-pointer.
    let st = unsafe { (f.open_encode_session_ex)(&mut p, &mut enc) };
    (st, Session { f, enc })
}

/// Initialize params: H.264, P4 low latency tuning, `interval` = frameIntervalP.
fn init_params(
    cfg: &mut nv::NV_ENC_CONFIG,
    w: u32,
    h: u32,
    interval: i32,
) -> nv::NV_ENC_INITIALIZE_PARAMS {
    cfg.frameIntervalP = interval;
    cfg.gopLength = 30;
    // SAFETY: the H.264 member of the union of an H.264 config.
    let h264 = unsafe { &mut cfg.encodeCodecConfig.h264Config };
    h264.idrPeriod = 30;
    h264.set_repeatSPSPPS(1);
    nv::NV_ENC_INITIALIZE_PARAMS {
        version: nv::NV_ENC_INITIALIZE_PARAMS_VER,
        encodeGUID: nv::NV_ENC_CODEC_H264_GUID,
        presetGUID: nv::NV_ENC_PRESET_P4_GUID,
        tuningInfo: nv::NV_ENC_TUNING_INFO::NV_ENC_TUNING_INFO_HIGH_QUALITY,
        encodeWidth: w,
        encodeHeight: h,
        darWidth: w,
        darHeight: h,
        frameRateNum: 30,
        frameRateDen: 1,
        enablePTD: 1,
        encodeConfig: cfg,
        ..Default::default()
    }
}

impl Session {
    /// The H.264 preset configuration (P4, high quality).
    fn preset(&self) -> Result<nv::NV_ENC_CONFIG, String> {
        self.preset_for(nv::NV_ENC_CODEC_H264_GUID)
    }

    /// `codec`'s preset configuration (P4, high quality).
    fn preset_for(&self, codec: nv::GUID) -> Result<nv::NV_ENC_CONFIG, String> {
        let mut pc = nv::NV_ENC_PRESET_CONFIG {
            version: nv::NV_ENC_PRESET_CONFIG_VER,
            ..Default::default()
        };
        pc.presetCfg.version = nv::NV_ENC_CONFIG_VER;
        // SAFETY: live session, versioned zeroed struct.
        let st = unsafe {
            (self.f.get_encode_preset_config_ex)(
                self.enc,
                codec,
                nv::NV_ENC_PRESET_P4_GUID,
                nv::NV_ENC_TUNING_INFO::NV_ENC_TUNING_INFO_HIGH_QUALITY,
                &mut pc,
            )
        };
        expect("preset config", st, S::NV_ENC_SUCCESS)?;
        Ok(pc.presetCfg)
    }

    fn bitstream(&self) -> Result<*mut c_void, String> {
        let mut b = nv::NV_ENC_CREATE_BITSTREAM_BUFFER {
            version: nv::NV_ENC_CREATE_BITSTREAM_BUFFER_VER,
            ..Default::default()
        };
        // SAFETY: live session, versioned zeroed struct.
        let st = unsafe { (self.f.create_bitstream_buffer)(self.enc, &mut b) };
        expect("create bitstream", st, S::NV_ENC_SUCCESS)?;
        Ok(b.bitstreamBuffer)
    }

    fn register(&self, ptr: u64, w: u32, h: u32, pitch: u32) -> (S, *mut c_void) {
        let mut r = nv::NV_ENC_REGISTER_RESOURCE {
            version: nv::NV_ENC_REGISTER_RESOURCE_VER,
            resourceType: nv::NV_ENC_INPUT_RESOURCE_TYPE::NV_ENC_INPUT_RESOURCE_TYPE_CUDADEVICEPTR,
            width: w,
            height: h,
            pitch,
            resourceToRegister: ptr as *mut c_void,
            bufferFormat: nv::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_NV12,
            bufferUsage: nv::NV_ENC_BUFFER_USAGE::NV_ENC_INPUT_IMAGE,
            ..Default::default()
        };
        // SAFETY: live session, versioned zeroed struct.
        let st = unsafe { (self.f.register_resource)(self.enc, &mut r) };
        (st, r.registeredResource)
    }

    fn map(&self, reg: *mut c_void) -> (S, *mut c_void) {
        let mut m = nv::NV_ENC_MAP_INPUT_RESOURCE {
            version: nv::NV_ENC_MAP_INPUT_RESOURCE_VER,
            registeredResource: reg,
            ..Default::default()
        };
        // SAFETY: live session, versioned zeroed struct.
        let st = unsafe { (self.f.map_input_resource)(self.enc, &mut m) };
        (st, m.mappedResource)
    }

    fn encode(
        &self,
        input: *mut c_void,
        out: *mut c_void,
        w: u32,
        h: u32,
        pitch: u32,
        ts: u64,
    ) -> S {
        let mut p = nv::NV_ENC_PIC_PARAMS {
            version: nv::NV_ENC_PIC_PARAMS_VER,
            inputWidth: w,
            inputHeight: h,
            inputPitch: pitch,
            inputBuffer: input,
            outputBitstream: out,
            bufferFmt: nv::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_NV12,
            pictureStruct: nv::NV_ENC_PIC_STRUCT::NV_ENC_PIC_STRUCT_FRAME,
            inputTimeStamp: ts,
            inputDuration: 1,
            ..Default::default()
        };
        // SAFETY: live session, versioned zeroed struct.
        unsafe { (self.f.encode_picture)(self.enc, &mut p) }
    }

    fn eos(&self) -> S {
        let mut p = nv::NV_ENC_PIC_PARAMS {
            version: nv::NV_ENC_PIC_PARAMS_VER,
            encodePicFlags: nv::NV_ENC_PIC_FLAGS::NV_ENC_PIC_FLAG_EOS.0,
            ..Default::default()
        };
        // SAFETY: live session, versioned zeroed struct.
        unsafe { (self.f.encode_picture)(self.enc, &mut p) }
    }

    /// Locks, copies out, unlocks: (status, bytes, timestamp, picture type).
    fn take(&self, out: *mut c_void) -> (S, Vec<u8>, u64, u32) {
        let mut l = nv::NV_ENC_LOCK_BITSTREAM {
            version: nv::NV_ENC_LOCK_BITSTREAM_VER,
            outputBitstream: out,
            ..Default::default()
        };
        // SAFETY: live session, versioned zeroed struct.
        let st = unsafe { (self.f.lock_bitstream)(self.enc, &mut l) };
        if st != S::NV_ENC_SUCCESS {
            return (st, Vec::new(), 0, 0);
        }
        // SAFETY: after a successful lock the driver's buffer holds bitstreamSizeInBytes bytes
        // until the unlock below.
        let data = unsafe {
            std::slice::from_raw_parts(
                l.bitstreamBufferPtr.cast::<u8>(),
                l.bitstreamSizeInBytes as usize,
            )
        }
        .to_vec();
        // SAFETY: unlocking the buffer locked above.
        let st = unsafe { (self.f.unlock_bitstream)(self.enc, out) };
        (st, data, l.outputTimeStamp, l.pictureType.0)
    }

    fn destroy(&self) -> S {
        // SAFETY: destroying this client's session once.
        unsafe { (self.f.destroy_encoder)(self.enc) }
    }
}

fn guid_text(g: &nv::GUID) -> String {
    let d = g.Data4;
    format!(
        "{{{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}}}",
        g.Data1, g.Data2, g.Data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
    )
}

/// Queries a client may make before it encodes: the preset list (printed as `presets N
/// GUID,...`), every legacy preset's configuration through both preset calls and an initialized
/// session with it (`legacy NAME ok`), HEVC's profile count (`hevc profiles STATUS`) and P4's
/// lossless configuration (`lossless preset STATUS`, asked without checking the cap).
fn scenario_queries() -> Result<(), String> {
    let lib = lib()?;
    let cu = Cu::open()?;
    let ctx = cu.context()?;
    let h264 = nv::NV_ENC_CODEC_H264_GUID;
    let (st, s) = open(&lib, ctx);
    expect("open", st, S::NV_ENC_SUCCESS)?;
    let mut n = 0u32;
    // SAFETY: live session, valid out-pointer.
    let st = unsafe { (s.f.get_encode_preset_count)(s.enc, h264, &mut n) };
    expect("preset count", st, S::NV_ENC_SUCCESS)?;
    let mut guids = vec![nv::GUID::default(); n as usize];
    let mut got = 0u32;
    // SAFETY: the array holds `n` GUIDs.
    let st = unsafe { (s.f.get_encode_preset_guids)(s.enc, h264, guids.as_mut_ptr(), n, &mut got) };
    expect("preset GUIDs", st, S::NV_ENC_SUCCESS)?;
    println!(
        "presets {got} {}",
        guids.iter().map(guid_text).collect::<Vec<_>>().join(",")
    );
    let mut profiles = 0u32;
    // SAFETY: live session, valid out-pointer.
    let st = unsafe {
        (s.f.get_encode_profile_guid_count)(s.enc, nv::NV_ENC_CODEC_HEVC_GUID, &mut profiles)
    };
    println!("hevc profiles {}", st.0);
    let mut pc = nv::NV_ENC_PRESET_CONFIG {
        version: nv::NV_ENC_PRESET_CONFIG_VER,
        ..Default::default()
    };
    pc.presetCfg.version = nv::NV_ENC_CONFIG_VER;
    // SAFETY: live session, versioned zeroed struct.
    let st = unsafe {
        (s.f.get_encode_preset_config_ex)(
            s.enc,
            h264,
            nv::NV_ENC_PRESET_P4_GUID,
            nv::NV_ENC_TUNING_INFO::NV_ENC_TUNING_INFO_LOSSLESS,
            &mut pc,
        )
    };
    println!("lossless preset {}", st.0);
    s.destroy();
    #[allow(deprecated)]
    let legacy = [
        ("DEFAULT", nv::NV_ENC_PRESET_DEFAULT_GUID),
        ("HP", nv::NV_ENC_PRESET_HP_GUID),
        ("HQ", nv::NV_ENC_PRESET_HQ_GUID),
        ("BD", nv::NV_ENC_PRESET_BD_GUID),
        (
            "LOW_LATENCY_DEFAULT",
            nv::NV_ENC_PRESET_LOW_LATENCY_DEFAULT_GUID,
        ),
        ("LOW_LATENCY_HQ", nv::NV_ENC_PRESET_LOW_LATENCY_HQ_GUID),
        ("LOW_LATENCY_HP", nv::NV_ENC_PRESET_LOW_LATENCY_HP_GUID),
    ];
    for (name, guid) in legacy {
        if !guids.iter().any(|g| guid_text(g) == guid_text(&guid)) {
            return fail(format!("legacy preset {name} is not listed"));
        }
        let (st, s) = open(&lib, ctx);
        expect("open", st, S::NV_ENC_SUCCESS)?;
        let mut pc = nv::NV_ENC_PRESET_CONFIG {
            version: nv::NV_ENC_PRESET_CONFIG_VER,
            ..Default::default()
        };
        pc.presetCfg.version = nv::NV_ENC_CONFIG_VER;
        // SAFETY: live session, versioned zeroed struct.
        let st = unsafe { (s.f.get_encode_preset_config)(s.enc, h264, guid, &mut pc) };
        expect(&format!("{name} preset config"), st, S::NV_ENC_SUCCESS)?;
        let mut pcx = nv::NV_ENC_PRESET_CONFIG {
            version: nv::NV_ENC_PRESET_CONFIG_VER,
            ..Default::default()
        };
        pcx.presetCfg.version = nv::NV_ENC_CONFIG_VER;
        // SAFETY: as above.
        let st = unsafe {
            (s.f.get_encode_preset_config_ex)(
                s.enc,
                h264,
                guid,
                nv::NV_ENC_TUNING_INFO::NV_ENC_TUNING_INFO_UNDEFINED,
                &mut pcx,
            )
        };
        expect(&format!("{name} preset config ex"), st, S::NV_ENC_SUCCESS)?;
        let mut cfg = pc.presetCfg;
        let mut ip = init_params(&mut cfg, 160, 96, 1);
        ip.presetGUID = guid;
        ip.tuningInfo = nv::NV_ENC_TUNING_INFO::NV_ENC_TUNING_INFO_UNDEFINED;
        // SAFETY: live session, valid struct.
        let st = unsafe { (s.f.initialize_encoder)(s.enc, &mut ip) };
        expect(&format!("{name} init"), st, S::NV_ENC_SUCCESS)?;
        expect("destroy", s.destroy(), S::NV_ENC_SUCCESS)?;
        println!("legacy {name} ok");
    }
    // SAFETY: destroying the context created above.
    unsafe { (cu.ctx_destroy)(ctx) };
    Ok(())
}

/// Every `libcuda.so.1` symbol GStreamer's CUDA loader requires (after `cuda.h`'s `_v2` renames;
/// it refuses the library if one is missing), resolved at once the way such a loader does; then
/// the peer-access, graphics-interop and unversioned stream calls, each printed as
/// `NAME STATUS` (and `can_access_peer N`).
fn scenario_symbols() -> Result<(), String> {
    const REQUIRED: &[&str] = &[
        "cuInit",
        "cuGetErrorName",
        "cuGetErrorString",
        "cuCtxCreate_v2",
        "cuCtxDestroy_v2",
        "cuCtxPopCurrent_v2",
        "cuCtxPushCurrent_v2",
        "cuCtxEnablePeerAccess",
        "cuCtxDisablePeerAccess",
        "cuGraphicsMapResources",
        "cuGraphicsUnmapResources",
        "cuGraphicsResourceSetMapFlags_v2",
        "cuGraphicsSubResourceGetMappedArray",
        "cuGraphicsResourceGetMappedPointer_v2",
        "cuGraphicsUnregisterResource",
        "cuMemAlloc_v2",
        "cuMemAllocPitch_v2",
        "cuMemAllocHost_v2",
        "cuMemcpy2D_v2",
        "cuMemcpy2DAsync_v2",
        "cuMemFree_v2",
        "cuMemFreeHost",
        "cuStreamCreate",
        "cuStreamDestroy",
        "cuStreamDestroy_v2",
        "cuStreamSynchronize",
        "cuDeviceGet",
        "cuDeviceGetCount",
        "cuDeviceGetName",
        "cuDeviceGetAttribute",
        "cuDeviceCanAccessPeer",
        "cuDeviceGetUuid",
        "cuDriverGetVersion",
        "cuModuleLoadData",
        "cuModuleUnload",
        "cuModuleGetFunction",
        "cuTexObjectCreate",
        "cuTexObjectDestroy",
        "cuLaunchKernel",
        "cuEventCreate",
        "cuEventDestroy_v2",
        "cuEventRecord",
        "cuEventSynchronize",
        "cuIpcGetEventHandle",
        "cuIpcOpenEventHandle",
        "cuIpcGetMemHandle",
        "cuIpcOpenMemHandle_v2",
        "cuIpcCloseMemHandle",
        "cuGraphicsGLRegisterImage",
        "cuGraphicsGLRegisterBuffer",
        "cuGLGetDevices_v2",
    ];
    // SAFETY: loading the CUDA driver library runs its initialisers only.
    let lib = unsafe { libloading::Library::new("libcuda.so.1") }.map_err(|e| e.to_string())?;
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        // SAFETY: only the symbol's presence is checked; nothing is called through it here.
        .filter(|n| unsafe { lib.get::<unsafe extern "C" fn()>(n.as_bytes()) }.is_err())
        .collect();
    if !missing.is_empty() {
        return fail(format!("libcuda.so.1 lacks {}", missing.join(", ")));
    }
    println!("symbols {} resolved", REQUIRED.len());
    let cu = Cu::open()?;
    let ctx = cu.context()?;
    macro_rules! sym {
        ($n:literal, $t:ty) => {
            // SAFETY: `$t` is the C signature of the CUDA function of this name.
            *unsafe { lib.get::<$t>($n) }.map_err(|e| e.to_string())?
        };
    }
    let can_access: unsafe extern "C" fn(*mut c_int, c_int, c_int) -> c_int = sym!(
        b"cuDeviceCanAccessPeer\0",
        unsafe extern "C" fn(*mut c_int, c_int, c_int) -> c_int
    );
    let enable: unsafe extern "C" fn(*mut c_void, c_uint) -> c_int = sym!(
        b"cuCtxEnablePeerAccess\0",
        unsafe extern "C" fn(*mut c_void, c_uint) -> c_int
    );
    let disable: unsafe extern "C" fn(*mut c_void) -> c_int = sym!(
        b"cuCtxDisablePeerAccess\0",
        unsafe extern "C" fn(*mut c_void) -> c_int
    );
    let gl_buffer: unsafe extern "C" fn(*mut *mut c_void, c_uint, c_uint) -> c_int = sym!(
        b"cuGraphicsGLRegisterBuffer\0",
        unsafe extern "C" fn(*mut *mut c_void, c_uint, c_uint) -> c_int
    );
    let map_flags: unsafe extern "C" fn(*mut c_void, c_uint) -> c_int = sym!(
        b"cuGraphicsResourceSetMapFlags_v2\0",
        unsafe extern "C" fn(*mut c_void, c_uint) -> c_int
    );
    let stream_create: unsafe extern "C" fn(*mut *mut c_void, c_uint) -> c_int = sym!(
        b"cuStreamCreate\0",
        unsafe extern "C" fn(*mut *mut c_void, c_uint) -> c_int
    );
    let stream_destroy: unsafe extern "C" fn(*mut c_void) -> c_int = sym!(
        b"cuStreamDestroy\0",
        unsafe extern "C" fn(*mut c_void) -> c_int
    );
    let mut can = -1;
    // SAFETY: valid out-pointer; device 0 exists.
    let st = unsafe { can_access(&mut can, 0, 0) };
    println!("cuDeviceCanAccessPeer {st}");
    println!("can_access_peer {can}");
    // SAFETY: `ctx` is live and current.
    println!("cuCtxEnablePeerAccess {}", unsafe { enable(ctx, 0) });
    // SAFETY: as above.
    println!("cuCtxDisablePeerAccess {}", unsafe { disable(ctx) });
    let mut res = std::ptr::null_mut();
    // SAFETY: valid out-pointer; buffer 1 names no GL object (there is no GL here).
    println!("cuGraphicsGLRegisterBuffer {}", unsafe {
        gl_buffer(&mut res, 1, 0)
    });
    // SAFETY: a NULL resource; the call only reports its status.
    println!("cuGraphicsResourceSetMapFlags_v2 {}", unsafe {
        map_flags(std::ptr::null_mut(), 0)
    });
    let mut stream = std::ptr::null_mut();
    // SAFETY: valid out-pointer, context current.
    let st = unsafe { stream_create(&mut stream, 0) };
    if st != 0 {
        return fail(format!("cuStreamCreate: {st}"));
    }
    // SAFETY: destroying the stream just created.
    println!("cuStreamDestroy {}", unsafe { stream_destroy(stream) });
    // SAFETY: destroying the context created above.
    unsafe { (cu.ctx_destroy)(ctx) };
    Ok(())
}

fn scenario_load() -> Result<(), String> {
    match nv::load() {
        Ok(l) => println!("load ok {}", l.driver_max_version()),
        Err(e) => {
            let kind = format!("{e:?}");
            println!(
                "load err {}: {e}",
                kind.split([' ', '{', '(']).next().unwrap_or("")
            );
        }
    }
    Ok(())
}

fn lib() -> Result<std::sync::Arc<nv::Library>, String> {
    nv::load().map_err(|e| format!("load: {e}"))
}

fn scenario_sessions(n: usize) -> Result<(), String> {
    let lib = lib()?;
    let cu = Cu::open()?;
    let ctx = cu.context()?;
    let mut statuses = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..n {
        let (st, s) = open(&lib, ctx);
        statuses.push(st.0.to_string());
        sessions.push(s);
    }
    for s in &sessions {
        // Also after a failed open, as the API asks (the handle is then NULL).
        s.destroy();
    }
    // SAFETY: destroying the context created above.
    unsafe { (cu.ctx_destroy)(ctx) };
    println!("sessions {}", statuses.join(","));
    Ok(())
}

/// Deliberate API misuse; each call must fail with the real driver's status.
fn scenario_misuse() -> Result<(), String> {
    let lib = lib()?;
    let cu = Cu::open()?;
    let ctx = cu.context()?;
    let f = lib.fns().clone();

    // Wrong struct version on open.
    let mut p = nv::NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS {
        version: nv::NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER ^ (1 << 16),
        deviceType: nv::NV_ENC_DEVICE_TYPE::NV_ENC_DEVICE_TYPE_CUDA,
        device: ctx,
        apiVersion: nv::NVENCAPI_VERSION,
        ..Default::default()
    };
    let mut enc = std::ptr::null_mut();
    // SAFETY: valid struct and out-pointer.
    let st = unsafe { (f.open_encode_session_ex)(&mut p, &mut enc) };
    expect("open with wrong version", st, S::NV_ENC_ERR_INVALID_VERSION)?;
    // Non-zero reserved field.
    p.version = nv::NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER;
    p.reserved1[3] = 7;
    // SAFETY: as above.
    let st = unsafe { (f.open_encode_session_ex)(&mut p, &mut enc) };
    expect(
        "open with reserved field set",
        st,
        S::NV_ENC_ERR_INVALID_PARAM,
    )?;

    let (st, s) = open(&lib, ctx);
    expect("open", st, S::NV_ENC_SUCCESS)?;
    let (w, h) = (160u32, 96u32);
    // Buffers before initialization.
    let mut b = nv::NV_ENC_CREATE_BITSTREAM_BUFFER {
        version: nv::NV_ENC_CREATE_BITSTREAM_BUFFER_VER,
        ..Default::default()
    };
    // SAFETY: live session, valid struct.
    let st = unsafe { (s.f.create_bitstream_buffer)(s.enc, &mut b) };
    expect(
        "bitstream before init",
        st,
        S::NV_ENC_ERR_ENCODER_NOT_INITIALIZED,
    )?;
    let mut cfg = s.preset()?;
    let mut ip = init_params(&mut cfg, w, h, 1);
    // A GUID that is no preset (the H.264 profile GUID).
    ip.presetGUID = nv::NV_ENC_H264_PROFILE_HIGH_GUID;
    // SAFETY: live session, valid struct.
    let st = unsafe { (s.f.initialize_encoder)(s.enc, &mut ip) };
    expect(
        "init with a non-preset GUID",
        st,
        S::NV_ENC_ERR_INVALID_PARAM,
    )?;
    let mut ip = init_params(&mut cfg, w, h, 1);
    ip.enableEncodeAsync = 1;
    // SAFETY: as above.
    let st = unsafe { (s.f.initialize_encoder)(s.enc, &mut ip) };
    expect("init with async", st, S::NV_ENC_ERR_UNSUPPORTED_PARAM)?;
    let mut ip = init_params(&mut cfg, 8192, h, 1);
    // SAFETY: as above.
    let st = unsafe { (s.f.initialize_encoder)(s.enc, &mut ip) };
    expect("init wider than WIDTH_MAX", st, S::NV_ENC_ERR_INVALID_PARAM)?;
    let mut ip = init_params(&mut cfg, w, h, 1);
    // SAFETY: as above.
    let st = unsafe { (s.f.initialize_encoder)(s.enc, &mut ip) };
    expect("init", st, S::NV_ENC_SUCCESS)?;
    // SAFETY: as above.
    let st = unsafe { (s.f.initialize_encoder)(s.enc, &mut ip) };
    expect("init twice", st, S::NV_ENC_ERR_INVALID_CALL)?;
    // Reconfiguration: a size beyond the init's maximum, a wrong version, then a valid bitrate
    // change with an encoder reset.
    let mut rc = nv::NV_ENC_RECONFIGURE_PARAMS {
        version: nv::NV_ENC_RECONFIGURE_PARAMS_VER,
        reInitEncodeParams: init_params(&mut cfg, w * 2, h, 1),
        ..Default::default()
    };
    // SAFETY: live session, valid struct (its encodeConfig points at `cfg`, alive here).
    let st = unsafe { (s.f.reconfigure_encoder)(s.enc, &mut rc) };
    expect(
        "reconfigure beyond maxEncodeWidth",
        st,
        S::NV_ENC_ERR_INVALID_PARAM,
    )?;
    rc.reInitEncodeParams = init_params(&mut cfg, w, h, 1);
    rc.version = nv::NV_ENC_RECONFIGURE_PARAMS_VER + 1;
    // SAFETY: as above.
    let st = unsafe { (s.f.reconfigure_encoder)(s.enc, &mut rc) };
    expect(
        "reconfigure with a wrong version",
        st,
        S::NV_ENC_ERR_INVALID_VERSION,
    )?;
    rc.version = nv::NV_ENC_RECONFIGURE_PARAMS_VER;
    cfg.rcParams.averageBitRate = 1_000_000;
    rc.reInitEncodeParams = init_params(&mut cfg, w, h, 1);
    rc.set_resetEncoder(1);
    rc.set_forceIDR(1);
    // SAFETY: as above.
    let st = unsafe { (s.f.reconfigure_encoder)(s.enc, &mut rc) };
    expect("reconfigure the bitrate", st, S::NV_ENC_SUCCESS)?;

    // A pitched surface, registered and mapped.
    let (mut dptr, mut pitch) = (0u64, 0usize);
    // SAFETY: valid out-pointers; the context is current.
    let rc =
        unsafe { (cu.alloc_pitch)(&mut dptr, &mut pitch, w as usize, (h * 3 / 2) as usize, 4) };
    if rc != 0 {
        return fail(format!("cuMemAllocPitch: {rc}"));
    }
    let pitch = pitch as u32;
    let (st, _) = s.register(dptr, w, h, w - 4);
    expect(
        "register with pitch < width",
        st,
        S::NV_ENC_ERR_INVALID_PARAM,
    )?;
    let (st, _) = s.register(dptr, w, h * 4, pitch);
    expect(
        "register past the allocation",
        st,
        S::NV_ENC_ERR_RESOURCE_REGISTER_FAILED,
    )?;
    let (st, _) = s.register(0x1234_5678, w, h, pitch);
    expect(
        "register a host-looking pointer",
        st,
        S::NV_ENC_ERR_RESOURCE_REGISTER_FAILED,
    )?;
    let (st, reg) = s.register(dptr, w, h, pitch);
    expect("register", st, S::NV_ENC_SUCCESS)?;
    let (st, mapped) = s.map(reg);
    expect("map", st, S::NV_ENC_SUCCESS)?;
    // One mapping per registration: a mapping lives until NvEncUnmapInputResource, which
    // "should be invalidated ... before the external resource is destroyed" (nvEncodeAPI.h 11.1,
    // NvEncUnmapInputResource); mapping it again is NV_ENC_ERR_MAP_FAILED, which
    // NvEncMapInputResource lists among its returns.
    let (st, _) = s.map(reg);
    expect(
        "map an already-mapped resource",
        st,
        S::NV_ENC_ERR_MAP_FAILED,
    )?;
    // SAFETY: live session; `reg` is the registration above.
    let st = unsafe { (s.f.unregister_resource)(s.enc, reg) };
    expect("unregister while mapped", st, S::NV_ENC_ERR_INVALID_CALL)?;

    let out0 = s.bitstream()?;
    let out1 = s.bitstream()?;
    expect(
        "encode with a wrong pitch",
        s.encode(mapped, out0, w, h, pitch + 64, 0),
        S::NV_ENC_ERR_INVALID_PARAM,
    )?;
    expect(
        "encode the registration, not the mapping",
        s.encode(reg, out0, w, h, pitch, 0),
        S::NV_ENC_ERR_RESOURCE_NOT_MAPPED,
    )?;
    let (st, ..) = s.take(out0);
    expect(
        "lock a never-submitted buffer",
        st,
        S::NV_ENC_ERR_INVALID_CALL,
    )?;
    expect(
        "encode 0",
        s.encode(mapped, out0, w, h, pitch, 0),
        S::NV_ENC_SUCCESS,
    )?;
    // SAFETY: live session; the mapping is in flight.
    let st = unsafe { (s.f.unmap_input_resource)(s.enc, mapped) };
    expect(
        "unmap before the output was locked",
        st,
        S::NV_ENC_ERR_INVALID_CALL,
    )?;
    expect(
        "encode 1 reusing an in-flight input",
        s.encode(mapped, out1, w, h, pitch, 1),
        S::NV_ENC_ERR_INVALID_CALL,
    )?;
    expect(
        "encode into a pending output",
        s.encode(mapped, out0, w, h, pitch, 1),
        S::NV_ENC_ERR_INVALID_CALL,
    )?;
    let (st, data, ..) = s.take(out0);
    expect("lock 0", st, S::NV_ENC_SUCCESS)?;
    if data.is_empty() {
        return fail("empty bitstream".into());
    }
    // A second input so two frames are in flight, then lock out of order.
    let (mut dptr2, mut pitch2) = (0u64, 0usize);
    // SAFETY: valid out-pointers; the context is current.
    unsafe { (cu.alloc_pitch)(&mut dptr2, &mut pitch2, w as usize, (h * 3 / 2) as usize, 4) };
    let (_, reg2) = s.register(dptr2, w, h, pitch2 as u32);
    let (_, mapped2) = s.map(reg2);
    expect(
        "encode 1",
        s.encode(mapped, out0, w, h, pitch, 1),
        S::NV_ENC_SUCCESS,
    )?;
    expect(
        "encode 2",
        s.encode(mapped2, out1, w, h, pitch, 2),
        S::NV_ENC_SUCCESS,
    )?;
    let (st, ..) = s.take(out1);
    expect(
        "lock out of submission order",
        st,
        S::NV_ENC_ERR_INVALID_CALL,
    )?;
    expect("lock 1", s.take(out0).0, S::NV_ENC_SUCCESS)?;
    expect("lock 2", s.take(out1).0, S::NV_ENC_SUCCESS)?;
    // SAFETY: live session; unmapping the mapping whose frame was locked.
    let st = unsafe { (s.f.unmap_input_resource)(s.enc, mapped) };
    expect("unmap", st, S::NV_ENC_SUCCESS)?;
    // SAFETY: as above.
    let st = unsafe { (s.f.unmap_input_resource)(s.enc, mapped) };
    expect("unmap twice", st, S::NV_ENC_ERR_RESOURCE_NOT_MAPPED)?;
    // Teardown that forgets buffers: destroy still succeeds, the emulator records the leak.
    expect("destroy with live buffers", s.destroy(), S::NV_ENC_SUCCESS)?;
    expect("use after destroy", s.eos(), S::NV_ENC_ERR_INVALID_PARAM)?;
    // SAFETY: freeing the allocations made above, in the current context.
    unsafe {
        (cu.free)(dptr);
    }
    // SAFETY: as above.
    unsafe {
        (cu.free)(dptr2);
    }
    // SAFETY: as above (second free of the same pointer: the emulated CUDA records it).
    let rc = unsafe { (cu.free)(dptr) };
    if rc != 1 {
        return fail(format!(
            "double cuMemFree returned {rc}, expected CUDA_ERROR_INVALID_VALUE"
        ));
    }
    let _ = (cu.ctx_pop, cu.ctx_push);
    // SAFETY: destroying the context created above.
    unsafe { (cu.ctx_destroy)(ctx) };
    // The emulator's in-process control API, from the library the loader opened.
    // SAFETY: the library is already loaded (by nvenc_sys::load); opening it again only takes a
    // reference.
    let enc =
        unsafe { libloading::Library::new("libnvidia-encode.so.1") }.map_err(|e| e.to_string())?;
    // SAFETY: the emulator exports these with exactly these C signatures.
    let violations: libloading::Symbol<'_, unsafe extern "C" fn() -> u64> =
        unsafe { enc.get(b"nvenc_emu_violations\0") }.map_err(|e| e.to_string())?;
    // SAFETY: as above.
    let live: libloading::Symbol<'_, unsafe extern "C" fn(*mut u8, usize) -> usize> =
        unsafe { enc.get(b"nvenc_emu_live_handles\0") }.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its length.
    let n = unsafe { live(buf.as_mut_ptr(), buf.len()) };
    // SAFETY: no arguments.
    let count = unsafe { violations() };
    println!(
        "control violations={count} {}",
        String::from_utf8_lossy(&buf[..n.min(buf.len() - 1)])
    );
    Ok(())
}

/// Registers external CUDA memory at each pitch nvEncodeAPI.h 11.1 allows for
/// `NV_ENC_INPUT_RESOURCE_TYPE_CUDADEVICEPTR` (lines 2149-2154: "the pitch as obtained from
/// cuMemAllocPitch(), or ... the width in bytes (if this resource was created by using
/// cuMemAlloc()). This value must be a multiple of 4."), as a device ring slot's surface is
/// registered, and one it does not (a width in bytes that is not a multiple of 4).
fn scenario_pitches() -> Result<(), String> {
    let lib = lib()?;
    let cu = Cu::open()?;
    let ctx = cu.context()?;
    let (st, s) = open(&lib, ctx);
    expect("open", st, S::NV_ENC_SUCCESS)?;
    let (w, h) = (320u32, 240u32);
    let mut cfg = s.preset()?;
    let mut ip = init_params(&mut cfg, w, h, 1);
    // SAFETY: live session, valid struct (its encodeConfig points at `cfg`, alive here).
    let st = unsafe { (s.f.initialize_encoder)(s.enc, &mut ip) };
    expect("init", st, S::NV_ENC_SUCCESS)?;
    let rows = (h * 3 / 2) as usize;
    // cuMemAllocPitch: the allocation's pitch (the emulated CUDA's is 512 for 320 bytes).
    let (mut pitched, mut pitch) = (0u64, 0usize);
    // SAFETY: valid out-pointers; the context is current.
    let rc = unsafe { (cu.alloc_pitch)(&mut pitched, &mut pitch, w as usize, rows, 16) };
    if rc != 0 {
        return fail(format!("cuMemAllocPitch: {rc}"));
    }
    // cuMemAlloc: the width in bytes; 324 x rows bytes, room for a 324-byte pitch too.
    let mut plain = 0u64;
    // SAFETY: as above.
    let rc = unsafe { (cu.alloc)(&mut plain, 324 * rows) };
    if rc != 0 {
        return fail(format!("cuMemAlloc: {rc}"));
    }
    let mut regs = Vec::new();
    for (what, ptr, p) in [
        (
            "register at the cuMemAllocPitch pitch",
            pitched,
            pitch as u32,
        ),
        ("register at the width in bytes", plain, w),
        ("register at a wider pitch, a multiple of 4", plain, 324),
    ] {
        let (st, reg) = s.register(ptr, w, h, p);
        expect(what, st, S::NV_ENC_SUCCESS)?;
        regs.push(reg);
    }
    let (st, _) = s.register(plain, w - 2, h, w - 2);
    expect(
        "register at a width in bytes that is not a multiple of 4",
        st,
        S::NV_ENC_ERR_INVALID_PARAM,
    )?;
    for reg in regs {
        // SAFETY: live session; each registration made above, unmapped.
        let st = unsafe { (s.f.unregister_resource)(s.enc, reg) };
        expect("unregister", st, S::NV_ENC_SUCCESS)?;
    }
    expect("destroy", s.destroy(), S::NV_ENC_SUCCESS)?;
    for ptr in [pitched, plain] {
        // SAFETY: freeing the allocations made above, in the current context, once.
        let rc = unsafe { (cu.free)(ptr) };
        if rc != 0 {
            return fail(format!("cuMemFree: {rc}"));
        }
    }
    // SAFETY: destroying the context created above.
    unsafe { (cu.ctx_destroy)(ctx) };
    Ok(())
}

/// Encodes `frames` NV12 frames from CUDA memory with frameIntervalP = `interval`, using a ring of
/// `interval + 3` surfaces, checks NVENC's NEED_MORE_INPUT pattern and writes the stream to `out`.
/// The first failing call ends the encode and everything made so far is torn down in order
/// (`stop-on-error` on the command line then makes that exit status 0, for the fault tests).
fn scenario_encode(
    path: &str,
    frames: u64,
    interval: u32,
    pitch_mode: &str,
    hevc: bool,
) -> Result<(), String> {
    let lib = lib()?;
    let cu = Cu::open()?;
    let ctx = cu.context()?;
    let (w, h) = (320u32, 192u32);
    let ring = (interval + 3) as usize;
    let mut allocs = Vec::new();
    let mut regs = Vec::new();
    let mut outs = Vec::new();
    let mut maps: Vec<Option<*mut c_void>> = vec![None; ring];
    let mut stream = Vec::new();
    let mut log = Vec::new();
    let (st, s) = open(&lib, ctx);
    let result = (|| -> Result<(), String> {
        expect("open", st, S::NV_ENC_SUCCESS)?;
        let mut cfg = if hevc {
            hevc::hevc_preset(&s)?
        } else {
            s.preset()?
        };
        let mut ip = if hevc {
            let mut ip = hevc::hevc_init(&mut cfg, w, h, interval as i32);
            ip.encodeConfig = &mut cfg;
            ip
        } else {
            init_params(&mut cfg, w, h, interval as i32)
        };
        // SAFETY: live session, valid struct.
        let st = unsafe { (s.f.initialize_encoder)(s.enc, &mut ip) };
        expect("init", st, S::NV_ENC_SUCCESS)?;
        for _ in 0..ring {
            let (mut d, mut p) = (0u64, 0usize);
            // SAFETY: valid out-pointers, context current.
            let rc =
                unsafe { (cu.alloc_pitch)(&mut d, &mut p, w as usize, (h * 3 / 2) as usize, 4) };
            if rc != 0 {
                return fail(format!("cuMemAllocPitch_v2: {rc}"));
            }
            allocs.push((d, p as u32));
            let (st, r) = s.register(d, w, h, p as u32);
            expect("register", st, S::NV_ENC_SUCCESS)?;
            regs.push(r);
            outs.push(s.bitstream()?);
        }
        let mut pending: std::collections::VecDeque<usize> = Default::default();
        let mut drain = |pending: &mut std::collections::VecDeque<usize>,
                         maps: &mut Vec<Option<*mut c_void>>,
                         log: &mut Vec<String>|
         -> Result<(), String> {
            while let Some(k) = pending.pop_front() {
                let (st, data, ts, ty) = s.take(outs[k]);
                expect("lock", st, S::NV_ENC_SUCCESS)?;
                stream.extend_from_slice(&data);
                log.push(format!("{ts}:{ty}"));
                if let Some(m) = maps[k].take() {
                    // SAFETY: unmapping the mapping whose frame was just locked.
                    let st = unsafe { (s.f.unmap_input_resource)(s.enc, m) };
                    expect("unmap", st, S::NV_ENC_SUCCESS)?;
                }
            }
            Ok(())
        };
        let mut frame = vec![0u8; 0];
        for n in 0..frames {
            let k = (n as usize) % ring;
            if pending.len() == ring {
                return fail("ring full while frames are still buffered".into());
            }
            let (d, p) = allocs[k];
            frame.clear();
            for y in 0..h * 3 / 2 {
                for x in 0..p {
                    let v = if y < h {
                        (x + y + n as u32 * 4) & 0xff
                    } else {
                        128 + ((x / 2 + n as u32) & 31)
                    };
                    frame.push(v as u8);
                }
            }
            // SAFETY: `frame` holds pitch * rows bytes, the size of the allocation.
            let rc = unsafe { (cu.htod)(d, frame.as_ptr().cast(), frame.len()) };
            if rc != 0 {
                return fail(format!("cuMemcpyHtoD_v2: {rc}"));
            }
            let (st, m) = s.map(regs[k]);
            expect("map", st, S::NV_ENC_SUCCESS)?;
            maps[k] = Some(m);
            let pic_pitch = match pitch_mode {
                "pitch0" => 0,
                "pitchw" => w,
                _ => p,
            };
            let st = s.encode(m, outs[k], w, h, pic_pitch, n * 1000);
            pending.push_back(k);
            match st {
                S::NV_ENC_SUCCESS => drain(&mut pending, &mut maps, &mut log)?,
                S::NV_ENC_ERR_NEED_MORE_INPUT => {}
                other => {
                    // SAFETY: live session.
                    let text = unsafe { (s.f.get_last_error_string)(s.enc) };
                    // SAFETY: the driver's NUL-terminated string stays valid until its next call.
                    let why = unsafe { std::ffi::CStr::from_ptr(text) };
                    return fail(format!("encode {n}: {other}: {}", why.to_string_lossy()));
                }
            }
            log.push(if st == S::NV_ENC_SUCCESS {
                "S".into()
            } else {
                "N".into()
            });
        }
        expect("eos", s.eos(), S::NV_ENC_SUCCESS)?;
        drain(&mut pending, &mut maps, &mut log)?;
        Ok(())
    })();
    // Teardown in the order the API requires, whatever happened above.
    for m in maps.iter_mut().filter_map(Option::take) {
        // SAFETY: unmapping mappings this client made.
        unsafe { (s.f.unmap_input_resource)(s.enc, m) };
    }
    for r in regs {
        // SAFETY: unregistering registrations this client made.
        unsafe { (s.f.unregister_resource)(s.enc, r) };
    }
    for o in outs {
        // SAFETY: destroying buffers this client made.
        unsafe { (s.f.destroy_bitstream_buffer)(s.enc, o) };
    }
    s.destroy();
    for (d, _) in allocs {
        // SAFETY: freeing allocations this client made, context current.
        unsafe { (cu.free)(d) };
    }
    // SAFETY: destroying the context created above.
    unsafe { (cu.ctx_destroy)(ctx) };
    std::fs::write(path, &stream).map_err(|e| e.to_string())?;
    println!("log {}", log.join(" "));
    result
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("load") => scenario_load(),
        Some("sessions") => scenario_sessions(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(3)),
        Some("misuse") => scenario_misuse(),
        Some("pitches") => scenario_pitches(),
        Some("queries") => scenario_queries(),
        Some("symbols") => scenario_symbols(),
        Some("hevc-rules") => hevc::scenario_hevc_rules(),
        Some("io-streams") => hevc::scenario_io_streams(),
        Some("encode") => {
            let flags = args.get(4..).unwrap_or_default();
            let stop_on_error = flags.iter().any(|a| a == "stop-on-error");
            let pitch_mode = flags
                .iter()
                .find(|a| a.starts_with("pitch"))
                .map_or("", String::as_str);
            let hevc = flags.iter().any(|a| a == "hevc");
            match scenario_encode(
                args.get(1).map_or("out.h264", String::as_str),
                args.get(2).and_then(|n| n.parse().ok()).unwrap_or(30),
                args.get(3).and_then(|n| n.parse().ok()).unwrap_or(1),
                pitch_mode,
                hevc,
            ) {
                Err(e) if stop_on_error => {
                    println!("stopped: {e}");
                    Ok(())
                }
                r => r,
            }
        }
        _ => Err("usage: nvenc-emu-client load | sessions N | misuse | pitches | queries | symbols | hevc-rules | io-streams | encode OUT FRAMES INTERVAL [stop-on-error] [pitch0 | pitchw] [hevc]".into()),
    };
    let _ = std::io::stdout().flush();
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nvenc-emu-client: {e}");
            ExitCode::FAILURE
        }
    }
}
