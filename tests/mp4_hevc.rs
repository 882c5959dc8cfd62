//! HEVC through the MP4 sink, checked by FFmpeg: streams from the ffmpeg-x265 backend (FFmpeg's
//! libx265 in a subprocess, demuxed from MPEG-TS), with and without B-frames, written in both
//! layouts, streamed, split into segments, cut at fragment boundaries and recovered, and across
//! a failover that changes the parameter sets. Each file must read as `hevc` in an `hvc1` sample
//! entry, with every frame, the duration, the display times, and the same pictures as the Annex
//! B stream's decode.

mod common;
mod mp4_support;

use std::io::Cursor;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mp4_atom::{Decode, Moov};
use mp4_support::{fragments, options, top_boxes, write};
use nvencode::bitstream::{self, ParameterSet};
use nvencode::sink::{recover, Layout, Mp4Writer, SegmentedMp4};
use nvencode::{
    Codec, EncodedChunk, EncoderConfig, EncoderKind, FfmpegEncoder, FfmpegFamily, FfmpegOptions,
    FrameType, Preset, VideoEncoder,
};

/// The longest any ffmpeg or ffprobe run of these tests may take.
const LIMIT: Duration = Duration::from_secs(120);

fn config(bframes: u32) -> EncoderConfig {
    EncoderConfig::new(320, 240)
        .with_codec(Codec::Hevc)
        .with_preset(Preset::Ultrafast)
        .with_bframes(Some(bframes))
        .with_gop_size(24)
}

fn x265(config: &EncoderConfig) -> Result<Box<dyn VideoEncoder>, nvencode::Error> {
    let options = FfmpegOptions::new(FfmpegFamily::Libx265);
    Ok(Box::new(FfmpegEncoder::new(config, &options)?))
}

fn frames(config: &EncoderConfig, count: u64) -> Vec<Vec<u8>> {
    let pattern = nvencode::testsrc::TestPattern::new(config.resolution, config.pixel_format)
        .expect("pattern");
    (0..count).map(|i| pattern.frame(i)).collect()
}

fn encode_all(encoder: &mut dyn VideoEncoder, frames: &[Vec<u8>]) -> Vec<EncodedChunk> {
    let mut chunks = Vec::new();
    for frame in frames {
        encoder.encode_frame(frame, &mut chunks).expect("encode");
    }
    encoder.flush(&mut chunks).expect("flush");
    chunks
}

fn encode(config: &EncoderConfig, count: u64) -> Vec<EncodedChunk> {
    let mut encoder = x265(config).expect("open the ffmpeg-x265 backend");
    let chunks = encode_all(encoder.as_mut(), &frames(config, count));
    assert_eq!(chunks.len() as u64, count, "one chunk per frame");
    assert!(chunks[0].keyframe, "the stream starts with a keyframe");
    chunks
}

/// Runs `cmd` (bounded by [`LIMIT`]) and returns its standard output and error, failing on an
/// unsuccessful exit.
fn run(cmd: Command, what: &str) -> String {
    let (ok, text) = common::run_bounded(cmd, LIMIT, what);
    assert!(ok, "{what} failed:\n{text}");
    text
}

fn ffprobe() -> Command {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-hide_banner", "-v", "error"]);
    cmd
}

/// The per-frame MD5 sums of FFmpeg's decode of `path` (`-f` `format` if given), in display
/// order; any line that is not a frame's (a decoder's complaint) fails the test.
fn frame_md5s(path: &Path, format: Option<&str>) -> Vec<String> {
    let (sums, complaints) = frame_md5s_and_complaints(path, format);
    assert!(complaints.is_empty(), "{}: {complaints}", path.display());
    sums
}

