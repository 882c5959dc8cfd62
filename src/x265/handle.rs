//! The owned libx265 encoder ([`X265Handle`]) over `nvencode-x265-sys`: all of the x265
//! backend's `unsafe` is here. Every libx265 call goes through the 8-bit `x265_api` table
//! (`x265_api_get(8)`), as `x265.h` recommends, checked once per process against the bindings.

use std::ffi::{c_char, c_int, c_void, CString};
use std::ptr::{self, NonNull};
use std::sync::OnceLock;

use super::sys;

use crate::bitstream;
use crate::encoder::mapping::x265::{X265Method, X265Params, X265Rc};
use crate::encoder::{Codec, EncoderConfig, EncoderKind};
use crate::error::Error;

/// The backend's kind, for errors.
pub(super) const KIND: EncoderKind = EncoderKind::X265;

// `x265.h`'s `X265_RC_METHODS` (ABR, CQP, CRF, in that order from 0) as the `c_int` that
// `rc.rateControlMode` is; the test below checks them against the generated bindings. Written
// out here because the documentation build (docs.rs) has no bindings to read them from.
pub(super) const RC_ABR: c_int = 0;
pub(super) const RC_CQP: c_int = 1;
pub(super) const RC_CRF: c_int = 2;

#[cfg(test)]
mod rc_methods {
    #[test]
    fn the_rate_control_methods_are_the_headers() {
        use super::{sys, RC_ABR, RC_CQP, RC_CRF};
        assert_eq!(RC_ABR as u32, sys::X265_RC_METHODS_X265_RC_ABR);
        assert_eq!(RC_CQP as u32, sys::X265_RC_METHODS_X265_RC_CQP);
        assert_eq!(RC_CRF as u32, sys::X265_RC_METHODS_X265_RC_CRF);
    }
}

/// One input picture for [`X265Handle::encode`]: three 8-bit I420 planes with their strides.
pub(super) struct Input<'a> {
    pub(super) planes: [(&'a [u8], usize); 3],
    pub(super) pts: i64,
    pub(super) frame_index: u64,
    pub(super) force_idr: bool,
}

/// One output picture from [`X265Handle::encode`].
pub(super) struct Encoded {
    pub(super) data: Vec<u8>,
    pub(super) pts: i64,
    /// Whether the access unit is an IRAP picture (with a closed GOP: an IDR).
    pub(super) keyframe: bool,
    /// `x265_picture::sliceType` (`X265_TYPE_*`).
    pub(super) slice_type: c_int,
    pub(super) frame_index: u64,
}

pub(super) fn backend_error(call: &'static str, message: impl Into<String>) -> Error {
    Error::Backend {
        backend: KIND,
        call,
        message: message.into(),
    }
}

type ParamFn = unsafe extern "C" fn(*mut sys::x265_param);
type EncoderParamFn = unsafe extern "C" fn(*mut sys::x265_encoder, *mut sys::x265_param);
type EncodeFn = unsafe extern "C" fn(
    *mut sys::x265_encoder,
    *mut *mut sys::x265_nal,
    *mut u32,
    *mut sys::x265_picture,
    *mut sys::x265_picture,
) -> c_int;

/// The entries of libx265's 8-bit API table this backend calls, each checked present.
#[derive(Debug, Clone, Copy)]
struct Api {
    param_alloc: unsafe extern "C" fn() -> *mut sys::x265_param,
    param_free: ParamFn,
    param_default_preset:
        unsafe extern "C" fn(*mut sys::x265_param, *const c_char, *const c_char) -> c_int,
    param_apply_profile: unsafe extern "C" fn(*mut sys::x265_param, *const c_char) -> c_int,
    picture_init: unsafe extern "C" fn(*mut sys::x265_param, *mut sys::x265_picture),
    encoder_open: unsafe extern "C" fn(*mut sys::x265_param) -> *mut sys::x265_encoder,
    encoder_parameters: EncoderParamFn,
    encoder_headers:
        unsafe extern "C" fn(*mut sys::x265_encoder, *mut *mut sys::x265_nal, *mut u32) -> c_int,
    encoder_encode: EncodeFn,
    encoder_close: unsafe extern "C" fn(*mut sys::x265_encoder),
}

/// libx265's 8-bit API, loaded and checked once per process.
fn api() -> Result<Api, Error> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(load_api)
        .clone()
        .map_err(|reason| Error::Unavailable {
            backend: KIND,
            reason,
        })
}

