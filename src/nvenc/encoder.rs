//! [`NvencEncoder`]: an NVENC session on CUDA surfaces that are slots of the frame ring.
//!
//! # The data path
//! A host frame is copied into a slot of a small pinned ring (page-locked, so the upload is a
//! direct DMA), then copied asynchronously on the encoder's CUDA stream into the next free slot
//! of the device ring, whose surfaces (`cuMemAllocPitch`) were registered with NVENC once, at
//! open. NVENC's input processing runs on the same stream (`nvEncSetIOCudaStreams`), so it is
//! ordered after the upload without a host wait. A frame already in device memory is copied
//! device-to-device into the surface, with no host copy.
//!
//! Several frames are in flight: each submitted picture keeps its device slot, its staging slot,
//! its mapping and its output buffer until its bitstream has been read back. Outputs are read in
//! submission order, `extra_output_delay` frames behind the newest, so upload, encode and
//! read-back overlap (Linux has synchronous mode only: `nvEncLockBitstream` waits).
//!
//! # Teardown
//! In the order the API requires, on every path (flush, error, drop, unwinding): end of stream,
//! read back or discard pending outputs, unmap, unregister, destroy bitstream buffers, destroy
//! the session, free the surfaces, release the CUDA context. A surface whose unmap failed is
//! retired (never mapped again); its unmap is tried again at teardown.
//!
//! # Errors and hangs
//! An `Err` from [`VideoEncoder::encode`] means the frame was not accepted (see the contract in
//! [`crate::encoder`]). A driver failure after which the session's state is unknown (a failed
//! read-back or submission, end of stream refused) fails the encoder: every later `encode` and
//! `flush` returns an error, and frames not yet read back never come out of it
//! ([`crate::FallbackEncoder`] replays them on the next encoder).
//!
//! `nvEncEncodePicture` and `nvEncLockBitstream` may block forever when the driver or GPU is
//! wedged (Linux has synchronous mode only). They run on a worker thread of the encoder and the
//! caller waits at most [`NvencOptions::call_deadline`]; a call that does not return by then
//! fails the encoder with [`Error::Hung`] naming it. Nothing may be destroyed while a call is
//! inside the driver, so a hung encoder, when dropped, leaves behind: the NVENC session with its
//! registrations, mappings and bitstream buffers, the device surfaces and pinned staging slots
//! of its rings (about `slots * 2.5` frames of memory), its CUDA stream and a reference to the
//! CUDA context, and the blocked worker thread. If the call ever returns, the worker tears all
//! of it down in the order above and exits; otherwise it stays until the process exits.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::mem::ManuallyDrop;

use nvenc_sys as sys;

use super::api::{
    BitstreamBuffer, CallError, LateEnd, Mapped, PictureInput, RawEncoder, Registered, Submitted,
};
use super::options::{NvencOptions, NvencPreset, NvencTuning};
use super::NvencError;
use crate::cuda::{self, Context as CudaContext, Stream as CudaStream};
use crate::encoder::mapping::{self, NvencRc, NvencRcMode};
use crate::encoder::{
    DtsQueue, EncodedChunk, EncoderConfig, EncoderKind, Frame, FrameType, InputGate, PixelFormat,
    RateControl, SlotFrame, VideoEncoder,
};
use crate::error::Error;
use crate::ring_buffer::{
    Consumer, DeviceSurface, EncoderDepth, FrameMeta, FrameRing, Producer, ReadSlot,
};
use crate::ring_buffer::{DeviceStorage, PinnedStorage};

const KIND: EncoderKind = EncoderKind::Nvenc;

/// A frame that is already in CUDA device memory, in the encoder's context: tightly laid out
/// planes of the configured pixel format with rows `pitch` bytes apart (for I420 the chroma
/// planes have pitch `pitch / 2`, as NVENC's IYUV layout has).
#[derive(Debug, Clone, Copy)]
pub struct DeviceFrame {
    /// Device address of the first luma row (`CUdeviceptr`).
    pub device_ptr: u64,
    /// Bytes between luma rows; at least the width, and even for I420.
    pub pitch: usize,
    /// Presentation timestamp, as [`Frame::pts`].
    pub pts: Option<i64>,
    /// Make this frame an IDR keyframe.
    pub force_keyframe: bool,
}

/// A `CUstream` handle in a box, so the address given to `nvEncSetIOCudaStreams` stays put.
struct IoStream(Box<sys::NV_ENC_CUSTREAM_PTR>);

// SAFETY: the box holds an opaque CUDA stream handle that this crate never dereferences; CUDA
// stream handles may be used from any thread, and the encoder owning it is not `Sync`.
unsafe impl Send for IoStream {}

/// The init params and config the session runs with: `nvEncReconfigureEncoder` takes a full
/// copy of them with the changed fields (API.h, `NV_ENC_RECONFIGURE_PARAMS::reInitEncodeParams`).
/// `params.encodeConfig` is null here and pointed at a copy of `config` for each call.
struct InitState {
    params: sys::NV_ENC_INITIALIZE_PARAMS,
    config: Box<sys::NV_ENC_CONFIG>,
}

// SAFETY: both structs are plain data; their only pointers are `encodeConfig` (kept null),
// `privData` and the reserved arrays (null, as the API requires), so nothing is shared with
// another thread by moving them.
unsafe impl Send for InitState {}

/// Writes the rate-control fields of an NVENC config (the mapping itself is `mapping::nvenc`).
fn apply_rate_control(enc: &mut sys::NV_ENC_CONFIG, rc: &NvencRc) {
    let rcp = &mut enc.rcParams;
    rcp.rateControlMode = match rc.mode {
        NvencRcMode::ConstQp => sys::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_CONSTQP,
        NvencRcMode::Vbr => sys::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_VBR,
        NvencRcMode::Cbr => sys::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_CBR,
    };
    rcp.averageBitRate = rc.average_bps;
    rcp.maxBitRate = rc.max_bps;
    rcp.vbvBufferSize = rc.vbv_buffer_bits;
    rcp.vbvInitialDelay = rc.vbv_initial_delay_bits;
    rcp.targetQuality = rc.target_quality;
    rcp.targetQualityLSB = 0;
    // In the other modes constQP is the rate control's initial QP (API.h): the preset's stays.
    if rc.mode == NvencRcMode::ConstQp {
        let qp = u32::from(rc.const_qp);
        rcp.constQP = sys::NV_ENC_QP {
            qpInterP: qp,
            qpInterB: qp,
            qpIntra: qp,
        };
    }
}

/// Where a host frame is uploaded from: a slot of the encoder's own pinned staging ring (the
/// frame was copied there), or the caller's ring slot (no copy).
enum Staged {
    Own(ReadSlot<PinnedStorage>),
    Caller(SlotFrame),
}

impl Staged {
    fn bytes(&self) -> &[u8] {
        match self {
            Staged::Own(slot) => slot,
            Staged::Caller(slot) => slot.data(),
        }
    }
}

/// One picture between submission and read-back.
struct InFlight {
    /// Held for its `Drop`: the surface goes back to the ring when the picture is read back.
    #[allow(dead_code)]
    device: ReadSlot<DeviceStorage>,
    /// Held for its `Drop`: the staging slot must not be rewritten before the upload ran.
    #[allow(dead_code)]
    staging: Option<Staged>,
    mapped: Option<Mapped>,
    output: Option<BitstreamBuffer>,
    frame_index: u64,
}