/// [`frame_md5s`], and the lines that are not a frame's.
fn frame_md5s_and_complaints(path: &Path, format: Option<&str>) -> (Vec<String>, String) {
    let mut cmd = common::ffmpeg();
    if let Some(format) = format {
        cmd.args(["-f", format]);
    }
    cmd.arg("-i").arg(path);
    cmd.args(["-fps_mode", "passthrough", "-pix_fmt", "yuv420p"]);
    cmd.args(["-f", "framemd5", "-"]);
    let text = run(cmd, "ffmpeg -f framemd5");
    let mut sums = Vec::new();
    let mut complaints = String::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() == 6 && fields[5].len() == 32 {
            sums.push(fields[5].to_owned());
        } else {
            complaints.push_str(line);
            complaints.push('\n');
        }
    }
    (sums, complaints)
}

/// The MD5 sums of the Annex B stream of `chunks`, decoded as raw HEVC.
fn annex_b_md5s(chunks: &[EncodedChunk], dir: &Path) -> Vec<String> {
    let path = dir.join("stream.hevc");
    let stream: Vec<u8> = chunks.iter().flat_map(|c| c.data.clone()).collect();
    std::fs::write(&path, stream).expect("write the Annex B stream");
    frame_md5s(&path, Some("hevc"))
}

/// What ffprobe says of the video stream of an MP4 file.
#[derive(Debug)]
struct Probe {
    codec_name: String,
    codec_tag: String,
    profile: String,
    level: u8,
    frames: usize,
    duration: f64,
    /// Display times of the decoded frames, in seconds, in output order.
    times: Vec<f64>,
}

fn probe(path: &Path) -> Probe {
    let mut cmd = ffprobe();
    cmd.args(["-count_frames", "-select_streams", "v:0"]);
    cmd.args([
        "-show_entries",
        "stream=codec_name,codec_tag_string,profile,level,nb_read_frames:format=duration",
        "-of",
        "default=noprint_wrappers=1",
    ]);
    cmd.arg(path);
    let text = run(cmd, "ffprobe");
    let field = |key: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("ffprobe gave no {key}:\n{text}"))
            .to_owned()
    };
    let mut cmd = ffprobe();
    cmd.args(["-select_streams", "v:0", "-show_entries", "frame=pts_time"]);
    cmd.args(["-of", "default=noprint_wrappers=1"]);
    cmd.arg(path);
    let times = run(cmd, "ffprobe -show_frames");
    Probe {
        codec_name: field("codec_name"),
        codec_tag: field("codec_tag_string"),
        profile: field("profile"),
        level: field("level").parse().expect("a level"),
        frames: field("nb_read_frames").parse().expect("a frame count"),
        duration: field("duration").parse().expect("a duration"),
        times: times
            .lines()
            .filter_map(|l| l.strip_prefix("pts_time="))
            .map(|t| t.trim().parse().expect("a frame time"))
            .collect(),
    }
}

/// Checks an MP4 file of `count` frames of `config`: HEVC in `hvc1`, Main profile, every frame,
/// the duration, each frame displayed at its own time (all shifted by at most `shift` frame
/// periods), and the Annex B decode's pictures.
fn assert_hevc_mp4(
    path: &Path,
    config: &EncoderConfig,
    count: usize,
    reference: &[String],
    shift: usize,
) {
    let what = path.display();
    let p = probe(path);
    assert_eq!(p.codec_name, "hevc", "{what}: {p:?}");
    assert_eq!(p.codec_tag, "hvc1", "{what}: {p:?}");
    assert_eq!(p.profile, "Main", "{what}: {p:?}");
    assert_eq!(p.frames, count, "{what}: {p:?}");
    let period = f64::from(config.frame_rate.den) / f64::from(config.frame_rate.num);
    let expected = count as f64 * period;
    assert!(
        (p.duration - expected).abs() < 1e-3,
        "{what}: duration {} s, expected {expected} s",
        p.duration
    );
    assert_eq!(p.times.len(), count, "{what}");
    let start = p.times[0];
    assert!(
        start > -1e-3 && start < shift as f64 * period + 1e-3,
        "{what}: the first frame shows at {start} s"
    );
    for (i, t) in p.times.iter().enumerate() {
        assert!(
            (t - start - i as f64 * period).abs() < 1e-3,
            "{what}: frame {i} shows at {t} s, expected {} s: {:?}",
            start + i as f64 * period,
            p.times
        );
    }
    assert_eq!(
        frame_md5s(path, None),
        reference,
        "{what}: pictures differ from the Annex B decode"
    );
}

