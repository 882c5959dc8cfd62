//! Annex B byte streams of every [`Codec`]: the NAL units of an access unit and the few header
//! fields the crate reads from encoder output (keyframes, parameter sets, picture types).
//!
//! The functions here take the codec and dispatch to its module ([`h264`], [`hevc`]), so a
//! caller holds a [`Codec`] and never names a codec's NAL unit types itself. The framing (start
//! codes) is the same for both: [`nal_units`] needs no codec. [`detect`] tells the codec of a
//! stream from its parameter sets, for a sink that is given bytes only.
//!
//! Every function takes any bytes (the parsers are fuzzed) and never panics; malformed input
//! gives `None`, `false` or fewer units, not an error.

mod annexb;
pub mod h264;
pub mod hevc;

pub use annexb::{nal_units, NalUnits};

use crate::encoder::{Codec, FrameType};

/// Which parameter set a NAL unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ParameterSet {
    /// A video parameter set (HEVC only).
    Vps,
    /// A sequence parameter set.
    Sps,
    /// A picture parameter set.
    Pps,
}

/// The `nal_unit_type` of a NAL unit of `codec` (H.264: 0-31 from one header byte; HEVC: 0-63
/// from two).
#[must_use]
pub fn nal_unit_type(codec: Codec, nal: &[u8]) -> Option<u8> {
    match codec {
        Codec::H264 => h264::nal_unit_type(nal),
        Codec::Hevc => hevc::nal_unit_type(nal),
    }
}

/// The NAL unit types of an Annex B buffer of `codec`, in order.
#[must_use]
pub fn nal_types(codec: Codec, data: &[u8]) -> Vec<u8> {
    nal_units(data)
        .filter_map(|n| nal_unit_type(codec, n))
        .collect()
}

/// Whether a NAL unit of `codec` is a parameter set, and which.
#[must_use]
pub fn parameter_set(codec: Codec, nal: &[u8]) -> Option<ParameterSet> {
    match (codec, nal_unit_type(codec, nal)?) {
        (Codec::H264, h264::NAL_SPS) | (Codec::Hevc, hevc::NAL_SPS) => Some(ParameterSet::Sps),
        (Codec::H264, h264::NAL_PPS) | (Codec::Hevc, hevc::NAL_PPS) => Some(ParameterSet::Pps),
        (Codec::Hevc, hevc::NAL_VPS) => Some(ParameterSet::Vps),
        _ => None,
    }
}

/// The parameter sets a decoder of `codec` needs before the first picture, in the order they
/// are sent: SPS and PPS for H.264; VPS, SPS and PPS for HEVC.
#[must_use]
pub fn parameter_set_kinds(codec: Codec) -> &'static [ParameterSet] {
    match codec {
        Codec::H264 => &[ParameterSet::Sps, ParameterSet::Pps],
        Codec::Hevc => &[ParameterSet::Vps, ParameterSet::Sps, ParameterSet::Pps],
    }
}

/// The parameter sets of a buffer, each behind a 4-byte start code, in stream order (what
/// [`crate::encoder::VideoEncoder::sequence_headers`] and MP4's decoder configuration are made
/// from).
#[must_use]
pub fn parameter_sets(codec: Codec, data: &[u8]) -> Vec<u8> {
    match codec {
        Codec::H264 => h264::parameter_sets(data),
        Codec::Hevc => hevc::parameter_sets(data),
    }
}

/// Whether an access unit of `codec` is a keyframe, where decoding can start: an IDR picture
/// for H.264; an IRAP picture (IDR, CRA or BLA) for HEVC, as FFmpeg flags them. In a closed
/// GOP every HEVC keyframe is an IDR picture; a CRA (an open-GOP keyframe, libx265's default)
/// may be followed in decoding order by leading pictures that reference the GOP before it,
/// which a decoder starting at the CRA skips.
#[must_use]
pub fn is_keyframe(codec: Codec, data: &[u8]) -> bool {
    match codec {
        Codec::H264 => h264::is_idr(data),
        Codec::Hevc => hevc::is_irap(data),
    }
}

