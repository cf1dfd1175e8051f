//! Base backups beside the archive, against a real S3 server (SeaweedFS
//! on loopback): a restore lays the newest backup at or before its target
//! beside the log and replays only what follows it; the index it brings
//! equals a rebuild; `verify` checks every object and names a damaged
//! one, and a restore then builds the index from the log instead;
//! retention deletes only backups it does not keep, never the log.

use std::sync::Arc;

use vigil_engine::crypt::Kek;
use vigil_engine::crypt::keyfile::KeyFile;
use vigil_engine::{Batch, Op, Options, RestoreTarget, Store};
use vigil_net::archive::{
    ArchiveRestoreReport, Location, Retention, backup_to_location, prune_backups,
    restore_from_archive, verify_location,
};
use vigil_testkit::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use vigil_testkit::{frames, small_store};

fn location(s3: &S3Server, url: &str) -> Location {
    let endpoint = s3.endpoint();
    let pairs = [
        ("aws_access_key_id", ACCESS_KEY),
        ("aws_secret_access_key", SECRET_KEY),
        ("aws_region", "us-east-1"),
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
    ];
    Location::parse_with(url, &pairs).expect("location")
}

fn options(kek: Option<Arc<dyn Kek>>) -> Options {
    Options {
        kek,
        ..small_store(64 * 1024, false)
    }
}

/// Commits `n` batches; returns (last lsn, its commit time).
fn write(store: &Store, from: u64, n: u64) -> (u64, u64) {
    for i in from..from + n {
        let mut b = Batch::new();
        for k in 0..1 + i % 3 {
            b.push(Op::put(
                "Patient",
                format!("p{}", (i + k) % 60),
                format!(
                    r#"{{"resourceType":"Patient","id":"p{}","n":{i}}}"#,
                    (i + k) % 60
                )
                .into_bytes(),
            ));
        }
        store.commit(b).expect("commit");
    }
    let lsn = store.last_lsn();
    (
        lsn,
        store
            .frame_at(lsn)
            .expect("frame")
            .expect("held")
            .timestamp_us,
    )
}

async fn restore(
    loc: &Location,
    target: RestoreTarget,
    kek: Option<Arc<dyn Kek>>,
) -> (tempfile::TempDir, ArchiveRestoreReport, Store) {
    let dir = tempfile::tempdir().expect("dir");
    let to = dir.path().join("restored");
    let r = restore_from_archive(loc, &to, options(kek.clone()), target, &mut |_| {})
        .await
        .expect("restore");
    let store = Store::open_with(&to, options(kek)).expect("open restored");
    (dir, r, store)
}

