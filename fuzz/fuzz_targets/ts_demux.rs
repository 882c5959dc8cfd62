//! The MPEG-TS demuxer that reads ffmpeg's output: any bytes, fed in any piece size, looking for
//! an H.264 or an HEVC stream.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&first, data)) = input.split_first() else {
        return;
    };
    // The top bit picks the codec; the rest piece sizes from 1 byte to a couple of packets, as
    // pipe reads deliver them.
    let hevc = first & 0x80 != 0;
    let chunk = usize::from(first & 0x7f) * 3 + 1;
    nvencode::fuzzing::ts_demux(data, chunk, hevc);
});
