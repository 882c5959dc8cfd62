//! The ring-size arithmetic (`pipeline::ring_slots_for`, the README's advice) against a
//! deterministic simulation of the stage: frames arriving from the same network model as the
//! pipeline bench (`benches/support/network_stalls.rs`: stalls of 1 to 10 intervals, what was sent
//! during a stall arriving at once when it ends), a ring of a given size under `DropNewest`, and
//! an encoder whose time per frame is drawn from a seeded distribution. Not timed: the clock is
//! the simulation's own.
//!
//! The encoder's time per frame is uniform within ±28% of its mean: a coefficient of variation
//! of 16%, the most the bench measured for x264 ultrafast on this project's 2-core machines (under
//! load; 4-8% on a quiet one), so the arithmetic holds for the noisier case.
//!
//! Checked against the arithmetic giving one slot less at 0.9 (the recommended ring then loses)
//! and against a simulation that never drops (every size then "loses nothing").

#[path = "../benches/support/network_stalls.rs"]
mod network_stalls;

use std::collections::VecDeque;

use network_stalls::{Rng, LONGEST_STALL};
use nvencode::pipeline::ring_slots_for;

/// Frames a simulated stream lasts.
const FRAMES: usize = 100_000;
/// The encoder's time per frame varies within this fraction of its mean, either way.
const SPREAD: f64 = 0.28;
/// Stall patterns each check runs over.
const PATTERNS: u64 = 3;

/// Frames lost by a ring of `slots` under `DropNewest`, with the source at `utilisation` of the
/// encoder's mean rate and the stall pattern `pattern`.
///
/// A frame takes a slot when it arrives and gives it back when the encoder has finished it (the
/// slot of the frame being encoded is taken, as in the stage); one arriving at a full ring is
/// dropped. Times are in frame intervals of the source.
fn lost(slots: usize, utilisation: f64, pattern: u64) -> u64 {
    let mut service = Rng::new(pattern ^ 0x5eed);
    // When each frame in the ring is finished, in order (the encoder takes them in order).
    let mut in_ring: VecDeque<f64> = VecDeque::with_capacity(slots.min(64));
    let mut encoder_free_at = 0.0f64;
    let mut lost = 0;
    for arrival in network_stalls::arrivals(FRAMES, network_stalls::seed(pattern)) {
        while in_ring.front().is_some_and(|&done| done <= arrival) {
            in_ring.pop_front();
        }
        if in_ring.len() >= slots {
            lost += 1;
            continue;
        }
        let time = utilisation * (1.0 + SPREAD * (2.0 * service.unit() - 1.0));
        encoder_free_at = encoder_free_at.max(arrival) + time;
        in_ring.push_back(encoder_free_at);
    }
    lost
}

/// Frames lost by each stall pattern.
fn lost_per_pattern(slots: usize, utilisation: f64) -> Vec<u64> {
    (1..=PATTERNS)
        .map(|p| lost(slots, utilisation, p))
        .collect()
}

/// Checks that the recommended ring loses nothing at `utilisation` and one slot less does, for
/// every stall pattern; returns the recommendation.
fn recommendation_is_the_smallest_lossless_ring(utilisation: f64) -> usize {
    let slots = ring_slots_for(LONGEST_STALL, utilisation).expect("a ring exists with headroom");
    let at = lost_per_pattern(slots, utilisation);
    assert!(
        at.iter().all(|&l| l == 0),
        "utilisation {utilisation}: the recommended {slots} slots lost {at:?} of {FRAMES} frames"
    );
    let below = lost_per_pattern(slots - 1, utilisation);
    assert!(
        below.iter().all(|&l| l > 0),
        "utilisation {utilisation}: {} slots lost nothing ({below:?}), so {slots} is more than needed",
        slots - 1
    );
    slots
}

#[test]
fn at_ninety_percent_the_recommended_ring_is_the_smallest_that_loses_nothing() {
    assert_eq!(recommendation_is_the_smallest_lossless_ring(0.9), 12);
}

#[test]
fn with_more_or_less_headroom_too() {
    assert_eq!(recommendation_is_the_smallest_lossless_ring(0.8), 12);
    assert_eq!(recommendation_is_the_smallest_lossless_ring(0.95), 13);
}

/// Without headroom the backlog a stall leaves is never drained: the encoder's variation walks it
/// up until any ring overflows, so there is no recommendation, and even 32 slots lose frames.
#[test]
fn without_headroom_no_ring_is_enough() {
    assert_eq!(ring_slots_for(LONGEST_STALL, 1.0), None);
    assert_eq!(ring_slots_for(LONGEST_STALL, f64::NAN), None);
    let at_32 = lost_per_pattern(32, 1.0);
    assert!(at_32.iter().all(|&l| l > 0), "{at_32:?}");
}

/// The simulation itself: an encoder that always keeps up loses nothing even in a small ring,
/// and a ring of one slot behind stalls loses frames.
#[test]
fn the_simulation_drops_only_when_the_ring_is_full() {
    assert_eq!(
        lost_per_pattern(usize::MAX, 0.99),
        vec![0; PATTERNS as usize]
    );
    assert!(lost_per_pattern(1, 0.5).iter().all(|&l| l > 0));
}
