//! Keys defined by resources in the log (FHIR's custom SearchParameters):
//! a definition gives keys to later writes, a rekey record gives them to
//! what was written before, a changed definition's keys go at the next
//! rekey or update, and a replica, a reopen and a rebuild all end with
//! the same keys.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::ship;
use vigil_engine::{Batch, KeyExtractor, Op, OpOutcome, Options, Store};

/// The definitions in force from an LSN on: id -> (type, field).
type Defs = BTreeMap<String, (String, String)>;

/// Definitions are `Def` resources `{"on":"Type","field":"f"}`: each gives
/// a resource of `Type` the key `def:f=<value>` for a string field `f`.
#[derive(Default)]
struct Defined {
    timeline: Mutex<Vec<(u64, Defs)>>,
    ever: Mutex<Defs>,
}

fn field_of(body: &[u8], name: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get(name)?.as_str().map(str::to_owned)
}

impl Defined {
    fn at(&self, lsn: u64) -> Defs {
        let t = self.timeline.lock().expect("lock");
        t.iter()
            .rev()
            .find(|(at, _)| *at < lsn)
            .map(|(_, d)| d.clone())
            .unwrap_or_default()
    }

    fn keys_of(defs: &Defs, ty: &str, body: &[u8], out: &mut Vec<Vec<u8>>) {
        for (on, field) in defs.values() {
            if on == ty
                && let Some(v) = field_of(body, field)
            {
                out.push(format!("def:{field}={v}").into_bytes());
            }
        }
    }
}

impl KeyExtractor for Defined {
    fn name(&self) -> &str {
        "defined-v1"
    }
    fn keys(&self, ty: &str, _body: &[u8], out: &mut Vec<Vec<u8>>) {
        out.push(format!("all:{ty}").into_bytes());
    }
    fn defining_type(&self) -> Option<&str> {
        Some("Def")
    }
    fn forget_definitions(&self) {
        self.timeline.lock().expect("lock").clear();
        self.ever.lock().expect("lock").clear();
    }
    fn define(&self, lsn: u64, id: &str, body: Option<&[u8]>) {
        let mut t = self.timeline.lock().expect("lock");
        if t.last().is_some_and(|(at, _)| *at >= lsn) {
            return;
        }
        let mut defs = t.last().map(|(_, d)| d.clone()).unwrap_or_default();
        match body.and_then(|b| Some((field_of(b, "on")?, field_of(b, "field")?))) {
            Some(def) => {
                self.ever
                    .lock()
                    .expect("lock")
                    .insert(format!("{id}@{lsn}"), def.clone());
                defs.insert(id.to_owned(), def);
            }
            None => {
                defs.remove(id);
            }
        }
        t.push((lsn, defs));
    }
    fn has_defined_keys(&self, lsn: u64, ty: &str) -> bool {
        self.at(lsn).values().any(|(on, _)| on == ty)
    }
    fn defined_keys(&self, lsn: u64, ty: &str, body: &[u8], out: &mut Vec<Vec<u8>>) {
        Self::keys_of(&self.at(lsn), ty, body, out);
    }
    fn defined_keys_ever(&self, ty: &str, body: &[u8], out: &mut Vec<Vec<u8>>) {
        Self::keys_of(&self.ever.lock().expect("lock"), ty, body, out);
    }
    fn ever_defines(&self, ty: &str) -> bool {
        self.ever
            .lock()
            .expect("lock")
            .values()
            .any(|(on, _)| on == ty)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn opts(replica: bool) -> Options {
    Options {
        extractor: Arc::new(Defined::default()),
        replica,
        ..Options::default()
    }
}

fn put(store: &Store, ty: &str, id: &str, body: &str) {
    store
        .commit(Batch::one(Op::put(ty, id, body.as_bytes().to_vec())))
        .expect("commit");
}

fn rekey(store: &Store, ids: &[&str]) -> Vec<OpOutcome> {
    let mut b = Batch::new();
    for id in ids {
        b.push(Op::rekey("Person", *id));
    }
    store.commit(b).expect("rekey commits").outcomes
}

fn found(store: &Store, key: &str) -> Vec<String> {
    let mut ids: Vec<String> = store
        .lookup(key.as_bytes(), 100)
        .expect("lookup")
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    ids.sort();
    ids
}

/// What every store in this test must answer at the end.
fn assert_final(store: &Store, who: &str) {
    assert_eq!(found(store, "def:city=Oslo"), Vec::<String>::new(), "{who}");
    assert_eq!(found(store, "def:town=Bergen"), ["p1"], "{who}");
    assert_eq!(found(store, "def:town=Oslo"), ["p2"], "{who}");
    assert_eq!(found(store, "all:Person"), ["p1", "p2"], "{who}");
    store
        .verify()
        .expect("the index equals a rebuild from the log");
}

#[test]
fn definitions_rekeys_and_updates_give_every_copy_the_same_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ldir, rdir) = (dir.path().join("leader"), dir.path().join("replica"));
    let leader = Store::open_with(&ldir, opts(false)).expect("open");
    let replica = Store::open_with(&rdir, opts(true)).expect("open replica");

