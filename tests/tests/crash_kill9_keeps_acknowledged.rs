//! Guards invariant 1 (an acknowledged write survives kill -9) and batch
//! atomicity across real crashes: a child process commits in a loop and is
//! killed with SIGKILL at random moments; after each kill every
//! acknowledged version is on disk byte for byte, every batch is whole or
//! absent, and the index equals a fresh rebuild.
//!
//! The same on a store encrypted at rest (issue 22).
//!
//! Rounds: 30 by default, `VIGIL_CRASH_ROUNDS=N` for more.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use vigil_engine::crypt::keyfile::KeyFile;
use vigil_engine::{Change, Options, Store, VersionRead};
use vigil_fhir::synth::Rng;
use vigil_testkit::ChildGuard;
use vigil_tests::crash_body;

fn field(body: &str, name: &str) -> u64 {
    let key = format!("\"{name}\":");
    let start = body
        .find(&key)
        .map(|i| i + key.len())
        .expect("field present");
    body[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|d| d.parse().ok())
        .expect("numeric field")
}

#[test]
fn acknowledged_commits_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    crash_rounds(dir.path(), None);
}

/// The same on a store encrypted at rest: a kill may also land while an
/// open appends its new data key, and every reopen must still read every
/// acknowledged version; without the key the store does not open at all.
#[test]
fn acknowledged_commits_survive_sigkill_on_an_encrypted_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("region.key");
    KeyFile::create(&key, "region").expect("key file");
    let data = dir.path().join("data");
    crash_rounds(&data, Some(&key));
    match Store::open(&data) {
        Err(vigil_engine::Error::KeyNeeded { .. }) => {}
        other => panic!("an encrypted store opened without its key: {other:?}"),
    }
}

/// Kills a committing child `VIGIL_CRASH_ROUNDS` times (30 by default) and
/// checks the store after each kill.
fn crash_rounds(dir: &Path, kek_file: Option<&Path>) {
    let rounds: u64 = std::env::var("VIGIL_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let options = || Options {
        kek: kek_file.map(|f| {
            Arc::new(KeyFile::load(f).expect("key file")) as Arc<dyn vigil_engine::crypt::Kek>
        }),
        ..Options::default()
    };
    let mut rng = Rng::new(0x5eed);
    let mut acked: Vec<(u64, u64, String, u64)> = Vec::new();
    for round in 1..=rounds {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_crash_child"));
        cmd.arg(dir).arg(round.to_string());
        if let Some(f) = kek_file {
            cmd.arg(f);
        }
        let child = ChildGuard::spawn(cmd).expect("spawn child");
        std::thread::sleep(Duration::from_millis(30 + rng.below(120)));
        let out = child.kill9().expect("kill child");
        for line in out.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            if parts.len() == 5 && parts[0] == "ACK" {
                acked.push((
                    parts[1].parse().expect("batch"),
                    parts[2].parse().expect("n"),
                    parts[3].to_owned(),
                    parts[4].parse().expect("version"),
                ));
            }
        }
        let store = Store::open_with(dir, options())
            .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        // Every acknowledged version is there, byte for byte.
        for (batch, n, id, version) in &acked {
            match store
                .get_version("Observation", id, *version)
                .expect("vread")
            {
                VersionRead::Live(v) => {
                    let size = field(std::str::from_utf8(&v.body).expect("utf8"), "size");
                    assert_eq!(
                        v.body,
                        crash_body(*n, *batch, size),
                        "round {round}: {id} v{version}"
                    );
                }
                other => panic!("round {round}: acknowledged {id} v{version} is {other:?}"),
            }
        }
        // Every batch is whole or absent.
        let mut seen: HashMap<u64, (u64, u64)> = HashMap::new();
        for c in store.changes(0, usize::MAX).expect("changes") {
            if let Change::Resource { version, .. } = c {
                let body = std::str::from_utf8(&version.body).expect("utf8");
                let e = seen
                    .entry(field(body, "batch"))
                    .or_insert((0, field(body, "size")));
                e.0 += 1;
            }
        }
        for (batch, (count, size)) in &seen {
            assert_eq!(
                count, size,
                "round {round}: batch {batch} is partly visible"
            );
        }
        store
            .verify()
            .unwrap_or_else(|e| panic!("round {round}: verify: {e}"));
        store.close().expect("close");
    }
    assert!(
        acked.len() > rounds as usize,
        "the child acknowledged too little to test anything: {}",
        acked.len()
    );
}
