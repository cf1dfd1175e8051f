//! Arbitrary bytes as a frame (from disk or a peer): checking and decoding
//! must never panic or allocate beyond the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_engine::log::frame::{FRAME_HEADER_BYTES, check_frame, decode_records, parse_header};

fuzz_target!(|data: &[u8]| {
    let _ = parse_header(data);
    if let Ok(h) = check_frame(data) {
        let payload = &data[FRAME_HEADER_BYTES..h.frame_len() as usize];
        if let Ok(records) = decode_records(&h, payload) {
            assert_eq!(records.len() as u64, u64::from(h.record_count));
        }
    }
});
