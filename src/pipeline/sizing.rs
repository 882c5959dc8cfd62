//! How many ring slots a source with stalls needs: the arithmetic behind the README's ring-size
//! advice, in the one place the benchmark and the tests read it from.

/// The ring size at which a source that stalls for up to `longest_stall` frame intervals, and
/// runs on average at `utilisation` of the encoder's sustained rate, loses no frame under
/// [`BackPressure::DropNewest`](super::BackPressure::DropNewest) (or is never held back under
/// `Block`). `None` where no finite ring does: at a utilisation of 1 or more, or one that is not
/// a number.
///
/// The arithmetic, for a source like a network link (what was sent during a stall arrives at once
/// when it ends, so the mean rate is kept):
///
/// - When a stall of `s` intervals ends, `s + 1` frames arrive together: the `s` sent during it
///   and the one sent as it ends. The encoder, idle during the stall, takes one at once; the
///   ring must hold the rest and the frame being encoded: `s + 1` slots.
/// - One slot more for the encoder's own variation (x264 ultrafast 720p here: a few percent per
///   frame, and the machine's other work on top): a slow frame while the backlog drains leaves a
///   frame more behind. With headroom the backlog drains between stalls; the closer the source
///   is to the encoder's rate, the longer that takes and the more such frames pile up, so above
///   a utilisation of 0.9 the ring needs one slot more again.
/// - At a utilisation of 1 there is no headroom: the backlog a stall leaves is never drained and
///   the encoder's variation makes it a random walk that any finite ring overflows over a long
///   enough stream. A ring then only delays the loss.
///
/// `cargo bench --bench pipeline` prints this beside the smallest ring that lost nothing in its
/// runs, and `tests/ring_sizing.rs` checks it against a simulation of 100,000 frames.
///
/// ```
/// use nvencode::pipeline::ring_slots_for;
///
/// assert_eq!(ring_slots_for(10, 0.9), Some(12)); // stalls up to 10 intervals, 10% headroom
/// assert_eq!(ring_slots_for(10, 1.0), None); // no headroom: no ring is enough
/// ```
#[must_use]
pub fn ring_slots_for(longest_stall: u32, utilisation: f64) -> Option<usize> {
    if utilisation.is_nan() || utilisation >= 1.0 {
        return None;
    }
    let stall = usize::try_from(longest_stall).ok()?;
    let variation = if utilisation <= 0.9 { 1 } else { 2 };
    stall.checked_add(1 + variation)
}
