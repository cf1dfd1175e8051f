//! Arbitrary bytes as what etcd holds for the coordinator (the `leader`
//! key's value, then the `state` key's text, split at the first NUL): the
//! readers must never panic, what parses re-reads from its own text, and
//! deciding any message on the result never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_net::proto::coordination::{LeaderKey, View, plan};
use vigil_net::proto::lease::LeaseConfig;
use vigil_net::proto::wire::Message;
use vigil_net::proto::witness::WitnessState;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (leader, state) = text.split_once('\0').unwrap_or((&text, ""));
    let leader = LeaderKey::parse_value(leader).map(|(holder, epoch)| LeaderKey {
        holder,
        epoch,
        lease: 1,
        mod_revision: 1,
    });
    let Ok(state) = WitnessState::parse(state) else {
        return;
    };
    assert_eq!(WitnessState::parse(&state.to_text()).as_ref(), Ok(&state));
    let view = View {
        state,
        state_revision: 1,
        leader,
    };
    let cfg = LeaseConfig::with_duration_ms(3_000);
    for m in [
        Message::LeaseAsk {
            candidate: "a".into(),
            epoch: view.state.epoch,
            round: 1,
        },
        Message::EpochCas {
            candidate: "a".into(),
            expected: view.state.epoch,
        },
        Message::LeaseRelease { holder: "a".into() },
        Message::Eligibility {
            leader: "a".into(),
            follower: "b".into(),
            eligible: true,
            durable_lsn: 1,
            epoch: view.state.epoch,
            seq: view.state.seq + 1,
        },
    ] {
        let _ = plan(&view, cfg, m);
    }
});