/// The direct NVENC encoder. See the [module docs](self).
///
/// # Errors and hangs
/// An `Err` from `encode` means the frame was not accepted. A driver failure after which the
/// session's state is unknown fails the encoder: later calls return an error and frames not yet
/// read back never come out ([`crate::FallbackEncoder`] replays them elsewhere).
///
/// `nvEncEncodePicture` and `nvEncLockBitstream` run on a worker thread of the encoder, each
/// awaited at most [`NvencOptions::call_deadline`]; one that does not return fails the encoder
/// with [`Error::Hung`] naming the call. A session cannot be destroyed while a call is inside
/// it, so a hung encoder, when dropped, leaves behind until the call returns (then the worker
/// tears it all down in order) or the process exits: the NVENC session with its registrations,
/// mappings and bitstream buffers, the device surfaces and pinned staging slots of its rings,
/// its CUDA stream, a reference to the CUDA context, and the blocked worker thread.
pub struct NvencEncoder {
    // Field order is drop order, and `Drop` tears the session down first; what remains must go
    // in this order: session, surfaces and rings, stream, context. The rings and the stream
    // handle are dropped by `Drop` itself, or, when a driver call hung, handed with the session
    // to the watchdog (see the module docs).
    session: Option<Session>,
    device_in: ManuallyDrop<Producer<DeviceStorage>>,
    device_out: ManuallyDrop<Consumer<DeviceStorage>>,
    staging_in: ManuallyDrop<Producer<PinnedStorage>>,
    staging_out: ManuallyDrop<Consumer<PinnedStorage>>,
    /// The stream handle whose address was given to `nvEncSetIOCudaStreams`; held so that the
    /// address stays valid for the session.
    io_stream: ManuallyDrop<IoStream>,
    stream: CudaStream,
    context: CudaContext,
    config: EncoderConfig,
    gate: InputGate,
    headers: Vec<u8>,
    /// What the session was initialized with, for reconfiguration.
    init: InitState,
    extra_output_delay: usize,
    /// Decoding timestamps, from the input timestamps shifted by the B-frame delay.
    dts: DtsQueue,
    /// `(frame_index, pts)` of every submitted frame not yet read back.
    unread: VecDeque<(u64, i64)>,
    chunks_out: u64,
    /// The failure that ended this encoder, as `(call, what happened)`: every later `encode` and
    /// `flush` reports it (see the module docs).
    failed: Option<(&'static str, String)>,
    /// Set in `Drop`, and declared last so it drops last: once the stream and context fields
    /// (which cudarc releases by making their context current) are gone, the caller's context
    /// is current again.
    callers_context: Option<cuda::SavedContext>,
}

impl std::fmt::Debug for NvencEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvencEncoder")
            .field("config", &self.config)
            .field("in_flight", &self.session.as_ref().map(|s| s.pending.len()))
            .finish_non_exhaustive()
    }
}

/// The NVENC session and everything registered with or created by it.
struct Session {
    raw: RawEncoder,
    /// One registration per device-ring slot, by slot index.
    registered: Vec<Option<Registered>>,
    free_outputs: Vec<BitstreamBuffer>,
    pending: VecDeque<InFlight>,
    /// How many of `pending` (from the front) have output ready to lock.
    ready: usize,
    /// The most pictures that were submitted and not yet read back at once.
    peak_in_flight: usize,
    /// Mappings whose unmap failed, with their surface's slot index: the surface is never
    /// mapped again (it still is; mapping it again would fail), and the unmap is tried again at
    /// teardown.
    retired: Vec<(Mapped, usize)>,
    /// Which call hung, if one did: what its picture is to `pending`.
    hung_at: Option<HungAt>,
}

/// The call that hung, as it concerns `Session::pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HungAt {
    /// The read-back of the oldest pending picture (`pending.front()`).
    Front,
    /// The submission of the newest one (`pending.back()`), whose outcome is unknown.
    Back,
    /// The end of stream; no picture of its own.
    EndOfStream,
}

fn nvenc_err(e: NvencError) -> Error {
    Error::Nvenc(e)
}

fn call_err(e: CallError) -> Error {
    match e {
        CallError::Failed(e) => Error::Nvenc(e),
        CallError::Hung(hung) => Error::Hung {
            backend: KIND,
            call: hung.call,
            deadline: hung.deadline,
        },
    }
}

/// A missing CUDA driver makes NVENC unavailable; any other CUDA failure (out of memory, a
/// failed copy) is an error of this encoder, which may not recur.
fn ring_err(e: impl Into<crate::ring_buffer::RingError>) -> Error {
    match e.into() {
        e @ crate::ring_buffer::RingError::CudaUnavailable { .. } => Error::Unavailable {
            backend: KIND,
            reason: e.to_string(),
        },
        other => Error::Backend {
            backend: KIND,
            call: "CUDA",
            message: other.to_string(),
        },
    }
}

impl NvencEncoder {
    /// Opens NVENC on CUDA device 0 with default [`NvencOptions`].
    ///
    /// # Errors
    /// As [`NvencEncoder::with_options`].
    pub fn new(config: &EncoderConfig) -> Result<Self, Error> {
        Self::with_options(config, &NvencOptions::default())
    }

