//! Automatic failover between real processes: two `vigil_node` data nodes
//! and a `vigil_witness`, every link through its own UDP relay so a test
//! can cut any of them. A client writes all along and logs every write it
//! got acknowledged; after each disaster the checks are DESIGN.md's: no
//! acknowledged write lost (synchronous mode), lost ones only in the
//! deposed leader's quarantine (asynchronous), one leader, no versionId
//! issued twice for different content.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vigil_tests::http::request;
use vigil_tests::relay::{Faults, Relay};
use vigil_tests::{ChildGuard, NodeProcess, free_udp_port};

const NODE: &str = env!("CARGO_BIN_EXE_vigil_node");
const WITNESS: &str = env!("CARGO_BIN_EXE_vigil_witness");
/// Lease in the tests: short, so drills take seconds.
const LEASE_MS: u64 = 1_000;

/// Ports and relays of one cluster. Relays: `to_a`/`to_b` sit in front of
/// each data node's replication port (the other node connects through
/// it), `a_to_w`/`b_to_w` in front of the witness, one per data node.
struct Dr {
    dir: tempfile::TempDir,
    certs: PathBuf,
    port: BTreeMap<&'static str, u16>,
    to_a: Relay,
    to_b: Relay,
    a_to_w: Relay,
    b_to_w: Relay,
    max_lag_ms: u64,
}

const CUT: Faults = Faults {
    delay: Duration::ZERO,
    jitter: Duration::ZERO,
    loss: 0.0,
    duplicate: 0.0,
    corrupt: 0.0,
    cut_to_server: true,
    cut_to_client: true,
};

impl Dr {
    fn new(max_lag_ms: u64) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let certs = dir.path().join("certs");
        let specs = ["a", "b", "w"].map(|n| vigil_net::tls::NodeSpec::parse(n).expect("spec"));
        vigil_net::tls::make_cluster(&certs, "t", &specs).expect("certs");
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
        }
    }

    fn config(&self, me: &str) -> PathBuf {
        let (peer, peer_relay, witness_relay) = match me {
            "a" => ("b", &self.to_b, &self.a_to_w),
            _ => ("a", &self.to_a, &self.b_to_w),
        };
        let path = self.dir.path().join(format!("{me}.toml"));
        let text = format!(
            "data = {:?}\nhttp = \"127.0.0.1:0\"\nlog_level = \"warn\"\n\n[replication]\n\
             cluster = \"t\"\nnode = \"{me}\"\ncerts = {:?}\nrole = \"auto\"\n\
             listen = \"127.0.0.1:{}\"\npeer = \"{peer}\"\npeer_addr = \"{}\"\n\
             witness = \"w\"\nwitness_addr = \"{}\"\npreferred = \"a\"\n\
             lease_ms = {LEASE_MS}\nmax_lag_ms = {}\nsync_timeout_ms = 1000\n",
            self.data(me),
            self.certs,
            self.port[me],
            peer_relay.addr(),
            witness_relay.addr(),
            self.max_lag_ms,
        );
        std::fs::write(&path, text).expect("config");
        path
    }

    fn data(&self, node: &str) -> PathBuf {
        self.dir.path().join(node)
    }

    fn start(&self, node: &str) -> NodeProcess {
        NodeProcess::start(NODE, &self.config(node)).expect("node starts")
    }

    fn witness(&self) -> ChildGuard {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(WITNESS);
        cmd.arg(self.dir.path().join("w"))
            .arg(&self.certs)
            .arg("w")
            .arg(format!("127.0.0.1:{}", self.port["w"]))
            .arg(LEASE_MS.to_string());
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

fn status(addr: SocketAddr) -> serde_json::Value {
    match request(addr, "GET", "/status", None) {
        Ok(r) if r.status == 200 => serde_json::from_str(&r.body).expect("json"),
        _ => serde_json::Value::Null,
    }
}

fn leads(addr: SocketAddr) -> bool {
    request(addr, "GET", "/health/leader", None).is_ok_and(|r| r.status == 200)
}

fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

/// Waits for `node` to follow and hold everything its leader has.
fn caught_up(node: SocketAddr) {
    until("the follower caught up", Duration::from_secs(30), || {
        let u = &status(node)["upstream"];
        u["connected"] == true && u["lag_lsns"] == 0 && u["applied"] == u["durable"]
    });
}

/// One acknowledged write: the resource and the version the server gave.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Acked {
    id: String,
    version: String,
    at: Instant,
}

