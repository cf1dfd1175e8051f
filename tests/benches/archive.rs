//! The log archive against a real S3 server on loopback (SeaweedFS, as
//! the tests run it): how fast a leader's log is uploaded (MB of log per
//! second, from a standing start with the whole log behind) and how fast a
//! store is restored from it until it serves reads, with the server's
//! search keys: from the archive alone (indexed as appended), then, in
//! the same round, beside a base backup taken after the upload (its index
//! laid beside the log, the catch-up replayed on open).
//!
//! `cargo bench -p vigil-tests --bench archive` (SeaweedFS from
//! `scripts/test`'s install, or `VIGIL_WEED`). `VIGIL_BENCH_MB` sets the
//! store's size (default 256 MB of raw JSON); three rounds, each into its
//! own prefix.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_engine::{Options, RestoreTarget, Store};
use vigil_net::archive::{
    ArchiveConfig, Archiver, Location, backup_to_location, restore_from_archive,
};

/// The options a server opens its store with: its search keys.
fn options() -> Options {
    Options {
        extractor: Arc::new(vigil_fhir::search::keys::SearchKeys::default()),
        ..Options::default()
    }
}

/// Restores `loc` into `to` and opens it with the server's options:
/// seconds until the first read is served, and whether a base backup's
/// index was used.
async fn restore_until_served(
    loc: &Location,
    to: &std::path::Path,
    last: u64,
) -> (f64, bool, String) {
    let started = Instant::now();
    let r = restore_from_archive(loc, to, options(), RestoreTarget::Latest, &mut |_| {})
        .await
        .expect("restore");
    let dir = to.to_owned();
    tokio::task::spawn_blocking(move || {
        let s = Store::open_with(&dir, options()).expect("open restored");
        assert_eq!(s.last_lsn(), last);
        assert!(!s.open_report().index_rebuilt, "no rebuild on open");
        s.get("Patient", "p-1").expect("first read");
    })
    .await
    .expect("open");
    let parts = format!(
        "log written at {:.2} s, index at {:.2} s",
        r.log_seconds, r.index_seconds
    );
    (
        started.elapsed().as_secs_f64(),
        r.base_backup.is_some(),
        parts,
    )
}
use vigil_testkit::s3::{ACCESS_KEY, S3Server, SECRET_KEY};

fn main() {
    let mb: u64 = std::env::var("VIGIL_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(Store::open_with(dir.path().join("leader"), options()).expect("store"));
    let raw = vigil_tests::fill_with_patients(&store, mb, 7);
    let log = store.stats().expect("stats").log_bytes;
    let versions = store.stats().expect("stats").versions;
    let s3 = S3Server::start();
    s3.create_bucket("vigil-bench");
    let endpoint = s3.endpoint();
    let settings = [
        ("aws_access_key_id", ACCESS_KEY),
        ("aws_secret_access_key", SECRET_KEY),
        ("aws_region", "us-east-1"),
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
    ];
    println!(
        "# archive to SeaweedFS on loopback: {:.1} MB raw JSON, {versions} versions, log {:.1} MB",
        raw as f64 / 1e6,
        log as f64 / 1e6
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for round in 1..=3 {
            let loc = Location::parse_with(&format!("s3://vigil-bench/round-{round}"), &settings)
                .expect("location");
            let started = Instant::now();
            let a = Archiver::start(store.clone(), loc.clone(), ArchiveConfig {
                interval: Duration::from_millis(100),
                ..ArchiveConfig::default()
            });
            while a.status().archived_lsn < store.last_lsn() {
                assert!(
                    started.elapsed() < Duration::from_secs(600),
                    "archive stalled: {:?}",
                    a.status()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let up = started.elapsed().as_secs_f64();
            let pieces = a.status().pieces;
            a.stop().await;
            let last = store.last_lsn();
            let to = dir.path().join(format!("restored-{round}"));
            let (plain, used, _) = restore_until_served(&loc, &to, last).await;
            assert!(!used);
            std::fs::remove_dir_all(&to).expect("clean");
            let started = Instant::now();
            let b = backup_to_location(store.clone(), &loc, &mut |_| {})
                .await
                .expect("base backup");
            let backup_s = started.elapsed().as_secs_f64();
            let (based, used, parts) = restore_until_served(&loc, &to, last).await;
            assert!(used, "the base backup is used");
            std::fs::remove_dir_all(&to).expect("clean");
            println!(
                "round {round}: archived {pieces} pieces in {up:.2} s ({:.1} MB/s of log); served after a restore from the archive alone in {plain:.2} s ({:.1} MB/s of log, {:.0} versions/s); base backup ({:.1} MB of index) in {backup_s:.2} s; served after a restore beside it in {based:.2} s ({:.1} MB/s of log; {parts})",
                log as f64 / 1e6 / up,
                log as f64 / 1e6 / plain,
                versions as f64 / plain,
                b.index_bytes as f64 / 1e6,
                log as f64 / 1e6 / based,
            );
        }
        lag_under_load(dir.path(), &settings).await;
    });
}

/// Archive lag while a writer commits as fast as it can for 20 s, with a
/// 1 s interval: the age of the oldest durable write not yet archived,
/// sampled every 100 ms (target: at most the interval plus 5 s).
async fn lag_under_load(dir: &std::path::Path, settings: &[(&str, &str)]) {
    let interval = Duration::from_secs(1);
    let store = Arc::new(Store::open(dir.join("loaded")).expect("store"));
    let loc = Location::parse_with("s3://vigil-bench/under-load", settings).expect("location");
    let a = Archiver::start(
        store.clone(),
        loc,
        ArchiveConfig {
            interval,
            ..ArchiveConfig::default()
        },
    );
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let (mut raw, mut seed) = (0u64, 100u64);
            while t0.elapsed() < Duration::from_secs(20) {
                // A new seed each time: new patients, not repeats of the
                // same bodies (which the store does not write again).
                raw += vigil_tests::fill_with_patients(&store, 1, seed);
                seed += 1;
            }
            raw
        })
    };
    let (mut worst, mut sum, mut samples) = (0f64, 0f64, 0u64);
    while !writer.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let archived = a.status().archived_lsn;
        let oldest = store
            .frame_at(archived + 1)
            .expect("frame")
            .map(|h| h.timestamp_us);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_micros() as u64;
        let age = oldest.map_or(0.0, |t| now.saturating_sub(t) as f64 / 1e6);
        worst = worst.max(age);
        sum += age;
        samples += 1;
    }
    let raw = writer.join().expect("writer");
    let log = store.stats().expect("stats").log_bytes;
    let status = a.status();
    a.stop().await;
    println!(
        "under load (interval {} s): ingested {:.1} MB raw JSON ({:.1} MB of log) in 20 s; archive lag (age of the oldest unarchived write) mean {:.2} s, max {worst:.2} s over {samples} samples; {} pieces, {} errors",
        interval.as_secs(),
        raw as f64 / 1e6,
        log as f64 / 1e6,
        sum / samples.max(1) as f64,
        status.pieces,
        status.errors
    );
}
