//! Test-side helpers for the emulated NVIDIA drivers (test infrastructure, not product).
//!
//! [`EmuDriver`] builds the two emulator cdylibs (`nvenc-emu-cuda`, `nvenc-emu-encode`) with the
//! same cargo and profile as the running test, once per test process, links them into a fresh
//! temporary folder under the driver's names (`libcuda.so.1`, `libcuda.so`,
//! `libnvidia-encode.so.1`), and hands out [`std::process::Command`]s whose `LD_LIBRARY_PATH`
//! points there. Only those child processes load the emulators; nothing else (not the test
//! process, not other tests) can pick them up by accident, because the build artifacts keep
//! their crate names (`libnvenc_emu_*.so`) and the driver-named links live only in that folder.
//!
//! A test can also run its own body in the child, with the production code loading the emulator
//! through the real loader:
//!
//! ```no_run
//! # fn backend_encodes() {
//! use nvenc_emu_harness::{in_child, EmuDriver};
//!
//! if in_child() {
//!     // ... the code under test: nvenc_sys::load(), cudarc, the backend ...
//!     return;
//! }
//! let emu = EmuDriver::new().fast();
//! assert!(emu.command_self("backend_encodes").status().unwrap().success());
//! emu.report().assert_clean();
//! # }
//! ```
//!
//! Or run any program against it:
//!
//! ```no_run
//! use nvenc_emu_harness::EmuDriver;
//!
//! let emu = EmuDriver::new().fault("nvEncEncodePicture", 5, 8).max_sessions(2);
//! let status = emu.command("ffmpeg").args(["-version"]).status().unwrap();
//! let report = emu.report();
//! assert!(status.success());
//! report.assert_clean();
//! ```

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub use nvenc_sys::ApiVersion;

/// Where the emulated libraries are, under the driver's names.
#[derive(Debug)]
pub struct Libs {
    /// The folder to put on `LD_LIBRARY_PATH`: both emulated libraries.
    pub dir: PathBuf,
    /// A folder holding only the emulated `libnvidia-encode.so.1`, for running the emulated
    /// NVENC on top of the machine's real `libcuda` (GPU machines).
    pub encode_only_dir: PathBuf,
    /// The built `libnvenc_emu_cuda.so`.
    pub cuda: PathBuf,
    /// The built `libnvenc_emu_encode.so`.
    pub encode: PathBuf,
    _keep: tempfile::TempDir,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..")
}

fn build() -> Result<Libs, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args([
        "build",
        "-p",
        "nvenc-emu-cuda",
        "-p",
        "nvenc-emu-encode",
        "--message-format=json-render-diagnostics",
    ]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the emulators failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut cuda = None;
    let mut encode = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let name = msg["target"]["name"].as_str().unwrap_or_default();
        let so = msg["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(".so"))
            .map(PathBuf::from);
        match name {
            "nvenc_emu_cuda" => cuda = so,
            "nvenc_emu_encode" => encode = so,
            _ => {}
        }
    }
    let cuda = cuda.ok_or("cargo reported no libnvenc_emu_cuda.so")?;
    let encode = encode.ok_or("cargo reported no libnvenc_emu_encode.so")?;
    let keep = tempfile::Builder::new()
        .prefix("nvenc-emu-libs")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let dir = keep.path().join("pair");
    let encode_only_dir = keep.path().join("encode-only");
    for d in [&dir, &encode_only_dir] {
        std::fs::create_dir(d).map_err(|e| e.to_string())?;
    }
    for (d, name, target) in [
        (&dir, "libcuda.so.1", &cuda),
        (&dir, "libnvidia-encode.so.1", &encode),
        (&encode_only_dir, "libnvidia-encode.so.1", &encode),
    ] {
        // A copy, not a link to the artifact: the child keeps working even if cargo rebuilds
        // the artifact while it runs.
        std::fs::copy(target, d.join(name)).map_err(|e| format!("copying {name}: {e}"))?;
    }
    // `libcuda.so` links to `libcuda.so.1`, as a driver installs it: cudarc opens the first name
    // and the emulated NVENC the second, and both must reach the same loaded library (one file,
    // one inode), or the process would hold two emulated CUDAs that know nothing of each other.
    std::os::unix::fs::symlink("libcuda.so.1", dir.join("libcuda.so"))
        .map_err(|e| format!("linking libcuda.so: {e}"))?;
    Ok(Libs {
        dir,
        encode_only_dir,
        cuda,
        encode,
        _keep: keep,
    })
}

