//! The lease machines (two data nodes and a witness) driven by a seeded
//! simulator: messages delayed and dropped, links cut and healed, nodes
//! and the witness crashed and restarted, every clock running at its own
//! rate. Checked at every step: at most one node may acknowledge writes at
//! any moment, and no two nodes ever lead the same epoch. Checked at the
//! end: once the network heals, some node leads again.

use std::collections::BTreeMap;

use vigil_testkit::Rng;
use vigil_testkit::sim::{Clock, Faults, Name, Net};

use vigil_net::proto::lease::{
    Elector, ElectorAction, LeaseConfig, LeaseReply, LeaseRequest, Role, Voter, epoch_cas,
};

#[derive(Clone)]
enum Msg {
    Req(LeaseRequest),
    Reply(LeaseReply),
    Cas {
        from: String,
        expected: u64,
    },
    CasReply(Result<u64, u64>),
    /// Replication traffic from a leader: it is alive.
    Alive,
}

/// How every message travels: lost one time in twenty, delayed up to 61 ms.
const FAULTS: Faults = Faults::datagram(50, 0, 1_000, 60_999);

struct Sim {
    /// Time, clocks and the network (the shared harness).
    net: Net<Msg>,
    cfg: LeaseConfig,
    nodes: BTreeMap<String, Option<Elector>>,
    witness: Option<Voter>,
    /// The witness's durable epoch.
    witness_epoch: u64,
    leaders_of_epoch: BTreeMap<u64, String>,
    /// Real times at which some node could write.
    writable_steps: u64,
    /// Deposed nodes whose rejoin completes at a real time.
    rejoins: Vec<(u64, String)>,
}

const NODES: [Name; 2] = ["a", "b"];
const W: Name = "w";

impl Sim {
    fn new(seed: u64) -> Self {
        let mut net = Net::new(Rng::new(seed | 1));
        let cfg = LeaseConfig::new();
        for n in ["a", "b", W] {
            // ±3% rate, within the 10% drift margin.
            let offset = net.rng.below(1_000_000_000);
            let rate_ppm = 970_000 + net.rng.below(60_000);
            net.add_node_with_clock(n, Clock { offset, rate_ppm });
        }
        let mut s = Sim {
            net,
            cfg,
            nodes: BTreeMap::new(),
            witness: None,
            witness_epoch: 1,
            leaders_of_epoch: BTreeMap::new(),
            writable_steps: 0,
            rejoins: Vec::new(),
        };
        s.witness = Some(Voter::start(W, cfg, 1, s.now(W)));
        for n in NODES {
            let peer = if n == "a" { "b" } else { "a" };
            let mut e = Elector::start(n, peer, W, cfg, 1, s.now(n));
            e.set_eligible(true);
            if n == "a" {
                e.start_leading(1);
            }
            s.nodes.insert(n.to_owned(), Some(e));
        }
        s
    }

    fn now(&self, who: &str) -> u64 {
        self.net.now(self.net.name_of(who))
    }

    fn send(&mut self, from: &str, to: &str, m: Msg) {
        let (from, to) = (self.net.name_of(from), self.net.name_of(to));
        self.net.send(from, to, m, FAULTS);
    }

    fn act(&mut self, node: &str, actions: Vec<ElectorAction>) {
        for a in actions {
            match a {
                ElectorAction::Request { to, req } => self.send(node, &to, Msg::Req(req)),
                ElectorAction::Cas { expected } => self.send(
                    node,
                    W,
                    Msg::Cas {
                        from: node.into(),
                        expected,
                    },
                ),
                ElectorAction::Promote { epoch } => {
                    if let Some(prev) = self.leaders_of_epoch.insert(epoch, node.into()) {
                        assert_eq!(prev, node, "epoch {epoch} led by {prev} and {node}");
                    }
                }
                ElectorAction::StepDown(_) => {
                    // Rejoin (cut the divergent tail, follow) takes a moment;
                    // then the node may stand again.
                    self.rejoins
                        .push((self.net.real() + 1_000_000, node.to_owned()));
                }
                ElectorAction::LeaseLost(_) => {}
            }
        }
    }

