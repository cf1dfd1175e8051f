//! Arbitrary bytes as the newest segment of a store: opening (with and
//! without repair) must fail cleanly or succeed, never panic, and a store
//! that opens must verify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_engine::log::segment::{SEGMENT_HEADER_BYTES, SegmentHeader};
use vigil_engine::{Options, Store};

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let wal = dir.path().join("wal");
    if std::fs::create_dir_all(&wal).is_err() {
        return;
    }
    let mut bytes = SegmentHeader {
        first_lsn: 1,
        prev_tail_crc: 0,
    }
    .encode()
    .to_vec();
    bytes.extend_from_slice(data);
    debug_assert!(bytes.len() >= SEGMENT_HEADER_BYTES);
    if std::fs::write(wal.join("00000000000000000001.seg"), &bytes).is_err() {
        return;
    }
    for repair in [false, true] {
        let opts = Options {
            repair,
            segment_bytes: 64 * 1024,
            ..Options::default()
        };
        if let Ok(store) = Store::open_with(dir.path(), opts) {
            store.verify().expect("a store that opens verifies");
            let _ = store.close();
        }
    }
});
