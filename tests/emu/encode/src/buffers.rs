//! Input buffers (create, lock, unlock, destroy) and bitstream buffers (create, destroy).

use std::ffi::c_void;

use nvenc_sys as nv;
use nvenc_sys::NVENCSTATUS;

use crate::fail::{
    arg, check_version, v, zero_ptr, zero_u32, INVALID_CALL, INVALID_PARAM, ST_SUCCESS,
};
use crate::init::need_init;
use crate::state::{
    fmt_check, run, Bitstream, BsState, InputBuf, BS_BASE, HEIGHT_MAX, INBUF_BASE,
    INPUT_PITCH_ALIGN, WIDTH_MAX,
};

pub(crate) unsafe extern "C" fn nvEncCreateInputBuffer(
    enc: *mut c_void,
    p: *mut nv::NV_ENC_CREATE_INPUT_BUFFER,
) -> NVENCSTATUS {
    run("nvEncCreateInputBuffer", enc, |g| {
        let h = g.handle(INBUF_BASE);
        let s = g.sess(enc)?;
        need_init(s)?;
        // SAFETY: the client's struct (API contract).
        let p = unsafe { arg(p, "createInputBufferParams") }?;
        check_version(
            p.version,
            nv::NV_ENC_CREATE_INPUT_BUFFER_VER,
            "NV_ENC_CREATE_INPUT_BUFFER",
        )?;
        if p.reserved != 0 {
            return Err(v(
                INVALID_PARAM,
                "NV_ENC_CREATE_INPUT_BUFFER.reserved must be 0",
            ));
        }
        zero_u32(&p.reserved1, "NV_ENC_CREATE_INPUT_BUFFER.reserved1")?;
        zero_ptr(&p.reserved2, "NV_ENC_CREATE_INPUT_BUFFER.reserved2")?;
        if !(1..=WIDTH_MAX).contains(&p.width) || !(1..=HEIGHT_MAX).contains(&p.height) {
            return Err(v(
                INVALID_PARAM,
                format!("input buffer {}x{} outside caps", p.width, p.height),
            ));
        }
        let fmt = fmt_check(p.bufferFmt, "bufferFmt")?;
        let pitch = p.width.div_ceil(INPUT_PITCH_ALIGN) * INPUT_PITCH_ALIGN;
        let (_, total) = fmt.layout(pitch as usize, p.height as usize);
        s.inputs.insert(
            h,
            InputBuf {
                width: p.width,
                height: p.height,
                fmt,
                pitch,
                data: vec![0; total],
                locked: false,
                in_flight: false,
            },
        );
        p.inputBuffer = h as *mut c_void;
        Ok(ST_SUCCESS)
    })
}

pub(crate) unsafe extern "C" fn nvEncDestroyInputBuffer(
    enc: *mut c_void,
    buf: nv::NV_ENC_INPUT_PTR,
) -> NVENCSTATUS {
    run("nvEncDestroyInputBuffer", enc, |g| {
        let s = g.sess(enc)?;
        let b = s.inputs.remove(&(buf as u64)).ok_or_else(|| {
            v(
                INVALID_PARAM,
                format!("{buf:p} is not a live input buffer of this session"),
            )
        })?;
        if b.in_flight {
            return Err(v(
                INVALID_CALL,
                "input buffer destroyed while its frame is still in flight (lock its output first)",
            ));
        }
        if b.locked {
            return Err(v(INVALID_CALL, "input buffer destroyed while locked"));
        }
        Ok(ST_SUCCESS)
    })
}

