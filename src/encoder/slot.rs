//! [`SlotFrame`]: a frame in a ring slot, as [`VideoEncoder::encode_slot`](super::VideoEncoder::encode_slot) takes it, and the
//! checks of a device slot's surface.

use std::sync::Arc;

use super::{count_host_copy, layout, EncoderConfig, EncoderKind, Frame};
use crate::error::Error;
use crate::ring_buffer::{
    DeviceStorage, FrameFlags, FrameMeta, HostStorage, PinnedStorage, ReadSlot,
};

/// A frame in a ring slot, for [`VideoEncoder::encode_slot`](super::VideoEncoder::encode_slot): a shared [`ReadSlot`] lease on a
/// host, pinned or device ring (cloning it clones the lease; the slot is released when the last
/// clone drops).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SlotFrame {
    /// A slot of a ring in plain host memory.
    Host(Arc<ReadSlot<HostStorage>>),
    /// A slot of a ring in CUDA pinned memory: NVENC uploads from it directly.
    Pinned(Arc<ReadSlot<PinnedStorage>>),
    /// A slot of a ring in CUDA device memory ([`DeviceStorage`]), written by the producer on the
    /// storage's [stream](DeviceStorage::stream) before it was committed. The frame is laid out
    /// at the surface's pitch `p`: for NV12 `h` luma rows then `h / 2` interleaved chroma rows,
    /// all `p` bytes apart; for I420 `h` luma rows `p` apart, then the U and V planes, `h / 2`
    /// rows each, `p / 2` apart (NVENC's IYUV layout). The surface must be exactly `w` bytes by
    /// `h * 3 / 2` rows (`DeviceStorage::new(ctx, n, w, h * 3 / 2)`). NVENC registers the surface
    /// and encodes from it with no copy; other encoders download it ([`SlotFrame::host_bytes`]).
    /// [`FrameMeta::len`] is not used for a device slot.
    Device(Arc<ReadSlot<DeviceStorage>>),
}

impl SlotFrame {
    /// The slot's metadata.
    #[must_use]
    pub fn meta(&self) -> &FrameMeta {
        match self {
            SlotFrame::Host(s) => s.meta(),
            SlotFrame::Pinned(s) => s.meta(),
            SlotFrame::Device(s) => s.meta(),
        }
    }

    /// How many slots of this slot's ring an encoder should keep leased at most
    /// ([`ReadSlot::lease_budget`], set by the ring's consumer): an encoder that holds leases
    /// beyond `encode_slot` copies the oldest held frame rather than hold more.
    #[must_use]
    pub fn lease_budget(&self) -> usize {
        match self {
            SlotFrame::Host(s) => s.lease_budget(),
            SlotFrame::Pinned(s) => s.lease_budget(),
            SlotFrame::Device(s) => s.lease_budget(),
        }
    }

    /// Whether the slot's metadata asks for a keyframe ([`FrameFlags::FORCE_KEYFRAME`]).
    #[must_use]
    pub fn force_keyframe(&self) -> bool {
        self.meta().flags.contains(FrameFlags::FORCE_KEYFRAME)
    }

    /// The frame's bytes in host memory, when the slot is in host memory: the first
    /// [`FrameMeta::len`] bytes of the slot (the ring refuses a longer `len` at commit). `None`
    /// for a device slot, whose bytes the CPU cannot read (see [`SlotFrame::host_bytes`]).
    #[must_use]
    pub fn data(&self) -> Option<&[u8]> {
        let slot: &[u8] = match self {
            SlotFrame::Host(s) => s,
            SlotFrame::Pinned(s) => s,
            SlotFrame::Device(_) => return None,
        };
        Some(slot.get(..self.meta().len).unwrap_or(slot))
    }

    /// The frame as [`VideoEncoder::encode`](super::VideoEncoder::encode) takes it, when its bytes are in host memory: the
    /// slot's bytes, `pts` from the metadata and the force-keyframe flag. `None` for a device
    /// slot (see [`SlotFrame::frame_from`]).
    #[must_use]
    pub fn frame(&self) -> Option<Frame<'_>> {
        self.data().map(|data| self.frame_from(data))
    }

    /// The slot's frame with its bytes in `data` (e.g. a device slot's download): `pts` from
    /// the metadata and the force-keyframe flag.
    pub fn frame_from<'a>(&self, data: &'a [u8]) -> Frame<'a> {
        Frame {
            data,
            pts: Some(self.meta().pts),
            force_keyframe: self.force_keyframe(),
        }
    }

    /// The frame's bytes in host memory, tightly packed as [`Frame::data`] for `config`: borrowed
    /// from a host or pinned slot (no copy), or downloaded from a device slot's surface, for an
    /// encoder that reads host memory. The download is one device-to-host copy
    /// (`cuMemcpy2DAsync` per plane on the storage's stream, so after the producer's writes,
    /// then `cuStreamSynchronize`, which waits as long as the GPU takes), into a new buffer, and
    /// is counted as a host copy. `kind` names the encoder in errors.
    ///
    /// # Errors
    /// [`Error::FrameSize`] when a device slot's surface does not hold one frame of `config`
    /// (its `frame_index` is then the slot's [`FrameMeta::seq`], the encoder's own index not
    /// being known here); [`Error::Backend`] naming the CUDA call when the download fails.
    pub fn host_bytes(
        &self,
        config: &EncoderConfig,
        kind: EncoderKind,
    ) -> Result<std::borrow::Cow<'_, [u8]>, Error> {
        let slot = match self {
            SlotFrame::Device(slot) => slot,
            _ => return Ok(std::borrow::Cow::Borrowed(self.data().unwrap_or_default())),
        };
        check_device_surface(&slot.surface(), config, slot.meta().seq)?;
        let surface = slot.surface();
        let len = config.validate()?;
        let (planes, n) =
            layout::plane_copies(config, surface.pitch, config.resolution.width as usize);
        let buffer = slot.storage().buffer(slot.index());
        let bytes =
            crate::cuda::download_planes(buffer, &planes[..n], len, slot.storage().stream())
                .map_err(|e| Error::Backend {
                    backend: kind,
                    call: match &e {
                        crate::cuda::CudaError::Call { call, .. } => call,
                        _ => "cuMemcpy2DAsync",
                    },
                    message: format!("downloading a device slot to host memory failed: {e}"),
                })?;
        count_host_copy();
        Ok(std::borrow::Cow::Owned(bytes))
    }
}

