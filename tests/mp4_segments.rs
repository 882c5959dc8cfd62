//! Split recording: files of fixed length, each starting with an IDR, no frame lost or repeated
//! across the boundaries; through the library and through `encode_yuv --segment-time`.
#![cfg(feature = "x264")]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nvencode::sink::{Mp4Options, SegmentedMp4, Segmenter};
use nvencode::{EncodedChunk, EncoderConfig, Frame, Preset, VideoEncoder, X264Encoder};

/// Decodes an MP4 file: its pictures, and whether the first frame is an intra picture.
fn decode(path: &Path, frame_len: usize) -> (Vec<Vec<u8>>, String) {
    let out = common::ffmpeg()
        .arg("-i")
        .arg(path)
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
        .expect("run ffmpeg");
    let errors = String::from_utf8_lossy(&out.stderr).into_owned();
    (
        out.stdout.chunks(frame_len).map(<[u8]>::to_vec).collect(),
        errors,
    )
}

/// The picture type of each frame of `path`, in display order (`I`, `P`, `B`).
fn picture_types(path: &Path) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "frame=pict_type", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .collect()
}

fn config() -> EncoderConfig {
    EncoderConfig::new(320, 240)
        .with_preset(Preset::Veryfast)
        .with_bframes(Some(2))
        .with_gop_size(250)
}

/// 300 frames at 30 fps in segments of 2 s: 5 files, each starting with an IDR, 300 frames in
/// all, whose pictures concatenated are those of the unsplit stream; the callback hears of each
/// file once it is complete, in order.
#[test]
fn segments_of_two_seconds_hold_every_frame_once() {
    let config = config();
    let frames = common::clip(&config, 300);
    let mut encoder = X264Encoder::new(&config).expect("x264");
    let time_base = encoder.time_base();
    let dir = tempfile::tempdir().expect("temp dir");
    let base = dir.path().to_path_buf();
    let completed: Arc<Mutex<Vec<u32>>> = Arc::default();
    let heard = Arc::clone(&completed);
    let open_dir = base.clone();
    let mut segments = SegmentedMp4::new(
        config.resolution,
        time_base,
        Mp4Options::default(),
        Duration::from_secs(2),
        Box::new(move |n| {
            std::fs::File::create(open_dir.join(format!("seg-{n:03}.mp4")))
                .map(std::io::BufWriter::new)
        }),
        Box::new(move |n, _out| heard.lock().expect("lock").push(n)),
    )
    .expect("segments");
    let mut producer: Segmenter = segments.segmenter();
    let mut chunks: Vec<EncodedChunk> = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let mut f = Frame::new(frame).with_pts(i as i64);
        if producer.force_keyframe(i as i64) {
            f = f.with_force_keyframe();
        }
        encoder.encode(f, &mut chunks).expect("encode");
    }
    encoder.flush(&mut chunks).expect("flush");
    for chunk in &chunks {
        segments.write(chunk).expect("write");
    }
    assert_eq!(segments.finish().expect("finish"), 5);
    assert_eq!(*completed.lock().expect("lock"), vec![0, 1, 2, 3, 4]);
    let reference = common::decode_h264(&common::concat(&chunks), config.resolution);
    let frame_len = reference[0].len();
    let mut joined = Vec::new();
    for n in 0..5 {
        let path = base.join(format!("seg-{n:03}.mp4"));
        let (pictures, errors) = decode(&path, frame_len);
        assert!(errors.is_empty(), "segment {n}: {errors}");
        assert_eq!(pictures.len(), 60, "segment {n}: 2 s of 30 fps");
        let types = picture_types(&path);
        assert!(types.starts_with('I'), "segment {n} starts with {types}");
        joined.extend(pictures);
    }
    assert_eq!(joined.len(), reference.len());
    assert!(
        joined == reference,
        "the segments' pictures are the unsplit stream's"
    );
}

#[test]
fn a_segment_duration_out_of_range_is_refused() {
    let err = Segmenter::new(Duration::ZERO, (1, 30)).expect_err("zero");
    assert!(err.to_string().contains("at least 1ms"), "{err}");
}

/// `encode_yuv --segment-time 2 -o seg-%03d.mp4` on 300 frames at 30 fps: 5 files, each
/// starting with an IDR, 300 frames in all, whose pictures concatenated are those of the
/// unsplit stream. The unsplit stream is the same run's Annex B, split the same way
/// (`-o seg-%03d.h264`) and concatenated: an Annex B stream split at IDRs concatenates back.
#[test]
fn encode_yuv_segment_time_splits_mp4_and_annex_b_at_idrs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut runs = Vec::new();
    for ext in ["mp4", "h264"] {
        let pattern = dir.path().join(format!("seg-%03d.{ext}"));
        let mut cmd = Command::new(common::example("encode_yuv"));
        cmd.args([
            "-s",
            "320x240",
            "--frames",
            "300",
            "-e",
            "x264",
            "--bframes",
            "2",
        ])
        .args(["--segment-time", "2", "-q", "-o"])
        .arg(&pattern);
        let (ok, text) = common::run_bounded(cmd, Duration::from_secs(120), "encode_yuv");
        assert!(ok, "{text}");
        assert_eq!(text.matches("segment complete").count(), 4, "{text}");
        let files: Vec<std::path::PathBuf> = (0..5)
            .map(|n| dir.path().join(format!("seg-{n:03}.{ext}")))
            .collect();
        assert!(
            !dir.path().join(format!("seg-005.{ext}")).exists(),
            "5 files, not more"
        );
        runs.push(files);
    }
    let annexb: Vec<u8> = runs[1]
        .iter()
        .flat_map(|f| std::fs::read(f).expect("read a segment"))
        .collect();
    let res = nvencode::Resolution::new(320, 240);
    let reference = common::decode_h264(&annexb, res);
    assert_eq!(reference.len(), 300);
    let mut joined = Vec::new();
    for (mp4, h264) in runs[0].iter().zip(&runs[1]) {
        let (pictures, errors) = decode(mp4, reference[0].len());
        assert!(errors.is_empty(), "{}: {errors}", mp4.display());
        assert!(picture_types(mp4).starts_with('I'), "{}", mp4.display());
        assert!(picture_types(h264).starts_with('I'), "{}", h264.display());
        let alone = common::decode_h264(&std::fs::read(h264).expect("read"), res);
        assert_eq!(
            alone.len(),
            pictures.len(),
            "{}: plays alone",
            h264.display()
        );
        joined.extend(pictures);
    }
    assert_eq!(joined.len(), 300);
    assert!(
        joined == reference,
        "the MP4 segments' pictures are the unsplit stream's"
    );
}
