//! The witness's decisions, kept in etcd instead of a witness's state
//! file: what to write for one request, and how to tell afterwards whether
//! a write whose answer was lost took effect.
//!
//! etcd plays the witness's part as the third voter. Two keys under the
//! cluster's prefix hold what the witness holds:
//!
//! - `leader` — the voter's promise: `"<holder> <epoch>"`, attached to an
//!   etcd lease whose TTL is the lease duration (rounded up to a whole
//!   second). It is created only by a transaction that requires it absent,
//!   kept by keepalives, and ends when the holder stops renewing (etcd
//!   deletes it with its lease) or releases it (a switchover).
//! - `state` — the witness's durable state ([`WitnessState`], the same
//!   text as `witness.state`): the epoch, the node it was allocated to, the
//!   eligibility records.
//!
//! Each request is decided by the witness's own [`decide`], on a
//! [`Voter::held`] built from the `leader` key and on the `state` key, as
//! read in one transaction; [`plan`] turns the decision into writes, and
//! every write is one transaction guarded by both keys' revisions as read.
//! So each decision is made on exactly the etcd state it changes, as the
//! witness makes it on its own state, and every invariant the witness keeps
//! holds here too: one holder at a time, epochs allocated only to the
//! holder and only from the current one (so strictly increasing, never
//! reused), eligibility changed only by the leader of the current epoch.
//!
//! The epoch is a counter in `state`, moved by compare-and-set on the
//! key's revision, rather than etcd's revision number itself: both
//! strictly increase, but the counter continues the epochs already
//! written in a cluster's logs when it moves from the witness to etcd
//! (the witness's `witness.state` is put as the `state` key), where
//! etcd's revision would start below them.

use crate::proto::lease::{LeaseConfig, Voter};
use crate::proto::wire::Message;
use crate::proto::witness::{WitnessState, decide};

/// The key of the voter's promise, under the cluster's prefix.
pub const LEADER_KEY: &str = "leader";
/// The key of the witness's durable state, under the cluster's prefix.
pub const STATE_KEY: &str = "state";
/// The name etcd answers under, as a voter.
pub const ETCD_VOTER: &str = "etcd";

/// The `leader` key as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderKey {
    /// Whom the promise is given to.
    pub holder: String,
    /// The highest epoch the voter knew when it was last written.
    pub epoch: u64,
    /// The etcd lease it is attached to.
    pub lease: i64,
    /// The key's modification revision (what a guarded write compares).
    pub mod_revision: i64,
}

impl LeaderKey {
    /// The key's value for `holder` in `epoch`.
    pub fn value(holder: &str, epoch: u64) -> String {
        format!("{holder} {epoch}")
    }

    /// Reads a value written by [`LeaderKey::value`]; `None` when it is
    /// not one.
    pub fn parse_value(v: &str) -> Option<(String, u64)> {
        let (holder, epoch) = v.rsplit_once(' ')?;
        if holder.is_empty() || holder.contains(char::is_whitespace) {
            return None;
        }
        Some((holder.to_owned(), epoch.parse().ok()?))
    }
}

/// Both keys, read in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// The witness's state (empty when the key is absent).
    pub state: WitnessState,
    /// The `state` key's modification revision; 0 when absent.
    pub state_revision: i64,
    /// The `leader` key, when present.
    pub leader: Option<LeaderKey>,
}

/// What happens to the `leader` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderChange {
    /// Nothing.
    Unchanged,
    /// Created, holding this value, on a new lease.
    Acquire {
        /// The new value.
        value: String,
    },
    /// Its lease kept alive (a renewal); its value rewritten when the
    /// voter's epoch moved.
    Renew {
        /// The lease to keep alive.
        lease: i64,
        /// The new value, if it changed.
        value: Option<String>,
    },
    /// Deleted, its lease revoked (a switchover's release).
    Release {
        /// The lease to revoke.
        lease: i64,
    },
}

/// The writes one answer needs: all in one transaction guarded by the
/// view's revisions, the answer sent only once it succeeded.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The answer, as the witness gives it.
    pub answer: Message,
    /// The new state, when it changed.
    pub state: Option<WitnessState>,
    /// What happens to the promise.
    pub leader: LeaderChange,
}

impl Plan {
    /// Whether the plan writes to etcd (a plain renewal only keeps a lease
    /// alive; a refusal writes nothing).
    pub fn writes(&self) -> bool {
        self.state.is_some()
            || matches!(
                self.leader,
                LeaderChange::Acquire { .. }
                    | LeaderChange::Release { .. }
                    | LeaderChange::Renew { value: Some(_), .. }
            )
    }
}

