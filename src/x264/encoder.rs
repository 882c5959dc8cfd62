//! [`X264Encoder`]: the [`VideoEncoder`] over an [`X264Handle`].

use std::ffi::c_int;

use super::sys;

use super::handle::{apply_rate_control, Encoded, Input, X264Handle, KIND};
use crate::encoder::mapping;
use crate::encoder::{
    EncodedChunk, EncoderConfig, EncoderKind, Frame, FrameLayout, FrameType, InputGate,
    PixelFormat, RateControl, VideoEncoder,
};
use crate::error::Error;

/// A libx264 encoder. Created with [`X264Encoder::new`]; see [`VideoEncoder`] for its use.
#[derive(Debug)]
pub struct X264Encoder {
    x264: X264Handle,
    gate: InputGate,
    config: EncoderConfig,
    layout: FrameLayout,
    csp: c_int,
    headers: Vec<u8>,
    chunks_out: u64,
}

impl X264Encoder {
    /// Opens libx264 with `config`.
    ///
    /// # Errors
    /// [`Error::Config`] if `config` does not validate; [`Error::Backend`] if libx264 refuses a
    /// setting or fails to open.
    pub fn new(config: &EncoderConfig) -> Result<Self, Error> {
        let gate = InputGate::new(KIND, config)?;
        let layout = config.pixel_format.plane_layout(config.resolution)?;
        let csp = match config.pixel_format {
            PixelFormat::I420 => sys::X264_CSP_I420 as c_int,
            PixelFormat::Nv12 => sys::X264_CSP_NV12 as c_int,
        };
        let mut param = X264Handle::default_param(config)?;
        // Sizes and counts below were range-checked by `validate`, so the casts are lossless.
        param.i_width = config.resolution.width as c_int;
        param.i_height = config.resolution.height as c_int;
        param.i_csp = csp;
        param.i_threads = config.threads as c_int;
        param.i_fps_num = config.frame_rate.num;
        param.i_fps_den = config.frame_rate.den;
        param.i_timebase_num = config.frame_rate.den;
        param.i_timebase_den = config.frame_rate.num;
        // Rate control follows the nominal frame rate, not the caller's timestamps.
        param.b_vfr_input = 0;
        param.i_keyint_max = config.gop_size as c_int;
        // Zero latency means no B-frames on every backend (`mapping::bframes`; validation refuses
        // explicit B-frames with it); x264's own zerolatency tune agrees.
        if let Some(bframes) = mapping::bframes(config) {
            param.i_bframe = bframes as c_int;
        }
        apply_rate_control(&mut param, &mapping::x264(config));
        param.b_repeat_headers = 1;
        param.b_annexb = 1;
        let mut x264 = X264Handle::open(&mut param)?;
        let headers = x264.sequence_headers()?;
        tracing::debug!(
            resolution = %config.resolution,
            format = %config.pixel_format,
            preset = %config.preset,
            tune = ?config.tune,
            crf = config.crf,
            rate_control = %config.rate_control,
            gop = config.gop_size,
            bframes = param.i_bframe,
            threads = param.i_threads,
            "opened x264"
        );
        Ok(X264Encoder {
            x264,
            gate,
            config: config.clone(),
            layout,
            csp,
            headers,
            chunks_out: 0,
        })
    }