    /// Opens NVENC for `config`.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration; [`Error::NvencLoad`] when the driver's
    /// library cannot be loaded; [`Error::Unavailable`] without a CUDA driver or device;
    /// [`Error::NvencCapability`] when the GPU lacks something the configuration needs;
    /// [`Error::Nvenc`] when a call fails (see [`NvencError::kind`]: no encode device, likely
    /// session limit, ...).
    pub fn with_options(config: &EncoderConfig, options: &NvencOptions) -> Result<Self, Error> {
        let gate = InputGate::new(KIND, config)?;
        let library = nvenc_sys::load()?;
        // cudarc makes the contexts it creates current; the caller's comes back when this drops.
        let _callers = cuda::save_current().map_err(ring_err)?;
        let context = CudaContext::open(options.device).map_err(ring_err)?;
        let stream = context.new_stream().map_err(|e| Error::Unavailable {
            backend: KIND,
            reason: e.to_string(),
        })?;

        let preset = options
            .preset
            .unwrap_or_else(|| NvencPreset::from_preset(config.preset));
        let tuning = options
            .tuning
            .unwrap_or_else(|| NvencTuning::from_tune(config.tune));
        let zero_latency = config.tune == Some(crate::Tune::Zerolatency);
        let (width, height) = (config.resolution.width, config.resolution.height);
        let format = match config.pixel_format {
            PixelFormat::Nv12 => sys::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_NV12,
            _ => sys::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_IYUV,
        };

        // Current for the whole open; the caller's context comes back when this drops.
        let _context = context.push().map_err(ring_err)?;
        // SAFETY: the context is live and is kept (in `NvencEncoder::context`) until after the
        // session is destroyed.
        let raw = unsafe { RawEncoder::open(library, context.raw()) }.map_err(nvenc_err)?;

        let codec = sys::NV_ENC_CODEC_H264_GUID;
        let guids = raw.encode_guids().map_err(nvenc_err)?;
        if !guids.iter().any(|g| guid_eq(g, &codec)) {
            return Err(Error::NvencCapability {
                cap: "H.264 encode GUID",
                value: 0,
                required: 1,
            });
        }
        let formats = raw.input_formats(codec).map_err(nvenc_err)?;
        if !formats.contains(&format) {
            return Err(Error::NvencCapability {
                cap: "input format (nvEncGetInputFormats)",
                value: 0,
                required: 1,
            });
        }
        let cap = |c, name| raw.cap(codec, c).map(|v| (name, v)).map_err(nvenc_err);
        // (cap, its name, the size it bounds, whether it is a maximum)
        let limits = [
            (
                sys::NV_ENC_CAPS::NV_ENC_CAPS_WIDTH_MAX,
                "NV_ENC_CAPS_WIDTH_MAX",
                width,
                true,
            ),
            (
                sys::NV_ENC_CAPS::NV_ENC_CAPS_HEIGHT_MAX,
                "NV_ENC_CAPS_HEIGHT_MAX",
                height,
                true,
            ),
            (
                sys::NV_ENC_CAPS::NV_ENC_CAPS_WIDTH_MIN,
                "NV_ENC_CAPS_WIDTH_MIN",
                width,
                false,
            ),
            (
                sys::NV_ENC_CAPS::NV_ENC_CAPS_HEIGHT_MIN,
                "NV_ENC_CAPS_HEIGHT_MIN",
                height,
                false,
            ),
        ];
        for (c, name, size, is_max) in limits {
            let (name, value) = cap(c, name)?;
            if is_max {
                require_at_least(name, value, size)?;
            } else {
                require_at_most(name, value, size)?;
            }
        }

        if tuning == NvencTuning::Lossless {
            let (name, lossless) = cap(
                sys::NV_ENC_CAPS::NV_ENC_CAPS_SUPPORT_LOSSLESS_ENCODE,
                "NV_ENC_CAPS_SUPPORT_LOSSLESS_ENCODE",
            )?;
            require_at_least(name, lossless, 1)?;
        }

        let mut preset_config = raw
            .preset_config(codec, preset.guid(), tuning.raw())
            .map_err(nvenc_err)?;
        let enc = &mut preset_config.presetCfg;
        enc.gopLength = config.gop_size;
        let bframes = if zero_latency {
            Some(0)
        } else {
            config.bframes
        };
        if let Some(b) = bframes {
            enc.frameIntervalP = b as i32 + 1;
        }
        let frame_interval_p = enc.frameIntervalP.max(1) as u32;
        if frame_interval_p > 1 {
            let (name, max_b) = cap(
                sys::NV_ENC_CAPS::NV_ENC_CAPS_NUM_MAX_BFRAMES,
                "NV_ENC_CAPS_NUM_MAX_BFRAMES",
            )?;
            require_at_least(name, max_b, frame_interval_p - 1)?;
        }
        apply_rate_control(enc, &mapping::nvenc(config));
        // No lookahead: it would need more surfaces in flight and is what other wrappers found
        // to lose frames and deadlock at end of stream when the ring was sized without it.
        enc.rcParams.set_enableLookahead(0);
        enc.rcParams.lookaheadDepth = 0;
        // SAFETY: `h264Config` is the active member of the codec-config union for the H.264
        // codec GUID, which is the only codec this backend opens.
        let h264 = unsafe { &mut enc.encodeCodecConfig.h264Config };
        h264.idrPeriod = config.gop_size;
        h264.set_repeatSPSPPS(1);
        if tuning == NvencTuning::Lossless {
            // The header's recipe for lossless (nvEncodeAPI.h 11.1, qpPrimeYZeroTransformBypassFlag):
            // transform bypass, constant QP 0, High 4:4:4 Predictive; a quality target would
            // make the stream lossy again.
            h264.set_qpPrimeYZeroTransformBypassFlag(1);
            enc.rcParams.rateControlMode = sys::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_CONSTQP;
            enc.rcParams.targetQuality = 0;
            enc.rcParams.constQP = sys::NV_ENC_QP {
                qpInterP: 0,
                qpInterB: 0,
                qpIntra: 0,
            };
            enc.profileGUID = sys::NV_ENC_H264_PROFILE_HIGH_444_GUID;
        }

        let mut init = sys::NV_ENC_INITIALIZE_PARAMS {
            version: sys::NV_ENC_INITIALIZE_PARAMS_VER,
            encodeGUID: codec,
            presetGUID: preset.guid(),
            encodeWidth: width,
            encodeHeight: height,
            darWidth: width,
            darHeight: height,
            frameRateNum: config.frame_rate.num,
            frameRateDen: config.frame_rate.den,
            enableEncodeAsync: 0,
            enablePTD: 1,
            encodeConfig: enc,
            maxEncodeWidth: width,
            maxEncodeHeight: height,
            tuningInfo: tuning.raw(),
            ..Default::default()
        };
        raw.initialize(&mut init).map_err(nvenc_err)?;
        // Kept for nvEncReconfigureEncoder, which takes a full copy of these.
        init.encodeConfig = std::ptr::null_mut();
        let init_state = InitState {
            params: init,
            config: Box::new(*enc),
        };

        // Ring sizing: every picture held for reordering, plus the output delay, plus the one
        // being submitted.
        // Zero latency means every frame's output is read back in the call that submitted it.
        let extra_output_delay = if zero_latency {
            0
        } else {
            options.extra_output_delay
        };
        let depth = EncoderDepth {
            frame_interval_p,
            lookahead: 0,
            extra_output_delay: extra_output_delay + 1,
        };
        let extra_output_delay = extra_output_delay as usize;
        let slots = crate::ring_buffer::required_slots(depth);
        let rows = height as usize * 3 / 2;
        let device = DeviceStorage::new(&context, slots, width as usize, rows).map_err(ring_err)?;
        let staging_len = gate_frame_len(config)?;
        let pinned = PinnedStorage::new(&context, slots, staging_len).map_err(ring_err)?;
        let mut session = Session {
            raw,
            registered: Vec::with_capacity(slots),
            free_outputs: Vec::with_capacity(slots),
            pending: VecDeque::new(),
            ready: 0,
            peak_in_flight: 0,
            retired: Vec::new(),
            hung_at: None,
        };
        let deadline = options.call_deadline(config.frame_rate);
        session
            .raw
            .start_watchdog(deadline, context.clone())
            .map_err(|e| Error::Backend {
                backend: KIND,
                call: "std::thread::spawn",
                message: format!("cannot start the NVENC watchdog thread: {e}"),
            })?;
        let headers = session.raw.sequence_params().map_err(call_err)?;
        for index in 0..slots {
            let surface = crate::ring_buffer::DeviceSlots::surface(&device, index);
            let pitch = pitch_u32(surface.pitch)?;
            // SAFETY: the surface is a live `cuMemAllocPitch` allocation of `pitch * rows` bytes
            // owned by `device`, which outlives the session (field order of `NvencEncoder`), and
            // every registration is undone in `Session::teardown` before the session goes.
            let reg = unsafe {
                session
                    .raw
                    .register_cuda(surface.device_ptr, width, height, pitch, format)
            };
            // On an error `session` drops here, which undoes what was done so far.
            session.registered.push(Some(reg.map_err(nvenc_err)?));
            let output = session.raw.create_bitstream_buffer().map_err(nvenc_err)?;
            session.free_outputs.push(output);
        }
        let mut io_stream = IoStream(Box::new(stream.raw()));
        let io_ptr: *mut sys::NV_ENC_CUSTREAM_PTR = &mut *io_stream.0;
        // SAFETY: `io_stream` holds the live CUstream of `stream`, both kept in the encoder for
        // the life of the session, and the box keeps the address fixed.
        // On an error `session` drops, undoing the registrations.
        unsafe { session.raw.set_io_cuda_streams(io_ptr.cast::<c_void>()) }.map_err(nvenc_err)?;
        let (device_in, device_out) = FrameRing::for_encoder(device, depth).map_err(ring_err)?;
        let (staging_in, staging_out) = FrameRing::with_storage(pinned).map_err(ring_err)?;
        tracing::debug!(
            %preset, %tuning, width, height, format = %config.pixel_format,
            frame_interval_p, slots, "opened NVENC session"
        );
        Ok(NvencEncoder {
            session: Some(session),
            device_in: ManuallyDrop::new(device_in),
            device_out: ManuallyDrop::new(device_out),
            staging_in: ManuallyDrop::new(staging_in),
            staging_out: ManuallyDrop::new(staging_out),
            io_stream: ManuallyDrop::new(io_stream),
            stream,
            context,
            config: config.clone(),
            gate,
            headers,
            init: init_state,
            extra_output_delay,
            dts: DtsQueue::new(frame_interval_p as usize - 1),
            unread: VecDeque::new(),
            chunks_out: 0,
            failed: None,
            callers_context: None,
        })
    }