fn same_log_to(restored: &Store, original: &Store, lsn: u64) {
    assert_eq!(restored.last_lsn(), lsn);
    let got = frames(restored);
    let all = frames(original);
    assert!(got.len() <= all.len());
    assert_eq!(got, all[..got.len()], "the log byte for byte to lsn {lsn}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_uses_the_newest_base_backup_at_or_before_its_target() {
    let s3 = S3Server::start();
    s3.create_bucket("vigil");
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(Store::open_with(dir.path().join("a"), options(None)).expect("open"));
    let loc = location(&s3, "s3://vigil/dr");
    let (early, _) = write(&store, 0, 60);
    write(&store, 60, 60);
    let mut seen = Vec::new();
    let b1 = backup_to_location(store.clone(), &loc, &mut |p| seen.push(p))
        .await
        .expect("first backup");
    // Progress: the log, then the index; never backwards, done at the end.
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].bytes_done <= w[1].bytes_done));
    let last = seen.last().expect("progress");
    assert_eq!(last.bytes_done, last.bytes_total, "{seen:?}");
    assert_eq!(b1.lsn, store.last_lsn());
    assert!(b1.pieces >= 1 && b1.files >= 1, "{b1:?}");
    let (mid, _) = write(&store, 120, 40);
    write(&store, 160, 40);
    let b2 = backup_to_location(store.clone(), &loc, &mut |_| {})
        .await
        .expect("second backup");
    assert!(b2.lsn > b1.lsn);
    let (_, t2) = write(&store, 200, 1);
    assert!(t2 >= b2.timestamp_us);
    write(&store, 201, 40);
    // The last writes reach the location with a third backup's pieces.
    let b3 = backup_to_location(store.clone(), &loc, &mut |_| {})
        .await
        .expect("third backup");
    assert_eq!(b3.lsn, store.last_lsn());
    assert!(
        !dir.path().join("a").read_dir().expect("dir").any(|e| e
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")),
        "no snapshot directory left in the store"
    );

    // Latest: the newest backup; nothing to replay after it.
    let (_d, r, restored) = restore(&loc, RestoreTarget::Latest, None).await;
    assert_eq!(r.base_backup.as_deref(), Some(b3.name.as_str()), "{r:?}");
    assert!(r.index_bytes > 0);
    assert!(!restored.open_report().index_rebuilt);
    same_log_to(&restored, &store, store.last_lsn());
    restored
        .verify()
        .expect("the backup's index equals a rebuild");
    drop(restored);

    // An LSN between the first two backups: the first, and the frames
    // after it replayed.
    let (_d, r, restored) = restore(&loc, RestoreTarget::Lsn(mid), None).await;
    assert_eq!(r.base_backup.as_deref(), Some(b1.name.as_str()), "{r:?}");
    assert!(!restored.open_report().index_rebuilt);
    assert!(restored.open_report().frames_replayed > 0);
    same_log_to(&restored, &store, mid);
    restored.verify().expect("verify");
    drop(restored);

    // A time after the second backup's frame: the second.
    let (_d, r, restored) = restore(&loc, RestoreTarget::Time(t2), None).await;
    assert_eq!(r.base_backup.as_deref(), Some(b2.name.as_str()), "{r:?}");
    assert!(restored.last_lsn() > b2.lsn);
    restored.verify().expect("verify");
    drop(restored);

    // Before every backup: the log alone, indexed as it is appended.
    let (_d, r, restored) = restore(&loc, RestoreTarget::Lsn(early), None).await;
    assert_eq!(r.base_backup, None);
    assert_eq!(r.index_note, None);
    same_log_to(&restored, &store, early);
    restored.verify().expect("verify");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_damaged_object_and_a_restore_builds_the_index_instead() {
    let s3 = S3Server::start();
    s3.create_bucket("vigil");
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(Store::open_with(dir.path().join("a"), options(None)).expect("open"));
    let loc = location(&s3, "s3://vigil/dr");
    write(&store, 0, 150);
    let b = backup_to_location(store.clone(), &loc, &mut |_| {})
        .await
        .expect("backup");
    let v = verify_location(&loc, &mut |_| {}).await.expect("verify");
    assert_eq!(v.last_lsn, store.last_lsn());
    assert_eq!(v.frames, frames(&store).len() as u64);
    assert_eq!(v.backups.len(), 1);
    assert!(v.backups[0].on_history && v.backups[0].lsn == b.lsn);

    // One byte of the index changed in storage.
    let object = format!("backups/{}/index.redb.zst", b.name);
    let tmp = dir.path().join("index.copy");
    let mut bytes = loc.get(&object).await.expect("get");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&tmp, &bytes).expect("write");
    loc.put_file(&object, &tmp).await.expect("replace");
    let e = verify_location(&loc, &mut |_| {})
        .await
        .expect_err("damage found");
    assert!(e.to_string().contains(&object), "names the object: {e}");

    let (_d, r, restored) = restore(&loc, RestoreTarget::Latest, None).await;
    assert_eq!(r.base_backup, None);
    let note = r.index_note.expect("why the backup was not used");
    assert!(note.contains(&b.name) && note.contains(&object), "{note}");
    assert!(restored.open_report().index_rebuilt, "built from the log");
    same_log_to(&restored, &store, store.last_lsn());
    restored.verify().expect("verify");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_backups_it_does_not_keep_and_never_the_log() {
    let s3 = S3Server::start();
    s3.create_bucket("vigil");
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(Store::open_with(dir.path().join("a"), options(None)).expect("open"));
    let loc = location(&s3, "s3://vigil/dr");
    let mut names = Vec::new();
    for round in 0..3 {
        write(&store, round * 50, 50);
        let b = backup_to_location(store.clone(), &loc, &mut |_| {})
            .await
            .expect("backup");
        names.push(b.name);
    }
    // A backup cut short two days ago: files without a manifest.
    let orphan = format!("backups/{:020}-{:020}/index.redb", 5, 1);
    loc.put_new(&orphan, vec![1, 2, 3]).await.expect("orphan");
    let pieces_before = loc.list("log/").await.expect("list").len();
    let now = store
        .frame_at(store.last_lsn())
        .expect("f")
        .expect("h")
        .timestamp_us
        + 3 * 24 * 3600 * 1_000_000;

    // Within 7 days: all kept.
    let r = prune_backups(
        &loc,
        Retention {
            keep_days: 7,
            keep_backups: 1,
        },
        now,
    )
    .await
    .expect("prune");
    assert!(r.deleted.is_empty() && r.kept.len() == 3, "{r:?}");
    assert_eq!(r.orphans, 1);
    // Older than 1 day, keep 2: the oldest goes, manifest and files.
    let r = prune_backups(
        &loc,
        Retention {
            keep_days: 1,
            keep_backups: 2,
        },
        now,
    )
    .await
    .expect("prune");
    assert_eq!(r.deleted, vec![names[0].clone()]);
    let left = loc.list("backups/").await.expect("list");
    assert!(
        !left.iter().any(|(n, _)| n.contains(&names[0])),
        "nothing of the pruned backup: {left:?}"
    );
    assert!(left.iter().any(|(n, _)| n.contains(&names[2])));
    assert_eq!(loc.list("log/").await.expect("list").len(), pieces_before);
    // Keep 0 still keeps the newest.
    let r = prune_backups(
        &loc,
        Retention {
            keep_days: 0,
            keep_backups: 0,
        },
        now,
    )
    .await
    .expect("prune");
    assert_eq!(r.kept, vec![names[2].clone()]);
    let (_d, r, restored) = restore(&loc, RestoreTarget::Latest, None).await;
    assert_eq!(r.base_backup.as_deref(), Some(names[2].as_str()));
    same_log_to(&restored, &store, store.last_lsn());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_stores_backup_restores_under_its_key() {
    let s3 = S3Server::start();
    s3.create_bucket("vigil");
    let dir = tempfile::tempdir().expect("dir");
    let key = dir.path().join("kek");
    KeyFile::create(&key, "region-a").expect("key");
    let kek: Arc<dyn Kek> = Arc::new(KeyFile::load(&key).expect("open key"));
    let store =
        Arc::new(Store::open_with(dir.path().join("a"), options(Some(kek.clone()))).expect("open"));
    let loc = location(&s3, "s3://vigil/sealed");
    write(&store, 0, 120);
    let b = backup_to_location(store.clone(), &loc, &mut |_| {})
        .await
        .expect("backup");
    let (after, _) = write(&store, 120, 10);
    write(&store, 130, 20);
    backup_to_location(store.clone(), &loc, &mut |_| {})
        .await
        .expect("second backup");
    let (_d, r, restored) = restore(&loc, RestoreTarget::Lsn(after), Some(kek)).await;
    assert_eq!(r.base_backup.as_deref(), Some(b.name.as_str()));
    assert!(!restored.open_report().index_rebuilt);
    same_log_to(&restored, &store, after);
    restored.verify().expect("verify");
    // Without the key: refused, naming what is needed.
    let to = dir.path().join("nokey");
    let e = restore_from_archive(&loc, &to, options(None), RestoreTarget::Latest, &mut |_| {})
        .await
        .expect_err("needs the key");
    assert!(e.to_string().to_lowercase().contains("key"), "{e}");
}
