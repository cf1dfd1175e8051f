//! Automatic failover on one data node: the loop that drives the
//! [`Elector`] with real time and real messages, and turns its decisions
//! into role changes of the store and of replication.
//!
//! The machine decides; this module only carries out. Every node starts as
//! a follower with a read-only store and accepts no write until it holds a
//! lease in the current epoch. A promotion clears read-only and writes the
//! `EpochStart` of the epoch the witness allocated, then leads; a step-down
//! (a higher epoch, or a switchover) makes the store read-only and follows
//! the other node. When the new leader says the logs diverged, the store is
//! closed, cut back with everything cut written to quarantine
//! ([`Store::cut_log`]), reopened, and follows again.
//!
//! Votes travel to the witness on a connection of their own, and between
//! the data nodes on the replication connection (the leader asks, the
//! follower's voter answers), so a node cut off from its peer can still
//! renew through the witness, and the other way round.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use vigil_engine::{Options, Store};

mod drive;
mod links;
mod roles;

use drive::run;
use links::{answer_leader, etcd_link, witness_link};
use roles::{promote, start_follower, step_down, take_node};

use crate::proto::coordination::ETCD_VOTER;
use crate::proto::lease::{
    Elector, ElectorAction, LeaseConfig, LeaseReply, LeaseRequest, Role as LeaseRole,
};
use crate::proto::wire::Message;
use crate::runtime::error::NetError;
use crate::runtime::etcd::{EtcdClient, EtcdConfig, EtcdWitness};
use crate::runtime::node::{Node, NodeConfig, Role};
use crate::runtime::tls::Identity;
use crate::runtime::witness::WitnessClient;

/// How often the loop looks at time and at replication.
const TICK: Duration = Duration::from_millis(50);
/// Longest wait for one answer from the witness.
const WITNESS_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest etcd's answer to one request may take (inside
/// [`WITNESS_TIMEOUT`], after which the request is given up anyway).
const ETCD_BUDGET: Duration = Duration::from_millis(900);
/// Requests queued for the witness before new ones are dropped (a lease
/// round is simply retried).
const WITNESS_QUEUE_MAX: usize = 64;
/// How long a rejoin waits for requests still using the old store.
const STORE_RELEASE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a switchover waits for the follower to hold every write.
const SWITCHOVER_CATCH_UP: Duration = Duration::from_secs(5);
/// Failovers remembered for status.
const EVENTS_MAX: usize = 32;

/// Another member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its node name (its certificate's).
    pub name: String,
    /// Its replication (data node) or voting (witness) address.
    pub addr: SocketAddr,
}

/// The third voter, which also allocates epochs and keeps eligibility.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Coordinator {
    /// Vigil's own witness process.
    Witness(Member),
    /// An etcd cluster (its keys under the configured prefix).
    Etcd(EtcdConfig),
}

impl Coordinator {
    /// Its name as a voter.
    pub fn name(&self) -> &str {
        match self {
            Self::Witness(m) => &m.name,
            Self::Etcd(_) => ETCD_VOTER,
        }
    }

    /// `witness` or `etcd`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Witness(_) => "witness",
            Self::Etcd(_) => "etcd",
        }
    }
}

/// Everything one data node needs for automatic failover.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Replication settings; the role is decided here, not taken from it.
    pub node: NodeConfig,
    /// This node's replication address while it leads.
    pub listen: SocketAddr,
    /// The other data node.
    pub peer: Member,
    /// Who holds the third vote and allocates epochs.
    pub coordinator: Coordinator,
    /// Lease timing.
    pub lease: LeaseConfig,
    /// The node that takes the first lease of a brand-new cluster (the
    /// other waits two lease durations longer before it tries).
    pub preferred: String,
    /// The store's directory.
    pub data: PathBuf,
    /// How the store is opened (`replica` is always set: a node takes
    /// writes only once promoted).
    pub store: Options,
}

/// One role change, for status.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Transition {
    /// When, µs since the Unix epoch.
    pub at_us: u64,
    /// `promoted`, `stepped-down`, `rejoined`, `reseeded`, `switchover`.
    pub kind: String,
    /// The epoch after it.
    pub epoch: u64,
    /// Why.
    pub reason: String,
    /// On a promotion: how far behind the old leader this node was when
    /// it last heard from it, in LSNs and seconds of commit time (the
    /// loss window, at most); on a rejoin: the versions cut.
    pub lost_lsns: u64,
    /// See `lost_lsns`.
    pub lost_seconds: f64,
    /// On a rejoin: where the cut versions were written.
    pub quarantine: Option<String>,
}

