//! The fallback chain: open the best encoder that works, and keep the stream going on the next
//! one if it fails mid-stream.
//!
//! # Opening
//! Candidates are tried in the order of [`crate::backends::chain_order`] (the preferred encoder
//! first, then [`crate::backends::PRIORITY`]; or the list forced by `NVENC_RS_BACKEND`); each
//! failure is logged with its reason and kept for [`Error::NoEncoder`]. What a failure disables
//! is the [backend table](crate::backends)'s: NVENC failures that cannot change while the process
//! runs (no driver library, driver too old, no encode engine) disable NVENC for the process; a
//! likely session limit only skips it for this stream. The backends the table marks
//! `needs_detection` (the ffmpeg-subprocess ones) are tried only where [`crate::detect`](mod@crate::detect) found
//! them working, since starting ffmpeg proves nothing until a frame has gone through.
//!
//! # Failing over mid-stream
//! Chunks are handed to the caller only in groups that complete a prefix of the input in display
//! order, so at any moment everything delivered is a whole, decodable stream up to some frame
//! `k`. When the encoder fails (device lost, session killed, subprocess died, a driver call
//! hung past its deadline: [`Error::Hung`]), the next candidate
//! opens and every accepted frame after `k` is encoded again on it, starting with an IDR with
//! fresh SPS/PPS: no accepted frame is lost, and the delivered stream stays in display order.
//! With B-frames this holds chunks back by at most the reordering depth; without B-frames
//! (`zerolatency`) nothing is held back.

use std::collections::{BTreeMap, VecDeque};

use crate::encoder::codecs;
use crate::encoder::{
    DtsQueue, EncodedChunk, EncoderConfig, EncoderKind, Frame, InputGate, RateControl, SlotFrame,
    VideoEncoder,
};
use crate::error::{ConfigError, Error};
use crate::nvenc::NvencOptions;

/// Opens one encoder of a chain.
pub type Opener = Box<dyn FnMut(&EncoderConfig) -> Result<Box<dyn VideoEncoder>, Error> + Send>;

/// A frame accepted but not yet delivered: kept so it can be encoded again after a failover.
struct Held {
    data: HeldData,
    pts: i64,
    force_keyframe: bool,
}

/// Where a held frame's bytes are: a copy of the caller's buffer, or the ring slot it came in
/// (a shared lease, so no bytes are copied; the slot goes back to its ring once delivered).
enum HeldData {
    Copy(Vec<u8>),
    Slot(SlotFrame),
}

/// At most this many chunks may wait for an earlier frame before the encoder is judged to be
/// withholding one (the deepest B-frame reordering of any backend is far below this).
const MAX_WAITING: usize = 256;

/// An encoder that fails over to the next backend. See the [module docs](self).
pub struct FallbackEncoder {
    config: EncoderConfig,
    gate: InputGate,
    chain: VecDeque<(EncoderKind, Opener)>,
    /// `None` only while failing over, or after every encoder of the chain failed.
    current: Option<Box<dyn VideoEncoder>>,
    /// The kind of the encoder in use, or of the last one.
    kind: EncoderKind,
    /// Frames accepted and not yet delivered, by outer frame index.
    held: BTreeMap<u64, Held>,
    /// How many of `held` are slot leases ([`HeldData::Slot`]).
    held_slots: usize,
    /// Every held frame below this index that came in a slot was copied by `spill`.
    spill_from: u64,
    /// The current encoder's frame index 0 is this outer index.
    inner_base: u64,
    /// Chunks out of the encoder, in decoding order, not yet delivered.
    waiting: VecDeque<EncodedChunk>,
    /// Every frame below this outer index has been delivered.
    delivered_below: u64,
    /// Decoding timestamps for the whole stream, whichever encoder made each chunk: the inner
    /// encoders' own dts cannot be stitched across a switch between different reorder depths.
    dts: DtsQueue,
    switches: u32,
    rejected: Vec<(EncoderKind, Box<Error>)>,
    /// Buffers of delivered frames, reused for the next held copies, so holding a frame for
    /// replay costs a copy but no allocation once the stream runs.
    spare: Vec<Vec<u8>>,
    /// The current encoder's output of one call, kept empty between calls so its buffer is
    /// reused.
    scratch: Vec<EncodedChunk>,
}

impl std::fmt::Debug for FallbackEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackEncoder")
            .field("current", &self.kind)
            .field("switches", &self.switches)
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