/// The picture type of an access unit of `codec`: [`FrameType::Idr`] for an IDR picture, else
/// the type of its first slice (an HEVC CRA or BLA picture is [`FrameType::I`]). HEVC slice
/// headers need the picture parameter set the slice names: it is looked up in the access unit,
/// then in `context` (the stream's parameter sets, as [`parameter_sets`] gives them). `None`
/// where no slice header can be read.
#[must_use]
pub fn frame_type(codec: Codec, data: &[u8], context: &[u8]) -> Option<FrameType> {
    match codec {
        Codec::H264 => {
            if h264::is_idr(data) {
                return Some(FrameType::Idr);
            }
            // slice_type % 5: 0 P, 1 B, 2 I, 3 SP, 4 SI (H.264 Table 7-6).
            h264::first_slice_type(data).map(|t| match t {
                0 | 3 => FrameType::P,
                1 => FrameType::B,
                _ => FrameType::I,
            })
        }
        Codec::Hevc => {
            if hevc::is_idr(data) {
                return Some(FrameType::Idr);
            }
            // slice_type: 0 B, 1 P, 2 I (H.265 Table 7-7).
            hevc::first_slice_type(data, context).map(|t| match t {
                0 => FrameType::B,
                1 => FrameType::P,
                _ => FrameType::I,
            })
        }
    }
}

/// The codec of an Annex B buffer, from its first parameter set: an HEVC VPS (header `40 01`:
/// type 32, layer 0, temporal id 0) or an H.264 SPS (type 7 with a non-zero `nal_ref_idc`, as
/// H.264 7.4.1 requires of it). Neither header reads as the other's: in H.264 `40` is the
/// unspecified type 0, and an HEVC header whose first byte ends in `00111` would need a layer
/// id of 32 or more. `None` for a buffer with neither.
#[must_use]
pub fn detect(data: &[u8]) -> Option<Codec> {
    nal_units(data).find_map(|nal| match nal {
        [0x40, 0x01, ..] => Some(Codec::Hevc),
        [b, ..] if b & 0x9f == h264::NAL_SPS && b & 0x60 != 0 => Some(Codec::H264),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::hevc::tests::{annexb, PPS, SPS, VPS};
    use super::*;

    #[test]
    fn each_codec_reads_its_own_headers() {
        let avc = [
            0, 0, 0, 1, 0x67, 0xaa, 0, 0, 1, 0x68, 0xbb, 0, 0, 1, 0x65, 0x88,
        ];
        let hevc = annexb(&[VPS, SPS, PPS, &[0x28, 0x01, 0xaf, 0x1d]]);
        assert_eq!(detect(&avc), Some(Codec::H264));
        assert_eq!(detect(&hevc), Some(Codec::Hevc));
        assert_eq!(detect(&[0, 0, 1, 0x65, 0x88]), None);
        assert!(is_keyframe(Codec::H264, &avc) && is_keyframe(Codec::Hevc, &hevc));
        // The same bytes under the other codec: HEVC reads 0x65 0x88 as type 50, not a slice.
        assert!(!is_keyframe(Codec::Hevc, &avc));
        assert_eq!(frame_type(Codec::H264, &avc, &[]), Some(FrameType::Idr));
        assert_eq!(frame_type(Codec::Hevc, &hevc, &[]), Some(FrameType::Idr));
        assert_eq!(nal_types(Codec::Hevc, &hevc), vec![32, 33, 34, 20]);
        assert_eq!(parameter_sets(Codec::Hevc, &hevc), annexb(&[VPS, SPS, PPS]));
        let kinds: Vec<_> = nal_units(&hevc)
            .filter_map(|n| parameter_set(Codec::Hevc, n))
            .collect();
        assert_eq!(kinds, parameter_set_kinds(Codec::Hevc));
        let kinds: Vec<_> = nal_units(&avc)
            .filter_map(|n| parameter_set(Codec::H264, n))
            .collect();
        assert_eq!(kinds, parameter_set_kinds(Codec::H264));
        // HEVC P after its IDR: the PPS comes from the context.
        let p = annexb(&[&[0x02, 0x01, 0xd0, 0x59]]);
        assert_eq!(frame_type(Codec::Hevc, &p, &hevc), Some(FrameType::P));
        assert_eq!(frame_type(Codec::Hevc, &p, &[]), None);
    }
}
