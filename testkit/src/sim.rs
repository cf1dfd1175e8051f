//! The one simulation harness the protocol simulators share (as
//! quinn-proto's tests share one `Pair`): simulated real time, a clock per
//! node that drifts at its own rate from its own offset, and a network
//! that delays, drops, duplicates and reorders messages, holds streams in
//! order, cuts links one direction at a time, and holds back what is
//! addressed to a paused node. What a message *means*, and what a crash
//! loses, stays with each simulator; the harness only moves messages and
//! keeps time.
//!
//! Deterministic: every random choice comes from [`Net::rng`], seeded once,
//! so a failing seed replays exactly.

use std::collections::{BTreeMap, BTreeSet};

use crate::Rng;

/// A node's name.
pub type Name = &'static str;

/// Most messages in flight at once: a simulator that exceeds it has a
/// feedback loop, and fails loudly rather than slowing to a crawl.
pub const IN_FLIGHT_MAX: usize = 1 << 20;

/// How a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// Lost, per thousand.
    pub drop_per_mille: u64,
    /// Delivered twice, per thousand (never on a stream).
    pub dup_per_mille: u64,
    /// Shortest delay, µs of real time.
    pub delay_min_us: u64,
    /// Longest delay, µs of real time.
    pub delay_max_us: u64,
    /// On a stream (as on a QUIC stream): delivered in the order sent on
    /// its link, never duplicated; a loss stands for the connection
    /// breaking under it.
    pub ordered: bool,
}

impl Faults {
    /// Datagram-like: delayed in `min..=max` µs, so reordered; lost and
    /// duplicated at the given rates.
    pub const fn datagram(drop_per_mille: u64, dup_per_mille: u64, min: u64, max: u64) -> Self {
        Self {
            drop_per_mille,
            dup_per_mille,
            delay_min_us: min,
            delay_max_us: max,
            ordered: false,
        }
    }

    /// A stream: delayed in `min..=max` µs but in order, lost at the rate.
    pub const fn stream(drop_per_mille: u64, min: u64, max: u64) -> Self {
        Self {
            drop_per_mille,
            dup_per_mille: 0,
            delay_min_us: min,
            delay_max_us: max,
            ordered: true,
        }
    }

    /// The same, never lost or duplicated.
    pub const fn lossless(self) -> Self {
        Self {
            drop_per_mille: 0,
            dup_per_mille: 0,
            ..self
        }
    }
}

/// A node's clock: `offset + real * rate_ppm / 1e6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// The reading at real time 0, µs.
    pub offset: u64,
    /// Rate in parts per million of real time.
    pub rate_ppm: u64,
}

impl Clock {
    /// The reading at real time `real`.
    pub fn at(&self, real: u64) -> u64 {
        self.offset + real * self.rate_ppm / 1_000_000
    }
}

/// One message on the wire.
#[derive(Debug)]
struct InFlight<M> {
    at: u64,
    seq: u64,
    from: Name,
    to: Name,
    m: M,
}

/// Time, clocks and the network of one simulation run.
#[derive(Debug)]
pub struct Net<M> {
    /// The run's one source of randomness; simulators draw from it too.
    pub rng: Rng,
    real: u64,
    clocks: BTreeMap<Name, Clock>,
    wire: Vec<InFlight<M>>,
    /// Per stream link, the latest delivery time scheduled.
    fifo: BTreeMap<(Name, Name), u64>,
    cut: BTreeSet<(Name, Name)>,
    paused_until: BTreeMap<Name, u64>,
    next_seq: u64,
}

