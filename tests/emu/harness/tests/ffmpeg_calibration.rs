//! Calibrates the emulated driver pair against a client nobody here wrote: Debian's
//! `ffmpeg -c:v h264_nvenc` and `-c:v hevc_nvenc`, which dlopen `libcuda.so.1` and
//! `libnvidia-encode.so.1`.
//!
//! Each variant must exit 0 with no violation and no leaked handle, and its output must decode to
//! all 60 frames with a PSNR against the source of at least [`MIN_AVG_PSNR`] dB on average and
//! [`MIN_FRAME_PSNR`] dB for every frame. Measured values on testsrc2 640x360 are 42.5-53.5 dB
//! (H.264), 48.0-49.3 dB (HEVC: libx265 behind `hevc_nvenc`, minimum and average). A
//! wrong pitch, swapped chroma planes or frames out of order drop to about 20 dB (a one-frame
//! misalignment measured 21 dB), so the thresholds separate correct from broken with a wide
//! margin and still leave room for x264 builds that code slightly differently.

use std::path::Path;

use nvenc_emu_harness::video::{
    cabac, decode_yuv420, ffmpeg_with_nvenc, probe_frames, probe_stream, psnr_yuv420,
};
use nvenc_emu_harness::EmuDriver;

const W: usize = 640;
const H: usize = 360;
const FRAMES: usize = 60;
const MIN_AVG_PSNR: f64 = 35.0;
const MIN_FRAME_PSNR: f64 = 30.0;
const SOURCE: &str = "testsrc2=size=640x360:rate=30";

fn reference(dir: &Path) -> Vec<u8> {
    let path = dir.join("ref.y4m");
    let st = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            SOURCE,
        ])
        .args(["-frames:v", &FRAMES.to_string(), "-pix_fmt", "yuv420p"])
        .arg(&path)
        .status()
        .expect("run ffmpeg");
    assert!(st.success());
    decode_yuv420(&path)
}

/// Runs one ffmpeg encode against the emulator and checks everything about it.
fn calibrate(name: &str, pre_input: &[&str], encode: &[&str]) {
    let _ = calibrate_into(&format!("{name}.h264"), pre_input, encode);
}

/// As [`calibrate`], writing `file` (the extension picks the container); returns the folder.
fn calibrate_into(file: &str, pre_input: &[&str], encode: &[&str]) -> Option<tempfile::TempDir> {
    calibrate_with("h264_nvenc", file, pre_input, encode)
}

/// As [`calibrate_into`], with FFmpeg's `encoder` (`h264_nvenc`, `hevc_nvenc`).
fn calibrate_with(
    encoder: &str,
    file: &str,
    pre_input: &[&str],
    encode: &[&str],
) -> Option<tempfile::TempDir> {
    let name = file;
    if !ffmpeg_with_nvenc() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(file);
    let emu = EmuDriver::new();
    let output = emu
        .command("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-y"])
        .args(pre_input)
        .args([
            "-f",
            "lavfi",
            "-i",
            SOURCE,
            "-frames:v",
            &FRAMES.to_string(),
        ])
        .args(["-c:v", encoder])
        .args(encode)
        .arg(&out)
        .output()
        .unwrap();
    let report = emu.report();
    assert!(
        output.status.success(),
        "{name}: ffmpeg failed: {}\nreport:\n{}",
        String::from_utf8_lossy(&output.stderr),
        report.lines.join("\n")
    );
    report.assert_clean();
    assert!(report.live.contains_key("encode") && report.live.contains_key("cuda"));
    let decoded = decode_yuv420(&out);
    let reference = reference(dir.path());
    let frame = W * H * 3 / 2;
    assert_eq!(decoded.len() / frame, FRAMES, "{name}: decoded frame count");
    let psnr = psnr_yuv420(&decoded, &reference, W, H);
    let avg = psnr.iter().sum::<f64>() / psnr.len() as f64;
    let min = psnr.iter().copied().fold(f64::INFINITY, f64::min);
    eprintln!("{name}: PSNR average {avg:.2} dB, minimum {min:.2} dB");
    assert!(
        avg >= MIN_AVG_PSNR,
        "{name}: average PSNR {avg:.2} dB < {MIN_AVG_PSNR}"
    );
    assert!(
        min >= MIN_FRAME_PSNR,
        "{name}: a frame has PSNR {min:.2} dB < {MIN_FRAME_PSNR}"
    );
    Some(dir)
}

