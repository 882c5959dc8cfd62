//! Split recording: [`Segmenter`] decides where one file ends and the next begins, on both sides
//! of an encoder; [`SegmentedMp4`] writes one MP4 file per segment and says when each is
//! complete.
//!
//! A segment boundary falls every `segment` seconds of presentation time, counted from the first
//! frame. The producer asks [`Segmenter::force_keyframe`] for each frame and requests an IDR for
//! the first frame at or after each boundary; the writer asks [`Segmenter::starts_segment`] for
//! each chunk and starts a new file at the first keyframe at or after the boundary. An IDR closes
//! the reordering before it, so every frame displayed before it is decoded before it: no frame is
//! lost or repeated across a boundary, and the files' frames concatenated are the stream's.
//! Each file is a complete MP4 whose timeline starts at 0 (not at its offset in the recording).

use std::io::{Seek, Write};
use std::time::Duration;

use super::{Mp4Options, Mp4Writer, SinkError};
use crate::encoder::{EncodedChunk, Resolution};

/// Where segments end, in a stream's time-base units. Clone one for the producer side and one
/// for the writer side: both count boundaries from the first timestamp each sees.
///
/// A boundary falls every `segment` seconds of presentation time, counted from the first frame.
/// The producer asks [`Segmenter::force_keyframe`] for each frame and requests an IDR for the
/// first frame at or after each boundary; the writer asks [`Segmenter::starts_segment`] for each
/// chunk and starts a new file at the first keyframe at or after the boundary. An IDR closes the
/// reordering before it, so every frame displayed before it is decoded before it: no frame is
/// lost or repeated across a boundary, and the files' frames concatenated are the stream's.
/// Each file of a [`SegmentedMp4`] is a complete MP4 whose timeline starts at 0 (not at its
/// offset in the recording).
#[derive(Debug, Clone, Copy)]
pub struct Segmenter {
    every: i64,
    origin: Option<i64>,
    /// The next boundary, in segments from the origin.
    next: i64,
}

impl Segmenter {
    /// The shortest segment accepted.
    pub const MIN: Duration = Duration::from_millis(1);
    /// The longest segment accepted (a day).
    pub const MAX: Duration = Duration::from_secs(86_400);

    /// Segments of `segment` for a stream whose timestamps count units of `time_base = (num,
    /// den)` seconds.
    ///
    /// # Errors
    /// [`SinkError::BadSegmentDuration`] out of [`Segmenter::MIN`]..=[`Segmenter::MAX`];
    /// [`SinkError::BadTimeBase`] for a zero term.
    pub fn new(segment: Duration, time_base: (u32, u32)) -> Result<Self, SinkError> {
        let (num, den) = time_base;
        if num == 0 || den == 0 {
            return Err(SinkError::BadTimeBase { num, den });
        }
        if !(Self::MIN..=Self::MAX).contains(&segment) {
            return Err(SinkError::BadSegmentDuration {
                value: segment,
                min: Self::MIN,
                max: Self::MAX,
            });
        }
        let units = segment.as_nanos() * u128::from(den) / (u128::from(num) * 1_000_000_000);
        Ok(Segmenter {
            every: i64::try_from(units).unwrap_or(i64::MAX).max(1),
            origin: None,
            next: 1,
        })
    }

    /// Whether `pts` is at or after the next boundary; if so, the boundary moves past it.
    fn crosses(&mut self, pts: i64) -> bool {
        let origin = *self.origin.get_or_insert(pts);
        let elapsed = pts.saturating_sub(origin);
        if elapsed < self.next.saturating_mul(self.every) {
            return false;
        }
        self.next = elapsed / self.every + 1;
        true
    }

    /// Producer side: whether the frame with presentation time `pts` (in increasing order) must
    /// be an IDR, the first frame at or after a boundary.
    pub fn force_keyframe(&mut self, pts: i64) -> bool {
        self.crosses(pts)
    }

    /// Writer side: whether `chunk` (in decoding order) starts a new file: a keyframe at or after
    /// the next boundary.
    pub fn starts_segment(&mut self, chunk: &EncodedChunk) -> bool {
        if self.origin.is_none() {
            self.origin = Some(chunk.pts);
            return false;
        }
        chunk.keyframe && self.crosses(chunk.pts)
    }
}

/// Opens the output of segment `n` (0, 1, ...).
pub type OpenSegment<W> = Box<dyn FnMut(u32) -> std::io::Result<W> + Send>;
/// Told that segment `n` is complete (finalized), with its output.
pub type SegmentDone<W> = Box<dyn FnMut(u32, W) + Send>;

/// Writes one crash-safe MP4 file per segment (see [`Segmenter`]): `open` gives each
/// segment's output, `done` receives it once the file is complete (to upload it, say).
pub struct SegmentedMp4<W: Write + Seek> {
    open: OpenSegment<W>,
    done: SegmentDone<W>,
    current: Option<Mp4Writer<W>>,
    index: u32,
    segmenter: Segmenter,
    resolution: Resolution,
    time_base: (u32, u32),
    options: Mp4Options,
}

impl<W: Write + Seek> std::fmt::Debug for SegmentedMp4<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentedMp4")
            .field("segment", &self.index)
            .field("segmenter", &self.segmenter)
            .finish_non_exhaustive()
    }
}

impl<W: Write + Seek> SegmentedMp4<W> {
    /// Segments of `segment` seconds; the other arguments as [`Mp4Writer::with_options`].
    ///
    /// # Errors
    /// As [`Segmenter::new`] and [`Mp4Writer::with_options`] (checked before any file opens).
    pub fn new(
        resolution: Resolution,
        time_base: (u32, u32),
        options: Mp4Options,
        segment: Duration,
        open: OpenSegment<W>,
        done: SegmentDone<W>,
    ) -> Result<Self, SinkError> {
        let segmenter = Segmenter::new(segment, time_base)?;
        // The MP4 options are checked here, not at the first segment.
        Mp4Writer::with_options(
            std::io::Cursor::new(Vec::new()),
            resolution,
            time_base,
            options,
        )?;
        Ok(SegmentedMp4 {
            open,
            done,
            current: None,
            index: 0,
            segmenter,
            resolution,
            time_base,
            options,
        })
    }

    /// The segmenter, to clone for the producer side before the first frame.
    #[must_use]
    pub fn segmenter(&self) -> Segmenter {
        self.segmenter
    }

    /// Appends one chunk; a chunk that starts a segment first completes the current file.
    ///
    /// # Errors
    /// As [`Mp4Writer::write`] and [`Mp4Writer::finish`]; [`SinkError::Io`] when `open` fails.
    pub fn write(&mut self, chunk: &EncodedChunk) -> Result<(), SinkError> {
        if self.segmenter.starts_segment(chunk) {
            self.complete()?;
        }
        let writer = match &mut self.current {
            Some(writer) => writer,
            None => {
                let out = (self.open)(self.index).map_err(super::io("opening a segment"))?;
                let writer =
                    Mp4Writer::with_options(out, self.resolution, self.time_base, self.options)?;
                self.current.insert(writer)
            }
        };
        writer.write(chunk)
    }

    fn complete(&mut self) -> Result<(), SinkError> {
        if let Some(writer) = self.current.take() {
            let out = writer.finish()?;
            (self.done)(self.index, out);
            self.index += 1;
        }
        Ok(())
    }

    /// Completes the last file; returns how many files were written.
    ///
    /// # Errors
    /// As [`Mp4Writer::finish`].
    pub fn finish(mut self) -> Result<u32, SinkError> {
        self.complete()?;
        Ok(self.index)
    }
}
