//! The input side of [`NvencEncoder`]: uploading a host frame into an input surface, or taking
//! a caller's device slot as it is, mapping it and submitting the picture.

use std::sync::Arc;

use nvenc_sys as sys;

use super::super::api::{CallError, PictureInput, Submitted};
use super::super::fail::cuda_error;
use super::super::session::{self, HungAt, InFlight, NvencSession, SlotUpload, Staged, Surface};
use super::super::NvencError;
use super::{NvencEncoder, KIND};
use crate::cuda::{self, Either, Plane, PlaneSource};
use crate::encoder::EncodedChunk;
use crate::error::Error;
use crate::ring_buffer::{DeviceStorage, ReadSlot};

impl NvencEncoder {
    /// The one submit path, over a plane source (a host buffer or device memory): makes room,
    /// queues the copies of the frame's planes into a free input surface, maps it and submits it.
    pub(super) fn submit_frame(
        &mut self,
        source: PlaneSource<Staged>,
        src_pitch: usize,
        frame_index: u64,
        pts: i64,
        force_keyframe: bool,
        out: &mut Vec<EncodedChunk>,
    ) -> Result<(), Error> {
        let _context = self.enter()?;
        let result = self.copy_and_submit(source, src_pitch, frame_index, pts, force_keyframe, out);
        if result.is_err() && !self.is_hung() {
            // A copy may still be queued: the staging buffer and the surface are only safe to
            // reuse once it ran. (Not after a hang: the GPU may be as stuck as the driver.)
            let _ = self.synchronize();
        }
        result
    }

    fn copy_and_submit(
        &mut self,
        source: PlaneSource<Staged>,
        src_pitch: usize,
        frame_index: u64,
        pts: i64,
        force_idr: bool,
        out: &mut Vec<EncodedChunk>,
    ) -> Result<(), Error> {
        let give_back = |session: &mut NvencSession, source: Option<Staged>| {
            if let Some(Either::Left(staging)) = source {
                session.free_staging.push(staging);
            }
        };
        if let Err(e) = self.make_room(true, out) {
            if let (PlaneSource::Host(staged), Some(session)) = (source, self.session.as_mut()) {
                give_back(session, Some(staged));
            }
            return Err(e);
        }
        let planes = self.planes(src_pitch);
        let stream = self.stream()?.clone();
        let session = self.session()?;
        let Some(index) = session.free_surfaces.pop_front() else {
            // `make_room` guarantees one; this is the driver holding more than it said.
            return Err(no_surface(session));
        };
        let Some(registered) = session.surfaces.get(index).and_then(Option::as_ref) else {
            return Err(Error::Nvenc(session::unregistered(index)));
        };
        let memory = Arc::clone(registered.memory());
        let mut planned =
            match cuda::plan_planes_async(source, &planes.0[..planes.1], &memory, &stream) {
                Ok(planned) => planned,
                Err((e, source)) => {
                    session.free_surfaces.push_front(index);
                    give_back(session, source);
                    return Err(cuda_error(e));
                }
            };
        // A caller's pinned slot: its lease stays here, with the picture, until the read-back;
        // the upload keeps only the ring's memory, so a hung upload cannot keep the slot from
        // its ring.
        let mut pinned = None;
        planned.map_source(|source| match source {
            Either::Right(SlotUpload::Lease(lease)) => {
                let hold = lease.hold_storage();
                pinned = Some(lease);
                Either::Right(SlotUpload::Released(hold))
            }
            other => other,
        });
        let upload = match session.raw.upload(planned) {
            Ok(upload) => upload,
            Err((Some(upload), CallError::Failed(e))) => {
                // Copies queued before the failure may still run: waited for before the
                // surface and the source are used again.
                match session.raw.upload_done(upload) {
                    Ok(source) => {
                        session.free_surfaces.push_front(index);
                        give_back(session, source);
                    }
                    Err((upload, _)) => session.stranded.push(upload),
                }
                return Err(self.fail(CallError::Failed(e)));
            }
            Err((_, e)) => {
                // Hung: the upload (and the memory it names) stays with the worker; so does
                // the surface, with the session, which is abandoned.
                return Err(self.fail(e));
            }
        };
        let pitch = pitch_u32(memory.surface().pitch)?;
        let mapped = match (session.free_outputs.pop(), session.surfaces.get(index)) {
            (Some(output), Some(Some(registered))) => match session.raw.map(registered) {
                Ok(m) => Ok((m, output)),
                Err(e) => {
                    session.free_outputs.push(output);
                    Err(e)
                }
            },
            (Some(output), _) => {
                session.free_outputs.push(output);
                Err(CallError::Failed(session::unregistered(index)))
            }
            (None, _) => Err(CallError::Failed(NvencError::new(
                "nvEncEncodePicture",
                sys::NVENCSTATUS::NV_ENC_ERR_OUT_OF_MEMORY,
                "no free output buffer".into(),
            ))),
        };
        let (mapped, output) = match mapped {
            Ok(pair) => pair,
            Err(hung @ CallError::Hung(_)) => {
                // The mapping may still be made: the surface and the upload stay with the
                // session, which is abandoned (see `NvencSession::limbo`).
                session.limbo = Some(InFlight {
                    surface: Surface::Own(index),
                    lease: None,
                    pinned: pinned.take(),
                    upload: Some(upload),
                    mapped: None,
                    output: None,
                });
                return Err(self.fail(hung));
            }
            Err(CallError::Failed(e)) => {
                let e = Error::Nvenc(e);
                // Nothing was submitted: the frame is not accepted, the session unchanged.
                let flight = InFlight {
                    surface: Surface::Own(index),
                    lease: None,
                    pinned: pinned.take(),
                    upload: Some(upload),
                    mapped: None,
                    output: None,
                };
                session.release(flight, None);
                return Err(e);
            }
        };
        let flight = InFlight {
            surface: Surface::Own(index),
            lease: None,
            pinned,
            upload: Some(upload),
            mapped: Some(mapped),
            output: Some(output),
        };
        self.submit_flight(flight, pitch, frame_index, pts, force_idr, out)
    }

