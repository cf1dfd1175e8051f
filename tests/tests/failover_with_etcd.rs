//! Automatic failover with etcd as the coordinator: two `vigil_node` data
//! nodes and a real etcd (1 or 3 `etcd` processes on loopback), the data
//! nodes' link through UDP relays. The disasters of the witness's tests —
//! kill -9 of the leader, the leader partitioned, switchover and back, both
//! nodes restarted — and etcd's own: a member lost, quorum lost. The checks
//! are DESIGN.md's: one leader, no acknowledged write lost (synchronous
//! mode), a deposed leader acknowledges nothing after its lease.

use std::time::{Duration, Instant};

use vigil_net::relay::Faults;
use vigil_testkit::etcd::Etcd;
use vigil_testkit::http::{request, status};
use vigil_testkit::until;
use vigil_tests::dr::{
    Bins, CUT, Dr, Writer, all_present, both_crash_and_restart, caught_up, first_ack_after, leads,
    switch_over,
};

const BINS: Bins = Bins {
    node: env!("CARGO_BIN_EXE_vigil_node"),
    witness: env!("CARGO_BIN_EXE_vigil_witness"),
};
/// Lease in the tests: short, so drills take seconds (etcd's lease TTL is
/// then 1 s, which the members' fast election settings allow).
const LEASE_MS: u64 = 1_000;

/// A cluster of a and b coordinated by `etcd`, each node given `a` and `b`
/// as its members (indexes).
fn cluster(etcd: &Etcd, a: &[usize], b: &[usize]) -> Dr {
    let mut dr = Dr::new(BINS, 0, LEASE_MS);
    let pick = |ix: &[usize]| ix.iter().map(|i| etcd.endpoint(*i)).collect();
    dr.use_etcd(pick(a), pick(b));
    dr
}

/// The leader key: `(holder, epoch)`.
fn leader_key(etcd: &Etcd) -> Option<(String, u64)> {
    let v = etcd.get("/vigil/t/leader")?;
    let (h, e) = v.split_once(' ').expect("holder epoch");
    Some((h.to_owned(), e.parse().expect("epoch")))
}

/// The witness state etcd holds.
fn state(etcd: &Etcd) -> vigil_net::proto::witness::WitnessState {
    let text = etcd.get("/vigil/t/state").expect("state key");
    vigil_net::proto::witness::WitnessState::parse(&text).expect("state")
}

#[test]
fn killing_the_leader_promotes_the_follower_through_etcd_and_the_old_leader_rejoins() {
    let etcd = Etcd::start(1);
    let dr = cluster(&etcd, &[0], &[0]);
    let (a, b) = dr.start_nodes();
    assert_eq!(leader_key(&etcd).map(|l| l.0), Some("a".into()));
    let st = status(a.http);
    assert_eq!(st["leadership"]["coordinator"], "etcd", "{st}");
    assert_eq!(st["leadership"]["witness_reachable"], true, "{st}");
    let writer = Writer::start(vec![b.http, a.http], "k");
    until("writes flow", Duration::from_secs(20), || {
        writer.acked_count() > 50
    });
    let _ = a.child.kill9();
    // From here a is dead: what is acknowledged later was sent to b.
    let killed = Instant::now();
    until("the follower promotes", Duration::from_secs(20), || {
        leads(b.http)
    });
    writer.resumed_after(killed);
    let acked = writer.finish();
    let rto = first_ack_after(&acked, killed);
    eprintln!("RTO with etcd (kill -9 to the first acknowledged write): {rto:?}");
    all_present(b.http, &acked);
    let (holder, epoch) = leader_key(&etcd).expect("b holds the leader key");
    assert_eq!(holder, "b");
    let st = state(&etcd);
    assert_eq!((st.epoch, st.leader.as_str()), (epoch, "b"));
    assert_eq!(
        status(b.http)["leadership"]["epoch"].as_u64(),
        Some(st.epoch),
        "b leads the epoch etcd allocated"
    );

    // The old leader comes back and rejoins as a follower; once caught up
    // the new leader records it eligible in etcd.
    let a = dr.start("a");
    caught_up(a.http);
    assert!(!leads(a.http) && leads(b.http), "b leads, a follows");
    until("a recorded eligible again", Duration::from_secs(20), || {
        state(&etcd).followers.get("a").is_some_and(|r| r.eligible)
    });
    all_present(a.http, &acked);
}

#[test]
fn switchover_and_back_through_etcd_lose_nothing() {
    let etcd = Etcd::start(1);
    let dr = cluster(&etcd, &[0], &[0]);
    let (a, b) = dr.start_nodes();
    let writer = Writer::start(vec![a.http, b.http], "s");
    until("writes flow", Duration::from_secs(20), || {
        writer.acked_count() > 50
    });
    let epoch0 = state(&etcd).epoch;
    switch_over(a.http, "b", &writer);
    assert_eq!(leader_key(&etcd).map(|l| l.0), Some("b".into()));
    caught_up(a.http);
    until("a recorded eligible", Duration::from_secs(20), || {
        state(&etcd).followers.get("a").is_some_and(|r| r.eligible)
    });
    switch_over(b.http, "a", &writer);
    assert_eq!(leader_key(&etcd).map(|l| l.0), Some("a".into()));
    assert_eq!(state(&etcd).epoch, epoch0 + 2, "one epoch per hand-over");
    let acked = writer.finish();
    caught_up(b.http);
    all_present(a.http, &acked);
    all_present(b.http, &acked);
}

