//! The network source the ring-sizing figures are about, shared by the pipeline bench (which
//! feeds it to the real stage) and `tests/ring_sizing.rs` (which simulates the stage over it).
//!
//! The sender sends frame `i` at `i` intervals. One frame in eight (outside a stall) starts a
//! stall of 1 to [`LONGEST_STALL`] intervals: the link holds everything sent during it and
//! delivers it when the stall ends, all at once (queued bytes arrive at line rate). Stalls are
//! placed in the sender's time, so they do not pile up: the mean rate stays one frame an interval.

// The bench and the simulation each use a different subset.
#![allow(dead_code)]

/// The longest stall, in frame intervals.
pub const LONGEST_STALL: u32 = 10;

/// A xorshift generator: the same numbers on every machine and in every run.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (0 is replaced: xorshift would stay at 0).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The next number, uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// The next number, uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// When each of `n` frames reaches the receiver, in intervals from the start, for one stall
/// pattern (`seed`).
pub fn arrivals(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    let mut stall_end = 0.0f64;
    (0..n)
        .map(|i| {
            let sent = i as f64;
            if sent >= stall_end && rng.below(8) == 0 {
                stall_end = sent + (1 + rng.below(u64::from(LONGEST_STALL))) as f64;
            }
            sent.max(stall_end)
        })
        .collect()
}

/// The seed of the `run`-th stall pattern (1-based) that the bench and the simulation use.
pub fn seed(run: u64) -> u64 {
    0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(run)
}
