//! MP4 timestamps as FFmpeg reads them: the composition offset is the stream's real reordering
//! depth (none without B-frames: dts = pts), whatever slack the encoder's timestamps carry, in
//! the fragmented view and in the finalized file.
#![cfg(feature = "x264")]

mod common;
mod mp4_support;

use std::path::Path;

use mp4_support::{options, write};
use nvencode::{EncodedChunk, EncoderConfig, EncoderKind, Preset};

/// The fallback chain with x264 alone: its decoding timestamps assume the deepest reordering any
/// backend may use (17 frames when the preset decides the B-frames), whatever the stream has.
fn chain(config: &EncoderConfig, frames: u64) -> Vec<EncodedChunk> {
    let opener: nvencode::fallback::Opener = Box::new(|c: &EncoderConfig| {
        Ok(Box::new(nvencode::X264Encoder::new(c)?) as Box<dyn nvencode::VideoEncoder>)
    });
    let mut encoder =
        nvencode::FallbackEncoder::with_chain(config, vec![(EncoderKind::X264, opener)])
            .expect("open the chain");
    common::encode_all(&mut encoder, &common::clip(config, frames))
}

/// (pts, dts) of every packet in decoding order, in frames.
fn packets(path: &Path, config: &EncoderConfig) -> Vec<(i64, i64)> {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "packet=pts,dts", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tick = i64::from(config.frame_rate.den);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Vec<i64> = l
                .split(',')
                .map(|f| f.trim().parse().expect("a timestamp"))
                .collect();
            assert!(
                v.iter().all(|t| t % tick == 0),
                "{l}: not whole frames of {tick}"
            );
            (v[0] / tick, v[1] / tick)
        })
        .collect()
}

/// How many frames a decoder must hold back: the most any frame is decoded ahead of its place
/// in display order.
fn reordering_depth(chunks: &[EncodedChunk]) -> i64 {
    let mut sorted: Vec<i64> = chunks.iter().map(|c| c.pts).collect();
    sorted.sort_unstable();
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| i as i64 - sorted.binary_search(&c.pts).expect("a pts") as i64)
        .max()
        .unwrap_or(0)
}

/// Timestamps as FFmpeg reads them, streamed (fragmented) and finalized: pictures from 0 in
/// display order, and the first decoding time the stream's real reordering depth before it.
fn check_timestamps(config: &EncoderConfig, chunks: &[EncodedChunk], depth: i64) {
    let dir = tempfile::tempdir().expect("temp dir");
    for seek in [false, true] {
        let path = dir.path().join(format!("ts-{seek}.mp4"));
        write(&path, config, chunks, options(500), seek);
        let packets = packets(&path, config);
        let what = if seek { "finalized" } else { "fragmented" };
        assert_eq!(packets.len(), chunks.len(), "{what}");
        let mut pts: Vec<i64> = packets.iter().map(|p| p.0).collect();
        pts.sort_unstable();
        assert_eq!(
            pts,
            (0..chunks.len() as i64).collect::<Vec<_>>(),
            "{what}: pts"
        );
        assert_eq!(packets[0].1, -depth, "{what}: first dts, {packets:?}");
        for (i, pair) in packets.windows(2).enumerate() {
            assert_eq!(
                pair[1].1,
                pair[0].1 + 1,
                "{what}: dts step after packet {i}"
            );
        }
        for &(p, d) in &packets {
            assert!(d <= p, "{what}: dts {d} after pts {p}");
            if depth == 0 {
                assert_eq!(d, p, "{what}: a stream without B-frames has dts = pts");
            }
        }
    }
}

/// Without B-frames (x264 ultrafast, the preset deciding), the chain's timestamps carry 17 frames
/// of slack; the MP4 has none: dts = pts.
#[test]
fn a_stream_without_b_frames_has_dts_equal_to_pts() {
    let config = EncoderConfig::new(160, 96)
        .with_preset(Preset::Ultrafast)
        .with_gop_size(12);
    let chunks = chain(&config, 40);
    assert!(
        chunks.iter().all(|c| c.pts - c.dts == 17),
        "the case of the issue"
    );
    assert_eq!(reordering_depth(&chunks), 0);
    check_timestamps(&config, &chunks, 0);
}

/// With the preset's B-frames (x264 medium: a B-pyramid), the decoding times start the real
/// reordering depth before the first picture, not 17 frames.
#[test]
fn a_b_frame_stream_starts_decoding_its_reordering_depth_early() {
    let config = EncoderConfig::new(160, 96)
        .with_preset(Preset::Medium)
        .with_gop_size(30);
    let chunks = chain(&config, 60);
    let depth = reordering_depth(&chunks);
    assert!(depth >= 1, "the test needs reordered frames");
    assert!(depth < 17);
    check_timestamps(&config, &chunks, depth);
}
