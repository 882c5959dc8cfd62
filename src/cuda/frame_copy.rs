//! Copies of one frame from a producer's own device memory into a ring slot's surface: the checked
//! core behind the slot methods (`WriteSlot<DeviceStorage>::copy_from_device`,
//! `DeviceFrameSlot::copy_from_device` and their raw-pointer forms).
//!
//! A source from cudarc ([`CudaBytes`]) is copied safely: its length is known, and the copy is
//! ordered on both sides. The slot's stream first waits for the source's own stream (so the copy
//! reads what the producer's kernels wrote there), the copy is queued on the slot's stream, and
//! the source's stream then waits for the slot's stream (so the source's later writes and its
//! free, which cudarc queues on that stream, come after the copy). With cudarc's event tracking
//! on (its default in a context with several streams), cudarc's own read/write events order the
//! copy against the source's use on any other stream as well.

use std::fmt;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr};

use super::copy::{copy_2d_async, Source};
use super::{call, save_current, CudaError, DeviceSurface, Plane, Stream};

/// How one frame lies in a pitched surface, and so in a source at its own pitch: what the slot
/// copies read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameLayout {
    /// One plane of `rows` rows of `width_bytes` bytes (a storage made by
    /// [`DeviceStorage::new`](crate::ring_buffer::DeviceStorage::new), which knows no pixel
    /// format).
    Rows {
        /// Bytes of payload in a row.
        width_bytes: usize,
        /// Number of rows.
        rows: usize,
    },
    /// NV12 of `width × height`: `height` luma rows, then `height / 2` rows of interleaved
    /// chroma, every row one pitch apart.
    Nv12 {
        /// Width in pixels (bytes of a row).
        width: usize,
        /// Height in pixels (luma rows).
        height: usize,
    },
    /// I420 of `width × height`: `height` luma rows one pitch apart, then the U and V planes,
    /// `height / 2` rows of `width / 2` bytes each, half a pitch apart (NVENC's IYUV layout);
    /// the pitch must be even.
    I420 {
        /// Width in pixels (bytes of a luma row).
        width: usize,
        /// Height in pixels (luma rows).
        height: usize,
    },
}

impl fmt::Display for FrameLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameLayout::Rows { width_bytes, rows } => {
                write!(f, "{width_bytes}-byte x {rows}-row")
            }
            FrameLayout::Nv12 { width, height } => write!(f, "{width}x{height} nv12"),
            FrameLayout::I420 { width, height } => write!(f, "{width}x{height} yuv420p"),
        }
    }
}

impl FrameLayout {
    /// The smallest pitch a source (or destination) of this layout may have, and whether it
    /// must be even.
    #[must_use]
    pub fn min_pitch(self) -> (usize, bool) {
        match self {
            FrameLayout::Rows { width_bytes, .. } => (width_bytes, false),
            FrameLayout::Nv12 { width, .. } => (width, false),
            FrameLayout::I420 { width, .. } => (width, true),
        }
    }

    /// The planes of one frame copied from a source at `src_pitch` into a surface at
    /// `dst_pitch`, and the bytes the source must hold; `None` when a size overflows.
    fn planes(self, src_pitch: usize, dst_pitch: usize) -> Option<(Vec<Plane>, usize)> {
        let plane = |src_offset, src_pitch, dst_offset, dst_pitch, width, rows| Plane {
            src_offset,
            src_pitch,
            dst_offset,
            dst_pitch,
            width,
            rows,
        };
        let planes = match self {
            FrameLayout::Rows { width_bytes, rows } => {
                vec![plane(0, src_pitch, 0, dst_pitch, width_bytes, rows)]
            }
            FrameLayout::Nv12 { width, height } => {
                let rows = height.checked_mul(3)? / 2;
                vec![plane(0, src_pitch, 0, dst_pitch, width, rows)]
            }
            FrameLayout::I420 { width, height } => {
                let (sc, dc, ch) = (src_pitch / 2, dst_pitch / 2, height / 2);
                let (src_u, dst_u) = (
                    src_pitch.checked_mul(height)?,
                    dst_pitch.checked_mul(height)?,
                );
                let (src_v, dst_v) = (
                    src_u.checked_add(sc.checked_mul(ch)?)?,
                    dst_u.checked_add(dc.checked_mul(ch)?)?,
                );
                vec![
                    plane(0, src_pitch, 0, dst_pitch, width, height),
                    plane(src_u, sc, dst_u, dc, width / 2, ch),
                    plane(src_v, sc, dst_v, dc, width / 2, ch),
                ]
            }
        };
        let mut needed = 0usize;
        for p in &planes {
            let end = p
                .src_pitch
                .checked_mul(p.rows.saturating_sub(1))
                .and_then(|b| b.checked_add(p.width))
                .and_then(|b| b.checked_add(p.src_offset))?;
            needed = needed.max(end);
        }
        Some((planes, needed))
    }
}

