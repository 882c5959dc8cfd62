//! H.264 Annex B byte streams: splitting an access unit into NAL units and reading the few
//! header fields the crate needs (NAL unit type, the parameter sets, the first slice's type).
//!
//! Written by hand: the crate needs four read-only questions answered about streams it made, and
//! a full H.264 parser would be a large dependency for that. Every function here takes any bytes
//! (it is fuzzed) and never panics; malformed input gives `None` or fewer units, not an error.

/// NAL unit type of an IDR slice.
pub const NAL_IDR: u8 = 5;
/// NAL unit type of a non-IDR slice.
pub const NAL_SLICE: u8 = 1;
/// NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 8;

/// The NAL units of an Annex B buffer, without their start codes (`00 00 01` or `00 00 00 01`).
/// Bytes before the first start code are skipped; the zero bytes of a 4-byte start code belong to
/// the start code, not to the unit before it.
#[must_use]
pub fn nal_units(data: &[u8]) -> NalUnits<'_> {
    NalUnits {
        data,
        next: find_start(data, 0),
    }
}

/// Iterator over the NAL units of an Annex B buffer; see [`nal_units`].
#[derive(Debug, Clone)]
pub struct NalUnits<'a> {
    data: &'a [u8],
    /// Where the next unit's payload starts.
    next: Option<usize>,
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.next?;
        match find_start(self.data, start) {
            Some(following) => {
                let mut end = following - 3;
                while end > start && self.data[end - 1] == 0 {
                    end -= 1;
                }
                self.next = Some(following);
                Some(&self.data[start..end])
            }
            None => {
                self.next = None;
                Some(&self.data[start..])
            }
        }
    }
}

/// The index just past the first `00 00 01` at or after `from`.
fn find_start(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?
        .windows(3)
        .position(|w| w == [0, 0, 1])
        .map(|i| from + i + 3)
}

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

/// Reads Exp-Golomb codes from RBSP bytes, skipping emulation-prevention bytes.
struct BitReader<'a> {
    data: &'a [u8],
    byte: usize,
    bit: u32,
    zeros: u32,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            byte: 0,
            bit: 0,
            zeros: 0,
        }
    }

    fn read_bit(&mut self) -> Option<u32> {
        if self.bit == 0 {
            // 0x000003: the 03 is an emulation-prevention byte, not data.
            if self.zeros >= 2 && self.data.get(self.byte) == Some(&3) {
                self.byte += 1;
                self.zeros = 0;
            }
            let b = *self.data.get(self.byte)?;
            self.zeros = if b == 0 { self.zeros + 1 } else { 0 };
        }
        let b = *self.data.get(self.byte)?;
        let v = u32::from(b >> (7 - self.bit) & 1);
        self.bit += 1;
        if self.bit == 8 {
            self.bit = 0;
            self.byte += 1;
        }
        Some(v)
    }

    fn exp_golomb(&mut self) -> Option<u32> {
        let mut leading = 0;
        while self.read_bit()? == 0 {
            leading += 1;
            if leading > 31 {
                return None;
            }
        }
        let mut value = 1u32;
        for _ in 0..leading {
            value = value << 1 | self.read_bit()?;
        }
        Some(value - 1)
    }
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

    #[test]
    fn units_split_at_three_and_four_byte_start_codes() {
        let data = [9, 0, 0, 1, 0x41, 1, 0, 0, 0, 1, 0x67, 0, 0, 1, 0x68, 2, 0];
        let units: Vec<&[u8]> = nal_units(&data).collect();
        assert_eq!(units, vec![&[0x41, 1][..], &[0x67][..], &[0x68, 2, 0][..]]);
        assert_eq!(nal_units(&[]).count(), 0);
        assert_eq!(nal_units(&[0, 0]).count(), 0);
        // Two start codes back to back: an empty unit, not a panic.
        assert_eq!(nal_units(&[0, 0, 1, 0, 0, 1]).collect::<Vec<_>>().len(), 2);
    }
}
