//! The follower's side of replication, as a sans-I/O state machine:
//! `handle(event, now) -> actions`. It connects (with backoff), says where
//! its log ends, appends the frames it is sent in order (one append at a
//! time, coalescing what arrived meanwhile into one fsync), acknowledges
//! its watermarks, asks again for frames that fail their checks, and
//! reconnects from its durable end after any failure.
//!
//! Guarantees: its durable and applied watermarks never go back; it
//! never asks to append a frame that does not follow its log; a refusal
//! that reconnecting cannot cure (another cluster, another protocol
//! version, a diverged log) stops it with the reason instead of looping.

use crate::proto::wire::{Message, PROTOCOL_VERSION, RefuseCode};

/// Settings of a follower.
#[derive(Debug, Clone)]
pub struct FollowerConfig {
    /// The cluster name both sides must share.
    pub cluster: String,
    /// This node's name.
    pub node: String,
    /// First reconnect delay, µs; doubles per failure up to `backoff_max_us`.
    pub backoff_min_us: u64,
    /// Longest reconnect delay, µs.
    pub backoff_max_us: u64,
    /// A leader silent this long (no frames, no heartbeat) is dropped, µs.
    pub silence_us: u64,
    /// Acknowledge at least this often while connected, µs.
    pub ack_interval_us: u64,
    /// Most received bytes queued for appending before reading pauses.
    pub queue_bytes_max: usize,
}

impl FollowerConfig {
    /// Production defaults.
    pub fn new(cluster: &str, node: &str) -> Self {
        Self {
            cluster: cluster.into(),
            node: node.into(),
            backoff_min_us: 100_000,
            backoff_max_us: 1_000_000,
            silence_us: 1_000_000,
            ack_interval_us: 200_000,
            queue_bytes_max: 64 * 1024 * 1024,
        }
    }
}

/// Where the follower's durable log ends: the engine's own description.
pub use vigil_engine::LogEnd;

/// What happened, fed to [`Follower::handle`].
#[derive(Debug)]
pub enum FollowerEvent {
    /// Time passed.
    Tick,
    /// Bytes of a message still arriving were received: the leader is
    /// alive even though no whole message completed (a large chunk on a
    /// slow or lossy link).
    Progress,
    /// The connection the machine asked for is up.
    Connected,
    /// The connection is gone (or could not be made), with why.
    Disconnected(String),
    /// A message from the leader.
    Message(Message),
    /// The last [`FollowerAction::Append`] is durable (fsynced).
    Appended(LogEnd),
    /// Everything up to this LSN is indexed and readable.
    Applied(u64),
    /// The [`FollowerAction::CutUnconfirmed`] asked for is done: the
    /// durable log now ends here.
    Cut(LogEnd),
    /// The [`FollowerAction::CutUnconfirmed`] asked for was refused (a
    /// frame to cut was shown, or lies in a sealed segment), with why.
    CutRefused(String),
    /// The [`FollowerAction::ImportKeys`] asked for failed. `fatal`: this
    /// node cannot hold an encrypted log at all (no key-encryption key
    /// configured) and stops; otherwise (its key module unreachable) it
    /// reconnects after backoff.
    KeysFailed {
        /// What failed.
        error: String,
        /// Whether an operator must act.
        fatal: bool,
    },
    /// The last append failed. `checksum`: the bytes were bad (refetch
    /// them); otherwise the local disk failed (retry after backoff).
    AppendFailed {
        /// What failed.
        error: String,
        /// Whether the frames themselves were at fault.
        checksum: bool,
    },
}

