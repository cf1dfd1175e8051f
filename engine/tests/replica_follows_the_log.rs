//! A replica fed with the leader's frames holds the same log, frame for
//! frame, the same answers, survives a restart, and refuses anything that
//! does not continue its log.

mod common;

use common::*;
use vigil_engine::{Batch, Error, LogPosition, Op, Store, limits::SEGMENT_BYTES_MIN};
use vigil_testkit::{frames, small_store};

#[test]
fn a_replica_holds_the_same_frames_and_answers_the_same() {
    let (ld, rd) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let leader =
        Store::open_with(ld.path(), small_store(SEGMENT_BYTES_MIN, false)).expect("leader");
    let replica =
        Store::open_with(rd.path(), small_store(SEGMENT_BYTES_MIN, true)).expect("replica");
    assert_eq!(
        replica.last_lsn(),
        0,
        "a fresh replica writes nothing of its own"
    );
    assert!(matches!(
        replica.commit(Batch::one(Op::put("Patient", "x", patient("x", 1)))),
        Err(Error::ReadOnly)
    ));
    // Enough data for a trained dictionary and several sealed segments.
    for round in 0..60u32 {
        let mut batch = Batch::new();
        for i in 0..100u32 {
            let id = format!("p{i}");
            batch.push(Op::put(
                "Patient",
                id.clone(),
                patient(&id, round * 100 + i),
            ));
        }
        leader.commit(batch).expect("commit");
        if round % 7 == 0 {
            ship(&leader, &replica, 64 * 1024);
        }
    }
    leader
        .commit(Batch::one(Op::delete("Patient", "p3")))
        .expect("delete");
    assert!(ship(&leader, &replica, 256 * 1024) >= 1);
    assert_eq!(replica.last_lsn(), leader.last_lsn());
    assert_eq!(replica.epoch(), leader.epoch());
    assert_eq!(
        frames(&replica),
        frames(&leader),
        "logs are frame-for-frame identical"
    );
    assert!(
        segments(rd.path()).len() > 1,
        "the replica sealed segments too"
    );
    for i in [0u32, 3, 57, 99] {
        let id = format!("p{i}");
        assert_eq!(
            body_of(&replica, "Patient", &id),
            body_of(&leader, "Patient", &id)
        );
    }
    assert_eq!(
        replica.stats().expect("stats").types,
        leader.stats().expect("stats").types
    );
    replica
        .verify()
        .expect("the replica's index equals a rebuild");

    // Restart: the replica is still a replica at the same end.
    let end = replica.last_lsn();
    replica.close().expect("close");
    let replica =
        Store::open_with(rd.path(), small_store(SEGMENT_BYTES_MIN, true)).expect("reopen");
    assert_eq!(replica.last_lsn(), end);
    leader
        .commit(Batch::one(Op::put("Patient", "late", patient("late", 1))))
        .expect("commit");
    ship(&leader, &replica, 1 << 20);
    assert_eq!(
        body_of(&replica, "Patient", "late"),
        Some(patient("late", 1))
    );
}

#[test]
fn frames_that_do_not_continue_the_log_are_refused_and_nothing_is_written() {
    let (ld, rd) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let leader =
        Store::open_with(ld.path(), small_store(SEGMENT_BYTES_MIN, false)).expect("leader");
    let replica =
        Store::open_with(rd.path(), small_store(SEGMENT_BYTES_MIN, true)).expect("replica");
    for i in 0..5 {
        put(&leader, "Patient", &format!("p{i}"), patient("p", i));
    }
    let all = leader.read_log(1, 1 << 20).expect("read").expect("chunk");
    assert!(all.frames >= 6);
    // A flipped byte anywhere: refused, nothing appended.
    let mut bad = all.bytes.clone();
    let at = bad.len() - 3;
    bad[at] ^= 1;
    assert!(matches!(
        replica.append_log(bad),
        Err(Error::FrameRejected { .. })
    ));
    assert_eq!(replica.last_lsn(), 0);
    // A gap: starting at the second frame.
    let second = leader.read_log(2, 1 << 20).expect("read").expect("chunk");
    assert!(matches!(
        replica.append_log(second.bytes.clone()),
        Err(Error::Discontinuous(_))
    ));
    assert_eq!(replica.last_lsn(), 0);
    // The right bytes go in; the same again is a gap backwards.
    replica.append_log(all.bytes.clone()).expect("append");
    assert!(matches!(
        replica.append_log(all.bytes),
        Err(Error::Discontinuous(_))
    ));
    settle(&replica);
    assert_eq!(replica.last_lsn(), leader.last_lsn(), "indexed and visible");
    // A leader does not take frames.
    assert!(matches!(
        leader.append_log(second.bytes),
        Err(Error::NotReplica)
    ));
}

