//! A former leader whose log ran past what the new leader has cuts its log
//! back to where the two agree, keeps every lost version in quarantine,
//! and then follows the new leader until the logs are identical.

mod common;

use common::*;
use vigil_engine::{LogPosition, Store, limits::SEGMENT_BYTES_MIN};
use vigil_testkit::{frames, small_store};

#[test]
fn a_deposed_leader_cuts_its_divergent_tail_into_quarantine_and_follows() {
    let (ad, bd) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    // a leads epoch 1; b follows and has everything up to here.
    let a = Store::open_with(ad.path(), small_store(SEGMENT_BYTES_MIN, false)).expect("a");
    let b = Store::open_with(bd.path(), small_store(SEGMENT_BYTES_MIN, true)).expect("b");
    for i in 0..20 {
        put(&a, "Patient", &format!("p{i}"), patient("p", i));
    }
    ship(&a, &b, 1 << 20);
    let common_end = b.log_end().lsn;
    // a writes on (never shipped): these are lost when b takes over.
    for i in 0..5 {
        let id = format!("lost{i}");
        put(&a, "Patient", &id, patient(&id, i));
    }
    put(&a, "Patient", "p3", patient("p3-changed", 99));
    // b is promoted to epoch 2 and writes.
    b.set_read_only(false);
    b.begin_epoch(2).expect("epoch 2");
    for i in 0..7 {
        put(&b, "Observation", &format!("o{i}"), patient("o", i));
    }
    // b changes p3 too: its version must not be 2, the number a's lost
    // update carried (a client may hold that ETag).
    let p3 = put(&b, "Patient", "p3", patient("p3-on-b", 7));
    let v = match p3.outcomes[0] {
        vigil_engine::OpOutcome::Written { version, .. } => version,
        ref other => panic!("expected a write, got {other:?}"),
    };
    assert_eq!(
        v,
        vigil_engine::limits::EPOCH_VERSIONS + 1,
        "epoch 2's first version of p3"
    );
    let second = put(&b, "Patient", "p3", patient("p3-on-b", 8));
    assert!(matches!(
        second.outcomes[0],
        vigil_engine::OpOutcome::Written { version, .. } if version == v + 1
    ));
    assert!(matches!(
        b.get_version("Patient", "p3", 2).expect("vread"),
        vigil_engine::VersionRead::NoSuchVersion { .. }
    ));
    // a comes back: its log is not a prefix of b's.
    let end = a.log_end();
    let pos = b
        .position_of(end.epoch, end.lsn, end.crc)
        .expect("position");
    let LogPosition::Diverged { agree_until } = pos else {
        panic!("expected divergence, got {pos:?}");
    };
    assert_eq!(
        agree_until, common_end,
        "they agree exactly up to what b had"
    );
    a.close().expect("close a");
    let cut = Store::cut_log(
        ad.path(),
        small_store(SEGMENT_BYTES_MIN, false),
        agree_until,
    )
    .expect("cut")
    .expect("something was cut");
    assert_eq!(cut.first_lsn, common_end + 1);
    assert_eq!(cut.versions, 6, "five creates and one update were lost");
    let lines = std::fs::read_to_string(cut.quarantine.join("versions.ndjson")).expect("ndjson");
    assert_eq!(lines.lines().count(), 6);
    let first: serde_json::Value =
        serde_json::from_str(lines.lines().next().expect("line")).expect("valid JSON line");
    assert_eq!(first["resourceType"], "Patient");
    assert_eq!(first["id"], "lost0");
    assert_eq!(first["versionId"], "1");
    assert_eq!(first["epoch"], 1);
    assert_eq!(first["resource"]["id"], "lost0");
    assert!(
        lines.contains("\"id\":\"p3\",\"versionId\":\"2\""),
        "the lost update of p3"
    );
    assert!(cut.quarantine.join("MANIFEST.txt").exists());
    // Cutting again finds nothing more to cut.
    assert_eq!(
        Store::cut_log(
            ad.path(),
            small_store(SEGMENT_BYTES_MIN, false),
            agree_until
        )
        .expect("cut"),
        None
    );
    // a follows b now and ends up identical.
    let a = Store::open_with(ad.path(), small_store(SEGMENT_BYTES_MIN, true)).expect("reopen a");
    assert_eq!(a.log_end().lsn, common_end);
    assert!(
        body_of(&a, "Patient", "lost0").is_none(),
        "the lost write is gone from the log"
    );
    ship(&b, &a, 1 << 20);
    assert_eq!(frames(&a), frames(&b), "identical logs after rejoin");
    a.verify().expect("a's index equals a rebuild");
    b.verify().expect("b's index equals a rebuild");
    assert!(body_of(&a, "Observation", "o6").is_some());
    assert_eq!(
        body_of(&a, "Patient", "p3"),
        Some(patient("p3-on-b", 8)),
        "the new leader's versions, not the lost one"
    );
}

#[test]
fn a_cut_inside_a_frame_takes_the_whole_frame() {
    let d = tempfile::tempdir().expect("dir");
    let s = Store::open_with(d.path(), small_store(SEGMENT_BYTES_MIN, false)).expect("open");
    let before = s.last_lsn();
    let mut b = vigil_engine::Batch::new();
    for i in 0..3 {
        b.push(vigil_engine::Op::put(
            "Patient",
            format!("x{i}"),
            patient("x", i),
        ));
    }
    s.commit(b).expect("commit");
    let mid = s.last_lsn() - 1;
    s.close().expect("close");
    // A divergence point is where the logs may agree at most; the frame
    // that holds it is cut whole, never split.
    let cut = Store::cut_log(d.path(), small_store(SEGMENT_BYTES_MIN, false), mid)
        .expect("cut")
        .expect("something was cut");
    assert_eq!((cut.first_lsn, cut.last_lsn), (before + 1, before + 3));
    assert_eq!(cut.versions, 3);
    let s = Store::open_with(d.path(), small_store(SEGMENT_BYTES_MIN, true)).expect("reopen");
    assert_eq!(s.log_end().lsn, before);
}
