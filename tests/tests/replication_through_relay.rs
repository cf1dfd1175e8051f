//! Replication between real `vigil_node` processes, through the UDP relay:
//! catch-up under loss, duplication, reordering and corruption ends with
//! byte-identical logs and watermarks that never go back; a follower
//! serves reads with its lag and forwards writes; synchronous replication
//! loses no acknowledged write when the leader is killed with SIGKILL.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vigil_engine::{Options, Store};
use vigil_fhir::config::Config;
use vigil_fhir::config::replication::{OnLag, ReplicationConfig, ReplicationRole};
use vigil_fhir::synth::{Rng, transaction_bundle};
use vigil_net::relay::{Faults, Relay};
use vigil_testkit::free_udp_port;
use vigil_testkit::http::{request, status};
use vigil_testkit::{frames_in, until};
use vigil_tests::NodeProcess;

const BIN: &str = env!("CARGO_BIN_EXE_vigil_node");

struct Cluster {
    dir: tempfile::TempDir,
    certs: PathBuf,
    repl_port: u16,
}

impl Cluster {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let certs = dir.path().join("certs");
        let specs = ["a", "b"].map(|n| vigil_net::runtime::tls::NodeSpec::parse(n).expect("spec"));
        vigil_net::runtime::tls::make_cluster(&certs, "t", &specs).expect("certs");
        Self {
            dir,
            certs,
            repl_port: free_udp_port().expect("port"),
        }
    }

    fn data(&self, node: &str) -> PathBuf {
        self.dir.path().join(node)
    }

    fn leader_config(&self, max_lag_ms: Option<u64>) -> PathBuf {
        self.write_config("a", |r| {
            r.listen = Some(SocketAddr::from(([127, 0, 0, 1], self.repl_port)));
            r.max_lag_ms = max_lag_ms;
        })
    }

    fn follower_config(&self, leader: SocketAddr) -> PathBuf {
        self.write_config("b", |r| {
            r.role = ReplicationRole::Follower;
            r.leader = Some(leader);
            r.leader_name = Some("a".into());
        })
    }

    /// Writes node `node`'s config (a leader unless `adjust` says
    /// otherwise) and returns its path.
    fn write_config(&self, node: &str, adjust: impl FnOnce(&mut ReplicationConfig)) -> PathBuf {
        let mut r = ReplicationConfig::new("t", node, self.certs.clone(), ReplicationRole::Leader);
        adjust(&mut r);
        let c = Config {
            data: self.data(node),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_level: "warn".into(),
            replication: Some(r),
            ..Config::default()
        };
        let path = self.dir.path().join(format!("{node}.toml"));
        std::fs::write(&path, c.to_toml().expect("toml")).expect("write config");
        path
    }
}

