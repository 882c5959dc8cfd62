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

pub mod codecs;
pub(crate) mod config;
mod gate;
pub(crate) mod kind;
pub(crate) mod layout;
pub(crate) mod mapping;
mod slot;

use std::fmt;

pub use config::{
    Bitrate, Codec, EncoderConfig, FrameLayout, FrameRate, PixelFormat, Plane, Preset, RateControl,
    RateControlMode, Resolution, Tune,
};
pub(crate) use gate::{count_host_copy, DtsQueue, InputGate};
#[allow(deprecated)]
pub use kind::FfmpegH264Encoder;
pub use kind::{EncoderKind, FfmpegFamily};
pub(crate) use slot::check_device_surface;
pub use slot::SlotFrame;

use crate::error::Error;

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
    /// [`FrameMeta::len`](crate::ring_buffer::FrameMeta::len) bytes (a device slot: its surface, laid out as
    /// [`SlotFrame::Device`] says), its pts is [`FrameMeta::pts`](crate::ring_buffer::FrameMeta::pts) and it is forced to be a
    /// keyframe when [`FrameMeta::flags`](crate::ring_buffer::FrameMeta::flags) contains [`FrameFlags::FORCE_KEYFRAME`](crate::ring_buffer::FrameFlags::FORCE_KEYFRAME). An encoder may
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

    /// The CUDA device ordinal of the GPU this encoder runs on, for an encoder on one (NVENC:
    /// where [`GpuChoice::Auto`](crate::nvenc::GpuChoice::Auto) placed it); `None` for the
    /// others. The [pipeline stage](crate::pipeline) puts its CUDA ring on this GPU. A wrapper
    /// must forward this method.
    fn gpu(&self) -> Option<usize> {
        None
    }

    /// The B-frames between anchors this encoder actually uses, when it knows them exactly
    /// (NVENC reads them back from its initialized configuration: a preset that leaves them to
    /// the encoder may use none); `None` when it does not (the configuration's
    /// [`EncoderConfig::bframes`], or the most any preset may choose, is then assumed). The
    /// fallback chain sizes the frames it holds for a replay by it. A wrapper must forward it.
    fn bframes_in_use(&self) -> Option<u32> {
        None
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

    fn gpu(&self) -> Option<usize> {
        (**self).gpu()
    }

    fn bframes_in_use(&self) -> Option<u32> {
        (**self).bframes_in_use()
    }
}
