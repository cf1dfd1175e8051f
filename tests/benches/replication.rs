//! Replication figures for docs/BENCHMARKS.md: catch-up throughput of a
//! store that already holds data (MB of log and resources per second, to
//! durable on the follower, and the time until it has indexed it all),
//! directly on loopback and through the project's UDP relay adding 25 ms
//! each way (a 50 ms cross-region round trip), and wire bytes per
//! resource version against its raw JSON.
//!
//! `cargo bench -p vigil-tests --bench replication`. `VIGIL_BENCH_MB`
//! sets the store size (default 256 MB of raw JSON).
//! `VIGIL_BENCH_ONLY=encryption`: catch-up on loopback from an unencrypted
//! leader to an unencrypted follower and from an encrypted one to an
//! encrypted one (each node its own key file), in interleaved pairs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_engine::{Options, Store};
use vigil_net::relay::{Faults, Relay};
use vigil_net::runtime::node::{Node, NodeConfig, Role};
use vigil_net::runtime::tls::{NodeSpec, make_cluster};

fn main() {
    let mb: u64 = std::env::var("VIGIL_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    if std::env::var("VIGIL_BENCH_ONLY").is_ok_and(|v| v == "encryption") {
        encryption_pairs(mb);
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let certs = dir.path().join("certs");
    let specs = ["a", "b"].map(|n| NodeSpec::parse(n).expect("spec"));
    make_cluster(&certs, "bench", &specs).expect("certs");
    let leader = Arc::new(Store::open(dir.path().join("a")).expect("leader"));
    let raw = vigil_tests::fill_with_patients(&leader, mb, 7);
    let versions = leader.stats().expect("stats").versions;
    let log = leader.stats().expect("stats").log_bytes;
    println!(
        "leader: {versions} versions, {:.1} MB raw JSON, {:.1} MB of log",
        raw as f64 / 1e6,
        log as f64 / 1e6
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ln = Node::start(
            leader.clone(),
            NodeConfig::new("bench", "a", certs.clone(), "http://a", Role::Leader {
                listen: "127.0.0.1:0".parse().expect("addr"),
            }),
        )
        .await
        .expect("leader node");
        let addr = ln.local_addr().expect("addr");
        for (name, delay) in [
            ("loopback", None),
            ("relay, no delay", Some(0)),
            ("relay 25 ms each way", Some(25)),
        ] {
            let relay = delay.map(|d| {
                let r = Relay::start(addr, 1).expect("relay");
                r.set(Faults {
                    delay: Duration::from_millis(d),
                    ..Faults::default()
                });
                r
            });
            let target = relay.as_ref().map_or(addr, |r| r.addr());
            // The link keeps its counters across sessions: count this run's.
            let sent_before = bytes_sent(&ln);
            let (fnode, _fdir, secs, visible) =
                follow_to_the_end(&leader, target, &certs, None).await;
            let sent = bytes_sent(&ln) - sent_before;
            println!(
                "catch-up, {name}: durable in {secs:.2} s ({:.1} MB/s of log, {:.0} resources/s), indexed in {visible:.2} s; wire {:.1}% of raw JSON",
                log as f64 / 1e6 / secs,
                versions as f64 / secs,
                sent as f64 * 100.0 / raw as f64
            );
            fnode.shutdown().await;
        }
        ln.shutdown().await;
    });
}

/// Bytes the leader has sent its follower "b" over all sessions.
fn bytes_sent(leader: &Node) -> u64 {
    leader
        .status()
        .followers
        .iter()
        .map(|f| f.bytes_sent)
        .max()
        .unwrap_or(0)
}

/// A leader store holding about `mb` MB of raw JSON, with `kek` or not.
fn filled_leader(
    dir: &std::path::Path,
    mb: u64,
    kek: Option<Arc<dyn vigil_engine::crypt::Kek>>,
) -> (Arc<Store>, u64) {
    let leader = Arc::new(
        Store::open_with(
            dir,
            Options {
                kek,
                ..Options::default()
            },
        )
        .expect("leader"),
    );
    let raw = vigil_tests::fill_with_patients(&leader, mb, 7);
    (leader, raw)
}

