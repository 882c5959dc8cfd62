//! The crash-safe MP4 layout, checked by FFmpeg: every state of recording and finalization
//! plays, a file cut at any byte offset plays every fragment before the cut (after `recover`
//! where the cut is inside an index), and every software backend, and a failover mid-stream,
//! write through the sink and decode across the new parameter sets.
#![cfg(feature = "x264")]

mod common;
mod mp4_support;

use std::path::Path;

use mp4_atom::{Decode, Moov};
use mp4_support::{first_child, fragments, options, samples_in, top_boxes, write};
use nvencode::sink::{recover, Mp4Writer};
use nvencode::{EncodedChunk, EncoderChoice, EncoderConfig, EncoderKind, Preset};

fn encode(choice: EncoderChoice, config: &EncoderConfig, frames: u64) -> Vec<EncodedChunk> {
    let mut encoder = nvencode::open_encoder(choice, config).expect("open x264");
    common::encode_all(encoder.as_mut(), &common::clip(config, frames))
}

fn x264() -> EncoderChoice {
    EncoderChoice::Only(EncoderKind::X264)
}

/// Decodes `bytes` as an MP4 file with FFmpeg: (frames, FFmpeg's complaints at level error).
fn decode(bytes: &[u8], config: &EncoderConfig) -> (usize, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state.mp4");
    std::fs::write(&path, bytes).expect("write state");
    decode_file(&path, config)
}

fn decode_file(path: &Path, config: &EncoderConfig) -> (usize, String) {
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
    let len = nvencode::PixelFormat::I420
        .frame_len(config.resolution)
        .expect("size");
    let mut errors = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        errors.push_str(&format!("(ffmpeg exited {})", out.status));
    }
    (out.stdout.len() / len, errors)
}

fn config_b() -> EncoderConfig {
    EncoderConfig::new(320, 240)
        .with_preset(Preset::Veryfast)
        .with_bframes(Some(2))
        .with_gop_size(24)
}

/// An output that keeps a copy of the file after every write and flush: every state a process
/// killed between two calls would leave behind (with an unbuffered output; a buffered one shows
/// fewer of them).
#[derive(Default)]
struct Recorder {
    file: std::io::Cursor<Vec<u8>>,
    states: Vec<Vec<u8>>,
}

impl std::io::Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.states.push(self.file.get_ref().clone());
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Seek for Recorder {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.file.seek(pos)
    }
}

/// The frames a reader finds in `file`: those of the first `moov` (none before it can be read:
/// a `moof` before any `moov` is refused), then those of each complete `moof` whose `mdat` is
/// complete, if that `moov` announced fragments.
fn visible_frames(file: &[u8]) -> usize {
    let mut boxes = top_boxes(file);
    // Without a moov, FFmpeg reads a `free` box whose first child is `mvhd` as one.
    if !boxes.iter().any(|b| &b.kind == b"moov") {
        if let Some(b) = boxes
            .iter_mut()
            .find(|b| &b.kind == b"free" && first_child(file, **b) == b"mvhd")
        {
            b.kind = *b"moov";
        }
    }
    let Some(first) = boxes.iter().position(|b| &b.kind == b"moov") else {
        return 0;
    };
    let mut frames = samples_in(file, boxes[first], b"moov");
    let mut bytes = file[boxes[first].at..boxes[first].at + boxes[first].size].to_vec();
    bytes[4..8].copy_from_slice(b"moov");
    let moov = Moov::decode(&mut &bytes[..]).expect("decode moov");
    if moov.mvex.is_none() {
        return frames;
    }
    for pair in boxes.windows(2) {
        if &pair[0].kind == b"moof" && &pair[1].kind == b"mdat" {
            frames += samples_in(file, pair[0], b"moof");
        }
    }
    frames
}