fn load_api() -> Result<Api, String> {
    // SAFETY: x265_api_get has no precondition: it returns its static table for the bit depth,
    // or null where this libx265 has no build of that depth.
    let table = unsafe { sys::x265_api_get(8) };
    // SAFETY: a non-null result points at a table in libx265's static data, initialised and
    // never written again, so a shared reference to it is valid for the whole process.
    let Some(t) = (unsafe { table.as_ref() }) else {
        return Err(
            "this libx265 has no 8-bit encoder (x265_api_get(8) returned null); the x265 \
                    backend encodes HEVC Main, 8-bit 4:2:0: install a libx265 with its 8-bit \
                    build (Debian/Ubuntu: libx265-199 or newer), or use ffmpeg-x265"
                .into(),
        );
    };
    let sizes = (
        usize::try_from(t.sizeof_param).ok(),
        usize::try_from(t.sizeof_picture).ok(),
    );
    if t.api_build_number != sys::X265_BUILD as c_int
        || t.bit_depth != 8
        || sizes
            != (
                Some(std::mem::size_of::<sys::x265_param>()),
                Some(std::mem::size_of::<sys::x265_picture>()),
            )
    {
        return Err(format!(
            "the libx265 loaded (build {}, {}-bit, x265_param {} bytes, x265_picture {} bytes) \
             is not the one nvencode was built against (build {}, 8-bit, {} and {} bytes): \
             rebuild nvencode against the installed x265.h",
            t.api_build_number,
            t.bit_depth,
            t.sizeof_param,
            t.sizeof_picture,
            sys::X265_BUILD,
            std::mem::size_of::<sys::x265_param>(),
            std::mem::size_of::<sys::x265_picture>(),
        ));
    }
    fn entry<T>(f: Option<T>, name: &str) -> Result<T, String> {
        f.ok_or_else(|| format!("libx265's API table has no {name} entry"))
    }
    Ok(Api {
        param_alloc: entry(t.param_alloc, "param_alloc")?,
        param_free: entry(t.param_free, "param_free")?,
        param_default_preset: entry(t.param_default_preset, "param_default_preset")?,
        param_apply_profile: entry(t.param_apply_profile, "param_apply_profile")?,
        picture_init: entry(t.picture_init, "picture_init")?,
        encoder_open: entry(t.encoder_open, "encoder_open")?,
        encoder_parameters: entry(t.encoder_parameters, "encoder_parameters")?,
        encoder_headers: entry(t.encoder_headers, "encoder_headers")?,
        encoder_encode: entry(t.encoder_encode, "encoder_encode")?,
        encoder_close: entry(t.encoder_close, "encoder_close")?,
    })
}

/// An `x265_param` allocated by libx265 (`param_alloc`), freed on drop.
#[derive(Debug)]
struct Param {
    api: Api,
    ptr: NonNull<sys::x265_param>,
}

impl Param {
    fn alloc(api: Api) -> Result<Param, Error> {
        // SAFETY: param_alloc has no precondition; it returns a new allocation or null.
        let ptr = unsafe { (api.param_alloc)() };
        let ptr =
            NonNull::new(ptr).ok_or_else(|| backend_error("x265_param_alloc", "out of memory"))?;
        // libx265 3.5's param_alloc does not initialise the struct; zeroed, no field is ever
        // read uninitialised (x265_encoder_parameters, for one, copies field by field).
        // SAFETY: `ptr` is a fresh allocation of one x265_param (`load_api` checked that the
        // library's size is the bindings'), and all-zero bytes are a valid x265_param.
        unsafe { ptr.as_ptr().write_bytes(0, 1) };
        Ok(Param { api, ptr })
    }

