//! Interleavings of the stage that no stress test hits reliably, made deterministic with a hook
//! inside the async reserve (`producer::tests_hook`).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use super::producer::tests_hook;
use super::{EncodePipeline, PipelineOptions, Submitted};
use crate::encoder::{EncodedChunk, EncoderConfig, EncoderKind, Frame, FrameType, VideoEncoder};
use crate::error::Error;

/// Every wait in these tests ends within this bound.
const BOUND: Duration = Duration::from_secs(30);

/// Says when it starts each frame, then waits for the test's go before finishing it.
struct GatedEncoder {
    config: EncoderConfig,
    started: mpsc::Sender<u64>,
    go: mpsc::Receiver<()>,
    frames: u64,
}

impl VideoEncoder for GatedEncoder {
    fn encode(&mut self, frame: Frame<'_>, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        let _ = self.started.send(self.frames);
        let _ = self.go.recv_timeout(BOUND);
        out.push(EncodedChunk {
            data: frame.data.to_vec(),
            pts: frame.pts.unwrap_or(0),
            dts: frame.pts.unwrap_or(0),
            duration: 1,
            keyframe: true,
            frame_type: FrameType::I,
            frame_index: self.frames,
        });
        self.frames += 1;
        Ok(())
    }
    fn flush(&mut self, _out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        Ok(())
    }
    fn kind(&self) -> EncoderKind {
        EncoderKind::X264
    }
    fn config(&self) -> &EncoderConfig {
        &self.config
    }
    fn sequence_headers(&self) -> &[u8] {
        &[]
    }
}

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A slot released (and its wake-up sent) after the async reserve found the ring full but before
/// it registered its waker must not be lost: the reserve either sees the slot or is woken.
/// Checked against a reserve that registers its waker without looking again, which returns
/// Pending here with nobody left to wake it (a producer that hangs for good on a quiet stream).
#[test]
fn a_slot_released_between_the_look_and_the_waker_registration_is_not_missed() {
    let config = EncoderConfig::new(16, 16);
    let (started_tx, started) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    let encoder = GatedEncoder {
        config: config.clone(),
        started: started_tx,
        go: go_rx,
        frames: 0,
    };
    let (mut producer, output) = EncodePipeline::with_encoder(
        Box::new(encoder),
        PipelineOptions::default().with_ring_slots(1),
    )
    .expect("open")
    .split();
    let frame = vec![7u8; producer.frame_len()];
    assert!(matches!(producer.push(&frame[..]), Ok(Submitted::Queued)));
    // The encoder holds frame 0's slot while it encodes it; the frames after it fill the rest of
    // the ring (its size is the slots asked for plus what the stage adds), without blocking.
    assert_eq!(started.recv_timeout(BOUND), Ok(0));
    let stats = producer.stats();
    for _ in stats.occupied()..stats.capacity() {
        assert!(matches!(producer.push(&frame[..]), Ok(Submitted::Queued)));
    }
    assert_eq!(
        producer.stats().occupied(),
        producer.stats().capacity(),
        "the ring is full"
    );

    let output = Rc::new(RefCell::new(output));
    let hook_output = Rc::clone(&output);
    let hook_ran = Rc::new(std::cell::Cell::new(false));
    let ran = Rc::clone(&hook_ran);
    tests_hook::set(move || {
        ran.set(true);
        // Let frame 0 finish. Its chunk reaches the output only after the slot was released and
        // the async producer's waker woken, so once the chunk is here the wake-up has happened,
        // before the reserve registered its waker.
        let _ = go.send(());
        let chunk = hook_output.borrow_mut().next();
        assert!(matches!(chunk, Some(Ok(_))), "{chunk:?}");
    });
    let woken = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(Arc::clone(&woken));
    let mut cx = Context::from_waker(&waker);
    let mut reserve = producer.reserve_async();
    let polled = Pin::new(&mut reserve).poll(&mut cx);
    tests_hook::clear();
    assert!(
        hook_ran.get(),
        "the reserve found space at its first look: the ring was not full"
    );
    let ready = matches!(polled, Poll::Ready(Ok(_)));
    drop(polled);
    assert!(
        ready || woken.0.load(Ordering::SeqCst),
        "the reserve is pending and its waker was never woken: the released slot's wake-up was lost"
    );
    drop(reserve);
    drop(producer);
    drop(output);
}