/// The picture types and keyframe flags of `chunks` (read by the crate's HEVC slice-header and
/// NAL readers) are those FFmpeg's decoder reports for the Annex B stream at `path`, frame by
/// frame in display order.
fn assert_types_as_ffprobe_reads_them(chunks: &[EncodedChunk], path: &Path) {
    let mut cmd = ffprobe();
    cmd.args([
        "-show_entries",
        "frame=pict_type,key_frame",
        "-of",
        "csv=p=0",
    ]);
    cmd.args(["-f", "hevc"]).arg(path);
    let text = run(cmd, "ffprobe pict_type");
    let theirs: Vec<(String, bool)> = text
        .lines()
        .filter_map(|l| {
            let mut fields = l.split(',').map(str::trim);
            let key = fields.next()?;
            let pict = fields.next()?;
            Some((pict.to_owned(), key == "1"))
        })
        .collect();
    let mut ours: Vec<&EncodedChunk> = chunks.iter().collect();
    ours.sort_by_key(|c| c.pts);
    let ours: Vec<(String, bool)> = ours
        .iter()
        .map(|c| {
            let t = match c.frame_type {
                FrameType::Idr | FrameType::I => "I",
                FrameType::P => "P",
                FrameType::B => "B",
                _ => "?",
            };
            (t.to_owned(), c.keyframe)
        })
        .collect();
    assert_eq!(ours, theirs, "(picture type, keyframe) in display order");
}

/// The `moov` of a regular (finalized or progressive) file: the last one.
fn last_moov(file: &[u8]) -> Moov {
    let b = top_boxes(file)
        .into_iter()
        .rev()
        .find(|b| &b.kind == b"moov")
        .expect("a moov");
    Moov::decode(&mut &file[b.at..b.at + b.size]).expect("decode the moov")
}

/// With and without B-frames, in the fragmented layout (finalized, and streamed) and the
/// progressive one: `hvc1`, every frame at its time, the Annex B stream's pictures; the `hvcC`
/// says what the SPS says; B-frames get composition offsets, a stream without them none.
#[test]
fn hevc_with_and_without_b_frames_in_every_layout() {
    let dir = tempfile::tempdir().expect("temp dir");
    for bframes in [0, 3] {
        let config = config(bframes);
        let chunks = encode(&config, 60);
        let reordered = chunks.iter().any(|c| c.frame_type == FrameType::B);
        assert_eq!(reordered, bframes > 0, "B-frames as configured");
        assert!(chunks.iter().any(|c| c.frame_type == FrameType::P));
        let reference = annex_b_md5s(&chunks, dir.path());
        assert_eq!(reference.len(), 60, "the Annex B decode");
        assert_types_as_ffprobe_reads_them(&chunks, &dir.path().join("stream.hevc"));
        for (name, opts, seek) in [
            ("fragmented", options(400), true),
            ("streamed", options(400), false),
            (
                "progressive",
                options(400).with_layout(Layout::Progressive),
                true,
            ),
        ] {
            let path = dir.path().join(format!("{name}-b{bframes}.mp4"));
            write(&path, &config, &chunks, opts, seek);
            assert_hevc_mp4(&path, &config, 60, &reference, 0);
            let file = std::fs::read(&path).expect("read back");
            if !seek {
                continue;
            }
            let moov = last_moov(&file);
            let stbl = &moov.trak[0].mdia.minf.stbl;
            let Some(mp4_atom::Codec::Hvc1(hvc1)) = stbl.stsd.codecs.first() else {
                panic!("{name}: not an hvc1 sample entry: {:?}", stbl.stsd.codecs);
            };
            let hvcc = &hvc1.hvcc;
            // Main profile (1) at the level FFmpeg reads from the SPS, 4:2:0, 8 bits.
            let p = probe(&path);
            assert_eq!(
                (hvcc.general_profile_idc, hvcc.general_level_idc),
                (1, p.level),
                "{name}"
            );
            assert_eq!(hvcc.chroma_format_idc, 1);
            assert_eq!(
                (hvcc.bit_depth_luma_minus8, hvcc.bit_depth_chroma_minus8),
                (0, 0)
            );
            let types: Vec<u8> = hvcc.arrays.iter().map(|a| a.nal_unit_type).collect();
            assert_eq!(types, [32, 33, 34], "{name}: VPS, SPS, PPS");
            // The record holds the stream's own first parameter sets.
            let sets = bitstream::parameter_sets(Codec::Hevc, &chunks[0].data);
            let record: Vec<u8> = hvcc
                .arrays
                .iter()
                .flat_map(|a| [&[0, 0, 0, 1][..], &a.nalus[0]].concat())
                .collect();
            assert_eq!(record, sets, "{name}");
            assert_eq!(
                stbl.ctts.is_some(),
                bframes > 0,
                "{name}: composition offsets"
            );
            assert!(stbl.stss.is_some(), "{name}: sync samples");
        }
    }
}

