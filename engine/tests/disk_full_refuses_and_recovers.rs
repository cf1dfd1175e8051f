//! A full disk, at every place the engine writes: the commit that meets it
//! fails with a typed `DiskFull` (or, at fsync, the store stops as the
//! fsyncgate rule requires), nothing acknowledged is lost, nothing is
//! corrupted, and writes resume once there is space again. Below the
//! reserve, client commits and a replica's appends are refused before
//! anything is written, while internal records still go through. Runs
//! alone in its binary because fail points are process-wide.

mod common;

use common::*;
use vigil_engine::{Batch, Error, Op, Options, Store, Watermark, failpoint};
use vigil_testkit::{frames, small_store};

fn small_segments() -> Options {
    Options {
        disk_reserve_bytes: 0,
        ..small_store(64 * 1024, false)
    }
}

fn commit(store: &Store, id: &str) -> Result<vigil_engine::Committed, Error> {
    store.commit(Batch::one(Op::put("Patient", id, patient(id, 1))))
}

#[test]
fn a_full_disk_fails_only_what_it_must_and_writes_resume() {
    preallocation_uses_the_space_there_is();
    a_full_disk_at_write_fails_only_that_commit();
    a_full_disk_at_fsync_stops_the_store_and_loses_nothing_acknowledged();
    below_the_reserve_client_writes_are_refused_and_internal_records_go_through();
    a_replica_below_the_reserve_refuses_frames_and_follows_on_once_there_is_space();
}

/// Preallocation fails (no space for a whole segment, nor any part of
/// it): segments are then written without it, across rotations.
fn preallocation_uses_the_space_there_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(dir.path(), small_segments()).expect("open");
    failpoint::arm_no_space("log.preallocate", 10_000);
    let mut acked = Vec::new();
    for b in 0..60 {
        let mut batch = Batch::new();
        for i in 0..50 {
            let id = format!("p{b}-{i}");
            batch.push(Op::put("Patient", id.clone(), patient(&id, 1)));
            acked.push(id);
        }
        store
            .commit(batch)
            .expect("commits go on without preallocation");
    }
    assert!(segments(dir.path()).len() > 2, "rotated while full");
    failpoint::disarm_all();
    drop(store);
    // A restart while the disk is full opens and serves reads.
    failpoint::arm_no_space("log.preallocate", 10_000);
    let store = Store::open_with(dir.path(), small_segments()).expect("reopen while full");
    for id in &acked {
        assert_eq!(body_of(&store, "Patient", id), Some(patient(id, 1)));
    }
    failpoint::disarm_all();
    store.verify().expect("verify");
    drop(store);

    // Room for half a segment: half is preallocated.
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        segment_bytes: 2 * 1024 * 1024,
        ..small_segments()
    };
    // Creating the segment finds no room for 2 MiB nor 1 MiB; opening it
    // for writing finds none for 2 MiB, then room for 1 MiB.
    failpoint::arm_no_space("log.preallocate", 3);
    let store = Store::open_with(dir.path(), opts.clone()).expect("open");
    failpoint::disarm_all();
    let first = segments(dir.path())[0].clone();
    let len = std::fs::metadata(&first).expect("stat").len();
    assert_eq!(len, 1024 * 1024, "the half that fit was preallocated");
    commit(&store, "half").expect("commit");
    drop(store);
    let store = Store::open_with(dir.path(), opts).expect("reopen");
    assert_eq!(body_of(&store, "Patient", "half"), Some(patient("half", 1)));
    let len = std::fs::metadata(&first).expect("stat").len();
    assert_eq!(len, 2 * 1024 * 1024, "space again: the whole segment");
}

fn a_full_disk_at_write_fails_only_that_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(dir.path(), small_segments()).expect("open");
    commit(&store, "before").expect("commit");
    let lsn = store.last_lsn();
    failpoint::arm_no_space("log.write", 3);
    for _ in 0..3 {
        let err = commit(&store, "refused").expect_err("the disk is full");
        assert!(matches!(err, Error::DiskFull { .. }), "{err}");
        assert!(err.is_disk_full() && !err.is_fatal(), "{err}");
    }
    assert_eq!(store.last_lsn(), lsn, "nothing written");
    assert_eq!(body_of(&store, "Patient", "refused"), None);
    // Space again: the next commit lands where the refused ones would have.
    commit(&store, "after").expect("writes resume without a restart");
    assert_eq!(store.last_lsn(), lsn + 1);
    drop(store);
    let store = Store::open_with(dir.path(), small_segments()).expect("reopen");
    assert_eq!(body_of(&store, "Patient", "refused"), None);
    assert_eq!(
        body_of(&store, "Patient", "after"),
        Some(patient("after", 1))
    );
    store.verify().expect("verify");
}

