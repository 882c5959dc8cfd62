//! `nvEncEncodePicture` and its output side: reading the input's pixels, the x264 engine and
//! its B-frame replay, EOS flush, and `nvEncLockBitstream` / `nvEncUnlockBitstream`.

use std::ffi::c_void;
use std::sync::LazyLock;

use nvenc_sys as nv;
use nvenc_sys::NVENCSTATUS;

use crate::codec::{self, Coded, Picture};
use crate::cuda;
use crate::fail::{
    arg, check_version, f, v, zero_ptr, zero_u32, Fail, INVALID_CALL, INVALID_PARAM, ST_SUCCESS,
};
use crate::init::need_init;
use crate::state::{run, BsState, Engine, Fmt, FrameMeta, InputRef, Session, Submission};

/// Reads the pixels of a submitted input.
pub(crate) fn read_input(
    cuda: Option<&cuda::Cuda>,
    s: &Session,
    input: InputRef,
) -> Result<(Vec<u8>, Fmt, u32, u32), Fail> {
    match input {
        InputRef::Buf(h) => {
            let b = &s.inputs[&h];
            Ok((b.data.clone(), b.fmt, b.pitch, b.height))
        }
        InputRef::Map(h) => {
            let r = &s.regs[&s.maps[&h].reg];
            let (_, total) = r.fmt.layout(r.pitch as usize, r.height as usize);
            let mut data = vec![0u8; total];
            let cuda = cuda.ok_or_else(|| f(NVENCSTATUS::NV_ENC_ERR_GENERIC, "CUDA not loaded"))?;
            cuda.read(s.ctx, r.ptr, &mut data).map_err(|e| {
                v(NVENCSTATUS::NV_ENC_ERR_MAP_FAILED, format!("reading the registered surface failed (was its memory freed while registered?): {e}"))
            })?;
            Ok((data, r.fmt, r.pitch, r.height))
        }
    }
}

/// Gives coded pictures to the oldest submissions that have none yet.
pub(crate) fn assign(s: &mut Session, coded: impl IntoIterator<Item = Coded>) {
    for c in coded {
        if let Some(sub) = s.queue.iter_mut().find(|q| q.coded.is_none()) {
            sub.coded = Some(c);
        }
    }
}

