//! Where encoded chunks go: an H.264 Annex B byte stream ([`AnnexBWriter`]) or an MP4 file
//! ([`Mp4Writer`]).
//!
//! # MP4
//! The MP4 writer streams sample data into `mdat` as chunks arrive (memory grows only by a few
//! bytes of index per frame) and writes the index (`moov`) at the end, so the output must be
//! seekable (a file, not a pipe). Boxes are encoded by the `mp4-atom` crate; this module decides
//! their contents:
//! - one H.264 video track, `avc1` with an `avcC` built from the stream's first SPS and PPS;
//!   samples are the access units with 4-byte NAL lengths instead of start codes. SPS and PPS stay
//!   in band too, so a stream whose parameter sets change (a mid-stream failover to another
//!   backend) still decodes;
//! - the track's timescale is the encoder's time base: one tick per `1 / frame_rate` unit times
//!   its numerator, so timestamps are exact for rates like 30000/1001;
//! - decoding times come from [`EncodedChunk::dts`], composition offsets (`ctts`) from
//!   `pts - dts` (never negative, by the encoder contract), sync samples (`stss`) from the
//!   keyframe flag; an edit list (`elst`) starts presentation at the first picture, so B-frame
//!   reordering delay does not shift the timeline and the duration is frames / fps.

use std::io::{Seek, SeekFrom, Write};

use mp4_atom::{
    Avc1, Avcc, Co64, Ctts, CttsEntry, Dinf, Dref, DrefEntry, Edts, Elst, ElstEntry, Encode,
    FourCC, Ftyp, Hdlr, Mdhd, Mdia, Minf, Moov, Mvhd, Stbl, Stsc, StscEntry, Stsd, Stss, Stsz,
    StszSamples, Stts, SttsEntry, Tkhd, Trak, Url, Visual, Vmhd,
};

use crate::encoder::{EncodedChunk, Resolution};
use crate::h264::{nal_unit_type, nal_units, NAL_PPS, NAL_SPS};

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
    /// The stream never carried an SPS and a PPS, so the MP4 has no decoder configuration.
    #[error("the stream has no SPS/PPS: an MP4 needs them for its decoder configuration (avcC)")]
    NoParameterSets,
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

/// Writes chunks as an H.264 Annex B byte stream (what `.h264` files and most players expect).
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

/// One sample's index entry.
#[derive(Debug, Clone, Copy)]
struct Sample {
    dts: i64,
    pts: i64,
    duration: i64,
    size: u32,
    sync: bool,
}

/// Size of the `mdat` header written up front: 32-bit size 1, `mdat`, 64-bit size.
const MDAT_HEADER: u64 = 16;

/// Writes chunks into an MP4 file. See the [module docs](self).
#[derive(Debug)]
pub struct Mp4Writer<W: Write + Seek> {
    out: W,
    resolution: Resolution,
    /// Ticks per time-base unit, and ticks per second.
    tick: u32,
    timescale: u32,
    mdat_start: u64,
    data_bytes: u64,
    samples: Vec<Sample>,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
}

impl<W: Write + Seek> Mp4Writer<W> {
    /// Starts an MP4 file on `out` for a stream of `resolution` whose timestamps count units of
    /// `time_base = (num, den)` seconds ([`VideoEncoder::time_base`]).
    ///
    /// [`VideoEncoder::time_base`]: crate::encoder::VideoEncoder::time_base
    ///
    /// # Errors
    /// [`SinkError::BadTimeBase`] for a zero term; [`SinkError::Io`] when writing the header
    /// fails.
    pub fn new(
        mut out: W,
        resolution: Resolution,
        time_base: (u32, u32),
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
        let mut head = Vec::new();
        Ftyp {
            major_brand: b"isom".into(),
            minor_version: 512,
            compatible_brands: vec![
                b"isom".into(),
                b"iso2".into(),
                b"avc1".into(),
                b"mp41".into(),
            ],
        }
        .encode(&mut head)
        .map_err(|e| SinkError::Mp4(e.to_string()))?;
        let mdat_start = out
            .stream_position()
            .map_err(io("finding the output position"))?
            + head.len() as u64;
        // A 64-bit mdat: size 1 here, the real size after the type, patched in `finish`.
        head.extend_from_slice(&1u32.to_be_bytes());
        head.extend_from_slice(b"mdat");
        head.extend_from_slice(&0u64.to_be_bytes());
        out.write_all(&head).map_err(io("writing the MP4 header"))?;
        Ok(Mp4Writer {
            out,
            resolution,
            tick: num,
            timescale: den,
            mdat_start,
            data_bytes: 0,
            samples: Vec::new(),
            sps: None,
            pps: None,
        })
    }

