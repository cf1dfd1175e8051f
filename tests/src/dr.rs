//! A two-region cluster of real processes for the failover tests and
//! benchmarks: two `vigil_node` data nodes and a `vigil_witness`, every
//! link through its own UDP relay so any of them can be cut, and a client
//! that logs every write it got acknowledged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::NodeProcess;
use vigil_fhir::config::Config;
use vigil_fhir::config::replication::{ReplicationConfig, ReplicationRole};
use vigil_net::relay::{Faults, Relay};
use vigil_testkit::http::{request, status};
use vigil_testkit::{ChildGuard, free_udp_port, until};

/// Ports and relays of one cluster. Relays: `to_a`/`to_b` sit in front of
/// each data node's replication port (the other node connects through
/// it), `a_to_w`/`b_to_w` in front of the witness, one per data node.
pub struct Dr {
    dir: tempfile::TempDir,
    certs: PathBuf,
    port: BTreeMap<&'static str, u16>,
    /// In front of a's replication port (b reaches a through it).
    pub to_a: Relay,
    /// In front of b's replication port (a reaches b through it).
    pub to_b: Relay,
    /// a's way to the witness.
    pub a_to_w: Relay,
    /// b's way to the witness.
    pub b_to_w: Relay,
    max_lag_ms: u64,
    lease_ms: u64,
    bins: Bins,
    /// Data directories placed elsewhere (a small file system), and
    /// changes to a node's configuration.
    data_at: BTreeMap<&'static str, PathBuf>,
    extra: BTreeMap<&'static str, fn(&mut Config)>,
    /// etcd as the coordinator instead of the witness: the endpoints a
    /// and b are given.
    etcd: Option<(Vec<String>, Vec<String>)>,
    /// Environment variables the data nodes get.
    env: Vec<(&'static str, String)>,
}

/// The executables a cluster runs (a test passes its `CARGO_BIN_EXE_*`).
#[derive(Debug, Clone, Copy)]
pub struct Bins {
    /// `vigil_node`.
    pub node: &'static str,
    /// `vigil_witness`.
    pub witness: &'static str,
}

/// Every datagram dropped, both ways.
pub const CUT: Faults = Faults::CUT;

impl Dr {
    /// A new cluster's certificates, ports and relays (nothing runs yet):
    /// a and b with `max_lag_ms` and leases of `lease_ms`, a preferred.
    pub fn new(bins: Bins, max_lag_ms: u64, lease_ms: u64) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let certs = dir.path().join("certs");
        let specs =
            ["a", "b", "w"].map(|n| vigil_net::runtime::tls::NodeSpec::parse(n).expect("spec"));
        vigil_net::runtime::tls::make_cluster(&certs, "t", &specs).expect("certs");
        let port: BTreeMap<_, _> = ["a", "b", "w"]
            .into_iter()
            .map(|n| (n, free_udp_port().expect("port")))
            .collect();
        let at =
            |n: &str| -> SocketAddr { format!("127.0.0.1:{}", port[n]).parse().expect("addr") };
        Self {
            to_a: Relay::start(at("a"), 1).expect("relay"),
            to_b: Relay::start(at("b"), 2).expect("relay"),
            a_to_w: Relay::start(at("w"), 3).expect("relay"),
            b_to_w: Relay::start(at("w"), 4).expect("relay"),
            dir,
            certs,
            port,
            max_lag_ms,
            lease_ms,
            bins,
            data_at: BTreeMap::new(),
            extra: BTreeMap::new(),
            etcd: None,
            env: Vec::new(),
        }
    }

    /// The cluster's certificates directory (also its token-signing key).
    pub fn certs(&self) -> &std::path::Path {
        &self.certs
    }

    /// Coordinates through etcd instead of the witness: a reaches the
    /// members at `a`, b those at `b` (the same list, or different ones so
    /// that pausing a member cuts one node off from etcd).
    pub fn use_etcd(&mut self, a: Vec<String>, b: Vec<String>) {
        self.etcd = Some((a, b));
    }

