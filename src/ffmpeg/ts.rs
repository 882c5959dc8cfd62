//! A minimal MPEG transport-stream demuxer for one H.264 stream: what the ffmpeg subprocess
//! backend reads from ffmpeg's stdout.
//!
//! Raw Annex B on a pipe carries no timestamps, and with B-frames the output order differs from
//! the input order, so the subprocess writes MPEG-TS instead: each access unit arrives as one PES
//! packet with its PTS and DTS (90 kHz), and the Annex B bytes inside are passed through
//! untouched. Only what that needs is parsed (packet headers, adaptation-field length, PES
//! headers); tables (PAT/PMT) are skipped and the first PID carrying a video PES is followed.
//! Written here because no maintained crate does just this without pulling in a full media
//! framework.

/// One access unit with its timestamps (90 kHz).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TsFrame {
    pub data: Vec<u8>,
    pub pts: Option<i64>,
    pub dts: Option<i64>,
}

/// Problems in the byte stream, with the byte offset where they were found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TsError {
    /// A packet did not start with the sync byte 0x47.
    #[error("lost MPEG-TS sync at byte {offset} (found 0x{found:02x}, expected 0x47)")]
    LostSync { offset: u64, found: u8 },
    /// A PES header that does not parse.
    #[error("malformed PES header at byte {offset}")]
    BadPes { offset: u64 },
}

const PACKET: usize = 188;

/// Feeds bytes in, takes access units out.
#[derive(Debug, Default)]
pub(crate) struct TsDemuxer {
    pending: Vec<u8>,
    offset: u64,
    video_pid: Option<u16>,
    current: Option<TsFrame>,
    /// The last PTS and DTS returned, unwrapped: PES timestamps are 33 bits and wrap after
    /// about 26.5 hours at 90 kHz.
    last_pts: Option<i64>,
    last_dts: Option<i64>,
}

/// The 33-bit timestamp `raw` as the value nearest to `last`, so a stream longer than one
/// wrap keeps counting up.
fn unwrap33(raw: i64, last: Option<i64>) -> i64 {
    const WRAP: i64 = 1 << 33;
    match last {
        None => raw,
        Some(last) => {
            let mut delta = (raw - last.rem_euclid(WRAP)).rem_euclid(WRAP);
            if delta >= WRAP / 2 {
                delta -= WRAP;
            }
            last + delta
        }
    }
}

impl TsDemuxer {
    /// Consumes `bytes`, appending every access unit completed by them to `out`.
    pub(crate) fn push(&mut self, bytes: &[u8], out: &mut Vec<TsFrame>) -> Result<(), TsError> {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while self.pending.len() - start >= PACKET {
            let packet: [u8; PACKET] =
                self.pending[start..start + PACKET]
                    .try_into()
                    .map_err(|_| TsError::LostSync {
                        offset: self.offset,
                        found: 0,
                    })?;
            self.packet(&packet, out)?;
            start += PACKET;
            self.offset += PACKET as u64;
        }
        self.pending.drain(..start);
        Ok(())
    }

    /// Ends the stream: the last access unit has no following PES to close it.
    pub(crate) fn finish(&mut self, out: &mut Vec<TsFrame>) {
        if let Some(frame) = self.current.take() {
            if !frame.data.is_empty() {
                out.push(frame);
            }
        }
    }

    /// Bytes received that do not make a whole packet (non-zero at the end means truncation).
    pub(crate) fn leftover(&self) -> usize {
        self.pending.len()
    }

    fn packet(&mut self, p: &[u8; PACKET], out: &mut Vec<TsFrame>) -> Result<(), TsError> {
        if p[0] != 0x47 {
            return Err(TsError::LostSync {
                offset: self.offset,
                found: p[0],
            });
        }
        let unit_start = p[1] & 0x40 != 0;
        let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
        let adaptation = (p[3] >> 4) & 0x3;
        let mut at = 4;
        if adaptation & 0x2 != 0 {
            at += 1 + usize::from(p[4]);
        }
        if adaptation & 0x1 == 0 || at >= PACKET {
            return Ok(());
        }
        let payload = &p[at..];
        if unit_start && self.video_pid.is_none() && is_video_pes(payload) {
            self.video_pid = Some(pid);
        }
        if Some(pid) != self.video_pid {
            return Ok(());
        }
        if unit_start {
            // A PES that carried no bytes is not an access unit (found by fuzzing: it came out
            // as an empty chunk, which the backend would have matched to a frame).
            if let Some(frame) = self.current.take().filter(|f| !f.data.is_empty()) {
                out.push(frame);
            }
            let (header_len, pts, dts) = parse_pes_header(payload).ok_or(TsError::BadPes {
                offset: self.offset,
            })?;
            let pts = pts.map(|raw| unwrap33(raw, self.last_pts));
            let dts = dts.map(|raw| unwrap33(raw, self.last_dts)).or(pts);
            self.last_pts = pts.or(self.last_pts);
            self.last_dts = dts.or(self.last_dts);
            self.current = Some(TsFrame {
                data: payload[header_len..].to_vec(),
                pts,
                dts,
            });
        } else if let Some(frame) = self.current.as_mut() {
            frame.data.extend_from_slice(payload);
        }
        Ok(())
    }
}

fn is_video_pes(payload: &[u8]) -> bool {
    payload.len() >= 4 && payload[..3] == [0, 0, 1] && (0xe0..=0xef).contains(&payload[3])
}