/// Checks that a device slot's surface holds exactly one frame of `config` in the layout
/// [`SlotFrame::Device`] describes, at a pitch NVENC can register (at least the width and a
/// multiple of 4: nvEncodeAPI.h 11.1, `NV_ENC_REGISTER_RESOURCE::pitch`, lines 2149-2154; a
/// multiple of 4 is even, as I420's half-pitch chroma needs).
///
/// # Errors
/// [`Error::FrameSize`] with `frame_index`: `expected` is the frame's tightly packed length,
/// `actual` the surface's `width_bytes * rows`, or `pitch * rows` when only the pitch is wrong.
pub(crate) fn check_device_surface(
    surface: &crate::cuda::DeviceSurface,
    config: &EncoderConfig,
    frame_index: u64,
) -> Result<(), Error> {
    let width = config.resolution.width as usize;
    let rows = config.resolution.height as usize * 3 / 2;
    let expected = config.validate()?;
    let error = |actual: usize| {
        tracing::debug!(
            frame_index,
            width_bytes = surface.width_bytes,
            rows = surface.rows,
            pitch = surface.pitch,
            expected_width = width,
            expected_rows = rows,
            "a device slot does not hold a frame of the configuration"
        );
        Err(Error::FrameSize {
            frame_index,
            expected,
            actual,
            resolution: config.resolution,
            format: config.pixel_format,
        })
    };
    if surface.width_bytes != width || surface.rows != rows {
        return error(surface.width_bytes.saturating_mul(surface.rows));
    }
    if surface.pitch < width || surface.pitch % 4 != 0 || u32::try_from(surface.pitch).is_err() {
        return error(surface.pitch.saturating_mul(surface.rows));
    }
    Ok(())
}

impl From<ReadSlot<HostStorage>> for SlotFrame {
    fn from(slot: ReadSlot<HostStorage>) -> Self {
        SlotFrame::Host(Arc::new(slot))
    }
}

impl From<ReadSlot<PinnedStorage>> for SlotFrame {
    fn from(slot: ReadSlot<PinnedStorage>) -> Self {
        SlotFrame::Pinned(Arc::new(slot))
    }
}

impl From<ReadSlot<DeviceStorage>> for SlotFrame {
    fn from(slot: ReadSlot<DeviceStorage>) -> Self {
        SlotFrame::Device(Arc::new(slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::{EncodedChunk, VideoEncoder};
    use crate::ring_buffer::FrameRing;

    /// Counts which entry each frame came through.
    struct Probe {
        config: EncoderConfig,
        by_slot: usize,
        by_bytes: usize,
    }

    impl VideoEncoder for Probe {
        fn encode(&mut self, _: Frame<'_>, _: &mut Vec<EncodedChunk>) -> Result<(), Error> {
            self.by_bytes += 1;
            Ok(())
        }
        fn encode_slot(&mut self, _: &SlotFrame, _: &mut Vec<EncodedChunk>) -> Result<(), Error> {
            self.by_slot += 1;
            Ok(())
        }
        fn flush(&mut self, _: &mut Vec<EncodedChunk>) -> Result<(), Error> {
            Ok(())
        }
        fn kind(&self) -> EncoderKind {
            EncoderKind::X264
        }
        fn config(&self) -> &EncoderConfig {
            &self.config
        }
        fn sequence_headers(&self) -> &[u8] {
            &[]
        }
    }

    fn slot(pts: i64, flags: FrameFlags) -> SlotFrame {
        let (mut p, mut c) = FrameRing::new(1, 16).unwrap();
        let mut w = p.try_reserve().unwrap();
        w[..4].copy_from_slice(&[1, 2, 3, 4]);
        w.commit(FrameMeta {
            len: 4,
            pts,
            seq: 0,
            flags,
        })
        .unwrap();
        SlotFrame::from(c.try_pop().unwrap())
    }

    #[test]
    fn a_slot_frame_is_its_slots_bytes_pts_and_flag() {
        let s = slot(7, FrameFlags::FORCE_KEYFRAME);
        let f = s.frame().unwrap();
        assert_eq!(f.data, &[1, 2, 3, 4]);
        assert_eq!(f.pts, Some(7));
        assert!(f.force_keyframe);
        assert!(!slot(0, FrameFlags::NONE).frame().unwrap().force_keyframe);
    }

    /// A wrapper that does not forward `encode_slot` silently runs the default (a copy).
    #[test]
    fn box_and_metered_forward_encode_slot() {
        let probe = || Probe {
            config: EncoderConfig::new(16, 16),
            by_slot: 0,
            by_bytes: 0,
        };
        let s = slot(0, FrameFlags::NONE);
        let mut out = Vec::new();
        let mut boxed: Box<Probe> = Box::new(probe());
        boxed.encode_slot(&s, &mut out).unwrap();
        assert_eq!((boxed.by_slot, boxed.by_bytes), (1, 0));
        let mut metered = crate::metrics::Metered::new(probe());
        metered.encode_slot(&s, &mut out).unwrap();
        assert_eq!((metered.inner().by_slot, metered.inner().by_bytes), (1, 0));
    }
}
