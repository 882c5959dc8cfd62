//! Which GPU an NVENC session opens on: the one place that decides it.
//!
//! [`GpuChoice::Index`] and [`GpuChoice::Uuid`] name one GPU, and only that GPU is tried.
//! [`GpuChoice::Auto`] (the default) orders every CUDA device by the NVENC sessions this process
//! has open on it, fewest first (ties by NVML's encoder utilization where NVML answers, which
//! counts other processes' sessions, then by ordinal), and the encoder opens on the first that
//! accepts a session: a GPU that refuses one (its session limit reached, out of memory, no NVENC
//! engine, a capability the configuration needs) is passed over with its reason, which is kept
//! for the error when none accepts.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};

use super::NvencErrorKind;
use crate::error::{ConfigError, Error};

/// The GPU an NVENC session opens on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum GpuChoice {
    /// The GPU with the fewest sessions this process has open, trying the others in turn when
    /// one refuses a session.
    #[default]
    Auto,
    /// The CUDA device of this ordinal, only.
    Index(usize),
    /// The GPU of this UUID (as `nvidia-smi -L` prints it, `GPU-…`, or its 32 hex digits), only.
    Uuid(String),
}

impl GpuChoice {
    /// What [`FromStr`] accepts, for error messages.
    pub const EXPECTED: &'static str = "auto, a CUDA device ordinal (0, 1, ...) or a GPU UUID";
}

impl fmt::Display for GpuChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuChoice::Auto => f.write_str("auto"),
            GpuChoice::Index(i) => write!(f, "{i}"),
            GpuChoice::Uuid(u) => f.write_str(u),
        }
    }
}

impl FromStr for GpuChoice {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Ok(GpuChoice::Auto);
        }
        if let Ok(i) = s.parse::<usize>() {
            return Ok(GpuChoice::Index(i));
        }
        if uuid_hex(s).is_some() {
            return Ok(GpuChoice::Uuid(s.to_owned()));
        }
        Err(ConfigError::BadGpu {
            value: s.to_owned(),
            expected: Self::EXPECTED,
        })
    }
}

