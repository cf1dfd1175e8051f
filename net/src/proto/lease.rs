//! Leadership by majority leases, as sans-I/O state machines: who may
//! acknowledge writes, and when a follower may take over.
//!
//! Three voters: the two data nodes and the witness. A voter promises its
//! vote to one candidate at a time, for a lease duration measured on its
//! own clock, and never to an epoch below the highest it has seen. A node
//! leads while it holds promises from a majority (itself and one more);
//! any two majorities share a voter, and that voter promised only one of
//! them, so two nodes never hold a lease at once. The holder counts its
//! lease from the moment it *sent* the request, minus a margin for clock
//! rate drift, so its own view always ends before any voter's promise
//! does: it stops acknowledging writes first.
//!
//! Epochs are allocated only by compare-and-swap at the witness, and only
//! for the candidate the witness has promised its vote to. A follower
//! promotes only when eligible, only with a majority (itself and the
//! witness), which it can only get once the old leader's promises expired.
//!
//! A voter that restarts has forgotten its promise, so it grants nothing
//! for one lease duration after starting.
//!
//! Everything here is pure: `(state, event, now) -> actions`, times in µs
//! of the caller's monotonic clock.

use std::collections::BTreeSet;

/// Lease timing, shared by every voter and candidate of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How long a promise lasts on the voter's clock, µs.
    pub duration_us: u64,
    /// How often the leader renews, µs (well inside `duration_us`).
    pub renew_every_us: u64,
    /// Subtracted from the holder's view to cover clock rate drift, µs.
    pub drift_margin_us: u64,
}

/// The lease duration every member uses unless configured: 3 s.
pub const LEASE_MS_DEFAULT: u64 = 3_000;

impl LeaseConfig {
    /// Production defaults: [`LEASE_MS_DEFAULT`] leases renewed every sixth
    /// of it (500 ms), 10% drift margin.
    pub fn new() -> Self {
        Self::with_duration_ms(LEASE_MS_DEFAULT)
    }

    /// Leases of `ms` milliseconds renewed every sixth of that, with a 10%
    /// drift margin (the defaults' proportions).
    pub fn with_duration_ms(ms: u64) -> Self {
        let us = ms * 1000;
        Self {
            duration_us: us,
            renew_every_us: us / 6,
            drift_margin_us: us / 10,
        }
    }

    fn check(&self) {
        assert!(self.renew_every_us > 0 && self.renew_every_us < self.duration_us / 2);
        assert!(self.drift_margin_us < self.duration_us / 2);
    }
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// A request for a voter's promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    /// Who asks.
    pub candidate: String,
    /// The epoch it asks in (its current one; a promoting follower asks in
    /// the epoch it will replace).
    pub epoch: u64,
    /// Identifies the round, echoed in the reply.
    pub round: u64,
}

/// A voter's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseReply {
    /// Who answers.
    pub voter: String,
    /// The round answered.
    pub round: u64,
    /// Whether the promise was given.
    pub granted: bool,
    /// The highest epoch the voter knows.
    pub epoch: u64,
    /// Whom the voter has promised, if anyone (when refused).
    pub holder: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Promise {
    holder: String,
    until_us: u64,
}

/// One voter's promises.
#[derive(Debug, Clone)]
pub struct Voter {
    name: String,
    cfg: LeaseConfig,
    epoch: u64,
    promise: Option<Promise>,
    /// After a start, nothing is granted before this time.
    quiet_until_us: u64,
}

impl Voter {
    /// A voter that (re)starts at `now_us` knowing epoch `epoch` (durable
    /// state); it grants nothing for one lease duration.
    pub fn start(name: &str, cfg: LeaseConfig, epoch: u64, now_us: u64) -> Self {
        cfg.check();
        Self {
            name: name.into(),
            cfg,
            epoch,
            promise: None,
            quiet_until_us: now_us + cfg.duration_us,
        }
    }

    /// A voter whose promise lives in a coordination store (etcd): it
    /// knows `epoch` and, if `holder` is named, has promised it for as long
    /// as the store keeps the promise (the store's lease, not this value's
    /// clock, ends it). No quiet period: the store's promise survives the
    /// store's restarts.
    pub fn held(name: &str, cfg: LeaseConfig, epoch: u64, holder: Option<&str>) -> Self {
        cfg.check();
        Self {
            name: name.into(),
            cfg,
            epoch,
            promise: holder.map(|h| Promise {
                holder: h.into(),
                until_us: u64::MAX,
            }),
            quiet_until_us: 0,
        }
    }

    /// The voter's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The highest epoch this voter knows.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Who holds this voter's promise at `now_us`, if anyone.
    pub fn holder(&self, now_us: u64) -> Option<&str> {
        self.promise
            .as_ref()
            .filter(|p| p.until_us > now_us)
            .map(|p| p.holder.as_str())
    }

