//! The replication state machines driven by a seeded simulator over real
//! stores: messages delayed, connections cut, frames corrupted in flight,
//! appends failing as on a full disk,
//! the follower crashed and restarted, the leader writing throughout. After
//! every step the invariants are checked; at the end the logs must be
//! frame-for-frame identical. With `ship_unsynced`, the leader ships each
//! frame before its (modelled) fsync, and crashes as a machine does,
//! losing a frame it shipped but had not made durable.

use std::collections::VecDeque;
use vigil_testkit::sim::{Faults, Name, Net};
use vigil_testkit::{Rng, frames, small_store};

use vigil_engine::{Batch, LogPosition, Op, Store};
use vigil_net::proto::follower::{Follower, FollowerAction, FollowerConfig, FollowerEvent};
use vigil_net::proto::leader::{LeaderAction, LeaderConfig, LeaderEvent, LeaderSession};
use vigil_net::proto::wire::{Message, RefuseCode};

const LEADER: Name = "a";
const FOLLOWER: Name = "b";
/// The replication connection: a QUIC stream each way, in order, each
/// message delayed 1 to 31 ms; a cut loses what is in flight.
const LINK: Faults = Faults::stream(0, 1_000, 30_999);

struct Sim {
    /// Time and the network (the shared harness).
    net: Net<Message>,
    /// `None` only while it restarts.
    leader: Option<Store>,
    leader_dir: std::path::PathBuf,
    /// Frames are shipped before the leader's fsync.
    unsynced: bool,
    /// The leader's durable end as modelled: with `unsynced`, the newest
    /// frame is durable only once `fsync_due` passes.
    leader_durable: u64,
    /// When the newest frame becomes durable on the leader, and its end.
    fsync_due: Option<(u64, u64)>,
    /// The leader crashed and came back without frames after this LSN; the
    /// follower may hold them until it rejoins.
    lost_after: Option<u64>,
    /// The follower's log end when it last restarted: a reopened store
    /// indexes its whole log, confirmed or not.
    replayed_through: u64,
    leader_crashes: u64,
    rejoins: u64,
    /// Rejoins that cut the lost frames in place (never shown).
    dropped: u64,
    follower_dir: tempfile::TempDir,
    follower_store: Option<Store>,
    follower: Follower,
    session: Option<LeaderSession>,
    /// A connection is up (messages on `net` travel only then).
    connected: bool,
    /// An append in progress (when it completes, frames, confirmed).
    append: Option<(u64, Vec<u8>, u64)>,
    highest_durable: u64,
    corruptions: u64,
    /// Checksum failures counted by follower machines before a restart.
    failures_before: u64,
    /// Appends failed as if the disk were full.
    disk_failures: u64,
    written: u32,
}

/// Waits until the store has indexed everything it appended.
fn settle(store: &Store) {
    let end = store.log_end().lsn;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.last_lsn() < end {
        assert!(
            std::time::Instant::now() < deadline,
            "the store never showed lsn {end} (shows {})",
            store.last_lsn()
        );
        store.wait_for_lsn(store.last_lsn(), std::time::Duration::from_millis(100));
    }
}

impl Sim {
    fn new(seed: u64, leader_dir: &std::path::Path, unsynced: bool) -> Self {
        let leader = Store::open_with(leader_dir, small_store(64 * 1024, false)).expect("leader");
        let leader_durable = leader.log_end().lsn;
        let follower_dir = tempfile::tempdir().expect("dir");
        let store =
            Store::open_with(follower_dir.path(), small_store(64 * 1024, true)).expect("replica");
        let follower = Follower::new(follower_cfg(), store.log_end());
        Sim {
            net: Net::new(Rng::new(seed | 1)),
            leader: Some(leader),
            leader_dir: leader_dir.to_path_buf(),
            unsynced,
            leader_durable,
            fsync_due: None,
            lost_after: None,
            replayed_through: 0,
            leader_crashes: 0,
            rejoins: 0,
            dropped: 0,
            follower_dir,
            follower_store: Some(store),
            follower,
            session: None,
            connected: false,
            append: None,
            highest_durable: 0,
            corruptions: 0,
            failures_before: 0,
            disk_failures: 0,
            written: 0,
        }
    }

    fn leader(&self) -> &Store {
        self.leader.as_ref().expect("the leader is up")
    }