    /// Encodes a frame from a caller's device slot, whose surface has been checked against the
    /// configuration and whose context is the encoder's: orders the encoder's stream after the
    /// producer's, maps the slot's surface (registering it on first sight) and submits it, the
    /// picture holding the lease. No copy.
    pub(super) fn submit_slot(
        &mut self,
        lease: &Arc<ReadSlot<DeviceStorage>>,
        frame_index: u64,
        pts: i64,
        force_idr: bool,
        out: &mut Vec<EncodedChunk>,
    ) -> Result<(), Error> {
        let _context = self.enter()?;
        self.make_room(false, out)?;
        let memory = lease.storage().buffer(lease.index());
        let ptr = memory.surface().device_ptr;
        // The same slot given again while its earlier picture is in flight: read back until that
        // picture is done, if the encoder can.
        while self.session()?.external_busy(ptr) {
            let session = self.session()?;
            if session.ready == 0 || session.pending.is_empty() {
                return Err(Error::Unsupported {
                    backend: KIND,
                    feature: "encoding a device slot again while its earlier picture is held \
                              for reordering (give each frame its own slot)",
                });
            }
            self.read_one(out)?;
        }
        let pitch = pitch_u32(memory.surface().pitch)?;
        // NVENC's input processing runs on the encoder's stream: after the producer's writes.
        self.stream()?
            .wait_for(lease.storage().stream())
            .map_err(|e| Error::Backend {
                backend: KIND,
                call: match &e {
                    cuda::CudaError::Call { call, .. } => call,
                    _ => "cuStreamWaitEvent",
                },
                message: format!("ordering NVENC after the device slot's stream failed: {e}"),
            })?;
        let session = self.session()?;
        let output = session.free_outputs.pop().ok_or_else(no_output)?;
        let (mapped, surface) = match session.map_external(memory) {
            Ok(pair) => pair,
            Err(e) => {
                // Nothing was submitted: the frame is not accepted, the session unchanged (after
                // a hang the mapping may still be made: the session is abandoned).
                session.free_outputs.push(output);
                return Err(match e {
                    CallError::Failed(e) => Error::Nvenc(e),
                    hung @ CallError::Hung(_) => self.fail(hung),
                });
            }
        };
        let flight = InFlight {
            surface,
            lease: Some(Arc::clone(lease)),
            pinned: None,
            upload: None,
            mapped: Some(mapped),
            output: Some(output),
        };
        self.submit_flight(flight, pitch, frame_index, pts, force_idr, out)
    }

