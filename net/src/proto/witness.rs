//! The witness: the third voter of a two-region cluster. It holds no
//! resource data: only the current epoch, its lease promise, and each
//! follower's durable watermark and eligibility, as the leader reports
//! them.
//!
//! What must survive a crash (the epoch, the node it was allocated to, the
//! eligibility records) is written to `DIR/witness.state` (temporary file,
//! fsync, rename, directory fsync) before the answer that depends on it
//! leaves. The promise itself is not persisted: a restarted witness grants
//! nothing for one lease duration instead (see
//! [`crate::proto::lease::Voter::start`]).
//!
//! Every message is bound to its sender: the name it claims
//! ([`Message::claimed_sender`]) must be one the sender's certificate was
//! made for ([`check_sender`]), and an eligibility record is taken only
//! from the node the witness allocated that epoch to. A deposed leader, or
//! any other member, cannot record the current leader ineligible (which
//! would cost that leader the witness's vote and so its lease).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::proto::lease::{LeaseConfig, LeaseRequest, Voter, epoch_cas};
use crate::proto::wire::{Message, RefuseCode};

/// File name of the witness's durable state.
pub const STATE_FILE: &str = "witness.state";
/// Most followers recorded.
const FOLLOWERS_MAX: usize = 64;

/// One follower's record at the witness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerRecord {
    /// May it be promoted?
    pub eligible: bool,
    /// Its durable LSN as last reported.
    pub durable_lsn: u64,
}

/// The witness's durable state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WitnessState {
    /// The current epoch (0 before the first leader).
    pub epoch: u64,
    /// The node `epoch` was allocated to (or, for an epoch forced without
    /// the witness, the node that first spoke for it holding the witness's
    /// promise); empty when unknown (before the first leader, or a state
    /// written before leaders were recorded).
    pub leader: String,
    /// The number of the last eligibility record taken from `leader` in
    /// `epoch` (0: none): an older or equal one is stale.
    pub seq: u64,
    /// Per follower.
    pub followers: BTreeMap<String, FollowerRecord>,
}

impl WitnessState {
    /// Loads the state from `dir` (empty when there is none yet); a line
    /// that does not parse is an error naming it.
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e),
        };
        Self::parse(&text).map_err(|line| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} {line}", path.display()),
            )
        })
    }

    /// Reads the state from its text (the file's, or etcd's state key);
    /// `Err` names the first line that does not parse.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut st = Self::default();
        for (i, line) in text.lines().enumerate() {
            let bad = || format!("line {}: {line:?}", i + 1);
            let f: Vec<&str> = line.split(' ').collect();
            match f.as_slice() {
                ["epoch", n] => st.epoch = n.parse().map_err(|_| bad())?,
                ["leader", name] if !name.is_empty() => st.leader = (*name).to_owned(),
                ["seq", n] => st.seq = n.parse().map_err(|_| bad())?,
                ["follower", name, state, lsn] => {
                    let eligible = match *state {
                        "eligible" => true,
                        "ineligible" => false,
                        _ => return Err(bad()),
                    };
                    let durable_lsn = lsn.parse().map_err(|_| bad())?;
                    if !st.followers.contains_key(*name) && st.followers.len() >= FOLLOWERS_MAX {
                        return Err(bad());
                    }
                    st.followers.insert(
                        (*name).to_owned(),
                        FollowerRecord {
                            eligible,
                            durable_lsn,
                        },
                    );
                }
                _ => return Err(bad()),
            }
        }
        Ok(st)
    }

    /// The state as text, as [`WitnessState::parse`] reads it.
    pub fn to_text(&self) -> String {
        let mut text = format!("epoch {}\n", self.epoch);
        if !self.leader.is_empty() {
            text.push_str(&format!("leader {}\n", self.leader));
        }
        if self.seq > 0 {
            text.push_str(&format!("seq {}\n", self.seq));
        }
        for (n, r) in &self.followers {
            let state = if r.eligible { "eligible" } else { "ineligible" };
            text.push_str(&format!("follower {n} {state} {}\n", r.durable_lsn));
        }
        text
    }

    /// Writes the state to `dir` durably.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        crate::proto::eligibility::replace_durably(&dir.join(STATE_FILE), self.to_text().as_bytes())
    }
}