    /// Waits until every copy queued on the encoder's CUDA stream has run: after this, the
    /// source of a [`DeviceFrame`] given to [`NvencEncoder::encode_device`] may be reused.
    ///
    /// # Errors
    /// [`Error::Backend`] naming `cuStreamSynchronize` when the driver reports a failure of the
    /// stream (a failed copy, a lost device). This encoder failed; NVENC as such may still work.
    pub fn synchronize(&self) -> Result<(), Error> {
        self.stream.synchronize().map_err(|e| Error::Backend {
            backend: KIND,
            call: "cuStreamSynchronize",
            message: e.to_string(),
        })
    }

    /// Frames submitted to NVENC whose bitstream has not been read back yet.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.session.as_ref().map_or(0, |s| s.pending.len())
    }

    /// The most frames that were in flight at once so far (submitted to NVENC, bitstream not yet
    /// read back).
    #[must_use]
    pub fn peak_in_flight(&self) -> usize {
        self.session.as_ref().map_or(0, |s| s.peak_in_flight)
    }

    fn session(&mut self) -> Result<&mut Session, Error> {
        if let Some(failure) = self.failure() {
            return Err(failure);
        }
        self.session
            .as_mut()
            .ok_or(Error::Finished { backend: KIND })
    }

    /// The error that failed this encoder, again, if one did.
    fn failure(&self) -> Option<Error> {
        if let Some(hung) = self.session.as_ref().and_then(|s| s.raw.hung()) {
            return Some(Error::Hung {
                backend: KIND,
                call: hung.call,
                deadline: hung.deadline,
            });
        }
        let (call, message) = self.failed.as_ref()?;
        Some(Error::Backend {
            backend: KIND,
            call,
            message: format!("the encoder failed earlier and cannot continue: {message}"),
        })
    }

    /// Fails the encoder with `e` (see the module docs), and returns it.
    fn fail(&mut self, e: CallError) -> Error {
        match &e {
            CallError::Hung(hung) => tracing::error!(
                call = hung.call,
                deadline = ?hung.deadline,
                "an NVENC call did not return; the session is abandoned"
            ),
            CallError::Failed(e) => self.failed = Some((e.call, e.to_string())),
        }
        call_err(e)
    }

    /// Encodes a frame that is already in device memory (see [`DeviceFrame`]): copied
    /// device-to-device into an encoder surface, never through the host.
    ///
    /// # Errors
    /// As [`VideoEncoder::encode`]; [`Error::FrameSize`] when `pitch` is smaller than a row.
    ///
    /// # Safety
    /// `frame.device_ptr` must be a live allocation in this encoder's CUDA context holding the
    /// whole frame at `frame.pitch`, left unchanged and allocated until the copy queued here has
    /// run: until [`NvencEncoder::synchronize`], [`VideoEncoder::flush`], or the drop of the
    /// encoder. Once the encoder failed with [`Error::Hung`], its stream is not waited for (the
    /// GPU may be as stuck as the driver): the memory of every frame given to it must then stay
    /// allocated for the life of the process.
    pub unsafe fn encode_device(
        &mut self,
        frame: DeviceFrame,
        out: &mut Vec<EncodedChunk>,
    ) -> Result<(), Error> {
        let width = self.config.resolution.width as usize;
        let rows = self.config.resolution.height as usize * 3 / 2;
        let (frame_index, pts) = self.gate.check_pts(frame.pts)?;
        let fits = frame
            .pitch
            .checked_mul(rows)
            .and_then(|bytes| frame.device_ptr.checked_add(bytes as u64))
            .is_some();
        if frame.pitch < width
            || !fits
            || (self.config.pixel_format == PixelFormat::I420 && frame.pitch % 2 != 0)
        {
            return Err(Error::FrameSize {
                frame_index,
                expected: width,
                actual: frame.pitch,
                resolution: self.config.resolution,
                format: self.config.pixel_format,
            });
        }
        let _context = self.enter()?;
        self.make_room(out)?;
        let result = self.copy_device_and_submit(frame, frame_index, pts, out);
        if result.is_err() && !self.is_hung() {
            // A copy may still be queued: the caller's buffer and the surface are only safe to
            // reuse once it ran. (Not after a hang: see the safety section.)
            let _ = self.synchronize();
        }
        result
    }

    /// Queues the device-to-device copies of a frame into the next surface, and submits it.
    fn copy_device_and_submit(
        &mut self,
        frame: DeviceFrame,
        frame_index: u64,
        pts: i64,
        out: &mut Vec<EncodedChunk>,
    ) -> Result<(), Error> {
        let planes = self.planes(frame.pitch);
        self.skip_retired()?;
        let slot = self.device_in.try_reserve().map_err(ring_flow)?;
        let surface = slot.surface();
        for (offset, pitch, dst) in planes.0[..planes.1].iter().map(|p| p.on(&surface)) {
            // SAFETY: the caller of `encode_device` guarantees the source frame at `device_ptr`
            // with `pitch` (its end was checked not to overflow), so `device_ptr + offset` starts
            // a plane of it; `dst` is a plane of a surface of this encoder's device ring,
            // reserved above and not in use by NVENC.
            unsafe {
                cuda::copy_device_to_device_async(
                    frame.device_ptr + offset as u64,
                    pitch,
                    &dst,
                    &self.stream,
                )
            }
            .map_err(ring_err)?;
        }
        let meta = FrameMeta {
            len: 0,
            pts,
            seq: frame_index,
            flags: Default::default(),
        };
        slot.commit(meta).map_err(ring_flow)?;
        self.submit(frame_index, pts, frame.force_keyframe, None, out)
    }

    /// Queues the copies from a staged host frame into the next device surface, and submits it.
    fn upload_and_submit(
        &mut self,
        frame_index: u64,
        pts: i64,
        force_keyframe: bool,
        staged: Staged,
        out: &mut Vec<EncodedChunk>,
    ) -> Result<(), Error> {
        let planes = self.planes(self.config.resolution.width as usize);
        self.skip_retired()?;
        let slot = self.device_in.try_reserve().map_err(ring_flow)?;
        let surface = slot.surface();
        for (offset, pitch, dst) in planes.0[..planes.1].iter().map(|p| p.on(&surface)) {
            let src = staged.bytes().get(offset..).unwrap_or_default();
            // SAFETY: `src` is a pinned slot (the encoder's or the caller's) whose lease travels
            // with the picture until
            // its bitstream is read back (after the stream ran this copy), and on an error the
            // caller synchronizes the stream before any slot is reused; `dst` is a plane of a
            // surface of this encoder's device ring, reserved and not in use by NVENC.
            unsafe { cuda::copy_host_to_device_async(src, pitch, &dst, &self.stream) }
                .map_err(ring_err)?;
        }
        let meta = FrameMeta {
            len: 0,
            pts,
            seq: frame_index,
            flags: Default::default(),
        };
        slot.commit(meta).map_err(ring_flow)?;
        self.submit(frame_index, pts, force_keyframe, Some(staged), out)
    }

    /// Makes the encoder's CUDA context current until the guard drops, restoring the caller's.
    fn enter(&self) -> Result<cuda::ContextGuard, Error> {
        self.context.push().map_err(ring_err)
    }

    /// The planes of a frame whose luma rows are `src_pitch` bytes apart, as copies into a
    /// device surface: one for NV12 (luma and interleaved chroma share the pitch), three for I420
    /// (chroma at half the pitch, as NVENC's IYUV layout has). A fixed array and a count, so the
    /// per-frame path allocates nothing.
    fn planes(&self, src_pitch: usize) -> ([PlaneCopy; 3], usize) {
        let w = self.config.resolution.width as usize;
        let h = self.config.resolution.height as usize;
        match self.config.pixel_format {
            PixelFormat::Nv12 => {
                let all = PlaneCopy {
                    src_offset: 0,
                    src_pitch,
                    width: w,
                    rows: h * 3 / 2,
                    dst_rows: (0, 0),
                    half_pitch: false,
                };
                ([all; 3], 1)
            }
            _ => (
                [
                    PlaneCopy {
                        src_offset: 0,
                        src_pitch,
                        width: w,
                        rows: h,
                        dst_rows: (0, 0),
                        half_pitch: false,
                    },
                    PlaneCopy {
                        src_offset: src_pitch * h,
                        src_pitch: src_pitch / 2,
                        width: w / 2,
                        rows: h / 2,
                        dst_rows: (h, 0),
                        half_pitch: true,
                    },
                    PlaneCopy {
                        src_offset: src_pitch * h + src_pitch / 2 * (h / 2),
                        src_pitch: src_pitch / 2,
                        width: w / 2,
                        rows: h / 2,
                        dst_rows: (h, h / 2),
                        half_pitch: true,
                    },
                ],
                3,
            ),
        }
    }

    /// Reads back outputs until a device slot is free for the next frame (and for a retired
    /// surface that may come up first, see [`NvencEncoder::skip_retired`]).
    fn make_room(&mut self, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        let capacity = self.device_in.capacity();
        loop {
            let session = self.session()?;
            if session.pending.len() + session.retired.len() < capacity {
                return Ok(());
            }
            if session.ready == 0 || session.pending.is_empty() {
                // The ring was sized for every frame NVENC may hold; reaching this means the
                // driver held more than it said it would, or too many surfaces were retired.
                return Err(Error::Backend {
                    backend: KIND,
                    call: "nvEncEncodePicture",
                    message: format!(
                        "every input surface is in flight or retired ({} retired after a failed \
                         unmap) and no output is ready",
                        session.retired.len()
                    ),
                });
            }
            self.read_one(out)?;
        }
    }

    /// Passes over the ring slots whose surface is retired (still mapped after a failed unmap):
    /// each is published empty and released at once, so the ring keeps its order and the surface
    /// is never mapped again.
    fn skip_retired(&mut self) -> Result<(), Error> {
        loop {
            let slot = self.device_in.try_reserve().map_err(ring_flow)?;
            let index = slot.index();
            let retired = self
                .session
                .as_ref()
                .is_some_and(|s| s.retired.iter().any(|(_, i)| *i == index));
            if !retired {
                // Not committed: the slot stays the next one to reserve.
                return Ok(());
            }
            slot.commit(FrameMeta::with_len(0)).map_err(ring_flow)?;
            self.device_out.try_pop().map_err(ring_flow)?.release();
        }
    }

    /// Pops the committed device slot, maps it and submits it.
    fn submit(
        &mut self,
        frame_index: u64,
        pts: i64,
        force_idr: bool,
        staging: Option<Staged>,
        out: &mut Vec<EncodedChunk>,
    ) -> Result<(), Error> {
        let device = self.device_out.try_pop().map_err(ring_flow)?;
        let (w, h) = (self.config.resolution.width, self.config.resolution.height);
        let pitch = pitch_u32(device.surface().pitch)?;
        let index = device.index();
        let session = self.session()?;
        let output = session.free_outputs.pop().ok_or_else(|| Error::Backend {
            backend: KIND,
            call: "nvEncEncodePicture",
            message: "no free output buffer".into(),
        })?;
        let registered = session
            .registered
            .get(index)
            .and_then(Option::as_ref)
            .ok_or_else(|| Error::Backend {
                backend: KIND,
                call: "nvEncMapInputResource",
                message: format!("surface {index} is not registered"),
            })?;
        let mapped = match session.raw.map(registered) {
            Ok(m) => m,
            Err(e) => {
                // Nothing was submitted: the frame is not accepted, the session unchanged.
                session.free_outputs.push(output);
                return Err(nvenc_err(e));
            }
        };
        let picture = PictureInput {
            input: &mapped,
            output: &output,
            width: w,
            height: h,
            pitch,
            timestamp: frame_index,
            force_idr,
            output_spspps: force_idr,
        };
        let submitted = session.raw.encode_picture(&picture);
        let flight = InFlight {
            device,
            staging,
            mapped: Some(mapped),
            output: Some(output),
            frame_index,
        };
        match submitted {
            Ok(state) => {
                session.pending.push_back(flight);
                session.peak_in_flight = session.peak_in_flight.max(session.pending.len());
                if state == Submitted::OutputReady {
                    session.ready = session.pending.len();
                }
            }
            Err(CallError::Failed(e)) if e.kind() == super::NvencErrorKind::InvalidParam => {
                // A rejected parameter leaves the session as it was: the frame is not accepted
                // and the encoder stays usable.
                session.release(flight);
                return Err(nvenc_err(e));
            }
            Err(CallError::Failed(e)) => {
                // A device error, or the busy retries used up: earlier pictures may be stuck in
                // the driver. This frame was not taken; the encoder has failed.
                session.release(flight);
                return Err(self.fail(CallError::Failed(e)));
            }
            Err(hung @ CallError::Hung(_)) => {
                // The call may still be using the picture's input and output: they stay with
                // the session, which is abandoned, not torn down.
                session.pending.push_back(flight);
                session.hung_at = Some(HungAt::Back);
                return Err(self.fail(hung));
            }
        }
        self.gate.accept(pts);
        self.dts.push(pts);
        self.unread.push_back((frame_index, pts));
        while self.session()?.ready > 0 && self.session()?.pending.len() > self.extra_output_delay {
            self.read_one(out)?;
        }
        Ok(())
    }

    /// Locks the oldest ready output, appends its chunk, and frees its slots.
    fn read_one(&mut self, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        let session = self.session()?;
        let Some(flight) = session.pending.pop_front() else {
            return Ok(());
        };
        let mut data = Vec::new();
        let read = match flight.output.as_ref() {
            Some(output) => session.raw.read_bitstream(output, &mut data),
            None => Ok(super::api::LockedInfo {
                timestamp: flight.frame_index,
                picture_type: sys::NV_ENC_PIC_TYPE::NV_ENC_PIC_TYPE_UNKNOWN,
            }),
        };
        let info = match read {
            Ok(info) => info,
            Err(e) => {
                // Its input may still be in use by the driver (a hung call is still inside):
                // everything stays with the session, for teardown.
                if matches!(e, CallError::Hung(_)) {
                    session.hung_at = Some(HungAt::Front);
                }
                session.pending.push_front(flight);
                return Err(self.fail(e));
            }
        };
        session.ready = session.ready.saturating_sub(1);
        // The frame's input is no longer needed once its bitstream was locked.
        session.release(flight);
        // The output carries the input's timestamp: our frame index. Its pts is looked up from
        // what `encode` recorded (B-frames come out of order).
        let frame_index = info.timestamp;
        let pts = self.pts_of(frame_index);
        let dts = self.dts.next();
        let frame_type = match info.picture_type {
            sys::NV_ENC_PIC_TYPE::NV_ENC_PIC_TYPE_IDR => FrameType::Idr,
            sys::NV_ENC_PIC_TYPE::NV_ENC_PIC_TYPE_I
            | sys::NV_ENC_PIC_TYPE::NV_ENC_PIC_TYPE_INTRA_REFRESH => FrameType::I,
            sys::NV_ENC_PIC_TYPE::NV_ENC_PIC_TYPE_B => FrameType::B,
            _ => FrameType::P,
        };
        self.chunks_out += 1;
        out.push(EncodedChunk {
            data,
            pts,
            dts: dts.min(pts),
            duration: 1,
            keyframe: frame_type == FrameType::Idr,
            frame_type,
            frame_index,
        });
        Ok(())
    }

    /// The pts recorded for a submitted frame (outputs come back out of order with B-frames).
    fn pts_of(&mut self, frame_index: u64) -> i64 {
        match self.unread.iter().position(|&(i, _)| i == frame_index) {
            Some(at) => self
                .unread
                .remove(at)
                .map_or(frame_index as i64, |(_, pts)| pts),
            None => {
                tracing::warn!(
                    frame_index,
                    "NVENC returned a timestamp that was never submitted"
                );
                frame_index as i64
            }
        }
    }

    fn read_all(&mut self, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        while self.session()?.pending.front().is_some() {
            self.read_one(out)?;
        }
        Ok(())
    }

    /// Whether a driver call is still inside the session.
    fn is_hung(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.raw.hung().is_some())
    }
}

