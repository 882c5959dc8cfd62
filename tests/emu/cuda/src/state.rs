//! The driver's state (contexts, allocations, pinned host memory, streams, events, the
//! per-thread context stack) and what every entry point goes through: the call count and fault
//! injection, the `cuInit` check, the current-context check, and the `entry!` and `out!` macros.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, Mutex};

use nvenc_emu_common::{lock, Emu};

use crate::status::*;

pub(crate) const CTX_BASE: u64 = 0x00c0_0000_0000;
pub(crate) const STREAM_BASE: u64 = 0x00c1_0000_0000;
pub(crate) const EVENT_BASE: u64 = 0x00c2_0000_0000;
pub(crate) const HANDLE_STRIDE: u64 = 0x40;
pub(crate) const DEVICE_MEM_BASE: u64 = 0x7000_0000_0000;
pub(crate) const GUARD: u64 = 0x1_0000;
pub(crate) const PITCH_ALIGN: usize = 512;

pub(crate) static EMU: LazyLock<Emu> = LazyLock::new(|| Emu::from_env("cuda"));
pub(crate) static STATE: LazyLock<Mutex<State>> = LazyLock::new(|| Mutex::new(State::new()));

thread_local! {
    /// The calling thread's context stack; the last element is the current context.
    pub(crate) static CTX_STACK: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) primary: bool,
    /// The device ordinal the context is on.
    pub(crate) device: std::ffi::c_int,
    /// Primary contexts: retain count; created contexts: 1 while alive.
    pub(crate) refs: u32,
    pub(crate) alive: bool,
}

#[derive(Debug)]
pub(crate) struct Alloc {
    pub(crate) data: Vec<u8>,
    pub(crate) ctx: u64,
}

#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) ctx: u64,
}

#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) ctx: u64,
    pub(crate) recorded_at: Option<std::time::Instant>,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) initialized: bool,
    pub(crate) mem_limit: u64,
    pub(crate) mem_used: u64,
    pub(crate) next_id: u64,
    pub(crate) next_addr: u64,
    pub(crate) ctxs: HashMap<u64, Ctx>,
    /// Each device's primary context, once retained.
    pub(crate) primary: BTreeMap<std::ffi::c_int, u64>,
    /// Each device's primary-context flags.
    pub(crate) primary_flags: BTreeMap<std::ffi::c_int, u32>,
    pub(crate) allocs: BTreeMap<u64, Alloc>,
    pub(crate) host_allocs: HashMap<usize, std::alloc::Layout>,
    pub(crate) streams: HashMap<u64, Stream>,
    pub(crate) events: HashMap<u64, Event>,
}

impl State {
    pub(crate) fn new() -> Self {
        let mb = std::env::var("NVENC_EMU_CUDA_MEM_MB")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(8192);
        Self {
            initialized: false,
            mem_limit: mb << 20,
            mem_used: 0,
            next_id: 1,
            next_addr: DEVICE_MEM_BASE,
            ctxs: HashMap::new(),
            primary: BTreeMap::new(),
            primary_flags: BTreeMap::new(),
            allocs: BTreeMap::new(),
            host_allocs: HashMap::new(),
            streams: HashMap::new(),
            events: HashMap::new(),
        }
    }

    pub(crate) fn new_handle(&mut self, base: u64) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        base + id * HANDLE_STRIDE
    }

    pub(crate) fn live_ctx(&self, h: u64) -> bool {
        self.ctxs.get(&h).is_some_and(|c| c.alive)
    }

    /// The allocation holding `addr`: (base, offset).
    pub(crate) fn find(&self, addr: u64) -> Option<(u64, usize)> {
        let (&base, a) = self.allocs.range(..=addr).next_back()?;
        let off = addr - base;
        (off < a.data.len() as u64).then_some((base, off as usize))
    }

    pub(crate) fn live_line(&self) -> String {
        let contexts = self.ctxs.values().filter(|c| c.alive && !c.primary).count();
        let primary = self.ctxs.values().filter(|c| c.alive && c.primary).count();
        format!(
            "live_handles contexts={contexts} primary_active={primary} allocations={} bytes={} host_allocations={} streams={} events={}",
            self.allocs.len(),
            self.mem_used,
            self.host_allocs.len(),
            self.streams.len(),
            self.events.len()
        )
    }

    /// Frees everything owned by `ctx`; returns a description of what leaked, if anything.
    pub(crate) fn reap(&mut self, ctx: u64) -> Option<String> {
        let allocs: Vec<u64> = self
            .allocs
            .iter()
            .filter(|(_, a)| a.ctx == ctx)
            .map(|(&k, _)| k)
            .collect();
        let streams = self.streams.iter().filter(|(_, s)| s.ctx == ctx).count();
        let events = self.events.iter().filter(|(_, e)| e.ctx == ctx).count();
        for k in &allocs {
            if let Some(a) = self.allocs.remove(k) {
                self.mem_used -= a.data.len() as u64;
            }
        }
        self.streams.retain(|_, s| s.ctx != ctx);
        self.events.retain(|_, e| e.ctx != ctx);
        (!allocs.is_empty() || streams > 0 || events > 0).then(|| {
            format!(
                "{} allocation(s), {streams} stream(s), {events} event(s) still alive",
                allocs.len()
            )
        })
    }
}

pub(crate) fn state() -> std::sync::MutexGuard<'static, State> {
    lock(&STATE)
}

pub(crate) fn current_ctx() -> Option<u64> {
    CTX_STACK.with(|s| s.borrow().last().copied())
}

/// Counts the call, applies faults and the `cuInit` check.
pub(crate) fn enter(entry: &'static str) -> Option<i32> {
    if let Some(st) = EMU.enter(entry) {
        return Some(st);
    }
    if !state().initialized {
        EMU.violation(entry, "called before cuInit");
        return Some(NOT_INITIALIZED);
    }
    None
}

/// Requires a live current context.
pub(crate) fn need_ctx(entry: &'static str, st: &State) -> Result<u64, i32> {
    match current_ctx() {
        Some(c) if st.live_ctx(c) => Ok(c),
        Some(c) => {
            EMU.violation(entry, &format!("current context {c:#x} has been destroyed"));
            Err(INVALID_CONTEXT)
        }
        None => {
            EMU.violation(entry, "no current context on this thread");
            Err(INVALID_CONTEXT)
        }
    }
}

pub(crate) fn bad(entry: &'static str, code: i32, reason: &str) -> i32 {
    EMU.violation(entry, reason);
    code
}

macro_rules! entry {
    ($name:literal, $body:block) => {
        ::nvenc_emu_common::guard(&$crate::state::EMU, $name, $crate::status::UNKNOWN, || {
            if let Some(st) = $crate::state::enter($name) {
                return st;
            }
            $body
        })
    };
}

/// Writes `v` through an out-pointer, or records a NULL out-pointer.
macro_rules! out {
    ($entry:literal, $ptr:expr, $v:expr) => {{
        let p = $ptr;
        if p.is_null() {
            return $crate::state::bad(
                $entry,
                $crate::status::INVALID_VALUE,
                "NULL output pointer",
            );
        }
        // SAFETY: the caller passes a pointer valid for writes of the out-parameter's type (CUDA
        // API contract); NULL was excluded above.
        unsafe { p.write($v) };
    }};
}
