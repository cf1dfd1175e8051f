//! Failover as a whole, simulated: two data nodes driven by the real
//! [`Elector`] and a witness running the real [`witness::decide`], with a
//! small model of the log (entries of (epoch, write)), synchronous
//! acknowledgement with the leader's give-up rule, rejoin by truncation
//! into quarantine, and planned switchovers. Seeded and deterministic:
//! messages are delayed, dropped, duplicated and reordered (those to the
//! witness travel on an ordered stream, as on QUIC), links are cut and
//! healed, nodes and the witness crash (a data node loses what it had not
//! fsynced) and restart, processes pause, and every clock runs at its own
//! rate. After every step DESIGN.md's invariants are checked:
//!
//! 1. at most one node may acknowledge writes at any moment, and no epoch
//!    has two leaders;
//! 2. logs agree: two entries at the same index with the same epoch are
//!    the same write;
//! 3. synchronous mode loses nothing: the node that may write holds every
//!    acknowledged write, and no acknowledged write is ever cut into a
//!    quarantine.
//!
//! At the end the network heals and a leader must emerge. 2,000 seeds run
//! by default; `VIGIL_SIM_SEEDS=N` runs N, `VIGIL_SIM_SEED=S` replays one.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use common::Rng;
use vigil_net::lease::{
    Elector, ElectorAction, LeaseConfig, LeaseReply, LeaseRequest, Role, Voter,
};
use vigil_net::wire::Message;
use vigil_net::witness::{WitnessState, decide};

const NODES: [&str; 2] = ["a", "b"];
const W: &str = "w";
/// Simulated time per step, µs.
const STEP_US: u64 = 2_000;
/// A pending write waits this long for the follower before the leader
/// records it ineligible and acknowledges anyway, µs.
const SYNC_TIMEOUT_US: u64 = 100_000;
const STEPS: usize = 2_500;
const HEAL_STEPS: usize = 1_500;

/// Leader `n`'s record of its peer's eligibility, as sent to the witness.
fn eligibility(n: &str, eligible: bool, peer_len: usize, epoch: u64) -> Message {
    Message::Eligibility {
        follower: peer(n).into(),
        eligible,
        durable_lsn: peer_len as u64,
        epoch,
    }
}

fn peer(n: &str) -> &'static str {
    if n == "a" { "b" } else { "a" }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    epoch: u64,
    /// The write's id; 0 is an `EpochStart`.
    wid: u64,
}

#[derive(Debug, Clone)]
enum Msg {
    Lease(LeaseRequest),
    LeaseReply(LeaseReply),
    /// Leader -> follower: entries from `start`, `prev` being the entry
    /// before them (None at 0).
    Append {
        epoch: u64,
        start: usize,
        prev: Option<Entry>,
        entries: Vec<Entry>,
    },
    /// Follower -> leader: durable length, or a mismatch below `len`.
    Ack {
        epoch: u64,
        len: usize,
        mismatch: bool,
    },
    HandOver,
    /// To and from the witness, on an ordered stream.
    Witness(Message),
}

#[derive(Default)]
struct Leading {
    /// The peer's durable length as last acknowledged.
    peer_len: usize,
    /// Where the next append to the peer starts.
    next: usize,
    /// Log indexes written but not yet acknowledged, with the time written.
    pending: VecDeque<(usize, u64)>,
    /// Eligibility of the peer as recorded at the witness (None: unknown).
    reported: Option<bool>,
    /// An eligibility record in flight: (eligible, log length it covers).
    in_flight: Option<(bool, usize)>,
    epoch_start: usize,
    /// The log length up to which writes were acknowledged without the
    /// peer (it was recorded ineligible first).
    given_up_upto: usize,
}

struct Node {
    e: Option<Elector>,
    log: Vec<Entry>,
    durable: usize,
    paused_until: u64,
    lead: Leading,
    quarantine: Vec<Entry>,
    handing_over: bool,
}

