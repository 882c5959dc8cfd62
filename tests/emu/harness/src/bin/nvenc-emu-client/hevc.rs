//! Scenarios for HEVC's rules (`hevc-rules`) and for CUDA streams given to NVENC
//! (`io-streams`), and HEVC's preset and initialize params for `encode ... hevc`: each step prints `ok WHAT: STATUS` when the status is the expected one, and
//! the first unexpected one fails the client. The test then checks the emulator's report.

use std::ffi::c_void;

use nvenc_sys as nv;
use nvenc_sys::NVENCSTATUS as S;

use super::{expect, init_params, lib, open, Cu, Session};

/// The HEVC preset configuration (P4, high quality).
pub(super) fn hevc_preset(s: &Session) -> Result<nv::NV_ENC_CONFIG, String> {
    s.preset_for(nv::NV_ENC_CODEC_HEVC_GUID)
}

fn hevc(cfg: &mut nv::NV_ENC_CONFIG) -> &mut nv::NV_ENC_CONFIG_HEVC {
    // SAFETY: the HEVC member of the union of an HEVC config.
    unsafe { &mut cfg.encodeCodecConfig.hevcConfig }
}

fn cap(s: &Session, codec: nv::GUID, cap: nv::NV_ENC_CAPS) -> Result<i32, String> {
    let mut p = nv::NV_ENC_CAPS_PARAM {
        version: nv::NV_ENC_CAPS_PARAM_VER,
        capsToQuery: cap,
        ..Default::default()
    };
    let mut v = 0;
    // SAFETY: live session, versioned zeroed struct, writable out-pointer.
    let st = unsafe { (s.f.get_encode_caps)(s.enc, codec, &mut p, &mut v) };
    expect("caps", st, S::NV_ENC_SUCCESS)?;
    Ok(v)
}

