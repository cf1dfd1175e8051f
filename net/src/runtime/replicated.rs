//! [`Replicated`]: the one face replication shows the layer above. A
//! client's write goes through [`Replicated::commit`] and nothing else:
//!
//! 1. admission — under automatic failover only the leaseholder of the
//!    current epoch takes it (the in-flight count a step-down drains);
//!    with `on_lag = stall`, only while a follower is within `max_lag`;
//! 2. the local commit — durable when it returns, answered by callback so
//!    no async worker waits for the fsync (large batches are prepared on a
//!    blocking thread);
//! 3. replication's promise — synchronous (`max_lag = 0`): the follower
//!    holds it durably, or it was given up on (recorded ineligible at the
//!    witness first) or refused (`stall`); bounded (`max_lag > 0`): a
//!    follower beyond the bound is recorded ineligible before the answer;
//! 4. the lease check — still the leader, or the write is not acknowledged
//!    (durable here, it may be cut into a rejoin's quarantine).
//!
//! Every refusal is a [`CommitError`] a client may retry, except a store
//! error, which says what it is.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vigil_engine::{Batch, Committed, Store};

use crate::runtime::cluster::{Cluster, WriteGuard, WriteRefused};
use crate::runtime::node::Node;

/// Operations above which a batch is prepared (compressed, keyed) on a
/// blocking thread rather than on the async worker.
const INLINE_PREPARE_OPS_MAX: usize = 16;

/// What a leader does when no follower is within `max_lag`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnLag {
    /// The follower is recorded ineligible for promotion; writes go on.
    #[default]
    Accept,
    /// Writes are refused (retry later) until a follower is back within
    /// the bound.
    Stall,
}

/// The rules a replicated write follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteRules {
    /// The RPO promise: `Some(0)` is synchronous; `None` ships without a
    /// bound.
    pub max_lag: Option<Duration>,
    /// Synchronous mode: how long a write waits for the follower.
    pub sync_timeout: Duration,
    /// What happens when no follower keeps up.
    pub on_lag: OnLag,
}

/// Why a write was not acknowledged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The store refused or failed it.
    #[error(transparent)]
    Store(#[from] vigil_engine::Error),
    /// This node may not take writes now (not the leader, lease lapsed,
    /// a switchover under way); nothing was written.
    #[error("{0}; retry")]
    Refused(WriteRefused),
    /// The node is being replaced (failover changing roles); nothing was
    /// written.
    #[error("this node is changing role (failover in progress); retry")]
    ChangingRole,
    /// `on_lag = stall` and no follower within `max_lag`; nothing was
    /// written.
    #[error("writes are stalled: no follower within max_lag {max_lag_ms} ms ({why}); retry")]
    Stalled {
        /// The bound.
        max_lag_ms: u64,
        /// Which followers lag, or "none connected".
        why: String,
    },
    /// Durable here, but the follower's eligibility could not be recorded
    /// at the witness, so the write is not acknowledged.
    #[error(
        "the write is durable on the leader, but the follower's eligibility could not be recorded: {0}"
    )]
    RecordFailed(String),
    /// Synchronous mode with `on_lag = stall`: durable here, not on a
    /// follower in time.
    #[error(
        "synchronous replication: no follower confirmed lsn {lsn} within {timeout_ms} ms; the write is durable on the leader only"
    )]
    NotConfirmed {
        /// The write's last LSN.
        lsn: u64,
        /// The wait.
        timeout_ms: u64,
    },
    /// Durable here, but leadership was lost before the answer.
    #[error(
        "{0}; retry (the write is durable on this node but was not acknowledged: leadership was lost meanwhile)"
    )]
    LeadershipLost(WriteRefused),
    /// The blocking task that prepared the batch failed.
    #[error("commit task failed: {0}")]
    Task(String),
}

#[derive(Clone)]
enum Mode {
    /// No replication.
    Standalone,
    /// A static role, for the life of the process.
    Static(Arc<Node>),
    /// Automatic failover: the role (and the node) change at run time.
    Automatic(Arc<Cluster>),
}

/// Replication as the layer above sees it: standalone, a static role, or
/// automatic failover, and the rules its writes follow. Cheap to clone.
#[derive(Clone)]
pub struct Replicated {
    mode: Mode,
    rules: WriteRules,
}

impl std::fmt::Debug for Replicated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            Mode::Standalone => "standalone",
            Mode::Static(_) => "static",
            Mode::Automatic(_) => "automatic",
        };
        f.debug_struct("Replicated")
            .field("mode", &mode)
            .field("rules", &self.rules)
            .finish()
    }
}

impl Replicated {
    /// No replication: a commit is the local commit.
    pub fn standalone() -> Self {
        Self {
            mode: Mode::Standalone,
            rules: WriteRules {
                max_lag: None,
                sync_timeout: Duration::ZERO,
                on_lag: OnLag::Accept,
            },
        }
    }

    /// A started node with a static role.
    pub fn fixed(node: Node, rules: WriteRules) -> Self {
        Self {
            mode: Mode::Static(Arc::new(node)),
            rules,
        }
    }

    /// A node under automatic failover.
    pub fn automatic(cluster: Arc<Cluster>, rules: WriteRules) -> Self {
        Self {
            mode: Mode::Automatic(cluster),
            rules,
        }
    }

