//! What every Annex B codec shares: the start-code framing of NAL units, and a reader of the
//! bits of a NAL unit's payload (RBSP) with its emulation-prevention bytes skipped.

/// The NAL units of an Annex B buffer, without their start codes (`00 00 01` or `00 00 00 01`).
/// Bytes before the first start code are skipped; the zero bytes of a 4-byte start code belong to
/// the start code, not to the unit before it. The framing is the same for H.264 and HEVC.
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

/// Reads bits, fixed-length and Exp-Golomb, from the payload of a NAL unit, skipping its
/// emulation-prevention bytes (the `03` of `00 00 03`, H.264 7.4.1 and HEVC 7.4.2). Every read
/// past the end gives `None`.
#[derive(Debug)]
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    byte: usize,
    bit: u32,
    zeros: u32,
}

impl<'a> BitReader<'a> {
    /// A reader of `data`, which starts after the NAL unit header.
    pub(crate) fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            byte: 0,
            bit: 0,
            zeros: 0,
        }
    }

    /// One bit, `u(1)`.
    pub(crate) fn read_bit(&mut self) -> Option<u32> {
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

    /// `n` bits (at most 32), most significant first: `u(n)`.
    pub(crate) fn read_bits(&mut self, n: u32) -> Option<u32> {
        if n > 32 {
            return None;
        }
        let mut value = 0u64;
        for _ in 0..n {
            value = value << 1 | u64::from(self.read_bit()?);
        }
        u32::try_from(value).ok()
    }

    /// A flag, `u(1)` as a `bool`.
    pub(crate) fn flag(&mut self) -> Option<bool> {
        self.read_bit().map(|b| b == 1)
    }

    /// Skips `n` bits.
    pub(crate) fn skip(&mut self, n: u32) -> Option<()> {
        for _ in 0..n {
            self.read_bit()?;
        }
        Some(())
    }

    /// An unsigned Exp-Golomb code, `ue(v)` (at most 32 bits of value).
    pub(crate) fn exp_golomb(&mut self) -> Option<u32> {
        let mut leading = 0;
        while self.read_bit()? == 0 {
            leading += 1;
            if leading > 31 {
                return None;
            }
        }
        let mut value = 1u64;
        for _ in 0..leading {
            value = value << 1 | u64::from(self.read_bit()?);
        }
        u32::try_from(value - 1).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn bits_skip_emulation_prevention_bytes() {
        // 00 00 03 01: the 03 is not data, so 24 bits read 00 00 01.
        let mut bits = BitReader::new(&[0, 0, 3, 1, 0b0100_0000]);
        assert_eq!(bits.read_bits(24), Some(1));
        // ue(v) 010 = 1, then five zero bits.
        assert_eq!(bits.exp_golomb(), Some(1));
        assert_eq!(bits.read_bits(5), Some(0));
        assert_eq!(bits.read_bit(), None);
        // A 03 after two zeros counts only once: 00 00 03 03 reads 00 00 03.
        let mut bits = BitReader::new(&[0, 0, 3, 3]);
        assert_eq!(bits.read_bits(24), Some(3));
        assert_eq!(BitReader::new(&[0xff; 8]).read_bits(33), None);
        // 32 leading zeros: no value fits.
        assert_eq!(BitReader::new(&[0, 0, 0, 0, 0x80]).exp_golomb(), None);
        assert_eq!(
            BitReader::new(&[0, 0, 0x80, 0, 0]).exp_golomb(),
            Some(65_535)
        );
    }
}
