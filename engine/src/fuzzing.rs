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

/// Scans `bytes` as a segment both ways, streamed through a reader that
/// hands out at most `step` bytes a read (as a file may) and whole: a
/// streamed scan that finishes is the whole scan (frames, end, stop).
pub fn streamed_segment_scan(bytes: &[u8], step: usize) {
    /// A reader of `bytes` in reads of at most `step`.
    struct Trickle<'a>(&'a [u8], usize);
    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.1).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut r = Trickle(bytes, step.max(1));
    let Ok(Some(s)) = crate::log::scanner::scan_segment_stream(&mut r, bytes.len() as u64) else {
        return;
    };
    let whole = crate::log::segment::scan_segment(bytes)
        .expect("the whole scan reads what the streamed one did");
    assert_eq!(s.header, whole.header);
    assert_eq!(s.valid_len, whole.valid_len);
    let frames = |x: &crate::log::segment::SegmentScan| -> Vec<(u64, u64)> {
        x.frames
            .iter()
            .map(|f| (f.offset, f.header.end_lsn()))
            .collect()
    };
    assert_eq!(frames(&s), frames(&whole));
    assert_eq!(
        s.stop.map(|x| (x.offset, x.zero_tail, x.error.to_string())),
        whole
            .stop
            .map(|x| (x.offset, x.zero_tail, x.error.to_string()))
    );
}
