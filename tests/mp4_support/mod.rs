//! Reading MP4 files in the tests, independently of the sink: top-level boxes, and the samples
//! each fragment's index holds.

#![allow(dead_code)] // Each test binary uses a different subset of these helpers.

use std::io::BufWriter;
use std::path::Path;
use std::time::Duration;

use mp4_atom::{Decode, Moof, Moov};
use nvencode::sink::{Mp4Options, Mp4Writer};
use nvencode::{EncodedChunk, EncoderConfig};

/// A top-level box: offset, size, type.
#[derive(Debug, Clone, Copy)]
pub struct TopBox {
    pub at: usize,
    pub size: usize,
    pub kind: [u8; 4],
}

/// The complete top-level boxes of `file`; a box cut short by the end of the file is left out.
pub fn top_boxes(file: &[u8]) -> Vec<TopBox> {
    let mut boxes = Vec::new();
    let mut at = 0;
    while at + 16 <= file.len() {
        let size32 = u32::from_be_bytes(file[at..at + 4].try_into().expect("4 bytes")) as usize;
        let kind: [u8; 4] = file[at + 4..at + 8].try_into().expect("4 bytes");
        let size = match size32 {
            1 => u64::from_be_bytes(file[at + 8..at + 16].try_into().expect("8 bytes")) as usize,
            n => n,
        };
        if size < 8 || at + size > file.len() {
            break;
        }
        boxes.push(TopBox { at, size, kind });
        at += size;
    }
    boxes
}

/// The type of the first child of the box `b` (what a `free` box was before it was retyped).
pub fn first_child(file: &[u8], b: TopBox) -> &[u8] {
    &file[b.at + 12..b.at + 16]
}

/// Samples indexed by a `moov` or a `moof` (read with its type set to `kind`).
pub fn samples_in(file: &[u8], b: TopBox, kind: &[u8; 4]) -> usize {
    let mut bytes = file[b.at..b.at + b.size].to_vec();
    bytes[4..8].copy_from_slice(kind);
    let mut buf = &bytes[..];
    if kind == b"moov" {
        let moov = Moov::decode(&mut buf).expect("decode moov");
        match &moov.trak[0].mdia.minf.stbl.stsz.samples {
            mp4_atom::StszSamples::Identical { count, .. } => *count as usize,
            mp4_atom::StszSamples::Different { sizes } => sizes.len(),
        }
    } else {
        let moof = Moof::decode(&mut buf).expect("decode moof");
        moof.traf[0].trun.iter().map(|t| t.samples.len()).sum()
    }
}

/// The complete fragments of a fragmented file, in order: (offset of the end of the fragment's
/// `mdat`, samples in it). A fragment is an index (`moov` or `moof`) followed by a whole `mdat`.
pub fn fragments(file: &[u8]) -> Vec<(usize, usize)> {
    let mut ends = Vec::new();
    let mut index = None;
    for b in top_boxes(file) {
        match &b.kind {
            b"moov" | b"moof" => index = Some(samples_in(file, b, &b.kind)),
            b"mdat" => {
                if let Some(samples) = index.take() {
                    ends.push((b.at + b.size, samples));
                }
            }
            _ => index = None,
        }
    }
    ends
}

/// Default options with fragments of at most `fragment_ms`.
pub fn options(fragment_ms: u64) -> Mp4Options {
    Mp4Options::default().with_fragment_duration(Duration::from_millis(fragment_ms))
}

/// Writes a finalized (seekable) MP4, or a streamed one that is never finalized.
pub fn write(
    path: &Path,
    config: &EncoderConfig,
    chunks: &[EncodedChunk],
    opts: Mp4Options,
    seek: bool,
) {
    let file = BufWriter::new(std::fs::File::create(path).expect("create"));
    let rate = config.frame_rate;
    let time_base = (rate.den, rate.num);
    if seek {
        let mut mp4 = Mp4Writer::with_options(file, config.resolution, time_base, opts)
            .expect("mp4")
            .with_sync();
        for chunk in chunks {
            mp4.write(chunk).expect("write");
        }
        mp4.finish().expect("finish");
    } else {
        let mut mp4 =
            Mp4Writer::stream(file, config.resolution, time_base, opts).expect("mp4 stream");
        for chunk in chunks {
            mp4.write(chunk).expect("write");
        }
        mp4.finish().expect("finish");
    }
}