#[test]
fn both_data_nodes_restarted_at_once_elect_one_leader_through_etcd() {
    let etcd = Etcd::start(1);
    let dr = cluster(&etcd, &[0], &[0]);
    let (a, b) = dr.start_nodes();
    let leader = both_crash_and_restart(&dr, a, b, LEASE_MS);
    assert_eq!(leader_key(&etcd).map(|l| l.0), Some(leader.into()));
}

#[test]
fn a_leader_cut_off_from_its_follower_and_etcd_stops_acknowledging_and_rejoins() {
    // a reaches etcd only through member 0, b through members 1 and 2:
    // pausing member 0 cuts a off from etcd while the cluster keeps its
    // quorum (1 and 2).
    let etcd = Etcd::start(3);
    let dr = cluster(&etcd, &[0], &[1, 2]);
    let (a, b) = dr.start_nodes();
    let writer = Writer::start(vec![a.http], "p");
    until("writes flow", Duration::from_secs(20), || {
        writer.acked_count() > 30
    });
    etcd.pause(0);
    dr.to_a.set(CUT);
    dr.to_b.set(CUT);
    let cut = Instant::now();
    until("b promotes", Duration::from_secs(30), || leads(b.http));
    let promoted = Instant::now();
    let acked = writer.finish();
    // a's own view of its lease ends before etcd's promise does, and b
    // waits for etcd's: nothing a acknowledged can postdate b's promotion.
    assert!(
        acked.iter().all(|w| w.at < promoted),
        "the deposed leader acknowledged a write after the new one led"
    );
    let last_a = acked.iter().map(|w| w.at).max().expect("writes");
    eprintln!(
        "partitioned leader: last write acknowledged {:?} after the cut, b led after {:?}",
        last_a.saturating_duration_since(cut),
        promoted - cut
    );
    // Heal: a learns the new epoch, steps down and rejoins as a follower.
    etcd.resume(0);
    dr.to_a.set(Faults::default());
    dr.to_b.set(Faults::default());
    until("a follows b", Duration::from_secs(30), || {
        !leads(a.http) && status(a.http)["upstream"]["connected"] == true
    });
    caught_up(a.http);
    assert!(leads(b.http));
    all_present(b.http, &acked);
}

#[test]
fn losing_an_etcd_member_changes_nothing_and_without_quorum_the_leader_writes_while_its_follower_answers()
 {
    let mut etcd = Etcd::start(3);
    let all = [0, 1, 2];
    let dr = cluster(&etcd, &all, &all);
    let (a, b) = dr.start_nodes();
    let put = |id: &str| {
        let body = format!(r#"{{"resourceType":"Patient","id":"{id}"}}"#);
        request(a.http, "PUT", &format!("/Patient/{id}"), Some(&body))
            .expect("put")
            .status
    };
    assert_eq!(put("m0"), 201);

    // One member of three lost: nothing changes.
    etcd.kill(0);
    std::thread::sleep(Duration::from_millis(3 * LEASE_MS));
    assert!(leads(a.http) && !leads(b.http), "a still leads");
    assert_eq!(put("m1"), 201);
    assert_eq!(status(a.http)["leadership"]["witness_reachable"], true);

    // Quorum lost: etcd answers nothing, but a and b still make a
    // majority of the three voters, so a keeps leading (Patroni's
    // failsafe): writes go on while the follower answers.
    etcd.kill(1);
    until("a sees etcd unreachable", Duration::from_secs(10), || {
        status(a.http)["leadership"]["witness_reachable"] == false
    });
    std::thread::sleep(Duration::from_millis(3 * LEASE_MS));
    assert!(leads(a.http) && !leads(b.http), "a still leads");
    assert_eq!(put("m2"), 201, "writes go on without etcd's quorum");

    // And without the follower too, a has no majority: it stops
    // acknowledging.
    let _ = b.child.kill9();
    until("a refuses writes", Duration::from_secs(10), || {
        put("m3") == 503
    });

    // etcd back (and b): writes resume, with one leader.
    etcd.restart(0);
    etcd.restart(1);
    etcd.wait_healthy();
    let b = dr.start("b");
    until("writes resume", Duration::from_secs(30), || {
        leads(a.http) || leads(b.http)
    });
    let leader = if leads(a.http) { a.http } else { b.http };
    let r = request(
        leader,
        "PUT",
        "/Patient/m4",
        Some(r#"{"resourceType":"Patient","id":"m4"}"#),
    )
    .expect("put");
    assert_eq!(r.status, 201, "{}", r.body);
    for id in ["m0", "m1", "m2"] {
        let r = request(leader, "GET", &format!("/Patient/{id}"), None).expect("get");
        assert_eq!(r.status, 200, "{id} was acknowledged");
    }
}
