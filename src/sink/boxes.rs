//! The MP4 boxes of the sink: `ftyp`, the `moov` of each layout and a fragment's `moof`. Only
//! what goes into them is decided here; `mp4-atom` encodes them.

use std::collections::BTreeMap;

use mp4_atom::{
    Avc1, Avcc, Co64, Codec as SampleEntry, Ctts, CttsEntry, Dinf, Dref, DrefEntry, Edts, Elst,
    ElstEntry, Encode, FourCC, Ftyp, Hdlr, Hvc1, HvcCArray, Hvcc, Mdhd, Mdia, Mfhd, Minf, Moof,
    Moov, Mvex, Mvhd, Stbl, Stsc, StscEntry, Stsd, Stss, Stsz, StszSamples, Stts, SttsEntry, Tfdt,
    Tfhd, Tkhd, Traf, Trak, Trex, Trun, TrunEntry, TrunSamples, Url, Visual, Vmhd,
};

use super::SinkError;
use crate::bitstream::{self, hevc, ParameterSet};
use crate::encoder::{Codec, Resolution};

/// One sample's index entry, in the encoder's time-base units.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sample {
    pub dts: i64,
    pub pts: i64,
    pub duration: i64,
    pub size: u32,
    pub sync: bool,
}

/// Sample flags of a `trun` entry (ISO/IEC 14496-12 8.8.3.1): a sync sample depends on no other
/// (`sample_depends_on` 2); any other depends on others (1) and is a non-sync sample.
const SYNC_FLAGS: u32 = 0x0200_0000;
const NON_SYNC_FLAGS: u32 = 0x0101_0000;

/// What the track's description needs: the picture, the time base, the codec and its
/// parameter sets.
#[derive(Debug)]
pub(super) struct Track {
    pub resolution: Resolution,
    /// Ticks per time-base unit.
    pub tick: u32,
    /// Ticks per second.
    pub timescale: u32,
    /// The stream's codec, once a parameter set has told it ([`bitstream::detect`]).
    pub codec: Option<Codec>,
    /// The first parameter set of each kind the stream carried (NAL units, header included).
    pub sets: BTreeMap<ParameterSet, Vec<u8>>,
}

fn mp4_err(e: mp4_atom::Error) -> SinkError {
    SinkError::Mp4(e.to_string())
}

/// Encodes `atom` into bytes.
pub(super) fn bytes(atom: &impl Encode) -> Result<Vec<u8>, SinkError> {
    let mut out = Vec::new();
    atom.encode(&mut out).map_err(mp4_err)?;
    Ok(out)
}

/// The file type: ISO base media, with the `avc1` brand (ISO/IEC 14496-15) for an H.264 track;
/// `codec` is `None` where it is not known yet (a progressive file starts before its first
/// parameter set).
pub(super) fn ftyp(fragmented: bool, codec: Option<Codec>) -> Ftyp {
    let mut brands: Vec<FourCC> = vec![b"isom".into(), b"iso2".into()];
    if codec == Some(Codec::H264) {
        brands.push(b"avc1".into());
    }
    brands.push(b"mp41".into());
    if fragmented {
        // Fragments (and the signed composition offsets of a version 1 `trun`).
        brands.push(b"iso6".into());
    }
    Ftyp {
        major_brand: b"isom".into(),
        minor_version: 512,
        compatible_brands: brands,
    }
}

/// The smallest `pts - dts` of `samples`: what the encoder's decoding timestamps carry beyond
/// the reordering the stream needs. Subtracted from every composition offset.
pub(super) fn slack(samples: &[Sample]) -> i64 {
    samples.iter().map(|s| s.pts - s.dts).min().unwrap_or(0)
}

impl Track {
    pub fn ticks(&self, units: i64, what: &'static str) -> Result<u64, SinkError> {
        u64::try_from(units)
            .ok()
            .and_then(|u| u.checked_mul(u64::from(self.tick)))
            .ok_or(SinkError::TooLarge {
                what,
                value: units.unsigned_abs(),
            })
    }

    pub fn ticks32(&self, units: i64, what: &'static str) -> Result<u32, SinkError> {
        let ticks = self.ticks(units, what)?;
        u32::try_from(ticks).map_err(|_| SinkError::TooLarge { what, value: ticks })
    }