#[test]
fn position_of_finds_prefix_and_divergence() {
    let (ad, bd) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = Store::open_with(ad.path(), small_store(SEGMENT_BYTES_MIN, false)).expect("a");
    let b = Store::open_with(bd.path(), small_store(SEGMENT_BYTES_MIN, true)).expect("b");
    for i in 0..3 {
        put(&a, "Patient", &format!("p{i}"), patient("p", i));
    }
    assert_eq!(
        a.position_of(0, 0, 0).expect("pos"),
        LogPosition::Prefix { next_lsn: 1 }
    );
    ship(&a, &b, 1 << 20);
    let last = b
        .frame_ending_at(b.last_lsn())
        .expect("read")
        .expect("frame");
    assert_eq!(
        a.position_of(last.epoch, b.last_lsn(), last.crc)
            .expect("pos"),
        LogPosition::Prefix {
            next_lsn: b.last_lsn() + 1
        }
    );
    // A frame the leader never wrote (another CRC) at the same LSN.
    assert!(matches!(
        a.position_of(last.epoch, b.last_lsn(), last.crc ^ 1).expect("pos"),
        LogPosition::Diverged { agree_until } if agree_until < b.last_lsn()
    ));
    // A replica ahead of the leader in the same epoch cannot be a prefix.
    assert!(matches!(
        a.position_of(last.epoch, a.last_lsn() + 10, 7).expect("pos"),
        LogPosition::Diverged { agree_until } if agree_until <= a.last_lsn()
    ));
    // A frame boundary that is not the end of the replica's frame.
    assert_eq!(a.frame_ending_at(a.last_lsn() + 1).expect("read"), None);
}

#[test]
fn the_newest_frames_read_from_memory_equal_those_on_disk() {
    let dir = tempfile::tempdir().expect("dir");
    let leader =
        Store::open_with(dir.path(), small_store(SEGMENT_BYTES_MIN, false)).expect("leader");
    let mut served = 0;
    let mut next = 1;
    for round in 0..300u32 {
        let mut batch = Batch::new();
        for i in 0..1 + round % 5 {
            let id = format!("p{}", round * 10 + i);
            batch.push(Op::put("Patient", id.clone(), patient(&id, round)));
        }
        leader.commit(batch).expect("commit");
        // As replication reads the live tail: from where it stopped, with
        // budgets small enough to split chunks at frames and at segments.
        for max in [1, 700, 64 * 1024] {
            if let Some(mem) = leader.read_log_recent(next, max, u64::MAX) {
                let disk = leader.read_log(next, max).expect("read").expect("durable");
                assert_eq!(mem, disk, "lsn {next}, budget {max}");
                served += 1;
            }
        }
        if round % 3 == 0 {
            next = leader
                .read_log(next, 64 * 1024)
                .expect("read")
                .map_or(next, |c| c.end_lsn);
        }
    }
    assert!(served > 500, "the tail served the live reads ({served})");
    assert!(
        leader
            .read_log_recent(leader.last_lsn() + 1, 1, u64::MAX)
            .is_none(),
        "nothing past the end"
    );
    // After a restart the tail is empty: every read goes to disk.
    drop(leader);
    let leader =
        Store::open_with(dir.path(), small_store(SEGMENT_BYTES_MIN, false)).expect("reopen");
    assert!(leader.read_log_recent(next, 64 * 1024, u64::MAX).is_none());
}

#[test]
fn log_end_listeners_hear_every_move_in_order_until_dropped() {
    use std::sync::{Arc, Mutex};
    use vigil_engine::LogTip;
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path()).expect("open");
    let base = store.log_end();
    let heard = Arc::new(Mutex::new(Vec::<LogTip>::new()));
    let h = heard.clone();
    let listener = store
        .on_log_end(move |tip| h.lock().expect("lock").push(tip))
        .expect("register");
    for i in 0..20u32 {
        let id = format!("p{i}");
        store
            .commit(Batch::one(Op::put("Patient", id.clone(), patient(&id, i))))
            .expect("commit");
        // Told before the commit was acknowledged.
        assert_eq!(
            heard.lock().expect("lock").last().copied(),
            Some(LogTip {
                written_lsn: store.log_end().lsn,
                durable: store.log_end()
            })
        );
    }
    // Two moves per frame: written (before its fsync), then durable.
    let moves: Vec<(u64, u64)> = heard
        .lock()
        .expect("lock")
        .iter()
        .map(|t| (t.written_lsn, t.durable.lsn))
        .collect();
    let expected: Vec<(u64, u64)> = (base.lsn + 1..=base.lsn + 20)
        .flat_map(|l| [(l, l - 1), (l, l)])
        .collect();
    assert_eq!(moves, expected, "written then durable, frame by frame");
    drop(listener);
    store
        .commit(Batch::one(Op::put("Patient", "late", patient("late", 0))))
        .expect("commit");
    assert_eq!(
        heard.lock().expect("lock").len(),
        40,
        "not told once dropped"
    );
    let many: Vec<_> = (0..vigil_engine::LOG_END_LISTENERS_MAX)
        .map(|_| store.on_log_end(|_| {}).expect("within the cap"))
        .collect();
    assert!(matches!(
        store.on_log_end(|_| {}),
        Err(Error::Invalid { .. })
    ));
    drop(many);
    assert!(store.on_log_end(|_| {}).is_ok());
}

