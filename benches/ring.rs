//! Ring buffer figures, each beside a peer measured in the same run:
//!
//! 1. 1080p I420 frames (3,110,400 bytes) written into the host ring by a producer thread and read
//!    by a consumer thread, against single-threaded `memcpy` of the same frames into as many
//!    buffers as the ring has slots.
//! 2. 8-byte items through the ring, `rtrb` and `crossbeam-channel`, one producer and one consumer
//!    thread each, in M items/s.
//! 3. Pinned-to-device upload, only when the CUDA driver is present; otherwise says it skipped.
//!
//! `cargo bench --bench ring` (about 20 s). `RING_BENCH_QUICK=1` shortens it further.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use nvencode::ring_buffer::{FrameMeta, FrameRing, PopError};

const FRAME: usize = 1920 * 1080 * 3 / 2;
const SLOTS: usize = 8;

fn quick() -> bool {
    std::env::var_os("RING_BENCH_QUICK").is_some()
}

/// Median of `runs` measurements of `f`, which returns its own elapsed time.
fn median(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut v: Vec<Duration> = (0..runs).map(|_| f()).collect();
    v.sort();
    v[v.len() / 2]
}

fn source_frame() -> Vec<u8> {
    (0..FRAME).map(|i| (i * 7 + i / 1920) as u8).collect()
}

fn memcpy_frames(src: &[u8], frames: usize) -> Duration {
    // vec![1; n] writes every page, so first-touch page faults are not timed (as for the ring).
    // Each destination starts on a 64-byte boundary like a ring slot: a large Vec from malloc is
    // typically 16 bytes past a page boundary, which slows the copy and would flatter the ring.
    let mut dst: Vec<Vec<u8>> = (0..SLOTS).map(|_| vec![1u8; FRAME + 64]).collect();
    let start = Instant::now();
    for i in 0..frames {
        let buf = &mut dst[i % SLOTS];
        let skip = buf.as_ptr().align_offset(64);
        let d = &mut buf[skip..skip + FRAME];
        d.copy_from_slice(src);
        black_box(d.as_ptr());
    }
    let t = start.elapsed();
    black_box(&dst);
    t
}

fn ring_frames(src: &[u8], frames: usize) -> Duration {
    let (mut producer, mut consumer) = FrameRing::new(SLOTS, FRAME).unwrap();
    // Touch every slot once so first-use page faults are not timed (the ring is allocated once in
    // a real pipeline too).
    for _ in 0..SLOTS {
        let mut s = producer.reserve().unwrap();
        s.fill(1);
        s.commit(FrameMeta::with_len(FRAME)).unwrap();
    }
    for _ in 0..SLOTS {
        consumer.pop().unwrap().release();
    }
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut sum = 0u64;
            loop {
                match consumer.pop() {
                    // The encoder would read the frame; here one byte per 4 KiB page is touched.
                    Ok(f) => sum += f.iter().step_by(4096).map(|b| u64::from(*b)).sum::<u64>(),
                    Err(PopError::Closed) => return sum,
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let start = Instant::now();
        for seq in 0..frames as u64 {
            let mut slot = producer.reserve().unwrap();
            slot.copy_from_slice(src);
            slot.commit(FrameMeta {
                len: FRAME,
                seq,
                ..FrameMeta::default()
            })
            .unwrap();
        }
        producer.close();
        black_box(reader.join().unwrap());
        start.elapsed()
    })
}

const ITEMS: u64 = 4_000_000;
const SMALL_SLOTS: usize = 1024;

fn ring_small(items: u64) -> Duration {
    let (mut p, mut c) = FrameRing::new(SMALL_SLOTS, 8).unwrap();
    std::thread::scope(|scope| {
        let start = Instant::now();
        scope.spawn(move || {
            for i in 0..items {
                let mut s = p.reserve().unwrap();
                s.copy_from_slice(&i.to_le_bytes());
                s.commit(FrameMeta::with_len(8)).unwrap();
            }
        });
        let mut expect = 0u64;
        while let Ok(f) = c.pop() {
            let v = u64::from_le_bytes(f[..8].try_into().unwrap());
            assert_eq!(v, expect);
            expect += 1;
        }
        assert_eq!(expect, items);
        start.elapsed()
    })
}

/// As `ring_small`, with `try_reserve`/`try_pop` and spinning like the rtrb row: separates the
/// cost of the lease bookkeeping from the cost of blocking.
fn ring_small_spin(items: u64) -> Duration {
    let (mut p, mut c) = FrameRing::new(SMALL_SLOTS, 8).unwrap();
    std::thread::scope(|scope| {
        let start = Instant::now();
        scope.spawn(move || {
            for i in 0..items {
                // A probe that succeeds abandons its slot; the next reserve gets it at once.
                while p.try_reserve().is_err() {
                    std::hint::spin_loop();
                }
                let mut s = p.try_reserve().unwrap();
                s.copy_from_slice(&i.to_le_bytes());
                s.commit(FrameMeta::with_len(8)).unwrap();
            }
        });
        let mut expect = 0u64;
        while expect < items {
            match c.try_pop() {
                Ok(f) => {
                    assert_eq!(u64::from_le_bytes(f[..8].try_into().unwrap()), expect);
                    expect += 1;
                }
                Err(_) => std::hint::spin_loop(),
            }
        }
        start.elapsed()
    })
}

