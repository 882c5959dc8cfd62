//! The producer end: [`FrameProducer`], its [`FrameSlot`] and [`ReserveFuture`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::encoder::Frame;
use crate::ring_buffer::{
    CommitError, DeviceStorage, FrameFlags, FrameMeta, ReserveError, RingStats,
};

use super::ring::{HostWrite, Reserve, RingProducer, RingWrite, SlotMemory};
use super::state::{lock, BackPressure, PipelineError, Shared, SharedConsumer, Submitted, WaitFor};

/// The producer end: reserve/write/commit or push, blocking, `try_`, timed or async. `Send`.
pub struct FrameProducer {
    pub(super) ring: RingProducer,
    pub(super) consumer: SharedConsumer,
    pub(super) shared: Arc<Shared>,
    pub(super) policy: BackPressure,
    pub(super) frame_len: usize,
    pub(super) scratch: Vec<u8>,
    /// The surface a device frame dropped under [`BackPressure::DropNewest`] is written into
    /// (a device ring under that policy only).
    pub(super) device_scratch: Option<DeviceStorage>,
    pub(super) seq: u64,
    pub(super) last_pts: Option<i64>,
    pub(super) dropped: u64,
}

impl fmt::Debug for FrameProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameProducer")
            .field("policy", &self.policy)
            .field("frame_len", &self.frame_len)
            .field("memory", &self.ring.memory())
            .field("stats", &self.ring.stats())
            .finish_non_exhaustive()
    }
}

pub(super) struct SlotCtx<'a> {
    pub(super) seq: &'a mut u64,
    pub(super) last_pts: &'a mut Option<i64>,
    pub(super) dropped: &'a mut u64,
    pub(super) frame_len: usize,
    pub(super) shared: &'a Shared,
}

impl SlotCtx<'_> {
    /// Publishes a reserved ring slot through `commit` with the frame's metadata, or counts a
    /// dropped frame when `commit` is `None`: the pts check and the bookkeeping both slot kinds
    /// share.
    pub(super) fn publish(
        self,
        pts: i64,
        force_keyframe: bool,
        commit: Result<impl FnOnce(FrameMeta) -> Result<(), CommitError>, RingStats>,
    ) -> Result<Submitted, PipelineError> {
        if let Some(previous) = *self.last_pts {
            if pts <= previous {
                return Err(PipelineError::NonMonotonicPts { pts, previous });
            }
        }
        match commit {
            Ok(commit) => {
                let flags = if force_keyframe {
                    FrameFlags::FORCE_KEYFRAME
                } else {
                    FrameFlags::NONE
                };
                let meta = FrameMeta {
                    len: self.frame_len,
                    pts,
                    seq: *self.seq,
                    flags,
                };
                // Under the lock the encoder thread counts its leftovers with: a frame is either
                // published before that count, or refused.
                let counted = lock(&self.shared.ring_counted);
                if *counted {
                    return Err(map_reserve_error(
                        ReserveError::Disconnected { panicked: false },
                        self.shared,
                    ));
                }
                commit(meta).map_err(|e| match e {
                    CommitError::Disconnected { .. } => map_reserve_error(
                        ReserveError::Disconnected { panicked: false },
                        self.shared,
                    ),
                    _ => PipelineError::EncoderStopped,
                })?;
                drop(counted);
                *self.seq += 1;
                *self.last_pts = Some(pts);
                Ok(Submitted::Queued)
            }
            Err(stats) => {
                stats.note_dropped(1);
                *self.dropped += 1;
                *self.last_pts = Some(pts);
                Ok(Submitted::Dropped)
            }
        }
    }
}

/// Reserves a slot of `ring` under `policy`, waiting as `wait` says: `Ok(None)` when the ring is
/// full under [`BackPressure::DropNewest`] (the frame is to be dropped).
pub(super) fn reserve_ring<'r>(
    ring: &'r mut RingProducer,
    policy: BackPressure,
    wait: &WaitFor,
    shared: &Shared,
) -> Result<Option<RingWrite<'r>>, PipelineError> {
    let how = match wait {
        WaitFor::No => Reserve::Now,
        _ if policy == BackPressure::DropNewest => Reserve::Now,
        WaitFor::Forever => Reserve::Forever,
        WaitFor::Until(deadline) => {
            Reserve::For(deadline.saturating_duration_since(Instant::now()))
        }
    };
    match ring.reserve(how) {
        Ok(slot) => Ok(Some(slot)),
        Err(ReserveError::Full) if policy == BackPressure::DropNewest => Ok(None),
        Err(e) => Err(map_reserve_error(e, shared)),
    }
}

