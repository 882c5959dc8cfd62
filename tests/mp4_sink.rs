//! The MP4 sink, checked by FFmpeg: every frame in the file, presentation timestamps increasing
//! in display order with B-frames, the duration frames / fps, and the decoded pictures the same
//! as those of the Annex B stream of the same chunks.

mod common;

use std::io::BufWriter;
use std::path::Path;
use std::process::Command;

use nvencode::sink::{Durability, Layout, Mp4Options, Mp4Writer, SinkError};
use nvencode::{EncodedChunk, EncoderChoice, EncoderConfig, EncoderKind, FrameRate};

fn encode(config: &EncoderConfig, frames: u64) -> Vec<EncodedChunk> {
    let mut encoder =
        nvencode::open_encoder(EncoderChoice::Only(EncoderKind::X264), config).expect("x264");
    let mut chunks = Vec::new();
    for frame in common::clip(config, frames) {
        encoder.encode_frame(&frame, &mut chunks).expect("encode");
    }
    encoder.flush(&mut chunks).expect("flush");
    chunks
}

fn write_mp4(path: &Path, config: &EncoderConfig, chunks: &[EncodedChunk], layout: Layout) {
    let file = std::fs::File::create(path).expect("create");
    let rate = config.frame_rate;
    let options = Mp4Options::default()
        .with_layout(layout)
        .with_fragment_duration(std::time::Duration::from_millis(500));
    let mut mp4 = Mp4Writer::with_options(
        BufWriter::new(file),
        config.resolution,
        (rate.den, rate.num),
        options,
    )
    .expect("mp4");
    for chunk in chunks {
        mp4.write(chunk).expect("write");
    }
    assert_eq!(mp4.frames(), chunks.len());
    mp4.finish().expect("finish");
}

/// (frames counted by decoding, stream duration in seconds, presentation times in display order)
fn probe(path: &Path) -> (usize, f64, Vec<f64>) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=nb_read_frames,duration",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text.trim().split(',').collect();
    assert_eq!(
        fields.len(),
        2,
        "ffprobe said {text:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let duration: f64 = fields[0].parse().expect("duration");
    let frames: usize = fields[1].parse().expect("frames");
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "frame=pts_time", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let pts = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    (frames, duration, pts)
}

/// The sync-sample table (`stss`) of the file's first track, as the file has it: the 1-based
/// numbers of the samples a player may start decoding at. `None` when there is no table, which
/// ISO/IEC 14496-12 reads as "every sample is a sync sample". Read from the boxes themselves:
/// FFmpeg re-derives keyframe flags from the H.264 bitstream and would not notice a missing table.
fn sync_samples(path: &Path) -> Option<Vec<u32>> {
    use mp4_atom::{Any, ReadFrom};
    let mut file = std::io::BufReader::new(std::fs::File::open(path).expect("open the MP4"));
    while let Some(atom) = Option::<Any>::read_from(&mut file).expect("read a box") {
        if let Any::Moov(moov) = atom {
            return moov.trak[0]
                .mdia
                .minf
                .stbl
                .stss
                .as_ref()
                .map(|stss| stss.entries.clone());
        }
    }
    panic!("no moov box in {}", path.display());
}

fn check(config: &EncoderConfig, frames: u64) {
    for layout in [Layout::Fragmented, Layout::Progressive] {
        check_layout(config, frames, layout);
    }
}

