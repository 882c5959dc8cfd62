//! The encoder contract every backend implements: [`VideoEncoder`], its input [`Frame`], its
//! output [`EncodedChunk`], and the backend-neutral [`EncoderConfig`].
//!
//! # The contract
//! - Every frame that [`VideoEncoder::encode`] accepts (returns `Ok` for) comes out, in order of
//!   presentation timestamp, as exactly one [`EncodedChunk`] by the end of
//!   [`VideoEncoder::flush`].
//! - Output is appended to a caller-owned `Vec`, so one call may yield zero chunks (a frame held
//!   for B-frame reordering or pipelining), one, or several (a flush; a pipelined encoder
//!   catching up), and nothing is dropped because a call could return only one. Chunks appended
//!   before an error are left in the `Vec`.
//! - An `Err` from [`VideoEncoder::encode`] means the frame was **not accepted**, on every
//!   backend: it never comes out of that encoder (not from a later `encode`, not from `flush`),
//!   and sending it again, if the encoder is still usable, encodes it exactly once. Frames
//!   accepted before stay accepted.
//! - A rejected frame (wrong length, timestamp not increasing, a per-frame option the backend
//!   lacks: [`Error::FrameSize`], [`Error::NonMonotonicPts`], [`Error::Unsupported`]) is not
//!   encoded, and the encoder stays usable.
//! - Any other error is a failure of the encoder itself (a driver or library fault, a dead
//!   subprocess, a hung driver call: [`Error::Hung`]). The encoder may then be failed: every
//!   later call returns an error, and frames it accepted but had not yet returned are lost with
//!   it. [`crate::FallbackEncoder`] is the remedy: it keeps every accepted frame until its chunk
//!   is delivered, and on such a failure opens the next encoder and encodes them again, so its
//!   own `encode` returns `Ok` and nothing is lost.
//! - After `flush` the stream has ended: `encode` returns [`Error::Finished`].
//! - [`VideoEncoder::reconfigure`] changes the rate control of a running stream without losing
//!   a frame, or says [`Error::Unsupported`] and changes nothing; it is never a silent no-op.

pub(crate) mod config;
pub(crate) mod kind;
pub(crate) mod layout;
pub(crate) mod mapping;

use std::fmt;
use std::sync::Arc;

pub use config::{
    Bitrate, Codec, EncoderConfig, FrameLayout, FrameRate, PixelFormat, Plane, Preset, RateControl,
    RateControlMode, Resolution, Tune,
};
pub use kind::{EncoderKind, FfmpegH264Encoder};

use crate::error::{ConfigError, Error};
use crate::ring_buffer::{
    DeviceStorage, FrameFlags, FrameMeta, HostStorage, PinnedStorage, ReadSlot,
};

/// One raw input frame: tightly packed pixels in the configured format, plus per-frame options.
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct Frame<'a> {
    /// The pixels: exactly [`EncoderConfig::validate`]'s frame length.
    pub data: &'a [u8],
    /// Presentation timestamp in units of `1 / frame_rate`; `None` numbers frames 0, 1, 2, ...
    /// (continuing after the last given timestamp).
    pub pts: Option<i64>,
    /// Make this frame an IDR keyframe (with SPS/PPS before it).
    pub force_keyframe: bool,
}

impl<'a> Frame<'a> {
    /// A frame with automatic timestamp and no forced keyframe.
    pub const fn new(data: &'a [u8]) -> Self {
        Frame {
            data,
            pts: None,
            force_keyframe: false,
        }
    }

    /// Sets the presentation timestamp.
    pub const fn with_pts(mut self, pts: i64) -> Self {
        self.pts = Some(pts);
        self
    }

    /// Asks for an IDR keyframe at this frame.
    pub const fn with_force_keyframe(mut self) -> Self {
        self.force_keyframe = true;
        self
    }
}

impl<'a> From<&'a [u8]> for Frame<'a> {
    fn from(data: &'a [u8]) -> Self {
        Frame::new(data)
    }
}

/// The picture type of an encoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameType {
    /// An IDR picture: decoding can start here.
    Idr,
    /// An intra picture that is not an IDR.
    I,
    /// A predicted picture.
    P,
    /// A bi-predicted picture (arrives after the frames it references).
    B,
}

