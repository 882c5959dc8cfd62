//! The subprocess backend itself: an `ffmpeg` child fed by a writer thread, demuxed by a reader
//! thread, with a third keeping the tail of its stderr (those threads are in `io.rs`; see the
//! [module docs](super)).

use std::collections::{BTreeMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender};

use super::args::{command_args, FfmpegOptions};
use super::child::{self, GroupChild, JOIN_LIMIT};
use super::io::{lock, spawn_reader, spawn_stderr, spawn_writer, Demux, Event};
use super::ts::TsFrame;
use crate::bitstream;
use crate::encoder::{
    DtsQueue, EncodedChunk, EncoderConfig, EncoderKind, Frame, FrameType, InputGate, RateControl,
    VideoEncoder,
};
use crate::error::{Error, SubprocessProblem};

/// How often the flush looks whether ffmpeg has exited while it waits for its output.
const EXIT_POLL: Duration = Duration::from_millis(20);
/// Once ffmpeg has exited and its group has been killed, how long its output may stay silent
/// before the flush ends the stream at what it has read: everything ffmpeg wrote is in the pipe
/// by then, and the reader takes it in far less (a pipe holds at most 1 MiB on Linux).
const DRAIN_QUIET: Duration = Duration::from_millis(300);
/// Once ffmpeg has exited, the most the flush waits for the end of its output, however much a
/// process outside its group (one that called `setsid`) keeps writing into the pipe.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// An FFmpeg encoder in a child process. See the [module docs](super).
pub struct FfmpegEncoder {
    config: EncoderConfig,
    options: FfmpegOptions,
    kind: EncoderKind,
    gate: InputGate,
    child: GroupChild,
    frames_tx: Option<Sender<Vec<u8>>>,
    events: Receiver<Event>,
    demux: Arc<Mutex<Demux>>,
    writer_error: Arc<Mutex<Option<String>>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    writer: Option<JoinHandle<()>>,
    reader: Option<JoinHandle<()>>,
    stderr_reader: Option<JoinHandle<()>>,
    /// pts given to each accepted frame, by frame index, until its chunk comes out.
    unread: BTreeMap<u64, i64>,
    dts: DtsQueue,
    /// PTS (90 kHz) of frame 0, the first access unit out.
    base: Option<i64>,
    headers: Vec<u8>,
    chunks_out: u64,
    failed: Option<SubprocessProblem>,
    /// Set by `reconfigure`: the next frame goes to a new ffmpeg started with `config`.
    restart_pending: bool,
    /// Outer frame index of the running child's frame 0 (non-zero after a restart).
    index_base: u64,
}