/// Every state the writer leaves the file in, from the first write to the end of the
/// finalization, plays without an error every frame its visible index holds; once the first
/// fragment is written, never fewer than the first fragment's; the finished file holds all.
#[test]
fn every_state_of_recording_and_finalization_plays() {
    let config = config_b();
    let frames = 100;
    let chunks = encode(x264(), &config, frames);
    let rate = config.frame_rate;
    let mut mp4 = Mp4Writer::with_options(
        Recorder::default(),
        config.resolution,
        (rate.den, rate.num),
        options(400),
    )
    .expect("mp4");
    for chunk in &chunks {
        mp4.write(chunk).expect("write");
    }
    let recorder = mp4.finish().expect("finish");
    let done = recorder.file.into_inner();
    let boxes = top_boxes(&done);
    let kinds: Vec<&[u8]> = boxes.iter().map(|b| &b.kind[..]).collect();
    assert_eq!(kinds[0], b"ftyp");
    assert_eq!(*kinds.last().expect("boxes"), b"moov", "{kinds:?}");
    assert!(
        !kinds.contains(&&b"moof"[..]),
        "finalized: no fragment index left"
    );
    // The initial moov (now free, its first child mvhd), then the fragments' indexes (free,
    // first child mfhd), each followed by its mdat.
    let initial = boxes[1];
    assert_eq!(
        (&initial.kind, first_child(&done, initial)),
        (b"free", &b"mvhd"[..])
    );
    let in_first = samples_in(&done, initial, b"moov");
    let moofs = boxes
        .iter()
        .filter(|b| &b.kind == b"free" && first_child(&done, **b) == b"mfhd")
        .count();
    assert!(moofs >= 4, "the test needs several fragments: {kinds:?}");
    let mut shown = 0;
    let mut finalizing = false;
    assert_eq!(recorder.states.last(), Some(&done));
    for (i, state) in recorder.states.iter().enumerate() {
        if let Some(dir) = std::env::var_os("MP4_STATES_DIR") {
            std::fs::write(Path::new(&dir).join(format!("state-{i:03}.mp4")), state).expect("keep");
        }
        let visible = visible_frames(state);
        let (decoded, errors) = decode(state, &config);
        let name = format!(
            "state {i} of {} ({} bytes)",
            recorder.states.len(),
            state.len()
        );
        assert_eq!(decoded, visible, "{name}: frames decoded; {errors}");
        // The state between writing the initial moov's body and its type, all samples out.
        let recovered = errors.lines().count() == 1
            && errors.ends_with("Detected moov in a free or hoov atom.\n");
        assert!(
            errors.is_empty() || visible == 0 || recovered,
            "{name}: FFmpeg said {errors}"
        );
        // Recording: only ever more frames. Finalizing (the regular moov is written): never
        // fewer than the first fragment's.
        finalizing |= state.len() >= done.len();
        if finalizing {
            assert!(
                visible >= in_first,
                "{name}: {visible} frames while finalizing"
            );
        } else {
            assert!(visible >= shown, "{name}: {visible} frames after {shown}");
            shown = visible;
        }
    }
    assert_eq!(
        shown, frames as usize,
        "every frame visible before the finalization"
    );
    assert_eq!(visible_frames(&done), frames as usize);
}

/// Whether byte offset `cut` falls inside an index box (`moov`, `moof`, or one retyped `free`)
/// of the whole `file`.
fn inside_index(file: &[u8], cut: usize) -> bool {
    top_boxes(file).iter().any(|b| {
        let index = matches!(first_child(file, *b), b"mvhd" | b"mfhd");
        index && b.at < cut && cut < b.at + b.size
    })
}

/// Cuts `file` at each of `cuts` and decodes it. Every fragment lying entirely before the cut
/// decodes without an error, except where the cut falls inside a fragment's index: FFmpeg 5.1
/// then refuses the whole file ("error reading header"), and `recover` must bring every one of
/// them back. Returns the cuts that needed `recover`.
fn check_truncations(file: &[u8], config: &EncoderConfig, cuts: &[usize]) -> Vec<usize> {
    let ends = fragments(file);
    let total: usize = ends.iter().map(|&(_, n)| n).sum();
    let mut recovered_cuts = Vec::new();
    for &cut in cuts {
        let complete: usize = ends
            .iter()
            .filter(|&&(end, _)| end <= cut)
            .map(|&(_, n)| n)
            .sum();
        let (decoded, errors) = decode(&file[..cut], config);
        let what = format!("cut at byte {cut} of {}", file.len());
        assert!(decoded <= total, "{what}: {decoded} frames of {total}");
        if decoded >= complete {
            if ends.iter().any(|&(end, _)| end == cut) || cut == file.len() {
                assert!(errors.is_empty(), "{what}, a fragment's end: {errors}");
            }
            continue;
        }
        assert!(
            inside_index(file, cut) && errors.contains("error reading header"),
            "{what}: {decoded} frames decoded, {complete} in the complete fragments before \
             the cut; {errors}"
        );
        let (frames, errors, said) = recovered(&file[..cut], config);
        assert_eq!(frames, complete, "{what}, recovered ({said}): {errors}");
        assert!(errors.is_empty(), "{what}, recovered ({said}): {errors}");
        recovered_cuts.push(cut);
    }
    recovered_cuts
}