    /// Learns of a higher epoch (from a reply, a CAS or replication).
    pub fn observe_epoch(&mut self, epoch: u64) {
        self.epoch = self.epoch.max(epoch);
    }

    /// Answers a request at `now_us`.
    pub fn on_request(&mut self, req: &LeaseRequest, now_us: u64) -> LeaseReply {
        let free = self
            .promise
            .as_ref()
            .is_none_or(|p| p.until_us <= now_us || p.holder == req.candidate);
        let granted = now_us >= self.quiet_until_us && free && req.epoch >= self.epoch;
        if granted {
            self.epoch = req.epoch;
            self.promise = Some(Promise {
                holder: req.candidate.clone(),
                until_us: now_us + self.cfg.duration_us,
            });
        }
        LeaseReply {
            voter: self.name.clone(),
            round: req.round,
            granted,
            epoch: self.epoch,
            holder: self.holder(now_us).map(String::from),
        }
    }

    /// Gives up a promise held by `holder` (a leader stepping down for a
    /// switchover), so another may be granted at once.
    pub fn release(&mut self, holder: &str) {
        if self.promise.as_ref().is_some_and(|p| p.holder == holder) {
            self.promise = None;
        }
    }
}

/// The witness's compare-and-swap of the epoch: succeeds only from the
/// current epoch to the next, and only for the candidate holding the
/// witness's promise. The caller makes the new epoch durable before
/// answering.
pub fn epoch_cas(
    voter: &mut Voter,
    candidate: &str,
    expected: u64,
    now_us: u64,
) -> Result<u64, u64> {
    if voter.epoch == expected && voter.holder(now_us) == Some(candidate) {
        voter.epoch = expected + 1;
        Ok(voter.epoch)
    } else {
        Err(voter.epoch)
    }
}

/// What a data node is, as far as leadership goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Following; never acknowledges writes.
    Follower,
    /// Leading in `epoch`; acknowledges writes only while [`Elector::may_write`].
    Leader {
        /// The epoch it leads.
        epoch: u64,
    },
}

/// What the node must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElectorAction {
    /// Send a lease request to a peer voter (the node asks its own voter
    /// itself, through [`Elector::own_voter`]).
    Request {
        /// The peer's name.
        to: String,
        /// The request.
        req: LeaseRequest,
    },
    /// Ask the witness to move the epoch from `expected` to `expected + 1`.
    Cas {
        /// The epoch the node believes current.
        expected: u64,
    },
    /// Become leader in `epoch`: write `EpochStart`, then take writes.
    Promote {
        /// The new epoch.
        epoch: u64,
    },
    /// The lease lapsed: writes are not acknowledged until a majority
    /// renews it (the node keeps trying, in the same epoch), with why.
    LeaseLost(String),
    /// A higher epoch exists: this node no longer leads and must rejoin
    /// before it may stand again, with why.
    StepDown(String),
}

/// A data node's side of leadership: renews its lease while leading,
/// tries to take over when the leader's lease is gone and it is eligible.
#[derive(Debug)]
pub struct Elector {
    me: String,
    witness: String,
    peers: Vec<String>,
    cfg: LeaseConfig,
    voter: Voter,
    role: Role,
    /// Until when this node may acknowledge writes (its own, shorter view).
    lease_until_us: u64,
    /// Whether the lapse of the current lease was reported.
    lapse_reported: bool,
    eligible: bool,
    round: u64,
    round_sent_us: u64,
    grants: BTreeSet<String>,
    /// A promotion in progress: grants obtained, waiting for the CAS.
    cas_pending: bool,
    /// When the CAS was asked (an answer that never comes is given up
    /// after one lease duration).
    cas_sent_us: u64,
    next_attempt_us: u64,
}

impl Elector {
    /// A node that starts at `now_us` as follower, knowing `epoch`, with
    /// `peer` (the other data node) and `witness` as the other voters.
    pub fn start(
        me: &str,
        peer: &str,
        witness: &str,
        cfg: LeaseConfig,
        epoch: u64,
        now_us: u64,
    ) -> Self {
        Self {
            me: me.into(),
            witness: witness.into(),
            peers: vec![peer.into(), witness.into()],
            cfg,
            voter: Voter::start(me, cfg, epoch, now_us),
            role: Role::Follower,
            lease_until_us: 0,
            lapse_reported: false,
            eligible: false,
            round: 0,
            round_sent_us: 0,
            grants: BTreeSet::new(),
            cas_pending: false,
            cas_sent_us: 0,
            // Voters grant nothing for one duration after they start; the
            // leader gets the duration after that to renew before a
            // follower may try.
            next_attempt_us: now_us + 2 * cfg.duration_us,
        }
    }