/// What the driver must do.
#[derive(Debug, PartialEq, Eq)]
pub enum FollowerAction {
    /// Open a connection to the leader; answer `Connected` or `Disconnected`.
    Connect,
    /// Send a message on the open connection.
    Send(Message),
    /// Append these frames to the store; answer `Appended` or `AppendFailed`.
    /// Frames past `confirmed` (the leader's durable end) stay invisible
    /// until a later `Append` or `Confirm` covers them.
    Append {
        /// The frames, as the leader sent them.
        frames: Vec<u8>,
        /// The leader's durable end as last heard.
        confirmed: u64,
    },
    /// The leader's durable end moved: show appended frames through it.
    Confirm(u64),
    /// Take the leader's data keys (wrap them under this node's own
    /// key-encryption key, durably) before any later `Append`; answer
    /// `KeysFailed` only on failure.
    ImportKeys(Vec<(u64, vigil_engine::crypt::DataKey)>),
    /// Close the connection, with why.
    Disconnect(String),
    /// The leader refused this log as diverged after `after`: cut the
    /// frames after it, which is allowed only while none of them was shown
    /// (they were shipped before the leader's fsync, and its crash lost
    /// them); answer `Cut` or `CutRefused`. The connection is closed first.
    CutUnconfirmed {
        /// The last LSN both logs share.
        after: u64,
    },
    /// Stop replicating for good, with why (an operator must act).
    Stop(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle {
        retry_at_us: u64,
    },
    Connecting,
    AwaitWelcome,
    Streaming,
    /// Waiting for the outcome of a `CutUnconfirmed`.
    Cutting,
    Stopped,
}

/// What the leader last told this follower.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderView {
    /// The leader's node name.
    pub node: String,
    /// The leader's FHIR base URL.
    pub http_url: String,
    /// The leader's epoch.
    pub epoch: u64,
    /// The leader's last durable LSN.
    pub last_lsn: u64,
    /// Commit time of that LSN, µs since the Unix epoch (leader clock).
    pub last_commit_us: u64,
}

/// Counters of a follower's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FollowerCounters {
    /// Connections made.
    pub connects: u64,
    /// Connections lost or refused.
    pub disconnects: u64,
    /// Chunks whose frames failed their checks on receipt.
    pub checksum_failures: u64,
    /// Appends that failed on the local disk.
    pub disk_failures: u64,
    /// Log bytes received.
    pub bytes_received: u64,
}

/// The follower's replication state.
#[derive(Debug)]
pub struct Follower {
    cfg: FollowerConfig,
    phase: Phase,
    end: LogEnd,
    received: u64,
    applied: u64,
    expected: u64,
    appending: bool,
    queue: Vec<u8>,
    /// After a refetch: frames before this LSN still in the pipe are dropped.
    refetch_from: Option<u64>,
    backoff_us: u64,
    last_heard_us: u64,
    last_ack_us: u64,
    acked: (u64, u64, u64),
    /// The leader's durable end as last passed to the store.
    confirmed: u64,
    leader: LeaderView,
    stopped: Option<String>,
    refusal: Option<(RefuseCode, u64)>,
    counters: FollowerCounters,
}

impl Follower {
    /// A follower whose durable log ends at `end`; it connects at once.
    pub fn new(cfg: FollowerConfig, end: LogEnd) -> Self {
        assert!(cfg.backoff_min_us > 0 && cfg.backoff_min_us <= cfg.backoff_max_us);
        Self {
            backoff_us: cfg.backoff_min_us,
            cfg,
            phase: Phase::Idle { retry_at_us: 0 },
            end,
            received: end.lsn,
            applied: 0,
            expected: end.lsn + 1,
            appending: false,
            queue: Vec::new(),
            refetch_from: None,
            last_heard_us: 0,
            last_ack_us: 0,
            acked: (0, 0, 0),
            confirmed: 0,
            leader: LeaderView::default(),
            stopped: None,
            refusal: None,
            counters: FollowerCounters::default(),
        }
    }

    /// Where the durable log ends.
    pub fn log_end(&self) -> LogEnd {
        self.end
    }

    /// The highest LSN indexed and readable, as last told.
    pub fn applied(&self) -> u64 {
        self.applied.min(self.end.lsn)
    }

    /// The leader's durable end as last passed to the store: appended
    /// frames through it are shown, later ones wait.
    pub fn confirmed(&self) -> u64 {
        self.confirmed
    }

    /// The highest LSN received (durable or not).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// What the leader last said.
    pub fn leader(&self) -> &LeaderView {
        &self.leader
    }

    /// Whether frames are flowing.
    pub fn is_streaming(&self) -> bool {
        self.phase == Phase::Streaming
    }

    /// Why replication stopped for good, if it did.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// The leader's refusal that stopped replication, with its LSN (for
    /// [`RefuseCode::Diverged`], the last LSN both logs may share).
    pub fn refusal(&self) -> Option<(RefuseCode, u64)> {
        self.refusal
    }

    /// This follower's counters.
    pub fn counters(&self) -> FollowerCounters {
        self.counters
    }

    /// Whether the driver should stop reading from the connection until
    /// the queued frames are written (bounded memory).
    pub fn queue_full(&self) -> bool {
        self.queue.len() >= self.cfg.queue_bytes_max
    }

