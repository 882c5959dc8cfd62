//! Where encoded chunks go: an Annex B byte stream ([`AnnexBWriter`]) or an MP4 file
//! ([`Mp4Writer`]), H.264 or HEVC.
//!
//! # MP4
//! Boxes are encoded by the `mp4-atom` crate; this module decides their contents:
//! - one video track whose codec the writer reads from the stream's first parameter set
//!   ([`crate::bitstream::detect`]), so no caller names it: H.264 gets `avc1` with an `avcC` built
//!   from the stream's first SPS and PPS; HEVC gets `hvc1` with an `hvcC` built from its first
//!   VPS, SPS and PPS (profile space, tier, profile, compatibility and constraint flags and level
//!   from the SPS's `profile_tier_level`; chroma format and bit depths from the SPS). Samples are
//!   the access units with 4-byte NAL lengths instead of start codes. The parameter sets stay in
//!   band too, so a stream whose parameter sets change (a mid-stream failover to another
//!   backend) still decodes: the first access unit after the switch carries the new ones;
//! - the track's timescale is the encoder's time base: one tick per `1 / frame_rate` unit times
//!   its numerator, so timestamps are exact for rates like 30000/1001;
//! - sync samples from the keyframe flag; composition offsets from `pts - dts`, less the smallest
//!   such difference, so the offset is the stream's real reordering depth whatever slack the
//!   encoder's own decoding timestamps carry (none without B-frames: `dts == pts`; one frame per
//!   reordering level with them); an edit list starts presentation at the first picture, so the
//!   first picture shows at 0 and the duration is frames / fps.
//!
//! The fragmented view (state 1 below) fixes that smallest difference with its first fragment.
//! A failover to a deeper reordering later gives negative composition offsets (a version 1
//! `trun` holds them), and FFmpeg then shifts the whole timeline of a file it reads as fragments
//! by the most negative one: frames keep their order and spacing, and start up to the added
//! depth late. The finalized file has one sample table and no such shift. The initial `moov`
//! always has a `ctts`, even of zeros: without one FFmpeg (5.1) ignores every later fragment's
//! composition offsets.
//!
//! ## Crash-safe layout (the default: [`Layout::Fragmented`])
//! The file is written as fragments after an `ftyp`. The first fragment's index is the initial
//! `moov`: it describes the track, holds the first fragment's sample table (its samples follow in
//! an `mdat`) and announces more fragments (`mvex`/`trex`). Each later fragment is a `moof` (the
//! index of its samples) and an `mdat`. A fragment starts at a keyframe where the GOP allows it
//! and lasts at most [`Mp4Options::fragment_duration`] (1 s by default). Nothing is written before
//! the first fragment is complete. On a seekable output each fragment is written with its index
//! typed `free`, flushed, then retyped `moov`/`moof`, so a process killed in the middle of a
//! fragment leaves a file whose last, incomplete fragment is invisible.
//!
//! What a reader sees, state by state (each checked with FFmpeg by `tests/mp4_fragmented.rs`):
//! 1. **Recording, or killed while recording** (`ftyp`, `moov`+`mdat`, `moof`+`mdat`..., maybe
//!    an incomplete fragment whose index is still `free`): a fragmented MP4 with every complete
//!    fragment. FFmpeg finds the duration and seeks by reading the fragments.
//! 2. **Finalizing** ([`Mp4Writer::finish`] on a seekable output): a regular `moov` with the whole
//!    sample table (one chunk per fragment, `co64` offsets into the fragments' `mdat`s) is
//!    appended at the end. Readers still see state 1: FFmpeg uses the first `moov` and skips the
//!    later one ("Found duplicated MOOV Atom", a warning).
//! 3. Then each `moof`, last to first, is retyped `free`: a reader sees the fragmented file up to
//!    the last fragment not yet retyped, and at least the first fragment (indexed by the initial
//!    `moov` itself), never an invalid file. A crash in this short window (one 4-byte write per
//!    fragment) loses the retyped fragments from view, not from the file.
//! 4. Last, the initial `moov` is retyped `free`: the file is a regular MP4 (`ftyp`, `free`,
//!    `mdat`, `free`+`mdat`..., `moov`) with one sample table, the duration in
//!    `mvhd`/`tkhd`/`mdhd` and sync samples for seeking. Regular-only readers handle it.
//!
//! No order of in-place changes avoids the window of state 3 with FFmpeg: it takes the first
//! `moov` of a file and refuses a `moof` before any `moov`, so the initial `moov` can only go
//! once no `moof` is left. Only 4-byte type fields are rewritten in place, each within one
//! sector. Given [`Mp4Writer::with_sync`], [`Mp4Writer::finish`] syncs the file between its
//! steps and before it returns, so a power cut cannot keep a later step without an earlier one.
//!
//! **A file cut short** at an arbitrary byte (what a power cut can leave without
//! [`Durability::Sync`], or an interrupted copy) plays every fragment lying entirely before the
//! cut, with one exception, a limit of FFmpeg (5.1): a cut inside a fragment's index (a few
//! hundred bytes per fragment) makes it refuse the whole file ("error reading header"). A
//! finalized file cut short loses its regular `moov`, which is at the end. [`recover`] makes any
//! such file playable again by retyping boxes only: it completes an interrupted finalization,
//! or shows the file as fragments again, each complete fragment visible, a cut index typed
//! `free`.
//!
//! On an output that cannot seek (a pipe, standard output: [`Mp4Writer::stream`]) fragments are
//! written the same way, indexes typed at once, and [`Mp4Writer::finish`] ends with the last
//! fragment: state 1, which a player reading the pipe decodes as it arrives.
//!
//! ## Durability
//! By default ([`Durability::Flush`]) a fragment is flushed to the operating system (one `write`
//! per fragment), not synced to the disk: a killed process (`kill -9`, an OOM kill, a crash)
//! loses nothing the writer flushed, because the kernel keeps it, and the write order above
//! holds. A power cut or a kernel crash can lose what the kernel had not written back yet
//! (Linux writes dirty pages back within about 30 s), in any order, so the file may need
//! [`recover`]. [`Durability::Sync`] adds an `fdatasync` after a fragment's data and after its
//! index is typed: an index is never on the disk before its samples, so a power cut loses at most
//! the fragment being written and leaves a file that plays as it is. It is not the default
//! because its cost is one disk flush per fragment, which grows with the disk's latency (a
//! spinning disk, a network file system), and most crashes are crashes of the process, not of
//! the machine. `benches/mp4_sink.rs` measures both beside the progressive layout: on a shared
//! 2-core VM, 1080p x264 ultrafast, the flushed fragments cost what the progressive layout costs
//! (42 to 57 us a frame against 50 to 55, within the noise), and the syncs (two per 1 s
//! fragment) add 5 to 180 us a frame, depending on the disk's load.
//!
//! ## Split recording
//! [`SegmentedMp4`] writes one file per segment of fixed length, each starting with an IDR that
//! the producer requests ([`Segmenter`]), each a complete MP4 starting at time 0; a callback
//! receives each file when it is complete. See [`Segmenter`] for why no frame is lost or
//! repeated across a boundary.
//!
//! ## The old layout ([`Layout::Progressive`])
//! Sample data streamed into one `mdat`, the index (`moov`) written at the end: a file killed
//! before the end has no index and plays nothing. Kept for comparison and for readers that need
//! the sample data in one `mdat`.

