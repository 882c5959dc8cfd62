//! The Annex B / NAL scanner and slice-header reader: any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvencode::h264;

fuzz_target!(|data: &[u8]| {
    let base = data.as_ptr() as usize;
    let mut previous_end = 0;
    for unit in h264::nal_units(data) {
        // Every unit is a piece of the input, after a start code, in order, not overlapping.
        let start = unit.as_ptr() as usize - base;
        assert!(start >= 3 && start + unit.len() <= data.len());
        assert_eq!(&data[start - 3..start], &[0, 0, 1]);
        assert!(start >= previous_end);
        previous_end = start + unit.len();
    }
    let sets = h264::parameter_sets(data);
    assert!(sets.is_empty() || sets.starts_with(&[0, 0, 0, 1]));
    if let Some(t) = h264::first_slice_type(data) {
        assert!(t < 5);
    }
    let _ = h264::is_idr(data);
});
