//! HEVC (H.265) Annex B byte streams: the NAL unit header (two bytes, ITU-T H.265 7.3.1.2), the
//! parameter sets, the first slice segment's type, and the fields of the sequence parameter set
//! that MP4's `hvcC` record repeats (profile, tier, level, chroma format, bit depths).
//!
//! Like [`super::h264`], written by hand for the few read-only questions the crate asks about
//! streams it made. Every function takes any bytes (it is fuzzed) and never panics; malformed
//! input gives `None` or fewer units, not an error.

use std::ops::RangeInclusive;

use super::annexb::BitReader;
pub use super::annexb::{nal_units, NalUnits};

/// NAL unit type of a trailing picture's slice segment, not a reference (`TRAIL_N`).
pub const NAL_TRAIL_N: u8 = 0;
/// NAL unit type of a trailing picture's slice segment (`TRAIL_R`).
pub const NAL_TRAIL_R: u8 = 1;
/// NAL unit type of a broken-link access picture with leading pictures (`BLA_W_LP`), the first
/// IRAP type.
pub const NAL_BLA_W_LP: u8 = 16;
/// NAL unit type of an IDR picture that may have decodable leading pictures (`IDR_W_RADL`).
pub const NAL_IDR_W_RADL: u8 = 19;
/// NAL unit type of an IDR picture without leading pictures (`IDR_N_LP`).
pub const NAL_IDR_N_LP: u8 = 20;
/// NAL unit type of a clean random access picture (`CRA_NUT`): an open-GOP keyframe.
pub const NAL_CRA: u8 = 21;
/// NAL unit type of a video parameter set.
pub const NAL_VPS: u8 = 32;
/// NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 33;
/// NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 34;
/// NAL unit type of an access unit delimiter.
pub const NAL_AUD: u8 = 35;
/// NAL unit type of a prefix SEI message.
pub const NAL_SEI_PREFIX: u8 = 39;
/// NAL unit type of a suffix SEI message.
pub const NAL_SEI_SUFFIX: u8 = 40;
/// The intra random access point (IRAP) NAL unit types: BLA 16-18, IDR 19-20, CRA 21 and the
/// reserved 22-23 (H.265 Table 7-1). Decoding can start at such a picture.
pub const IRAP: RangeInclusive<u8> = 16..=23;

/// The type (`nal_unit_type`, 0-63) of a NAL unit, from its two-byte header; `None` for a unit
/// shorter than its header.
#[must_use]
pub fn nal_unit_type(nal: &[u8]) -> Option<u8> {
    match nal {
        [first, _, ..] => Some(first >> 1 & 0x3f),
        _ => None,
    }
}

/// The NAL unit types of an Annex B buffer, in order.
#[must_use]
pub fn nal_types(data: &[u8]) -> Vec<u8> {
    nal_units(data).filter_map(nal_unit_type).collect()
}

/// Whether NAL unit type `t` is a slice segment of a picture (VCL types 0-9 and 16-21; the
/// others of 0-31 are reserved).
#[must_use]
pub fn is_slice(t: u8) -> bool {
    t <= 9 || (NAL_BLA_W_LP..=NAL_CRA).contains(&t)
}

/// True if the buffer holds an IRAP picture (IDR, CRA or BLA): a keyframe.
#[must_use]
pub fn is_irap(data: &[u8]) -> bool {
    nal_units(data).any(|nal| nal_unit_type(nal).is_some_and(|t| IRAP.contains(&t)))
}

/// True if the buffer holds an IDR picture.
#[must_use]
pub fn is_idr(data: &[u8]) -> bool {
    nal_units(data).any(|nal| matches!(nal_unit_type(nal), Some(NAL_IDR_W_RADL | NAL_IDR_N_LP)))
}

/// The VPS, SPS and PPS units of a buffer, each behind a 4-byte start code.
#[must_use]
pub fn parameter_sets(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for nal in nal_units(data) {
        if matches!(nal_unit_type(nal), Some(NAL_VPS | NAL_SPS | NAL_PPS)) {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal);
        }
    }
    out
}