    /// Keeps node `node`'s data in `dir` (say, on a small file system).
    pub fn place_data(&mut self, node: &'static str, dir: PathBuf) {
        self.data_at.insert(node, dir);
    }

    /// Changes node `node`'s configuration with `adjust` (after every
    /// setting below is made).
    pub fn configure(&mut self, node: &'static str, adjust: fn(&mut Config)) {
        self.extra.insert(node, adjust);
    }

    /// Gives the data nodes these environment variables (object storage
    /// credentials) when they start.
    pub fn node_env(&mut self, env: Vec<(&'static str, String)>) {
        self.env = env;
    }

    /// Writes node `me`'s config file and returns its path.
    pub fn config(&self, me: &str) -> PathBuf {
        let (peer, peer_relay, witness_relay) = match me {
            "a" => ("b", &self.to_b, &self.a_to_w),
            _ => ("a", &self.to_a, &self.b_to_w),
        };
        let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let mut r = ReplicationConfig::new("t", me, self.certs.clone(), ReplicationRole::Auto);
        r.listen = Some(loopback(self.port[me]));
        r.peer = Some(peer.into());
        r.peer_addr = Some(peer_relay.addr());
        r.witness = Some("w".into());
        r.witness_addr = Some(witness_relay.addr());
        if let Some((ea, eb)) = &self.etcd {
            r.coordinator = vigil_fhir::config::replication::CoordinatorKind::Etcd;
            r.etcd_endpoints = if me == "a" { ea.clone() } else { eb.clone() };
        }
        r.preferred = Some("a".into());
        r.lease_ms = self.lease_ms;
        r.max_lag_ms = Some(self.max_lag_ms);
        r.sync_timeout_ms = 1_000;
        let mut c = Config {
            data: self.data(me),
            http: loopback(0),
            log_level: "warn".into(),
            export_dir: Some(self.exports()),
            export_lease_ms: 2_000,
            export_chunk_resources: 3,
            replication: Some(r),
            ..Config::default()
        };
        if let Some(adjust) = self.extra.get(me) {
            adjust(&mut c);
        }
        let path = self.dir.path().join(format!("{me}.toml"));
        std::fs::write(&path, c.to_toml().expect("toml")).expect("config");
        path
    }

    /// The export directory both data nodes share (as a storage account
    /// reachable from both regions would be); export leases are 2 s and
    /// chunks 3 resources, so an export can be caught mid-way.
    pub fn exports(&self) -> PathBuf {
        self.dir.path().join("exports")
    }

    /// Node `node`'s data directory.
    pub fn data(&self, node: &str) -> PathBuf {
        self.data_at
            .get(node)
            .cloned()
            .unwrap_or_else(|| self.dir.path().join(node))
    }

    /// Starts data node `node` ("a" or "b").
    pub fn start(&self, node: &str) -> NodeProcess {
        NodeProcess::start_with(self.bins.node, &self.config(node), &self.env).expect("node starts")
    }

    /// Starts a and b (with etcd as the coordinator, already running), and
    /// waits until a (preferred) leads and b follows with everything.
    pub fn start_nodes(&self) -> (NodeProcess, NodeProcess) {
        assert!(
            self.etcd.is_some(),
            "the witness cluster starts with start_all"
        );
        self.start_both()
    }

    fn start_both(&self) -> (NodeProcess, NodeProcess) {
        let a = self.start("a");
        let b = self.start("b");
        until("a leads a new cluster", Duration::from_secs(60), || {
            leads(a.http)
        });
        caught_up(b.http);
        assert!(!leads(b.http), "one leader");
        (a, b)
    }

    /// Starts the witness, a and b, and waits until a (preferred) leads and
    /// b follows with everything.
    pub fn start_all(&self) -> (ChildGuard, NodeProcess, NodeProcess) {
        let w = self.witness();
        let (a, b) = self.start_both();
        (w, a, b)
    }

    /// The witness's durable state as it is on disk now.
    pub fn witness_state(&self) -> vigil_net::proto::witness::WitnessState {
        vigil_net::proto::witness::WitnessState::load(&self.dir.path().join("w"))
            .expect("witness state")
    }

    /// Starts the witness (again).
    pub fn witness(&self) -> ChildGuard {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(self.bins.witness);
        cmd.arg(self.dir.path().join("w"))
            .arg(&self.certs)
            .arg("w")
            .arg(format!("127.0.0.1:{}", self.port["w"]))
            .arg(self.lease_ms.to_string());
        let mut child = ChildGuard::spawn(cmd).expect("witness");
        let out = child.0.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("line");
        assert!(line.starts_with("witness listening"), "{line:?}");
        child
    }
}

/// Whether the node answers 200 on `/health/leader`.
pub fn leads(addr: SocketAddr) -> bool {
    request(addr, "GET", "/health/leader", None).is_ok_and(|r| r.status == 200)
}

/// Waits for `node` to follow and hold everything its leader has.
pub fn caught_up(node: SocketAddr) {
    until("the follower caught up", Duration::from_secs(30), || {
        let u = &status(node)["upstream"];
        u["connected"] == true && u["lag_lsns"] == 0 && u["applied"] == u["durable"]
    });
}

/// One acknowledged write: the resource and the version the server gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// The Patient's id.
    pub id: String,
    /// The versionId the server gave.
    pub version: String,
    /// When the request was sent.
    pub sent: Instant,
    /// When the acknowledgement arrived.
    pub at: Instant,
}