/// The witness's logic, without sockets: answers one message.
#[derive(Debug)]
pub struct Witness {
    dir: PathBuf,
    voter: Voter,
    state: WitnessState,
}

impl Witness {
    /// Opens (or creates) the witness in `dir` at time `now_us`.
    pub fn open(dir: &Path, name: &str, cfg: LeaseConfig, now_us: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let state = WitnessState::load(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            voter: Voter::start(name, cfg, state.epoch, now_us),
            state,
        })
    }

    /// The durable state.
    pub fn state(&self) -> &WitnessState {
        &self.state
    }

    /// The witness's name as a voter.
    pub fn voter_name(&self) -> &str {
        self.voter.name()
    }

    /// Who holds the witness's promise at `now_us`, if anyone.
    pub fn holder(&self, now_us: u64) -> Option<&str> {
        self.voter.holder(now_us)
    }

    /// Answers `m` at `now_us`; `None` for a message a witness does not
    /// take. A state change is made durable before the answer is returned.
    pub fn answer(&mut self, m: Message, now_us: u64) -> std::io::Result<Option<Message>> {
        let mut next = self.state.clone();
        let Some(answer) = decide(&mut next, &mut self.voter, m, now_us) else {
            return Ok(None);
        };
        if next != self.state {
            next.save(&self.dir)?;
            self.state = next;
        }
        Ok(Some(answer))
    }
}

/// The witness's decision for one message, on its durable `state` and its
/// `voter` (its promise): pure, so the simulator runs exactly this. The
/// caller makes a changed `state` durable before the answer leaves. `None`
/// for a message a witness does not take.
pub fn decide(
    state: &mut WitnessState,
    voter: &mut Voter,
    m: Message,
    now_us: u64,
) -> Option<Message> {
    Some(match m {
        Message::LeaseAsk {
            candidate,
            epoch,
            round,
        } if state.epoch > 0 && !state.followers.get(&candidate).is_some_and(|r| r.eligible) => {
            // A node the witness would not promote gets no promise either:
            // holding it would only keep an eligible follower from taking
            // over.
            Message::LeaseAnswer {
                voter: voter.name().into(),
                round,
                granted: false,
                epoch: voter.epoch().max(epoch),
                holder: voter.holder(now_us).unwrap_or_default().into(),
            }
        }
        Message::LeaseAsk {
            candidate,
            epoch,
            round,
        } => {
            let r = voter.on_request(
                &LeaseRequest {
                    candidate,
                    epoch,
                    round,
                },
                now_us,
            );
            Message::LeaseAnswer {
                voter: r.voter,
                round: r.round,
                granted: r.granted,
                epoch: r.epoch,
                holder: r.holder.unwrap_or_default(),
            }
        }
        Message::EpochCas {
            candidate,
            expected,
        } if expected > 0 && !state.followers.get(&candidate).is_some_and(|r| r.eligible) => {
            // The loss bound: once a cluster has had a leader, only a node
            // recorded as holding everything within max_lag of it may lead
            // next; a follower beyond the bound, or one the current leader
            // has not yet seen catch up, never is.
            tracing::warn!(candidate = %candidate, "epoch refused: the candidate is not recorded as eligible");
            Message::EpochCasAnswer {
                ok: false,
                epoch: state.epoch.max(voter.epoch()),
            }
        }
        Message::EpochCas {
            candidate,
            expected,
        } => match epoch_cas(voter, &candidate, expected, now_us) {
            Ok(epoch) => {
                begin_epoch(state, epoch, &candidate);
                tracing::info!(epoch, leader = %candidate, "epoch allocated");
                Message::EpochCasAnswer { ok: true, epoch }
            }
            Err(epoch) => Message::EpochCasAnswer { ok: false, epoch },
        },
        Message::Eligibility { epoch, .. } if epoch < state.epoch => {
            // A deposed leader's record: it no longer speaks for anyone.
            Message::refusal(
                RefuseCode::NotLeader,
                format!(
                    "epoch {epoch} is over; the cluster is in epoch {}",
                    state.epoch
                ),
            )
        }
        Message::Eligibility { leader, epoch, .. }
            if !speaks_for(state, voter, &leader, epoch, now_us) =>
        {
            // Only the node that won the epoch records eligibility in it: a
            // deposed leader that learned the new epoch must not mark the
            // new leader ineligible.
            let allocated = if state.leader.is_empty() {
                "no node known to this witness".to_owned()
            } else {
                state.leader.clone()
            };
            tracing::warn!(sender = %leader, epoch, leader = %allocated, "eligibility record refused: the sender does not lead that epoch");
            Message::refusal(
                RefuseCode::NotLeader,
                format!(
                    "{leader} does not lead epoch {epoch}: the witness allocated it to {allocated}"
                ),
            )
        }
        Message::Eligibility { seq, epoch, .. } if epoch == state.epoch && seq <= state.seq => {
            // A record its sender gave up on (no answer in time) and has
            // since replaced: taking it now would undo a later one.
            Message::refusal(
                RefuseCode::Stale,
                format!(
                    "record {seq} is not newer than record {} already taken",
                    state.seq
                ),
            )
        }
        Message::Eligibility {
            leader,
            follower,
            eligible,
            durable_lsn,
            epoch,
            seq,
        } => {
            if epoch > state.epoch {
                // An epoch forced without the witness (`vigil promote
                // --force`), spoken for by the node holding the promise in
                // it: the witness follows it from now on.
                tracing::warn!(epoch, leader = %leader, "adopting an epoch allocated without the witness");
                begin_epoch(state, epoch, &leader);
            } else if state.leader.is_empty() {
                state.leader = leader.clone();
            }
            if !state.followers.contains_key(&follower) && state.followers.len() >= FOLLOWERS_MAX {
                return None;
            }
            state.seq = seq;
            state.followers.insert(
                follower.clone(),
                FollowerRecord {
                    eligible,
                    durable_lsn,
                },
            );
            Message::EligibilityRecorded { follower }
        }
        Message::LeaseRelease { holder } => {
            voter.release(&holder);
            tracing::info!(holder = %holder, "lease released (switchover)");
            Message::Released {
                voter: voter.name().into(),
            }
        }
        _ => return None,
    })
}

