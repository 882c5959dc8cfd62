//! Placing NVENC sessions across GPUs (`GpuChoice::Auto`, the default) on the emulated driver
//! presenting two GPUs: a session goes to the GPU with the fewest sessions this process has open;
//! a GPU that refuses one (its session limit, no NVENC engine) is passed over for the next before
//! the fallback chain goes to software; with every GPU refusing, the error keeps each one's
//! reason. Child halves (`#[ignore]`) run only in a child process against the emulated driver.

mod common;

use nvenc_emu_harness::EmuDriver;
use nvencode::nvenc::{GpuChoice, NvencEncoder, NvencErrorKind, NvencOptions};
use nvencode::{EncoderChoice, EncoderConfig, EncoderKind, Error, VideoEncoder};

fn assert_child() {
    assert!(
        std::env::var_os("NVENC_EMU_REPORT").is_some(),
        "this test runs only in a child process against the emulated driver (see the parent tests)"
    );
}

fn run_child(emu: &EmuDriver, name: &str) -> String {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = emu.command(exe);
    cmd.args(["--ignored", "--exact", name, "--nocapture"]);
    let out = common::run_child_tests(cmd, 1, name);
    emu.report().assert_clean();
    out
}

fn config() -> EncoderConfig {
    EncoderConfig::new(320, 240)
}

/// Encodes a few frames, so the session is known to work where it was placed.
fn encodes(encoder: &mut dyn VideoEncoder) {
    let config = config();
    let frames = common::clip(&config, 5);
    let chunks = common::encode_all(encoder, &frames);
    assert_eq!(chunks.len(), 5);
}

fn is_session_limit(e: &Error) -> bool {
    matches!(e, Error::Nvenc(n) if n.kind() == NvencErrorKind::SessionLimitOrOutOfMemory)
}

#[test]
#[ignore = "child half of sessions_spread_over_gpus_and_every_refusal_is_kept"]
fn child_spread() {
    assert_child();
    let auto = NvencOptions::default();
    let mut first = NvencEncoder::with_options(&config(), &auto).expect("a session on GPU 0");
    let mut second = NvencEncoder::with_options(&config(), &auto).expect("a session on GPU 1");
    assert_eq!((first.gpu(), second.gpu()), (0, 1));
    encodes(&mut first);
    encodes(&mut second);
    // Both GPUs at their limit: both refusals are kept, in the order tried.
    match NvencEncoder::with_options(&config(), &auto) {
        Err(Error::NoGpuAccepted { refusals }) => {
            let gpus: Vec<usize> = refusals.iter().map(|(g, _)| *g).collect();
            assert_eq!(gpus, [0, 1]);
            assert!(
                refusals.iter().all(|(_, e)| is_session_limit(e)),
                "{refusals:?}"
            );
        }
        other => panic!("expected NoGpuAccepted, got {other:?}"),
    }
    // A GPU named is the only one tried.
    let named = NvencEncoder::with_options(&config(), &auto.clone().with_gpu(GpuChoice::Index(1)));
    assert!(matches!(&named, Err(e) if is_session_limit(e)), "{named:?}");
    // GPU 0 frees a session: the next one goes there.
    drop(first);
    let third = NvencEncoder::with_options(&config(), &auto).expect("GPU 0 again");
    assert_eq!(third.gpu(), 0);
}

/// Two GPUs of one session each: two sessions land one on each, a third is refused by both with
/// both reasons kept, a named GPU is the only one tried, and a freed session's GPU is used again.
#[test]
fn sessions_spread_over_gpus_and_every_refusal_is_kept() {
    let emu = EmuDriver::new().cuda_devices(2).max_sessions(1);
    let _ = run_child(&emu, "child_spread");
}

#[test]
#[ignore = "child half of the_chain_tries_the_other_gpu_before_software"]
fn child_chain_other_gpu() {
    assert_child();
    // No session of this process anywhere: GPU 0 is tried first, and refuses.
    let mut chain =
        nvencode::open_encoder(EncoderChoice::Auto, &config()).expect("the chain opens");
    assert_eq!(
        chain.kind(),
        EncoderKind::Nvenc,
        "NVENC on the other GPU, not software"
    );
    assert_eq!(chain.gpu(), Some(1));
    encodes(&mut chain);
}

/// A session refused on GPU 0 (`NV_ENC_ERR_OUT_OF_MEMORY`, as a GeForce at its session limit
/// answers; here another process's sessions, which this one cannot count) succeeds on GPU 1
/// before the fallback chain considers any software encoder.
#[test]
fn the_chain_tries_the_other_gpu_before_software() {
    let emu = EmuDriver::new()
        .cuda_devices(2)
        .fault("nvEncOpenEncodeSessionEx", 1, 10);
    let _ = run_child(&emu, "child_chain_other_gpu");
    assert!(
        emu.report()
            .faults
            .iter()
            .any(|f| f.contains("nvEncOpenEncodeSessionEx")),
        "GPU 0 refused"
    );
}

