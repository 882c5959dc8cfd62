//! An NVENC session's resources: the input surfaces it registered, the pinned staging buffers
//! host frames are uploaded from, its output buffers and the pictures in flight; and their
//! teardown in the order the API requires, including the path of a session abandoned to the
//! watchdog while a call is stuck in the driver.

use std::collections::VecDeque;
use std::sync::Arc;

use nvenc_sys as sys;

use super::api::{BitstreamBuffer, CallError, LateEnd, LockedInfo, Mapped, RawEncoder, Registered};
use super::init::Plan;
use super::NvencError;
use crate::cuda::{Context, Either, Pending, PinnedBuffer, PitchedBuffer, Stream};
use crate::encoder::SlotFrame;
use crate::ring_buffer::{PinnedStorage, ReadSlot};

/// The host memory an upload reads: one of the session's staging buffers (the frame was copied
/// there), or the caller's pinned ring slot (no copy).
pub(crate) type Staged = Either<PinnedBuffer, Arc<ReadSlot<PinnedStorage>>>;

/// A caller's slot as an upload source, if it is pinned.
pub(crate) fn caller_slot(slot: &SlotFrame) -> Option<Staged> {
    match slot {
        SlotFrame::Pinned(s) => Some(Either::Right(Arc::clone(s))),
        _ => None,
    }
}

/// One picture between submission and read-back.
pub(crate) struct InFlight {
    /// Index of its input surface in [`NvencSession::surfaces`].
    pub surface: usize,
    /// The copy into the surface, owning its source until it is known to have run.
    pub upload: Option<Pending<Staged>>,
    pub mapped: Option<Mapped>,
    pub output: Option<BitstreamBuffer>,
}

/// The call that hung, as it concerns [`NvencSession::pending`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HungAt {
    /// The read-back of the oldest pending picture (`pending.front()`).
    Front,
    /// The submission of the newest one (`pending.back()`), whose outcome is unknown.
    Back,
    /// The end of stream; no picture of its own.
    EndOfStream,
}

/// The NVENC session and everything registered with or created by it.
pub(crate) struct NvencSession {
    pub raw: RawEncoder,
    /// Every input surface, registered once at open; by index.
    pub surfaces: Vec<Option<Registered>>,
    /// Surfaces not in flight and not retired, oldest released first.
    pub free_surfaces: VecDeque<usize>,
    /// Staging buffers not in flight.
    pub free_staging: Vec<PinnedBuffer>,
    pub free_outputs: Vec<BitstreamBuffer>,
    pub pending: VecDeque<InFlight>,
    /// How many of `pending` (from the front) have output ready to lock.
    pub ready: usize,
    /// The most pictures that were submitted and not yet read back at once.
    pub peak_in_flight: usize,
    /// Mappings whose unmap failed, with their surface's index: the surface is never mapped
    /// again (it still is; mapping it again would fail), and the unmap is tried again at
    /// teardown.
    pub retired: Vec<(Mapped, usize)>,
    /// Which call hung, if one did: what its picture is to `pending`.
    pub hung_at: Option<HungAt>,
    /// The surfaces' memory, freed after the session is destroyed (fields drop after `raw`).
    _memory: Vec<Arc<PitchedBuffer>>,
}

impl NvencSession {
    /// Allocates the surfaces and staging buffers `plan` asks for and registers the surfaces
    /// with `raw`, an initialized session, whose watchdog is started here; NVENC's IO runs on
    /// `stream`. On an error, what was done so far is undone in order (the session drops).
    pub(crate) fn open(
        raw: RawEncoder,
        context: &Context,
        stream: &Stream,
        plan: &Plan,
        staging_len: usize,
        deadline: std::time::Duration,
    ) -> Result<(Self, Vec<u8>), crate::error::Error> {
        use crate::error::Error;
        let kind = crate::encoder::EncoderKind::Nvenc;
        let cuda_err = |e: crate::cuda::CudaError| super::fail::cuda_error(e);
        let (width, height) = (plan.init.params.encodeWidth, plan.init.params.encodeHeight);
        let slots = plan.surfaces;
        let rows = height as usize * 3 / 2;
        let mut memory = Vec::with_capacity(slots);
        for _ in 0..slots {
            memory.push(Arc::new(
                PitchedBuffer::new(context, width as usize, rows).map_err(cuda_err)?,
            ));
        }
        let mut free_staging = Vec::with_capacity(slots);
        for _ in 0..slots {
            free_staging.push(PinnedBuffer::new(context, staging_len).map_err(cuda_err)?);
        }
        let mut session = NvencSession {
            raw,
            surfaces: Vec::with_capacity(slots),
            free_surfaces: (0..slots).collect(),
            free_staging,
            free_outputs: Vec::with_capacity(slots),
            pending: VecDeque::new(),
            ready: 0,
            peak_in_flight: 0,
            retired: Vec::new(),
            hung_at: None,
            _memory: memory.clone(),
        };
        session
            .raw
            .start_watchdog(deadline, context.clone())
            .map_err(|e| Error::Backend {
                backend: kind,
                call: "std::thread::spawn",
                message: format!("cannot start the NVENC watchdog thread: {e}"),
            })?;
        let headers = session
            .raw
            .sequence_params()
            .map_err(super::fail::call_err)?;
        for surface in memory {
            let reg = session
                .raw
                .register_cuda(surface, width, height, plan.format);
            // On an error `session` drops here, which undoes what was done so far.
            session.surfaces.push(Some(reg.map_err(Error::Nvenc)?));
            let output = session
                .raw
                .create_bitstream_buffer()
                .map_err(Error::Nvenc)?;
            session.free_outputs.push(output);
        }
        session
            .raw
            .set_io_cuda_streams(stream)
            .map_err(Error::Nvenc)?;
        Ok((session, headers))
    }