/// Reordering depth to assume for dts: enough for any backend's B-frames at this configuration
/// (none with zero latency or no B-frames; one more than the B-frames otherwise, which covers
/// B-pyramids; the most any encoder allows when the preset decides).
fn reorder_depth(config: &EncoderConfig) -> usize {
    match crate::encoder::mapping::bframes(config) {
        Some(0) => 0,
        Some(b) => b as usize + 1,
        None => EncoderConfig::BFRAMES_MAX as usize + 1,
    }
}

/// The default chain: `preferred` first (if any), then every available encoder in
/// [`crate::backends::PRIORITY`] order; or the list `NVENC_RS_BACKEND` forces.
///
/// # Errors
/// [`ConfigError::BadBackendList`] when `NVENC_RS_BACKEND` names something that is not a backend.
pub fn default_chain(
    preferred: Option<EncoderKind>,
) -> Result<Vec<(EncoderKind, Opener)>, ConfigError> {
    chain_with(preferred, &NvencOptions::default())
}

/// [`default_chain`], with `nvenc` for the direct NVENC backend.
///
/// # Errors
/// As [`default_chain`].
pub fn chain_with(
    preferred: Option<EncoderKind>,
    nvenc: &NvencOptions,
) -> Result<Vec<(EncoderKind, Opener)>, ConfigError> {
    Ok(crate::backends::chain_order(preferred)?
        .into_iter()
        .map(|kind| {
            let nvenc = nvenc.clone();
            let opener: Opener =
                Box::new(move |config: &EncoderConfig| open_checked(kind, config, &nvenc));
            (kind, opener)
        })
        .collect())
}

/// Opens `kind` through the backend table, skipping what is known not to work here.
fn open_checked(
    kind: EncoderKind,
    config: &EncoderConfig,
    nvenc: &NvencOptions,
) -> Result<Box<dyn VideoEncoder>, Error> {
    let gated = crate::backends::backend(kind).is_some_and(|b| b.needs_detection);
    if gated {
        // Detection probes only the backends Auto tries; one it does not (named by the caller or
        // by NVENC_RS_BACKEND) is opened as asked.
        match crate::detect::detect().candidate(kind, config.codec) {
            Some(c) if !c.available => {
                return Err(Error::Unavailable {
                    backend: kind,
                    reason: c.reason.clone().unwrap_or_else(|| "not detected".into()),
                })
            }
            _ => {}
        }
    }
    crate::backends::open_recording(kind, config, nvenc)
}

/// Whether an error means the encoder is broken (fail over), not that the caller erred.
fn is_encoder_failure(e: &Error) -> bool {
    !matches!(
        e,
        Error::Config(_)
            | Error::FrameSize { .. }
            | Error::NonMonotonicPts { .. }
            | Error::Finished { .. }
            | Error::Unsupported { .. }
    )
}

impl FallbackEncoder {
    /// Opens the first encoder of [`default_chain`] that works.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration, or for an `NVENC_RS_BACKEND` that names
    /// something that is not a backend; [`Error::NoEncoder`] with every candidate's reason when
    /// none opens.
    pub fn new(config: &EncoderConfig, preferred: Option<EncoderKind>) -> Result<Self, Error> {
        Self::with_chain(config, default_chain(preferred)?)
    }

