//! Helpers shared by the integration tests: an independent decoder (FFmpeg), PSNR, and the
//! contract checks every `VideoEncoder` backend must pass.

#![allow(dead_code)] // Each test binary uses a different subset of these helpers.

use std::io::Write;
use std::process::{Command, Stdio};

use nvencode::testsrc::{nv12_to_i420, TestPattern};
use nvencode::{Codec, EncodedChunk, EncoderConfig, PixelFormat, Resolution, VideoEncoder};

/// Opens a backend under test.
pub type Opener = fn(&EncoderConfig) -> Result<Box<dyn VideoEncoder>, nvencode::Error>;

/// The `ffmpeg` binary. Tests that decode fail (not skip) without it: the README's test command
/// installs it.
pub fn ffmpeg() -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-v", "error"]);
    cmd
}

/// Says that `test` skipped and why on the process's standard error, written past the test
/// harness's capture (which takes only `print!` and `eprint!`), so that the CI log shows it even
/// where the test is reported `ok`.
pub fn skipped(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
}

/// Whether a test that describes a machine without an NVIDIA driver runs here: where there is no
/// driver, or where `NVENCODE_TEST_FORCE=1` asks for it anyway (a GPU runner that hides its
/// driver from the tests, or one checking which of them hold there too). Otherwise the skip is
/// reported with [`skipped`].
pub fn without_nvidia_driver(test: &str) -> bool {
    if !std::path::Path::new("/proc/driver/nvidia").exists()
        || std::env::var("NVENCODE_TEST_FORCE").is_ok_and(|v| v == "1")
    {
        return true;
    }
    skipped(
        test,
        "this machine has an NVIDIA driver (/proc/driver/nvidia); NVENCODE_TEST_FORCE=1 runs it anyway",
    );
    false
}

/// The example binary `name`, built first with this test's profile and features, so that a
/// targeted `cargo test --test X` (which builds no examples) never runs a stale one. Built once per
/// test process; cargo's own lock orders concurrent builds.
pub fn example(name: &str) -> std::path::PathBuf {
    use std::collections::BTreeMap;
    use std::sync::{Mutex, OnceLock};
    static BUILT: OnceLock<Mutex<BTreeMap<String, std::path::PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test binary>: the examples are in target/<profile>/examples.
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "--quiet", "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env(
            "CARGO_TARGET_DIR",
            profile_dir.parent().expect("target dir"),
        );
    if profile_dir.file_name().is_some_and(|p| p == "release") {
        cargo.arg("--release");
    }
    if cfg!(not(feature = "x264")) {
        cargo.arg("--no-default-features");
    }
    let status = cargo.status().expect("run cargo build");
    assert!(status.success(), "cargo build --example {name} failed");
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "example not built at {}", path.display());
    built.insert(name.to_owned(), path.clone());
    path
}

/// Runs a child test process and asserts it succeeded having passed `passed` tests; returns its
/// output (stdout then stderr) for further checks.
pub fn run_child_tests(mut cmd: Command, passed: usize, what: &str) -> String {
    let out = cmd.output().expect("run the child test process");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    assert!(
        text.contains(&format!("{passed} passed")),
        "{what}: expected {passed} passed:\n{text}"
    );
    text
}

/// Decodes an Annex B H.264 stream with FFmpeg into I420 frames, in display order.
pub fn decode_h264(stream: &[u8], resolution: Resolution) -> Vec<Vec<u8>> {
    decode(Codec::H264, stream, resolution)
}

/// Decodes an Annex B stream of `codec` with FFmpeg into I420 frames, in display order.
pub fn decode(codec: Codec, stream: &[u8], resolution: Resolution) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(format!("stream.{}", codec.name()));
    std::fs::write(&path, stream).expect("write stream");
    // FFmpeg's raw demuxers are named as the codecs: `h264`, `hevc`.
    let output = ffmpeg()
        .args(["-f", codec.name(), "-i"])
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
        .stdin(Stdio::null())
        .output()
        .expect("ffmpeg must be installed to run these tests (apt-get install ffmpeg)");
    assert!(
        output.status.success(),
        "ffmpeg failed to decode our stream: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let len = PixelFormat::I420.frame_len(resolution).expect("valid size");
    assert_eq!(
        output.stdout.len() % len,
        0,
        "decoded output is not a whole number of frames"
    );
    output.stdout.chunks(len).map(<[u8]>::to_vec).collect()
}