    fn leader_event(&mut self, e: LeaderEvent) {
        let mut queue = VecDeque::from([e]);
        while let Some(e) = queue.pop_front() {
            let Some(s) = self.session.as_mut() else {
                return;
            };
            for a in s.handle(e, self.net.real()) {
                match a {
                    LeaderAction::Send(mut m) => {
                        if let Message::Frames { bytes, .. } = &mut m
                            && self.net.rng.chance(20)
                        {
                            let i = self.net.rng.below(bytes.len() as u64) as usize;
                            bytes[i] ^= 0x40;
                            self.corruptions += 1;
                        }
                        if self.connected {
                            self.net.send(LEADER, FOLLOWER, m, LINK);
                        }
                    }
                    LeaderAction::ComparePosition { epoch, lsn, crc } => {
                        // As the driver does: a follower holding a frame this
                        // leader has not fsynced yet is compared once it has.
                        if lsn > self.leader_durable {
                            self.leader_fsync();
                        }
                        let p = self
                            .leader()
                            .position_of(epoch, lsn, crc)
                            .expect("position");
                        assert!(
                            matches!(p, LogPosition::Prefix { .. })
                                || self.lost_after.is_some_and(|cut| matches!(
                                    p,
                                    LogPosition::Diverged { agree_until } if agree_until >= cut
                                )),
                            "the follower's log is a prefix, or holds exactly what the leader lost: {p:?}"
                        );
                        if matches!(p, LogPosition::Prefix { .. }) {
                            // It never received what the leader lost.
                            self.lost_after = None;
                        }
                        queue.push_back(LeaderEvent::Position(p));
                    }
                    LeaderAction::ReadLog {
                        from_lsn,
                        max_bytes,
                        through_lsn,
                    } => {
                        // The leader's store writes a frame and "fsyncs" it
                        // (as modelled) later: it reads up to what is written.
                        let c = self.leader().read_log(from_lsn, max_bytes).expect("read");
                        assert!(
                            c.as_ref().is_none_or(|c| c.end_lsn - 1 <= through_lsn),
                            "the session asks for everything written (or durable)"
                        );
                        queue.push_back(LeaderEvent::Chunk(c));
                    }
                    LeaderAction::Watermarks(w) => {
                        assert!(w.durable <= self.leader().last_lsn());
                        assert!(w.applied <= w.durable && w.durable <= w.received);
                    }
                    LeaderAction::Close(_) => {
                        // As the driver does: what was sent (a refusal)
                        // arrives before the connection closes.
                        let sent = self.net.take_between(LEADER, FOLLOWER);
                        self.connected = false;
                        self.net.reset(LEADER, FOLLOWER);
                        self.session = None;
                        for m in sent {
                            self.follower_event(FollowerEvent::Message(m));
                        }
                        self.cut();
                        return;
                    }
                }
            }
        }
    }

    fn follower_event(&mut self, e: FollowerEvent) {
        for a in self.follower.handle(e, self.net.real()) {
            match a {
                FollowerAction::Connect => {
                    if self.net.rng.chance(100) {
                        self.follower.handle(
                            FollowerEvent::Disconnected("refused".into()),
                            self.net.real(),
                        );
                        continue;
                    }
                    self.net.reset(LEADER, FOLLOWER);
                    self.connected = true;
                    let mut cfg = LeaderConfig::new("c", "a", "http://a");
                    cfg.ship_unsynced = self.unsynced;
                    let mut s = LeaderSession::new(cfg, self.net.real());
                    s.handle(
                        LeaderEvent::LogAdvanced {
                            written_lsn: self.leader().last_lsn(),
                            last_lsn: self.leader_durable,
                            last_commit_us: 0,
                            epoch: self.leader().epoch(),
                        },
                        self.net.real(),
                    );
                    self.session = Some(s);
                    self.follower_event(FollowerEvent::Connected);
                }
                FollowerAction::Send(m) => {
                    if self.connected {
                        self.net.send(FOLLOWER, LEADER, m, LINK);
                    }
                }
                FollowerAction::Append { frames, confirmed } => {
                    assert!(self.append.is_none(), "one append at a time");
                    let at = self.net.real() + 500 + self.net.rng.below(5_000);
                    self.append = Some((at, frames, confirmed));
                }
                FollowerAction::Confirm(lsn) => {
                    assert!(
                        lsn <= self.leader_durable,
                        "only durable frames are confirmed"
                    );
                    let store = self.follower_store.as_ref().expect("store");
                    store.confirm_log(lsn).expect("confirm");
                }
                FollowerAction::ImportKeys(keys) => {
                    // As the runtime does, before any later append.
                    let store = self.follower_store.as_ref().expect("store");
                    store.import_data_keys(&keys).expect("import data keys");
                }
                FollowerAction::Disconnect(_) => self.cut_quietly(),
                FollowerAction::CutUnconfirmed { after } => self.cut_unconfirmed(after),
                FollowerAction::Stop(why) => match self.follower.refusal() {
                    Some((RefuseCode::Diverged, agree_until)) => self.rejoin(agree_until),
                    _ => panic!("follower stopped: {why}"),
                },
            }
        }
    }