/// A power cut while recording (or a streamed MP4 saved from a pipe), modelled as the file cut
/// at byte offsets: every fragment end, around each, inside each index, and evenly spaced ones.
/// Every fragment lying entirely before the cut plays (after `recover` where the cut falls
/// inside an index).
#[test]
fn a_recording_cut_at_any_offset_plays_every_fragment_before_the_cut() {
    let config = config_b();
    let chunks = encode(x264(), &config, 90);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stream.mp4");
    write(&path, &config, &chunks, options(300), false);
    let file = std::fs::read(&path).expect("read");
    let ends = fragments(&file);
    assert!(
        ends.len() >= 5,
        "the test needs several fragments: {ends:?}"
    );
    let mut cuts: Vec<usize> = Vec::new();
    for &(end, _) in &ends {
        for d in [-9i64, -1, 0, 1, 9, 40, 150] {
            cuts.push((end as i64 + d).clamp(1, file.len() as i64) as usize);
        }
    }
    cuts.extend((1..40).map(|i| file.len() * i / 40));
    cuts.sort_unstable();
    cuts.dedup();
    let needed = check_truncations(&file, &config, &cuts);
    assert!(
        needed.iter().all(|&c| inside_index(&file, c)),
        "only cuts inside an index need recover: {needed:?}"
    );
}

/// An encoder failing mid-stream is replaced by one with a deeper reordering and other parameter
/// sets: the MP4, streamed and finalized, decodes across the switch to the same pictures as the
/// Annex B stream of the same chunks.
#[test]
fn a_failover_mid_stream_decodes_across_the_new_parameter_sets() {
    use nvencode::{Error, VideoEncoder, X264Encoder};
    struct Failing {
        inner: X264Encoder,
        seen: u64,
    }
    impl VideoEncoder for Failing {
        fn encode(
            &mut self,
            frame: nvencode::Frame<'_>,
            out: &mut Vec<EncodedChunk>,
        ) -> Result<(), Error> {
            self.seen += 1;
            if self.seen >= 17 {
                return Err(Error::Backend {
                    backend: EncoderKind::X264,
                    call: "test",
                    message: "simulated device loss".into(),
                });
            }
            self.inner.encode(frame, out)
        }
        fn flush(&mut self, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
            self.inner.flush(out)
        }
        fn kind(&self) -> EncoderKind {
            EncoderKind::X264
        }
        fn config(&self) -> &EncoderConfig {
            self.inner.config()
        }
        fn sequence_headers(&self) -> &[u8] {
            self.inner.sequence_headers()
        }
    }
    let config = EncoderConfig::new(320, 240).with_preset(Preset::Veryfast);
    let shallow: nvencode::fallback::Opener = Box::new(|c: &EncoderConfig| {
        let inner = X264Encoder::new(&c.clone().with_bframes(Some(0)))?;
        Ok(Box::new(Failing { inner, seen: 0 }) as Box<dyn VideoEncoder>)
    });
    let deep: nvencode::fallback::Opener = Box::new(|c: &EncoderConfig| {
        Ok(Box::new(X264Encoder::new(&c.clone().with_bframes(Some(3)))?) as Box<dyn VideoEncoder>)
    });
    let chain = vec![(EncoderKind::X264, shallow), (EncoderKind::X264, deep)];
    let mut encoder = nvencode::FallbackEncoder::with_chain(&config, chain).expect("open");
    let chunks = common::encode_all(&mut encoder, &common::clip(&config, 50));
    assert_eq!(encoder.switches(), 1);
    let sps: std::collections::BTreeSet<Vec<u8>> = chunks
        .iter()
        .flat_map(|c| nvencode::h264::nal_units(&c.data))
        .filter(|n| nvencode::h264::nal_unit_type(n) == Some(nvencode::h264::NAL_SPS))
        .map(<[u8]>::to_vec)
        .collect();
    assert!(
        sps.len() >= 2,
        "the test needs the parameter sets to change"
    );
    assert_decodes_like_annex_b(&config, &chunks, "x264 -> x264 failover");
}

