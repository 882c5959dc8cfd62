//! The crash-safe MP4 layout, checked by FFmpeg: every state of the finalization plays, a file cut
//! at any byte offset plays every fragment before the cut, timestamps carry the stream's real
//! reordering depth, and a failover mid-stream decodes across the new parameter sets.
#![cfg(feature = "x264")]

mod common;

use std::io::BufWriter;
use std::path::Path;
use std::time::Duration;

use mp4_atom::{Decode, Moof, Moov};
use nvencode::sink::{Layout, Mp4Options, Mp4Writer};
use nvencode::{EncodedChunk, EncoderChoice, EncoderConfig, EncoderKind, Preset};

fn encode(choice: EncoderChoice, config: &EncoderConfig, frames: u64) -> Vec<EncodedChunk> {
    let mut encoder = nvencode::open_encoder(choice, config).expect("open x264");
    common::encode_all(encoder.as_mut(), &common::clip(config, frames))
}

fn x264() -> EncoderChoice {
    EncoderChoice::Only(EncoderKind::X264)
}

fn options(fragment_ms: u64) -> Mp4Options {
    Mp4Options::default().with_fragment_duration(Duration::from_millis(fragment_ms))
}

/// Writes a finalized (seekable) MP4, or a streamed one that is never finalized.
fn write(path: &Path, config: &EncoderConfig, chunks: &[EncodedChunk], opts: Mp4Options, seek: bool) {
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

/// A top-level box: offset, size, type.
#[derive(Debug, Clone, Copy)]
struct TopBox {
    at: usize,
    size: usize,
    kind: [u8; 4],
}

fn top_boxes(file: &[u8]) -> Vec<TopBox> {
    let mut boxes = Vec::new();
    let mut at = 0;
    while at + 8 <= file.len() {
        let size32 = u32::from_be_bytes(file[at..at + 4].try_into().expect("4 bytes")) as usize;
        let kind: [u8; 4] = file[at + 4..at + 8].try_into().expect("4 bytes");
        let size = match size32 {
            1 => u64::from_be_bytes(file[at + 8..at + 16].try_into().expect("8 bytes")) as usize,
            0 => file.len() - at,
            n => n,
        };
        assert!(size >= 8, "box of size {size} at {at}");
        boxes.push(TopBox { at, size, kind });
        at += size;
    }
    boxes
}

/// The type of the first child of the box at `b` (what a `free` box was before).
fn first_child(file: &[u8], b: TopBox) -> &[u8] {
    &file[b.at + 12..b.at + 16]
}

/// Samples indexed by a `moov` or a `moof` (its bytes, type restored).
fn samples_in(file: &[u8], b: TopBox, kind: &[u8; 4]) -> usize {
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

/// Decodes `bytes` as an MP4 file with FFmpeg: (frames, FFmpeg's complaints at level error).
fn decode(bytes: &[u8], config: &EncoderConfig) -> (usize, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state.mp4");
    std::fs::write(&path, bytes).expect("write state");
    decode_file(&path, config)
}

fn decode_file(path: &Path, config: &EncoderConfig) -> (usize, String) {
    let out = common::ffmpeg()
        .arg("-i")
        .arg(path)
        .args(["-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
        .output()
        .expect("run ffmpeg");
    let len = nvencode::PixelFormat::I420
        .frame_len(config.resolution)
        .expect("size");
    let mut errors = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        errors.push_str(&format!("(ffmpeg exited {})", out.status));
    }
    (out.stdout.len() / len, errors)
}

fn config_b() -> EncoderConfig {
    EncoderConfig::new(320, 240)
        .with_preset(Preset::Veryfast)
        .with_bframes(Some(2))
        .with_gop_size(24)
}

/// Every state the finalization passes through, rebuilt from the finished file (it only appends
/// the regular `moov` and retypes boxes), plays every frame its visible index holds, without an
/// error, and the first and last states hold all of them.
#[test]
fn every_state_of_the_finalization_plays() {
    let config = config_b();
    let frames = 100;
    let chunks = encode(x264(), &config, frames);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("out.mp4");
    write(&path, &config, &chunks, options(400), true);
    let done = std::fs::read(&path).expect("read");
    let boxes = top_boxes(&done);
    let kinds: Vec<&[u8]> = boxes.iter().map(|b| &b.kind[..]).collect();
    assert_eq!(kinds[0], b"ftyp");
    assert_eq!(*kinds.last().expect("boxes"), b"moov", "{kinds:?}");
    assert!(!kinds.contains(&&b"moof"[..]), "finalized: no fragment index left");
    // The initial moov (now free, its first child mvhd), then the fragments' indexes (free,
    // first child mfhd), each followed by its mdat.
    let initial = boxes[1];
    assert_eq!((&initial.kind, first_child(&done, initial)), (b"free", &b"mvhd"[..]));
    let moofs: Vec<TopBox> = boxes
        .iter()
        .copied()
        .filter(|b| &b.kind == b"free" && first_child(&done, *b) == b"mfhd")
        .collect();
    assert!(moofs.len() >= 4, "the test needs several fragments: {kinds:?}");
    let in_moov = samples_in(&done, initial, b"moov");
    let in_moofs: Vec<usize> = moofs.iter().map(|b| samples_in(&done, *b, b"moof")).collect();
    assert_eq!(in_moov + in_moofs.iter().sum::<usize>(), frames as usize);
    let regular_at = boxes.last().expect("moov").at;
    let retype = |bytes: &mut Vec<u8>, b: TopBox, kind: &[u8; 4]| {
        bytes[b.at + 4..b.at + 8].copy_from_slice(kind);
    };
    // State 1: recording, every fragment committed, nothing finalized yet.
    let mut fragmented = done.clone();
    retype(&mut fragmented, initial, b"moov");
    for b in &moofs {
        retype(&mut fragmented, *b, b"moof");
    }
    let mut states: Vec<(String, Vec<u8>, usize)> = vec![(
        "fragmented, before finalization".into(),
        fragmented[..regular_at].to_vec(),
        frames as usize,
    )];
    // State 2: the regular moov appended.
    let mut state = fragmented.clone();
    states.push(("regular moov appended".into(), state.clone(), frames as usize));
    // State 3: the fragment indexes retyped free, last to first.
    for k in (0..moofs.len()).rev() {
        retype(&mut state, moofs[k], b"free");
        let visible = in_moov + in_moofs[..k].iter().sum::<usize>();
        states.push((format!("fragments {k}.. retyped free"), state.clone(), visible));
    }
    // State 4: the initial moov retyped free: the finished file.
    retype(&mut state, initial, b"free");
    assert_eq!(state, done, "the states end at the finished file");
    states.push(("finalized".into(), state, frames as usize));
    for (name, bytes, visible) in &states {
        if let Some(dir) = std::env::var_os("MP4_STATES_DIR") {
            std::fs::write(Path::new(&dir).join(format!("{name}.mp4")), bytes).expect("keep");
        }
        let (decoded, errors) = decode(bytes, &config);
        assert_eq!(decoded, *visible, "state {name}: frames decoded; {errors}");
        assert!(errors.is_empty(), "state {name}: FFmpeg said {errors}");
    }
}

/// Sample counts and end offsets of the fragments of an unfinalized file.
fn fragment_ends(file: &[u8]) -> Vec<(usize, usize)> {
    let boxes = top_boxes(file);
    let mut ends = Vec::new();
    let mut index = None;
    for b in boxes {
        match &b.kind {
            b"moov" | b"moof" => index = Some(samples_in(file, b, &b.kind)),
            b"mdat" => {
                let samples = index.take().expect("an index before each mdat");
                ends.push((b.at + b.size, samples));
            }
            _ => {}
        }
    }
    ends
}

fn check_truncations(file: &[u8], config: &EncoderConfig, cuts: &[usize]) {
    let ends = fragment_ends(file);
    let total: usize = ends.iter().map(|&(_, n)| n).sum();
    for &cut in cuts {
        let complete: usize = ends
            .iter()
            .filter(|&&(end, _)| end <= cut)
            .map(|&(_, n)| n)
            .sum();
        let (decoded, errors) = decode(&file[..cut], config);
        assert!(
            decoded >= complete && decoded <= total,
            "cut at byte {cut} of {}: {decoded} frames decoded, {complete} in the complete \
             fragments before the cut; {errors}",
            file.len()
        );
        if ends.iter().any(|&(end, _)| end == cut) || cut == file.len() {
            assert!(errors.is_empty(), "cut at the fragment end {cut}: {errors}");
        }
    }
}

/// A power cut while recording: the file cut at any byte offset (every fragment end, around
/// each, and evenly spaced ones) plays every fragment lying entirely before the cut.
#[test]
fn a_recording_cut_at_any_offset_plays_every_fragment_before_the_cut() {
    let config = config_b();
    let chunks = encode(x264(), &config, 90);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stream.mp4");
    write(&path, &config, &chunks, options(300), false);
    let file = std::fs::read(&path).expect("read");
    let ends = fragment_ends(&file);
    assert!(ends.len() >= 5, "the test needs several fragments: {ends:?}");
    let mut cuts: Vec<usize> = Vec::new();
    for &(end, _) in &ends {
        for d in [-9i64, -1, 0, 1, 9] {
            cuts.push((end as i64 + d).clamp(1, file.len() as i64) as usize);
        }
    }
    cuts.extend((1..40).map(|i| file.len() * i / 40));
    cuts.sort_unstable();
    cuts.dedup();
    check_truncations(&file, &config, &cuts);
}
