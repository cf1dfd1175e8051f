//! A leader's enforcement of its loss bound (`max_lag`) at the witness, as
//! a pure machine: which follower to record as eligible or ineligible, and
//! when. The node feeds it each follower's durable LSN and lag and carries
//! out the [`Record`]s it asks for; the failover simulator runs the same
//! machine, so the rules are tested under faults as the node runs them.
//!
//! An [`Enforcer`] belongs to one epoch, the one this node won (the epoch
//! of the `EpochStart` it wrote), and every record carries that epoch,
//! never one the node merely learned of. It stops for good when the node
//! steps down ([`Enforcer::stop`]) or when the witness refuses a record
//! because the node does not lead that epoch there ([`Enforcer::refused`]):
//! a stopped enforcer asks for nothing, and a write that needs a record is
//! not acknowledged. A refused record is never retried.
//!
//! A record that got no answer ([`Enforcer::failed`]) may still have been
//! taken: the follower's state at the witness is unknown from then on, so
//! the next record that matters is made again and waited for. Records are
//! numbered ([`Record::seq`], increasing within the epoch), and the witness
//! takes none older than one it took, so a record given up on cannot land
//! after a later one.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::proto::eligibility::decide;

/// Most followers tracked (as many as the witness records).
const FOLLOWERS_MAX: usize = 64;

/// One eligibility record to make at the witness, in the enforcer's epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The follower recorded.
    pub follower: String,
    /// Whether it may be promoted.
    pub eligible: bool,
    /// Its durable LSN as the leader last heard.
    pub durable_lsn: u64,
    /// The epoch this leader won.
    pub epoch: u64,
    /// This record's number: greater than every earlier record's of this
    /// leader in this epoch.
    pub seq: u64,
}

/// Which eligibility changes a round of enforcement records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Records {
    /// Only "ineligible": on a write's path, where the loss promise needs it
    /// before the write is acknowledged. "Eligible again" only widens what
    /// the witness may do, so a write never waits (or fails) for it.
    IneligibleOnly,
    /// Both: the background tick, which records "eligible again" within a
    /// tick of the follower catching up.
    Both,
}

/// Why a record could not be made (what a record function answers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The witness (or this node's own elector) says this node does not
    /// lead the record's epoch: final, enforcement stops, nothing retried.
    #[error("refused: {0}")]
    Refused(String),
    /// Not made now (the witness unreachable, no answer in time): the next
    /// round tries again; a write that needed it is not acknowledged.
    #[error("{0}")]
    Failed(String),
}

#[derive(Debug, Clone, Copy, Default)]
struct Track {
    /// Eligibility as last recorded at the witness (`None`: never, or
    /// unknown since a record got no answer).
    reported: Option<bool>,
    /// Synchronous mode: the highest LSN acknowledged without this
    /// follower (after it was recorded ineligible). It holds every
    /// acknowledged write, and may be eligible again, once its durable LSN
    /// reaches this.
    given_up: u64,
}

/// A leader's eligibility bookkeeping for the epoch it won.
#[derive(Debug, Clone)]
pub struct Enforcer {
    epoch: u64,
    epoch_start: u64,
    max_lag: Option<Duration>,
    followers: BTreeMap<String, Track>,
    stopped: Option<String>,
    next_seq: u64,
}

impl Enforcer {
    /// Enforcement for a leader of `epoch` whose `EpochStart` is at LSN
    /// `epoch_start`, promising `max_lag` (`Some(0)`: synchronous; `None`:
    /// nothing). Records are numbered from `first_seq` (the node passes
    /// the wall clock in µs, so numbers keep increasing even if it led the
    /// same epoch again after a restart).
    pub fn new(epoch: u64, epoch_start: u64, max_lag: Option<Duration>, first_seq: u64) -> Self {
        Self {
            epoch,
            epoch_start,
            max_lag,
            followers: BTreeMap::new(),
            stopped: None,
            next_seq: first_seq.max(1),
        }
    }

