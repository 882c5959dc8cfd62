//! `encoder_gpu_utilization`: the NVENC engine utilization of each GPU, read from NVML by one
//! sampler per process.
//!
//! The sampler runs on a thread of its own while at least one [`Metered`](super::Metered)
//! encoder runs on NVENC (direct or through FFmpeg's `h264_nvenc`), takes one reading every
//! [`SAMPLE_INTERVAL`], and stops within one interval after the last such encoder is dropped or
//! has failed over to a non-GPU encoder. Where NVML cannot be loaded (no NVIDIA driver), the
//! gauge is never emitted and the reason is logged once, at `info` level; [`gpu_sampler_state`]
//! says which case holds. The sampling thread records into the global recorder (it has no
//! thread-local one).
//!
//! Every GPU NVML lists is read, labelled with its NVML index: a session's CUDA device ordinal is
//! not mapped to an NVML index (the two orders differ unless `CUDA_DEVICE_ORDER=PCI_BUS_ID`), so
//! with several GPUs the dashboard shows them all. A GPU for which NVML returns an error (such as
//! `NotSupported`) gets no gauge.
//!
//! The reading itself sits behind [`GpuUtilizationSource`], so a [`GpuSampler`] can be driven by
//! a fake source in tests; [`NvmlSource`] is the real one.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ::metrics::Label;

use super::names;

/// How often the process-wide sampler reads NVML.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// One GPU's reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuSample {
    /// The GPU's NVML index (the `gpu` label).
    pub gpu: u32,
    /// NVENC engine utilization over the driver's last sampling period, in percent (0-100).
    pub percent: u32,
}

/// Where NVENC utilization readings come from: NVML ([`NvmlSource`]), or a fake in tests.
pub trait GpuUtilizationSource: Send {
    /// Appends one reading per GPU that has an encode engine to `out`.
    ///
    /// # Errors
    /// A message saying why no reading could be taken; the sampler logs it once and emits
    /// nothing for this round.
    fn sample(&mut self, out: &mut Vec<GpuSample>) -> Result<(), String>;
}

/// NVENC utilization from NVML (`libnvidia-ml`, loaded at run time by `nvml-wrapper`).
pub struct NvmlSource {
    nvml: nvml_wrapper::Nvml,
}

impl std::fmt::Debug for NvmlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlSource").finish_non_exhaustive()
    }
}

impl NvmlSource {
    /// Loads and initializes NVML.
    ///
    /// # Errors
    /// Why NVML is unavailable (no `libnvidia-ml`, no driver), as a message for the log.
    pub fn init() -> Result<Self, String> {
        nvml_wrapper::Nvml::init()
            .map(|nvml| NvmlSource { nvml })
            .map_err(|e| format!("NVML (libnvidia-ml) unavailable: {e}"))
    }
}

impl NvmlSource {
    /// One NVML handle for the process's placement readings, loaded on first use (`None`, for
    /// good, where NVML is unavailable): loading `libnvidia-ml` and `nvmlInit` cost tens of
    /// milliseconds, once rather than at every session open.
    pub(crate) fn shared() -> Option<&'static NvmlSource> {
        static SHARED: std::sync::OnceLock<Option<NvmlSource>> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| NvmlSource::init().ok()).as_ref()
    }

    /// NVENC utilization of every GPU NVML can read it for, by the GPU's UUID as NVML prints it
    /// (`GPU-…`): how NVENC placement tells, among GPUs with as many of this process's sessions,
    /// the one other processes load least (NVML's index is not the CUDA ordinal; the UUID is
    /// what both share).
    #[must_use]
    pub fn encoder_utilization_by_uuid(&self) -> std::collections::HashMap<String, u32> {
        let mut by_uuid = std::collections::HashMap::new();
        let count = self.nvml.device_count().unwrap_or(0);
        for gpu in 0..count {
            let Ok(device) = self.nvml.device_by_index(gpu) else {
                continue;
            };
            if let (Ok(uuid), Ok(u)) = (device.uuid(), device.encoder_utilization()) {
                by_uuid.insert(uuid.to_ascii_lowercase(), u.utilization);
            }
        }
        by_uuid
    }
}

impl GpuUtilizationSource for NvmlSource {
    fn sample(&mut self, out: &mut Vec<GpuSample>) -> Result<(), String> {
        let count = self
            .nvml
            .device_count()
            .map_err(|e| format!("nvmlDeviceGetCount failed: {e}"))?;
        let mut first_error = None;
        for gpu in 0..count {
            let reading = self
                .nvml
                .device_by_index(gpu)
                .and_then(|device| device.encoder_utilization());
            match reading {
                Ok(u) => out.push(GpuSample {
                    gpu,
                    percent: u.utilization,
                }),
                // No reading for this GPU (NotSupported, for one): no gauge for it.
                Err(e) => {
                    first_error.get_or_insert_with(|| {
                        format!("nvmlDeviceGetEncoderUtilization(GPU {gpu}) failed: {e}")
                    });
                }
            }
        }
        match (out.is_empty(), first_error) {
            (true, Some(e)) => Err(e),
            (true, None) => Err("NVML reports no GPU".into()),
            _ => Ok(()),
        }
    }
}