impl NvencEncoder {
    /// Whether the GPU reports a capability as supported (non-zero).
    fn has_cap(&mut self, cap: sys::NV_ENC_CAPS) -> Result<bool, Error> {
        let session = self.session()?;
        let value = session
            .raw
            .cap(sys::NV_ENC_CODEC_H264_GUID, cap)
            .map_err(nvenc_err)?;
        Ok(value != 0)
    }
}

impl VideoEncoder for NvencEncoder {
    /// `nvEncReconfigureEncoder` with a full copy of the init params and the new rate-control
    /// fields. Where the GPU reports `NV_ENC_CAPS_SUPPORT_DYN_BITRATE_CHANGE` (and, for a change
    /// of mode, `SUPPORT_DYN_RCMODE_CHANGE`) the rate changes in place, with no IDR; otherwise
    /// the encoder is reset (`resetEncoder`, `forceIDR`: the next frame is an IDR), which the
    /// API allows only with an IDR and so only without B-frames in flight (else
    /// [`Error::Unsupported`]). Resolution changes are not offered.
    fn reconfigure(&mut self, rate_control: RateControl) -> Result<(), Error> {
        if self.gate.is_finished() {
            return Err(Error::Finished { backend: KIND });
        }
        rate_control.validate()?;
        let new_config = self.config.clone().with_rate_control(rate_control);
        let _context = self.enter()?;
        let dynamic = self.has_cap(sys::NV_ENC_CAPS::NV_ENC_CAPS_SUPPORT_DYN_BITRATE_CHANGE)?
            && (self.config.rate_control.mode() == rate_control.mode()
                || self.has_cap(sys::NV_ENC_CAPS::NV_ENC_CAPS_SUPPORT_DYN_RCMODE_CHANGE)?);
        let reordering = self.init.config.frameIntervalP > 1;
        if !dynamic && reordering {
            return Err(Error::Unsupported {
                backend: KIND,
                feature: "changing the rate control with B-frames on a GPU without dynamic \
                          bit-rate or mode change (the reset it needs must start an IDR)",
            });
        }
        let mut enc = *self.init.config;
        apply_rate_control(&mut enc, &mapping::nvenc(&new_config));
        let mut params = sys::NV_ENC_RECONFIGURE_PARAMS {
            version: sys::NV_ENC_RECONFIGURE_PARAMS_VER,
            reInitEncodeParams: self.init.params,
            ..Default::default()
        };
        params.reInitEncodeParams.encodeConfig = &mut enc;
        params.set_resetEncoder(u32::from(!dynamic));
        params.set_forceIDR(u32::from(!dynamic));
        self.session()?
            .raw
            .reconfigure(&mut params)
            .map_err(nvenc_err)?;
        tracing::debug!(
            from = %self.config.rate_control, to = %rate_control, reset = !dynamic,
            "reconfigured NVENC"
        );
        *self.init.config = enc;
        self.config = new_config;
        Ok(())
    }