    /// Opens the first encoder of `chain` that works; the rest stay as fallbacks.
    ///
    /// # Errors
    /// As [`FallbackEncoder::new`].
    pub fn with_chain(
        config: &EncoderConfig,
        chain: Vec<(EncoderKind, Opener)>,
    ) -> Result<Self, Error> {
        let mut chain: VecDeque<_> = chain.into();
        let mut rejected = Vec::new();
        let current = open_next(&mut chain, config, &mut rejected)?;
        let kind = current.kind();
        let gate = InputGate::new(kind, config)?;
        Ok(FallbackEncoder {
            config: config.clone(),
            gate,
            chain,
            current: Some(current),
            kind,
            held: BTreeMap::new(),
            held_slots: 0,
            spill_from: 0,
            inner_base: 0,
            waiting: VecDeque::new(),
            delivered_below: 0,
            dts: DtsQueue::new(reorder_depth(config)),
            switches: 0,
            rejected,
            spare: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// The backend encoding now (or the last one, if every encoder failed).
    #[must_use]
    pub fn current_kind(&self) -> EncoderKind {
        self.kind
    }

    /// How many times the stream moved to another encoder.
    #[must_use]
    pub fn switches(&self) -> u32 {
        self.switches
    }

    /// The encoders that were passed over or failed, with their reasons.
    #[must_use]
    pub fn rejected(&self) -> &[(EncoderKind, Box<Error>)] {
        &self.rejected
    }

    fn dead(&self) -> Error {
        Error::Unavailable {
            backend: self.kind,
            reason: "every encoder of the fallback chain failed; see rejected()".into(),
        }
    }

    /// Accepts a frame and keeps it until it is delivered: the lease on its ring slot when it
    /// came in one, a copy of its bytes otherwise.
    fn hold(&mut self, index: u64, pts: i64, frame: &Frame<'_>, slot: Option<&SlotFrame>) {
        self.gate.accept(pts);
        self.dts.push(pts);
        let data = match slot {
            Some(slot) => {
                self.held_slots += 1;
                HeldData::Slot(slot.clone())
            }
            None => {
                let mut data = self.spare.pop().unwrap_or_default();
                data.clear();
                data.extend_from_slice(frame.data);
                crate::encoder::count_host_copy();
                HeldData::Copy(data)
            }
        };
        self.held.insert(
            index,
            Held {
                data,
                pts,
                force_keyframe: frame.force_keyframe,
            },
        );
        if let Some(slot) = slot {
            self.spill(slot.lease_budget());
        }
    }

    /// Keeps at most `budget` held frames as slot leases: beyond it, the oldest held slot's bytes
    /// are copied and its lease released, so the ring's producer always has the slots the ring's
    /// consumer left it (see [`crate::ring_buffer::Consumer::set_lease_budget`]). An encoder that
    /// keeps frames longer than the budget (x264's lookahead) costs one host copy per frame; one
    /// within it (NVENC, x264 with zero latency) none.
    fn spill(&mut self, budget: usize) {
        // No held slot lies below `spill_from` (they were copied in order), so the search starts
        // there, not at the oldest held frame: x264's ~40 held copies are not walked per frame.
        let mut from = self.spill_from.max(self.delivered_below);
        while self.held_slots > budget {
            let Some((&index, held)) = self
                .held
                .range_mut(from..)
                .find(|(_, h)| matches!(h.data, HeldData::Slot(_)))
            else {
                break;
            };
            from = index + 1;
            let HeldData::Slot(slot) = &held.data else {
                continue;
            };
            // A device slot is downloaded (that is its copy, counted by `host_bytes`).
            let copy = match slot.host_bytes(&self.config, self.kind) {
                Ok(std::borrow::Cow::Borrowed(bytes)) => {
                    let mut data = self.spare.pop().unwrap_or_default();
                    data.clear();
                    data.extend_from_slice(bytes);
                    crate::encoder::count_host_copy();
                    data
                }
                Ok(std::borrow::Cow::Owned(data)) => data,
                Err(e) => {
                    // Kept as a lease: the next held slot is copied instead.
                    tracing::warn!(frame = index, error = %e, "cannot copy a held slot; keeping its lease");
                    continue;
                }
            };
            // Replacing the data drops this clone of the lease.
            held.data = HeldData::Copy(copy);
            self.held_slots -= 1;
            self.spill_from = from;
        }
    }

    /// Takes chunks from the encoder's output, maps them to outer frame indices and delivers
    /// every group that completes a display-order prefix.
    ///
    /// # Errors
    /// [`Error::Backend`] when the encoder returned a frame it was not given, a frame twice, or
    /// kept a frame back longer than any reordering explains: the caller fails over.
    fn collect(
        &mut self,
        inner: &mut Vec<EncodedChunk>,
        out: &mut Vec<EncodedChunk>,
    ) -> Result<(), Error> {
        let accepted = self.gate.accepted();
        for mut chunk in inner.drain(..) {
            chunk.frame_index += self.inner_base;
            let index = chunk.frame_index;
            let duplicate = self.waiting.iter().any(|c| c.frame_index == index);
            if index < self.delivered_below || index >= accepted || duplicate {
                return Err(Error::Backend {
                    backend: self.kind,
                    call: "encode",
                    message: format!("the encoder returned frame {index}, which was not pending"),
                });
            }
            self.waiting.push_back(chunk);
        }
        // Deliver the longest decode-order prefix of `waiting` whose frames, with everything
        // delivered before, cover 0..k exactly. The frames of `waiting` are distinct and not
        // below `delivered_below` (checked above), so a prefix of n of them covers
        // `delivered_below..=max` exactly when `max - delivered_below + 1 == n`: no set needed,
        // and nothing is allocated per frame.
        let mut cut = 0;
        let mut max = self.delivered_below;
        for (i, chunk) in self.waiting.iter().enumerate() {
            max = max.max(chunk.frame_index);
            if max - self.delivered_below + 1 == i as u64 + 1 {
                cut = i + 1;
            }
        }
        for mut chunk in self.waiting.drain(..cut) {
            if let Some(done) = self.held.remove(&chunk.frame_index) {
                // Enough spares for every frame that can be in flight at once. (A held slot
                // lease is released here.)
                match done.data {
                    HeldData::Copy(data) => {
                        if self.spare.len() < MAX_WAITING {
                            self.spare.push(data);
                        }
                    }
                    HeldData::Slot(_) => self.held_slots -= 1,
                }
            }
            chunk.dts = self.dts.next().min(chunk.pts);
            out.push(chunk);
        }
        while !self.held.contains_key(&self.delivered_below) && self.delivered_below < accepted {
            self.delivered_below += 1;
        }
        if self.waiting.len() > MAX_WAITING {
            return Err(Error::Backend {
                backend: self.kind,
                call: "encode",
                message: format!(
                    "the encoder held frame {} back for {MAX_WAITING} frames",
                    self.delivered_below
                ),
            });
        }
        Ok(())
    }

    /// Moves the stream to the next encoder and encodes again every frame not delivered.
    fn fail_over(&mut self, cause: Error, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        let from = self.kind;
        tracing::warn!(from = %from, error = %cause, "encoder failed mid-stream; failing over");
        self.rejected.push((from, Box::new(cause)));
        self.waiting.clear();
        // Close the failed encoder before opening the next: on GeForce cards a second session
        // could hit the concurrent-session limit.
        self.current = None;
        loop {
            let Some(next) = open_next_keep(&mut self.chain, &self.config, &mut self.rejected)
            else {
                return Err(Error::NoEncoder(self.rejected.clone_reasons()));
            };
            crate::metrics::record_failover(self.kind, next.kind(), self.config.codec);
            self.kind = next.kind();
            self.current = Some(next);
            self.switches += 1;
            self.inner_base = self.delivered_below;
            tracing::warn!(from = %from, to = %self.kind, replay = self.held.len(), "switched encoder");
            match self.replay(out) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.rejected.push((self.kind, Box::new(e)));
                    self.current = None;
                }
            }
        }
    }

    /// Encodes every held frame on the current encoder.
    fn replay(&mut self, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        let Some(current) = self.current.as_mut() else {
            return Err(self.dead());
        };
        let mut inner = Vec::new();
        for (i, held) in self.held.values().enumerate() {
            // The new encoder starts with an IDR (and SPS/PPS) anyway; a later frame that asked
            // for one keeps asking, or goes plain where the encoder cannot force keyframes.
            let result = match &held.data {
                // A frame from a slot goes in as a slot: its metadata carries its pts and flag,
                // and a device slot stays on the GPU for an encoder that reads it there.
                HeldData::Slot(slot) => match current.encode_slot(slot, &mut inner) {
                    Err(Error::Unsupported { .. }) if held.force_keyframe => {
                        let bytes = slot.host_bytes(&self.config, current.kind())?;
                        let frame = Frame::new(&bytes).with_pts(held.pts);
                        current.encode(frame, &mut inner)
                    }
                    other => other,
                },
                HeldData::Copy(data) => {
                    let frame = Frame::new(data).with_pts(held.pts);
                    if held.force_keyframe && i > 0 {
                        match current.encode(frame.with_force_keyframe(), &mut inner) {
                            Err(Error::Unsupported { .. }) => current.encode(frame, &mut inner),
                            other => other,
                        }
                    } else {
                        current.encode(frame, &mut inner)
                    }
                }
            };
            result?;
        }
        self.collect(&mut inner, out)
    }
}

/// What `open_next` does, but leaving the rejections in place: `None` when the chain is spent.
fn open_next_keep(
    chain: &mut VecDeque<(EncoderKind, Opener)>,
    config: &EncoderConfig,
    rejected: &mut Vec<(EncoderKind, Box<Error>)>,
) -> Option<Box<dyn VideoEncoder>> {
    while let Some((kind, mut open)) = chain.pop_front() {
        if let Err(e) = codecs::check(kind, config.codec) {
            rejected.push((kind, Box::new(e.into())));
            continue;
        }
        match open(config) {
            Ok(encoder) => {
                tracing::info!(encoder = %kind, "fallback encoder opened");
                return Some(encoder);
            }
            Err(e) => {
                tracing::debug!(encoder = %kind, error = %e, "fallback encoder rejected");
                rejected.push((kind, Box::new(e)));
            }
        }
    }
    None
}

/// A copy of the rejection list for an error, keeping the original for `rejected()`.
trait CloneReasons {
    fn clone_reasons(&self) -> Vec<(EncoderKind, Box<Error>)>;
}

impl CloneReasons for Vec<(EncoderKind, Box<Error>)> {
    fn clone_reasons(&self) -> Vec<(EncoderKind, Box<Error>)> {
        self.iter()
            .map(|(k, e)| {
                let copy = Error::Unavailable {
                    backend: *k,
                    reason: e.to_string(),
                };
                (*k, Box::new(copy))
            })
            .collect()
    }
}

fn open_next(
    chain: &mut VecDeque<(EncoderKind, Opener)>,
    config: &EncoderConfig,
    rejected: &mut Vec<(EncoderKind, Box<Error>)>,
) -> Result<Box<dyn VideoEncoder>, Error> {
    // Each backend validates `config` as it opens (and a configuration error ends the search at
    // once); only when none opened is it validated here, so that a configuration error is
    // reported rather than every backend's refusal.
    while let Some((kind, mut open)) = chain.pop_front() {
        // A backend that does not encode the stream's codec is passed over: the chain never
        // changes the codec, so an HEVC stream fails over only among HEVC encoders.
        if let Err(e) = codecs::check(kind, config.codec) {
            rejected.push((kind, Box::new(e.into())));
            continue;
        }
        match open(config) {
            Ok(encoder) => {
                if rejected.is_empty() {
                    tracing::info!(encoder = %kind, "encoder selected");
                } else {
                    // Why the backends before it were passed over (each GPU's refusal, for
                    // NVENC), at `info` because it explains a choice the user may not expect.
                    let reasons: Vec<String> =
                        rejected.iter().map(|(k, e)| format!("{k}: {e}")).collect();
                    tracing::info!(
                        encoder = %kind,
                        passed_over = rejected.len(),
                        reasons = %reasons.join("; "),
                        "encoder selected"
                    );
                }
                return Ok(encoder);
            }
            Err(e @ Error::Config(_)) => return Err(e),
            Err(e) => {
                tracing::debug!(encoder = %kind, error = %e, "encoder rejected");
                rejected.push((kind, Box::new(e)));
            }
        }
    }
    config.validate()?;
    Err(Error::NoEncoder(std::mem::take(rejected)))
}

impl FallbackEncoder {
    /// `encode` and `encode_slot`: the frame, and the slot it sits in if it came in one.
    fn encode_held(
        &mut self,
        frame: Frame<'_>,
        slot: Option<&SlotFrame>,
        out: &mut Vec<EncodedChunk>,
    ) -> Result<(), Error> {
        let (index, pts) = match slot {
            // A device slot's bytes are not in host memory: its surface is checked instead.
            Some(SlotFrame::Device(device)) => {
                let (index, pts) = self.gate.check_pts(frame.pts)?;
                crate::encoder::check_device_surface(&device.surface(), &self.config, index)?;
                (index, pts)
            }
            _ => self.gate.check(&frame)?,
        };
        let Some(current) = self.current.as_mut() else {
            return Err(self.dead());
        };
        let mut inner = std::mem::take(&mut self.scratch);
        let result = match slot {
            // The slot's pts is the frame's (`SlotFrame::frame`), so the inner encoder sees the
            // same timestamps either way.
            Some(slot) => current.encode_slot(slot, &mut inner),
            None => current.encode(
                Frame {
                    pts: Some(pts),
                    ..frame
                },
                &mut inner,
            ),
        };
        let outcome = match result {
            Ok(()) => {
                self.hold(index, pts, &frame, slot);
                match self.collect(&mut inner, out) {
                    Ok(()) => Ok(()),
                    Err(e) => self.fail_over(e, out),
                }
            }
            Err(e) if is_encoder_failure(&e) => {
                // The failed encoder did not take the frame (an error means "not accepted");
                // accept it here and let the failover encode it with the others not yet
                // delivered.
                self.hold(index, pts, &frame, slot);
                let _ = self.collect(&mut inner, out);
                self.fail_over(e, out)
            }
            Err(e) => match self.collect(&mut inner, out) {
                Ok(()) => Err(e),
                Err(bad) => self.fail_over(bad, out).and(Err(e)),
            },
        };
        inner.clear();
        self.scratch = inner;
        outcome
    }
}

impl VideoEncoder for FallbackEncoder {
    fn encode(&mut self, frame: Frame<'_>, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        self.encode_held(frame, None, out)
    }

