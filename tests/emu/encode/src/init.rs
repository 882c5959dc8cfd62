//! Session life: `nvEncOpenEncodeSession(Ex)`, validation of `NV_ENC_INITIALIZE_PARAMS`
//! (shared with reconfiguration and `nvEncGetSequenceParamEx`), `nvEncInitializeEncoder` and
//! `nvEncDestroyEncoder`.

use std::collections::{HashMap, VecDeque};
use std::ffi::{c_void, CString};

use nvenc_sys as nv;
use nvenc_sys::NVENCSTATUS;

use crate::codec::{self, Codec, CodedStream, Rc};
use crate::cuda;
use crate::fail::{
    arg, check_version, f, guid_eq, v, zero_ptr, zero_u32, Fail, INVALID_CALL, INVALID_PARAM,
    INVALID_PTR, INVALID_VERSION, NOT_INIT, ST_SUCCESS, UNIMPLEMENTED,
};
use crate::hevc;
use crate::max_api;
use crate::queries::{
    check_codec, check_lossless, preset_config, preset_index, unknown_preset, TUNING_HQ,
    TUNING_LOSSLESS,
};
use crate::state::{
    fast_mode, run, Engine, Init, Session, EMU, ENC_BASE, HEIGHT_MAX, HEIGHT_MIN, MAX_BFRAMES,
    WIDTH_MAX, WIDTH_MIN,
};

pub(crate) unsafe extern "C" fn nvEncOpenEncodeSession(
    _d: *mut c_void,
    _t: u32,
    _e: *mut *mut c_void,
) -> NVENCSTATUS {
    run("nvEncOpenEncodeSession", std::ptr::null_mut(), |_| {
        Err(v(
            UNIMPLEMENTED,
            "nvEncOpenEncodeSession is deprecated; use nvEncOpenEncodeSessionEx",
        ))
    })
}

