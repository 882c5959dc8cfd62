//! What every backend shares on its input side: [`InputGate`] (the checks of each frame against
//! the configuration, timestamps, the end of the stream) and [`DtsQueue`] (decoding timestamps
//! for an encoder that reports presentation order only).

use super::{EncoderConfig, EncoderKind, Frame, PixelFormat, Resolution};
use crate::error::{ConfigError, Error};

/// Counts one host copy of a frame's bytes (see [`metrics::host_frame_copies`](crate::metrics::host_frame_copies)).
pub(crate) fn count_host_copy() {
    crate::metrics::copies::count();
}

/// Decoding timestamps for an encoder that reports only presentation order: output `k` in
/// decoding order gets the pts of input `k - delay` (inputs in submission order), and the first
/// `delay` outputs count down to the first pts, so dts strictly increases and, with `delay` at
/// least the encoder's reordering depth, never passes pts.
#[derive(Debug, Default)]
pub(crate) struct DtsQueue {
    input_pts: std::collections::VecDeque<i64>,
    delay: usize,
    emitted: usize,
}

impl DtsQueue {
    pub(crate) fn new(delay: usize) -> Self {
        DtsQueue {
            delay,
            ..DtsQueue::default()
        }
    }

    /// Sets the reordering delay, before the first output.
    pub(crate) fn set_delay(&mut self, delay: usize) {
        self.delay = delay;
    }

    /// Records an input's pts, in submission order.
    pub(crate) fn push(&mut self, pts: i64) {
        self.input_pts.push_back(pts);
    }

    /// The dts of the next output, in decoding order.
    pub(crate) fn next(&mut self) -> i64 {
        let k = self.emitted;
        self.emitted += 1;
        let first = self.input_pts.front().copied().unwrap_or(0);
        if k < self.delay {
            first.saturating_sub((self.delay - k) as i64)
        } else {
            self.input_pts.pop_front().unwrap_or(first)
        }
    }
}

/// Bookkeeping every backend shares: frame length, timestamp order, frame numbering, and the
/// finished flag. Keeps the checks of the contract in one place.
#[derive(Debug, Clone)]
pub(crate) struct InputGate {
    kind: EncoderKind,
    frame_len: usize,
    resolution: Resolution,
    format: PixelFormat,
    accepted: u64,
    last_pts: Option<i64>,
    finished: bool,
}

impl InputGate {
    pub(crate) fn new(kind: EncoderKind, config: &EncoderConfig) -> Result<Self, ConfigError> {
        let frame_len = config.validate()?;
        super::codecs::check(kind, config.codec)?;
        Ok(InputGate {
            kind,
            frame_len,
            resolution: config.resolution,
            format: config.pixel_format,
            accepted: 0,
            last_pts: None,
            finished: false,
        })
    }

    /// The byte length of one input frame: what [`EncoderConfig::validate`] returned.
    pub(crate) fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Checks a frame without accepting it; returns `(frame_index, pts)` for it.
    pub(crate) fn check(&self, frame: &Frame<'_>) -> Result<(u64, i64), Error> {
        if self.finished {
            return Err(Error::Finished { backend: self.kind });
        }
        if frame.data.len() != self.frame_len {
            return Err(Error::FrameSize {
                frame_index: self.accepted,
                expected: self.frame_len,
                actual: frame.data.len(),
                resolution: self.resolution,
                format: self.format,
            });
        }
        self.check_pts(frame.pts)
    }

    /// Checks the end of stream and a frame's timestamp (for frames whose bytes are not in
    /// host memory); returns `(frame_index, pts)` for it.
    pub(crate) fn check_pts(&self, pts: Option<i64>) -> Result<(u64, i64), Error> {
        if self.finished {
            return Err(Error::Finished { backend: self.kind });
        }
        let pts = match (pts, self.last_pts) {
            (Some(pts), Some(previous)) if pts <= previous => {
                return Err(Error::NonMonotonicPts {
                    frame_index: self.accepted,
                    pts,
                    previous,
                })
            }
            (Some(pts), _) => pts,
            (None, Some(previous)) => previous.checked_add(1).ok_or(Error::NonMonotonicPts {
                frame_index: self.accepted,
                pts: previous,
                previous,
            })?,
            (None, None) => 0,
        };
        Ok((self.accepted, pts))
    }

    /// Records that the frame checked last was handed to the encoder.
    pub(crate) fn accept(&mut self, pts: i64) {
        self.accepted += 1;
        self.last_pts = Some(pts);
    }

    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }

    /// Ends the stream after a flush that produced `chunks_out` chunks in all, and checks that
    /// every accepted frame came out: a backend that lost one says so instead of returning a
    /// short stream.
    pub(crate) fn finish_accounted(
        &mut self,
        chunks_out: u64,
        call: &'static str,
    ) -> Result<(), Error> {
        self.finished = true;
        if chunks_out == self.accepted {
            return Ok(());
        }
        Err(Error::Backend {
            backend: self.kind,
            call,
            message: format!(
                "{} frames were accepted but {chunks_out} came out",
                self.accepted
            ),
        })
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }

    pub(crate) fn accepted(&self) -> u64 {
        self.accepted
    }
}