    /// A signed composition offset in ticks.
    fn cts(&self, units: i64) -> Result<i64, SinkError> {
        units
            .checked_mul(i64::from(self.tick))
            .filter(|t| i32::try_from(*t).is_ok())
            .ok_or(SinkError::TooLarge {
                what: "a composition offset",
                value: units.unsigned_abs(),
            })
    }

    /// The parameter set of `kind`, or [`SinkError::NoParameterSets`]; checked to fit the
    /// 16-bit length the decoder configuration records give it.
    fn set(&self, kind: ParameterSet) -> Result<Vec<u8>, SinkError> {
        let set = self.sets.get(&kind).ok_or(SinkError::NoParameterSets)?;
        if set.len() > usize::from(u16::MAX) {
            return Err(SinkError::TooLarge {
                what: "a parameter set",
                value: set.len() as u64,
            });
        }
        Ok(set.clone())
    }

    /// The sample entry of the track's codec: `avc1` with an `avcC` for H.264, `hvc1` with an
    /// `hvcC` for HEVC, each made from the stream's first parameter sets.
    fn sample_entry(&self) -> Result<SampleEntry, SinkError> {
        let codec = self.codec.ok_or(SinkError::NoParameterSets)?;
        let (width, height) = self.size();
        let visual = Visual {
            data_reference_index: 1,
            width,
            height,
            horizresolution: 72.into(),
            vertresolution: 72.into(),
            frame_count: 1,
            compressor: "".into(),
            depth: 24,
        };
        Ok(match codec {
            Codec::H264 => {
                let sps = self.set(ParameterSet::Sps)?;
                Avc1 {
                    visual,
                    avcc: Avcc {
                        configuration_version: 1,
                        avc_profile_indication: sps.get(1).copied().unwrap_or(0),
                        profile_compatibility: sps.get(2).copied().unwrap_or(0),
                        avc_level_indication: sps.get(3).copied().unwrap_or(0),
                        length_size: 4,
                        sequence_parameter_sets: vec![sps],
                        picture_parameter_sets: vec![self.set(ParameterSet::Pps)?],
                        ext: None,
                    },
                    ..Avc1::default()
                }
                .into()
            }
            Codec::Hevc => Hvc1 {
                visual,
                hvcc: hvcc(
                    &self.set(ParameterSet::Vps)?,
                    &self.set(ParameterSet::Sps)?,
                    &self.set(ParameterSet::Pps)?,
                )?,
                ..Hvc1::default()
            }
            .into(),
        })
    }

    /// Checked against 65535 when the writer was made.
    fn size(&self) -> (u16, u16) {
        (
            u16::try_from(self.resolution.width).unwrap_or(u16::MAX),
            u16::try_from(self.resolution.height).unwrap_or(u16::MAX),
        )
    }