#[test]
fn ffmpeg_p4_with_b_frames() {
    calibrate("p4_bf2", &[], &["-preset", "p4", "-bf", "2"]);
}

#[test]
fn ffmpeg_nv12_input() {
    calibrate(
        "nv12",
        &[],
        &["-pix_fmt", "nv12", "-preset", "p4", "-bf", "2"],
    );
}

#[test]
fn ffmpeg_constqp() {
    calibrate(
        "constqp",
        &[],
        &["-preset", "p1", "-rc", "constqp", "-qp", "20"],
    );
}

/// Indices of the key frames (display order).
fn keyframes(path: &Path) -> Vec<usize> {
    probe_frames(path)
        .iter()
        .enumerate()
        .filter(|(_, f)| f.key)
        .map(|(i, _)| i)
        .collect()
}

fn count_type(path: &Path, t: &str) -> usize {
    probe_frames(path)
        .iter()
        .filter(|f| f.pict_type == t)
        .count()
}

/// Low-latency tuning: NVENC's low-latency presets code no B-frames, and neither does the
/// stream.
#[test]
fn ffmpeg_low_latency_tuning() {
    let Some(dir) = calibrate_into("ll.h264", &[], &["-preset", "p2", "-tune", "ll"]) else {
        return;
    };
    let path = dir.path().join("ll.h264");
    assert_eq!(count_type(&path, "B"), 0);
    assert_eq!(probe_stream(&path).has_b_frames, 0);
}

/// `-forced-idr 1 -force_key_frames expr:eq(n,7)`: FFmpeg sets NV_ENC_PIC_FLAG_FORCEIDR on frame
/// 7, which must come out as an IDR (a key frame, beside frame 0 and no other: the default GOP is
/// longer than the clip).
#[test]
fn ffmpeg_forced_idr() {
    let Some(dir) = calibrate_into(
        "forced_idr.h264",
        &[],
        &[
            "-preset",
            "p4",
            "-bf",
            "2",
            "-forced-idr",
            "1",
            "-force_key_frames",
            "expr:eq(n,7)",
        ],
    ) else {
        return;
    };
    let path = dir.path().join("forced_idr.h264");
    assert_eq!(keyframes(&path), [0, 7]);
    assert_eq!(probe_frames(&path)[7].pict_type, "I");
}

/// B-frames read back at once: with `-zerolatency 1 -delay 0` FFmpeg locks every output as soon
/// as nvEncEncodePicture returns NV_ENC_SUCCESS (no output delay), which the header allows. The
/// stream must still have its B-frames and a single IDR.
#[test]
fn ffmpeg_b_frames_read_back_at_once() {
    let Some(dir) = calibrate_into(
        "bf_now.h264",
        &[],
        &[
            "-preset",
            "p4",
            "-bf",
            "3",
            "-zerolatency",
            "1",
            "-delay",
            "0",
        ],
    ) else {
        return;
    };
    let path = dir.path().join("bf_now.h264");
    assert_eq!(keyframes(&path), [0], "one IDR only");
    let b = count_type(&path, "B");
    assert!(b >= 40, "{b} B-frames of {FRAMES}");
}

/// `-zerolatency 1 -delay 0` without B-frames (the low-latency recipe): every frame read back at
/// once, no B-frames.
#[test]
fn ffmpeg_zero_latency_no_delay() {
    let Some(dir) = calibrate_into(
        "zl.h264",
        &[],
        &[
            "-preset",
            "p1",
            "-tune",
            "ull",
            "-bf",
            "0",
            "-zerolatency",
            "1",
            "-delay",
            "0",
        ],
    ) else {
        return;
    };
    let path = dir.path().join("zl.h264");
    assert_eq!(count_type(&path, "B"), 0);
    assert_eq!(keyframes(&path), [0]);
}

