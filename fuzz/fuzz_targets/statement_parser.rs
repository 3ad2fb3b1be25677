//! brook's statement parser (script splitting, CREATE STREAM / SINK, SET,
//! and DataFusion's parser on the same tokens) on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sql) = std::str::from_utf8(data) {
        brook::fuzzing::parse_script(sql);
    }
});
