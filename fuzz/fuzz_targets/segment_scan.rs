//! Arbitrary bytes as a segment file: the recovery scan must never panic,
//! every frame it accepts must check and decode, and the streamed scan
//! (reads of a size the input picks) agrees with it whenever it finishes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_engine::log::frame::check_frame;
use vigil_engine::log::segment::{SEGMENT_HEADER_BYTES, SegmentHeader, scan_segment};

fuzz_target!(|data: &[u8]| {
    // Half the inputs get a valid header so the fuzzer reaches the frames.
    let mut bytes = Vec::with_capacity(data.len() + SEGMENT_HEADER_BYTES);
    if data.first().is_some_and(|b| b & 1 == 1) {
        bytes.extend_from_slice(
            &SegmentHeader {
                first_lsn: 1,
                prev_tail_crc: 0,
            }
            .encode(),
        );
        bytes.extend_from_slice(&data[1..]);
    } else {
        bytes.extend_from_slice(data);
    }
    if let Ok(scan) = scan_segment(&bytes) {
        for f in &scan.frames {
            assert!(check_frame(&bytes[f.offset as usize..]).is_ok());
        }
        assert!(scan.valid_len as usize <= bytes.len());
    }
    let step = usize::from(data.get(1).copied().unwrap_or(0)) * 61 + 1;
    vigil_engine::fuzzing::streamed_segment_scan(&bytes, step);
});
