//! The archive and base backups on Azure Blob Storage, against a real
//! server (Azurite on loopback, testkit::azurite): the same pieces and
//! backups as on S3 through `az://container/prefix`, create-only uploads
//! (Azure's If-None-Match), a restore that lays the backup's index beside
//! the log, `verify`, and a wrong account key as a clear error.

use std::sync::Arc;
use std::time::Duration;

use vigil_engine::{Batch, Op, Options, RestoreTarget, Store};
use vigil_net::archive::{
    ArchiveConfig, Archiver, Created, Location, backup_to_location, restore_from_archive,
    verify_location,
};
use vigil_testkit::azurite::Azurite;
use vigil_testkit::{frames, small_store};

fn location(az: &Azurite, url: &str) -> Location {
    let s = az.settings();
    let pairs: Vec<(&str, &str)> = s.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Location::parse_with(url, &pairs).expect("location")
}

fn write(store: &Store, from: u64, n: u64) -> u64 {
    for i in from..from + n {
        let mut b = Batch::new();
        b.push(Op::put(
            "Patient",
            format!("p{}", i % 40),
            format!(r#"{{"resourceType":"Patient","id":"p{}","n":{i}}}"#, i % 40).into_bytes(),
        ));
        store.commit(b).expect("commit");
    }
    store.last_lsn()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_and_base_backups_work_on_azure_blob_storage() {
    let az = Azurite::start();
    az.create_container("vigil");
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(
        Store::open_with(dir.path().join("a"), small_store(64 * 1024, false)).expect("open"),
    );
    let loc = location(&az, "az://vigil/region-a");
    let early = write(&store, 0, 100);
    let archiver = Archiver::start(
        store.clone(),
        loc.clone(),
        ArchiveConfig {
            interval: Duration::from_millis(100),
            piece_bytes: 16 * 1024,
        },
    );
    let t0 = std::time::Instant::now();
    while archiver.status().archived_lsn < early {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{:?}",
            archiver.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(archiver.status().last_error, None);
    archiver.stop().await;
    write(&store, 100, 80);
    let b = backup_to_location(store.clone(), &loc, &mut |_| {})
        .await
        .expect("base backup");
    assert_eq!(b.lsn, store.last_lsn());

    let v = verify_location(&loc, &mut |_| {}).await.expect("verify");
    assert_eq!(v.last_lsn, store.last_lsn());
    assert_eq!(v.backups.len(), 1);
    assert!(v.backups[0].on_history);

    let to = dir.path().join("restored");
    let r = restore_from_archive(
        &loc,
        &to,
        Options::default(),
        RestoreTarget::Latest,
        &mut |_| {},
    )
    .await
    .expect("restore");
    assert_eq!(r.base_backup.as_deref(), Some(b.name.as_str()));
    let restored = Store::open(&to).expect("open restored");
    assert!(!restored.open_report().index_rebuilt);
    assert_eq!(frames(&restored), frames(&store));
    restored.verify().expect("verify");
    drop(restored);

    let to = dir.path().join("early");
    restore_from_archive(
        &loc,
        &to,
        Options::default(),
        RestoreTarget::Lsn(early),
        &mut |_| {},
    )
    .await
    .expect("restore to an lsn");
    assert_eq!(Store::open(&to).expect("open").last_lsn(), early);

    // Create-only: a second upload of a name is refused by the server.
    assert_eq!(
        loc.put_new("log/probe", vec![1]).await.expect("put"),
        Created::Written
    );
    assert_eq!(
        loc.put_new("log/probe", vec![2]).await.expect("put"),
        Created::Existed
    );
    assert_eq!(loc.get("log/probe").await.expect("get"), vec![1]);

    // A wrong account key: a clear error naming the location.
    let mut s = az.settings();
    s[1].1 = "AAAA".repeat(22);
    let pairs: Vec<(&str, &str)> = s.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let wrong = Location::parse_with("az://vigil/region-a", &pairs).expect("location");
    let e = wrong.list("log/").await.expect_err("refused");
    assert!(e.to_string().contains("az://vigil/region-a"), "{e}");
}
