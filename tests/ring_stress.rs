//! 100,000 frames (1,000 under Miri) through a small ring, with a producer and a consumer that both
//! stall at random; every frame must arrive exactly once, in order, with intact bytes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::time::Duration;

use nvencode::ring_buffer::{FrameMeta, FrameRing, HostStorage, PopError, ReadSlot};

const SLOT_LEN: usize = 512;

/// xorshift64*: a tiny deterministic generator, so a failure replays with the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Stalls now and then: mostly not at all, sometimes a spin or a yield, rarely a short sleep.
    fn stall(&mut self) {
        match self.next() % 1000 {
            0..=1 => std::thread::sleep(Duration::from_micros(200)),
            2..=60 => std::thread::yield_now(),
            61..=90 => {
                for _ in 0..(self.next() % 2000) {
                    std::hint::spin_loop();
                }
            }
            _ => {}
        }
    }
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Frame `seq`: its sequence number, bytes derived from it, then the checksum of both. The length
/// varies with `seq`, so stale bytes of an earlier frame would be noticed.
fn fill(slot: &mut [u8], seq: u64) -> usize {
    let len = 16 + (seq as usize * 7) % (SLOT_LEN - 16);
    slot[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in slot[8..len - 8].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    let sum = checksum(&slot[..len - 8]);
    slot[len - 8..len].copy_from_slice(&sum.to_le_bytes());
    len
}

fn check(frame: &ReadSlot<HostStorage>, expected: u64) {
    let len = frame.len();
    assert_eq!(
        frame.meta().seq,
        expected,
        "frame lost, repeated or out of order"
    );
    assert_eq!(u64::from_le_bytes(frame[..8].try_into().unwrap()), expected);
    let sum = u64::from_le_bytes(frame[len - 8..].try_into().unwrap());
    assert_eq!(
        checksum(&frame[..len - 8]),
        sum,
        "frame {expected} corrupted"
    );
}

#[test]
fn hundred_thousand_frames_exactly_once_in_order() {
    let frames: u64 = if cfg!(miri) { 1_000 } else { 100_000 };
    let (mut producer, mut consumer) = FrameRing::new(8, SLOT_LEN).unwrap();

    let writer = std::thread::spawn(move || {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for seq in 0..frames {
            rng.stall();
            // Mix the blocking, non-blocking and timed forms. (A probe that succeeded abandons its
            // slot unpublished; the next reserve then gets the same free slot at once.)
            match rng.next() % 3 {
                0 => {}
                1 => {
                    while producer.try_reserve().is_err() {
                        std::thread::yield_now();
                    }
                }
                _ => while producer.reserve_timeout(Duration::from_micros(50)).is_err() {},
            }
            let mut slot = producer.reserve().unwrap();
            let len = fill(&mut slot, seq);
            slot.commit(FrameMeta {
                len,
                seq,
                pts: seq as i64,
                ..FrameMeta::default()
            })
            .unwrap();
        }
        producer.close();
    });

    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut held: VecDeque<ReadSlot<HostStorage>> = VecDeque::new();
    let mut expected = 0u64;
    loop {
        rng.stall();
        let popped = match rng.next() % 3 {
            0 => {
                // A slot comes back only once every older lease is released too, so a consumer
                // that waits with leases out could wait on itself; give them back first, as an
                // encoder does before it blocks for more input.
                held.clear();
                consumer.pop()
            }
            1 => consumer.try_pop(),
            _ => consumer.pop_timeout(Duration::from_micros(50)),
        };
        match popped {
            Ok(frame) => {
                check(&frame, expected);
                expected += 1;
                // Keep up to 3 leases in flight, like an encoder holding surfaces, and release
                // them sometimes oldest first, sometimes newest first.
                held.push_back(frame);
                if held.len() > 3 || rng.next() % 2 == 0 {
                    if rng.next() % 4 == 0 {
                        held.pop_back();
                    } else {
                        held.pop_front();
                    }
                }
            }
            Err(PopError::Empty | PopError::Timeout) => held.clear(),
            Err(PopError::Closed) => break,
            Err(other) => panic!("unexpected end: {other}"),
        }
    }
    assert_eq!(expected, frames, "every frame must arrive exactly once");
    writer.join().unwrap();
}