    put(
        &leader,
        "Person",
        "p1",
        r#"{"city":"Oslo","town":"Bergen"}"#,
    );
    assert!(
        found(&leader, "def:city=Oslo").is_empty(),
        "no definition yet"
    );

    // A definition gives keys to later writes only.
    put(&leader, "Def", "d1", r#"{"on":"Person","field":"city"}"#);
    put(&leader, "Person", "p2", r#"{"city":"Oslo","town":"Oslo"}"#);
    assert_eq!(found(&leader, "def:city=Oslo"), ["p2"]);

    // A rekey gives them to what was there before; one of a missing
    // resource writes its record and changes nothing.
    let outs = rekey(&leader, &["p1", "nobody"]);
    assert!(matches!(outs[0], OpOutcome::Rekeyed { lsn } if lsn > 0));
    assert_eq!(found(&leader, "def:city=Oslo"), ["p1", "p2"]);
    leader
        .verify()
        .expect("the index equals a rebuild after a rekey");

    // A changed definition: the old keys stay until each resource is
    // rekeyed or updated, then only the new definition's are there.
    put(&leader, "Def", "d1", r#"{"on":"Person","field":"town"}"#);
    assert_eq!(found(&leader, "def:city=Oslo"), ["p1", "p2"]);
    put(
        &leader,
        "Person",
        "p2",
        r#"{"city":"Oslo","town":"Oslo","v":2}"#,
    );
    assert_eq!(found(&leader, "def:city=Oslo"), ["p1"]);
    rekey(&leader, &["p1", "p2"]);
    assert_final(&leader, "leader");

    // A rekey without a precondition only.
    let refused = leader.commit(Batch::one(
        Op::rekey("Person", "p1").expect(vigil_engine::Precondition::Absent),
    ));
    assert!(refused.is_err(), "a rekey takes no precondition");

    // The replica applies the same records to the same keys.
    ship(&leader, &replica, 1 << 20);
    assert_final(&replica, "replica");

    // A reopen tells the definitions from the index; a rebuild from the log.
    drop(replica);
    let replica = Store::open_with(&rdir, opts(true)).expect("reopen replica");
    assert_final(&replica, "reopened replica");
    replica.reindex().expect("rebuild");
    assert_final(&replica, "rebuilt replica");
    drop(leader);
    std::fs::remove_file(ldir.join("index.redb")).expect("remove the index");
    let leader = Store::open_with(&ldir, opts(false)).expect("reopen");
    assert!(leader.open_report().index_rebuilt);
    assert_final(&leader, "leader rebuilt on open");
}

#[test]
fn live_ids_walk_a_type_in_id_order_without_deleted_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(dir.path(), opts(false)).expect("open");
    for id in ["a", "b", "b1", "c", "d"] {
        put(&store, "Person", id, r#"{"v":1}"#);
    }
    put(&store, "Person", "c", r#"{"v":2}"#);
    put(&store, "Other", "a0", r#"{"v":1}"#);
    store
        .commit(Batch::one(Op::delete("Person", "b1")))
        .expect("delete");
    store
        .commit(Batch::one(Op::delete("Person", "d")))
        .expect("delete");
    let page = |after: Option<&str>, n| store.live_ids("Person", after, n).expect("ids");
    assert_eq!(page(None, 10), ["a", "b", "c"]);
    assert_eq!(page(None, 2), ["a", "b"]);
    assert_eq!(page(Some("b"), 10), ["c"], "b1 is deleted");
    assert_eq!(page(Some("c"), 10), Vec::<String>::new());
    assert_eq!(store.live_ids("Other", None, 10).expect("ids"), ["a0"]);
}
