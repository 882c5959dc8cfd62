//! External input resources: registering CUDA device memory, mapping and unmapping it, and
//! unregistering it.

use std::ffi::c_void;

use nvenc_sys as nv;
use nvenc_sys::NVENCSTATUS;

use crate::fail::{
    arg, check_version, f, v, zero_ptr, zero_u32, INVALID_CALL, INVALID_PARAM, ST_SUCCESS,
    UNIMPLEMENTED,
};
use crate::state::{fmt_check, run, Mapped, Reg, HEIGHT_MAX, MAP_BASE, REG_BASE, WIDTH_MAX};

pub(crate) unsafe extern "C" fn nvEncRegisterResource(
    enc: *mut c_void,
    p: *mut nv::NV_ENC_REGISTER_RESOURCE,
) -> NVENCSTATUS {
    run("nvEncRegisterResource", enc, |g| {
        let h = g.handle(REG_BASE);
        let cuda_ctx = g.sess(enc)?.ctx;
        // SAFETY: the client's struct (API contract).
        let p = unsafe { arg(p, "registerResParams") }?;
        check_version(
            p.version,
            nv::NV_ENC_REGISTER_RESOURCE_VER,
            "NV_ENC_REGISTER_RESOURCE",
        )?;
        zero_u32(&p.reserved1, "NV_ENC_REGISTER_RESOURCE.reserved1")?;
        zero_ptr(&p.reserved2, "NV_ENC_REGISTER_RESOURCE.reserved2")?;
        if !p.pInputFencePoint.is_null() || !p.pOutputFencePoint.is_null() {
            return Err(v(
                INVALID_PARAM,
                "fence points are for D3D12 resources only",
            ));
        }
        match p.resourceType {
            nv::NV_ENC_INPUT_RESOURCE_TYPE::NV_ENC_INPUT_RESOURCE_TYPE_CUDADEVICEPTR => {}
            nv::NV_ENC_INPUT_RESOURCE_TYPE::NV_ENC_INPUT_RESOURCE_TYPE_CUDAARRAY => {
                return Err(f(
                    UNIMPLEMENTED,
                    "CUDA arrays are not emulated (use CUDADEVICEPTR)",
                ))
            }
            t => {
                return Err(v(
                    INVALID_PARAM,
                    format!("resourceType {} is not usable on a CUDA session", t.0),
                ))
            }
        }
        if p.bufferUsage != nv::NV_ENC_BUFFER_USAGE::NV_ENC_INPUT_IMAGE {
            return Err(v(
                INVALID_PARAM,
                format!("bufferUsage {} is not NV_ENC_INPUT_IMAGE", p.bufferUsage.0),
            ));
        }
        if p.subResourceIndex != 0 {
            return Err(v(
                INVALID_PARAM,
                "subResourceIndex must be 0 for CUDA device memory",
            ));
        }
        let fmt = fmt_check(p.bufferFormat, "bufferFormat")?;
        if !(1..=WIDTH_MAX).contains(&p.width) || !(1..=HEIGHT_MAX).contains(&p.height) {
            return Err(v(
                INVALID_PARAM,
                format!("resource {}x{} outside caps", p.width, p.height),
            ));
        }
        // nvEncodeAPI.h 11.1 lines 2149-2154: for CUDADEVICEPTR the pitch is the one
        // cuMemAllocPitch returned or the width in bytes of a cuMemAlloc allocation, so never
        // below the width, and "must be a multiple of 4". Any such pitch is accepted (a driver
        // cannot tell how the client allocated), as long as the frame fits the allocation.
        if p.pitch < p.width {
            return Err(v(
                INVALID_PARAM,
                format!(
                    "pitch {} is less than the width in bytes {}",
                    p.pitch, p.width
                ),
            ));
        }
        if p.pitch % 4 != 0 {
            return Err(v(
                INVALID_PARAM,
                format!("pitch {} is not a multiple of 4", p.pitch),
            ));
        }
        let ptr = p.resourceToRegister as u64;
        let (_, total) = fmt.layout(p.pitch as usize, p.height as usize);
        let cuda = g
            .cuda
            .as_ref()
            .ok_or_else(|| f(NVENCSTATUS::NV_ENC_ERR_GENERIC, "CUDA not loaded"))?;
        let (start, size) = cuda.range(cuda_ctx, ptr).map_err(|e| {
            v(
                NVENCSTATUS::NV_ENC_ERR_RESOURCE_REGISTER_FAILED,
                format!("resourceToRegister: {e}"),
            )
        })?;
        let avail = (start + size as u64).saturating_sub(ptr);
        if (total as u64) > avail {
            return Err(v(
                NVENCSTATUS::NV_ENC_ERR_RESOURCE_REGISTER_FAILED,
                format!("{fmt:?} {}x{} at pitch {} needs {total} bytes, but only {avail} remain in the allocation at {start:#x}", p.width, p.height, p.pitch),
            ));
        }
        let s = g.sess(enc)?;
        s.regs.insert(
            h,
            Reg {
                ptr,
                width: p.width,
                height: p.height,
                pitch: p.pitch,
                fmt,
                mapped: None,
            },
        );
        p.registeredResource = h as *mut c_void;
        Ok(ST_SUCCESS)
    })
}