    fn encode(&mut self, frame: Frame<'_>, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        let (frame_index, pts) = self.gate.check(&frame)?;
        let _context = self.enter()?;
        self.make_room(out)?;
        let len = frame.data.len();
        let mut staging = self.staging_in.try_reserve().map_err(ring_flow)?;
        let dst = staging.get_mut(..len).ok_or_else(|| Error::Backend {
            backend: KIND,
            call: "staging",
            message: format!("a {len}-byte frame does not fit a staging slot"),
        })?;
        dst.copy_from_slice(frame.data);
        crate::encoder::count_host_copy();
        staging
            .commit(FrameMeta::with_len(len))
            .map_err(ring_flow)?;
        let staged = Staged::Own(self.staging_out.try_pop().map_err(ring_flow)?);
        let result = self.upload_and_submit(frame_index, pts, frame.force_keyframe, staged, out);
        if result.is_err() && !self.is_hung() {
            // An upload may still be queued: no slot may be reused before it ran. (Not after a
            // hang: the stream may be as stuck as the driver, and the slots stay pinned.)
            let _ = self.synchronize();
        }
        result
    }

    /// From a pinned slot, the upload reads the caller's slot directly (its lease stays with
    /// the picture until the bitstream is read back): no host copy. From a host slot, as
    /// `encode` (one copy into pinned staging).
    fn encode_slot(&mut self, slot: &SlotFrame, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        if !matches!(slot, SlotFrame::Pinned(_)) {
            return self.encode(slot.frame(), out);
        }
        let frame = slot.frame();
        let (frame_index, pts) = self.gate.check(&frame)?;
        let force_keyframe = frame.force_keyframe;
        let _context = self.enter()?;
        self.make_room(out)?;
        let staged = Staged::Caller(slot.clone());
        let result = self.upload_and_submit(frame_index, pts, force_keyframe, staged, out);
        if result.is_err() && !self.is_hung() {
            // As in `encode`: no slot may be reused before a queued upload ran.
            let _ = self.synchronize();
        }
        result
    }