    fn get(&mut self) -> &mut sys::x265_param {
        // SAFETY: `ptr` is a live allocation of one x265_param owned by `self` (from param_alloc
        // and filled by param_default_preset or encoder_parameters before any read), reachable
        // only through `&mut self`.
        unsafe { self.ptr.as_mut() }
    }
}

impl Drop for Param {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from param_alloc of the same table and is freed once, here. It
        // holds no zones, which is all param_free releases besides the struct.
        unsafe { (self.api.param_free)(self.ptr.as_ptr()) };
    }
}

/// The owned `x265_encoder`: the thin unsafe layer over libx265.
#[derive(Debug)]
pub(super) struct X265Handle {
    api: Api,
    encoder: NonNull<sys::x265_encoder>,
    /// The parameters the encoder was opened with, which `picture_init` reads.
    param: Param,
    /// The `numaPools` string `param` points at, kept as long as `param` (libx265 copied it).
    _pools: Option<CString>,
}

// SAFETY: an x265_encoder may be used from any thread as long as calls on it are not concurrent
// (libx265's own threads synchronise with the calling thread inside each call); the handle and
// its parameters are owned and only reachable through `&mut self`, so `X265Handle` is `Send` but
// not `Sync`. The API table is immutable static data.
unsafe impl Send for X265Handle {}

