//! The leader's side of one replication session, as a sans-I/O state
//! machine: `handle(event, now) -> actions`. No sockets, clocks or tasks:
//! the driver (`transport`) or a test's simulator reads the log when asked,
//! sends what it is told and feeds back what happened.
//!
//! Guarantees: frames are offered strictly in LSN order from the point the
//! follower's log ends; at most `unacked_bytes_max` are unacknowledged at a time;
//! the follower's watermarks, as this session reports them, never go back.

use std::collections::{HashSet, VecDeque};

use vigil_engine::{LogChunk, LogPosition};

use crate::proto::wire::{
    CHUNK_BYTES_MAX, DATA_KEYS_PER_MESSAGE_MAX, Message, PROTOCOL_VERSION, RefuseCode,
};

/// Settings of a leader session.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// The cluster name both sides must share.
    pub cluster: String,
    /// This node's name.
    pub node: String,
    /// This node's FHIR base URL, given to followers for forwarding writes.
    pub http_url: String,
    /// Most bytes sent and not yet acknowledged as received (the
    /// session's window; the QUIC flow-control window is the node's
    /// `window_bytes`).
    pub unacked_bytes_max: u64,
    /// Most bytes per frames message (at most [`CHUNK_BYTES_MAX`]).
    pub chunk_bytes: usize,
    /// Heartbeat interval when nothing else is sent, µs.
    pub heartbeat_us: u64,
    /// A follower silent this long is disconnected, µs.
    pub silence_us: u64,
    /// Ship frames once written, while the leader's own fsync runs, rather
    /// than once durable: synchronous replication then overlaps the two
    /// fsyncs instead of running them one after the other. The follower
    /// shows a frame only once this leader says it is durable (the
    /// `leader_lsn` of [`Message::Frames`], or a heartbeat). The cost: a
    /// leader whose machine crashes before its fsync may come back without
    /// frames its follower holds, so that follower must cut them (it
    /// finds itself diverged by at most the last frame).
    pub ship_unsynced: bool,
}

impl LeaderConfig {
    /// Defaults measured on the project's machines (see docs/BENCHMARKS.md).
    pub fn new(cluster: &str, node: &str, http_url: &str) -> Self {
        Self {
            cluster: cluster.into(),
            node: node.into(),
            http_url: http_url.into(),
            unacked_bytes_max: 64 * 1024 * 1024,
            chunk_bytes: 256 * 1024,
            heartbeat_us: 100_000,
            silence_us: 2_000_000,
            ship_unsynced: false,
        }
    }
}

/// A follower's watermarks as the leader last heard them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Watermarks {
    /// Highest LSN the follower holds in memory.
    pub received: u64,
    /// Highest LSN the follower has fsynced: the only one loss counts from.
    pub durable: u64,
    /// Highest LSN the follower has indexed.
    pub applied: u64,
}

/// What happened, fed to [`LeaderSession::handle`].
#[derive(Debug)]
pub enum LeaderEvent {
    /// A message from the follower.
    Message(Message),
    /// The log's written or durable end moved (or is first known).
    LogAdvanced {
        /// The last LSN written, fsynced or not (at least `last_lsn`).
        written_lsn: u64,
        /// The last durable LSN.
        last_lsn: u64,
        /// Its commit time, µs since the Unix epoch.
        last_commit_us: u64,
        /// The leader's epoch.
        epoch: u64,
    },
    /// The answer to [`LeaderAction::ComparePosition`].
    Position(LogPosition),
    /// The answer to [`LeaderAction::ReadLog`] (`None`: nothing there yet).
    Chunk(Option<LogChunk>),
    /// Time passed.
    Tick,
}

/// What the driver must do.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaderAction {
    /// Send a message to the follower.
    Send(Message),
    /// Compare the follower's log end with the log; answer with `Position`.
    ComparePosition {
        /// Epoch of the follower's last frame.
        epoch: u64,
        /// The follower's last LSN.
        lsn: u64,
        /// CRC of the follower's last frame.
        crc: u32,
    },
    /// Read frames from `from_lsn`, at most `max_bytes`, none past
    /// `through_lsn` (written, or durable, as configured); answer with
    /// `Chunk`.
    ReadLog {
        /// First LSN wanted (a frame boundary).
        from_lsn: u64,
        /// Byte budget.
        max_bytes: usize,
        /// The last LSN that may be read.
        through_lsn: u64,
    },
    /// The follower's watermarks advanced.
    Watermarks(Watermarks),
    /// End the session (after sending what was queued), with why.
    Close(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitHello,
    AwaitPosition,
    Streaming,
    Closed,
}