pub(crate) unsafe extern "C" fn nvEncEncodePicture(
    enc: *mut c_void,
    p: *mut nv::NV_ENC_PIC_PARAMS,
) -> NVENCSTATUS {
    run("nvEncEncodePicture", enc, |g| {
        let cuda = g.cuda.clone();
        let s = g.sess(enc)?;
        // SAFETY: the client's struct (API contract).
        let p = unsafe { arg(p, "encodePicParams") }?;
        check_version(p.version, nv::NV_ENC_PIC_PARAMS_VER, "NV_ENC_PIC_PARAMS")?;
        zero_u32(&p.reserved1, "NV_ENC_PIC_PARAMS.reserved1")?;
        zero_ptr(&p.reserved2, "NV_ENC_PIC_PARAMS.reserved2")?;
        zero_u32(&p.reserved3, "NV_ENC_PIC_PARAMS.reserved3")?;
        zero_ptr(&p.reserved4, "NV_ENC_PIC_PARAMS.reserved4")?;
        if p.reservedBitFields != 0 {
            return Err(v(
                INVALID_PARAM,
                "NV_ENC_PIC_PARAMS.reservedBitFields must be 0",
            ));
        }
        if !p.completionEvent.is_null() {
            return Err(v(
                INVALID_PARAM,
                "completionEvent must be NULL in synchronous mode",
            ));
        }
        need_init(s)?;
        crate::control::reopen_deferred(s)?;
        let init = need_init(s)?;
        let flags = p.encodePicFlags;
        let eos = flags & nv::NV_ENC_PIC_FLAGS::NV_ENC_PIC_FLAG_EOS.0 != 0;
        if eos {
            if !p.inputBuffer.is_null() || !p.outputBitstream.is_null() {
                return Err(v(
                    INVALID_PARAM,
                    "an EOS picture must carry no input or output buffer",
                ));
            }
            flush(s)?;
            return Ok(ST_SUCCESS);
        }
        let force_idr = flags & nv::NV_ENC_PIC_FLAGS::NV_ENC_PIC_FLAG_FORCEIDR.0 != 0;
        if force_idr && !init.ptd {
            return Err(v(
                INVALID_PARAM,
                "NV_ENC_PIC_FLAG_FORCEIDR requires enablePTD = 1",
            ));
        }
        if p.pictureStruct != nv::NV_ENC_PIC_STRUCT::NV_ENC_PIC_STRUCT_FRAME {
            return Err(v(
                INVALID_PARAM,
                format!(
                    "pictureStruct {} is not NV_ENC_PIC_STRUCT_FRAME",
                    p.pictureStruct.0
                ),
            ));
        }
        let out_h = p.outputBitstream as u64;
        let bs = s.bitstreams.get(&out_h).ok_or_else(|| {
            v(
                INVALID_PARAM,
                format!("outputBitstream {out_h:#x} is not a bitstream buffer of this session"),
            )
        })?;
        if bs.state != BsState::Idle {
            return Err(v(
                INVALID_CALL,
                "outputBitstream is still pending or locked from an earlier frame",
            ));
        }
        let in_h = p.inputBuffer as u64;
        let (input, width, height, pitch, fmt) = if let Some(b) = s.inputs.get(&in_h) {
            if b.locked {
                return Err(v(
                    INVALID_CALL,
                    "input buffer is still locked (nvEncUnlockInputBuffer first)",
                ));
            }
            if b.in_flight {
                return Err(v(
                    INVALID_CALL,
                    "input buffer reused before the output of its previous frame was locked",
                ));
            }
            (InputRef::Buf(in_h), b.width, b.height, b.pitch, b.fmt)
        } else if let Some(m) = s.maps.get(&in_h) {
            if m.in_flight {
                return Err(v(
                    INVALID_CALL,
                    "mapped input reused before the output of its previous frame was locked",
                ));
            }
            let r = &s.regs[&m.reg];
            (InputRef::Map(in_h), r.width, r.height, r.pitch, r.fmt)
        } else if s.regs.contains_key(&in_h) {
            return Err(v(NVENCSTATUS::NV_ENC_ERR_RESOURCE_NOT_MAPPED, "inputBuffer is a registered resource; pass the mappedResource from nvEncMapInputResource"));
        } else {
            return Err(v(INVALID_PARAM, format!("inputBuffer {in_h:#x} is neither a mapped resource nor an input buffer of this session")));
        };
        // 0x0 means "the input's own size": FFmpeg 5.1 leaves both 0 for mapped CUDA frames
        // and works on real drivers, so only a non-zero size that disagrees is refused.
        let sized = p.inputWidth != 0 || p.inputHeight != 0;
        if sized && (p.inputWidth != width || p.inputHeight != height) {
            return Err(v(
                INVALID_PARAM,
                format!(
                    "inputWidth/Height {}x{} differ from the input's {width}x{height}",
                    p.inputWidth, p.inputHeight
                ),
            ));
        }
        // nvEncodeAPI.h 11.1 line 1916: "If pitch value is not known, set this to inputWidth";
        // NVIDIA's sample encoder class (NvEncoder) leaves it 0. 0, inputWidth (as passed, or
        // the input's width when inputWidth is 0) and the real pitch are accepted.
        let width_given = if p.inputWidth != 0 {
            p.inputWidth
        } else {
            width
        };
        if p.inputPitch != 0 && p.inputPitch != pitch && p.inputPitch != width_given {
            return Err(v(
                INVALID_PARAM,
                format!(
                    "inputPitch {} is neither 0, inputWidth {width_given} nor the input's pitch {pitch}",
                    p.inputPitch
                ),
            ));
        }
        if Fmt::from(p.bufferFmt) != Some(fmt) {
            return Err(v(
                INVALID_PARAM,
                format!(
                    "bufferFmt {:#x} differs from the input's format {fmt:?}",
                    p.bufferFmt.0
                ),
            ));
        }
        if width < init.width || height < init.height {
            return Err(v(
                INVALID_PARAM,
                format!(
                    "input {width}x{height} is smaller than the encode size {}x{}",
                    init.width, init.height
                ),
            ));
        }
        // Decide NVENC's picture structure.
        let (interval, idr_period) = (init.interval, init.idr_period);
        let is_idr =
            s.serial == 0 || force_idr || idr_period.is_some_and(|k| s.since_idr >= u64::from(k));
        let anchor = is_idr || s.since_anchor + 1 >= interval;
        let display_type = if is_idr {
            codec::PIC_IDR
        } else if anchor {
            codec::PIC_P
        } else {
            codec::PIC_B
        };
        if flags & nv::NV_ENC_PIC_FLAGS::NV_ENC_PIC_FLAG_OUTPUT_SPSPPS.0 != 0 {
            s.force_headers = true;
        }
        let serial = s.serial;
        s.serial += 1;
        s.since_idr = if is_idr { 1 } else { s.since_idr + 1 };
        s.since_anchor = if anchor { 0 } else { s.since_anchor + 1 };
        s.meta.insert(
            serial,
            FrameMeta {
                ts: p.inputTimeStamp,
                dur: p.inputDuration,
                frame_idx: p.frameIdx,
            },
        );
        // Encode.
        let engine = s
            .engine
            .as_mut()
            .ok_or_else(|| f(NVENCSTATUS::NV_ENC_ERR_GENERIC, "no engine"))?;
        let mut produced = Vec::new();
        match engine {
            Engine::Fast => {
                s.fast_pending.push(serial);
                if anchor {
                    // NVENC's decode order: the anchor, then the B-pictures before it.
                    let a = s.fast_pending.pop().unwrap_or(serial);
                    produced.push(fast_coded(display_type, a));
                    for b in s.fast_pending.drain(..) {
                        produced.push(fast_coded(codec::PIC_B, b));
                    }
                }
            }
            Engine::Coded(_) => {
                let (data, fmt, pitch, h) = read_input(cuda.as_deref(), s, input)?;
                let (planes, _) = fmt.layout(pitch as usize, h as usize);
                let pic = Picture {
                    data: &data,
                    csp: fmt.csp(),
                    planes,
                };
                if let Some(Engine::Coded(x)) = s.engine.as_mut() {
                    produced.extend(
                        x.encode(&pic, serial, display_type)
                            .map_err(|e| f(NVENCSTATUS::NV_ENC_ERR_GENERIC, e))?,
                    );
                }
            }
        }
        s.queue.push_back(Submission {
            bs: out_h,
            ready: false,
            input,
            coded: None,
        });
        if let Some(b) = s.bitstreams.get_mut(&out_h) {
            b.state = BsState::Queued;
        }
        match input {
            InputRef::Buf(h) => {
                if let Some(b) = s.inputs.get_mut(&h) {
                    b.in_flight = true;
                }
            }
            InputRef::Map(h) => {
                if let Some(m) = s.maps.get_mut(&h) {
                    m.in_flight = true;
                }
            }
        }
        assign(s, produced);
        if anchor {
            for q in s.queue.iter_mut() {
                q.ready = true;
            }
            Ok(ST_SUCCESS)
        } else {
            Ok(NVENCSTATUS::NV_ENC_ERR_NEED_MORE_INPUT)
        }
    })
}

