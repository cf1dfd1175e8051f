//! Guards the index as derived state: deleting it rebuilds it, secondary
//! keys follow the current version, a new extractor rebuilds, dictionaries
//! trained from the store's data are stored in the log and survive reopen.

mod common;

use common::*;
use vigil_engine::{Batch, DictionaryPolicy, Op, Options, Store};

#[test]
fn secondary_keys_follow_the_current_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(dir.path(), with_family_keys()).expect("open");
    put(&store, "Patient", "a", patient("a", 1));
    put(&store, "Patient", "b", patient("b", 1));
    assert_eq!(
        store.lookup(b"family=Family1", 10).expect("lookup").len(),
        2
    );
    put(&store, "Patient", "a", patient("a", 2));
    assert_eq!(
        store.lookup(b"family=Family1", 10).expect("lookup"),
        vec![("Patient".to_owned(), "b".to_owned())]
    );
    store
        .commit(Batch::one(Op::delete("Patient", "b")))
        .expect("delete");
    assert!(
        store
            .lookup(b"family=Family1", 10)
            .expect("lookup")
            .is_empty()
    );
    let range = store
        .lookup_range(b"family=", b"family>", Some("Patient"), 10)
        .expect("range");
    assert_eq!(range.len(), 1);
    assert_eq!(range[0].0, b"family=Family2".to_vec());
    store.verify().expect("keys equal a rebuild");
}

#[test]
fn a_deleted_index_is_rebuilt_and_equal() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open_with(dir.path(), with_family_keys()).expect("open");
        for i in 0..100u32 {
            put(&store, "Patient", &format!("p{}", i % 30), patient("p", i));
        }
        store.close().expect("close");
    }
    std::fs::remove_file(dir.path().join("index.redb")).expect("delete index");
    let store = Store::open_with(dir.path(), with_family_keys()).expect("open");
    assert!(store.open_report().index_rebuilt);
    assert_eq!(store.stats().expect("stats").versions, 100);
    assert_eq!(
        store.lookup(b"family=Family99", 10).expect("lookup").len(),
        1
    );
    store.verify().expect("verify");
    store.reindex().expect("reindex on demand");
    store.verify().expect("verify after reindex");
    drop(store);
    // Opening without the extractor rebuilds (keys made by another extractor).
    let store = Store::open(dir.path()).expect("open");
    assert!(store.open_report().index_rebuilt);
    assert!(
        store
            .lookup(b"family=Family99", 10)
            .expect("lookup")
            .is_empty()
    );
}

#[test]
fn a_damaged_index_file_is_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        put(&store, "Patient", "a", patient("a", 1));
        store.close().expect("close");
    }
    std::fs::write(dir.path().join("index.redb"), b"not a database").expect("clobber");
    let store = open(dir.path());
    assert!(store.open_report().index_rebuilt);
    assert_eq!(body_of(&store, "Patient", "a"), Some(patient("a", 1)));
}

#[test]
fn a_trained_dictionary_is_logged_used_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = Options {
        dictionary: DictionaryPolicy::Auto {
            train_after_bytes: 64 * 1024,
            dictionary_bytes: 16 * 1024,
        },
        ..Options::default()
    };
    {
        let store = Store::open_with(dir.path(), o.clone()).expect("open");
        let mut i = 0u32;
        // Training runs in the background; keep writing until it lands.
        while store.stats().expect("stats").dictionaries == 0 {
            put(&store, "Patient", &format!("p{i}"), patient("p", i));
            i += 1;
            assert!(i < 20_000, "a dictionary was never trained");
        }
        for j in 0..50u32 {
            put(&store, "Patient", &format!("late{j}"), patient("late", j));
        }
        store.close().expect("close");
    }
    let store = Store::open_with(dir.path(), o).expect("reopen");
    assert_eq!(store.stats().expect("stats").dictionaries, 1);
    for j in 0..50u32 {
        assert_eq!(
            body_of(&store, "Patient", &format!("late{j}")),
            Some(patient("late", j))
        );
    }
    std::fs::remove_file(dir.path().join("index.redb")).ok();
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        body_of(&store, "Patient", "late7"),
        Some(patient("late", 7)),
        "rebuild finds the dictionary in the log"
    );
    store.verify().expect("verify");
}

#[test]
fn keys_given_with_a_put_are_indexed_as_the_extractors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(dir.path(), with_family_keys()).expect("open");
    let body = patient("g", 7);
    store
        .commit(Batch::one(
            Op::put("Patient", "g", body).with_keys(vec![b"family=Family7".to_vec()]),
        ))
        .expect("commit");
    assert_eq!(
        store.lookup(b"family=Family7", 10).expect("lookup"),
        vec![("Patient".to_owned(), "g".to_owned())]
    );
    let store_dir = dir.path().to_owned();
    drop(store);
    let store = Store::open_with(&store_dir, with_family_keys()).expect("reopen");
    store.verify().expect("the index equals a rebuild");
}

/// Keys that are not the extractor's would make the index differ from a
/// rebuild: debug builds refuse them at the commit.
#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "differ from the extractor's")]
fn keys_given_that_differ_from_the_extractors_are_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(dir.path(), with_family_keys()).expect("open");
    let _ = store.commit(Batch::one(
        Op::put("Patient", "g", patient("g", 7)).with_keys(vec![b"family=Other".to_vec()]),
    ));
}
