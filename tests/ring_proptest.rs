//! Random sequences of push, pop, release (in any order) and close on one thread, checked step by
//! step against a plain model of the ring.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;

use nvencode::ring_buffer::{FrameMeta, FrameRing, HostStorage, PopError, ReadSlot, ReserveError};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Reserve, write, commit a frame of this length.
    Push(usize),
    /// Reserve, then abandon the slot.
    Abandon,
    Pop,
    /// Release the lease at this index (modulo the leases held).
    Release(usize),
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..=32).prop_map(Op::Push),
        1 => Just(Op::Abandon),
        4 => Just(Op::Pop),
        3 => any::<usize>().prop_map(Op::Release),
        1 => Just(Op::Close),
    ]
}

/// The model: frames queued; leases in pop order with a released mark; space comes back only
/// from the oldest lease forward.
struct Model {
    capacity: usize,
    queued: VecDeque<u64>,
    leased: VecDeque<(u64, bool)>,
    closed: bool,
}

impl Model {
    fn reclaim(&mut self) {
        while self.leased.front().is_some_and(|l| l.1) {
            self.leased.pop_front();
        }
    }
    fn occupied(&self) -> usize {
        self.queued.len() + self.leased.len()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 8 } else { 256 }, ..ProptestConfig::default() })]

    #[test]
    fn ring_matches_model(capacity in 1usize..6, ops in prop::collection::vec(op(), 1..80)) {
        let (producer, mut consumer) = FrameRing::new(capacity, 32).unwrap();
        let mut producer = Some(producer);
        let mut model = Model { capacity, queued: VecDeque::new(), leased: VecDeque::new(), closed: false };
        // Leases held by the test, parallel to the model's `leased` entries not yet released.
        let mut held: Vec<ReadSlot<HostStorage>> = Vec::new();
        let mut next_seq = 0u64;

        for op in ops {
            match op {
                Op::Push(len) => {
                    let Some(p) = producer.as_mut() else { continue };
                    match p.try_reserve() {
                        Ok(mut slot) => {
                            prop_assert!(model.occupied() < model.capacity);
                            slot[..len].fill(next_seq as u8);
                            slot.commit(FrameMeta { len, seq: next_seq, ..FrameMeta::default() }).unwrap();
                            model.queued.push_back(next_seq);
                            next_seq += 1;
                        }
                        Err(ReserveError::Full) => prop_assert_eq!(model.occupied(), model.capacity),
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                }
                Op::Abandon => {
                    let Some(p) = producer.as_mut() else { continue };
                    let got = p.try_reserve().is_ok();
                    prop_assert_eq!(got, model.occupied() < model.capacity);
                }
                Op::Pop => match consumer.try_pop() {
                    Ok(frame) => {
                        let seq = model.queued.pop_front();
                        prop_assert_eq!(Some(frame.meta().seq), seq);
                        prop_assert!(frame.iter().all(|b| *b == frame.meta().seq as u8));
                        model.leased.push_back((frame.meta().seq, false));
                        held.push(frame);
                    }
                    Err(PopError::Empty) => {
                        prop_assert!(model.queued.is_empty() && !model.closed);
                    }
                    Err(PopError::Closed) => {
                        prop_assert!(model.queued.is_empty() && model.closed);
                    }
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                },
                Op::Release(i) => {
                    if held.is_empty() { continue; }
                    let lease = held.swap_remove(i % held.len());
                    let seq = lease.meta().seq;
                    lease.release();
                    if let Some(l) = model.leased.iter_mut().find(|l| l.0 == seq) {
                        l.1 = true;
                    }
                    model.reclaim();
                }
                Op::Close => {
                    if let Some(p) = producer.take() {
                        p.close();
                        model.closed = true;
                    }
                }
            }
            prop_assert_eq!(consumer.queue_depth(), model.queued.len());
            prop_assert_eq!(consumer.in_flight(), model.leased.len());
        }
    }
}