    fn flush(&mut self, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        if self.gate.is_finished() {
            return Ok(());
        }
        let _context = self.enter()?;
        let session = self.session()?;
        if let Err(e) = session.raw.end_of_stream() {
            // Pictures held for reordering may never be encoded: the encoder has failed.
            if matches!(e, CallError::Hung(_)) {
                session.hung_at = Some(HungAt::EndOfStream);
            }
            return Err(self.fail(e));
        }
        session.ready = session.pending.len();
        self.read_all(out)?;
        // Every upload has been consumed; make that a fact for the caller's device frames too.
        if let Err(e) = self.synchronize() {
            self.failed = Some(("cuStreamSynchronize", e.to_string()));
            return Err(e);
        }
        self.gate
            .finish_accounted(self.chunks_out, "nvEncLockBitstream")
    }

    fn kind(&self) -> EncoderKind {
        KIND
    }

    fn config(&self) -> &EncoderConfig {
        &self.config
    }

    fn sequence_headers(&self) -> &[u8] {
        &self.headers
    }
}

/// What a hung driver call may still be using, in teardown order: handed to the watchdog's
/// worker, which drops it (tearing the session down) if the call ever returns.
#[allow(dead_code)] // The rings, stream and context are held for their `Drop`, in this order.
struct Abandoned {
    session: Option<Session>,
    device_in: Producer<DeviceStorage>,
    device_out: Consumer<DeviceStorage>,
    staging_in: Producer<PinnedStorage>,
    staging_out: Consumer<PinnedStorage>,
    io_stream: IoStream,
    stream: CudaStream,
    context: CudaContext,
    /// How the hung call ended.
    late: LateEnd,
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        // On the worker, after the hung call returned: the same teardown as the encoder's,
        // minding what the call did. An output it read is not read again; a picture it did not
        // submit is not waited for (locking a buffer that was never submitted can wait forever).
        let _context = self.context.push();
        if let Some(session) = self.session.as_mut() {
            match (session.hung_at.take(), self.late) {
                (Some(HungAt::Front), LateEnd::Succeeded) => {
                    if let Some(flight) = session.pending.pop_front() {
                        session.release(flight);
                    }
                }
                (Some(HungAt::Back), LateEnd::Failed) => {
                    if let Some(flight) = session.pending.pop_back() {
                        session.release(flight);
                    }
                }
                _ => {}
            }
            session.drain();
        }
        if let Err(e) = self.stream.synchronize() {
            tracing::warn!(error = %e, "cuStreamSynchronize failed at teardown");
        }
        self.session = None;
        // The fields drop next, in declaration order: rings (freeing the surfaces), stream
        // handle, stream, context.
    }
}

impl Drop for NvencEncoder {
    fn drop(&mut self) {
        // NVENC and the frees below run in the encoder's CUDA context; the session goes first
        // (drained, then unmapped, unregistered and destroyed in order), then the surfaces,
        // stream and context.
        // What the caller had current, unless that is this encoder's own context, which may not
        // outlive the fields about to drop.
        self.callers_context = match cuda::save_current() {
            Ok(saved) if saved.is(&self.context) => {
                saved.discard();
                None
            }
            Ok(saved) => Some(saved),
            Err(_) => None,
        };
        let _context = self.enter();
        if let Err(e) = &_context {
            tracing::warn!(error = %e, "tearing down NVENC without its CUDA context current");
        }
        if let Some(session) = self.session.as_mut() {
            // Bounded: each call waits at most the watchdog's deadline, and none is made once
            // one hung.
            session.drain();
        }
        if self.is_hung() {
            self.abandon();
            return;
        }
        // No queued upload may still be reading a staging slot or writing a surface when they
        // are released and freed.
        if let Err(e) = self.synchronize() {
            tracing::warn!(error = %e, "cuStreamSynchronize failed at teardown");
        }
        self.session = None;
        // Each field is dropped exactly once, here, in teardown order, and
        // never used again (this is `drop`; `abandon` takes them only on the other path, which
        // returns before this).
        // SAFETY: see above.
        unsafe { ManuallyDrop::drop(&mut self.device_in) };
        // SAFETY: as above.
        unsafe { ManuallyDrop::drop(&mut self.device_out) };
        // SAFETY: as above.
        unsafe { ManuallyDrop::drop(&mut self.staging_in) };
        // SAFETY: as above.
        unsafe { ManuallyDrop::drop(&mut self.staging_out) };
        // SAFETY: as above.
        unsafe { ManuallyDrop::drop(&mut self.io_stream) };
    }
}

impl NvencEncoder {
    /// Hands the session and everything a hung call may use to the watchdog's worker (see the
    /// module docs). Called once, from `drop`, which uses none of these fields afterwards.
    fn abandon(&mut self) {
        let Some(mut session) = self.session.take() else {
            return;
        };
        let Some(watchdog) = session.raw.take_watchdog() else {
            return;
        };
        let hung = watchdog.hung();
        // Called only from `drop`, on the path that does not drop these
        // fields itself, so each is taken exactly once and never used again.
        // SAFETY: see above.
        let device_in = unsafe { ManuallyDrop::take(&mut self.device_in) };
        // SAFETY: as above.
        let device_out = unsafe { ManuallyDrop::take(&mut self.device_out) };
        // SAFETY: as above.
        let staging_in = unsafe { ManuallyDrop::take(&mut self.staging_in) };
        // SAFETY: as above.
        let staging_out = unsafe { ManuallyDrop::take(&mut self.staging_out) };
        // SAFETY: as above.
        let io_stream = unsafe { ManuallyDrop::take(&mut self.io_stream) };
        let pinned = Abandoned {
            session: Some(session),
            device_in,
            device_out,
            staging_in,
            staging_out,
            io_stream,
            stream: self.stream.clone(),
            context: self.context.clone(),
            late: LateEnd::Unknown,
        };
        tracing::error!(
            call = hung.map(|h| h.call),
            "NVENC session abandoned with a call still inside the driver: its session, surfaces, \
             stream and worker thread stay until the call returns or the process exits"
        );
        watchdog.abandon(move |reply| {
            let mut pinned = pinned;
            pinned.late = LateEnd::of(reply);
            // Dropped here, on the worker: the teardown.
        });
    }
}