pub(crate) unsafe extern "C" fn nvEncOpenEncodeSessionEx(
    p: *mut nv::NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS,
    encoder: *mut *mut c_void,
) -> NVENCSTATUS {
    run("nvEncOpenEncodeSessionEx", std::ptr::null_mut(), |g| {
        if encoder.is_null() {
            return Err(v(INVALID_PTR, "encoder out-pointer is NULL"));
        }
        // SAFETY: checked non-null; the client passes a writable `void **` (API contract).
        unsafe { encoder.write(std::ptr::null_mut()) };
        // SAFETY: the client passes its params struct (API contract).
        let p = unsafe { arg(p, "openSessionExParams") }?;
        check_version(
            p.version,
            nv::NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER,
            "NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS",
        )?;
        if !p.reserved.is_null() {
            return Err(v(
                INVALID_PARAM,
                "NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS.reserved must be NULL",
            ));
        }
        zero_u32(
            &p.reserved1,
            "NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS.reserved1",
        )?;
        zero_ptr(
            &p.reserved2,
            "NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS.reserved2",
        )?;
        if p.apiVersion != nv::NVENCAPI_VERSION {
            return Err(v(
                INVALID_VERSION,
                format!(
                    "apiVersion {:#x} is not NVENCAPI_VERSION {:#x} (11.1)",
                    p.apiVersion,
                    nv::NVENCAPI_VERSION
                ),
            ));
        }
        let hdr = (nv::NVENCAPI_MAJOR_VERSION << 4) | nv::NVENCAPI_MINOR_VERSION;
        if hdr > max_api() {
            return Err(v(
                INVALID_VERSION,
                format!(
                    "apiVersion 11.1 is newer than this driver's maximum {}.{}",
                    max_api() >> 4,
                    max_api() & 15
                ),
            ));
        }
        if p.deviceType != nv::NV_ENC_DEVICE_TYPE::NV_ENC_DEVICE_TYPE_CUDA {
            return Err(v(
                NVENCSTATUS::NV_ENC_ERR_UNSUPPORTED_DEVICE,
                format!(
                    "deviceType {} is not supported on Linux by this emulator (only CUDA)",
                    p.deviceType.0
                ),
            ));
        }
        match std::env::var("NVENC_EMU_NO_DEVICE").as_deref() {
            Ok("1") => {
                return Err(f(
                    NVENCSTATUS::NV_ENC_ERR_NO_ENCODE_DEVICE,
                    "no NVENC engine (NVENC_EMU_NO_DEVICE=1)",
                ))
            }
            Ok("unsupported") => {
                return Err(f(
                    NVENCSTATUS::NV_ENC_ERR_UNSUPPORTED_DEVICE,
                    "device has no NVENC (NVENC_EMU_NO_DEVICE=unsupported)",
                ))
            }
            _ => {}
        }
        if g.cuda.is_none() {
            g.cuda = Some(std::sync::Arc::new(cuda::Cuda::open().map_err(|e| {
                f(
                    NVENCSTATUS::NV_ENC_ERR_NO_ENCODE_DEVICE,
                    format!("cannot load libcuda.so.1: {e}"),
                )
            })?));
        }
        let ctx = p.device as u64;
        let mut device = 0;
        if let Some(c) = &g.cuda {
            c.check_ctx(ctx).map_err(|e| {
                v(
                    NVENCSTATUS::NV_ENC_ERR_INVALID_DEVICE,
                    format!("device {ctx:#x} is not a live CUcontext: {e}"),
                )
            })?;
            device = c.device_of(ctx).map_err(|e| {
                v(
                    NVENCSTATUS::NV_ENC_ERR_INVALID_DEVICE,
                    format!("the device of context {ctx:#x} is unknown: {e}"),
                )
            })?;
        }
        // A GPU without an NVENC engine in a mixed node (an A100 or H100 beside encoding GPUs):
        // its CUDA works, a session is refused as on such a GPU.
        let no_encoder = std::env::var("NVENC_EMU_NO_ENCODER").unwrap_or_default();
        if no_encoder
            .split(',')
            .any(|d| d.trim().parse::<i32>() == Ok(device))
        {
            return Err(f(
                NVENCSTATUS::NV_ENC_ERR_NO_ENCODE_DEVICE,
                format!("device {device} has no NVENC engine (NVENC_EMU_NO_ENCODER={no_encoder})"),
            ));
        }
        if let Some(max) = std::env::var("NVENC_EMU_MAX_SESSIONS")
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        {
            // Per GPU: a GeForce's limit counts the sessions on that GPU.
            let open = g.sessions.values().filter(|s| s.device == device).count();
            if open >= max {
                return Err(f(
                    NVENCSTATUS::NV_ENC_ERR_OUT_OF_MEMORY,
                    format!("{open} sessions already open on device {device}; it allows {max} (GeForce-style session limit)"),
                ));
            }
        }
        let h = g.handle(ENC_BASE);
        g.sessions.insert(
            h,
            Session {
                ctx,
                device,
                init: None,
                inputs: HashMap::new(),
                bitstreams: HashMap::new(),
                regs: HashMap::new(),
                maps: HashMap::new(),
                queue: VecDeque::new(),
                engine: None,
                meta: HashMap::new(),
                serial: 0,
                since_idr: 0,
                since_anchor: 0,
                fast_pending: Vec::new(),
                headers_sent: false,
                force_headers: false,
                reopen_pending: false,
                last_error: CString::default(),
                last_stats: None,
            },
        );
        EMU.line(&format!(
            "session_open handle={h:#x} device={device} sessions={}",
            g.sessions.len()
        ));
        // SAFETY: checked non-null above.
        unsafe { encoder.write(h as *mut c_void) };
        Ok(ST_SUCCESS)
    })
}

