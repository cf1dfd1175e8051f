//! Guards against silent skips over damaged data: a bit flipped in a sealed
//! segment must stop open (and fail verify) with the segment and offset,
//! and repair must cut there and keep the cut bytes in quarantine.

mod common;

use common::*;
use vigil_engine::{Error, Options, Store};
use vigil_testkit::small_store;

fn build(dir: &std::path::Path) {
    let store = Store::open_with(dir, small_store(4096, false)).expect("open");
    for i in 0..60u32 {
        put(&store, "Patient", &format!("p{i}"), patient("p", i));
    }
    store.close().expect("close");
    assert!(segments(dir).len() >= 3, "the test needs sealed segments");
}

fn flip(path: &std::path::Path, offset: u64) {
    let mut b = std::fs::read(path).expect("read");
    b[offset as usize] ^= 0x04;
    std::fs::write(path, b).expect("write");
}

#[test]
fn a_flip_in_a_sealed_segment_stops_open_with_segment_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    let sealed = segments(dir.path())[1].clone();
    flip(&sealed, 200);
    match Store::open_with(dir.path(), small_store(4096, false)) {
        Err(Error::ChecksumMismatch {
            segment, offset, ..
        }) => {
            assert_eq!(segment, sealed);
            assert!(
                (32..=200).contains(&offset),
                "offset {offset} is the frame holding byte 200"
            );
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
}

#[test]
fn verify_finds_a_flip_that_a_quick_open_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    let first = segments(dir.path())[0].clone();
    flip(&first, 300);
    let store = Store::open_with(
        dir.path(),
        Options {
            verify_on_open: false,
            ..small_store(4096, false)
        },
    )
    .expect("a quick open checks only the newest segments");
    let err = store.verify().expect_err("verify reads everything");
    let msg = err.to_string();
    assert!(msg.contains(&first.display().to_string()), "{msg}");
    assert!(msg.contains("offset"), "{msg}");
}

#[test]
fn repair_cuts_at_the_damage_and_quarantines_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    let segs = segments(dir.path());
    let sizes: Vec<u64> = segs
        .iter()
        .map(|s| std::fs::metadata(s).expect("stat").len())
        .collect();
    flip(&segs[1], 100);
    let store = Store::open_with(
        dir.path(),
        Options {
            repair: true,
            ..small_store(4096, false)
        },
    )
    .expect("repair opens");
    let (first_lost, qdir) = store.open_report().repaired.clone().expect("repaired");
    assert!(
        store.open_report().index_rebuilt,
        "the index had entries past the cut"
    );
    assert!(first_lost > 1);
    assert_eq!(
        segments(dir.path()).len(),
        2,
        "segments after the damaged one moved out"
    );
    let mut moved = 0;
    let mut cut_at = None;
    for e in std::fs::read_dir(&qdir).expect("quarantine") {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        if let Some((_, off)) = name.split_once(".from-") {
            cut_at = Some(off.parse::<u64>().expect("offset"));
        }
        if name != "MANIFEST.txt" {
            moved += std::fs::metadata(&p).expect("stat").len();
        }
    }
    let cut_at = cut_at.expect("the cut part of the damaged segment");
    assert!(cut_at <= 100, "cut at the frame holding the flipped byte");
    let expected: u64 = sizes[1] - cut_at + sizes[2..].iter().sum::<u64>();
    assert_eq!(
        moved, expected,
        "every byte after the damage is quarantined"
    );
    assert!(
        std::fs::read_to_string(qdir.join("MANIFEST.txt"))
            .expect("manifest")
            .contains("first lost lsn")
    );
    store.verify().expect("the repaired store verifies");
    // The store takes writes again after the cut.
    put(&store, "Patient", "new", patient("new", 1));
}
