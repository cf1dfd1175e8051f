//! Arbitrary bytes as a replication message from a peer: length checks
//! and decoding must never panic or allocate beyond the limit, and what
//! decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_net::proto::wire::Message;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        let _ = Message::body_len([data[0], data[1], data[2], data[3]]);
    }
    if let Ok(m) = Message::decode(data) {
        assert_eq!(&m.encode()[4..], data);
    }
});