fn rtrb_small(items: u64) -> Duration {
    let (mut p, mut c) = rtrb::RingBuffer::<u64>::new(SMALL_SLOTS);
    std::thread::scope(|scope| {
        let start = Instant::now();
        scope.spawn(move || {
            for i in 0..items {
                while p.push(i).is_err() {
                    std::hint::spin_loop();
                }
            }
        });
        let mut expect = 0u64;
        while expect < items {
            if let Ok(v) = c.pop() {
                assert_eq!(v, expect);
                expect += 1;
            } else {
                std::hint::spin_loop();
            }
        }
        start.elapsed()
    })
}

fn crossbeam_small(items: u64) -> Duration {
    let (tx, rx) = crossbeam_channel::bounded::<u64>(SMALL_SLOTS);
    std::thread::scope(|scope| {
        let start = Instant::now();
        scope.spawn(move || {
            for i in 0..items {
                tx.send(i).unwrap();
            }
        });
        let mut expect = 0u64;
        while let Ok(v) = rx.recv() {
            assert_eq!(v, expect);
            expect += 1;
        }
        start.elapsed()
    })
}

fn cuda_upload() {
    use nvencode::cuda::{available, copy_host_to_device_async, Context};
    use nvencode::ring_buffer::{DeviceStorage, PinnedStorage};
    if let Err(e) = available() {
        println!("\n3. GPU upload: SKIPPED — {e}");
        return;
    }
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        let ctx = Context::open(0)?;
        let stream = ctx.new_stream()?;
        let (mut p, mut c) = FrameRing::with_storage(PinnedStorage::new(&ctx, 4, FRAME)?)?;
        let device = DeviceStorage::new(&ctx, 4, 1920, 1620)?;
        let frames = 200;
        let src = source_frame();
        let start = Instant::now();
        for i in 0..frames {
            let mut s = p.reserve()?;
            s.copy_from_slice(&src);
            s.commit(FrameMeta::with_len(FRAME))?;
            let f = c.pop()?;
            let dst = nvencode::ring_buffer::DeviceSlots::surface(&device, i % 4);
            // SAFETY: the lease `f` and `device` outlive the copy: the stream is synchronized
            // before either is dropped.
            unsafe { copy_host_to_device_async(&f, 1920, &dst, &stream)? };
            stream.synchronize()?;
        }
        let t = start.elapsed();
        println!(
            "\n3. GPU upload (fill pinned slot + cuMemcpy2DAsync + sync), {frames} frames: {:.2} GB/s, {:.0} us/frame",
            (FRAME * frames) as f64 / t.as_secs_f64() / 1e9,
            t.as_secs_f64() * 1e6 / frames as f64
        );
        Ok(())
    };
    if let Err(e) = run() {
        println!("\n3. GPU upload: FAILED — {e}");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let runs = if quick() { 3 } else { 7 };
    let frames = if quick() { 60 } else { 240 };
    let src = source_frame();

    println!(
        "ring buffer benchmark ({} cores visible)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "\n1. 1080p I420 frames ({FRAME} bytes), {frames} frames, {SLOTS} slots, median of {runs}"
    );
    // Alternate the two, so both see the same background load (other builds share the machine).
    let mut memcpy_runs = Vec::new();
    let mut ring_runs = Vec::new();
    for _ in 0..runs {
        memcpy_runs.push(memcpy_frames(&src, frames));
        ring_runs.push(ring_frames(&src, frames));
    }
    let mut it = memcpy_runs.into_iter();
    let memcpy = median(runs, || it.next().unwrap_or_default());
    let mut it = ring_runs.into_iter();
    let ring = median(runs, || it.next().unwrap_or_default());
    let gbs = |t: Duration| (FRAME * frames) as f64 / t.as_secs_f64() / 1e9;
    println!("   {:<44} {:>8} {:>8}", "", "GB/s", "ratio");
    println!(
        "   {:<44} {:>8.2} {:>8.3}",
        "memcpy, 1 thread",
        gbs(memcpy),
        1.0
    );
    println!(
        "   {:<44} {:>8.2} {:>8.3}",
        "ring (producer copies in, consumer reads)",
        gbs(ring),
        gbs(ring) / gbs(memcpy)
    );

    let items = if quick() { ITEMS / 4 } else { ITEMS };
    println!("\n2. 8-byte items, {items} items, {SMALL_SLOTS} slots, 2 threads, median of {runs}");
    let rate = |t: Duration| items as f64 / t.as_secs_f64() / 1e6;
    let r = rate(median(runs, || ring_small(items)));
    let rs = rate(median(runs, || ring_small_spin(items)));
    let q = rate(median(runs, || rtrb_small(items)));
    let x = rate(median(runs, || crossbeam_small(items)));
    println!("   {:<44} {:>8} {:>8}", "", "M/s", "ring/x");
    println!(
        "   {:<44} {:>8.1} {:>8.3}",
        "ring (reserve/commit, pop/release, blocking)", r, 1.0
    );
    println!(
        "   {:<44} {:>8.1} {:>8.3}",
        "ring (try_reserve/try_pop, spinning)",
        rs,
        r / rs
    );
    println!(
        "   {:<44} {:>8.1} {:>8.3}",
        "rtrb 0.3 (push/pop, spinning)",
        q,
        r / q
    );
    println!(
        "   {:<44} {:>8.1} {:>8.3}",
        "crossbeam-channel 0.5 bounded (send/recv)",
        x,
        r / x
    );

    cuda_upload();
}