/// Validates initialize params (also used by reconfigure and GetSequenceParamEx).
pub(crate) fn validate_init(p: &nv::NV_ENC_INITIALIZE_PARAMS) -> Result<Init, Fail> {
    check_version(
        p.version,
        nv::NV_ENC_INITIALIZE_PARAMS_VER,
        "NV_ENC_INITIALIZE_PARAMS",
    )?;
    zero_u32(&p.reserved, "NV_ENC_INITIALIZE_PARAMS.reserved")?;
    zero_ptr(&p.reserved2, "NV_ENC_INITIALIZE_PARAMS.reserved2")?;
    if p.reservedBitFields() != 0 {
        return Err(v(
            INVALID_PARAM,
            "NV_ENC_INITIALIZE_PARAMS.reservedBitFields must be 0",
        ));
    }
    let codec = check_codec(&p.encodeGUID).map_err(|mut e| {
        // Initializing with a codec nvEncGetEncodeGUIDs does not list is the client's error.
        e.violation = true;
        e
    })?;
    let (preset, implied) =
        preset_index(&p.presetGUID).ok_or_else(|| unknown_preset("presetGUID", &p.presetGUID))?;
    let tuning = match (p.tuningInfo.0, implied) {
        (0, Some(t)) => t,
        (t, _) => t.max(TUNING_HQ),
    };
    let (w, h) = (p.encodeWidth, p.encodeHeight);
    if !(WIDTH_MIN..=WIDTH_MAX).contains(&w) || !(HEIGHT_MIN..=HEIGHT_MAX).contains(&h) {
        return Err(v(INVALID_PARAM, format!("encode size {w}x{h} outside caps {WIDTH_MIN}x{HEIGHT_MIN}..{WIDTH_MAX}x{HEIGHT_MAX}")));
    }
    if p.frameRateNum == 0 || p.frameRateDen == 0 {
        return Err(v(
            INVALID_PARAM,
            format!(
                "frame rate {}/{} must be non-zero",
                p.frameRateNum, p.frameRateDen
            ),
        ));
    }
    if p.enableEncodeAsync != 0 {
        return Err(v(NVENCSTATUS::NV_ENC_ERR_UNSUPPORTED_PARAM, "enableEncodeAsync must be 0: asynchronous mode is not supported on Linux (ASYNC_ENCODE_SUPPORT = 0)"));
    }
    if p.enableMEOnlyMode() != 0 {
        return Err(v(
            UNIMPLEMENTED,
            "motion-estimation-only mode is not emulated",
        ));
    }
    if !p.privData.is_null() || p.privDataSize != 0 {
        return Err(v(INVALID_PARAM, "privData/privDataSize must be NULL/0"));
    }
    let (mw, mh) = (p.maxEncodeWidth, p.maxEncodeHeight);
    if (mw != 0 && (mw < w || mw > WIDTH_MAX)) || (mh != 0 && (mh < h || mh > HEIGHT_MAX)) {
        return Err(v(INVALID_PARAM, format!("maxEncodeWidth/Height {mw}x{mh} must be 0 or between {w}x{h} and {WIDTH_MAX}x{HEIGHT_MAX}")));
    }
    let config = if p.encodeConfig.is_null() {
        preset_config(codec, preset, tuning)
    } else {
        // SAFETY: non-null encodeConfig points at the client's NV_ENC_CONFIG (API contract).
        let c = unsafe { &*p.encodeConfig };
        check_version(c.version, nv::NV_ENC_CONFIG_VER, "NV_ENC_CONFIG")?;
        zero_u32(&c.reserved, "NV_ENC_CONFIG.reserved")?;
        zero_ptr(&c.reserved2, "NV_ENC_CONFIG.reserved2")?;
        zero_u32(&c.rcParams.reserved, "NV_ENC_RC_PARAMS.reserved")?;
        if codec == Codec::H264 {
            // SAFETY: the H.264 member of the union, as selected by encodeGUID (checked above).
            let h264 = unsafe { &c.encodeCodecConfig.h264Config };
            zero_u32(&h264.reserved1, "NV_ENC_CONFIG_H264.reserved1")?;
            zero_ptr(&h264.reserved2, "NV_ENC_CONFIG_H264.reserved2")?;
        }
        *c
    };
    if config.frameIntervalP < 0 || config.frameIntervalP as u32 > MAX_BFRAMES + 1 {
        return Err(v(
            INVALID_PARAM,
            format!(
                "frameIntervalP {} needs {} B-frames; NUM_MAX_BFRAMES is {MAX_BFRAMES}",
                config.frameIntervalP,
                config.frameIntervalP - 1
            ),
        ));
    }
    if p.enableWeightedPrediction() != 0 && config.frameIntervalP > 1 {
        return Err(v(
            INVALID_PARAM,
            "weighted prediction is not supported together with B-frames",
        ));
    }
    if config.monoChromeEncoding != 0 {
        return Err(v(
            INVALID_PARAM,
            "monoChromeEncoding is not supported (SUPPORT_MONOCHROME = 0)",
        ));
    }
    let fields = match codec {
        Codec::H264 => h264_fields(&config)?,
        Codec::Hevc => hevc_fields(&config)?,
    };
    // Lossless is asked for by the tuning (or a legacy lossless preset) or by H.264's transform
    // bypass flag (nvEncodeAPI.h 11.1 line 1433).
    let lossless = tuning == TUNING_LOSSLESS || fields.transform_bypass;
    if lossless {
        check_lossless("NV_ENC_INITIALIZE_PARAMS")?;
    }
    let ptd = p.enablePTD != 0;
    let interval = (config.frameIntervalP.max(1)) as u32;
    if !ptd && interval > 1 {
        return Err(v(
            UNIMPLEMENTED,
            "B-frames with enablePTD = 0 (client-side reordering) are not emulated",
        ));
    }
    let gop = config.gopLength;
    let idr = if fields.idr_period != 0 {
        fields.idr_period
    } else {
        gop
    };
    let idr_period = (idr != nv::NVENC_INFINITE_GOPLENGTH && idr != 0).then_some(idr);
    let rc = &config.rcParams;
    let cbr = rc.rateControlMode == nv::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_CBR;
    let rcm = if rc.rateControlMode == nv::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_CONSTQP {
        Rc::Cqp(if rc.constQP.qpInterP == 0 {
            23
        } else {
            rc.constQP.qpInterP
        })
    } else if !cbr && rc.targetQuality > 0 {
        // API.h: targetQuality is the "Target CQ (Constant Quality) level for VBR mode"; CBR
        // ignores it.
        Rc::Crf(f32::from(rc.targetQuality))
    } else if rc.averageBitRate > 0 {
        let kbps = rc.averageBitRate / 1000;
        // API.h: maxBitRate "is used for VBR and ignored for CBR mode".
        let max = if cbr { kbps } else { rc.maxBitRate / 1000 };
        // API.h: vbvInitialDelay is in bits, like vbvBufferSize; 0 for the default.
        let vbv_init = if rc.vbvBufferSize > 0 && rc.vbvInitialDelay > 0 {
            (rc.vbvInitialDelay as f32 / rc.vbvBufferSize as f32).min(1.0)
        } else {
            0.0
        };
        Rc::Abr {
            kbps,
            max_kbps: max,
            vbv_kbit: rc.vbvBufferSize / 1000,
            vbv_init,
            // API.h: enableFillerDataInsertion "will take effect only when one of the CBR rate
            // control modes ... is in use" (frame rate non-zero is checked above).
            filler: cbr && fields.filler,
        }
    } else {
        Rc::Crf(23.0)
    };
    // Transform bypass with constant QP 0 is lossless coding (the header's recipe, line 1433),
    // which x264 does at QP 0.
    let cqp0 = rc.rateControlMode == nv::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_CONSTQP
        && rc.constQP.qpInterP == 0
        && rc.constQP.qpIntra == 0;
    let rcm = if lossless && cqp0 { Rc::Cqp(0) } else { rcm };
    let params = codec::Params {
        width: w,
        height: h,
        fps_num: p.frameRateNum,
        fps_den: p.frameRateDen,
        bframes: interval - 1,
        idr_period,
        rc: rcm,
        codec,
        profile: fields.profile,
        cabac: fields.cabac,
        level: fields.level,
    };
    Ok(Init {
        preset,
        tuning,
        width: w,
        height: h,
        max_width: if mw == 0 { w } else { mw },
        max_height: if mh == 0 { h } else { mh },
        ptd,
        interval,
        idr_period,
        repeat_sps_pps: fields.repeat_sps_pps,
        codec,
        hevc: fields.hevc,
        params,
    })
}

