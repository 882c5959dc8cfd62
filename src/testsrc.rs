//! A synthetic moving test pattern, generated in memory: for examples, tests and benchmarks on
//! machines with no video file at hand.
//!
//! The picture is a smooth diagonal luma gradient with a bright box moving across it and
//! vertical bars scrolling sideways, over chroma gradients that drift with time. It has edges,
//! flat areas and motion, so an encoder has real work to do, and it is deterministic: frame `n`
//! is always the same bytes.

use crate::encoder::{PixelFormat, Resolution};
use crate::error::ConfigError;

/// Generates frames of the test pattern for one resolution and format.
#[derive(Debug, Clone)]
pub struct TestPattern {
    resolution: Resolution,
    format: PixelFormat,
    frame_len: usize,
}

impl TestPattern {
    /// A pattern of `resolution` in `format`.
    ///
    /// # Errors
    /// As [`PixelFormat::frame_len`].
    pub fn new(resolution: Resolution, format: PixelFormat) -> Result<Self, ConfigError> {
        Ok(TestPattern {
            resolution,
            format,
            frame_len: format.frame_len(resolution)?,
        })
    }

    /// Bytes in one frame.
    #[must_use]
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Frame `index` as a new buffer.
    #[must_use]
    pub fn frame(&self, index: u64) -> Vec<u8> {
        let mut buf = vec![0; self.frame_len];
        self.fill(index, &mut buf);
        buf
    }

    /// Writes frame `index` into `buf`, which is resized to [`TestPattern::frame_len`].
    pub fn fill(&self, index: u64, buf: &mut Vec<u8>) {
        buf.resize(self.frame_len, 0);
        let w = self.resolution.width as usize;
        let h = self.resolution.height as usize;
        let (luma, chroma) = buf.split_at_mut(w * h);

        // Every use of the frame index is periodic, so it is reduced by the period before any
        // arithmetic: frame `u64::MAX` is as valid as frame 0, and frame `n` keeps its bytes.
        let box_side = (h / 4).max(2);
        let moving = |speed: u64, span: usize| {
            let span = span.saturating_sub(box_side).max(1) as u64;
            (index % span * speed % span) as usize
        };
        let box_x = moving(7, w);
        let box_y = moving(3, h);
        let t = (index % 512) as usize;
        for (y, row) in luma.chunks_exact_mut(w).enumerate() {
            let in_box_rows = y >= box_y && y < box_y + box_side;
            for (x, px) in row.iter_mut().enumerate() {
                let gradient = ((x + y) * 160 / (w + h)) as u8 + 16;
                let bar = if ((x + t % 64 * 4) / 64) % 4 == 0 {
                    30
                } else {
                    0
                };
                *px = if in_box_rows && x >= box_x && x < box_x + box_side {
                    235
                } else {
                    gradient.saturating_add(bar)
                };
            }
        }

        let (cw, ch) = (w / 2, h / 2);
        // A triangle wave keeps the chroma smooth (no wrap-around edge) while it drifts.
        let tri = |n: usize| {
            (64 + if n % 256 < 128 {
                n % 256
            } else {
                255 - n % 256
            }) as u8
        };
        let u_at = |x: usize, y: usize| tri(x * 255 / cw.max(1) + y * 32 / ch.max(1) + t % 256);
        let v_at = |x: usize, y: usize| tri(y * 255 / ch.max(1) + x * 32 / cw.max(1) + t / 2);
        match self.format {
            PixelFormat::I420 => {
                let (u, v) = chroma.split_at_mut(cw * ch);
                for y in 0..ch {
                    for x in 0..cw {
                        u[y * cw + x] = u_at(x, y);
                        v[y * cw + x] = v_at(x, y);
                    }
                }
            }
            PixelFormat::Nv12 => {
                for y in 0..ch {
                    for x in 0..cw {
                        chroma[y * w + 2 * x] = u_at(x, y);
                        chroma[y * w + 2 * x + 1] = v_at(x, y);
                    }
                }
            }
        }
    }
}

/// Converts one NV12 frame to I420 (same resolution), e.g. to compare an encoder's NV12 input
/// with a decoder's `yuv420p` output.
///
/// # Errors
/// As [`PixelFormat::frame_len`]; also if `nv12` is not one frame long
/// ([`ConfigError::FrameSizeOverflow`] is not used for that: the result is `None`).
pub fn nv12_to_i420(nv12: &[u8], resolution: Resolution) -> Result<Option<Vec<u8>>, ConfigError> {
    let len = PixelFormat::Nv12.frame_len(resolution)?;
    if nv12.len() != len {
        return Ok(None);
    }
    let w = resolution.width as usize;
    let h = resolution.height as usize;
    let (luma, uv) = nv12.split_at(w * h);
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(luma);
    out.extend(uv.iter().step_by(2));
    out.extend(uv.iter().skip(1).step_by(2));
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_frame_index_is_valid_and_the_pattern_is_periodic() {
        let pattern = TestPattern::new(Resolution::new(64, 48), PixelFormat::Nv12).expect("ok");
        // Every term of the pattern repeats with a period dividing this one.
        let period: u64 = 512 * 52 * 36; // the t terms, and the box's horizontal and vertical spans
        for n in [0, 1, 7, 300] {
            assert_eq!(pattern.frame(n), pattern.frame(n + period), "frame {n}");
        }
        assert_eq!(pattern.frame(u64::MAX).len(), pattern.frame_len());
        assert_ne!(pattern.frame(0), pattern.frame(1), "the pattern moves");
    }
}
