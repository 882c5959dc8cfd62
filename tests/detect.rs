//! Detection on a machine with no GPU (CI): every hardware encoder is reported unavailable with
//! its reason, and x264 is chosen.

use nvenc::{EncoderKind, FfmpegCodec};

fn has_nvidia_driver() -> bool {
    std::path::Path::new("/proc/driver/nvidia").exists()
}

#[test]
fn without_gpu_only_software_is_available_and_every_rejection_has_a_reason() {
    if has_nvidia_driver() {
        eprintln!("skipped: this machine has an NVIDIA driver");
        return;
    }
    let report = nvenc::detect();
    assert_eq!(
        report.candidates.iter().map(|c| c.kind).collect::<Vec<_>>(),
        nvenc::detect::PRIORITY.to_vec()
    );
    for kind in [
        EncoderKind::Nvenc,
        EncoderKind::Ffmpeg(FfmpegCodec::Qsv),
        EncoderKind::Ffmpeg(FfmpegCodec::VideoToolbox),
        EncoderKind::Ffmpeg(FfmpegCodec::Vaapi),
    ] {
        let c = report.candidate(kind).expect("listed");
        assert!(
            !c.available,
            "{kind} reported available on a machine without it"
        );
        let reason = c.reason.as_deref().unwrap_or("");
        assert!(!reason.is_empty(), "{kind} rejected without a reason");
    }
    let nvenc = report
        .candidate(EncoderKind::Nvenc)
        .and_then(|c| c.reason.clone())
        .unwrap_or_default();
    assert!(nvenc.contains("libnvidia-encode"), "{nvenc}");
    // Debian's ffmpeg lists h264_qsv; the probe encode must be what rejects it.
    if report.ffmpeg.encoders.iter().any(|e| e == "h264_qsv") {
        let qsv = report
            .candidate(EncoderKind::Ffmpeg(FfmpegCodec::Qsv))
            .and_then(|c| c.reason.clone());
        assert!(!qsv.unwrap_or_default().contains("does not list"));
    }
    assert_eq!(nvenc::detect_available_encoders(), vec![EncoderKind::X264]);
    // The report serializes for CI logs.
    let json = serde_json::to_string(report).expect("json");
    assert!(json.contains("\"kind\":\"x264\""));
}
