//! Guards against a crash mid-write leaving a log that will not open, or
//! one that silently keeps half a frame: the last frame truncated at every
//! byte offset must be cut exactly, and everything before it kept.

mod common;

use common::*;
use vigil_engine::{Current, Store};
use vigil_testkit::small_store;

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to.join("wal")).expect("mkdir");
    for sub in ["wal", ""] {
        for e in std::fs::read_dir(from.join(sub)).expect("read") {
            let p = e.expect("entry").path();
            if p.is_file() {
                std::fs::copy(&p, to.join(sub).join(p.file_name().expect("name"))).expect("copy");
            }
        }
    }
}

#[test]
fn the_last_frame_cut_at_every_offset_is_removed_exactly() {
    let base = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(base.path(), small_store(64 * 1024, false)).expect("open");
    for i in 0..20u32 {
        put(&store, "Patient", &format!("p{i}"), patient("p", i));
    }
    let before = store.stats().expect("stats").log_bytes;
    put(&store, "Patient", "last", patient("last", 99));
    let after = store.stats().expect("stats").log_bytes;
    store.close().expect("close");
    assert_eq!(segments(base.path()).len(), 1, "one segment holds it all");
    assert!(after > before);

    for cut in before..after {
        let work = tempfile::tempdir().expect("tempdir");
        copy_dir(base.path(), work.path());
        let seg = segments(work.path()).pop().expect("segment");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .and_then(|f| f.set_len(cut))
            .expect("truncate");
        let store = Store::open_with(work.path(), small_store(64 * 1024, false))
            .unwrap_or_else(|e| panic!("open after cut at {cut}: {e}"));
        // The torn frame's non-zero bytes were cut (a cut just after zero
        // bytes of its header leaves fewer non-zero bytes than were kept).
        let torn = store.open_report().torn_bytes_cut;
        assert!(torn <= cut - before, "cut at {cut}: {torn} bytes reported");
        assert_eq!(
            torn == 0,
            cut == before,
            "cut at {cut}: {torn} bytes reported"
        );
        let bytes = std::fs::read(&seg).expect("read");
        assert!(
            bytes[before as usize..].iter().all(|b| *b == 0),
            "cut at {cut}: torn bytes remain"
        );
        assert_eq!(
            store.get("Patient", "last").expect("get"),
            Current::NeverExisted,
            "cut at {cut}"
        );
        for i in 0..20u32 {
            assert_eq!(
                body_of(&store, "Patient", &format!("p{i}")),
                Some(patient("p", i))
            );
        }
        // The store keeps working after the cut, and what it writes stays.
        put(&store, "Patient", "after", patient("after", 1));
        store.close().expect("close");
        let store = Store::open_with(work.path(), small_store(64 * 1024, false)).expect("reopen");
        assert_eq!(
            body_of(&store, "Patient", "after"),
            Some(patient("after", 1)),
            "cut at {cut}"
        );
    }
}

#[test]
fn garbage_appended_after_the_last_frame_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(dir.path(), small_store(64 * 1024, false)).expect("open");
    put(&store, "Patient", "a", patient("a", 1));
    let end = store.stats().expect("stats").log_bytes as usize;
    store.close().expect("close");
    let seg = segments(dir.path()).pop().expect("segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    bytes[end..end + 100].fill(0xAB);
    std::fs::write(&seg, &bytes).expect("write");
    let store = Store::open_with(dir.path(), small_store(64 * 1024, false)).expect("open");
    assert_eq!(store.open_report().torn_bytes_cut, 100);
    let after = std::fs::read(&seg).expect("read");
    assert!(after[end..].iter().all(|b| *b == 0));
    assert_eq!(body_of(&store, "Patient", "a"), Some(patient("a", 1)));
}
