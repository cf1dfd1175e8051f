//! The continuous log archive against a real S3 server (SeaweedFS on
//! loopback, testkit::s3): a leader's log archived in pieces restores
//! byte for byte, to any LSN and any commit time it covers; pieces are
//! create-only; unreachable storage, a missing bucket and a wrong key are
//! clear errors that leave the store's writes alone, and the archive
//! catches up when storage answers again. An encrypted store's archive
//! is as encrypted as the store and restores under its KEK.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vigil_engine::archive::PieceName;
use vigil_engine::crypt::Kek;
use vigil_engine::crypt::keyfile::KeyFile;
use vigil_engine::{Batch, Current, Op, Options, RestoreTarget, Store};
use vigil_net::archive::{
    ArchiveConfig, ArchiveError, Archiver, Created, Location, restore_from_archive,
};
use vigil_testkit::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use vigil_testkit::{frames, small_store, until_async};

fn settings(s3: &S3Server) -> Vec<(&'static str, String)> {
    vec![
        ("aws_access_key_id", ACCESS_KEY.into()),
        ("aws_secret_access_key", SECRET_KEY.into()),
        ("aws_region", "us-east-1".into()),
        ("aws_endpoint", s3.endpoint()),
        ("aws_allow_http", "true".into()),
    ]
}

fn location(s3: &S3Server, url: &str) -> Location {
    let s = settings(s3);
    let pairs: Vec<(&str, &str)> = s.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Location::parse_with(url, &pairs).expect("location")
}

fn body(i: u64, family: &str) -> Vec<u8> {
    format!(
        r#"{{"resourceType":"Patient","id":"p{}","name":[{{"family":"{family}"}}],"n":{i}}}"#,
        i % 50
    )
    .into_bytes()
}

/// Commits `n` batches of 1..=3 versions; returns (last lsn, commit
/// time of that frame) after each.
fn write(store: &Store, from: u64, n: u64, family: &str) -> Vec<(u64, u64)> {
    let mut points = Vec::new();
    for i in from..from + n {
        let mut b = Batch::new();
        for k in 0..1 + i % 3 {
            b.push(Op::put(
                "Patient",
                format!("p{}", (i + k) % 50),
                body(i, family),
            ));
        }
        store.commit(b).expect("commit");
        let lsn = store.last_lsn();
        let time = store
            .frame_at(lsn)
            .expect("frame")
            .expect("the frame just written")
            .timestamp_us;
        points.push((lsn, time));
    }
    points
}

fn open(dir: &Path, kek: Option<Arc<dyn Kek>>) -> Arc<Store> {
    Arc::new(
        Store::open_with(
            dir,
            Options {
                kek,
                ..small_store(256 * 1024, false)
            },
        )
        .expect("store"),
    )
}

/// Archives every 100 ms in small pieces: many objects, and pieces that
/// end mid-segment.
fn start(store: &Arc<Store>, loc: &Location) -> Archiver {
    Archiver::start(
        store.clone(),
        loc.clone(),
        ArchiveConfig {
            interval: Duration::from_millis(100),
            piece_bytes: 16 * 1024,
        },
    )
}