/// Appends `bytes` with the leader's durable end `confirmed`; returns the
/// replica's new durable end.
fn append_confirmed(replica: &Store, bytes: Vec<u8>, confirmed: u64) -> u64 {
    let (tx, rx) = std::sync::mpsc::channel();
    replica
        .append_log_with(bytes, confirmed, move |r| {
            let _ = tx.send(r);
        })
        .expect("queued");
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("answered")
        .expect("appended")
        .lsn
}

/// Whether the store shows a live Patient `id`.
fn live(store: &Store, id: &str) -> bool {
    matches!(
        store.get("Patient", id).expect("read"),
        vigil_engine::Current::Live(_)
    )
}

/// Waits briefly for the visible LSN to pass `lsn`; returns it then.
fn visible_after(store: &Store, lsn: u64) -> u64 {
    store.wait_for_lsn(lsn, std::time::Duration::from_millis(300))
}

#[test]
fn frames_past_the_leaders_durable_end_stay_invisible_until_confirmed() {
    let (ld, rd) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let leader =
        Store::open_with(ld.path(), small_store(SEGMENT_BYTES_MIN, false)).expect("leader");
    let b = leader.log_end().lsn; // the new log's own first frames
    for i in 1..=3u32 {
        put(&leader, "Patient", &format!("p{i}"), patient("p", i));
    }
    assert_eq!(leader.last_lsn(), b + 3, "one frame per commit");
    let all = leader.read_log(1, 1 << 20).expect("read").expect("frames");
    assert_eq!((all.first_lsn, all.end_lsn), (1, b + 4));
    let replica =
        Store::open_with(rd.path(), small_store(SEGMENT_BYTES_MIN, true)).expect("replica");
    // The leader said only p1's frame is durable there: p2's and p3's are
    // written and fsynced here, but not shown (one append, split at the
    // confirmation).
    assert_eq!(append_confirmed(&replica, all.bytes, b + 1), b + 3);
    assert_eq!(replica.log_end().lsn, b + 3, "durable here");
    assert_eq!(visible_after(&replica, 0), b + 1);
    assert_eq!(visible_after(&replica, b + 1), b + 1, "p2 and p3 wait");
    assert!(live(&replica, "p1"));
    assert!(!live(&replica, "p2"));
    // Held frames are still part of the log as replication reads it.
    let held = replica
        .read_log(b + 2, 1 << 20)
        .expect("read")
        .expect("held");
    assert_eq!((held.first_lsn, held.end_lsn), (b + 2, b + 4));
    let last = replica
        .frame_ending_at(b + 3)
        .expect("read")
        .expect("frame");
    assert_eq!(
        leader
            .position_of(last.epoch, b + 3, last.crc)
            .expect("pos"),
        LogPosition::Prefix { next_lsn: b + 4 }
    );
    // A confirmation shows exactly what it covers.
    replica.confirm_log(b + 2).expect("confirm");
    assert_eq!(visible_after(&replica, b + 1), b + 2);
    assert_eq!(visible_after(&replica, b + 2), b + 2, "p3 still waits");
    assert!(live(&replica, "p2"));
    assert!(!live(&replica, "p3"));
    // A promoted replica takes its whole log as its own before it writes.
    replica.set_read_only(false);
    put(&replica, "Patient", "p4", patient("p", 4));
    assert!(live(&replica, "p3"));
    assert_eq!(replica.last_lsn(), b + 4);
}

#[test]
fn a_reopened_replica_indexes_its_whole_log() {
    let (ld, rd) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let leader =
        Store::open_with(ld.path(), small_store(SEGMENT_BYTES_MIN, false)).expect("leader");
    put(&leader, "Patient", "p1", patient("p", 1));
    let all = leader.read_log(1, 1 << 20).expect("read").expect("frames");
    let replica =
        Store::open_with(rd.path(), small_store(SEGMENT_BYTES_MIN, true)).expect("replica");
    let end = all.end_lsn - 1;
    assert_eq!(append_confirmed(&replica, all.bytes, 0), end);
    assert_eq!(visible_after(&replica, 0), 0, "not confirmed");
    drop(replica);
    // Confirmations live in memory only: what the log holds is indexed.
    let replica =
        Store::open_with(rd.path(), small_store(SEGMENT_BYTES_MIN, true)).expect("reopen");
    assert_eq!(replica.last_lsn(), end);
    assert!(live(&replica, "p1"));
}