impl FrameProducer {
    /// Bytes of one frame (the length of every slot and of every pushed frame).
    #[must_use]
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// The ring's statistics.
    #[must_use]
    pub fn stats(&self) -> RingStats {
        self.ring.stats()
    }

    /// Frames this producer dropped under its back-pressure policy.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The back-pressure policy.
    #[must_use]
    pub fn back_pressure(&self) -> BackPressure {
        self.policy
    }

    /// The memory the ring's slots are in ([`SlotMemory::Auto`] resolved at open).
    #[must_use]
    pub fn slot_memory(&self) -> SlotMemory {
        self.ring.memory()
    }

    fn gone_error(&self) -> Option<PipelineError> {
        if self.shared.output_gone.load(Ordering::SeqCst) {
            Some(PipelineError::OutputDropped)
        } else if self.shared.encoder_stopped.load(Ordering::SeqCst) {
            Some(PipelineError::EncoderStopped)
        } else {
            None
        }
    }

    /// Whether a `try_reserve` on the ring would succeed now (conservative: a stale read says
    /// "no", never a wrong "yes", because only this producer fills slots).
    fn has_space(&self) -> bool {
        let stats = self.ring.stats();
        stats.occupied() < stats.capacity()
    }

    /// Drops the oldest queued frame (for [`BackPressure::DropOldest`]); `true` if one was.
    fn drop_oldest(&mut self) -> bool {
        let dropped = lock(&self.consumer)
            .as_mut()
            .is_some_and(super::ring::RingConsumer::drop_oldest);
        if dropped {
            self.ring.note_dropped(1);
            self.dropped += 1;
        }
        dropped
    }

    /// What every reserve does first: the typed error when the stage has stopped, and under
    /// [`BackPressure::DropOldest`] on a full ring, the oldest queued frame dropped.
    pub(super) fn before_reserve(&mut self) -> Result<(), PipelineError> {
        if let Some(gone) = self.gone_error() {
            return Err(gone);
        }
        if self.policy == BackPressure::DropOldest && !self.has_space() {
            self.drop_oldest();
        }
        Ok(())
    }

    /// Whether a reserve without waiting would not report a full ring now: for the async
    /// reserves, which register their waker and look again when this says no.
    pub(super) fn ready_to_reserve(&mut self) -> bool {
        self.gone_error().is_some()
            || self.ring.is_abandoned()
            || self.policy == BackPressure::DropNewest
            || self.has_space()
            || (self.policy == BackPressure::DropOldest && self.drop_oldest() && self.has_space())
    }

    /// [`PipelineError::WrongSlotMemory`] for `call` (a host frame's way in) on a device ring.
    fn host_ring(&self, call: &'static str) -> Result<(), PipelineError> {
        let memory = self.ring.memory();
        if memory == SlotMemory::Device {
            return Err(PipelineError::WrongSlotMemory {
                memory,
                call,
                use_instead: "reserve_device, or a ring in pinned memory for frames in host memory",
            });
        }
        Ok(())
    }

