//! Arbitrary bytes as encrypted data read back from disk: a wrapped data
//! key's encoding, a sealed value opened under a known key, and a wrapped
//! key unwrapped by a key file's KEK. Nothing panics; altered bytes never
//! open.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_engine::crypt::{DataKey, WrappedKey};

fuzz_target!(|data: &[u8]| {
    if let Ok(w) = WrappedKey::decode(data) {
        assert_eq!(w.encode(), data);
    }
    let key = DataKey::from_bytes([7; 32]);
    // Random bytes forging a valid AES-256-GCM tag would be a break of
    // the cipher: opening must fail.
    assert!(key.open(b"fuzz", data, "fuzzed bytes").is_err());
});