/// The MP4 of `chunks`, streamed and finalized, decodes without an error to the same pictures
/// as their Annex B stream.
fn assert_decodes_like_annex_b(config: &EncoderConfig, chunks: &[EncodedChunk], what: &str) {
    let reference = common::decode_h264(&common::concat(chunks), config.resolution);
    assert_eq!(reference.len(), chunks.len(), "{what}: the Annex B decode");
    let dir = tempfile::tempdir().expect("temp dir");
    for seek in [false, true] {
        let path = dir.path().join(format!("failover-{seek}.mp4"));
        write(&path, config, chunks, options(300), seek);
        let out = common::ffmpeg()
            .arg("-i")
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
            .expect("decode the MP4");
        let errors = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && errors.is_empty(),
            "{what}, seek {seek}: {errors}"
        );
        let decoded: Vec<&[u8]> = out.stdout.chunks(reference[0].len()).collect();
        assert_eq!(
            decoded.len(),
            reference.len(),
            "{what}, seek {seek}: frames"
        );
        for (i, (a, b)) in decoded.iter().zip(&reference).enumerate() {
            assert!(
                a == b,
                "{what}, seek {seek}: picture {i} differs from the Annex B decode"
            );
        }
    }
}

/// The ffmpeg backend (libx264) through the sink, and the chain's failover when that ffmpeg is
/// killed mid-stream (as in `fallback.rs`): in-process x264 takes over with its own parameter
/// sets, and the MP4 decodes across the switch.
#[test]
fn the_ffmpeg_backend_and_its_failover_to_x264_write_through_the_sink() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use nvencode::ffmpeg::{FfmpegEncoder, FfmpegOptions};
    use nvencode::{FfmpegFamily, VideoEncoder};
    let config = EncoderConfig::new(320, 240)
        .with_preset(Preset::Veryfast)
        .with_gop_size(30)
        .with_bframes(Some(2));
    let kind = EncoderKind::Ffmpeg(FfmpegFamily::Libx264);
    let chunks = encode(EncoderChoice::Only(kind), &config, 40);
    assert_decodes_like_annex_b(&config, &chunks, "ffmpeg libx264");

    let pid = Arc::new(AtomicU32::new(0));
    let pid_in = Arc::clone(&pid);
    let ffmpeg: nvencode::fallback::Opener = Box::new(move |c: &EncoderConfig| {
        let e = FfmpegEncoder::new(c, &FfmpegOptions::new(FfmpegFamily::Libx264))?;
        pid_in.store(e.pid(), Ordering::SeqCst);
        Ok(Box::new(e) as Box<dyn VideoEncoder>)
    });
    let x264: nvencode::fallback::Opener = Box::new(|c: &EncoderConfig| {
        Ok(Box::new(nvencode::X264Encoder::new(c)?) as Box<dyn VideoEncoder>)
    });
    let chain = vec![(kind, ffmpeg), (EncoderKind::X264, x264)];
    let mut encoder = nvencode::FallbackEncoder::with_chain(&config, chain).expect("open");
    let mut chunks = Vec::new();
    for (i, frame) in common::clip(&config, 60).iter().enumerate() {
        if i == 20 {
            let killed = std::process::Command::new("kill")
                .args(["-9", &pid.load(Ordering::SeqCst).to_string()])
                .status()
                .expect("kill");
            assert!(killed.success());
        }
        encoder
            .encode_frame(frame, &mut chunks)
            .expect("encode across the failure");
    }
    encoder.flush(&mut chunks).expect("flush");
    assert_eq!(encoder.switches(), 1);
    assert_decodes_like_annex_b(&config, &chunks, "ffmpeg killed -> x264");
}