    fn record(&mut self, follower: &str, eligible: bool, durable_lsn: u64) -> Record {
        let seq = self.next_seq;
        self.next_seq += 1;
        Record {
            follower: follower.to_owned(),
            eligible,
            durable_lsn,
            epoch: self.epoch,
            seq,
        }
    }

    /// The epoch every record of this enforcer carries.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Why enforcement stopped, if it did.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// The node no longer leads this epoch (it stepped down): nothing more
    /// is asked for. The first reason is kept.
    pub fn stop(&mut self, why: &str) {
        if self.stopped.is_none() {
            self.stopped = Some(why.to_owned());
        }
    }

    /// The lag that counts for `follower` holding `durable`, whose oldest
    /// missing write is `raw` old. Synchronous mode acknowledges nothing
    /// without an eligible follower unless it was given up on, so there a
    /// follower lacks no acknowledged write once it holds the highest LSN
    /// acknowledged without it.
    pub fn counted_lag(&self, follower: &str, durable: u64, raw: Duration) -> Duration {
        if !self.max_lag.is_some_and(|m| m.is_zero()) {
            return raw;
        }
        let given_up = self.followers.get(follower).map_or(0, |t| t.given_up);
        if durable >= given_up {
            Duration::ZERO
        } else {
            raw.max(Duration::from_micros(1))
        }
    }

    /// The record `follower` needs now, if its eligibility at the witness
    /// must change: it is eligible only once it holds this leader's
    /// `EpochStart` (it follows this history) and is within the bound (see
    /// [`decide`]). `lag` is the counted lag ([`Enforcer::counted_lag`]).
    /// `None` once stopped.
    pub fn due(
        &mut self,
        follower: &str,
        durable: u64,
        lag: Duration,
        which: Records,
    ) -> Option<Record> {
        if self.stopped.is_some() {
            return None;
        }
        let reported = self.followers.get(follower).and_then(|t| t.reported);
        let now =
            durable >= self.epoch_start && decide(reported.unwrap_or(false), lag, self.max_lag);
        let wanted = reported != Some(now) && (!now || which == Records::Both);
        wanted.then(|| self.record(follower, now, durable))
    }

    /// The witness took `r`.
    pub fn recorded(&mut self, r: &Record) {
        assert_eq!(r.epoch, self.epoch, "a record of another epoch");
        if let Some(t) = self.track(&r.follower) {
            t.reported = Some(r.eligible);
        }
    }

    /// Record `r` got no answer: the witness may have taken it or not, so
    /// the follower's state there is unknown until a later record is
    /// answered.
    pub fn failed(&mut self, r: &Record) {
        if let Some(t) = self.followers.get_mut(&r.follower) {
            t.reported = None;
        }
    }

    /// The witness refused a record: this node does not lead the epoch
    /// there. Enforcement stops for good.
    pub fn refused(&mut self, reason: &str) {
        self.stop(&format!("the witness refused a record: {reason}"));
    }

    /// Synchronous mode, when no follower confirmed `lsn` in time and the
    /// write is to be acknowledged anyway: notes that each of `followers`
    /// (name, durable LSN) lacking `lsn` was given up on, and returns the
    /// records to make first ("ineligible", for those not recorded so
    /// already). Empty once stopped: nothing is to be acknowledged then.
    pub fn give_up(&mut self, lsn: u64, followers: &[(String, u64)]) -> Vec<Record> {
        let mut out = Vec::new();
        if self.stopped.is_some() {
            return out;
        }
        for (name, durable) in followers.iter().filter(|(_, d)| *d < lsn) {
            let Some(t) = self.track(name) else { continue };
            t.given_up = t.given_up.max(lsn);
            if t.reported != Some(false) {
                let r = self.record(name, false, *durable);
                out.push(r);
            }
        }
        out
    }

    /// Eligibility of `follower` as last recorded at the witness.
    pub fn reported(&self, follower: &str) -> Option<bool> {
        self.followers.get(follower).and_then(|t| t.reported)
    }

