//! [`Mp4Writer`]: fragmented (crash-safe, finalized to a regular file at the end) or progressive
//! (one `mdat`, the index at the end). See the [module docs](super).

use std::collections::BTreeMap;
use std::io::{self, Seek, SeekFrom, Write};
use std::time::Duration;

use super::boxes::{bytes, ftyp, slack, Sample, Track};
use super::{io, SinkError};
use crate::bitstream::{self, nal_units};
use crate::encoder::{EncodedChunk, Resolution};

/// How the MP4 file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Layout {
    /// Fragments as the stream goes, finalized into a regular MP4 at a clean end: a file cut
    /// short at any point plays up to its last complete fragment. The default.
    #[default]
    Fragmented,
    /// One `mdat`, the index written at the end: a file cut short plays nothing. Needs a
    /// seekable output.
    Progressive,
}

/// What the writer does to make a fragment survive more than a crash of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Each fragment is handed to the operating system (flushed), not synced: it survives the
    /// process being killed, not a power cut before the kernel writes it back. The default.
    #[default]
    Flush,
    /// Each fragment is also synced to the disk (`fdatasync`) before the writer goes on: a power
    /// cut loses at most the fragment being written. Needs [`Mp4Writer::with_sync`].
    Sync,
}

/// Options of an [`Mp4Writer`]: a `#[must_use]` builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Mp4Options {
    /// The layout ([`Layout::Fragmented`] by default).
    pub layout: Layout,
    /// The longest a fragment lasts (1 s by default). A fragment also ends before a keyframe
    /// once it lasts half of this, so fragments start at keyframes where the GOP allows it.
    pub fragment_duration: Duration,
    /// Whether each fragment is synced to the disk ([`Durability::Flush`] by default: see the
    /// [module docs](super#durability)).
    pub durability: Durability,
}

impl Default for Mp4Options {
    fn default() -> Self {
        Mp4Options {
            layout: Layout::Fragmented,
            fragment_duration: Self::DEFAULT_FRAGMENT,
            durability: Durability::Flush,
        }
    }
}

impl Mp4Options {
    /// The default fragment duration.
    pub const DEFAULT_FRAGMENT: Duration = Duration::from_secs(1);
    /// The shortest fragment duration accepted.
    pub const MIN_FRAGMENT: Duration = Duration::from_millis(1);
    /// The longest fragment duration accepted (a fragment is held in memory until it is
    /// written).
    pub const MAX_FRAGMENT: Duration = Duration::from_secs(600);

    /// With `layout`.
    pub fn with_layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// With fragments of at most `duration`.
    pub fn with_fragment_duration(mut self, duration: Duration) -> Self {
        self.fragment_duration = duration;
        self
    }

    /// With `durability`.
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    fn validate(&self) -> Result<(), SinkError> {
        let d = self.fragment_duration;
        if !(Self::MIN_FRAGMENT..=Self::MAX_FRAGMENT).contains(&d) {
            return Err(SinkError::BadFragmentDuration {
                value: d,
                min: Self::MIN_FRAGMENT,
                max: Self::MAX_FRAGMENT,
            });
        }
        Ok(())
    }
}

/// An output whose written data can be synced to its storage ([`Durability::Sync`]).
pub trait SyncData {
    /// Flushes what is buffered and syncs the data to the storage device.
    ///
    /// # Errors
    /// The I/O error of the flush or the sync.
    fn sync_data(&mut self) -> io::Result<()>;
}

impl SyncData for std::fs::File {
    fn sync_data(&mut self) -> io::Result<()> {
        std::fs::File::sync_data(self)
    }
}

impl<T: Write + SyncData> SyncData for io::BufWriter<T> {
    fn sync_data(&mut self) -> io::Result<()> {
        self.flush()?;
        self.get_mut().sync_data()
    }
}

/// Seeking, for the outputs that can (files); `None` for a stream.
type SeekFn<W> = fn(&mut W, u64) -> io::Result<()>;

/// A fragment written: where its `moof` and its sample data start, and its samples.
#[derive(Debug, Clone, Copy)]
struct Fragment {
    /// `None` for the first, whose index is the initial `moov`.
    moof: Option<u64>,
    data: u64,
    samples: u32,
}

