//! Encryption at rest in the log: with a key-encryption key, nothing of a
//! written resource is readable in the store's files; the store opens only
//! with its key (and changes nothing when it cannot); a torn tail is cut
//! as on a plain store; the index rebuilds from the sealed log; data keys
//! follow segments and re-wrap under a new KEK version without touching
//! the data.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use vigil_engine::crypt::Kek;
use vigil_engine::crypt::keyfile::KeyFile;
use vigil_engine::{DictionaryPolicy, Error, Options, Store};

/// The strings planted in every resource, none of which may appear in an
/// encrypted store's files.
const NEEDLES: [&str; 3] = ["Qwzxfamily", "MRN-SECRET", "\"resourceType\""];
/// The zstd frame magic: every compressed body starts with it unsealed.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

fn body(i: u32) -> Vec<u8> {
    format!(
        r#"{{"resourceType":"Patient","id":"p{i}","identifier":[{{"system":"urn:mrn","value":"MRN-SECRET-{i}"}}],"name":[{{"family":"Qwzxfamily{i}","given":["G{}"]}}],"birthDate":"19{:02}-02-03"}}"#,
        i * 7,
        i % 100
    )
    .into_bytes()
}

/// Shorter than the 64 bytes below which bodies are stored uncompressed.
fn small(i: u32) -> Vec<u8> {
    format!(r#"{{"resourceType":"Basic","id":"b{i}","n":"MRN-SECRET-{i}"}}"#).into_bytes()
}

fn kek_at(dir: &Path, name: &str) -> Arc<dyn Kek> {
    let path = dir.join(format!("{name}.key"));
    if !path.exists() {
        KeyFile::create(&path, name).expect("key file");
    }
    Arc::new(KeyFile::load(&path).expect("load key file"))
}

fn opts(kek: Option<Arc<dyn Kek>>) -> Options {
    Options {
        kek,
        dictionary: DictionaryPolicy::Auto {
            train_after_bytes: 32 * 1024,
            dictionary_bytes: 4 * 1024,
        },
        ..Options::default()
    }
}

/// Writes `n` Patients and small Basics, waiting for a trained dictionary
/// half way so bodies of all three codecs are stored.
fn fill(store: &Store, n: u32) {
    for i in 0..n {
        put(store, "Patient", &format!("p{i}"), body(i));
        put(store, "Basic", &format!("b{i}"), small(i));
        if i == n / 2 {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let mut k = 0;
            while store.stats().expect("stats").dictionaries == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no dictionary trained"
                );
                k += 1;
                put(store, "Patient", &format!("filler{k}"), body(n + k));
                if k > 400 {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        }
    }
}

fn check(store: &Store, n: u32) {
    for i in 0..n {
        assert_eq!(body_of(store, "Patient", &format!("p{i}")), Some(body(i)));
        assert_eq!(body_of(store, "Basic", &format!("b{i}")), Some(small(i)));
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Every (file, needle) where the needle's bytes appear.
fn plaintext_in(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    for f in files_under(dir) {
        let bytes = std::fs::read(&f).expect("read");
        for n in NEEDLES {
            if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                found.push((f.clone(), n.to_owned()));
            }
        }
        let is_segment = f.extension().is_some_and(|x| x == "seg");
        if is_segment && bytes.windows(4).any(|w| w == ZSTD_MAGIC) {
            found.push((f.clone(), "a zstd frame".to_owned()));
        }
    }
    found
}

#[test]
fn nothing_written_is_readable_in_an_encrypted_stores_files() {
    let keys = tempfile::tempdir().expect("tempdir");
    let plain = tempfile::tempdir().expect("tempdir");
    let sealed = tempfile::tempdir().expect("tempdir");
    for (dir, kek) in [
        (plain.path(), None),
        (sealed.path(), Some(kek_at(keys.path(), "eu"))),
    ] {
        let store = Store::open_with(dir, opts(kek)).expect("open");
        fill(&store, 300);
        assert!(store.stats().expect("stats").dictionaries >= 1);
        check(&store, 300);
        store.close().expect("close");
    }
    // The check finds plaintext where there is some.
    let seen = plaintext_in(plain.path());
    for what in ["MRN-SECRET", "a zstd frame"] {
        assert!(
            seen.iter().any(|(_, n)| n == what),
            "the unencrypted store shows {what}: {seen:?}"
        );
    }
    let leaks = plaintext_in(sealed.path());
    assert!(
        leaks.is_empty(),
        "plaintext in an encrypted store: {leaks:?}"
    );
    assert!(sealed.path().join("data-keys").exists());

    let store =
        Store::open_with(sealed.path(), opts(Some(kek_at(keys.path(), "eu")))).expect("reopen");
    check(&store, 300);
    let report = store.verify().expect("verify");
    assert!(report.bodies >= 600, "{report:?}");
}

#[test]
fn an_encrypted_store_opens_only_with_its_key_and_a_refusal_changes_nothing() {
    let keys = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(dir.path(), opts(Some(kek_at(keys.path(), "eu")))).expect("open");
    fill(&store, 40);
    store.close().expect("close");
    let before: Vec<(PathBuf, Vec<u8>)> = files_under(dir.path())
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).expect("read");
            (p, b)
        })
        .collect();

    match Store::open_with(dir.path(), opts(None)) {
        Err(Error::KeyNeeded { dir: d }) => assert_eq!(d, dir.path()),
        other => panic!("opened without its key: {:?}", other.map(|_| ())),
    }
    // Another key file of the same name: it cannot unwrap.
    let other = tempfile::tempdir().expect("tempdir");
    match Store::open_with(dir.path(), opts(Some(kek_at(other.path(), "eu")))) {
        Err(e @ Error::Crypt { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("key-encryption key eu"), "{msg}");
        }
        other => panic!("opened with another key: {:?}", other.map(|_| ())),
    }
    // A KEK of another name.
    match Store::open_with(dir.path(), opts(Some(kek_at(other.path(), "us")))) {
        Err(e @ Error::Crypt { .. }) => assert!(e.to_string().contains("us"), "{e}"),
        other => panic!("opened with another KEK: {:?}", other.map(|_| ())),
    }
    for (p, b) in &before {
        assert_eq!(
            &std::fs::read(p).expect("read"),
            b,
            "{} changed",
            p.display()
        );
    }
    let store =
        Store::open_with(dir.path(), opts(Some(kek_at(keys.path(), "eu")))).expect("reopen");
    check(&store, 40);
}

