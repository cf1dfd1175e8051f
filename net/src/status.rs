//! What a node reports about replication: `/status`, `vigil status` and
//! `/metrics` are rendered from these.

use serde::Serialize;

/// A node's replication state at one moment.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ReplicationStatus {
    /// `leader` or `follower`.
    pub role: String,
    /// This node's name.
    pub node: String,
    /// The cluster's name.
    pub cluster: String,
    /// The node's epoch (of its last frame).
    pub epoch: u64,
    /// The node's last durable LSN.
    pub last_lsn: u64,
    /// The RPO promise in seconds (0: synchronous), if one is configured.
    pub max_lag_seconds: Option<f64>,
    /// On a leader: every follower that connected since start.
    pub followers: Vec<FollowerLink>,
    /// On a follower: its leader and its own progress.
    pub upstream: Option<Upstream>,
}

/// A leader's view of one follower.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FollowerLink {
    /// The follower's node name.
    pub node: String,
    /// Its address as seen by the leader.
    pub remote: String,
    /// Whether a session is open now.
    pub connected: bool,
    /// Highest LSN the follower holds in memory.
    pub received: u64,
    /// Highest LSN the follower has fsynced: what loss is counted from.
    pub durable: u64,
    /// Highest LSN the follower has indexed.
    pub applied: u64,
    /// LSNs the follower lacks durably.
    pub lag_lsns: u64,
    /// Age of the oldest write the follower lacks durably, in seconds.
    pub lag_seconds: f64,
    /// Whether the follower may be promoted (its lag within `max_lag`).
    pub eligible: bool,
    /// Log bytes sent to it since start.
    pub bytes_sent: u64,
    /// Uncompressed bytes of the resource bodies in what was sent.
    pub raw_bytes_sent: u64,
    /// Frames messages sent to it since start.
    pub chunks_sent: u64,
    /// Refetches it asked for (frames that failed their checks on receipt).
    pub refetches: u64,
    /// Sessions opened with it since start.
    pub sessions: u64,
    /// Replication lag of recent commits: from the leader's commit to the
    /// leader hearing the follower has it durable (so it includes the
    /// acknowledgement's trip back), median, milliseconds.
    pub commit_to_durable_p50_ms: f64,
    /// The same, 99th percentile.
    pub commit_to_durable_p99_ms: f64,
    /// Samples behind the two figures (the most recent ones).
    pub commit_to_durable_samples: usize,
}

/// A follower's view of its leader and of its own progress.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Upstream {
    /// The replication address it connects to.
    pub leader_addr: String,
    /// The leader's node name, once known.
    pub leader: String,
    /// The leader's FHIR base URL, once known (writes are forwarded there).
    pub leader_http: String,
    /// Whether frames are flowing now.
    pub connected: bool,
    /// The leader's last durable LSN, as last heard.
    pub leader_lsn: u64,
    /// Highest LSN received.
    pub received: u64,
    /// Highest LSN fsynced.
    pub durable: u64,
    /// Highest LSN indexed and readable.
    pub applied: u64,
    /// LSNs behind the leader.
    pub lag_lsns: u64,
    /// How much older the newest local write is than the leader's, seconds.
    pub lag_seconds: f64,
    /// Why replication stopped for good, if it did.
    pub stopped: Option<String>,
    /// When the leader refused this follower because the logs diverged:
    /// the last LSN both may share (a rejoin cuts there).
    pub diverged_at: Option<u64>,
    /// When the leader no longer holds what this follower needs.
    pub reseed_needed: bool,
    /// The leader's epoch, as last heard.
    pub leader_epoch: u64,
    /// Connections made.
    pub connects: u64,
    /// Connections lost.
    pub disconnects: u64,
    /// Chunks that failed their checks on receipt (fetched again).
    pub checksum_failures: u64,
    /// Appends that failed on the local disk.
    pub disk_failures: u64,
    /// Log bytes received since start.
    pub bytes_received: u64,
    /// Progress while catching up.
    pub sync: Option<SyncProgress>,
}

/// Progress of a catch-up (initial sync or after a long disconnection).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SyncProgress {
    /// Share of the leader's log held durably, 0..=100.
    pub percent: f64,
    /// LSNs still to fetch.
    pub lsns_left: u64,
    /// Receive rate over the last seconds, bytes per second.
    pub bytes_per_second: f64,
    /// Estimated seconds until caught up, at the current rate.
    pub eta_seconds: Option<f64>,
}

/// The `p` quantile (0 to 1) of `sorted` samples by nearest rank, and 0
/// for none: the one percentile every report of Vigil's uses (`/status`,
/// `vigil drill`, the benchmarks).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    debug_assert!((0.0..=1.0).contains(&p), "quantile {p}");
    debug_assert!(sorted.is_sorted_by(|a, b| a <= b), "samples not sorted");
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
