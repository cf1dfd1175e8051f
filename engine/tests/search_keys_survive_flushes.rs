//! Guards the key store: search keys held as in-memory runs over a key
//! file of their own must answer exactly what a model of the current
//! versions answers, across flushes to the file, reopen, a key file that
//! trails the index (as after a crash), one that belongs to another log,
//! (a flush that fails: `key_flush_failure_is_fatal.rs`).

mod common;

use common::keys::*;
use vigil_engine::Store;

#[test]
fn keys_equal_the_model_across_flushes_reopen_and_a_trailing_key_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut model = Model::new();
    let store = Store::open_with(dir.path(), opts()).expect("open");
    for seed in 0..6 {
        write(&store, &mut model, 150, seed);
        check(&store, &model);
        // The applier makes the index durable every 250 ms; a flush of
        // the key runs follows. Reads go on merging meanwhile.
        std::thread::sleep(std::time::Duration::from_millis(300));
        check(&store, &model);
    }
    store.verify().expect("keys equal a rebuild");
    store.close().expect("close");
    assert!(
        key_file(dir.path()).exists(),
        "keys were written to their file"
    );
    let older = std::fs::read(key_file(dir.path())).expect("read key file");

    let store = Store::open_with(dir.path(), opts()).expect("reopen");
    check(&store, &model);
    write(&store, &mut model, 300, 99);
    check(&store, &model);
    store.close().expect("close");

    // A key file from before the last writes, as a crash can leave it:
    // the keys of those writes are replayed from the log.
    std::fs::write(key_file(dir.path()), &older).expect("restore older key file");
    let store = Store::open_with(dir.path(), opts()).expect("reopen over an older key file");
    check(&store, &model);
    store.verify().expect("keys equal a rebuild");
    store.close().expect("close");
}

#[test]
fn a_key_file_of_another_log_is_rebuilt() {
    let (a, b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let mut model_a = Model::new();
    let mut model_b = Model::new();
    for (dir, model, seed) in [(&a, &mut model_a, 1), (&b, &mut model_b, 2)] {
        let store = Store::open_with(dir.path(), opts()).expect("open");
        write(&store, model, 200, seed);
        store.close().expect("close");
    }
    assert_ne!(model_a, model_b, "the two stores differ");
    std::fs::copy(key_file(b.path()), key_file(a.path())).expect("swap key file");
    let store = Store::open_with(a.path(), opts()).expect("open");
    check(&store, &model_a);
    store.verify().expect("keys equal a rebuild");
}
