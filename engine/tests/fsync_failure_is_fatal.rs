//! Guards the fsyncgate rule: when fdatasync fails, the kernel may already
//! have dropped the dirty pages, so the store must stop (every later commit
//! fails) rather than retry as if the data were safe; reopening recovers
//! from what the log really holds. Also: a failed write is not acknowledged.
//! Runs alone in its binary because fail points are process-wide.

mod common;

use common::*;
use vigil_engine::{Batch, Error, Op, Store, failpoint};

#[test]
fn an_fsync_error_stops_the_store_and_reopen_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    put(&store, "Patient", "before", patient("before", 1));

    failpoint::arm("log.fsync", 1);
    let err = store
        .commit(Batch::one(Op::put("Patient", "lost", patient("lost", 1))))
        .expect_err("the fsync failed");
    assert!(matches!(err, Error::Fsync { .. }), "{err}");
    assert!(err.is_fatal());
    // Never retried as if safe: every later commit and read is refused.
    let again = store
        .commit(Batch::one(Op::put("Patient", "after", patient("after", 1))))
        .expect_err("poisoned");
    assert!(matches!(again, Error::Poisoned(_)), "{again}");
    assert!(matches!(
        store.get("Patient", "before"),
        Err(Error::Poisoned(_))
    ));
    failpoint::disarm_all();
    drop(store);

    // Reopen: what was acknowledged is there; the store works again.
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(
        body_of(&store, "Patient", "before"),
        Some(patient("before", 1))
    );
    assert_eq!(
        body_of(&store, "Patient", "after"),
        None,
        "refused commits wrote nothing"
    );
    put(&store, "Patient", "after", patient("after", 1));
    store.verify().expect("verify");
    drop(store);

    // A failed write fails its commit but changed nothing, so the store
    // carries on and the next commit lands where the failed one would have.
    let store = Store::open(dir.path()).expect("reopen");
    let lsn = store.last_lsn();
    failpoint::arm("log.write", 1);
    let err = store
        .commit(Batch::one(Op::put("Patient", "w", patient("w", 1))))
        .expect_err("the write failed");
    assert!(
        err.to_string().contains("injected failure at log.write"),
        "{err}"
    );
    assert!(!err.is_fatal());
    failpoint::disarm_all();
    assert_eq!(store.last_lsn(), lsn);
    assert_eq!(body_of(&store, "Patient", "w"), None);
    put(&store, "Patient", "w", patient("w", 2));
    assert_eq!(store.last_lsn(), lsn + 1);
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(body_of(&store, "Patient", "w"), Some(patient("w", 2)));
    store.verify().expect("verify");
}
