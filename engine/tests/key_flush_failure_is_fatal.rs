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
    // Writes go on until the applier publishes after the failed flush;
    // then every commit and read is refused with the reason.
    let mut refused = None;
    for i in 0..10_000u32 {
        // Each write changes its patient's family (the same id comes back
        // every 40 writes, 40 % 9 != 0): identical content makes no frame.
        let (id, family) = (format!("q{}", i % 40), i % 9);
        match store.commit(Batch::one(Op::put("Patient", &id, patient(&id, family)))) {
            Ok(_) => {
                model.insert(id, family);
            }
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let err = refused.expect("the store stopped after the failed flush");
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