/// A client that writes new Patients through `endpoints` (in turn, as a
/// load balancer would) and logs every acknowledged one.
pub struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    failures: Arc<Mutex<Vec<(Instant, u16)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Starts writing through `endpoints`, ids prefixed with `tag`.
    pub fn start(endpoints: Vec<SocketAddr>, tag: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (s, a, f) = (stop.clone(), acked.clone(), failures.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("{tag}{n}");
                let body = format!(
                    r#"{{"resourceType":"Patient","id":"{id}","active":true,"name":[{{"family":"Drill","given":["{n}"]}}]}}"#
                );
                let to = endpoints[n as usize % endpoints.len()];
                let sent = Instant::now();
                match request(to, "PUT", &format!("/Patient/{id}"), Some(&body)) {
                    Ok(r) if r.status == 201 => {
                        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
                        let version = v["meta"]["versionId"].as_str().unwrap_or("").to_owned();
                        a.lock().expect("log").push(Acked {
                            id,
                            version,
                            sent,
                            at: Instant::now(),
                        });
                    }
                    Ok(r) => {
                        assert!(
                            matches!(r.status, 502 | 503 | 507),
                            "during a failover a client gets 503 (507 on a full disk), never a wrong answer: {} {}",
                            r.status,
                            r.body
                        );
                        f.lock().expect("log").push((Instant::now(), r.status));
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => {
                        f.lock().expect("log").push((Instant::now(), 0));
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        });
        Self {
            stop,
            acked,
            failures,
            thread: Some(thread),
        }
    }

    /// The acknowledged writes so far.
    pub fn acked(&self) -> Vec<Acked> {
        self.acked.lock().expect("log").clone()
    }

    /// The longest time without an acknowledged write between `from` and
    /// the first acknowledgement after `to`.
    pub fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let mut times: Vec<Instant> = self.acked().iter().map(|w| w.at).collect();
        times.sort_unstable();
        let first_after = times.iter().copied().find(|t| *t > to);
        times
            .windows(2)
            .filter(|w| w[1] > from && first_after.is_some_and(|f| w[1] <= f))
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(Duration::MAX)
    }

    /// Waits until a write sent after `at` is acknowledged (writes
    /// resumed). Pass the moment a killed node was seen dead: a write
    /// sent before it may still have been acknowledged by that node, its
    /// answer read only afterwards.
    pub fn resumed_after(&self, at: Instant) {
        until(
            "a write is acknowledged again",
            Duration::from_secs(30),
            || self.acked().iter().any(|w| w.sent > at),
        );
    }

    /// Requests that were refused (503) or failed to connect.
    pub fn refused(&self) -> usize {
        self.failures.lock().expect("log").len()
    }

    /// How many writes were acknowledged so far.
    pub fn acked_count(&self) -> usize {
        self.acked.lock().expect("log").len()
    }

    /// Stops writing and returns every acknowledged write.
    pub fn finish(mut self) -> Vec<Acked> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("the writer did not panic");
        }
        self.acked()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Every acknowledged write is readable at `node` with the version the
