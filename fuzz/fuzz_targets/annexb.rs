//! The Annex B / NAL scanner and the header readers of every codec (H.264 and HEVC NAL headers,
//! parameter sets, slice types, keyframes, codec detection): any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvencode::bitstream::{self, hevc};
use nvencode::{h264, Codec, FrameType};

fuzz_target!(|data: &[u8]| {
    let base = data.as_ptr() as usize;
    let mut previous_end = 0;
    for unit in bitstream::nal_units(data) {
        // Every unit is a piece of the input, after a start code, in order, not overlapping.
        let start = unit.as_ptr() as usize - base;
        assert!(start >= 3 && start + unit.len() <= data.len());
        assert_eq!(&data[start - 3..start], &[0, 0, 1]);
        assert!(start >= previous_end);
        previous_end = start + unit.len();
        // HEVC headers are two bytes, six bits of type.
        if let Some(t) = hevc::nal_unit_type(unit) {
            assert!(unit.len() >= 2 && t < 64);
        }
    }
    let sets = h264::parameter_sets(data);
    assert!(sets.is_empty() || sets.starts_with(&[0, 0, 0, 1]));
    if let Some(t) = h264::first_slice_type(data) {
        assert!(t < 5);
    }
    let _ = h264::is_idr(data);
    // The second half of the input as the stream's earlier parameter sets.
    let (au, context) = data.split_at(data.len() / 2);
    if let Some(t) = hevc::first_slice_type(au, context) {
        assert!(t <= 2);
    }
    for codec in [Codec::H264, Codec::Hevc] {
        let sets = bitstream::parameter_sets(codec, data);
        // Every unit extracted is a parameter set of that codec, behind a 4-byte start code.
        assert!(sets.is_empty() || sets.starts_with(&[0, 0, 0, 1]));
        for unit in bitstream::nal_units(&sets) {
            assert!(bitstream::parameter_set(codec, unit).is_some());
        }
        let keyframe = bitstream::is_keyframe(codec, data);
        // An IDR picture is a keyframe (an HEVC CRA is a keyframe of type I).
        if bitstream::frame_type(codec, au, context) == Some(FrameType::Idr) {
            assert!(bitstream::is_keyframe(codec, au));
        }
        let _ = (keyframe, bitstream::nal_types(codec, data));
    }
    if let Some(codec) = bitstream::detect(data) {
        // Detection reads a parameter set of the codec it names.
        assert!(bitstream::nal_units(data).any(|u| bitstream::parameter_set(codec, u).is_some()));
    }
});
