//! The output side of [`NvencEncoder`]: reading back bitstreams in submission order, which is
//! also how input surfaces and staging buffers become free again.

use nvenc_sys as sys;

use super::super::api::{CallError, LockedInfo};
use super::super::session::HungAt;
use super::super::NvencError;
use super::{no_surface, NvencEncoder, KIND};
use crate::cuda;
use crate::encoder::{EncodedChunk, FrameType};
use crate::error::Error;

impl NvencEncoder {
    /// Reads back outputs until an output buffer and, when `surface` (not for a device slot,
    /// which brings its own), an input surface of the session are free for the next frame.
    pub(super) fn make_room(
        &mut self,
        surface: bool,
        out: &mut Vec<EncodedChunk>,
    ) -> Result<(), Error> {
        loop {
            let session = self.session()?;
            if (!surface || !session.free_surfaces.is_empty()) && !session.free_outputs.is_empty() {
                return Ok(());
            }
            if session.ready == 0 || session.pending.is_empty() {
                // The pool was sized for every frame NVENC may hold; reaching this means the
                // driver held more than it said it would, or too many surfaces were retired.
                return Err(no_surface(session));
            }
            self.read_one(out)?;
        }
    }

    /// A staging buffer for a host frame: a free one, a new one while fewer than one per surface
    /// exist (allocated on the session's worker, bounded like every driver call), or, reading
    /// back outputs, one given back.
    pub(super) fn staging(
        &mut self,
        out: &mut Vec<EncodedChunk>,
    ) -> Result<cuda::PinnedBuffer, Error> {
        loop {
            let session = self.session()?;
            if let Some(buffer) = session.free_staging.pop() {
                return Ok(buffer);
            }
            if session.staging_allocated < session.surfaces.len() {
                let len = session.staging_len;
                match session.raw.pinned(len) {
                    Ok(buffer) => {
                        session.staging_allocated += 1;
                        return Ok(buffer);
                    }
                    Err(e) => return Err(self.fail(e)),
                }
            }
            if session.ready == 0 || session.pending.is_empty() {
                return Err(Error::Backend {
                    backend: KIND,
                    call: "staging",
                    message: "every pinned staging buffer is in flight and no output is ready"
                        .into(),
                });
            }
            self.read_one(out)?;
        }
    }

    /// Locks the oldest ready output, appends its chunk, and frees what its picture held.
    pub(super) fn read_one(&mut self, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        let session = self.session()?;
        let Some(flight) = session.pending.pop_front() else {
            return Ok(());
        };
        let mut data = Vec::new();
        let read = match flight.output.as_ref() {
            Some(output) => session.raw.read_bitstream(output, &mut data),
            None => Err(CallError::Failed(NvencError::new(
                "nvEncLockBitstream",
                sys::NVENCSTATUS::NV_ENC_ERR_INVALID_PARAM,
                "a pending picture without an output buffer".into(),
            ))),
        };
        let info: LockedInfo = match read {
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
        session.release(flight, Some(&info));
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

    pub(super) fn read_all(&mut self, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        while self.session()?.pending.front().is_some() {
            self.read_one(out)?;
        }
        Ok(())
    }
}