/// Moves `state` into `epoch`, led by `leader`: the leader holds everything
/// it acknowledges; any other node must first be seen catching up with it.
fn begin_epoch(state: &mut WitnessState, epoch: u64, leader: &str) {
    state.epoch = epoch;
    state.leader = leader.to_owned();
    state.seq = 0;
    for (name, rec) in state.followers.iter_mut() {
        rec.eligible = name == leader;
    }
    let lsn = state.followers.get(leader).map_or(0, |r| r.durable_lsn);
    state.followers.insert(
        leader.to_owned(),
        FollowerRecord {
            eligible: true,
            durable_lsn: lsn,
        },
    );
}

/// Whether `sender` may record eligibility in `epoch`: it is the node the
/// witness allocated that epoch to, or — for an epoch the witness did not
/// allocate (forced by an operator) or a leader it does not know (a state
/// from before leaders were recorded) — it holds the witness's promise in
/// that very epoch.
fn speaks_for(state: &WitnessState, voter: &Voter, sender: &str, epoch: u64, now_us: u64) -> bool {
    let allocated = epoch == state.epoch && !state.leader.is_empty();
    if allocated {
        return state.leader == sender;
    }
    epoch >= state.epoch && voter.epoch() == epoch && voter.holder(now_us) == Some(sender)
}