    /// The rules writes follow.
    pub fn rules(&self) -> WriteRules {
        self.rules
    }

    /// The replication node now (`None` standalone, or while failover
    /// changes roles).
    pub fn node(&self) -> Option<Arc<Node>> {
        match &self.mode {
            Mode::Standalone => None,
            Mode::Static(n) => Some(n.clone()),
            Mode::Automatic(c) => c.node(),
        }
    }

    /// The failover loop, under automatic failover.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        match &self.mode {
            Mode::Automatic(c) => Some(c),
            _ => None,
        }
    }

    /// Whether this node takes writes now (standalone: always).
    pub fn is_leader(&self) -> bool {
        match &self.mode {
            Mode::Standalone => true,
            Mode::Static(n) => n.is_leader(),
            Mode::Automatic(c) => c.is_leader(),
        }
    }

    /// Stops replication (and, under failover, the leadership loop).
    pub async fn shutdown(&self) {
        match &self.mode {
            Mode::Standalone => {}
            Mode::Static(n) => n.shutdown().await,
            Mode::Automatic(c) => c.shutdown().await,
        }
    }

    /// Commits `batch` to `store` (this node's store of the moment) under
    /// every rule above; `Ok` only for a write that may be acknowledged.
    pub async fn commit(&self, store: Arc<Store>, batch: Batch) -> Result<Committed, CommitError> {
        let _admitted = self.admit()?;
        let committed = commit_locally(store, batch).await?;
        self.after_commit(committed.last_lsn).await?;
        self.before_ack()?;
        Ok(committed)
    }

    /// Before a write: fencing under failover, and `on_lag = stall`.
    fn admit(&self) -> Result<Option<WriteGuard>, CommitError> {
        let guard = match self.cluster() {
            Some(c) => Some(c.begin_write().map_err(CommitError::Refused)?),
            None => None,
        };
        if matches!(self.mode, Mode::Standalone)
            || self.rules.on_lag != OnLag::Stall
            || !self.is_leader()
        {
            return Ok(guard);
        }
        let followers = self.node().map(|n| n.followers()).unwrap_or_default();
        let lagging: Vec<_> = followers
            .iter()
            .filter(|f| !f.eligible || !f.connected)
            .map(|f| format!("{} ({:.1} s behind)", f.node, f.lag_seconds))
            .collect();
        if followers.is_empty() || !lagging.is_empty() {
            return Err(CommitError::Stalled {
                max_lag_ms: self.rules.max_lag.map_or(0, |d| d.as_millis() as u64),
                why: if lagging.is_empty() {
                    "none connected".into()
                } else {
                    lagging.join(", ")
                },
            });
        }
        Ok(guard)
    }

    /// After a durable local commit ending at `lsn`: the synchronous wait,
    /// or the `max_lag` record.
    async fn after_commit(&self, lsn: Option<u64>) -> Result<(), CommitError> {
        let Some(lsn) = lsn else {
            return Ok(());
        };
        if matches!(self.mode, Mode::Standalone) || !self.is_leader() {
            return Ok(());
        }
        let node = self.node().ok_or(CommitError::ChangingRole)?;
        if self.rules.max_lag != Some(Duration::ZERO) {
            // Bounded loss: a follower beyond max_lag is recorded as
            // ineligible before this write is acknowledged.
            return node
                .check_bound()
                .await
                .map_err(|e| CommitError::RecordFailed(e.to_string()));
        }
        // Wait only for a follower that can confirm: one that is connected
        // and still eligible (a lost one was recorded ineligible already).
        if node.has_eligible_follower() && node.wait_replicated(lsn, self.rules.sync_timeout).await
        {
            return Ok(());
        }
        if self.rules.on_lag != OnLag::Stall {
            // With no follower keeping up, the leader goes on accepting
            // writes by default, after recording that the follower lacks
            // them (so it will not be promoted over them).
            return node
                .give_up_on(lsn)
                .await
                .map_err(|e| CommitError::RecordFailed(e.to_string()));
        }
        Err(CommitError::NotConfirmed {
            lsn,
            timeout_ms: self.rules.sync_timeout.as_millis() as u64,
        })
    }

    /// Just before acknowledging under automatic failover: the lease must
    /// still hold.
    fn before_ack(&self) -> Result<(), CommitError> {
        match self.cluster() {
            Some(c) => c.still_leading().map_err(CommitError::LeadershipLost),
            None => Ok(()),
        }
    }
}

/// Commits without parking an async worker while the fsync runs: the
/// engine calls back when the frame is durable. Large batches are prepared
/// on a blocking thread so that compression does not stall the runtime.
async fn commit_locally(store: Arc<Store>, batch: Batch) -> Result<Committed, CommitError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let done = move |r: vigil_engine::Result<Committed>| {
        let _ = tx.send(r);
    };
    if batch.ops.len() > INLINE_PREPARE_OPS_MAX {
        tokio::task::spawn_blocking(move || store.commit_with(batch, done))
            .await
            .map_err(|e| CommitError::Task(e.to_string()))??;
    } else {
        store.commit_with(batch, done)?;
    }
    Ok(rx.await.map_err(|_| vigil_engine::Error::Closed)??)
}