/// A client that writes new Patients through `endpoints` (in turn, as a
/// load balancer would) and logs every acknowledged one.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    failures: Arc<Mutex<Vec<(Instant, u16)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(endpoints: Vec<SocketAddr>, tag: &'static str) -> Self {
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
                match request(to, "PUT", &format!("/Patient/{id}"), Some(&body)) {
                    Ok(r) if r.status == 201 => {
                        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
                        let version = v["meta"]["versionId"].as_str().unwrap_or("").to_owned();
                        a.lock().expect("log").push(Acked {
                            id,
                            version,
                            at: Instant::now(),
                        });
                    }
                    Ok(r) => {
                        assert!(
                            r.status == 503 || r.status == 502,
                            "during a failover a client gets 503, never a wrong answer: {} {}",
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

    fn acked(&self) -> Vec<Acked> {
        self.acked.lock().expect("log").clone()
    }

    /// The longest time without an acknowledged write between `from` and
    /// the first acknowledgement after `to`.
    fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
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

    /// Requests that were refused (503) or failed to connect.
    fn refused(&self) -> usize {
        self.failures.lock().expect("log").len()
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().expect("log").len()
    }

    fn finish(mut self) -> Vec<Acked> {
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
fn all_present(node: SocketAddr, acked: &[Acked]) {
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

fn start_cluster(dr: &Dr) -> (ChildGuard, NodeProcess, NodeProcess) {
    let w = dr.witness();
    let a = dr.start("a");
    let b = dr.start("b");
    until("a leads a new cluster", Duration::from_secs(20), || {
        leads(a.http)
    });
    caught_up(b.http);
    assert!(!leads(b.http), "one leader");
    (w, a, b)
}

#[test]
fn killing_the_leader_promotes_the_follower_and_the_old_leader_rejoins() {
    let dr = Dr::new(0);
    let (_w, a, b) = start_cluster(&dr);
    let writer = Writer::start(vec![b.http, a.http], "k");
    until("writes flow", Duration::from_secs(20), || {
        writer.acked_count() > 50
    });
    let before = writer.acked_count();
    let killed = Instant::now();
    let _ = a.child.kill9();
    until("the follower promotes", Duration::from_secs(20), || {
        leads(b.http)
    });
    until(
        "a write succeeds through the surviving node",
        Duration::from_secs(20),
        || writer.acked().iter().any(|w| w.at > killed),
    );
    let writer_refused = writer.refused();
    let acked = writer.finish();
    let rto = acked
        .iter()
        .map(|w| w.at)
        .filter(|t| *t > killed)
        .min()
        .map(|t| t - killed)
        .expect("a write after the kill");
    assert!(acked.len() > before, "writes resumed after the failover");
    eprintln!(
        "RTO (kill -9 to first acknowledged write through the survivor): {:?}; {} requests refused meanwhile",
        rto, writer_refused
    );
    all_present(b.http, &acked);
    let st = status(b.http);
    assert_eq!(st["leadership"]["role"], "leader");
    assert!(st["leadership"]["epoch"].as_u64() >= Some(2), "{st}");
    let t = &st["leadership"]["transitions"];
    assert!(
        t.as_array()
            .is_some_and(|t| t.iter().any(|t| t["kind"] == "promoted")),
        "the promotion is recorded: {t}"
    );

    // The old leader comes back: it rejoins as a follower on its own.
    let a = dr.start("a");
    caught_up(a.http);
    assert!(!leads(a.http) && leads(b.http), "b still leads, a follows");
    // Synchronous mode: whatever a had to cut was never acknowledged.
    let q = vigil_fhir::quarantine::list(&dr.data("a")).expect("quarantine");
    for f in &q {
        let text = std::fs::read_to_string(f.path.join("versions.ndjson")).unwrap_or_default();
        for w in &acked {
            assert!(
                !text.contains(&format!("\"id\":\"{}\"", w.id)),
                "an acknowledged write ({}) was cut into quarantine",
                w.id
            );
        }
    }
    // The same endpoint: a write through a is forwarded to b.
    let r = request(
        a.http,
        "PUT",
        "/Patient/after",
        Some(r#"{"resourceType":"Patient","id":"after"}"#),
    )
    .expect("put");
    assert_eq!(r.status, 201, "{}", r.body);
    all_present(a.http, &acked[..acked.len().min(200)]);
}

#[test]
fn a_partitioned_leader_fences_itself_and_rejoins_with_its_lost_writes_in_quarantine() {
    let dr = Dr::new(60_000);
    let (_w, a, b) = start_cluster(&dr);
    let writer = Writer::start(vec![a.http], "p");
    until("writes flow", Duration::from_secs(20), || {
        writer.acked_count() > 30
    });
    // Cut a off from b and from the witness; the client still reaches a.
    dr.to_a.set(CUT);
    dr.to_b.set(CUT);
    dr.a_to_w.set(CUT);
    let cut = Instant::now();
    until("b promotes", Duration::from_secs(20), || leads(b.http));
    let promoted = Instant::now();
    let acked = writer.finish();
    // At most one node acknowledged at any time: a's last acknowledged
    // write precedes b's promotion.
    let last_on_a = acked.iter().map(|w| w.at).max().expect("acked");
    assert!(
        last_on_a < promoted,
        "a acknowledged a write after b was promoted"
    );
    assert!(
        last_on_a < cut + Duration::from_millis(LEASE_MS + 200),
        "a stopped acknowledging within its lease"
    );
    let r = request(
        a.http,
        "PUT",
        "/Patient/fenced",
        Some(r#"{"resourceType":"Patient","id":"fenced"}"#),
    )
    .expect("put");
    assert_eq!(
        r.status, 503,
        "the fenced leader refuses writes: {}",
        r.body
    );
    // b writes in its epoch.
    let r = request(
        b.http,
        "PUT",
        "/Patient/on-b",
        Some(r#"{"resourceType":"Patient","id":"on-b"}"#),
    )
    .expect("put");
    assert_eq!(r.status, 201, "{}", r.body);
    // Heal: a learns the new epoch, steps down, cuts what b lacks into
    // quarantine, and follows.
    dr.to_a.set(Faults::default());
    dr.to_b.set(Faults::default());
    dr.a_to_w.set(Faults::default());
    caught_up(a.http);
    assert!(leads(b.http) && !leads(a.http));
    // Every acknowledged write is on b, or in a's quarantine.
    let q = vigil_fhir::quarantine::list(&dr.data("a")).expect("quarantine");
    let cut_text: String = q
        .iter()
        .map(|f| std::fs::read_to_string(f.path.join("versions.ndjson")).unwrap_or_default())
        .collect();
    for w in &acked {
        let r = request(b.http, "GET", &format!("/Patient/{}", w.id), None).expect("read");
        if r.status != 200 {
            assert!(
                cut_text.contains(&format!("\"id\":\"{}\"", w.id)),
                "acknowledged write {} is neither on the new leader nor in quarantine",
                w.id
            );
        }
    }
    let r = request(a.http, "GET", "/Patient/on-b", None).expect("read");
    assert_eq!(r.status, 200, "a follows b's history now");
}

#[test]
fn switchover_and_back_lose_nothing_and_reuse_no_version() {
    let dr = Dr::new(0);
    let (_w, a, b) = start_cluster(&dr);
    let r = request(
        a.http,
        "PUT",
        "/Patient/x",
        Some(r#"{"resourceType":"Patient","id":"x","active":true}"#),
    )
    .expect("put");
    assert_eq!(r.status, 201, "{}", r.body);
    let writer = Writer::start(vec![a.http, b.http], "s");
    until("writes flow", Duration::from_secs(20), || {
        writer.acked_count() > 30
    });
    // Over to b.
    let asked = Instant::now();
    let r = request(a.http, "POST", "/admin/switchover", None).expect("switchover");
    let answered = Instant::now();
    assert_eq!(r.status, 200, "{}", r.body);
    let rep: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(rep["new_leader"], "b", "{rep}");
    eprintln!(
        "switchover a -> b: handed over after {} ms",
        rep["handover_ms"]
    );
    assert!(leads(b.http) && !leads(a.http));
    let mid = writer.acked_count();
    until("writes flow on b", Duration::from_secs(20), || {
        writer.acked_count() > mid + 30
    });
    let gap = writer.longest_gap(asked, answered);
    eprintln!(
        "switchover a -> b: longest time without an acknowledged write {gap:?} (client side)"
    );
    assert!(
        gap < Duration::from_secs(1),
        "the switchover paused writes {gap:?}"
    );
    // x changes on b: a new version number, never one a used.
    let r = request(
        b.http,
        "PUT",
        "/Patient/x",
        Some(r#"{"resourceType":"Patient","id":"x","active":false}"#),
    )
    .expect("put");
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    let on_b = v["meta"]["versionId"].as_str().expect("version").to_owned();
    assert_ne!(on_b, "2", "epoch 2's versions have their own numbers");
    // And back to a, asked through b (a follower passes it to its leader).
    caught_up(a.http);
    let asked = Instant::now();
    let r = request(a.http, "POST", "/admin/switchover", None).expect("switchover");
    let answered = Instant::now();
    assert_eq!(r.status, 200, "{}", r.body);
    let rep: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(rep["new_leader"], "a", "{rep}");
    eprintln!(
        "switchover b -> a: handed over after {} ms",
        rep["handover_ms"]
    );
    let mid = writer.acked_count();
    until("writes flow on a again", Duration::from_secs(20), || {
        writer.acked_count() > mid + 30
    });
    let gap = writer.longest_gap(asked, answered);
    eprintln!(
        "switchover b -> a: longest time without an acknowledged write {gap:?} (client side)"
    );
    assert!(
        gap < Duration::from_secs(1),
        "the switchover paused writes {gap:?}"
    );
    let acked = writer.finish();
    caught_up(b.http);
    all_present(a.http, &acked);
    all_present(b.http, &acked);
    // No quarantine on either side: nothing was cut.
    for n in ["a", "b"] {
        let q = vigil_fhir::quarantine::list(&dr.data(n)).expect("quarantine");
        assert!(q.iter().all(|f| f.versions == 0), "{n}: {q:?}");
    }
    // x's history: every version number distinct.
    let r = request(a.http, "GET", "/Patient/x/_history", None).expect("history");
    let h: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    let versions: Vec<&str> = h["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["resource"]["meta"]["versionId"].as_str())
        .collect();
    let mut uniq = versions.clone();
    uniq.sort_unstable();
    uniq.dedup();
    assert_eq!(uniq.len(), versions.len(), "{versions:?}");
}

#[test]
fn without_witness_or_follower_nobody_promotes_and_the_leader_serves() {
    let dr = Dr::new(60_000);
    let (w, a, b) = start_cluster(&dr);
    // Witness down: the leader renews through the follower and serves.
    drop(w);
    std::thread::sleep(Duration::from_millis(3 * LEASE_MS));
    assert!(
        leads(a.http),
        "the leader keeps its lease through the follower"
    );
    assert!(!leads(b.http), "no promotion without the witness");
    let r = request(
        a.http,
        "PUT",
        "/Patient/w1",
        Some(r#"{"resourceType":"Patient","id":"w1"}"#),
    )
    .expect("put");
    assert_eq!(r.status, 201, "{}", r.body);
    // Witness back, follower cut off: the leader serves through the
    // witness, the follower cannot promote (the leader's lease holds).
    let _w = dr.witness();
    dr.to_a.set(CUT);
    dr.to_b.set(CUT);
    std::thread::sleep(Duration::from_millis(4 * LEASE_MS));
    assert!(
        leads(a.http),
        "the leader keeps its lease through the witness"
    );
    assert!(!leads(b.http), "the cut-off follower does not promote");
    let r = request(
        a.http,
        "PUT",
        "/Patient/w2",
        Some(r#"{"resourceType":"Patient","id":"w2"}"#),
    )
    .expect("put");
    assert_eq!(r.status, 201, "{}", r.body);
    dr.to_a.set(Faults::default());
    dr.to_b.set(Faults::default());
    caught_up(b.http);
    let r = request(b.http, "GET", "/Patient/w2", None).expect("read");
    assert_eq!(r.status, 200, "{}", r.body);
}
