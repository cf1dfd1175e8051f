//! Guards the store's contract: version numbering, no-op updates, deletes
//! versus never-existed, preconditions failing whole batches, history paging.

mod common;

use common::*;
use vigil_engine::{
    Batch, Current, Error, HistoryQuery, HistoryScope, Op, OpKind, OpOutcome, Precondition,
    VersionRead,
};

#[test]
fn versions_count_up_and_deletes_are_tombstones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let c = put(&store, "Patient", "a", patient("a", 1));
    assert!(matches!(
        c.outcomes[0],
        OpOutcome::Written {
            kind: OpKind::Create,
            version: 1,
            ..
        }
    ));
    let c = put(&store, "Patient", "a", patient("a", 2));
    assert!(matches!(
        c.outcomes[0],
        OpOutcome::Written {
            kind: OpKind::Update,
            version: 2,
            ..
        }
    ));
    // Byte-identical: no new version.
    let c = put(&store, "Patient", "a", patient("a", 2));
    assert!(matches!(
        c.outcomes[0],
        OpOutcome::Unchanged { version: 2, .. }
    ));
    assert_eq!(c.last_lsn, None);
    let c = store
        .commit(Batch::one(Op::delete("Patient", "a")))
        .expect("delete");
    assert!(matches!(
        c.outcomes[0],
        OpOutcome::Written {
            kind: OpKind::Delete,
            version: 3,
            ..
        }
    ));
    let c = store
        .commit(Batch::one(Op::delete("Patient", "a")))
        .expect("delete again");
    assert_eq!(c.outcomes[0], OpOutcome::AlreadyDeleted { version: 3 });
    let c = store
        .commit(Batch::one(Op::delete("Patient", "nope")))
        .expect("delete unknown");
    assert_eq!(c.outcomes[0], OpOutcome::NotFound);
    assert!(matches!(
        store.get("Patient", "a").expect("get"),
        Current::Deleted { version: 3, .. }
    ));
    assert_eq!(
        store.get("Patient", "nope").expect("get"),
        Current::NeverExisted
    );
    // Update after delete makes a new live version.
    let c = put(&store, "Patient", "a", patient("a", 2));
    assert!(matches!(
        c.outcomes[0],
        OpOutcome::Written {
            kind: OpKind::Update,
            version: 4,
            ..
        }
    ));
    match store.get_version("Patient", "a", 1).expect("vread") {
        VersionRead::Live(v) => assert_eq!(v.body, patient("a", 1)),
        other => panic!("version 1: {other:?}"),
    }
    assert!(matches!(
        store.get_version("Patient", "a", 3).expect("vread"),
        VersionRead::Deleted { .. }
    ));
    assert_eq!(
        store.get_version("Patient", "a", 9).expect("vread"),
        VersionRead::NoSuchVersion { newest: 4 }
    );
    assert_eq!(
        store.get_version("Patient", "zz", 1).expect("vread"),
        VersionRead::NeverExisted
    );
    let stats = store.stats().expect("stats");
    assert_eq!(stats.types.len(), 1);
    assert_eq!((stats.types[0].live, stats.types[0].versions), (1, 4));
    store.close().expect("close");
}

#[test]
fn a_failed_precondition_fails_the_whole_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    put(&store, "Patient", "a", patient("a", 1));
    let mut batch = Batch::new();
    batch.push(Op::put("Patient", "b", patient("b", 1)));
    batch.push(Op::put("Patient", "a", patient("a", 2)).expect(Precondition::Version(7)));
    match store.commit(batch) {
        Err(Error::VersionConflict {
            expected: Precondition::Version(7),
            actual: Some(1),
            ..
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        store.get("Patient", "b").expect("get"),
        Current::NeverExisted
    );
    let err = store
        .commit(Batch::one(
            Op::put("Patient", "a", patient("a", 3)).expect(Precondition::Absent),
        ))
        .expect_err("exists");
    assert!(err.to_string().contains("expected no resource"), "{err}");
    store
        .commit(Batch::one(
            Op::put("Patient", "a", patient("a", 3)).expect(Precondition::Version(1)),
        ))
        .expect("matching precondition");
}

#[test]
fn history_pages_stay_stable_while_writes_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    for i in 0..25u32 {
        put(&store, "Patient", &format!("p{}", i % 5), patient("x", i));
    }
    let mut q = HistoryQuery {
        scope: HistoryScope::System,
        since_us: None,
        count: 10,
        cursor: None,
    };
    let first = store.history(&q).expect("page 1");
    assert_eq!(first.entries.len(), 10);
    // Writes between pages do not shift them.
    for i in 0..7u32 {
        put(&store, "Patient", "late", patient("late", 100 + i));
    }
    let mut seen: Vec<u64> = first.entries.iter().map(|v| v.lsn).collect();
    q.cursor = first.next;
    while q.cursor.is_some() {
        let page = store.history(&q).expect("page");
        seen.extend(page.entries.iter().map(|v| v.lsn));
        q.cursor = page.next;
    }
    assert_eq!(
        seen.len(),
        25,
        "exactly the 25 versions of the pinned snapshot"
    );
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats"
    );
    let inst = store
        .history(&HistoryQuery {
            scope: HistoryScope::Instance("Patient".into(), "p0".into()),
            since_us: None,
            count: 100,
            cursor: None,
        })
        .expect("instance");
    assert_eq!(
        inst.entries.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![5, 4, 3, 2, 1]
    );
    let newest_before_late = first.entries[0].last_updated_us;
    let late_since = newest_before_late + 1;
    let since = store
        .history(&HistoryQuery {
            scope: HistoryScope::Type("Patient".into()),
            since_us: Some(late_since),
            count: 100,
            cursor: None,
        })
        .expect("since");
    assert!(
        since
            .entries
            .iter()
            .all(|v| v.last_updated_us >= late_since)
    );
    assert!(
        since.entries.iter().all(|v| v.id == "late"),
        "only writes after the snapshot"
    );
    // Each commit waits for an fsync, so the seven late writes have later
    // microsecond timestamps than everything before them.
    assert_eq!(since.entries.len(), 7);
}

