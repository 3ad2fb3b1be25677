//! The socket's line splitting and decoding (text and CSV) on arbitrary
//! bytes, in one read and cut into reads at arbitrary byte positions: the
//! rows and reports must be the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let csv = control & 1 == 1;
    let max_line_bytes = if control & 2 == 2 { 16 } else { 1 << 20 };
    brook::fuzzing::decode_lines(input, csv, control >> 2, max_line_bytes);
});