#[test]
fn the_index_rebuilds_from_a_sealed_log() {
    let keys = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = kek_at(keys.path(), "eu");
    let store = Store::open_with(dir.path(), opts(Some(kek.clone()))).expect("open");
    fill(&store, 120);
    store.close().expect("close");
    std::fs::remove_file(dir.path().join("index.redb")).expect("remove index");
    let store = Store::open_with(dir.path(), opts(Some(kek))).expect("reopen");
    assert!(store.open_report().index_rebuilt);
    check(&store, 120);
}

#[test]
fn a_plain_store_given_a_key_seals_what_it_writes_from_then_on() {
    let keys = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(dir.path(), opts(None)).expect("open");
    put(&store, "Basic", "old", small(1));
    store.close().expect("close");
    let kek = kek_at(keys.path(), "eu");
    let store = Store::open_with(dir.path(), opts(Some(kek.clone()))).expect("open with a key");
    put(&store, "Basic", "new", small(2));
    assert_eq!(body_of(&store, "Basic", "old"), Some(small(1)));
    assert_eq!(body_of(&store, "Basic", "new"), Some(small(2)));
    store.close().expect("close");
    let wal: Vec<u8> = segments(dir.path())
        .iter()
        .flat_map(|p| std::fs::read(p).expect("read"))
        .collect();
    let has = |n: &[u8]| wal.windows(n.len()).any(|w| w == n);
    assert!(has(b"MRN-SECRET-1"), "the old body stays as written");
    assert!(!has(b"MRN-SECRET-2"), "the new one is sealed");
    // From now on the store needs its key.
    assert!(matches!(
        Store::open_with(dir.path(), opts(None)),
        Err(Error::KeyNeeded { .. })
    ));
}