/// The fragments of a file written by the sink, whatever their indexes are typed now (`free`
/// after the finalization): (end of the fragment's `mdat`, samples).
fn fragment_layout(file: &[u8]) -> Vec<(usize, usize)> {
    let boxes = top_boxes(file);
    let mut ends = Vec::new();
    for pair in boxes.windows(2) {
        let kind = match first_child(file, pair[0]) {
            b"mvhd" if &pair[0].kind != b"moov" || ends.is_empty() => b"moov",
            b"mfhd" => b"moof",
            _ => continue,
        };
        if &pair[1].kind == b"mdat" {
            ends.push((pair[1].at + pair[1].size, samples_in(file, pair[0], kind)));
        }
    }
    ends
}

/// Runs `recover` on a copy of `bytes` and decodes it: (frames, complaints, what recover said).
fn recovered(bytes: &[u8], config: &EncoderConfig) -> (usize, String, String) {
    let mut file = std::io::Cursor::new(bytes.to_vec());
    let said = format!("{:?}", recover(&mut file));
    let (frames, errors) = decode(file.get_ref(), config);
    (frames, errors, said)
}

/// A finalized file cut short (an interrupted copy), and a recording cut short, at many byte
/// offsets: after `recover`, every fragment lying entirely before the cut decodes, without an
/// error; a file cut inside its first fragment is refused as not recoverable.
#[test]
fn recover_brings_back_every_fragment_before_a_cut() {
    let config = config_b();
    let chunks = encode(x264(), &config, 90);
    let dir = tempfile::tempdir().expect("temp dir");
    for seek in [true, false] {
        let path = dir.path().join(format!("cut-{seek}.mp4"));
        write(&path, &config, &chunks, options(300), seek);
        let file = std::fs::read(&path).expect("read");
        let layout = fragment_layout(&file);
        assert!(layout.len() >= 5, "several fragments: {layout:?}");
        let total: usize = layout.iter().map(|&(_, n)| n).sum();
        assert_eq!(total, 90);
        let mut cuts: Vec<usize> = layout
            .iter()
            .flat_map(|&(end, _)| [end - 1, end, end + 1])
            .filter(|&c| c < file.len())
            .collect();
        cuts.extend((1..30).map(|i| file.len() * i / 30));
        cuts.push(file.len() - 1);
        for cut in cuts {
            let before: usize = layout
                .iter()
                .filter(|&&(end, _)| end <= cut)
                .map(|&(_, n)| n)
                .sum();
            let (frames, errors, said) = recovered(&file[..cut], &config);
            let what = format!(
                "finalized {seek}, cut at {cut} of {}: recover {said}",
                file.len()
            );
            if before == 0 {
                assert!(said.contains("NotRecoverable"), "{what}");
                continue;
            }
            assert_eq!(frames, before, "{what}: {errors}");
            assert!(errors.is_empty(), "{what}: {errors}");
        }
        // Whole: nothing to do for a finalized file; every fragment for a recording.
        let (frames, errors, said) = recovered(&file, &config);
        assert_eq!((frames, errors.as_str()), (90, ""), "{said}");
    }
}

/// Every state the writer passes through, recovered: all the frames written in whole fragments
/// by then, and once the regular moov is written, a regular file with every frame.
#[test]
fn recover_completes_an_interrupted_finalization() {
    let config = config_b();
    let chunks = encode(x264(), &config, 60);
    let rate = config.frame_rate;
    let mut mp4 = Mp4Writer::with_options(
        Recorder::default(),
        config.resolution,
        (rate.den, rate.num),
        options(400),
    )
    .expect("mp4");
    for chunk in &chunks {
        mp4.write(chunk).expect("write");
    }
    let recorder = mp4.finish().expect("finish");
    let done = recorder.file.into_inner();
    for (i, state) in recorder.states.iter().enumerate() {
        let mut file = std::io::Cursor::new(state.clone());
        let Ok(report) = recover(&mut file) else {
            continue;
        };
        let (frames, errors) = decode(file.get_ref(), &config);
        let name = format!("state {i}: {report:?}");
        assert!(errors.is_empty(), "{name}: {errors}");
        if state.len() >= done.len() {
            assert!(report.regular, "{name}");
            assert_eq!(file.get_ref(), &done, "{name}: finalization completed");
            assert_eq!(frames, 60, "{name}");
        } else {
            let whole: usize = fragment_layout(state).iter().map(|&(_, n)| n).sum();
            assert_eq!(frames, whole, "{name}");
        }
    }
}