    /// Gives back what a picture held: unmap (if still mapped), its output buffer to the free
    /// list, its surface to the free surfaces, and its upload's source (a staging buffer to the
    /// pool, a caller's slot lease dropped). `locked` is the read-back of its output, when there
    /// was one: the upload then ran; otherwise it is waited for. A surface whose unmap failed is
    /// retired instead: still mapped, it must not be mapped again.
    pub(crate) fn release(&mut self, mut flight: InFlight, locked: Option<&LockedInfo>) {
        if let Some(output) = flight.output.take() {
            self.free_outputs.push(output);
        }
        if let Some(upload) = flight.upload.take() {
            let source = match locked {
                Some(info) => self.raw.input_consumed(info, upload),
                None => upload.wait().unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "an upload could not be waited for; its memory is leaked");
                    None
                }),
            };
            if let Some(Either::Left(staging)) = source {
                self.free_staging.push(staging);
            }
        }
        let index = flight.surface;
        match flight.mapped.take().map(|m| self.raw.unmap(m)) {
            Some(Err((mapped, e))) => {
                tracing::warn!(
                    error = %e, surface = index,
                    "nvEncUnmapInputResource failed; the surface is retired and unmapped at teardown"
                );
                self.retired.push((mapped, index));
            }
            Some(Ok(())) | None => self.free_surfaces.push_back(index),
        }
    }

    /// The part of teardown that may block: ends the stream and reads back (discarding) every
    /// submitted output in order, then unmaps its input, as the API requires before anything is
    /// unregistered or destroyed. Each call waits at most the watchdog's deadline; once one
    /// hangs, nothing more is called and the pending pictures stay (the session is abandoned).
    pub(crate) fn drain(&mut self) {
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
            let mut locked = None;
            if let Some(output) = flight.output.as_ref() {
                let mut sink = Vec::new();
                match self.raw.read_bitstream(output, &mut sink) {
                    Ok(info) => locked = Some(info),
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
            self.release(flight, locked.as_ref());
        }
        self.ready = 0;
    }

    /// Ends the session in the order the API requires: outputs read back and inputs unmapped
    /// ([`NvencSession::drain`]), unregister, destroy the bitstream buffers, destroy the session (when
    /// `raw` drops, after this), free the surfaces (`_memory`, after that). Best effort: failures
    /// are logged, and each release that fails is tried once more, since anything left behind
    /// holds video memory until the process ends.
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
        for reg in std::mem::take(&mut self.surfaces).into_iter().flatten() {
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
        // `raw` is destroyed when the session drops, after this, then the surfaces are freed.
    }

    /// Hands the session, with everything a hung call may use, to the watchdog's worker, which
    /// tears it down if the call ever returns. (Without a watchdog no call can be hung, and the
    /// session is torn down here.)
    pub(crate) fn abandon(mut self, stream: Stream, context: Context) {
        let Some(watchdog) = self.raw.take_watchdog() else {
            return;
        };
        let hung = watchdog.hung();
        let abandoned = Abandoned {
            session: Some(self),
            stream,
            context,
            late: LateEnd::Unknown,
        };
        tracing::error!(
            call = hung.map(|h| h.call),
            "NVENC session abandoned with a call still inside the driver: its session, surfaces, \
             stream and worker thread stay until the call returns or the process exits"
        );
        watchdog.abandon(move |reply| {
            let mut abandoned = abandoned;
            abandoned.late = LateEnd::of(reply);
            // Dropped here, on the worker: the teardown.
        });
    }
}

impl Drop for NvencSession {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// What a hung driver call may still be using, in teardown order: handed to the watchdog's
/// worker, which drops it (tearing the session down) if the call ever returns.
struct Abandoned {
    session: Option<NvencSession>,
    stream: Stream,
    context: Context,
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
                        session.release(flight, None);
                    }
                }
                (Some(HungAt::Back), LateEnd::Failed) => {
                    if let Some(flight) = session.pending.pop_back() {
                        session.release(flight, None);
                    }
                }
                _ => {}
            }
            session.drain();
        }
        if let Err(e) = self.stream.synchronize() {
            tracing::warn!(error = %e, "cuStreamSynchronize failed at teardown");
        }
        // The session goes (surfaces freed after it), then the stream and the context.
        self.session = None;
    }
}

/// An `NvencError` for a session that has no such surface.
pub(crate) fn unregistered(index: usize) -> NvencError {
    NvencError::new(
        "nvEncMapInputResource",
        sys::NVENCSTATUS::NV_ENC_ERR_INVALID_PARAM,
        format!("surface {index} is not registered"),
    )
}