/// Peak signal-to-noise ratio of two 8-bit buffers of equal length, in dB (infinite if equal).
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let sse: u64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = i64::from(x) - i64::from(y);
            (d * d) as u64
        })
        .sum();
    if sse == 0 {
        return f64::INFINITY;
    }
    let mse = sse as f64 / a.len() as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// The input frames of a synthetic clip, as handed to the encoder.
pub fn clip(config: &EncoderConfig, frames: u64) -> Vec<Vec<u8>> {
    let pattern = TestPattern::new(config.resolution, config.pixel_format).expect("pattern");
    (0..frames).map(|i| pattern.frame(i)).collect()
}

/// The same frames as I420, for comparison with the decoder's output.
pub fn as_i420(config: &EncoderConfig, frame: &[u8]) -> Vec<u8> {
    match config.pixel_format {
        PixelFormat::Nv12 => nv12_to_i420(frame, config.resolution)
            .expect("valid size")
            .expect("one frame"),
        _ => frame.to_vec(),
    }
}

/// Encodes `frames` and flushes, returning every chunk.
pub fn encode_all(encoder: &mut dyn VideoEncoder, frames: &[Vec<u8>]) -> Vec<EncodedChunk> {
    let mut chunks = Vec::new();
    for frame in frames {
        encoder.encode_frame(frame, &mut chunks).expect("encode");
    }
    encoder.flush(&mut chunks).expect("flush");
    chunks
}

/// Checks the frame accounting of the contract: one chunk per accepted frame, each input frame
/// exactly once, decode timestamps increasing and never after presentation.
pub fn assert_accounting(chunks: &[EncodedChunk], frames: u64) {
    assert_eq!(chunks.len() as u64, frames, "one chunk per frame");
    let mut seen: Vec<u64> = chunks.iter().map(|c| c.frame_index).collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..frames).collect::<Vec<_>>(),
        "every frame exactly once"
    );
    for c in chunks {
        assert_eq!(c.pts, c.frame_index as i64, "automatic pts counts frames");
        assert!(c.dts <= c.pts, "dts {} after pts {}", c.dts, c.pts);
        assert!(!c.data.is_empty());
    }
    for pair in chunks.windows(2) {
        assert!(pair[0].dts < pair[1].dts, "dts must strictly increase");
    }
    assert!(chunks[0].keyframe, "the stream starts with a keyframe");
}

/// Writes a stream to a file next to the test's temp dir (for debugging failures) and returns it.
pub fn concat(chunks: &[EncodedChunk]) -> Vec<u8> {
    let mut stream = Vec::new();
    for c in chunks {
        stream.write_all(&c.data).expect("write to vec");
    }
    stream
}

/// What [`assert_roundtrip`] measured.
#[derive(Debug)]
pub struct RoundTrip {
    /// Mean PSNR over the frames (identical frames count as 99 dB).
    pub mean_psnr: f64,
    /// Lowest PSNR of any frame.
    pub min_psnr: f64,
    /// The encoder's output.
    pub chunks: Vec<EncodedChunk>,
}

/// Encodes a clip, decodes it with FFmpeg, and checks frame count and PSNR.
pub fn assert_roundtrip(
    open: Opener,
    config: &EncoderConfig,
    frames: u64,
    min_psnr: f64,
) -> RoundTrip {
    let input = clip(config, frames);
    let mut encoder = open(config).expect("open encoder");
    let chunks = encode_all(encoder.as_mut(), &input);
    assert_accounting(&chunks, frames);
    let decoded = decode(config.codec, &concat(&chunks), config.resolution);
    assert_eq!(decoded.len() as u64, frames, "decoded frame count");
    let mut total = 0.0;
    let mut lowest = f64::INFINITY;
    for (i, (want, got)) in input.iter().zip(&decoded).enumerate() {
        let p = psnr(&as_i420(config, want), got);
        assert!(
            p >= min_psnr,
            "frame {i}: PSNR {p:.2} dB below {min_psnr} dB"
        );
        total += p.min(99.0);
        lowest = lowest.min(p);
    }
    RoundTrip {
        mean_psnr: total / frames as f64,
        min_psnr: lowest,
        chunks,
    }
}