impl X265Handle {
    /// Opens libx265 for `config` with the mapped `params`: HEVC Main, 8-bit I420, Annex B with
    /// VPS/SPS/PPS before every IDR, a closed GOP, libx265's log at error level only.
    pub(super) fn open(config: &EncoderConfig, params: &X265Params) -> Result<X265Handle, Error> {
        let api = api()?;
        let mut param = Param::alloc(api)?;
        let preset = CString::new(params.preset)
            .map_err(|_| backend_error("x265_param_default_preset", "preset name has a NUL"))?;
        let tune = params
            .tune
            .map(CString::new)
            .transpose()
            .map_err(|_| backend_error("x265_param_default_preset", "tune name has a NUL"))?;
        // SAFETY: `param` is a writable x265_param from param_alloc; `preset` and `tune` are
        // NUL-terminated strings alive for the call (libx265 only compares them).
        let rc = unsafe {
            (api.param_default_preset)(
                param.get(),
                preset.as_ptr(),
                tune.as_ref().map_or(ptr::null(), |t| t.as_ptr()),
            )
        };
        if rc < 0 {
            return Err(backend_error(
                "x265_param_default_preset",
                format!(
                    "libx265 rejected preset {:?} with tune {:?}",
                    params.preset, params.tune
                ),
            ));
        }
        let pools = params
            .pool_threads
            .map(|n| CString::new(n.to_string()))
            .transpose()
            .map_err(|_| backend_error("x265_encoder_open", "pool size has a NUL"))?;
        let side = config.resolution.width.min(config.resolution.height);
        if side < 16 {
            return Err(backend_error(
                "x265_encoder_open",
                format!(
                    "libx265 encodes pictures of at least 16x16 (its smallest coding tree \
                     unit); this stream is {}",
                    config.resolution
                ),
            ));
        }
        {
            let p = param.get();
            // libx265 has no log callback: it writes to stderr. Only its errors are let through,
            // each of which also fails the call it happens in, which returns a typed error.
            p.logLevel = sys::X265_LOG_ERROR as c_int;
            // Sizes and counts were range-checked by `validate`, so the casts are lossless.
            p.sourceWidth = config.resolution.width as c_int;
            p.sourceHeight = config.resolution.height as c_int;
            p.internalCsp = sys::X265_CSP_I420 as c_int;
            p.fpsNum = config.frame_rate.num;
            p.fpsDenom = config.frame_rate.den;
            p.keyframeMax = params.keyframe_max.min(c_int::MAX as u32) as c_int;
            p.bOpenGOP = 0;
            if let Some(bframes) = params.bframes {
                p.bframes = bframes as c_int;
            }
            if let Some(pools) = &pools {
                p.numaPools = pools.as_ptr();
            }
            p.bRepeatHeaders = 1;
            p.bAnnexB = 1;
            apply_rate_control(p, &params.rc);
            // A picture must hold one coding tree unit ("Picture size must be at least one
            // CTU"): the preset's CTU (64 or 32) shrinks to fit a small picture, down to 16, the
            // smallest HEVC allows, with the transform size within it.
            while p.maxCUSize > 16 && p.maxCUSize > side {
                p.maxCUSize /= 2;
            }
            p.maxTUSize = p.maxTUSize.min(p.maxCUSize);
            p.minCUSize = p.minCUSize.min(p.maxCUSize);
            // The transform quadtree fits the CTU: at most log2(CTU) - 2 + 1 levels down to 4x4.
            let tu_depth = p.maxCUSize.max(4).ilog2() - 1;
            p.tuQTMaxInterDepth = p.tuQTMaxInterDepth.min(tu_depth);
            p.tuQTMaxIntraDepth = p.tuQTMaxIntraDepth.min(tu_depth);
        }
        let main = c"main";
        // SAFETY: `param` is a complete x265_param; `main` is a NUL-terminated static string.
        let rc = unsafe { (api.param_apply_profile)(param.get(), main.as_ptr()) };
        if rc < 0 {
            return Err(backend_error(
                "x265_param_apply_profile",
                "libx265 cannot encode the Main profile with these settings",
            ));
        }
        // SAFETY: `param` is a complete x265_param, its `numaPools` null or pointing at `pools`,
        // alive; libx265 copies the parameters and the string.
        let encoder = unsafe { (api.encoder_open)(param.get()) };
        let encoder = NonNull::new(encoder).ok_or_else(|| {
            backend_error(
                "x265_encoder_open",
                format!(
                    "libx265 refused the parameters ({}x{} at {}, preset {}, rate control {:?}); \
                     its error line on stderr says which",
                    config.resolution.width,
                    config.resolution.height,
                    config.frame_rate,
                    params.preset,
                    params.rc
                ),
            )
        })?;
        Ok(X265Handle {
            api,
            encoder,
            param,
            _pools: pools,
        })
    }

    /// A copy of the encoder's current parameters (`x265_encoder_parameters`). libx265 duplicates
    /// the `numaPools` string into the copy and has no call that frees it: a few bytes per call
    /// where a thread count is set (once per encoder, at open).
    fn parameters(&mut self) -> Result<Param, Error> {
        let mut param = Param::alloc(self.api)?;
        // SAFETY: the encoder is live and owned by `self`; `param` is a writable x265_param,
        // which the call overwrites whole (its pointers then point at the encoder's own data,
        // which param_free does not free).
        unsafe { (self.api.encoder_parameters)(self.encoder.as_ptr(), param.get()) };
        Ok(param)
    }

    /// The B-frames the open encoder uses (after its preset, tune and checks), and its
    /// reordering delay in frames: libx265's `m_bframeDelay`, 2 with a B-pyramid, 1 with plain
    /// B-frames, 0 without (x265 3.5, `Encoder::configure`).
    pub(super) fn reordering(&mut self) -> Result<(u32, usize), Error> {
        let mut param = self.parameters()?;
        let p = param.get();
        let bframes = u32::try_from(p.bframes).unwrap_or(0);
        let delay = match (bframes, p.bBPyramid) {
            (0, _) => 0,
            (_, 0) => 1,
            _ => 2,
        };
        Ok((bframes, delay))
    }

