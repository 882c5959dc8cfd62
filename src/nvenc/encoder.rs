//! [`NvencEncoder`]: the per-frame path of an NVENC session (its resources and teardown are in
//! `session.rs`, its initialize parameters in `init.rs`).
//!
//! # The data path
//! A host frame is copied into one of the session's pinned staging buffers (page-locked, so the
//! upload is a direct DMA), or, from [`VideoEncoder::encode_slot`] with a pinned ring slot, read
//! from that slot with no copy; it is then copied asynchronously on the encoder's CUDA stream
//! into a free input surface (`cuMemAllocPitch`), registered with NVENC once, at open. NVENC's
//! input processing runs on the same stream (`nvEncSetIOCudaStreams`), so it is ordered after the
//! upload without a host wait.
//!
//! A frame in a device ring slot ([`SlotFrame::Device`]) is not copied at all: the slot's own
//! surface is registered with NVENC the first time it is seen (`NV_ENC_INPUT_RESOURCE_TYPE_CUDADEVICEPTR`
//! at the slot's pitch; a bounded cache keyed by device address, least recently used evicted),
//! mapped and encoded. The encoder's stream first waits (`cuEventRecord` on the ring's stream,
//! `cuStreamWaitEvent` on the encoder's) for the work the producer queued on the storage's
//! stream before committing, so NVENC's input processing, which runs on the encoder's stream
//! (nvEncodeAPI.h 11.1 lines 2808-2812), reads the frame the producer wrote; the encoder thread
//! does not wait. The picture keeps the slot's lease until its bitstream has been read back and
//! the surface unmapped; only then can the producer write that slot again.
//!
//! Several frames are in flight: each submitted picture keeps its surface, its staging source
//! or slot lease, its mapping and its output buffer until its bitstream has been read back.
//! Outputs are read in submission order, `extra_output_delay` frames behind the newest, so
//! upload, encode and read-back overlap (Linux has synchronous mode only: `nvEncLockBitstream`
//! waits).
//!
//! # Teardown
//! In the order the API requires, on every path (flush, error, drop, unwinding): end of stream,
//! read back or discard pending outputs, unmap (releasing the slot leases), unregister (the
//! session's surfaces and every cached device slot), destroy bitstream buffers, destroy the
//! session, free the surfaces, release the CUDA context. A registration holds its memory (a
//! device slot's allocation is shared with the ring), so memory is never freed while registered,
//! whichever of the ring and the encoder is dropped first. A surface whose unmap failed is
//! retired (never mapped again); its unmap is tried again at teardown.
//!
//! # Errors and hangs
//! On [`NvencEncoder`]'s own page.

use std::collections::VecDeque;

use nvenc_sys as sys;

use super::api::{CallError, RawEncoder};
use super::bounded::Progress;
use super::fail::{call_err, cuda_error};
use super::init::{self, apply_rate_control};
use super::options::NvencOptions;
use super::placement::{self, GpuChoice, Placed};
use super::session::{self, HungAt, NvencSession};
use crate::cuda::{self, Context, Either, PlaneSource, Stream};
use crate::encoder::mapping;
use crate::encoder::{
    DtsQueue, EncodedChunk, EncoderConfig, EncoderKind, Frame, InputGate, RateControl, SlotFrame,
    VideoEncoder,
};
use crate::error::Error;

mod output;
mod submit;
use submit::no_surface;

const KIND: EncoderKind = EncoderKind::Nvenc;