    /// This node's own voter (peers' requests are answered with it).
    pub fn own_voter(&mut self) -> &mut Voter {
        &mut self.voter
    }

    /// The node's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether the node may acknowledge a write at `now_us`.
    pub fn may_write(&self, now_us: u64) -> bool {
        // A leader whose own voter has seen a higher epoch (a peer asked
        // for its vote in it) is deposed even before its next tick.
        matches!(self.role, Role::Leader { epoch } if epoch == self.voter.epoch())
            && now_us < self.lease_until_us
    }

    /// Sets whether this node may be promoted (its data within `max_lag`,
    /// as the witness records it).
    pub fn set_eligible(&mut self, eligible: bool) {
        self.eligible = eligible;
    }

    /// Starts as the first leader of a brand-new cluster, in `epoch` (the
    /// witness already allocated it): the lease is taken at the next tick.
    pub fn start_leading(&mut self, epoch: u64) {
        self.role = Role::Leader { epoch };
        self.voter.observe_epoch(epoch);
    }

    fn begin_round(&mut self, now_us: u64, out: &mut Vec<ElectorAction>) {
        self.round += 1;
        self.round_sent_us = now_us;
        self.grants.clear();
        // A leader asks in the epoch it leads (a voter that knows a later
        // one refuses, and the answer deposes it); a candidate in the
        // highest epoch it knows.
        let epoch = match self.role {
            Role::Leader { epoch } => epoch,
            Role::Follower => self.voter.epoch(),
        };
        let req = LeaseRequest {
            candidate: self.me.clone(),
            epoch,
            round: self.round,
        };
        if self.voter.on_request(&req, now_us).granted {
            self.grants.insert(self.me.clone());
        }
        for p in &self.peers {
            // A candidate asks only the witness: its promotion needs the
            // witness anyway, and taking the leader's own vote could only
            // keep a live leader from renewing.
            if self.role == Role::Follower && *p != self.witness {
                continue;
            }
            out.push(ElectorAction::Request {
                to: p.clone(),
                req: req.clone(),
            });
        }
    }

    /// Time passed.
    pub fn on_tick(&mut self, now_us: u64) -> Vec<ElectorAction> {
        let mut out = Vec::new();
        if let Role::Leader { epoch } = self.role
            && self.voter.epoch() > epoch
        {
            let why = format!("epoch {} exists (learned as a voter)", self.voter.epoch());
            self.step_down(why, &mut out);
            return out;
        }
        match self.role {
            Role::Leader { .. } => {
                if now_us >= self.lease_until_us && self.lease_until_us > 0 && !self.lapse_reported
                {
                    self.lapse_reported = true;
                    out.push(ElectorAction::LeaseLost(
                        "no majority renewed the lease in time; writes wait".into(),
                    ));
                }
                if now_us >= self.round_sent_us + self.cfg.renew_every_us || self.round == 0 {
                    self.begin_round(now_us, &mut out);
                }
            }
            Role::Follower => {
                if self.cas_pending && now_us >= self.cas_sent_us + self.cfg.duration_us {
                    // The answer was lost: whatever the witness did, a
                    // later CAS from this epoch fails or succeeds cleanly.
                    self.cas_pending = false;
                    self.lease_until_us = 0;
                }
                if self.eligible && !self.cas_pending && now_us >= self.next_attempt_us {
                    self.next_attempt_us = now_us + self.cfg.renew_every_us;
                    self.begin_round(now_us, &mut out);
                }
            }
        }
        out
    }

    /// Heard from the current leader (replication traffic): a follower does
    /// not try to take over while the leader is plainly alive.
    pub fn on_leader_alive(&mut self, now_us: u64) {
        if self.role == Role::Follower {
            self.next_attempt_us = self.next_attempt_us.max(now_us + self.cfg.duration_us);
        }
    }