#[test]
fn a_torn_tail_of_an_encrypted_store_is_cut_at_every_offset() {
    let keys = tempfile::tempdir().expect("tempdir");
    let base = tempfile::tempdir().expect("tempdir");
    let kek = kek_at(keys.path(), "eu");
    let store = Store::open_with(base.path(), opts(Some(kek.clone()))).expect("open");
    for i in 0..20u32 {
        put(&store, "Patient", &format!("p{i}"), body(i));
    }
    let before = store.stats().expect("stats").log_bytes;
    put(&store, "Patient", "last", body(99));
    let after = store.stats().expect("stats").log_bytes;
    store.close().expect("close");
    assert_eq!(segments(base.path()).len(), 1);
    for cut in before..after {
        let work = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(work.path().join("wal")).expect("mkdir");
        for f in files_under(base.path()) {
            let rel = f.strip_prefix(base.path()).expect("under base");
            if rel.starts_with("index.redb.keys.d") {
                continue;
            }
            std::fs::copy(&f, work.path().join(rel)).expect("copy");
        }
        let seg = segments(work.path()).pop().expect("segment");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .and_then(|f| f.set_len(cut))
            .expect("truncate");
        let store = Store::open_with(work.path(), opts(Some(kek.clone())))
            .unwrap_or_else(|e| panic!("open after cut at {cut}: {e}"));
        assert_eq!(
            store.open_report().torn_bytes_cut == 0,
            cut == before,
            "cut at {cut}"
        );
        assert_eq!(body_of(&store, "Patient", "last"), None, "cut at {cut}");
        for i in 0..20u32 {
            assert_eq!(body_of(&store, "Patient", &format!("p{i}")), Some(body(i)));
        }
        put(&store, "Patient", "after", body(5));
        assert_eq!(body_of(&store, "Patient", "after"), Some(body(5)));
    }
}

#[test]
fn data_keys_follow_segments_and_rewrap_under_a_new_kek_version_with_writes_running() {
    let keys = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let key_path = keys.path().join("eu.key");
    KeyFile::create(&key_path, "eu").expect("key file");
    let kek: Arc<dyn Kek> = Arc::new(KeyFile::load(&key_path).expect("load"));
    let store = Arc::new(
        Store::open_with(
            dir.path(),
            Options {
                segment_bytes: vigil_engine::limits::SEGMENT_BYTES_MIN,
                ..opts(Some(kek))
            },
        )
        .expect("open"),
    );
    fill(&store, 200);
    let segs = segments(dir.path()).len();
    let status = store.data_keys().expect("encrypted");
    assert!(segs >= 3, "{segs} segments");
    assert!(
        status.len() >= segs,
        "{} keys for {segs} segments (one at open, one per new segment)",
        status.len()
    );
    assert_eq!(status.iter().filter(|k| k.current).count(), 1);
    assert!(status.iter().all(|k| k.kek == "eu" && k.kek_version == 1));

    // A new version of the KEK; the keys move to it while a writer runs.
    let mut file = KeyFile::load(&key_path).expect("load");
    assert_eq!(file.rotate().expect("rotate"), 2);
    let rotated: Arc<dyn Kek> = Arc::new(KeyFile::load(&key_path).expect("load"));
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 1000..1200u32 {
                put(&store, "Patient", &format!("p{i}"), body(i));
            }
        })
    };
    let n = store.rewrap_data_keys(rotated.clone()).expect("rewrap");
    writer.join().expect("writer");
    assert!(n >= segs, "{n} re-wrapped");
    let status = store.data_keys().expect("encrypted");
    assert!(
        status.iter().all(|k| k.kek_version == 2),
        "every key under version 2: {status:?}"
    );
    assert_eq!(store.rewrap_data_keys(rotated).expect("again"), 0);
    drop(Arc::into_inner(store).expect("one owner").close());

    // Version 1 is still in the file, so either loads; a KEK holding only
    // version 1 (the file as it was) cannot open the re-wrapped keys.
    let v1_only = keys.path().join("v1.key");
    let text = std::fs::read_to_string(&key_path).expect("read");
    let first_version: Vec<&str> = text.lines().filter(|l| !l.starts_with("key 2 ")).collect();
    std::fs::write(&v1_only, first_version.join("\n") + "\n").expect("write");
    std::fs::set_permissions(
        &v1_only,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    let old = KeyFile::load(&v1_only).expect("a key file with version 1 only");
    assert!(matches!(
        Store::open_with(dir.path(), opts(Some(Arc::new(old)))),
        Err(Error::Crypt { .. })
    ));
    let store = Store::open_with(
        dir.path(),
        opts(Some(Arc::new(KeyFile::load(&key_path).expect("load")))),
    )
    .expect("reopen");
    check(&store, 200);
    for i in 1000..1200u32 {
        assert_eq!(body_of(&store, "Patient", &format!("p{i}")), Some(body(i)));
    }
}

