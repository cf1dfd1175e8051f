//! Guards the on-disk format against silent change (a dependency upgrade, a
//! refactor): today's bytes of a segment header, a frame with every record
//! kind and a whole small store's log are pinned in `tests/golden/`, and a
//! store made of the pinned log still opens and reads back.
//!
//! To re-pin after a deliberate format change (with a new format version
//! and a note in docs/format.md): `VIGIL_BLESS=1 cargo test --test golden_formats`.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use vigil_engine::log::frame::{FRAME_HEADER_BYTES, check_frame, decode_records, encode_frame};
use vigil_engine::log::record::{RecordRef, ResourceRef};
use vigil_engine::log::segment::SegmentHeader;
use vigil_engine::{
    Batch, Clock, Current, DictionaryPolicy, Op, OpKind, Options, Store, Watermark,
};

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn pin(name: &str, bytes: &[u8]) {
    let path = golden(name);
    if std::env::var_os("VIGIL_BLESS").is_some() {
        std::fs::write(&path, bytes).expect("write golden");
    }
    let want = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        bytes,
        want.as_slice(),
        "{name} differs from the pinned bytes"
    );
}

#[test]
fn segment_header_bytes_are_pinned() {
    let h = SegmentHeader {
        first_lsn: 1,
        prev_tail_crc: 0,
    };
    pin("segment_header_v1.bin", &h.encode());
    let h = SegmentHeader {
        first_lsn: 4242,
        prev_tail_crc: 0x1234_5678,
    };
    pin("segment_header_chained_v1.bin", &h.encode());
}

#[test]
fn a_frame_with_every_record_kind_is_pinned() {
    use vigil_engine::log::record::{BodyCodec, OpKind};
    let body = br#"{"resourceType":"Patient","id":"p1"}"#;
    let records = [
        RecordRef::EpochStart { epoch: 1 },
        RecordRef::Resource(ResourceRef {
            op: OpKind::Create,
            codec: BodyCodec::Raw,
            resource_type: "Patient",
            id: "p1",
            version: 1,
            dict_id: 0,
            raw_len: body.len() as u32,
            raw_crc: crc32fast_hash(body),
            sealed: false,
            stored: body,
        }),
        RecordRef::Resource(ResourceRef {
            op: OpKind::Delete,
            codec: BodyCodec::Raw,
            resource_type: "Patient",
            id: "p1",
            version: 2,
            dict_id: 0,
            raw_len: 0,
            raw_crc: 0,
            sealed: false,
            stored: b"",
        }),
        RecordRef::Checkpoint {
            index_lsn: 3,
            watermarks: vec![Watermark {
                name: "east".into(),
                durable_lsn: 2,
            }],
        },
        RecordRef::Dictionary {
            id: 1,
            sealed: false,
            bytes: b"dictionary bytes",
        },
    ];
    // v1: the kinds before rekey records; v2 adds a rekey (kind 5); v3
    // a sealed body (codec byte's high bit) and a sealed dictionary (kind 6).
    let mut with_rekey = records.to_vec();
    with_rekey.push(RecordRef::Rekey {
        resource_type: "Patient",
        id: "p1",
    });
    let sealed_body: Vec<u8> = (0u8..80).collect();
    let sealed_dict: Vec<u8> = (0u8..45).rev().collect();
    let mut with_sealed = with_rekey.clone();
    with_sealed.push(RecordRef::Resource(ResourceRef {
        op: OpKind::Update,
        codec: BodyCodec::ZstdDict,
        resource_type: "Patient",
        id: "p1",
        version: 3,
        dict_id: 2,
        raw_len: 400,
        raw_crc: 0xdead_beef,
        sealed: true,
        stored: &sealed_body,
    }));
    with_sealed.push(RecordRef::Dictionary {
        id: 2,
        sealed: true,
        bytes: &sealed_dict,
    });
    for (name, records) in [
        ("frame_all_kinds_v1.bin", records.to_vec()),
        ("frame_all_kinds_v2.bin", with_rekey),
        ("frame_all_kinds_v3.bin", with_sealed),
    ] {
        let mut payload = Vec::new();
        for r in &records {
            vigil_engine::log::record::encode(&mut payload, r);
        }
        let frame = encode_frame(1, records.len() as u32, 1, 1_700_000_000_000_000, &payload);
        pin(name, &frame);
        let pinned = std::fs::read(golden(name)).expect("read");
        let h = check_frame(&pinned).expect("pinned frame checks");
        let back = decode_records(&h, &pinned[FRAME_HEADER_BYTES..]).expect("decodes");
        assert_eq!(
            back.iter().map(|(_, r, _)| r.clone()).collect::<Vec<_>>(),
            records
        );
    }
}

fn crc32fast_hash(b: &[u8]) -> u32 {
    vigil_engine::log::record::body_crc(b)
}

struct Frozen;
impl Clock for Frozen {
    fn now_us(&self) -> u64 {
        1_700_000_000_000_000
    }
}