    /// The VPS, SPS and PPS NAL units, with start codes.
    pub(super) fn sequence_headers(&mut self) -> Result<Vec<u8>, Error> {
        let mut nals: *mut sys::x265_nal = ptr::null_mut();
        let mut count: u32 = 0;
        // SAFETY: the encoder is live and owned by `self`; the out-pointers are valid.
        let rc =
            unsafe { (self.api.encoder_headers)(self.encoder.as_ptr(), &mut nals, &mut count) };
        if rc < 0 || nals.is_null() {
            return Err(backend_error(
                "x265_encoder_headers",
                format!("returned {rc}"),
            ));
        }
        let mut all = Vec::new();
        // SAFETY: on success libx265 returned `count` NAL descriptors at `nals`, valid until the
        // next call on this encoder.
        for nal in unsafe { nal_slice(nals, count) } {
            // SAFETY: each descriptor's payload is `sizeBytes` bytes at `payload` (start code
            // included), owned by the encoder and valid until its next call.
            all.extend_from_slice(unsafe { payload(nal) });
        }
        // x265's settings SEI, also among them, is left out.
        Ok(bitstream::parameter_sets(Codec::Hevc, &all))
    }

    /// Encodes one picture, or drains one delayed picture with `None` (after which every call
    /// must be a drain: libx265's rule).
    pub(super) fn encode(&mut self, input: Option<Input<'_>>) -> Result<Option<Encoded>, Error> {
        // SAFETY: x265_picture is a plain C struct (integers, floats, nullable pointers), for
        // which all-zero bytes are valid; picture_init then sets its defaults.
        let mut pic_in: sys::x265_picture = unsafe { std::mem::zeroed() };
        // SAFETY: as above; libx265 fills the output picture.
        let mut pic_out: sys::x265_picture = unsafe { std::mem::zeroed() };
        let pic_in_ptr = match &input {
            Some(input) => {
                // SAFETY: `param` is the complete parameter set the encoder was opened with;
                // `pic_in` is a writable x265_picture.
                unsafe { (self.api.picture_init)(self.param.get(), &mut pic_in) };
                for (k, (plane, stride)) in input.planes.iter().enumerate() {
                    // libx265 only reads input planes (it copies them into its own frames).
                    pic_in.planes[k] = plane.as_ptr().cast_mut().cast::<c_void>();
                    pic_in.stride[k] = c_int::try_from(*stride).unwrap_or(c_int::MAX);
                }
                pic_in.bitDepth = 8;
                pic_in.colorSpace = sys::X265_CSP_I420 as c_int;
                pic_in.pts = input.pts;
                pic_in.sliceType = if input.force_idr {
                    sys::X265_TYPE_IDR as c_int
                } else {
                    sys::X265_TYPE_AUTO as c_int
                };
                // Returned with the same picture on output; identifies the input frame.
                pic_in.userData = input.frame_index as usize as *mut c_void;
                &mut pic_in as *mut sys::x265_picture
            }
            None => ptr::null_mut(),
        };
        let mut nals: *mut sys::x265_nal = ptr::null_mut();
        let mut count: u32 = 0;
        // SAFETY: the encoder is live and owned by `self`; `pic_in_ptr` is null or points at an
        // initialised picture whose planes borrow `input`'s slices, each holding `stride` times
        // its rows bytes (the caller's layout) and alive for this call (libx265 copies the
        // pixels before returning); the out-pointers are valid for writes.
        let ret = unsafe {
            (self.api.encoder_encode)(
                self.encoder.as_ptr(),
                &mut nals,
                &mut count,
                pic_in_ptr,
                &mut pic_out,
            )
        };
        if ret < 0 {
            return Err(backend_error(
                "x265_encoder_encode",
                format!("returned {ret} (its error line on stderr says why)"),
            ));
        }
        if ret == 0 || count == 0 || nals.is_null() {
            return Ok(None);
        }
        let mut data = Vec::new();
        // SAFETY: with a picture out, `nals` points at `count` initialised NAL descriptors owned
        // by the encoder, valid until its next call.
        for nal in unsafe { nal_slice(nals, count) } {
            // SAFETY: each descriptor's payload is `sizeBytes` bytes at `payload` (start code
            // included, Annex B), owned by the encoder and valid until its next call; it is
            // copied out here.
            data.extend_from_slice(unsafe { payload(nal) });
        }
        Ok(Some(Encoded {
            keyframe: bitstream::is_keyframe(Codec::Hevc, &data),
            data,
            pts: pic_out.pts,
            slice_type: pic_out.sliceType,
            frame_index: pic_out.userData as usize as u64,
        }))
    }
}