/// The direct NVENC encoder: what a failed encoder does, and what a hung one leaves behind.
///
/// # Errors and hangs
/// An `Err` from [`VideoEncoder::encode`] means the frame was not accepted (see the contract in
/// [`crate::encoder`]). A driver failure after which the session's state is unknown (a failed
/// read-back or submission, end of stream refused) fails the encoder: every later `encode` and
/// `flush` returns an error, and frames not yet read back never come out of it
/// ([`crate::FallbackEncoder`] replays them on the next encoder).
///
/// `nvEncEncodePicture` and `nvEncLockBitstream` may block forever when the driver or GPU is
/// wedged (Linux has synchronous mode only). They run on a worker thread of the encoder and the
/// caller waits at most [`NvencOptions::call_deadline`]; a call that does not return by then
/// fails the encoder with [`Error::Hung`] naming it. Nothing may be destroyed while a call is
/// inside the driver, so a hung encoder, when dropped, leaves behind: the NVENC session with its
/// registrations, mappings and bitstream buffers, its device surfaces and pinned staging buffers
/// (about `slots * 2.5` frames of memory), the leases of the caller's ring slots its pictures in
/// flight were encoded from (those slots, and every slot after them, stay out of their ring),
/// the device slots it registered, its CUDA stream and a reference to the CUDA context, and the
/// blocked worker thread. If the call ever returns, the worker tears all
/// of it down in the API's order (the module's "Teardown") and exits; otherwise it stays until
/// the process exits.
pub struct NvencEncoder {
    // Field order is drop order: the session (destroyed, then its surfaces freed), then the
    // stream and the context. `Drop` tears the session down first, or, when a driver call hung,
    // hands it to the watchdog (see the module docs).
    session: Option<NvencSession>,
    /// Taken in `Drop` and handed to the session's worker with the session, so that destroying
    /// the stream and releasing the context happen there too, bounded like the rest.
    stream: Option<Stream>,
    context: Option<Context>,
    config: EncoderConfig,
    gate: InputGate,
    headers: Vec<u8>,
    /// What the session was initialized with, for reconfiguration.
    init: super::api::InitParams,
    extra_output_delay: usize,
    /// Decoding timestamps, from the input timestamps shifted by the B-frame delay.
    dts: DtsQueue,
    /// `(frame_index, pts)` of every submitted frame not yet read back.
    unread: VecDeque<(u64, i64)>,
    chunks_out: u64,
    /// The failure that ended this encoder, as `(call, what happened)`: every later `encode` and
    /// `flush` reports it (see the module docs).
    failed: Option<(&'static str, String)>,
    /// Counts this session on its GPU, for placing the next one.
    placed: Placed,
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
    /// [`Error::Nvenc`] when a call fails (see [`NvencError::kind`](super::NvencError::kind): no encode device, likely
    /// session limit, ...).
    pub fn with_options(config: &EncoderConfig, options: &NvencOptions) -> Result<Self, Error> {
        let gate = InputGate::new(KIND, config)?;
        let deadline = options.open_timeout.max(NvencOptions::MIN_CALL_TIMEOUT);
        let (order, load) = match &options.gpu {
            GpuChoice::Index(device) => (vec![*device], Default::default()),
            choice => {
                // The driver's library first, as an explicit open finds out first: without it
                // the error is that, not CUDA's.
                super::bounded::run("nvenc-load", usize::MAX, deadline, |p| {
                    p.at("dlopen(libnvidia-encode)");
                    nvenc_sys::load().map(drop).map_err(Error::from)
                })?;
                let auto = *choice == GpuChoice::Auto;
                let (devices, load) = placement::survey(deadline, auto)?;
                (placement::candidates(choice, &devices)?, load)
            }
        };
        let auto = options.gpu == GpuChoice::Auto;
        let mut refusals = Vec::new();
        let mut tried = Vec::new();
        while let Some(placed) = Placed::reserve(&order, &tried, &load) {
            let device = placed.device();
            tried.push(device);
            let (config, options, gate) = (config.clone(), options.clone(), gate.clone());
            // Every call of the open runs on a thread of its own, awaited at most `deadline`.
            let opened = super::bounded::run("nvenc-open", device, deadline, move |progress| {
                Self::open(&config, &options, gate, placed, progress)
            });
            match opened {
                Ok(encoder) => {
                    if !refusals.is_empty() {
                        tracing::info!(
                            gpu = device,
                            passed_over = refusals.len(),
                            "NVENC placed on another GPU after a refusal"
                        );
                    }
                    return Ok(encoder);
                }
                Err(e) if auto && placement::refused(&e) => {
                    tracing::debug!(gpu = device, error = %e, "GPU refused an NVENC session");
                    refusals.push((device, e));
                }
                Err(e) => return Err(e),
            }
        }
        match refusals.len() {
            0 => Err(Error::Unavailable {
                backend: KIND,
                reason: "CUDA lists no device to open NVENC on".into(),
            }),
            // One GPU: its own error, as with an explicit choice.
            1 => Err(refusals.remove(0).1),
            _ => Err(Error::NoGpuAccepted { refusals }),
        }
    }

    /// The open itself, on the bounded thread, noting each driver call in `progress` first.
    fn open(
        config: &EncoderConfig,
        options: &NvencOptions,
        gate: InputGate,
        placed: Placed,
        progress: &Progress,
    ) -> Result<Self, Error> {
        let device = placed.device();
        // The gate has just validated `config`; its frame length is the staging length.
        let staging_len = gate.frame_len();
        progress.at("dlopen(libnvidia-encode)");
        let library = nvenc_sys::load()?;
        progress.at("cuInit");
        // cudarc makes the contexts it creates current; the caller's comes back when this drops.
        let _callers = cuda::save_current().map_err(cuda_error)?;
        progress.at("cuDevicePrimaryCtxRetain");
        let context = Context::open(device).map_err(cuda_error)?;
        progress.at("cuStreamCreate");
        let stream = context.new_stream().map_err(|e| Error::Unavailable {
            backend: KIND,
            reason: e.to_string(),
        })?;
        // Current for the whole open; the caller's context comes back when this drops.
        let _context = context.push().map_err(cuda_error)?;
        progress.at("nvEncOpenEncodeSessionEx");
        let raw = RawEncoder::open(library, &context).map_err(Error::Nvenc)?;
        progress.at("nvEncGetEncodeGUIDs");
        init::require_codec(&raw, config.codec)?;
        progress.at("nvEncGetEncodeCaps");
        let mut plan = init::plan(config, options, &raw)?;
        progress.at("nvEncInitializeEncoder");
        raw.initialize(&mut plan.init).map_err(Error::Nvenc)?;
        let deadline = options.call_deadline(config.frame_rate);
        let (session, headers) = NvencSession::open(
            raw,
            &context,
            &stream,
            &plan,
            staging_len,
            deadline,
            progress,
        )?;
        tracing::debug!(
            preset = %plan.preset, tuning = %plan.tuning,
            width = config.resolution.width, height = config.resolution.height,
            format = %config.pixel_format, frame_interval_p = plan.frame_interval_p,
            slots = plan.surfaces, "opened NVENC session"
        );
        Ok(NvencEncoder {
            session: Some(session),
            stream: Some(stream),
            context: Some(context),
            config: config.clone(),
            gate,
            headers,
            extra_output_delay: plan.extra_output_delay,
            dts: DtsQueue::new(plan.frame_interval_p as usize - 1),
            init: plan.init,
            unread: VecDeque::new(),
            chunks_out: 0,
            failed: None,
            placed,
            callers_context: None,
        })
    }

    /// The CUDA device ordinal of the GPU this encoder's session is on.
    #[must_use]
    pub fn gpu(&self) -> usize {
        self.placed.device()
    }

    /// Waits until everything queued on the encoder's CUDA stream has run (the uploads of host
    /// frames, NVENC's input processing).
    ///
    /// # Errors
    /// [`Error::Backend`] naming `cuStreamSynchronize` when the driver reports a failure of the
    /// stream (a failed copy, a lost device). This encoder failed; NVENC as such may still work.
    ///
    /// Like every call on an open session, the wait runs on the session's worker and lasts at
    /// most [`NvencOptions::call_timeout`]: [`Error::Hung`] naming `cuStreamSynchronize` after
    /// that (the encoder then fails).
    pub fn synchronize(&self) -> Result<(), Error> {
        let waited = match &self.session {
            Some(session) => session.raw.synchronize(),
            // Handed over (or never opened): nothing of this encoder is queued.
            None => Ok(()),
        };
        waited.map_err(|e| match e {
            CallError::Failed(e) => Error::Backend {
                backend: KIND,
                call: "cuStreamSynchronize",
                message: e.to_string(),
            },
            hung @ CallError::Hung(_) => call_err(hung),
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

    fn session(&mut self) -> Result<&mut NvencSession, Error> {
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

    /// Makes the encoder's CUDA context current until the guard drops, restoring the caller's.
    fn enter(&self) -> Result<cuda::ContextGuard, Error> {
        self.context()?.push().map_err(cuda_error)
    }

    fn stream(&self) -> Result<&Stream, Error> {
        self.stream
            .as_ref()
            .ok_or(Error::Finished { backend: KIND })
    }

    fn context(&self) -> Result<&Context, Error> {
        self.context
            .as_ref()
            .ok_or(Error::Finished { backend: KIND })
    }

    /// Whether a driver call is still inside the session.
    fn is_hung(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.raw.hung().is_some())
    }

    /// Whether the GPU reports a capability as supported (non-zero) for the session's codec.
    fn has_cap(&mut self, cap: sys::NV_ENC_CAPS) -> Result<bool, Error> {
        let codec = crate::encoder::codecs::nvenc_codec_guid(self.config.codec);
        let session = self.session()?;
        match session.raw.cap_bounded(codec, cap) {
            Ok(value) => Ok(value != 0),
            Err(CallError::Failed(e)) => Err(Error::Nvenc(e)),
            Err(hung) => Err(self.fail(hung)),
        }
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
        let reconfigured = self
            .session
            .as_ref()
            .ok_or(Error::Finished { backend: KIND })?
            .raw
            .reconfigure(&self.init, &enc, !dynamic);
        match reconfigured {
            Ok(()) => {}
            Err(CallError::Failed(e)) => return Err(Error::Nvenc(e)),
            Err(hung) => return Err(self.fail(hung)),
        }
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
        let staged = {
            let _context = self.enter()?;
            let mut staging = self.staging(out)?;
            let len = frame.data.len();
            match staging.as_mut_slice().get_mut(..len) {
                Some(dst) => dst.copy_from_slice(frame.data),
                None => {
                    if let Some(session) = self.session.as_mut() {
                        session.free_staging.push(staging);
                    }
                    return Err(Error::Backend {
                        backend: KIND,
                        call: "staging",
                        message: format!("a {len}-byte frame does not fit a staging buffer"),
                    });
                }
            }
            crate::encoder::count_host_copy();
            Either::Left(staging)
        };
        let width = self.config.resolution.width as usize;
        let source = PlaneSource::Host(staged);
        self.submit_frame(source, width, frame_index, pts, frame.force_keyframe, out)
    }

    /// From a pinned slot, the upload reads the caller's slot directly (its lease stays with
    /// the picture until the bitstream is read back): no host copy. From a host slot, as
    /// `encode` (one copy into pinned staging). From a device slot, NVENC encodes the slot's
    /// surface itself, with no copy at all (see the module docs).
    ///
    /// # Errors
    /// As [`VideoEncoder::encode`]. For a device slot also: [`Error::FrameSize`] when its
    /// surface is not `width` bytes by `height * 3 / 2` rows at a pitch of at least the width
    /// and a multiple of 4 (the frame is rejected, the encoder stays usable);
    /// [`Error::Unsupported`] for a slot of another CUDA context than the encoder's, or the
    /// same slot given again while its earlier picture is still held for reordering.
    fn encode_slot(&mut self, slot: &SlotFrame, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        if let SlotFrame::Device(lease) = slot {
            let (frame_index, pts) = self.gate.check_pts(Some(lease.meta().pts))?;
            crate::encoder::check_device_surface(&lease.surface(), &self.config, frame_index)?;
            if !lease.storage().context().same(self.context()?) {
                return Err(Error::Unsupported {
                    backend: KIND,
                    feature: "encoding a device slot of another CUDA context than the \
                              encoder's (open both on the same device)",
                });
            }
            return self.submit_slot(lease, frame_index, pts, slot.force_keyframe(), out);
        }
        let Some(frame) = slot.frame() else {
            // Only a device slot has no host bytes, and it was handled above.
            return Err(Error::Unsupported {
                backend: KIND,
                feature: "a ring slot of an unknown kind",
            });
        };
        let Some(staged) = session::caller_slot(slot) else {
            return self.encode(frame, out);
        };
        let (frame_index, pts) = self.gate.check(&frame)?;
        let width = self.config.resolution.width as usize;
        let force = frame.force_keyframe;
        let source = PlaneSource::Host(staged);
        self.submit_frame(source, width, frame_index, pts, force, out)
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

    /// One per input surface: a picture uploaded from a pinned slot keeps the slot's lease until
    /// its bitstream is read back, and at most every surface is in flight.
    fn max_slot_leases(&self) -> usize {
        self.session.as_ref().map_or(0, |s| s.surfaces.len())
    }

    fn gpu(&self) -> Option<usize> {
        Some(self.placed.device())
    }

    /// `frameIntervalP - 1` of the initialized configuration.
    fn bframes_in_use(&self) -> Option<u32> {
        u32::try_from(self.init.config.frameIntervalP)
            .ok()
            .map(|p| p.saturating_sub(1))
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

impl Drop for NvencEncoder {
    fn drop(&mut self) {
        // NVENC and the frees below run in the encoder's CUDA context; the session goes first
        // (drained, then unmapped, unregistered and destroyed in order, then its surfaces
        // freed), then the stream and context.
        // What the caller had current, unless that is this encoder's own context, which may not
        // outlive the fields about to drop.
        self.callers_context = match cuda::save_current() {
            Ok(saved) if self.context.as_ref().is_some_and(|c| saved.is(c)) => {
                saved.discard();
                None
            }
            Ok(saved) => Some(saved),
            Err(_) => None,
        };
        {
            let context = self.enter();
            if let Err(e) = &context {
                tracing::warn!(error = %e, "tearing down NVENC without its CUDA context current");
            }
            if let Some(session) = self.session.as_mut() {
                // Bounded: each call waits at most the watchdog's deadline, and none is made once
                // one hung.
                session.drain();
            }
            // Popped here, before the worker may release the context.
        }
        // The rest of the teardown (waiting for the stream, unmapping, unregistering, destroying
        // the session, freeing the surfaces, the stream and the context) runs on the session's
        // worker, awaited at most the call deadline; after a hang, only if the call returns.
        if let (Some(session), Some(stream), Some(context)) =
            (self.session.take(), self.stream.take(), self.context.take())
        {
            session.hand_over(stream, context);
        }
    }
}
