//! A model of search keys under a deterministic mix of writes, for the
//! key store's tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::{patient, put};
use vigil_engine::{Batch, Op, Options, Store};

/// Flushes after every few changes, so that most reads merge runs over a
/// file that changed under them.
pub fn opts() -> Options {
    Options {
        key_buffer_entries: 5,
        ..super::with_family_keys()
    }
}

/// The store's key directory (run files and their manifest).
pub fn key_dir(dir: &Path) -> PathBuf {
    dir.join("index.redb.keys.d")
}

/// Replaces the directory `to` with a copy of `from` (flat: files only).
pub fn copy_dir(from: &Path, to: &Path) {
    if to.exists() {
        std::fs::remove_dir_all(to).expect("remove directory");
    }
    std::fs::create_dir_all(to).expect("create directory");
    for entry in std::fs::read_dir(from).expect("list directory") {
        let entry = entry.expect("list directory");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy file");
    }
}

/// id -> family number of its live version.
pub type Model = BTreeMap<String, u32>;

/// A deterministic mix of creates, key-changing updates and deletes.
pub fn write(store: &Store, model: &mut Model, rounds: u32, seed: u32) {
    for i in 0..rounds {
        let x = (i.wrapping_mul(2_654_435_761) ^ seed) % 1000;
        let id = format!("p{}", x % 40);
        if x.is_multiple_of(7) {
            store
                .commit(Batch::one(Op::delete("Patient", &id)))
                .expect("delete");
            model.remove(&id);
        } else {
            let family = x % 9;
            put(store, "Patient", &id, patient(&id, family));
            model.insert(id, family);
        }
    }
}

/// Every family's lookup equals the model, and so does a range scan.
pub fn check(store: &Store, model: &Model) {
    for family in 0..9u32 {
        let key = format!("family=Family{family}");
        let got: BTreeSet<String> = store
            .lookup(key.as_bytes(), 1000)
            .expect("lookup")
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        let want: BTreeSet<String> = model
            .iter()
            .filter(|(_, f)| **f == family)
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(got, want, "{key}");
    }
    let all = store
        .lookup_range(b"family=", b"family>", Some("Patient"), 1000)
        .expect("range");
    assert_eq!(all.len(), model.len(), "one key per live patient");
    assert!(all.windows(2).all(|w| w[0] <= w[1]), "in key order");
}
