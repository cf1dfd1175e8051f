//! Guards the read barrier: the index applies frames behind the
//! acknowledgement, yet every read that begins after a commit returned
//! sees that commit — current version, secondary keys, history, the change
//! feed and `last_lsn` — while other threads keep committing. And the
//! writer numbers versions and checks preconditions against frames the
//! index has not applied yet.

mod common;

use std::sync::Arc;

use common::*;
use vigil_engine::{Batch, Current, HistoryQuery, HistoryScope, Op, Options, Precondition, Store};

const THREADS: u32 = 8;
const ROUNDS: u32 = 100;

#[test]
fn every_read_after_a_commit_sees_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        Store::open_with(
            dir.path(),
            Options {
                extractor: Arc::new(Family),
                ..Options::default()
            },
        )
        .expect("open"),
    );
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let id = format!("p{t}");
                for round in 1..=ROUNDS {
                    // Two updates back to back, each with If-Match on the
                    // version just written and no read between: the second
                    // is planned while the index may not hold the first,
                    // so the writer must see its own unindexed frames.
                    let first = 2 * round - 1;
                    let expect = match first {
                        1 => Precondition::Absent,
                        _ => Precondition::Version(u64::from(first - 1)),
                    };
                    store
                        .commit(Batch::one(
                            Op::put("Patient", &id, patient(&id, t * 1000 + first)).expect(expect),
                        ))
                        .expect("first commit of the round");
                    let n = first + 1;
                    let body = patient(&id, t * 1000 + n);
                    let c = store
                        .commit(Batch::one(
                            Op::put("Patient", &id, body.clone())
                                .expect(Precondition::Version(u64::from(first))),
                        ))
                        .expect("second commit, If-Match on the unindexed first");
                    let lsn = c.last_lsn.expect("written");
                    match store.get("Patient", &id).expect("get") {
                        Current::Live(v) => {
                            assert_eq!((v.version, v.body), (u64::from(n), body));
                        }
                        other => panic!("{id} round {n}: {other:?}"),
                    }
                    let key = format!("family=Family{}", t * 1000 + n);
                    assert_eq!(
                        store.lookup(key.as_bytes(), 10).expect("lookup"),
                        vec![("Patient".to_owned(), id.clone())],
                        "{id} round {n}: the new key is indexed"
                    );
                    let page = store
                        .history(&HistoryQuery {
                            scope: HistoryScope::Instance("Patient".into(), id.clone()),
                            since_us: None,
                            count: 1,
                            cursor: None,
                        })
                        .expect("history");
                    assert_eq!(page.entries[0].version, u64::from(n));
                    let changes = store.changes(lsn - 1, 1).expect("changes");
                    assert_eq!(changes.len(), 1, "the change feed holds lsn {lsn}");
                    assert_eq!(changes[0].lsn(), lsn);
                    assert!(store.last_lsn() >= lsn, "last_lsn covers the commit");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let store = Arc::into_inner(store).expect("one owner");
    store.verify().expect("index equals a rebuild");
}

#[test]
fn every_durable_frame_can_be_read_for_shipping_while_commits_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(dir.path()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    put(&store, "Patient", &format!("w{t}-{n}"), patient("w", n));
                }
            })
        })
        .collect();
    // Ship the way a leader does: from the next LSN, whenever the durable
    // end moves past it. A frame the log's end covers must be readable,
    // whether the index holds it yet or not.
    let mut next = 1;
    let mut shipped = 0u64;
    while shipped < 2_000 {
        let end = store.wait_for_log_end(next - 1, std::time::Duration::from_secs(5));
        assert!(end.lsn >= next, "commits continue");
        while next <= end.lsn {
            let chunk = store
                .read_log(next, 64 * 1024)
                .unwrap_or_else(|e| panic!("lsn {next} is durable (end {}): {e}", end.lsn))
                .expect("within the durable end");
            assert_eq!(chunk.first_lsn, next);
            shipped += u64::from(chunk.frames);
            next = chunk.end_lsn;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
}