/// The 32 lowercase hex digits of a UUID written as `GPU-xxxxxxxx-xxxx-...` or bare, with or
/// without dashes.
pub(crate) fn uuid_hex(s: &str) -> Option<String> {
    let body = s.strip_prefix("GPU-").unwrap_or(s);
    let hex: String = body.chars().filter(|c| *c != '-').collect();
    (hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// Whether `e`, from opening a session on one GPU, is that GPU refusing (another GPU may
/// accept): no NVENC engine, its session limit or memory, a lost or wedged device, a capability
/// the configuration needs, a device CUDA cannot open. A configuration error, a missing driver
/// library and the like would fail on every GPU alike.
pub(crate) fn refused(e: &Error) -> bool {
    match e {
        Error::Nvenc(e) => matches!(
            e.kind(),
            NvencErrorKind::NoEncodeDevice
                | NvencErrorKind::SessionLimitOrOutOfMemory
                | NvencErrorKind::DeviceLost
                | NvencErrorKind::Unsupported
                | NvencErrorKind::Busy
        ),
        Error::NvencCapability { .. } | Error::Hung { .. } | Error::Unavailable { .. } => true,
        _ => false,
    }
}

/// NVENC sessions this process has open, per CUDA device ordinal.
static OPEN: Mutex<Option<HashMap<usize, usize>>> = Mutex::new(None);

/// One open session counted on its GPU until it drops.
#[derive(Debug)]
pub(crate) struct Placed {
    device: usize,
}

impl Placed {
    /// Of `order`'s devices not yet `tried`, the one with the fewest sessions (the first of them
    /// in `order` on a tie), counted at once: concurrent opens see each other's choice, so they
    /// spread instead of all taking the same GPU. Dropped when the open fails; kept by the
    /// encoder while its session lives.
    /// `load` is NVML's encoder utilization by device, where NVML answered: among devices with
    /// as many sessions, the least loaded is taken (other processes' sessions show there).
    pub(crate) fn reserve(
        order: &[usize],
        tried: &[usize],
        load: &HashMap<usize, u32>,
    ) -> Option<Self> {
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        let counts = open.get_or_insert_with(HashMap::new);
        let device = order
            .iter()
            .filter(|d| !tried.contains(d))
            .min_by_key(|d| {
                (
                    counts.get(d).copied().unwrap_or(0),
                    load.get(d).copied().unwrap_or(0),
                )
            })
            .copied()?;
        *counts.entry(device).or_insert(0) += 1;
        Some(Placed { device })
    }

    /// Counts a session on `device`.
    #[cfg(test)]
    pub(crate) fn on(device: usize) -> Self {
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        *open
            .get_or_insert_with(HashMap::new)
            .entry(device)
            .or_insert(0) += 1;
        Placed { device }
    }

    /// The CUDA device ordinal.
    pub(crate) fn device(&self) -> usize {
        self.device
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.as_mut().and_then(|m| m.get_mut(&self.device)) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Sessions this process has open on `device`.
pub(crate) fn sessions_on(device: usize) -> usize {
    let open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
    open.as_ref()
        .and_then(|m| m.get(&device).copied())
        .unwrap_or(0)
}

/// Every CUDA device with its UUID (32 lowercase hex digits; `None` where CUDA cannot say),
/// listed on a bounded thread (see `bounded.rs`): at most `deadline`.
///
/// # Errors
/// [`Error::Unavailable`] without a CUDA driver; [`Error::Hung`] when CUDA does not answer.
pub(crate) fn devices(
    deadline: std::time::Duration,
) -> Result<Vec<(usize, Option<String>)>, Error> {
    Ok(survey(deadline, false)?.0)
}

/// The CUDA devices (as [`devices`]) and, with `load`, NVML's encoder utilization of each it
/// can match by UUID (empty where NVML is unavailable, as without NVIDIA's driver).
pub(crate) type Survey = (Vec<(usize, Option<String>)>, HashMap<usize, u32>);

/// See [`Survey`].
pub(crate) fn survey(deadline: std::time::Duration, load: bool) -> Result<Survey, Error> {
    let devices = super::bounded::run("nvenc-devices", usize::MAX, deadline, |p| {
        p.at("cuDeviceGetCount");
        let count = crate::cuda::device_count().map_err(super::fail::cuda_error)?;
        p.at("cuDeviceGetUuid");
        Ok((0..count)
            .map(|d| {
                let uuid = crate::cuda::device_uuid(d)
                    .ok()
                    .map(|b| b.iter().map(|x| format!("{x:02x}")).collect());
                (d, uuid)
            })
            .collect::<Vec<(usize, Option<String>)>>())
    })?;
    let by_device = if load {
        utilization(&devices)
    } else {
        HashMap::new()
    };
    Ok((devices, by_device))
}

/// How long placement waits for NVML's readings; without them it orders by sessions alone.
const NVML_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// NVML's encoder utilization of `devices`, matched by UUID: empty where NVML is unavailable
/// or does not answer within [`NVML_DEADLINE`] (on its own bounded thread, apart from CUDA's,
/// so a wedged NVML costs placement its tie-break, never NVENC itself).
fn utilization(devices: &[(usize, Option<String>)]) -> HashMap<usize, u32> {
    let devices = devices.to_vec();
    let read = super::bounded::run(
        "nvml-utilization",
        usize::MAX - 1,
        NVML_DEADLINE,
        move |p| {
            p.at("nvmlDeviceGetEncoderUtilization");
            let mut by_device = HashMap::new();
            if let Some(nvml) = crate::metrics::gpu::NvmlSource::shared() {
                let by_uuid = nvml.encoder_utilization_by_uuid();
                for (d, uuid) in &devices {
                    let percent = uuid
                        .as_deref()
                        .and_then(|u| by_uuid.get(&display_uuid(u).to_ascii_lowercase()));
                    if let Some(&percent) = percent {
                        by_device.insert(*d, percent);
                    }
                }
            }
            Ok(by_device)
        },
    );
    read.unwrap_or_else(|e| {
        tracing::debug!(error = %e, "no NVML readings for placement");
        HashMap::new()
    })
}

/// A UUID of 32 hex digits as `nvidia-smi -L` prints it: `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub(crate) fn display_uuid(hex: &str) -> String {
    if hex.len() != 32 {
        return hex.to_owned();
    }
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The devices to try for `choice`, in order, given the node's `devices` (ordinal, UUID as 32
/// hex digits, when known).
///
/// # Errors
/// [`ConfigError::GpuNotFound`] when an index or UUID names no device of the node.
pub(crate) fn candidates(
    choice: &GpuChoice,
    devices: &[(usize, Option<String>)],
) -> Result<Vec<usize>, ConfigError> {
    let not_found = || ConfigError::GpuNotFound {
        choice: choice.to_string(),
        devices: devices.len(),
    };
    match choice {
        GpuChoice::Index(i) => Ok(vec![*i]),
        GpuChoice::Uuid(u) => {
            let want = uuid_hex(u).ok_or_else(not_found)?;
            devices
                .iter()
                .find(|(_, uuid)| uuid.as_deref() == Some(want.as_str()))
                .map(|(i, _)| vec![*i])
                .ok_or_else(not_found)
        }
        GpuChoice::Auto => {
            let mut order: Vec<usize> = devices.iter().map(|(i, _)| *i).collect();
            order.sort_by_key(|&i| (sessions_on(i), i));
            Ok(order)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_print() {
        assert_eq!("auto".parse::<GpuChoice>().ok(), Some(GpuChoice::Auto));
        assert_eq!("1".parse::<GpuChoice>().ok(), Some(GpuChoice::Index(1)));
        let uuid = "GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9";
        assert_eq!(
            uuid.parse::<GpuChoice>().ok(),
            Some(GpuChoice::Uuid(uuid.into()))
        );
        assert_eq!(
            uuid_hex(uuid).as_deref(),
            Some("0a1b2c3d4e5f60718293a4b5c6d7e8f9")
        );
        let bad = "gpu zero".parse::<GpuChoice>();
        assert!(
            matches!(&bad, Err(ConfigError::BadGpu { value, .. }) if value == "gpu zero"),
            "{bad:?}"
        );
    }

    #[test]
    fn auto_orders_by_sessions_open_and_names_pick_one() {
        // Ordinals far from any real test's, so other tests' sessions do not count here.
        let devices = [(700, None), (701, Some("ab".repeat(16))), (702, None)];
        assert_eq!(
            candidates(&GpuChoice::Auto, &devices).ok(),
            Some(vec![700, 701, 702])
        );
        let a = Placed::on(700);
        let b = Placed::on(701);
        let c = Placed::on(700);
        assert_eq!(
            candidates(&GpuChoice::Auto, &devices).ok(),
            Some(vec![702, 701, 700])
        );
        // A reservation takes the least used device not tried yet, and counts at once.
        let idle = HashMap::new();
        let r = Placed::reserve(&[700, 701, 702], &[], &idle).expect("a device");
        assert_eq!(r.device(), 702);
        let r2 = Placed::reserve(&[700, 701, 702], &[702], &idle).expect("a device");
        assert_eq!(r2.device(), 701);
        assert!(Placed::reserve(&[700], &[700], &idle).is_none());
        drop((a, b, c, r, r2));
        // As many sessions each: NVML's utilization breaks the tie (another process loads 700).
        let load: HashMap<usize, u32> = [(700, 80), (701, 10)].into_iter().collect();
        let r = Placed::reserve(&[700, 701], &[], &load).expect("a device");
        assert_eq!(r.device(), 701);
        drop(r);
        assert_eq!(
            candidates(&GpuChoice::Auto, &devices).ok(),
            Some(vec![700, 701, 702])
        );
        assert_eq!(
            candidates(&GpuChoice::Uuid("ab".repeat(16)), &devices).ok(),
            Some(vec![701])
        );
        assert!(matches!(
            candidates(&GpuChoice::Uuid("cd".repeat(16)), &devices),
            Err(ConfigError::GpuNotFound { .. })
        ));
        assert_eq!(
            candidates(&GpuChoice::Index(5), &devices).ok(),
            Some(vec![5])
        );
    }
}