/// HEVC's queries, then one initialization per rule of `NV_ENC_CONFIG_HEVC` that breaks it
/// (each refused with the status expected), then a valid one with every field a client such as
/// FFmpeg sets, then a reconfiguration to another codec (refused).
pub(super) fn scenario_hevc_rules() -> Result<(), String> {
    let cu = Cu::open()?;
    let ctx = cu.context()?;
    let lib = lib()?;
    let (st, s) = open(&lib, ctx);
    expect("open", st, S::NV_ENC_SUCCESS)?;
    let mut n = 0;
    // SAFETY: live session, writable out-pointer.
    let st = unsafe { (s.f.get_encode_guid_count)(s.enc, &mut n) };
    expect("guid count", st, S::NV_ENC_SUCCESS)?;
    let mut guids = vec![nv::GUID::default(); n as usize];
    let mut got = 0;
    // SAFETY: an array of `n` GUIDs and a writable count.
    let st = unsafe { (s.f.get_encode_guids)(s.enc, guids.as_mut_ptr(), n, &mut got) };
    expect("guids", st, S::NV_ENC_SUCCESS)?;
    let hevc_listed = guids
        .iter()
        .any(|g| g.Data1 == nv::NV_ENC_CODEC_HEVC_GUID.Data1);
    println!("codecs {got} hevc {hevc_listed}");
    let mut profiles = 0;
    // SAFETY: live session, writable out-pointer.
    let st = unsafe {
        (s.f.get_encode_profile_guid_count)(s.enc, nv::NV_ENC_CODEC_HEVC_GUID, &mut profiles)
    };
    expect("hevc profile count", st, S::NV_ENC_SUCCESS)?;
    let hevc_guid = nv::NV_ENC_CODEC_HEVC_GUID;
    println!(
        "hevc profiles {profiles} max_bframes {} b_ref_mode {} 10bit {} sao {}",
        cap(&s, hevc_guid, nv::NV_ENC_CAPS::NV_ENC_CAPS_NUM_MAX_BFRAMES)?,
        cap(
            &s,
            hevc_guid,
            nv::NV_ENC_CAPS::NV_ENC_CAPS_SUPPORT_BFRAME_REF_MODE
        )?,
        cap(
            &s,
            hevc_guid,
            nv::NV_ENC_CAPS::NV_ENC_CAPS_SUPPORT_10BIT_ENCODE
        )?,
        cap(&s, hevc_guid, nv::NV_ENC_CAPS::NV_ENC_CAPS_SUPPORT_SAO)?,
    );
    let mut preset = hevc_preset(&s)?;
    let gop = preset.gopLength;
    let h = hevc(&mut preset);
    println!(
        "hevc preset idr_period {} gop {gop} chroma {} depth {}",
        h.idrPeriod,
        h.chromaFormatIDC(),
        h.pixelBitDepthMinus8()
    );

    type Breaker = fn(&mut nv::NV_ENC_CONFIG);
    let broken: [(&str, Breaker, S); 15] = [
        (
            "chromaFormatIDC 2",
            |c| hevc(c).set_chromaFormatIDC(2),
            S::NV_ENC_ERR_INVALID_PARAM,
        ),
        (
            "chromaFormatIDC 3 (4:4:4)",
            |c| hevc(c).set_chromaFormatIDC(3),
            S::NV_ENC_ERR_UNSUPPORTED_PARAM,
        ),
        (
            "pixelBitDepthMinus8 2 (10-bit)",
            |c| hevc(c).set_pixelBitDepthMinus8(2),
            S::NV_ENC_ERR_UNSUPPORTED_PARAM,
        ),
        (
            "pixelBitDepthMinus8 1",
            |c| hevc(c).set_pixelBitDepthMinus8(1),
            S::NV_ENC_ERR_INVALID_PARAM,
        ),
        (
            "profile Main10",
            |c| c.profileGUID = nv::NV_ENC_HEVC_PROFILE_MAIN10_GUID,
            S::NV_ENC_ERR_UNSUPPORTED_PARAM,
        ),
        (
            "an H.264 profile",
            |c| c.profileGUID = nv::NV_ENC_H264_PROFILE_HIGH_GUID,
            S::NV_ENC_ERR_INVALID_PARAM,
        ),
        (
            "level 42",
            |c| hevc(c).level = 42,
            S::NV_ENC_ERR_INVALID_PARAM,
        ),
        ("tier 2", |c| hevc(c).tier = 2, S::NV_ENC_ERR_INVALID_PARAM),
        (
            "maxCUSize 64x64",
            |c| hevc(c).maxCUSize = nv::NV_ENC_HEVC_CUSIZE::NV_ENC_HEVC_CUSIZE_64x64,
            S::NV_ENC_ERR_UNSUPPORTED_PARAM,
        ),
        (
            "sliceMode 4",
            |c| hevc(c).sliceMode = 4,
            S::NV_ENC_ERR_INVALID_PARAM,
        ),
        (
            "maxNumRefFramesInDPB 17",
            |c| hevc(c).maxNumRefFramesInDPB = 17,
            S::NV_ENC_ERR_INVALID_PARAM,
        ),
        (
            "LTR with B-frames",
            |c| hevc(c).set_enableLTR(1),
            S::NV_ENC_ERR_UNSUPPORTED_PARAM,
        ),
        (
            "each B-frame as reference",
            |c| hevc(c).useBFramesAsRef = nv::NV_ENC_BFRAME_REF_MODE::NV_ENC_BFRAME_REF_MODE_EACH,
            S::NV_ENC_ERR_UNSUPPORTED_PARAM,
        ),
        (
            "reserved1[5]",
            |c| hevc(c).reserved1[5] = 1,
            S::NV_ENC_ERR_INVALID_PARAM,
        ),
        (
            "5 B-frames",
            |c| c.frameIntervalP = 6,
            S::NV_ENC_ERR_INVALID_PARAM,
        ),
    ];
    for (what, breaker, want) in broken {
        let mut cfg = hevc_preset(&s)?;
        let mut p = hevc_init(&mut cfg, 64, 64, 3);
        breaker(&mut cfg);
        p.encodeConfig = &mut cfg;
        // SAFETY: live session; `p` points at `cfg`, alive for the call.
        let st = unsafe { (s.f.initialize_encoder)(s.enc, &mut p) };
        expect(&format!("hevc init with {what}"), st, want)?;
    }
    // What FFmpeg's hevc_nvenc sets: level 4.1, Main tier, middle B-frame references, one slice
    // by count, a DPB size, VPS/SPS/PPS on every IDR.
    let mut cfg = hevc_preset(&s)?;
    let mut p = hevc_init(&mut cfg, 64, 64, 3);
    {
        let h = hevc(&mut cfg);
        h.level = 123;
        h.tier = 0;
        h.useBFramesAsRef = nv::NV_ENC_BFRAME_REF_MODE::NV_ENC_BFRAME_REF_MODE_MIDDLE;
        h.sliceMode = 3;
        h.sliceModeData = 1;
        h.maxNumRefFramesInDPB = 4;
    }
    cfg.profileGUID = nv::NV_ENC_HEVC_PROFILE_MAIN_GUID;
    p.encodeConfig = &mut cfg;
    // SAFETY: as above.
    let st = unsafe { (s.f.initialize_encoder)(s.enc, &mut p) };
    expect("hevc init valid", st, S::NV_ENC_SUCCESS)?;
    // The same session reconfigured to H.264: refused.
    let mut h264_cfg = s.preset()?;
    let mut r = nv::NV_ENC_RECONFIGURE_PARAMS {
        version: nv::NV_ENC_RECONFIGURE_PARAMS_VER,
        reInitEncodeParams: init_params(&mut h264_cfg, 64, 64, 3),
        ..Default::default()
    };
    // SAFETY: live session; the init params point at `h264_cfg`, alive for the call.
    let st = unsafe { (s.f.reconfigure_encoder)(s.enc, &mut r) };
    expect(
        "reconfigure to another codec",
        st,
        S::NV_ENC_ERR_INVALID_PARAM,
    )?;
    expect("destroy", s.destroy(), S::NV_ENC_SUCCESS)?;
    // SAFETY: destroying the client's own context once.
    unsafe { (cu.ctx_destroy)(ctx) };
    Ok(())
}

