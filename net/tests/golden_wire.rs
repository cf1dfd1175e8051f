//! Guards the replication wire format against silent change: one message
//! of every kind is pinned byte for byte in `tests/golden/messages.bin`,
//! and the pinned bytes decode back to the same messages. Two builds that
//! disagree here cannot replicate to each other.
//!
//! To re-pin after a deliberate change (with a new PROTOCOL_VERSION and a
//! note in docs/format.md): `VIGIL_BLESS=1 cargo test --test golden_wire`.

use std::path::PathBuf;

use vigil_net::proto::wire::{Message, PROTOCOL_VERSION, RefuseCode};

fn all_kinds() -> Vec<Message> {
    vec![
        Message::Hello {
            protocol: PROTOCOL_VERSION,
            cluster: "prod".into(),
            node: "eu-west".into(),
            last_epoch: 3,
            last_lsn: 1_000_001,
            last_crc: 0xdead_beef,
        },
        Message::Welcome {
            leader: "eu-north".into(),
            epoch: 3,
            last_lsn: 1_000_500,
            start_lsn: 1_000_002,
            http_url: "https://fhir.example.org".into(),
        },
        Message::Refused {
            code: RefuseCode::Diverged,
            lsn: 999_999,
            reason: "diverged".into(),
        },
        Message::Frames {
            first_lsn: 1_000_002,
            end_lsn: 1_000_010,
            leader_lsn: 1_000_500,
            bytes: (0u8..64).collect(),
        },
        Message::Heartbeat {
            epoch: 3,
            last_lsn: 1_000_500,
            last_commit_us: 1_780_000_000_000_000,
        },
        Message::Ack {
            received: 1_000_010,
            durable: 1_000_009,
            applied: 1_000_008,
        },
        Message::Refetch {
            from_lsn: 1_000_002,
            reason: "checksum".into(),
        },
        Message::LeaseAsk {
            candidate: "eu-west".into(),
            epoch: 3,
            round: 17,
        },
        Message::LeaseAnswer {
            voter: "witness".into(),
            round: 17,
            granted: false,
            epoch: 3,
            holder: "eu-north".into(),
        },
        Message::EpochCas {
            candidate: "eu-west".into(),
            expected: 3,
        },
        Message::EpochCasAnswer { ok: true, epoch: 4 },
        Message::Eligibility {
            leader: "eu-north".into(),
            follower: "eu-west".into(),
            eligible: false,
            durable_lsn: 999_000,
            epoch: 3,
            seq: 1_780_000_000_000_123,
        },
        Message::EligibilityRecorded {
            follower: "eu-west".into(),
        },
        Message::LeaseRelease {
            holder: "eu-north".into(),
        },
        Message::Released {
            voter: "witness".into(),
        },
        Message::HandOver {
            epoch: 3,
            last_lsn: 1_000_500,
        },
        Message::DataKeys {
            keys: vec![
                (
                    0x0123_4567_89ab_cdef,
                    vigil_engine::crypt::DataKey::from_bytes(std::array::from_fn(|i| i as u8)),
                ),
                (7, vigil_engine::crypt::DataKey::from_bytes([0xee; 32])),
            ],
        },
    ]
}

#[test]
fn every_message_kind_is_pinned() {
    let mut bytes = Vec::new();
    for m in all_kinds() {
        bytes.extend_from_slice(&m.encode());
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/messages.bin");
    if std::env::var_os("VIGIL_BLESS").is_some() {
        std::fs::write(&path, &bytes).expect("write golden");
    }
    let want = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(bytes, want, "the wire format changed");
    // And the pinned bytes decode back, message by message.
    let mut pos = 0;
    let mut decoded = Vec::new();
    while pos < want.len() {
        let n = Message::body_len([want[pos], want[pos + 1], want[pos + 2], want[pos + 3]])
            .expect("length");
        decoded.push(Message::decode(&want[pos + 4..pos + 4 + n]).expect("decodes"));
        pos += 4 + n;
    }
    assert_eq!(decoded, all_kinds());
}
