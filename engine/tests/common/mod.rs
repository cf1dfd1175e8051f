//! Helpers shared by the engine's integration tests.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use vigil_engine::{Batch, Current, Op, Options, Store};

/// A small Patient body, distinct for each `n`.
pub fn patient(id: &str, n: u32) -> Vec<u8> {
    format!(
        r#"{{"resourceType":"Patient","id":"{id}","active":true,"name":[{{"family":"Family{n}","given":["Given{n}"]}}],"gender":"female","birthDate":"19{:02}-01-01","weight":1.50}}"#,
        n % 100
    )
    .into_bytes()
}

/// Opens a store with default options.
pub fn open(dir: &std::path::Path) -> Store {
    Store::open_with(dir, Options::default()).expect("store opens")
}

/// Commits one unconditional put.
pub fn put(store: &Store, ty: &str, id: &str, body: Vec<u8>) -> vigil_engine::Committed {
    store
        .commit(Batch::one(Op::put(ty, id, body)))
        .expect("commit")
}

/// The current live body, if any.
pub fn body_of(store: &Store, ty: &str, id: &str) -> Option<Vec<u8>> {
    match store.get(ty, id).expect("read") {
        Current::Live(v) => Some(v.body),
        _ => None,
    }
}

/// The store's segment files, oldest first.
pub fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .expect("wal dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}