    /// Appends one chunk (in decoding order, as encoders deliver them).
    ///
    /// # Errors
    /// [`SinkError::DtsNotIncreasing`], [`SinkError::PtsBeforeDts`] for timestamps an MP4
    /// cannot hold; [`SinkError::Io`] when the write fails.
    pub fn write(&mut self, chunk: &EncodedChunk) -> Result<(), SinkError> {
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
        let mut size: u64 = 0;
        for nal in nal_units(&chunk.data).filter(|n| !n.is_empty()) {
            match nal_unit_type(nal) {
                Some(NAL_SPS) if self.sps.is_none() => self.sps = Some(nal.to_vec()),
                Some(NAL_PPS) if self.pps.is_none() => self.pps = Some(nal.to_vec()),
                _ => {}
            }
            let len = u32::try_from(nal.len()).map_err(|_| SinkError::TooLarge {
                what: "a NAL unit's length",
                value: nal.len() as u64,
            })?;
            self.out
                .write_all(&len.to_be_bytes())
                .and_then(|()| self.out.write_all(nal))
                .map_err(io("writing a sample"))?;
            size += 4 + nal.len() as u64;
        }
        let size = u32::try_from(size).map_err(|_| SinkError::TooLarge {
            what: "a sample's size",
            value: size,
        })?;
        self.data_bytes += u64::from(size);
        self.samples.push(Sample {
            dts: chunk.dts,
            pts: chunk.pts,
            duration: chunk.duration.max(1),
            size,
            sync: chunk.keyframe,
        });
        Ok(())
    }

    /// Frames written so far.
    #[must_use]
    pub fn frames(&self) -> usize {
        self.samples.len()
    }

    /// Writes the index, patches the sample data's size, flushes, and returns the output.
    ///
    /// # Errors
    /// [`SinkError::NoParameterSets`] when no SPS/PPS came by; [`SinkError::Io`] or
    /// [`SinkError::Mp4`] when writing fails.
    pub fn finish(mut self) -> Result<W, SinkError> {
        let moov = self.moov()?;
        let mut index = Vec::new();
        moov.encode(&mut index)
            .map_err(|e| SinkError::Mp4(e.to_string()))?;
        let mdat_size = MDAT_HEADER + self.data_bytes;
        self.out
            .seek(SeekFrom::Start(self.mdat_start + 8))
            .and_then(|_| self.out.write_all(&mdat_size.to_be_bytes()))
            .and_then(|()| self.out.seek(SeekFrom::Start(self.mdat_start + mdat_size)))
            .and_then(|_| self.out.write_all(&index))
            .and_then(|()| self.out.flush())
            .map_err(io("writing the MP4 index"))?;
        Ok(self.out)
    }

    fn ticks(&self, units: i64, what: &'static str) -> Result<u64, SinkError> {
        u64::try_from(units)
            .ok()
            .and_then(|u| u.checked_mul(u64::from(self.tick)))
            .ok_or(SinkError::TooLarge {
                what,
                value: units.unsigned_abs(),
            })
    }

    fn ticks32(&self, units: i64, what: &'static str) -> Result<u32, SinkError> {
        let ticks = self.ticks(units, what)?;
        u32::try_from(ticks).map_err(|_| SinkError::TooLarge { what, value: ticks })
    }

