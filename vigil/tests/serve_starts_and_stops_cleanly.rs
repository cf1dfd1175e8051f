//! Guards the `vigil serve` process: it starts with flags, answers over a
//! real socket, stops cleanly on SIGTERM (exit 0, store closed), and a
//! restart on the same data directory serves what was written.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

/// Kills the child on drop, so a failing test leaves no process behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(data: &std::path::Path) -> (Guard, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["serve", "--http", "127.0.0.1:0", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn vigil");
    let stdout = child.stdout.take().expect("stdout");
    let guard = Guard(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("ready line");
    let addr = line
        .trim()
        .strip_prefix("vigil listening on http://")
        .expect("address line")
        .to_owned();
    (guard, addr)
}

/// One HTTP/1.1 request over a fresh connection; returns (status, body).
fn request(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn serve_answers_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (mut guard, addr) = start(&data);
    let (status, body) = request(
        &addr,
        "PUT",
        "/Patient/p1",
        r#"{"resourceType":"Patient","id":"p1","active":true}"#,
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(request(&addr, "GET", "/metadata", "").0, 200);

    let pid = guard.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let exit = guard.0.wait().expect("wait");
    assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");

    let (_guard, addr) = start(&data);
    let (status, body) = request(&addr, "GET", "/Patient/p1", "");
    assert_eq!(status, 200);
    assert!(body.contains("\"active\":true"), "{body}");
}
