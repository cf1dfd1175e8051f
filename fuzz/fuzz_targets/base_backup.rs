//! Arbitrary bytes as a base backup manifest downloaded from object
//! storage: decoded (CRC, limits, segment order, file paths that stay
//! inside the store directory) or refused, never a panic; a manifest that
//! decodes re-encodes to its bytes. Arbitrary names: parsed or refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_engine::archive::BaseBackup;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = BaseBackup::decode(data) {
        assert_eq!(b.encode(), data, "re-encodes");
        for f in &b.files {
            assert!(
                f.path
                    .split('/')
                    .all(|c| !c.is_empty() && c != "." && c != ".."),
                "{}",
                f.path
            );
        }
        assert_eq!(
            BaseBackup::parse_manifest_object(&b.manifest_object()),
            Some((b.lsn, b.taken_us))
        );
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = BaseBackup::parse_manifest_object(s);
    }
});