struct Sim {
    seed: u64,
    rng: Rng,
    real: u64,
    cfg: LeaseConfig,
    rates: BTreeMap<&'static str, (u64, u64)>,
    nodes: BTreeMap<&'static str, Node>,
    witness: Option<Voter>,
    wstate: WitnessState,
    wire: Vec<(u64, &'static str, &'static str, Msg)>,
    /// Per ordered link, the last delivery time scheduled.
    fifo: BTreeMap<(&'static str, &'static str), u64>,
    cut: BTreeSet<(&'static str, &'static str)>,
    leaders_of_epoch: BTreeMap<u64, &'static str>,
    acked: BTreeSet<u64>,
    next_wid: u64,
    writable_steps: u64,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let cfg = LeaseConfig {
            duration_us: 300_000,
            renew_every_us: 50_000,
            drift_margin_us: 30_000,
        };
        let mut rates = BTreeMap::new();
        for n in ["a", "b", W] {
            // ±3% clock rate, within the 10% drift margin; any offset.
            rates.insert(n, (rng.below(1 << 40), 970_000 + rng.below(60_000)));
        }
        let mut s = Sim {
            seed,
            rng,
            real: 0,
            cfg,
            rates,
            nodes: BTreeMap::new(),
            witness: None,
            wstate: WitnessState::default(),
            wire: Vec::new(),
            fifo: BTreeMap::new(),
            cut: BTreeSet::new(),
            leaders_of_epoch: BTreeMap::new(),
            acked: BTreeSet::new(),
            next_wid: 1,
            writable_steps: 0,
        };
        s.witness = Some(Voter::start(W, cfg, 0, s.now(W)));
        for n in NODES {
            let e = s.elector(n, 0);
            s.nodes.insert(
                n,
                Node {
                    e: Some(e),
                    log: Vec::new(),
                    durable: 0,
                    paused_until: 0,
                    lead: Leading::default(),
                    quarantine: Vec::new(),
                    handing_over: false,
                },
            );
        }
        s
    }

    fn now(&self, who: &str) -> u64 {
        let (offset, ppm) = self.rates[who];
        offset + self.real * ppm / 1_000_000
    }

    fn elector(&self, n: &'static str, epoch: u64) -> Elector {
        let mut e = Elector::start(n, peer(n), W, self.cfg, epoch, self.now(n));
        e.set_eligible(true);
        if n == "b" {
            e.not_before(self.now(n) + 4 * self.cfg.duration_us);
        }
        e
    }

    fn send(&mut self, from: &'static str, to: &'static str, m: Msg) {
        if self.cut.contains(&(from, to)) {
            return;
        }
        let ordered = matches!(m, Msg::Witness(_));
        if ordered {
            // A stream: delayed, never duplicated or reordered (a lost
            // connection loses what was in flight).
            if self.rng.chance(20) {
                return;
            }
            let at = (self.real + 500 + self.rng.below(20_000))
                .max(self.fifo.get(&(from, to)).copied().unwrap_or(0) + 1);
            self.fifo.insert((from, to), at);
            self.wire.push((at, from, to, m));
            return;
        }
        if self.rng.chance(100) {
            return;
        }
        let copies = if self.rng.chance(30) { 2 } else { 1 };
        for _ in 0..copies {
            let at = self.real + 500 + self.rng.below(30_000);
            self.wire.push((at, from, to, m.clone()));
        }
    }

    fn act(&mut self, n: &'static str, actions: Vec<ElectorAction>) {
        if std::env::var("VIGIL_SIM_TRACE").is_ok() && !actions.is_empty() {
            eprintln!("{} {n}: {actions:?}", self.real);
        }
        for a in actions {
            match a {
                ElectorAction::Request { to, req } => {
                    let to = if to == W { W } else { peer(n) };
                    let m = if to == W {
                        Msg::Witness(Message::LeaseAsk {
                            candidate: req.candidate,
                            epoch: req.epoch,
                            round: req.round,
                        })
                    } else {
                        Msg::Lease(req)
                    };
                    self.send(n, to, m);
                }
                ElectorAction::Cas { expected } => self.send(
                    n,
                    W,
                    Msg::Witness(Message::EpochCas {
                        candidate: n.into(),
                        expected,
                    }),
                ),
                ElectorAction::Promote { epoch } => {
                    if let Some(prev) = self.leaders_of_epoch.insert(epoch, n) {
                        panic!("epoch {epoch} led by {prev} and {n}");
                    }
                    let node = self.nodes.get_mut(n).expect("node");
                    // A promotion writes EpochStart after everything it holds
                    // durably (what it had not fsynced is not part of it).
                    node.log.truncate(node.durable);
                    node.log.push(Entry { epoch, wid: 0 });
                    node.durable = node.log.len();
                    node.lead = Leading {
                        epoch_start: node.log.len() - 1,
                        next: node.log.len() - 1,
                        ..Leading::default()
                    };
                    node.handing_over = false;
                }
                ElectorAction::StepDown(_) | ElectorAction::LeaseLost(_) => {}
            }
        }
    }

    fn deliver(&mut self, from: &'static str, to: &'static str, m: Msg) {
        if to == W {
            let Msg::Witness(m) = m else { return };
            let now = self.now(W);
            let Some(voter) = self.witness.as_mut() else {
                return;
            };
            if let Some(answer) = decide(&mut self.wstate, voter, m, now) {
                self.send(W, from, Msg::Witness(answer));
            }
            return;
        }
        if std::env::var("VIGIL_SIM_TRACE").is_ok()
            && !matches!(m, Msg::Append { .. } | Msg::Ack { .. })
        {
            eprintln!("{} {from}->{to}: {m:?}", self.real);
        }
        let now = self.now(to);
        let real = self.real;
        let node = self.nodes.get_mut(to).expect("node");
        let Some(e) = node.e.as_mut() else { return };
        match m {
            Msg::Lease(req) => {
                let r = e.own_voter().on_request(&req, now);
                self.send(to, from, Msg::LeaseReply(r));
            }
            Msg::LeaseReply(r) => {
                let acts = e.on_reply(&r);
                self.act(to, acts);
            }
            Msg::Witness(Message::LeaseAnswer {
                voter,
                round,
                granted,
                epoch,
                holder,
            }) => {
                let acts = e.on_reply(&LeaseReply {
                    voter,
                    round,
                    granted,
                    epoch,
                    holder: (!holder.is_empty()).then_some(holder),
                });
                self.act(to, acts);
            }
            Msg::Witness(Message::EpochCasAnswer { ok, epoch }) => {
                let acts = e.on_cas(if ok { Ok(epoch) } else { Err(epoch) }, now);
                self.act(to, acts);
            }
            Msg::Witness(Message::EligibilityRecorded { .. }) => {
                if let Some((eligible, _)) = node.lead.in_flight.take() {
                    node.lead.reported = Some(eligible);
                }
            }
            Msg::Witness(_) => {}
            Msg::HandOver => {
                let caught_up = node.durable == node.log.len();
                if caught_up {
                    e.take_over(from, now);
                }
            }
            Msg::Append {
                epoch,
                start,
                prev,
                entries,
            } => {
                // Fencing at the data: an older epoch's appends are refused.
                if epoch < e.epoch() || matches!(e.role(), Role::Leader { .. }) {
                    return;
                }
                e.own_voter().observe_epoch(epoch);
                e.on_leader_alive(now);
                let prefix_ok = match (start, prev) {
                    (0, _) => true,
                    (s, Some(p)) => node.log.get(s - 1) == Some(&p),
                    (_, None) => false,
                };
                if !prefix_ok {
                    let len = node.log.len().min(start).saturating_sub(1);
                    self.send(
                        to,
                        from,
                        Msg::Ack {
                            epoch,
                            len,
                            mismatch: true,
                        },
                    );
                    return;
                }
                for (k, en) in entries.into_iter().enumerate() {
                    let i = start + k;
                    match node.log.get(i) {
                        Some(x) if *x == en => {}
                        Some(_) => {
                            // Rejoin: what the new leader lacks goes to
                            // quarantine before the log is cut.
                            let cut = node.log.split_off(i);
                            node.quarantine
                                .extend(cut.into_iter().filter(|c| c.wid != 0));
                            node.durable = node.durable.min(i);
                            node.log.push(en);
                        }
                        None => node.log.push(en),
                    }
                }
                let _ = real;
            }
            Msg::Ack {
                epoch,
                len,
                mismatch,
            } => {
                let leading = matches!(e.role(), Role::Leader { epoch: ep } if ep == epoch);
                if !leading {
                    return;
                }
                if mismatch {
                    node.lead.next = node.lead.next.min(len);
                } else {
                    node.lead.peer_len = node.lead.peer_len.max(len);
                    node.lead.next = node.lead.next.max(len);
                }
            }
        }
    }

    /// What a leader does each step: write, replicate, acknowledge.
    fn lead(&mut self, n: &'static str) {
        let now = self.now(n);
        let real = self.real;
        let may_write = self.nodes[n].e.as_ref().is_some_and(|e| e.may_write(now));
        let epoch = match self.nodes[n].e.as_ref().map(Elector::role) {
            Some(Role::Leader { epoch }) => epoch,
            _ => return,
        };
        if may_write && !self.nodes[n].handing_over && self.rng.chance(300) {
            let wid = self.next_wid;
            self.next_wid += 1;
            let node = self.nodes.get_mut(n).expect("node");
            node.log.push(Entry { epoch, wid });
            node.durable = node.log.len();
            node.lead.pending.push_back((node.log.len() - 1, real));
        }
        // Replicate (an empty append is the heartbeat).
        let (start, prev, entries) = {
            let node = &self.nodes[n];
            let start = node.lead.next.min(node.log.len());
            let end = (start + 32).min(node.durable);
            let prev = start.checked_sub(1).map(|i| node.log[i]);
            (start, prev, node.log[start..end.max(start)].to_vec())
        };
        if self.rng.chance(400) {
            self.send(
                n,
                peer(n),
                Msg::Append {
                    epoch,
                    start,
                    prev,
                    entries,
                },
            );
        }
        // Acknowledge: what the follower holds, or, past the timeout, once
        // the follower is recorded ineligible (the record covering it).
        let node = self.nodes.get_mut(n).expect("node");
        let l = &mut node.lead;
        let log_len = node.log.len();
        let mut to_ack = Vec::new();
        while let Some(&(idx, at)) = l.pending.front() {
            let held = idx < l.peer_len;
            let given_up = l.reported == Some(false) && l.in_flight.is_none();
            if held || given_up {
                l.pending.pop_front();
                to_ack.push(idx);
                if !held {
                    l.given_up_upto = l.given_up_upto.max(idx + 1);
                }
            } else {
                if real >= at + SYNC_TIMEOUT_US && l.in_flight.is_none() {
                    l.in_flight = Some((false, log_len));
                    let m = eligibility(n, false, l.peer_len, epoch);
                    self.send(n, W, Msg::Witness(m));
                }
                break;
            }
        }
        let node = self.nodes.get_mut(n).expect("node");
        let l = &mut node.lead;
        // Eligible again once the follower holds this epoch's start and
        // every write acknowledged without it (as the real leader decides).
        if l.reported != Some(true)
            && l.in_flight.is_none()
            && l.peer_len >= l.given_up_upto
            && l.peer_len > l.epoch_start
        {
            l.in_flight = Some((true, node.log.len()));
            let m = eligibility(n, true, l.peer_len, epoch);
            self.send(n, W, Msg::Witness(m));
        }
        let still = self.nodes[n]
            .e
            .as_ref()
            .is_some_and(|e| e.may_write(self.now(n)));
        if still {
            for idx in to_ack {
                let wid = self.nodes[n].log[idx].wid;
                if wid != 0 {
                    self.acked.insert(wid);
                }
            }
        } else {
            // Not acknowledged: the lease lapsed before the answer went out.
            let node = self.nodes.get_mut(n).expect("node");
            node.lead.pending.clear();
        }
    }

    fn step(&mut self, faults: bool) {
        self.real += STEP_US;
        if faults {
            if self.rng.chance(8) {
                let all = ["a", "b", W];
                let (x, y) = (
                    all[self.rng.below(3) as usize],
                    all[self.rng.below(3) as usize],
                );
                if x != y && !self.cut.remove(&(x, y)) {
                    self.cut.insert((x, y));
                }
            }
            if self.rng.chance(1) {
                // A data node crashes: what it had not fsynced is gone.
                let n = NODES[self.rng.below(2) as usize];
                let node = self.nodes.get_mut(n).expect("node");
                node.e = None;
                node.log.truncate(node.durable);
                node.lead = Leading::default();
            }
            if self.rng.chance(1) {
                // The witness restarts from its durable state.
                let now = self.now(W);
                self.witness = Some(Voter::start(W, self.cfg, self.wstate.epoch, now));
            }
            if self.rng.chance(1) {
                let n = NODES[self.rng.below(2) as usize];
                let until = self.real + self.rng.below(3 * self.cfg.duration_us);
                self.nodes.get_mut(n).expect("node").paused_until = until;
            }
            if self.rng.chance(2) {
                self.switchover();
            }
        }
        for n in NODES {
            if self.nodes[n].e.is_none() && self.rng.chance(20) {
                // Restarts knowing the epoch of its log (it learns more).
                let epoch = self.nodes[n].log.iter().map(|e| e.epoch).max().unwrap_or(0);
                let e = self.elector(n, epoch);
                self.nodes.get_mut(n).expect("node").e = Some(e);
            }
        }
        let real = self.real;
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.wire.len() {
            let (at, _, to, _) = &self.wire[i];
            let paused = *to != W && self.nodes[to].paused_until > real;
            if *at <= real && !paused {
                due.push(self.wire.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|(at, ..)| *at);
        for (_, from, to, m) in due {
            self.deliver(from, to, m);
        }
        for n in NODES {
            if self.nodes[n].paused_until > real {
                continue;
            }
            let now = self.now(n);
            let acts = match self.nodes.get_mut(n).and_then(|x| x.e.as_mut()) {
                Some(e) => e.on_tick(now),
                None => continue,
            };
            self.act(n, acts);
            self.lead(n);
            // A follower fsyncs what it received now and then, and acks.
            let node = self.nodes.get_mut(n).expect("node");
            if node.e.as_ref().is_some_and(|e| e.role() == Role::Follower) && self.rng.chance(500) {
                node.durable = node.log.len();
                let epoch = node.e.as_ref().map_or(0, Elector::epoch);
                let len = node.durable;
                self.send(
                    n,
                    peer(n),
                    Msg::Ack {
                        epoch,
                        len,
                        mismatch: false,
                    },
                );
            }
        }
        self.check();
    }

    fn switchover(&mut self) {
        for n in NODES {
            let now = self.now(n);
            let node = self.nodes.get_mut(n).expect("node");
            let Some(e) = node.e.as_mut() else { continue };
            if e.may_write(now)
                && node.lead.pending.is_empty()
                && node.lead.peer_len == node.log.len()
            {
                node.handing_over = true;
                e.hand_over(now);
                let release = Message::LeaseRelease { holder: n.into() };
                self.send(n, W, Msg::Witness(release));
                self.send(n, peer(n), Msg::HandOver);
            }
        }
    }

    fn check(&mut self) {
        let seed = self.seed;
        let writers: Vec<&str> = NODES
            .iter()
            .copied()
            .filter(|n| {
                self.nodes[n]
                    .e
                    .as_ref()
                    .is_some_and(|e| e.may_write(self.now(n)))
            })
            .collect();
        assert!(
            writers.len() <= 1,
            "seed {seed}: two writers at {}: {writers:?}",
            self.real
        );
        if std::env::var("VIGIL_SIM_TRACE").is_ok() {
            let w = writers.first().copied().unwrap_or("-");
            let crashed: Vec<&str> = NODES
                .iter()
                .copied()
                .filter(|n| self.nodes[n].e.is_none())
                .collect();
            let r = |n: &str| self.nodes[n].e.as_ref().map(|e| (e.role(), e.epoch()));
            eprintln!(
                "{} writer {w} crashed {crashed:?} a={:?} b={:?} paused a={} b={}",
                self.real,
                r("a"),
                r("b"),
                self.nodes["a"].paused_until > self.real,
                self.nodes["b"].paused_until > self.real
            );
        }
        let (a, b) = (&self.nodes["a"].log, &self.nodes["b"].log);
        for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
            assert!(
                x.epoch != y.epoch || x == y,
                "seed {seed}: logs disagree at {i} within epoch {}: {x:?} vs {y:?}",
                x.epoch
            );
        }
        for n in NODES {
            for q in &self.nodes[n].quarantine {
                assert!(
                    !self.acked.contains(&q.wid),
                    "seed {seed}: acknowledged write {} cut into {n}'s quarantine",
                    q.wid
                );
            }
        }
        if let [w] = writers[..] {
            self.writable_steps += 1;
            let held: BTreeSet<u64> = self.nodes[w].log[..self.nodes[w].durable]
                .iter()
                .map(|e| e.wid)
                .collect();
            if let Some(lost) = self.acked.iter().find(|x| !held.contains(x)) {
                panic!(
                    "seed {seed}: {w} leads without acknowledged write {lost} at {}",
                    self.real
                );
            }
        }
    }
}

