//! Encryption at rest across a two-region cluster of real processes: each
//! data node has its own key-encryption key (its region's key file); the
//! leader's data keys reach the follower over the mutual-TLS link and are
//! wrapped there under the follower's key. kill -9 of the leader, the
//! follower promoted, the old leader back as a follower: every
//! acknowledged write readable everywhere, each node's data keys wrapped
//! only under its own key, and nothing of a written resource readable in
//! either node's log. A follower without a key stops with a clear reason.

use std::path::Path;
use std::time::{Duration, Instant};

use vigil_engine::crypt::datakeys::decode_file;
use vigil_engine::crypt::keyfile::KeyFile;
use vigil_fhir::config::Config;
use vigil_testkit::http::{request, status};
use vigil_testkit::until;
use vigil_tests::dr::{Bins, Dr, Writer, all_present, caught_up, leads};

const BINS: Bins = Bins {
    node: env!("CARGO_BIN_EXE_vigil_node"),
    witness: env!("CARGO_BIN_EXE_vigil_witness"),
};
const LEASE_MS: u64 = 1_000;
const FAMILY: &str = "Qwzxsecretfamily";
const MRN: &str = "MRN-SECRET-4711";

/// A node's key file sits beside its data directory.
fn kek_beside_data(c: &mut Config) {
    c.encryption.kek = Some(format!("{}.kek", c.data.display()));
}

fn key_file(dr: &Dr, node: &str) {
    let path = dr.data(node).with_extension("kek");
    KeyFile::create(&path, &format!("region-{node}")).expect("key file");
}

/// `(id, KEK name)` of every data key in a node's data-keys file.
fn data_keys(dir: &Path) -> Vec<(u64, String)> {
    let bytes = std::fs::read(dir.join("data-keys")).expect("data-keys file");
    decode_file(&bytes)
        .expect("decodes")
        .entries
        .into_iter()
        .map(|e| (e.id, e.wrapped.kek))
        .collect()
}

/// Whether any byte of the node's log (its segments and data-keys file)
/// shows `needle`.
fn log_shows(dir: &Path, needle: &str) -> bool {
    let mut files = vec![dir.join("data-keys")];
    for e in std::fs::read_dir(dir.join("wal")).expect("wal") {
        files.push(e.expect("entry").path());
    }
    files.iter().any(|f| {
        let b = std::fs::read(f).expect("read");
        b.windows(needle.len()).any(|w| w == needle.as_bytes())
    })
}

fn put_secret(node: std::net::SocketAddr) {
    let body = format!(
        r#"{{"resourceType":"Patient","id":"secret","identifier":[{{"system":"urn:mrn","value":"{MRN}"}}],"name":[{{"family":"{FAMILY}","given":["Ann"]}}]}}"#
    );
    let r = request(node, "PUT", "/Patient/secret", Some(&body)).expect("put");
    assert!(r.status == 201 || r.status == 200, "{}", r.body);
}

#[test]
fn a_key_per_region_survives_failover_and_rejoin_and_the_logs_stay_sealed() {
    let mut dr = Dr::new(BINS, 0, LEASE_MS);
    for n in ["a", "b"] {
        key_file(&dr, n);
        dr.configure(n, kek_beside_data);
    }
    let (_w, a, b) = dr.start_all();
    put_secret(a.http);
    caught_up(b.http);
    let r = request(b.http, "GET", "/Patient/secret", None).expect("read");
    assert_eq!(r.status, 200, "the follower reads the sealed write");
    assert!(r.body.contains(FAMILY));

    let writer = Writer::start(vec![b.http, a.http], "e");
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
    all_present(b.http, &acked);

    let a = dr.start("a");
    caught_up(a.http);
    assert!(!leads(a.http) && leads(b.http), "b leads, a follows");
    all_present(a.http, &acked);
    let r = request(a.http, "GET", "/Patient/secret", None).expect("read");
    assert_eq!(r.status, 200);

    let (ka, kb) = (data_keys(&dr.data("a")), data_keys(&dr.data("b")));
    assert!(ka.iter().all(|(_, k)| k == "region-a"), "{ka:?}");
    assert!(kb.iter().all(|(_, k)| k == "region-b"), "{kb:?}");
    let shared = |x: &[(u64, String)], y: &[(u64, String)]| {
        x.iter()
            .filter(|(id, _)| y.iter().any(|(j, _)| j == id))
            .count()
    };
    // b holds a's keys (it followed a), a holds b's (it follows b now).
    assert!(shared(&ka, &kb) >= 2, "a: {ka:?}\nb: {kb:?}");
    for node in ["a", "b"] {
        for needle in [FAMILY, MRN] {
            assert!(
                !log_shows(&dr.data(node), needle),
                "{needle} readable in {node}'s log"
            );
        }
    }
}

#[test]
fn a_follower_without_a_key_stops_and_says_why() {
    let mut dr = Dr::new(BINS, 1_000, LEASE_MS);
    key_file(&dr, "a");
    dr.configure("a", kek_beside_data);
    let w = dr.witness();
    let a = dr.start("a");
    until("a leads", Duration::from_secs(60), || leads(a.http));
    put_secret(a.http);
    let b = dr.start("b");
    until("b stops replicating", Duration::from_secs(30), || {
        status(b.http)["upstream"]["stopped"].is_string()
    });
    let why = status(b.http)["upstream"]["stopped"].to_string();
    assert!(why.contains("encrypted"), "{why}");
    assert_eq!(
        request(b.http, "GET", "/Patient/secret", None)
            .expect("read")
            .status,
        404,
        "nothing of the sealed log is served by b"
    );
    drop((w, a, b));
}
