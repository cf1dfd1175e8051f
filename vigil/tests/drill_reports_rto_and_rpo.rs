//! `vigil drill --local`: a real local cluster, steady writes, the leader
//! killed; the report shows the promotion, the rejoin, an RTO within the
//! promise and no acknowledged write lost (synchronous replication).

use std::process::Command;
use vigil_testkit::free_ports;

fn drill(scenario: &str) -> (tempfile::TempDir, serde_json::Value, String) {
    let dir = tempfile::tempdir().expect("dir");
    let (http, repl) = free_ports(2, 3);
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["drill", "--local", "--scenario", scenario])
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
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("report/drill.json")).expect("json report"),
    )
    .expect("json");
    let md = std::fs::read_to_string(dir.path().join("report/drill.md")).expect("md");
    assert!(md.contains("RTO") && md.contains("drill.svg"), "{md}");
    let svg = std::fs::read_to_string(dir.path().join("report/drill.svg")).expect("svg");
    assert!(svg.starts_with("<svg") && svg.contains("failure"));
    // Every process the drill started is gone.
    assert!(std::net::TcpStream::connect(("127.0.0.1", http)).is_err());
    assert!(std::net::TcpStream::connect(("127.0.0.1", http + 1)).is_err());
    // What the test sees itself: the leader's store holds at least every
    // write the report counts as acknowledged, and no more than were sent.
    let node = if report["leader_after"]
        .as_str()
        .is_some_and(|u| u.ends_with(&format!(":{http}")))
    {
        "a"
    } else {
        "b"
    };
    let store = vigil_engine::Store::open_with(
        dir.path().join("cluster").join(node),
        vigil_engine::Options {
            replica: true,
            ..vigil_engine::Options::default()
        },
    )
    .expect("open the leader's store");
    let patients = store
        .stats()
        .expect("stats")
        .types
        .iter()
        .find(|t| t.resource_type == "Patient")
        .map_or(0, |t| t.live);
    let acked = report["acknowledged"].as_u64().expect("acknowledged");
    let sent = acked + report["refused"].as_u64().expect("refused");
    assert!(
        patients >= acked && patients <= sent,
        "{patients} drill Patients stored; the report says {acked} acknowledged of {sent}"
    );
    (dir, report, stdout)
}

#[test]
fn a_kill_leader_drill_reports_promotion_rejoin_and_no_loss() {
    let (_d, report, stdout) = drill("kill-leader");
    assert!(stdout.contains("DISASTER"), "{stdout}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["rpo_kept"], true);
    assert_eq!(report["rto_kept"], true);
    assert!(report["promoted_at"].as_f64() > report["failure_at"].as_f64());
    assert!(report["rejoined_at"].as_f64() > report["promoted_at"].as_f64());
    assert!(report["acknowledged"].as_u64() > Some(30), "{report}");
    assert_ne!(report["leader_before"], report["leader_after"]);
}

#[test]
fn a_partition_drill_fences_the_old_leader_and_it_rejoins() {
    let (_d, report, _) = drill("partition-leader");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["rto_kept"], true, "{report}");
    assert!(report["promoted_at"].as_f64() > report["failure_at"].as_f64());
    assert!(report["rejoined_at"].as_f64() > report["promoted_at"].as_f64());
    assert_ne!(report["leader_before"], report["leader_after"]);
}

#[test]
fn witness_loss_and_switchover_drills_keep_every_write() {
    let (_d, report, _) = drill("witness-loss");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(
        report["leader_before"], report["leader_after"],
        "nobody promoted"
    );
    assert!(report["promoted_at"].is_null(), "{report}");
    assert!(
        report["longest_gap_seconds"].as_f64() < Some(1.0),
        "writes went on: {report}"
    );
    let (_d, report, _) = drill("switchover");
    assert_eq!(report["lost"], 0, "{report}");
    assert_ne!(report["leader_before"], report["leader_after"]);
    assert!(
        report["longest_gap_seconds"].as_f64() < Some(1.0),
        "{report}"
    );
}