fn key_file(dir: &std::path::Path, name: &str) -> Arc<dyn vigil_engine::crypt::Kek> {
    use vigil_engine::crypt::keyfile::KeyFile;
    let path = dir.join(format!("{name}.key"));
    KeyFile::create(&path, name).expect("key file");
    Arc::new(KeyFile::load(&path).expect("key file"))
}

/// Catch-up on loopback, encryption off and on, in three interleaved pairs.
fn encryption_pairs(mb: u64) {
    let dir = tempfile::tempdir().expect("dir");
    let certs = dir.path().join("certs");
    let specs = ["a", "b"].map(|n| NodeSpec::parse(n).expect("spec"));
    make_cluster(&certs, "bench", &specs).expect("certs");
    let (ka, kb) = (
        key_file(dir.path(), "region-a"),
        key_file(dir.path(), "region-b"),
    );
    let (plain, raw) = filled_leader(&dir.path().join("plain"), mb, None);
    let (sealed, _) = filled_leader(&dir.path().join("sealed"), mb, Some(ka));
    println!(
        "# encryption at rest, replication catch-up on loopback: leaders of {:.1} MB raw JSON; log {:.1} MB plain, {:.1} MB sealed",
        raw as f64 / 1e6,
        plain.stats().expect("stats").log_bytes as f64 / 1e6,
        sealed.stats().expect("stats").log_bytes as f64 / 1e6
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for round in 1..=3 {
            for (name, leader, kek) in [
                ("off", &plain, None),
                ("on ", &sealed, Some(kb.clone())),
            ] {
                let ln = Node::start(
                    leader.clone(),
                    NodeConfig::new("bench", "a", certs.clone(), "http://a", Role::Leader {
                        listen: "127.0.0.1:0".parse().expect("addr"),
                    }),
                )
                .await
                .expect("leader node");
                let addr = ln.local_addr().expect("addr");
                let (fnode, _fdir, secs, visible) =
                    follow_to_the_end(leader, addr, &certs, kek).await;
                let log = leader.stats().expect("stats").log_bytes;
                println!(
                    "encryption {name}, round {round}: durable in {secs:.2} s ({:.1} MB/s of log), indexed in {visible:.2} s ({:.1} MB raw JSON/s)",
                    log as f64 / 1e6 / secs,
                    raw as f64 / 1e6 / visible
                );
                fnode.shutdown().await;
                ln.shutdown().await;
            }
        }
    });
}

/// A new follower (a fresh replica store, under `kek` if given) of the
/// leader at `target`, started and waited on until it holds the leader's
/// whole log durably and then visibly: its node (to shut down), its
/// directory (to keep while it runs), and the seconds to each.
async fn follow_to_the_end(
    leader: &Store,
    target: std::net::SocketAddr,
    certs: &std::path::Path,
    kek: Option<Arc<dyn vigil_engine::crypt::Kek>>,
) -> (Node, tempfile::TempDir, f64, f64) {
    let fdir = tempfile::tempdir().expect("dir");
    let replica = Arc::new(
        Store::open_with(
            fdir.path(),
            Options {
                replica: true,
                kek,
                ..Options::default()
            },
        )
        .expect("replica"),
    );
    let started = Instant::now();
    let fnode = Node::start(
        replica.clone(),
        NodeConfig::new(
            "bench",
            "b",
            certs.to_owned(),
            "http://b",
            Role::Follower {
                leader: target,
                leader_name: "a".into(),
            },
        ),
    )
    .await
    .expect("follower node");
    while replica.log_end().lsn < leader.last_lsn() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let durable = started.elapsed().as_secs_f64();
    while replica.last_lsn() < leader.last_lsn() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (fnode, fdir, durable, started.elapsed().as_secs_f64())
}
