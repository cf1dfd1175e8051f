//! The server's side of replication: [`Replication`] (the node of a static
//! role, or the failover loop), and the rules a client write passes on its
//! way through `app::commit`: admission (fencing, `on_lag = "stall"`), the
//! synchronous wait or the `max_lag` record after the local commit, the
//! lease check before the answer. [`http`] holds what HTTP sees of it.
//! The `[replication]` settings are `config::replication`'s.

pub mod http;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use vigil_net::runtime::cluster::{Cluster, WriteGuard, WriteRefused};
use vigil_net::runtime::node::Node;

use crate::config::replication::{OnLag, ReplicationConfig};
use crate::outcome::FhirError;

/// Replication as the HTTP server uses it.
pub struct Replication {
    node: NodeRef,
    /// Its settings.
    pub config: ReplicationConfig,
    client: Client<HttpConnector, Full<Bytes>>,
}

enum NodeRef {
    /// A static role, for the life of the process.
    Fixed(Arc<Node>),
    /// Automatic failover: the role (and the node) change at run time.
    Cluster(Arc<Cluster>),
}

impl Replication {
    /// Wraps a started node with a static role.
    pub fn new(node: Node, config: ReplicationConfig) -> Self {
        Self::with(NodeRef::Fixed(Arc::new(node)), config)
    }

    /// Wraps a node under automatic failover.
    pub fn with_cluster(cluster: Arc<Cluster>, config: ReplicationConfig) -> Self {
        Self::with(NodeRef::Cluster(cluster), config)
    }

    fn with(node: NodeRef, config: ReplicationConfig) -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self {
            node,
            config,
            client,
        }
    }

    /// The replication node now (`None` while failover changes roles).
    pub fn node(&self) -> Option<Arc<Node>> {
        match &self.node {
            NodeRef::Fixed(n) => Some(n.clone()),
            NodeRef::Cluster(c) => c.node(),
        }
    }

    /// The failover loop, under automatic failover.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        match &self.node {
            NodeRef::Fixed(_) => None,
            NodeRef::Cluster(c) => Some(c),
        }
    }

    /// Whether this node leads now.
    pub fn is_leader(&self) -> bool {
        match &self.node {
            NodeRef::Fixed(n) => n.is_leader(),
            NodeRef::Cluster(c) => c.is_leader(),
        }
    }

    /// Stops replication (and, under failover, the leadership loop).
    pub async fn shutdown(&self) {
        match &self.node {
            NodeRef::Fixed(n) => n.shutdown().await,
            NodeRef::Cluster(c) => c.shutdown().await,
        }
    }
}

fn changing_role() -> FhirError {
    FhirError::unavailable(
        "this node is changing role (failover in progress); retry",
        1,
    )
}

/// Latency buckets of acknowledged commits, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// A Prometheus histogram of commit latency (acknowledgement time,
/// including synchronous replication when configured).
#[derive(Debug, Default)]
pub struct CommitLatency {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl CommitLatency {
    /// Appends the histogram in Prometheus text format to `m`.
    pub fn render(&self, m: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            m,
            "# HELP vigil_commit_seconds Time to acknowledge a write.\n# TYPE vigil_commit_seconds histogram"
        );
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                m,
                "vigil_commit_seconds_bucket{{le=\"{b}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(m, "vigil_commit_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            m,
            "vigil_commit_seconds_sum {}\nvigil_commit_seconds_count {count}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
    }

    /// Records one commit.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            if s <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Before a write on a leader: refuses it (503, Retry-After) when the
/// configuration says to stall while a follower is beyond `max_lag`.
pub fn admit_write(r: Option<&Replication>) -> Result<Option<WriteGuard>, FhirError> {
    let Some(r) = r else {
        return Ok(None);
    };
    let guard = match r.cluster() {
        Some(c) => Some(c.begin_write().map_err(refused)?),
        None => None,
    };
    if r.config.on_lag != OnLag::Stall || !r.is_leader() {
        return Ok(guard);
    }
    let followers = r.node().map(|n| n.followers()).unwrap_or_default();
    let lagging: Vec<_> = followers
        .iter()
        .filter(|f| !f.eligible || !f.connected)
        .map(|f| format!("{} ({:.1} s behind)", f.node, f.lag_seconds))
        .collect();
    if followers.is_empty() || !lagging.is_empty() {
        let e = FhirError::unavailable(
            format!(
                "writes are stalled: no follower within max_lag {} ms ({}); retry",
                r.config.max_lag_ms.unwrap_or(0),
                if lagging.is_empty() {
                    "none connected".into()
                } else {
                    lagging.join(", ")
                }
            ),
            1,
        );
        return Err(e);
    }
    Ok(guard)
}

/// A write this node may not take now: 503 with Retry-After.
fn refused(why: WriteRefused) -> FhirError {
    FhirError::unavailable(format!("{why}; retry"), 1)
}

/// Just before acknowledging a write under automatic failover: the lease
/// must still hold, or the write is not acknowledged (it is durable here,
/// and a rejoin may cut it into quarantine).
pub fn before_ack(r: Option<&Replication>) -> Result<(), FhirError> {
    match r.and_then(|r| r.cluster()) {
        Some(c) => c.still_leading().map_err(|why| {
            let mut e = refused(why);
            e.diagnostics.push_str(
                " (the write is durable on this node but was not acknowledged: leadership was lost meanwhile)",
            );
            e
        }),
        None => Ok(()),
    }
}

/// After a durable local commit ending at `lsn`: in synchronous mode,
/// waits until a follower holds it durably.
pub async fn after_commit(r: Option<&Replication>, lsn: Option<u64>) -> Result<(), FhirError> {
    let (Some(r), Some(lsn)) = (r, lsn) else {
        return Ok(());
    };
    if !r.is_leader() {
        return Ok(());
    }
    let node = r.node().ok_or_else(changing_role)?;
    if r.config.max_lag_ms != Some(0) {
        // Bounded loss: a follower beyond max_lag is recorded as
        // ineligible before this write is acknowledged.
        return node.check_bound().await.map_err(|e| {
            FhirError::unavailable(format!(
                    "the write is durable on the leader, but the follower's eligibility could not be recorded: {e}"
                ), 1)
        });
    }
    let timeout = Duration::from_millis(r.config.sync_timeout_ms);
    // Wait only for a follower that can confirm: one that is connected and
    // still eligible (a lost one was recorded ineligible already).
    if node.has_eligible_follower() && node.wait_replicated(lsn, timeout).await {
        return Ok(());
    }
    if r.config.on_lag != OnLag::Stall {
        // DESIGN.md: with no follower keeping up, the leader goes on
        // accepting writes by default, after recording that the follower
        // lacks them (so it will not be promoted over them).
        return node.give_up_on(lsn).await.map_err(|e| {
            FhirError::unavailable(format!(
                    "the write is durable on the leader, but the follower's eligibility could not be recorded: {e}"
                ), 1)
        });
    }
    let e = FhirError::unavailable(
        format!(
            "synchronous replication: no follower confirmed lsn {lsn} within {} ms; the write is durable on the leader only",
            r.config.sync_timeout_ms
        ),
        1,
    );
    Err(e)
}