/// What `/status` shows about leadership.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LeadershipStatus {
    /// `leader` or `follower`.
    pub role: String,
    /// The epoch this node knows.
    pub epoch: u64,
    /// Whether it may acknowledge writes now.
    pub may_write: bool,
    /// Milliseconds left on its lease (leader only).
    pub lease_left_ms: u64,
    /// The coordinator's name (the witness's, or `etcd`).
    pub witness: String,
    /// `witness` or `etcd`.
    pub coordinator: String,
    /// Whether the witness answered the last request.
    pub witness_reachable: bool,
    /// The other data node.
    pub peer: String,
    /// Writes paused for a switchover.
    pub paused: bool,
    /// Lease rounds that reached a majority.
    pub lease_renewals: u64,
    /// Times the lease lapsed (writes fenced).
    pub lease_lapses: u64,
    /// Epochs this node won.
    pub elections_won: u64,
    /// Role changes, most recent last.
    pub transitions: Vec<Transition>,
}

enum Event {
    Reply(LeaseReply),
    Cas(Result<u64, u64>),
    WitnessReachable(bool),
}

/// A request to the witness and where its answer goes.
type WitnessJob = (Message, oneshot::Sender<Result<Message, NetError>>);

struct Inner {
    cfg: ClusterConfig,
    started: Instant,
    elector: Mutex<Elector>,
    store: RwLock<Option<Arc<Store>>>,
    node: RwLock<Option<Arc<Node>>>,
    status: Mutex<LeadershipStatus>,
    paused: AtomicBool,
    in_flight: AtomicU64,
    /// Set when the leader handed over: the next tick asks for a majority.
    hand_over: Mutex<Option<(u64, u64)>>,
    /// Whether this node may stand for election (not while rejoining).
    standing: AtomicBool,
    witness_tx: mpsc::Sender<WitnessJob>,
}

impl Inner {
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }
    fn elector(&self) -> std::sync::MutexGuard<'_, Elector> {
        self.elector.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn status(&self) -> std::sync::MutexGuard<'_, LeadershipStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn store(&self) -> Option<Arc<Store>> {
        self.store.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn node(&self) -> Option<Arc<Node>> {
        self.node.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn record(&self, t: Transition) {
        let mut s = self.status();
        if s.transitions.len() == EVENTS_MAX {
            s.transitions.remove(0);
        }
        s.transitions.push(t);
    }

    /// Asks the witness, waiting at most [`WITNESS_TIMEOUT`].
    async fn ask_witness(&self, m: Message) -> Result<Message, NetError> {
        let (tx, rx) = oneshot::channel();
        self.witness_tx
            .try_send((m, tx))
            .map_err(|_| NetError::Connection("witness queue full".into()))?;
        tokio::time::timeout(WITNESS_TIMEOUT, rx)
            .await
            .map_err(|_| NetError::Connection("the witness did not answer in time".into()))?
            .map_err(|_| NetError::Connection("witness task ended".into()))?
    }
}

/// A data node under automatic failover. Cheap to share (`Arc`).
pub struct Cluster {
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.inner.cfg.node.name)
            .finish_non_exhaustive()
    }
}

/// A write admitted on the leader; dropping it ends the write (a
/// switchover waits for every admitted write to end).
pub struct WriteGuard {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WriteGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteGuard")
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a write is not taken here now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteRefused {
    /// This node does not lead (or is changing role).
    #[error("this node is not the leader")]
    NotLeader,
    /// It leads, but its lease lapsed: it cannot know no one else leads.
    #[error("the leader's lease lapsed; writes wait until a majority renews it")]
    LeaseLapsed,
    /// A switchover is moving leadership.
    #[error("a switchover is moving leadership; writes resume in a moment")]
    Paused,
}

/// The loss window of a forced promotion, estimated before it acts.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LossEstimate {
    /// LSNs the old leader had (as last heard) that this node lacks.
    pub lsns: u64,
    /// Seconds of commit time this node was behind.
    pub seconds: f64,
    /// Whether the leader is still heard (then a forced promotion is refused).
    pub leader_connected: bool,
    /// This node's durable LSN.
    pub durable_lsn: u64,
}

