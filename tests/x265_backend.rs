//! The in-process x265 backend: the encoder contract for HEVC, and what is x265's own (the
//! settings libx265 really runs with, read back from the stream, reconfiguration, NV12 input,
//! small pictures), with FFmpeg as the independent decoder.

mod common;

use nvencode::{
    Bitrate, Codec, ConfigError, EncodedChunk, EncoderConfig, EncoderKind, Error, Frame, FrameType,
    PixelFormat, Preset, RateControl, Tune, VideoEncoder, X265Encoder,
};

/// At crf 18 on the synthetic pattern (veryfast, 320x240, B-frames) libx265 3.5 (build 199) gave
/// a lowest frame of 53.0 dB (mean 54.5) when this was written, and at the default crf 23
/// (medium, 640x360) 51.8 dB;
/// 38 dB, the floor, leaves room for other builds while failing on any real corruption
/// (swapped chroma planes, a frame out of place or lost drop PSNR far below 30 dB).
const PSNR_FLOOR_DB: f64 = 38.0;

fn open_x265(config: &EncoderConfig) -> Result<Box<dyn VideoEncoder>, nvencode::Error> {
    Ok(Box::new(X265Encoder::new(config)?))
}

contract_tests!(mod contract_hevc, Hevc, open_x265);

fn hevc(width: u32, height: u32) -> EncoderConfig {
    EncoderConfig::new(width, height).with_codec(Codec::Hevc)
}

/// The settings libx265 encoded with, as it writes them into the user-data SEI of every
/// keyframe ("... options: key=value flag no-flag ..."), from the first keyframe of `chunks`.
fn x265_options(chunks: &[EncodedChunk]) -> Vec<String> {
    let first = chunks.iter().find(|c| c.keyframe).expect("a keyframe");
    let text = String::from_utf8_lossy(&first.data);
    let start = text.find("options: ").expect("x265's settings SEI") + "options: ".len();
    text[start..]
        .chars()
        .take_while(|c| !c.is_control() && *c != '\u{fffd}')
        .collect::<String>()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The value of `key=value` in x265's settings.
fn option<'a>(options: &'a [String], key: &str) -> Option<&'a str> {
    options
        .iter()
        .find_map(|o| o.strip_prefix(key)?.strip_prefix('='))
}

fn has_flag(options: &[String], flag: &str) -> bool {
    options.iter().any(|o| o == flag)
}

fn keyframes(chunks: &[EncodedChunk]) -> Vec<u64> {
    let mut k: Vec<u64> = chunks
        .iter()
        .filter(|c| c.keyframe)
        .map(|c| c.frame_index)
        .collect();
    k.sort_unstable();
    k
}

/// Decodes the chunks with FFmpeg and checks the count and every frame's PSNR; returns the
/// lowest PSNR.
fn assert_decodes(config: &EncoderConfig, input: &[Vec<u8>], chunks: &[EncodedChunk]) -> f64 {
    let decoded = common::decode(Codec::Hevc, &common::concat(chunks), config.resolution);
    assert_eq!(decoded.len(), input.len(), "decoded frame count");
    let mut lowest = f64::INFINITY;
    for (i, (want, got)) in input.iter().zip(&decoded).enumerate() {
        let p = common::psnr(&common::as_i420(config, want), got);
        assert!(p >= PSNR_FLOOR_DB, "frame {i}: PSNR {p:.2} dB");
        lowest = lowest.min(p);
    }
    lowest
}

/// The bar: 640x360 at the default settings (crf 23, preset medium) decodes frame for
/// frame at 38 dB or more.
#[test]
fn default_crf_at_640x360_keeps_38_db() {
    let config = hevc(640, 360);
    let input = common::clip(&config, 30);
    let mut encoder = X265Encoder::new(&config).unwrap();
    let chunks = common::encode_all(&mut encoder, &input);
    common::assert_accounting(&chunks, 30);
    let lowest = assert_decodes(&config, &input, &chunks);
    eprintln!("640x360 crf 23 medium: lowest PSNR {lowest:.2} dB");
    let options = x265_options(&chunks);
    assert_eq!(option(&options, "crf"), Some("23.0"), "{options:?}");
    assert_eq!(option(&options, "rc"), Some("crf"));
    assert_eq!(option(&options, "input-res"), Some("640x360"));
}