/// Builds the emulators once per process and returns where they are.
///
/// # Panics
///
/// If cargo cannot build them (the message says why).
pub fn libs() -> &'static Libs {
    static LIBS: OnceLock<Result<Libs, String>> = OnceLock::new();
    match LIBS.get_or_init(build) {
        Ok(l) => l,
        Err(e) => panic!("nvenc emulator unavailable: {e}"),
    }
}

/// Whether the machine has a real CUDA driver (`libcuda.so.1` loads). Checked in a child process,
/// so the test process itself never loads a driver.
#[must_use]
pub fn real_cuda_available() -> bool {
    Command::new("sh")
        .args(["-c", "ldconfig -p 2>/dev/null | grep -q 'libcuda.so.1 '"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Env var set in processes started by [`EmuDriver::command_self`].
pub const CHILD_ENV: &str = "NVENC_EMU_CHILD";

/// Whether this process is a child started by [`EmuDriver::command_self`] (so the emulated driver
/// is the one the loader finds).
#[must_use]
pub fn in_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// How the emulated device should misbehave, and where it reports; makes child commands.
#[derive(Debug)]
pub struct EmuDriver {
    env: BTreeMap<String, String>,
    real_cuda: bool,
    faults: Vec<String>,
    report: PathBuf,
    _dir: tempfile::TempDir,
}

impl Default for EmuDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl EmuDriver {
    /// A well-behaved emulated device with a fresh report file.
    ///
    /// # Panics
    ///
    /// If no temporary folder can be created.
    #[must_use]
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nvenc-emu-run")
            .tempdir()
            .expect("temporary folder for the emulator report");
        Self {
            env: BTreeMap::new(),
            real_cuda: false,
            faults: Vec::new(),
            report: dir.path().join("report.txt"),
            _dir: dir,
        }
    }

    /// Makes the `nth` (1-based) call of `entry` (an NVENC or CUDA entry point name) return
    /// `status` instead of doing anything.
    #[must_use]
    pub fn fault(mut self, entry: &str, nth: u64, status: i32) -> Self {
        self.faults.push(format!("{entry}:{nth}:{status}"));
        self
    }

    /// Makes the `nth` (1-based) call of `entry` block until the child process exits, as a call
    /// into a wedged driver or GPU does (`NVENC_EMU_FAULTS=entry:nth:hang`).
    #[must_use]
    pub fn hang(mut self, entry: &str, nth: u64) -> Self {
        self.faults.push(format!("{entry}:{nth}:hang"));
        self
    }

    /// Makes the `nth` (1-based) call of `entry` block for `pause`, then run normally, as a call
    /// into a driver that recovers does (`NVENC_EMU_FAULTS=entry:nth:hang=MS`).
    #[must_use]
    pub fn hang_for(mut self, entry: &str, nth: u64, pause: std::time::Duration) -> Self {
        self.faults
            .push(format!("{entry}:{nth}:hang={}", pause.as_millis()));
        self
    }

    /// At most `n` concurrent sessions per device; the next open on that device fails with
    /// `NV_ENC_ERR_OUT_OF_MEMORY`.
    #[must_use]
    pub fn max_sessions(self, n: u32) -> Self {
        self.env("NVENC_EMU_MAX_SESSIONS", n.to_string())
    }

    /// The driver's maximum API version (what `NvEncodeAPIGetMaxSupportedVersion` reports).
    #[must_use]
    pub fn max_api(self, v: ApiVersion) -> Self {
        self.env("NVENC_EMU_MAX_API", format!("{}.{}", v.major, v.minor))
    }

    /// Session open fails with `NV_ENC_ERR_NO_ENCODE_DEVICE` (CUDA still works, as on an H100).
    #[must_use]
    pub fn no_device(self) -> Self {
        self.env("NVENC_EMU_NO_DEVICE", "1")
    }

    /// The devices `ordinals` have no NVENC engine: a session on one of them fails with
    /// `NV_ENC_ERR_NO_ENCODE_DEVICE`, their CUDA works (a mixed node).
    #[must_use]
    pub fn no_encoder_on(self, ordinals: &[u32]) -> Self {
        let list: Vec<String> = ordinals.iter().map(ToString::to_string).collect();
        self.env("NVENC_EMU_NO_ENCODER", list.join(","))
    }

    /// Session open fails with `NV_ENC_ERR_UNSUPPORTED_DEVICE`.
    #[must_use]
    pub fn unsupported_device(self) -> Self {
        self.env("NVENC_EMU_NO_DEVICE", "unsupported")
    }

    /// The GPU reports `NV_ENC_CAPS_SUPPORT_LOSSLESS_ENCODE` = 1 and encodes lossless tuning
    /// losslessly (by default the cap is 0 and lossless tuning is refused).
    #[must_use]
    pub fn lossless(self) -> Self {
        self.env("NVENC_EMU_LOSSLESS", "1")
    }

    /// The device's UUID (`cuDeviceGetUuid`): up to 16 bytes of text, zero-padded; a different
    /// value stands for a different GPU.
    #[must_use]
    pub fn gpu_uuid(self, uuid: &str) -> Self {
        self.env("NVENC_EMU_CUDA_UUID", uuid)
    }

    /// What `cuDriverGetVersion` reports (default 12040); a different value stands for a driver
    /// update.
    #[must_use]
    pub fn cuda_driver_version(self, version: i32) -> Self {
        self.env("NVENC_EMU_CUDA_DRIVER_VERSION", version.to_string())
    }

    /// `n` emulated CUDA devices (1 to 8) instead of one, each with its own primary context.
    #[must_use]
    pub fn cuda_devices(self, n: u32) -> Self {
        self.env("NVENC_EMU_CUDA_DEVICES", n.to_string())
    }

    /// `cuInit` fails with `CUDA_ERROR_NO_DEVICE`.
    #[must_use]
    pub fn no_cuda_device(self) -> Self {
        self.env("NVENC_EMU_CUDA_NO_DEVICE", "1")
    }

    /// Fast mode: no pixel read-back, no encoding, a fixed tiny access unit per frame.
    #[must_use]
    pub fn fast(self) -> Self {
        self.env("NVENC_EMU_FAST", "1")
    }

    /// Emulate only NVENC and let the child load the machine's real `libcuda` (GPU machines):
    /// surfaces then live in real device memory and the emulator reads them through the real
    /// driver. See [`real_cuda_available`].
    #[must_use]
    pub fn real_cuda(mut self) -> Self {
        self.real_cuda = true;
        self
    }

    /// Any other variable for the child.
    #[must_use]
    pub fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }

    /// Uses `path` as the report file (default: a fresh file in a private temporary folder).
    #[must_use]
    pub fn report_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.report = path.into();
        self
    }

    /// The report file the child's emulators append to.
    #[must_use]
    pub fn report_path(&self) -> &Path {
        &self.report
    }

    /// A command for `program` that runs against the emulated driver pair.
    #[must_use]
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let libs = libs();
        let mut c = Command::new(program);
        let dir = if self.real_cuda {
            let mut path =
                std::env::split_paths(&std::env::var_os("LD_LIBRARY_PATH").unwrap_or_default())
                    .collect::<Vec<_>>();
            path.insert(0, libs.encode_only_dir.clone());
            std::env::join_paths(path).unwrap_or_else(|_| libs.encode_only_dir.clone().into())
        } else {
            libs.dir.clone().into()
        };
        c.env("LD_LIBRARY_PATH", dir)
            .env("NVENC_EMU_REPORT", &self.report)
            .env_remove("NVENC_LIBRARY_PATH")
            .env_remove("NVENC_EMU_FAULTS")
            // The emulated GPU's capabilities stay out of the user's NVENC caps cache (a test that
            // wants the cache sets this with `env`).
            .env("NVENC_CAPS_CACHE", "off");
        if !self.faults.is_empty() {
            c.env("NVENC_EMU_FAULTS", self.faults.join(","));
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// A command that re-runs the current test binary, filtered to exactly `test` (its full
    /// path inside the binary, e.g. `"backend_encodes"` or `"module::backend_encodes"`), against
    /// the emulated driver, with [`CHILD_ENV`] set so the test knows it is the child (see
    /// [`in_child`]). This runs a test body in a process whose driver is the emulator, without a
    /// separate binary.
    ///
    /// # Panics
    ///
    /// If the path of the running executable cannot be found.
    #[must_use]
    pub fn command_self(&self, test: &str) -> Command {
        let exe = std::env::current_exe().expect("path of the running test binary");
        let mut c = self.command(exe);
        // `--include-ignored`: a child half is `#[ignore]`d, so that the test binary's own run
        // lists it as ignored instead of counting its empty run as a pass.
        c.args([
            test,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1");
        c
    }

    /// Parses what the child's emulators reported (call after the child exited).
    #[must_use]
    pub fn report(&self) -> Report {
        Report::parse(&std::fs::read_to_string(&self.report).unwrap_or_default())
    }
}

/// One recorded violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// `cuda` or `encode`.
    pub lib: String,
    /// The entry point, e.g. `nvEncLockBitstream`.
    pub entry: String,
    /// Why it was refused.
    pub reason: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}: {}", self.lib, self.entry, self.reason)
    }
}