    fn reserve_inner(&mut self, wait: WaitFor) -> Result<FrameSlot<'_>, PipelineError> {
        self.before_reserve()?;
        let memory = self.ring.memory();
        if memory == SlotMemory::Device {
            return Err(PipelineError::WrongSlotMemory {
                memory,
                call: "reserve",
                use_instead: "reserve_device (a device slot, written on the GPU)",
            });
        }
        let stats = self.ring.stats();
        let reserved = reserve_ring(&mut self.ring, self.policy, &wait, &self.shared)?;
        let ctx = SlotCtx {
            seq: &mut self.seq,
            last_pts: &mut self.last_pts,
            dropped: &mut self.dropped,
            frame_len: self.frame_len,
            shared: &self.shared,
        };
        match reserved {
            Some(RingWrite::Host(slot)) => Ok(FrameSlot {
                storage: SlotStorageRef::Ring(slot),
                ctx,
            }),
            // Not reached: a device ring was refused above.
            Some(RingWrite::Device(_)) => Err(PipelineError::WrongSlotMemory {
                memory,
                call: "reserve",
                use_instead: "reserve_device (a device slot, written on the GPU)",
            }),
            None => Ok(FrameSlot {
                storage: SlotStorageRef::Dropped {
                    buf: &mut self.scratch,
                    stats,
                },
                ctx,
            }),
        }
    }

    /// Reserves a slot of exactly one frame, waiting while the ring is full (under
    /// [`BackPressure::Block`]; blocking by design, see [`reserve_timeout`](Self::reserve_timeout)).
    ///
    /// # Errors
    /// [`PipelineError::OutputDropped`], [`PipelineError::EncoderStopped`].
    pub fn reserve(&mut self) -> Result<FrameSlot<'_>, PipelineError> {
        self.reserve_inner(WaitFor::Forever)
    }

    /// Reserves a slot without waiting.
    ///
    /// # Errors
    /// [`PipelineError::Full`], and as [`reserve`](Self::reserve).
    pub fn try_reserve(&mut self) -> Result<FrameSlot<'_>, PipelineError> {
        self.reserve_inner(WaitFor::No)
    }

    /// Reserves a slot, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`PipelineError::Timeout`], and as [`reserve`](Self::reserve).
    pub fn reserve_timeout(&mut self, timeout: Duration) -> Result<FrameSlot<'_>, PipelineError> {
        self.reserve_inner(match Instant::now().checked_add(timeout) {
            Some(deadline) => WaitFor::Until(deadline),
            None => WaitFor::Forever,
        })
    }

    /// Reserves a slot asynchronously, on any executor. Cancellation-safe: the slot is taken only
    /// in the poll that returns it, so dropping the pending future reserves nothing; dropping the
    /// returned slot uncommitted gives it back.
    pub fn reserve_async(&mut self) -> ReserveFuture<'_> {
        ReserveFuture {
            producer: Some(self),
            waiting_since: None,
        }
    }

    fn push_inner(&mut self, frame: Frame<'_>, wait: WaitFor) -> Result<Submitted, PipelineError> {
        if frame.data.len() != self.frame_len {
            return Err(PipelineError::FrameSize {
                len: frame.data.len(),
                expected: self.frame_len,
            });
        }
        self.host_ring("push")?;
        let pts = self.next_pts(frame.pts)?;
        let mut slot = self.reserve_inner(wait)?;
        slot.copy_from_slice(frame.data);
        slot.commit(pts, frame.force_keyframe)
    }

    fn next_pts(&self, pts: Option<i64>) -> Result<i64, PipelineError> {
        match (pts, self.last_pts) {
            (Some(pts), _) => Ok(pts),
            (None, Some(previous)) => {
                previous
                    .checked_add(1)
                    .ok_or(PipelineError::NonMonotonicPts {
                        pts: previous,
                        previous,
                    })
            }
            (None, None) => Ok(0),
        }
    }

    /// Copies `frame` (exactly one frame; its pts, or the previous pts + 1, or 0 first) into a
    /// slot and commits it, waiting while the ring is full (blocking by design; see
    /// [`push_timeout`](Self::push_timeout)).
    ///
    /// # Errors
    /// [`PipelineError::FrameSize`], [`PipelineError::NonMonotonicPts`], and as
    /// [`reserve`](Self::reserve).
    pub fn push<'f>(&mut self, frame: impl Into<Frame<'f>>) -> Result<Submitted, PipelineError> {
        self.push_inner(frame.into(), WaitFor::Forever)
    }

    /// As [`push`](Self::push), without waiting.
    ///
    /// # Errors
    /// [`PipelineError::Full`], and as [`push`](Self::push).
    pub fn try_push<'f>(
        &mut self,
        frame: impl Into<Frame<'f>>,
    ) -> Result<Submitted, PipelineError> {
        self.push_inner(frame.into(), WaitFor::No)
    }

    /// As [`push`](Self::push), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`PipelineError::Timeout`], and as [`push`](Self::push).
    pub fn push_timeout<'f>(
        &mut self,
        frame: impl Into<Frame<'f>>,
        timeout: Duration,
    ) -> Result<Submitted, PipelineError> {
        let wait = match Instant::now().checked_add(timeout) {
            Some(deadline) => WaitFor::Until(deadline),
            None => WaitFor::Forever,
        };
        self.push_inner(frame.into(), wait)
    }

    /// As [`push`](Self::push), asynchronously. Cancellation-safe: the frame is copied and
    /// committed in the poll that gets the slot, so a dropped future submitted nothing.
    ///
    /// # Errors
    /// As [`push`](Self::push).
    pub async fn push_async(&mut self, frame: Frame<'_>) -> Result<Submitted, PipelineError> {
        if frame.data.len() != self.frame_len {
            return Err(PipelineError::FrameSize {
                len: frame.data.len(),
                expected: self.frame_len,
            });
        }
        self.host_ring("push_async")?;
        let pts = self.next_pts(frame.pts)?;
        let mut slot = self.reserve_async().await?;
        slot.copy_from_slice(frame.data);
        slot.commit(pts, frame.force_keyframe)
    }

    /// Ends the input: the encoder thread encodes every committed frame, flushes, and the output
    /// ends after the last chunk.
    ///
    /// # Errors
    /// [`PipelineError::OutputDropped`] or [`PipelineError::EncoderStopped`] when the frames
    /// cannot all come out (the ring is closed all the same).
    pub fn finish(self) -> Result<(), PipelineError> {
        let gone = self.gone_error();
        self.ring.close();
        gone.map_or(Ok(()), Err)
    }
}