#[test]
fn a_second_opener_gets_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    match vigil_engine::Store::open(dir.path()) {
        Err(Error::Locked { .. }) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
    store.close().expect("close");
    vigil_engine::Store::open(dir.path()).expect("reopens after close");
}

#[test]
fn reopen_keeps_everything_and_verify_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        for i in 0..200u32 {
            put(&store, "Patient", &format!("p{i}"), patient("p", i));
        }
        store.close().expect("close");
    }
    let store = open(dir.path());
    for i in 0..200u32 {
        assert_eq!(
            body_of(&store, "Patient", &format!("p{i}")),
            Some(patient("p", i))
        );
    }
    let report = store.verify().expect("verify");
    assert_eq!(report.bodies, 200);
    let changes = store.changes(0, 1000).expect("changes");
    assert_eq!(changes.len(), 201, "epoch start plus 200 versions");
    assert!(changes.windows(2).all(|w| w[0].lsn() + 1 == w[1].lsn()));
}

#[test]
fn previous_pages_retrace_next_pages_exactly() {
    use vigil_engine::HistoryPage;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    for i in 0..37u32 {
        let ty = if i % 3 == 0 { "Observation" } else { "Patient" };
        put(&store, ty, &format!("r{}", i % 4), patient("x", i));
    }
    for scope in [
        HistoryScope::System,
        HistoryScope::Type("Patient".into()),
        HistoryScope::Instance("Patient".into(), "r1".into()),
    ] {
        let q = |cursor| HistoryQuery {
            scope: scope.clone(),
            since_us: None,
            count: 4,
            cursor,
        };
        let mut forward: Vec<HistoryPage> = vec![store.history(&q(None)).expect("first page")];
        assert_eq!(forward[0].previous, None);
        while let Some(next) = forward.last().and_then(|p| p.next) {
            forward.push(store.history(&q(Some(next))).expect("next page"));
            // Writes while paging do not disturb the pinned pages.
            put(
                &store,
                "Patient",
                "r1",
                patient("late", 1000 + forward.len() as u32),
            );
        }
        let mut back = forward.last().and_then(|p| p.previous);
        for expected in forward.iter().rev().skip(1) {
            let page = store.history(&q(back)).expect("previous page");
            let lsns = |p: &HistoryPage| p.entries.iter().map(|v| v.lsn).collect::<Vec<_>>();
            assert_eq!(lsns(&page), lsns(expected), "{scope:?}");
            back = page.previous;
        }
        assert_eq!(back, None, "{scope:?}: the first page has no previous");
    }
}

#[test]
fn the_timestamp_a_commit_reports_is_the_one_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    for i in 0..20u32 {
        let c = put(&store, "Patient", &format!("t{i}"), patient("t", i));
        let OpOutcome::Written {
            last_updated_us,
            version,
            ..
        } = c.outcomes[0]
        else {
            panic!("written");
        };
        match store
            .get_version("Patient", &format!("t{i}"), version)
            .expect("vread")
        {
            VersionRead::Live(v) => assert_eq!(v.last_updated_us, last_updated_us),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn commit_with_calls_back_once_with_the_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..50u32 {
        let tx = tx.clone();
        store
            .commit_with(
                Batch::one(Op::put("Patient", format!("cb{i}"), patient("cb", i))),
                move |r| {
                    let _ = tx.send(r);
                },
            )
            .expect("queued");
    }
    drop(tx);
    let results: Vec<_> = rx.iter().collect();
    assert_eq!(results.len(), 50, "exactly one call per commit");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(c) if c.last_lsn.is_some()))
    );
    assert_eq!(store.stats().expect("stats").versions, 50);
    // A batch refused before queueing returns the error and never calls back.
    let err = store.commit_with(Batch::new(), |_| panic!("must not be called"));
    assert!(matches!(err, Err(Error::EmptyBatch)));
}