/// In a container, FFmpeg derives pts from `outputTimeStamp` and dts from the submission order:
/// with B-frames the pts must come out reordered (anchor before its B-pictures), every frame's
/// pts exactly once, dts increasing and never after pts.
#[test]
fn ffmpeg_mp4_timestamps_with_b_frames() {
    let Some(dir) = calibrate_into("ts.mp4", &[], &["-preset", "p4", "-bf", "2"]) else {
        return;
    };
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "packet=pts,dts",
            "-of",
            "csv=p=0",
        ])
        .arg(dir.path().join("ts.mp4"))
        .output()
        .unwrap();
    let packets: Vec<(i64, i64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (p, d) = l.split_once(',')?;
            Some((p.trim().parse().ok()?, d.trim().parse().ok()?))
        })
        .collect();
    assert_eq!(packets.len(), FRAMES);
    let step = packets
        .iter()
        .map(|p| p.0)
        .filter(|&p| p > 0)
        .min()
        .unwrap();
    let mut pts: Vec<i64> = packets.iter().map(|p| p.0).collect();
    assert!(
        pts.windows(2).any(|w| w[1] < w[0]),
        "no reordering: {pts:?}"
    );
    pts.sort_unstable();
    assert_eq!(
        pts,
        (0..FRAMES as i64).map(|i| i * step).collect::<Vec<_>>()
    );
    assert!(
        packets.windows(2).all(|w| w[1].1 > w[0].1),
        "dts not increasing"
    );
    assert!(packets.iter().all(|(p, d)| d <= p), "dts after pts");
}

/// FFmpeg's CUDA frame path: `hwupload` into device memory (cuMemAlloc, cuMemcpy2DAsync), then
/// nvEncRegisterResource(CUDADEVICEPTR) / map / unmap per frame.
#[test]
fn ffmpeg_cuda_frames() {
    calibrate(
        "cuda_frames",
        &["-init_hw_device", "cuda=cu", "-filter_hw_device", "cu"],
        &[
            "-vf",
            "format=nv12,hwupload",
            "-preset",
            "p4",
            "-bf",
            "3",
            "-b:v",
            "1M",
        ],
    );
}

