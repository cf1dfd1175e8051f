//! Guards lastUpdated against a wall clock that steps backwards (NTP, VM
//! migration): timestamps must never decrease in LSN order.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use vigil_engine::{Clock, HistoryQuery, HistoryScope, Options, Store};

struct Steppy(AtomicU64);

impl Clock for Steppy {
    fn now_us(&self) -> u64 {
        // 1000, 1003, 1006… but every fourth reading jumps back 10 s.
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        if n % 4 == 3 {
            1_000_000 + n * 3 - 10_000_000 / 1000
        } else {
            1_000_000 + n * 3
        }
    }
}

#[test]
fn a_clock_stepping_back_never_moves_last_updated_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        clock: Arc::new(Steppy(AtomicU64::new(0))),
        ..Options::default()
    };
    let store = Store::open_with(dir.path(), opts).expect("open");
    for i in 0..50u32 {
        put(&store, "Patient", &format!("p{i}"), patient("p", i));
    }
    let page = store
        .history(&HistoryQuery {
            scope: HistoryScope::System,
            since_us: None,
            count: 100,
            cursor: None,
        })
        .expect("history");
    assert_eq!(page.entries.len(), 50);
    // Newest first: timestamps must be non-increasing along the page.
    assert!(
        page.entries
            .windows(2)
            .all(|w| w[0].last_updated_us >= w[1].last_updated_us)
    );
}
