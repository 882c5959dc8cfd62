//! An NVENC session's resources: the input surfaces it registered, the pinned staging buffers
//! host frames are uploaded from, the caller's device ring slots it registered on the way (a
//! bounded cache), its output buffers and the pictures in flight; and their
//! teardown in the order the API requires, including the path of a session abandoned to the
//! watchdog while a call is stuck in the driver.

use std::collections::VecDeque;
use std::sync::Arc;

use nvenc_sys as sys;

use super::api::{BitstreamBuffer, CallError, LateEnd, LockedInfo, Mapped, RawEncoder, Registered};
use super::init::Plan;
pub(crate) use super::staged::{SlotUpload, Staged};
use super::NvencError;
use crate::cuda::Pending as PendingUpload;
use crate::cuda::{Context, Either, Pending, PinnedBuffer, PitchedBuffer, Stream};
use crate::encoder::SlotFrame;
use crate::ring_buffer::{DeviceStorage, PinnedStorage, ReadSlot};

/// A caller's slot as an upload source, if it is pinned.
pub(crate) fn caller_slot(slot: &SlotFrame) -> Option<Staged> {
    match slot {
        SlotFrame::Pinned(s) => Some(Either::Right(SlotUpload::Lease(Arc::clone(s)))),
        _ => None,
    }
}

/// The surface a picture is encoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Surface {
    /// One of the session's own surfaces, by index in [`NvencSession::surfaces`].
    Own(usize),
    /// A caller's device slot, by the device address its cached registration is keyed by
    /// ([`NvencSession::external`]).
    External(u64),
}

/// How many caller surfaces (device ring slots) stay registered at once, at least: FFmpeg's
/// `h264_nvenc` keeps 64 registrations (NVENC-NOTES item 10). A device ring of more slots than
/// that still works: the registration of the surface used least recently (and not mapped) is
/// dropped (`nvEncUnregisterResource`) to make room.
pub(crate) const MIN_REGISTRATION_CACHE: usize = 64;

/// A caller's surface registered with the session, kept for the next frame in the same slot.
pub(crate) struct External {
    /// The surface's device address: the cache key. The registration keeps the allocation
    /// (`Registered::memory`), so no other allocation can take this address while it lives.
    pub ptr: u64,
    pub reg: Registered,
    /// When it was last mapped, on [`NvencSession::clock`].
    pub last_used: u64,
    /// Mapped for a picture in flight (or, if `retired`, mapped still after a failed unmap).
    pub mapped: bool,
    /// Its unmap failed: never mapped again nor evicted; unmapped again at teardown.
    pub retired: bool,
}

