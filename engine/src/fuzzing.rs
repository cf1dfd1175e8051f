//! Entry points for the fuzz targets (`fuzz/`) into decoders that are not
//! public API. Not for other use; no stability promised.

use std::path::Path;

/// Decodes `bytes` as a key store manifest; one that decodes must encode
/// back to the same bytes.
pub fn key_manifest(bytes: &[u8]) {
    if let Ok(m) = crate::index::keys::files::Manifest::decode(bytes) {
        assert_eq!(m.encode(), bytes, "a manifest re-encodes to its bytes");
    }
}

/// Writes `bytes` as a key run file in `dir`, opens it and reads it whole
/// and from a key in the middle: a damaged file is refused or its damage
/// reported, never a panic, and what is read is in strictly increasing
/// key order.
pub fn key_run(dir: &Path, bytes: &[u8]) {
    let path = dir.join("000000000001.run");
    if std::fs::write(&path, bytes).is_err() {
        return;
    }
    let Ok(file) = crate::index::keys::runfile::RunFile::open(&path, 1, None) else {
        return;
    };
    let mut last: Option<Vec<u8>> = None;
    let mut middle = None;
    for (i, row) in file.range(&[], None).enumerate() {
        let Ok((key, _)) = row else { return };
        assert!(last.as_ref().is_none_or(|l| *l < key), "keys increase");
        if i == 1 {
            middle = Some(key.clone());
        }
        last = Some(key);
    }
    if let Some(m) = middle {
        let first = file.range(&m, None).next();
        assert!(
            first.is_some_and(|r| r.is_ok_and(|(k, _)| k == m)),
            "a range starts at its key"
        );
    }
}
