//! Guards the whole store contract against a simple in-memory model: random
//! puts, identical puts, deletes, batches with conflicting preconditions and
//! reopens must leave the store exactly where the model says.

mod common;

use std::collections::BTreeMap;

use proptest::prelude::*;
use vigil_engine::{Batch, Current, Op, OpOutcome, Precondition, Store, VersionRead};

#[derive(Debug, Clone)]
enum Step {
    Put {
        id: u8,
        body: u8,
        expect: Option<u8>,
    },
    Delete {
        id: u8,
        expect: Option<u8>,
    },
    Batch(Vec<(u8, u8)>),
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0..6u8, 0..4u8, proptest::option::of(0..5u8)).prop_map(|(id, body, expect)| Step::Put { id, body, expect }),
        2 => (0..6u8, proptest::option::of(0..5u8)).prop_map(|(id, expect)| Step::Delete { id, expect }),
        2 => proptest::collection::vec((0..6u8, 0..4u8), 1..5).prop_map(Step::Batch),
        1 => Just(Step::Reopen),
    ]
}

/// The model: per id, every version's body (`None` = tombstone).
type Model = BTreeMap<u8, Vec<Option<Vec<u8>>>>;

fn body(id: u8, b: u8) -> Vec<u8> {
    format!(r#"{{"resourceType":"Basic","id":"r{id}","n":{b}}}"#).into_bytes()
}

fn expect_of(e: Option<u8>) -> Precondition {
    match e {
        None => Precondition::None,
        Some(0) => Precondition::Absent,
        Some(v) => Precondition::Version(u64::from(v)),
    }
}

fn holds(model: &Model, id: u8, e: Option<u8>) -> bool {
    let n = model.get(&id).map_or(0, Vec::len) as u64;
    match expect_of(e) {
        Precondition::None => true,
        Precondition::Absent => n == 0,
        Precondition::Version(v) => n == v,
    }
}

fn apply_put(model: &mut Model, id: u8, b: u8) {
    let versions = model.entry(id).or_default();
    if versions.last().and_then(|v| v.as_ref()) != Some(&body(id, b)) {
        versions.push(Some(body(id, b)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_model(steps in proptest::collection::vec(step(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Some(Store::open(dir.path()).expect("open"));
        let mut model = Model::new();
        for s in steps {
            let st = store.as_ref().expect("open store");
            match s {
                Step::Put { id, body: b, expect } => {
                    let r = st.commit(Batch::one(Op::put("Basic", format!("r{id}"), body(id, b)).expect(expect_of(expect))));
                    if holds(&model, id, expect) {
                        let out = r.expect("precondition held");
                        let before = model.get(&id).map_or(0, Vec::len);
                        apply_put(&mut model, id, b);
                        let after = model.get(&id).map_or(0, Vec::len);
                        prop_assert_eq!(matches!(out.outcomes[0], OpOutcome::Unchanged { .. }), before == after);
                    } else {
                        prop_assert!(r.is_err());
                    }
                }
                Step::Delete { id, expect } => {
                    let r = st.commit(Batch::one(Op::delete("Basic", format!("r{id}")).expect(expect_of(expect))));
                    if holds(&model, id, expect) {
                        r.expect("precondition held");
                        if let Some(v) = model.get_mut(&id)
                            && v.last().is_some_and(Option::is_some)
                        {
                            v.push(None);
                        }
                    } else {
                        prop_assert!(r.is_err());
                    }
                }
                Step::Batch(ops) => {
                    let mut b = Batch::new();
                    for (id, x) in &ops {
                        b.push(Op::put("Basic", format!("r{id}"), body(*id, *x)));
                    }
                    st.commit(b).expect("batch");
                    for (id, x) in ops {
                        apply_put(&mut model, id, x);
                    }
                }
                Step::Reopen => {
                    store.take().expect("store").close().expect("close");
                    store = Some(Store::open(dir.path()).expect("reopen"));
                }
            }
        }
        let st = store.as_ref().expect("store");
        for id in 0..6u8 {
            let versions = model.get(&id).cloned().unwrap_or_default();
            let cur = st.get("Basic", &format!("r{id}")).expect("get");
            match versions.last() {
                None => prop_assert_eq!(cur, Current::NeverExisted),
                Some(None) => {
                    let ok = matches!(cur, Current::Deleted { version, .. } if version == versions.len() as u64);
                    prop_assert!(ok, "r{} should be deleted: {:?}", id, cur);
                }
                Some(Some(b)) => {
                    let ok = matches!(&cur, Current::Live(v) if &v.body == b && v.version == versions.len() as u64);
                    prop_assert!(ok, "r{} should be live: {:?}", id, cur);
                }
            }
            for (i, v) in versions.iter().enumerate() {
                let read = st.get_version("Basic", &format!("r{id}"), i as u64 + 1).expect("vread");
                match v {
                    None => {
                        let ok = matches!(read, VersionRead::Deleted { .. });
                        prop_assert!(ok, "tombstone expected: {:?}", read);
                    }
                    Some(b) => {
                        let ok = matches!(&read, VersionRead::Live(x) if &x.body == b);
                        prop_assert!(ok, "live version expected: {:?}", read);
                    }
                }
            }
        }
        let total: u64 = model.values().map(|v| v.len() as u64).sum();
        prop_assert_eq!(st.stats().expect("stats").versions, total);
        st.verify().expect("index equals a rebuild");
    }
}
