//! [`X265Encoder`]: the [`VideoEncoder`] over an [`X265Handle`].

use super::sys;

use super::handle::{Encoded, Input, X265Handle, KIND};
use crate::encoder::mapping;
use crate::encoder::{
    EncodedChunk, EncoderConfig, EncoderKind, Frame, FrameLayout, FrameType, InputGate,
    PixelFormat, RateControl, VideoEncoder,
};
use crate::error::Error;

/// A libx265 (HEVC) encoder. Created with [`X265Encoder::new`]; see [`VideoEncoder`] for its
/// use.
#[derive(Debug)]
pub struct X265Encoder {
    x265: X265Handle,
    gate: InputGate,
    config: EncoderConfig,
    layout: FrameLayout,
    /// NV12 input's chroma as I420's U then V planes (libx265 takes planar 4:2:0 only), reused
    /// from frame to frame; empty for I420 input.
    chroma: Vec<u8>,
    headers: Vec<u8>,
    bframes: u32,
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
        let bframes = x265.bframes()?;
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
            gate,
            config: config.clone(),
            layout,
            chroma,
            headers,
            bframes,
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
        out.push(EncodedChunk {
            data: encoded.data,
            pts: encoded.pts,
            dts: encoded.dts,
            duration: 1,
            keyframe: encoded.keyframe,
            frame_type,
            frame_index: encoded.frame_index,
        });
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
        let planes = i420_planes(frame.data, &self.layout, &mut self.chroma)?;
        let input = Input {
            planes,
            pts,
            frame_index,
            force_idr: frame.force_keyframe,
        };
        let encoded = self.x265.encode(Some(input))?;
        self.gate.accept(pts);
        if let Some(encoded) = encoded {
            self.push_chunk(encoded, out);
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        if self.gate.is_finished() {
            return Ok(());
        }
        // Each call without input returns at most one delayed picture, and 0 once libx265 holds
        // none. The bound (more calls than frames were accepted, plus slack) turns a library
        // that never drains into an error instead of a hang.
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
                None => break,
            }
        }
        self.gate
            .finish_accounted(self.chunks_out, "x265_encoder_encode")
    }

    fn reconfigure(&mut self, rate_control: RateControl) -> Result<(), Error> {
        if self.gate.is_finished() {
            return Err(Error::Finished { backend: KIND });
        }
        rate_control.validate()?;
        let old = self.config.rate_control;
        let same_mode = old.mode() == rate_control.mode();
        // x265_encoder_reconfig copies the bit rate and the CRF, and the VBV only when a VBV was
        // on from the start (CBR and VBR always have one here); never the method or the QP. So
        // only CBR -> CBR and VBR -> VBR can change; constant quality has nothing to change.
        match rate_control {
            RateControl::ConstantQuality if same_mode => return Ok(()),
            RateControl::Cbr { .. } | RateControl::Vbr { .. } if same_mode => {}
            _ => {
                return Err(Error::Unsupported {
                    backend: KIND,
                    feature: "changing the rate-control mode or the constant QP mid-stream \
                              (x265_encoder_reconfig changes only the bit rate and VBV)",
                })
            }
        }
        let new_config = self.config.clone().with_rate_control(rate_control);
        let (from, to) = (
            mapping::x265::x265_rc(&self.config),
            mapping::x265::x265_rc(&new_config),
        );
        if from != to {
            self.x265.reconfigure(&to)?;
        }
        tracing::debug!(from = %old, to = %rate_control, "reconfigured x265");
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
    use super::super::handle::{ABR, CQP, CRF};
    use super::*;
    use crate::encoder::{Bitrate, Codec};

    fn hevc(width: u32, height: u32) -> EncoderConfig {
        EncoderConfig::new(width, height)
            .with_codec(Codec::Hevc)
            .with_preset(crate::Preset::Ultrafast)
            .with_threads(1)
    }

    /// The VBV reaches libx265 at open and through a reconfiguration, and constant QP and CRF
    /// reach it as themselves.
    #[test]
    fn libx265_runs_with_the_mapped_rate_control() {
        let rc = RateControl::vbr(Bitrate::from_bps(2_000_000), Bitrate::from_bps(2_500_000))
            .with_vbv_buffer_bits(250_000);
        let config = hevc(64, 64).with_rate_control(rc);
        let mut encoder = X265Encoder::new(&config).unwrap();
        let (mode, bitrate, max, buffer, _, _) = encoder.x265.rate_control();
        assert_eq!((mode, bitrate, max, buffer), (ABR, 2_000, 2_500, 250));
        let lower = RateControl::vbr(Bitrate::from_bps(1_000_000), Bitrate::from_bps(1_200_000))
            .with_vbv_buffer_bits(120_000);
        encoder.reconfigure(lower).unwrap();
        assert_eq!(encoder.config().rate_control, lower);
        let frame = vec![128u8; config.validate().unwrap()];
        let mut out = Vec::new();
        for _ in 0..4 {
            encoder.encode_frame(&frame, &mut out).unwrap();
        }
        encoder.flush(&mut out).unwrap();
        assert_eq!(out.len(), 4);

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