    /// Submits a picture whose input is mapped and whose output buffer is taken; on success it
    /// is pending, and outputs `extra_output_delay` behind are read back.
    fn submit_flight(
        &mut self,
        flight: InFlight,
        pitch: u32,
        frame_index: u64,
        pts: i64,
        force_idr: bool,
        out: &mut Vec<EncodedChunk>,
    ) -> Result<(), Error> {
        let (w, h) = (self.config.resolution.width, self.config.resolution.height);
        let session = self.session()?;
        let (Some(mapped), Some(output)) = (flight.mapped.as_ref(), flight.output.as_ref()) else {
            session.release(flight, None);
            return Err(no_output());
        };
        let picture = PictureInput {
            input: mapped,
            output,
            width: w,
            height: h,
            pitch,
            timestamp: frame_index,
            force_idr,
            output_spspps: force_idr,
        };
        let submitted = session.raw.encode_picture(&picture);
        match submitted {
            Ok(state) => {
                session.pending.push_back(flight);
                session.peak_in_flight = session.peak_in_flight.max(session.pending.len());
                if state == Submitted::OutputReady {
                    session.ready = session.pending.len();
                }
            }
            Err(CallError::Failed(e)) if e.kind() == super::super::NvencErrorKind::InvalidParam => {
                // A rejected parameter leaves the session as it was: the frame is not accepted
                // and the encoder stays usable.
                session.release(flight, None);
                return Err(Error::Nvenc(e));
            }
            Err(CallError::Failed(e)) => {
                // A device error, or the busy retries used up: earlier pictures may be stuck in
                // the driver. This frame was not taken; the encoder has failed.
                session.release(flight, None);
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

    /// The planes of a frame whose luma rows are `src_pitch` bytes apart, as copies into an
    /// input surface of pitch `dst_pitch`: one for NV12 (luma and interleaved chroma share the
    /// pitch), three for I420 (chroma at half the pitch, as NVENC's IYUV layout has). A fixed
    /// array and a count, so the per-frame path allocates nothing.
    fn planes(&self, src_pitch: usize) -> ([Plane; 3], usize) {
        let dst_pitch = self
            .session
            .as_ref()
            .and_then(|s| s.surfaces.iter().flatten().next())
            .map_or(0, |r| r.memory().surface().pitch);
        crate::encoder::layout::plane_copies(&self.config, src_pitch, dst_pitch)
    }
}

pub(super) fn no_surface(session: &NvencSession) -> Error {
    Error::Backend {
        backend: KIND,
        call: "nvEncEncodePicture",
        message: format!(
            "every input surface is in flight or retired ({} retired after a failed unmap) and \
             no output is ready",
            session.retired.len()
        ),
    }
}

pub(super) fn no_output() -> Error {
    Error::Backend {
        backend: KIND,
        call: "nvEncEncodePicture",
        message: "no free output buffer".into(),
    }
}

fn pitch_u32(pitch: usize) -> Result<u32, Error> {
    u32::try_from(pitch).map_err(|_| Error::Backend {
        backend: KIND,
        call: "cuMemAllocPitch",
        message: format!("pitch {pitch} does not fit in 32 bits"),
    })
}