/// HEVC initialize params: P4 high quality, `w` x `h`, frameIntervalP `interval`, GOP 30 as IDR
/// period, VPS/SPS/PPS on every IDR. `encodeConfig` is left NULL for the caller to point at
/// `cfg`.
pub(super) fn hevc_init(
    cfg: &mut nv::NV_ENC_CONFIG,
    w: u32,
    h: u32,
    interval: i32,
) -> nv::NV_ENC_INITIALIZE_PARAMS {
    cfg.frameIntervalP = interval;
    cfg.gopLength = 30;
    let hc = hevc(cfg);
    hc.idrPeriod = 30;
    hc.set_repeatSPSPPS(1);
    nv::NV_ENC_INITIALIZE_PARAMS {
        version: nv::NV_ENC_INITIALIZE_PARAMS_VER,
        encodeGUID: nv::NV_ENC_CODEC_HEVC_GUID,
        presetGUID: nv::NV_ENC_PRESET_P4_GUID,
        tuningInfo: nv::NV_ENC_TUNING_INFO::NV_ENC_TUNING_INFO_HIGH_QUALITY,
        encodeWidth: w,
        encodeHeight: h,
        darWidth: w,
        darHeight: h,
        frameRateNum: 30,
        frameRateDen: 1,
        enablePTD: 1,
        ..Default::default()
    }
}