    /// The `moov` around `stbl`: presentation lasts `presentation` ticks from the media time
    /// `media_start` (the first picture's composition time), the media `media` ticks.
    fn moov(
        &self,
        stbl: Stbl,
        presentation: u64,
        media: u64,
        media_start: u64,
        mvex: Option<Mvex>,
    ) -> Moov {
        let (width, height) = self.size();
        Moov {
            mvhd: Mvhd {
                timescale: self.timescale,
                duration: presentation,
                rate: 1.into(),
                volume: 1.into(),
                next_track_id: 2,
                ..Mvhd::default()
            },
            mvex,
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
                        stbl,
                        ..Minf::default()
                    },
                },
                ..Trak::default()
            }],
            ..Moov::default()
        }
    }

    /// A `moov` whose sample table holds `samples` (decoding order), stored in `chunks` (file
    /// offset of the chunk's first sample, samples in it), in order; the sample after the last
    /// one starts at `next_dts` (`None`: the last one lasts its own duration); `slack` is
    /// subtracted from every composition offset.
    ///
    /// `fragmented`: the initial `moov` of a fragmented file, which also announces fragments
    /// (`mvex`); its durations and edit list are those of its own samples, and the fragments
    /// extend them (an edit list of duration 0, "up to the end", makes FFmpeg discard the
    /// `moov`'s own samples). Otherwise the complete `moov` of a regular file.
    pub fn table_moov(
        &self,
        samples: &[Sample],
        chunks: &[(u64, u32)],
        next_dts: Option<i64>,
        slack: i64,
        fragmented: bool,
    ) -> Result<Moov, SinkError> {
        let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
            return Err(SinkError::NoParameterSets);
        };
        // Decoding timeline: sample i lasts until sample i + 1 starts; the last one until
        // `next_dts`, or its own duration.
        let mut stts: Vec<SttsEntry> = Vec::new();
        for pair in samples.windows(2) {
            let delta = self.ticks32(pair[1].dts - pair[0].dts, "a decoding-time step")?;
            push_run(&mut stts, delta);
        }
        let last_duration = next_dts.map_or(last.duration, |next| next - last.dts);
        push_run(&mut stts, self.ticks32(last_duration, "a frame duration")?);
        let mut ctts: Vec<CttsEntry> = Vec::new();
        for s in samples {
            let offset = self.cts(s.pts - s.dts - slack)?;
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
        let media = self.ticks(last.dts + last_duration - first.dts, "the media duration")?;
        let media_start =
            self.ticks(first_pts - first.dts - slack, "the first picture's offset")?;
        let sync: Vec<u32> = (1..=count)
            .zip(samples)
            .filter(|(_, s)| s.sync)
            .map(|(n, _)| n)
            .collect();
        let mut stsc: Vec<StscEntry> = Vec::new();
        for (n, &(_, in_chunk)) in (1u32..).zip(chunks) {
            if stsc.last().is_none_or(|e| e.samples_per_chunk != in_chunk) {
                stsc.push(StscEntry {
                    first_chunk: n,
                    samples_per_chunk: in_chunk,
                    sample_description_index: 1,
                });
            }
        }
        let stbl = Stbl {
            stsd: Stsd {
                codecs: vec![self.sample_entry()?],
            },
            stts: Stts { entries: stts },
            // The initial moov of a fragmented file always has one, even of zeros: FFmpeg (5.1)
            // reads the composition offsets of later fragments only where it has (found with a
            // failover from a stream without B-frames to one with them).
            ctts: (fragmented || ctts.iter().any(|e| e.sample_offset != 0))
                .then_some(Ctts { entries: ctts }),
            stss: (sync.len() < samples.len()).then_some(Stss { entries: sync }),
            stsc: Stsc { entries: stsc },
            stsz: Stsz {
                samples: StszSamples::Different {
                    sizes: samples.iter().map(|s| s.size).collect(),
                },
            },
            co64: Some(Co64 {
                entries: chunks.iter().map(|&(offset, _)| offset).collect(),
            }),
            ..Stbl::default()
        };
        if fragmented {
            let mvex = Mvex {
                mehd: None,
                trex: vec![Trex {
                    track_id: 1,
                    default_sample_description_index: 1,
                    ..Trex::default()
                }],
            };
            Ok(self.moov(stbl, presentation, media, media_start, Some(mvex)))
        } else {
            Ok(self.moov(stbl, presentation, media, media_start, None))
        }
    }

    /// The `moof` of fragment `sequence`: `samples` (decoding order) whose data follows in an
    /// `mdat` right after it; the fragment after it starts at `next_dts` (`None`: the last
    /// sample lasts its own duration). `origin` is the first sample's dts of the file, `slack`
    /// what is subtracted from every composition offset.
    pub fn moof(
        &self,
        sequence: u32,
        samples: &[Sample],
        next_dts: Option<i64>,
        origin: i64,
        slack: i64,
    ) -> Result<Vec<u8>, SinkError> {
        let Some(first) = samples.first() else {
            return Err(SinkError::NoParameterSets);
        };
        let mut entries = Vec::with_capacity(samples.len());
        for (i, s) in samples.iter().enumerate() {
            let next = samples.get(i + 1).map(|n| n.dts).or(next_dts);
            let duration = match next {
                Some(next) => self.ticks32(next - s.dts, "a decoding-time step")?,
                None => self.ticks32(s.duration, "a frame duration")?,
            };
            entries.push(TrunEntry {
                duration: Some(duration),
                size: Some(s.size),
                flags: Some(if s.sync { SYNC_FLAGS } else { NON_SYNC_FLAGS }),
                cts: Some(self.cts(s.pts - s.dts - slack)?),
            });
        }
        let mut moof = Moof {
            mfhd: Mfhd {
                sequence_number: sequence,
            },
            traf: vec![Traf {
                tfhd: Tfhd {
                    track_id: 1,
                    default_base_is_moof: true,
                    ..Tfhd::default()
                },
                tfdt: Some(Tfdt {
                    base_media_decode_time: self
                        .ticks(first.dts - origin, "a fragment's decoding time")?,
                }),
                trun: vec![Trun {
                    data_offset: Some(0),
                    samples: TrunSamples::Explicit(entries),
                }],
                ..Traf::default()
            }],
        };
        // The data starts after the moof and the mdat's 8-byte header; the offset's value does
        // not change the moof's size.
        let size = bytes(&moof)?.len();
        let offset = i32::try_from(size + 8).map_err(|_| SinkError::TooLarge {
            what: "a fragment's index",
            value: size as u64,
        })?;
        moof.traf[0].trun[0].data_offset = Some(offset);
        bytes(&moof)
    }
}