/// B-frames asked for are used (reordered, dts before pts) and reach x265 as `bframes`; none
/// asked for gives none, in presentation order.
#[test]
fn bframes_on_and_off() {
    for (bframes, reorders) in [(Some(3), true), (Some(0), false)] {
        let config = hevc(320, 240)
            .with_preset(Preset::Veryfast)
            .with_bframes(bframes);
        let input = common::clip(&config, 40);
        let mut encoder = X265Encoder::new(&config).unwrap();
        assert_eq!(encoder.bframes_in_use(), bframes);
        let chunks = common::encode_all(&mut encoder, &input);
        common::assert_accounting(&chunks, 40);
        assert_decodes(&config, &input, &chunks);
        let options = x265_options(&chunks);
        assert_eq!(
            option(&options, "bframes"),
            Some(bframes.unwrap().to_string().as_str())
        );
        let b = chunks
            .iter()
            .filter(|c| c.frame_type == FrameType::B)
            .count();
        let out_of_order = chunks.iter().any(|c| c.dts < c.pts);
        assert_eq!((b > 0, out_of_order), (reorders, reorders), "{bframes:?}");
        if !reorders {
            assert!(chunks.iter().all(|c| c.dts == c.pts));
        }
    }
}

/// NV12 input (split into I420 planes for libx265) gives the very stream its I420 twin does.
#[test]
fn nv12_and_i420_encode_to_the_same_stream() {
    let i420 = hevc(320, 240).with_preset(Preset::Veryfast).with_threads(1);
    let nv12 = i420.clone().with_pixel_format(PixelFormat::Nv12);
    let input = common::clip(&nv12, 20);
    let as_i420: Vec<Vec<u8>> = input.iter().map(|f| common::as_i420(&nv12, f)).collect();
    let a = common::encode_all(&mut X265Encoder::new(&nv12).unwrap(), &input);
    let b = common::encode_all(&mut X265Encoder::new(&i420).unwrap(), &as_i420);
    assert_decodes(&nv12, &input, &a);
    assert!(
        common::concat(&a) == common::concat(&b),
        "NV12 and I420 input of the same pictures differ"
    );
}

/// A forced keyframe is an IDR with the parameter sets before it, and the GOP stays closed:
/// with gop 1000 the first frame and the forced one are the only keyframes.
#[test]
fn forced_keyframe_is_an_idr_with_parameter_sets() {
    let config = hevc(320, 240)
        .with_preset(Preset::Veryfast)
        .with_gop_size(1000)
        .with_bframes(Some(3));
    let input = common::clip(&config, 24);
    let mut encoder = X265Encoder::new(&config).unwrap();
    let mut chunks = Vec::new();
    for (i, frame) in input.iter().enumerate() {
        let frame = Frame::new(frame);
        let frame = if i == 13 {
            frame.with_force_keyframe()
        } else {
            frame
        };
        encoder.encode(frame, &mut chunks).unwrap();
    }
    encoder.flush(&mut chunks).unwrap();
    common::assert_accounting(&chunks, 24);
    assert_eq!(keyframes(&chunks), [0, 13]);
    let forced = chunks.iter().find(|c| c.frame_index == 13).unwrap();
    assert_eq!(forced.frame_type, FrameType::Idr);
    let types = common::nal_types_of(Codec::Hevc, &forced.data);
    assert!(
        common::parameter_sets_then_idr(Codec::Hevc, &types),
        "{types:?}"
    );
    assert_decodes(&config, &input, &chunks);
}

/// Keyframes exactly every `gop_size` frames, with and without B-frames, each an IDR carrying
/// VPS, SPS and PPS; x265 runs with that `keyint` and a closed GOP.
#[test]
fn keyframes_every_gop_size_frames_with_and_without_bframes() {
    for bframes in [0, 3] {
        let config = hevc(320, 240)
            .with_preset(Preset::Veryfast)
            .with_gop_size(12)
            .with_bframes(Some(bframes));
        let input = common::clip(&config, 40);
        let mut encoder = X265Encoder::new(&config).unwrap();
        let chunks = common::encode_all(&mut encoder, &input);
        assert_eq!(keyframes(&chunks), [0, 12, 24, 36], "bframes {bframes}");
        for c in chunks.iter().filter(|c| c.keyframe) {
            assert_eq!(c.frame_type, FrameType::Idr);
            let types = common::nal_types_of(Codec::Hevc, &c.data);
            assert!(
                common::parameter_sets_then_idr(Codec::Hevc, &types),
                "{types:?}"
            );
        }
        let options = x265_options(&chunks);
        assert_eq!(option(&options, "keyint"), Some("12"));
        assert!(has_flag(&options, "no-open-gop") && has_flag(&options, "repeat-headers"));
        assert_eq!(
            common::nal_types_of(Codec::Hevc, encoder.sequence_headers()),
            [32, 33, 34],
            "out-of-band headers are VPS, SPS, PPS"
        );
    }
}

