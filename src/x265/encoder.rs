//! [`X265Encoder`]: the [`VideoEncoder`] over an [`X265Handle`].

use super::sys;

use super::handle::{Encoded, Input, X265Handle, KIND};
use crate::encoder::mapping;
use crate::encoder::{
    DtsQueue, EncodedChunk, EncoderConfig, EncoderKind, Frame, FrameLayout, FrameType, InputGate,
    PixelFormat, RateControl, VideoEncoder,
};
use crate::error::Error;

/// A libx265 (HEVC) encoder. Created with [`X265Encoder::new`]; see [`VideoEncoder`] for its
/// use.
#[derive(Debug)]
pub struct X265Encoder {
    x265: X265Handle,
    /// The encoder a rate change opened, which takes over at the next frame (see
    /// [`VideoEncoder::reconfigure`]), with its parameter sets.
    next: Option<(X265Handle, Vec<u8>)>,
    gate: InputGate,
    config: EncoderConfig,
    layout: FrameLayout,
    /// NV12 input's chroma as I420's U then V planes (libx265 takes planar 4:2:0 only), reused
    /// from frame to frame; empty for I420 input.
    chroma: Vec<u8>,
    headers: Vec<u8>,
    bframes: u32,
    /// Decoding timestamps, continuous across a restart (libx265's own start again at each).
    dts: DtsQueue,
    chunks_out: u64,
}

impl X265Encoder {
    /// Opens libx265 with `config`, whose codec must be [`Codec::Hevc`](crate::Codec::Hevc).
    ///
    /// # Errors
    /// [`Error::Config`] if `config` does not validate, or names a codec other than HEVC
    /// ([`ConfigError::CodecUnsupported`](crate::ConfigError::CodecUnsupported));
    /// [`Error::Unavailable`] if the libx265 found at run time has no 8-bit encoder or is not the
    /// build nvencode was compiled against; [`Error::Backend`] if libx265 refuses a setting or
    /// fails to open.
    pub fn new(config: &EncoderConfig) -> Result<Self, Error> {
        let gate = InputGate::new(KIND, config)?;
        let layout = config.pixel_format.plane_layout(config.resolution)?;
        let params = mapping::x265::x265_params(config);
        let mut x265 = X265Handle::open(config, &params)?;
        let headers = x265.sequence_headers()?;
        let (bframes, delay) = x265.reordering()?;
        let chroma = match config.pixel_format {
            PixelFormat::I420 => Vec::new(),
            PixelFormat::Nv12 => {
                vec![0; layout.planes.get(1).map_or(0, |p| p.stride * p.rows)]
            }
        };
        tracing::debug!(
            resolution = %config.resolution,
            format = %config.pixel_format,
            preset = %config.preset,
            tune = ?config.tune,
            crf = config.crf,
            rate_control = %config.rate_control,
            gop = config.gop_size,
            bframes,
            threads = config.threads,
            "opened x265"
        );
        Ok(X265Encoder {
            x265,
            next: None,
            gate,
            config: config.clone(),
            layout,
            chroma,
            headers,
            bframes,
            dts: DtsQueue::new(delay),
            chunks_out: 0,
        })
    }

    fn push_chunk(&mut self, encoded: Encoded, out: &mut Vec<EncodedChunk>) {
        let frame_type = match u32::try_from(encoded.slice_type).unwrap_or(u32::MAX) {
            sys::X265_TYPE_IDR => FrameType::Idr,
            sys::X265_TYPE_I => FrameType::I,
            sys::X265_TYPE_B | sys::X265_TYPE_BREF => FrameType::B,
            _ => FrameType::P,
        };
        self.chunks_out += 1;
        // libx265's dts follows the same rule (output k gets the pts of input k - delay), but
        // starts again with every encoder; this one runs on across a restart.
        let dts = self.dts.next().min(encoded.pts);
        out.push(EncodedChunk {
            data: encoded.data,
            pts: encoded.pts,
            dts,
            duration: 1,
            keyframe: encoded.keyframe,
            frame_type,
            frame_index: encoded.frame_index,
        });
    }

