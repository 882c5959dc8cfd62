//! Which encoders this machine can use, and why each of the others cannot.
//!
//! [`detect`] checks, in this order: the NVIDIA driver (`nvidia-smi` on `PATH`, and NVML through
//! `nvml-wrapper`, loaded at run time: GPU names, UUIDs, driver version, encoder utilization and
//! capacity); the CUDA driver (without panicking where it is missing); NVENC itself, by a probe
//! session on every CUDA device ([`crate::nvenc::probe`], cached per device and driver); and
//! FFmpeg's encoders (`ffmpeg -hide_banner -encoders`), with a one-frame probe encode of every
//! hardware encoder listed, all at once and under one time limit, because Debian's ffmpeg lists `h264_nvenc` and
//! `h264_qsv` on machines that have neither. The report is computed once per process.
//!
//! Every ffmpeg run is bounded: each query ([`FFMPEG_QUERY_LIMIT`], reading at most
//! [`FFMPEG_QUERY_CAP`] bytes) and the probe encodes ([`FFMPEG_PROBE_LIMIT`] for all) are killed, with their
//! whole process group, when it runs past its limit. An ffmpeg that hangs, floods its output or
//! fails makes the ffmpeg backends unavailable with that reason; it never stalls detection for
//! longer than those limits, and x264 and NVENC are judged without it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backends::{Probe, BACKENDS};
use crate::encoder::codecs;
use crate::encoder::{Codec, EncoderConfig, EncoderKind, FfmpegFamily, VideoEncoder};
use crate::ffmpeg::{FfmpegEncoder, FfmpegOptions};
use crate::nvenc::{NvencCaps, NvencOptions};

/// Auto-selection's order, best first (the backend table's, re-exported here where detection's
/// report follows it).
pub use crate::backends::PRIORITY;

/// One encoder for one codec, and whether it can be used here.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Candidate {
    /// The encoder.
    #[serde(serialize_with = "by_name")]
    pub kind: EncoderKind,
    /// The codec it was checked for.
    pub codec: Codec,
    /// Whether it can be opened here.
    pub available: bool,
    /// Why not, when it cannot.
    pub reason: Option<String>,
}

/// One NVIDIA GPU, as NVML reports it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct NvidiaGpu {
    /// NVML index.
    pub index: u32,
    /// Marketing name.
    pub name: String,
    /// GPU UUID.
    pub uuid: String,
    /// Encoder utilization, percent, over NVML's last sampling period.
    pub encoder_utilization: Option<u32>,
    /// Remaining H.264 encoder capacity, percent.
    pub encoder_capacity_h264: Option<u32>,
}

/// One CUDA device, as NVENC placement sees it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct CudaGpu {
    /// CUDA device ordinal ([`GpuChoice::Index`](crate::nvenc::GpuChoice::Index)).
    pub ordinal: usize,
    /// Its UUID as `nvidia-smi -L` prints it, where CUDA could say.
    pub uuid: Option<String>,
    /// Whether an NVENC session opened on it.
    pub nvenc: bool,
    /// The codecs its NVENC encodes (`h264`, `hevc`).
    pub codecs: Vec<Codec>,
    /// Why NVENC does not encode on it, when it does not.
    pub reason: Option<String>,
}

/// What was found of the NVIDIA driver stack.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct NvidiaReport {
    /// Where `nvidia-smi` is, if on `PATH`.
    pub nvidia_smi: Option<PathBuf>,
    /// Driver version from NVML.
    pub driver_version: Option<String>,
    /// GPUs from NVML.
    pub gpus: Vec<NvidiaGpu>,
    /// Why NVML could not be used, if it could not.
    pub nvml_error: Option<String>,
    /// CUDA devices, if the CUDA driver loaded.
    pub cuda_devices: Option<i32>,
    /// Why CUDA could not be used, if it could not.
    pub cuda_error: Option<String>,
    /// One NVENC probe per CUDA device: its caps, or why the session did not open.
    pub nvenc: Vec<Result<NvencCaps, String>>,
    /// Every CUDA device: its UUID, whether NVENC encodes on it and which codecs, or why not
    /// (the GPUs NVENC placement chooses among; a GPU without NVENC in a mixed node says so).
    pub cuda_gpus: Vec<CudaGpu>,
    /// Why NVENC was not probed at all (no driver library, no CUDA), if it was not.
    pub nvenc_error: Option<String>,
}

/// What was found of FFmpeg.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct FfmpegReport {
    /// The program run.
    pub program: PathBuf,
    /// Its version line, if it ran.
    pub version: Option<String>,
    /// The encoders it lists of the families this crate drives, every codec
    /// ([`crate::encoder::codecs::ffmpeg_name`]).
    pub encoders: Vec<String>,
    /// Why it could not be run, if it could not.
    pub error: Option<String>,
}

