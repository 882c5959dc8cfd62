//! The three threads around an `ffmpeg` child: the writer feeding raw frames to its stdin, the
//! reader demuxing its MPEG-TS output, and the keeper of its stderr's tail.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::process::ChildStdin;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::ts::{TsDemuxer, TsFrame};
use crate::encoder::Codec;

/// How many stderr lines an error report keeps.
const STDERR_LINES: usize = 12;
/// How many bytes of one stderr line are kept: the tail stays within `STDERR_LINES` times this
/// even when a child writes without newlines.
const STDERR_LINE_BYTES: usize = 1024;

/// What the reader thread reports.
pub(super) enum Event {
    Frame(TsFrame),
    Garbage(String),
    Eof { truncated: usize },
}

/// The demuxer of ffmpeg's output, shared by the reader thread and the flush: the stream ends
/// once, by whichever comes first, the end of file on the pipe (the reader) or ffmpeg's exit
/// with the pipe still held open by a process ffmpeg (or a wrapper script) forked (the flush).
/// The reader sends its events while it holds the lock, so every event of the bytes read before
/// the end is in the channel before the end is taken.
pub(super) struct Demux {
    pub(super) ts: TsDemuxer,
    pub(super) ended: bool,
}

impl Demux {
    /// The demuxer of ffmpeg's `codec` stream.
    pub(super) fn new(codec: Codec) -> Self {
        Demux {
            ts: TsDemuxer::new(codec),
            ended: false,
        }
    }

    /// Ends the stream: appends the last access unit to `frames` and returns the bytes left
    /// that make no whole packet; `None` if it had already ended.
    pub(super) fn end(&mut self, frames: &mut Vec<TsFrame>) -> Option<usize> {
        if std::mem::replace(&mut self.ended, true) {
            return None;
        }
        self.ts.finish(frames);
        Some(self.ts.leftover())
    }
}

/// The lock of `demux`, also after a panic of the other thread (the demuxer is then still whole:
/// each of its calls leaves it consistent).
pub(super) fn lock(demux: &Mutex<Demux>) -> std::sync::MutexGuard<'_, Demux> {
    demux
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) fn spawn_writer(
    mut stdin: ChildStdin,
    frames: Receiver<Vec<u8>>,
    error: Arc<Mutex<Option<String>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for frame in frames {
            if let Err(e) = stdin.write_all(&frame) {
                if let Ok(mut slot) = error.lock() {
                    *slot = Some(format!("writing a frame to ffmpeg failed: {e}"));
                }
                return;
            }
        }
        // `stdin` drops here: ffmpeg sees the end of its input.
    })
}

pub(super) fn spawn_reader(
    mut stdout: std::process::ChildStdout,
    events: Sender<Event>,
    demux: Arc<Mutex<Demux>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut frames = Vec::new();
        loop {
            match stdout.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let mut demux = lock(&demux);
                    if demux.ended {
                        // The flush ended the stream after ffmpeg's exit: what still comes is
                        // not ffmpeg's.
                        return;
                    }
                    if let Err(e) = demux.ts.push(&buf[..n], &mut frames) {
                        let _ = events.send(Event::Garbage(e.to_string()));
                        return;
                    }
                    for frame in frames.drain(..) {
                        let _ = events.send(Event::Frame(frame));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = events.send(Event::Garbage(format!(
                        "reading ffmpeg's output failed: {e}"
                    )));
                    return;
                }
            }
        }
        let mut demux = lock(&demux);
        if let Some(truncated) = demux.end(&mut frames) {
            for frame in frames.drain(..) {
                let _ = events.send(Event::Frame(frame));
            }
            let _ = events.send(Event::Eof { truncated });
        }
    })
}

pub(super) fn spawn_stderr(
    stderr: std::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        use std::io::BufRead;
        use std::io::Read;
        let mut reader = std::io::BufReader::new(stderr);
        let mut raw = Vec::new();
        // Bytes, not `lines()`: a line that is not UTF-8 must not stop the reading, or ffmpeg
        // would block on a full stderr pipe. At most `STDERR_LINE_BYTES` of a line are read into
        // memory; the rest of a longer one is read and dropped.
        let mut skipping = false;
        loop {
            raw.clear();
            match (&mut reader)
                .take(STDERR_LINE_BYTES as u64)
                .read_until(b'\n', &mut raw)
            {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
            let ends_line = raw.last() == Some(&b'\n');
            if std::mem::replace(&mut skipping, !ends_line) {
                continue; // the rest of a line already cut
            }
            let mut line = String::from_utf8_lossy(&raw).trim_end().to_owned();
            if !ends_line {
                line.push_str(" [...]");
            }
            tracing::debug!(target: "nvencode::ffmpeg", "{line}");
            if let Ok(mut tail) = tail.lock() {
                if tail.len() == STDERR_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
    })
}
