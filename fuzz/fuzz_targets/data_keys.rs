//! Arbitrary bytes as an encrypted store reads them back: a data-keys file
//! (decoded, or refused, never a panic; one without a torn tail
//! re-encodes to its bytes), and a sealed body and dictionary from the log
//! opened under a store's data keys (random bytes never open: they would
//! have to name a held key and forge its AES-256-GCM tag).
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use vigil_engine::crypt::datakeys::{DataKeys, decode_file, encode_file};
use vigil_engine::crypt::keyfile::KeyFile;

fn keys() -> &'static DataKeys {
    static KEYS: OnceLock<DataKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vigil-fuzz-data-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let kek = KeyFile::create(&dir.join("fuzz.key"), "fuzz").expect("key file");
        DataKeys::open(&dir, Arc::new(kek)).expect("data keys")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = decode_file(data)
        && f.valid_len == data.len() as u64
    {
        assert_eq!(encode_file(&f.entries), data, "re-encodes");
    }
    let k = keys();
    assert!(k.open_body(data.len() as u32, 0, data).is_err());
    assert!(k.open_dictionary(1, data).is_err());
    // A body sealed here, then altered by the input, never opens altered.
    let sealed = k.seal_body(5, 9, b"hello").expect("seal");
    if !data.is_empty() && data != sealed.as_slice() {
        let mut altered = sealed.clone();
        for (i, b) in data.iter().enumerate() {
            let at = i % altered.len();
            altered[at] ^= b;
        }
        if altered != sealed {
            assert!(k.open_body(5, 9, &altered).is_err(), "an altered body opened");
        }
    }
});
