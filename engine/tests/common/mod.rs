//! Helpers shared by the engine's integration tests.
#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod keys;

use vigil_engine::{Batch, Current, KeyExtractor, Op, Options, Store};

/// A small Patient body, distinct for each `n`.
pub fn patient(id: &str, n: u32) -> Vec<u8> {
    format!(
        r#"{{"resourceType":"Patient","id":"{id}","active":true,"name":[{{"family":"Family{n}","given":["Given{n}"]}}],"gender":"female","birthDate":"19{:02}-01-01","weight":1.50}}"#,
        n % 100
    )
    .into_bytes()
}

/// Search keys for tests: `family=<value>` for every "family" string in
/// a body.
pub struct Family;

impl KeyExtractor for Family {
    fn name(&self) -> &str {
        "family-v1"
    }
    fn keys(&self, _ty: &str, body: &[u8], out: &mut Vec<Vec<u8>>) {
        let s = String::from_utf8_lossy(body);
        for part in s.split("\"family\":\"").skip(1) {
            if let Some(end) = part.find('"') {
                out.push(format!("family={}", &part[..end]).into_bytes());
            }
        }
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
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

/// Ships everything `leader` has after `replica`'s end, in chunks of at
/// most `chunk` bytes, then waits until the replica has indexed it all.
/// Returns the number of chunks.
pub fn ship(leader: &Store, replica: &Store, chunk: usize) -> usize {
    let mut n = 0;
    while let Some(c) = leader
        .read_log(replica.log_end().lsn + 1, chunk)
        .expect("read log")
    {
        assert_eq!(c.first_lsn, replica.log_end().lsn + 1);
        let end = replica.append_log(c.bytes).expect("append");
        assert_eq!(end, c.end_lsn - 1, "the replica's end is the chunk's end");
        n += 1;
    }
    settle(replica);
    n
}

/// Waits until a replica has indexed (made visible) all it appended.
pub fn settle(replica: &Store) {
    let end = replica.log_end().lsn;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while replica.last_lsn() < end {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica never indexed lsn {end}"
        );
        replica.wait_for_lsn(replica.last_lsn(), std::time::Duration::from_millis(100));
    }
}

/// Options with the [`Family`] key extractor, everything else default.
pub fn with_family_keys() -> Options {
    Options {
        extractor: std::sync::Arc::new(Family),
        ..Options::default()
    }
}