/// Counters of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounters {
    /// Frames messages sent.
    pub chunks_sent: u64,
    /// Log bytes sent.
    pub bytes_sent: u64,
    /// Refetches the follower asked for (frames that failed on receipt).
    pub refetches: u64,
    /// Uncompressed bytes of the resource bodies in the frames sent.
    pub raw_bytes_sent: u64,
}

/// The leader's side of one session with one follower.
#[derive(Debug)]
pub struct LeaderSession {
    cfg: LeaderConfig,
    phase: Phase,
    follower: Option<String>,
    epoch: u64,
    leader_lsn: u64,
    leader_commit_us: u64,
    /// The last LSN written (shipped only with `ship_unsynced`).
    written_lsn: u64,
    /// The leader's durable end as last told to the follower.
    told_lsn: u64,
    next_send: u64,
    reading: bool,
    /// The last read found nothing to send: wait for the log to move.
    starved: bool,
    /// (last LSN, bytes) of chunks sent and not yet acknowledged as received.
    in_flight: VecDeque<(u64, u64)>,
    in_flight_bytes: u64,
    marks: Watermarks,
    last_heard_us: u64,
    last_sent_us: u64,
    counters: SessionCounters,
    /// Data keys already sent in this session (an encrypted leader).
    keys_sent: HashSet<u64>,
}

impl LeaderSession {
    /// A session for a follower that just connected, at time `now_us`.
    pub fn new(cfg: LeaderConfig, now_us: u64) -> Self {
        assert!(cfg.chunk_bytes > 0 && cfg.chunk_bytes <= CHUNK_BYTES_MAX);
        assert!(cfg.unacked_bytes_max >= cfg.chunk_bytes as u64);
        Self {
            cfg,
            phase: Phase::AwaitHello,
            follower: None,
            epoch: 0,
            leader_lsn: 0,
            leader_commit_us: 0,
            written_lsn: 0,
            told_lsn: 0,
            next_send: 0,
            reading: false,
            starved: false,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            marks: Watermarks::default(),
            last_heard_us: now_us,
            last_sent_us: now_us,
            counters: SessionCounters::default(),
            keys_sent: HashSet::new(),
        }
    }

    /// The follower's node name, once it said hello.
    pub fn follower(&self) -> Option<&str> {
        self.follower.as_deref()
    }

    /// The follower's watermarks as last acknowledged.
    pub fn watermarks(&self) -> Watermarks {
        self.marks
    }

