//! `vigil up` on a fresh directory: certificates made, a leader elected,
//! sample patients loaded and readable on both nodes, Ctrl-C stops every
//! process cleanly; run again, it reuses the directory and its data.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vigil_testkit::free_ports;

/// `vigil up`, killed with its whole process group if the test fails.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            interrupt(&self.0);
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn interrupt(c: &Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
    }
}

fn start(dir: &std::path::Path, http: u16, repl: u16) -> (Up, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["up", "--dir"])
        .arg(dir)
        .args([
            "--http-port",
            &http.to_string(),
            "--repl-port",
            &repl.to_string(),
        ])
        .args(["--patients", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("vigil up starts");
    let out = child.stdout.take().expect("stdout");
    let up = Up(child);
    // Read on a thread to the end, so `vigil up` never writes to a closed pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(90)) {
        let done = line.contains("Ctrl-C stops everything");
        lines.push(line);
        if done {
            return (up, lines);
        }
    }
    panic!("vigil up ended early: {lines:#?}");
}

fn get(port: u16, path: &str) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAccept: application/fhir+json\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let status = text[9..12].parse().expect("status");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    // Chunked or not, the JSON object sits between the outer braces.
    let json = body
        .find('{')
        .and_then(|a| body.rfind('}').map(|b| &body[a..=b]))
        .unwrap_or("null");
    (
        status,
        serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn vigil_up_starts_loads_stops_and_resumes() {
    let dir = tempfile::tempdir().expect("dir");
    let cluster = dir.path().join("cluster");
    let (http, repl) = free_ports(2, 3);
    let (up, lines) = start(&cluster, http, repl);
    let text = lines.join("\n");
    assert!(text.contains("made a cluster CA"), "{text}");
    assert!(text.contains("loaded 3/3 sample patients"), "{text}");
    assert!(text.contains("a leads"), "{text}");
    assert_eq!(get(http, "/health/leader").0, 200, "a leads");
    assert_eq!(get(http + 1, "/health/leader").0, 503, "b follows");
    // The follower holds the samples (synchronous replication) and shows
    // them once indexed.
    let t0 = Instant::now();
    loop {
        let (status, bundle) = get(http + 1, "/Patient?_count=1");
        assert_eq!(status, 200);
        if bundle["total"] == 3 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{bundle}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Ctrl-C: everything stops, cleanly.
    interrupt(&up.0);
    let mut up = up;
    let t0 = Instant::now();
    let status = loop {
        if let Ok(Some(s)) = up.0.try_wait() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "vigil up did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", http)).is_err(),
        "node a stopped"
    );
    // Again: the same directory, the same data, no second load.
    let (_up, lines) = start(&cluster, http, repl);
    let text = lines.join("\n");
    assert!(text.contains("reusing"), "{text}");
    assert!(!text.contains("loaded"), "samples load once: {text}");
    let (_, bundle) = get(http, "/Patient?_count=1");
    assert_eq!(bundle["total"], 3, "{bundle}");
}
