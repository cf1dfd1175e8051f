//! `vigil backup`, `vigil backup verify` and `vigil restore` as a user runs
//! them: a store backed up, verified, and restored at an earlier LSN with
//! its search index built.

use std::process::Command;

use vigil_engine::{Batch, Current, Op, Store};
use vigil_fhir::app::App;
use vigil_fhir::config::Config;

fn vigil(args: &[&str]) -> String {
    vigil_testkit::output_of(Command::new(env!("CARGO_BIN_EXE_vigil")).args(args))
}

#[test]
fn backup_verify_and_restore_to_an_lsn() {
    let d = tempfile::tempdir().expect("dir");
    let (data, bak, restored) = (
        d.path().join("data"),
        d.path().join("bak"),
        d.path().join("r"),
    );
    let cfg = Config {
        data: data.clone(),
        ..Config::default()
    };
    let store = Store::open_with(&data, App::store_options(&cfg).expect("options")).expect("open");
    let body = |family: &str| {
        format!(r#"{{"resourceType":"Patient","id":"p1","name":[{{"family":"{family}"}}]}}"#)
            .into_bytes()
    };
    store
        .commit(Batch::one(Op::put("Patient", "p1", body("Before"))))
        .expect("commit");
    let mid = store.last_lsn();
    store
        .commit(Batch::one(Op::put("Patient", "p1", body("After"))))
        .expect("commit");
    let (data_s, bak_s, r_s) = (
        data.to_str().expect("utf8"),
        bak.to_str().expect("utf8"),
        restored.to_str().expect("utf8"),
    );
    // Online: the store stays open (locked) while it is backed up.
    let out = vigil(&["backup", "--data", data_s, "--to", bak_s]);
    assert!(out.contains("consistent at lsn"), "{out}");
    let out = vigil(&["backup", "verify", bak_s]);
    assert!(out.contains("is whole"), "{out}");
    drop(store);
    let out = vigil(&[
        "restore",
        "--from",
        bak_s,
        "--to",
        r_s,
        "--lsn",
        &mid.to_string(),
    ]);
    assert!(out.contains(&format!("up to lsn {mid}")), "{out}");
    assert!(out.contains("ready"), "{out}");
    let r = Store::open_with(&restored, App::store_options(&cfg).expect("options"))
        .expect("open restored");
    match r.get("Patient", "p1").expect("read") {
        Current::Live(v) => assert_eq!(v.body, body("Before")),
        other => panic!("{other:?}"),
    }
    // Restoring over it again is refused with a clear message.
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["restore", "--from", bak_s, "--to", r_s])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a store"));
}