/// Writes chunks into an MP4 file. See the [module docs](super).
#[derive(Debug)]
pub struct Mp4Writer<W: Write> {
    out: W,
    track: Track,
    options: Mp4Options,
    seek: Option<SeekFn<W>>,
    sync: Option<fn(&mut W) -> io::Result<()>>,
    /// The position after everything written.
    pos: u64,
    /// Every sample so far, in decoding order.
    samples: Vec<Sample>,
    /// Fragmented: the data of the samples from `samples[pending]` on, not yet written.
    pending: usize,
    data: Vec<u8>,
    /// Fragmented: the initial `moov`'s position and the fragmented view's slack, once the first
    /// fragment is written.
    header: Option<(u64, i64)>,
    fragments: Vec<Fragment>,
    /// The fragment duration in time-base units.
    fragment_units: i64,
    /// Progressive: where the `mdat` starts.
    mdat_start: u64,
    /// Progressive: whether the `ftyp` and the `mdat` header are written (with the first chunk,
    /// whose parameter sets tell the codec the `ftyp` names).
    started: bool,
}

/// Size of the progressive `mdat` header: 32-bit size 1, `mdat`, 64-bit size.
const MDAT_HEADER: u64 = 16;

fn seek_to<W: Write + Seek>(out: &mut W, pos: u64) -> io::Result<()> {
    out.seek(SeekFrom::Start(pos)).map(|_| ())
}

impl<W: Write + Seek> Mp4Writer<W> {
    /// Starts a crash-safe MP4 file on `out` (default [`Mp4Options`]) for a stream of
    /// `resolution` whose timestamps count units of `time_base = (num, den)` seconds
    /// ([`VideoEncoder::time_base`]). The codec, H.264 or HEVC, is read from the stream's first
    /// parameter set.
    ///
    /// [`VideoEncoder::time_base`]: crate::encoder::VideoEncoder::time_base
    ///
    /// # Errors
    /// [`SinkError::BadTimeBase`] for a zero term; [`SinkError::TooLarge`] for a side over
    /// 65535; [`SinkError::Io`] when the output's position cannot be read.
    pub fn new(out: W, resolution: Resolution, time_base: (u32, u32)) -> Result<Self, SinkError> {
        Self::with_options(out, resolution, time_base, Mp4Options::default())
    }

    /// [`Mp4Writer::new`] with `options`.
    ///
    /// # Errors
    /// As [`Mp4Writer::new`]; [`SinkError::BadFragmentDuration`] for a fragment duration out
    /// of range.
    pub fn with_options(
        mut out: W,
        resolution: Resolution,
        time_base: (u32, u32),
        options: Mp4Options,
    ) -> Result<Self, SinkError> {
        let start = out
            .stream_position()
            .map_err(io("finding the output position"))?;
        let mut writer = Self::make(out, resolution, time_base, options, start)?;
        writer.seek = Some(seek_to::<W>);
        Ok(writer)
    }
}

impl<W: Write> Mp4Writer<W> {
    /// A fragmented MP4 onto an output that cannot seek (a pipe, standard output): fragments are
    /// written as the stream goes and [`Mp4Writer::finish`] ends with the last one (no regular
    /// index). Arguments as [`Mp4Writer::new`].
    ///
    /// # Errors
    /// As [`Mp4Writer::with_options`]; [`SinkError::NeedsSeek`] for [`Layout::Progressive`].
    pub fn stream(
        out: W,
        resolution: Resolution,
        time_base: (u32, u32),
        options: Mp4Options,
    ) -> Result<Self, SinkError> {
        if options.layout != Layout::Fragmented {
            return Err(SinkError::NeedsSeek {
                layout: options.layout,
            });
        }
        Self::make(out, resolution, time_base, options, 0)
    }

    fn make(
        out: W,
        resolution: Resolution,
        time_base: (u32, u32),
        options: Mp4Options,
        start: u64,
    ) -> Result<Self, SinkError> {
        let (num, den) = time_base;
        if num == 0 || den == 0 {
            return Err(SinkError::BadTimeBase { num, den });
        }
        for (what, side) in [("width", resolution.width), ("height", resolution.height)] {
            if side > u32::from(u16::MAX) {
                return Err(SinkError::TooLarge {
                    what,
                    value: side.into(),
                });
            }
        }
        options.validate()?;
        // Units of num/den seconds in the fragment duration, at least one.
        let units = options.fragment_duration.as_nanos() * u128::from(den)
            / (u128::from(num) * 1_000_000_000);
        Ok(Mp4Writer {
            out,
            track: Track {
                resolution,
                tick: num,
                timescale: den,
                codec: None,
                sets: BTreeMap::new(),
            },
            options,
            seek: None,
            sync: None,
            pos: start,
            samples: Vec::new(),
            pending: 0,
            data: Vec::new(),
            header: None,
            fragments: Vec::new(),
            fragment_units: i64::try_from(units).unwrap_or(i64::MAX).max(1),
            mdat_start: start,
            started: false,
        })
    }