    /// Drains every frame the running libx265 still holds into `out`. Each call without input
    /// returns at most one delayed picture, and none once libx265 holds no more; the bound (more
    /// calls than frames were accepted, plus slack) turns a library that never drains into an
    /// error instead of a hang. Calling it again after it drained (or after it failed part way)
    /// goes on from where it stopped.
    fn drain(&mut self, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        let limit = self.gate.accepted().saturating_add(1_000);
        let mut calls = 0u64;
        loop {
            calls += 1;
            if calls > limit {
                return Err(Error::Backend {
                    backend: KIND,
                    call: "x265_encoder_encode",
                    message: "the encoder did not drain its delayed frames".into(),
                });
            }
            match self.x265.encode(None)? {
                Some(encoded) => self.push_chunk(encoded, out),
                None => return Ok(()),
            }
        }
    }
}

/// The three I420 planes of a frame for libx265, with their strides: I420 input as it is; NV12's
/// interleaved chroma split into `chroma` (U then V, each half the luma stride).
fn i420_planes<'a>(
    data: &'a [u8],
    layout: &FrameLayout,
    chroma: &'a mut [u8],
) -> Result<[(&'a [u8], usize); 3], Error> {
    let plane = |k: usize| -> Result<(&'a [u8], usize), Error> {
        // `plane_layout` derived these from a validated resolution and the gate checked
        // `data.len()` against the frame length, so every plane lies within `data`; `get` keeps
        // that a checked fact instead of an assumption.
        layout
            .planes
            .get(k)
            .and_then(|p| Some((data.get(p.offset..p.offset + p.stride * p.rows)?, p.stride)))
            .ok_or_else(|| {
                super::handle::backend_error("x265_encoder_encode", "plane out of range")
            })
    };
    let luma = plane(0)?;
    if layout.planes.len() == 3 {
        return Ok([luma, plane(1)?, plane(2)?]);
    }
    let (uv, uv_stride) = plane(1)?;
    let half = uv_stride / 2;
    let (u, v) = chroma.split_at_mut(chroma.len() / 2);
    for ((row, u), v) in uv
        .chunks_exact(uv_stride)
        .zip(u.chunks_exact_mut(half))
        .zip(v.chunks_exact_mut(half))
    {
        for ((pair, u), v) in row.chunks_exact(2).zip(u).zip(v) {
            *u = pair[0];
            *v = pair[1];
        }
    }
    Ok([luma, (u, half), (v, half)])
}

impl VideoEncoder for X265Encoder {
    fn encode(&mut self, frame: Frame<'_>, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        let (frame_index, pts) = self.gate.check(&frame)?;
        if self.next.is_some() {
            // A rate change: the running encoder gives up every frame it holds, then the new
            // one takes over with this frame, an IDR with its own parameter sets.
            self.drain(out)?;
            if let Some((next, headers)) = self.next.take() {
                self.x265 = next;
                self.headers = headers;
            }
        }
        let planes = i420_planes(frame.data, &self.layout, &mut self.chroma)?;
        let input = Input {
            planes,
            pts,
            frame_index,
            force_idr: frame.force_keyframe,
        };
        let encoded = self.x265.encode(Some(input))?;
        self.gate.accept(pts);
        self.dts.push(pts);
        if let Some(encoded) = encoded {
            self.push_chunk(encoded, out);
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        if self.gate.is_finished() {
            return Ok(());
        }
        self.drain(out)?;
        // A rate change after the last frame has no frame to apply to.
        self.next = None;
        self.gate
            .finish_accounted(self.chunks_out, "x265_encoder_encode")
    }

    /// Moves the stream to a new libx265 encoder opened with the new rate control, which takes
    /// over at the next frame: that frame is an IDR with fresh VPS/SPS/PPS, as after a restart
    /// of the ffmpeg backends, and every frame the running encoder holds comes out first. Any
    /// change of rate or mode is possible; [`VideoEncoder::config`] reports it at once.
    ///
    /// libx265 3.5's own `x265_encoder_reconfig` cannot do this in place: it accepts a new bit
    /// rate and VBV and reports success, but its `Encoder::configure` points the encoder's
    /// parameters at the new set while the rate control keeps reading the set it was created
    /// with (`source/encoder/api.cpp`, `x265_encoder_reconfig`; `encoder.cpp`,
    /// `Encoder::configure` and `RateControl::reconfigureRC`), so the rate never changes (a
    /// stream lowered from 3 to 0.3 Mbit/s went on at 2.86 Mbit/s, as one never lowered).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid setting and [`Error::Backend`] if libx265 refuses to
    /// open with it: nothing changed, the running encoder goes on. [`Error::Finished`] after
    /// [`VideoEncoder::flush`].
    fn reconfigure(&mut self, rate_control: RateControl) -> Result<(), Error> {
        if self.gate.is_finished() {
            return Err(Error::Finished { backend: KIND });
        }
        rate_control.validate()?;
        let old = self.config.rate_control;
        let new_config = self.config.clone().with_rate_control(rate_control);
        let params = mapping::x265::x265_params(&new_config);
        if params.rc == mapping::x265::x265_rc(&self.config) {
            // Nothing libx265 would be given changes (constant quality to itself).
            self.config = new_config;
            return Ok(());
        }
        let mut next = X265Handle::open(&new_config, &params)?;
        let headers = next.sequence_headers()?;
        self.next = Some((next, headers));
        tracing::debug!(
            from = %old,
            to = %rate_control,
            at_frame = self.gate.accepted(),
            "x265: a new encoder takes over at the next frame"
        );
        self.config = new_config;
        Ok(())
    }

    fn kind(&self) -> EncoderKind {
        KIND
    }

    fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// The VPS, SPS and PPS (Annex B), for `hvcC`.
    fn sequence_headers(&self) -> &[u8] {
        &self.headers
    }

    /// The B-frames libx265 settled on after its preset, tune and checks.
    fn bframes_in_use(&self) -> Option<u32> {
        Some(self.bframes)
    }
}

#[cfg(test)]
mod tests {
    use super::super::handle::{RC_ABR as ABR, RC_CQP as CQP, RC_CRF as CRF};
    use super::*;
    use crate::encoder::{Bitrate, Codec};

    fn hevc(width: u32, height: u32) -> EncoderConfig {
        EncoderConfig::new(width, height)
            .with_codec(Codec::Hevc)
            .with_preset(crate::Preset::Ultrafast)
            .with_threads(1)
    }

    /// The VBV reaches libx265 at open and through a reconfiguration (a new encoder, which takes
    /// over at the next frame), and constant QP and CRF reach it as themselves.
    #[test]
    fn libx265_runs_with_the_mapped_rate_control() {
        let rc = RateControl::vbr(Bitrate::from_bps(2_000_000), Bitrate::from_bps(2_500_000))
            .with_vbv_buffer_bits(250_000);
        let config = hevc(64, 64).with_rate_control(rc);
        let mut encoder = X265Encoder::new(&config).unwrap();
        let (mode, bitrate, max, buffer, _, _) = encoder.x265.rate_control();
        assert_eq!((mode, bitrate, max, buffer), (ABR, 2_000, 2_500, 250));
        let frame = vec![128u8; config.validate().unwrap()];
        let mut out = Vec::new();
        encoder.encode_frame(&frame, &mut out).unwrap();
        let lower = RateControl::vbr(Bitrate::from_bps(1_000_000), Bitrate::from_bps(1_200_000))
            .with_vbv_buffer_bits(120_000);
        encoder.reconfigure(lower).unwrap();
        assert_eq!(encoder.config().rate_control, lower);
        encoder.encode_frame(&frame, &mut out).unwrap();
        assert!(encoder.next.is_none(), "the new encoder took over");
        let (mode, bitrate, max, buffer, _, _) = encoder.x265.rate_control();
        assert_eq!((mode, bitrate, max, buffer), (ABR, 1_000, 1_200, 120));
        // Any mode: constant QP from here on.
        encoder.reconfigure(RateControl::constant_qp(40)).unwrap();
        encoder.encode_frame(&frame, &mut out).unwrap();
        let (mode, .., qp) = encoder.x265.rate_control();
        assert_eq!((mode, qp), (CQP, 40));
        encoder.flush(&mut out).unwrap();
        assert_eq!(out.len(), 3);
        let keyframes: Vec<u64> = out
            .iter()
            .filter(|c| c.keyframe)
            .map(|c| c.frame_index)
            .collect();
        assert_eq!(keyframes, [0, 1, 2], "each new encoder starts with an IDR");

        let cqp = hevc(64, 64).with_rate_control(RateControl::constant_qp(31));
        let mut encoder = X265Encoder::new(&cqp).unwrap();
        let (mode, .., qp) = encoder.x265.rate_control();
        assert_eq!((mode, qp), (CQP, 31));
        let crf = hevc(64, 64).with_crf(26.5);
        let mut encoder = X265Encoder::new(&crf).unwrap();
        let (mode, _, max, _, rf, _) = encoder.x265.rate_control();
        assert_eq!((mode, max, rf), (CRF, 0, 26.5));
    }

    #[test]
    fn gop_is_closed_with_headers_on_every_idr() {
        let mut encoder = X265Encoder::new(&hevc(64, 64).with_gop_size(48)).unwrap();
        let (max, min, open, repeat) = encoder.x265.gop();
        // keyframeMin: x265's automatic min(keyframeMax / 10, fps), as x264's.
        assert_eq!((max, min, open, repeat), (48, 4, 0, 1));
        assert_eq!(encoder.bframes_in_use(), Some(3), "ultrafast's B-frames");
        let none = X265Encoder::new(&hevc(64, 64).with_bframes(Some(0))).unwrap();
        assert_eq!(none.bframes_in_use(), Some(0));
    }

    /// A picture smaller than the preset's CTU opens with a smaller one (placebo: 64, with the
    /// deepest transform trees); one below 16x16, HEVC's smallest CTU, is refused naming it.
    #[test]
    fn small_pictures_open_down_to_one_16x16_ctu() {
        for (w, h) in [(16, 16), (18, 640), (66, 34)] {
            for preset in [
                crate::Preset::Ultrafast,
                crate::Preset::Medium,
                crate::Preset::Placebo,
            ] {
                let config = hevc(w, h).with_preset(preset);
                let mut encoder = X265Encoder::new(&config).unwrap();
                let frame = vec![100u8; config.validate().unwrap()];
                let mut out = Vec::new();
                encoder.encode_frame(&frame, &mut out).unwrap();
                encoder.flush(&mut out).unwrap();
                assert_eq!(out.len(), 1, "{w}x{h} {preset}");
            }
        }
        let err = X265Encoder::new(&hevc(8, 64)).unwrap_err();
        assert!(err.to_string().contains("at least 16x16"), "{err}");
    }

    #[test]
    fn nv12_chroma_is_split_into_u_and_v() {
        let config = hevc(4, 2).with_pixel_format(PixelFormat::Nv12);
        let layout = config.pixel_format.plane_layout(config.resolution).unwrap();
        let data = [0, 1, 2, 3, 4, 5, 6, 7, 10, 20, 11, 21];
        let mut chroma = vec![0; 4];
        let planes = i420_planes(&data, &layout, &mut chroma).unwrap();
        assert_eq!(planes[0], (&data[..8], 4));
        assert_eq!(planes[1], (&[10u8, 11][..], 2));
        assert_eq!(planes[2], (&[20u8, 21][..], 2));
    }

    #[test]
    fn an_h264_config_is_refused_naming_the_codec() {
        let err = X265Encoder::new(&EncoderConfig::new(64, 64)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Config(crate::ConfigError::CodecUnsupported {
                    backend: EncoderKind::X265,
                    codec: Codec::H264,
                    ..
                })
            ),
            "{err:?}"
        );
    }
}
