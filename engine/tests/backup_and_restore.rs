//! Backups taken while the store commits are consistent at an LSN, grow
//! incrementally, are verified frame by frame (damage named by segment and
//! offset), and restore the store as it was at any LSN or time they cover.

mod common;

use common::*;
use vigil_engine::{RestoreTarget, Store, backup, restore, verify_backup};
use vigil_testkit::small_store;

#[test]
fn online_incremental_backup_restores_any_point() {
    let (src, bak) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let store = std::sync::Arc::new(
        Store::open_with(
            src.path(),
            small_store(vigil_engine::limits::SEGMENT_BYTES_MIN * 16, false),
        )
        .expect("open"),
    );
    for i in 0..200 {
        put(&store, "Patient", &format!("p{i}"), patient("p", i));
    }
    // A backup while another thread keeps committing.
    let writer = {
        let s = store.clone();
        std::thread::spawn(move || {
            for i in 0..300 {
                put(&s, "Observation", &format!("o{i}"), patient("o", i));
            }
        })
    };
    let mut calls = 0;
    let first = backup(src.path(), bak.path(), &mut |_| calls += 1).expect("backup");
    writer.join().expect("writer");
    assert!(calls > 0, "progress reported");
    assert!(
        first.last_lsn > 200,
        "the EpochStart and 200 puts at least: {first:?}"
    );
    let v = verify_backup(bak.path(), &mut |_| {}).expect("verify");
    assert_eq!(v.last_lsn, first.last_lsn);
    // Incremental: only what is new is copied.
    let mid_lsn = store.last_lsn();
    let mid_time = store
        .frame_at(mid_lsn)
        .expect("frame")
        .expect("exists")
        .timestamp_us;
    for i in 0..50 {
        put(&store, "Patient", &format!("p{i}"), patient("changed", i));
    }
    let second = backup(src.path(), bak.path(), &mut |_| {}).expect("again");
    assert_eq!(second.previous_lsn, first.last_lsn);
    assert_eq!(second.last_lsn, store.last_lsn());
    let held: u64 = std::fs::read_dir(bak.path().join("wal"))
        .expect("wal")
        .map(|e| e.expect("entry").metadata().expect("meta").len())
        .sum();
    assert_eq!(
        first.bytes_copied + second.bytes_copied,
        held,
        "the second run copied only what the first lacked"
    );
    assert!(first.bytes_copied > 0 && second.bytes_copied < held);
    let third = backup(src.path(), bak.path(), &mut |_| {}).expect("up to date");
    assert_eq!(third.bytes_copied, 0, "nothing new");
    // Restore the latest state: the same content.
    let r1 = tempfile::tempdir().expect("dir");
    let rep = restore(bak.path(), r1.path(), RestoreTarget::Latest, &mut |_| {}).expect("restore");
    assert_eq!(rep.last_lsn, store.last_lsn());
    let restored = Store::open_with(
        r1.path(),
        small_store(vigil_engine::limits::SEGMENT_BYTES_MIN * 16, false),
    )
    .expect("open restored");
    assert_eq!(
        body_of(&restored, "Patient", "p3"),
        Some(patient("changed", 3))
    );
    assert_eq!(
        body_of(&restored, "Observation", "o299"),
        Some(patient("o", 299))
    );
    restored.verify().expect("index equals a rebuild");
    // At an LSN, and at a time: the state before the last 50 updates.
    for target in [RestoreTarget::Lsn(mid_lsn), RestoreTarget::Time(mid_time)] {
        let d = tempfile::tempdir().expect("dir");
        let rep = restore(bak.path(), d.path(), target, &mut |_| {}).expect("restore");
        assert_eq!(rep.last_lsn, mid_lsn, "{target:?}");
        let s = Store::open_with(
            d.path(),
            small_store(vigil_engine::limits::SEGMENT_BYTES_MIN * 16, false),
        )
        .expect("open");
        assert_eq!(
            body_of(&s, "Patient", "p3"),
            Some(patient("p", 3)),
            "{target:?}"
        );
        assert_eq!(s.last_lsn(), mid_lsn);
    }
    // A restored store is writable (a new leader).
    put(&restored, "Patient", "new", patient("new", 1));
    // Restoring over a store is refused; so is a point the backup lacks.
    assert!(restore(bak.path(), r1.path(), RestoreTarget::Latest, &mut |_| {}).is_err());
    let d = tempfile::tempdir().expect("dir");
    assert!(
        restore(
            bak.path(),
            d.path(),
            RestoreTarget::Lsn(u64::MAX),
            &mut |_| {}
        )
        .is_err()
    );
}

#[test]
fn damage_in_a_backup_is_named_and_a_diverged_store_is_refused() {
    let (src, bak) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let store = Store::open_with(
        src.path(),
        small_store(vigil_engine::limits::SEGMENT_BYTES_MIN * 16, false),
    )
    .expect("open");
    for i in 0..50 {
        put(&store, "Patient", &format!("p{i}"), patient("p", i));
    }
    backup(src.path(), bak.path(), &mut |_| {}).expect("backup");
    let seg = std::fs::read_dir(bak.path().join("wal"))
        .expect("wal")
        .next()
        .expect("a segment")
        .expect("entry")
        .path();
    let mut bytes = std::fs::read(&seg).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&seg, &bytes).expect("write");
    match verify_backup(bak.path(), &mut |_| {}) {
        Err(vigil_engine::Error::CorruptLog {
            segment, offset, ..
        }) => {
            assert_eq!(segment, seg);
            assert!(offset <= at as u64);
        }
        other => panic!("damage not named: {other:?}"),
    }
    // A store that is not the one backed up (another history) is refused
    // instead of being mixed into the backup.
    let (other, bak2) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    drop(store);
    backup(src.path(), bak2.path(), &mut |_| {}).expect("backup");
    let s2 = Store::open_with(
        other.path(),
        small_store(vigil_engine::limits::SEGMENT_BYTES_MIN * 16, false),
    )
    .expect("open");
    for i in 0..60 {
        put(&s2, "Patient", &format!("x{i}"), patient("x", i));
    }
    drop(s2);
    assert!(backup(other.path(), bak2.path(), &mut |_| {}).is_err());
}