    /// A voter answered.
    pub fn on_reply(&mut self, reply: &LeaseReply) -> Vec<ElectorAction> {
        let mut out = Vec::new();
        if reply.epoch > self.voter.epoch() {
            self.voter.observe_epoch(reply.epoch);
            if let Role::Leader { epoch } = self.role
                && reply.epoch > epoch
            {
                self.step_down(
                    format!("{} knows epoch {}", reply.voter, reply.epoch),
                    &mut out,
                );
                return out;
            }
        }
        if reply.round != self.round || !reply.granted {
            return out;
        }
        self.grants.insert(reply.voter.clone());
        if self.grants.len() < 2 {
            return out;
        }
        match self.role {
            Role::Leader { .. } => {
                // Counted from when the request was sent, less the drift margin.
                let until = self.round_sent_us + self.cfg.duration_us - self.cfg.drift_margin_us;
                if until > self.lease_until_us {
                    self.lease_until_us = until;
                    self.lapse_reported = false;
                }
            }
            Role::Follower => {
                // A takeover needs the witness itself among the majority:
                // only the witness allocates epochs.
                if self.grants.contains(&self.witness) && self.eligible && !self.cas_pending {
                    self.cas_pending = true;
                    self.cas_sent_us = self.round_sent_us;
                    self.lease_until_us =
                        self.round_sent_us + self.cfg.duration_us - self.cfg.drift_margin_us;
                    out.push(ElectorAction::Cas {
                        expected: self.voter.epoch(),
                    });
                }
            }
        }
        out
    }

    /// The witness answered the CAS: `Ok(new epoch)` or `Err(its epoch)`.
    pub fn on_cas(&mut self, result: Result<u64, u64>, now_us: u64) -> Vec<ElectorAction> {
        let mut out = Vec::new();
        if !self.cas_pending {
            return out;
        }
        self.cas_pending = false;
        match result {
            Ok(epoch) if now_us < self.lease_until_us => {
                self.voter.observe_epoch(epoch);
                self.role = Role::Leader { epoch };
                // Renew in the new epoch straight away.
                self.round_sent_us = 0;
                out.push(ElectorAction::Promote { epoch });
            }
            Ok(epoch) => {
                // Allocated, but our lease ran out meanwhile: the epoch is
                // burnt, never used; try again later.
                self.voter.observe_epoch(epoch);
                self.lease_until_us = 0;
                self.next_attempt_us = now_us + self.cfg.renew_every_us;
            }
            Err(epoch) => {
                self.voter.observe_epoch(epoch);
                self.lease_until_us = 0;
                self.next_attempt_us = now_us + self.cfg.renew_every_us;
            }
        }
        out
    }

    fn step_down(&mut self, why: String, out: &mut Vec<ElectorAction>) {
        self.role = Role::Follower;
        self.lease_until_us = 0;
        // A deposed leader lets the new one settle before it stands again;
        // the witness promotes it only once the new leader has seen it
        // catch up (it is recorded ineligible until then).
        self.next_attempt_us = self.round_sent_us + 2 * self.cfg.duration_us;
        out.push(ElectorAction::StepDown(why));
    }

    /// After a rejoin completes, a former leader may stand again.
    pub fn allow_promotion_from(&mut self, now_us: u64) {
        self.next_attempt_us = now_us + self.cfg.duration_us;
    }

    /// A leader hands over in a planned switchover at `now_us`: it stops
    /// acknowledging writes at once and gives up its own voter's promise to
    /// itself; it stands again only after two lease durations (should the
    /// follower never take over).
    pub fn hand_over(&mut self, now_us: u64) {
        self.role = Role::Follower;
        self.lease_until_us = 0;
        self.next_attempt_us = now_us + 2 * self.cfg.duration_us;
        let me = self.me.clone();
        self.voter.release(&me);
    }

    /// A follower told by its leader to take over (switchover): the
    /// leader's promise from this node's voter is released and the next
    /// tick asks for a majority.
    pub fn take_over(&mut self, leader: &str, now_us: u64) {
        if self.role == Role::Follower {
            self.voter.release(leader);
            self.next_attempt_us = now_us;
        }
    }

    /// Delays this node's first attempt to lead until `at_us` at the
    /// earliest (a node that was not the last leader lets the one that
    /// was, or the cluster's preferred node, go first).
    pub fn not_before(&mut self, at_us: u64) {
        self.next_attempt_us = self.next_attempt_us.max(at_us);
    }

    /// The epoch this node knows.
    pub fn epoch(&self) -> u64 {
        self.voter.epoch()
    }

    /// An operator's forced promotion (`vigil promote --force`, the
    /// witness gone): leads in `epoch` without a majority and without a
    /// lease that can lapse. Safety then rests on the operator's word that
    /// the old leader is down; a higher epoch seen later still deposes it.
    pub fn force_lead(&mut self, epoch: u64) {
        assert!(epoch > self.voter.epoch(), "a forced epoch is a new one");
        self.voter.observe_epoch(epoch);
        self.role = Role::Leader { epoch };
        self.cas_pending = false;
        self.lease_until_us = u64::MAX / 2;
        self.lapse_reported = false;
    }

    /// Until when (caller's clock, µs) this node may acknowledge writes;
    /// 0 when it holds no lease.
    pub fn lease_until(&self) -> u64 {
        self.lease_until_us
    }

    /// The lease settings.
    pub fn config(&self) -> LeaseConfig {
        self.cfg
    }
}
