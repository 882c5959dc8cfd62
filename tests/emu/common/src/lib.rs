//! Shared plumbing of the emulated NVIDIA drivers (test infrastructure, not product).
//!
//! Both emulators (`nvenc-emu-cuda`, a software `libcuda`, and `nvenc-emu-encode`, a software
//! `libnvidia-encode`) use this crate for three things:
//!
//! - **Fault injection.** `NVENC_EMU_FAULTS="entry:N:status,..."` makes the `N`th call (1-based)
//!   of the named entry point fail with the given status integer, without doing anything else.
//!   Each library only reacts to its own entry names (`cu*` for CUDA, `nvEnc*`/`NvEncode*` for
//!   NVENC), so one spec can name entry points of both. The status `hang` instead makes that
//!   call block until the process exits (a wedged driver or GPU): `nvEncLockBitstream:20:hang`;
//!   `hang=MS` blocks it for `MS` milliseconds, after which it runs normally (a driver that
//!   recovers): `nvEncLockBitstream:20:hang=3000`.
//! - **Violations.** A call that breaks an API rule returns the status a real driver returns and
//!   is recorded here: counted, appended to the report file, and printed on stderr.
//! - **The report file.** `NVENC_EMU_REPORT=/path` makes both libraries append one line per event
//!   (`<lib> violation entry=<name> reason=<text>`, `<lib> fault ...`, `<lib> event ...`,
//!   `<lib> live_handles k=v ...`). The test harness parses it after the child process exits.
//!
//! Every exported C entry point runs its body through [`guard`], which turns a panic into an
//! error status instead of unwinding across the FFI boundary.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Env var: the fault spec, `entry:N:status` items separated by commas (`status` may be `hang`
/// or `hang=MS`).
pub const FAULTS_ENV: &str = "NVENC_EMU_FAULTS";
/// Env var: the file both emulators append their report lines to.
pub const REPORT_ENV: &str = "NVENC_EMU_REPORT";
/// Env var: when set to `0`, violations are not echoed on stderr.
pub const QUIET_ENV: &str = "NVENC_EMU_QUIET";

/// One parsed item of the fault spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Entry-point name, e.g. `nvEncEncodePicture` or `cuMemAllocPitch_v2`.
    pub entry: String,
    /// The 1-based call number that fails.
    pub nth: u64,
    /// The status integer returned instead (0 for a hang).
    pub status: i32,
    /// The call blocks instead of failing: `Some(Duration::MAX)` until the process exits (status
    /// `hang` in the spec), `Some(d)` for `d`, after which it runs normally (`hang=MS`).
    pub hang: Option<std::time::Duration>,
}

/// Parses a fault spec (`entry:N:status,...`); malformed items are reported on stderr and skipped.
#[must_use]
pub fn parse_faults(spec: &str) -> Vec<Fault> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let mut parts = item.split(':');
        let parsed = (|| {
            let entry = parts.next()?.trim().to_owned();
            let nth = parts.next()?.trim().parse().ok()?;
            let (status, hang) = match parts.next()?.trim() {
                "hang" => (0, Some(std::time::Duration::MAX)),
                s => match s.strip_prefix("hang=") {
                    Some(ms) => (0, Some(std::time::Duration::from_millis(ms.parse().ok()?))),
                    None => (s.parse().ok()?, None),
                },
            };
            if parts.next().is_some() || entry.is_empty() {
                return None;
            }
            Some(Fault {
                entry,
                nth,
                status,
                hang,
            })
        })();
        match parsed {
            Some(f) => out.push(f),
            None => eprintln!("nvenc-emu: ignoring malformed {FAULTS_ENV} item {item:?}"),
        }
    }
    out
}

/// Per-library bookkeeping: call counters, faults, violation count and the report sink.
#[derive(Debug)]
pub struct Emu {
    lib: &'static str,
    faults: Vec<Fault>,
    calls: Mutex<HashMap<&'static str, u64>>,
    violations: AtomicU64,
    report: Mutex<Option<std::fs::File>>,
    quiet: bool,
}

