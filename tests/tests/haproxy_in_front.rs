//! One client URL through a real HAProxy in front of a two-node cluster,
//! configured by docs/deploy/haproxy.cfg exactly as shipped (only the
//! servers' and the frontend's addresses substituted): writes follow the
//! leader across a kill -9 and across a partition, no acknowledged write is
//! lost, and a deposed leader takes no write after its lease.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use vigil_net::relay::Faults;
use vigil_testkit::haproxy::HaProxy;
use vigil_testkit::http::request;
use vigil_testkit::{free_ports, until};
use vigil_tests::NodeProcess;
use vigil_tests::dr::{Bins, CUT, Dr, Writer, all_present, caught_up, first_ack_after, leads};

const BINS: Bins = Bins {
    node: env!("CARGO_BIN_EXE_vigil_node"),
    witness: env!("CARGO_BIN_EXE_vigil_witness"),
};
const LEASE_MS: u64 = 1_000;
const SHIPPED: &str = include_str!("../../docs/deploy/haproxy.cfg");

/// HAProxy with the shipped configuration in front of `a` and `b`.
fn haproxy(a: &NodeProcess, b: &NodeProcess) -> HaProxy {
    let (port, _) = free_ports(1, 0);
    let front = SocketAddr::from(([127, 0, 0, 1], port));
    let cfg = SHIPPED
        .replace("bind :8080", &format!("bind {front}"))
        .replace("10.0.0.1:8080", &a.http.to_string())
        .replace("10.1.0.1:8080", &b.http.to_string());
    assert_ne!(cfg, SHIPPED, "the shipped file still has its placeholders");
    HaProxy::start(&cfg, front)
}

#[test]
fn writes_through_one_url_follow_the_leader_across_a_kill_and_none_is_lost() {
    let dr = Dr::new(BINS, 0, LEASE_MS);
    let (_w, a, b) = dr.start_all();
    let lb = haproxy(&a, &b);
    let writer = Writer::start(vec![lb.addr], "h");
    until(
        "writes flow through HAProxy",
        Duration::from_secs(20),
        || writer.acked_count() > 50,
    );
    let _ = a.child.kill9();
    // From here a is dead: what is acknowledged later was sent to b.
    let killed = Instant::now();
    writer.resumed_after(killed);
    let acked = writer.finish();
    let resumed = first_ack_after(&acked, killed);
    eprintln!("through HAProxy: kill -9 of the leader to the next acknowledged write {resumed:?}");
    assert!(leads(b.http));
    all_present(b.http, &acked);
    // Reads through the same URL (the read backend) see them too.
    let last = acked.last().expect("writes");
    let r = request(lb.addr, "GET", &format!("/Patient/{}", last.id), None).expect("read");
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_partitioned_leader_behind_haproxy_takes_no_write_after_its_lease() {
    // Asynchronous (max_lag 2 s): the leader acknowledges on its own, so
    // only its lease keeps it from taking writes once cut off.
    let dr = Dr::new(BINS, 2_000, LEASE_MS);
    let (_w, a, b) = dr.start_all();
    let lb = haproxy(&a, &b);
    let writer = Writer::start(vec![lb.addr], "q");
    until(
        "writes flow through HAProxy",
        Duration::from_secs(20),
        || writer.acked_count() > 50,
    );
    // a loses its follower and the witness; HAProxy still reaches it.
    dr.to_a.set(CUT);
    dr.to_b.set(CUT);
    dr.a_to_w.set(CUT);
    let cut = Instant::now();
    until("b leads", Duration::from_secs(30), || leads(b.http));
    until(
        "writes resume through the same URL",
        Duration::from_secs(30),
        || {
            writer
                .acked()
                .iter()
                .any(|w| w.at > cut + Duration::from_millis(LEASE_MS) * 3)
        },
    );
    let acked = writer.finish();
    // Whatever was acknowledged after a's lease ran out (at most one lease
    // after the cut) was acknowledged by b.
    let after: Vec<_> = acked
        .iter()
        .filter(|w| w.at > cut + Duration::from_millis(LEASE_MS))
        .cloned()
        .collect();
    assert!(!after.is_empty());
    all_present(b.http, &after);
    let r = request(a.http, "GET", "/health/leader", None).expect("health");
    assert_eq!(
        r.status, 503,
        "the cut-off node is no write target: {}",
        r.body
    );
    // Healed, a rejoins and b keeps leading.
    dr.to_a.set(Faults::default());
    dr.to_b.set(Faults::default());
    dr.a_to_w.set(Faults::default());
    until("a follows", Duration::from_secs(30), || {
        !leads(a.http) && vigil_testkit::http::status(a.http)["upstream"]["connected"] == true
    });
    caught_up(a.http);
    assert!(leads(b.http));
}