impl Drop for X265Handle {
    fn drop(&mut self) {
        // SAFETY: the encoder is live, owned by `self` and never used after this; `param` (and
        // the pools string) are dropped after it, as the fields' order says.
        unsafe { (self.api.encoder_close)(self.encoder.as_ptr()) };
    }
}

/// The NAL descriptors libx265 returned.
///
/// # Safety
/// `nals` must be null or point at `count` initialised descriptors that stay valid (unchanged)
/// for the returned lifetime.
unsafe fn nal_slice<'a>(nals: *const sys::x265_nal, count: u32) -> &'a [sys::x265_nal] {
    if nals.is_null() {
        return &[];
    }
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(nals, count as usize) }
}

/// A NAL's payload bytes.
///
/// # Safety
/// `nal.payload` must be null or point at `nal.sizeBytes` initialised bytes that stay valid for
/// the returned lifetime.
unsafe fn payload(nal: &sys::x265_nal) -> &[u8] {
    if nal.payload.is_null() {
        return &[];
    }
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(nal.payload, nal.sizeBytes as usize) }
}

/// Writes the rate-control fields of `param` (the mapping itself is `mapping::x265::x265_rc`).
fn apply_rate_control(param: &mut sys::x265_param, rc: &X265Rc) {
    // Values come from a validated configuration: rates and buffers fit in c_int kbit.
    let int = |v: u32| c_int::try_from(v).unwrap_or(c_int::MAX);
    match rc.method {
        X265Method::Crf(crf) => {
            param.rc.rateControlMode = RC_CRF;
            param.rc.rfConstant = f64::from(crf);
        }
        X265Method::Cqp(qp) => {
            param.rc.rateControlMode = RC_CQP;
            param.rc.qp = c_int::from(qp);
        }
        X265Method::Abr => {
            param.rc.rateControlMode = RC_ABR;
            param.rc.bitrate = int(rc.bitrate_kbps);
        }
    }
    param.rc.vbvMaxBitrate = int(rc.vbv_max_kbps);
    param.rc.vbvBufferSize = int(rc.vbv_buffer_kbit);
}

#[cfg(test)]
mod tests {
    use super::*;

    impl X265Handle {
        /// The encoder's current rate control: (mode, bitrate, vbv max, vbv buffer, crf, qp).
        pub(in crate::x265) fn rate_control(&mut self) -> (c_int, c_int, c_int, c_int, f64, c_int) {
            let mut param = self.parameters().unwrap();
            let p = param.get();
            (
                p.rc.rateControlMode,
                p.rc.bitrate,
                p.rc.vbvMaxBitrate,
                p.rc.vbvBufferSize,
                p.rc.rfConstant,
                p.rc.qp,
            )
        }

        /// The encoder's GOP: (keyframeMax, keyframeMin, bOpenGOP, bRepeatHeaders).
        pub(in crate::x265) fn gop(&mut self) -> (c_int, c_int, c_int, c_int) {
            let mut param = self.parameters().unwrap();
            let p = param.get();
            (p.keyframeMax, p.keyframeMin, p.bOpenGOP, p.bRepeatHeaders)
        }
    }

    #[test]
    fn the_8bit_api_loads_and_matches_the_bindings() {
        api().unwrap();
    }
}