/// `slice_type` of the first slice segment of an access unit: 0 B, 1 P, 2 I (H.265 Table 7-7;
/// not H.264's numbering).
///
/// The slice header's length before `slice_type` depends on the picture parameter set the
/// slice names (`num_extra_slice_header_bits`): it is looked up in `data`, then in `context`
/// (the stream's parameter sets, for access units that do not repeat them); `None` if neither
/// holds it.
#[must_use]
pub fn first_slice_type(data: &[u8], context: &[u8]) -> Option<u32> {
    let nal = nal_units(data).find(|n| nal_unit_type(n).is_some_and(is_slice))?;
    let t = nal_unit_type(nal)?;
    let mut bits = BitReader::new(nal.get(2..)?);
    // Only the first segment of a picture starts without a segment address (whose length needs
    // the SPS); an access unit's first VCL unit is one.
    if !bits.flag()? {
        return None;
    }
    if IRAP.contains(&t) {
        bits.skip(1)?; // no_output_of_prior_pics_flag
    }
    let pps_id = bits.exp_golomb()?;
    let extra = nal_units(data)
        .chain(nal_units(context))
        .filter(|n| nal_unit_type(n) == Some(NAL_PPS))
        .filter_map(pps_extra_bits)
        .find(|&(id, _)| id == pps_id)
        .map(|(_, extra)| extra)?;
    bits.skip(extra)?; // slice_reserved_flag[i]
    let slice_type = bits.exp_golomb()?;
    (slice_type <= 2).then_some(slice_type)
}

/// `(pps_pic_parameter_set_id, num_extra_slice_header_bits)` of a PPS unit (H.265 7.3.2.3.1).
fn pps_extra_bits(nal: &[u8]) -> Option<(u32, u32)> {
    let mut bits = BitReader::new(nal.get(2..)?);
    let id = bits.exp_golomb()?;
    bits.exp_golomb()?; // pps_seq_parameter_set_id
    bits.skip(2)?; // dependent_slice_segments_enabled_flag, output_flag_present_flag
    Some((id, bits.read_bits(3)?))
}

/// What an SPS says that MP4's `hvcC` record repeats (ISO/IEC 14496-15 8.3.3.1.2 takes these
/// fields from the SPS's `profile_tier_level` and its format fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sps {
    /// `general_profile_space` (0-3).
    pub profile_space: u8,
    /// `general_tier_flag`: the High tier.
    pub tier: bool,
    /// `general_profile_idc` (1 Main, 2 Main 10, 4 format range extensions).
    pub profile_idc: u8,
    /// `general_profile_compatibility_flag[0..32]`, as the 4 bytes they are in the stream.
    pub compatibility: [u8; 4],
    /// The 48 bits from `general_progressive_source_flag` to `general_inbld_flag` (or its
    /// reserved bit), as the 6 bytes they are in the stream.
    pub constraints: [u8; 6],
    /// `general_level_idc`: 30 times the level (93 is level 3.1).
    pub level_idc: u8,
    /// `sps_max_sub_layers_minus1 + 1` (1-7).
    pub sub_layers: u8,
    /// `sps_temporal_id_nesting_flag`.
    pub temporal_id_nesting: bool,
    /// `chroma_format_idc` (1 is 4:2:0).
    pub chroma_format_idc: u8,
    /// `bit_depth_luma_minus8` (0-8).
    pub bit_depth_luma_minus8: u8,
    /// `bit_depth_chroma_minus8` (0-8).
    pub bit_depth_chroma_minus8: u8,
}

