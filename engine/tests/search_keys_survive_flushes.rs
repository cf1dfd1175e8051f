//! Guards the key store: search keys held as in-memory runs over run
//! files of their own must answer exactly what a model of the current
//! versions answers, across flushes and merges, reopen, key files that
//! trail the index (as after a crash), key files of another log, and a
//! reindex (a flush that fails: `key_flush_failure_is_fatal.rs`).

mod common;

use common::keys::*;
use vigil_engine::Store;

#[test]
fn keys_equal_the_model_across_flushes_reopen_and_trailing_key_files() {
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
    let runs = std::fs::read_dir(key_dir(dir.path()))
        .expect("key directory")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "run"))
        })
        .count();
    assert!(runs > 0, "keys were written to run files");
    let saved = tempfile::tempdir().expect("tempdir");
    copy_dir(&key_dir(dir.path()), saved.path());

    let store = Store::open_with(dir.path(), opts()).expect("reopen");
    check(&store, &model);
    write(&store, &mut model, 300, 99);
    check(&store, &model);
    store.close().expect("close");

    // Key files from before the last writes, as a crash can leave them:
    // the keys of those writes are replayed from the log.
    copy_dir(saved.path(), &key_dir(dir.path()));
    let store = Store::open_with(dir.path(), opts()).expect("reopen over an older key file");
    check(&store, &model);
    store.verify().expect("keys equal a rebuild");
    store.close().expect("close");
}

#[test]
fn key_files_of_another_log_are_rebuilt() {
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
    copy_dir(&key_dir(b.path()), &key_dir(a.path()));
    let store = Store::open_with(a.path(), opts()).expect("open");
    check(&store, &model_a);
    store.verify().expect("keys equal a rebuild");
}

#[test]
fn keys_written_after_a_reindex_land_in_the_new_key_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut model = Model::new();
    let store = Store::open_with(dir.path(), opts()).expect("open");
    write(&store, &mut model, 200, 5);
    std::thread::sleep(std::time::Duration::from_millis(300));
    store.reindex().expect("reindex");
    check(&store, &model);
    // Flushes and merges after the reindex write to the directory the
    // rebuilt index took over, and nothing of the old one's is left.
    for seed in 0..3 {
        write(&store, &mut model, 150, 40 + seed);
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    check(&store, &model);
    store.close().expect("close");
    assert!(
        !dir.path().join("index.redb.rebuild.keys.d").exists(),
        "the rebuilt index's key directory was moved into place"
    );
    let store = Store::open_with(dir.path(), opts()).expect("reopen");
    assert!(!store.open_report().index_rebuilt);
    check(&store, &model);
    store.verify().expect("keys equal a rebuild");
}

#[test]
fn a_missing_or_damaged_key_file_is_rebuilt_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut model = Model::new();
    let store = Store::open_with(dir.path(), opts()).expect("open");
    for seed in 0..3 {
        write(&store, &mut model, 150, 60 + seed);
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    store.close().expect("close");
    let runs = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(key_dir(dir.path()))
            .expect("key directory")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "run"))
            .collect()
    };
    // A named file whose footer is damaged, then one that is gone: each
    // time the keys are replayed from the log, and equal a rebuild.
    let damaged = runs()[0].clone();
    let mut bytes = std::fs::read(&damaged).expect("read run file");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&damaged, &bytes).expect("damage run file");
    let store = Store::open_with(dir.path(), opts()).expect("open over a damaged key file");
    assert!(
        !store.open_report().index_rebuilt,
        "only the keys were rebuilt, not the index"
    );
    check(&store, &model);
    store.verify().expect("keys equal a rebuild");
    write(&store, &mut model, 150, 70);
    std::thread::sleep(std::time::Duration::from_millis(300));
    store.close().expect("close");
    let gone = runs();
    assert!(!gone.is_empty(), "keys were flushed again");
    std::fs::remove_file(&gone[0]).expect("remove run file");
    let store = Store::open_with(dir.path(), opts()).expect("open over a missing key file");
    assert!(
        !store.open_report().index_rebuilt,
        "only the keys were rebuilt, not the index"
    );
    check(&store, &model);
    store.verify().expect("keys equal a rebuild");
}
