//! Guards the key store's failure path: when writing search-key runs to
//! the key file fails, the store stops (as when indexing fails) instead of
//! serving keys it can no longer keep, and a reopen replays the keys from
//! the log. Runs alone in its binary because fail points are process-wide.

mod common;

use common::keys::*;
use common::*;
use vigil_engine::{Batch, Error, Op, Store, failpoint};

#[test]
fn a_failed_key_flush_stops_the_store_and_reopen_replays_the_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut model = Model::new();
    let store = Store::open_with(dir.path(), opts()).expect("open");
    write(&store, &mut model, 50, 3);
    failpoint::arm("keys.flush", 1);
    // One write at a time, each indexed before the next, until the
    // flusher (which runs behind the index) meets the fail point: so no
    // write's indexing comes after the failure to report it.
    'writing: for i in 0..10_000u32 {
        // Each write changes its patient's family (the same id comes back
        // every 40 writes, 40 % 9 != 0): identical content makes no frame.
        let (id, family) = (format!("q{}", i % 40), i % 9);
        store
            .commit(Batch::one(Op::put("Patient", &id, patient(&id, family))))
            .expect("commits go on until the flush fails");
        model.insert(id, family);
        store.last_lsn();
        for _ in 0..50 {
            if failpoint::fired() {
                break 'writing;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    assert!(failpoint::fired(), "the flusher never wrote a key file");
    // With no further write the store says it stopped (health checks and
    // the server's reopen watch read this), and why.
    let t0 = std::time::Instant::now();
    let why = loop {
        if let Some(why) = store.stopped() {
            break why;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "a failed key flush did not stop the store"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    assert!(why.contains("keys.flush"), "{why}");
    // Every commit and read is refused with the reason from then on.
    let err = store
        .commit(Batch::one(Op::put("Patient", "after", patient("after", 1))))
        .expect_err("a stopped store takes no commit");
    assert!(matches!(err, Error::Poisoned(_)), "{err}");
    assert!(err.to_string().contains("keys.flush"), "{err}");
    assert!(
        matches!(store.lookup(b"family=Family1", 10), Err(Error::Poisoned(_))),
        "reads are refused too"
    );
    failpoint::disarm_all();
    drop(store);

    let store = Store::open_with(dir.path(), opts()).expect("reopen");
    check(&store, &model);
    store.verify().expect("keys equal a rebuild");
}
