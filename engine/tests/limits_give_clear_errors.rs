//! Guards the limits: an oversized resource, an oversized or empty batch,
//! and bad names fail with an error that names the limit, and write nothing.

mod common;

use common::*;
use vigil_engine::{Batch, Current, Error, Op, Options, Store, limits};

#[test]
fn each_limit_fails_clearly_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(
        dir.path(),
        Options {
            resource_bytes_max: 1024,
            ..Options::default()
        },
    )
    .expect("open");
    let before = store.last_lsn();
    match store.commit(Batch::one(Op::put("Patient", "big", vec![b' '; 1025]))) {
        Err(Error::ResourceTooLarge {
            bytes: 1025,
            limit: 1024,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(store.commit(Batch::new()), Err(Error::EmptyBatch)));
    let mut b = Batch::new();
    for i in 0..=limits::BATCH_OPS_MAX {
        b.push(Op::delete("Patient", format!("p{i}")));
    }
    match store.commit(b) {
        Err(e @ Error::BatchTooLarge { .. }) => {
            assert!(e.to_string().contains("operation count"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    for (ty, id) in [
        ("", "a"),
        ("Patient", ""),
        ("Pat/ient", "a"),
        ("Patient", "a b"),
        ("Patient", &"x".repeat(65)),
    ] {
        match store.commit(Batch::one(Op::put(ty, id, patient("a", 1)))) {
            Err(Error::Invalid { .. }) => {}
            other => panic!("{ty:?}/{id:?}: {other:?}"),
        }
    }
    assert_eq!(store.last_lsn(), before, "nothing was written");
    assert_eq!(
        store.get("Patient", "big").expect("get"),
        Current::NeverExisted
    );
    assert!(matches!(
        Store::open_with(
            tempfile::tempdir().expect("tempdir").path(),
            Options {
                zstd_level: 0,
                ..Options::default()
            }
        ),
        Err(Error::Invalid {
            what: "zstd_level",
            ..
        })
    ));
}