/// Everything [`detect`] found.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DetectionReport {
    /// Every encoder that [`EncoderChoice::Auto`](crate::EncoderChoice::Auto) tries, for each
    /// codec it encodes: codec by codec ([`Codec::ALL`]), each in [`PRIORITY`] order, with its
    /// availability.
    pub candidates: Vec<Candidate>,
    /// The NVIDIA side.
    pub nvidia: NvidiaReport,
    /// The FFmpeg side.
    pub ffmpeg: FfmpegReport,
}

impl DetectionReport {
    /// The encoders that can be used for H.264, best first ([`DetectionReport::available_for`]
    /// for another codec).
    #[must_use]
    pub fn available(&self) -> Vec<EncoderKind> {
        self.available_for(Codec::H264)
    }

    /// The encoders that can be used for `codec`, best first.
    #[must_use]
    pub fn available_for(&self, codec: Codec) -> Vec<EncoderKind> {
        self.candidates
            .iter()
            .filter(|c| c.available && c.codec == codec)
            .map(|c| c.kind)
            .collect()
    }

    /// The candidate entry of `kind` for `codec`; `None` for a backend that Auto does not try or
    /// that does not encode `codec`.
    #[must_use]
    pub fn candidate(&self, kind: EncoderKind, codec: Codec) -> Option<&Candidate> {
        self.candidates
            .iter()
            .find(|c| c.kind == kind && c.codec == codec)
    }

    /// The codecs `kind` encodes here.
    #[must_use]
    pub fn codecs_of(&self, kind: EncoderKind) -> Vec<Codec> {
        self.candidates
            .iter()
            .filter(|c| c.available && c.kind == kind)
            .map(|c| c.codec)
            .collect()
    }
}

fn by_name<S: serde::Serializer>(kind: &EncoderKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.name())
}

/// The H.264 encoders available on this machine, best first (see [`detect`];
/// [`DetectionReport::available_for`] for another codec).
#[must_use]
pub fn detect_available_encoders() -> Vec<EncoderKind> {
    detect().available()
}

/// The detection report for this machine, computed on the first call and cached.
pub fn detect() -> &'static DetectionReport {
    static REPORT: OnceLock<DetectionReport> = OnceLock::new();
    REPORT.get_or_init(|| detect_with(Path::new("ffmpeg")))
}

/// Runs every check now, with `ffmpeg` as the FFmpeg program. Uncached.
#[must_use]
pub fn detect_with(ffmpeg: &Path) -> DetectionReport {
    let nvidia = nvidia_report();
    let ffmpeg = ffmpeg_report(ffmpeg);
    let probes = probe_listed(&ffmpeg);
    let mut candidates = Vec::new();
    for &codec in Codec::ALL {
        for backend in BACKENDS
            .iter()
            .filter(|b| b.auto && codecs::encodes(b.kind, codec))
        {
            let kind = backend.kind;
            let verdict: Result<(), String> = match backend.probe {
                Probe::NvencSession => nvenc_verdict(&nvidia, codec),
                Probe::FfmpegEncode(family) => ffmpeg_verdict(&ffmpeg, &probes, family, codec),
                Probe::Open => open_verdict(kind, codec),
            };
            match &verdict {
                Ok(()) => tracing::debug!(encoder = %kind, %codec, "available"),
                Err(reason) => tracing::debug!(encoder = %kind, %codec, reason, "unavailable"),
            }
            candidates.push(Candidate {
                kind,
                codec,
                available: verdict.is_ok(),
                reason: verdict.err(),
            });
        }
    }
    DetectionReport {
        candidates,
        nvidia,
        ffmpeg,
    }
}

fn nvenc_verdict(nvidia: &NvidiaReport, codec: Codec) -> Result<(), String> {
    if let Some(e) = &nvidia.nvenc_error {
        return Err(e.clone());
    }
    let mut reasons = Vec::new();
    for (device, probe) in nvidia.nvenc.iter().enumerate() {
        match probe {
            Ok(caps) if caps.encodes(codec) => return Ok(()),
            Ok(_) => reasons.push(format!(
                "GPU {device}: NVENC lists no {} codec",
                codec.display_name()
            )),
            Err(e) => reasons.push(format!("GPU {device}: {e}")),
        }
    }
    if reasons.is_empty() {
        reasons.push("no CUDA device to probe".into());
    }
    Err(reasons.join("; "))
}