    /// This session's counters.
    pub fn counters(&self) -> SessionCounters {
        self.counters
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Advances the machine by one event at time `now_us` (monotonic µs).
    pub fn handle(&mut self, event: LeaderEvent, now_us: u64) -> Vec<LeaderAction> {
        let mut out = Vec::new();
        if self.phase == Phase::Closed {
            return out;
        }
        match event {
            LeaderEvent::Message(m) => {
                self.last_heard_us = now_us;
                self.on_message(m, &mut out);
            }
            LeaderEvent::LogAdvanced {
                written_lsn,
                last_lsn,
                last_commit_us,
                epoch,
            } => {
                if last_lsn >= self.leader_lsn {
                    self.leader_lsn = last_lsn;
                    self.leader_commit_us = last_commit_us;
                }
                self.written_lsn = self.written_lsn.max(written_lsn).max(last_lsn);
                self.epoch = self.epoch.max(epoch);
                self.starved = false;
            }
            LeaderEvent::Position(p) => self.on_position(p, &mut out),
            LeaderEvent::Chunk(c) => {
                self.reading = false;
                self.starved = c.is_none();
                if let Some(c) = c.filter(|c| c.first_lsn == self.next_send) {
                    assert!(c.end_lsn > c.first_lsn, "a chunk holds a frame");
                    let bytes = c.bytes.len() as u64;
                    self.in_flight.push_back((c.end_lsn - 1, bytes));
                    self.in_flight_bytes += bytes;
                    self.next_send = c.end_lsn;
                    self.counters.chunks_sent += 1;
                    self.counters.bytes_sent += bytes;
                    self.counters.raw_bytes_sent += c.raw_bytes;
                    // Without `ship_unsynced` every frame read is durable
                    // (this session may not have heard so yet).
                    if !self.cfg.ship_unsynced {
                        self.leader_lsn = self.leader_lsn.max(c.end_lsn - 1);
                    }
                    self.told_lsn = self.leader_lsn;
                    // The keys first: the follower must hold them before
                    // it appends what they seal.
                    let new: Vec<_> = c
                        .data_keys
                        .into_iter()
                        .filter(|(id, _)| self.keys_sent.insert(*id))
                        .collect();
                    for keys in new.chunks(DATA_KEYS_PER_MESSAGE_MAX) {
                        out.push(LeaderAction::Send(Message::DataKeys {
                            keys: keys.to_vec(),
                        }));
                    }
                    out.push(LeaderAction::Send(Message::Frames {
                        first_lsn: c.first_lsn,
                        end_lsn: c.end_lsn,
                        leader_lsn: self.leader_lsn,
                        bytes: c.bytes,
                    }));
                }
            }
            LeaderEvent::Tick => {
                if now_us.saturating_sub(self.last_heard_us) > self.cfg.silence_us {
                    self.close(
                        format!(
                            "follower silent for {} ms",
                            now_us.saturating_sub(self.last_heard_us) / 1000
                        ),
                        &mut out,
                    );
                    return out;
                }
            }
        }
        if self.phase == Phase::Streaming {
            self.maybe_read(&mut out);
            let sent = out.iter().any(|a| matches!(a, LeaderAction::Send(_)));
            // The follower holds frames it may not show until told they
            // are durable here: tell it as soon as they are.
            let unconfirmed =
                self.told_lsn < self.leader_lsn && self.told_lsn < self.next_send.saturating_sub(1);
            if sent {
                self.last_sent_us = now_us;
            } else if unconfirmed
                || now_us.saturating_sub(self.last_sent_us) >= self.cfg.heartbeat_us
            {
                self.last_sent_us = now_us;
                self.told_lsn = self.leader_lsn;
                out.push(LeaderAction::Send(Message::Heartbeat {
                    epoch: self.epoch,
                    last_lsn: self.leader_lsn,
                    last_commit_us: self.leader_commit_us,
                }));
            }
        }
        out
    }

    fn close(&mut self, reason: String, out: &mut Vec<LeaderAction>) {
        self.phase = Phase::Closed;
        out.push(LeaderAction::Close(reason));
    }

    fn refuse(&mut self, code: RefuseCode, lsn: u64, reason: String, out: &mut Vec<LeaderAction>) {
        out.push(LeaderAction::Send(Message::Refused {
            code,
            lsn,
            reason: reason.clone(),
        }));
        self.close(reason, out);
    }

    fn on_message(&mut self, m: Message, out: &mut Vec<LeaderAction>) {
        match (self.phase, m) {
            (
                Phase::AwaitHello,
                Message::Hello {
                    protocol,
                    cluster,
                    node,
                    last_epoch,
                    last_lsn,
                    last_crc,
                },
            ) => {
                if protocol != PROTOCOL_VERSION {
                    let why = format!(
                        "protocol version mismatch: follower {node} speaks {protocol}, this leader speaks {PROTOCOL_VERSION}"
                    );
                    return self.refuse(RefuseCode::ProtocolVersion, 0, why, out);
                }
                if cluster != self.cfg.cluster {
                    let why = format!(
                        "node {node} belongs to cluster {cluster:?}, this is cluster {:?}",
                        self.cfg.cluster
                    );
                    return self.refuse(RefuseCode::WrongCluster, 0, why, out);
                }
                self.follower = Some(node);
                // Its applied LSN is not in the hello: it may trail the
                // durable end (frames awaiting this leader's confirmation).
                self.marks = Watermarks {
                    received: last_lsn,
                    durable: last_lsn,
                    applied: 0,
                };
                self.phase = Phase::AwaitPosition;
                out.push(LeaderAction::ComparePosition {
                    epoch: last_epoch,
                    lsn: last_lsn,
                    crc: last_crc,
                });
            }
            (
                Phase::Streaming,
                Message::Ack {
                    received,
                    durable,
                    applied,
                },
            ) => {
                let m = self.marks;
                if durable < m.durable || applied < m.applied || received < m.durable {
                    let why = format!(
                        "watermarks went back: durable {} -> {durable}, applied {} -> {applied}",
                        m.durable, m.applied
                    );
                    return self.refuse(RefuseCode::Protocol, 0, why, out);
                }
                if received >= self.next_send {
                    let why = format!(
                        "follower acknowledges lsn {received}, only {} was sent",
                        self.next_send.saturating_sub(1)
                    );
                    return self.refuse(RefuseCode::Protocol, 0, why, out);
                }
                while let Some(&(last, bytes)) = self.in_flight.front() {
                    if last > received {
                        break;
                    }
                    self.in_flight.pop_front();
                    self.in_flight_bytes -= bytes;
                }
                let new = Watermarks {
                    received,
                    durable,
                    applied,
                };
                if new != self.marks {
                    self.marks = new;
                    out.push(LeaderAction::Watermarks(new));
                }
            }
            (Phase::Streaming, Message::Refetch { from_lsn, reason }) => {
                if from_lsn <= self.marks.durable || from_lsn >= self.next_send {
                    let why = format!(
                        "refetch from lsn {from_lsn} outside the unacknowledged range {}..{}",
                        self.marks.durable + 1,
                        self.next_send
                    );
                    return self.refuse(RefuseCode::Protocol, 0, why, out);
                }
                tracing::warn!(
                    follower = self.follower.as_deref().unwrap_or("?"),
                    from_lsn,
                    "follower refetches frames that failed on receipt: {reason}"
                );
                self.counters.refetches += 1;
                self.next_send = from_lsn;
                self.starved = false;
                self.in_flight.clear();
                self.in_flight_bytes = 0;
            }
            (phase, m) => {
                let why = format!("unexpected {} message while {phase:?}", m.kind());
                self.refuse(RefuseCode::Protocol, 0, why, out);
            }
        }
    }

    fn on_position(&mut self, p: LogPosition, out: &mut Vec<LeaderAction>) {
        if self.phase != Phase::AwaitPosition {
            return;
        }
        let node = self.follower.clone().unwrap_or_default();
        match p {
            LogPosition::Prefix { next_lsn } => {
                self.next_send = next_lsn;
                self.told_lsn = self.leader_lsn;
                self.phase = Phase::Streaming;
                out.push(LeaderAction::Send(Message::Welcome {
                    leader: self.cfg.node.clone(),
                    epoch: self.epoch,
                    last_lsn: self.leader_lsn,
                    start_lsn: next_lsn,
                    http_url: self.cfg.http_url.clone(),
                }));
            }
            LogPosition::Diverged { agree_until } => {
                let why = format!(
                    "the log of {node} diverged from this leader's after lsn {agree_until}; it must rejoin (cut its log there) before it can follow"
                );
                self.refuse(RefuseCode::Diverged, agree_until, why, out);
            }
            LogPosition::Gone => {
                let why = format!(
                    "this leader no longer holds the log {node} needs; it must be reseeded"
                );
                self.refuse(RefuseCode::ReseedNeeded, 0, why, out);
            }
        }
    }

    fn maybe_read(&mut self, out: &mut Vec<LeaderAction>) {
        let end = if self.cfg.ship_unsynced {
            self.written_lsn
        } else {
            self.leader_lsn
        };
        if self.reading || self.starved || self.next_send > end {
            return;
        }
        let room = self
            .cfg
            .unacked_bytes_max
            .saturating_sub(self.in_flight_bytes);
        if room == 0 {
            return;
        }
        self.reading = true;
        out.push(LeaderAction::ReadLog {
            from_lsn: self.next_send,
            max_bytes: (room as usize).min(self.cfg.chunk_bytes),
            through_lsn: end,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(protocol: u16, cluster: &str) -> LeaderEvent {
        LeaderEvent::Message(Message::Hello {
            protocol,
            cluster: cluster.into(),
            node: "b".into(),
            last_epoch: 0,
            last_lsn: 0,
            last_crc: 0,
        })
    }

    fn refusal(actions: &[LeaderAction]) -> Option<RefuseCode> {
        actions.iter().find_map(|a| match a {
            LeaderAction::Send(Message::Refused { code, .. }) => Some(*code),
            _ => None,
        })
    }

    #[test]
    fn another_protocol_version_or_cluster_is_refused_with_the_reason() {
        let cfg = LeaderConfig::new("c", "a", "http://a");
        let mut s = LeaderSession::new(cfg.clone(), 0);
        let out = s.handle(hello(PROTOCOL_VERSION + 1, "c"), 1);
        assert_eq!(refusal(&out), Some(RefuseCode::ProtocolVersion));
        assert!(
            out.iter()
                .any(|a| matches!(a, LeaderAction::Close(r) if r.contains("protocol version")))
        );
        assert!(s.is_closed());
        let mut s = LeaderSession::new(cfg, 0);
        let out = s.handle(hello(PROTOCOL_VERSION, "other"), 1);
        assert_eq!(refusal(&out), Some(RefuseCode::WrongCluster));
    }

    #[test]
    fn an_encrypted_chunks_data_keys_go_first_and_once_a_session() {
        use vigil_engine::crypt::DataKey;
        let mut s = LeaderSession::new(LeaderConfig::new("c", "a", "http://a"), 0);
        s.handle(
            LeaderEvent::LogAdvanced {
                written_lsn: 50,
                last_lsn: 50,
                last_commit_us: 1,
                epoch: 1,
            },
            0,
        );
        s.handle(hello(PROTOCOL_VERSION, "c"), 1);
        s.handle(
            LeaderEvent::Position(LogPosition::Prefix { next_lsn: 1 }),
            2,
        );
        let (k1, k2) = (DataKey::from_bytes([1; 32]), DataKey::from_bytes([2; 32]));
        let chunk = |first: u64, end: u64, keys: Vec<(u64, DataKey)>| {
            LeaderEvent::Chunk(Some(LogChunk {
                first_lsn: first,
                end_lsn: end,
                frames: 1,
                bytes: vec![0; 100],
                raw_bytes: 300,
                data_keys: keys,
            }))
        };
        let out = s.handle(chunk(1, 11, vec![(5, k1.clone())]), 3);
        assert_eq!(
            out[0],
            LeaderAction::Send(Message::DataKeys {
                keys: vec![(5, k1.clone())]
            })
        );
        assert!(matches!(
            out[1],
            LeaderAction::Send(Message::Frames { first_lsn: 1, .. })
        ));
        let out = s.handle(chunk(11, 21, vec![(5, k1), (6, k2.clone())]), 4);
        assert_eq!(
            out[0],
            LeaderAction::Send(Message::DataKeys {
                keys: vec![(6, k2)]
            }),
            "only the key not sent yet"
        );
        assert!(matches!(
            out[1],
            LeaderAction::Send(Message::Frames { first_lsn: 11, .. })
        ));
    }

    #[test]
    fn frames_flow_in_order_within_the_window_and_acks_free_it() {
        let mut cfg = LeaderConfig::new("c", "a", "http://a");
        cfg.chunk_bytes = 100;
        cfg.unacked_bytes_max = 250;
        let mut s = LeaderSession::new(cfg, 0);
        s.handle(
            LeaderEvent::LogAdvanced {
                written_lsn: 50,
                last_lsn: 50,
                last_commit_us: 1,
                epoch: 1,
            },
            0,
        );
        let out = s.handle(hello(PROTOCOL_VERSION, "c"), 1);
        assert!(matches!(
            out[..],
            [LeaderAction::ComparePosition { lsn: 0, .. }]
        ));
        let out = s.handle(
            LeaderEvent::Position(LogPosition::Prefix { next_lsn: 1 }),
            2,
        );
        assert!(matches!(
            out[0],
            LeaderAction::Send(Message::Welcome { start_lsn: 1, .. })
        ));
        assert!(matches!(
            out[1],
            LeaderAction::ReadLog {
                from_lsn: 1,
                max_bytes: 100,
                through_lsn: 50
            }
        ));
        let chunk = |first: u64, end: u64| {
            LeaderEvent::Chunk(Some(LogChunk {
                first_lsn: first,
                end_lsn: end,
                frames: 1,
                bytes: vec![0; 100],
                raw_bytes: 300,
                data_keys: Vec::new(),
            }))
        };
        let out = s.handle(chunk(1, 11), 3);
        assert!(matches!(
            out[0],
            LeaderAction::Send(Message::Frames {
                first_lsn: 1,
                end_lsn: 11,
                ..
            })
        ));
        assert!(matches!(out[1], LeaderAction::ReadLog { from_lsn: 11, .. }));
        s.handle(chunk(11, 21), 4);
        // The third chunk fills the window: no read until an ack frees it.
        let out = s.handle(chunk(21, 31), 5);
        assert!(
            !out.iter()
                .any(|a| matches!(a, LeaderAction::ReadLog { .. })),
            "window full"
        );
        let out = s.handle(
            LeaderEvent::Message(Message::Ack {
                received: 20,
                durable: 10,
                applied: 10,
            }),
            6,
        );
        assert!(out.contains(&LeaderAction::Watermarks(Watermarks {
            received: 20,
            durable: 10,
            applied: 10
        })));
        assert!(
            out.iter()
                .any(|a| matches!(a, LeaderAction::ReadLog { from_lsn: 31, .. }))
        );
        // Watermarks that go back break the protocol.
        let out = s.handle(
            LeaderEvent::Message(Message::Ack {
                received: 20,
                durable: 5,
                applied: 5,
            }),
            7,
        );
        assert_eq!(refusal(&out), Some(RefuseCode::Protocol));
    }

    #[test]
    fn unsynced_frames_ship_with_the_durable_end_and_a_heartbeat_confirms_them() {
        let mut cfg = LeaderConfig::new("c", "a", "http://a");
        cfg.ship_unsynced = true;
        let mut s = LeaderSession::new(cfg, 0);
        let advanced = |written_lsn, last_lsn| LeaderEvent::LogAdvanced {
            written_lsn,
            last_lsn,
            last_commit_us: 1,
            epoch: 1,
        };
        s.handle(advanced(10, 10), 0);
        s.handle(hello(PROTOCOL_VERSION, "c"), 1);
        let out = s.handle(
            LeaderEvent::Position(LogPosition::Prefix { next_lsn: 11 }),
            2,
        );
        assert!(
            !out.iter()
                .any(|a| matches!(a, LeaderAction::ReadLog { .. })),
            "nothing written past the follower yet"
        );
        // Written, fsync under way: it ships, marked not durable yet.
        let out = s.handle(advanced(15, 10), 3);
        assert!(out.contains(&LeaderAction::ReadLog {
            from_lsn: 11,
            max_bytes: 256 * 1024,
            through_lsn: 15
        }));
        let out = s.handle(
            LeaderEvent::Chunk(Some(LogChunk {
                first_lsn: 11,
                end_lsn: 16,
                frames: 1,
                bytes: vec![0; 10],
                raw_bytes: 30,
                data_keys: Vec::new(),
            })),
            4,
        );
        assert!(matches!(
            out[0],
            LeaderAction::Send(Message::Frames {
                first_lsn: 11,
                end_lsn: 16,
                leader_lsn: 10,
                ..
            })
        ));
        // Durable: the follower hears so at once, not at the next heartbeat.
        let out = s.handle(advanced(15, 15), 5);
        assert!(out.contains(&LeaderAction::Send(Message::Heartbeat {
            epoch: 1,
            last_lsn: 15,
            last_commit_us: 1
        })));
        // Told once: nothing more until something moves or the interval.
        assert!(s.handle(LeaderEvent::Tick, 6).is_empty());
        // Without ship_unsynced only durable frames are read.
        let mut s = LeaderSession::new(LeaderConfig::new("c", "a", "http://a"), 0);
        s.handle(advanced(10, 10), 0);
        s.handle(hello(PROTOCOL_VERSION, "c"), 1);
        s.handle(
            LeaderEvent::Position(LogPosition::Prefix { next_lsn: 11 }),
            2,
        );
        let out = s.handle(advanced(15, 10), 3);
        assert!(
            !out.iter()
                .any(|a| matches!(a, LeaderAction::ReadLog { .. }))
        );
    }
}