/// Over the session limit FFmpeg fails cleanly, with the message users see on GeForce cards,
/// and leaves nothing behind.
#[test]
fn ffmpeg_session_limit() {
    if !ffmpeg_with_nvenc() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let emu = EmuDriver::new().max_sessions(0);
    let output = emu
        .command("ffmpeg")
        .args([
            "-hide_banner",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            SOURCE,
        ])
        .args(["-frames:v", "5", "-c:v", "h264_nvenc"])
        .arg(dir.path().join("x.h264"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("out of memory (10)"), "{stderr}");
    let report = emu.report();
    report.assert_clean();
}

/// What an option visibly does to the stream, checked with ffprobe (or the PPS) where it does.
type Check = fn(&Path);

fn no_b_frames(p: &Path) {
    assert_eq!(
        count_type(p, "B"),
        0,
        "B-frames in a stream asked to have none"
    );
    assert_eq!(probe_stream(p).has_b_frames, 0);
}

fn has_b_frames(p: &Path) {
    assert!(count_type(p, "B") > 0, "no B-frames");
}

fn high_bf4_gop30(p: &Path) {
    assert_eq!(probe_stream(p).profile, "High");
    assert!(count_type(p, "B") > 0, "no B-frames");
    assert_eq!(keyframes(p), [0, 30], "keyframes with -g 30");
}

fn baseline(p: &Path) {
    let st = probe_stream(p);
    assert!(st.profile.contains("Baseline"), "profile {}", st.profile);
    no_b_frames(p);
    assert!(!cabac(p), "baseline with CABAC");
}

fn cavlc_level_41(p: &Path) {
    assert!(!cabac(p), "-coder cavlc gave CABAC");
    assert_eq!(probe_stream(p).level, 41);
}

fn nothing_visible(_: &Path) {}

/// Options users commonly pass: each must run clean and decode well, and where an option has a
/// visible effect on the stream (profile, level, CAVLC, B-frames, GOP), the stream shows it.
#[test]
fn ffmpeg_option_sweep() {
    let sweep: &[(&[&str], Check)] = &[
        (
            &["-tune", "ull", "-zerolatency", "1", "-delay", "0"],
            no_b_frames,
        ),
        (&["-rc-lookahead", "8", "-bf", "3"], has_b_frames),
        (
            &["-profile:v", "high", "-bf", "4", "-g", "30"],
            high_bf4_gop30,
        ),
        (&["-profile:v", "baseline"], baseline),
        (&["-b_ref_mode", "middle", "-bf", "2"], has_b_frames),
        (&["-rc", "vbr", "-cq", "23"], nothing_visible),
        (
            &[
                "-rc", "cbr", "-b:v", "2M", "-maxrate", "2M", "-bufsize", "1M",
            ],
            nothing_visible,
        ),
        (&["-spatial-aq", "1", "-temporal-aq", "1"], nothing_visible),
        (&["-multipass", "fullres", "-preset", "p7"], nothing_visible),
        // `-aud 1` (outputAUD) is accepted but not reproduced by the emulator's encoder.
        (
            &["-coder", "cavlc", "-aud", "1", "-level", "4.1"],
            cavlc_level_41,
        ),
    ];
    for (i, (opts, check)) in sweep.iter().enumerate() {
        let file = format!("sweep{i}.h264");
        let Some(dir) = calibrate_into(&file, &[], opts) else {
            return;
        };
        check(&dir.path().join(&file));
    }
}

// ---- hevc_nvenc: the emulator's HEVC (libx265) as FFmpeg drives it ----

/// FFmpeg's `hevc_nvenc` with `args`, into `file`; checks as [`calibrate`] does (no violation,
/// no leak, 60 frames, PSNR floors), and that the stream is HEVC Main with or without B-frames.
fn calibrate_hevc(file: &str, args: &[&str], b_frames: bool) {
    let Some(dir) = calibrate_with("hevc_nvenc", file, &[], args) else {
        return;
    };
    let path = dir.path().join(file);
    let stream = probe_stream(&path);
    assert_eq!(stream.profile, "Main", "{file}");
    let b = count_type(&path, "B");
    if b_frames {
        assert!(b > 0 && stream.has_b_frames > 0, "{file}: no B-frames");
    } else {
        assert_eq!(b, 0, "{file}: B-frames");
        assert_eq!(stream.has_b_frames, 0, "{file}");
    }
    assert_eq!(keyframes(&path).first(), Some(&0), "{file}: no IDR first");
}

#[test]
fn ffmpeg_hevc_with_b_frames() {
    calibrate_hevc("hevc_bf3.hevc", &["-preset", "p4", "-bf", "3"], true);
}

#[test]
fn ffmpeg_hevc_without_b_frames() {
    calibrate_hevc("hevc_bf0.hevc", &["-preset", "p4", "-bf", "0"], false);
}

/// FFmpeg's low-latency recipe: every output is locked as soon as its submission returned,
/// with and without B-frames (with them, the emulator replays the GOP so far to hand out what
/// libx265 still holds).
#[test]
fn ffmpeg_hevc_zero_latency_no_delay() {
    calibrate_hevc(
        "hevc_zl.hevc",
        &["-bf", "0", "-zerolatency", "1", "-delay", "0"],
        false,
    );
    calibrate_hevc(
        "hevc_zl_bf3.hevc",
        &["-bf", "3", "-zerolatency", "1", "-delay", "0"],
        true,
    );
}

/// A GOP and a global header (MP4: VPS/SPS/PPS out of band, `disableSPSPPS`), B-frames as
/// reference in the middle mode (the emulated GPU's HEVC cap).
#[test]
fn ffmpeg_hevc_mp4_gop_and_b_ref_middle() {
    let Some(dir) = calibrate_with(
        "hevc_nvenc",
        "hevc.mp4",
        &[],
        &["-bf", "2", "-b_ref_mode", "middle", "-g", "20"],
    ) else {
        return;
    };
    let path = dir.path().join("hevc.mp4");
    assert_eq!(keyframes(&path), [0, 20, 40]);
}