/// What the emulators reported for one child process.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every line, as written.
    pub lines: Vec<String>,
    /// Violations, in order.
    pub violations: Vec<Violation>,
    /// Injected faults that fired (`entry=.. call=.. status=..`).
    pub faults: Vec<String>,
    /// The last `live_handles` counts per library (`cuda`, `encode`).
    pub live: BTreeMap<String, BTreeMap<String, u64>>,
    /// How often each entry point was called, per library (written at exit): the list to build
    /// a fault matrix from.
    pub calls: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Report {
    /// Parses report text.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let mut r = Self::default();
        for line in text.lines() {
            r.lines.push(line.to_owned());
            let Some((lib, rest)) = line.split_once(' ') else {
                continue;
            };
            if let Some(v) = rest.strip_prefix("violation entry=") {
                let (entry, reason) = v.split_once(" reason=").unwrap_or((v, ""));
                r.violations.push(Violation {
                    lib: lib.into(),
                    entry: entry.into(),
                    reason: reason.into(),
                });
            } else if let Some(v) = rest.strip_prefix("fault ") {
                r.faults.push(v.into());
            } else if let Some(v) = rest.strip_prefix("calls") {
                let counts = v
                    .split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
                    .collect();
                r.calls.insert(lib.into(), counts);
            } else if let Some(v) = rest.strip_prefix("live_handles ") {
                let counts = v
                    .split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
                    .collect();
                r.live.insert(lib.into(), counts);
            }
        }
        r
    }

    /// Nanoseconds and bytes of the copies the CUDA emulator carried out on the CPU, which a GPU's
    /// copy engine does without it (the `cuda copy_engine ns=.. bytes=..` lines, summed over the
    /// processes that wrote to this report).
    #[must_use]
    pub fn copy_engine(&self) -> (u64, u64) {
        let mut total = (0, 0);
        for line in &self.lines {
            let Some(rest) = line.strip_prefix("cuda copy_engine ") else {
                continue;
            };
            for field in rest.split_whitespace() {
                match field.split_once('=') {
                    Some(("ns", v)) => total.0 += v.parse::<u64>().unwrap_or(0),
                    Some(("bytes", v)) => total.1 += v.parse::<u64>().unwrap_or(0),
                    _ => {}
                }
            }
        }
        total
    }

    /// Non-zero live-handle counts at the end (`"encode bitstream_buffers=2"`, ...). The CUDA
    /// primary context counts as a leak too: a client must release what it retained.
    #[must_use]
    pub fn leaks(&self) -> Vec<String> {
        self.live
            .iter()
            .flat_map(|(lib, m)| {
                m.iter()
                    .filter(|(_, &n)| n > 0)
                    .map(move |(k, n)| format!("{lib} {k}={n}"))
            })
            .collect()
    }

    /// Violations recorded for `entry`.
    #[must_use]
    pub fn violations_of(&self, entry: &str) -> Vec<&Violation> {
        self.violations
            .iter()
            .filter(|v| v.entry == entry)
            .collect()
    }

    /// Panics with the details unless there were no violations and no leaks, and both libraries
    /// that were loaded reported final counts.
    ///
    /// # Panics
    ///
    /// As described.
    pub fn assert_clean(&self) {
        let v: Vec<String> = self.violations.iter().map(ToString::to_string).collect();
        assert!(v.is_empty(), "emulator violations:\n{}", v.join("\n"));
        let leaks = self.leaks();
        assert!(leaks.is_empty(), "leaked handles: {leaks:?}");
        assert!(
            !self.live.is_empty(),
            "the emulators wrote no live_handles line; was the emulated driver loaded?\n{}",
            self.lines.join("\n")
        );
    }
}