impl<M: Clone> Net<M> {
    /// An empty network at real time 0, with randomness from `rng`.
    pub fn new(rng: Rng) -> Self {
        Self {
            rng,
            real: 0,
            clocks: BTreeMap::new(),
            wire: Vec::new(),
            fifo: BTreeMap::new(),
            cut: BTreeSet::new(),
            paused_until: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Adds node `n` with a clock at any offset (below 2^40 µs) running
    /// within ±3% of real time: inside the lease's 10% drift margin.
    pub fn add_node(&mut self, n: Name) {
        let offset = self.rng.below(1 << 40);
        let rate_ppm = 970_000 + self.rng.below(60_000);
        self.add_node_with_clock(n, Clock { offset, rate_ppm });
    }

    /// Adds node `n` with the given clock.
    pub fn add_node_with_clock(&mut self, n: Name, clock: Clock) {
        assert!(clock.rate_ppm > 0, "a clock must run");
        self.clocks.insert(n, clock);
    }

    /// The registered name equal to `n`, for a simulator whose messages
    /// carry names as strings; panics for a node never added.
    pub fn name_of(&self, n: &str) -> Name {
        self.clocks
            .keys()
            .copied()
            .find(|k| *k == n)
            .unwrap_or_else(|| panic!("no node {n}"))
    }

    /// Real time, µs since the run began.
    pub fn real(&self) -> u64 {
        self.real
    }

    /// Node `n`'s clock now.
    pub fn now(&self, n: Name) -> u64 {
        self.clocks
            .get(n)
            .unwrap_or_else(|| panic!("no node {n}"))
            .at(self.real)
    }

    /// Moves real time on by `us`.
    pub fn advance(&mut self, us: u64) {
        self.real += us;
    }

    /// Sends `m` from `from` to `to` as `f` says; returns the copies put on
    /// the wire (0: cut or lost).
    pub fn send(&mut self, from: Name, to: Name, m: M, f: Faults) -> usize {
        assert!(f.delay_min_us <= f.delay_max_us, "{f:?}");
        assert!(
            self.wire.len() < IN_FLIGHT_MAX,
            "more than {IN_FLIGHT_MAX} messages in flight"
        );
        if self.cut.contains(&(from, to)) || self.rng.chance(f.drop_per_mille) {
            return 0;
        }
        let copies = if !f.ordered && self.rng.chance(f.dup_per_mille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = self.real + self.rng.between(f.delay_min_us, f.delay_max_us);
            if f.ordered {
                at = at.max(self.fifo.get(&(from, to)).map_or(0, |t| t + 1));
                self.fifo.insert((from, to), at);
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            self.wire.push(InFlight {
                at,
                seq,
                from,
                to,
                m: m.clone(),
            });
        }
        copies
    }

    /// The earliest message due by now whose receiver is not paused,
    /// taken off the wire: `(from, to, message)`. Messages due at the same
    /// time come in the order sent.
    pub fn next_due(&mut self) -> Option<(Name, Name, M)> {
        let real = self.real;
        let i = self
            .wire
            .iter()
            .enumerate()
            .filter(|(_, x)| x.at <= real && !self.is_paused(x.to))
            .min_by_key(|(_, x)| (x.at, x.seq))
            .map(|(i, _)| i)?;
        let x = self.wire.swap_remove(i);
        Some((x.from, x.to, x.m))
    }

    /// Takes every message in flight from `from` to `to`, in the order
    /// they would arrive.
    pub fn take_between(&mut self, from: Name, to: Name) -> Vec<M> {
        let mut taken = Vec::new();
        let mut kept = Vec::with_capacity(self.wire.len());
        for x in self.wire.drain(..) {
            if x.from == from && x.to == to {
                taken.push(x);
            } else {
                kept.push(x);
            }
        }
        self.wire = kept;
        taken.sort_by_key(|x| (x.at, x.seq));
        taken.into_iter().map(|x| x.m).collect()
    }

    /// A connection between `a` and `b` breaks: what was in flight either
    /// way is lost.
    pub fn reset(&mut self, a: Name, b: Name) {
        self.wire
            .retain(|x| !((x.from == a && x.to == b) || (x.from == b && x.to == a)));
    }

    /// Whether messages from `from` to `to` are lost.
    pub fn is_cut(&self, from: Name, to: Name) -> bool {
        self.cut.contains(&(from, to))
    }

    /// Cuts the link from `from` to `to` (one direction).
    pub fn cut(&mut self, from: Name, to: Name) {
        self.cut.insert((from, to));
    }

    /// Heals the link from `from` to `to`.
    pub fn heal(&mut self, from: Name, to: Name) {
        self.cut.remove(&(from, to));
    }

    /// Cuts the link if it was whole, heals it if it was cut; returns
    /// whether it is cut now.
    pub fn toggle_cut(&mut self, from: Name, to: Name) -> bool {
        if self.cut.remove(&(from, to)) {
            false
        } else {
            self.cut.insert((from, to));
            true
        }
    }

    /// Heals every link.
    pub fn heal_all(&mut self) {
        self.cut.clear();
    }

    /// Pauses node `n` until real time `until`: nothing is delivered to it
    /// meanwhile (it stays on the wire), and the simulator skips its ticks.
    pub fn pause(&mut self, n: Name, until: u64) {
        self.paused_until.insert(n, until);
    }

    /// Ends a pause of `n` now.
    pub fn resume(&mut self, n: Name) {
        self.paused_until.remove(n);
    }

    /// Whether `n` is paused now.
    pub fn is_paused(&self, n: Name) -> bool {
        self.paused_until.get(n).is_some_and(|&t| t > self.real)
    }

    /// Messages on the wire.
    pub fn in_flight(&self) -> usize {
        self.wire.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATAGRAM: Faults = Faults::datagram(0, 0, 10, 1_000);

    fn drain(sim: &mut Net<u32>) -> Vec<(Name, Name, u32)> {
        std::iter::from_fn(|| sim.next_due()).collect()
    }

    #[test]
    fn streams_keep_order_and_datagrams_may_not() {
        let mut sim = Net::new(Rng::new(7));
        sim.add_node("a");
        sim.add_node("b");
        for i in 0..200 {
            sim.send("a", "b", i, Faults::stream(0, 10, 1_000));
            sim.send("b", "a", i, DATAGRAM);
        }
        sim.advance(1_000_000);
        let got = drain(&mut sim);
        let on_stream: Vec<u32> = got.iter().filter(|x| x.1 == "b").map(|x| x.2).collect();
        let datagrams: Vec<u32> = got.iter().filter(|x| x.1 == "a").map(|x| x.2).collect();
        assert_eq!(on_stream, (0..200).collect::<Vec<_>>());
        assert_eq!(datagrams.len(), 200);
        assert!(datagrams.windows(2).any(|w| w[0] > w[1]), "never reordered");
    }

    #[test]
    fn nothing_arrives_early_cut_links_lose_and_paused_nodes_wait() {
        let mut sim = Net::new(Rng::new(9));
        sim.add_node("a");
        sim.add_node("b");
        sim.send("a", "b", 1, DATAGRAM);
        assert!(sim.next_due().is_none(), "delivered before its delay");
        sim.cut("a", "b");
        assert_eq!(sim.send("a", "b", 2, DATAGRAM), 0);
        assert!(sim.toggle_cut("b", "a"));
        assert_eq!(sim.send("b", "a", 3, DATAGRAM), 0);
        sim.heal_all();
        sim.pause("b", 500_000);
        sim.advance(2_000);
        assert!(sim.next_due().is_none(), "delivered to a paused node");
        sim.advance(500_000);
        assert_eq!(drain(&mut sim), vec![("a", "b", 1)]);
        sim.send("a", "b", 4, DATAGRAM);
        sim.send("b", "a", 5, DATAGRAM);
        sim.reset("a", "b");
        assert_eq!(sim.in_flight(), 0);
    }

    #[test]
    fn losses_and_duplicates_follow_their_rates_and_clocks_drift() {
        let mut sim = Net::new(Rng::new(11));
        sim.add_node("a");
        sim.add_node_with_clock(
            "b",
            Clock {
                offset: 5,
                rate_ppm: 1_000_000,
            },
        );
        let sent: usize = (0..10_000)
            .map(|i| sim.send("a", "b", i, Faults::datagram(100, 50, 1, 1)))
            .sum();
        // 90% arrive, 5% of those twice: ~9,450.
        assert!((9_000..9_900).contains(&sent), "{sent}");
        let taken = sim.take_between("a", "b");
        assert_eq!(taken.len(), sent);
        assert_eq!(
            sim.send("a", "b", 0, Faults::datagram(1000, 0, 1, 1).lossless()),
            1
        );
        sim.advance(1_000_000);
        assert_eq!(sim.now("b"), 1_000_005);
        let a = sim.now("a");
        sim.advance(1_000_000);
        let rate = sim.now("a") - a;
        assert!((970_000..1_030_000).contains(&rate), "{rate}");
    }
}