    /// Advances the machine by one event at time `now_us` (monotonic µs).
    pub fn handle(&mut self, event: FollowerEvent, now_us: u64) -> Vec<FollowerAction> {
        let mut out = Vec::new();
        match event {
            FollowerEvent::Tick => {}
            FollowerEvent::Applied(lsn) => self.applied = self.applied.max(lsn),
            FollowerEvent::Cut(end) => {
                assert_eq!(
                    self.phase,
                    Phase::Cutting,
                    "a cut completes only when asked"
                );
                tracing::warn!(
                    log_end = end.lsn,
                    "the leader lost frames it had shipped before its fsync; cut them here (never shown) and following again"
                );
                assert!(end.lsn <= self.end.lsn, "a cut never lengthens the log");
                self.end = end;
                self.received = end.lsn;
                self.expected = end.lsn + 1;
                self.confirmed = self.confirmed.min(end.lsn);
                self.refusal = None;
                self.backoff_us = self.cfg.backoff_min_us;
                self.phase = Phase::Idle {
                    retry_at_us: now_us,
                };
            }
            FollowerEvent::CutRefused(why) => {
                assert_eq!(self.phase, Phase::Cutting, "a cut fails only when asked");
                let lsn = self.refusal.map_or(0, |(_, lsn)| lsn);
                self.stop(
                    format!(
                        "the leader refused this follower as diverged after lsn {lsn}, by more than frames lost before its fsync ({why}): rejoin with quarantine or reseed"
                    ),
                    &mut out,
                );
            }
            FollowerEvent::Progress => {
                if matches!(self.phase, Phase::AwaitWelcome | Phase::Streaming) {
                    self.last_heard_us = now_us;
                }
            }
            FollowerEvent::Connected => {
                if self.phase == Phase::Connecting {
                    self.counters.connects += 1;
                    self.phase = Phase::AwaitWelcome;
                    self.last_heard_us = now_us;
                    out.push(FollowerAction::Send(Message::Hello {
                        protocol: PROTOCOL_VERSION,
                        cluster: self.cfg.cluster.clone(),
                        node: self.cfg.node.clone(),
                        last_epoch: self.end.epoch,
                        last_lsn: self.end.lsn,
                        last_crc: self.end.crc,
                    }));
                }
            }
            FollowerEvent::Disconnected(why) => {
                if matches!(
                    self.phase,
                    Phase::Connecting | Phase::AwaitWelcome | Phase::Streaming
                ) {
                    tracing::warn!(
                        retry_ms = self.backoff_us / 1000,
                        "replication connection lost: {why}"
                    );
                    self.drop_connection(now_us);
                }
            }
            FollowerEvent::Message(m) => {
                self.last_heard_us = now_us;
                self.on_message(m, now_us, &mut out);
            }
            FollowerEvent::Appended(end) => {
                assert!(
                    self.appending,
                    "an append completes only when one was asked"
                );
                self.appending = false;
                assert!(end.lsn >= self.end.lsn, "the durable log never shrinks");
                self.end = end;
                self.received = self.received.max(end.lsn);
                if self.phase == Phase::Streaming {
                    self.backoff_us = self.cfg.backoff_min_us;
                }
            }
            FollowerEvent::KeysFailed { error, fatal } => {
                if fatal {
                    self.stop(
                        format!("this node cannot hold the leader's encrypted log: {error}"),
                        &mut out,
                    );
                } else if self.phase != Phase::Stopped {
                    tracing::error!("cannot take the leader's data keys: {error}");
                    out.push(FollowerAction::Disconnect(format!(
                        "data keys not taken: {error}"
                    )));
                    self.drop_connection(now_us);
                }
            }
            FollowerEvent::AppendFailed { error, checksum } => {
                assert!(self.appending, "an append fails only when one was asked");
                self.appending = false;
                self.queue.clear();
                if checksum {
                    self.counters.checksum_failures += 1;
                    if self.phase == Phase::Streaming {
                        let from = self.end.lsn + 1;
                        tracing::warn!(
                            from_lsn = from,
                            "frames failed their checks on receipt, not written; fetching them again: {error}"
                        );
                        self.received = self.end.lsn;
                        self.expected = from;
                        self.refetch_from = Some(from);
                        out.push(FollowerAction::Send(Message::Refetch {
                            from_lsn: from,
                            reason: error,
                        }));
                    }
                } else {
                    self.counters.disk_failures += 1;
                    tracing::error!(
                        retry_ms = self.backoff_us / 1000,
                        "cannot write replicated frames; acknowledgements stop until this is fixed: {error}"
                    );
                    if self.phase != Phase::Stopped {
                        out.push(FollowerAction::Disconnect(format!(
                            "local write failed: {error}"
                        )));
                        self.drop_connection(now_us);
                    }
                }
            }
        }
        self.drive(now_us, &mut out);
        out
    }

