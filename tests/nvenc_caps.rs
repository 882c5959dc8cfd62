//! `nvencode::nvenc::probe` against the emulated driver pair: the capability report, its GUIDs and
//! caps, the probe session always destroyed, and the on-disk cache keyed by GPU UUID and driver
//! (`NVENC_CAPS_CACHE`, `XDG_CACHE_HOME`). Each probe runs in a child process, as a new process
//! on the machine would.

use std::path::Path;

use nvenc_emu_harness::{in_child, EmuDriver, Report};
use nvencode::nvenc::NvencCaps;

/// The emulated GPU's UUID, `nvenc-emu-gpu-00` as bytes, formatted as `nvidia-smi -L` does.
const EMU_UUID: &str = "GPU-6e76656e-632d-656d-752d-6770752d3030";

/// The child half: probes device 0 and prints the report as JSON (or the error). Run only by
/// the tests below, in a child process against the emulated driver.
#[test]
#[ignore = "child half: run by the probe tests in a child process"]
fn child_probe() {
    assert!(
        in_child(),
        "a child half: run by the probe tests of this file"
    );
    // The cache's warnings go to stderr, where the parent looks for them.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("nvencode=debug")
        .try_init();
    match nvencode::nvenc::probe(0) {
        Ok(caps) => println!("CAPS {}", serde_json::to_string(&caps).unwrap()),
        Err(e) => println!("PROBE_ERROR {e}"),
    }
}

/// Runs the child against `emu` with `cache` as `NVENC_CAPS_CACHE`; returns its report, its
/// stdout and stderr.
fn probe_in_child(emu: EmuDriver) -> (Option<NvencCaps>, Report, String, String) {
    let out = emu.command_self("child_probe").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let caps = stdout
        .lines()
        .find_map(|l| l.split_once("CAPS ").map(|(_, json)| json))
        .map(|j| serde_json::from_str(j).unwrap());
    (caps, emu.report(), stdout, stderr)
}

fn sessions_opened(report: &Report) -> u64 {
    report
        .calls
        .get("encode")
        .and_then(|c| c.get("nvEncOpenEncodeSessionEx"))
        .copied()
        .unwrap_or(0)
}

fn with_cache(emu: EmuDriver, file: &Path) -> EmuDriver {
    emu.env("NVENC_CAPS_CACHE", file.to_str().unwrap())
}

/// The report the emulated GPU gives: H.264 listed, its caps, the driver's API and the GPU's
/// identity; one probe session, destroyed, nothing leaked.
#[test]
fn probe_reports_the_caps_and_destroys_its_session() {
    let (caps, report, stdout, _) = probe_in_child(EmuDriver::new());
    let caps = caps.unwrap_or_else(|| panic!("no report:\n{stdout}"));
    assert!(caps.h264);
    assert_eq!((caps.max_width, caps.max_height), (4096, 4096));
    assert_eq!(caps.max_bframes, 4);
    assert!(caps.lookahead);
    assert_eq!(caps.engines, 1);
    // Both codecs, each with its own caps (asked with its own GUID).
    assert!(caps.hevc, "the emulated GPU lists HEVC");
    assert_eq!(
        caps.codecs(),
        [nvencode::Codec::H264, nvencode::Codec::Hevc]
    );
    let h264 = caps.codec_caps(nvencode::Codec::H264).expect("H.264 caps");
    let hevc = caps.codec_caps(nvencode::Codec::Hevc).expect("HEVC caps");
    assert_eq!((hevc.max_width, hevc.max_height), (4096, 4096));
    assert_eq!(
        hevc.max_bframes, 4,
        "B-frames for HEVC, as on Turing and later"
    );
    assert!(hevc.dyn_bitrate_change && h264.dyn_bitrate_change);
    assert!(!hevc.ten_bit, "no 10-bit input format is emulated");
    assert_eq!(h264.max_bframes, caps.max_bframes);
    assert_eq!(caps.driver_api, "11.1");
    assert_eq!(caps.gpu_uuid, EMU_UUID);
    assert!(
        caps.driver_version
            .starts_with("cuda 12040; nvenc api 11.1; "),
        "{}",
        caps.driver_version
    );
    assert_eq!(sessions_opened(&report), 1);
    assert_eq!(report.calls["encode"]["nvEncGetEncodeGUIDs"], 1);
    assert_eq!(report.calls["encode"]["nvEncDestroyEncoder"], 1);
    report.assert_clean();
}