/// What initialization takes from the codec member of the config union.
struct Fields {
    idr_period: u32,
    repeat_sps_pps: bool,
    filler: bool,
    transform_bypass: bool,
    profile: Option<&'static str>,
    cabac: bool,
    level: Option<u32>,
    hevc: Option<hevc::Fields>,
}

fn h264_fields(config: &nv::NV_ENC_CONFIG) -> Result<Fields, Fail> {
    // SAFETY: the H.264 member of the union (encodeGUID is H.264).
    let h264 = unsafe { &config.encodeCodecConfig.h264Config };
    if h264.chromaFormatIDC > 1 {
        return Err(v(
            INVALID_PARAM,
            format!(
                "chromaFormatIDC {} needs YUV444 (SUPPORT_YUV444_ENCODE = 0)",
                h264.chromaFormatIDC
            ),
        ));
    }
    let profile = if guid_eq(&config.profileGUID, &nv::NV_ENC_H264_PROFILE_BASELINE_GUID) {
        Some("baseline")
    } else if guid_eq(&config.profileGUID, &nv::NV_ENC_H264_PROFILE_MAIN_GUID) {
        Some("main")
    } else if guid_eq(&config.profileGUID, &nv::NV_ENC_H264_PROFILE_HIGH_GUID) {
        Some("high")
    } else {
        None
    };
    Ok(Fields {
        idr_period: h264.idrPeriod,
        repeat_sps_pps: h264.repeatSPSPPS() != 0,
        filler: h264.enableFillerDataInsertion() != 0,
        transform_bypass: h264.qpPrimeYZeroTransformBypassFlag() != 0,
        profile,
        // NV_ENC_CONFIG_H264::entropyCodingMode: CAVLC where asked for (FFmpeg `-coder cavlc`)
        // or where the profile has no CABAC (Baseline); otherwise CABAC, as NVENC codes Main
        // and High.
        cabac: h264.entropyCodingMode
            != nv::NV_ENC_H264_ENTROPY_CODING_MODE::NV_ENC_H264_ENTROPY_CODING_MODE_CAVLC
            && profile != Some("baseline"),
        // NV_ENC_CONFIG_H264::level (NV_ENC_LEVEL_H264_41 = 41, as x264 numbers them); 0 is
        // autoselect.
        level: (h264.level != 0).then_some(h264.level),
        hevc: None,
    })
}