/// Runs one seed; returns how many writes were acknowledged and how many
/// epochs were led.
fn run(seed: u64) -> (usize, usize) {
    let mut sim = Sim::new(seed);
    for _ in 0..STEPS {
        sim.step(true);
    }
    sim.cut.clear();
    if sim.witness.is_none() {
        let now = sim.now(W);
        sim.witness = Some(Voter::start(W, sim.cfg, sim.wstate.epoch, now));
    }
    for n in NODES {
        sim.nodes.get_mut(n).expect("node").paused_until = 0;
    }
    let before = sim.writable_steps;
    for _ in 0..HEAL_STEPS {
        sim.step(false);
    }
    let led = sim.writable_steps - before;
    if led <= (HEAL_STEPS / 3) as u64 {
        for n in NODES {
            let node = &sim.nodes[n];
            eprintln!(
                "{n}: role {:?} epoch {:?} log {} durable {} paused {}",
                node.e.as_ref().map(Elector::role),
                node.e.as_ref().map(Elector::epoch),
                node.log.len(),
                node.durable,
                node.paused_until
            );
        }
        eprintln!(
            "witness {:?} voter epoch {:?}",
            sim.wstate,
            sim.witness.as_ref().map(Voter::epoch)
        );
    }
    assert!(
        led > (HEAL_STEPS / 3) as u64,
        "seed {seed}: no stable leader after healing ({led} of {HEAL_STEPS} steps)"
    );
    (sim.acked.len(), sim.leaders_of_epoch.len())
}

#[test]
fn failover_keeps_every_invariant_across_seeds() {
    let seeds: Vec<u64> = match std::env::var("VIGIL_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("VIGIL_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("VIGIL_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(2_000u64);
            (1..=n).collect()
        }
    };
    let (mut acked, mut epochs) = (0, 0);
    for seed in seeds {
        match std::panic::catch_unwind(|| run(seed)) {
            Ok((n, e)) => {
                acked += n;
                epochs += e;
            }
            Err(e) => {
                eprintln!(
                    "replay: VIGIL_SIM_SEED={seed} cargo test -p vigil-net --test simulated_failover"
                );
                std::panic::resume_unwind(e);
            }
        }
    }
    eprintln!("{acked} writes acknowledged, {epochs} epochs led");
    assert!(
        acked > 0 && epochs > 0,
        "the simulation acknowledged writes"
    );
}