/// Each rate-control mode, the preset, the tune and the thread count reach libx265 as the
/// mapping says, read back from the settings x265 writes into the stream.
#[test]
fn rate_control_modes_reach_x265() {
    let base = hevc(320, 240)
        .with_preset(Preset::Superfast)
        .with_gop_size(30);
    let cases: Vec<(EncoderConfig, Vec<(&str, &str)>)> = vec![
        (
            base.clone().with_rate_control(
                RateControl::cbr(Bitrate::from_bps(1_500_000)).with_vbv_buffer_bits(750_000),
            ),
            vec![
                ("rc", "cbr"),
                ("bitrate", "1500"),
                ("vbv-maxrate", "1500"),
                ("vbv-bufsize", "750"),
            ],
        ),
        (
            base.clone().with_rate_control(
                RateControl::vbr(Bitrate::from_bps(1_000_000), Bitrate::from_bps(2_000_000))
                    .with_vbv_buffer_bits(3_000_000),
            ),
            vec![
                ("rc", "abr"),
                ("bitrate", "1000"),
                ("vbv-maxrate", "2000"),
                ("vbv-bufsize", "3000"),
            ],
        ),
        (
            base.clone().with_rate_control(RateControl::constant_qp(33)),
            vec![("rc", "cqp"), ("qp", "33")],
        ),
        (
            base.clone().with_crf(27.5).with_threads(2),
            vec![("rc", "crf"), ("crf", "27.5"), ("numa-pools", "2")],
        ),
        (
            base.clone().with_tune(Some(Tune::Zerolatency)),
            vec![
                ("bframes", "0"),
                ("rc-lookahead", "0"),
                ("frame-threads", "1"),
            ],
        ),
    ];
    for (config, expected) in cases {
        let input = common::clip(&config, 10);
        let chunks = common::encode_all(&mut X265Encoder::new(&config).unwrap(), &input);
        common::assert_accounting(&chunks, 10);
        let options = x265_options(&chunks);
        for (key, value) in expected {
            assert_eq!(
                option(&options, key),
                Some(value),
                "{key} for {}: {options:?}",
                config.rate_control
            );
        }
    }
}

/// Frames that x264 cannot compress below any rate: every byte from a pseudo-random sequence.
fn noise(config: &EncoderConfig, frames: u64) -> Vec<Vec<u8>> {
    let len = config.validate().unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..frames)
        .map(|_| {
            (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect()
        })
        .collect()
}

/// A rate change mid-stream moves the stream to a new libx265 encoder at the next frame (an IDR
/// with fresh parameter sets; libx265 3.5's `x265_encoder_reconfig` does not reach its rate
/// control), loses no frame, and the rate falls; an invalid setting is refused and changes
/// nothing.
#[test]
fn reconfigure_lowers_the_rate_from_the_next_frame() {
    let config = hevc(320, 240)
        .with_preset(Preset::Ultrafast)
        .with_gop_size(1000)
        .with_threads(1)
        .with_rate_control(RateControl::cbr(Bitrate::from_bps(3_000_000)));
    let input = noise(&config, 90);
    let mut encoder = X265Encoder::new(&config).unwrap();
    let mut chunks = Vec::new();
    let low = RateControl::cbr(Bitrate::from_bps(300_000));
    for (i, frame) in input.iter().enumerate() {
        if i == 30 {
            let bad = RateControl::vbr(Bitrate::from_bps(2_000_000), Bitrate::from_bps(1_000_000));
            let err = encoder.reconfigure(bad).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{err:?}");
            assert_eq!(encoder.config().rate_control, config.rate_control);
            encoder.reconfigure(low).unwrap();
            assert_eq!(encoder.config().rate_control, low);
        }
        encoder.encode_frame(frame, &mut chunks).unwrap();
    }
    encoder.flush(&mut chunks).unwrap();
    common::assert_accounting(&chunks, 90);
    assert_eq!(
        keyframes(&chunks),
        [0, 30],
        "an IDR where the new encoder took over"
    );
    let at_switch = chunks.iter().find(|c| c.frame_index == 30).unwrap();
    let types = common::nal_types_of(Codec::Hevc, &at_switch.data);
    assert!(
        common::parameter_sets_then_idr(Codec::Hevc, &types),
        "{types:?}"
    );
    let bytes = |range: std::ops::Range<u64>| -> usize {
        chunks
            .iter()
            .filter(|c| range.contains(&c.frame_index))
            .map(|c| c.data.len())
            .sum()
    };
    // One second each (30 fps): the first at 3 Mbit/s, the last well after the switch.
    let (before, after) = (bytes(0..30) * 8, bytes(60..90) * 8);
    eprintln!("bits per second: {before} at 3 Mbit/s, {after} after lowering to 0.3 Mbit/s");
    assert!(
        after * 4 < before,
        "the rate did not fall: {before} -> {after} bit/s"
    );
    assert!(
        after < 600_000,
        "{after} bit/s after lowering to 300 kbit/s"
    );
    let options = x265_options(&chunks[chunks.iter().position(|c| c.frame_index == 30).unwrap()..]);
    assert_eq!(option(&options, "bitrate"), Some("300"), "{options:?}");
    let decoded = common::decode(Codec::Hevc, &common::concat(&chunks), config.resolution);
    assert_eq!(decoded.len(), 90);
    // After the end of the stream nothing changes.
    let err = encoder.reconfigure(low).unwrap_err();
    assert!(matches!(err, Error::Finished { .. }), "{err:?}");
}