async fn archived(archiver: &Archiver, lsn: u64) {
    let t0 = std::time::Instant::now();
    while archiver.status().archived_lsn < lsn {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the archive did not reach lsn {lsn}: {:?}",
            archiver.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn restore(
    loc: &Location,
    target: RestoreTarget,
    kek: Option<Arc<dyn Kek>>,
) -> (
    tempfile::TempDir,
    Result<vigil_engine::RestoreReport, ArchiveError>,
) {
    let dir = tempfile::tempdir().expect("dir");
    let to = dir.path().join("restored");
    let opts = Options {
        kek,
        ..Options::default()
    };
    let r = restore_from_archive(loc, &to, opts, target, &mut |_| {})
        .await
        .map(|r| r.restore);
    (dir, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_on_s3_restores_every_point_it_covers() {
    let s3 = S3Server::start();
    s3.create_bucket("vigil");
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path(), None);
    let mut points = write(&store, 0, 150, "lemke");
    let loc = location(&s3, "s3://vigil/region-a");
    let archiver = start(&store, &loc);
    archived(&archiver, store.last_lsn()).await;
    // Writes while archiving: the next rounds take them.
    points.extend(write(&store, 150, 150, "pagac"));
    archived(&archiver, store.last_lsn()).await;
    let status = archiver.status();
    assert!(status.pieces >= 5, "many small pieces: {status:?}");
    assert_eq!(status.last_error, None);
    assert_eq!(status.url, "s3://vigil/region-a");
    archiver.stop().await;

    // The whole archive: the log byte for byte.
    let (d, r) = restore(&loc, RestoreTarget::Latest, None).await;
    let report = r.expect("restore");
    assert_eq!(report.last_lsn, store.last_lsn());
    let restored = Store::open(d.path().join("restored")).expect("open restored");
    assert_eq!(frames(&restored), frames(&store));
    restored
        .verify()
        .expect("the restored index equals a rebuild");
    drop(restored);

    // To an LSN and to a time: exactly what was committed by then.
    for &(lsn, time) in [points[0], points[40], points[151], points[233]].iter() {
        let (d, r) = restore(&loc, RestoreTarget::Lsn(lsn), None).await;
        assert_eq!(r.expect("restore to lsn").last_lsn, lsn);
        let at_lsn = Store::open(d.path().join("restored")).expect("open");
        assert_eq!(at_lsn.last_lsn(), lsn);
        drop(at_lsn);
        let (d, r) = restore(&loc, RestoreTarget::Time(time), None).await;
        let rep = r.expect("restore to time");
        // Frames sharing that commit time come along; none later.
        let expected = points
            .iter()
            .filter(|(_, t)| *t <= time)
            .map(|(l, _)| *l)
            .max()
            .expect("a point");
        assert_eq!(rep.last_lsn, expected, "restore to time {time}");
        let at_time = Store::open(d.path().join("restored")).expect("open");
        let original = store.frame_at(expected).expect("frame").expect("held");
        assert_eq!(
            at_time
                .frame_at(expected)
                .expect("frame")
                .expect("held")
                .crc,
            original.crc
        );
        assert!(at_time.frame_at(expected + 1).expect("frame").is_none());
    }

    // Beyond the archive: refused, nothing made.
    let (d, r) = restore(&loc, RestoreTarget::Lsn(store.last_lsn() + 10), None).await;
    let e = r.expect_err("past the end");
    assert!(e.to_string().contains("holds lsn 1..="), "{e}");
    assert!(!d.path().join("restored").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieces_are_create_only() {
    let s3 = S3Server::start();
    s3.create_bucket("vigil");
    let loc = location(&s3, "s3://vigil/p");
    assert_eq!(
        loc.put_new("log/x", b"first".to_vec()).await.expect("put"),
        Created::Written
    );
    assert_eq!(
        loc.put_new("log/x", b"second".to_vec()).await.expect("put"),
        Created::Existed
    );
    assert_eq!(loc.get("log/x").await.expect("get"), b"first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_failures_are_clear_and_the_archive_catches_up() {
    let mut s3 = S3Server::start();
    s3.create_bucket("vigil");

    // A missing bucket and a wrong key: clear errors.
    let missing = location(&s3, "s3://no-such-bucket/a");
    let e = missing.list("log/").await.expect_err("no bucket");
    assert!(e.to_string().contains("no-such-bucket"), "{e}");
    let mut wrong = settings(&s3);
    wrong[1].1 = "not-the-secret".into();
    let pairs: Vec<(&str, &str)> = wrong.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bad_key = Location::parse_with("s3://vigil/a", &pairs).expect("location");
    let e = bad_key
        .put_new("log/y", b"z".to_vec())
        .await
        .expect_err("wrong secret");
    assert!(
        e.to_string().contains("uploading log/y at s3://vigil/a"),
        "{e}"
    );
    assert!(
        !e.to_string().contains("not-the-secret"),
        "a secret is never shown: {e}"
    );

    // Storage goes away while the leader writes: writes go on, the
    // archive shows the failure, then catches up.
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path(), None);
    write(&store, 0, 40, "lemke");
    let loc = location(&s3, "s3://vigil/region-a");
    let archiver = start(&store, &loc);
    archived(&archiver, store.last_lsn()).await;
    s3.kill();
    write(&store, 40, 60, "pagac");
    until_async(
        "the archive reports the failure",
        Duration::from_secs(60),
        || {
            let s = archiver.status();
            s.errors > 0 && s.last_error.is_some()
        },
    )
    .await;
    assert!(archiver.status().archived_lsn < store.last_lsn());
    s3.restart();
    archived(&archiver, store.last_lsn()).await;
    assert_eq!(archiver.status().last_error, None);
    archiver.stop().await;
    let (d, r) = restore(&loc, RestoreTarget::Latest, None).await;
    r.expect("restore");
    let restored = Store::open(d.path().join("restored")).expect("open");
    assert_eq!(frames(&restored), frames(&store));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_stores_archive_holds_no_plaintext_and_restores_under_its_key() {
    let s3 = S3Server::start();
    s3.create_bucket("vigil");
    let keys = tempfile::tempdir().expect("dir");
    let key = keys.path().join("a.key");
    KeyFile::create(&key, "region-a").expect("key");
    let kek: Arc<dyn Kek> = Arc::new(KeyFile::load(&key).expect("key"));
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path(), Some(kek.clone()));
    write(&store, 0, 80, "lemke");
    let loc = location(&s3, "s3://vigil/sealed");
    let archiver = start(&store, &loc);
    archived(&archiver, store.last_lsn()).await;
    archiver.stop().await;
    for (name, _) in loc.list("log/").await.expect("list") {
        let bytes = loc.get(&name).await.expect("get");
        assert!(
            !bytes.windows(5).any(|w| w == b"lemke"),
            "{name} shows a family name"
        );
    }
    let (_, r) = restore(&loc, RestoreTarget::Latest, None).await;
    let e = r.expect_err("no key");
    assert!(
        matches!(
            e,
            ArchiveError::Engine(vigil_engine::Error::KeyNeeded { .. })
        ),
        "{e}"
    );
    let (d, r) = restore(&loc, RestoreTarget::Latest, Some(kek.clone())).await;
    r.expect("restore under the key");
    let restored = Store::open_with(
        d.path().join("restored"),
        Options {
            kek: Some(kek),
            ..Options::default()
        },
    )
    .expect("open restored");
    assert_eq!(frames(&restored), frames(&store));
    match restored.get("Patient", "p1").expect("read") {
        Current::Live(v) => assert!(
            std::str::from_utf8(&v.body)
                .expect("utf8")
                .contains("lemke")
        ),
        other => panic!("p1 restored: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_is_a_location_too() {
    let target = tempfile::tempdir().expect("dir");
    let loc = Location::parse(&format!("file://{}", target.path().display())).expect("file url");
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path(), None);
    write(&store, 0, 30, "lemke");
    let archiver = start(&store, &loc);
    archived(&archiver, store.last_lsn()).await;
    archiver.stop().await;
    let (d, r) = restore(&loc, RestoreTarget::Latest, None).await;
    r.expect("restore");
    let restored = Store::open(d.path().join("restored")).expect("open");
    assert_eq!(frames(&restored), frames(&store));
    let e = Location::parse("ftp://x/y").expect_err("unknown scheme");
    assert!(e.to_string().contains("unknown scheme ftp"), "{e}");
    let e = Location::parse("s3://dr/y").expect_err("too short a bucket");
    assert!(e.to_string().contains("3-63 characters"), "{e}");
    let e = Location::parse("s3://Has_Caps/y").expect_err("not a bucket name");
    assert!(e.to_string().contains("lower-case"), "{e}");
}

/// A failover under the archive: the follower, promoted, continues the
/// archive after the last piece its own log holds; the deposed leader's
/// frames the cluster lost (its asynchronous window), archived before and
/// after the promotion, stay on a branch that no restore follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_follower_continues_the_archive_and_a_deposed_leaders_frames_stay_off_it() {
    let s3 = S3Server::start();
    s3.create_bucket("vigil");
    let loc = location(&s3, "s3://vigil/cluster");
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = open(da.path(), None);
    let b = Arc::new(Store::open_with(db.path(), small_store(256 * 1024, true)).expect("replica"));
    write(&a, 0, 60, "lemke");
    for f in frames(&a) {
        b.append_log(f).expect("replicate");
    }
    let agreed = a.last_lsn();
    let archiver = start(&a, &loc);
    archived(&archiver, agreed).await;
    archiver.stop().await;

    // A's last writes never reach B; A archives them (its archiver had
    // not been stopped yet when the region went).
    write(&a, 60, 20, "lost");
    let archiver = start(&a, &loc);
    archived(&archiver, a.last_lsn()).await;
    archiver.stop().await;

    // B is promoted and writes; its archiver continues after `agreed`.
    b.set_read_only(false);
    b.begin_epoch(2).expect("epoch 2");
    write(&b, 100, 40, "pagac");
    let archiver = start(&b, &loc);
    archived(&archiver, b.last_lsn()).await;
    archiver.stop().await;

    // The deposed leader, not yet told, archives even more of its own.
    write(&a, 80, 10, "lost");
    let archiver = start(&a, &loc);
    archived(&archiver, a.last_lsn()).await;
    archiver.stop().await;

    let names: Vec<PieceName> = loc
        .list("log/")
        .await
        .expect("list")
        .iter()
        .filter_map(|(n, _)| PieceName::parse(n))
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.first_lsn == agreed + 1 && n.last_epoch == 1),
        "the deposed leader's branch is in the archive: {names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.first_lsn == agreed + 1 && n.last_epoch == 2),
        "the new leader's branch starts at the fork: {names:?}"
    );
    let (d, r) = restore(&loc, RestoreTarget::Latest, None).await;
    assert_eq!(r.expect("restore").last_lsn, b.last_lsn());
    let restored = Store::open(d.path().join("restored")).expect("open");
    assert_eq!(
        frames(&restored),
        frames(&b),
        "the restore is the cluster's history"
    );
    assert_eq!(restored.epoch(), 2);
    drop(restored);
    let (_, r) = restore(&loc, RestoreTarget::Lsn(agreed), None).await;
    assert_eq!(r.expect("restore to the fork").last_lsn, agreed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_download_is_unpacked_and_checked_as_it_streams() {
    let s3 = S3Server::start();
    s3.create_bucket("vigil");
    let loc = location(&s3, "s3://vigil/zst");
    let dir = tempfile::tempdir().expect("dir");
    // Several MiB, so the body arrives in many chunks.
    let raw: Vec<u8> = (0..3_000_000u32)
        .flat_map(|i| (i.wrapping_mul(2_654_435_761) >> 7).to_le_bytes())
        .collect();
    let packed = zstd::bulk::compress(&raw, 1).expect("compress");
    let stored = packed.len() as u64;
    loc.put_new("a.zst", packed).await.expect("put");
    loc.put_new("plain", raw.clone()).await.expect("put");

    let out = dir.path().join("a");
    let u = loc
        .get_zstd("a.zst", Some(&out), stored, raw.len() as u64)
        .await
        .expect("unpacked");
    assert_eq!(u.stored, stored);
    assert_eq!(u.raw_bytes, raw.len() as u64);
    assert_eq!(u.raw_crc, crc32fast::hash(&raw));
    assert_eq!(std::fs::read(&out).expect("read"), raw);
    // Without a file: only counted and hashed.
    let again = loc
        .get_zstd("a.zst", None, stored, raw.len() as u64)
        .await
        .expect("hashed");
    assert_eq!(again, u);

    // What the caller did not expect is refused, naming the object.
    let e = loc
        .get_zstd("a.zst", None, stored, raw.len() as u64 - 1)
        .await
        .expect_err("bigger than expected");
    assert!(
        matches!(&e, ArchiveError::Name { name, reason } if name == "a.zst" && reason.starts_with("decompresses to more than")),
        "{e}"
    );
    let e = loc
        .get_zstd("a.zst", None, stored - 1, raw.len() as u64)
        .await
        .expect_err("stored bigger than expected");
    assert!(e.to_string().contains("more than"), "{e}");
    let e = loc
        .get_zstd("plain", None, 1 << 30, 1 << 30)
        .await
        .expect_err("not zstd");
    assert!(
        matches!(&e, ArchiveError::Name { name, reason } if name == "plain" && reason.contains("not one zstd frame")),
        "{e}"
    );
    // The file is new: one already there is never overwritten.
    let e = loc
        .get_zstd("a.zst", Some(&out), stored, raw.len() as u64)
        .await
        .expect_err("file exists");
    assert!(matches!(e, ArchiveError::Local { .. }), "{e}");
    let e = loc
        .get_zstd("missing.zst", None, stored, raw.len() as u64)
        .await
        .expect_err("missing object");
    assert!(e.to_string().contains("missing.zst"), "{e}");
}
