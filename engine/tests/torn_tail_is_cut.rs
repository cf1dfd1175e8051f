//! Guards against a crash mid-write leaving a log that will not open, or
//! one that silently keeps half a frame: the last frame truncated at every
//! byte offset must be cut exactly, and everything before it kept.

mod common;

use common::*;
use vigil_engine::{Current, Store};

fn last_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .expect("wal dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

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
    let store = open(base.path());
    for i in 0..20u32 {
        put(&store, "Patient", &format!("p{i}"), patient("p", i));
    }
    store.close().expect("close");
    let seg = last_segment(base.path());
    let before = std::fs::metadata(&seg).expect("stat").len();
    let store = open(base.path());
    put(&store, "Patient", "last", patient("last", 99));
    store.close().expect("close");
    let after = std::fs::metadata(&seg).expect("stat").len();
    assert!(after > before);

    for cut in before..after {
        let work = tempfile::tempdir().expect("tempdir");
        copy_dir(base.path(), work.path());
        let s = last_segment(work.path());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&s)
            .and_then(|f| f.set_len(cut))
            .expect("truncate");
        let store =
            Store::open(work.path()).unwrap_or_else(|e| panic!("open after cut at {cut}: {e}"));
        assert_eq!(
            store.open_report().torn_bytes_cut,
            cut - before,
            "cut at {cut}"
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
        // The store keeps working after the cut.
        put(&store, "Patient", "after", patient("after", 1));
        store.close().expect("close");
        assert_eq!(std::fs::metadata(&s).expect("stat").len() > before, true);
    }
}

#[test]
fn garbage_appended_after_the_last_frame_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    put(&store, "Patient", "a", patient("a", 1));
    store.close().expect("close");
    let seg = last_segment(dir.path());
    let len = std::fs::metadata(&seg).expect("stat").len();
    let mut bytes = std::fs::read(&seg).expect("read");
    bytes.extend_from_slice(&[0u8; 100]);
    std::fs::write(&seg, &bytes).expect("write");
    let store = Store::open(dir.path()).expect("open");
    assert_eq!(store.open_report().torn_bytes_cut, 100);
    assert_eq!(std::fs::metadata(&seg).expect("stat").len(), len);
    assert_eq!(body_of(&store, "Patient", "a"), Some(patient("a", 1)));
}