/// The time [`decide`] is given: a held promise never ends on the voter's
/// own clock (etcd's lease ends it), so any time will do.
const NOW: u64 = 1;

/// Decides `m` on `view` as the witness would, and says what to write.
/// `None` for a message a witness does not take.
pub fn plan(view: &View, cfg: LeaseConfig, m: Message) -> Option<Plan> {
    let mut state = view.state.clone();
    let held = view.leader.as_ref();
    let voter_epoch = held.map_or(state.epoch, |l| l.epoch.max(state.epoch));
    let mut voter = Voter::held(
        ETCD_VOTER,
        cfg,
        voter_epoch,
        held.map(|l| l.holder.as_str()),
    );
    let answer = decide(&mut state, &mut voter, m, NOW)?;
    let granted = matches!(answer, Message::LeaseAnswer { granted: true, .. });
    let epoch = voter.epoch();
    let leader = match (held, voter.holder(NOW)) {
        (None, None) => LeaderChange::Unchanged,
        (None, Some(h)) => LeaderChange::Acquire {
            value: LeaderKey::value(h, epoch),
        },
        (Some(l), Some(h)) => {
            // A held promise is never free, so decide can only renew it
            // for its holder or leave it.
            assert_eq!(l.holder, h, "a held promise changed hands");
            if granted {
                LeaderChange::Renew {
                    lease: l.lease,
                    value: (epoch != l.epoch).then(|| LeaderKey::value(h, epoch)),
                }
            } else {
                LeaderChange::Unchanged
            }
        }
        (Some(l), None) => LeaderChange::Release { lease: l.lease },
    };
    let state = (state != view.state).then_some(state);
    Some(Plan {
        answer,
        state,
        leader,
    })
}