/// client was given.
pub fn all_present(node: SocketAddr, acked: &[Acked]) {
    for w in acked {
        let r = request(node, "GET", &format!("/Patient/{}", w.id), None).expect("read");
        assert_eq!(
            r.status, 200,
            "acknowledged write {} lost: {}",
            w.id, r.body
        );
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        assert_eq!(
            v["meta"]["versionId"].as_str(),
            Some(w.version.as_str()),
            "{} has the acknowledged version",
            w.id
        );
    }
}

/// Asks `via` for a switchover and checks that `to` leads afterwards, that
/// writes flow again, and that the client saw no write acknowledged for
/// less than a second.
pub fn switch_over(via: SocketAddr, to: &str, writer: &Writer) {
    let asked = Instant::now();
    let r = request(via, "POST", "/admin/switchover", None).expect("switchover");
    let answered = Instant::now();
    assert_eq!(r.status, 200, "{}", r.body);
    let rep: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(rep["new_leader"], to, "{rep}");
    eprintln!(
        "switchover to {to}: handed over after {} ms",
        rep["handover_ms"]
    );
    let mid = writer.acked_count();
    until("writes flow again", Duration::from_secs(20), || {
        writer.acked_count() > mid + 30
    });
    let gap = writer.longest_gap(asked, answered);
    eprintln!(
        "switchover to {to}: longest time without an acknowledged write {gap:?} (client side)"
    );
    assert!(
        gap < Duration::from_secs(1),
        "the switchover paused writes {gap:?}"
    );
}

/// From `at` to the first acknowledgement of a write sent after it (the
/// RTO of a disaster at `at`, as the client saw it; see
/// [`Writer::resumed_after`] for which moment to pass).
pub fn first_ack_after(acked: &[Acked], at: Instant) -> Duration {
    acked
        .iter()
        .filter(|w| w.sent > at)
        .map(|w| w.at)
        .min()
        .map(|t| t - at)
        .expect("a write acknowledged after the disaster")
}

/// Writes through both nodes, kills both at once mid-stream, starts both
/// again, and checks that exactly one leads (after two more leases) with
/// every acknowledged write, and that the other follows with all of them;
/// returns the leader's name.
pub fn both_crash_and_restart(
    dr: &Dr,
    a: NodeProcess,
    b: NodeProcess,
    lease_ms: u64,
) -> &'static str {
    let writer = Writer::start(vec![a.http, b.http], "r");
    until("writes flow", Duration::from_secs(20), || {
        writer.acked_count() > 50
    });
    let _ = a.child.kill9();
    let _ = b.child.kill9();
    let acked = writer.finish();
    let a = dr.start("a");
    let b = dr.start("b");
    until("one node leads again", Duration::from_secs(30), || {
        leads(a.http) || leads(b.http)
    });
    std::thread::sleep(Duration::from_millis(2 * lease_ms));
    let leaders: Vec<_> = [("a", a.http), ("b", b.http)]
        .into_iter()
        .filter(|(_, n)| leads(*n))
        .collect();
    assert_eq!(leaders.len(), 1, "exactly one leader");
    let (name, leader) = leaders[0];
    let follower = if name == "a" { b.http } else { a.http };
    all_present(leader, &acked);
    caught_up(follower);
    all_present(follower, &acked);
    name
}
