//! The parsers behind encode_yuv's options (`WxH`, frame rate, pixel format, preset, tune,
//! encoder): any text either fails with a typed error or parses to a value whose text parses back
//! to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvencode::{EncoderChoice, FrameRate, PixelFormat, Preset, Resolution, Tune};

fn round_trip<T>(text: &str)
where
    T: std::str::FromStr + std::fmt::Display + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = text.parse::<T>() {
        let again = value.to_string().parse::<T>();
        assert!(
            again.as_ref().ok() == Some(&value),
            "{text:?} parsed to {value:?}, whose text {:?} does not parse back",
            value.to_string()
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    round_trip::<Resolution>(text);
    round_trip::<FrameRate>(text);
    round_trip::<PixelFormat>(text);
    round_trip::<Preset>(text);
    round_trip::<Tune>(text);
    // EncoderChoice has no Display; parsing must simply not panic.
    let _ = text.parse::<EncoderChoice>();
    // Whatever parses into a configuration validates without panicking.
    if let Ok(res) = text.parse::<Resolution>() {
        for format in [PixelFormat::I420, PixelFormat::Nv12] {
            let _ = nvencode::EncoderConfig::new(res.width, res.height)
                .with_pixel_format(format)
                .validate()
                .map_err(|e| e.to_string());
        }
    }
});