fn hevc_fields(config: &nv::NV_ENC_CONFIG) -> Result<Fields, Fail> {
    let h = hevc::validate(config, config.frameIntervalP)?;
    Ok(Fields {
        idr_period: h.idr_period,
        repeat_sps_pps: h.repeat_sps_pps,
        filler: h.filler,
        transform_bypass: false,
        profile: Some(h.profile),
        cabac: true,
        level: h.level,
        hevc: Some(h),
    })
}

pub(crate) fn open_engine(init: &Init) -> Result<Engine, Fail> {
    if fast_mode() {
        Ok(Engine::Fast)
    } else {
        CodedStream::open(&init.params)
            .map(|x| Engine::Coded(Box::new(x)))
            .map_err(|e| f(NVENCSTATUS::NV_ENC_ERR_GENERIC, e))
    }
}

pub(crate) unsafe extern "C" fn nvEncInitializeEncoder(
    enc: *mut c_void,
    p: *mut nv::NV_ENC_INITIALIZE_PARAMS,
) -> NVENCSTATUS {
    run("nvEncInitializeEncoder", enc, |g| {
        let s = g.sess(enc)?;
        if s.init.is_some() {
            return Err(v(
                INVALID_CALL,
                "encoder already initialized (use nvEncReconfigureEncoder)",
            ));
        }
        // SAFETY: the client's init params (API contract).
        let p = unsafe { arg(p, "createEncodeParams") }?;
        let init = validate_init(p)?;
        s.engine = Some(open_engine(&init)?);
        // What the client asked for, for tests that check a setting reached the driver.
        let tuning = match init.tuning {
            1 => "hq".to_owned(),
            2 => "ll".to_owned(),
            3 => "ull".to_owned(),
            4 => "lossless".to_owned(),
            other => other.to_string(),
        };
        let idr = init
            .idr_period
            .map_or("infinite".to_owned(), |k| k.to_string());
        let hevc = init.hevc.as_ref().map_or(String::new(), |h| {
            format!(
                " tier={} max_dpb={} b_ref_mode={}",
                h.tier, h.max_dpb, h.use_b_as_ref
            )
        });
        EMU.line(&format!(
            "session_init handle={enc:p} preset=P{} tuning={tuning} size={}x{} frame_interval_p={} codec={} profile={} idr_period={idr} repeat_sps_pps={} rc={}{hevc}",
            init.preset + 1,
            init.width,
            init.height,
            init.interval,
            init.codec.name(),
            init.params.profile.unwrap_or("auto"),
            u8::from(init.repeat_sps_pps),
            init.params.rc.short(),
        ));
        s.init = Some(init);
        Ok(ST_SUCCESS)
    })
}