    /// The connection breaks; both sides notice.
    fn cut(&mut self) {
        self.cut_quietly();
        self.follower_event(FollowerEvent::Disconnected("cut".into()));
    }

    fn cut_quietly(&mut self) {
        self.connected = false;
        self.net.reset(LEADER, FOLLOWER);
        self.session = None;
    }

    /// The follower was refused as diverged and asks to cut the frames
    /// after `agree_until` in place (only frames the leader lost in a
    /// crash, never shown): the store does it, or refuses for a good
    /// reason and the follower stops (then `rejoin` cuts the closed store).
    fn cut_unconfirmed(&mut self, agree_until: u64) {
        let lost_after = self.lost_after.expect("only a lost tail diverges");
        assert!(agree_until >= lost_after);
        assert!(self.append.is_none(), "no append is under way at a refusal");
        let store = self.follower_store.as_ref().expect("store");
        let visible = store.last_lsn();
        match store.drop_unconfirmed(agree_until) {
            Ok(end) => {
                self.dropped += 1;
                self.check_cut(end.lsn, visible);
                self.follower_event(FollowerEvent::Cut(end));
            }
            Err(e) => {
                // Good reasons: a restart showed the frame, or it begins
                // a segment (cutting it in place would unseal the last).
                assert!(
                    self.replayed_through > lost_after || e.to_string().contains("sealed segment"),
                    "refused only for a good reason: {e}"
                );
                self.follower_event(FollowerEvent::CutRefused(e.to_string()));
            }
        }
    }

    /// The follower stopped, diverged beyond what it may cut in place: as
    /// the cluster does, its store is closed, cut with quarantine and
    /// reopened, and a new follower starts on it.
    fn rejoin(&mut self, agree_until: u64) {
        self.cut_quietly();
        self.append = None;
        self.failures_before += self.follower.counters().checksum_failures;
        let store = self.follower_store.take().expect("store");
        let visible = store.last_lsn();
        drop(store);
        Store::cut_log(
            self.follower_dir.path(),
            small_store(64 * 1024, true),
            agree_until,
        )
        .expect("cut");
        let store = Store::open_with(self.follower_dir.path(), small_store(64 * 1024, true))
            .expect("reopen");
        self.check_cut(store.log_end().lsn, visible);
        self.follower = Follower::new(follower_cfg(), store.log_end());
        self.follower_store = Some(store);
    }

    /// The follower's log was cut to end at `end`: what it held past the
    /// leader's crash-time durable end went, nothing before it, and the
    /// cut frames were never shown (unless a restart showed them).
    fn check_cut(&mut self, end: u64, visible: u64) {
        let lost_after = self.lost_after.expect("only a lost tail diverges");
        assert_eq!(end, lost_after, "cut exactly what the leader lost");
        assert!(
            visible <= end || self.replayed_through > end,
            "the cut frames were never shown (visible {visible}, cut after {end})"
        );
        self.highest_durable = end;
        self.replayed_through = end;
        self.lost_after = None;
        self.rejoins += 1;
    }

    /// The leader's newest frame becomes durable there.
    fn leader_fsync(&mut self) {
        if let Some((_, lsn)) = self.fsync_due.take() {
            self.leader_durable = lsn;
            let (written, epoch) = (self.leader().last_lsn(), self.leader().epoch());
            self.leader_event(LeaderEvent::LogAdvanced {
                written_lsn: written,
                last_lsn: lsn,
                last_commit_us: 0,
                epoch,
            });
        }
    }

    /// The leader's machine crashes before its fsync: it comes back
    /// without the frame it had shipped.
    fn crash_leader(&mut self) {
        let cut = self.leader_durable;
        self.fsync_due = None;
        self.cut();
        let dir = self.leader_dir.clone();
        drop(self.leader.take());
        Store::cut_log(&dir, small_store(64 * 1024, false), cut).expect("lose the unsynced frame");
        self.leader =
            Some(Store::open_with(&dir, small_store(64 * 1024, false)).expect("reopen leader"));
        assert_eq!(self.leader().log_end().lsn, cut);
        // A follower still holding an earlier lost frame diverges there.
        self.lost_after = Some(self.lost_after.map_or(cut, |c| c.min(cut)));
        self.leader_crashes += 1;
    }