/// Loads `bundles` transaction Bundles of `size` resources into a node.
fn load(addr: SocketAddr, seed: u64, bundles: usize, size: usize) {
    let mut rng = Rng::new(seed);
    for _ in 0..bundles {
        let bundle = transaction_bundle(&mut rng, size).to_string();
        let r = request(addr, "POST", "/", Some(&bundle)).expect("bundle");
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

impl Cluster {
    /// A relay in front of the leader's replication port.
    fn relay(&self, seed: u64) -> Relay {
        Relay::start(
            format!("127.0.0.1:{}", self.repl_port)
                .parse()
                .expect("addr"),
            seed,
        )
        .expect("relay")
    }
}

/// Waits until a follower has indexed everything it holds durably.
fn settled(follower: SocketAddr) {
    until(
        "the follower indexed what it holds",
        Duration::from_secs(30),
        || {
            let u = &status(follower)["upstream"];
            u["applied"] == u["durable"]
        },
    );
}

#[test]
fn catch_up_through_a_lossy_link_gives_identical_logs() {
    let c = Cluster::new();
    let leader = NodeProcess::start(BIN, &c.leader_config(None)).expect("leader");
    load(leader.http, 11, 30, 40);
    let relay = c.relay(5);
    relay.set(Faults {
        delay: Duration::from_millis(2),
        jitter: Duration::from_millis(6),
        loss: 0.05,
        duplicate: 0.02,
        corrupt: 0.01,
        ..Faults::default()
    });
    let follower = NodeProcess::start(BIN, &c.follower_config(relay.addr())).expect("follower");
    // Writes sent to the follower are forwarded to the leader.
    let until_forwarded = Instant::now() + Duration::from_secs(30);
    let created = loop {
        let body = r#"{"resourceType":"Patient","name":[{"family":"Forwarded"}]}"#;
        let r = request(follower.http, "POST", "/Patient", Some(body)).expect("create");
        if r.status == 201 {
            assert!(
                r.header("vigil-forwarded-to").is_some(),
                "answered by the leader"
            );
            break r.header("location").expect("location").to_owned();
        }
        assert_eq!(r.status, 503, "before the leader is known: 503, {}", r.body);
        assert!(r.header("retry-after").is_some());
        assert!(Instant::now() < until_forwarded, "never forwarded");
        std::thread::sleep(Duration::from_millis(50));
    };
    let leader_lsn = status(leader.http)["last_lsn"].as_u64().expect("lsn");
    let mut last_durable = 0;
    let started = Instant::now();
    until("catch-up", Duration::from_secs(120), || {
        let s = status(follower.http);
        assert!(
            started.elapsed() < Duration::from_secs(100),
            "no catch-up; follower: {s}\nleader: {}",
            status(leader.http)
        );
        let d = s["upstream"]["durable"].as_u64().unwrap_or(0);
        assert!(
            d >= last_durable,
            "durable watermark went back: {last_durable} -> {d}"
        );
        last_durable = d;
        d >= leader_lsn
    });
    // The follower answers reads itself, with its lag.
    let path = created
        .split_once("/Patient/")
        .map(|(_, rest)| format!("/Patient/{}", rest.split('/').next().unwrap_or("")))
        .expect("id in location");
    until(
        "the forwarded write replicated",
        Duration::from_secs(30),
        || {
            request(follower.http, "GET", &path, None)
                .expect("read")
                .status
                == 200
        },
    );
    let r = request(follower.http, "GET", &path, None).expect("read");
    assert!(
        r.header("vigil-replication-lag-lsns").is_some(),
        "lag header on reads"
    );
    let lost = relay
        .counters()
        .dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(lost > 0, "the relay dropped datagrams");
    let leader_status = status(leader.http);
    assert_eq!(leader_status["followers"][0]["node"], "b");
    // Health checks route clients to the leader.
    let h = request(leader.http, "GET", "/health/leader", None).expect("health");
    assert_eq!(h.status, 200);
    let h = request(follower.http, "GET", "/health/leader", None).expect("health");
    assert_eq!(h.status, 503, "{}", h.body);
    assert!(
        h.body.contains(&format!("http://{}", leader.http)),
        "{}",
        h.body
    );
    // The wire carries compressed bodies: the ratio is in the metrics.
    let metrics = request(leader.http, "GET", "/metrics", None).expect("metrics");
    let ratio: f64 = metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("vigil_replication_compression_ratio{follower=\"b\"} "))
        .and_then(|v| v.parse().ok())
        .expect("a compression ratio for b");
    // Small stores have no trained dictionary yet: only "compressed at all"
    // is asserted here; the ratio at scale is in docs/BENCHMARKS.md.
    assert!(
        ratio > 0.0 && ratio < 1.0,
        "log bytes per raw byte: {ratio}"
    );
    drop(follower);
    drop(leader);
    let (a, b) = (
        frames_in(&c.data("a"), false),
        frames_in(&c.data("b"), true),
    );
    assert!(b.len() > 30);
    assert_eq!(
        &a[..b.len()],
        &b[..],
        "the follower's log is the leader's, byte for byte"
    );
}

#[test]
fn synchronous_replication_keeps_every_acknowledged_write_through_sigkill() {
    let rounds: u64 = std::env::var("VIGIL_SYNC_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let c = Cluster::new();
    let leader_cfg = c.leader_config(Some(0));
    let mut leader = NodeProcess::start(BIN, &leader_cfg).expect("leader");
    let repl: SocketAddr = format!("127.0.0.1:{}", c.repl_port).parse().expect("addr");
    let follower = NodeProcess::start(BIN, &c.follower_config(repl)).expect("follower");
    let mut rng = Rng::new(99);
    let mut total = 0usize;
    for round in 0..rounds {
        until("the follower connected", Duration::from_secs(60), || {
            status(leader.http)["followers"][0]["connected"] == true
        });
        let writers = Writers::start(leader.http, 3, &format!("R{round}"));
        std::thread::sleep(Duration::from_millis(50 + rng.below(250)));
        leader.child.0.kill().expect("kill -9");
        let acked: Vec<String> = writers.stop().into_iter().map(|(id, _)| id).collect();
        total += acked.len();
        // Durable on the follower is what counts: read its log from disk
        // (a backup taken while it runs), not what it shows. Frames the
        // leader shipped before its own fsync are shown only once the
        // leader says they are durable there, which the kill may cut off.
        let on_disk = durable_copy(&c.data("b"));
        for id in &acked {
            assert!(
                matches!(
                    on_disk.get("Patient", id).expect("read"),
                    vigil_engine::Current::Live(_)
                ),
                "round {round}: acknowledged Patient/{id} is not durable on the follower"
            );
        }
        drop(on_disk);
        drop(leader);
        leader = NodeProcess::start(BIN, &leader_cfg).expect("leader restarts");
        // The restarted leader confirms what the follower holds: it shows
        // every acknowledged write.
        until(
            "the follower followed again",
            Duration::from_secs(60),
            || status(leader.http)["followers"][0]["connected"] == true,
        );
        settled(follower.http);
        for id in &acked {
            let r = request(follower.http, "GET", &format!("/Patient/{id}"), None).expect("read");
            assert_eq!(
                r.status, 200,
                "round {round}: acknowledged Patient/{id} is missing on the follower"
            );
        }
    }
    assert!(total as u64 >= rounds, "writes were acknowledged: {total}");
}

/// A store opened from a backup of the running store in `dir`: what its
/// log holds durably now. It lives in a directory removed when dropped.
fn durable_copy(dir: &Path) -> DurableCopy {
    let tmp = tempfile::tempdir().expect("dir");
    let (backup, restored) = (tmp.path().join("backup"), tmp.path().join("store"));
    vigil_engine::backup(dir, &backup, &mut |_| {}).expect("backup");
    vigil_engine::restore(
        &backup,
        &restored,
        vigil_engine::RestoreTarget::Latest,
        &mut |_| {},
    )
    .expect("restore");
    let store = Store::open_with(&restored, Options::default()).expect("open the copy");
    DurableCopy { store, _dir: tmp }
}

struct DurableCopy {
    store: Store,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for DurableCopy {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

/// Clients creating Patients on a node as fast as it answers, recording
/// each acknowledged create with its wall-clock time.
struct Writers {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    acked: Arc<Mutex<Vec<(String, u64)>>>,
}

impl Writers {
    /// `n` writers; family names start with `tag` so rounds stay apart.
    fn start(addr: SocketAddr, n: usize, tag: &str) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let threads = (0..n)
            .map(|w| {
                let (acked, stop, tag) = (acked.clone(), stop.clone(), tag.to_owned());
                std::thread::spawn(move || {
                    let mut k = 0;
                    while !stop.load(std::sync::atomic::Ordering::Acquire) {
                        k += 1;
                        let body = format!(
                            r#"{{"resourceType":"Patient","name":[{{"family":"{tag}W{w}N{k}"}}]}}"#
                        );
                        let Ok(r) = request(addr, "POST", "/Patient", Some(&body)) else {
                            break; // the node is gone
                        };
                        if r.status == 201
                            && let Some(id) = r
                                .header("location")
                                .and_then(|l| l.split("/Patient/").nth(1))
                                .and_then(|x| x.split('/').next())
                        {
                            acked.lock().expect("lock").push((id.to_owned(), wall_us()));
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            threads,
            acked,
        }
    }

    /// Stops the writers and returns every acknowledged create.
    fn stop(self) -> Vec<(String, u64)> {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        for t in self.threads {
            t.join().expect("writer");
        }
        self.acked.lock().expect("lock").clone()
    }
}

fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[test]
fn asynchronous_replication_marks_a_lagging_follower_before_the_bound_breaks() {
    const MAX_LAG_MS: u64 = 500;
    let c = Cluster::new();
    let leader = NodeProcess::start(BIN, &c.leader_config(Some(MAX_LAG_MS))).expect("leader");
    let relay = c.relay(9);
    let follower = NodeProcess::start(BIN, &c.follower_config(relay.addr())).expect("follower");
    until("an eligible follower", Duration::from_secs(30), || {
        let s = status(leader.http);
        s["followers"][0]["connected"] == true && s["followers"][0]["eligible"] == true
    });
    // Writers record each acknowledged create with its wall-clock time.
    let writers = Writers::start(leader.http, 2, "A");
    std::thread::sleep(Duration::from_millis(300));
    // Partition the follower while writes go on well past max_lag.
    relay.set(Faults::CUT);
    std::thread::sleep(Duration::from_millis(3 * MAX_LAG_MS));
    let mut leader = leader;
    leader.child.0.kill().expect("kill -9");
    let killed_us = wall_us();
    let acked = writers.stop();
    settled(follower.http);
    let missing: Vec<&(String, u64)> = acked
        .iter()
        .filter(|(id, _)| {
            request(follower.http, "GET", &format!("/Patient/{id}"), None)
                .expect("read")
                .status
                != 200
        })
        .collect();
    let beyond: Vec<_> = missing
        .iter()
        .filter(|(_, at)| *at + MAX_LAG_MS * 1000 < killed_us)
        .collect();
    assert!(
        !beyond.is_empty(),
        "the partition left acknowledged writes behind"
    );
    // The leader's durable record says the follower may not be promoted,
    // and it said so before the oldest missing write aged past max_lag.
    let record = std::fs::read_to_string(c.data("a").join("replication-eligibility"))
        .expect("the leader recorded eligibility");
    let line = record
        .lines()
        .find(|l| l.starts_with("b "))
        .expect("a line for b");
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f[1], "ineligible", "{record}");
    let since: u64 = f[2].parse().expect("since");
    let oldest_missing = missing.iter().map(|(_, at)| *at).min().expect("missing");
    assert!(
        since <= oldest_missing + MAX_LAG_MS * 1000,
        "marked ineligible at {since}, after the oldest missing write (acknowledged at {oldest_missing}) aged past max_lag"
    );
    drop(leader);
}

#[test]
fn a_follower_killed_during_catch_up_resumes_where_it_was() {
    let c = Cluster::new();
    let leader = NodeProcess::start(BIN, &c.leader_config(None)).expect("leader");
    load(leader.http, 21, 120, 60);
    let leader_lsn = status(leader.http)["last_lsn"].as_u64().expect("lsn");
    let relay = c.relay(3);
    // A slow link, so that catch-up takes a while.
    relay.set(Faults {
        delay: Duration::from_millis(40),
        loss: 0.02,
        ..Faults::default()
    });
    let cfg = c.follower_config(relay.addr());
    let follower = NodeProcess::start(BIN, &cfg).expect("follower");
    let mut seen = 0;
    until(
        "part of the log durable on the follower",
        Duration::from_secs(60),
        || {
            seen = status(follower.http)["upstream"]["durable"]
                .as_u64()
                .unwrap_or(0);
            seen > 0
        },
    );
    drop(follower); // SIGKILL in the middle of catch-up
    assert!(
        seen < leader_lsn,
        "killed before catch-up finished ({seen} of {leader_lsn})"
    );
    relay.set(Faults::default());
    let follower = NodeProcess::start(BIN, &cfg).expect("follower restarts");
    let s = status(follower.http);
    let resumed_at = s["last_lsn"].as_u64().expect("lsn");
    assert!(
        resumed_at >= seen,
        "what was durable survived the kill: {resumed_at} < {seen}"
    );
    until(
        "catch-up after the restart",
        Duration::from_secs(60),
        || {
            status(follower.http)["upstream"]["durable"]
                .as_u64()
                .unwrap_or(0)
                >= leader_lsn
        },
    );
    let fetched = status(follower.http)["upstream"]["bytes_received"]
        .as_u64()
        .expect("bytes");
    let sessions = status(leader.http)["followers"][0]["sessions"]
        .as_u64()
        .expect("sessions");
    assert!(sessions >= 2, "the follower came back in a new session");
    drop(follower);
    drop(leader);
    let (a, b) = (
        frames_in(&c.data("a"), false),
        frames_in(&c.data("b"), true),
    );
    assert_eq!(a, b, "identical logs after the resumed catch-up");
    let total: u64 = a.iter().map(|f| f.len() as u64).sum();
    assert!(
        fetched < total,
        "the restarted follower fetched only what it lacked: {fetched} of {total} bytes of log"
    );
}

#[test]
fn synchronous_mode_with_stall_shows_nothing_the_follower_does_not_hold() {
    let c = Cluster::new();
    let leader_cfg = c.write_config("a", |r| {
        r.listen = Some(SocketAddr::from(([127, 0, 0, 1], c.repl_port)));
        r.max_lag_ms = Some(0);
        r.sync_timeout_ms = 400;
        r.on_lag = OnLag::Stall;
    });
    let leader = NodeProcess::start(BIN, &leader_cfg).expect("leader");
    let relay = c.relay(4);
    let follower = NodeProcess::start(BIN, &c.follower_config(relay.addr())).expect("follower");
    until("the follower connected", Duration::from_secs(30), || {
        status(leader.http)["followers"][0]["connected"] == true
    });
    let body = |n: &str| format!(r#"{{"resourceType":"Patient","id":"{n}","active":true}}"#);
    let r = request(leader.http, "PUT", "/Patient/before", Some(&body("before"))).expect("put");
    assert_eq!(r.status, 201, "{}", r.body);
    // Partition the follower: a write is durable on the leader but never
    // acknowledged, and nobody can read it there either.
    relay.set(Faults::CUT);
    let r = request(leader.http, "PUT", "/Patient/during", Some(&body("during"))).expect("put");
    assert_eq!(
        r.status, 503,
        "not acknowledged without the follower: {}",
        r.body
    );
    assert!(r.header("retry-after").is_some());
    let r = request(leader.http, "GET", "/Patient/during", None).expect("read");
    assert_eq!(
        r.status, 503,
        "not visible before the follower holds it: {}",
        r.body
    );
    // Healed: the follower catches up and the write becomes readable.
    relay.set(Faults::default());
    until(
        "the write readable once replicated",
        Duration::from_secs(30),
        || {
            request(leader.http, "GET", "/Patient/during", None)
                .expect("read")
                .status
                == 200
        },
    );
    settled(follower.http);
    let r = request(follower.http, "GET", "/Patient/during", None).expect("read");
    assert_eq!(r.status, 200, "the follower holds it");
}