/// One encoded frame: an H.264 access unit in Annex B form.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedChunk {
    /// The access unit: NAL units with 4- or 3-byte start codes. Keyframes carry SPS and PPS in
    /// front, so a viewer can join at any keyframe.
    pub data: Vec<u8>,
    /// Presentation timestamp, in units of `1 / frame_rate` (see [`VideoEncoder::time_base`]).
    pub pts: i64,
    /// Decoding timestamp in the same units; may be negative with B-frames, and is never
    /// greater than `pts`.
    pub dts: i64,
    /// Duration in the same units (1 for a constant frame rate).
    pub duration: i64,
    /// True for an IDR picture: a muxer marks it as a sync sample.
    pub keyframe: bool,
    /// Picture type.
    pub frame_type: FrameType,
    /// The position of the input frame this came from (0 for the first frame accepted).
    pub frame_index: u64,
}

impl fmt::Debug for EncodedChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedChunk")
            .field("bytes", &self.data.len())
            .field("pts", &self.pts)
            .field("dts", &self.dts)
            .field("duration", &self.duration)
            .field("keyframe", &self.keyframe)
            .field("frame_type", &self.frame_type)
            .field("frame_index", &self.frame_index)
            .finish()
    }
}

/// A video encoder: raw frames in, H.264 chunks out. See the [module docs](self) for the
/// contract.
///
/// ```no_run
/// use nvencode::{EncoderChoice, EncoderConfig, VideoEncoder};
///
/// let config = EncoderConfig::new(1280, 720);
/// let mut encoder = nvencode::open_encoder(EncoderChoice::Auto, &config)?;
/// let frame = vec![128u8; config.validate()?];
/// let mut chunks = Vec::new();
/// for _ in 0..30 {
///     encoder.encode_frame(&frame, &mut chunks)?;
/// }
/// encoder.flush(&mut chunks)?;
/// assert_eq!(chunks.len(), 30);
/// # Ok::<(), nvencode::Error>(())
/// ```
pub trait VideoEncoder: Send {
    /// Encodes one frame, appending any chunks that became ready to `out`.
    ///
    /// # Errors
    /// Every error means the frame was not accepted (see the [contract](self)):
    /// [`Error::FrameSize`], [`Error::NonMonotonicPts`] or [`Error::Unsupported`] for a rejected
    /// frame (the encoder stays usable); [`Error::Finished`] after [`VideoEncoder::flush`]; a
    /// backend error otherwise, after which the encoder may be failed.
    fn encode(&mut self, frame: Frame<'_>, out: &mut Vec<EncodedChunk>) -> Result<(), Error>;

    /// Ends the stream, appending every chunk still held by the encoder to `out`.
    ///
    /// # Errors
    /// A backend error; chunks drained before it are left in `out`.
    fn flush(&mut self, out: &mut Vec<EncodedChunk>) -> Result<(), Error>;

    /// Which backend this is.
    fn kind(&self) -> EncoderKind;

    /// The configuration the encoder was opened with.
    fn config(&self) -> &EncoderConfig;

    /// The SPS and PPS (Annex B), for containers that store them out of band (e.g. MP4's
    /// `avcC`). Keyframes carry them in band as well.
    fn sequence_headers(&self) -> &[u8];

    /// Changes the rate control of the running stream: a new bit rate, maximum rate and VBV
    /// buffer for CBR or VBR (a network that degrades), without a new stream. The new setting
    /// applies from the next frame accepted (an encoder that still holds frames for lookahead or
    /// B-frames may code those with it too); no frame is lost. Whether the switch needs an IDR depends on the backend: NVENC and x264 change
    /// the rate in place (NVENC resets with an IDR only where the GPU lacks
    /// `NV_ENC_CAPS_SUPPORT_DYN_BITRATE_CHANGE`); the ffmpeg subprocess backends restart ffmpeg,
    /// so the next frame is an IDR with fresh SPS/PPS. On success, [`VideoEncoder::config`]
    /// reports the new setting.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid setting; [`Error::Unsupported`] when the backend cannot
    /// make this change mid-stream (by default, and e.g. a change of mode on x264): nothing
    /// changed and the encoder is still usable; [`Error::Finished`] after
    /// [`VideoEncoder::flush`]; a backend error otherwise.
    fn reconfigure(&mut self, rate_control: RateControl) -> Result<(), Error> {
        rate_control.validate()?;
        Err(Error::Unsupported {
            backend: self.kind(),
            feature: "changing the rate control mid-stream",
        })
    }

    /// Encodes one frame with an automatic timestamp (the next after the last one given).
    ///
    /// # Errors
    /// As [`VideoEncoder::encode`].
    fn encode_frame(&mut self, frame: &[u8], out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        self.encode(Frame::new(frame), out)
    }

    /// The unit of [`EncodedChunk::pts`] and [`EncodedChunk::dts`], as `(num, den)` seconds:
    /// one frame at the configured rate.
    fn time_base(&self) -> (u32, u32) {
        let rate = self.config().frame_rate;
        (rate.den, rate.num)
    }

    /// Encodes the frame that sits in a ring slot: its bytes are the slot's first
    /// [`FrameMeta::len`] bytes (a device slot: its surface, laid out as
    /// [`SlotFrame::Device`] says), its pts is [`FrameMeta::pts`] and it is forced to be a
    /// keyframe when [`FrameMeta::flags`] contains [`FrameFlags::FORCE_KEYFRAME`]. An encoder may
    /// keep a clone of `slot` (a shared lease) instead of copying the bytes: NVENC uploads
    /// straight from a pinned slot and encodes straight from a device slot's surface, and
    /// [`crate::FallbackEncoder`] holds the lease for a replay. The slot goes back to the ring
    /// once every clone is dropped.
    ///
    /// The default encodes the slot's bytes with [`VideoEncoder::encode`]: in place for a host or
    /// pinned slot; a device slot is first downloaded to host memory
    /// ([`SlotFrame::host_bytes`]: one device-to-host copy, ordered after the producer's work on
    /// the storage's stream, counted as a host copy), which is what x264, the ffmpeg backends
    /// and the fallback chain after a failover from NVENC do with device slots. A wrapper must
    /// forward this method, or its inner encoder's own version never runs.
    ///
    /// # Errors
    /// As [`VideoEncoder::encode`]; for a device slot also [`Error::FrameSize`] when its surface
    /// does not hold a frame of the configuration, and [`Error::Backend`] naming the CUDA call
    /// when the download fails.
    fn encode_slot(&mut self, slot: &SlotFrame, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        let bytes = slot.host_bytes(self.config(), self.kind())?;
        self.encode(slot.frame_from(&bytes), out)
    }

    /// The most ring-slot leases this encoder keeps alive at once after
    /// [`encode_slot`](Self::encode_slot) returns: frames in flight whose bytes it reads later
    /// (NVENC's uploads) or holds for a replay ([`crate::FallbackEncoder`]). A ring that feeds
    /// it needs this many slots beyond those its producer queues into, or the producer waits on
    /// slots the encoder holds while the encoder waits for frames: the
    /// [pipeline stage](crate::pipeline) sizes its ring and its lease budget
    /// ([`SlotFrame::lease_budget`]) by it. The default, 0, is for an encoder that reads a slot's
    /// bytes during `encode_slot` and keeps nothing; a wrapper must forward this method.
    fn max_slot_leases(&self) -> usize {
        0
    }
}

/// A frame in a ring slot, for [`VideoEncoder::encode_slot`]: a shared [`ReadSlot`] lease on a
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

