//! The server's side of replication: [`Replication`] (net's
//! [`Replicated`], the one face through which `app::commit` writes, with
//! the `[replication]` settings and the HTTP client that forwards a
//! follower's writes), and the commit-latency histogram. [`http`] holds
//! what HTTP sees of it. The settings are `config::replication`'s.

pub mod http;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use vigil_net::runtime::cluster::Cluster;
use vigil_net::runtime::node::Node;
use vigil_net::runtime::replicated::Replicated;

use crate::config::replication::ReplicationConfig;

/// Replication as the HTTP server uses it.
pub struct Replication {
    /// The node (or failover loop) and the rules every write follows.
    pub replicated: Replicated,
    /// Its settings.
    pub config: ReplicationConfig,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Replication {
    /// Wraps a started node with a static role.
    pub fn new(node: Node, config: ReplicationConfig) -> Self {
        Self::with(Replicated::fixed(node, config.write_rules()), config)
    }

    /// Wraps a node under automatic failover.
    pub fn with_cluster(cluster: Arc<Cluster>, config: ReplicationConfig) -> Self {
        Self::with(Replicated::automatic(cluster, config.write_rules()), config)
    }

    fn with(replicated: Replicated, config: ReplicationConfig) -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self {
            replicated,
            config,
            client,
        }
    }

    /// The replication node now (`None` while failover changes roles).
    pub fn node(&self) -> Option<Arc<Node>> {
        self.replicated.node()
    }

    /// The failover loop, under automatic failover.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.replicated.cluster()
    }

    /// Whether this node leads now.
    pub fn is_leader(&self) -> bool {
        self.replicated.is_leader()
    }

    /// Stops replication (and, under failover, the leadership loop).
    pub async fn shutdown(&self) {
        self.replicated.shutdown().await
    }
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
