//! The per-frame NVENC path allocates nothing but each chunk's own bytes, directly and behind the
//! fallback chain: a counting global allocator in this test binary, the backend run against the
//! emulated driver in a child.
//!
//! The emulated driver is a separate Rust library with its own allocator, so only the crate's
//! allocations (the caller's thread and the backend's watchdog thread) are counted.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nvenc_emu_harness::EmuDriver;
use nvencode::nvenc::NvencEncoder;
use nvencode::{EncoderConfig, VideoEncoder};

/// Counts allocations (and reallocations) while `COUNTING` is set.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator, which upholds the
// `GlobalAlloc` contract; the counting touches only atomics and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Frames encoded before counting starts (queues and rings reach their steady size) and while
/// counting.
const WARM_UP: usize = 30;
const COUNTED: usize = 200;

#[test]
#[ignore = "child half of the_per_frame_nvenc_path_allocates_only_the_chunks"]
fn child_count_allocations() {
    assert!(
        std::env::var_os("NVENC_EMU_REPORT").is_some(),
        "runs only in a child process against the emulated driver"
    );
    for (bframes, fallback) in [(0, false), (2, false), (2, true)] {
        let config = EncoderConfig::new(320, 240)
            .with_preset(nvencode::Preset::Veryfast)
            .with_gop_size(30)
            .with_bframes(Some(bframes));
        let input = common::clip(&config, 4);
        let mut encoder: Box<dyn VideoEncoder> = if fallback {
            // The same backend behind the fallback chain, which holds each frame for replay.
            let encoder = nvencode::FallbackEncoder::new(&config, None).expect("open");
            assert_eq!(encoder.current_kind(), nvencode::EncoderKind::Nvenc);
            Box::new(encoder)
        } else {
            Box::new(NvencEncoder::new(&config).expect("open"))
        };
        // Room for every chunk up front: the caller's vector does not grow while counting.
        let mut chunks = Vec::with_capacity(WARM_UP + COUNTED + 8);
        for i in 0..WARM_UP {
            encoder
                .encode_frame(&input[i % input.len()], &mut chunks)
                .expect("encode");
        }
        let before = chunks.len();
        ALLOCATIONS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        for i in 0..COUNTED {
            encoder
                .encode_frame(&input[i % input.len()], &mut chunks)
                .expect("encode");
        }
        COUNTING.store(false, Ordering::SeqCst);
        let allocations = ALLOCATIONS.load(Ordering::SeqCst);
        let produced = (chunks.len() - before) as u64;
        encoder.flush(&mut chunks).expect("flush");
        assert_eq!(chunks.len(), WARM_UP + COUNTED);
        let what = if fallback {
            "fallback over nvenc"
        } else {
            "nvenc"
        };
        println!(
            "{what}, bframes {bframes}: {allocations} allocations for {COUNTED} frames, \
             {produced} chunks"
        );
        // One allocation per chunk: its own bytes, which the caller receives. Nothing else.
        // (The fallback chain may deliver, in the window, a chunk the backend made before it,
        // while holding it for display order: at most one allocation per chunk delivered.)
        let ok = if fallback {
            allocations <= produced
        } else {
            allocations == produced
        };
        assert!(
            ok,
            "{what}, bframes {bframes}: {allocations} allocations while {produced} chunks came out"
        );
    }
}

#[test]
fn the_per_frame_nvenc_path_allocates_only_the_chunks() {
    let emu = EmuDriver::new().fast();
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = emu.command(exe);
    cmd.args([
        "--ignored",
        "--exact",
        "child_count_allocations",
        "--test-threads",
        "1",
        "--nocapture",
    ]);
    let text = common::run_child_tests(cmd, 1, "child_count_allocations");
    for line in text.lines().filter(|l| l.contains("allocations for")) {
        eprintln!("{line}");
    }
    emu.report().assert_clean();
}
