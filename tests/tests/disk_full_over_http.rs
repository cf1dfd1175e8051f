//! A server on a real file system of limited size (a 24 MiB tmpfs, which
//! needs root: CI runs as root) filled through HTTP: the write that does
//! not fit gets 507 with an OperationOutcome, never 500; health says
//! writes are unavailable while reads go on; once space is freed, writes
//! resume without a restart; after a kill -9 and a restart every
//! acknowledged write is there.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vigil_testkit::http::request;
use vigil_tests::{NodeProcess, Tmpfs, bulky_patient};

const NODE: &str = env!("CARGO_BIN_EXE_vigil_node");
const TMPFS_MIB: u64 = 24;
/// Taken by a file the test deletes to free space.
const FILLER_MIB: u64 = 4;
const RESERVE_BYTES: u64 = 2 * 1024 * 1024;
/// Bounds on the filling loop.
const WRITES_MAX: usize = 50_000;
const FILL_LIMIT: Duration = Duration::from_secs(120);

fn config(fs: &Path) -> PathBuf {
    let path = fs.with_extension("toml");
    let c = vigil_fhir::config::Config {
        data: fs.join("data"),
        http: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        log_level: "warn".into(),
        disk_reserve_bytes: RESERVE_BYTES,
        ..Default::default()
    };
    std::fs::write(&path, c.to_toml().expect("toml")).expect("config");
    path
}

fn put(node: std::net::SocketAddr, id: &str) -> vigil_testkit::http::Reply {
    put_sized(node, id, 8 * 1024)
}

fn put_sized(node: std::net::SocketAddr, id: &str, bytes: usize) -> vigil_testkit::http::Reply {
    let body = bulky_patient(id, bytes);
    request(node, "PUT", &format!("/Patient/{id}"), Some(&body)).expect("put")
}

#[test]
fn a_full_disk_answers_507_reads_go_on_and_writes_resume_when_space_returns() {
    let fs = Tmpfs::mount(TMPFS_MIB);
    let filler = fs.fill(FILLER_MIB);
    let cfg = config(&fs.path);
    let node = NodeProcess::start(NODE, &cfg).expect("node starts on the small disk");
    let mut acked = Vec::new();
    let started = Instant::now();
    let refused = loop {
        assert!(
            acked.len() < WRITES_MAX && started.elapsed() < FILL_LIMIT,
            "the disk never filled ({} writes)",
            acked.len()
        );
        let id = format!("f{}", acked.len());
        let r = put(node.http, &id);
        match r.status {
            201 => acked.push(id),
            507 => break r,
            other => panic!("a full disk answers 507, not {other}: {}", r.body),
        }
    };
    assert!(acked.len() > 100, "writes succeeded until the disk filled");
    assert!(
        refused.body.contains("OperationOutcome"),
        "{}",
        refused.body
    );
    assert!(
        refused.body.contains("the disk is full"),
        "{}",
        refused.body
    );
    assert!(
        refused
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("retry-after")),
        "{:?}",
        refused.headers
    );
    // Refused again (a write larger than the headroom: free space moves a
    // little on a full disk), and nothing of it written.
    let again = put_sized(node.http, "never", 4 << 20);
    assert_eq!(again.status, 507, "{}", again.body);
    let r = request(node.http, "GET", "/Patient/never", None).expect("read");
    assert_eq!(r.status, 404, "nothing written");
    // Health tells the truth; reads go on.
    let r = request(node.http, "GET", "/health/ready", None).expect("ready");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("writes-unavailable"), "{}", r.body);
    let r = request(node.http, "GET", "/health/leader", None).expect("leader");
    assert_eq!(r.status, 503, "{}", r.body);
    let r = request(node.http, "GET", &format!("/Patient/{}", acked[0]), None).expect("read");
    assert_eq!(r.status, 200, "reads go on: {}", r.body);
    let st: serde_json::Value = serde_json::from_str(
        &request(node.http, "GET", "/status", None)
            .expect("status")
            .body,
    )
    .expect("json");
    assert_eq!(st["disk"]["writable"], false, "{st}");
    assert_eq!(st["disk"]["reserve_bytes"], RESERVE_BYTES, "{st}");
    let metrics = request(node.http, "GET", "/metrics", None)
        .expect("metrics")
        .body;
    assert!(metrics.contains("vigil_disk_writable 0"), "{metrics}");

    // Space returns: writes resume without a restart.
    std::fs::remove_file(&filler).expect("free space");
    let r = put(node.http, "after");
    assert_eq!(
        r.status, 201,
        "writes resume once space is freed: {}",
        r.body
    );
    acked.push("after".into());
    let r = request(node.http, "GET", "/health/ready", None).expect("ready");
    assert_eq!(r.status, 200, "{}", r.body);

    // kill -9 and restart: every acknowledged write is there.
    let _ = node.child.kill9();
    let node = NodeProcess::start(NODE, &cfg).expect("restarts");
    for id in &acked {
        let r = request(node.http, "GET", &format!("/Patient/{id}"), None).expect("read");
        assert_eq!(r.status, 200, "acknowledged write {id} lost: {}", r.body);
    }
    eprintln!(
        "{} writes acknowledged on a {TMPFS_MIB} MiB disk before 507; all there after kill -9",
        acked.len()
    );
}
