//! The encoder contract, run against the x264 backend, with FFmpeg as the independent decoder.

mod common;

use nvencode::{EncoderConfig, VideoEncoder};

/// At crf 18 (x264's "visually lossless" region) on the synthetic pattern, the lowest frame
/// measured 46.7 dB and the mean 51.3 dB with Debian's libx264 (build 164) when this was
/// written; 38 dB leaves room for other libx264 builds while still failing on any real
/// corruption (swapped chroma planes, a frame out of place, or a lost frame drop PSNR far
/// below 30 dB).
const PSNR_FLOOR_DB: f64 = 38.0;

fn open_x264(config: &EncoderConfig) -> Result<Box<dyn VideoEncoder>, nvencode::Error> {
    Ok(Box::new(nvencode::X264Encoder::new(config)?))
}

contract_tests!(open_x264);