/// The `HEVCDecoderConfigurationRecord` (ISO/IEC 14496-15 8.3.3.1) of a stream whose parameter
/// sets are `vps`, `sps` and `pps` (NAL units, header included):
/// - profile space, tier, profile, compatibility and constraint flags, level, chroma format and
///   bit depths are the SPS's; the temporal layers and their nesting too;
/// - `min_spatial_segmentation_idc` 0 and `parallelism_type` 0 ("unknown", allowed by 8.3.3.1.3),
///   `avgFrameRate` 0 and `constantFrameRate` 0 (unspecified): a decoder needs none of them;
/// - 4-byte NAL unit lengths, one array per parameter set, marked complete (what `hvc1` asks of
///   its record; the stream repeats its parameter sets in band as well, which FFmpeg's own
///   `hvc1` files do too, so that new ones after a failover reach the decoder).
pub(super) fn hvcc(vps: &[u8], sps: &[u8], pps: &[u8]) -> Result<Hvcc, SinkError> {
    let fields = hevc::Sps::parse(sps)
        // The record holds bit depths up to 15 (3 bits for the depth less 8).
        .filter(|f| f.bit_depth_luma_minus8 <= 7 && f.bit_depth_chroma_minus8 <= 7)
        .ok_or(SinkError::BadSps {
            codec: Codec::Hevc,
            len: sps.len(),
        })?;
    let arrays = [vps, sps, pps]
        .iter()
        .map(|nal| HvcCArray {
            completeness: true,
            nal_unit_type: bitstream::nal_unit_type(Codec::Hevc, nal).unwrap_or(0),
            nalus: vec![nal.to_vec()],
        })
        .collect();
    Ok(Hvcc {
        configuration_version: 1,
        general_profile_space: fields.profile_space,
        general_tier_flag: fields.tier,
        general_profile_idc: fields.profile_idc,
        general_profile_compatibility_flags: fields.compatibility,
        general_constraint_indicator_flags: fields.constraints,
        general_level_idc: fields.level_idc,
        min_spatial_segmentation_idc: 0,
        parallelism_type: 0,
        chroma_format_idc: fields.chroma_format_idc,
        bit_depth_luma_minus8: fields.bit_depth_luma_minus8,
        bit_depth_chroma_minus8: fields.bit_depth_chroma_minus8,
        avg_frame_rate: 0,
        constant_frame_rate: 0,
        num_temporal_layers: fields.sub_layers,
        temporal_id_nested: fields.temporal_id_nesting,
        length_size_minus_one: 3,
        arrays,
    })
}