/// Why a frame could not be copied into a slot. Nothing was queued, except for
/// [`FrameCopyError::Cuda`] after the driver refused one of a frame's plane copies (the slot
/// then holds part of the frame).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum FrameCopyError {
    /// The source pitch is smaller than a row of the frame, or odd where the layout halves it.
    #[error(
        "invalid source pitch {pitch} for a {layout} frame (expected >= {min}{})",
        if *.even { " and even" } else { "" }
    )]
    InvalidPitch {
        /// The pitch given.
        pitch: usize,
        /// The slot's frame layout.
        layout: FrameLayout,
        /// The smallest valid pitch.
        min: usize,
        /// Whether the pitch must be even.
        even: bool,
    },
    /// The source holds fewer bytes than one frame at the given pitch.
    #[error(
        "source of {len} bytes is too short for a {layout} frame at pitch {pitch} (expected at \
         least {needed} bytes)"
    )]
    SourceTooShort {
        /// Bytes in the source.
        len: usize,
        /// Bytes one frame at `pitch` spans.
        needed: usize,
        /// The source pitch.
        pitch: usize,
        /// The slot's frame layout.
        layout: FrameLayout,
    },
    /// The source belongs to another CUDA context than the slot.
    #[error(
        "the source is memory of device {source_device}'s CUDA context, the slot of device \
         {slot_device}'s (expected a source in the slot's context)"
    )]
    OtherContext {
        /// Ordinal of the source's device.
        source_device: usize,
        /// Ordinal of the slot's device.
        slot_device: usize,
    },
    /// The slot's surface cannot hold a frame of the layout (not reached for a storage's own
    /// slots).
    #[error("the slot's surface {surface:?} cannot hold a {layout} frame")]
    SlotTooSmall {
        /// The slot's surface.
        surface: DeviceSurface,
        /// The frame layout asked for.
        layout: FrameLayout,
    },
    /// A CUDA call failed.
    #[error(transparent)]
    Cuda(#[from] CudaError),
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for cudarc::driver::CudaSlice<u8> {}
    impl Sealed for cudarc::driver::CudaView<'_, u8> {}
    impl Sealed for cudarc::driver::CudaViewMut<'_, u8> {}
}

/// Device bytes a slot can be filled from safely: cudarc's [`CudaSlice<u8>`], [`CudaView<u8>`]
/// and [`CudaViewMut<u8>`] (of the [`cudarc`](crate::cuda::cudarc) version this crate
/// re-exports). Their length is known and their stream orders their use, which is what makes
/// the copy safe; for any other device memory, see the slots' unsafe `copy_from_device_ptr`.
/// Sealed: implemented for those three types only.
pub trait CudaBytes: DevicePtr<u8> + sealed::Sealed {}

impl CudaBytes for CudaSlice<u8> {}
impl CudaBytes for CudaView<'_, u8> {}
impl CudaBytes for CudaViewMut<'_, u8> {}