#[test]
fn frames_never_shown_are_cut_in_place_when_the_leader_lost_them() {
    let (ld, rd) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let leader =
        Store::open_with(ld.path(), small_store(SEGMENT_BYTES_MIN, false)).expect("leader");
    let b = leader.log_end().lsn;
    for i in 1..=3u32 {
        put(&leader, "Patient", &format!("p{i}"), patient("p", i));
    }
    let all = leader.read_log(1, 1 << 20).expect("read").expect("frames");
    let replica =
        Store::open_with(rd.path(), small_store(SEGMENT_BYTES_MIN, true)).expect("replica");
    assert_eq!(append_confirmed(&replica, all.bytes, b + 1), b + 3);
    assert_eq!(visible_after(&replica, 0), b + 1);
    // A frame that was shown is never cut in place.
    assert!(matches!(
        replica.drop_unconfirmed(b),
        Err(Error::CannotCut { .. })
    ));
    assert_eq!(replica.log_end().lsn, b + 3, "a refusal changes nothing");
    // The leader came back ending at b + 2: p3's frame goes.
    let end = replica.drop_unconfirmed(b + 2).expect("cut");
    assert_eq!(end.lsn, b + 2);
    let kept = leader.frame_ending_at(b + 2).expect("read").expect("frame");
    assert_eq!((end.crc, end.epoch), (kept.crc, kept.epoch));
    assert_eq!(replica.log_end(), end);
    replica.confirm_log(b + 2).expect("confirm");
    assert_eq!(visible_after(&replica, b + 1), b + 2);
    assert!(!live(&replica, "p3"));
    // The log continues from there, with what the leader sends now.
    let next = leader
        .read_log(b + 3, 1 << 20)
        .expect("read")
        .expect("frame");
    assert_eq!(append_confirmed(&replica, next.bytes, b + 3), b + 3);
    assert_eq!(visible_after(&replica, b + 2), b + 3);
    assert_eq!(frames(&replica), frames(&leader));
    // Cut bytes are zeroed: a reopened store does not find them again.
    let end = replica.drop_unconfirmed(b + 2);
    assert!(end.is_err(), "p3's frame was shown this time");
    drop(replica);
    let replica =
        Store::open_with(rd.path(), small_store(SEGMENT_BYTES_MIN, true)).expect("reopen");
    assert_eq!(replica.log_end().lsn, b + 3);
    assert_eq!(frames(&replica), frames(&leader));
}

#[test]
fn a_lost_frame_that_began_a_segment_takes_the_segment_with_it() {
    let (ld, rd) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let leader =
        Store::open_with(ld.path(), small_store(SEGMENT_BYTES_MIN, false)).expect("leader");
    // Commit until the log spans two segments.
    let mut i = 0u32;
    while segments(ld.path()).len() < 2 {
        put(&leader, "Patient", &format!("p{i}"), patient("p", i));
        i += 1;
    }
    // A chunk never crosses a segment: the first ends where the second begins.
    let first = leader
        .read_log(1, usize::MAX)
        .expect("read")
        .expect("frames");
    let lost = leader
        .read_log(first.end_lsn, 1)
        .expect("read")
        .expect("frame");
    let replica =
        Store::open_with(rd.path(), small_store(SEGMENT_BYTES_MIN, true)).expect("replica");
    let kept_end = first.end_lsn - 1;
    assert_eq!(append_confirmed(&replica, first.bytes, kept_end), kept_end);
    assert_eq!(
        append_confirmed(&replica, lost.bytes, kept_end),
        lost.end_lsn - 1
    );
    assert_eq!(
        segments(rd.path()).len(),
        2,
        "the lost frame began a segment"
    );
    let end = replica.drop_unconfirmed(kept_end).expect("cut");
    assert_eq!(end.lsn, kept_end);
    assert_eq!(segments(rd.path()).len(), 1, "its segment is gone");
    // Appending resumes in the segment before, and rotates as the leader did.
    let again = leader
        .read_log(first.end_lsn, 1 << 20)
        .expect("read")
        .expect("frames");
    assert_eq!(
        append_confirmed(&replica, again.bytes, again.end_lsn - 1),
        again.end_lsn - 1
    );
    drop(replica);
    let replica =
        Store::open_with(rd.path(), small_store(SEGMENT_BYTES_MIN, true)).expect("reopen");
    assert_eq!(replica.log_end().lsn, again.end_lsn - 1);
    let theirs: Vec<_> = frames(&leader)
        .into_iter()
        .take(frames(&replica).len())
        .collect();
    assert_eq!(frames(&replica), theirs, "frame for frame the leader's");
}