    /// Lets the writer sync the output to the disk: between the steps of [`Mp4Writer::finish`]
    /// (so that a power cut cannot keep a later step without an earlier one), and after each
    /// fragment with [`Durability::Sync`].
    #[must_use]
    pub fn with_sync(mut self) -> Self
    where
        W: SyncData,
    {
        self.sync = Some(<W as SyncData>::sync_data);
        self
    }

    /// The options in effect.
    pub fn options(&self) -> &Mp4Options {
        &self.options
    }

    /// Appends one chunk (in decoding order, as encoders deliver them). In the fragmented
    /// layout a chunk that starts a new fragment first writes the previous one.
    ///
    /// # Errors
    /// [`SinkError::DtsNotIncreasing`], [`SinkError::PtsBeforeDts`] for timestamps an MP4
    /// cannot hold; [`SinkError::NoParameterSets`] when the first fragment has no SPS/PPS;
    /// [`SinkError::NeedsSync`] for [`Durability::Sync`] without [`Mp4Writer::with_sync`];
    /// [`SinkError::Io`] when the write fails.
    pub fn write(&mut self, chunk: &EncodedChunk) -> Result<(), SinkError> {
        if self.options.durability == Durability::Sync && self.sync.is_none() {
            return Err(SinkError::NeedsSync);
        }
        if let Some(previous) = self.samples.last() {
            if chunk.dts <= previous.dts {
                return Err(SinkError::DtsNotIncreasing {
                    frame_index: chunk.frame_index,
                    dts: chunk.dts,
                    previous: previous.dts,
                });
            }
        }
        if chunk.pts < chunk.dts {
            return Err(SinkError::PtsBeforeDts {
                frame_index: chunk.frame_index,
                pts: chunk.pts,
                dts: chunk.dts,
            });
        }
        let fragmented = self.options.layout == Layout::Fragmented;
        if fragmented {
            if let Some(first) = self.samples.get(self.pending) {
                let so_far = chunk.dts - first.dts;
                let with_chunk = so_far.saturating_add(chunk.duration.max(1));
                if with_chunk > self.fragment_units
                    || (chunk.keyframe && so_far.saturating_mul(2) >= self.fragment_units)
                {
                    self.write_fragment(Some(chunk.dts))?;
                }
            }
        }
        if self.track.codec.is_none() {
            self.track.codec = bitstream::detect(&chunk.data);
        }
        let mut size: u64 = 0;
        let before = self.data.len();
        for nal in nal_units(&chunk.data).filter(|n| !n.is_empty()) {
            if let Some(kind) = self
                .track
                .codec
                .and_then(|codec| bitstream::parameter_set(codec, nal))
            {
                self.track.sets.entry(kind).or_insert_with(|| nal.to_vec());
            }
            let len = u32::try_from(nal.len()).map_err(|_| SinkError::TooLarge {
                what: "a NAL unit's length",
                value: nal.len() as u64,
            })?;
            self.data.extend_from_slice(&len.to_be_bytes());
            self.data.extend_from_slice(nal);
            size += 4 + nal.len() as u64;
        }
        let size = u32::try_from(size).map_err(|_| SinkError::TooLarge {
            what: "a sample's size",
            value: size,
        });
        let size = match size {
            Ok(size) => size,
            Err(e) => {
                self.data.truncate(before);
                return Err(e);
            }
        };
        if !fragmented {
            if !self.started {
                if let Err(e) = self.start_progressive() {
                    self.data.truncate(before);
                    return Err(e);
                }
            }
            let data = std::mem::take(&mut self.data);
            let written = self.put(&data, "writing a sample");
            self.data = data;
            self.data.clear();
            written?;
        }
        self.samples.push(Sample {
            dts: chunk.dts,
            pts: chunk.pts,
            duration: chunk.duration.max(1),
            size,
            sync: chunk.keyframe,
        });
        Ok(())
    }