/// An fsync that fails for lack of space stops the store (the kernel may
/// have dropped the pages): reopening recovers with every acknowledged
/// write.
fn a_full_disk_at_fsync_stops_the_store_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(dir.path(), small_segments()).expect("open");
    let acked: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
    for id in &acked {
        commit(&store, id).expect("commit");
    }
    failpoint::arm_no_space("log.fsync", 1);
    let err = commit(&store, "unacknowledged").expect_err("fsync failed");
    assert!(err.is_disk_full() && err.is_fatal(), "{err}");
    assert!(matches!(commit(&store, "x"), Err(Error::Poisoned(_))));
    failpoint::disarm_all();
    drop(store);
    let store = Store::open_with(dir.path(), small_segments()).expect("reopen");
    for id in &acked {
        assert_eq!(body_of(&store, "Patient", id), Some(patient(id, 1)));
    }
    commit(&store, "after").expect("writes resume after the reopen");
    store.verify().expect("verify");
}

fn below_the_reserve_client_writes_are_refused_and_internal_records_go_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(dir.path(), small_segments()).expect("open");
    commit(&store, "before").expect("commit");
    drop(store);
    // A reserve larger than the whole file system: always below it.
    let total = Store::open_with(dir.path(), small_segments())
        .expect("open")
        .disk_space()
        .expect("space")
        .total_bytes;
    let opts = Options {
        disk_reserve_bytes: total + 1,
        ..small_segments()
    };
    let store = Store::open_with(dir.path(), opts).expect("opens below the reserve");
    let space = store.disk_space().expect("space");
    assert!(!space.fits(0), "{space:?}");
    let lsn = store.last_lsn();
    let err = commit(&store, "refused").expect_err("below the reserve");
    assert!(
        matches!(err, Error::DiskFull { .. }) && !err.is_fatal(),
        "{err}"
    );
    assert!(err.to_string().contains("disk_reserve_bytes"), "{err}");
    assert_eq!(store.last_lsn(), lsn, "nothing written");
    assert_eq!(
        body_of(&store, "Patient", "before"),
        Some(patient("before", 1)),
        "reads go on"
    );
    // Internal records that protect data still go through.
    store
        .checkpoint(vec![Watermark {
            name: "b".into(),
            durable_lsn: lsn,
        }])
        .expect("a checkpoint is written below the reserve");
    assert_eq!(store.last_lsn(), lsn + 1);
    drop(store);
    let store = Store::open_with(dir.path(), small_segments()).expect("reopen");
    commit(&store, "after").expect("commits go on once above the reserve");
    assert_eq!(body_of(&store, "Patient", "refused"), None);
    store.verify().expect("verify");
}

fn a_replica_below_the_reserve_refuses_frames_and_follows_on_once_there_is_space() {
    let dir = tempfile::tempdir().expect("tempdir");
    let leader = Store::open_with(dir.path().join("leader"), small_segments()).expect("leader");
    for i in 0..10 {
        commit(&leader, &format!("r{i}")).expect("commit");
    }
    let replica_opts = |reserve| Options {
        replica: true,
        disk_reserve_bytes: reserve,
        ..small_segments()
    };
    let rdir = dir.path().join("replica");
    let replica = Store::open_with(&rdir, replica_opts(0)).expect("replica");
    let total = replica.disk_space().expect("space").total_bytes;
    drop(replica);
    let replica = Store::open_with(&rdir, replica_opts(total + 1)).expect("replica");
    let frames = frames(&leader);
    let err = replica
        .append_log(frames.concat())
        .expect_err("below the reserve");
    assert!(err.is_disk_full() && !err.is_fatal(), "{err}");
    assert_eq!(
        replica.last_lsn(),
        0,
        "nothing appended, nothing acknowledged"
    );
    drop(replica);
    let replica = Store::open_with(&rdir, replica_opts(0)).expect("replica");
    replica
        .append_log(frames.concat())
        .expect("appends once there is space");
    settle(&replica);
    assert_eq!(replica.last_lsn(), leader.last_lsn());
    assert_eq!(body_of(&replica, "Patient", "r9"), Some(patient("r9", 1)));
}