/// A GPU without an encode engine: the probe fails with the driver's reason, leaves no session
/// behind, and nothing is cached.
#[test]
fn probe_without_an_encode_device_fails_typed_and_caches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("caps.json");
    let (caps, report, stdout, _) = probe_in_child(with_cache(EmuDriver::new().no_device(), &file));
    assert!(caps.is_none());
    assert!(stdout.contains("PROBE_ERROR"), "{stdout}");
    assert!(stdout.contains("NV_ENC_ERR_NO_ENCODE_DEVICE"), "{stdout}");
    assert_eq!(sessions_opened(&report), 1);
    report.assert_clean();
    assert!(!file.exists(), "a failed probe was cached");
}

/// A query failing inside the probe session (here the codec list): the probe returns the error
/// and the session is destroyed all the same.
#[test]
fn a_failing_query_still_destroys_the_probe_session() {
    let emu = EmuDriver::new().fault("nvEncGetEncodeGUIDs", 1, 20);
    let (caps, report, stdout, _) = probe_in_child(emu);
    assert!(caps.is_none());
    assert!(stdout.contains("nvEncGetEncodeGUIDs"), "{stdout}");
    assert_eq!(report.faults.len(), 1);
    assert_eq!(sessions_opened(&report), 1);
    assert_eq!(report.calls["encode"]["nvEncDestroyEncoder"], 1);
    report.assert_clean();
}

/// The second process on the same GPU and driver opens no probe session and gets the same
/// report; another GPU (UUID) or another driver version probes again.
#[test]
fn the_cache_skips_the_probe_until_the_gpu_or_driver_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sub").join("caps.json");
    let (first, report, ..) = probe_in_child(with_cache(EmuDriver::new(), &file));
    let first = first.unwrap();
    assert_eq!(sessions_opened(&report), 1);
    assert!(file.exists(), "no cache file written");

    let (second, report, ..) = probe_in_child(with_cache(EmuDriver::new(), &file));
    assert_eq!(second.unwrap(), first);
    assert_eq!(sessions_opened(&report), 0, "probed although cached");
    report.assert_clean();

    let (other_gpu, report, ..) =
        probe_in_child(with_cache(EmuDriver::new().gpu_uuid("another-gpu"), &file));
    assert_eq!(sessions_opened(&report), 1, "another GPU was not probed");
    assert_ne!(other_gpu.unwrap().gpu_uuid, first.gpu_uuid);

    let (new_driver, report, ..) = probe_in_child(with_cache(
        EmuDriver::new().cuda_driver_version(12050),
        &file,
    ));
    assert_eq!(sessions_opened(&report), 1, "a new driver was not probed");
    assert!(new_driver
        .unwrap()
        .driver_version
        .starts_with("cuda 12050;"));
    // Now the entry is the new driver's: the old driver probes again.
    let (_, report, ..) = probe_in_child(with_cache(EmuDriver::new(), &file));
    assert_eq!(sessions_opened(&report), 1);
}

/// Another driver library file (another driver installed beside the first, or one named by
/// `NVENC_LIBRARY_PATH`) is another driver, even where the CUDA and NVENC API versions are the
/// same: it is probed, not answered from the first one's entry. Checked against the library file
/// dropped from the cache key, which the test above lets through (it changes versions only).
#[test]
fn another_driver_library_file_probes_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("caps.json");
    let (first, report, ..) = probe_in_child(with_cache(EmuDriver::new(), &file));
    assert_eq!(sessions_opened(&report), 1);
    let (_, report, ..) = probe_in_child(with_cache(EmuDriver::new(), &file));
    assert_eq!(sessions_opened(&report), 0, "the same library probed again");

    let other = dir.path().join("other-driver");
    std::fs::create_dir(&other).unwrap();
    let copy = other.join("libnvidia-encode.so.1");
    std::fs::copy(
        nvenc_emu_harness::libs().dir.join("libnvidia-encode.so.1"),
        &copy,
    )
    .unwrap();
    let emu = with_cache(EmuDriver::new(), &file).env("NVENC_LIBRARY_PATH", copy.to_str().unwrap());
    let (second, report, ..) = probe_in_child(emu);
    assert_eq!(
        sessions_opened(&report),
        1,
        "a different driver library was answered from the cache"
    );
    let second = second.unwrap();
    assert_ne!(second.driver_version, first.unwrap().driver_version);
    assert!(
        second.driver_version.contains("other-driver"),
        "{}",
        second.driver_version
    );
}