/// Helpers for checking encoded video with the system's `ffmpeg`.
pub mod video {
    use std::path::Path;
    use std::process::Command;

    /// Whether `ffmpeg` is on `PATH` and has the `h264_nvenc` encoder. Tests that need it say
    /// why they skip (on standard error, past the test harness's capture, so the log shows it),
    /// and fail instead when `NVENC_EMU_REQUIRE_FFMPEG=1` or `CI=true`.
    #[must_use]
    pub fn ffmpeg_with_nvenc() -> bool {
        let ok = Command::new("ffmpeg")
            .args(["-hide_banner", "-encoders"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("h264_nvenc"));
        if !ok {
            assert!(
                std::env::var("NVENC_EMU_REQUIRE_FFMPEG").is_err()
                    && !std::env::var("CI").is_ok_and(|v| v == "true"),
                "ffmpeg with h264_nvenc is not available, and NVENC_EMU_REQUIRE_FFMPEG or \
                 CI=true requires it"
            );
            let _ = std::io::Write::write_all(
                &mut std::io::stderr().lock(),
                b"SKIPPED: ffmpeg with h264_nvenc is not installed (Debian: apt install ffmpeg)\n",
            );
        }
        ok
    }

    /// Decodes `input` (any format ffmpeg reads) to raw 8-bit 4:2:0 frames.
    ///
    /// # Panics
    ///
    /// If ffmpeg fails.
    #[must_use]
    pub fn decode_yuv420(input: &Path) -> Vec<u8> {
        let out = Command::new("ffmpeg")
            .args(["-hide_banner", "-v", "error", "-i"])
            .arg(input)
            .args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
            .output()
            .expect("run ffmpeg");
        assert!(
            out.status.success(),
            "ffmpeg could not decode {}: {}",
            input.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// One decoded frame as `ffprobe -show_frames` describes it, in display order.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ProbedFrame {
        /// `key_frame`: an IDR (or a recovery point) starts here.
        pub key: bool,
        /// `pict_type`: `I`, `P` or `B`.
        pub pict_type: String,
    }

    /// What `ffprobe` says about the first video stream of a file.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ProbedStream {
        /// `profile`, e.g. `High` or `Constrained Baseline`.
        pub profile: String,
        /// `level` times ten (41 for 4.1).
        pub level: i64,
        /// `has_b_frames`: the decoder's reorder depth (0 without B-frames).
        pub has_b_frames: i64,
    }

    fn ffprobe_json(input: &Path, entries: &str) -> serde_json::Value {
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", entries, "-of", "json"])
            .arg(input)
            .output()
            .expect("run ffprobe");
        assert!(
            out.status.success(),
            "ffprobe failed on {}: {}",
            input.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("ffprobe writes JSON")
    }

    /// Every frame of `input`, in display order (`ffprobe -show_frames`).
    ///
    /// # Panics
    ///
    /// If ffprobe fails.
    #[must_use]
    pub fn probe_frames(input: &Path) -> Vec<ProbedFrame> {
        let v = ffprobe_json(input, "frame=key_frame,pict_type");
        v["frames"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| ProbedFrame {
                key: f["key_frame"].as_i64() == Some(1),
                pict_type: f["pict_type"].as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    }

    /// The first video stream's profile, level and reorder depth (`ffprobe -show_streams`).
    ///
    /// # Panics
    ///
    /// If ffprobe fails or finds no stream.
    #[must_use]
    pub fn probe_stream(input: &Path) -> ProbedStream {
        let v = ffprobe_json(input, "stream=profile,level,has_b_frames");
        let st = &v["streams"][0];
        ProbedStream {
            profile: st["profile"].as_str().expect("a video stream").to_owned(),
            level: st["level"].as_i64().unwrap_or(-1),
            has_b_frames: st["has_b_frames"].as_i64().unwrap_or(-1),
        }
    }

    /// `entropy_coding_mode_flag` of the first PPS in an Annex B H.264 file: `true` is CABAC,
    /// `false` CAVLC. ffprobe does not show it, so this reads the PPS itself: its first two
    /// fields are `ue(v)` ids, then the flag (H.264 7.3.2.2).
    ///
    /// # Panics
    ///
    /// If the file cannot be read or has no PPS.
    #[must_use]
    pub fn cabac(annexb: &Path) -> bool {
        let data = std::fs::read(annexb).expect("read the stream");
        let pps = data
            .windows(4)
            .position(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == 8)
            .expect("a PPS");
        // Bits after the NAL header; 16 bytes are plenty for two small ue(v) and one bit.
        let bytes = &data[pps + 4..(pps + 20).min(data.len())];
        let mut bit = 0usize;
        let mut read = |n: usize| -> u32 {
            let mut v = 0;
            for _ in 0..n {
                let b = (bytes[bit / 8] >> (7 - bit % 8)) & 1;
                v = (v << 1) | u32::from(b);
                bit += 1;
            }
            v
        };
        for _ in 0..2 {
            let mut zeros = 0;
            while read(1) == 0 {
                zeros += 1;
            }
            read(zeros);
        }
        read(1) == 1
    }

    /// Per-frame PSNR (dB, over all three planes) of two raw 4:2:0 clips of `w`x`h`.
    ///
    /// # Panics
    ///
    /// If the clips have different lengths or are not whole frames.
    #[must_use]
    pub fn psnr_yuv420(a: &[u8], b: &[u8], w: usize, h: usize) -> Vec<f64> {
        let frame = w * h + 2 * w.div_ceil(2) * h.div_ceil(2);
        assert_eq!(a.len(), b.len(), "clips differ in length");
        assert_eq!(a.len() % frame, 0, "not a whole number of frames");
        a.chunks(frame)
            .zip(b.chunks(frame))
            .map(|(x, y)| {
                let se: f64 = x
                    .iter()
                    .zip(y)
                    .map(|(&p, &q)| (f64::from(p) - f64::from(q)).powi(2))
                    .sum();
                let mse = se / frame as f64;
                if mse == 0.0 {
                    99.0
                } else {
                    10.0 * (255.0f64 * 255.0 / mse).log10()
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_parses() {
        let r = Report::parse(
            "encode violation entry=nvEncLockBitstream reason=out of order\n\
             cuda fault entry=cuMemAlloc_v2 call=1 status=2\n\
             cuda live_handles contexts=1 allocations=0\n\
             cuda live_handles contexts=0 allocations=0 at=exit\n",
        );
        assert_eq!(r.violations.len(), 1);
        assert_eq!(r.violations[0].entry, "nvEncLockBitstream");
        assert_eq!(r.violations[0].reason, "out of order");
        assert_eq!(r.faults, ["entry=cuMemAlloc_v2 call=1 status=2"]);
        assert!(r.leaks().is_empty());
    }
}
