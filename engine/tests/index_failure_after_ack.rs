//! Guards the index applier's place behind the acknowledgement: a commit
//! is acknowledged once its frame is durable and the index applies it
//! afterwards. If indexing then fails, the store stops instead of serving
//! reads that lack an acknowledged write; the frame is durable (and can be
//! shipped to a follower) although never indexed, and reopening indexes it.
//! Runs alone in its binary because fail points are process-wide.

mod common;

use common::*;
use vigil_engine::{Error, Store, failpoint};

#[test]
fn an_acknowledged_write_whose_indexing_fails_is_durable_and_never_hidden() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    put(&store, "Patient", "before", patient("before", 1));
    // Indexed (a read waits for it), so the fail point hits the next frame.
    assert!(body_of(&store, "Patient", "before").is_some());

    failpoint::arm("index.apply", 1);
    let acked = put(&store, "Patient", "acked", patient("acked", 1));
    let lsn = acked.last_lsn.expect("a write has an lsn");

    // The applier failed after the acknowledgement: a read waits for the
    // acknowledged write and gets the store's failure, never a state
    // without it.
    let err = store
        .get("Patient", "acked")
        .expect_err("the index could not apply the write");
    assert!(matches!(err, Error::Poisoned(_)), "{err}");
    assert!(
        err.to_string().contains("injected failure at index.apply"),
        "{err}"
    );

    // Durable and shippable although the index never held it.
    assert_eq!(store.log_end().lsn, lsn);
    let chunk = store
        .read_log(lsn, 1 << 20)
        .expect("read the log")
        .expect("the frame is durable");
    assert_eq!((chunk.first_lsn, chunk.end_lsn), (lsn, lsn + 1));
    assert_eq!(
        store
            .frame_at(lsn)
            .expect("frame header")
            .map(|h| h.first_lsn),
        Some(lsn)
    );
    failpoint::disarm_all();
    drop(store);

    // Reopen: the log after the index's last commit is replayed.
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(
        body_of(&store, "Patient", "acked"),
        Some(patient("acked", 1))
    );
    assert_eq!(
        body_of(&store, "Patient", "before"),
        Some(patient("before", 1))
    );
    store.verify().expect("verify");
}