/// One picture between submission and read-back.
pub(crate) struct InFlight {
    /// Its input surface.
    pub surface: Surface,
    /// The caller's device slot the picture is encoded from, leased until its bitstream was
    /// read back and its surface unmapped.
    pub lease: Option<Arc<ReadSlot<DeviceStorage>>>,
    /// The caller's pinned slot the picture was uploaded from, leased likewise (the upload
    /// itself holds only the ring's memory).
    pub pinned: Option<Arc<ReadSlot<PinnedStorage>>>,
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
    /// Staging buffers allocated so far, at most one per surface: allocated on first need (a
    /// host frame), so a session fed only ring slots (pinned or device) pins no staging memory.
    pub staging_allocated: usize,
    /// The length of a staging buffer: one frame.
    pub staging_len: usize,
    pub free_outputs: Vec<BitstreamBuffer>,
    pub pending: VecDeque<InFlight>,
    /// How many of `pending` (from the front) have output ready to lock.
    pub ready: usize,
    /// The most pictures that were submitted and not yet read back at once.
    pub peak_in_flight: usize,
    /// Mappings whose unmap failed, with their surface: the surface is never mapped again (it
    /// still is; mapping it again would fail), and the unmap is tried again at teardown.
    pub retired: Vec<(Mapped, Surface)>,
    /// Which call hung, if one did: what its picture is to `pending`.
    pub hung_at: Option<HungAt>,
    /// A picture whose input surface was being mapped when the call hung: never submitted, so
    /// its output must not be locked; released at teardown.
    pub limbo: Option<InFlight>,
    /// Uploads that could not be waited for (the wait failed or hung): they may still run, so
    /// their memory is kept until teardown, which waits for them once more.
    pub stranded: Vec<PendingUpload<Staged>>,
    /// Caller surfaces (device ring slots) registered so far, at most `external_cap`.
    pub external: Vec<External>,
    external_cap: usize,
    /// Counts mappings of caller surfaces, for evicting the one used least recently.
    clock: u64,
    /// What every registration describes: the frame size and buffer format.
    width: u32,
    height: u32,
    format: sys::NV_ENC_BUFFER_FORMAT,
    /// The surfaces' memory, freed after the session is destroyed (fields drop after `raw`);
    /// also the memory of a caller's surface whose unregistration failed.
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
        progress: &super::bounded::Progress,
    ) -> Result<(Self, Vec<u8>), crate::error::Error> {
        use crate::error::Error;
        let kind = crate::encoder::EncoderKind::Nvenc;
        let cuda_err = |e: crate::cuda::CudaError| super::fail::cuda_error(e);
        let (width, height) = (plan.init.params.encodeWidth, plan.init.params.encodeHeight);
        let slots = plan.surfaces;
        let rows = height as usize * 3 / 2;
        let mut memory = Vec::with_capacity(slots);
        progress.at("cuMemAllocPitch_v2");
        for _ in 0..slots {
            memory.push(Arc::new(
                PitchedBuffer::new(context, width as usize, rows).map_err(cuda_err)?,
            ));
        }
        // Staging buffers come on first need (see `staging_allocated`); room for all of them now,
        // so the per-frame path never grows the list.
        let free_staging = Vec::with_capacity(slots);
        let mut session = NvencSession {
            raw,
            surfaces: Vec::with_capacity(slots),
            free_surfaces: (0..slots).collect(),
            free_staging,
            staging_allocated: 0,
            staging_len,
            free_outputs: Vec::with_capacity(slots),
            pending: VecDeque::new(),
            ready: 0,
            peak_in_flight: 0,
            retired: Vec::new(),
            hung_at: None,
            limbo: None,
            stranded: Vec::new(),
            external: Vec::new(),
            external_cap: MIN_REGISTRATION_CACHE.max(slots + 1),
            clock: 0,
            width,
            height,
            format: plan.format,
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
        progress.at("nvEncGetSequenceParams");
        let headers = session
            .raw
            .sequence_params()
            .map_err(super::fail::call_err)?;
        for surface in memory {
            progress.at("nvEncRegisterResource");
            let reg = session
                .raw
                .register_cuda(surface, width, height, plan.format);
            // On an error `session` drops here, which undoes what was done so far.
            session.surfaces.push(Some(reg.map_err(Error::Nvenc)?));
            progress.at("nvEncCreateBitstreamBuffer");
            let output = session
                .raw
                .create_bitstream_buffer()
                .map_err(Error::Nvenc)?;
            session.free_outputs.push(output);
        }
        progress.at("nvEncSetIOCudaStreams");
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
                None => match self.raw.upload_done(upload) {
                    Ok(source) => source,
                    Err((upload, e)) => {
                        tracing::warn!(error = %e, "an upload could not be waited for; its memory is kept until teardown");
                        self.stranded.push(upload);
                        None
                    }
                },
            };
            if let Some(Either::Left(staging)) = source {
                self.free_staging.push(staging);
            }
        }
        let surface = flight.surface;
        match flight.mapped.take().map(|m| self.raw.unmap(m)) {
            Some(Err((mapped, e))) => {
                tracing::warn!(
                    error = %e, surface = ?surface,
                    "nvEncUnmapInputResource failed; the surface is retired and unmapped at teardown"
                );
                if let Surface::External(ptr) = surface {
                    if let Some(entry) = self.external.iter_mut().find(|e| e.ptr == ptr) {
                        entry.retired = true;
                    }
                }
                self.retired.push((mapped, surface));
            }
            Some(Ok(())) | None => match surface {
                Surface::Own(index) => self.free_surfaces.push_back(index),
                Surface::External(ptr) => {
                    if let Some(entry) = self.external.iter_mut().find(|e| e.ptr == ptr) {
                        entry.mapped = false;
                    }
                }
            },
        }
        // The caller's slot goes back to its ring only now: its bitstream was read back (or it
        // was never submitted) and its surface is no longer mapped.
        drop(flight.lease.take());
        drop(flight.pinned.take());
    }

    /// Whether the caller's surface at `ptr` is mapped for a picture in flight (or retired).
    pub(crate) fn external_busy(&self, ptr: u64) -> bool {
        self.external
            .iter()
            .any(|e| e.ptr == ptr && (e.mapped || e.retired))
    }

    /// Maps a caller's device surface (`memory`, a device ring slot's allocation), registering
    /// it first unless it is registered already (`NV_ENC_INPUT_RESOURCE_TYPE_CUDADEVICEPTR` at
    /// the surface's pitch, with the session's size and format); when the cache is full, the
    /// registration used least recently that is not mapped is unregistered first. The surface
    /// must not be mapped already ([`NvencSession::external_busy`]).
    pub(crate) fn map_external(
        &mut self,
        memory: &Arc<PitchedBuffer>,
    ) -> Result<(Mapped, Surface), CallError> {
        let ptr = memory.surface().device_ptr;
        self.clock += 1;
        let at = match self
            .external
            .iter()
            .position(|e| e.ptr == ptr && Arc::ptr_eq(e.reg.memory(), memory))
        {
            Some(at) => at,
            None => {
                if self.external.len() >= self.external_cap {
                    self.evict_external()?;
                }
                let reg = self.raw.register_cuda(
                    Arc::clone(memory),
                    self.width,
                    self.height,
                    self.format,
                )?;
                self.external.push(External {
                    ptr,
                    reg,
                    last_used: 0,
                    mapped: false,
                    retired: false,
                });
                self.external.len() - 1
            }
        };
        let clock = self.clock;
        let Some(entry) = self.external.get_mut(at) else {
            return Err(unregistered(at).into());
        };
        if entry.mapped || entry.retired {
            return Err(CallError::Failed(NvencError::new(
                "nvEncMapInputResource",
                sys::NVENCSTATUS::NV_ENC_ERR_MAP_FAILED,
                format!("the surface at {ptr:#x} is still mapped for an earlier picture"),
            )));
        }
        let mapped = self.raw.map(&entry.reg)?;
        entry.mapped = true;
        entry.last_used = clock;
        Ok((mapped, Surface::External(ptr)))
    }

    /// Unregisters the cached registration used least recently that is not mapped.
    fn evict_external(&mut self) -> Result<(), NvencError> {
        let victim = self
            .external
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.mapped && !e.retired)
            .min_by_key(|(_, e)| e.last_used)
            .map(|(at, _)| at);
        let Some(at) = victim else {
            return Err(NvencError::new(
                "nvEncRegisterResource",
                sys::NVENCSTATUS::NV_ENC_ERR_RESOURCE_REGISTER_FAILED,
                format!(
                    "all {} cached registrations of device slots are mapped or retired",
                    self.external.len()
                ),
            ));
        };
        let entry = self.external.swap_remove(at);
        if let Err((reg, e)) = self.raw.unregister(entry.reg) {
            // Left to nvEncDestroyEncoder; its memory stays allocated until then.
            tracing::warn!(error = %e, ptr = entry.ptr, "nvEncUnregisterResource of a cached device slot failed");
            self._memory.push(Arc::clone(reg.memory()));
        }
        Ok(())
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
        for (mapped, surface) in std::mem::take(&mut self.retired) {
            if let Err((mapped, e)) = self.raw.unmap(mapped) {
                tracing::warn!(error = %e, surface = ?surface, "nvEncUnmapInputResource failed at teardown; trying again");
                if let Err((_, e)) = self.raw.unmap(mapped) {
                    tracing::warn!(error = %e, surface = ?surface, "nvEncUnmapInputResource failed twice; left to nvEncDestroyEncoder");
                }
            }
        }
        // The session's own surfaces, then the caller's device slots registered on the way.
        let own = std::mem::take(&mut self.surfaces).into_iter().flatten();
        let external = std::mem::take(&mut self.external)
            .into_iter()
            .map(|e| e.reg);
        for reg in own.chain(external) {
            if let Err((reg, e)) = self.raw.unregister(reg) {
                tracing::warn!(error = %e, "nvEncUnregisterResource failed at teardown; trying again");
                if let Err((reg, e)) = self.raw.unregister(reg) {
                    tracing::warn!(error = %e, "nvEncUnregisterResource failed twice; left to nvEncDestroyEncoder");
                    // Still registered: its memory is freed only after the session is destroyed.
                    self._memory.push(Arc::clone(reg.memory()));
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

    /// Hands the session, with everything it owns, to the watchdog's worker, which tears it down
    /// in the API's order: at once when no call hung (the caller waits at most the watchdog's
    /// deadline for that; a teardown call may hang too), or, when one hung, if that call ever
    /// returns. (Without a watchdog, the session is torn down here, on the caller's thread.)
    /// Returns whether the teardown finished.
    pub(crate) fn hand_over(mut self, stream: Stream, context: Context) -> bool {
        let Some(watchdog) = self.raw.take_watchdog() else {
            return true;
        };
        // The caller's ring slots go back to their rings now, or a producer feeding the next
        // encoder would wait forever for slots a hung call keeps (the ring gives slots back in
        // order). Their memory stays: a device slot's with its registration (which holds the
        // allocation), a pinned slot's with the ring storage held. The producer may write them
        // again; the abandoned pictures' output is never read. (After a clean drain nothing is
        // pending.)
        for flight in self.pending.iter_mut().chain(self.limbo.as_mut()) {
            flight.lease = None;
            flight.pinned = None;
            if let Some(upload) = flight.upload.as_mut() {
                upload.map_source(|source| match source {
                    Either::Right(SlotUpload::Lease(lease)) => {
                        Either::Right(SlotUpload::Released(lease.hold_storage()))
                    }
                    other => other,
                });
            }
        }
        let hung = watchdog.hung();
        let abandoned = Abandoned {
            session: Some(self),
            stream,
            context,
            late: LateEnd::Unknown,
        };
        if let Some(hung) = hung {
            tracing::error!(
                call = hung.call,
                "NVENC session abandoned with a call still inside the driver: its session, \
                 surfaces, stream and worker thread stay until the call returns or the process \
                 exits"
            );
        }
        let finished = watchdog.abandon(move |reply| {
            let mut abandoned = abandoned;
            abandoned.late = LateEnd::of(reply);
            // Dropped here, on the worker: the teardown.
        });
        if hung.is_none() && !finished {
            tracing::error!(
                "tearing down the NVENC session did not finish within the call deadline: a \
                 teardown call is inside the driver; the worker thread keeps the session, its \
                 surfaces and stream, and finishes the teardown if the call returns"
            );
        }
        finished
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
            if let Some(flight) = session.limbo.take() {
                // Never submitted: its output is not locked; its mapping, if the hung map made
                // one, goes with the session.
                session.release(flight, None);
            }
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