#[test]
fn a_backup_of_an_encrypted_store_is_encrypted_and_restores_with_its_key() {
    let keys = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = kek_at(keys.path(), "eu");
    let store = Store::open_with(dir.path(), opts(Some(kek.clone()))).expect("open");
    fill(&store, 100);
    let backup = tempfile::tempdir().expect("tempdir");
    // Taken while the store runs.
    vigil_engine::backup(dir.path(), backup.path(), &mut |_| {}).expect("backup");
    let verified = vigil_engine::verify_backup(backup.path(), &mut |_| {}).expect("verify");
    assert!(verified.data_keys >= 1, "{verified:?}");
    let leaks = plaintext_in(backup.path());
    assert!(leaks.is_empty(), "plaintext in the backup: {leaks:?}");
    store.close().expect("close");

    let restored = tempfile::tempdir().expect("tempdir");
    let to = restored.path().join("store");
    vigil_engine::restore(
        backup.path(),
        &to,
        vigil_engine::RestoreTarget::Latest,
        &mut |_| {},
    )
    .expect("restore");
    assert!(matches!(
        Store::open_with(&to, opts(None)),
        Err(Error::KeyNeeded { .. })
    ));
    let store = Store::open_with(&to, opts(Some(kek))).expect("open the restored store");
    check(&store, 100);
}

#[test]
fn a_replica_holds_the_leaders_sealed_log_byte_for_byte_under_its_own_kek() {
    let keys = tempfile::tempdir().expect("tempdir");
    let (ldir, rdir, plain) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let leader = Store::open_with(
        ldir.path(),
        Options {
            segment_bytes: vigil_engine::limits::SEGMENT_BYTES_MIN,
            ..opts(Some(kek_at(keys.path(), "eu")))
        },
    )
    .expect("leader");
    fill(&leader, 150);
    let replica = Store::open_with(
        rdir.path(),
        Options {
            replica: true,
            ..opts(Some(kek_at(keys.path(), "us")))
        },
    )
    .expect("replica");
    let unencrypted = Store::open_with(
        plain.path(),
        Options {
            replica: true,
            ..opts(None)
        },
    )
    .expect("plain replica");
    let mut shipped_keys = 0;
    while let Some(c) = leader
        .read_log(replica.log_end().lsn + 1, 256 * 1024)
        .expect("read log")
    {
        if !c.data_keys.is_empty() {
            assert!(matches!(
                unencrypted.import_data_keys(&c.data_keys),
                Err(Error::KeyNeeded { .. })
            ));
        }
        shipped_keys += c.data_keys.len();
        replica.import_data_keys(&c.data_keys).expect("import");
        replica.append_log(c.bytes).expect("append");
    }
    settle(&replica);
    assert!(shipped_keys >= 2, "{shipped_keys} keys shipped");
    check(&replica, 150);
    assert_eq!(
        vigil_testkit::frames(&leader),
        vigil_testkit::frames(&replica),
        "the follower's log is the leader's, byte for byte"
    );
    let status = replica.data_keys().expect("encrypted");
    assert!(status.iter().all(|k| k.kek == "us"), "{status:?}");
    let leaks = plaintext_in(rdir.path());
    assert!(leaks.is_empty(), "plaintext on the replica: {leaks:?}");

    // Promoted, it seals under a key of its own.
    replica.set_read_only(false);
    replica.begin_epoch(2).expect("epoch 2");
    put(&replica, "Patient", "after", body(7));
    let mine = replica.data_keys().expect("encrypted");
    let current = mine.iter().find(|k| k.current).expect("a current key");
    assert!(
        leader
            .data_keys()
            .expect("encrypted")
            .iter()
            .all(|k| k.id != current.id),
        "a promoted follower does not seal under its old leader's key"
    );
    assert_eq!(body_of(&replica, "Patient", "after"), Some(body(7)));
}

