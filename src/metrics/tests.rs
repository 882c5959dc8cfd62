//! Unit tests of the metrics module.

use super::*;

#[test]
fn fps_divides_by_the_stream_age_until_the_window_is_full() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut w = FpsWindow::default();
    assert_eq!(w.rate(t0), 0.0);
    w.start(t0);
    w.add(at(500), 10);
    assert_eq!(w.rate(at(1000)), 10.0);
    // 30 frames a second for 10 s, one chunk at a time.
    for i in 1..=300u64 {
        w.add(at(1000 + i * 1000 / 30), 1);
    }
    let rate = w.rate(at(11_000));
    // The window holds the last 5 s: 150 chunks (give or take the one on its edge).
    assert!((29.8..=30.2).contains(&rate), "{rate}");
    // Nothing for 6 s: the window is empty.
    assert_eq!(w.rate(at(17_001)), 0.0);
    assert!(w.marks.is_empty());
}

#[test]
fn latency_matches_chunks_to_submissions_in_any_order() {
    let mut m = Metered::new(NoEncoder(EncoderConfig::new(16, 16)));
    let t0 = Instant::now();
    for i in 0..4u64 {
        m.submitted(t0 + Duration::from_millis(i));
    }
    // B-frame order: 0, 3, 1, 2.
    assert_eq!(m.take_pending(0), Some(t0));
    assert_eq!(m.take_pending(3), Some(t0 + Duration::from_millis(3)));
    assert_eq!(m.take_pending(3), None, "a frame matches once");
    assert_eq!(m.pending.len(), 3, "1 and 2 still pending");
    assert_eq!(m.take_pending(1), Some(t0 + Duration::from_millis(1)));
    assert_eq!(m.take_pending(2), Some(t0 + Duration::from_millis(2)));
    assert!(m.pending.is_empty());
    assert_eq!(m.pending_base, 4);
    assert_eq!(m.take_pending(99), None);
}

/// Only for the bookkeeping tests: never encodes.
struct NoEncoder(EncoderConfig);

impl VideoEncoder for NoEncoder {
    fn encode(&mut self, _: Frame<'_>, _: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        Ok(())
    }
    fn flush(&mut self, _: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        Ok(())
    }
    fn kind(&self) -> EncoderKind {
        EncoderKind::X264
    }
    fn config(&self) -> &EncoderConfig {
        &self.0
    }
    fn sequence_headers(&self) -> &[u8] {
        &[]
    }
}