/// A corrupt cache file is never trusted: it is reported, the GPU is probed, and the file is
/// replaced by a valid one.
#[test]
fn a_corrupt_cache_file_is_ignored_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("caps.json");
    std::fs::write(&file, "{\"format\": 1, \"entries\": [{\"device\": tru").unwrap();
    let (caps, report, _, stderr) = probe_in_child(with_cache(EmuDriver::new(), &file));
    assert!(caps.is_some());
    assert_eq!(sessions_opened(&report), 1);
    assert!(stderr.contains("ignored: corrupt"), "{stderr}");
    let (again, report, ..) = probe_in_child(with_cache(EmuDriver::new(), &file));
    assert_eq!(again, caps);
    assert_eq!(sessions_opened(&report), 0);
}

/// Without `NVENC_CAPS_CACHE` the cache is `$XDG_CACHE_HOME/nvencode/nvenc-caps.json`.
#[test]
fn the_cache_lives_in_the_users_cache_folder() {
    let dir = tempfile::tempdir().unwrap();
    let emu = EmuDriver::new();
    let mut cmd = emu.command_self("child_probe");
    cmd.env_remove("NVENC_CAPS_CACHE")
        .env("XDG_CACHE_HOME", dir.path());
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    let file = dir.path().join("nvencode").join("nvenc-caps.json");
    let text = std::fs::read_to_string(&file).expect("cache file in XDG_CACHE_HOME");
    assert!(text.contains(EMU_UUID), "{text}");
}

/// A GPU whose NVENC lists H.264 only (`NVENC_EMU_CODECS=h264`, as Kepler and the first Maxwell
/// had no HEVC): the report says so and has no HEVC caps; no HEVC cap was asked for (the
/// emulator answers such a query with an error, which the report would show as a failed call).
#[test]
fn a_gpu_without_hevc_reports_h264_only() {
    let (caps, report, stdout, _) =
        probe_in_child(EmuDriver::new().env("NVENC_EMU_CODECS", "h264"));
    let caps = caps.unwrap_or_else(|| panic!("no report:\n{stdout}"));
    assert!(caps.h264 && !caps.hevc);
    assert_eq!(caps.codecs(), [nvencode::Codec::H264]);
    assert!(caps.codec_caps(nvencode::Codec::Hevc).is_none());
    assert!(caps.codec_caps(nvencode::Codec::H264).is_some());
    report.assert_clean();
}

/// A cache file of the previous format (1: written before HEVC was probed, saying `hevc: false`
/// for every GPU) is not believed: the GPU is probed again and HEVC found.
#[test]
fn a_cache_file_of_the_previous_format_is_probed_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("caps.json");
    let (first, report, ..) = probe_in_child(with_cache(EmuDriver::new(), &file));
    assert!(first.unwrap().hevc);
    assert_eq!(sessions_opened(&report), 1);
    // The same entry as format 1 wrote it: no HEVC, no per-codec caps.
    let mut old: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    old["format"] = 1.into();
    for entry in old["entries"].as_array_mut().unwrap() {
        entry["hevc"] = false.into();
        let map = entry.as_object_mut().unwrap();
        map.remove("h264_caps");
        map.remove("hevc_caps");
    }
    std::fs::write(&file, old.to_string()).unwrap();
    let (second, report, ..) = probe_in_child(with_cache(EmuDriver::new(), &file));
    assert_eq!(sessions_opened(&report), 1, "the old file was believed");
    assert!(second.unwrap().hevc);
}