    /// Frames written so far (including those of the fragment not yet written).
    #[must_use]
    pub fn frames(&self) -> usize {
        self.samples.len()
    }

    /// Fragments written completely so far (0 in the progressive layout): from the first one
    /// on, the output holds a playable file.
    #[must_use]
    pub fn fragments(&self) -> usize {
        self.fragments.len()
    }

    /// The output, to look at it (its metadata, its name); writing to it would corrupt the file.
    #[must_use]
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Ends the file and returns the output. Fragmented on a seekable output: writes the last
    /// fragment, then finalizes the file into a regular MP4 (module docs); on a stream: writes
    /// the last fragment. Progressive: writes the index and patches the `mdat` size.
    ///
    /// # Errors
    /// [`SinkError::NoParameterSets`] when no SPS/PPS came by or no frame was written;
    /// [`SinkError::Io`] or [`SinkError::Mp4`] when writing fails.
    pub fn finish(mut self) -> Result<W, SinkError> {
        if self.samples.is_empty() {
            return Err(SinkError::NoParameterSets);
        }
        match (self.options.layout, self.seek) {
            (Layout::Progressive, Some(seek)) => self.finish_progressive(seek)?,
            (Layout::Fragmented, seek) => {
                if self.pending < self.samples.len() {
                    self.write_fragment(None)?;
                }
                if let Some(seek) = seek {
                    self.finalize(seek)?;
                }
            }
            (layout, None) => return Err(SinkError::NeedsSeek { layout }),
        }
        Ok(self.out)
    }

    /// Writes `data` at the end of the file.
    fn put(&mut self, data: &[u8], what: &'static str) -> Result<(), SinkError> {
        self.out.write_all(data).map_err(io(what))?;
        self.pos += data.len() as u64;
        Ok(())
    }

    /// Writes `data` at `pos` (within what is written), then goes back to the end.
    fn patch(&mut self, seek: SeekFn<W>, pos: u64, data: &[u8]) -> Result<(), SinkError> {
        let end = self.pos;
        seek(&mut self.out, pos)
            .and_then(|()| self.out.write_all(data))
            .and_then(|()| seek(&mut self.out, end))
            .and_then(|()| self.out.flush())
            .map_err(io("rewriting a box type"))
    }

    /// Flushes, and syncs where `sync` says and the output can.
    fn durable(&mut self, what: &'static str, sync: bool) -> Result<(), SinkError> {
        self.out.flush().map_err(io(what))?;
        if let (true, Some(sync)) = (sync, self.sync) {
            sync(&mut self.out).map_err(io(what))?;
        }
        Ok(())
    }