#[test]
fn search_keys_of_an_encrypted_store_are_sealed_on_disk_and_still_found() {
    let keys = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = kek_at(keys.path(), "eu");
    let with_keys = || Options {
        extractor: Arc::new(Family),
        // Small runs: key files are written and merged many times.
        key_buffer_entries: 16,
        ..opts(Some(kek.clone()))
    };
    let store = Store::open_with(dir.path(), with_keys()).expect("open");
    fill(&store, 300);
    let lookup = |store: &Store, i: u32| {
        store
            .lookup(format!("family=Qwzxfamily{i}").as_bytes(), 10)
            .expect("lookup")
            .into_iter()
            .map(|(_, id)| id)
            .collect::<Vec<_>>()
    };
    assert_eq!(lookup(&store, 17), ["p17"]);
    store.close().expect("close");
    let key_files = files_under(&dir.path().join("index.redb.keys.d"));
    assert!(
        key_files
            .iter()
            .any(|f| f.extension().is_some_and(|x| x == "run")),
        "search keys were written to run files: {key_files:?}"
    );
    let leaks = plaintext_in(dir.path());
    assert!(
        leaks.is_empty(),
        "plaintext in an encrypted store: {leaks:?}"
    );

    let store = Store::open_with(dir.path(), with_keys()).expect("reopen");
    for i in [0, 17, 299] {
        assert_eq!(lookup(&store, i), [format!("p{i}")]);
    }
    let all = store
        .lookup_range(b"family=", b"family>", Some("Patient"), 10_000)
        .expect("range");
    assert!(all.len() >= 300, "{} keys in range", all.len());
    assert!(all.windows(2).all(|w| w[0] <= w[1]), "in key order");
    store.close().expect("close");
    // Without keys the sealed run files are not read (the store is refused first).
    assert!(matches!(
        Store::open_with(
            dir.path(),
            Options {
                extractor: Arc::new(Family),
                ..opts(None)
            }
        ),
        Err(Error::KeyNeeded { .. })
    ));
}

#[test]
fn what_a_rejoin_cuts_stays_sealed_in_quarantine_and_opens_with_the_key() {
    use vigil_engine::crypt::datakeys::{DataKeys, QUARANTINE_DOMAIN};
    use vigil_engine::{LogPosition, limits::SEGMENT_BYTES_MIN};
    let keys = tempfile::tempdir().expect("tempdir");
    let (ad, bd) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (ka, kb) = (kek_at(keys.path(), "eu"), kek_at(keys.path(), "us"));
    let node = |kek: &Arc<dyn Kek>, replica: bool| Options {
        segment_bytes: SEGMENT_BYTES_MIN,
        replica,
        ..opts(Some(kek.clone()))
    };
    let a = Store::open_with(ad.path(), node(&ka, false)).expect("a");
    let b = Store::open_with(bd.path(), node(&kb, true)).expect("b");
    for i in 0..20 {
        put(&a, "Patient", &format!("p{i}"), body(i));
    }
    while let Some(c) = a.read_log(b.log_end().lsn + 1, 1 << 20).expect("read") {
        b.import_data_keys(&c.data_keys).expect("keys");
        b.append_log(c.bytes).expect("append");
    }
    settle(&b);
    // a writes on alone; b takes over.
    for i in 100..105 {
        put(&a, "Patient", &format!("lost{i}"), body(i));
    }
    b.set_read_only(false);
    b.begin_epoch(2).expect("epoch 2");
    put(&b, "Patient", "b1", body(200));
    let end = a.log_end();
    let LogPosition::Diverged { agree_until } = b
        .position_of(end.epoch, end.lsn, end.crc)
        .expect("position")
    else {
        panic!("diverged");
    };
    a.close().expect("close a");
    let cut = Store::cut_log(ad.path(), node(&ka, false), agree_until)
        .expect("cut")
        .expect("something was cut");
    assert_eq!(cut.versions, 5);
    assert!(!cut.quarantine.join("versions.ndjson").exists());
    let sealed = std::fs::read(cut.quarantine.join("versions.ndjson.sealed")).expect("sealed");
    let leaks = plaintext_in(ad.path());
    assert!(leaks.is_empty(), "plaintext after the cut: {leaks:?}");
    // Read beside the (re)opened store, with its key, changing nothing.
    let a = Store::open_with(ad.path(), node(&ka, true)).expect("reopen a");
    let before = std::fs::read(ad.path().join("data-keys")).expect("data-keys");
    let ro = DataKeys::open_read_only(ad.path(), ka.clone()).expect("read-only keys");
    let text = ro
        .open_value(QUARANTINE_DOMAIN, cut.first_lsn, &sealed)
        .expect("opens");
    assert_eq!(
        std::fs::read(ad.path().join("data-keys")).expect("data-keys"),
        before
    );
    let text = String::from_utf8(text).expect("utf-8");
    assert_eq!(text.lines().count(), 5);
    assert!(
        text.contains("MRN-SECRET-100"),
        "the lost body, readable with the key"
    );
    assert!(
        DataKeys::open_read_only(ad.path(), kb.clone()).is_err(),
        "another region's key opens nothing"
    );
    drop(a);
}