    /// The frame as [`VideoEncoder::encode`] takes it, when its bytes are in host memory: the
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

/// Counts one host copy of a frame's bytes (see [`metrics::host_frame_copies`](crate::metrics::host_frame_copies)).
pub(crate) fn count_host_copy() {
    crate::metrics::copies::count();
}

/// Decoding timestamps for an encoder that reports only presentation order: output `k` in
/// decoding order gets the pts of input `k - delay` (inputs in submission order), and the first
/// `delay` outputs count down to the first pts, so dts strictly increases and, with `delay` at
/// least the encoder's reordering depth, never passes pts.
#[derive(Debug, Default)]
pub(crate) struct DtsQueue {
    input_pts: std::collections::VecDeque<i64>,
    delay: usize,
    emitted: usize,
}

impl DtsQueue {
    pub(crate) fn new(delay: usize) -> Self {
        DtsQueue {
            delay,
            ..DtsQueue::default()
        }
    }

    /// Sets the reordering delay, before the first output.
    pub(crate) fn set_delay(&mut self, delay: usize) {
        self.delay = delay;
    }

    /// Records an input's pts, in submission order.
    pub(crate) fn push(&mut self, pts: i64) {
        self.input_pts.push_back(pts);
    }

    /// The dts of the next output, in decoding order.
    pub(crate) fn next(&mut self) -> i64 {
        let k = self.emitted;
        self.emitted += 1;
        let first = self.input_pts.front().copied().unwrap_or(0);
        if k < self.delay {
            first.saturating_sub((self.delay - k) as i64)
        } else {
            self.input_pts.pop_front().unwrap_or(first)
        }
    }
}

/// Bookkeeping every backend shares: frame length, timestamp order, frame numbering, and the
/// finished flag. Keeps the checks of the contract in one place.
#[derive(Debug)]
pub(crate) struct InputGate {
    kind: EncoderKind,
    frame_len: usize,
    resolution: Resolution,
    format: PixelFormat,
    accepted: u64,
    last_pts: Option<i64>,
    finished: bool,
}

impl InputGate {
    pub(crate) fn new(kind: EncoderKind, config: &EncoderConfig) -> Result<Self, ConfigError> {
        Ok(InputGate {
            kind,
            frame_len: config.validate()?,
            resolution: config.resolution,
            format: config.pixel_format,
            accepted: 0,
            last_pts: None,
            finished: false,
        })
    }

