//! The MP4 sink's `hvcC` record, built from the first HEVC VPS, SPS and PPS of any bytes (the
//! SPS reader with its Exp-Golomb codes and emulation-prevention bytes), encoded and decoded
//! back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nvencode::fuzzing::hvcc(data);
});
