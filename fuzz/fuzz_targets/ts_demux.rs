//! The MPEG-TS demuxer that reads ffmpeg's output: any bytes, fed in any piece size.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&chunk, data)) = input.split_first() else {
        return;
    };
    // Piece sizes from 1 byte to several packets, as pipe reads deliver them.
    let chunk = usize::from(chunk) * 3 + 1;
    nvencode::fuzzing::ts_demux(data, chunk);
});