    fn crash_follower(&mut self) {
        self.cut_quietly();
        self.append = None;
        self.failures_before += self.follower.counters().checksum_failures;
        if let Some(s) = self.follower_store.take() {
            drop(s);
        }
        let store = Store::open_with(self.follower_dir.path(), small_store(64 * 1024, true))
            .expect("reopen");
        self.replayed_through = store.log_end().lsn;
        self.follower = Follower::new(follower_cfg(), store.log_end());
        self.follower_store = Some(store);
    }

    fn check(&mut self) {
        let store = self.follower_store.as_ref().expect("store");
        let end = store.log_end();
        let durable = end.lsn;
        assert!(durable >= self.highest_durable, "durable never goes back");
        assert!(
            store.last_lsn() <= durable,
            "nothing is visible before it is durable"
        );
        self.highest_durable = durable;
        assert_eq!(self.follower.log_end().lsn, durable);
        let visible = store.last_lsn();
        assert!(
            visible <= self.leader_durable.max(self.replayed_through),
            "shown only once durable on the leader: visible {visible}, leader durable {}",
            self.leader_durable
        );
        assert!(
            durable <= self.leader().last_lsn() || self.lost_after.is_some(),
            "ahead of the leader only after it lost its unsynced tail"
        );
        if self.lost_after.is_some_and(|cut| durable > cut) {
            // It holds what the leader lost, until it rejoins.
        } else if durable > 0 {
            let theirs = self.leader().frame_ending_at(durable).expect("read");
            assert_eq!(
                theirs.map(|h| h.crc),
                Some(end.crc),
                "logs agree at {durable}"
            );
        }
        if let Some(s) = &self.session {
            assert!(s.watermarks().durable <= durable);
        }
    }

    fn step(&mut self, writing: bool) {
        self.net.advance(1_000);
        // The leader's writer starts a frame once the last one is durable.
        if writing && self.fsync_due.is_none() && self.net.rng.chance(300) {
            let mut b = Batch::new();
            for _ in 0..1 + self.net.rng.below(20) {
                self.written += 1;
                let id = format!("p{}", self.net.rng.below(500));
                let body = format!(
                    r#"{{"resourceType":"Patient","id":"{id}","name":[{{"family":"F{}"}}]}}"#,
                    self.written
                );
                b.push(Op::put("Patient", id, body.into_bytes()));
            }
            self.leader().commit(b).expect("commit");
            let (lsn, epoch) = (self.leader().last_lsn(), self.leader().epoch());
            if self.unsynced {
                // Written; durable a moment later (at times after the
                // follower has it).
                self.fsync_due = Some((self.net.real() + self.net.rng.below(40_000), lsn));
            } else {
                self.leader_durable = lsn;
            }
            self.leader_event(LeaderEvent::LogAdvanced {
                written_lsn: lsn,
                last_lsn: self.leader_durable,
                last_commit_us: 0,
                epoch,
            });
        }
        if self.fsync_due.is_some() && self.net.rng.chance(5) {
            self.crash_leader();
        }
        if self.fsync_due.is_some_and(|(at, _)| at <= self.net.real()) {
            self.leader_fsync();
        }
        if self.net.rng.chance(3) {
            self.cut();
        }
        if self.net.rng.chance(1) {
            self.crash_follower();
        }
        // Deliver what is due, in order per direction.
        while let Some((_, to, m)) = self.net.next_due() {
            if to == LEADER {
                self.leader_event(LeaderEvent::Message(m));
            } else {
                self.follower_event(FollowerEvent::Message(m));
            }
        }
        if self
            .append
            .as_ref()
            .is_some_and(|(t, _, _)| *t <= self.net.real())
        {
            let (_, bytes, confirmed) = self.append.take().expect("append");
            let store = self.follower_store.as_ref().expect("store");
            let full_disk = self.net.rng.chance(10);
            let e = if full_disk {
                // A full disk: the engine writes nothing; the follower must
                // stop acknowledging, and recover by itself later.
                self.disk_failures += 1;
                FollowerEvent::AppendFailed {
                    checksum: false,
                    error: "No space left on device (simulated)".into(),
                }
            } else {
                let (tx, rx) = std::sync::mpsc::channel();
                store
                    .append_log_with(bytes, confirmed, move |r| {
                        let _ = tx.send(r);
                    })
                    .expect("queued");
                match rx.recv().expect("answered") {
                    Ok(end) => FollowerEvent::Appended(end),
                    Err(e) => FollowerEvent::AppendFailed {
                        checksum: matches!(
                            e,
                            vigil_engine::Error::FrameRejected { .. }
                                | vigil_engine::Error::Discontinuous(_)
                        ),
                        error: e.to_string(),
                    },
                }
            };
            self.follower_event(e);
        }
        self.leader_event(LeaderEvent::Tick);
        let applied = self.follower_store.as_ref().expect("store").last_lsn();
        self.follower_event(FollowerEvent::Applied(applied));
        self.follower_event(FollowerEvent::Tick);
        self.check();
    }
}