pub(super) fn map_reserve_error(e: ReserveError, shared: &Shared) -> PipelineError {
    match e {
        ReserveError::Full => PipelineError::Full,
        ReserveError::Timeout => PipelineError::Timeout,
        _ if shared.output_gone.load(Ordering::SeqCst) => PipelineError::OutputDropped,
        _ => PipelineError::EncoderStopped,
    }
}

/// The future of [`FrameProducer::reserve_async`].
#[must_use = "futures do nothing unless polled"]
pub struct ReserveFuture<'a> {
    producer: Option<&'a mut FrameProducer>,
    /// When it first found the ring full: its wait counts as the producer's blocked time.
    waiting_since: Option<Instant>,
}

impl Drop for ReserveFuture<'_> {
    fn drop(&mut self) {
        count_wait(&mut self.producer, &mut self.waiting_since);
    }
}

impl fmt::Debug for ReserveFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReserveFuture")
            .field("done", &self.producer.is_none())
            .finish()
    }
}

impl<'a> Future for ReserveFuture<'a> {
    type Output = Result<FrameSlot<'a>, PipelineError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        poll_ready(&mut this.producer, &mut this.waiting_since, cx, |_| false).map(|producer| {
            match producer {
                Some(producer) => producer.reserve_inner(WaitFor::No),
                None => Err(PipelineError::EncoderStopped),
            }
        })
    }
}

/// The poll both async reserves share. `Ready(Some(producer))` once a reserve without waiting
/// will not report a full ring, or once `fails_now` says the call fails at once anyway;
/// `Ready(None)` when the future already completed. Between a first look and a second it
/// registers the waker, so a slot released in between wakes it. Cancellation-safe: nothing is
/// reserved here. The time from the first `Pending` to `Ready` is added to the producer's blocked
/// time (`waiting_since` keeps its start).
/// A wait that ended (or a pending future dropped while it waited) counts as the producer's
/// blocked time, as a wait inside the ring does for the blocking calls.
pub(super) fn count_wait(held: &mut Option<&mut FrameProducer>, since: &mut Option<Instant>) {
    if let (Some(producer), Some(since)) = (held.as_ref(), since.take()) {
        producer.ring.stats().note_blocked(since.elapsed());
    }
}