/// `(header length, pts, dts)` of a PES packet that starts `payload`.
fn parse_pes_header(payload: &[u8]) -> Option<(usize, Option<i64>, Option<i64>)> {
    if payload.len() < 9 || payload[..3] != [0, 0, 1] {
        return None;
    }
    let flags = payload[7] >> 6;
    let header_len = 9 + usize::from(payload[8]);
    if header_len > payload.len() {
        return None;
    }
    let pts = if flags & 0x2 != 0 {
        Some(timestamp(payload.get(9..14)?))
    } else {
        None
    };
    let dts = if flags == 0x3 {
        Some(timestamp(payload.get(14..19)?))
    } else {
        None
    };
    Some((header_len, pts, dts))
}

/// A 33-bit PES timestamp from its 5-byte encoding.
fn timestamp(b: &[u8]) -> i64 {
    (i64::from(b[0] >> 1 & 0x07) << 30)
        | (i64::from(b[1]) << 22)
        | (i64::from(b[2] >> 1) << 15)
        | (i64::from(b[3]) << 7)
        | i64::from(b[4] >> 1)
}

/// Runs the demuxer over `data` fed in pieces of `chunk` bytes (at least 1), as the reader thread
/// feeds it, and checks what must hold for any input: no panic, every access unit non-empty,
/// fewer than one packet left over. Returns the access units found. For the fuzz targets.
#[cfg(feature = "fuzzing")]
pub fn fuzz_demux(data: &[u8], chunk: usize) -> usize {
    let mut demux = TsDemuxer::default();
    let mut frames = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        if demux.push(piece, &mut frames).is_err() {
            return frames.len();
        }
    }
    demux.finish(&mut frames);
    assert!(demux.leftover() < PACKET, "a whole packet was left unread");
    assert!(
        frames.iter().all(|f| !f.data.is_empty()),
        "an empty access unit"
    );
    frames.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pes_packet(pid: u16, start: bool, payload: &[u8]) -> [u8; PACKET] {
        let mut p = [0xffu8; PACKET];
        p[0] = 0x47;
        p[1] = (if start { 0x40 } else { 0 }) | (pid >> 8) as u8;
        p[2] = pid as u8;
        // Adaptation field (stuffing) then payload, so the payload ends the packet.
        let stuffing = PACKET - 4 - payload.len();
        p[3] = 0x30;
        p[4] = (stuffing - 1) as u8;
        if stuffing > 1 {
            p[5] = 0;
        }
        p[4 + stuffing..].copy_from_slice(payload);
        p
    }

    fn encode_ts(marker: u8, t: i64) -> [u8; 5] {
        [
            marker << 4 | ((t >> 29) & 0x0e) as u8 | 1,
            (t >> 22) as u8,
            ((t >> 14) & 0xfe) as u8 | 1,
            (t >> 7) as u8,
            ((t << 1) & 0xfe) as u8 | 1,
        ]
    }

    #[test]
    fn splits_access_units_and_reads_timestamps() {
        let mut header = vec![0, 0, 1, 0xe0, 0, 0, 0x80, 0xc0, 10];
        header.extend_from_slice(&encode_ts(3, 8_589_934_000));
        header.extend_from_slice(&encode_ts(1, 3003));
        let mut first = header.clone();
        first.extend_from_slice(&[0, 0, 0, 1, 0x65, 1, 2]);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&pes_packet(0x100, true, &first));
        bytes.extend_from_slice(&pes_packet(0x100, false, &[3, 4]));
        bytes.extend_from_slice(&pes_packet(
            0x11,
            true,
            &[0, 0, 1, 0xc0, 0, 0, 0x80, 0, 0, 9],
        ));
        bytes.extend_from_slice(&pes_packet(0x100, true, &first));
        let mut demux = TsDemuxer::default();
        let mut out = Vec::new();
        // Fed in odd-sized pieces, as a pipe delivers them.
        for piece in bytes.chunks(100) {
            demux.push(piece, &mut out).unwrap();
        }
        demux.finish(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].data, vec![0, 0, 0, 1, 0x65, 1, 2, 3, 4]);
        assert_eq!(out[0].pts, Some(8_589_934_000));
        assert_eq!(out[0].dts, Some(3003));
        assert_eq!(demux.leftover(), 0);
    }

    #[test]
    fn a_pes_without_bytes_is_not_an_access_unit() {
        // Two PES starts on the video PID, the first with a header and nothing else.
        let header = [0, 0, 1, 0xe0, 0, 0, 0x80, 0, 0];
        let mut second = header.to_vec();
        second.extend_from_slice(&[0, 0, 0, 1, 0x65, 7]);
        let mut bytes = pes_packet(0x100, true, &header).to_vec();
        bytes.extend_from_slice(&pes_packet(0x100, true, &second));
        let mut demux = TsDemuxer::default();
        let mut out = Vec::new();
        demux.push(&bytes, &mut out).unwrap();
        demux.finish(&mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].data, vec![0, 0, 0, 1, 0x65, 7]);
    }

    #[test]
    fn timestamps_keep_counting_across_the_33_bit_wrap() {
        let wrap = 1i64 << 33;
        assert_eq!(unwrap33(100, Some(wrap - 3003 + 5 * wrap)), 6 * wrap + 100);
        assert_eq!(unwrap33(wrap - 10, Some(20)), -10);
        assert_eq!(unwrap33(5000, Some(2000)), 5000);
    }

    #[test]
    fn garbage_is_a_sync_error_with_offset() {
        let mut demux = TsDemuxer::default();
        let mut out = Vec::new();
        let mut bytes = pes_packet(0x100, true, &[0, 0, 1, 0xe0, 0, 0, 0x80, 0, 0]).to_vec();
        bytes.extend_from_slice(&[b'x'; PACKET]);
        assert_eq!(
            demux.push(&bytes, &mut out),
            Err(TsError::LostSync {
                offset: 188,
                found: b'x'
            })
        );
    }
}