/// Checks the pitch, the source's length (when known) and the slot, and returns the planes and
/// the bytes a source must hold.
fn plan(
    layout: FrameLayout,
    src_pitch: usize,
    src_len: Option<usize>,
    dst: &DeviceSurface,
) -> Result<(Vec<Plane>, usize), FrameCopyError> {
    let (min, even) = layout.min_pitch();
    if src_pitch < min || (even && src_pitch % 2 != 0) {
        return Err(FrameCopyError::InvalidPitch {
            pitch: src_pitch,
            layout,
            min,
            even,
        });
    }
    let too_small = FrameCopyError::SlotTooSmall {
        surface: *dst,
        layout,
    };
    let (dst_min, dst_even) = layout.min_pitch();
    if dst.pitch < dst_min || (dst_even && dst.pitch % 2 != 0) {
        return Err(too_small);
    }
    let too_short = |needed| FrameCopyError::SourceTooShort {
        len: src_len.unwrap_or(usize::MAX),
        needed,
        pitch: src_pitch,
        layout,
    };
    // A frame whose size overflows at this pitch is longer than any source.
    let (planes, needed) = layout
        .planes(src_pitch, dst.pitch)
        .ok_or_else(|| too_short(usize::MAX))?;
    if src_len.is_some_and(|len| len < needed) {
        return Err(too_short(needed));
    }
    let dst_len = dst.pitch.saturating_mul(dst.rows);
    for p in &planes {
        let end = p
            .dst_pitch
            .checked_mul(p.rows.saturating_sub(1))
            .and_then(|b| b.checked_add(p.width))
            .and_then(|b| b.checked_add(p.dst_offset));
        if end.is_none_or(|end| end > dst_len) {
            return Err(too_small);
        }
    }
    Ok((planes, needed))
}

/// Queues the copies of `planes` from device address `src` into `dst` on `stream`, stopping at
/// the first the driver refuses.
///
/// # Safety
/// `src` holds every plane (checked by the caller against its length, or the caller's
/// contract); it and `dst` stay allocated and unwritten by anything else until the stream has
/// run the copies; `dst` is device memory of `stream`'s context, and each plane lies inside it.
unsafe fn queue(
    src: u64,
    planes: &[Plane],
    dst: &DeviceSurface,
    stream: &Stream,
) -> Result<(), CudaError> {
    for p in planes {
        let target = DeviceSurface {
            device_ptr: dst.device_ptr + p.dst_offset as u64,
            pitch: p.dst_pitch,
            width_bytes: p.width,
            rows: p.rows,
        };
        let from = src
            .checked_add(p.src_offset as u64)
            .ok_or(CudaError::InvalidCopy {
                width_bytes: p.width,
                rows: p.rows,
                src_pitch: p.src_pitch,
                src_len: usize::MAX,
            })?;
        // SAFETY: this function's contract, plane by plane.
        unsafe { copy_2d_async(Source::Device(from), p.src_pitch, &target, stream) }?;
    }
    Ok(())
}

/// Copies one frame of `layout` from `src` (rows `src_pitch` apart) into the slot surface `dst`,
/// on the slot's `stream`, ordered after the source's stream and before its later work. The
/// caller's current CUDA context is current again when this returns.
///
/// The caller (a slot method) guarantees that `dst` is a slot surface of `stream`'s storage,
/// reserved by the producer, so nothing else reads or writes it until the slot is committed
/// and the reader has ordered itself after `stream`.
pub(crate) fn copy_from_cuda<S: CudaBytes + ?Sized>(
    src: &S,
    src_pitch: usize,
    dst: &DeviceSurface,
    layout: FrameLayout,
    stream: &Stream,
) -> Result<(), FrameCopyError> {
    let (planes, _needed) = plan(layout, src_pitch, Some(src.num_bytes()), dst)?;
    let slot_stream: &Arc<CudaStream> = &stream.0;
    let src_stream: &Arc<CudaStream> = src.stream();
    if src_stream.context().cu_ctx() != slot_stream.context().cu_ctx() {
        return Err(FrameCopyError::OtherContext {
            source_device: src_stream.context().ordinal(),
            slot_device: slot_stream.context().ordinal(),
        });
    }
    // cudarc makes its context current (`cuCtxSetCurrent`); the caller's comes back on return.
    let _callers = save_current()?;
    let same_stream = src_stream.cu_stream() == slot_stream.cu_stream();
    if !same_stream {
        // The copy reads what was queued on the source's stream before (its writer's kernels).
        slot_stream
            .join(src_stream)
            .map_err(call("cuStreamWaitEvent"))?;
    }
    // With cudarc's event tracking, this also waits for the source's last write on any stream,
    // and `_read` records the copy as a read of the source when it drops (after the copy).
    let (ptr, _read) = src.device_ptr(slot_stream);
    // SAFETY: every plane lies inside the source (its length is checked by `plan`) and inside
    // `dst` (`plan`); `dst` is the reserved slot's surface in the stream's context (this
    // function's caller). The source stays allocated and unwritten until the copy ran: the
    // source's own stream (where cudarc queues its free and its later writes) waits for the slot
    // stream below, and cudarc's read event (`_read`) orders its other streams after the copy.
    let queued = unsafe { queue(ptr, &planes, dst, stream) };
    drop(_read);
    if !same_stream {
        if let Err(e) = slot_stream.join(src_stream) {
            // The source's stream is not ordered after the copy: wait for the copy here, so
            // the source may be freed or rewritten as soon as this returns.
            tracing::warn!(error = %e, "ordering a source's stream after a slot copy failed");
            stream.synchronize()?;
        }
    }
    queued.map_err(FrameCopyError::from)
}

