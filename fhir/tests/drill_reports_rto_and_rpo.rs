//! `vigil drill --local`: a real local cluster, steady writes, the leader
//! killed; the report shows the promotion, the rejoin, an RTO within the
//! promise and no acknowledged write lost (synchronous replication).

use std::net::{TcpListener, UdpSocket};
use std::process::Command;

fn free_ports() -> (u16, u16) {
    for i in 0..200u32 {
        let base = 21_000 + ((std::process::id() * 13 + i * 337) % 29_000) as u16;
        let tcp = (0..2).all(|k| TcpListener::bind(("127.0.0.1", base + k)).is_ok());
        let udp = (0..3).all(|k| UdpSocket::bind(("127.0.0.1", base + 100 + k)).is_ok());
        if tcp && udp {
            return (base, base + 100);
        }
    }
    panic!("no free ports");
}

#[test]
fn a_kill_leader_drill_reports_promotion_rejoin_and_no_loss() {
    let dir = tempfile::tempdir().expect("dir");
    let (http, repl) = free_ports();
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["drill", "--local", "--scenario", "kill-leader"])
        .args(["--rate", "30", "--before", "2", "--after", "3"])
        .arg("--out")
        .arg(dir.path().join("report"))
        .arg("--dir")
        .arg(dir.path().join("cluster"))
        .args([
            "--http-port",
            &http.to_string(),
            "--repl-port",
            &repl.to_string(),
        ])
        .output()
        .expect("vigil drill runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("DISASTER"), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("report/drill.json")).expect("json report"),
    )
    .expect("json");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["rpo_kept"], true);
    assert_eq!(report["rto_kept"], true);
    assert!(report["promoted_at"].as_f64() > report["failure_at"].as_f64());
    assert!(report["rejoined_at"].as_f64() > report["promoted_at"].as_f64());
    assert!(report["acknowledged"].as_u64() > Some(30), "{report}");
    assert_ne!(report["leader_before"], report["leader_after"]);
    let md = std::fs::read_to_string(dir.path().join("report/drill.md")).expect("md");
    assert!(md.contains("RTO") && md.contains("drill.svg"), "{md}");
    let svg = std::fs::read_to_string(dir.path().join("report/drill.svg")).expect("svg");
    assert!(svg.starts_with("<svg") && svg.contains("promotion") && svg.contains("rejoin"));
    // Every process the drill started is gone.
    assert!(std::net::TcpStream::connect(("127.0.0.1", http + 1)).is_err());
}