/// One plane copy, in bytes: where the plane starts in the source, its source pitch, and where
/// it lands in a device surface.
#[derive(Debug, Clone, Copy)]
struct PlaneCopy {
    src_offset: usize,
    src_pitch: usize,
    width: usize,
    rows: usize,
    /// Where the plane starts in the surface: after this many rows at the surface's pitch and
    /// this many at half of it.
    dst_rows: (usize, usize),
    /// Chroma of I420 is laid out at half the surface pitch.
    half_pitch: bool,
}

impl PlaneCopy {
    /// `(source offset, source pitch, destination)` for a copy into `surface`.
    fn on(&self, surface: &DeviceSurface) -> (usize, usize, DeviceSurface) {
        let pitch = if self.half_pitch {
            surface.pitch / 2
        } else {
            surface.pitch
        };
        let dst = DeviceSurface {
            device_ptr: surface.device_ptr
                + (surface.pitch * self.dst_rows.0 + surface.pitch / 2 * self.dst_rows.1) as u64,
            pitch,
            width_bytes: self.width,
            rows: self.rows,
        };
        (self.src_offset, self.src_pitch, dst)
    }
}

fn ring_flow(e: impl std::fmt::Display) -> Error {
    Error::Backend {
        backend: KIND,
        call: "frame ring",
        message: e.to_string(),
    }
}

fn guid_eq(a: &sys::GUID, b: &sys::GUID) -> bool {
    a.Data1 == b.Data1 && a.Data2 == b.Data2 && a.Data3 == b.Data3 && a.Data4 == b.Data4
}

fn pitch_u32(pitch: usize) -> Result<u32, Error> {
    u32::try_from(pitch).map_err(|_| Error::Backend {
        backend: KIND,
        call: "cuMemAllocPitch",
        message: format!("pitch {pitch} does not fit in 32 bits"),
    })
}

fn gate_frame_len(config: &EncoderConfig) -> Result<usize, Error> {
    Ok(config.validate()?)
}

fn require_at_least(cap: &'static str, value: i32, required: u32) -> Result<(), Error> {
    if i64::from(value) >= i64::from(required) {
        Ok(())
    } else {
        Err(Error::NvencCapability {
            cap,
            value,
            required: i64::from(required),
        })
    }
}

fn require_at_most(cap: &'static str, value: i32, required: u32) -> Result<(), Error> {
    if i64::from(value) <= i64::from(required) {
        Ok(())
    } else {
        Err(Error::NvencCapability {
            cap,
            value,
            required: i64::from(required),
        })
    }
}

impl Session {
    /// Gives back what a picture held: unmap (if still mapped), its output buffer to the free
    /// list, and its slots to the rings (by dropping the leases). A surface whose unmap failed
    /// is retired instead: still mapped, it must not be mapped again.
    fn release(&mut self, mut flight: InFlight) {
        if let Some(output) = flight.output.take() {
            self.free_outputs.push(output);
        }
        if let Some(mapped) = flight.mapped.take() {
            if let Err((mapped, e)) = self.raw.unmap(mapped) {
                let index = flight.device.index();
                tracing::warn!(
                    error = %e, surface = index,
                    "nvEncUnmapInputResource failed; the surface is retired and unmapped at teardown"
                );
                self.retired.push((mapped, index));
            }
        }
    }

    /// The part of teardown that may block: ends the stream and reads back (discarding) every
    /// submitted output in order, then unmaps its input, as the API requires before anything is
    /// unregistered or destroyed. Each call waits at most the watchdog's deadline; once one
    /// hangs, nothing more is called and the pending pictures stay (the session is abandoned).
    fn drain(&mut self) {
        if self.raw.hung().is_some() || self.pending.is_empty() {
            return;
        }
        // So every submitted output can be locked; a buffer that was never submitted is never
        // locked (that would wait forever on some drivers).
        match self.raw.end_of_stream() {
            Ok(_) => {}
            Err(CallError::Hung(_)) => {
                self.hung_at = Some(HungAt::EndOfStream);
                return;
            }
            Err(CallError::Failed(e)) => {
                tracing::warn!(error = %e, "end of stream at teardown failed");
            }
        }
        while let Some(flight) = self.pending.pop_front() {
            if let Some(output) = flight.output.as_ref() {
                let mut sink = Vec::new();
                match self.raw.read_bitstream(output, &mut sink) {
                    Ok(_) => {}
                    Err(CallError::Hung(_)) => {
                        self.hung_at = Some(HungAt::Front);
                        self.pending.push_front(flight);
                        return;
                    }
                    Err(CallError::Failed(e)) => {
                        tracing::warn!(error = %e, "discarding an output at teardown failed");
                    }
                }
            }
            self.release(flight);
        }
        self.ready = 0;
    }

    /// Ends the session in the order the API requires: outputs read back and inputs unmapped
    /// ([`Session::drain`]), unregister, destroy the bitstream buffers, destroy the session (when
    /// `raw` drops, after this). Best effort: failures are logged, and each release that fails is
    /// tried once more, since anything left behind holds video memory until the process ends.
    fn teardown(&mut self) {
        if let Some(hung) = self.raw.hung() {
            // A call is still inside the session: nothing may be called or destroyed. (The
            // encoder abandons such a session instead of dropping it; this is the safe default.)
            tracing::error!(
                call = hung.call,
                "leaving an NVENC session with a hung call"
            );
            return;
        }
        self.drain();
        for (mapped, index) in std::mem::take(&mut self.retired) {
            if let Err((mapped, e)) = self.raw.unmap(mapped) {
                tracing::warn!(error = %e, surface = index, "nvEncUnmapInputResource failed at teardown; trying again");
                if let Err((_, e)) = self.raw.unmap(mapped) {
                    tracing::warn!(error = %e, surface = index, "nvEncUnmapInputResource failed twice; left to nvEncDestroyEncoder");
                }
            }
        }
        for reg in std::mem::take(&mut self.registered).into_iter().flatten() {
            if let Err((reg, e)) = self.raw.unregister(reg) {
                tracing::warn!(error = %e, "nvEncUnregisterResource failed at teardown; trying again");
                if let Err((_, e)) = self.raw.unregister(reg) {
                    tracing::warn!(error = %e, "nvEncUnregisterResource failed twice; left to nvEncDestroyEncoder");
                }
            }
        }
        for output in std::mem::take(&mut self.free_outputs) {
            if let Err((output, e)) = self.raw.destroy_bitstream_buffer(output) {
                tracing::warn!(error = %e, "nvEncDestroyBitstreamBuffer failed at teardown; trying again");
                if let Err((_, e)) = self.raw.destroy_bitstream_buffer(output) {
                    tracing::warn!(error = %e, "nvEncDestroyBitstreamBuffer failed twice; left to nvEncDestroyEncoder");
                }
            }
        }
        // `raw` is destroyed when the session drops, after this.
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.teardown();
    }
}