impl Sps {
    /// Reads an SPS unit (header included), H.265 7.3.2.2.1 up to the bit depths; `None` for
    /// one that is not an SPS, is cut short or holds a value out of its range.
    pub(crate) fn parse(nal: &[u8]) -> Option<Sps> {
        if nal_unit_type(nal)? != NAL_SPS {
            return None;
        }
        let mut bits = BitReader::new(nal.get(2..)?);
        bits.skip(4)?; // sps_video_parameter_set_id
        let max_sub_layers_minus1 = bits.read_bits(3)?;
        if max_sub_layers_minus1 > 6 {
            return None;
        }
        let temporal_id_nesting = bits.flag()?;
        // profile_tier_level(1, sps_max_sub_layers_minus1), 7.3.3.
        let profile_space = u8::try_from(bits.read_bits(2)?).ok()?;
        let tier = bits.flag()?;
        let profile_idc = u8::try_from(bits.read_bits(5)?).ok()?;
        let compatibility = bits.read_bits(32)?.to_be_bytes();
        let mut constraints = [0u8; 6];
        for byte in &mut constraints {
            *byte = u8::try_from(bits.read_bits(8)?).ok()?;
        }
        let level_idc = u8::try_from(bits.read_bits(8)?).ok()?;
        let mut present = [(false, false); 6];
        for p in present.iter_mut().take(max_sub_layers_minus1 as usize) {
            *p = (bits.flag()?, bits.flag()?);
        }
        if max_sub_layers_minus1 > 0 {
            bits.skip(2 * (8 - max_sub_layers_minus1))?; // reserved_zero_2bits
        }
        for &(profile, level) in present.iter().take(max_sub_layers_minus1 as usize) {
            if profile {
                bits.skip(88)?; // sub_layer profile space .. reserved bits
            }
            if level {
                bits.skip(8)?; // sub_layer_level_idc
            }
        }
        if bits.exp_golomb()? > 15 {
            return None; // sps_seq_parameter_set_id
        }
        let chroma_format_idc = bits.exp_golomb()?;
        if chroma_format_idc > 3 {
            return None;
        }
        if chroma_format_idc == 3 {
            bits.skip(1)?; // separate_colour_plane_flag
        }
        bits.exp_golomb()?; // pic_width_in_luma_samples
        bits.exp_golomb()?; // pic_height_in_luma_samples
        if bits.flag()? {
            for _ in 0..4 {
                bits.exp_golomb()?; // conf_win_{left,right,top,bottom}_offset
            }
        }
        let luma = bits.exp_golomb()?;
        let chroma = bits.exp_golomb()?;
        if luma > 8 || chroma > 8 {
            return None;
        }
        Some(Sps {
            profile_space,
            tier,
            profile_idc,
            compatibility,
            constraints,
            level_idc,
            sub_layers: u8::try_from(max_sub_layers_minus1 + 1).ok()?,
            temporal_id_nesting,
            chroma_format_idc: u8::try_from(chroma_format_idc).ok()?,
            bit_depth_luma_minus8: u8::try_from(luma).ok()?,
            bit_depth_chroma_minus8: u8::try_from(chroma).ok()?,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The parameter sets and the first bytes of each picture's slice segment of a 64x48 4:2:0
    /// stream encoded here with `ffmpeg -f lavfi -i testsrc=size=64x48:rate=25 -frames:v 12
    /// -pix_fmt yuv420p -c:v libx265 -g 5` (libx265 3.5: Main profile, level 1, open GOPs).
    pub(crate) const VPS: &[u8] = &[
        0x40, 0x01, 0x0c, 0x01, 0xff, 0xff, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00,
        0x03, 0x00, 0x00, 0x03, 0x00, 0x1e, 0x95, 0x98, 0x09,
    ];
    pub(crate) const SPS: &[u8] = &[
        0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x03, 0x00, 0x1e, 0xa0, 0x20, 0x83, 0x16, 0x59, 0x59, 0xae, 0x4c, 0xaf, 0x01, 0x68, 0x08,
        0x00, 0x00, 0x03, 0x00, 0x08, 0x00, 0x00, 0x03, 0x00, 0xc8, 0x40,
    ];
    pub(crate) const PPS: &[u8] = &[0x44, 0x01, 0xc1, 0x73, 0xd0, 0x89];
    /// Slice segment starts: IDR_N_LP (I), CRA (I), RASL_R (B), TRAIL_R (P).
    const IDR: &[u8] = &[0x28, 0x01, 0xaf, 0x1d, 0x80];
    const CRA: &[u8] = &[0x2a, 0x01, 0xac, 0x14, 0xa5];
    const RASL: &[u8] = &[0x12, 0x01, 0xe0, 0x64, 0x9d];
    const TRAIL: &[u8] = &[0x02, 0x01, 0xd0, 0x59, 0x7e];

    /// `units` behind 4-byte start codes.
    pub(crate) fn annexb(units: &[&[u8]]) -> Vec<u8> {
        units
            .iter()
            .flat_map(|u| [&[0, 0, 0, 1][..], u].concat())
            .collect()
    }

    #[test]
    fn nal_types_keyframes_and_parameter_sets() {
        let au = annexb(&[&[0x46, 0x01, 0x10], VPS, SPS, PPS, IDR]);
        assert_eq!(nal_types(&au), vec![NAL_AUD, 32, 33, 34, NAL_IDR_N_LP]);
        assert!(is_irap(&au) && is_idr(&au));
        assert_eq!(parameter_sets(&au), annexb(&[VPS, SPS, PPS]));
        let cra = annexb(&[CRA]);
        assert!(is_irap(&cra) && !is_idr(&cra));
        assert!(!is_irap(&annexb(&[TRAIL])) && !is_irap(&annexb(&[RASL])));
        // A one-byte unit has no type.
        assert_eq!(nal_types(&[0, 0, 1, 0x40]), Vec::<u8>::new());
    }

    #[test]
    fn slice_types_need_the_pps() {
        let sets = annexb(&[VPS, SPS, PPS]);
        assert_eq!(
            first_slice_type(&annexb(&[VPS, SPS, PPS, IDR]), &[]),
            Some(2)
        );
        assert_eq!(first_slice_type(&annexb(&[CRA]), &sets), Some(2));
        assert_eq!(first_slice_type(&annexb(&[RASL]), &sets), Some(0));
        assert_eq!(first_slice_type(&annexb(&[TRAIL]), &sets), Some(1));
        // Without its PPS the header's length is unknown.
        assert_eq!(first_slice_type(&annexb(&[TRAIL]), &[]), None);
        // Two extra header bits in the PPS shift slice_type: num_extra_slice_header_bits 2
        // (pps 0 sps 0, flags 00, 010), then a slice with 2 reserved bits before ue(v) 1.
        let pps = [0x44, 0x01, 0b1100_0101, 0];
        let slice = [0x02, 0x01, 0b1100_1000];
        assert_eq!(first_slice_type(&annexb(&[&pps, &slice]), &[]), Some(0));
    }

    #[test]
    fn sps_fields_for_hvcc() {
        let sps = Sps::parse(SPS).unwrap();
        assert_eq!(
            sps,
            Sps {
                profile_space: 0,
                tier: false,
                profile_idc: 1,
                compatibility: [0x60, 0, 0, 0],
                constraints: [0x90, 0, 0, 0, 0, 0],
                level_idc: 30,
                sub_layers: 1,
                temporal_id_nesting: true,
                chroma_format_idc: 1,
                bit_depth_luma_minus8: 0,
                bit_depth_chroma_minus8: 0,
            }
        );
        assert_eq!(Sps::parse(PPS), None);
        // Cut inside profile_tier_level (18 bytes with its 3 emulation-prevention bytes): no
        // SPS. The fields end in byte 22; what follows is not read.
        for end in 0..18 {
            assert_eq!(Sps::parse(&SPS[..end]), None, "cut at {end}");
        }
        assert_eq!(Sps::parse(&SPS[..22]), Some(sps));
    }
}
