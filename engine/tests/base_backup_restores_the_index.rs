//! A base backup's index, laid beside a log restored from archive pieces,
//! is the index of that log: the restored store opens without rebuilding,
//! replays only the frames after the backup, and equals a fresh rebuild.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Family, patient};
use vigil_engine::archive::{ArchiveRestore, BaseBackup, Piece};
use vigil_engine::{Batch, Op, Options, RestoreTarget, Store};

fn options() -> Options {
    Options {
        extractor: Arc::new(Family),
        // Small, so that the key store has files and the log many segments.
        key_buffer_entries: 64,
        segment_bytes: 16 << 10,
        ..Options::default()
    }
}

fn write(store: &Store, from: u32, to: u32) {
    for n in from..to {
        let mut b = Batch::new();
        b.push(Op::put("Patient", format!("p{}", n % 150), patient("x", n)));
        store.commit(b).expect("commit");
    }
}

fn pieces(store: &Store) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut next = 1;
    while let Some(p) = store.archive_piece(next, 8 << 10).expect("piece") {
        next = p.name.last_lsn + 1;
        out.push(p);
    }
    out
}

fn lay_index(backup: &BaseBackup, from: &Path, to: &Path) {
    for f in &backup.files {
        let src = BaseBackup::local_path(from, f);
        let dst = BaseBackup::local_path(to, f);
        std::fs::create_dir_all(dst.parent().expect("parent")).expect("dir");
        std::fs::copy(&src, &dst).expect("copy");
        assert_eq!(
            vigil_engine::archive::crc_of_file(&dst).expect("crc"),
            (f.bytes, f.crc),
            "{} as the manifest says",
            f.path
        );
    }
}

#[test]
fn a_restore_beside_a_base_backup_replays_only_what_follows_it() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open_with(dir.path().join("store"), options()).expect("open");
    write(&store, 0, 300);
    // A close writes the key files; the writes after it are keys above
    // them, which the restored store replays.
    store.close().expect("close");
    let store = Store::open_with(dir.path().join("store"), options()).expect("reopen");
    write(&store, 300, 400);
    let snap = dir.path().join("store").join("snap.tmp");
    let backup = store.snapshot_index(&snap, 42).expect("snapshot");
    assert!(backup.lsn > 0 && backup.lsn <= store.last_lsn());
    assert!(
        backup.files.iter().any(|f| f.path.ends_with(".run")),
        "the key store has files: {:?}",
        backup.files
    );
    let decoded = BaseBackup::decode(&backup.encode()).expect("manifest round-trips");
    assert_eq!(decoded, backup);
    write(&store, 400, 520);
    let all = pieces(&store);
    let last = store.last_lsn();
    let after: usize = all
        .iter()
        .map(|p| {
            p.frame_ends()
                .filter(|(lsn, _, _)| *lsn > backup.lsn)
                .count()
        })
        .sum();
    assert!(after >= 120, "the commits after the backup: {after} frames");

    let to = dir.path().join("restored");
    let mut r =
        ArchiveRestore::create_log_only(&to, None, RestoreTarget::Latest, &backup, 16 << 10)
            .expect("create");
    for p in all {
        r.apply(p).expect("apply");
    }
    assert!(r.index_fits(), "the log holds the backup's frame");
    let report = r.finish().expect("finish");
    assert_eq!(report.last_lsn, last);
    assert!(report.segments > 1, "segments rolled: {}", report.segments);
    lay_index(&backup, &snap, &to);

    let restored = Store::open_with(&to, options()).expect("open restored");
    let open = restored.open_report();
    assert!(!open.index_rebuilt, "the backup's index is used");
    // The 120 commits after the backup, and nothing before it: the
    // snapshot holds the keys still in memory (the 100 commits after the
    // reopen) as a file of their own.
    assert_eq!(
        open.frames_replayed, after as u64,
        "only the frames after the backup"
    );
    assert_eq!(restored.last_lsn(), last);
    restored
        .verify()
        .expect("the index equals a rebuild from the log");
    for n in 0..150u32 {
        let id = format!("p{n}");
        assert_eq!(
            common::body_of(&restored, "Patient", &id),
            common::body_of(&store, "Patient", &id),
            "{id}"
        );
    }
}

#[test]
fn a_backup_the_restored_log_does_not_reach_is_not_used() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open_with(dir.path().join("store"), options()).expect("open");
    write(&store, 0, 100);
    let early = store.last_lsn();
    write(&store, 100, 200);
    let snap = dir.path().join("store").join("snap.tmp");
    let backup = store.snapshot_index(&snap, 7).expect("snapshot");
    let to = dir.path().join("restored");
    let mut r =
        ArchiveRestore::create_log_only(&to, None, RestoreTarget::Lsn(early), &backup, 16 << 10)
            .expect("create");
    for p in pieces(&store) {
        r.apply(p).expect("apply");
        if r.is_done() {
            break;
        }
    }
    assert!(!r.index_fits(), "the backup is past the target");
    r.finish().expect("finish");
    let restored = Store::open_with(&to, options()).expect("open restored");
    assert!(restored.open_report().index_rebuilt, "built from the log");
    assert_eq!(restored.last_lsn(), early);
    restored.verify().expect("verify");
}

#[test]
fn damaged_manifests_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open_with(dir.path().join("store"), options()).expect("open");
    write(&store, 0, 50);
    let backup = store
        .snapshot_index(&dir.path().join("store").join("s.tmp"), 1)
        .expect("snapshot");
    let bytes = backup.encode();
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x10;
        assert!(BaseBackup::decode(&b).is_err(), "flip at {i} refused");
    }
    assert!(BaseBackup::decode(&bytes[..bytes.len() - 1]).is_err());
    let mut evil = backup.clone();
    evil.files[0].path = "../escape".into();
    assert!(
        BaseBackup::decode(&evil.encode()).is_err(),
        "paths stay inside"
    );
    assert_eq!(
        BaseBackup::parse_manifest_object(&backup.manifest_object()),
        Some((backup.lsn, 1))
    );
}

#[test]
fn a_snapshot_taken_while_writes_run_is_one_consistent_index() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(Store::open_with(dir.path().join("store"), options()).expect("open"));
    write(&store, 0, 100);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 100;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                write(&store, n, n + 1);
                n += 1;
            }
            n
        })
    };
    let mut backups = Vec::new();
    for i in 0..5 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let snap = dir.path().join("store").join(format!("snap-{i}.tmp"));
        backups.push((store.snapshot_index(&snap, i).expect("snapshot"), snap));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().expect("writer");
    assert!(written > 100, "writes ran beside the snapshots");
    let all = pieces(&store);
    for (i, (backup, snap)) in backups.iter().enumerate() {
        let to = dir.path().join(format!("restored-{i}"));
        let mut r =
            ArchiveRestore::create_log_only(&to, None, RestoreTarget::Latest, backup, 16 << 10)
                .expect("create");
        for p in all.clone() {
            r.apply(p).expect("apply");
        }
        assert!(r.index_fits(), "backup {i} at lsn {}", backup.lsn);
        r.finish().expect("finish");
        lay_index(backup, snap, &to);
        let restored = Store::open_with(&to, options()).expect("open restored");
        assert!(!restored.open_report().index_rebuilt, "backup {i} used");
        restored
            .verify()
            .unwrap_or_else(|e| panic!("backup {i} at lsn {}: {e}", backup.lsn));
    }
}