fn ffmpeg_verdict(
    ffmpeg: &FfmpegReport,
    probes: &HashMap<(FfmpegFamily, Codec), Result<(), String>>,
    family: FfmpegFamily,
    codec: Codec,
) -> Result<(), String> {
    if let Some(e) = &ffmpeg.error {
        return Err(e.clone());
    }
    let Some(name) = codecs::ffmpeg_name(family, codec) else {
        return Err(format!(
            "FFmpeg has no {} encoder of this family",
            codec.display_name()
        ));
    };
    if !ffmpeg.encoders.iter().any(|e| e == name) {
        return Err(format!("{} does not list {name}", ffmpeg.program.display()));
    }
    probes
        .get(&(family, codec))
        .cloned()
        .unwrap_or_else(|| Err(format!("{name} was listed but not probed")))
}

/// The probe encodes of every hardware encoder ffmpeg lists (the ones auto-selection would try),
/// run at once, with [`FFMPEG_PROBE_LIMIT`] for all of them together: detection waits at most
/// that long whatever number of listed encoders hang. A probe still running at the limit is
/// reported as not finished; its thread ends within its own time limits and kills its ffmpeg's
/// process group then.
fn probe_listed(ffmpeg: &FfmpegReport) -> HashMap<(FfmpegFamily, Codec), Result<(), String>> {
    let mut verdicts = HashMap::new();
    if ffmpeg.error.is_some() {
        return verdicts;
    }
    let listed: Vec<(FfmpegFamily, Codec)> = BACKENDS
        .iter()
        .filter(|b| b.auto)
        .filter_map(|b| match b.probe {
            Probe::FfmpegEncode(family) => Some(family),
            _ => None,
        })
        .flat_map(|family| Codec::ALL.iter().map(move |&codec| (family, codec)))
        .filter(|&(family, codec)| {
            codecs::ffmpeg_name(family, codec)
                .is_some_and(|name| ffmpeg.encoders.iter().any(|e| e == name))
        })
        .collect();
    let (sender, results) = mpsc::channel();
    for &codec in &listed {
        let sender = sender.clone();
        let program = ffmpeg.program.clone();
        let spawned = std::thread::Builder::new()
            .name("detect-probe".into())
            .spawn(move || {
                let _ = sender.send((codec, probe_encode(&program, codec)));
            });
        if let Err(e) = spawned {
            verdicts.insert(codec, Err(format!("cannot start the probe: {e}")));
        }
    }
    drop(sender);
    let deadline = Instant::now() + FFMPEG_PROBE_LIMIT;
    while verdicts.len() < listed.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match results.recv_timeout(left) {
            Ok((codec, verdict)) => {
                verdicts.insert(codec, verdict);
            }
            Err(_) => break,
        }
    }
    for codec in listed {
        verdicts.entry(codec).or_insert_with(|| {
            Err(format!(
                "the one-frame probe encode with {} did not finish within {FFMPEG_PROBE_LIMIT:?}",
                codecs::ffmpeg_name(codec.0, codec.1).unwrap_or("ffmpeg")
            ))
        });
    }
    verdicts
}