pub(crate) fn need_init(s: &Session) -> Result<&Init, Fail> {
    s.init.as_ref().ok_or_else(|| {
        v(
            NOT_INIT,
            "nvEncInitializeEncoder has not succeeded on this session yet",
        )
    })
}

pub(crate) unsafe extern "C" fn nvEncDestroyEncoder(enc: *mut c_void) -> NVENCSTATUS {
    run("nvEncDestroyEncoder", enc, |g| {
        if enc.is_null() {
            // The API asks clients to call this even when the open failed; that is fine.
            return Ok(ST_SUCCESS);
        }
        g.sess(enc)?;
        let Some(mut s) = g.sessions.remove(&(enc as u64)) else {
            return Err(f(NVENCSTATUS::NV_ENC_ERR_GENERIC, "session vanished"));
        };
        let mut leaks = Vec::new();
        if !s.maps.is_empty() {
            leaks.push(format!("{} mapped input(s)", s.maps.len()));
        }
        if !s.regs.is_empty() {
            leaks.push(format!("{} registered resource(s)", s.regs.len()));
        }
        if !s.inputs.is_empty() {
            leaks.push(format!("{} input buffer(s)", s.inputs.len()));
        }
        if !s.bitstreams.is_empty() {
            leaks.push(format!("{} bitstream buffer(s)", s.bitstreams.len()));
        }
        let pending = s.queue.len();
        s.engine = None;
        EMU.line(&format!(
            "session_close handle={enc:p} sessions={}",
            g.sessions.len()
        ));
        EMU.line(&g.live_line());
        if !leaks.is_empty() {
            EMU.violation(
                "nvEncDestroyEncoder",
                &format!(
                    "session destroyed with live {} (freed now)",
                    leaks.join(", ")
                ),
            );
        } else if pending > 0 {
            EMU.line(&format!(
                "note entry=nvEncDestroyEncoder pending_outputs={pending}"
            ));
        }
        Ok(ST_SUCCESS)
    })
}
