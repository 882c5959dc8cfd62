//! loom models of the ring's synchronization, bounded so the whole set runs in seconds:
//! `RUSTFLAGS="--cfg loom" cargo test --release --lib ring_buffer`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use loom::thread;

use super::*;

fn meta(seq: u64) -> FrameMeta {
    FrameMeta {
        len: 1,
        seq,
        ..FrameMeta::default()
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

/// A one-slot ring forces the producer to block on full and the consumer on empty; every frame
/// arrives once, in order, with its byte, then `Closed`.
#[test]
fn blocking_full_and_empty_deliver_in_order() {
    model(|| {
        let (mut p, mut c) = FrameRing::new(1, 1).unwrap();
        let t = thread::spawn(move || {
            for seq in 0..3u64 {
                let mut s = p.reserve().unwrap();
                s[0] = seq as u8;
                s.commit(meta(seq)).unwrap();
            }
            p.close();
        });
        for seq in 0..3u64 {
            let f = c.pop().unwrap();
            assert_eq!(f.meta().seq, seq);
            assert_eq!(f[0], seq as u8);
        }
        assert_eq!(c.pop().unwrap_err(), PopError::Closed);
        t.join().unwrap();
    });
}

/// The consumer holds two leases and releases them out of order on another thread while the
/// producer waits for space.
#[test]
fn out_of_order_release_wakes_producer() {
    model(|| {
        let (mut p, mut c) = FrameRing::new(2, 1).unwrap();
        p.try_reserve().unwrap().commit(meta(0)).unwrap();
        p.try_reserve().unwrap().commit(meta(1)).unwrap();
        let a = c.try_pop().unwrap();
        let b = c.try_pop().unwrap();
        let t = thread::spawn(move || {
            drop(b);
            drop(a);
        });
        p.reserve().unwrap().commit(meta(2)).unwrap();
        assert_eq!(c.pop().unwrap().meta().seq, 2);
        t.join().unwrap();
    });
}

/// Closing while the consumer is blocked on empty wakes it with `Closed` after the last frame.
#[test]
fn close_while_consumer_blocked() {
    model(|| {
        let (mut p, mut c) = FrameRing::new(2, 1).unwrap();
        let t = thread::spawn(move || {
            p.reserve().unwrap().commit(meta(0)).unwrap();
            p.close();
        });
        assert_eq!(c.pop().unwrap().meta().seq, 0);
        assert_eq!(c.pop().unwrap_err(), PopError::Closed);
        t.join().unwrap();
    });
}

/// Dropping the consumer while the producer is blocked on full wakes it with `Disconnected`.
#[test]
fn consumer_drop_while_producer_blocked() {
    model(|| {
        let (mut p, c) = FrameRing::new(1, 1).unwrap();
        p.try_reserve().unwrap().commit(meta(0)).unwrap();
        let t = thread::spawn(move || drop(c));
        assert_eq!(
            p.reserve().map(|_| ()).unwrap_err(),
            ReserveError::Disconnected { panicked: false }
        );
        t.join().unwrap();
    });
}

/// Dropping the producer (no close) while the consumer waits: drained frame, then `Disconnected`.
#[test]
fn producer_drop_while_consumer_blocked() {
    model(|| {
        let (mut p, mut c) = FrameRing::new(1, 1).unwrap();
        let t = thread::spawn(move || {
            p.reserve().unwrap().commit(meta(0)).unwrap();
            drop(p);
        });
        assert_eq!(c.pop().unwrap().meta().seq, 0);
        assert_eq!(
            c.pop().unwrap_err(),
            PopError::Disconnected { panicked: false }
        );
        t.join().unwrap();
    });
}

/// Three leases released concurrently from three threads, in every order: all three slots come
/// back, and the blocked producer gets them.
#[test]
fn concurrent_releases_return_every_slot() {
    model(|| {
        let (mut p, mut c) = FrameRing::new(3, 1).unwrap();
        for seq in 0..3 {
            p.try_reserve().unwrap().commit(meta(seq)).unwrap();
        }
        let a = c.try_pop().unwrap();
        let b = c.try_pop().unwrap();
        let d = c.try_pop().unwrap();
        let t1 = thread::spawn(move || drop(a));
        let t2 = thread::spawn(move || drop(b));
        drop(d);
        for seq in 3..6 {
            p.reserve().unwrap().commit(meta(seq)).unwrap();
        }
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!(c.in_flight(), 0);
        assert_eq!(c.queue_depth(), 3);
    });
}

/// One lease released on another thread while the main thread releases the two newer ones: the
/// release bookkeeping alone (no blocked producer) returns all three slots.
#[test]
fn concurrent_release_bookkeeping() {
    model(|| {
        let (mut p, mut c) = FrameRing::new(3, 1).unwrap();
        for seq in 0..3 {
            p.try_reserve().unwrap().commit(meta(seq)).unwrap();
        }
        let a = c.try_pop().unwrap();
        let b = c.try_pop().unwrap();
        let d = c.try_pop().unwrap();
        let t1 = thread::spawn(move || drop(a));
        drop(b);
        drop(d);
        t1.join().unwrap();
        assert_eq!(c.in_flight(), 0, "{:?}", c.stats());
    });
}