    fn push_chunk(&mut self, encoded: Encoded, out: &mut Vec<EncodedChunk>) {
        let frame_type = match encoded.pic_type as u32 {
            sys::X264_TYPE_IDR => FrameType::Idr,
            sys::X264_TYPE_I | sys::X264_TYPE_KEYFRAME => FrameType::I,
            sys::X264_TYPE_B | sys::X264_TYPE_BREF => FrameType::B,
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

impl VideoEncoder for X264Encoder {
    fn encode(&mut self, frame: Frame<'_>, out: &mut Vec<EncodedChunk>) -> Result<(), Error> {
        let (frame_index, pts) = self.gate.check(&frame)?;
        let input = Input {
            data: frame.data,
            layout: &self.layout,
            csp: self.csp,
            pts,
            frame_index,
            force_idr: frame.force_keyframe,
        };
        let encoded = self.x264.encode(Some(input))?;
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
        // Each call without input returns at most one delayed frame; x264 counts down what it
        // holds. The bound turns a library that never drains into an error instead of a hang.
        let mut tries = 0u32;
        while self.x264.delayed_frames() > 0 {
            tries += 1;
            if tries > 100_000 {
                return Err(Error::Backend {
                    backend: KIND,
                    call: "x264_encoder_encode",
                    message: "the encoder did not drain its delayed frames".into(),
                });
            }
            if let Some(encoded) = self.x264.encode(None)? {
                self.push_chunk(encoded, out);
            }
        }
        self.gate
            .finish_accounted(self.chunks_out, "x264_encoder_encode")
    }

    fn reconfigure(&mut self, rate_control: RateControl) -> Result<(), Error> {
        if self.gate.is_finished() {
            return Err(Error::Finished { backend: KIND });
        }
        rate_control.validate()?;
        let old = self.config.rate_control;
        let same_mode = old.mode() == rate_control.mode();
        // x264_encoder_reconfig copies the bit rate and VBV only when a VBV was on from the
        // start (CBR and VBR always have one here) and never the method, the QP or the filler
        // flag, so only CBR -> CBR and VBR -> VBR can change; constant quality has nothing to
        // change.
        match rate_control {
            RateControl::ConstantQuality if same_mode => return Ok(()),
            RateControl::Cbr { .. } | RateControl::Vbr { .. } if same_mode => {}
            _ => {
                return Err(Error::Unsupported {
                    backend: KIND,
                    feature: "changing the rate-control mode or the constant QP mid-stream \
                              (x264_encoder_reconfig changes only the bit rate and VBV)",
                })
            }
        }
        let new_config = self.config.clone().with_rate_control(rate_control);
        self.x264.reconfigure(&mapping::x264(&new_config))?;
        tracing::debug!(from = %old, to = %rate_control, "reconfigured x264");
        self.config = new_config;
        Ok(())
    }

    fn kind(&self) -> EncoderKind {
        KIND
    }

    fn config(&self) -> &EncoderConfig {
        &self.config
    }

    fn sequence_headers(&self) -> &[u8] {
        &self.headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::Bitrate;

    /// The VBV reaches libx264 at open and through a reconfiguration (a rate test on smooth
    /// content cannot tell: x264's average-rate control alone stays under the maximum there).
    #[test]
    fn libx264_runs_with_the_mapped_vbv() {
        let rc = RateControl::vbr(Bitrate::from_bps(2_000_000), Bitrate::from_bps(2_500_000))
            .with_vbv_buffer_bits(250_000);
        let config = EncoderConfig::new(64, 64)
            .with_preset(crate::Preset::Ultrafast)
            .with_threads(1)
            .with_rate_control(rc);
        let mut encoder = X264Encoder::new(&config).unwrap();
        let p = encoder.x264.parameters();
        assert_eq!(p.rc.i_rc_method, sys::X264_RC_ABR as c_int);
        assert_eq!(
            (
                p.rc.i_bitrate,
                p.rc.i_vbv_max_bitrate,
                p.rc.i_vbv_buffer_size
            ),
            (2_000, 2_500, 250)
        );
        let lower = RateControl::vbr(Bitrate::from_bps(1_000_000), Bitrate::from_bps(1_200_000))
            .with_vbv_buffer_bits(120_000);
        encoder.reconfigure(lower).unwrap();
        // x264 applies a reconfiguration at its next encode call (with one thread, to the
        // context x264_encoder_parameters reads).
        let frame = vec![128u8; config.validate().unwrap()];
        encoder.encode_frame(&frame, &mut Vec::new()).unwrap();
        let p = encoder.x264.parameters();
        assert_eq!(
            (
                p.rc.i_bitrate,
                p.rc.i_vbv_max_bitrate,
                p.rc.i_vbv_buffer_size
            ),
            (1_000, 1_200, 120)
        );
        let cqp = EncoderConfig::new(64, 64).with_rate_control(RateControl::constant_qp(31));
        let mut encoder = X264Encoder::new(&cqp).unwrap();
        let p = encoder.x264.parameters();
        assert_eq!(
            (p.rc.i_rc_method, p.rc.i_qp_constant),
            (sys::X264_RC_CQP as c_int, 31)
        );
    }
}