fn check_layout(config: &EncoderConfig, frames: u64, layout: Layout) {
    let chunks = encode(config, frames);
    if config.bframes.unwrap_or(0) > 0 {
        assert!(
            chunks.iter().any(|c| c.pts != c.dts),
            "the test needs reordered frames"
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("out.mp4");
    write_mp4(&path, config, &chunks, layout);
    let (counted, duration, pts) = probe(&path);
    assert_eq!(counted as u64, frames, "frames in the MP4");
    let rate = config.frame_rate;
    let expected = frames as f64 * f64::from(rate.den) / f64::from(rate.num);
    assert!(
        (duration - expected).abs() < 1e-3,
        "duration {duration} s, expected {expected} s"
    );
    assert_eq!(pts.len() as u64, frames);
    assert!(
        pts[0].abs() < 1e-6,
        "the first picture is at 0, not {}",
        pts[0]
    );
    for (i, pair) in pts.windows(2).enumerate() {
        let step = pair[1] - pair[0];
        assert!(
            (step - f64::from(rate.den) / f64::from(rate.num)).abs() < 1e-4,
            "pts step {step} after frame {i}: {pts:?}"
        );
    }
    // Sync samples: a player sees a keyframe exactly where the encoder made one (the `stss`
    // table; without it every sample is a sync sample). Checked against the sink writing no
    // `stss`, which neither the decode checks nor ffprobe's packet flags notice.
    let keyframes: Vec<bool> = chunks.iter().map(|c| c.keyframe).collect();
    assert!(
        keyframes.iter().filter(|&&k| k).count() >= 2 && keyframes.contains(&false),
        "the test needs several keyframes and some frames that are not: {keyframes:?}"
    );
    let expected: Vec<u32> = (1u32..)
        .zip(&keyframes)
        .filter_map(|(n, &key)| key.then_some(n))
        .collect();
    assert_eq!(
        sync_samples(&path),
        Some(expected),
        "sync samples of the MP4 (1-based, decoding order)"
    );
    // The same pictures as the Annex B stream of the same chunks.
    let annexb: Vec<u8> = chunks.iter().flat_map(|c| c.data.iter().copied()).collect();
    let reference = common::decode_h264(&annexb, config.resolution);
    let out = common::ffmpeg()
        .arg("-i")
        .arg(&path)
        .args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
        .output()
        .expect("decode mp4");
    assert!(out.status.success());
    let frame_len = reference[0].len();
    let decoded: Vec<&[u8]> = out.stdout.chunks(frame_len).collect();
    assert_eq!(decoded.len(), reference.len());
    for (i, (a, b)) in decoded.iter().zip(&reference).enumerate() {
        assert!(
            a == b,
            "{layout:?}: picture {i} differs from the Annex B decode"
        );
    }
    // Seeking: from the middle, the pictures from there on (FFmpeg decodes from the keyframe
    // before and drops what precedes the seek point).
    let half = frames / 2;
    let at = half as f64 * f64::from(rate.den) / f64::from(rate.num);
    let out = common::ffmpeg()
        .args(["-ss", &format!("{at:.6}"), "-i"])
        .arg(&path)
        .args([
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
            "-",
        ])
        .output()
        .expect("decode from the middle");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded: Vec<&[u8]> = out.stdout.chunks(frame_len).collect();
    assert_eq!(
        decoded.len() as u64,
        frames - half,
        "{layout:?}: frames after seeking to {at} s"
    );
    assert!(
        decoded[0] == &reference[half as usize][..],
        "{layout:?}: first picture after seeking"
    );
}

#[test]
fn three_b_frames_decode_in_order_with_the_right_duration() {
    check(
        &EncoderConfig::new(320, 240)
            .with_bframes(Some(3))
            .with_gop_size(15),
        45,
    );
}

#[test]
fn ntsc_rate_without_b_frames() {
    let config = EncoderConfig::new(160, 96)
        .with_bframes(Some(0))
        .with_gop_size(10)
        .with_frame_rate(FrameRate::new(30000, 1001));
    check(&config, 31);
}

#[test]
fn decoding_times_must_increase() {
    let config = EncoderConfig::new(160, 96);
    let chunks = encode(&config, 3);
    let mut mp4 =
        Mp4Writer::new(std::io::Cursor::new(Vec::new()), config.resolution, (1, 30)).expect("mp4");
    mp4.write(&chunks[0]).expect("first");
    match mp4.write(&chunks[0]) {
        Err(SinkError::DtsNotIncreasing { dts, previous, .. }) => assert_eq!(dts, previous),
        other => panic!("expected DtsNotIncreasing, got {other:?}"),
    }
    // A stream without parameter sets has no decoder configuration.
    let mut bare =
        Mp4Writer::new(std::io::Cursor::new(Vec::new()), config.resolution, (1, 30)).expect("mp4");
    let mut p = chunks[1].clone();
    p.data = nvencode::h264::nal_units(&chunks[1].data)
        .filter(|n| nvencode::h264::nal_unit_type(n) == Some(nvencode::h264::NAL_SLICE))
        .flat_map(|n| [&[0, 0, 0, 1][..], n].concat())
        .collect();
    bare.write(&p).expect("write");
    assert!(matches!(bare.finish(), Err(SinkError::NoParameterSets)));
}

#[test]
fn options_out_of_range_and_outputs_that_cannot_hold_them_are_refused() {
    let res = nvencode::Resolution::new(160, 96);
    let cursor = || std::io::Cursor::new(Vec::new());
    let zero = Mp4Options::default().with_fragment_duration(std::time::Duration::ZERO);
    match Mp4Writer::with_options(cursor(), res, (1, 30), zero) {
        Err(e @ SinkError::BadFragmentDuration { .. }) => {
            let text = e.to_string();
            assert!(text.contains("0ns") && text.contains("600s"), "{text}");
        }
        other => panic!("expected BadFragmentDuration, got {other:?}"),
    }
    let progressive = Mp4Options::default().with_layout(Layout::Progressive);
    assert!(matches!(
        Mp4Writer::stream(Vec::new(), res, (1, 30), progressive),
        Err(SinkError::NeedsSeek {
            layout: Layout::Progressive
        })
    ));
    // Syncing each fragment needs an output that can sync (`with_sync`); a cursor cannot.
    let chunks = encode(&EncoderConfig::new(160, 96), 1);
    let sync = Mp4Options::default().with_durability(Durability::Sync);
    let mut mp4 = Mp4Writer::with_options(cursor(), res, (1, 30), sync).expect("mp4");
    assert!(matches!(mp4.write(&chunks[0]), Err(SinkError::NeedsSync)));
}
