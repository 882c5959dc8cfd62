//! H.264 Annex B byte streams: the few header fields the crate needs (NAL unit type, the
//! parameter sets, the first slice's type). Also at `nvencode::h264`.
//!
//! Written by hand: the crate needs four read-only questions answered about streams it made, and
//! a full H.264 parser would be a large dependency for that. Every function here takes any bytes
//! (it is fuzzed) and never panics; malformed input gives `None` or fewer units, not an error.

use super::annexb::BitReader;
pub use super::annexb::{nal_units, NalUnits};

/// NAL unit type of an IDR slice.
pub const NAL_IDR: u8 = 5;
/// NAL unit type of a non-IDR slice.
pub const NAL_SLICE: u8 = 1;
/// NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 8;

/// The type (`nal_unit_type`, 0-31) of a NAL unit, from its first byte.
#[must_use]
pub fn nal_unit_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|h| h & 0x1f)
}

/// The NAL unit types of an Annex B buffer, in order.
#[must_use]
pub fn nal_types(data: &[u8]) -> Vec<u8> {
    nal_units(data).filter_map(nal_unit_type).collect()
}

/// True if the buffer holds an IDR slice.
#[must_use]
pub fn is_idr(data: &[u8]) -> bool {
    nal_units(data).any(|nal| nal_unit_type(nal) == Some(NAL_IDR))
}

/// The SPS and PPS units of a buffer, each behind a 4-byte start code (what MP4's `avcC` and
/// [`crate::encoder::VideoEncoder::sequence_headers`] are made from).
#[must_use]
pub fn parameter_sets(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for nal in nal_units(data) {
        if matches!(nal_unit_type(nal), Some(NAL_SPS | NAL_PPS)) {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal);
        }
    }
    out
}

/// `slice_type % 5` of the first slice of an access unit: 0 P, 1 B, 2 I, 3 SP, 4 SI.
#[must_use]
pub fn first_slice_type(data: &[u8]) -> Option<u32> {
    let nal = nal_units(data).find(|n| matches!(nal_unit_type(n), Some(NAL_SLICE | NAL_IDR)))?;
    let mut bits = BitReader::new(nal.get(1..)?);
    bits.exp_golomb()?; // first_mb_in_slice
    Some(bits.exp_golomb()? % 5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_type_and_parameter_sets() {
        // SPS, PPS, IDR slice with first_mb 0 (bit 1) and slice_type 7 (I, 0001000).
        let au = [
            0,
            0,
            0,
            1,
            0x67,
            0xaa,
            0,
            0,
            1,
            0x68,
            0xbb,
            0,
            0,
            1,
            0x65,
            0b1000_1000,
            0,
        ];
        assert_eq!(nal_types(&au), vec![7, 8, 5]);
        assert!(is_idr(&au));
        assert_eq!(
            parameter_sets(&au),
            vec![0, 0, 0, 1, 0x67, 0xaa, 0, 0, 0, 1, 0x68, 0xbb]
        );
        assert_eq!(first_slice_type(&au), Some(2));
        // A B slice: first_mb 0 (1), slice_type 6 (00111): 6 % 5 = 1.
        let b = [0, 0, 1, 0x01, 0b1001_1100];
        assert_eq!(first_slice_type(&b), Some(1));
        assert!(!is_idr(&b));
    }
}
