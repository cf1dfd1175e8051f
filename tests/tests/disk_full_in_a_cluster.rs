//! A full disk in a two-region cluster of real processes, each data
//! directory that fills on a tmpfs of its own (root: CI runs as root):
//! - a leader with `on_disk_full = "switchover"` hands leadership to its
//!   follower with zero loss, and writes go on through the same endpoints;
//! - a leader with the default (`refuse`) keeps leading, answers 507, and
//!   takes writes again once space is freed, without a restart;
//! - a follower whose disk fills stops acknowledging (its leader records it
//!   ineligible and writes go on), and catches up once space is freed;
//! - a leader whose disk another program fills to the last byte (no
//!   reserve left to protect it) stops its store, steps down at once so the
//!   follower takes over with zero loss, and reopens and follows once
//!   space is freed, with no restart.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use vigil_fhir::config::Config;
use vigil_fhir::config::replication::OnDiskFull;
use vigil_testkit::http::request;
use vigil_testkit::{http::status, until};
use vigil_tests::dr::{Bins, Dr, Writer, all_present, caught_up, leads};
use vigil_tests::{Tmpfs, bulky_patient};

const BINS: Bins = Bins {
    node: env!("CARGO_BIN_EXE_vigil_node"),
    witness: env!("CARGO_BIN_EXE_vigil_witness"),
};
const LEASE_MS: u64 = 1_000;
const TMPFS_MIB: u64 = 24;
const FILLER_MIB: u64 = 4;
/// The reserve on the small disk.
const RESERVE_BYTES: u64 = 2 << 20;
/// Bounds the filling loop.
const FILL_LIMIT: Duration = Duration::from_secs(120);

/// Writes bulky Patients through `node` until one gets 507 (or, when
/// `handing_over`, the 503 of a switchover under way); returns the
/// acknowledged ids.
fn fill(node: SocketAddr, tag: &str, handing_over: bool) -> Vec<String> {
    let started = Instant::now();
    let mut acked = Vec::new();
    loop {
        assert!(started.elapsed() < FILL_LIMIT, "the disk never filled");
        let id = format!("{tag}{}", acked.len());
        let r = request(
            node,
            "PUT",
            &format!("/Patient/{id}"),
            Some(&bulky_patient(&id, 8 * 1024)),
        )
        .expect("put");
        match r.status {
            201 => acked.push(id),
            507 => {
                assert!(r.body.contains("the disk is full"), "{}", r.body);
                return acked;
            }
            // Leadership moving (or moved) away from the full node.
            503 if handing_over => return acked,
            other => panic!("a full disk answers 507, not {other}: {}", r.body),
        }
    }
}

/// Writes `count` bulky Patients through `node`, each acknowledged.
fn write_n(node: SocketAddr, tag: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let id = format!("{tag}{i}");
            let r = request(
                node,
                "PUT",
                &format!("/Patient/{id}"),
                Some(&bulky_patient(&id, 8 * 1024)),
            )
            .expect("put");
            assert_eq!(r.status, 201, "{}", r.body);
            id
        })
        .collect()
}

/// Every Patient of `ids` reads 200 at `node` (`where_` names it in
/// a failure).
fn all_readable<'a>(node: SocketAddr, ids: impl IntoIterator<Item = &'a String>, where_: &str) {
    for id in ids {
        let r = request(node, "GET", &format!("/Patient/{id}"), None).expect("read");
        assert_eq!(r.status, 200, "{id} is not on {where_}: {}", r.body);
    }
}

/// The small disk's reserve, the only change to the node's configuration.
fn reserve(c: &mut Config) {
    c.disk_reserve_bytes = RESERVE_BYTES;
}

/// A cluster (`max_lag_ms`) whose node `small` keeps its data on a small
/// tmpfs, its configuration changed by `adjust`; the
/// tmpfs is part filled when `filler`. Returns the tmpfs, the filler file
/// and the cluster.
fn cluster_on_a_small_disk(
    small: &'static str,
    max_lag_ms: u64,
    adjust: fn(&mut Config),
    filler: bool,
) -> (Tmpfs, Option<std::path::PathBuf>, Dr) {
    let fs = Tmpfs::mount(TMPFS_MIB);
    let filler = filler.then(|| fs.fill(FILLER_MIB));
    let mut dr = Dr::new(BINS, max_lag_ms, LEASE_MS);
    dr.place_data(small, fs.path.join(small));
    dr.configure(small, adjust);
    (fs, filler, dr)
}

#[test]
fn a_full_leader_hands_over_when_configured_and_loses_nothing() {
    let (_fs, _filler, dr) = cluster_on_a_small_disk(
        "a",
        0,
        |c| {
            c.disk_reserve_bytes = RESERVE_BYTES;
            c.replication.as_mut().expect("replication").on_disk_full = OnDiskFull::Switchover;
        },
        true,
    );
    let (_w, a, b) = dr.start_all();
    let writer = Writer::start(vec![a.http, b.http], "s");
    let acked = fill(a.http, "f", true);
    until(
        "b leads after a's disk filled",
        Duration::from_secs(30),
        || leads(b.http),
    );
    let handed = Instant::now();
    until("writes flow through b", Duration::from_secs(20), || {
        writer.acked().iter().any(|w| w.at > handed)
    });
    until("a records the switchover", Duration::from_secs(10), || {
        status(a.http)["leadership"]["transitions"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["kind"] == "switchover"))
    });
    let written = writer.finish();
    // Synchronous and a switchover: nothing acknowledged is lost.
    all_present(b.http, &written);
    all_readable(b.http, &acked, "the new leader after the switchover");
}