    fn deliver(&mut self, from: Name, to: Name, m: Msg) {
        match m {
            Msg::Req(req) => {
                let reply = if to == W {
                    let now = self.now(W);
                    self.witness.as_mut().map(|w| w.on_request(&req, now))
                } else {
                    let now = self.now(to);
                    self.nodes
                        .get_mut(to)
                        .and_then(|n| n.as_mut())
                        .map(|e| e.own_voter().on_request(&req, now))
                };
                if let Some(r) = reply {
                    self.send(to, from, Msg::Reply(r));
                }
            }
            Msg::Reply(r) => {
                let acts = match self.nodes.get_mut(to).and_then(|n| n.as_mut()) {
                    Some(e) => e.on_reply(&r),
                    None => return,
                };
                self.act(to, acts);
            }
            Msg::Cas {
                from: who,
                expected,
            } => {
                let now = self.now(W);
                if let Some(w) = self.witness.as_mut() {
                    let r = epoch_cas(w, &who, expected, now);
                    if let Ok(e) = r {
                        self.witness_epoch = e; // durable before the reply
                    }
                    self.send(W, &who, Msg::CasReply(r));
                }
            }
            Msg::Alive => {
                let now = self.now(to);
                if let Some(e) = self.nodes.get_mut(to).and_then(|n| n.as_mut()) {
                    e.on_leader_alive(now);
                }
            }
            Msg::CasReply(r) => {
                let now = self.now(to);
                let acts = match self.nodes.get_mut(to).and_then(|n| n.as_mut()) {
                    Some(e) => e.on_cas(r, now),
                    None => return,
                };
                self.act(to, acts);
            }
        }
    }

    fn step(&mut self, faults: bool) {
        self.net.advance(5_000);
        if faults {
            if self.net.rng.chance(4) {
                let (x, y) = (
                    ["a", "b", W][self.net.rng.below(3) as usize],
                    ["a", "b", W][self.net.rng.below(3) as usize],
                );
                if x != y {
                    self.net.toggle_cut(x, y);
                }
            }
            if self.net.rng.chance(1) {
                // A data node crashes; it restarts later knowing its epoch.
                let n = NODES[self.net.rng.below(2) as usize];
                self.nodes.insert(n.into(), None);
            }
            if self.net.rng.chance(1) {
                let epoch = self.witness_epoch;
                self.witness = Some(Voter::start(W, self.cfg, epoch, self.now(W)));
            }
        }
        for n in NODES {
            if self.nodes[n].is_none() && self.net.rng.chance(20) {
                let peer = if n == "a" { "b" } else { "a" };
                let known = self.leaders_of_epoch.keys().max().copied().unwrap_or(1);
                let mut e = Elector::start(n, peer, W, self.cfg, known, self.now(n));
                e.set_eligible(true);
                self.nodes.insert(n.into(), Some(e));
            }
        }
        let due: Vec<String> = self
            .rejoins
            .iter()
            .filter(|(at, _)| *at <= self.net.real())
            .map(|(_, n)| n.clone())
            .collect();
        let real = self.net.real();
        self.rejoins.retain(|(at, _)| *at > real);
        for n in due {
            let now = self.now(&n);
            if let Some(e) = self.nodes.get_mut(&n).and_then(|e| e.as_mut()) {
                e.allow_promotion_from(now);
            }
        }
        while let Some((from, to, m)) = self.net.next_due() {
            self.deliver(from, to, m);
        }
        for n in NODES {
            let now = self.now(n);
            let acts = match self.nodes.get_mut(n).and_then(|e| e.as_mut()) {
                Some(e) => e.on_tick(now),
                None => continue,
            };
            self.act(n, acts);
        }
        // Invariant: at most one node may write now.
        let writers: Vec<&str> = NODES
            .iter()
            .copied()
            .filter(|n| {
                self.nodes[*n]
                    .as_ref()
                    .is_some_and(|e| e.may_write(self.now(n)))
            })
            .collect();
        assert!(
            writers.len() <= 1,
            "two writers at real time {}: {writers:?}",
            self.net.real()
        );
        if let [w] = writers[..] {
            self.writable_steps += 1;
            let peer = if w == "a" { "b" } else { "a" };
            if self.net.real().is_multiple_of(50_000) {
                self.send(w, peer, Msg::Alive);
            }
        }
    }
}