/// Locks a mutex, ignoring poisoning: the emulators' state stays usable after a caught panic.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Emu {
    /// Reads the environment once for library `lib` (`"cuda"` or `"encode"`).
    #[must_use]
    pub fn from_env(lib: &'static str) -> Self {
        let faults = std::env::var(FAULTS_ENV)
            .map(|s| parse_faults(&s))
            .unwrap_or_default();
        let report = std::env::var_os(REPORT_ENV).and_then(|p| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .map_err(|e| eprintln!("nvenc-emu: cannot open report file {p:?}: {e}"))
                .ok()
        });
        Self {
            lib,
            faults,
            calls: Mutex::new(HashMap::new()),
            violations: AtomicU64::new(0),
            report: Mutex::new(report),
            quiet: std::env::var(QUIET_ENV).is_ok_and(|v| v != "0"),
        }
    }

    /// Counts a call of `entry`; returns the injected status if this call is to fail. A `hang`
    /// fault never returns: the calling thread blocks here until the process exits, holding no
    /// lock of the emulator, so other threads and sessions carry on. A `hang=MS` fault blocks as
    /// long, then returns `None`: the call goes on normally.
    pub fn enter(&self, entry: &'static str) -> Option<i32> {
        let n = {
            let mut calls = lock(&self.calls);
            let n = calls.entry(entry).or_insert(0);
            *n += 1;
            *n
        };
        let fault = self
            .faults
            .iter()
            .find(|f| f.entry == entry && f.nth == n)?;
        match fault.hang {
            Some(std::time::Duration::MAX) => {
                self.line(&format!("fault entry={entry} call={n} status=hang"));
                loop {
                    // Parked for good: nothing unparks this thread; a spurious wake-up parks
                    // again.
                    std::thread::park();
                }
            }
            Some(pause) => {
                self.line(&format!(
                    "fault entry={entry} call={n} status=hang={}",
                    pause.as_millis()
                ));
                std::thread::sleep(pause);
                self.line(&format!(
                    "event entry={entry} call={n} returned after the hang"
                ));
                return None;
            }
            None => {}
        }
        self.line(&format!(
            "fault entry={entry} call={n} status={}",
            fault.status
        ));
        Some(fault.status)
    }

    /// How many times `entry` has been called.
    pub fn calls(&self, entry: &str) -> u64 {
        lock(&self.calls).get(entry).copied().unwrap_or(0)
    }

    /// `calls entry=count ...`, sorted by name: every entry point called so far and how often
    /// (a fault matrix can be generated from it).
    pub fn calls_line(&self) -> String {
        let calls = lock(&self.calls);
        let mut v: Vec<_> = calls.iter().collect();
        v.sort();
        let mut line = String::from("calls");
        for (k, n) in v {
            line.push_str(&format!(" {k}={n}"));
        }
        line
    }

    /// Records an API-rule violation of `entry`.
    pub fn violation(&self, entry: &str, reason: &str) {
        self.violations.fetch_add(1, Ordering::SeqCst);
        let reason = reason.replace('\n', " ");
        if !self.quiet {
            eprintln!("nvenc-emu[{}]: VIOLATION in {entry}: {reason}", self.lib);
        }
        self.line(&format!("violation entry={entry} reason={reason}"));
    }

    /// Number of violations recorded so far.
    pub fn violations(&self) -> u64 {
        self.violations.load(Ordering::SeqCst)
    }

    /// Appends `"<lib> <text>"` to the report file, if there is one.
    pub fn line(&self, text: &str) {
        if let Some(f) = lock(&self.report).as_mut() {
            // One write call per line, on an O_APPEND file: lines of the two libraries and of
            // several threads do not interleave.
            let _ = f.write_all(format!("{} {text}\n", self.lib).as_bytes());
        }
    }
}

/// Runs an entry point's body, turning a panic into `on_panic` (with a note on stderr and in the
/// report) so that no unwind crosses the C ABI.
pub fn guard<F: FnOnce() -> i32>(emu: &Emu, entry: &'static str, on_panic: i32, f: F) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(status) => status,
        Err(_) => {
            eprintln!("nvenc-emu[{}]: internal panic in {entry}", emu.lib);
            emu.line(&format!("panic entry={entry}"));
            on_panic
        }
    }
}

/// Writes `text` NUL-terminated into a caller buffer; returns the full length needed (without
/// the NUL), like `snprintf`.
///
/// # Safety
///
/// `buf` must be null or valid for writes of `len` bytes.
pub unsafe fn write_c_buffer(text: &str, buf: *mut u8, len: usize) -> usize {
    if !buf.is_null() && len > 0 {
        let n = text.len().min(len - 1);
        // SAFETY: the caller guarantees `buf` is writable for `len` bytes and `n < len`; the
        // source is a live &str of at least `n` bytes, and the two cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), buf, n) };
        // SAFETY: `n < len`, so this byte is inside the caller's buffer.
        let end = unsafe { buf.add(n) };
        // SAFETY: `end` points inside the caller's writable buffer (see above).
        unsafe { end.write(0) };
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_spec_parses() {
        let f = parse_faults(
            "nvEncEncodePicture:5:8, cuMemAllocPitch_v2:1:2,bad,x:y:z,nvEncLockBitstream:20:hang,\
             nvEncLockBitstream:7:hang=250,y:1:hang=x",
        );
        assert_eq!(
            f,
            vec![
                Fault {
                    entry: "nvEncEncodePicture".into(),
                    nth: 5,
                    status: 8,
                    hang: None,
                },
                Fault {
                    entry: "cuMemAllocPitch_v2".into(),
                    nth: 1,
                    status: 2,
                    hang: None,
                },
                Fault {
                    entry: "nvEncLockBitstream".into(),
                    nth: 20,
                    status: 0,
                    hang: Some(std::time::Duration::MAX),
                },
                Fault {
                    entry: "nvEncLockBitstream".into(),
                    nth: 7,
                    status: 0,
                    hang: Some(std::time::Duration::from_millis(250)),
                },
            ]
        );
    }
}
