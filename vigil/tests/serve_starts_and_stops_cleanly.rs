//! Guards the `vigil serve` process: it starts with flags, answers over a
//! real socket, stops cleanly on SIGTERM (exit 0, store closed), and a
//! restart on the same data directory serves what was written.

use std::net::SocketAddr;
use std::process::Command;

use vigil_testkit::ChildGuard;

fn start(data: &std::path::Path) -> (ChildGuard, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil"));
    cmd.args(["serve", "--http", "127.0.0.1:0", "--data"])
        .arg(data);
    ChildGuard::spawn_server(cmd).expect("vigil serve starts")
}

/// One request over a fresh connection: (status, body).
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let body = (!body.is_empty()).then_some(body);
    let r = vigil_testkit::http::request(addr, method, path, body).expect("request");
    (r.status, r.body)
}

#[test]
fn serve_answers_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (mut guard, addr) = start(&data);
    let (status, body) = request(
        addr,
        "PUT",
        "/Patient/p1",
        r#"{"resourceType":"Patient","id":"p1","active":true}"#,
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(request(addr, "GET", "/metadata", "").0, 200);

    let pid = guard.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let exit = guard.0.wait().expect("wait");
    assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");

    let (_guard, addr) = start(&data);
    let (status, body) = request(addr, "GET", "/Patient/p1", "");
    assert_eq!(status, 200);
    assert!(body.contains("\"active\":true"), "{body}");
}