/// An encoder that fails at its `fail_at`-th frame, as a device loss would.
struct Failing {
    inner: Box<dyn VideoEncoder>,
    seen: u64,
    fail_at: u64,
}

impl VideoEncoder for Failing {
    fn encode(
        &mut self,
        frame: nvencode::Frame<'_>,
        out: &mut Vec<EncodedChunk>,
    ) -> Result<(), nvencode::Error> {
        self.seen += 1;
        if self.seen >= self.fail_at {
            return Err(nvencode::Error::Backend {
                backend: self.inner.kind(),
                call: "test",
                message: "simulated device loss".into(),
            });
        }
        self.inner.encode(frame, out)
    }
    fn flush(&mut self, out: &mut Vec<EncodedChunk>) -> Result<(), nvencode::Error> {
        self.inner.flush(out)
    }
    fn kind(&self) -> EncoderKind {
        self.inner.kind()
    }
    fn config(&self) -> &EncoderConfig {
        self.inner.config()
    }
    fn sequence_headers(&self) -> &[u8] {
        self.inner.sequence_headers()
    }
}

/// A failover mid-stream to an encoder with B-frames and other parameter sets: the MP4 in both
/// layouts decodes across the switch, without a complaint, to the Annex B stream's pictures.
#[test]
fn a_failover_mid_stream_decodes_across_the_new_parameter_sets() {
    // The chain's configuration leaves B-frames to the encoders, so that its decoding times
    // allow for the deepest reordering; each opener sets its own.
    let config = config(0).with_bframes(None);
    let shallow: nvencode::fallback::Opener = Box::new(|c: &EncoderConfig| {
        let inner = x265(&c.clone().with_bframes(Some(0)))?;
        Ok(Box::new(Failing {
            inner,
            seen: 0,
            fail_at: 31,
        }) as Box<dyn VideoEncoder>)
    });
    let deep: nvencode::fallback::Opener = Box::new(|c: &EncoderConfig| {
        x265(&c.clone().with_bframes(Some(3)).with_preset(Preset::Medium))
    });
    let kind = EncoderKind::Ffmpeg(FfmpegFamily::Libx265);
    let mut encoder =
        nvencode::FallbackEncoder::with_chain(&config, vec![(kind, shallow), (kind, deep)])
            .expect("open");
    let chunks = encode_all(&mut encoder, &frames(&config, 60));
    assert_eq!(encoder.switches(), 1);
    assert_eq!(chunks.len(), 60);
    let sps: std::collections::BTreeSet<Vec<u8>> = chunks
        .iter()
        .flat_map(|c| bitstream::nal_units(&c.data))
        .filter(|n| bitstream::parameter_set(Codec::Hevc, n) == Some(ParameterSet::Sps))
        .map(<[u8]>::to_vec)
        .collect();
    assert!(
        sps.len() >= 2,
        "the test needs the parameter sets to change"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let reference = annex_b_md5s(&chunks, dir.path());
    assert_eq!(reference.len(), 60, "the Annex B decode");
    for (name, opts, seek) in [
        ("fragmented", options(300), true),
        ("streamed", options(300), false),
        (
            "progressive",
            options(300).with_layout(Layout::Progressive),
            true,
        ),
    ] {
        let path = dir.path().join(format!("failover-{name}.mp4"));
        write(&path, &config, &chunks, opts, seek);
        // The fragmented view's composition offsets are those of the first fragment's
        // reordering: the deeper reordering after the switch gets negative ones, and FFmpeg
        // shifts the whole timeline of a file it reads as fragments by the most negative (2
        // frames here). The finalized file has one sample table: no shift.
        let shift = if seek { 0 } else { 3 };
        assert_hevc_mp4(&path, &config, 60, &reference, shift);
    }
}

/// Streams `chunks` into a fragmented MP4 in memory, never finalized (what a killed recording
/// leaves).
fn streamed(config: &EncoderConfig, chunks: &[EncodedChunk], fragment_ms: u64) -> Vec<u8> {
    let rate = config.frame_rate;
    let mut mp4 = Mp4Writer::stream(
        Vec::new(),
        config.resolution,
        (rate.den, rate.num),
        options(fragment_ms),
    )
    .expect("mp4 stream");
    for chunk in chunks {
        mp4.write(chunk).expect("write");
    }
    mp4.finish().expect("finish")
}

/// Frames FFmpeg decodes from `bytes` as an MP4 file, failing on a complaint.
fn decoded_frames(bytes: &[u8], dir: &Path, name: &str) -> Vec<String> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write the cut file");
    frame_md5s(&path, None)
}