/// Turns readings into `encoder_gpu_utilization` gauges. The process-wide sampler drives one
/// over [`NvmlSource`]; tests drive one over a fake, in their own recorder.
pub struct GpuSampler {
    source: Box<dyn GpuUtilizationSource>,
    readings: Vec<GpuSample>,
    logged_failure: bool,
}

impl std::fmt::Debug for GpuSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuSampler")
            .field("readings", &self.readings)
            .finish_non_exhaustive()
    }
}

impl GpuSampler {
    /// A sampler over `source`.
    #[must_use]
    pub fn new(source: Box<dyn GpuUtilizationSource>) -> Self {
        GpuSampler {
            source,
            readings: Vec::new(),
            logged_failure: false,
        }
    }

    /// Takes one reading and sets `encoder_gpu_utilization{encoder_type="nvenc", gpu}` for each
    /// GPU, in the recorder of the calling thread. Returns how many GPUs were read.
    ///
    /// # Errors
    /// The source's message when it could not read; nothing is set then, and the first failure
    /// is logged (at `info`), later ones are not.
    pub fn sample_once(&mut self) -> Result<usize, String> {
        self.readings.clear();
        if let Err(reason) = self.source.sample(&mut self.readings) {
            if !self.logged_failure {
                self.logged_failure = true;
                tracing::info!(%reason, "no NVENC utilization reading; encoder_gpu_utilization is not emitted");
            }
            return Err(reason);
        }
        for reading in &self.readings {
            let labels = vec![
                Label::from_static_parts("encoder_type", "nvenc"),
                Label::new("gpu", reading.gpu.to_string()),
            ];
            ::metrics::gauge!(names::GPU_UTILIZATION, labels).set(f64::from(reading.percent));
        }
        Ok(self.readings.len())
    }
}

/// What the process-wide sampler is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GpuSamplerState {
    /// No encoder runs on a GPU; no thread.
    Idle,
    /// The thread was started and is loading NVML.
    Starting,
    /// Sampling every [`SAMPLE_INTERVAL`].
    Running,
    /// NVML could not be used (the reason, as logged); the gauge is never emitted in this
    /// process.
    Unavailable(String),
}

struct Global {
    leases: usize,
    state: GpuSamplerState,
    thread_alive: bool,
}

static GLOBAL: Mutex<Global> = Mutex::new(Global {
    leases: 0,
    state: GpuSamplerState::Idle,
    thread_alive: false,
});
static LEASES_CHANGED: Condvar = Condvar::new();

fn global() -> MutexGuard<'static, Global> {
    // Every update of `Global` is a single assignment, so a poisoned lock holds consistent data.
    GLOBAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the process-wide sampler is doing now.
#[must_use]
pub fn gpu_sampler_state() -> GpuSamplerState {
    global().state.clone()
}

/// Held by each metered encoder while it runs on a GPU; the sampler runs while any is held.
#[derive(Debug)]
pub(crate) struct GpuLease(());

impl GpuLease {
    pub(crate) fn acquire() -> GpuLease {
        let mut g = global();
        g.leases += 1;
        if !g.thread_alive && !matches!(g.state, GpuSamplerState::Unavailable(_)) {
            let spawned = std::thread::Builder::new()
                .name("nvenc-gpu-metrics".into())
                .spawn(|| run(NvmlSource::init));
            match spawned {
                Ok(_detached) => {
                    g.thread_alive = true;
                    g.state = GpuSamplerState::Starting;
                }
                Err(e) => {
                    let reason = format!("cannot start the GPU sampling thread: {e}");
                    tracing::info!(%reason, "encoder_gpu_utilization is not emitted");
                    g.state = GpuSamplerState::Unavailable(reason);
                }
            }
        }
        GpuLease(())
    }
}

impl Drop for GpuLease {
    fn drop(&mut self) {
        let mut g = global();
        g.leases = g.leases.saturating_sub(1);
        if g.leases == 0 {
            LEASES_CHANGED.notify_all();
        }
    }
}

/// The sampling thread: loads the source once, then reads every [`SAMPLE_INTERVAL`] until no
/// lease is left (it notices within one interval, or at once when woken by the last lease).
fn run<S: GpuUtilizationSource + 'static>(init: fn() -> Result<S, String>) {
    let source = match init() {
        Ok(source) => source,
        Err(reason) => {
            tracing::info!(%reason, "encoder_gpu_utilization is not emitted in this process");
            let mut g = global();
            g.state = GpuSamplerState::Unavailable(reason);
            g.thread_alive = false;
            return;
        }
    };
    global().state = GpuSamplerState::Running;
    let mut sampler = GpuSampler::new(Box::new(source));
    loop {
        // A failed reading is logged once by the sampler; the next round tries again.
        let _ = sampler.sample_once();
        let g = global();
        let (mut g, _) = LEASES_CHANGED
            .wait_timeout_while(g, SAMPLE_INTERVAL, |g| g.leases > 0)
            .unwrap_or_else(PoisonError::into_inner);
        if g.leases == 0 {
            g.state = GpuSamplerState::Idle;
            g.thread_alive = false;
            return;
        }
    }
}
