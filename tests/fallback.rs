//! The fallback chain: choice at open, and failover mid-stream with no frame lost.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use nvenc::fallback::Opener;
use nvenc::ffmpeg::{FfmpegEncoder, FfmpegOptions};
use nvenc::{
    EncoderConfig, EncoderKind, Error, FallbackEncoder, FfmpegCodec, VideoEncoder, X264Encoder,
};

fn x264_opener() -> (EncoderKind, Opener) {
    (
        EncoderKind::X264,
        Box::new(|c: &EncoderConfig| Ok(Box::new(X264Encoder::new(c)?) as Box<dyn VideoEncoder>)),
    )
}

#[test]
fn default_chain_without_gpu_opens_x264_and_keeps_every_reason() {
    if std::path::Path::new("/proc/driver/nvidia").exists() {
        eprintln!("skipped: this machine has an NVIDIA driver");
        return;
    }
    let encoder =
        FallbackEncoder::new(&EncoderConfig::new(320, 240), None).expect("x264 always opens");
    assert_eq!(encoder.current_kind(), EncoderKind::X264);
    let kinds: Vec<EncoderKind> = encoder.rejected().iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds,
        vec![
            EncoderKind::Nvenc,
            EncoderKind::Ffmpeg(FfmpegCodec::Qsv),
            EncoderKind::Ffmpeg(FfmpegCodec::VideoToolbox),
            EncoderKind::Ffmpeg(FfmpegCodec::Vaapi),
        ]
    );
    assert!(
        matches!(*encoder.rejected()[0].1, Error::NvencLoad(_)),
        "{:?}",
        encoder.rejected()[0].1
    );
}

#[test]
fn preferred_encoder_is_tried_first() {
    let encoder =
        FallbackEncoder::new(&EncoderConfig::new(320, 240), Some(EncoderKind::X264)).expect("open");
    assert_eq!(encoder.current_kind(), EncoderKind::X264);
    assert!(encoder.rejected().is_empty());
}

/// ffmpeg (libx264) is killed at frame 20; in-process x264 takes over. The stream must decode to
/// every input frame, in order, with the quality holding across the switch.
#[test]
fn failover_mid_stream_loses_no_frame() {
    let config = EncoderConfig::new(320, 240)
        .with_preset(nvenc::Preset::Veryfast)
        .with_crf(18.0)
        .with_gop_size(30)
        .with_bframes(Some(2));
    let pid = Arc::new(AtomicU32::new(0));
    let pid_in = Arc::clone(&pid);
    let ffmpeg: Opener = Box::new(move |c: &EncoderConfig| {
        let e = FfmpegEncoder::new(c, &FfmpegOptions::new(FfmpegCodec::Libx264))?;
        pid_in.store(e.pid(), Ordering::SeqCst);
        Ok(Box::new(e) as Box<dyn VideoEncoder>)
    });
    let chain = vec![
        (EncoderKind::Ffmpeg(FfmpegCodec::Libx264), ffmpeg),
        x264_opener(),
    ];
    let mut encoder = FallbackEncoder::with_chain(&config, chain).expect("open");
    let input = common::clip(&config, 60);
    let mut chunks = Vec::new();
    for (i, frame) in input.iter().enumerate() {
        if i == 20 {
            let status = std::process::Command::new("kill")
                .args(["-9", &pid.load(Ordering::SeqCst).to_string()])
                .status()
                .expect("kill");
            assert!(status.success());
        }
        encoder
            .encode_frame(frame, &mut chunks)
            .expect("encode keeps working across the failure");
    }
    encoder.flush(&mut chunks).expect("flush");
    assert_eq!(encoder.switches(), 1);
    assert_eq!(encoder.current_kind(), EncoderKind::X264);
    common::assert_accounting(&chunks, 60);
    let decoded = common::decode_h264(&common::concat(&chunks), config.resolution);
    assert_eq!(decoded.len(), 60, "decoded frame count");
    for (i, (want, got)) in input.iter().zip(&decoded).enumerate() {
        let p = common::psnr(want, got);
        assert!(p >= 38.0, "frame {i}: PSNR {p:.2} dB after the switch");
    }
}