/// As [`copy_from_cuda`], from a raw device address whose length is unknown; no stream
/// ordering is added.
///
/// # Safety
/// `src` is device memory of `stream`'s context (or reachable from it) holding one frame of
/// `layout` at `src_pitch`, whose writes are ordered before the work queued on `stream` from
/// now on, and which stays allocated and unwritten until `stream` has run the copy; `dst` as for
/// [`copy_from_cuda`].
pub(crate) unsafe fn copy_from_device_ptr(
    src: u64,
    src_pitch: usize,
    dst: &DeviceSurface,
    layout: FrameLayout,
    stream: &Stream,
) -> Result<(), FrameCopyError> {
    let (planes, _needed) = plan(layout, src_pitch, None, dst)?;
    // SAFETY: the planes lie inside `dst` (`plan`) and inside the source (this function's
    // contract), which also covers the lifetimes.
    unsafe { queue(src, &planes, dst, stream) }.map_err(FrameCopyError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn surface(pitch: usize, width_bytes: usize, rows: usize) -> DeviceSurface {
        DeviceSurface {
            device_ptr: 0x1000,
            pitch,
            width_bytes,
            rows,
        }
    }

    #[test]
    fn i420_planes_and_source_length() {
        let layout = FrameLayout::I420 {
            width: 320,
            height: 240,
        };
        let (planes, needed) = plan(layout, 320, None, &surface(512, 320, 360)).expect("valid");
        assert_eq!(planes.len(), 3);
        assert_eq!(needed, 320 * 240 * 3 / 2, "tightly packed");
        assert_eq!(
            (planes[1].dst_offset, planes[1].dst_pitch),
            (512 * 240, 256)
        );
        assert_eq!(planes[2].src_offset, 320 * 240 + 160 * 120);
        let (_, needed) = plan(layout, 400, None, &surface(512, 320, 360)).expect("valid");
        assert_eq!(needed, 400 * 240 + 200 * 120 + 200 * 119 + 160);
    }

    #[test]
    fn bad_pitches_name_the_valid_range() {
        let layout = FrameLayout::I420 {
            width: 320,
            height: 240,
        };
        for pitch in [319, 321] {
            let e = plan(layout, pitch, None, &surface(512, 320, 360)).expect_err("invalid");
            assert!(
                matches!(e, FrameCopyError::InvalidPitch { pitch: p, min: 320, even: true, .. } if p == pitch),
                "{e:?}"
            );
            assert!(e.to_string().contains("expected >= 320 and even"), "{e}");
        }
        let nv12 = FrameLayout::Nv12 {
            width: 320,
            height: 240,
        };
        assert!(plan(nv12, 321, None, &surface(512, 320, 360)).is_ok());
        let e = plan(nv12, 320, Some(320 * 360 - 1), &surface(512, 320, 360)).expect_err("short");
        assert!(
            matches!(e, FrameCopyError::SourceTooShort { len, needed, pitch: 320, .. }
                if len == 320 * 360 - 1 && needed == 320 * 360),
            "{e:?}"
        );
        // A slot too small for the layout.
        assert!(matches!(
            plan(nv12, 320, None, &surface(512, 320, 240)),
            Err(FrameCopyError::SlotTooSmall { .. })
        ));
    }
}
