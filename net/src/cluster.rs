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

use crate::lease::{ElectorAction, Elector, LeaseConfig, LeaseReply, LeaseRequest, Role as LeaseRole};
use crate::node::{Node, NodeConfig, NetError, Role};
use crate::tls::Identity;
use crate::wire::Message;
use crate::witness::WitnessClient;

/// How often the loop looks at time and at replication.
const TICK: Duration = Duration::from_millis(50);
/// Longest wait for one answer from the witness.
const WITNESS_TIMEOUT: Duration = Duration::from_secs(1);
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

/// Everything one data node needs for automatic failover.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Replication settings; the role is decided here, not taken from it.
    pub node: NodeConfig,
    /// This node's replication address while it leads.
    pub listen: SocketAddr,
    /// The other data node.
    pub peer: Member,
    /// The witness.
    pub witness: Member,
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
    /// The witness's name and whether it answered lately.
    pub witness: String,
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
            .field("node", &self.inner.cfg.node.node)
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
    /// Milliseconds writes were refused here, from the pause until this
    /// node followed the new leader.
    pub pause_ms: u64,
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
        if cfg.peer.name == cfg.node.node || cfg.witness.name == cfg.node.node {
            return Err(NetError::Config(
                "the peer and the witness must be other nodes than this one".into(),
            ));
        }
        let id = Identity::load(&cfg.node.certs, &cfg.node.node)?;
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
            &cfg.node.node,
            &cfg.peer.name,
            &cfg.witness.name,
            cfg.lease,
            store.epoch(),
            0,
        );
        elector.set_eligible(true);
        if cfg.preferred != cfg.node.node {
            elector.not_before(4 * cfg.lease.duration_us);
        }
        let (witness_tx, witness_rx) = mpsc::channel(WITNESS_QUEUE_MAX);
        let inner = Arc::new(Inner {
            status: Mutex::new(LeadershipStatus {
                role: "follower".into(),
                witness: cfg.witness.name.clone(),
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
        let w = tokio::spawn(witness_link(
            id,
            inner.cfg.witness.clone(),
            witness_rx,
            stop_rx.clone(),
        ));
        let l = tokio::spawn(run(inner.clone(), stop_rx));
        tracing::info!(
            node = %inner.cfg.node.node,
            peer = %inner.cfg.peer.name,
            witness = %inner.cfg.witness.name,
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
        let result = self.hand_over().await;
        if result.is_err() {
            inner.paused.store(false, Ordering::Release);
            return result.map(|_| unreachable!("an error"));
        }
        let (from_epoch, last_lsn) = result?;
        // Follow the new leader; wait until it is there.
        step_down(inner, "switchover: leadership handed over").await;
        inner.paused.store(false, Ordering::Release);
        let deadline = Instant::now() + SWITCHOVER_CATCH_UP;
        let mut new_leader = String::new();
        while Instant::now() < deadline {
            if let Some(up) = inner.node().and_then(|n| n.status().upstream)
                && up.connected
                && up.leader_epoch > from_epoch
            {
                new_leader = up.leader;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pause_ms = t0.elapsed().as_millis() as u64;
        inner.record(Transition {
            at_us: wall_us(),
            kind: "switchover".into(),
            epoch: from_epoch,
            reason: format!("planned switchover to {}", inner.cfg.peer.name),
            lost_lsns: 0,
            lost_seconds: 0.0,
            quarantine: None,
        });
        tracing::info!(pause_ms, from_epoch, last_lsn, new_leader = %new_leader, "switchover done");
        Ok(SwitchoverReport {
            from_epoch,
            last_lsn,
            new_leader,
            pause_ms,
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
            if inner.in_flight.load(Ordering::Acquire) == 0 && durable.is_some_and(|d| d >= last)
            {
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
            let epoch = e.epoch();
            e.hand_over();
            epoch
        };
        tracing::info!(epoch, last_lsn, to = %peer, "switchover: follower holds every write; handing over");
        // The witness forgets our promise, then the follower releases its
        // own and asks for a majority at once.
        if let Err(e) = inner
            .ask_witness(Message::LeaseRelease {
                holder: inner.cfg.node.node.clone(),
            })
            .await
        {
            tracing::warn!("switchover: the witness did not release the lease ({e}); the follower takes over when it expires");
        }
        node.ask_follower(&peer, &Message::HandOver { epoch, last_lsn })
            .await?;
        Ok((epoch, last_lsn))
    }

    /// What a forced promotion would lose at most now: the LSNs and seconds
    /// of commit time this follower lacks of what its leader last said it
    /// had, and whether it still hears the leader.
    pub fn loss_estimate(&self) -> LossEstimate {
        let up = self.inner.node().and_then(|n| n.status().upstream);
        LossEstimate {
            lsns: up.as_ref().map_or(0, |u| u.leader_lsn.saturating_sub(u.durable)),
            seconds: up.as_ref().map_or(0.0, |u| u.lag_seconds),
            leader_connected: up.as_ref().is_some_and(|u| u.connected),
            durable_lsn: up.as_ref().map_or(0, |u| u.durable),
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
                "the leader is still connected to this node; use `vigil switchover` instead"
                    .into(),
            ));
        }
        let epoch = {
            let mut e = self.inner.elector();
            let epoch = e.epoch() + 1;
            e.force_lead(epoch);
            epoch
        };
        tracing::warn!(epoch, lost_lsns = est.lsns, lost_seconds = est.seconds, "FORCED promotion by an operator");
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

/// The leadership loop.
async fn run(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let (tx, mut rx) = mpsc::channel::<Event>(256);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let actions = tokio::select! {
            _ = tick.tick() => on_tick(&inner).await,
            ev = rx.recv() => match ev {
                Some(Event::Reply(r)) => {
                    let mut e = inner.elector();
                    let before = e.lease_until();
                    let out = e.on_reply(&r);
                    if e.lease_until() > before && matches!(e.role(), LeaseRole::Leader { .. }) {
                        drop(e);
                        inner.status().lease_renewals += 1;
                    }
                    out
                }
                Some(Event::Cas(r)) => {
                    let now = inner.now_us();
                    inner.elector().on_cas(r, now)
                }
                Some(Event::WitnessReachable(ok)) => {
                    inner.status().witness_reachable = ok;
                    Vec::new()
                }
                None => break,
            },
            _ = stop.changed() => break,
        };
        for a in actions {
            act(&inner, a, &tx).await;
        }
    }
}

async fn on_tick(inner: &Arc<Inner>) -> Vec<ElectorAction> {
    let now = inner.now_us();
    let node = inner.node();
    let leading = matches!(inner.elector().role(), LeaseRole::Leader { .. });
    if !leading && let Some(n) = &node {
        let up = n.status().upstream;
        if let Some(up) = up {
            if up.connected {
                let mut e = inner.elector();
                e.on_leader_alive(now);
                e.own_voter().observe_epoch(up.leader_epoch);
            }
            if let Some(lsn) = up.diverged_at {
                rejoin(inner, lsn).await;
                return Vec::new();
            }
            if up.reseed_needed {
                reseed(inner).await;
                return Vec::new();
            }
            // A rejoined node may stand again once it holds all the
            // leader has.
            if !inner.standing.load(Ordering::Acquire) && up.connected && up.lag_lsns == 0 {
                inner.standing.store(true, Ordering::Release);
                inner.elector().allow_promotion_from(now);
                tracing::info!("caught up with the leader: this node may be promoted again");
            }
        }
    }
    if let Some((epoch, last)) = inner.hand_over.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let durable = inner.store().map_or(0, |s| s.log_end().lsn);
        if durable >= last {
            tracing::info!(epoch, last, "switchover: taking over");
            inner.elector().take_over(&inner.cfg.peer.name, now);
        } else {
            tracing::warn!(epoch, last, durable, "switchover hand-over refused: this node lacks writes");
        }
    }
    inner.elector().on_tick(now)
}

async fn act(inner: &Arc<Inner>, a: ElectorAction, tx: &mpsc::Sender<Event>) {
    match a {
        ElectorAction::Request { to, req } => {
            let msg = Message::LeaseAsk {
                candidate: req.candidate.clone(),
                epoch: req.epoch,
                round: req.round,
            };
            let (inner, tx) = (inner.clone(), tx.clone());
            tokio::spawn(async move {
                let answer = if to == inner.cfg.witness.name {
                    let r = inner.ask_witness(msg).await;
                    let _ = tx.send(Event::WitnessReachable(r.is_ok())).await;
                    r
                } else {
                    match inner.node() {
                        Some(n) if n.is_leader() => n.ask_follower(&to, &msg).await,
                        _ => return, // a follower asks its leader nothing
                    }
                };
                if let Ok(Message::LeaseAnswer {
                    voter,
                    round,
                    granted,
                    epoch,
                    holder,
                }) = answer
                {
                    let reply = LeaseReply {
                        voter,
                        round,
                        granted,
                        epoch,
                        holder: (!holder.is_empty()).then_some(holder),
                    };
                    let _ = tx.send(Event::Reply(reply)).await;
                }
            });
        }
        ElectorAction::Cas { expected } => {
            let (inner, tx) = (inner.clone(), tx.clone());
            tokio::spawn(async move {
                let m = Message::EpochCas {
                    candidate: inner.cfg.node.node.clone(),
                    expected,
                };
                let r = match inner.ask_witness(m).await {
                    Ok(Message::EpochCasAnswer { ok: true, epoch }) => Ok(epoch),
                    Ok(Message::EpochCasAnswer { ok: false, epoch }) => Err(epoch),
                    _ => Err(expected),
                };
                let _ = tx.send(Event::Cas(r)).await;
            });
        }
        ElectorAction::Promote { epoch } => {
            let why = format!(
                "the lease of {} expired; promoted with a majority",
                inner.cfg.peer.name
            );
            promote(inner, epoch, why).await;
        }
        ElectorAction::LeaseLost(why) => {
            inner.status().lease_lapses += 1;
            tracing::warn!("lease lapsed: {why}");
        }
        ElectorAction::StepDown(why) => step_down(inner, &why).await,
    }
}

/// Carries out a promotion: stop following, make the store writable,
/// write `EpochStart`, lead.
async fn promote(inner: &Arc<Inner>, epoch: u64, reason: String) {
    let (lost_lsns, lost_seconds) = inner
        .node()
        .and_then(|n| n.status().upstream)
        .map_or((0, 0.0), |u| (u.leader_lsn.saturating_sub(u.durable), u.lag_seconds));
    let node = take_node(inner);
    if let Some(n) = node {
        n.shutdown().await;
    }
    let Some(store) = inner.store() else {
        tracing::error!("promotion without a store; stepping down");
        inner.elector().hand_over();
        return;
    };
    let s = store.clone();
    let began = tokio::task::spawn_blocking(move || {
        s.set_read_only(false);
        s.begin_epoch(epoch)
    })
    .await;
    if !matches!(began, Ok(Ok(()))) {
        tracing::error!(epoch, "cannot write the EpochStart ({began:?}); stepping down");
        store.set_read_only(true);
        inner.elector().hand_over();
        inner.elector().allow_promotion_from(inner.now_us());
        let _ = start_follower(inner).await;
        return;
    }
    if let Err(e) = start_leader(inner).await {
        tracing::error!(epoch, "cannot start leading: {e}; stepping down");
        store.set_read_only(true);
        inner.elector().hand_over();
        inner.elector().allow_promotion_from(inner.now_us());
        let _ = start_follower(inner).await;
        return;
    }
    inner.status().elections_won += 1;
    inner.record(Transition {
        at_us: wall_us(),
        kind: "promoted".into(),
        epoch,
        reason,
        lost_lsns,
        lost_seconds,
        quarantine: None,
    });
    tracing::warn!(epoch, lost_lsns, "PROMOTED: this node leads epoch {epoch}");
}

/// Stops leading (a higher epoch exists, or a switchover) and follows the
/// peer.
async fn step_down(inner: &Arc<Inner>, why: &str) {
    tracing::warn!("stepping down: {why}");
    if let Some(s) = inner.store() {
        s.set_read_only(true);
    }
    let node = take_node(inner);
    if let Some(n) = node {
        n.shutdown().await;
    }
    inner.standing.store(false, Ordering::Release);
    let epoch = inner.elector().epoch();
    inner.record(Transition {
        at_us: wall_us(),
        kind: "stepped-down".into(),
        epoch,
        reason: why.into(),
        lost_lsns: 0,
        lost_seconds: 0.0,
        quarantine: None,
    });
    if let Err(e) = start_follower(inner).await {
        tracing::error!("cannot follow after stepping down: {e}");
    }
}

/// The new leader said our log diverged after `agree_until`: close the
/// store, cut it there (the cut versions go to quarantine), reopen, follow.
async fn rejoin(inner: &Arc<Inner>, agree_until: u64) {
    tracing::warn!(agree_until, "the logs diverged: cutting this node's log back to rejoin");
    let Some(store) = close_store(inner).await else {
        return;
    };
    let (dir, opts) = (inner.cfg.data.clone(), replica_options(inner));
    let cut = tokio::task::spawn_blocking(move || {
        store.close()?;
        let report = Store::cut_log(&dir, opts.clone(), agree_until)?;
        Ok::<_, vigil_engine::Error>((report, Store::open_with(&dir, opts)?))
    })
    .await;
    match cut {
        Ok(Ok((report, store))) => {
            *inner.store.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(store));
            let epoch = inner.elector().epoch();
            let (versions, path) = report.as_ref().map_or((0, None), |r| {
                (r.versions as u64, Some(r.quarantine.display().to_string()))
            });
            inner.record(Transition {
                at_us: wall_us(),
                kind: "rejoined".into(),
                epoch,
                reason: format!("log cut after LSN {agree_until} to follow the new leader"),
                lost_lsns: versions,
                lost_seconds: 0.0,
                quarantine: path,
            });
            tracing::warn!(versions, "rejoined: cut versions are in quarantine");
        }
        other => {
            tracing::error!("rejoin failed: {other:?}; this node stays down until restarted");
            return;
        }
    }
    if let Err(e) = start_follower(inner).await {
        tracing::error!("cannot follow after the rejoin: {e}");
    }
}

/// The leader no longer holds what this node needs: the data directory is
/// set aside (never deleted) and a fresh copy is fetched.
async fn reseed(inner: &Arc<Inner>) {
    tracing::error!("the leader no longer holds this node's divergence point: reseeding");
    let Some(store) = close_store(inner).await else {
        return;
    };
    let (dir, opts) = (inner.cfg.data.clone(), replica_options(inner));
    let aside = dir.with_extension(format!("before-reseed-{}", wall_us() / 1_000_000));
    let (d2, a2) = (dir.clone(), aside.clone());
    let r = tokio::task::spawn_blocking(move || {
        store.close().map_err(|e| e.to_string())?;
        std::fs::rename(&d2, &a2)
            .map_err(|e| format!("set {} aside as {}: {e}", d2.display(), a2.display()))?;
        Store::open_with(&d2, opts).map_err(|e| e.to_string())
    })
    .await;
    match r {
        Ok(Ok(store)) => {
            *inner.store.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(store));
            let epoch = inner.elector().epoch();
            inner.record(Transition {
                at_us: wall_us(),
                kind: "reseeded".into(),
                epoch,
                reason: "the leader no longer holds the divergence point".into(),
                lost_lsns: 0,
                lost_seconds: 0.0,
                quarantine: Some(aside.display().to_string()),
            });
        }
        other => {
            tracing::error!("reseed failed: {other:?}; this node stays down until restarted");
            return;
        }
    }
    if let Err(e) = start_follower(inner).await {
        tracing::error!("cannot follow after the reseed: {e}");
    }
}

fn take_node(inner: &Inner) -> Option<Arc<Node>> {
    inner.node.write().unwrap_or_else(|p| p.into_inner()).take()
}

fn replica_options(inner: &Inner) -> Options {
    Options {
        replica: true,
        ..inner.cfg.store.clone()
    }
}

/// Stops replication and takes the store out of service, waiting for the
/// requests that still use it; `None` if they do not finish in time.
async fn close_store(inner: &Arc<Inner>) -> Option<Store> {
    inner.standing.store(false, Ordering::Release);
    let node = take_node(inner);
    if let Some(n) = node {
        n.shutdown().await;
    }
    let mut store = inner.store.write().unwrap_or_else(|p| p.into_inner()).take()?;
    let deadline = Instant::now() + STORE_RELEASE_TIMEOUT;
    loop {
        match Arc::try_unwrap(store) {
            Ok(s) => return Some(s),
            Err(s) if Instant::now() < deadline => {
                store = s;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(s) => {
                tracing::error!("requests still hold the store; rejoin postponed");
                *inner.store.write().unwrap_or_else(|p| p.into_inner()) = Some(s);
                let _ = start_follower(inner).await;
                return None;
            }
        }
    }
}

async fn start_follower(inner: &Arc<Inner>) -> Result<(), NetError> {
    let store = inner
        .store()
        .ok_or_else(|| NetError::Config("no store".into()))?;
    let mut cfg = inner.cfg.node.clone();
    cfg.role = Role::Follower {
        leader: inner.cfg.peer.addr,
        leader_name: inner.cfg.peer.name.clone(),
    };
    cfg.record_eligibility = None;
    let weak = Arc::downgrade(inner);
    cfg.voter = Some(Arc::new(move |m: Message| {
        let inner = weak.upgrade()?;
        answer_leader(&inner, m)
    }));
    let node = Node::start(store, cfg).await?;
    *inner.node.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(node));
    Ok(())
}

async fn start_leader(inner: &Arc<Inner>) -> Result<(), NetError> {
    let store = inner
        .store()
        .ok_or_else(|| NetError::Config("no store".into()))?;
    let mut cfg = inner.cfg.node.clone();
    cfg.role = Role::Leader {
        listen: inner.cfg.listen,
    };
    cfg.voter = None;
    let handle = tokio::runtime::Handle::current();
    let weak = Arc::downgrade(inner);
    cfg.record_eligibility = Some(Arc::new(move |follower: &str, eligible, durable_lsn| {
        let inner = weak.upgrade().ok_or("shutting down")?;
        let m = Message::Eligibility {
            follower: follower.into(),
            eligible,
            durable_lsn,
        };
        match handle.block_on(inner.ask_witness(m)) {
            Ok(Message::EligibilityRecorded { .. }) => Ok(()),
            Ok(other) => Err(format!("the witness answered {}", other.kind())),
            Err(e) => Err(e.to_string()),
        }
    }));
    // The port may still be held by the endpoint of a node that just
    // stopped; try for a moment.
    let mut last = None;
    for _ in 0..50 {
        match Node::start(store.clone(), cfg.clone()).await {
            Ok(node) => {
                *inner.node.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(node));
                return Ok(());
            }
            Err(e @ NetError::Io { .. }) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| NetError::Config("cannot start leading".into())))
}

/// A follower's answers to what its leader sends on the replication
/// connection.
fn answer_leader(inner: &Inner, m: Message) -> Option<Message> {
    let now = inner.now_us();
    match m {
        Message::LeaseAsk {
            candidate,
            epoch,
            round,
        } => {
            let r = inner.elector().own_voter().on_request(
                &LeaseRequest {
                    candidate,
                    epoch,
                    round,
                },
                now,
            );
            Some(Message::LeaseAnswer {
                voter: r.voter,
                round: r.round,
                granted: r.granted,
                epoch: r.epoch,
                holder: r.holder.unwrap_or_default(),
            })
        }
        Message::HandOver { epoch, last_lsn } => {
            *inner.hand_over.lock().unwrap_or_else(|p| p.into_inner()) = Some((epoch, last_lsn));
            Some(Message::Released {
                voter: inner.cfg.node.node.clone(),
            })
        }
        _ => None,
    }
}

/// The connection to the witness: one request at a time, reconnecting
/// when it fails.
async fn witness_link(
    id: Identity,
    witness: Member,
    mut rx: mpsc::Receiver<WitnessJob>,
    mut stop: watch::Receiver<bool>,
) {
    let mut client: Option<WitnessClient> = None;
    loop {
        let (m, reply) = tokio::select! {
            j = rx.recv() => match j { Some(j) => j, None => break },
            _ = stop.changed() => break,
        };
        if reply.is_closed() {
            continue;
        }
        if client.is_none() {
            match tokio::time::timeout(
                WITNESS_TIMEOUT,
                WitnessClient::connect(&id, witness.addr, &witness.name),
            )
            .await
            {
                Ok(Ok(c)) => client = Some(c),
                Ok(Err(e)) => {
                    let _ = reply.send(Err(e));
                    continue;
                }
                Err(_) => {
                    let _ = reply.send(Err(NetError::Connection(
                        "witness connect timed out".into(),
                    )));
                    continue;
                }
            }
        }
        let Some(c) = client.as_mut() else { continue };
        let r = match tokio::time::timeout(WITNESS_TIMEOUT, c.ask(&m)).await {
            Ok(r) => r,
            Err(_) => Err(NetError::Connection("the witness did not answer in time".into())),
        };
        if r.is_err() {
            if let Some(c) = client.take() {
                c.close();
            }
        }
        let _ = reply.send(r);
    }
    if let Some(c) = client {
        c.close();
    }
}