pub(super) fn poll_ready<'a>(
    held: &mut Option<&'a mut FrameProducer>,
    waiting_since: &mut Option<Instant>,
    cx: &mut Context<'_>,
    fails_now: fn(&FrameProducer) -> bool,
) -> Poll<Option<&'a mut FrameProducer>> {
    let Some(producer) = held.take() else {
        return Poll::Ready(None);
    };
    for attempt in 0..2 {
        if fails_now(producer) || producer.ready_to_reserve() {
            let mut producer = Some(producer);
            count_wait(&mut producer, waiting_since);
            return Poll::Ready(producer);
        }
        if attempt == 0 {
            #[cfg(test)]
            tests_hook::between_looks();
            producer.shared.space_waker.register(cx.waker());
        }
    }
    waiting_since.get_or_insert_with(Instant::now);
    *held = Some(producer);
    Poll::Pending
}

pub(super) enum SlotStorageRef<'a> {
    /// A ring slot, in host or pinned memory.
    Ring(HostWrite<'a>),
    /// The scratch buffer a frame dropped under [`BackPressure::DropNewest`] is written into.
    Dropped { buf: &'a mut [u8], stats: RingStats },
}

/// A reserved slot of exactly one frame: write the frame into it (it derefs to `[u8]`), then
/// [`commit`](Self::commit). Dropped uncommitted, it is given back and nothing is submitted.
pub struct FrameSlot<'a> {
    pub(super) storage: SlotStorageRef<'a>,
    pub(super) ctx: SlotCtx<'a>,
}

impl fmt::Debug for FrameSlot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameSlot")
            .field("len", &self.ctx.frame_len)
            .field("dropping", &self.will_drop())
            .finish()
    }
}

impl FrameSlot<'_> {
    /// Whether committing this slot will drop the frame ([`BackPressure::DropNewest`] on a full
    /// ring): a caller that reads from a socket still reads into it, to stay in step.
    #[must_use]
    pub fn will_drop(&self) -> bool {
        matches!(self.storage, SlotStorageRef::Dropped { .. })
    }

    /// Publishes the frame with presentation timestamp `pts` (above the previous frame's) and,
    /// if `force_keyframe`, a request for an IDR.
    ///
    /// # Errors
    /// [`PipelineError::NonMonotonicPts`] (the slot is given back), or, when the encoder thread
    /// is gone, [`PipelineError::OutputDropped`] / [`PipelineError::EncoderStopped`].
    pub fn commit(self, pts: i64, force_keyframe: bool) -> Result<Submitted, PipelineError> {
        let FrameSlot { storage, ctx } = self;
        let commit = match storage {
            SlotStorageRef::Ring(slot) => Ok(move |meta| slot.commit(meta)),
            SlotStorageRef::Dropped { stats, .. } => Err(stats),
        };
        ctx.publish(pts, force_keyframe, commit)
    }
}

impl std::ops::Deref for FrameSlot<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let len = self.ctx.frame_len;
        match &self.storage {
            SlotStorageRef::Ring(slot) => &slot.bytes()[..len],
            SlotStorageRef::Dropped { buf, .. } => &buf[..len],
        }
    }
}

impl std::ops::DerefMut for FrameSlot<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.ctx.frame_len;
        match &mut self.storage {
            SlotStorageRef::Ring(slot) => &mut slot.bytes_mut()[..len],
            SlotStorageRef::Dropped { buf, .. } => &mut buf[..len],
        }
    }
}

/// A hook for the deterministic interleaving tests (`pipeline/tests.rs`): code that runs in the
/// window between the async reserve's first look and the registration of its waker.
#[cfg(test)]
pub(super) mod tests_hook {
    use std::cell::RefCell;

    thread_local! {
        static BETWEEN_LOOKS: RefCell<Option<Box<dyn FnMut()>>> = const { RefCell::new(None) };
    }

    /// Runs `hook` in that window on this thread until [`clear`].
    pub(in crate::pipeline) fn set(hook: impl FnMut() + 'static) {
        BETWEEN_LOOKS.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
    }

    /// Removes the hook.
    pub(in crate::pipeline) fn clear() {
        BETWEEN_LOOKS.with(|h| *h.borrow_mut() = None);
    }

    pub(super) fn between_looks() {
        BETWEEN_LOOKS.with(|h| {
            if let Some(hook) = h.borrow_mut().as_mut() {
                hook();
            }
        });
    }
}