#[test]
fn a_full_leader_refuses_by_default_keeps_leading_and_resumes_when_space_returns() {
    let (_fs, filler, dr) = cluster_on_a_small_disk("a", 0, reserve, true);
    let filler = filler.expect("filler");
    let (_w, a, b) = dr.start_all();
    let mut acked = fill(a.http, "r", false);
    // Longer than a disk sample and a lease: a keeps leading, refusing.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(status(a.http)["leadership"]["role"], "leader");
    assert!(!leads(b.http), "no switchover with on_disk_full = refuse");
    // Free space moves a little on a full disk (search-key merges remove
    // files): full again, then checked at once, with a write larger than
    // the headroom.
    acked.extend(fill(a.http, "s", false));
    let r = request(a.http, "GET", "/health/leader", None).expect("health");
    assert_eq!(
        r.status, 503,
        "a full leader is no place for writes: {}",
        r.body
    );
    let r = request(
        a.http,
        "PUT",
        "/Patient/refused",
        Some(&bulky_patient("refused", 4 << 20)),
    )
    .expect("put");
    assert_eq!(r.status, 507, "{}", r.body);
    std::fs::remove_file(&filler).expect("free space");
    let r = request(
        a.http,
        "PUT",
        "/Patient/after",
        Some(&bulky_patient("after", 1024)),
    )
    .expect("put");
    assert_eq!(r.status, 201, "writes resume without a restart: {}", r.body);
    caught_up(b.http);
    acked.push("after".into());
    all_readable(b.http, &acked, "the follower");
}

#[test]
fn a_full_follower_stops_acknowledging_and_catches_up_when_space_returns() {
    let (_fs, filler, dr) = cluster_on_a_small_disk("b", 1_000, reserve, true);
    let filler = filler.expect("filler");
    let (_w, a, b) = dr.start_all();
    // Write through the leader until the follower's disk is full and it
    // falls behind: the leader records it ineligible and goes on.
    let mut acked = Vec::new();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < FILL_LIMIT,
            "the follower never fell behind"
        );
        acked.extend(write_n(a.http, &format!("w{}-", acked.len()), 200));
        let st = status(a.http);
        let f = &st["followers"][0];
        if f["eligible"] == false && f["lag_lsns"].as_u64().is_some_and(|l| l > 0) {
            break;
        }
    }
    let st = status(b.http);
    assert_eq!(st["disk"]["writable"], false, "b's disk is full: {st}");
    assert!(
        st["upstream"]["durable"].as_u64() < status(a.http)["last_lsn"].as_u64(),
        "b acknowledged nothing it could not write: {st}"
    );
    // Space returns: b catches up, and is eligible again.
    std::fs::remove_file(&filler).expect("free space");
    caught_up(b.http);
    until("b recorded eligible again", Duration::from_secs(20), || {
        status(a.http)["followers"][0]["eligible"] == true
    });
    all_readable(b.http, acked.iter().rev().take(50), "the follower");
}

#[test]
fn a_leader_whose_store_stops_steps_down_and_reopens_when_space_returns() {
    // No reserve, and search keys written to their files every few writes:
    // with the disk full to the last byte, one of those writes fails.
    let (fs, _, dr) = cluster_on_a_small_disk(
        "a",
        0,
        |c| {
            c.disk_reserve_bytes = 0;
            c.search_key_buffer_entries = 64;
        },
        false,
    );
    let (_w, a, b) = dr.start_all();
    let writer = Writer::start(vec![a.http, b.http], "x");
    until("writes flow", Duration::from_secs(20), || {
        writer.acked_count() > 20
    });
    let filler = fs.fill_all();
    until(
        "b leads once a's store stopped",
        Duration::from_secs(60),
        || leads(b.http),
    );
    let st = status(a.http);
    assert!(
        st["leadership"]["transitions"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["reason"]
                .as_str()
                .is_some_and(|r| r.contains("the store stopped")))),
        "a stepped down because its store stopped: {st}"
    );
    let moved = Instant::now();
    until("writes flow through b", Duration::from_secs(20), || {
        writer.acked().iter().any(|w| w.at > moved)
    });
    // Space again: a reopens its store by itself and follows.
    std::fs::remove_file(&filler).expect("free space");
    until("a reopened its store", Duration::from_secs(20), || {
        status(a.http)["leadership"]["transitions"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["kind"] == "reopened"))
    });
    caught_up(a.http);
    let written = writer.finish();
    // Synchronous: nothing acknowledged is lost, on either node.
    all_present(b.http, &written);
    all_present(a.http, &written[..written.len().min(200)]);
}