#[test]
#[ignore = "child half of a_gpu_without_nvenc_is_skipped_with_its_reason"]
fn child_no_encoder() {
    assert_child();
    let mut encoder =
        NvencEncoder::with_options(&config(), &NvencOptions::default()).expect("GPU 1 encodes");
    assert_eq!(encoder.gpu(), 1);
    encodes(&mut encoder);
    // Named, GPU 0 says why it cannot.
    let named = NvencEncoder::with_options(&config(), &NvencOptions::default().with_device(0));
    assert!(
        matches!(&named, Err(Error::Nvenc(e)) if e.kind() == NvencErrorKind::NoEncodeDevice),
        "{named:?}"
    );
}

/// A mixed node: GPU 0 has no NVENC engine (`NVENC_EMU_NO_ENCODER=0`). `Auto` skips it and
/// encodes on GPU 1; naming GPU 0 reports `NoEncodeDevice`.
#[test]
fn a_gpu_without_nvenc_is_skipped_with_its_reason() {
    let emu = EmuDriver::new().cuda_devices(2).no_encoder_on(&[0]);
    let _ = run_child(&emu, "child_no_encoder");
    let report = emu.report();
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.contains("session_open") && l.contains("device=1")),
        "the session was opened on device 1"
    );
}

/// The run: two emulated GPUs of one session each, `pipeline --streams 3`: two streams on
/// NVENC, one on each GPU (the summary lines say which), the third on x264 with both GPUs'
/// session-limit refusals logged; every stream loses nothing.
#[test]
fn the_pipeline_example_spreads_streams_over_gpus() {
    let example = common::example("pipeline");
    let dir = tempfile::tempdir().expect("temp dir");
    let emu = EmuDriver::new()
        .cuda_devices(2)
        .max_sessions(1)
        .env("RUST_LOG", "nvencode=info");
    let mut cmd = emu.command(&example);
    cmd.args(["--streams", "3", "--encoder", "auto", "--frames", "60"])
        .args(["--size", "640x360", "-o"])
        .arg(dir.path().join("s.mp4"));
    let (success, text) = common::run_bounded(cmd, std::time::Duration::from_secs(120), "pipeline");
    assert!(success, "{text}");
    let summaries: Vec<&str> = text.lines().filter(|l| l.starts_with("encoder ")).collect();
    assert_eq!(summaries.len(), 3, "{text}");
    for gpu in [
        "encoder nvenc on GPU 0:",
        "encoder nvenc on GPU 1:",
        "encoder x264:",
    ] {
        assert_eq!(
            summaries.iter().filter(|l| l.starts_with(gpu)).count(),
            1,
            "{gpu}\n{text}"
        );
    }
    assert!(summaries.iter().all(|l| l.contains("lost 0,")), "{text}");
    let chosen = text
        .lines()
        .find(|l| l.contains("encoder selected encoder=x264"))
        .unwrap_or_else(|| panic!("no selection line for x264:\n{text}"));
    assert!(
        chosen.contains("GPU 0: nvEncOpenEncodeSessionEx")
            && chosen.contains("GPU 1: nvEncOpenEncodeSessionEx"),
        "{chosen}"
    );
    for k in 0..3 {
        assert!(
            dir.path().join(format!("s-{k}.mp4")).exists(),
            "stream {k}'s file"
        );
    }
}

#[test]
#[ignore = "child half of a_gpu_named_by_uuid_is_the_one_opened"]
fn child_uuid() {
    assert_child();
    let bytes = nvencode::cuda::device_uuid(1).expect("device 1's UUID");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let uuid = format!(
        "GPU-{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    );
    let choice: GpuChoice = uuid.parse().expect("a UUID");
    let mut encoder =
        NvencEncoder::with_options(&config(), &NvencOptions::default().with_gpu(choice))
            .expect("opens on the GPU of that UUID");
    assert_eq!(encoder.gpu(), 1);
    encodes(&mut encoder);
    // A UUID of no GPU here: a configuration error naming it.
    let absent = GpuChoice::Uuid(format!("GPU-{}", "f".repeat(32)));
    let refused = NvencEncoder::with_options(&config(), &NvencOptions::default().with_gpu(absent));
    assert!(
        matches!(
            &refused,
            Err(Error::Config(nvencode::ConfigError::GpuNotFound {
                devices: 2,
                ..
            }))
        ),
        "{refused:?}"
    );
}

/// `GpuChoice::Uuid` opens on the GPU of that UUID (device 1 of two emulated GPUs, though
/// placement would have taken device 0), and a UUID no GPU has is a configuration error.
#[test]
fn a_gpu_named_by_uuid_is_the_one_opened() {
    let emu = EmuDriver::new().cuda_devices(2);
    let _ = run_child(&emu, "child_uuid");
}