pub(crate) unsafe extern "C" fn nvEncUnregisterResource(
    enc: *mut c_void,
    reg: nv::NV_ENC_REGISTERED_PTR,
) -> NVENCSTATUS {
    run("nvEncUnregisterResource", enc, |g| {
        let s = g.sess(enc)?;
        let r = s.regs.get(&(reg as u64)).ok_or_else(|| {
            v(
                INVALID_PARAM,
                format!("{reg:p} is not a registered resource of this session"),
            )
        })?;
        if r.mapped.is_some() {
            return Err(v(
                INVALID_CALL,
                "resource unregistered while still mapped (unmap it first)",
            ));
        }
        s.regs.remove(&(reg as u64));
        Ok(ST_SUCCESS)
    })
}

pub(crate) unsafe extern "C" fn nvEncMapInputResource(
    enc: *mut c_void,
    p: *mut nv::NV_ENC_MAP_INPUT_RESOURCE,
) -> NVENCSTATUS {
    run("nvEncMapInputResource", enc, |g| {
        let h = g.handle(MAP_BASE);
        let s = g.sess(enc)?;
        // SAFETY: the client's struct (API contract).
        let p = unsafe { arg(p, "mapInputResParams") }?;
        check_version(
            p.version,
            nv::NV_ENC_MAP_INPUT_RESOURCE_VER,
            "NV_ENC_MAP_INPUT_RESOURCE",
        )?;
        zero_u32(&p.reserved1, "NV_ENC_MAP_INPUT_RESOURCE.reserved1")?;
        zero_ptr(&p.reserved2, "NV_ENC_MAP_INPUT_RESOURCE.reserved2")?;
        let reg = p.registeredResource as u64;
        let r = s.regs.get_mut(&reg).ok_or_else(|| {
            v(
                NVENCSTATUS::NV_ENC_ERR_RESOURCE_NOT_REGISTERED,
                format!("{reg:#x} is not a registered resource of this session"),
            )
        })?;
        if r.mapped.is_some() {
            return Err(v(
                NVENCSTATUS::NV_ENC_ERR_MAP_FAILED,
                "resource is already mapped (unmap it after its output was locked)",
            ));
        }
        r.mapped = Some(h);
        p.mappedResource = h as *mut c_void;
        p.mappedBufferFmt = r.fmt.raw();
        s.maps.insert(
            h,
            Mapped {
                reg,
                in_flight: false,
            },
        );
        Ok(ST_SUCCESS)
    })
}

pub(crate) unsafe extern "C" fn nvEncUnmapInputResource(
    enc: *mut c_void,
    mapped: nv::NV_ENC_INPUT_PTR,
) -> NVENCSTATUS {
    run("nvEncUnmapInputResource", enc, |g| {
        let s = g.sess(enc)?;
        let m = s.maps.get(&(mapped as u64)).ok_or_else(|| {
            v(
                NVENCSTATUS::NV_ENC_ERR_RESOURCE_NOT_MAPPED,
                format!("{mapped:p} is not a mapped resource of this session"),
            )
        })?;
        if m.in_flight {
            return Err(v(
                INVALID_CALL,
                "input unmapped before nvEncLockBitstream returned for its frame",
            ));
        }
        let reg = m.reg;
        s.maps.remove(&(mapped as u64));
        if let Some(r) = s.regs.get_mut(&reg) {
            r.mapped = None;
        }
        Ok(ST_SUCCESS)
    })
}