    /// As [`VideoEncoder::encode`], holding the slot's lease for a replay instead of a copy of
    /// its bytes, and handing the slot to the current encoder's own `encode_slot`.
    ///
    /// A device slot is held as a lease like a pinned one; after a failover to an encoder that
    /// reads host memory, it is downloaded when it is encoded again ([`SlotFrame::host_bytes`]).
    fn encode_slot(&mut self, slot: &SlotFrame, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        // A device slot has no host bytes: its frame carries none (and is never read as such).
        let frame = slot.frame().unwrap_or_else(|| slot.frame_from(&[]));
        self.encode_held(frame, Some(slot), out)
    }

    fn flush(&mut self, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        if self.gate.is_finished() {
            return Ok(());
        }
        loop {
            let Some(current) = self.current.as_mut() else {
                return Err(self.dead());
            };
            let mut inner = Vec::new();
            let flushed = current.flush(&mut inner);
            let collected = self.collect(&mut inner, out);
            match (flushed, collected) {
                (Ok(()), Ok(())) => break,
                (Err(e), _) if !is_encoder_failure(&e) => return Err(e),
                (Err(e), _) | (Ok(()), Err(e)) => self.fail_over(e, out)?,
            }
        }
        self.gate.finish();
        if !self.held.is_empty() || !self.waiting.is_empty() {
            return Err(Error::Backend {
                backend: self.kind,
                call: "flush",
                message: format!("{} frames were not delivered", self.held.len()),
            });
        }
        Ok(())
    }