/// What [`drive_through_errors`] saw.
#[derive(Debug)]
pub struct ErrorRun {
    /// Every chunk, from `encode` and `flush` alike.
    pub chunks: Vec<EncodedChunk>,
    /// The pts of every frame for which `encode` returned `Ok`.
    pub accepted: Vec<i64>,
    /// `(pts, error)` of every `encode` that returned `Err`.
    pub refused: Vec<(i64, String)>,
    /// What `flush` returned.
    pub flush: Result<(), String>,
}

/// Sends `frames` (frame `i` with pts `i`), carrying on after errors, and flushes; each frame
/// whose `encode` failed is sent once more when `resend` is set. Then checks the contract's
/// meaning of an error from `encode` (see `nvencode::encoder`): a frame is in the output at most
/// once; a frame that no `encode` accepted is not in it at all; after a successful flush every
/// accepted frame is.
pub fn drive_through_errors(
    encoder: &mut dyn VideoEncoder,
    frames: &[Vec<u8>],
    resend: bool,
) -> ErrorRun {
    let mut chunks = Vec::new();
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let pts = i as i64;
        let tries = if resend { 2 } else { 1 };
        for _ in 0..tries {
            match encoder.encode(nvencode::Frame::new(frame).with_pts(pts), &mut chunks) {
                Ok(()) => {
                    accepted.push(pts);
                    break;
                }
                Err(e) => refused.push((pts, e.to_string())),
            }
        }
    }
    let flush = encoder.flush(&mut chunks).map_err(|e| e.to_string());
    let mut out: Vec<i64> = chunks.iter().map(|c| c.pts).collect();
    out.sort_unstable();
    for pair in out.windows(2) {
        assert_ne!(pair[0], pair[1], "frame {} came out twice", pair[0]);
    }
    for (pts, error) in &refused {
        assert!(
            accepted.contains(pts) || !out.contains(pts),
            "frame {pts} came out although encode refused it ({error})"
        );
    }
    if flush.is_ok() {
        assert_eq!(
            out, accepted,
            "after a successful flush, every accepted frame"
        );
    }
    ErrorRun {
        chunks,
        accepted,
        refused,
        flush,
    }
}