/// A recording cut at each fragment boundary (a process killed there), and in the middle of a
/// fragment's samples, plays every fragment before the cut with the stream's own pictures; a
/// finalized file cut short plays them again after `recover`.
#[test]
fn a_fragmented_file_cut_at_fragment_boundaries_plays() {
    let config = config(3);
    let chunks = encode(&config, 75);
    let dir = tempfile::tempdir().expect("temp dir");
    let reference = annex_b_md5s(&chunks, dir.path());
    // Fragments of at most 1 s end at the keyframes (every 24 frames): each starts at one.
    let file = streamed(&config, &chunks, 1000);
    let ends = fragments(&file);
    assert!(ends.len() >= 3, "fragments: {ends:?}");
    let mut before = 0;
    for (i, &(end, samples)) in ends.iter().enumerate() {
        let cut = decoded_frames(&file[..end], dir.path(), &format!("cut-{i}.mp4"));
        before += samples;
        assert_eq!(cut.len(), before, "cut after fragment {i}");
        // Every frame decoded is the stream's (the first `before` in decode order are the
        // first ones displayed: fragments start at keyframes).
        assert_eq!(cut[..], reference[..before], "cut after fragment {i}");
        if let Some(&(next_end, _)) = ends.get(i + 1) {
            // FFmpeg complains of the samples cut short ("Invalid NAL unit size"), and shows
            // every frame before them.
            let path = dir.path().join("mid.mp4");
            std::fs::write(&path, &file[..(end + next_end) / 2]).expect("write the cut file");
            let (mid, _) = frame_md5s_and_complaints(&path, None);
            assert!(mid.len() >= before, "cut inside fragment {}", i + 1);
            assert_eq!(
                mid[..before],
                reference[..before],
                "cut inside fragment {}",
                i + 1
            );
        }
    }
    assert_eq!(before, 75);
    // A finalized file cut in the middle loses its index at the end; `recover` shows its
    // fragments again.
    let path = dir.path().join("finalized.mp4");
    write(&path, &config, &chunks, options(1000), true);
    let whole = std::fs::read(&path).expect("read back");
    let mut cut = Cursor::new(whole[..whole.len() / 2].to_vec());
    let recovered = recover(&mut cut).expect("recover");
    assert!(recovered.fragments >= 1, "{recovered:?}");
    let shown = decoded_frames(cut.get_ref(), dir.path(), "recovered.mp4");
    assert!(shown.len() >= 20, "{} frames after recovery", shown.len());
    assert_eq!(shown[..], reference[..shown.len()]);
}