impl std::fmt::Debug for FfmpegEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FfmpegEncoder")
            .field("family", &self.options.family)
            .field("program", &self.options.program)
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl FfmpegEncoder {
    /// Starts `ffmpeg` with the encoder and settings of `config` and `options`.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration; [`Error::Subprocess`] with
    /// [`SubprocessProblem::NotFound`] when the program cannot be started.
    pub fn new(config: &EncoderConfig, options: &FfmpegOptions) -> Result<Self, Error> {
        let kind = EncoderKind::Ffmpeg(options.family);
        let gate = InputGate::new(kind, config)?;
        let mut cmd = child::command(&options.program);
        cmd.args(command_args(config, options)?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        tracing::debug!(command = ?cmd, "starting ffmpeg");
        let mut child = GroupChild::spawn(&mut cmd).map_err(|e| Error::Subprocess {
            backend: kind,
            problem: SubprocessProblem::NotFound {
                program: options.program.display().to_string(),
                reason: e.to_string(),
            },
            stderr: String::new(),
        })?;
        let pipes = child.child_mut();
        let (stdin, stdout, stderr_pipe) =
            match (pipes.stdin.take(), pipes.stdout.take(), pipes.stderr.take()) {
                (Some(i), Some(o), Some(e)) => (i, o, e),
                _ => {
                    child.kill_and_reap();
                    return Err(Error::Backend {
                        backend: kind,
                        call: "spawn",
                        message: "the child's pipes were not created".into(),
                    });
                }
            };
        let (frames_tx, frames_rx) = bounded::<Vec<u8>>(2);
        let (events_tx, events) = unbounded();
        let demux = Arc::new(Mutex::new(Demux::new(config.codec)));
        let writer_error = Arc::new(Mutex::new(None));
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let writer = spawn_writer(stdin, frames_rx, Arc::clone(&writer_error));
        let reader = spawn_reader(stdout, events_tx, Arc::clone(&demux));
        let stderr_reader = spawn_stderr(stderr_pipe, Arc::clone(&stderr));
        Ok(FfmpegEncoder {
            config: config.clone(),
            options: options.clone(),
            kind,
            gate,
            child,
            frames_tx: Some(frames_tx),
            events,
            demux,
            writer_error,
            stderr,
            writer: Some(writer),
            reader: Some(reader),
            stderr_reader: Some(stderr_reader),
            unread: BTreeMap::new(),
            dts: DtsQueue::new(0),
            base: None,
            headers: Vec::new(),
            chunks_out: 0,
            failed: None,
            restart_pending: false,
            index_base: 0,
        })
    }

    /// The child's process id (for monitoring, or a test that kills it).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr_tail(&self) -> String {
        self.stderr
            .lock()
            .map(|lines| lines.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Records a failure, kills the child's process group and reaps the child, and returns the
    /// error, with the last lines ffmpeg wrote to stderr (read to the end when the pipe closes
    /// within [`JOIN_LIMIT`]). Accepted frames that did not come out are lost with the child: an
    /// exit or invalid-output problem says how many (accepted minus delivered), so a caller that
    /// counts them by the frames it still holds (none, at a flush) can tell.
    fn fail(&mut self, problem: SubprocessProblem) -> Error {
        self.child.kill_and_reap();
        self.frames_tx = None;
        if let Some(thread) = self.stderr_reader.take() {
            child::join_bounded(thread, JOIN_LIMIT);
        }
        let problem = self.with_frames_lost(problem);
        self.failed = Some(problem.clone());
        Error::Subprocess {
            backend: self.kind,
            problem,
            stderr: self.stderr_tail(),
        }
    }

    /// `problem` with the count of accepted frames that did not come out, when there are any
    /// and the problem has a text to carry it.
    fn with_frames_lost(&self, problem: SubprocessProblem) -> SubprocessProblem {
        let accepted = self.gate.accepted();
        let lost = accepted.saturating_sub(self.chunks_out);
        if lost == 0 {
            return problem;
        }
        let note = format!(
            "{lost} of {accepted} accepted frame(s) not encoded ({} came out)",
            self.chunks_out
        );
        match problem {
            SubprocessProblem::Exited { status } => SubprocessProblem::Exited {
                status: format!("{status}, with {note}"),
            },
            SubprocessProblem::Garbage { what } => SubprocessProblem::Garbage {
                what: format!("{what}, with {note}"),
            },
            // No text to carry it: the hang, not the count, is the cause to fix.
            other => other,
        }
    }

    /// Why the child stopped taking input. Invalid output comes first: when the reader rejects
    /// ffmpeg's output it stops reading, and ffmpeg then dies of `SIGPIPE`, which is the effect,
    /// not the cause.
    fn exit_problem(&mut self, out: &mut Vec<EncodedChunk>) -> Result<SubprocessProblem, Error> {
        // ffmpeg stops taking input when it exits: give it a moment to say how.
        let status = self.child.reap(Duration::from_millis(500));
        if let Some(thread) = self.reader.take() {
            // Ends within the bound once ffmpeg's group is gone; a grandchild outside the group
            // may hold the pipe, and then the thread is left to end on its own.
            self.child.kill_group();
            child::join_bounded(thread, JOIN_LIMIT);
        }
        self.drain_ready(out)?;
        Ok(SubprocessProblem::Exited {
            status: match status {
                Some(status) => status.to_string(),
                None => self
                    .writer_error
                    .lock()
                    .ok()
                    .and_then(|e| e.clone())
                    .unwrap_or_else(|| "stopped reading its input".into()),
            },
        })
    }

    /// Turns every event already received into chunks.
    fn drain_ready(&mut self, out: &mut Vec<EncodedChunk>) -> Result<bool, Error> {
        loop {
            match self.events.try_recv() {
                Ok(event) => {
                    if self.handle(event, out)? {
                        return Ok(true);
                    }
                }
                Err(_) => return Ok(false),
            }
        }
    }

    /// Handles one reader event; `Ok(true)` at end of stream.
    fn handle(&mut self, event: Event, out: &mut Vec<EncodedChunk>) -> Result<bool, Error> {
        match event {
            Event::Frame(frame) => {
                self.push_frame(frame, out)?;
                Ok(false)
            }
            Event::Garbage(what) => Err(self.fail(SubprocessProblem::Garbage { what })),
            Event::Eof { truncated } => {
                if truncated > 0 {
                    return Err(self.fail(SubprocessProblem::Garbage {
                        what: format!("output ends in a partial {truncated}-byte packet"),
                    }));
                }
                Ok(true)
            }
        }
    }

    fn push_frame(&mut self, frame: TsFrame, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        let (Some(pts90), Some(dts90)) = (frame.pts, frame.dts) else {
            return Err(self.fail(SubprocessProblem::Garbage {
                what: "an access unit without a timestamp".into(),
            }));
        };
        let rate = self.config.frame_rate;
        let to_frames = |ticks: i64| -> i64 {
            let num = i128::from(ticks) * i128::from(rate.num);
            let den = 90_000i128 * i128::from(rate.den);
            ((num + den / 2).div_euclid(den)) as i64
        };
        let base = *self.base.get_or_insert(pts90);
        if self.chunks_out == 0 {
            let delay = to_frames(pts90 - dts90).max(0) as usize;
            self.dts.set_delay(delay);
        }
        let index = to_frames(pts90 - base).saturating_add(self.index_base as i64);
        let Some(pts) = u64::try_from(index)
            .ok()
            .and_then(|i| self.unread.remove(&i))
        else {
            return Err(self.fail(SubprocessProblem::Garbage {
                what: format!("an access unit for frame {index}, which was not sent or came twice"),
            }));
        };
        let codec = self.config.codec;
        let keyframe = bitstream::is_keyframe(codec, &frame.data);
        if keyframe && self.headers.is_empty() {
            self.headers = bitstream::parameter_sets(codec, &frame.data);
        }
        let frame_type =
            bitstream::frame_type(codec, &frame.data, &self.headers).unwrap_or(FrameType::P);
        let dts = self.dts.next();
        self.chunks_out += 1;
        out.push(EncodedChunk {
            data: frame.data,
            pts,
            dts: dts.min(pts),
            duration: 1,
            keyframe,
            frame_type,
            frame_index: index as u64,
        });
        Ok(())
    }

    /// Ends the running child's input and turns everything it still writes into chunks, until
    /// the end of its output, then reaps it.
    ///
    /// The end of the output is the end of file on its stdout, or, once the child itself has
    /// exited, what is in the pipe by then: a process it forked (a wrapper script's background
    /// job) inherits the pipe and would hold its end of file back for as long as it runs. So once
    /// the child has exited it is reaped, which first kills its group, ending such a process and
    /// bringing the end of file; if a process outside the group (`setsid`) still holds the pipe,
    /// the stream ends
    /// at what was read once the output has been silent for [`DRAIN_QUIET`], [`DRAIN_LIMIT`]
    /// after the exit at the most. While the child runs, each wait is bounded by
    /// [`FfmpegOptions::timeout`] of silence; the reap after the end by the same timeout.
    fn finish_child(&mut self, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        // Closing the channel makes the writer close ffmpeg's stdin: end of input.
        self.frames_tx = None;
        let timeout = self.options.timeout;
        // While the child runs the limit is on silence, not on the whole drain: a slow preset
        // with deep lookahead may take long to drain, but it keeps producing.
        let mut deadline = Instant::now() + timeout;
        // When the child's exit was seen.
        let mut exited: Option<Instant> = None;
        loop {
            // Reaping kills what the child left in its group first (see `GroupChild::try_wait`).
            if exited.is_none() && self.child.try_wait().is_some() {
                let now = Instant::now();
                exited = Some(now);
                deadline = now + DRAIN_QUIET;
            }
            let now = Instant::now();
            if exited.is_some() && now >= deadline {
                // A process outside the group holds the pipe: end at what was read.
                if !self.end_without_eof(out)? {
                    // The reader reached the end of file first: its events, the end last, are
                    // all in the channel already.
                    self.drain_ready(out)?;
                }
                break;
            }
            let left = deadline.saturating_duration_since(now);
            let wait = if exited.is_some() {
                left
            } else {
                left.min(EXIT_POLL)
            };
            match self.events.recv_timeout(wait) {
                Ok(event) => {
                    let now = Instant::now();
                    deadline = match exited {
                        Some(at) => (now + DRAIN_QUIET).min(at + DRAIN_LIMIT),
                        None => now + timeout,
                    };
                    if self.handle(event, out)? {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if exited.is_none() && Instant::now() >= deadline {
                        return Err(self.fail(SubprocessProblem::Hung { timeout }));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        match self.child.reap(timeout) {
            Some(status) if status.success() => {}
            Some(status) => {
                return Err(self.fail(SubprocessProblem::Exited {
                    status: status.to_string(),
                }));
            }
            None => {
                return Err(self.fail(SubprocessProblem::Hung { timeout }));
            }
        }
        Ok(())
    }

    /// Ends the stream at what the reader has read, without its end of file; `Ok(false)` if the
    /// reader had already reached it (its end event is then in the channel).
    fn end_without_eof(&mut self, out: &mut Vec<EncodedChunk>) -> Result<bool, Error> {
        let mut frames = Vec::new();
        let Some(truncated) = lock(&self.demux).end(&mut frames) else {
            return Ok(false);
        };
        tracing::debug!(
            pid = self.child.id(),
            "ffmpeg exited but its output pipe stays open (held by a process outside its group); \
             ending the stream at what it wrote"
        );
        // Everything the reader sent came before the end was taken.
        self.drain_ready(out)?;
        for frame in frames {
            self.push_frame(frame, out)?;
        }
        self.handle(Event::Eof { truncated }, out)
    }

    /// Moves the stream to a new ffmpeg started with the current configuration (after
    /// [`VideoEncoder::reconfigure`]): the new child starts, the old one is drained to its last
    /// frame (so every accepted frame comes out), and the next frame is the new child's first,
    /// an IDR with fresh SPS/PPS. If the new child cannot start, the old one keeps running and
    /// the restart is tried again at the next frame.
    fn restart(&mut self, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        let mut fresh = FfmpegEncoder::new(&self.config, &self.options)?;
        self.restart_pending = false;
        self.finish_child(out)?;
        if self.chunks_out != self.gate.accepted() {
            // `fail` adds the counts.
            let what = "its output before the restart ended early".to_owned();
            return Err(self.fail(SubprocessProblem::Garbage { what }));
        }
        std::mem::swap(&mut self.child, &mut fresh.child);
        std::mem::swap(&mut self.frames_tx, &mut fresh.frames_tx);
        std::mem::swap(&mut self.events, &mut fresh.events);
        std::mem::swap(&mut self.demux, &mut fresh.demux);
        std::mem::swap(&mut self.writer_error, &mut fresh.writer_error);
        std::mem::swap(&mut self.stderr, &mut fresh.stderr);
        std::mem::swap(&mut self.writer, &mut fresh.writer);
        std::mem::swap(&mut self.reader, &mut fresh.reader);
        std::mem::swap(&mut self.stderr_reader, &mut fresh.stderr_reader);
        self.base = None;
        self.index_base = self.gate.accepted();
        self.headers.clear();
        tracing::debug!(
            rate_control = %self.config.rate_control,
            at_frame = self.index_base,
            "restarted ffmpeg with a new rate control"
        );
        // `fresh` now owns the old child, which has exited and been reaped: its drop joins its
        // pipe threads (each within a bound).
        Ok(())
    }
}

impl VideoEncoder for FfmpegEncoder {
    fn encode(&mut self, frame: Frame<'_>, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        let (frame_index, pts) = self.gate.check(&frame)?;
        if let Some(problem) = self.failed.clone() {
            return Err(Error::Subprocess {
                backend: self.kind,
                problem,
                stderr: self.stderr_tail(),
            });
        }
        if frame.force_keyframe {
            return Err(Error::Unsupported {
                backend: self.kind,
                feature: "per-frame forced keyframes (a raw-video pipe cannot carry the request)",
            });
        }
        if self.restart_pending {
            self.restart(out)?;
        }
        self.drain_ready(out)?;
        let Some(tx) = self.frames_tx.as_ref() else {
            return Err(Error::Finished { backend: self.kind });
        };
        match tx.send_timeout(frame.data.to_vec(), self.options.timeout) {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => {
                let timeout = self.options.timeout;
                return Err(self.fail(SubprocessProblem::Hung { timeout }));
            }
            Err(SendTimeoutError::Disconnected(_)) => {
                let problem = self.exit_problem(out)?;
                return Err(self.fail(problem));
            }
        }
        self.gate.accept(pts);
        self.unread.insert(frame_index, pts);
        self.dts.push(pts);
        self.drain_ready(out)?;
        Ok(())
    }

    fn flush(&mut self, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        if self.gate.is_finished() {
            return Ok(());
        }
        if let Some(problem) = self.failed.clone() {
            return Err(Error::Subprocess {
                backend: self.kind,
                problem,
                stderr: self.stderr_tail(),
            });
        }
        self.finish_child(out)?;
        self.gate.finish();
        if self.chunks_out != self.gate.accepted() {
            // `fail` adds the counts.
            let what = "its output ended early".to_owned();
            return Err(self.fail(SubprocessProblem::Garbage { what }));
        }
        Ok(())
    }

    /// Restarts ffmpeg with the new settings at the next frame (an IDR with fresh SPS/PPS),
    /// after draining the running child, so no frame is lost; [`VideoEncoder::config`] reports
    /// the new setting at once.
    fn reconfigure(&mut self, rate_control: RateControl) -> Result<(), Error> {
        if self.gate.is_finished() {
            return Err(Error::Finished { backend: self.kind });
        }
        if let Some(problem) = self.failed.clone() {
            return Err(Error::Subprocess {
                backend: self.kind,
                problem,
                stderr: self.stderr_tail(),
            });
        }
        rate_control.validate()?;
        let new_config = self.config.clone().with_rate_control(rate_control);
        // Refused settings (constant QP on VideoToolbox) fail here, not at the next frame.
        command_args(&new_config, &self.options)?;
        self.config = new_config;
        self.restart_pending = true;
        Ok(())
    }

    fn kind(&self) -> EncoderKind {
        self.kind
    }

    fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Empty until the first keyframe has come out: ffmpeg reports the parameter sets only in
    /// band.
    fn sequence_headers(&self) -> &[u8] {
        &self.headers
    }
}

impl Drop for FfmpegEncoder {
    /// Kills ffmpeg's process group if it still runs, reaps it, and ends the pipe threads: each
    /// wait is bounded (the reap by `SIGKILL`'s delivery, the joins by `child::JOIN_LIMIT`), so a
    /// descendant that escaped the group and holds a pipe cannot block the drop.
    fn drop(&mut self) {
        self.frames_tx = None;
        self.child.kill_and_reap();
        for thread in [
            self.writer.take(),
            self.reader.take(),
            self.stderr_reader.take(),
        ]
        .into_iter()
        .flatten()
        {
            child::join_bounded(thread, JOIN_LIMIT);
        }
    }
}
