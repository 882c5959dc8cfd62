//! The fallback chain: choice at open, and failover mid-stream with no frame lost.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use nvencode::fallback::Opener;
use nvencode::ffmpeg::{FfmpegEncoder, FfmpegOptions};
use nvencode::{
    EncoderConfig, EncoderKind, Error, FallbackEncoder, FfmpegFamily, VideoEncoder, X264Encoder,
};

/// As for the x264 backend (`x264_backend.rs`): the chain below is x264 behind the fallback.
const PSNR_FLOOR_DB: f64 = 38.0;

/// The fallback chain with x264 alone, under the whole encoder contract.
fn open_fallback_x264(config: &EncoderConfig) -> Result<Box<dyn VideoEncoder>, Error> {
    Ok(Box::new(FallbackEncoder::with_chain(
        config,
        vec![x264_opener()],
    )?))
}

contract_tests!(open_fallback_x264);

fn x264_opener() -> (EncoderKind, Opener) {
    (
        EncoderKind::X264,
        Box::new(|c: &EncoderConfig| Ok(Box::new(X264Encoder::new(c)?) as Box<dyn VideoEncoder>)),
    )
}

#[test]
fn default_chain_without_gpu_opens_x264_and_keeps_every_reason() {
    if !common::without_nvidia_driver("default_chain_without_gpu_opens_x264_and_keeps_every_reason")
    {
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
            EncoderKind::Ffmpeg(FfmpegFamily::Qsv),
            EncoderKind::Ffmpeg(FfmpegFamily::VideoToolbox),
            EncoderKind::Ffmpeg(FfmpegFamily::Vaapi),
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
        .with_preset(nvencode::Preset::Veryfast)
        .with_crf(18.0)
        .with_gop_size(30)
        .with_bframes(Some(2));
    let pid = Arc::new(AtomicU32::new(0));
    let pid_in = Arc::clone(&pid);
    let ffmpeg: Opener = Box::new(move |c: &EncoderConfig| {
        let e = FfmpegEncoder::new(c, &FfmpegOptions::new(FfmpegFamily::Libx264))?;
        pid_in.store(e.pid(), Ordering::SeqCst);
        Ok(Box::new(e) as Box<dyn VideoEncoder>)
    });
    let chain = vec![
        (EncoderKind::Ffmpeg(FfmpegFamily::Libx264), ffmpeg),
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

/// An encoder that works until its `fail_at`-th frame, then reports a device failure.
struct Failing {
    inner: Box<dyn VideoEncoder>,
    fail_at: u64,
    seen: u64,
}

impl VideoEncoder for Failing {
    fn encode(
        &mut self,
        frame: nvencode::Frame<'_>,
        out: &mut Vec<nvencode::EncodedChunk>,
    ) -> Result<(), Error> {
        self.seen += 1;
        if self.seen >= self.fail_at {
            return Err(Error::Backend {
                backend: self.inner.kind(),
                call: "test",
                message: "simulated device loss".into(),
            });
        }
        self.inner.encode(frame, out)
    }
    fn flush(&mut self, out: &mut Vec<nvencode::EncodedChunk>) -> Result<(), Error> {
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

/// A switch from an encoder without B-frames to one with three: the deeper reordering after the
/// switch must not push dts past pts (decode timestamps are the chain's own, not stitched).
#[test]
fn failover_to_deeper_reordering_keeps_dts_valid() {
    let config = EncoderConfig::new(320, 240)
        .with_preset(nvencode::Preset::Veryfast)
        .with_crf(18.0);
    let shallow: Opener = Box::new(|c: &EncoderConfig| {
        let inner = X264Encoder::new(&c.clone().with_bframes(Some(0)))?;
        Ok(Box::new(Failing {
            inner: Box::new(inner),
            fail_at: 17,
            seen: 0,
        }) as Box<dyn VideoEncoder>)
    });
    let deep: Opener = Box::new(|c: &EncoderConfig| {
        Ok(Box::new(X264Encoder::new(&c.clone().with_bframes(Some(3)))?) as Box<dyn VideoEncoder>)
    });
    let chain = vec![(EncoderKind::X264, shallow), (EncoderKind::X264, deep)];
    let mut encoder = FallbackEncoder::with_chain(&config, chain).expect("open");
    let input = common::clip(&config, 50);
    let chunks = common::encode_all(&mut encoder, &input);
    assert_eq!(encoder.switches(), 1);
    common::assert_accounting(&chunks, 50);
    assert!(
        chunks
            .iter()
            .any(|c| c.frame_type == nvencode::FrameType::B),
        "no B-frames after the switch"
    );
    let decoded = common::decode_h264(&common::concat(&chunks), config.resolution);
    assert_eq!(decoded.len(), 50);
    for (i, (want, got)) in input.iter().zip(&decoded).enumerate() {
        let p = common::psnr(want, got);
        assert!(p >= 38.0, "frame {i}: PSNR {p:.2} dB");
    }
}

#[test]
fn chain_running_out_reports_every_reason_and_stays_failed() {
    let config = EncoderConfig::new(320, 240).with_bframes(Some(0));
    let failing: Opener = Box::new(|c: &EncoderConfig| {
        let inner = X264Encoder::new(c)?;
        Ok(Box::new(Failing {
            inner: Box::new(inner),
            fail_at: 3,
            seen: 0,
        }) as Box<dyn VideoEncoder>)
    });
    let refusing: Opener = Box::new(|_: &EncoderConfig| {
        Err(Error::Unavailable {
            backend: EncoderKind::Nvenc,
            reason: "test: no device".into(),
        })
    });
    let chain = vec![(EncoderKind::X264, failing), (EncoderKind::Nvenc, refusing)];
    let mut encoder = FallbackEncoder::with_chain(&config, chain).expect("open");
    let input = common::clip(&config, 5);
    let mut chunks = Vec::new();
    encoder
        .encode_frame(&input[0], &mut chunks)
        .expect("frame 0");
    encoder
        .encode_frame(&input[1], &mut chunks)
        .expect("frame 1");
    match encoder.encode_frame(&input[2], &mut chunks) {
        Err(Error::NoEncoder(reasons)) => {
            let text: Vec<String> = reasons.iter().map(|(_, e)| e.to_string()).collect();
            assert!(
                text.iter().any(|t| t.contains("simulated device loss")),
                "{text:?}"
            );
            assert!(
                text.iter().any(|t| t.contains("test: no device")),
                "{text:?}"
            );
        }
        other => panic!("expected NoEncoder with the reasons, got {other:?}"),
    }
    assert!(
        encoder.encode_frame(&input[3], &mut chunks).is_err(),
        "a spent chain stays failed"
    );
}

/// The contract through the chain: a frame whose `encode` failed never comes out. Here the
/// first encoder fails at frame 2 and the next one cannot open, so the chain is spent: frame 2
/// and every later frame are refused, and none of them is in the output.
#[test]
fn a_frame_refused_by_a_spent_chain_never_comes_out() {
    let config = EncoderConfig::new(320, 240).with_bframes(Some(2));
    let failing: Opener = Box::new(|c: &EncoderConfig| {
        Ok(Box::new(Failing {
            inner: Box::new(X264Encoder::new(c)?),
            fail_at: 3,
            seen: 0,
        }) as Box<dyn VideoEncoder>)
    });
    let refusing: Opener = Box::new(|_: &EncoderConfig| {
        Err(Error::Unavailable {
            backend: EncoderKind::Nvenc,
            reason: "test: no device".into(),
        })
    });
    let chain = vec![(EncoderKind::X264, failing), (EncoderKind::Nvenc, refusing)];
    let mut encoder = FallbackEncoder::with_chain(&config, chain).expect("open");
    let input = common::clip(&config, 8);
    let run = common::drive_through_errors(&mut encoder, &input, true);
    assert_eq!(run.accepted, vec![0, 1]);
    assert_eq!(run.refused.len(), 12, "frames 2..8, each sent twice");
    assert!(run.flush.is_err());
}

/// The contract through the chain when the failover works: the failing encoder's errors are
/// absorbed, every `encode` returns `Ok`, and every frame comes out exactly once.
#[test]
fn a_failover_accepts_the_frame_the_failed_encoder_refused() {
    let config = EncoderConfig::new(320, 240).with_bframes(Some(2));
    let failing: Opener = Box::new(|c: &EncoderConfig| {
        Ok(Box::new(Failing {
            inner: Box::new(X264Encoder::new(c)?),
            fail_at: 7,
            seen: 0,
        }) as Box<dyn VideoEncoder>)
    });
    let chain = vec![(EncoderKind::X264, failing), x264_opener()];
    let mut encoder = FallbackEncoder::with_chain(&config, chain).expect("open");
    let input = common::clip(&config, 20);
    let run = common::drive_through_errors(&mut encoder, &input, false);
    assert!(run.refused.is_empty(), "{:?}", run.refused);
    run.flush.expect("flush");
    assert_eq!(encoder.switches(), 1);
    assert_eq!(run.chunks.len(), 20);
}

/// An encoder that keeps `leases` ring slots and says (or does not say) how many B-frames it
/// uses; it encodes nothing.
struct Leasing {
    config: EncoderConfig,
    leases: usize,
    bframes: Option<u32>,
}

impl VideoEncoder for Leasing {
    fn encode(
        &mut self,
        _: nvencode::Frame<'_>,
        _: &mut Vec<nvencode::EncodedChunk>,
    ) -> Result<(), Error> {
        Ok(())
    }
    fn flush(&mut self, _: &mut Vec<nvencode::EncodedChunk>) -> Result<(), Error> {
        Ok(())
    }
    fn kind(&self) -> EncoderKind {
        EncoderKind::Nvenc
    }
    fn config(&self) -> &EncoderConfig {
        &self.config
    }
    fn sequence_headers(&self) -> &[u8] {
        &[]
    }
    fn max_slot_leases(&self) -> usize {
        self.leases
    }
    fn bframes_in_use(&self) -> Option<u32> {
        self.bframes
    }
}

/// The slots the chain asks a ring to keep for it follow the reordering its encoder actually
/// has: none beyond the encoder's own leases for a session without B-frames (the preset left
/// them to the encoder, which chose none), the group of two B-frames plus its anchor with two,
/// and the most any preset may choose only when the encoder cannot say.
#[test]
fn the_chains_lease_budget_follows_the_reordering_the_encoder_has() {
    let config = EncoderConfig::new(320, 240); // B-frames left to the preset
    for (bframes, expected) in [
        (Some(0), 5),
        (Some(2), 5 + 3),
        (None, 5 + EncoderConfig::BFRAMES_MAX as usize + 1),
    ] {
        let opener: Opener = Box::new(move |c: &EncoderConfig| {
            Ok(Box::new(Leasing {
                config: c.clone(),
                leases: 5,
                bframes,
            }) as Box<dyn VideoEncoder>)
        });
        let chain =
            FallbackEncoder::with_chain(&config, vec![(EncoderKind::Nvenc, opener)]).expect("open");
        assert_eq!(
            chain.max_slot_leases(),
            expected,
            "B-frames in use {bframes:?}"
        );
        assert_eq!(chain.bframes_in_use(), bframes);
    }
}