    /// Forwards to the current encoder; once it took the change, the configuration kept for a
    /// failover carries it, so a fallback encoder opens at the new rate.
    fn reconfigure(&mut self, rate_control: RateControl) -> Result<(), Error> {
        if self.gate.is_finished() {
            return Err(Error::Finished { backend: self.kind });
        }
        rate_control.validate()?;
        let Some(current) = self.current.as_mut() else {
            return Err(self.dead());
        };
        current.reconfigure(rate_control)?;
        self.config.rate_control = rate_control;
        Ok(())
    }

    /// Where the current encoder keeps leases (NVENC), its count plus the frames this chain holds
    /// after the encoder gave them back, until their reordering group completes; 0 where it keeps
    /// none (x264, ffmpeg): such an encoder copies every frame into its own buffers anyway, and
    /// its lookahead outlasts any budget worth reserving, so the chain copies each held frame
    /// once rather than make the ring hold the encoder's whole delay (see `spill`).
    fn max_slot_leases(&self) -> usize {
        let Some(current) = self.current.as_ref() else {
            return 0;
        };
        match current.max_slot_leases() {
            0 => 0,
            // The reordering the encoder has, when it knows it: a session that uses no B-frames
            // keeps no group open, whatever the most a preset could choose.
            held => held.saturating_add(match current.bframes_in_use() {
                Some(0) => 0,
                Some(b) => b as usize + 1,
                None => reorder_depth(&self.config),
            }),
        }
    }

    fn bframes_in_use(&self) -> Option<u32> {
        self.current.as_ref().and_then(|c| c.bframes_in_use())
    }

    /// The current encoder's.
    fn gpu(&self) -> Option<usize> {
        self.current.as_ref().and_then(|c| c.gpu())
    }

    fn kind(&self) -> EncoderKind {
        self.kind
    }

    fn config(&self) -> &EncoderConfig {
        &self.config
    }

    fn sequence_headers(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |c| c.sequence_headers())
    }
}