fn run(seed: u64) {
    let mut sim = Sim::new(seed);
    for _ in 0..20_000 {
        sim.step(true);
    }
    // Heal everything; a leader must emerge and hold.
    sim.net.heal_all();
    if sim.witness.is_none() {
        let e = sim.witness_epoch;
        sim.witness = Some(Voter::start(W, sim.cfg, e, sim.now(W)));
    }
    let before = sim.writable_steps;
    for _ in 0..4_000 {
        sim.step(false);
    }
    let led = sim.writable_steps - before;
    assert!(
        led > 2_000,
        "seed {seed}: no stable leader after healing ({led} of 4000 steps)"
    );
    let roles: Vec<Role> = sim.nodes.values().flatten().map(Elector::role).collect();
    assert!(
        roles.iter().any(|r| matches!(r, Role::Leader { .. })),
        "seed {seed}"
    );
}

#[test]
fn at_most_one_writer_under_partitions_crashes_and_clock_drift() {
    for seed in [1, 2, 5, 8, 13, 21, 34, 55, 89, 144] {
        run(seed);
    }
}

#[test]
fn the_follower_takes_over_only_after_the_leader_lease_is_gone() {
    let mut sim = Sim::new(77);
    // Let the first leader establish its lease (voters grant nothing for
    // one lease duration after they start).
    for _ in 0..1_000 {
        sim.step(false);
    }
    let a_now = sim.now("a");
    assert!(
        sim.nodes["a"].as_ref().expect("a").may_write(a_now),
        "a leads"
    );
    // Cut a off from everyone: it must stop writing before b starts.
    for x in ["b", W] {
        sim.net.cut("a", x);
        sim.net.cut(x, "a");
    }
    let mut a_stopped = None;
    let mut b_started = None;
    for i in 0..4_000 {
        sim.step(false);
        let a_now = sim.now("a");
        let b_now = sim.now("b");
        if a_stopped.is_none() && !sim.nodes["a"].as_ref().expect("a").may_write(a_now) {
            a_stopped = Some(i);
        }
        if b_started.is_none() && sim.nodes["b"].as_ref().expect("b").may_write(b_now) {
            b_started = Some(i);
        }
    }
    let (stopped, started) = (
        a_stopped.expect("a stopped"),
        b_started.expect("b took over"),
    );
    assert!(
        stopped < started,
        "a stopped at step {stopped}, b started at {started}"
    );
    assert_eq!(sim.leaders_of_epoch.get(&2).map(String::as_str), Some("b"));
}

#[test]
fn an_ineligible_follower_never_takes_over() {
    let mut sim = Sim::new(5);
    if let Some(Some(b)) = sim.nodes.get_mut("b") {
        b.set_eligible(false);
    }
    for _ in 0..1_000 {
        sim.step(false);
    }
    sim.nodes.insert("a".into(), None); // the leader is gone for good
    for _ in 0..4_000 {
        sim.net.advance(5_000);
        let b_now = sim.now("b");
        let acts = sim
            .nodes
            .get_mut("b")
            .and_then(|b| b.as_mut())
            .expect("b")
            .on_tick(b_now);
        assert!(
            acts.is_empty(),
            "an ineligible follower asks for nothing: {acts:?}"
        );
    }
    assert!(!sim.leaders_of_epoch.contains_key(&2));
}