/// After a write whose outcome is unknown (etcd's answer was lost): whether
/// `after`, read again, shows the plan's writes made. `lease` is the lease
/// an `Acquire` attached. A write is never sent twice: when this is false
/// the request is answered with an error and the next round decides anew.
pub fn settled(plan: &Plan, after: &View, lease: Option<i64>) -> bool {
    let state_ok = plan.state.as_ref().is_none_or(|s| *s == after.state);
    let leader_ok = match &plan.leader {
        LeaderChange::Unchanged => true,
        LeaderChange::Acquire { value } => after.leader.as_ref().is_some_and(|l| {
            Some(l.lease) == lease && LeaderKey::value(&l.holder, l.epoch) == *value
        }),
        LeaderChange::Renew { lease, value } => after.leader.as_ref().is_some_and(|l| {
            l.lease == *lease
                && value
                    .as_ref()
                    .is_none_or(|v| LeaderKey::value(&l.holder, l.epoch) == *v)
        }),
        LeaderChange::Release { lease } => after.leader.as_ref().is_none_or(|l| l.lease != *lease),
    };
    state_ok && leader_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::witness::FollowerRecord;

    fn cfg() -> LeaseConfig {
        LeaseConfig::with_duration_ms(3_000)
    }

    fn ask(candidate: &str, epoch: u64) -> Message {
        Message::LeaseAsk {
            candidate: candidate.into(),
            epoch,
            round: 7,
        }
    }

    fn held_by(holder: &str, epoch: u64) -> Option<LeaderKey> {
        Some(LeaderKey {
            holder: holder.into(),
            epoch,
            lease: 42,
            mod_revision: 9,
        })
    }

    fn eligible(names: &[&str], epoch: u64, leader: &str) -> WitnessState {
        let mut st = WitnessState {
            epoch,
            leader: leader.into(),
            ..WitnessState::default()
        };
        for n in names {
            st.followers.insert(
                (*n).into(),
                FollowerRecord {
                    eligible: true,
                    durable_lsn: 5,
                },
            );
        }
        st
    }

    #[test]
    fn a_free_promise_is_acquired_and_a_held_one_only_renewed_by_its_holder() {
        let view = View::default();
        let p = plan(&view, cfg(), ask("a", 0)).expect("taken");
        assert!(matches!(
            p.answer,
            Message::LeaseAnswer { granted: true, .. }
        ));
        assert_eq!(
            p.leader,
            LeaderChange::Acquire {
                value: "a 0".into()
            }
        );
        let view = View {
            state: eligible(&["a", "b"], 3, "a"),
            state_revision: 4,
            leader: held_by("a", 3),
        };
        let p = plan(&view, cfg(), ask("b", 3)).expect("taken");
        assert!(
            matches!(&p.answer, Message::LeaseAnswer { granted: false, holder, .. } if holder == "a")
        );
        assert_eq!(p.leader, LeaderChange::Unchanged);
        assert!(!p.writes());
        let p = plan(&view, cfg(), ask("a", 3)).expect("taken");
        assert!(matches!(
            p.answer,
            Message::LeaseAnswer { granted: true, .. }
        ));
        assert_eq!(
            p.leader,
            LeaderChange::Renew {
                lease: 42,
                value: None
            }
        );
        assert!(!p.writes(), "a plain renewal is a keepalive only");
    }

    #[test]
    fn an_ineligible_candidate_gets_no_promise_and_no_epoch() {
        let mut state = eligible(&["a"], 3, "a");
        state.followers.insert(
            "b".into(),
            FollowerRecord {
                eligible: false,
                durable_lsn: 1,
            },
        );
        let view = View {
            state,
            state_revision: 4,
            leader: None,
        };
        let p = plan(&view, cfg(), ask("b", 3)).expect("taken");
        assert!(matches!(
            p.answer,
            Message::LeaseAnswer { granted: false, .. }
        ));
        assert_eq!(p.leader, LeaderChange::Unchanged);
        let cas = Message::EpochCas {
            candidate: "b".into(),
            expected: 3,
        };
        let p = plan(&view, cfg(), cas).expect("taken");
        assert!(matches!(
            p.answer,
            Message::EpochCasAnswer {
                ok: false,
                epoch: 3
            }
        ));
        assert!(p.state.is_none());
    }

    #[test]
    fn the_epoch_moves_only_for_the_holder_and_only_from_the_current_one() {
        let view = View {
            state: eligible(&["a", "b"], 3, "a"),
            state_revision: 4,
            leader: held_by("b", 3),
        };
        let cas = |c: &str, expected| Message::EpochCas {
            candidate: c.into(),
            expected,
        };
        let p = plan(&view, cfg(), cas("a", 3)).expect("taken");
        assert!(matches!(
            p.answer,
            Message::EpochCasAnswer { ok: false, .. }
        ));
        let p = plan(&view, cfg(), cas("b", 2)).expect("taken");
        assert!(matches!(
            p.answer,
            Message::EpochCasAnswer { ok: false, .. }
        ));
        let p = plan(&view, cfg(), cas("b", 3)).expect("taken");
        assert!(matches!(
            p.answer,
            Message::EpochCasAnswer { ok: true, epoch: 4 }
        ));
        let st = p.state.as_ref().expect("the epoch is written");
        assert_eq!((st.epoch, st.leader.as_str()), (4, "b"));
        assert!(!st.followers["a"].eligible, "a must catch up with b first");
        assert_eq!(
            p.leader,
            LeaderChange::Unchanged,
            "the CAS writes the state only"
        );
        // The holder's next renewal in the new epoch writes it into the
        // promise too (once).
        let after = View {
            state: st.clone(),
            state_revision: 5,
            leader: held_by("b", 3),
        };
        let p = plan(&after, cfg(), ask("b", 4)).expect("taken");
        assert_eq!(
            p.leader,
            LeaderChange::Renew {
                lease: 42,
                value: Some("b 4".into())
            }
        );
    }

    #[test]
    fn a_release_deletes_only_the_releasers_promise() {
        let view = View {
            state: eligible(&["a", "b"], 3, "a"),
            state_revision: 4,
            leader: held_by("a", 3),
        };
        let rel = |h: &str| Message::LeaseRelease { holder: h.into() };
        let p = plan(&view, cfg(), rel("b")).expect("taken");
        assert_eq!(p.leader, LeaderChange::Unchanged);
        let p = plan(&view, cfg(), rel("a")).expect("taken");
        assert_eq!(p.leader, LeaderChange::Release { lease: 42 });
    }

    #[test]
    fn a_lost_answer_is_settled_only_by_what_a_new_read_shows() {
        let view = View {
            state: eligible(&["a", "b"], 3, "a"),
            state_revision: 4,
            leader: None,
        };
        let p = plan(&view, cfg(), ask("b", 3)).expect("taken");
        let mut after = view.clone();
        assert!(!settled(&p, &after, Some(77)), "nothing was written");
        after.leader = Some(LeaderKey {
            holder: "b".into(),
            epoch: 3,
            lease: 77,
            mod_revision: 10,
        });
        assert!(settled(&p, &after, Some(77)));
        assert!(
            !settled(&p, &after, Some(78)),
            "another lease's key is not ours"
        );
    }

    #[test]
    fn leader_values_round_trip_and_junk_is_refused() {
        let v = LeaderKey::value("node-a", 12);
        assert_eq!(LeaderKey::parse_value(&v), Some(("node-a".into(), 12)));
        for junk in ["", "a", " 3", "a b c", "a x"] {
            assert_eq!(LeaderKey::parse_value(junk), None, "{junk:?}");
        }
    }
}
