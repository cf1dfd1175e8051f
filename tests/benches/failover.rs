//! DR figures over repeated drills on real processes with the default
//! settings (3 s leases): RTO from `kill -9` of the leader to the first
//! write acknowledged through the surviving node, loss in asynchronous
//! mode against its bound, and the write pause of a switchover as a client
//! sees it. `VIGIL_DRILLS=N` (default 20) drills of each kind.
//!
//! Run: `cargo bench -p vigil-tests --bench failover`.

use std::time::{Duration, Instant};

use vigil_net::status::percentile;
use vigil_testkit::http::request;
use vigil_testkit::until;
use vigil_tests::dr::{Bins, Dr, Writer, caught_up, leads};

const BINS: Bins = Bins {
    node: env!("CARGO_BIN_EXE_vigil_node"),
    witness: env!("CARGO_BIN_EXE_vigil_witness"),
};
/// The production default.
const LEASE_MS: u64 = 3_000;

/// Kills the leader under load (in asynchronous mode over a 200 ms round
/// trip); returns (RTO, acknowledged writes the new leader lacks, age of
/// the oldest lost one at the kill in ms).
fn kill_drill(max_lag_ms: u64) -> (Duration, usize, f64) {
    let dr = Dr::new(BINS, max_lag_ms, LEASE_MS);
    let (_w, a, b) = dr.start_all();
    if max_lag_ms > 0 {
        // A cross-region link: 100 ms each way, so the follower trails.
        dr.to_a.set(vigil_net::relay::Faults {
            delay: Duration::from_millis(100),
            ..Default::default()
        });
    }
    let writer = Writer::start(vec![a.http], "d");
    until("writes flow", Duration::from_secs(30), || {
        writer.acked_count() > 200
    });
    let _ = a.child.kill9();
    let killed = Instant::now();
    // The client moves to the surviving endpoint, as a health-checking
    // load balancer would.
    let second = Writer::start(vec![b.http], "e");
    until("a write succeeds on b", Duration::from_secs(60), || {
        second.acked_count() > 0
    });
    let after = second.finish();
    let before = writer.finish();
    let rto = after[0].at - killed;
    // Lost: acknowledged, yet not on the new leader; their age at the kill.
    let mut lost = 0;
    let mut oldest_lost_ms = 0.0f64;
    for w in &before {
        let r = request(b.http, "GET", &format!("/Patient/{}", w.id), None).expect("read");
        if r.status != 200 {
            lost += 1;
            let age = killed.saturating_duration_since(w.at).as_secs_f64() * 1e3;
            oldest_lost_ms = oldest_lost_ms.max(age);
        }
    }
    assert!(leads(b.http));
    (rto, lost, oldest_lost_ms)
}

fn switchover_drill() -> Duration {
    let dr = Dr::new(BINS, 0, LEASE_MS);
    let (_w, a, b) = dr.start_all();
    let writer = Writer::start(vec![a.http, b.http], "s");
    until("writes flow", Duration::from_secs(30), || {
        writer.acked_count() > 100
    });
    let asked = Instant::now();
    let r = request(a.http, "POST", "/admin/switchover", None).expect("switchover");
    let answered = Instant::now();
    assert_eq!(r.status, 200, "{}", r.body);
    let n = writer.acked_count();
    until("writes flow again", Duration::from_secs(30), || {
        writer.acked_count() > n + 50
    });
    caught_up(a.http);
    let gap = writer.longest_gap(asked, answered);
    drop(writer.finish());
    gap
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let drills: usize = std::env::var("VIGIL_DRILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let mut rto = Vec::new();
    for i in 0..drills {
        let (d, lost, _) = kill_drill(0);
        assert_eq!(lost, 0, "synchronous mode lost {lost} acknowledged writes");
        eprintln!("sync drill {}: RTO {:.2} s, lost 0", i + 1, d.as_secs_f64());
        rto.push(d.as_secs_f64());
    }
    rto.sort_by(f64::total_cmp);
    let max = rto.last().copied().unwrap_or(0.0);
    println!(
        "kill -9 leader, synchronous (max_lag 0), lease {LEASE_MS} ms, {drills} drills: RTO p50 {:.2} s, max {max:.2} s; acknowledged writes lost: 0",
        percentile(&rto, 0.5)
    );
    let bound_ms = 1_000;
    let (mut worst_lost, mut worst_age) = (0, 0.0f64);
    for i in 0..drills.min(5) {
        let (d, lost, age) = kill_drill(bound_ms);
        eprintln!(
            "async drill {}: RTO {:.2} s, lost {lost} writes, oldest {age:.0} ms before the kill",
            i + 1,
            d.as_secs_f64()
        );
        assert!(
            age <= bound_ms as f64,
            "a lost write was {age:.0} ms old: beyond max_lag"
        );
        worst_lost = worst_lost.max(lost);
        worst_age = worst_age.max(age);
    }
    println!(
        "kill -9 leader, asynchronous (max_lag {bound_ms} ms), {} drills: at most {worst_lost} acknowledged writes lost, the oldest {worst_age:.0} ms before the kill (bound {bound_ms} ms)",
        drills.min(5)
    );
    let mut pauses = Vec::new();
    for _ in 0..drills.min(5) {
        pauses.push(switchover_drill().as_secs_f64() * 1e3);
    }
    pauses.sort_by(f64::total_cmp);
    let max = pauses.last().copied().unwrap_or(0.0);
    println!(
        "switchover under load, {} drills: longest time without an acknowledged write p50 {:.0} ms, max {max:.0} ms",
        pauses.len(),
        percentile(&pauses, 0.5)
    );
}