/// Encodes one frame with `family`'s encoder of `codec` through ffmpeg, within a time limit.
fn probe_encode(program: &Path, (family, codec): (FfmpegFamily, Codec)) -> Result<(), String> {
    let config = EncoderConfig::new(256, 256).with_codec(codec);
    let options = FfmpegOptions::new(family)
        .with_program(program)
        .with_timeout(FFMPEG_PROBE_LIMIT);
    let frame = vec![128u8; config.validate().map_err(|e| e.to_string())?];
    let mut encoder = FfmpegEncoder::new(&config, &options).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    encoder
        .encode_frame(&frame, &mut out)
        .map_err(|e| one_line(&e.to_string()))?;
    encoder
        .flush(&mut out)
        .map_err(|e| one_line(&e.to_string()))?;
    if out.len() == 1 {
        Ok(())
    } else {
        Err(format!(
            "a one-frame probe encode produced {} frames",
            out.len()
        ))
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Opens `kind` for `codec` once at a small size: for the in-process backends that is a full
/// check.
fn open_verdict(kind: EncoderKind, codec: Codec) -> Result<(), String> {
    let config = EncoderConfig::new(64, 64).with_codec(codec);
    crate::backends::open(kind, &config, &NvencOptions::default())
        .map(drop)
        .map_err(|e| e.to_string())
}

fn nvidia_report() -> NvidiaReport {
    let mut report = NvidiaReport {
        nvidia_smi: find_on_path("nvidia-smi"),
        driver_version: None,
        gpus: Vec::new(),
        nvml_error: None,
        cuda_devices: None,
        cuda_gpus: Vec::new(),
        cuda_error: None,
        nvenc: Vec::new(),
        nvenc_error: None,
    };
    match nvml_wrapper::Nvml::init() {
        Ok(nvml) => {
            report.driver_version = nvml.sys_driver_version().ok();
            let count = nvml.device_count().unwrap_or(0);
            for index in 0..count {
                let Ok(device) = nvml.device_by_index(index) else {
                    continue;
                };
                report.gpus.push(NvidiaGpu {
                    index,
                    name: device.name().unwrap_or_default(),
                    uuid: device.uuid().unwrap_or_default(),
                    encoder_utilization: device.encoder_utilization().ok().map(|u| u.utilization),
                    encoder_capacity_h264: device
                        .encoder_capacity(nvml_wrapper::enum_wrappers::device::EncoderType::H264)
                        .ok(),
                });
            }
        }
        Err(e) => report.nvml_error = Some(format!("NVML (libnvidia-ml) unavailable: {e}")),
    }
    match crate::cuda::available() {
        Ok(()) => match crate::cuda::device_count() {
            Ok(n) => report.cuda_devices = Some(i32::try_from(n).unwrap_or(i32::MAX)),
            Err(e) => report.cuda_error = Some(e.to_string()),
        },
        Err(e) => report.cuda_error = Some(e.to_string()),
    }
    if let Err(e) = nvenc_sys::load() {
        report.nvenc_error = Some(e.to_string());
    } else if let Some(e) = &report.cuda_error {
        report.nvenc_error = Some(format!("NVENC needs CUDA: {e}"));
    } else {
        for device in 0..report.cuda_devices.unwrap_or(0).max(0) as usize {
            report
                .nvenc
                .push(crate::nvenc::probe(device).map_err(|e| e.to_string()));
        }
    }
    if report.cuda_error.is_none() {
        let deadline = NvencOptions::default().open_timeout;
        let uuids = crate::nvenc::cuda_gpus(deadline).unwrap_or_default();
        report.cuda_gpus = uuids
            .into_iter()
            .map(|(ordinal, uuid)| {
                let probe = report.nvenc.get(ordinal);
                let (nvenc, codecs, reason) = match (probe, &report.nvenc_error) {
                    (Some(Ok(caps)), _) if !caps.codecs().is_empty() => (true, caps.codecs(), None),
                    (Some(Ok(_)), _) => (
                        false,
                        Vec::new(),
                        Some("NVENC lists none of the codecs this crate encodes".into()),
                    ),
                    (Some(Err(e)), _) => (false, Vec::new(), Some(e.clone())),
                    (None, Some(e)) => (false, Vec::new(), Some(e.clone())),
                    (None, None) => (false, Vec::new(), Some("not probed".into())),
                };
                CudaGpu {
                    ordinal,
                    uuid,
                    nvenc,
                    codecs,
                    reason,
                }
            })
            .collect();
    }
    report
}

/// The longest detection waits for `ffmpeg -encoders` or `ffmpeg -version` (each) before it kills
/// ffmpeg and reports the ffmpeg backends unavailable. A working ffmpeg answers in well under a
/// second.
pub const FFMPEG_QUERY_LIMIT: Duration = Duration::from_secs(5);

/// The most output detection reads from one ffmpeg query (ffmpeg's own list is about 10 KB);
/// a program that writes more is killed and reported.
pub const FFMPEG_QUERY_CAP: usize = 1 << 20;

/// The time limit of the one-frame probe encodes of the hardware encoders ffmpeg lists: they run
/// at once, and detection waits at most this long for all of them.
pub const FFMPEG_PROBE_LIMIT: Duration = Duration::from_secs(10);

fn ffmpeg_report(program: &Path) -> FfmpegReport {
    let mut report = FfmpegReport {
        program: program.to_path_buf(),
        version: None,
        encoders: Vec::new(),
        error: None,
    };
    let run = |args: &[&str]| -> Result<String, String> {
        crate::ffmpeg::child::run_capped(program, args, FFMPEG_QUERY_LIMIT, FFMPEG_QUERY_CAP)
            .map_err(|e| {
                format!(
                    "ffmpeg backends unavailable: `{} {}` failed: {e}",
                    program.display(),
                    args.join(" ")
                )
            })
    };
    match run(&["-hide_banner", "-encoders"]) {
        Ok(text) => {
            report.encoders = text
                .lines()
                .filter_map(|l| {
                    let mut words = l.split_whitespace();
                    let flags = words.next()?;
                    let name = words.next()?;
                    (flags.starts_with('V') && codecs::ffmpeg_family_of(name).is_some())
                        .then(|| name.to_owned())
                })
                .collect();
            report.version = run(&["-version"])
                .ok()
                .and_then(|v| v.lines().next().map(str::to_owned));
        }
        Err(e) => report.error = Some(e),
    }
    report
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
