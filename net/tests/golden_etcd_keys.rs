//! Guards what the etcd coordinator keeps in etcd against silent change:
//! the `leader` key's value and the `state` key's text (the witness's
//! `witness.state` format) for one cluster state are pinned in
//! `tests/golden/etcd_keys.txt`, and the pinned text reads back to the same
//! state. Nodes of two builds that disagree here cannot share one etcd
//! prefix; a witness's state file must stay puttable as the `state` key.
//!
//! To re-pin after a deliberate change (with a note in docs/format.md):
//! `VIGIL_BLESS=1 cargo test --test golden_etcd_keys`.

use std::path::PathBuf;

use vigil_net::proto::coordination::LeaderKey;
use vigil_net::proto::witness::{FollowerRecord, WitnessState};

fn state() -> WitnessState {
    let mut st = WitnessState {
        epoch: 7,
        leader: "eu-north".into(),
        seq: 12,
        ..WitnessState::default()
    };
    st.followers.insert(
        "eu-north".into(),
        FollowerRecord {
            eligible: true,
            durable_lsn: 1_000_500,
        },
    );
    st.followers.insert(
        "eu-west".into(),
        FollowerRecord {
            eligible: false,
            durable_lsn: 999_001,
        },
    );
    st
}

#[test]
fn the_keys_etcd_holds_are_pinned() {
    let text = format!(
        "leader: {}\nstate:\n{}",
        LeaderKey::value("eu-north", 7),
        state().to_text()
    );
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/etcd_keys.txt");
    if std::env::var_os("VIGIL_BLESS").is_some() {
        std::fs::write(&path, &text).expect("bless");
    }
    let pinned = std::fs::read_to_string(&path).expect("golden file");
    assert_eq!(text, pinned, "the etcd keys' format changed");
    let (leader, st) = pinned.split_once("\nstate:\n").expect("two parts");
    let value = leader.strip_prefix("leader: ").expect("leader line");
    assert_eq!(LeaderKey::parse_value(value), Some(("eu-north".into(), 7)));
    assert_eq!(WitnessState::parse(st), Ok(state()));
}