use std::io::Write;
use std::time::Duration;

use crate::encoder::EncodedChunk;

mod boxes;
mod mp4;
mod recover;
mod segment;

pub use mp4::{Durability, Layout, Mp4Options, Mp4Writer, SyncData};
pub use recover::{recover, Recovered};
pub use segment::{OpenSegment, SegmentDone, SegmentedMp4, Segmenter};

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use boxes::fuzz_hvcc;

/// Why a chunk could not be written or a file could not be finished.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// Writing, seeking or flushing the output failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// MP4 boxes could not be encoded.
    #[error("encoding the MP4 index failed: {0}")]
    Mp4(String),
    /// The stream never carried its parameter sets (SPS and PPS for H.264; VPS, SPS and PPS for
    /// HEVC), so the MP4 has no decoder configuration.
    #[error(
        "the stream has no parameter sets (H.264: SPS and PPS; HEVC: VPS, SPS and PPS): an MP4 \
         needs them for its decoder configuration (avcC, hvcC)"
    )]
    NoParameterSets,
    /// The stream's first SPS does not give what the decoder configuration repeats from it.
    #[error(
        "the stream's first {codec} SPS ({len} bytes) does not parse up to its bit depths, or \
         holds a value out of range (a bit depth over 15 does not fit hvcC): the MP4 decoder \
         configuration is read from its profile, tier, level, chroma format and bit depths"
    )]
    BadSps {
        /// The stream's codec.
        codec: crate::encoder::Codec,
        /// The SPS's length in bytes.
        len: usize,
    },
    /// Decoding timestamps that do not increase.
    #[error(
        "chunk of frame {frame_index} has dts {dts}, not after the previous chunk's dts \
         {previous}: MP4 needs strictly increasing decoding times"
    )]
    DtsNotIncreasing {
        /// The chunk's input frame.
        frame_index: u64,
        /// Its decoding timestamp.
        dts: i64,
        /// The previous chunk's.
        previous: i64,
    },
    /// A chunk whose presentation time is before its decoding time.
    #[error("chunk of frame {frame_index} has pts {pts} before its dts {dts}")]
    PtsBeforeDts {
        /// The chunk's input frame.
        frame_index: u64,
        /// Its presentation timestamp.
        pts: i64,
        /// Its decoding timestamp.
        dts: i64,
    },
    /// A value that does not fit the MP4 field that holds it.
    #[error("{what} ({value}) does not fit in an MP4 file")]
    TooLarge {
        /// Which value.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// A fragment duration outside what the writer accepts.
    #[error(
        "fragment duration {value:?} is out of range: expected at least {min:?} and at most \
         {max:?}"
    )]
    BadFragmentDuration {
        /// The duration asked for.
        value: Duration,
        /// The shortest accepted.
        min: Duration,
        /// The longest accepted.
        max: Duration,
    },
    /// A segment duration outside what the segmenter accepts.
    #[error(
        "segment duration {value:?} is out of range: expected at least {min:?} and at most \
         {max:?}"
    )]
    BadSegmentDuration {
        /// The duration asked for.
        value: Duration,
        /// The shortest accepted.
        min: Duration,
        /// The longest accepted.
        max: Duration,
    },
    /// The layout needs an output that can seek, and the writer was made for a stream.
    #[error("layout {layout:?} needs a seekable output (a file); a stream can only be fragmented")]
    NeedsSeek {
        /// The layout asked for.
        layout: Layout,
    },
    /// [`Durability::Sync`] on a writer that cannot sync its output.
    #[error(
        "durability Sync needs an output the writer can sync (Mp4Writer::with_sync, for a file); \
         use Durability::Flush for this output"
    )]
    NeedsSync,
    /// [`recover`] found no complete first fragment: nothing to show.
    #[error(
        "the file holds no complete first fragment (initial moov and its samples): nothing to \
         recover"
    )]
    NotRecoverable,
    /// A time base with a zero term.
    #[error("invalid time base {num}/{den}: both terms must be at least 1")]
    BadTimeBase {
        /// Seconds per unit, numerator.
        num: u32,
        /// Seconds per unit, denominator.
        den: u32,
    },
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> SinkError {
    move |source| SinkError::Io { what, source }
}

/// Writes chunks as an Annex B byte stream, H.264 or HEVC as they come (what `.h264` and `.hevc`
/// files and most players expect).
#[derive(Debug)]
pub struct AnnexBWriter<W: Write> {
    out: W,
    bytes: u64,
}

impl<W: Write> AnnexBWriter<W> {
    /// A writer onto `out` (wrap a file in a `BufWriter`).
    pub fn new(out: W) -> Self {
        AnnexBWriter { out, bytes: 0 }
    }

    /// Appends one chunk.
    ///
    /// # Errors
    /// [`SinkError::Io`] when the write fails.
    pub fn write(&mut self, chunk: &EncodedChunk) -> Result<(), SinkError> {
        self.out
            .write_all(&chunk.data)
            .map_err(io("writing an access unit"))?;
        self.bytes += chunk.data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Flushes and returns the output.
    ///
    /// # Errors
    /// [`SinkError::Io`] when the flush fails.
    pub fn finish(mut self) -> Result<W, SinkError> {
        self.out.flush().map_err(io("flushing the output"))?;
        Ok(self.out)
    }
}