/// Frames of the wrong size are refused with a typed error naming both sizes, and the encoder
/// goes on; caller timestamps pass through and must increase.
#[test]
fn bad_frames_are_typed_errors_and_the_encoder_goes_on() {
    let config = hevc(320, 240).with_preset(Preset::Veryfast);
    let input = common::clip(&config, 8);
    let mut encoder = X265Encoder::new(&config).unwrap();
    let mut chunks = Vec::new();
    for (i, frame) in input[..4].iter().enumerate() {
        encoder
            .encode(Frame::new(frame).with_pts(100 + 2 * i as i64), &mut chunks)
            .unwrap();
    }
    let expected = 320 * 240 * 3 / 2;
    for bad in [0, 1, expected - 1, expected + 1] {
        let err = encoder
            .encode_frame(&vec![0; bad], &mut chunks)
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::FrameSize { frame_index: 4, expected: e, actual, .. }
                    if e == expected && actual == bad
            ),
            "{err:?}"
        );
    }
    let err = encoder
        .encode(Frame::new(&input[4]).with_pts(106), &mut chunks)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NonMonotonicPts {
                pts: 106,
                previous: 106,
                ..
            }
        ),
        "{err:?}"
    );
    for (i, frame) in input[4..].iter().enumerate() {
        encoder
            .encode(Frame::new(frame).with_pts(108 + 2 * i as i64), &mut chunks)
            .unwrap();
    }
    encoder.flush(&mut chunks).unwrap();
    let mut pts: Vec<i64> = chunks.iter().map(|c| c.pts).collect();
    pts.sort_unstable();
    assert_eq!(pts, (0..8).map(|i| 100 + 2 * i).collect::<Vec<i64>>());
    for pair in chunks.windows(2) {
        assert!(pair[0].dts < pair[1].dts);
    }
    assert!(chunks.iter().all(|c| c.dts <= c.pts));
    assert_decodes(&config, &input, &chunks);
}

/// x265 encodes HEVC only: an H.264 configuration is refused at the boundary, naming both.
#[test]
fn an_h264_config_is_refused_with_codec_unsupported() {
    let err = X265Encoder::new(&EncoderConfig::new(320, 240)).unwrap_err();
    match err {
        Error::Config(ConfigError::CodecUnsupported {
            backend,
            codec,
            supported,
        }) => {
            assert_eq!((backend, codec), (EncoderKind::X265, Codec::H264));
            assert_eq!(supported, [Codec::Hevc]);
        }
        other => panic!("expected CodecUnsupported, got {other:?}"),
    }
}

/// Through the backend table: `x265` opens by name for HEVC.
#[test]
fn the_backend_table_opens_x265_for_hevc() {
    let config = hevc(320, 240).with_preset(Preset::Ultrafast);
    let mut encoder = nvencode::open_backend(EncoderKind::X265, &config).unwrap();
    assert_eq!(encoder.kind(), EncoderKind::X265);
    let input = common::clip(&config, 5);
    let chunks = common::encode_all(encoder.as_mut(), &input);
    common::assert_accounting(&chunks, 5);
}

/// The fallback chain for an HEVC stream on a machine without NVENC: x264, before x265 in the
/// backend order, is passed over with the reason (it cannot encode HEVC) instead of ending the
/// search with a configuration error, and x265 encodes the stream. Checked against the chain
/// without its codec filter, which failed here with "x264 cannot encode hevc".
#[test]
fn the_fallback_chain_passes_over_encoders_without_the_codec() {
    if !common::without_nvidia_driver("the_fallback_chain_passes_over_encoders_without_the_codec") {
        return;
    }
    let config = EncoderConfig::new(320, 240).with_codec(nvencode::Codec::Hevc);
    let mut chain = nvencode::FallbackEncoder::new(&config, None).expect("a chain for HEVC");
    assert_eq!(chain.current_kind(), nvencode::EncoderKind::X265);
    let rejected: Vec<String> = chain
        .rejected()
        .iter()
        .map(|(kind, e)| format!("{kind}: {e}"))
        .collect();
    assert!(
        rejected
            .iter()
            .any(|r| r.contains("x264 cannot encode hevc")),
        "{rejected:?}"
    );
    let input = common::clip(&config, 10);
    let chunks = common::encode_all(&mut chain, &input);
    common::assert_accounting(&chunks, 10);
    let decoded = common::decode(
        nvencode::Codec::Hevc,
        &common::concat(&chunks),
        config.resolution,
    );
    assert_eq!(decoded.len(), 10);
}