/// A completed segment: its number and its bytes.
type Segment = (u32, Vec<u8>);

/// Split recording of an HEVC stream: each file an `hvc1` MP4 starting at a keyframe, the files'
/// pictures together the stream's.
#[test]
fn segments_of_an_hevc_stream_are_hvc1_files_that_add_up_to_the_stream() {
    use std::sync::{Arc, Mutex};
    let config = config(0);
    let chunks = encode(&config, 90);
    let dir = tempfile::tempdir().expect("temp dir");
    let reference = annex_b_md5s(&chunks, dir.path());
    let rate = config.frame_rate;
    let done: Arc<Mutex<Vec<Segment>>> = Arc::default();
    let sink = Arc::clone(&done);
    let mut segments = SegmentedMp4::new(
        config.resolution,
        (rate.den, rate.num),
        options(500),
        Duration::from_secs(1),
        Box::new(|_| Ok(Cursor::new(Vec::new()))),
        Box::new(move |n, out: Cursor<Vec<u8>>| {
            sink.lock().expect("lock").push((n, out.into_inner()));
        }),
    )
    .expect("segments");
    for chunk in &chunks {
        segments.write(chunk).expect("write");
    }
    let files = segments.finish().expect("finish");
    assert!(files >= 3, "{files} segments");
    let done = done.lock().expect("lock");
    let mut pictures = Vec::new();
    for (n, bytes) in done.iter() {
        let path = dir.path().join(format!("segment-{n}.mp4"));
        std::fs::write(&path, bytes).expect("write a segment");
        let p = probe(&path);
        assert_eq!(
            (p.codec_name.as_str(), p.codec_tag.as_str()),
            ("hevc", "hvc1"),
            "segment {n}"
        );
        assert_eq!(
            p.times.first().copied(),
            Some(0.0),
            "segment {n} starts at 0"
        );
        pictures.extend(frame_md5s(&path, None));
    }
    assert_eq!(
        pictures, reference,
        "the segments' pictures are the stream's"
    );
}

/// The codec comes from the stream: a writer made as for H.264 (`Mp4Writer::new`, no codec
/// named) describes HEVC chunks with `hvc1`, and its brands do not claim AVC.
#[test]
fn the_sample_entry_follows_the_stream_not_the_caller() {
    let config = config(0);
    let chunks = encode(&config, 5);
    let rate = config.frame_rate;
    let mut mp4 = Mp4Writer::new(
        Cursor::new(Vec::new()),
        config.resolution,
        (rate.den, rate.num),
    )
    .expect("mp4");
    for chunk in &chunks {
        mp4.write(chunk).expect("write");
    }
    let file = mp4.finish().expect("finish").into_inner();
    let moov = last_moov(&file);
    let entry = moov.trak[0].mdia.minf.stbl.stsd.codecs.first().cloned();
    assert!(matches!(entry, Some(mp4_atom::Codec::Hvc1(_))), "{entry:?}");
    // The file's brands do not claim AVC.
    let ftyp = &file[..top_boxes(&file)[0].size];
    assert!(ftyp.windows(4).all(|w| w != b"avc1"), "{ftyp:?}");
}