    fn track(&mut self, follower: &str) -> Option<&mut Track> {
        if !self.followers.contains_key(follower) && self.followers.len() >= FOLLOWERS_MAX {
            return None;
        }
        Some(self.followers.entry(follower.to_owned()).or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn records_carry_the_won_epoch_and_stop_for_good() {
        let mut e = Enforcer::new(1, 10, Some(1000 * MS), 1);
        let r = e
            .due("b", 5, Duration::ZERO, Records::IneligibleOnly)
            .expect("never recorded");
        assert!(
            !r.eligible,
            "b lacks the EpochStart: ineligible, on the write's path too"
        );
        e.recorded(&r);
        assert_eq!(
            e.due("b", 5, Duration::ZERO, Records::Both),
            None,
            "recorded already"
        );
        let r = e
            .due("b", 12, Duration::ZERO, Records::Both)
            .expect("eligible once it holds the EpochStart");
        assert_eq!((r.eligible, r.epoch, r.durable_lsn), (true, 1, 12));
        assert_eq!(
            e.due("b", 12, Duration::ZERO, Records::IneligibleOnly),
            None,
            "a write never waits for eligible-again"
        );
        e.recorded(&r);
        assert_eq!(
            e.due("b", 12, 500 * MS, Records::Both),
            None,
            "within the bound"
        );
        let r = e
            .due("b", 12, 900 * MS, Records::IneligibleOnly)
            .expect("marked before the bound");
        assert!(!r.eligible);
        e.refused("b leads epoch 2");
        assert!(e.stopped().is_some_and(|w| w.contains("epoch 2")));
        assert_eq!(
            e.due("b", 12, 5000 * MS, Records::IneligibleOnly),
            None,
            "stopped: nothing more"
        );
        assert!(e.give_up(99, &[("b".into(), 12)]).is_empty());
    }

    #[test]
    fn synchronous_give_up_counts_lag_until_the_follower_holds_what_was_given_up() {
        let mut e = Enforcer::new(3, 1, Some(Duration::ZERO), 1);
        let r = e
            .due("b", 5, Duration::ZERO, Records::Both)
            .expect("eligible");
        e.recorded(&r);
        assert_eq!(
            e.counted_lag("b", 5, 40 * MS),
            Duration::ZERO,
            "nothing given up: no acknowledged write is missing"
        );
        let records = e.give_up(8, &[("b".into(), 5), ("c".into(), 9)]);
        assert_eq!(records.len(), 1, "only b lacks LSN 8: {records:?}");
        assert_eq!(
            (
                records[0].follower.as_str(),
                records[0].eligible,
                records[0].epoch
            ),
            ("b", false, 3)
        );
        e.recorded(&records[0]);
        assert!(
            e.give_up(9, &[("b".into(), 5)]).is_empty(),
            "already recorded ineligible"
        );
        assert_eq!(
            e.counted_lag("b", 7, Duration::ZERO),
            Duration::from_micros(1)
        );
        assert_eq!(e.counted_lag("b", 9, 40 * MS), Duration::ZERO);
        let back = e
            .due("b", 9, Duration::ZERO, Records::Both)
            .expect("eligible again");
        assert!(back.eligible);
        assert!(back.seq > records[0].seq, "numbered in order");
        // The answer is lost: the witness may hold b eligible. A write
        // given up on later must record b ineligible again, and wait.
        e.failed(&back);
        assert_eq!(e.reported("b"), None);
        let again = e.give_up(12, &[("b".into(), 9)]);
        assert_eq!(again.len(), 1, "recorded again: {again:?}");
        assert!(!again[0].eligible && again[0].seq > back.seq);
    }

    #[test]
    fn followers_are_bounded() {
        let mut e = Enforcer::new(1, 0, Some(Duration::ZERO), 1);
        let many: Vec<(String, u64)> = (0..FOLLOWERS_MAX + 10)
            .map(|i| (format!("f{i}"), 0))
            .collect();
        assert_eq!(e.give_up(1, &many).len(), FOLLOWERS_MAX);
    }
}