    /// The byte length of one input frame: what [`EncoderConfig::validate`] returned.
    pub(crate) fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Checks a frame without accepting it; returns `(frame_index, pts)` for it.
    pub(crate) fn check(&self, frame: &Frame<'_>) -> Result<(u64, i64), Error> {
        if self.finished {
            return Err(Error::Finished { backend: self.kind });
        }
        if frame.data.len() != self.frame_len {
            return Err(Error::FrameSize {
                frame_index: self.accepted,
                expected: self.frame_len,
                actual: frame.data.len(),
                resolution: self.resolution,
                format: self.format,
            });
        }
        self.check_pts(frame.pts)
    }

    /// Checks the end of stream and a frame's timestamp (for frames whose bytes are not in
    /// host memory); returns `(frame_index, pts)` for it.
    pub(crate) fn check_pts(&self, pts: Option<i64>) -> Result<(u64, i64), Error> {
        if self.finished {
            return Err(Error::Finished { backend: self.kind });
        }
        let pts = match (pts, self.last_pts) {
            (Some(pts), Some(previous)) if pts <= previous => {
                return Err(Error::NonMonotonicPts {
                    frame_index: self.accepted,
                    pts,
                    previous,
                })
            }
            (Some(pts), _) => pts,
            (None, Some(previous)) => previous.checked_add(1).ok_or(Error::NonMonotonicPts {
                frame_index: self.accepted,
                pts: previous,
                previous,
            })?,
            (None, None) => 0,
        };
        Ok((self.accepted, pts))
    }

    /// Records that the frame checked last was handed to the encoder.
    pub(crate) fn accept(&mut self, pts: i64) {
        self.accepted += 1;
        self.last_pts = Some(pts);
    }

    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }

    /// Ends the stream after a flush that produced `chunks_out` chunks in all, and checks that
    /// every accepted frame came out: a backend that lost one says so instead of returning a
    /// short stream.
    pub(crate) fn finish_accounted(
        &mut self,
        chunks_out: u64,
        call: &'static str,
    ) -> Result<(), Error> {
        self.finished = true;
        if chunks_out == self.accepted {
            return Ok(());
        }
        Err(Error::Backend {
            backend: self.kind,
            call,
            message: format!(
                "{} frames were accepted but {chunks_out} came out",
                self.accepted
            ),
        })
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }

    pub(crate) fn accepted(&self) -> u64 {
        self.accepted
    }
}

/// A boxed encoder (what [`crate::open_encoder`] returns) is an encoder, so wrappers such as
/// [`crate::metrics::Metered`] take either. Every method forwards, including those with a default
/// body: a method left out here would silently run its default on every boxed encoder (the
/// fallback chain holds its encoders boxed).
impl<E: VideoEncoder + ?Sized> VideoEncoder for Box<E> {
    fn encode(&mut self, frame: Frame<'_>, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        (**self).encode(frame, out)
    }

    fn flush(&mut self, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        (**self).flush(out)
    }

    fn kind(&self) -> EncoderKind {
        (**self).kind()
    }

    fn config(&self) -> &EncoderConfig {
        (**self).config()
    }

    fn sequence_headers(&self) -> &[u8] {
        (**self).sequence_headers()
    }

    fn encode_frame(&mut self, frame: &[u8], out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        (**self).encode_frame(frame, out)
    }

    fn time_base(&self) -> (u32, u32) {
        (**self).time_base()
    }

    fn reconfigure(&mut self, rate_control: RateControl) -> Result<(), Error> {
        (**self).reconfigure(rate_control)
    }

    fn encode_slot(&mut self, slot: &SlotFrame, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        (**self).encode_slot(slot, out)
    }
    fn max_slot_leases(&self) -> usize {
        (**self).max_slot_leases()
    }
}

#[cfg(test)]
mod slot_tests {
    use super::*;
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