/// A fast-mode picture.
pub(crate) fn fast_coded(pic_type: u32, serial: u64) -> Coded {
    static HDR: LazyLock<std::sync::Arc<Vec<u8>>> =
        LazyLock::new(|| std::sync::Arc::new(codec::FAST_HEADERS.to_vec()));
    Coded {
        nals: codec::FAST_AU.to_vec(),
        pic_type,
        serial,
        headers: HDR.clone(),
        first: false,
    }
}

/// EOS: everything pending becomes ready; the encoder (x264 or x265) is drained.
pub(crate) fn flush(s: &mut Session) -> Result<(), Fail> {
    let mut produced = Vec::new();
    match s.engine.as_mut() {
        Some(Engine::Fast) => {
            for b in s.fast_pending.drain(..) {
                produced.push(fast_coded(codec::PIC_P, b));
            }
        }
        Some(Engine::Coded(x)) => {
            produced = x
                .finish()
                .map_err(|e| f(NVENCSTATUS::NV_ENC_ERR_GENERIC, e))?;
        }
        None => {}
    }
    assign(s, produced);
    for q in s.queue.iter_mut() {
        q.ready = true;
    }
    Ok(())
}

pub(crate) unsafe extern "C" fn nvEncLockBitstream(
    enc: *mut c_void,
    p: *mut nv::NV_ENC_LOCK_BITSTREAM,
) -> NVENCSTATUS {
    run("nvEncLockBitstream", enc, |g| {
        let s = g.sess(enc)?;
        // SAFETY: the client's struct (API contract).
        let p = unsafe { arg(p, "lockBitstreamBufferParams") }?;
        check_version(
            p.version,
            nv::NV_ENC_LOCK_BITSTREAM_VER,
            "NV_ENC_LOCK_BITSTREAM",
        )?;
        if p.reservedBitFields() != 0 {
            return Err(v(
                INVALID_PARAM,
                "NV_ENC_LOCK_BITSTREAM.reservedBitFields must be 0",
            ));
        }
        zero_u32(&p.reserved, "NV_ENC_LOCK_BITSTREAM.reserved")?;
        zero_u32(&p.reserved1, "NV_ENC_LOCK_BITSTREAM.reserved1")?;
        zero_ptr(&p.reserved2, "NV_ENC_LOCK_BITSTREAM.reserved2")?;
        let h = p.outputBitstream as u64;
        let state = s.bitstreams.get(&h).map(|b| b.state).ok_or_else(|| {
            v(
                INVALID_PARAM,
                format!("{h:#x} is not a bitstream buffer of this session"),
            )
        })?;
        match state {
            BsState::Idle => {
                // What a driver does here is not documented (nvEncodeAPI.h 11.1 lines 3100-3136,
                // NvEncLockBitstream, say nothing of a buffer no picture was submitted to); the
                // RIVET project reports a 13.x driver busy-waiting forever when it locks such a
                // buffer after EOS, so never block.
                return Err(v(INVALID_CALL, "locking a bitstream buffer that carries no submitted frame (undefined by the API; drivers have been reported to wait forever here)"));
            }
            BsState::Locked => {
                return Err(v(
                    NVENCSTATUS::NV_ENC_ERR_LOCK_BUSY,
                    "bitstream buffer is already locked",
                ))
            }
            BsState::Queued => {}
        }
        let pos = s
            .queue
            .iter()
            .position(|q| q.bs == h)
            .ok_or_else(|| f(NVENCSTATUS::NV_ENC_ERR_GENERIC, "queue out of sync"))?;
        if pos != 0 {
            return Err(v(INVALID_CALL, format!("outputs must be locked in submission order: {pos} earlier output(s) are still unlocked")));
        }
        if !s.queue[0].ready && p.doNotWait() != 0 {
            // Polling is allowed; the frame is simply not done yet.
            return Err(f(
                NVENCSTATUS::NV_ENC_ERR_LOCK_BUSY,
                "frame not ready yet (doNotWait)",
            ));
        }
        if !s.queue[0].ready {
            return Err(v(
                INVALID_CALL,
                "locking an output whose frame returned NV_ENC_ERR_NEED_MORE_INPUT before a later submission returned NV_ENC_SUCCESS (nvEncodeAPI.h 11.1, NV_ENC_ERR_NEED_MORE_INPUT: a client in synchronous mode cannot lock it)",
            ));
        }
        // Make sure the encoder (x264 or x265) has coded the picture for this output: a client may lock it as soon
        // as a submission returned NV_ENC_SUCCESS, before libx264's own delay let it out.
        if s.queue[0].coded.is_none() {
            let Some(Engine::Coded(x)) = s.engine.as_mut() else {
                return Err(f(
                    NVENCSTATUS::NV_ENC_ERR_GENERIC,
                    "no coded picture for a ready output",
                ));
            };
            let produced = x
                .catch_up()
                .map_err(|e| f(NVENCSTATUS::NV_ENC_ERR_GENERIC, e))?;
            assign(s, produced);
            if s.queue[0].coded.is_none() {
                return Err(f(
                    NVENCSTATUS::NV_ENC_ERR_GENERIC,
                    "the encoder produced no picture for a ready output",
                ));
            }
        }
        let Some(sub) = s.queue.pop_front() else {
            return Err(f(NVENCSTATUS::NV_ENC_ERR_GENERIC, "queue out of sync"));
        };
        let Some(coded) = sub.coded else {
            return Err(f(NVENCSTATUS::NV_ENC_ERR_GENERIC, "queue out of sync"));
        };
        match sub.input {
            InputRef::Buf(i) => {
                if let Some(b) = s.inputs.get_mut(&i) {
                    b.in_flight = false;
                }
            }
            InputRef::Map(m) => {
                if let Some(m) = s.maps.get_mut(&m) {
                    m.in_flight = false;
                }
            }
        }
        let meta = s.meta.remove(&coded.serial).unwrap_or(FrameMeta {
            ts: 0,
            dur: 0,
            frame_idx: 0,
        });
        let keyframe = coded.pic_type == codec::PIC_IDR;
        let repeat = s.init.as_ref().is_some_and(|i| i.repeat_sps_pps);
        let need_headers =
            !s.headers_sent || s.force_headers || coded.first || (repeat && keyframe);
        let mut data = Vec::with_capacity(coded.nals.len() + 64);
        if need_headers {
            data.extend_from_slice(&coded.headers);
            s.headers_sent = true;
            s.force_headers = false;
        }
        data.extend_from_slice(&coded.nals);
        let b = s
            .bitstreams
            .get_mut(&h)
            .ok_or_else(|| f(NVENCSTATUS::NV_ENC_ERR_GENERIC, "buffer vanished"))?;
        b.state = BsState::Locked;
        b.data = data;
        p.bitstreamBufferPtr = b.data.as_mut_ptr().cast();
        p.bitstreamSizeInBytes = b.data.len() as u32;
        p.outputTimeStamp = meta.ts;
        p.outputDuration = meta.dur;
        p.frameIdx = meta.frame_idx;
        p.pictureType = nv::NV_ENC_PIC_TYPE(coded.pic_type);
        p.pictureStruct = nv::NV_ENC_PIC_STRUCT::NV_ENC_PIC_STRUCT_FRAME;
        p.hwEncodeStatus = 0;
        p.numSlices = 1;
        p.frameAvgQP = 26;
        s.last_stats = Some((b.data.len() as u32, coded.pic_type));
        Ok(ST_SUCCESS)
    })
}

pub(crate) unsafe extern "C" fn nvEncUnlockBitstream(
    enc: *mut c_void,
    buf: nv::NV_ENC_OUTPUT_PTR,
) -> NVENCSTATUS {
    run("nvEncUnlockBitstream", enc, |g| {
        let s = g.sess(enc)?;
        let b = s.bitstreams.get_mut(&(buf as u64)).ok_or_else(|| {
            v(
                INVALID_PARAM,
                format!("{buf:p} is not a bitstream buffer of this session"),
            )
        })?;
        if b.state != BsState::Locked {
            return Err(v(INVALID_CALL, "bitstream buffer is not locked"));
        }
        b.state = BsState::Idle;
        Ok(ST_SUCCESS)
    })
}