/// Checks that the name `m` claims as its sender is one `proves` accepts
/// (in production: one the sender's certificate was made for, see
/// [`crate::runtime::tls::peer_is`]). `Err` holds the refusal to answer with; a
/// message that claims no sender passes (the witness takes none of those).
pub fn check_sender(m: &Message, proves: impl Fn(&str) -> bool) -> Result<(), Message> {
    match m.claimed_sender() {
        Some(name) if !proves(name) => Err(Message::refusal(
            RefuseCode::Protocol,
            format!(
                "{} claims to come from {name}, but the sender's certificate is not {name}'s",
                m.kind()
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LeaseConfig {
        LeaseConfig {
            duration_us: 1_000,
            renew_every_us: 100,
            drift_margin_us: 100,
        }
    }

    #[test]
    fn epochs_move_only_for_the_promised_candidate_and_survive_a_restart() {
        let d = tempfile::tempdir().expect("dir");
        let mut w = Witness::open(d.path(), "w", cfg(), 0).expect("open");
        let ask = |c: &str| Message::LeaseAsk {
            candidate: c.into(),
            epoch: 0,
            round: 1,
        };
        // Quiet right after start.
        assert!(matches!(
            w.answer(ask("a"), 10).expect("answer"),
            Some(Message::LeaseAnswer { granted: false, .. })
        ));
        assert!(matches!(
            w.answer(ask("a"), 2_000).expect("answer"),
            Some(Message::LeaseAnswer { granted: true, .. })
        ));
        let cas = |c: &str, e| Message::EpochCas {
            candidate: c.into(),
            expected: e,
        };
        assert_eq!(
            w.answer(cas("b", 0), 2_001).expect("answer"),
            Some(Message::EpochCasAnswer {
                ok: false,
                epoch: 0
            }),
            "b holds no promise"
        );
        assert_eq!(
            w.answer(cas("a", 0), 2_002).expect("answer"),
            Some(Message::EpochCasAnswer { ok: true, epoch: 1 })
        );
        assert_eq!(
            w.answer(cas("a", 0), 2_003).expect("answer"),
            Some(Message::EpochCasAnswer {
                ok: false,
                epoch: 1
            }),
            "compare-and-swap: not twice"
        );
        // A deposed leader's record (an older epoch) is refused.
        assert!(matches!(
            w.answer(
                Message::Eligibility {
                    leader: "a".into(),
                    follower: "b".into(),
                    eligible: true,
                    durable_lsn: 5,
                    epoch: 0,
                    seq: 1,
                },
                2_004,
            )
            .expect("answer"),
            Some(Message::Refused { .. })
        ));
        w.answer(
            Message::Eligibility {
                leader: "a".into(),
                follower: "b".into(),
                eligible: false,
                durable_lsn: 9,
                epoch: 1,
                seq: 1,
            },
            2_004,
        )
        .expect("answer");
        // b is recorded ineligible: no promise (it would only block an
        // eligible node), and no epoch.
        let ask_b = Message::LeaseAsk {
            candidate: "b".into(),
            epoch: 1,
            round: 2,
        };
        assert!(matches!(
            w.answer(ask_b, 4_000).expect("answer"),
            Some(Message::LeaseAnswer { granted: false, .. })
        ));
        assert_eq!(
            w.answer(cas("b", 1), 4_001).expect("answer"),
            Some(Message::EpochCasAnswer {
                ok: false,
                epoch: 1
            }),
            "an ineligible follower is never promoted"
        );
        // The leader renews; its planned release frees the promise at once.
        assert!(w.state().followers.get("a").is_some_and(|r| r.eligible));
        let ask_a = Message::LeaseAsk {
            candidate: "a".into(),
            epoch: 1,
            round: 3,
        };
        assert!(matches!(
            w.answer(ask_a, 4_002).expect("answer"),
            Some(Message::LeaseAnswer { granted: true, .. })
        ));
        assert_eq!(w.holder(4_002), Some("a"));
        assert_eq!(
            w.answer(Message::LeaseRelease { holder: "a".into() }, 4_002)
                .expect("answer"),
            Some(Message::Released { voter: "w".into() })
        );
        assert_eq!(w.holder(4_003), None, "released");
        // A node never seen catching up (no record) gets no promise either.
        let ask_c = Message::LeaseAsk {
            candidate: "c".into(),
            epoch: 1,
            round: 4,
        };
        assert!(matches!(
            w.answer(ask_c, 4_004).expect("answer"),
            Some(Message::LeaseAnswer { granted: false, .. })
        ));
        assert_eq!(
            w.answer(cas("c", 1), 4_005).expect("answer"),
            Some(Message::EpochCasAnswer {
                ok: false,
                epoch: 1
            }),
            "a node with no eligibility record is never promoted"
        );
        drop(w);
        let w = Witness::open(d.path(), "w", cfg(), 0).expect("reopen");
        assert_eq!(w.state().epoch, 1);
        assert_eq!(
            w.state().leader,
            "a",
            "the epoch's leader survives a restart"
        );
        assert_eq!(
            w.state().followers.get("b"),
            Some(&FollowerRecord {
                eligible: false,
                durable_lsn: 9
            })
        );
        std::fs::write(d.path().join(STATE_FILE), "epoch x\n").expect("write");
        assert!(
            Witness::open(d.path(), "w", cfg(), 0).is_err(),
            "a damaged state is refused"
        );
    }

    fn record(leader: &str, follower: &str, eligible: bool, epoch: u64) -> Message {
        Message::Eligibility {
            leader: leader.into(),
            follower: follower.into(),
            eligible,
            durable_lsn: 7,
            epoch,
            seq: next_seq(),
        }
    }

    fn ask(candidate: &str, epoch: u64, round: u64) -> Message {
        Message::LeaseAsk {
            candidate: candidate.into(),
            epoch,
            round,
        }
    }

    fn cas(candidate: &str, expected: u64) -> Message {
        Message::EpochCas {
            candidate: candidate.into(),
            expected,
        }
    }

    /// A witness in `dir` where `a` won epoch 1 (its promise runs until
    /// 3,000 µs).
    fn a_leads_epoch_1(dir: &Path) -> Witness {
        let mut w = Witness::open(dir, "w", cfg(), 0).expect("open");
        w.answer(ask("a", 0, 1), 2_000).expect("answer");
        assert_eq!(
            w.answer(cas("a", 0), 2_001).expect("answer"),
            Some(Message::EpochCasAnswer { ok: true, epoch: 1 })
        );
        w
    }

    /// Record numbers for the tests, increasing as a leader's do.
    fn next_seq() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(1);
        SEQ.fetch_add(1, Ordering::Relaxed)
    }

    /// The drill of issue 25: a, deposed, learns epoch 2 and sends its
    /// record of b under it. Only b, which won epoch 2, records in it.
    #[test]
    fn only_the_node_that_won_an_epoch_records_eligibility_in_it() {
        let d = tempfile::tempdir().expect("dir");
        let mut w = a_leads_epoch_1(d.path());
        // a leads epoch 1 and records b eligible; then a is cut off, its
        // promise runs out, b takes epoch 2.
        assert!(matches!(
            w.answer(record("a", "b", true, 1), 2_002).expect("answer"),
            Some(Message::EligibilityRecorded { .. })
        ));
        w.answer(ask("b", 1, 1), 4_000).expect("answer");
        assert_eq!(
            w.answer(cas("b", 1), 4_001).expect("answer"),
            Some(Message::EpochCasAnswer { ok: true, epoch: 2 })
        );
        assert_eq!(w.state().leader, "b");
        // a heals, learns epoch 2, and its max_lag enforcement fires.
        for epoch in [1, 2, 3] {
            let before = w.state().clone();
            let answer = w
                .answer(record("a", "b", false, epoch), 4_002)
                .expect("answer");
            assert!(
                matches!(
                    answer,
                    Some(Message::Refused {
                        code: crate::proto::wire::RefuseCode::NotLeader,
                        ..
                    })
                ),
                "epoch {epoch}: {answer:?}"
            );
            assert_eq!(w.state(), &before, "a refused record changes nothing");
        }
        assert!(w.state().followers["b"].eligible, "b keeps its vote");
        let renew = w.answer(ask("b", 2, 2), 4_003).expect("answer");
        assert!(
            matches!(renew, Some(Message::LeaseAnswer { granted: true, .. })),
            "the new leader renews at the witness: {renew:?}"
        );
        // b itself records a.
        assert!(matches!(
            w.answer(record("b", "a", true, 2), 4_004).expect("answer"),
            Some(Message::EligibilityRecorded { .. })
        ));
        assert!(w.state().followers["a"].eligible);
    }

    #[test]
    fn an_epoch_forced_without_the_witness_is_adopted_from_its_promise_holder() {
        let d = tempfile::tempdir().expect("dir");
        let mut w = a_leads_epoch_1(d.path());
        assert!(matches!(
            w.answer(record("a", "b", true, 1), 2_002).expect("answer"),
            Some(Message::EligibilityRecorded { .. })
        ));
        // b was forced into epoch 5 while the witness was away; a's
        // promise has run out and b now asks in epoch 5.
        assert!(
            matches!(
                w.answer(record("b", "a", false, 5), 4_000).expect("answer"),
                Some(Message::Refused { .. })
            ),
            "not before b holds the witness's promise in that epoch"
        );
        w.answer(ask("b", 5, 1), 4_001).expect("answer");
        assert_eq!(w.holder(4_001), Some("b"));
        assert!(matches!(
            w.answer(record("b", "a", false, 5), 4_002).expect("answer"),
            Some(Message::EligibilityRecorded { .. })
        ));
        assert_eq!((w.state().epoch, w.state().leader.as_str()), (5, "b"));
        assert!(w.state().followers["b"].eligible);
        assert!(!w.state().followers["a"].eligible);
        // a, holding nothing, cannot speak for epoch 5.
        assert!(matches!(
            w.answer(record("a", "b", false, 5), 4_003).expect("answer"),
            Some(Message::Refused { .. })
        ));
    }

    #[test]
    fn a_state_from_before_leaders_were_recorded_learns_the_leader_from_its_promise() {
        let d = tempfile::tempdir().expect("dir");
        std::fs::write(
            d.path().join(STATE_FILE),
            "epoch 3\nfollower a eligible 10\nfollower b eligible 9\n",
        )
        .expect("write");
        let mut w = Witness::open(d.path(), "w", cfg(), 0).expect("open");
        assert_eq!(w.state().leader, "");
        assert!(
            matches!(
                w.answer(record("b", "a", false, 3), 2_000).expect("answer"),
                Some(Message::Refused { .. })
            ),
            "b holds no promise"
        );
        w.answer(ask("a", 3, 1), 2_001).expect("answer");
        assert!(matches!(
            w.answer(record("a", "b", false, 3), 2_002).expect("answer"),
            Some(Message::EligibilityRecorded { .. })
        ));
        assert_eq!(w.state().leader, "a");
        assert!(
            matches!(
                w.answer(record("b", "a", false, 3), 2_003).expect("answer"),
                Some(Message::Refused { .. })
            ),
            "from now on only a"
        );
    }

    #[test]
    fn a_claimed_sender_the_certificate_does_not_prove_is_refused() {
        let is_a = |n: &str| n == "a";
        let m = |holder: &str| Message::LeaseRelease {
            holder: holder.into(),
        };
        assert!(check_sender(&m("a"), is_a).is_ok());
        assert!(
            matches!(
                check_sender(&m("b"), is_a),
                Err(Message::Refused {
                    code: crate::proto::wire::RefuseCode::Protocol,
                    ..
                })
            ),
            "a cannot release b's promise"
        );
        assert!(check_sender(&record("b", "a", false, 1), is_a).is_err());
        assert!(check_sender(&cas("b", 1), is_a).is_err());
        assert!(check_sender(&ask("b", 1, 1), is_a).is_err());
    }

    #[test]
    fn a_record_given_up_on_cannot_land_after_a_later_one() {
        let d = tempfile::tempdir().expect("dir");
        let mut w = a_leads_epoch_1(d.path());
        let rec = |eligible, seq| Message::Eligibility {
            leader: "a".into(),
            follower: "b".into(),
            eligible,
            durable_lsn: 3,
            epoch: 1,
            seq,
        };
        // "Eligible" (10) got no answer in time; a sent "ineligible" (11),
        // which was taken; then 10 arrives late.
        assert!(matches!(
            w.answer(rec(false, 11), 2_002).expect("answer"),
            Some(Message::EligibilityRecorded { .. })
        ));
        let late = w.answer(rec(true, 10), 2_003).expect("answer");
        assert!(
            matches!(
                late,
                Some(Message::Refused {
                    code: crate::proto::wire::RefuseCode::Stale,
                    ..
                })
            ),
            "{late:?}"
        );
        assert!(
            !w.state().followers["b"].eligible,
            "the later record stands"
        );
        drop(w);
        let w = Witness::open(d.path(), "w", cfg(), 0).expect("reopen");
        assert_eq!(
            w.state().seq,
            11,
            "the last number taken survives a restart"
        );
    }
}
