//! Guards group commit: many threads committing at once must never lose or
//! reorder an acknowledged commit, and versions must stay dense per resource.

mod common;

use std::sync::Arc;

use common::*;
use vigil_engine::{Batch, HistoryQuery, HistoryScope, Op, OpOutcome};

#[test]
fn many_committers_lose_nothing_and_lsns_follow_acknowledgement() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(dir.path()));
    let threads = 32;
    let per = 60u32;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..per {
                    // Half the threads share resources so versions race.
                    let id = if t % 2 == 0 {
                        format!("shared{}", i % 3)
                    } else {
                        format!("t{t}-{i}")
                    };
                    let c = store
                        .commit(Batch::one(Op::put(
                            "Observation",
                            id.clone(),
                            patient(&id, t * 1000 + i),
                        )))
                        .expect("commit");
                    let OpOutcome::Written { lsn, version, .. } = c.outcomes[0] else {
                        panic!("distinct bodies always write");
                    };
                    acked.push((lsn, id, version, t * 1000 + i));
                }
                acked
            })
        })
        .collect();
    let mut all: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();
    all.sort();
    assert_eq!(all.len(), threads as usize * per as usize);
    assert!(
        all.windows(2).all(|w| w[0].0 < w[1].0),
        "every acknowledged commit has its own LSN"
    );
    // Every acknowledged version is readable with its own body.
    for (_, id, version, n) in &all {
        match store
            .get_version("Observation", id, *version)
            .expect("vread")
        {
            vigil_engine::VersionRead::Live(v) => assert_eq!(v.body, patient(id, *n)),
            other => panic!("{id} v{version}: {other:?}"),
        }
    }
    // Versions of a shared resource are dense and ordered like their LSNs.
    let hist = store
        .history(&HistoryQuery {
            scope: HistoryScope::Instance("Observation".into(), "shared0".into()),
            since_us: None,
            count: 10_000,
            cursor: None,
        })
        .expect("history");
    let versions: Vec<u64> = hist.entries.iter().map(|v| v.version).collect();
    let n = versions.len() as u64;
    assert_eq!(versions, (1..=n).rev().collect::<Vec<_>>());
    assert!(hist.entries.windows(2).all(|w| w[0].lsn > w[1].lsn));
    store.verify().expect("index equals a rebuild");
}