/// The contract tests every backend must pass, as `#[test]` functions for the opener given:
/// `contract_tests!(open)` for H.264 in `mod contract`, `contract_tests!(mod NAME, Hevc, open)`
/// for another codec in `mod NAME`.
#[macro_export]
macro_rules! contract_tests {
    ($open:expr $(, #[$attr:meta])*) => {
        $crate::contract_tests!(mod contract, H264, $open $(, #[$attr])*);
    };
    (mod $module:ident, $codec:ident, $open:expr $(, #[$attr:meta])*) => {
        mod $module {
        #[allow(unused_imports)]
        use super::*;
        use nvencode::{ConfigError, Error, Frame, FrameType};

        /// The codec every test of this module encodes.
        const CODEC: nvencode::Codec = nvencode::Codec::$codec;

        fn small() -> EncoderConfig {
            EncoderConfig::new(320, 240)
                .with_codec(CODEC)
                .with_preset(nvencode::Preset::Veryfast)
                .with_crf(18.0)
                .with_gop_size(30)
        }

        #[test]
        $(#[$attr])*
        fn roundtrip_i420_with_bframes_decodes_with_ffmpeg() {
            let config = small().with_bframes(Some(3));
            let rt = common::assert_roundtrip($open, &config, 90, PSNR_FLOOR_DB);
            eprintln!(
                "PSNR mean {:.2} dB, min {:.2} dB",
                rt.mean_psnr, rt.min_psnr
            );
            // Reordering really happened, so the accounting above covered it.
            assert!(
                rt.chunks.iter().any(|c| c.frame_type == FrameType::B),
                "no B-frames"
            );
            assert!(rt.chunks.iter().any(|c| c.dts < c.pts), "no reordering");
        }

        #[test]
        $(#[$attr])*
        fn roundtrip_nv12_decodes_with_ffmpeg() {
            let config = small().with_pixel_format(nvencode::PixelFormat::Nv12);
            common::assert_roundtrip($open, &config, 45, PSNR_FLOOR_DB);
        }

        #[test]
        $(#[$attr])*
        fn roundtrip_zerolatency_outputs_every_frame_at_once() {
            let config = small().with_tune(Some(nvencode::Tune::Zerolatency));
            let input = common::clip(&config, 20);
            let mut encoder = ($open)(&config).expect("open");
            let mut chunks = Vec::new();
            // An in-process encoder hands each frame back from the call that took it; a
            // subprocess adds pipe latency, so for it only the order is checked.
            let in_process = !matches!(encoder.kind(), nvencode::EncoderKind::Ffmpeg(_));
            for (i, frame) in input.iter().enumerate() {
                encoder.encode_frame(frame, &mut chunks).expect("encode");
                if in_process {
                    assert_eq!(chunks.len(), i + 1, "zero latency: one chunk per frame, at once");
                }
            }
            encoder.flush(&mut chunks).expect("flush");
            common::assert_accounting(&chunks, 20);
            // Without reordering, decode order is presentation order.
            assert!(chunks
                .iter()
                .all(|c| c.dts == c.pts && c.frame_type != FrameType::B));
        }

        #[test]
        $(#[$attr])*
        fn keyframes_follow_gop_size_and_carry_sps_pps() {
            let config = small().with_gop_size(10).with_bframes(Some(0));
            let input = common::clip(&config, 35);
            let mut encoder = ($open)(&config).expect("open");
            let chunks = common::encode_all(encoder.as_mut(), &input);
            let keyframes: Vec<u64> = chunks
                .iter()
                .filter(|c| c.keyframe)
                .map(|c| c.frame_index)
                .collect();
            // Exactly every 10th frame, and no other: one IDR alone (an encoder that ignores
            // the GOP size) or an extra scene-cut keyframe both fail here.
            assert_eq!(keyframes, [0, 10, 20, 30], "keyframe positions for gop 10");
            for c in chunks.iter().filter(|c| c.keyframe) {
                let types = common::nal_types_of(CODEC, &c.data);
                assert!(
                    common::parameter_sets_then_idr(CODEC, &types),
                    "keyframe {} does not carry the parameter sets {:?} in order, then an IDR \
                     slice: {types:?}",
                    c.frame_index,
                    common::parameter_set_types(CODEC),
                );
                assert_eq!(c.frame_type, FrameType::Idr);
            }
            let headers = common::nal_types_of(CODEC, encoder.sequence_headers());
            assert_eq!(
                headers,
                common::parameter_set_types(CODEC),
                "out-of-band headers are the parameter sets, in order"
            );
        }

        #[test]
        $(#[$attr])*
        fn forced_keyframe_is_an_idr() {
            let config = small().with_gop_size(1000);
            let input = common::clip(&config, 12);
            let mut encoder = ($open)(&config).expect("open");
            let mut chunks = Vec::new();
            // Every in-process backend forces keyframes; only the FFmpeg subprocess backend
            // may refuse (its frames go through a pipe with no per-frame side channel).
            let must_support = !matches!(encoder.kind(), nvencode::EncoderKind::Ffmpeg(_));
            let mut supported = true;
            for (i, frame) in input.iter().enumerate() {
                if i == 7 {
                    match encoder.encode(Frame::new(frame).with_force_keyframe(), &mut chunks) {
                        Ok(()) => continue,
                        // A backend that cannot force keyframes must say so and not count the
                        // frame, so sending it again plain loses nothing.
                        Err(Error::Unsupported { .. }) if !must_support => supported = false,
                        Err(other) => panic!("forced keyframe on {:?}: {other:?}", encoder.kind()),
                    }
                }
                encoder.encode(Frame::new(frame), &mut chunks).expect("encode");
            }
            encoder.flush(&mut chunks).expect("flush");
            common::assert_accounting(&chunks, 12);
            let forced = chunks.iter().find(|c| c.frame_index == 7).expect("frame 7");
            if supported {
                assert!(forced.keyframe && forced.frame_type == FrameType::Idr, "{forced:?}");
                let types = common::nal_types_of(CODEC, &forced.data);
                assert!(common::parameter_sets_then_idr(CODEC, &types), "{types:?}");
                // With gop 1000, frame 0 and the forced frame are the only keyframes.
                let keyframes: Vec<u64> = chunks
                    .iter()
                    .filter(|c| c.keyframe)
                    .map(|c| c.frame_index)
                    .collect();
                assert_eq!(keyframes, [0, 7]);
            } else {
                eprintln!("{:?} cannot force keyframes (Unsupported); frame 7 was sent plain", encoder.kind());
            }
        }

        #[test]
        $(#[$attr])*
        fn caller_timestamps_pass_through_and_must_increase() {
            let config = small();
            let input = common::clip(&config, 6);
            let mut encoder = ($open)(&config).expect("open");
            let mut chunks = Vec::new();
            for (i, frame) in input.iter().enumerate() {
                encoder
                    .encode(Frame::new(frame).with_pts(1000 + 3 * i as i64), &mut chunks)
                    .expect("encode");
            }
            let err = encoder
                .encode(Frame::new(&input[0]).with_pts(1015), &mut chunks)
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::NonMonotonicPts {
                        frame_index: 6,
                        pts: 1015,
                        previous: 1015
                    }
                ),
                "{err:?}"
            );
            encoder.flush(&mut chunks).expect("flush");
            let mut pts: Vec<i64> = chunks.iter().map(|c| c.pts).collect();
            pts.sort_unstable();
            assert_eq!(pts, vec![1000, 1003, 1006, 1009, 1012, 1015]);
        }

        /// The contract: an `Err` from `encode` means the frame was not accepted, so sending it
        /// again encodes it once.
        #[test]
        $(#[$attr])*
        fn a_refused_frame_sent_again_comes_out_once() {
            struct Refusing<'a> {
                inner: &'a mut dyn VideoEncoder,
                sent: u32,
            }
            // Each first try of frames 4 and 9 goes in with a bad length or a stale pts.
            impl VideoEncoder for Refusing<'_> {
                fn encode(
                    &mut self,
                    frame: Frame<'_>,
                    out: &mut Vec<nvencode::EncodedChunk>,
                ) -> Result<(), Error> {
                    self.sent += 1;
                    match (frame.pts, self.sent) {
                        (Some(4), 5) => self.inner.encode(Frame::new(&frame.data[1..]), out),
                        (Some(9), 11) => self.inner.encode(frame.with_pts(3), out),
                        _ => self.inner.encode(frame, out),
                    }
                }
                fn flush(&mut self, out: &mut Vec<nvencode::EncodedChunk>) -> Result<(), Error> {
                    self.inner.flush(out)
                }
                fn kind(&self) -> nvencode::EncoderKind {
                    self.inner.kind()
                }
                fn config(&self) -> &EncoderConfig {
                    self.inner.config()
                }
                fn sequence_headers(&self) -> &[u8] {
                    self.inner.sequence_headers()
                }
            }
            let config = small().with_bframes(Some(2));
            let input = common::clip(&config, 14);
            let mut encoder = ($open)(&config).expect("open");
            let mut refusing = Refusing {
                inner: encoder.as_mut(),
                sent: 0,
            };
            let run = common::drive_through_errors(&mut refusing, &input, true);
            assert_eq!(run.refused.len(), 2, "{:?}", run.refused);
            assert!(run.refused[0].1.contains("bytes"), "{:?}", run.refused);
            assert!(run.refused[1].1.contains("pts 3"), "{:?}", run.refused);
            run.flush.expect("flush");
            assert_eq!(run.chunks.len(), 14);
            let decoded = common::decode(CODEC, &common::concat(&run.chunks), config.resolution);
            assert_eq!(decoded.len(), 14);
        }

        #[test]
        $(#[$attr])*
        fn wrong_frame_length_is_rejected_and_encoder_stays_usable() {
            let config = small();
            let input = common::clip(&config, 10);
            let mut encoder = ($open)(&config).expect("open");
            let mut chunks = Vec::new();
            for frame in &input[..5] {
                encoder.encode_frame(frame, &mut chunks).expect("encode");
            }
            let expected = 320 * 240 * 3 / 2;
            for bad_len in [0, 1, expected - 1, expected + 1, expected * 2] {
                let bad = vec![0u8; bad_len];
                let err = encoder.encode_frame(&bad, &mut chunks).unwrap_err();
                match err {
                    Error::FrameSize {
                        frame_index,
                        expected: e,
                        actual,
                        ..
                    } => {
                        assert_eq!((frame_index, e, actual), (5, expected, bad_len));
                    }
                    other => panic!("expected FrameSize, got {other:?}"),
                }
            }
            for frame in &input[5..] {
                encoder
                    .encode_frame(frame, &mut chunks)
                    .expect("encode after a rejected frame");
            }
            encoder.flush(&mut chunks).expect("flush");
            common::assert_accounting(&chunks, 10);
            let decoded = common::decode(CODEC, &common::concat(&chunks), config.resolution);
            assert_eq!(decoded.len(), 10);
        }

        #[test]
        $(#[$attr])*
        fn encode_after_flush_is_finished_and_flush_is_idempotent() {
            let config = small();
            let input = common::clip(&config, 3);
            let mut encoder = ($open)(&config).expect("open");
            let chunks = common::encode_all(encoder.as_mut(), &input);
            assert_eq!(chunks.len(), 3);
            let mut more = Vec::new();
            let err = encoder.encode_frame(&input[0], &mut more).unwrap_err();
            assert!(matches!(err, Error::Finished { .. }), "{err:?}");
            encoder.flush(&mut more).expect("second flush");
            assert!(more.is_empty());
        }

        #[test]
        $(#[$attr])*
        fn invalid_configs_give_their_typed_errors() {
            let base = small();
            let cases: Vec<(EncoderConfig, fn(&ConfigError) -> bool)> = vec![
                (
                    base.clone().with_resolution(nvencode::Resolution::new(0, 240)),
                    |e| {
                        matches!(
                            e,
                            ConfigError::ZeroResolution {
                                width: 0,
                                height: 240
                            }
                        )
                    },
                ),
                (
                    base.clone()
                        .with_resolution(nvencode::Resolution::new(321, 240)),
                    |e| matches!(e, ConfigError::OddResolution { width: 321, .. }),
                ),
                (
                    base.clone()
                        .with_resolution(nvencode::Resolution::new(320, 241))
                        .with_pixel_format(nvencode::PixelFormat::Nv12),
                    |e| matches!(e, ConfigError::OddResolution { height: 241, .. }),
                ),
                (
                    base.clone()
                        .with_resolution(nvencode::Resolution::new(u32::MAX - 1, u32::MAX - 1)),
                    |e| matches!(e, ConfigError::FrameSizeOverflow { .. }),
                ),
                (
                    base.clone()
                        .with_resolution(nvencode::Resolution::new(32768, 16)),
                    |e| {
                        matches!(
                            e,
                            ConfigError::ResolutionTooLarge {
                                width: 32768,
                                max: 16384,
                                ..
                            }
                        )
                    },
                ),
                (base.clone().with_crf(51.5), |e| {
                    matches!(e, ConfigError::CrfOutOfRange { .. })
                }),
                (base.clone().with_crf(-1.0), |e| {
                    matches!(e, ConfigError::CrfOutOfRange { .. })
                }),
                (base.clone().with_crf(f32::NAN), |e| {
                    matches!(e, ConfigError::CrfOutOfRange { .. })
                }),
                (base.clone().with_gop_size(0), |e| {
                    matches!(e, ConfigError::GopSizeOutOfRange { gop_size: 0, .. })
                }),
                (base.clone().with_bframes(Some(17)), |e| {
                    matches!(
                        e,
                        ConfigError::BframesOutOfRange {
                            bframes: 17,
                            max: 16
                        }
                    )
                }),
                (base.clone().with_threads(129), |e| {
                    matches!(
                        e,
                        ConfigError::ThreadsOutOfRange {
                            threads: 129,
                            max: 128
                        }
                    )
                }),
                (
                    base.clone().with_frame_rate(nvencode::FrameRate::new(30, 0)),
                    |e| matches!(e, ConfigError::InvalidFrameRate { num: 30, den: 0 }),
                ),
            ];
            for (config, is_expected) in cases {
                match ($open)(&config) {
                    Err(Error::Config(e)) => {
                        assert!(is_expected(&e), "unexpected error {e:?} for {config:?}")
                    }
                    Err(other) => panic!("expected a config error for {config:?}, got {other:?}"),
                    Ok(_) => panic!("accepted invalid config {config:?}"),
                }
            }
        }
        }
    };
}

/// The NAL unit types in an Annex B buffer, in order: the crate's own Annex B parser, so the
/// tests and the backends read streams one way.
#[allow(unused_imports)] // Like the helpers above, not every test binary uses it.
pub use nvencode::h264::nal_types;

/// The NAL unit types of an Annex B buffer of `codec`, in order. The units are split by the
/// crate's Annex B parser; the type is read here from the header as the standards define it
/// (H.264 7.3.1: the low 5 bits of one byte; HEVC 7.3.1.2: bits 1-6 of the first of two bytes),
/// independently of the crate's per-codec code.
pub fn nal_types_of(codec: Codec, data: &[u8]) -> Vec<u8> {
    nvencode::h264::nal_units(data)
        .filter_map(|nal| nal.first())
        .map(|&b| match codec {
            Codec::Hevc => (b >> 1) & 0x3f,
            _ => b & 0x1f,
        })
        .collect()
}

/// The parameter sets a keyframe of `codec` carries, in order: SPS, PPS (H.264 types 7, 8);
/// VPS, SPS, PPS (HEVC types 32, 33, 34).
pub fn parameter_set_types(codec: Codec) -> Vec<u8> {
    match codec {
        Codec::Hevc => vec![32, 33, 34],
        _ => vec![7, 8],
    }
}

/// Whether `types` has `codec`'s parameter sets in order and then an IDR slice (H.264 type 5;
/// HEVC 19 IDR_W_RADL or 20 IDR_N_LP).
pub fn parameter_sets_then_idr(codec: Codec, types: &[u8]) -> bool {
    let idr = types.iter().position(|&t| match codec {
        Codec::Hevc => t == 19 || t == 20,
        _ => t == 5,
    });
    let positions: Vec<Option<usize>> = parameter_set_types(codec)
        .iter()
        .map(|p| types.iter().position(|t| t == p))
        .collect();
    let Some(idr) = idr else { return false };
    positions
        .windows(2)
        .all(|w| matches!((w[0], w[1]), (Some(a), Some(b)) if a < b))
        && positions.last().is_some_and(|p| p.is_some_and(|p| p < idr))
}

/// Writes an executable shell script `name` with `body` into `dir` (a stand-in for a program
/// such as `ffmpeg`), and returns its path.
pub fn script(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    let mut perms = std::fs::metadata(&path).expect("metadata").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).expect("chmod");
    path
}

/// Queues on `stream` the copy of a tightly packed host frame of `config` into a device ring
/// slot's `surface`, in the layout `SlotFrame::Device` describes (the surface's pitch for luma
/// and NV12 chroma, half of it for I420 chroma): what a GPU producer does before committing,
/// without waiting for the copy.
///
/// # Safety
/// `surface` must be a slot's whole surface in `stream`'s context, kept allocated by its ring;
/// `frame` must stay alive and unchanged until the stream has run the copies (the callers keep
/// their input frames until the ring, whose storage waits for its stream when dropped, is gone).
pub unsafe fn upload_to_device_slot(
    surface: nvencode::cuda::DeviceSurface,
    stream: &nvencode::cuda::Stream,
    frame: &[u8],
    config: &EncoderConfig,
) {
    let s = surface;
    let (w, h) = (
        config.resolution.width as usize,
        config.resolution.height as usize,
    );
    // (source offset, source pitch, destination offset, destination pitch, width, rows)
    let planes = match config.pixel_format {
        PixelFormat::Nv12 => vec![(0, w, 0, s.pitch, w, h * 3 / 2)],
        _ => {
            let (sc, dc) = (w / 2, s.pitch / 2);
            vec![
                (0, w, 0, s.pitch, w, h),
                (w * h, sc, s.pitch * h, dc, w / 2, h / 2),
                (
                    w * h + sc * (h / 2),
                    sc,
                    s.pitch * h + dc * (h / 2),
                    dc,
                    w / 2,
                    h / 2,
                ),
            ]
        }
    };
    for (src, src_pitch, dst, dst_pitch, width, rows) in planes {
        let target = nvencode::cuda::DeviceSurface {
            device_ptr: s.device_ptr + dst as u64,
            pitch: dst_pitch,
            width_bytes: width,
            rows,
        };
        // SAFETY: `target` lies inside the slot's surface (pitch x rows bytes of one allocation
        // of the stream's context); `frame` outlives the copy: this function's contract.
        unsafe {
            nvencode::cuda::copy_host_to_device_async(&frame[src..], src_pitch, &target, stream)
        }
        .expect("cuMemcpy2DAsync into the device slot");
    }
}

/// Runs `cmd` to its end, or kills it after `limit` and fails; returns whether it succeeded and
/// its output (stdout, then stderr).
pub fn run_bounded(
    mut cmd: std::process::Command,
    limit: std::time::Duration,
    what: &str,
) -> (bool, String) {
    use std::io::Read;
    let dir = tempfile::tempdir().expect("temp dir");
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("start the child");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut text = String::new();
    for path in [&out_path, &err_path] {
        let mut file = std::fs::File::open(path).expect("child output");
        file.read_to_string(&mut text).expect("read child output");
    }
    let status =
        status.unwrap_or_else(|| panic!("{what} was still running after {limit:?}:\n{text}"));
    (status.success(), text)
}
