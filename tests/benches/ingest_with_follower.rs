//! Creates with a follower attached, at the store's own layer: the
//! like-for-like counterpart of issue 4's PostgreSQL figures (16 clients
//! inserting FHIR-like JSON into a version table, a streaming standby on
//! loopback: ~9,900 creates/s asynchronous, ~8,000/s with
//! `synchronous_commit = on`, ~2,180 bytes of WAL per create). Those went
//! through no HTTP and no FHIR handling; neither does this. The HTTP figures
//! are `tests/scripts/replication_http.sh`'s.
//!
//! Each of 16 client threads commits one generated Patient per commit (its
//! search keys indexed as the FHIR server indexes them) and, in synchronous
//! mode, waits until the follower holds it durably — what `vigil serve`
//! does before answering with `max_lag_ms = 0`. Leader and follower are
//! `vigil-net` nodes over QUIC with mutual TLS on loopback, on the same two
//! cores as the clients (as PostgreSQL and its standby were).
//!
//! `cargo bench -p vigil-tests --bench ingest_with_follower`;
//! `VIGIL_BENCH_SECS` sets each run's length (default 10);
//! `VIGIL_BENCH_MODE=asynchronous|synchronous` runs only that mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vigil_engine::{Batch, Op, Options, Store};
use vigil_fhir::search::{SearchKeys, keys_of_value};
use vigil_fhir::synth::{Rng, patient};
use vigil_net::runtime::node::{Node, NodeConfig, Role};
use vigil_net::runtime::tls::{NodeSpec, make_cluster};

/// The allocator `vigil serve` runs with, so the store costs what it costs
/// in the product.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Concurrent clients, as in the PostgreSQL run.
const CLIENTS: usize = 16;
/// Longest a synchronous commit may wait for the follower before the run
/// counts it as an error.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

fn main() {
    let secs: u64 = std::env::var("VIGIL_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let only = std::env::var("VIGIL_BENCH_MODE").ok();
    for (mode, max_lag) in [
        ("asynchronous", None),
        ("synchronous", Some(Duration::ZERO)),
    ] {
        if only.as_deref().is_some_and(|m| m != mode) {
            continue;
        }
        run(mode, max_lag, Duration::from_secs(secs));
    }
}

fn open(dir: &std::path::Path, replica: bool) -> Arc<Store> {
    Arc::new(
        Store::open_with(
            dir,
            Options {
                replica,
                extractor: Arc::new(SearchKeys::default()),
                ..Options::default()
            },
        )
        .expect("store"),
    )
}

fn run(mode: &str, max_lag: Option<Duration>, length: Duration) {
    let dir = tempfile::tempdir().expect("dir");
    let certs = dir.path().join("certs");
    let specs = ["a", "b"].map(|n| NodeSpec::parse(n).expect("spec"));
    make_cluster(&certs, "bench", &specs).expect("certs");
    let leader = open(&dir.path().join("a"), false);
    let replica = open(&dir.path().join("b"), true);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (ln, fnode) = rt.block_on(async {
        let mut cfg = NodeConfig::new(
            "bench",
            "a",
            certs.clone(),
            "http://a",
            Role::Leader {
                listen: "127.0.0.1:0".parse().expect("addr"),
            },
        );
        cfg.max_lag = max_lag;
        let ln = Node::start(leader.clone(), cfg).await.expect("leader node");
        let addr = ln.local_addr().expect("addr");
        let fnode = Node::start(
            replica.clone(),
            NodeConfig::new(
                "bench",
                "b",
                certs.clone(),
                "http://b",
                Role::Follower {
                    leader: addr,
                    leader_name: "a".into(),
                },
            ),
        )
        .await
        .expect("follower node");
        while ln.connected_followers().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (Arc::new(ln), fnode)
    });
    let log_before = leader.stats().expect("stats").log_bytes;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (leader, ln, stop, handle) = (
                leader.clone(),
                ln.clone(),
                stop.clone(),
                rt.handle().clone(),
            );
            std::thread::spawn(move || {
                let mut rng = Rng::new(100 + c as u64);
                let (mut lat, mut errors) = (Vec::new(), 0u64);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let id = format!("c{c}-{n}");
                    // The server's path: one parse (here, one generated
                    // value) gives both the stored bytes and the search keys.
                    let value = patient(&mut rng, &id);
                    let mut keys = Vec::new();
                    keys_of_value("Patient", &value, &mut keys);
                    let body = serde_json::to_vec(&value).expect("json");
                    let mut batch = Batch::new();
                    batch.push(Op::put("Patient", &id, body).with_keys(keys));
                    let t = Instant::now();
                    let lsn = leader
                        .commit(batch)
                        .expect("commit")
                        .last_lsn
                        .expect("a create writes");
                    if max_lag == Some(Duration::ZERO)
                        && !handle.block_on(ln.wait_replicated(lsn, SYNC_TIMEOUT))
                    {
                        errors += 1;
                        continue;
                    }
                    lat.push(t.elapsed().as_micros() as u64);
                }
                (lat, errors)
            })
        })
        .collect();
    std::thread::sleep(length);
    stop.store(true, Ordering::Relaxed);
    let (mut lat, mut errors) = (Vec::new(), 0);
    for c in clients {
        let (l, e) = c.join().expect("client");
        lat.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    let log = leader.stats().expect("stats").log_bytes - log_before;
    rt.block_on(async {
        let end = leader.last_lsn();
        while replica.log_end().lsn < end {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let st = ln.status();
    let f = st.followers.first().cloned().unwrap_or_default();
    println!(
        "{mode}, {CLIENTS} clients: {:.0} creates/s, commit p50 {:.2} ms p99 {:.2} ms, {errors} errors; {:.0} bytes of log per create; lag commit->durable p50 {:.1} ms p99 {:.1} ms",
        lat.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        log as f64 / lat.len().max(1) as f64,
        f.commit_to_durable_p50_ms,
        f.commit_to_durable_p99_ms,
    );
    rt.block_on(async {
        fnode.shutdown().await;
        ln.shutdown().await;
    });
}