    fn moov(&self) -> Result<Moov, SinkError> {
        let (Some(sps), Some(pps)) = (&self.sps, &self.pps) else {
            return Err(SinkError::NoParameterSets);
        };
        let samples = &self.samples;
        let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
            return Err(SinkError::NoParameterSets);
        };
        // Decoding timeline: sample i lasts until sample i + 1 starts; the last one its own
        // duration.
        let mut stts: Vec<SttsEntry> = Vec::new();
        for pair in samples.windows(2) {
            let delta = self.ticks32(pair[1].dts - pair[0].dts, "a decoding-time step")?;
            push_run(&mut stts, delta);
        }
        push_run(&mut stts, self.ticks32(last.duration, "a frame duration")?);
        let mut ctts: Vec<CttsEntry> = Vec::new();
        for s in samples {
            let offset = i64::from(self.ticks32(s.pts - s.dts, "a composition offset")?);
            match ctts.last_mut() {
                Some(e) if e.sample_offset == offset => e.sample_count += 1,
                _ => ctts.push(CttsEntry {
                    sample_count: 1,
                    sample_offset: offset,
                }),
            }
        }
        let count = u32::try_from(samples.len()).map_err(|_| SinkError::TooLarge {
            what: "the frame count",
            value: samples.len() as u64,
        })?;
        let first_pts = samples.iter().map(|s| s.pts).min().unwrap_or(first.pts);
        let end_pts = samples
            .iter()
            .map(|s| s.pts.saturating_add(s.duration))
            .max()
            .unwrap_or(first_pts);
        let presentation = self.ticks(end_pts - first_pts, "the duration")?;
        let media = self.ticks(last.dts + last.duration - first.dts, "the media duration")?;
        let media_start = self.ticks(first_pts - first.dts, "the first picture's offset")?;
        let sync: Vec<u32> = (1..=count)
            .zip(samples)
            .filter(|(_, s)| s.sync)
            .map(|(n, _)| n)
            .collect();
        let (width, height) = (self.resolution.width as u16, self.resolution.height as u16);
        let avc1 = Avc1 {
            visual: Visual {
                data_reference_index: 1,
                width,
                height,
                horizresolution: 72.into(),
                vertresolution: 72.into(),
                frame_count: 1,
                compressor: "".into(),
                depth: 24,
            },
            avcc: Avcc {
                configuration_version: 1,
                avc_profile_indication: sps.get(1).copied().unwrap_or(0),
                profile_compatibility: sps.get(2).copied().unwrap_or(0),
                avc_level_indication: sps.get(3).copied().unwrap_or(0),
                length_size: 4,
                sequence_parameter_sets: vec![sps.clone()],
                picture_parameter_sets: vec![pps.clone()],
                ext: None,
            },
            ..Avc1::default()
        };
        let data_start = self.mdat_start + MDAT_HEADER;
        Ok(Moov {
            mvhd: Mvhd {
                timescale: self.timescale,
                duration: presentation,
                rate: 1.into(),
                volume: 1.into(),
                next_track_id: 2,
                ..Mvhd::default()
            },
            trak: vec![Trak {
                tkhd: Tkhd {
                    track_id: 1,
                    duration: presentation,
                    enabled: true,
                    in_movie: true,
                    width: width.into(),
                    height: height.into(),
                    ..Tkhd::default()
                },
                edts: Some(Edts {
                    elst: Some(Elst {
                        entries: vec![ElstEntry {
                            segment_duration: presentation,
                            media_time: Some(media_start),
                            media_rate: 1.into(),
                        }],
                    }),
                }),
                mdia: Mdia {
                    mdhd: Mdhd {
                        timescale: self.timescale,
                        duration: media,
                        language: "und".into(),
                        ..Mdhd::default()
                    },
                    hdlr: Hdlr {
                        handler: FourCC::new(b"vide"),
                        name: "VideoHandler".into(),
                    },
                    minf: Minf {
                        vmhd: Some(Vmhd::default()),
                        dinf: Dinf {
                            dref: Dref {
                                entries: vec![DrefEntry::Url(Url {
                                    location: String::new(),
                                })],
                            },
                        },
                        stbl: Stbl {
                            stsd: Stsd {
                                codecs: vec![avc1.into()],
                            },
                            stts: Stts { entries: stts },
                            ctts: (ctts.len() > 1 || ctts.iter().any(|e| e.sample_offset != 0))
                                .then_some(Ctts { entries: ctts }),
                            stss: (sync.len() < samples.len()).then_some(Stss { entries: sync }),
                            // Every sample in one chunk, right after the mdat header.
                            stsc: Stsc {
                                entries: vec![StscEntry {
                                    first_chunk: 1,
                                    samples_per_chunk: count,
                                    sample_description_index: 1,
                                }],
                            },
                            stsz: Stsz {
                                samples: StszSamples::Different {
                                    sizes: samples.iter().map(|s| s.size).collect(),
                                },
                            },
                            co64: Some(Co64 {
                                entries: vec![data_start],
                            }),
                            ..Stbl::default()
                        },
                        ..Minf::default()
                    },
                },
                ..Trak::default()
            }],
            ..Moov::default()
        })
    }
}

/// Appends `delta` to a run-length table of sample durations.
fn push_run(stts: &mut Vec<SttsEntry>, delta: u32) {
    match stts.last_mut() {
        Some(e) if e.sample_delta == delta => e.sample_count += 1,
        _ => stts.push(SttsEntry {
            sample_count: 1,
            sample_delta: delta,
        }),
    }
}