/// `cuStreamGetCtx` and `nvEncSetIOCudaStreams` with every kind of stream argument.
pub(super) fn scenario_io_streams() -> Result<(), String> {
    let cu = Cu::open()?;
    let ctx = cu.context()?;
    let lib = lib()?;
    let create = |what: &str| -> Result<*mut c_void, String> {
        let mut st = std::ptr::null_mut();
        // SAFETY: a writable out-pointer; a context is current.
        let rc = unsafe { (cu.stream_create)(&mut st, 0) };
        if rc != 0 {
            return Err(format!("cuStreamCreate ({what}): {rc}"));
        }
        Ok(st)
    };
    let get_ctx = |stream: *mut c_void, out: *mut *mut c_void| -> i32 {
        // SAFETY: cuStreamGetCtx validates the handle; `out` is NULL or writable.
        unsafe { (cu.stream_get_ctx)(stream, out) }
    };
    let mine = create("the session's context")?;
    let mut owner = std::ptr::null_mut();
    let rc = get_ctx(mine, &mut owner);
    println!("stream_ctx own {rc} {}", owner == ctx);
    owner = std::ptr::null_mut();
    let rc = get_ctx(std::ptr::null_mut(), &mut owner);
    println!("stream_ctx null_stream {rc} {}", owner == ctx);
    let rc = get_ctx(0xdead_0000 as *mut c_void, &mut owner);
    println!("stream_ctx bogus {rc}");
    let rc = get_ctx(mine, std::ptr::null_mut());
    println!("stream_ctx null_out {rc}");
    // A stream of another context, then back to the session's.
    let mut other_ctx = std::ptr::null_mut();
    // SAFETY: a writable out-pointer; the new context becomes current.
    let rc = unsafe { (cu.ctx_create)(&mut other_ctx, 0, 0) };
    if rc != 0 {
        return Err(format!("cuCtxCreate: {rc}"));
    }
    let foreign = create("another context")?;
    let mut popped = std::ptr::null_mut();
    // SAFETY: pops the context created above; writable out-pointer.
    unsafe { (cu.ctx_pop)(&mut popped) };
    let dead = create("destroyed below")?;
    // SAFETY: destroying a stream this client created, once.
    unsafe { (cu.stream_destroy)(dead) };

    let (st, s) = open(&lib, ctx);
    expect("open", st, S::NV_ENC_SUCCESS)?;
    let mut cfg = s.preset()?;
    let mut p = init_params(&mut cfg, 64, 64, 1);
    // SAFETY: live session; `p` points at `cfg`.
    let st = unsafe { (s.f.initialize_encoder)(s.enc, &mut p) };
    expect("init", st, S::NV_ENC_SUCCESS)?;
    let set = |i: *mut c_void, o: *mut c_void| -> S {
        // SAFETY: live session; each argument is NULL or points at a CUstream local below.
        unsafe { (s.f.set_io_cuda_streams)(s.enc, i, o) }
    };
    let mut own = mine;
    let mut null_stream: *mut c_void = std::ptr::null_mut();
    let mut bogus = 0xdead_0000 as *mut c_void;
    let mut foreign_v = foreign;
    let mut dead_v = dead;
    let ptr = |v: &mut *mut c_void| -> *mut c_void { (v as *mut *mut c_void).cast() };
    expect(
        "io streams: the session's stream",
        set(ptr(&mut own), ptr(&mut own)),
        S::NV_ENC_SUCCESS,
    )?;
    expect(
        "io streams: the NULL stream",
        set(ptr(&mut null_stream), ptr(&mut own)),
        S::NV_ENC_SUCCESS,
    )?;
    expect(
        "io streams: NULL pointer",
        set(std::ptr::null_mut(), ptr(&mut own)),
        S::NV_ENC_ERR_INVALID_PTR,
    )?;
    expect(
        "io streams: not a stream",
        set(ptr(&mut own), ptr(&mut bogus)),
        S::NV_ENC_ERR_INVALID_PARAM,
    )?;
    expect(
        "io streams: another context's stream",
        set(ptr(&mut foreign_v), ptr(&mut own)),
        S::NV_ENC_ERR_INVALID_PARAM,
    )?;
    expect(
        "io streams: a destroyed stream",
        set(ptr(&mut dead_v), ptr(&mut own)),
        S::NV_ENC_ERR_INVALID_PARAM,
    )?;
    expect("destroy", s.destroy(), S::NV_ENC_SUCCESS)?;
    for stream in [mine, foreign] {
        // SAFETY: destroying a stream this client created, once.
        unsafe { (cu.stream_destroy)(stream) };
    }
    for c in [other_ctx, ctx] {
        // SAFETY: destroying a context this client created, once.
        unsafe { (cu.ctx_destroy)(c) };
    }
    Ok(())
}