/// Builds an `hvcC` from the first HEVC VPS, SPS and PPS among the NAL units of `data` (any
/// bytes), encodes it and decodes it back, checking that nothing was lost; returns whether the
/// units made a record. For the fuzz targets.
#[cfg(feature = "fuzzing")]
pub fn fuzz_hvcc(data: &[u8]) -> bool {
    use mp4_atom::Decode;
    let mut sets = BTreeMap::new();
    for nal in bitstream::nal_units(data).filter(|n| n.len() <= usize::from(u16::MAX)) {
        if let Some(kind) = bitstream::parameter_set(Codec::Hevc, nal) {
            sets.entry(kind).or_insert(nal);
        }
    }
    let (Some(vps), Some(sps), Some(pps)) = (
        sets.get(&ParameterSet::Vps),
        sets.get(&ParameterSet::Sps),
        sets.get(&ParameterSet::Pps),
    ) else {
        return false;
    };
    let Ok(record) = hvcc(vps, sps, pps) else {
        return false;
    };
    let encoded = bytes(&record);
    assert!(encoded.is_ok(), "an hvcC that does not encode: {record:?}");
    let decoded = encoded
        .ok()
        .and_then(|e| Hvcc::decode(&mut e.as_slice()).ok());
    assert_eq!(decoded.as_ref(), Some(&record), "hvcC round trip");
    true
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

#[cfg(test)]
mod tests {
    use mp4_atom::Decode;

    use super::*;
    use crate::bitstream::hevc::tests::{PPS, SPS, VPS};

    fn track(codec: Option<Codec>, sets: &[(ParameterSet, &[u8])]) -> Track {
        Track {
            resolution: Resolution {
                width: 64,
                height: 48,
            },
            tick: 1,
            timescale: 25,
            codec,
            sets: sets.iter().map(|&(k, v)| (k, v.to_vec())).collect(),
        }
    }

    #[test]
    fn hvcc_repeats_the_sps_and_holds_the_parameter_sets() {
        let record = hvcc(VPS, SPS, PPS).unwrap();
        assert_eq!(record.general_profile_idc, 1);
        assert_eq!(record.general_profile_compatibility_flags, [0x60, 0, 0, 0]);
        assert_eq!(
            record.general_constraint_indicator_flags,
            [0x90, 0, 0, 0, 0, 0]
        );
        assert_eq!(record.general_level_idc, 30);
        assert_eq!(record.chroma_format_idc, 1);
        assert_eq!(record.num_temporal_layers, 1);
        assert!(record.temporal_id_nested);
        assert_eq!(record.length_size_minus_one, 3);
        let arrays: Vec<(u8, bool, &[u8])> = record
            .arrays
            .iter()
            .map(|a| (a.nal_unit_type, a.completeness, a.nalus[0].as_slice()))
            .collect();
        assert_eq!(arrays, [(32, true, VPS), (33, true, SPS), (34, true, PPS)]);
        let encoded = bytes(&record).unwrap();
        assert_eq!(Hvcc::decode(&mut encoded.as_slice()).unwrap(), record);
        // An SPS cut inside profile_tier_level is refused, naming the codec.
        let e = hvcc(VPS, &SPS[..12], PPS).unwrap_err();
        assert!(
            matches!(
                e,
                SinkError::BadSps {
                    codec: Codec::Hevc,
                    len: 12
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("hevc SPS (12 bytes)"), "{e}");
    }

    #[test]
    fn the_sample_entry_is_the_codecs_and_needs_every_parameter_set() {
        let hevc = [
            (ParameterSet::Vps, VPS),
            (ParameterSet::Sps, SPS),
            (ParameterSet::Pps, PPS),
        ];
        let entry = track(Some(Codec::Hevc), &hevc).sample_entry().unwrap();
        let SampleEntry::Hvc1(hvc1) = entry else {
            panic!("not hvc1: {entry:?}");
        };
        assert_eq!((hvc1.visual.width, hvc1.visual.height), (64, 48));
        // Without its VPS, or without a codec, there is no decoder configuration.
        let e = track(Some(Codec::Hevc), &hevc[1..])
            .sample_entry()
            .unwrap_err();
        assert!(matches!(e, SinkError::NoParameterSets), "{e:?}");
        assert!(matches!(
            track(None, &hevc).sample_entry(),
            Err(SinkError::NoParameterSets)
        ));
        let avc = [
            (ParameterSet::Sps, &[0x67, 0x64, 0, 0x1f, 0xac][..]),
            (ParameterSet::Pps, &[0x68, 0xee][..]),
        ];
        let entry = track(Some(Codec::H264), &avc).sample_entry().unwrap();
        let SampleEntry::Avc1(avc1) = entry else {
            panic!("not avc1: {entry:?}");
        };
        assert_eq!(
            (
                avc1.avcc.avc_profile_indication,
                avc1.avcc.avc_level_indication
            ),
            (0x64, 0x1f)
        );
        // A parameter set longer than the record's 16-bit length is refused, not truncated.
        let long = vec![0x68; 70_000];
        let e = track(Some(Codec::H264), &[avc[0], (ParameterSet::Pps, &long)])
            .sample_entry()
            .unwrap_err();
        assert!(
            matches!(e, SinkError::TooLarge { value: 70_000, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn only_an_h264_file_claims_the_avc1_brand() {
        let brands = |codec| ftyp(true, codec).compatible_brands;
        assert!(brands(Some(Codec::H264)).contains(&b"avc1".into()));
        for codec in [Some(Codec::Hevc), None] {
            assert!(!brands(codec).contains(&b"avc1".into()), "{codec:?}");
            assert!(brands(codec).contains(&b"iso6".into()));
        }
    }
}