pub(crate) unsafe extern "C" fn nvEncLockInputBuffer(
    enc: *mut c_void,
    p: *mut nv::NV_ENC_LOCK_INPUT_BUFFER,
) -> NVENCSTATUS {
    run("nvEncLockInputBuffer", enc, |g| {
        let s = g.sess(enc)?;
        // SAFETY: the client's struct (API contract).
        let p = unsafe { arg(p, "lockInputBufferParams") }?;
        check_version(
            p.version,
            nv::NV_ENC_LOCK_INPUT_BUFFER_VER,
            "NV_ENC_LOCK_INPUT_BUFFER",
        )?;
        if p.reservedBitFields() != 0 {
            return Err(v(
                INVALID_PARAM,
                "NV_ENC_LOCK_INPUT_BUFFER.reservedBitFields must be 0",
            ));
        }
        zero_u32(&p.reserved1, "NV_ENC_LOCK_INPUT_BUFFER.reserved1")?;
        zero_ptr(&p.reserved2, "NV_ENC_LOCK_INPUT_BUFFER.reserved2")?;
        let b = s.inputs.get_mut(&(p.inputBuffer as u64)).ok_or_else(|| {
            v(
                INVALID_PARAM,
                format!(
                    "{:p} is not a live input buffer of this session",
                    p.inputBuffer
                ),
            )
        })?;
        if b.locked {
            return Err(v(INVALID_CALL, "input buffer is already locked"));
        }
        if b.in_flight {
            return Err(v(INVALID_CALL, "input buffer locked while its previous frame is still in flight (lock that frame's output first)"));
        }
        b.locked = true;
        p.bufferDataPtr = b.data.as_mut_ptr().cast();
        p.pitch = b.pitch;
        Ok(ST_SUCCESS)
    })
}

pub(crate) unsafe extern "C" fn nvEncUnlockInputBuffer(
    enc: *mut c_void,
    buf: nv::NV_ENC_INPUT_PTR,
) -> NVENCSTATUS {
    run("nvEncUnlockInputBuffer", enc, |g| {
        let s = g.sess(enc)?;
        let b = s.inputs.get_mut(&(buf as u64)).ok_or_else(|| {
            v(
                INVALID_PARAM,
                format!("{buf:p} is not a live input buffer of this session"),
            )
        })?;
        if !b.locked {
            return Err(v(INVALID_CALL, "input buffer is not locked"));
        }
        b.locked = false;
        Ok(ST_SUCCESS)
    })
}

pub(crate) unsafe extern "C" fn nvEncCreateBitstreamBuffer(
    enc: *mut c_void,
    p: *mut nv::NV_ENC_CREATE_BITSTREAM_BUFFER,
) -> NVENCSTATUS {
    run("nvEncCreateBitstreamBuffer", enc, |g| {
        let h = g.handle(BS_BASE);
        let s = g.sess(enc)?;
        need_init(s)?;
        // SAFETY: the client's struct (API contract).
        let p = unsafe { arg(p, "createBitstreamBufferParams") }?;
        check_version(
            p.version,
            nv::NV_ENC_CREATE_BITSTREAM_BUFFER_VER,
            "NV_ENC_CREATE_BITSTREAM_BUFFER",
        )?;
        if p.reserved != 0 {
            return Err(v(
                INVALID_PARAM,
                "NV_ENC_CREATE_BITSTREAM_BUFFER.reserved must be 0",
            ));
        }
        zero_u32(&p.reserved1, "NV_ENC_CREATE_BITSTREAM_BUFFER.reserved1")?;
        zero_ptr(&p.reserved2, "NV_ENC_CREATE_BITSTREAM_BUFFER.reserved2")?;
        s.bitstreams.insert(
            h,
            Bitstream {
                state: BsState::Idle,
                data: Vec::new(),
            },
        );
        p.bitstreamBuffer = h as *mut c_void;
        p.bitstreamBufferPtr = std::ptr::null_mut();
        Ok(ST_SUCCESS)
    })
}

pub(crate) unsafe extern "C" fn nvEncDestroyBitstreamBuffer(
    enc: *mut c_void,
    buf: nv::NV_ENC_OUTPUT_PTR,
) -> NVENCSTATUS {
    run("nvEncDestroyBitstreamBuffer", enc, |g| {
        let s = g.sess(enc)?;
        let b = s.bitstreams.remove(&(buf as u64)).ok_or_else(|| {
            v(
                INVALID_PARAM,
                format!("{buf:p} is not a live bitstream buffer of this session"),
            )
        })?;
        match b.state {
            BsState::Idle => Ok(ST_SUCCESS),
            BsState::Queued => {
                s.queue.retain(|q| q.bs != buf as u64);
                Err(v(INVALID_CALL, "bitstream buffer destroyed while its frame is pending (lock it, or flush with EOS, first)"))
            }
            BsState::Locked => Err(v(INVALID_CALL, "bitstream buffer destroyed while locked")),
        }
    })
}