    fn drop_connection(&mut self, now_us: u64) {
        self.counters.disconnects += 1;
        self.phase = Phase::Idle {
            retry_at_us: now_us + self.backoff_us,
        };
        self.backoff_us = (self.backoff_us * 2).min(self.cfg.backoff_max_us);
        self.queue.clear();
        self.refetch_from = None;
        self.received = self.end.lsn;
        self.expected = self.end.lsn + 1;
    }

    fn stop(&mut self, why: String, out: &mut Vec<FollowerAction>) {
        tracing::error!("replication stopped: {why}");
        self.phase = Phase::Stopped;
        self.queue.clear();
        self.stopped = Some(why.clone());
        out.push(FollowerAction::Stop(why));
    }

    fn protocol_error(&mut self, why: String, now_us: u64, out: &mut Vec<FollowerAction>) {
        tracing::warn!("replication protocol error: {why}");
        out.push(FollowerAction::Disconnect(why));
        self.drop_connection(now_us);
    }

    fn on_message(&mut self, m: Message, now_us: u64, out: &mut Vec<FollowerAction>) {
        match (self.phase, m) {
            (
                Phase::AwaitWelcome,
                Message::Welcome {
                    leader,
                    epoch,
                    last_lsn,
                    start_lsn,
                    http_url,
                },
            ) => {
                if start_lsn != self.end.lsn + 1 {
                    let why = format!(
                        "leader starts at lsn {start_lsn}, this log ends at {}",
                        self.end.lsn
                    );
                    return self.protocol_error(why, now_us, out);
                }
                tracing::info!(leader = %leader, epoch, leader_lsn = last_lsn, from_lsn = start_lsn, "following");
                self.leader = LeaderView {
                    node: leader,
                    http_url,
                    epoch,
                    last_lsn,
                    last_commit_us: self.leader.last_commit_us,
                };
                self.phase = Phase::Streaming;
                self.expected = start_lsn;
                self.acked = (0, 0, 0);
            }
            (_, Message::Refused { code, lsn, reason }) => match code {
                RefuseCode::NotLeader => {
                    self.protocol_error(format!("refused: {reason}"), now_us, out)
                }
                RefuseCode::Diverged if self.end.lsn > lsn => {
                    // Perhaps only frames the leader lost in a crash of its
                    // machine: try to cut them before stopping.
                    tracing::warn!(
                        agree_until = lsn,
                        "the leader refused this log as diverged: {reason}"
                    );
                    self.refusal = Some((code, lsn));
                    self.queue.clear();
                    self.phase = Phase::Cutting;
                    out.push(FollowerAction::Disconnect(format!(
                        "diverged after lsn {lsn}"
                    )));
                    out.push(FollowerAction::CutUnconfirmed { after: lsn });
                }
                _ => {
                    self.refusal = Some((code, lsn));
                    self.stop(
                        format!("the leader refused this follower ({code:?}, lsn {lsn}): {reason}"),
                        out,
                    )
                }
            },
            (
                Phase::Streaming,
                Message::Frames {
                    first_lsn,
                    end_lsn,
                    leader_lsn,
                    bytes,
                },
            ) => {
                if let Some(from) = self.refetch_from {
                    if first_lsn != from {
                        return; // sent before the leader saw the refetch
                    }
                    self.refetch_from = None;
                }
                if first_lsn != self.expected {
                    let why = format!("frames from lsn {first_lsn}, expected {}", self.expected);
                    return self.protocol_error(why, now_us, out);
                }
                self.counters.bytes_received += bytes.len() as u64;
                self.expected = end_lsn;
                self.received = end_lsn - 1;
                self.leader.last_lsn = self.leader.last_lsn.max(leader_lsn);
                self.queue.extend_from_slice(&bytes);
            }
            (Phase::Streaming, Message::DataKeys { keys }) => {
                // Frames queued before these keys do not need them; those
                // after are appended after the import.
                out.push(FollowerAction::ImportKeys(keys));
            }
            (
                Phase::Streaming,
                Message::Heartbeat {
                    epoch,
                    last_lsn,
                    last_commit_us,
                },
            ) => {
                self.leader.epoch = self.leader.epoch.max(epoch);
                self.leader.last_lsn = self.leader.last_lsn.max(last_lsn);
                self.leader.last_commit_us = self.leader.last_commit_us.max(last_commit_us);
            }
            (phase, m) => {
                let why = format!("unexpected {} message while {phase:?}", m.kind());
                self.protocol_error(why, now_us, out);
            }
        }
    }

