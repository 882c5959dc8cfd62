//! Detection on a machine with no GPU (CI): every hardware encoder is reported unavailable with
//! its reason, and x264 is chosen.

mod common;

use nvencode::{Codec, EncoderKind, FfmpegFamily};

#[test]
fn without_gpu_only_software_is_available_and_every_rejection_has_a_reason() {
    if !common::without_nvidia_driver(
        "without_gpu_only_software_is_available_and_every_rejection_has_a_reason",
    ) {
        return;
    }
    let report = nvencode::detect();
    for codec in [Codec::H264, Codec::Hevc] {
        assert_eq!(
            report
                .candidates
                .iter()
                .filter(|c| c.codec == codec)
                .map(|c| c.kind)
                .collect::<Vec<_>>(),
            nvencode::backends::priority(codec),
            "{codec}"
        );
    }
    // HEVC: NVENC is rejected with its reason, and the software HEVC encoder is the one there.
    let hevc = report
        .candidate(EncoderKind::Nvenc, Codec::Hevc)
        .expect("listed");
    assert!(!hevc.available && hevc.reason.is_some(), "{hevc:?}");
    if cfg!(feature = "x265") {
        assert_eq!(report.available_for(Codec::Hevc), vec![EncoderKind::X265]);
    }
    for kind in [
        EncoderKind::Nvenc,
        EncoderKind::Ffmpeg(FfmpegFamily::Qsv),
        EncoderKind::Ffmpeg(FfmpegFamily::VideoToolbox),
        EncoderKind::Ffmpeg(FfmpegFamily::Vaapi),
    ] {
        let c = report.candidate(kind, Codec::H264).expect("listed");
        assert!(
            !c.available,
            "{kind} reported available on a machine without it"
        );
        let reason = c.reason.as_deref().unwrap_or("");
        assert!(!reason.is_empty(), "{kind} rejected without a reason");
    }
    let nvenc = report
        .candidate(EncoderKind::Nvenc, Codec::H264)
        .and_then(|c| c.reason.clone())
        .unwrap_or_default();
    assert!(nvenc.contains("libnvidia-encode"), "{nvenc}");
    // Debian's ffmpeg lists h264_qsv; the probe encode must be what rejects it.
    if report.ffmpeg.encoders.iter().any(|e| e == "h264_qsv") {
        let qsv = report
            .candidate(EncoderKind::Ffmpeg(FfmpegFamily::Qsv), Codec::H264)
            .and_then(|c| c.reason.clone());
        assert!(!qsv.unwrap_or_default().contains("does not list"));
    }
    if cfg!(feature = "x264") {
        assert_eq!(
            nvencode::detect_available_encoders(),
            vec![EncoderKind::X264]
        );
    } else {
        assert_eq!(nvencode::detect_available_encoders(), vec![]);
        let x264 = report
            .candidate(EncoderKind::X264, Codec::H264)
            .expect("listed");
        assert!(x264
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("`x264` feature"));
    }
    // The report serializes for CI logs.
    let json = serde_json::to_string(report).expect("json");
    assert!(json.contains("\"kind\":\"x264\""));
}

/// A stand-in `ffmpeg` with `body`, in a new temporary folder.
fn fake(body: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = common::script(dir.path(), "ffmpeg", body);
    (dir, script)
}

fn ffmpeg_backends_rejected(report: &nvencode::DetectionReport, needle: &str) {
    let error = report.ffmpeg.error.as_deref().unwrap_or("");
    assert!(
        error.contains("ffmpeg backends unavailable") && error.contains(needle),
        "ffmpeg error {error:?} should say {needle:?}"
    );
    for kind in [
        EncoderKind::Ffmpeg(FfmpegFamily::Qsv),
        EncoderKind::Ffmpeg(FfmpegFamily::VideoToolbox),
        EncoderKind::Ffmpeg(FfmpegFamily::Vaapi),
    ] {
        let c = report.candidate(kind, Codec::H264).expect("listed");
        assert!(!c.available);
        assert!(c.reason.as_deref().unwrap_or("").contains(needle));
    }
    let x264 = report
        .candidate(EncoderKind::X264, Codec::H264)
        .expect("listed");
    assert_eq!(
        x264.available,
        cfg!(feature = "x264"),
        "x264 must not depend on ffmpeg: {x264:?}"
    );
}

#[test]
fn a_hanging_ffmpeg_is_killed_at_the_detection_limit() {
    for body in ["exec sleep 1000", "sleep 1000"] {
        let (_dir, script) = fake(body);
        let started = std::time::Instant::now();
        let report = nvencode::detect::detect_with(&script);
        let took = started.elapsed();
        // Two queries at most would be 2 x the limit; one suffices, as -version is not asked
        // once -encoders failed. The margin is for a loaded machine.
        assert!(
            took >= nvencode::detect::FFMPEG_QUERY_LIMIT
                && took < nvencode::detect::FFMPEG_QUERY_LIMIT * 2,
            "{body:?}: detection took {took:?}"
        );
        ffmpeg_backends_rejected(&report, "did not finish");
    }
}

/// An ffmpeg that lists every hardware encoder and then hangs on each probe encode: the probes
/// run at once under one limit, so detection gives up within `FFMPEG_PROBE_LIMIT` (plus the
/// queries), not once per listed encoder, and each hardware encoder is rejected with the reason.
/// Checked against the probes run one after another, which took three limits (30 s) here.
#[test]
fn hanging_probe_encodes_are_bounded_all_together() {
    let (_dir, script) = fake(
        "case \"$*\" in\n\
         *-encoders*) printf ' V..... h264_nvenc N\\n V..... h264_qsv Q\\n V..... h264_vaapi V\\n V..... h264_videotoolbox T\\n V..... libx264 X\\n' ;;\n\
         *-version*) echo 'ffmpeg version 9.9' ;;\n\
         *) exec sleep 1000 ;;\n\
         esac",
    );
    let started = std::time::Instant::now();
    let report = nvencode::detect::detect_with(&script);
    let took = started.elapsed();
    let limit = nvencode::detect::FFMPEG_PROBE_LIMIT;
    assert!(
        took >= limit && took < limit + std::time::Duration::from_secs(5),
        "detection took {took:?} with every probe hanging; the limit is {limit:?}"
    );
    for codec in [
        FfmpegFamily::Qsv,
        FfmpegFamily::VideoToolbox,
        FfmpegFamily::Vaapi,
    ] {
        let c = report
            .candidate(EncoderKind::Ffmpeg(codec), Codec::H264)
            .expect("listed");
        assert!(!c.available, "{codec:?}");
        assert!(
            !c.reason.as_deref().unwrap_or("").is_empty(),
            "{codec:?} rejected without a reason"
        );
    }
}

#[test]
fn a_flooding_ffmpeg_is_cut_at_the_cap() {
    let (_dir, script) = fake("exec yes 'V..... flood'");
    let report = nvencode::detect::detect_with(&script);
    ffmpeg_backends_rejected(&report, "more than");
}