#[test]
fn a_whole_store_log_is_pinned_and_still_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        clock: Arc::new(Frozen),
        dictionary: DictionaryPolicy::Off,
        ..Options::default()
    };
    let data_len;
    {
        let store = Store::open_with(dir.path(), opts.clone()).expect("open");
        common::put(&store, "Patient", "p1", common::patient("p1", 1));
        common::put(&store, "Patient", "p1", common::patient("p1", 2));
        let mut b = Batch::new();
        b.push(Op::put(
            "Observation",
            "o1",
            common::patient("o1", 3).repeat(4),
        ));
        b.push(Op::delete("Patient", "p1"));
        store.commit(b).expect("batch");
        data_len = store.stats().expect("stats").log_bytes as usize;
        store.close().expect("close");
    }
    // The data; the rest of the file is preallocated zeros.
    let seg = dir.path().join("wal/00000000000000000001.seg");
    let bytes = std::fs::read(&seg).expect("segment");
    assert!(bytes[data_len..].iter().all(|b| *b == 0));
    pin("store_v1.seg", &bytes[..data_len]);
    // A store holding only the pinned log opens and reads back.
    let fresh = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(fresh.path().join("wal")).expect("mkdir");
    std::fs::copy(
        golden("store_v1.seg"),
        fresh.path().join("wal/00000000000000000001.seg"),
    )
    .expect("copy");
    let store = Store::open_with(fresh.path(), opts).expect("pinned store opens");
    assert!(matches!(
        store.get("Patient", "p1").expect("get"),
        Current::Deleted { version: 3, .. }
    ));
    match store.get("Observation", "o1").expect("get") {
        Current::Live(v) => {
            assert_eq!(v.body, common::patient("o1", 3).repeat(4));
            assert_eq!(v.op, OpKind::Create);
        }
        other => panic!("o1: {other:?}"),
    }
    store.verify().expect("verify");
}

#[test]
fn a_wrapped_data_key_is_pinned() {
    use vigil_engine::crypt::WrappedKey;
    let w = WrappedKey {
        kek: "region-eu".into(),
        version: 3,
        sealed: (0u8..60).collect(),
    };
    pin("wrapped_key_v1.bin", &w.encode());
    let pinned = std::fs::read(golden("wrapped_key_v1.bin")).expect("golden");
    assert_eq!(WrappedKey::decode(&pinned), Ok(w));
}

#[test]
fn a_value_sealed_in_the_pinned_format_still_opens() {
    use vigil_engine::crypt::DataKey;
    let key = DataKey::from_bytes(std::array::from_fn(|i| i as u8));
    let (aad, plain) = (b"segment 1", br#"{"resourceType":"Patient","id":"p1"}"#);
    // Sealing draws a fresh nonce: only a blessing writes a new value;
    // the pinned one (format byte, nonce, AES-256-GCM ciphertext and tag)
    // must open to the same plaintext.
    let path = golden("sealed_v1.bin");
    if std::env::var_os("VIGIL_BLESS").is_some() {
        std::fs::write(&path, key.seal(aad, plain).expect("seal")).expect("bless");
    }
    let pinned = std::fs::read(&path).expect("golden");
    assert_eq!(pinned[0], 1, "format byte");
    assert_eq!(key.open(aad, &pinned, "pinned").expect("opens"), plain);
}

/// The key-encryption key the pinned encrypted store was made under: a
/// key file with a fixed key (mode 0600, as key files must be).
fn pinned_kek(dir: &std::path::Path) -> Arc<dyn vigil_engine::crypt::Kek> {
    let path = dir.join("pinned.key");
    let hex: String = (0u8..32).map(|i| format!("{:02x}", i * 3)).collect();
    std::fs::write(&path, format!("vigil-kek 1\nname pinned\nkey 1 {hex}\n")).expect("write");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    Arc::new(vigil_engine::crypt::keyfile::KeyFile::load(&path).expect("the pinned key file loads"))
}

#[test]
fn an_encrypted_store_in_the_pinned_formats_still_opens() {
    use vigil_engine::crypt::datakeys::{decode_file, encode_file};
    // Sealing draws fresh nonces and keys: only a blessing writes a new
    // store; the pinned one (its data-keys file and its log) must decode,
    // re-encode byte for byte (the data-keys file) and open to the same
    // bodies under the pinned KEK.
    let keys = tempfile::tempdir().expect("tempdir");
    let kek = pinned_kek(keys.path());
    let opts = Options {
        clock: Arc::new(Frozen),
        dictionary: DictionaryPolicy::Off,
        kek: Some(kek.clone()),
        ..Options::default()
    };
    if std::env::var_os("VIGIL_BLESS").is_some() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_with(dir.path(), opts.clone()).expect("open");
        common::put(&store, "Patient", "p1", common::patient("p1", 1));
        common::put(&store, "Basic", "b1", b"{}".to_vec());
        let data_len = store.stats().expect("stats").log_bytes as usize;
        store.close().expect("close");
        let seg = std::fs::read(dir.path().join("wal/00000000000000000001.seg")).expect("seg");
        std::fs::write(golden("store_sealed_v1.seg"), &seg[..data_len]).expect("bless");
        std::fs::copy(dir.path().join("data-keys"), golden("data_keys_v1.bin")).expect("bless");
    }
    let pinned = std::fs::read(golden("data_keys_v1.bin")).expect("golden");
    let file = decode_file(&pinned).expect("the pinned data-keys file decodes");
    assert_eq!(file.valid_len, pinned.len() as u64);
    assert_eq!(
        encode_file(&file.entries),
        pinned,
        "re-encodes byte for byte"
    );
    assert!(file.entries.iter().all(|e| e.wrapped.kek == "pinned"));

    let fresh = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(fresh.path().join("wal")).expect("mkdir");
    std::fs::copy(golden("data_keys_v1.bin"), fresh.path().join("data-keys")).expect("copy");
    std::fs::copy(
        golden("store_sealed_v1.seg"),
        fresh.path().join("wal/00000000000000000001.seg"),
    )
    .expect("copy");
    let store = Store::open_with(fresh.path(), opts).expect("pinned encrypted store opens");
    assert_eq!(
        common::body_of(&store, "Patient", "p1"),
        Some(common::patient("p1", 1))
    );
    assert_eq!(common::body_of(&store, "Basic", "b1"), Some(b"{}".to_vec()));
    store.verify().expect("verify");
}