    fn drive(&mut self, now_us: u64, out: &mut Vec<FollowerAction>) {
        match self.phase {
            Phase::Idle { retry_at_us } if now_us >= retry_at_us && !self.appending => {
                self.phase = Phase::Connecting;
                out.push(FollowerAction::Connect);
            }
            Phase::AwaitWelcome | Phase::Streaming
                if now_us.saturating_sub(self.last_heard_us) > self.cfg.silence_us =>
            {
                let why = format!(
                    "leader silent for {} ms",
                    now_us.saturating_sub(self.last_heard_us) / 1000
                );
                out.push(FollowerAction::Disconnect(why));
                self.drop_connection(now_us);
            }
            Phase::Streaming => {
                if !self.appending && !self.queue.is_empty() {
                    self.appending = true;
                    self.confirmed = self.leader.last_lsn;
                    out.push(FollowerAction::Append {
                        frames: std::mem::take(&mut self.queue),
                        confirmed: self.confirmed,
                    });
                } else if self.leader.last_lsn > self.confirmed {
                    self.confirmed = self.leader.last_lsn;
                    out.push(FollowerAction::Confirm(self.confirmed));
                }
                let applied = self.applied.min(self.end.lsn);
                let marks = (self.received, self.end.lsn, applied);
                if marks != self.acked
                    || now_us.saturating_sub(self.last_ack_us) >= self.cfg.ack_interval_us
                {
                    self.acked = marks;
                    self.last_ack_us = now_us;
                    out.push(FollowerAction::Send(Message::Ack {
                        received: self.received,
                        durable: self.end.lsn,
                        applied,
                    }));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_reconnecting_cannot_cure_stops_it_with_the_reason() {
        let mut f = Follower::new(FollowerConfig::new("c", "b"), LogEnd::default());
        assert_eq!(
            f.handle(FollowerEvent::Tick, 0),
            vec![FollowerAction::Connect]
        );
        let out = f.handle(FollowerEvent::Connected, 1);
        assert!(matches!(
            &out[0],
            FollowerAction::Send(Message::Hello {
                protocol: PROTOCOL_VERSION,
                ..
            })
        ));
        let out = f.handle(
            FollowerEvent::Message(Message::Refused {
                code: RefuseCode::ProtocolVersion,
                lsn: 0,
                reason: "protocol version mismatch".into(),
            }),
            2,
        );
        assert!(
            matches!(&out[0], FollowerAction::Stop(r) if r.contains("protocol version mismatch"))
        );
        assert!(f.stopped().is_some());
        assert!(
            f.handle(FollowerEvent::Tick, 10_000_000_000).is_empty(),
            "never reconnects"
        );
    }

    /// A follower at lsn 12, refused at its hello as diverged after lsn 10.
    fn refused_as_diverged() -> (Follower, Vec<FollowerAction>) {
        let end = LogEnd {
            epoch: 1,
            lsn: 12,
            crc: 7,
            timestamp_us: 0,
        };
        let mut f = Follower::new(FollowerConfig::new("c", "b"), end);
        f.handle(FollowerEvent::Tick, 0);
        f.handle(FollowerEvent::Connected, 1);
        let out = f.handle(
            FollowerEvent::Message(Message::Refused {
                code: RefuseCode::Diverged,
                lsn: 10,
                reason: "logs differ at lsn 11".into(),
            }),
            2,
        );
        (f, out)
    }

    #[test]
    fn a_divergence_is_first_cut_in_place_and_it_follows_from_the_cut() {
        let (mut f, out) = refused_as_diverged();
        assert!(matches!(&out[0], FollowerAction::Disconnect(_)));
        assert_eq!(out[1], FollowerAction::CutUnconfirmed { after: 10 });
        assert_eq!(out.len(), 2);
        assert!(f.stopped().is_none(), "not stopped while the cut runs");
        assert!(
            f.handle(FollowerEvent::Tick, 10_000_000_000).is_empty(),
            "no reconnect before the cut's outcome"
        );
        let cut = LogEnd {
            epoch: 1,
            lsn: 10,
            crc: 9,
            timestamp_us: 0,
        };
        let out = f.handle(FollowerEvent::Cut(cut), 10_000_000_001);
        assert_eq!(out, vec![FollowerAction::Connect]);
        assert_eq!(f.log_end(), cut);
        assert_eq!(f.refusal(), None);
        let out = f.handle(FollowerEvent::Connected, 10_000_000_002);
        assert!(matches!(
            &out[0],
            FollowerAction::Send(Message::Hello {
                last_lsn: 10,
                last_crc: 9,
                ..
            })
        ));
    }

    #[test]
    fn a_divergence_the_store_cannot_cut_stops_it_with_both_reasons() {
        let (mut f, _) = refused_as_diverged();
        let out = f.handle(
            FollowerEvent::CutRefused("frames after lsn 10 were shown".into()),
            3,
        );
        assert!(matches!(
            &out[0],
            FollowerAction::Stop(r) if r.contains("after lsn 10") && r.contains("were shown")
        ));
        assert_eq!(f.refusal(), Some((RefuseCode::Diverged, 10)));
        assert!(
            f.handle(FollowerEvent::Tick, 10_000_000_000).is_empty(),
            "never reconnects"
        );
    }

    #[test]
    fn data_keys_are_taken_before_the_frames_after_them_and_a_node_without_a_kek_stops() {
        use vigil_engine::crypt::DataKey;
        let end = LogEnd {
            epoch: 1,
            lsn: 10,
            crc: 7,
            timestamp_us: 0,
        };
        let mut f = Follower::new(FollowerConfig::new("c", "b"), end);
        f.handle(FollowerEvent::Tick, 0);
        f.handle(FollowerEvent::Connected, 1);
        f.handle(
            FollowerEvent::Message(Message::Welcome {
                leader: "a".into(),
                epoch: 1,
                last_lsn: 20,
                start_lsn: 11,
                http_url: "http://a".into(),
            }),
            2,
        );
        let keys = vec![(9, DataKey::from_bytes([9; 32]))];
        let out = f.handle(
            FollowerEvent::Message(Message::DataKeys { keys: keys.clone() }),
            3,
        );
        assert_eq!(out, vec![FollowerAction::ImportKeys(keys)]);
        let out = f.handle(
            FollowerEvent::Message(Message::Frames {
                first_lsn: 11,
                end_lsn: 21,
                leader_lsn: 20,
                bytes: vec![1; 10],
            }),
            4,
        );
        assert!(out.contains(&FollowerAction::Append {
            frames: vec![1; 10],
            confirmed: 20
        }));
        let out = f.handle(
            FollowerEvent::KeysFailed {
                error: "not encrypted".into(),
                fatal: true,
            },
            5,
        );
        assert!(matches!(&out[..], [FollowerAction::Stop(why)] if why.contains("encrypted")));
    }

    #[test]
    fn a_full_disk_stops_acks_and_it_reconnects_from_its_durable_end() {
        let end = LogEnd {
            epoch: 1,
            lsn: 10,
            crc: 7,
            timestamp_us: 0,
        };
        let mut f = Follower::new(FollowerConfig::new("c", "b"), end);
        f.handle(FollowerEvent::Tick, 0);
        f.handle(FollowerEvent::Connected, 1);
        f.handle(
            FollowerEvent::Message(Message::Welcome {
                leader: "a".into(),
                epoch: 1,
                last_lsn: 20,
                start_lsn: 11,
                http_url: "http://a".into(),
            }),
            2,
        );
        let out = f.handle(
            FollowerEvent::Message(Message::Frames {
                first_lsn: 11,
                end_lsn: 21,
                leader_lsn: 20,
                bytes: vec![1; 10],
            }),
            3,
        );
        assert!(out.contains(&FollowerAction::Append {
            frames: vec![1; 10],
            confirmed: 20
        }));
        let out = f.handle(
            FollowerEvent::AppendFailed {
                error: "No space left on device".into(),
                checksum: false,
            },
            4,
        );
        assert!(matches!(&out[0], FollowerAction::Disconnect(_)));
        assert!(
            !out.iter()
                .any(|a| matches!(a, FollowerAction::Send(Message::Ack { .. }))),
            "no ack"
        );
        assert_eq!(f.received(), 10, "what was not written is fetched again");
        // After the backoff it connects again and says hello from lsn 10.
        let out = f.handle(FollowerEvent::Tick, 4 + 200_000);
        assert_eq!(out, vec![FollowerAction::Connect]);
        let out = f.handle(FollowerEvent::Connected, 4 + 200_001);
        assert!(matches!(
            &out[0],
            FollowerAction::Send(Message::Hello { last_lsn: 10, .. })
        ));
        assert_eq!(f.counters().disk_failures, 1);
    }
}