/// What a switchover did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SwitchoverReport {
    /// The epoch handed over.
    pub from_epoch: u64,
    /// The last LSN written in it (the follower held it before the hand-over).
    pub last_lsn: u64,
    /// The node that leads now.
    pub new_leader: String,
    /// Milliseconds from the write pause until the follower, holding every
    /// write, was told to take over (it leads a few round trips later).
    pub handover_ms: u64,
    /// Milliseconds from the pause until this node followed the new leader
    /// (writes sent here are forwarded again from then on).
    pub following_ms: u64,
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Cluster {
    /// Opens the store (read-only until promoted), starts following the
    /// peer, and starts the leadership loop.
    pub async fn start(cfg: ClusterConfig) -> Result<Arc<Cluster>, NetError> {
        if cfg.peer.name == cfg.node.name || cfg.coordinator.name() == cfg.node.name {
            return Err(NetError::Config(
                "the peer and the witness must be other nodes than this one".into(),
            ));
        }
        let id = Identity::load(&cfg.node.certs, &cfg.node.name)?;
        let opts = Options {
            replica: true,
            ..cfg.store.clone()
        };
        let data = cfg.data.clone();
        let store = tokio::task::spawn_blocking(move || Store::open_with(&data, opts))
            .await
            .map_err(|e| NetError::Connection(e.to_string()))??;
        let started = Instant::now();
        let mut elector = Elector::start(
            &cfg.node.name,
            &cfg.peer.name,
            cfg.coordinator.name(),
            cfg.lease,
            store.epoch(),
            0,
        );
        elector.set_eligible(true);
        if cfg.preferred != cfg.node.name {
            elector.not_before(4 * cfg.lease.duration_us);
        }
        let (witness_tx, witness_rx) = mpsc::channel(WITNESS_QUEUE_MAX);
        let inner = Arc::new(Inner {
            status: Mutex::new(LeadershipStatus {
                role: "follower".into(),
                witness: cfg.coordinator.name().to_owned(),
                coordinator: cfg.coordinator.kind().to_owned(),
                peer: cfg.peer.name.clone(),
                ..LeadershipStatus::default()
            }),
            cfg,
            started,
            elector: Mutex::new(elector),
            store: RwLock::new(Some(Arc::new(store))),
            node: RwLock::new(None),
            paused: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            hand_over: Mutex::new(None),
            standing: AtomicBool::new(true),
            witness_tx,
        });
        start_follower(&inner).await?;
        let (stop, stop_rx) = watch::channel(false);
        let w = match &inner.cfg.coordinator {
            Coordinator::Witness(m) => {
                tokio::spawn(witness_link(id, m.clone(), witness_rx, stop_rx.clone()))
            }
            Coordinator::Etcd(e) => {
                let client =
                    EtcdClient::new(e.clone()).map_err(|err| NetError::Config(err.to_string()))?;
                let c = EtcdWitness::new(client, inner.cfg.lease);
                tokio::spawn(etcd_link(c, witness_rx, stop_rx.clone()))
            }
        };
        let l = tokio::spawn(run(inner.clone(), stop_rx));
        tracing::info!(
            node = %inner.cfg.node.name,
            peer = %inner.cfg.peer.name,
            coordinator = %inner.cfg.coordinator.kind(),
            "automatic failover on: following until this node holds a lease"
        );
        Ok(Arc::new(Cluster {
            inner,
            stop,
            tasks: Mutex::new(vec![w, l]),
        }))
    }

    /// The store now; `None` while a rejoin has it closed.
    pub fn store(&self) -> Option<Arc<Store>> {
        self.inner.store()
    }

    /// The replication node now; `None` during a role change.
    pub fn node(&self) -> Option<Arc<Node>> {
        self.inner.node()
    }

    /// Whether this node leads (it may still be fenced: see [`Cluster::begin_write`]).
    pub fn is_leader(&self) -> bool {
        matches!(self.inner.elector().role(), LeaseRole::Leader { .. })
    }

    /// Admits a write on this node: only on the leader, only while its
    /// lease holds, and not during a switchover. Keep the guard until the
    /// write is acknowledged, and check [`Cluster::still_leading`] before
    /// acknowledging.
    pub fn begin_write(&self) -> Result<WriteGuard, WriteRefused> {
        let inner = &self.inner;
        inner.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = WriteGuard {
            inner: inner.clone(),
        };
        if inner.paused.load(Ordering::Acquire) {
            return Err(WriteRefused::Paused);
        }
        self.still_leading()?;
        Ok(guard)
    }

    /// Whether a write may be acknowledged now (the lease still holds).
    pub fn still_leading(&self) -> Result<(), WriteRefused> {
        let e = self.inner.elector();
        match e.role() {
            LeaseRole::Follower => Err(WriteRefused::NotLeader),
            LeaseRole::Leader { .. } if !e.may_write(self.inner.now_us()) => {
                Err(WriteRefused::LeaseLapsed)
            }
            LeaseRole::Leader { .. } => Ok(()),
        }
    }

    /// Leadership as `/status` shows it.
    pub fn status(&self) -> LeadershipStatus {
        let now = self.inner.now_us();
        let (role, epoch, may_write, until) = {
            let e = self.inner.elector();
            (e.role(), e.epoch(), e.may_write(now), e.lease_until())
        };
        let mut s = self.inner.status().clone();
        s.role = match role {
            LeaseRole::Leader { .. } => "leader".into(),
            LeaseRole::Follower => "follower".into(),
        };
        s.epoch = epoch;
        s.may_write = may_write;
        s.lease_left_ms = until.saturating_sub(now) / 1000;
        s.paused = self.inner.paused.load(Ordering::Acquire);
        s
    }

    /// A planned, zero-loss switchover, run on the leader: writes pause,
    /// the follower catches up completely, leadership moves to it, and this
    /// node follows it. Writes are refused (503) meanwhile and resume on
    /// the new leader.
    pub async fn switchover(&self) -> Result<SwitchoverReport, NetError> {
        let inner = &self.inner;
        if !self.is_leader() {
            return Err(NetError::Config("switchover runs on the leader".into()));
        }
        let t0 = Instant::now();
        inner.paused.store(true, Ordering::Release);
        let (from_epoch, last_lsn) = match self.hand_over().await {
            Ok(handed) => handed,
            Err(e) => {
                // Abandoned before the lease was given up: writes resume here.
                inner.paused.store(false, Ordering::Release);
                return Err(e);
            }
        };
        let handover_ms = t0.elapsed().as_millis() as u64;
        // Follow the new leader; wait until it is there.
        step_down(inner, "switchover: leadership handed over").await;
        inner.paused.store(false, Ordering::Release);
        let deadline = Instant::now() + SWITCHOVER_CATCH_UP;
        let mut new_leader = String::new();
        while Instant::now() < deadline {
            if let Some(view) = inner.node().and_then(|n| n.leader_view())
                && view.connected
                && view.leader_epoch > from_epoch
            {
                new_leader = view.leader;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let following_ms = t0.elapsed().as_millis() as u64;
        inner.record(Transition {
            at_us: wall_us(),
            kind: "switchover".into(),
            epoch: from_epoch,
            reason: format!("planned switchover to {}", inner.cfg.peer.name),
            lost_lsns: 0,
            lost_seconds: 0.0,
            quarantine: None,
        });
        tracing::info!(handover_ms, following_ms, from_epoch, last_lsn, new_leader = %new_leader, "switchover done");
        Ok(SwitchoverReport {
            from_epoch,
            last_lsn,
            new_leader,
            handover_ms,
            following_ms,
        })
    }

    /// The switchover's hand-over: waits for admitted writes to end and for
    /// the follower to hold every LSN, then gives up the lease and tells
    /// the follower to take over. Returns the epoch and last LSN.
    async fn hand_over(&self) -> Result<(u64, u64), NetError> {
        let inner = &self.inner;
        let deadline = Instant::now() + SWITCHOVER_CATCH_UP;
        let peer = inner.cfg.peer.name.clone();
        let (node, store) = match (inner.node(), inner.store()) {
            (Some(n), Some(s)) => (n, s),
            _ => return Err(NetError::Config("no replication running".into())),
        };
        loop {
            let last = store.last_lsn();
            let durable = node
                .followers()
                .iter()
                .find(|l| l.node == peer && l.connected)
                .map(|l| l.durable);
            if inner.in_flight.load(Ordering::Acquire) == 0 && durable.is_some_and(|d| d >= last) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(NetError::Connection(format!(
                    "{peer} did not catch up within {} s (it holds {durable:?} of {last}); \
                     switchover abandoned, writes resume here",
                    SWITCHOVER_CATCH_UP.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let last_lsn = store.last_lsn();
        let epoch = {
            let mut e = inner.elector();
            // Hand over only the epoch this node leads, and only while it
            // may still write in it.
            let epoch = match e.role() {
                LeaseRole::Leader { epoch } if e.may_write(inner.now_us()) => epoch,
                _ => {
                    return Err(NetError::NotLeading(
                        "the lease lapsed or a later epoch exists; switchover abandoned".into(),
                    ));
                }
            };
            e.hand_over(inner.now_us());
            epoch
        };
        node.stop_leading("switchover: leadership handed over");
        tracing::info!(epoch, last_lsn, to = %peer, "switchover: follower holds every write; handing over");
        // The witness forgets our promise, then the follower releases its
        // own and asks for a majority at once.
        if let Err(e) = inner
            .ask_witness(Message::LeaseRelease {
                holder: inner.cfg.node.name.clone(),
            })
            .await
        {
            tracing::warn!(
                "switchover: the witness did not release the lease ({e}); the follower takes over when it expires"
            );
        }
        node.ask_follower(&peer, &Message::HandOver { epoch, last_lsn })
            .await?;
        Ok((epoch, last_lsn))
    }

    /// A store that stopped (an fsync, index commit or search-key write
    /// failed, the disk full): a leader stops leading at once, so that its
    /// follower takes over at the witness instead of the cluster keeping a
    /// leader that cannot write; once the disk has room again the store is
    /// closed, reopened and follows. Call it every second or so; returns
    /// whether the store was reopened now.
    pub async fn recover_store(&self) -> bool {
        let inner = &self.inner;
        let Some(store) = inner.store() else {
            return false;
        };
        let Some(why) = store.stopped() else {
            return false;
        };
        let room = store.disk_space().is_ok_and(|d| d.writable());
        drop(store);
        if self.is_leader() {
            tracing::error!(
                "the store stopped ({why}): stepping down so that the follower takes over"
            );
            inner.elector().hand_over(inner.now_us());
            step_down(inner, &format!("the store stopped: {why}")).await;
        }
        if !room {
            return false;
        }
        roles::reopen(inner, &why).await;
        inner.store().is_some_and(|s| s.stopped().is_none())
    }

    /// What a forced promotion would lose at most now: the LSNs and seconds
    /// of commit time this follower lacks of what its leader last said it
    /// had, and whether it still hears the leader.
    pub fn loss_estimate(&self) -> LossEstimate {
        let view = self.inner.node().and_then(|n| n.leader_view());
        LossEstimate {
            lsns: view.as_ref().map_or(0, |v| v.lsns_behind()),
            seconds: view.as_ref().map_or(0.0, |v| v.lag_seconds),
            leader_connected: view.as_ref().is_some_and(|v| v.connected),
            durable_lsn: view.as_ref().map_or(0, |v| v.durable),
        }
    }

    /// `vigil promote --force`: leads without the witness's consent, in a
    /// new epoch, on the operator's word that the old leader is gone.
    /// Refused while the leader is still heard.
    pub async fn force_promote(&self) -> Result<LossEstimate, NetError> {
        if self.is_leader() {
            return Err(NetError::Config("this node already leads".into()));
        }
        let est = self.loss_estimate();
        if est.leader_connected {
            return Err(NetError::Config(
                "the leader is still connected to this node; use `vigil switchover` instead".into(),
            ));
        }
        let epoch = {
            let mut e = self.inner.elector();
            let epoch = e.epoch() + 1;
            e.force_lead(epoch);
            epoch
        };
        tracing::warn!(
            epoch,
            lost_lsns = est.lsns,
            lost_seconds = est.seconds,
            "FORCED promotion by an operator"
        );
        promote(
            &self.inner,
            epoch,
            format!(
                "forced by an operator; up to {} LSNs ({:.1} s) of the old leader's writes may be lost",
                est.lsns, est.seconds
            ),
        )
        .await;
        if !self.is_leader() {
            return Err(NetError::Config("the promotion failed; see the log".into()));
        }
        Ok(est)
    }

    /// Stops the loop, replication, and closes the store.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let node = take_node(&self.inner);
        if let Some(n) = node {
            n.shutdown().await;
        }
    }
}