    /// Writes the samples from `pending` on as one fragment; the next one starts at `next_dts`.
    fn write_fragment(&mut self, next_dts: Option<i64>) -> Result<(), SinkError> {
        let Some(origin) = self.samples.first().map(|s| s.dts) else {
            return Ok(());
        };
        let pending = self.pending;
        let samples = &self.samples[pending..];
        let count = u32::try_from(samples.len()).map_err(|_| SinkError::TooLarge {
            what: "a fragment's frame count",
            value: samples.len() as u64,
        })?;
        let data_len = 8 + self.data.len() as u64;
        let mdat_size = u32::try_from(data_len).map_err(|_| SinkError::TooLarge {
            what: "a fragment's sample data",
            value: data_len,
        })?;
        // On a seekable output the index is written as `free` and retyped once the samples are
        // out: an index cut short by a crash, or one whose samples are, stays invisible.
        let retype = self.seek.is_some();
        let (mut head, index_at, kind, moof_at) = match self.header {
            None => {
                // The first fragment's samples go into the initial moov's own sample table (so
                // that every state of the finalization shows at least them), and fix the
                // fragmented view's slack.
                let slack = slack(samples);
                let mut head = bytes(&ftyp(true, self.track.codec))?;
                let moov_at = self.pos + head.len() as u64;
                let moov = |data_at: u64| {
                    self.track
                        .table_moov(samples, &[(data_at, count)], next_dts, slack, true)
                };
                let size = bytes(&moov(0)?)?.len() as u64;
                let moov = bytes(&moov(moov_at + size + 8)?)?;
                self.header = Some((moov_at, slack));
                head.extend_from_slice(&moov);
                (head, moov_at, *b"moov", None)
            }
            Some((_, slack)) => {
                let sequence =
                    u32::try_from(self.fragments.len() + 1).map_err(|_| SinkError::TooLarge {
                        what: "the fragment count",
                        value: self.fragments.len() as u64 + 1,
                    })?;
                let moof = self
                    .track
                    .moof(sequence, samples, next_dts, origin, slack)?;
                (moof, self.pos, *b"moof", Some(self.pos))
            }
        };
        let type_at = (index_at - self.pos) as usize + 4;
        // The initial moov is held back whole, its place kept by a zeroed `free` box: FFmpeg
        // reads a `free` box whose first child is `mvhd` as the moov of a file that has none,
        // which must not happen before the samples are out.
        let held = (retype && kind == *b"moov").then(|| head[type_at + 4..].to_vec());
        if retype {
            head[type_at..type_at + 4].copy_from_slice(b"free");
        }
        if let Some(held) = &held {
            let from = type_at + 4;
            head[from..from + held.len()].fill(0);
        }
        let data_at = self.pos + head.len() as u64 + 8;
        head.extend_from_slice(&mdat_size.to_be_bytes());
        head.extend_from_slice(b"mdat");
        self.put(&head, "writing a fragment")?;
        let data = std::mem::take(&mut self.data);
        let written = self.put(&data, "writing a fragment");
        self.data = data;
        self.data.clear();
        written?;
        let each = self.options.durability == Durability::Sync;
        self.durable("writing a fragment", each)?;
        if let (true, Some(seek)) = (retype, self.seek) {
            if let Some(held) = held {
                self.patch(seek, index_at + 8, &held)?;
                self.durable("committing a fragment", each)?;
            }
            self.patch(seek, index_at + 4, &kind)?;
            self.durable("committing a fragment", each)?;
        }
        self.fragments.push(Fragment {
            moof: moof_at,
            data: data_at,
            samples: count,
        });
        self.pending = self.samples.len();
        Ok(())
    }

    /// States 2 to 4 of the module docs.
    fn finalize(&mut self, seek: SeekFn<W>) -> Result<(), SinkError> {
        let Some((moov_at, _)) = self.header else {
            return Ok(());
        };
        let chunks: Vec<(u64, u32)> = self.fragments.iter().map(|f| (f.data, f.samples)).collect();
        let slack = slack(&self.samples);
        let moov = self
            .track
            .table_moov(&self.samples, &chunks, None, slack, false)?;
        self.put(&bytes(&moov)?, "writing the MP4 index")?;
        // Synced between the steps (where the output can), so that a power cut cannot keep a
        // later step without an earlier one.
        self.durable("writing the MP4 index", true)?;
        let moofs: Vec<u64> = self.fragments.iter().rev().filter_map(|f| f.moof).collect();
        for moof in moofs {
            self.patch(seek, moof + 4, b"free")?;
        }
        self.durable("finalizing the MP4 file", true)?;
        self.patch(seek, moov_at + 4, b"free")?;
        self.durable("finalizing the MP4 file", true)
    }

    /// Progressive: the `ftyp` and the header of the `mdat` the samples stream into.
    fn start_progressive(&mut self) -> Result<(), SinkError> {
        let mut head = bytes(&ftyp(false, self.track.codec))?;
        self.mdat_start = self.pos + head.len() as u64;
        // A 64-bit mdat: size 1 here, the real size after the type, patched in `finish`.
        head.extend_from_slice(&1u32.to_be_bytes());
        head.extend_from_slice(b"mdat");
        head.extend_from_slice(&0u64.to_be_bytes());
        self.put(&head, "writing the MP4 header")?;
        self.started = true;
        Ok(())
    }

    fn finish_progressive(&mut self, seek: SeekFn<W>) -> Result<(), SinkError> {
        let data_start = self.mdat_start + MDAT_HEADER;
        let count = u32::try_from(self.samples.len()).map_err(|_| SinkError::TooLarge {
            what: "the frame count",
            value: self.samples.len() as u64,
        })?;
        let slack = slack(&self.samples);
        let moov =
            self.track
                .table_moov(&self.samples, &[(data_start, count)], None, slack, false)?;
        let moov = bytes(&moov)?;
        let mdat_size = self.pos - self.mdat_start;
        self.patch(seek, self.mdat_start + 8, &mdat_size.to_be_bytes())?;
        self.put(&moov, "writing the MP4 index")?;
        self.durable("writing the MP4 index", true)
    }
}