fn follower_cfg() -> FollowerConfig {
    let mut c = FollowerConfig::new("c", "b");
    c.backoff_min_us = 5_000;
    c.backoff_max_us = 200_000;
    c
}

/// Runs one seed; returns (leader crashes, follower rejoins, rejoins by
/// cutting in place).
fn run(seed: u64, unsynced: bool) -> (u64, u64, u64) {
    let ld = tempfile::tempdir().expect("dir");
    let mut sim = Sim::new(seed, ld.path(), unsynced);
    for _ in 0..3_000 {
        sim.step(true);
    }
    // Writes stop; the follower must catch up completely.
    let mut steps = 0;
    // Caught up: durable, and confirmed (frames the leader shipped before
    // its fsync are shown once it says they are durable).
    loop {
        let end = sim.follower_store.as_ref().expect("store").log_end().lsn;
        let behind =
            end < sim.leader().last_lsn() || sim.follower.confirmed() < sim.leader().last_lsn();
        // Holding a frame the leader lost, it must find out and cut it.
        let diverged = sim.lost_after.is_some_and(|cut| end > cut);
        if !behind && !diverged {
            break;
        }
        sim.step(false);
        steps += 1;
        assert!(
            steps < 200_000,
            "seed {seed}: the follower never caught up: durable {}, confirmed {}, leader {} (durable {}), {:?}, stopped {:?}",
            sim.follower_store.as_ref().expect("store").log_end().lsn,
            sim.follower.confirmed(),
            sim.leader().last_lsn(),
            sim.leader_durable,
            sim.follower.leader(),
            sim.follower.stopped(),
        );
    }
    let follower = sim.follower_store.take().expect("store");
    settle(&follower);
    assert_eq!(
        frames(&follower),
        frames(sim.leader()),
        "seed {seed}: logs identical"
    );
    follower
        .verify()
        .expect("the follower's index equals a rebuild");
    assert!(sim.written > 100, "the leader wrote throughout");
    (sim.leader_crashes, sim.rejoins, sim.dropped)
}

#[test]
fn replication_survives_cuts_corruption_and_restarts() {
    for seed in [1, 7, 42, 1234, 99_991] {
        run(seed, false);
    }
}

#[test]
fn frames_shipped_before_the_leaders_fsync_are_shown_only_once_durable_there() {
    let (mut crashes, mut rejoins, mut dropped) = (0, 0, 0);
    for seed in [2, 11, 4242, 777] {
        let (c, r, d) = run(seed, true);
        eprintln!("seed {seed}: {c} leader crashes, {r} rejoins, {d} by cutting in place");
        crashes += c;
        rejoins += r;
        dropped += d;
    }
    assert!(crashes > 0, "the leader lost unsynced frames");
    assert!(rejoins > 0, "a follower holding a lost frame cut it");
    assert!(dropped > 0, "a follower cut a lost frame in place");
}

#[test]
fn corrupted_frames_are_refetched_and_counted() {
    let ld = tempfile::tempdir().expect("dir");
    let mut sim = Sim::new(3, ld.path(), false);
    for _ in 0..3_000 {
        sim.step(true);
    }
    while sim.follower_store.as_ref().expect("store").log_end().lsn < sim.leader().last_lsn() {
        sim.step(false);
    }
    let detected = sim.failures_before + sim.follower.counters().checksum_failures;
    assert!(
        sim.corruptions > 0,
        "the simulator corrupted frames in flight"
    );
    assert!(detected > 0, "corrupted frames were detected on receipt");
    assert!(
        detected <= sim.corruptions,
        "only corrupted chunks fail: {detected} failures, {} corruptions",
        sim.corruptions
    );
    let follower = sim.follower_store.take().expect("store");
    settle(&follower);
    assert_eq!(frames(&follower), frames(sim.leader()));
}
