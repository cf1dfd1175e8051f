//! The driver: runs the replication state machines over quinn and tokio.
//!
//! A leader listens for followers and runs one [`LeaderSession`] per
//! connection; a follower runs one [`Follower`] that connects to its
//! leader. This module holds every socket, task and clock of replication
//! and decides nothing: each decision is the state machines'.
//!
//! A node's role is fixed when it starts; [`Node::shutdown`] and a new
//! [`Node::start`] change it (promotion comes with the failover work).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use vigil_engine::{Error as StoreError, LogTip, Store};

use crate::proto::eligibility::{EligibilityFile, decide};
use crate::proto::enforce::{Enforcer, Record, RecordError, Records};
use crate::proto::follower::{Follower, FollowerAction, FollowerConfig, FollowerEvent};
use crate::proto::leader::{
    LeaderAction, LeaderConfig, LeaderEvent, LeaderSession, SessionCounters, Watermarks,
};
use crate::proto::standing::LeaderView;
use crate::proto::wire::Message;
use crate::runtime::durable_wait::DurableWaiters;
use crate::runtime::error::NetError;
use crate::runtime::tls::{Identity, transport_config};
use crate::runtime::transport::{read_message, write_message};
use crate::status::{FollowerLink, ReplicationStatus, SyncProgress, Upstream};

/// How often the state machines get a tick.
const TICK: Duration = Duration::from_millis(50);
/// Messages read ahead of the state machine per connection (each at most
/// one chunk): bounds a follower's memory while its disk catches up.
const READ_AHEAD_MESSAGES: usize = 32;
/// Longest a new session waits for this leader's fsync of a frame the
/// follower already holds before comparing logs (a hung fsync stops the
/// store; then the comparison answers from what is durable).
const POSITION_WAIT: Duration = Duration::from_secs(5);
/// QUIC idle timeout: a peer silent this long is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often follower watermarks are written to the log (when they moved).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// How often a follower logs its catch-up progress.
const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(5);
/// How often the same max_lag enforcement error is logged again.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Most follower sessions a leader serves at once.
const SESSIONS_MAX: usize = 16;

/// What a node does in replication.
#[derive(Debug, Clone)]
pub enum Role {
    /// Accepts followers on `listen`.
    Leader {
        /// The replication address to listen on (UDP).
        listen: SocketAddr,
    },
    /// Follows the leader at `leader`.
    Follower {
        /// The leader's replication address.
        leader: SocketAddr,
        /// The name the leader's certificate must carry (its node name, or
        /// a host or IP it was made for).
        leader_name: String,
    },
}

/// Everything a node needs to replicate.
#[derive(Clone)]
pub struct NodeConfig {
    /// The cluster's name (hello check).
    pub cluster: String,
    /// This node's name (its certificate's).
    pub name: String,
    /// Directory holding `ca.pem`, `NODE.pem`, `NODE.key`.
    pub certs: PathBuf,
    /// This node's FHIR base URL, told to followers.
    pub http_url: String,
    /// Leader or follower.
    pub role: Role,
    /// QUIC flow-control window (≥ bandwidth × round trip of the link).
    pub window_bytes: u64,
    /// The RPO promise: `Some(0)` is synchronous replication; `None`
    /// promises nothing.
    pub max_lag: Option<Duration>,
    /// Under automatic failover, a follower answers its leader's lease and
    /// switchover messages (sent on the replication connection) with this.
    pub voter: Option<VoteFn>,
    /// Under automatic failover, a leader records each follower's
    /// eligibility with this (at the witness): "ineligible" before it
    /// acknowledges a write that depends on it, "eligible again" from a
    /// background tick (a write never waits for that one). Each record
    /// carries the epoch this node won (its last `EpochStart`);
    /// [`RecordError::Refused`] stops enforcement for good.
    pub record_eligibility: Option<EligibilityFn>,
}

/// Answers a message a leader sends on a follower's connection (see
/// [`NodeConfig::voter`]); `None` for one it does not take.
pub type VoteFn = Arc<dyn Fn(Message) -> Option<Message> + Send + Sync>;

/// Makes an eligibility [`Record`] durable elsewhere (see
/// [`NodeConfig::record_eligibility`]). Called from a blocking thread.
pub type EligibilityFn = Arc<dyn Fn(&Record) -> Result<(), RecordError> + Send + Sync>;

/// How long a leader waits for a follower's answer on the voting stream.
const VOTE_TIMEOUT: Duration = Duration::from_secs(1);

/// The QUIC flow-control window unless configured: 32 MiB, enough for a
/// 100 ms round trip at 2.5 Gbit/s.
pub const WINDOW_BYTES_DEFAULT: u64 = 32 * 1024 * 1024;

impl NodeConfig {
    /// Defaults for everything but the names, certificates and role.
    pub fn new(cluster: &str, node: &str, certs: PathBuf, http_url: &str, role: Role) -> Self {
        Self {
            cluster: cluster.into(),
            name: node.into(),
            certs,
            http_url: http_url.into(),
            role,
            window_bytes: WINDOW_BYTES_DEFAULT,
            max_lag: None,
            voter: None,
            record_eligibility: None,
        }
    }
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("cluster", &self.cluster)
            .field("node", &self.name)
            .field("role", &self.role)
            .field("max_lag", &self.max_lag)
            .field("voter", &self.voter.is_some())
            .finish_non_exhaustive()
    }
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The leader session's event for the log's ends.
fn log_advanced(tip: &LogTip) -> LeaderEvent {
    LeaderEvent::LogAdvanced {
        written_lsn: tip.written_lsn,
        last_lsn: tip.durable.lsn,
        last_commit_us: tip.durable.timestamp_us,
        epoch: tip.durable.epoch,
    }
}

#[derive(Default)]
struct Shared {
    status: ReplicationStatus,
    /// A follower's view of its leader, for the failover loop's decisions
    /// (the status above is for people).
    leader_view: Option<LeaderView>,
    links: BTreeMap<String, FollowerLink>,
    /// A leader's durable eligibility record.
    eligibility: Option<EligibilityFile>,
    /// Per follower: recent commit-to-durable times, µs.
    lag_samples: BTreeMap<String, VecDeque<u32>>,
    /// Per follower: its open connection (a leader asks its vote there).
    conns: BTreeMap<String, quinn::Connection>,
    /// A leader's enforcement of `max_lag`, for the epoch of its last
    /// `EpochStart` (what to record at the witness, and what was).
    enforcer: Option<Enforcer>,
    /// Held across each eligibility decision and its record (never with
    /// this struct's own lock), so a "give up" and an "eligible again"
    /// never interleave.
    record_lock: Arc<Mutex<()>>,
}

impl Shared {
    /// The enforcer of a leader still leading the epoch it won; otherwise
    /// why not (a follower has none; a stopped one says why it stopped).
    fn leading(&mut self) -> Result<&mut Enforcer, NetError> {
        let e = self.enforcer.as_mut().ok_or_else(not_leader)?;
        if let Some(why) = e.stopped() {
            return Err(NetError::NotLeading(why.to_owned()));
        }
        Ok(e)
    }
}

fn not_leader() -> NetError {
    NetError::NotLeading("this node does not lead".into())
}

/// Recent commit-to-durable samples kept per follower (one per commit
/// group): at a full leader's ~3,000 groups a second, the last ~20 s, so a
/// benchmark run's percentiles cover the whole run (256 KiB per follower).
const LAG_SAMPLES_MAX: usize = 65_536;

/// A running replication node. Dropping it without [`Node::shutdown`]
/// leaves its tasks to end with the runtime.
pub struct Node {
    cfg: NodeConfig,
    store: Arc<Store>,
    shared: Arc<Mutex<Shared>>,
    durable: Arc<DurableWaiters>,
    stop: watch::Sender<bool>,
    /// Feeds the sessions' log head while it lives.
    log_listener: Mutex<Option<vigil_engine::LogEndListener>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    endpoint: quinn::Endpoint,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("cfg", &self.cfg).finish()
    }
}

impl Node {
    /// Starts replication for `store` (a replica store for a follower).
    pub async fn start(store: Arc<Store>, cfg: NodeConfig) -> Result<Node, NetError> {
        let id = Identity::load(&cfg.certs, &cfg.name)?;
        let transport = transport_config(cfg.window_bytes, IDLE_TIMEOUT);
        let (stop, stop_rx) = watch::channel(false);
        let durable = Arc::new(DurableWaiters::default());
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (head_rx, log_listener) = watch_log(&store)?;
        let started = Instant::now();
        let (endpoint, tasks, role) = match &cfg.role {
            Role::Leader { listen } => {
                if store.is_read_only() {
                    return Err(NetError::Config(
                        "a leader needs a writable store, this one is a replica".into(),
                    ));
                }
                let server = id.server_config(transport.clone())?;
                let socket = udp_socket(*listen)?;
                let endpoint = quinn::Endpoint::new(
                    quinn::EndpointConfig::default(),
                    Some(server),
                    socket,
                    Arc::new(quinn::TokioRuntime),
                )
                .map_err(|source| NetError::Io {
                    op: format!("replication endpoint on {listen}"),
                    source,
                })?;
                let record = EligibilityFile::load(store.dir()).map_err(|source| NetError::Io {
                    op: format!("read the eligibility record in {}", store.dir().display()),
                    source,
                })?;
                // The epoch this node won is the one its log says it began.
                let (epoch, epoch_start_lsn) = store.epochs()?.last().copied().unwrap_or((0, 0));
                {
                    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                    s.eligibility = Some(record);
                    s.enforcer = Some(Enforcer::new(
                        epoch,
                        epoch_start_lsn,
                        cfg.max_lag,
                        wall_us(),
                    ));
                }
                let guard = tokio::spawn(guard_bound(
                    store.clone(),
                    shared.clone(),
                    cfg.max_lag,
                    cfg.record_eligibility.clone(),
                    stop_rx.clone(),
                ));
                let task = tokio::spawn(accept_loop(
                    endpoint.clone(),
                    store.clone(),
                    cfg.clone(),
                    shared.clone(),
                    head_rx,
                    durable.clone(),
                    stop_rx,
                    started,
                ));
                (endpoint, vec![task, guard], "leader")
            }
            Role::Follower {
                leader,
                leader_name,
            } => {
                if !store.is_read_only() {
                    return Err(NetError::Config(
                        "a follower needs a replica store (opened with replica = true)".into(),
                    ));
                }
                let any: SocketAddr = if leader.is_ipv6() {
                    "[::]:0"
                        .parse()
                        .map_err(|_| NetError::Config("bad address".into()))?
                } else {
                    "0.0.0.0:0"
                        .parse()
                        .map_err(|_| NetError::Config("bad address".into()))?
                };
                let socket = udp_socket(any)?;
                let mut endpoint = quinn::Endpoint::new(
                    quinn::EndpointConfig::default(),
                    None,
                    socket,
                    Arc::new(quinn::TokioRuntime),
                )
                .map_err(|source| NetError::Io {
                    op: "replication client endpoint".into(),
                    source,
                })?;
                endpoint.set_default_client_config(id.client_config(transport)?);
                let task = tokio::spawn(follow(
                    endpoint.clone(),
                    *leader,
                    leader_name.clone(),
                    store.clone(),
                    cfg.clone(),
                    shared.clone(),
                    stop_rx,
                    started,
                ));
                (endpoint, vec![task], "follower")
            }
        };
        {
            let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
            s.status.role = role.into();
            s.status.node = cfg.name.clone();
            s.status.cluster = cfg.cluster.clone();
            s.status.max_lag_seconds = cfg.max_lag.map(|d| d.as_secs_f64());
        }
        Ok(Node {
            cfg,
            store,
            shared,
            durable,
            stop,
            log_listener: Mutex::new(Some(log_listener)),
            tasks: Mutex::new(tasks),
            endpoint,
        })
    }

    /// The UDP address replication listens on (a leader) or sends from.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    /// Whether this node leads (accepts writes).
    pub fn is_leader(&self) -> bool {
        matches!(self.cfg.role, Role::Leader { .. })
    }

    /// The RPO promise configured.
    pub fn max_lag(&self) -> Option<Duration> {
        self.cfg.max_lag
    }

    /// On a leader: each follower's link (watermarks, lag, eligibility),
    /// without the lag percentiles [`Node::status`] computes; cheap enough
    /// to consult on every write.
    pub fn followers(&self) -> Vec<FollowerLink> {
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        s.links.values().cloned().collect()
    }

    /// On a follower: what it knows of its leader (`None` on a leader, or
    /// before the first connection). What the failover loop decides from.
    pub fn leader_view(&self) -> Option<LeaderView> {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .leader_view
            .clone()
    }

    /// The current replication status.
    pub fn status(&self) -> ReplicationStatus {
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = s.status.clone();
        st.epoch = self.store.epoch();
        st.last_lsn = self.store.last_lsn();
        st.followers = s.links.values().cloned().collect();
        for f in &mut st.followers {
            if let Some(samples) = s.lag_samples.get(&f.node) {
                let mut v: Vec<f64> = samples.iter().map(|&us| f64::from(us) / 1000.0).collect();
                v.sort_by(f64::total_cmp);
                f.commit_to_durable_p50_ms = crate::status::percentile(&v, 0.5);
                f.commit_to_durable_p99_ms = crate::status::percentile(&v, 0.99);
                f.commit_to_durable_samples = v.len();
            }
        }
        if let Some(u) = st.upstream.as_mut() {
            u.lag_lsns = u.leader_lsn.saturating_sub(u.durable);
        }
        st
    }

    /// On a leader with a `max_lag` bound: marks every follower beyond it
    /// ineligible, durably, before returning. Call it before acknowledging
    /// a write; an error means the mark could not be recorded and the
    /// write must not be acknowledged.
    pub async fn check_bound(&self) -> Result<(), NetError> {
        if !self.is_leader() || self.cfg.max_lag.is_none_or(|m| m.is_zero()) {
            return Ok(());
        }
        let (store, shared, max_lag) = (self.store.clone(), self.shared.clone(), self.cfg.max_lag);
        let record = self.cfg.record_eligibility.clone();
        tokio::task::spawn_blocking(move || {
            enforce_bound(
                &store,
                &shared,
                max_lag,
                record.as_ref(),
                Records::IneligibleOnly,
            )
        })
        .await
        .map_err(|e| NetError::Connection(e.to_string()))?
    }

    /// On a leader in synchronous mode, when no follower confirmed `lsn` in
    /// time and writes are to go on (the default): records every follower
    /// that lacks `lsn` as ineligible (here and through
    /// [`NodeConfig::record_eligibility`]) before returning, so the write
    /// may be acknowledged without breaking the loss promise. An error
    /// means the record could not be made: do not acknowledge.
    pub async fn give_up_on(&self, lsn: u64) -> Result<(), NetError> {
        let (shared, record) = (self.shared.clone(), self.cfg.record_eligibility.clone());
        tokio::task::spawn_blocking(move || {
            let serial = record_lock_of(&shared);
            let _serial = serial.lock().unwrap_or_else(|p| p.into_inner());
            // The witness is asked without the lock held (see enforce_bound).
            // What is given up on is noted first: an "eligible again" after
            // this sees it.
            let (lacking, records) = {
                let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                let lacking: Vec<(String, u64)> = s
                    .links
                    .iter()
                    .filter(|(_, l)| l.durable < lsn)
                    .map(|(n, l)| (n.clone(), l.durable))
                    .collect();
                let records = s.leading()?.give_up(lsn, &lacking);
                (lacking, records)
            };
            if let Some(record) = &record {
                for r in &records {
                    make_record(&shared, record, r)?;
                }
            }
            for (name, durable) in lacking {
                let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                let Shared {
                    links, eligibility, ..
                } = &mut *s;
                if let Some(l) = links.get_mut(&name)
                    && l.eligible
                {
                    if let Some(file) = eligibility.as_mut() {
                        file.set(&name, false, wall_us())
                            .map_err(|source| NetError::Io {
                                op: format!("record the eligibility of {name}"),
                                source,
                            })?;
                    }
                    l.eligible = false;
                    tracing::warn!(follower = %name, lsn, durable, "synchronous replication: the follower did not confirm in time; recorded as ineligible, writes go on");
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| NetError::Connection(e.to_string()))?
    }

    /// Stops every leader-only task of this node at once (it no longer
    /// leads the epoch it won): no eligibility record is made after this
    /// returns, and writes waiting on one are not acknowledged. Call it
    /// first when stepping down, before the slower [`Node::shutdown`].
    pub fn stop_leading(&self, why: &str) {
        let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = s.enforcer.as_mut() {
            e.stop(why);
        }
    }

    /// Whether some follower is connected and eligible (a synchronous
    /// write waits for one only then).
    pub fn has_eligible_follower(&self) -> bool {
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        s.links.values().any(|l| l.connected && l.eligible)
    }

    /// On a leader: sends `m` to follower `name` on its replication
    /// connection and waits (at most a second) for the answer, which the
    /// follower's [`NodeConfig::voter`] gives.
    pub async fn ask_follower(&self, name: &str, m: &Message) -> Result<Message, NetError> {
        let conn = {
            let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            s.conns.get(name).cloned()
        }
        .ok_or_else(|| NetError::Connection(format!("{name} is not connected")))?;
        let ask = async {
            let (mut send, mut recv) = conn
                .open_bi()
                .await
                .map_err(|e| NetError::Connection(e.to_string()))?;
            write_message(&mut send, m).await?;
            let _ = send.finish();
            read_message(&mut recv, None)
                .await?
                .ok_or_else(|| NetError::Connection(format!("{name} closed the vote stream")))
        };
        tokio::time::timeout(VOTE_TIMEOUT, ask)
            .await
            .map_err(|_| NetError::Connection(format!("{name} did not answer in time")))?
    }

    /// The names of the followers connected now.
    pub fn connected_followers(&self) -> Vec<String> {
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        s.conns.keys().cloned().collect()
    }

    /// On a follower: the leader's FHIR base URL, once the leader said it.
    pub fn leader_http(&self) -> Option<String> {
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        s.status
            .upstream
            .as_ref()
            .map(|u| u.leader_http.clone())
            .filter(|u| !u.is_empty())
    }

    /// On a leader: waits until some follower holds `lsn` durably, at most
    /// `timeout`. Returns whether it does. Synchronous replication
    /// acknowledges a write only after this returns `true`.
    pub async fn wait_replicated(&self, lsn: u64, timeout: Duration) -> bool {
        self.durable.wait(lsn, timeout).await
    }

    /// Stops every task and closes the endpoint. Idempotent.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        drop(
            self.log_listener
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        self.endpoint.close(0u32.into(), b"shutting down");
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        // Best effort: a peer that is gone never answers the close, and a role
        // change must not wait for it.
        let _ = tokio::time::timeout(Duration::from_millis(200), self.endpoint.wait_idle()).await;
    }
}

/// A UDP socket with large buffers: a long fat link needs the kernel to
/// hold a window's worth of datagrams (the kernel caps what it grants).
fn udp_socket(addr: SocketAddr) -> Result<std::net::UdpSocket, NetError> {
    let io = |op: &str, source| NetError::Io {
        op: format!("{op} {addr}"),
        source,
    };
    let socket = std::net::UdpSocket::bind(addr).map_err(|e| io("bind UDP", e))?;
    let sock = socket2::SockRef::from(&socket);
    for size in [8 << 20, 4 << 20, 1 << 20] {
        if sock.set_recv_buffer_size(size).is_ok() && sock.set_send_buffer_size(size).is_ok() {
            break;
        }
    }
    Ok(socket)
}

/// Turns the store's log ends into a watch channel, told by the writer
/// itself as they move: a frame ships as soon as it is written (with
/// `ship_unsynced`) or durable, whether or not the leader's index has
/// applied it yet, without a thread of its own between the writer and the
/// sessions. The channel stays fed while the returned listener lives.
fn watch_log(
    store: &Store,
) -> Result<(watch::Receiver<LogTip>, vigil_engine::LogEndListener), NetError> {
    // An empty log has no last frame to take the epoch from.
    let tip = |mut tip: LogTip, epoch_now: u64| {
        if tip.durable.lsn == 0 {
            tip.durable.epoch = epoch_now;
        }
        tip.written_lsn = tip.written_lsn.max(tip.durable.lsn);
        tip
    };
    let (tx, rx) = watch::channel(tip(store.log_tip(), store.epoch()));
    let tx = Arc::new(tx);
    // Only ever forward: the end read below may race with the writer.
    let advance = |tx: &watch::Sender<LogTip>, h: LogTip| {
        tx.send_if_modified(|cur| {
            let newer =
                h.durable.lsn >= cur.durable.lsn && h.written_lsn >= cur.written_lsn && h != *cur;
            if newer {
                *cur = h;
            }
            newer
        });
    };
    let told = tx.clone();
    let listener = store
        .on_log_end(move |t| advance(&told, tip(t, t.durable.epoch)))
        .map_err(|e| NetError::Config(format!("watch the log: {e}")))?;
    // A frame made durable before the listener was registered.
    advance(&tx, tip(store.log_tip(), store.epoch()));
    Ok((rx, listener))
}

/// Reads messages into a bounded channel until the stream ends or fails.
/// `progress` counts bytes as they arrive, inside a message too.
fn spawn_reader(
    mut recv: quinn::RecvStream,
    progress: Arc<std::sync::atomic::AtomicU64>,
) -> mpsc::Receiver<Result<Message, NetError>> {
    let (tx, rx) = mpsc::channel(READ_AHEAD_MESSAGES);
    tokio::spawn(async move {
        loop {
            let m = read_message(&mut recv, Some(&progress)).await;
            let end = !matches!(m, Ok(Some(_)));
            let item = match m {
                Ok(Some(m)) => Ok(m),
                Ok(None) => Err(NetError::Connection("stream closed by peer".into())),
                Err(e) => Err(e),
            };
            if tx.send(item).await.is_err() || end {
                break;
            }
        }
    });
    rx
}

#[expect(clippy::too_many_arguments, reason = "one private task entry point")]
async fn accept_loop(
    endpoint: quinn::Endpoint,
    store: Arc<Store>,
    cfg: NodeConfig,
    shared: Arc<Mutex<Shared>>,
    head_rx: watch::Receiver<LogTip>,
    durable: Arc<DurableWaiters>,
    mut stop: watch::Receiver<bool>,
    started: Instant,
) {
    let sessions = Arc::new(tokio::sync::Semaphore::new(SESSIONS_MAX));
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i { Some(i) => i, None => break },
            _ = stop.changed() => break,
        };
        let Ok(permit) = sessions.clone().try_acquire_owned() else {
            tracing::warn!(remote = %incoming.remote_address(), "too many replication sessions; refused");
            incoming.refuse();
            continue;
        };
        let (store, cfg, shared, head_rx, durable, stop) = (
            store.clone(),
            cfg.clone(),
            shared.clone(),
            head_rx.clone(),
            durable.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%remote, "replication peer refused during the handshake: {e}");
                    return;
                }
            };
            if let Err(e) =
                serve_follower(conn, store, cfg, shared, head_rx, durable, stop, started).await
            {
                tracing::warn!(%remote, "replication session ended: {e}");
            }
            drop(permit);
        });
    }
}

#[expect(clippy::too_many_arguments, reason = "one private task entry point")]
async fn serve_follower(
    conn: quinn::Connection,
    store: Arc<Store>,
    cfg: NodeConfig,
    shared: Arc<Mutex<Shared>>,
    mut head_rx: watch::Receiver<LogTip>,
    durable: Arc<DurableWaiters>,
    mut stop: watch::Receiver<bool>,
    started: Instant,
) -> Result<(), NetError> {
    let remote = conn.remote_address();
    let (mut send, recv) = tokio::time::timeout(IDLE_TIMEOUT, conn.accept_bi())
        .await
        .map_err(|_| NetError::Connection("no stream opened".into()))?
        .map_err(|e| NetError::Connection(e.to_string()))?;
    let mut msgs = spawn_reader(recv, Arc::default());
    let now = || started.elapsed().as_micros() as u64;
    let mut leader_cfg = LeaderConfig::new(&cfg.cluster, &cfg.name, &cfg.http_url);
    // Synchronous commits wait for the follower's fsync: ship frames while
    // this leader's own fsync runs, so the two overlap.
    leader_cfg.ship_unsynced = cfg.max_lag.is_some_and(|m| m.is_zero());
    let mut session = LeaderSession::new(leader_cfg, now());
    let head = *head_rx.borrow_and_update();
    let mut events = VecDeque::from([log_advanced(&head)]);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut name: Option<String> = None;
    let mut base = SessionCounters::default();
    // Commit times of log heads seen, to time how long each took to
    // become durable on the follower.
    let mut commits: VecDeque<(u64, u64)> = VecDeque::new();
    let result = loop {
        while let Some(ev) = events.pop_front() {
            for action in session.handle(ev, now()) {
                match action {
                    LeaderAction::Send(m) => write_message(&mut send, &m).await?,
                    LeaderAction::ComparePosition { epoch, lsn, crc } => {
                        let s = store.clone();
                        let p = tokio::task::spawn_blocking(move || {
                            // A follower may hold a frame shipped before this
                            // leader's fsync returned: compare once it is
                            // durable. (A follower further ahead diverged.)
                            let tip = s.log_tip();
                            if lsn > tip.durable.lsn && lsn <= tip.written_lsn {
                                s.wait_for_log_end(lsn - 1, POSITION_WAIT);
                            }
                            s.position_of(epoch, lsn, crc)
                        })
                        .await
                        .map_err(|e| NetError::Connection(e.to_string()))??;
                        events.push_back(LeaderEvent::Position(p));
                    }
                    LeaderAction::ReadLog {
                        from_lsn,
                        max_bytes,
                        through_lsn,
                    } => {
                        // The live tail comes from memory, without a
                        // blocking thread's round trip; older (durable)
                        // frames from disk.
                        let c = match store.read_log_recent(from_lsn, max_bytes, through_lsn) {
                            Some(c) => Some(c),
                            None => {
                                let s = store.clone();
                                tokio::task::spawn_blocking(move || s.read_log(from_lsn, max_bytes))
                                    .await
                                    .map_err(|e| NetError::Connection(e.to_string()))??
                            }
                        };
                        events.push_back(LeaderEvent::Chunk(c));
                    }
                    LeaderAction::Watermarks(w) => {
                        let now_us = wall_us();
                        let mut taken = Vec::new();
                        while commits.front().is_some_and(|(lsn, _)| *lsn <= w.durable) {
                            if let Some((_, at)) = commits.pop_front() {
                                taken.push(
                                    u32::try_from(now_us.saturating_sub(at)).unwrap_or(u32::MAX),
                                );
                            }
                        }
                        if let (Some(n), false) = (name.as_deref(), taken.is_empty()) {
                            let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                            let q = s.lag_samples.entry(n.to_owned()).or_default();
                            for t in taken {
                                if q.len() == LAG_SAMPLES_MAX {
                                    q.pop_front();
                                }
                                q.push_back(t);
                            }
                        }
                        durable.advance(w.durable);
                    }
                    LeaderAction::Close(reason) => {
                        tracing::warn!(%remote, "replication session closed: {reason}");
                        let _ = send.finish();
                        // The refusal must arrive before the close does (a
                        // close discards unsent data): wait until the peer
                        // acknowledged the stream, briefly.
                        let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
                        conn.close(1u32.into(), reason.as_bytes());
                        mark_link(&shared, name.as_deref(), |l| l.connected = false);
                        return Ok(());
                    }
                }
            }
            if name.is_none()
                && let Some(n) = session.follower()
            {
                let n = n.to_owned();
                tracing::info!(%remote, follower = %n, "follower connected");
                let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                let recorded = s
                    .eligibility
                    .as_ref()
                    .and_then(|r| r.get(&n))
                    .map(|e| e.eligible);
                let fresh = !s.links.contains_key(&n);
                let link = s.links.entry(n.clone()).or_default();
                if fresh {
                    // Until its lag is measured, a follower is what the
                    // record says, and a new one is eligible only when no
                    // bound is promised.
                    link.eligible =
                        recorded.unwrap_or_else(|| cfg.max_lag.is_none_or(|m| m.is_zero()));
                }
                // Counters are since start: this session adds to earlier ones.
                base = SessionCounters {
                    bytes_sent: link.bytes_sent,
                    chunks_sent: link.chunks_sent,
                    refetches: link.refetches,
                    raw_bytes_sent: link.raw_bytes_sent,
                };
                link.node = n.clone();
                link.remote = remote.to_string();
                link.connected = true;
                link.sessions += 1;
                s.conns.insert(n.clone(), conn.clone());
                name = Some(n);
            }
        }
        update_link(&shared, name.as_deref(), &session, &head_rx, base);
        // Biased: messages that queued up while a large chunk was being
        // written are handled before a tick can call the follower silent.
        tokio::select! {
            biased;
            m = msgs.recv() => match m {
                Some(Ok(m)) => events.push_back(LeaderEvent::Message(m)),
                Some(Err(e)) => break Err(e),
                None => break Err(NetError::Connection("reader ended".into())),
            },
            r = head_rx.changed() => {
                if r.is_err() { break Ok(()); }
                let h = *head_rx.borrow_and_update();
                if commits.len() < LAG_SAMPLES_MAX && commits.back().is_none_or(|(l, _)| *l < h.durable.lsn) {
                    commits.push_back((h.durable.lsn, h.durable.timestamp_us));
                }
                events.push_back(log_advanced(&h));
            }
            _ = tick.tick() => events.push_back(LeaderEvent::Tick),
            _ = stop.changed() => break Ok(()),
        }
    };
    mark_link(&shared, name.as_deref(), |l| l.connected = false);
    if let Some(n) = name.as_deref() {
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        if s.conns
            .get(n)
            .is_some_and(|c| c.stable_id() == conn.stable_id())
        {
            s.conns.remove(n);
        }
    }
    conn.close(0u32.into(), b"session ended");
    result
}

fn mark_link(shared: &Mutex<Shared>, name: Option<&str>, f: impl FnOnce(&mut FollowerLink)) {
    if let Some(n) = name {
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = s.links.get_mut(n) {
            f(l);
        }
    }
}

/// Refreshes a follower's link in the status: watermarks, lag, and
/// eligibility against `max_lag` (logged when it changes).
fn update_link(
    shared: &Mutex<Shared>,
    name: Option<&str>,
    session: &LeaderSession,
    head_rx: &watch::Receiver<LogTip>,
    base: SessionCounters,
) {
    let Some(n) = name else { return };
    let w: Watermarks = session.watermarks();
    let head = *head_rx.borrow();
    let c = session.counters();
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    let Some(l) = s.links.get_mut(n) else { return };
    l.received = w.received;
    l.durable = w.durable;
    // A new session knows the applied LSN only from the first ack: keep
    // the last one heard meanwhile (within what is durable).
    l.applied = w.applied.max(l.applied.min(w.durable));
    l.lag_lsns = head.durable.lsn.saturating_sub(w.durable);
    l.bytes_sent = base.bytes_sent + c.bytes_sent;
    l.chunks_sent = base.chunks_sent + c.chunks_sent;
    l.refetches = base.refetches + c.refetches;
    l.raw_bytes_sent = base.raw_bytes_sent + c.raw_bytes_sent;
}

/// Measures every follower's lag (the age of the oldest write it lacks
/// durably) and records, durably and before returning, each change of
/// eligibility against `max_lag`.
/// The lock that serializes eligibility decisions with their records
/// (taken out of `shared`, whose own lock is not held while it is).
fn record_lock_of(shared: &Mutex<Shared>) -> Arc<Mutex<()>> {
    shared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .record_lock
        .clone()
}

/// Makes record `r` through `record` and tells the enforcer the outcome.
/// A refusal stops enforcement for good (logged once, never retried).
fn make_record(shared: &Mutex<Shared>, record: &EligibilityFn, r: &Record) -> Result<(), NetError> {
    let outcome = record(r);
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    // A stopped enforcer still hears the outcome (a refusal is logged once).
    let enforcer = s.enforcer.as_mut().ok_or_else(not_leader)?;
    match outcome {
        Ok(()) => {
            enforcer.recorded(r);
            tracing::info!(follower = %r.follower, eligible = r.eligible, durable = r.durable_lsn, epoch = r.epoch, "eligibility recorded at the witness");
            Ok(())
        }
        Err(RecordError::Refused(why)) => {
            if enforcer.stopped().is_none() {
                tracing::warn!(follower = %r.follower, epoch = r.epoch, "max_lag enforcement stops, not retried: {why}");
            }
            enforcer.refused(&why);
            Err(NetError::NotLeading(why))
        }
        Err(RecordError::Failed(e)) => {
            // It may have been taken all the same: unknown until a later
            // record is answered.
            enforcer.failed(r);
            Err(NetError::Connection(format!(
                "record the eligibility of {}: {e}",
                r.follower
            )))
        }
    }
}

/// Measures every follower's lag (the age of the oldest write it lacks
/// durably) and makes, before returning, each record of eligibility the
/// enforcer asks for (`which` of them), then updates the local record.
fn enforce_bound(
    store: &Store,
    shared: &Mutex<Shared>,
    max_lag: Option<Duration>,
    record: Option<&EligibilityFn>,
    which: Records,
) -> Result<(), NetError> {
    let serial = record_lock_of(shared);
    let _serial = serial.lock().unwrap_or_else(|p| p.into_inner());
    let last = store.last_lsn();
    // The lock is held only to copy and to update: the lags read the log
    // and the witness record waits on the network, and neither may block
    // the async workers that read the links.
    // Only the cluster's step-down or a refusal stops an enforcer, so a
    // static leader never finds it stopped.
    let durables: Vec<(String, u64)> = {
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        s.leading()?;
        s.links
            .iter()
            .map(|(n, l)| (n.clone(), l.durable))
            .collect()
    };
    let mut lags = Vec::with_capacity(durables.len());
    for (name, durable) in durables {
        let raw = if durable >= last {
            Duration::ZERO
        } else {
            let oldest = store.frame_at(durable + 1)?.map_or(0, |h| h.timestamp_us);
            Duration::from_micros(wall_us().saturating_sub(oldest))
        };
        let (lag, due) = {
            let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
            let enforcer = s.leading()?;
            let lag = enforcer.counted_lag(&name, durable, raw);
            let due = record.and_then(|_| enforcer.due(&name, durable, lag, which));
            (lag, due)
        };
        if let (Some(record), Some(r)) = (record, due) {
            make_record(shared, record, &r)?;
        }
        lags.push((name, lag));
    }
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    let Shared {
        links, eligibility, ..
    } = &mut *s;
    for (name, lag) in lags {
        let Some(l) = links.get_mut(&name) else {
            continue;
        };
        l.lag_seconds = lag.as_secs_f64();
        let eligible = decide(l.eligible, lag, max_lag);
        if eligible == l.eligible {
            continue;
        }
        if let Some(file) = eligibility.as_mut() {
            file.set(&name, eligible, wall_us())
                .map_err(|source| NetError::Io {
                    op: format!("record the eligibility of {name}"),
                    source,
                })?;
        }
        if eligible {
            tracing::info!(follower = %name, lag_seconds = l.lag_seconds, "follower within max_lag again: eligible for promotion");
        } else {
            tracing::warn!(follower = %name, lag_seconds = l.lag_seconds, "follower beyond max_lag: recorded as ineligible for promotion");
        }
        l.eligible = eligible;
    }
    Ok(())
}

/// A leader's timer: enforces the bound every tick even when no write
/// comes (a write acknowledged before the follower fell behind must not
/// age past `max_lag` unnoticed), and writes a checkpoint record with the
/// followers' durable watermarks when they moved.
async fn guard_bound(
    store: Arc<Store>,
    shared: Arc<Mutex<Shared>>,
    max_lag: Option<Duration>,
    record: Option<EligibilityFn>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_checkpoint = Instant::now();
    let mut checkpointed: (u64, Vec<(String, u64)>) = (0, Vec::new());
    // The last enforcement error logged and when: the same one is logged
    // again only after ERROR_LOG_INTERVAL (a lapsed lease or an unreachable
    // witness fails every tick).
    let mut logged: Option<(String, Instant)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let (st, sh, rec) = (store.clone(), shared.clone(), record.clone());
        match tokio::task::spawn_blocking(move || {
            enforce_bound(&st, &sh, max_lag, rec.as_ref(), Records::Both)
        })
        .await
        {
            Ok(Ok(())) => logged = None,
            // Logged once where it stopped; this node is stepping down.
            Ok(Err(NetError::NotLeading(_))) => break,
            Ok(Err(e)) => {
                let e = e.to_string();
                let again = logged
                    .as_ref()
                    .is_some_and(|(l, at)| *l == e && at.elapsed() < ERROR_LOG_INTERVAL);
                if !again {
                    tracing::error!("cannot enforce max_lag: {e}");
                    logged = Some((e, Instant::now()));
                }
            }
            Err(e) => tracing::error!("max_lag task failed: {e}"),
        }
        if last_checkpoint.elapsed() < CHECKPOINT_INTERVAL {
            continue;
        }
        last_checkpoint = Instant::now();
        let marks: Vec<(String, u64)> = {
            let s = shared.lock().unwrap_or_else(|p| p.into_inner());
            s.links
                .values()
                .map(|l| (l.node.clone(), l.durable))
                .collect()
        };
        // Only when the watermarks moved and the log has more than the
        // last checkpoint: a checkpoint is itself replicated, and must not
        // keep an idle cluster writing.
        if marks.is_empty() || marks == checkpointed.1 || store.last_lsn() <= checkpointed.0 {
            continue;
        }
        let st = store.clone();
        let wm: Vec<vigil_engine::Watermark> = marks
            .iter()
            .map(|(name, durable_lsn)| vigil_engine::Watermark {
                name: name.clone(),
                durable_lsn: *durable_lsn,
            })
            .collect();
        match tokio::task::spawn_blocking(move || st.checkpoint(wm).map(|()| st.last_lsn())).await {
            Ok(Ok(lsn)) => checkpointed = (lsn, marks),
            Ok(Err(e)) => tracing::warn!("cannot write a watermark checkpoint: {e}"),
            Err(e) => tracing::warn!("checkpoint task failed: {e}"),
        }
    }
}

enum Driven {
    /// A connection attempt of generation `gen` finished.
    Connected(
        u64,
        Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream), String>,
    ),
}

#[expect(clippy::too_many_arguments, reason = "one private task entry point")]
async fn follow(
    endpoint: quinn::Endpoint,
    leader: SocketAddr,
    leader_name: String,
    store: Arc<Store>,
    cfg: NodeConfig,
    shared: Arc<Mutex<Shared>>,
    mut stop: watch::Receiver<bool>,
    started: Instant,
) {
    let now = || started.elapsed().as_micros() as u64;
    let mut machine = Follower::new(
        FollowerConfig::new(&cfg.cluster, &cfg.name),
        store.log_end(),
    );
    let (tx, mut rx) = mpsc::channel::<Driven>(READ_AHEAD_MESSAGES * 2);
    let mut generation = 0u64;
    let mut conn: Option<(quinn::Connection, quinn::SendStream)> = None;
    let mut reader: Option<mpsc::Receiver<Result<Message, NetError>>> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending = VecDeque::from([FollowerEvent::Tick]);
    let mut rate = Rate::default();
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut progress_seen = 0u64;
    let mut appended: Option<oneshot::Receiver<FollowerEvent>> = None;
    loop {
        while let Some(ev) = pending.pop_front() {
            for action in machine.handle(ev, now()) {
                match action {
                    FollowerAction::Connect => {
                        generation += 1;
                        let (g, tx, endpoint, name) = (
                            generation,
                            tx.clone(),
                            endpoint.clone(),
                            leader_name.clone(),
                        );
                        tokio::spawn(async move {
                            let r = connect(&endpoint, leader, &name).await;
                            let _ = tx.send(Driven::Connected(g, r)).await;
                        });
                    }
                    FollowerAction::Send(m) => {
                        if let Some((_, send)) = conn.as_mut()
                            && let Err(e) = write_message(send, &m).await
                        {
                            pending.push_back(FollowerEvent::Disconnected(e.to_string()));
                        }
                    }
                    FollowerAction::Append { frames, confirmed } => {
                        // The writer answers on its own thread; the machine
                        // asks for one append at a time.
                        assert!(appended.is_none(), "one append at a time");
                        let (done, rx) = oneshot::channel();
                        let sent = store.append_log_with(frames, confirmed, move |r| {
                            let _ = done.send(appended_event(r));
                        });
                        match sent {
                            Ok(()) => appended = Some(rx),
                            Err(e) => pending.push_back(appended_event(Err(e))),
                        }
                    }
                    FollowerAction::Confirm(lsn) => {
                        // In order with the appends (the writer's queue);
                        // a closed store has nothing left to show.
                        if let Err(e) = store.confirm_log(lsn) {
                            tracing::debug!("confirming lsn {lsn}: {e}");
                        }
                    }
                    FollowerAction::Disconnect(why) => {
                        generation += 1;
                        reader = None;
                        if let Some((c, _)) = conn.take() {
                            c.close(1u32.into(), why.as_bytes());
                        }
                    }
                    FollowerAction::Stop(why) => {
                        generation += 1;
                        reader = None;
                        if let Some((c, _)) = conn.take() {
                            c.close(2u32.into(), why.as_bytes());
                        }
                    }
                    FollowerAction::CutUnconfirmed { after } => {
                        // Awaited here, so /status never shows a divergence
                        // the cut is about to cure.
                        pending.push_back(cut_unconfirmed(&store, after).await);
                    }
                    FollowerAction::ImportKeys(keys) => {
                        // Awaited here, so no later append runs before the
                        // keys it needs are durable.
                        if let Some(ev) = import_keys(&store, keys).await {
                            pending.push_back(ev);
                        }
                    }
                }
            }
        }
        publish_upstream(&shared, &machine, leader, &mut rate);
        // Messages are read only while the machine's append queue has room:
        // a slow disk holds the network back instead of filling memory.
        let room = !machine.queue_full();
        let ev = tokio::select! {
            ev = rx.recv() => match ev { Some(ev) => ev, None => break },
            r = async {
                match appended.as_mut() {
                    Some(a) => a.await,
                    None => std::future::pending().await,
                }
            }, if appended.is_some() => {
                appended = None;
                pending.push_back(r.unwrap_or_else(|_| {
                    appended_event(Err(StoreError::Closed))
                }));
                continue;
            }
            m = async {
                match reader.as_mut() {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            }, if room && reader.is_some() => {
                match m {
                    Some(Ok(m)) => pending.push_back(FollowerEvent::Message(m)),
                    Some(Err(e)) => {
                        conn = None;
                        reader = None;
                        pending.push_back(FollowerEvent::Disconnected(e.to_string()));
                    }
                    None => {
                        conn = None;
                        reader = None;
                        pending.push_back(FollowerEvent::Disconnected("reader ended".into()));
                    }
                }
                continue;
            }
            _ = tick.tick() => {
                let applied = store.last_lsn();
                if applied != machine.applied() {
                    pending.push_back(FollowerEvent::Applied(applied));
                }
                let p = progress.load(Ordering::Relaxed);
                if p != progress_seen {
                    progress_seen = p;
                    pending.push_back(FollowerEvent::Progress);
                }
                pending.push_back(FollowerEvent::Tick);
                continue;
            }
            _ = stop.changed() => break,
        };
        match ev {
            Driven::Connected(g, _) if g != generation => {}
            Driven::Connected(_, Ok((c, send, recv))) => {
                if let Some(v) = cfg.voter.clone() {
                    tokio::spawn(answer_leader(c.clone(), v));
                }
                conn = Some((c, send));
                reader = Some(spawn_reader(recv, progress.clone()));
                pending.push_back(FollowerEvent::Connected);
            }
            Driven::Connected(_, Err(e)) => pending.push_back(FollowerEvent::Disconnected(e)),
        }
    }
    if let Some((c, _)) = conn {
        c.close(0u32.into(), b"shutting down");
    }
}

/// Cuts the frames after `after` if none was shown (see
/// [`FollowerAction::CutUnconfirmed`]), on a blocking thread; the
/// machine's event for the outcome.
async fn cut_unconfirmed(store: &Arc<Store>, after: u64) -> FollowerEvent {
    let s = store.clone();
    match tokio::task::spawn_blocking(move || s.drop_unconfirmed(after)).await {
        Ok(Ok(end)) => FollowerEvent::Cut(end),
        Ok(Err(e)) => FollowerEvent::CutRefused(e.to_string()),
        Err(e) => FollowerEvent::CutRefused(format!("the cut's task failed: {e}")),
    }
}

/// Takes a leader's data keys on a blocking thread (a key module call
/// and an fsync); the machine's event when that failed.
async fn import_keys(
    store: &Arc<Store>,
    keys: Vec<(u64, vigil_engine::crypt::DataKey)>,
) -> Option<FollowerEvent> {
    let s = store.clone();
    let failed = |error: String, fatal: bool| Some(FollowerEvent::KeysFailed { error, fatal });
    match tokio::task::spawn_blocking(move || s.import_data_keys(&keys)).await {
        Ok(Ok(())) => None,
        Ok(Err(e @ StoreError::KeyNeeded { .. })) => failed(e.to_string(), true),
        Ok(Err(e)) => failed(e.to_string(), false),
        Err(e) => failed(format!("the import's task failed: {e}"), false),
    }
}

/// The follower machine's event for an append's outcome.
fn appended_event(r: Result<vigil_engine::LogEnd, StoreError>) -> FollowerEvent {
    match r {
        Ok(end) => FollowerEvent::Appended(end),
        Err(e) => FollowerEvent::AppendFailed {
            checksum: matches!(
                e,
                StoreError::FrameRejected { .. } | StoreError::Discontinuous(_)
            ),
            error: e.to_string(),
        },
    }
}

/// On a follower's connection: answers every stream the leader opens
/// (lease requests, a switchover's hand-over) with `voter`, until the
/// connection closes.
async fn answer_leader(conn: quinn::Connection, voter: VoteFn) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let voter = voter.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = read_message(&mut recv, None).await {
                let Some(answer) = voter(m) else {
                    return;
                };
                if write_message(&mut send, &answer).await.is_err() {
                    return;
                }
            }
            let _ = send.finish();
        });
    }
}

async fn connect(
    endpoint: &quinn::Endpoint,
    leader: SocketAddr,
    name: &str,
) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream), String> {
    let connecting = endpoint
        .connect(leader, name)
        .map_err(|e| format!("connect to {leader}: {e}"))?;
    let c = tokio::time::timeout(IDLE_TIMEOUT, connecting)
        .await
        .map_err(|_| format!("connect to {leader}: timed out"))?
        .map_err(|e| format!("connect to {leader}: {e}"))?;
    let (send, recv) = c
        .open_bi()
        .await
        .map_err(|e| format!("open stream to {leader}: {e}"))?;
    Ok((c, send, recv))
}

/// Receive rate over a sliding few seconds, and when progress was last logged.
#[derive(Default)]
struct Rate {
    samples: VecDeque<(Instant, u64)>,
    logged: Option<Instant>,
}

impl Rate {
    fn observe(&mut self, total: u64) -> f64 {
        let now = Instant::now();
        self.samples.push_back((now, total));
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(5))
        {
            self.samples.pop_front();
        }
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, b0)), Some((t1, b1))) if t1 > t0 => {
                (b1 - b0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

fn publish_upstream(shared: &Mutex<Shared>, m: &Follower, leader: SocketAddr, rate: &mut Rate) {
    let c = m.counters();
    let l = m.leader();
    let end = m.log_end();
    let bytes_per_second = rate.observe(c.bytes_received);
    let lsns_left = l.last_lsn.saturating_sub(end.lsn);
    let sync = (lsns_left > 0 && l.last_lsn > 0).then(|| {
        let percent = end.lsn as f64 * 100.0 / l.last_lsn as f64;
        // LSNs per byte so far gives the time left at the current rate.
        let eta_seconds = (bytes_per_second > 0.0 && end.lsn > 0).then(|| {
            let bytes_per_lsn = c.bytes_received as f64 / end.lsn.max(1) as f64;
            lsns_left as f64 * bytes_per_lsn / bytes_per_second
        });
        SyncProgress {
            percent,
            lsns_left,
            bytes_per_second,
            eta_seconds,
        }
    });
    if let Some(p) = &sync
        && m.is_streaming()
        && rate
            .logged
            .is_none_or(|t| t.elapsed() >= PROGRESS_LOG_INTERVAL)
    {
        rate.logged = Some(Instant::now());
        tracing::info!(
            percent = format!("{:.1}", p.percent),
            lsns_left = p.lsns_left,
            mb_per_second = format!("{:.1}", p.bytes_per_second / 1e6),
            eta_seconds = p.eta_seconds.map(|e| format!("{e:.0}")),
            "catching up with the leader"
        );
    }
    let lag_seconds = if lsns_left == 0 {
        0.0
    } else {
        l.last_commit_us.saturating_sub(end.timestamp_us) as f64 / 1e6
    };
    let diverged_at = match m.refusal() {
        Some((crate::proto::wire::RefuseCode::Diverged, lsn)) => Some(lsn),
        _ => None,
    };
    let reseed_needed = matches!(
        m.refusal(),
        Some((crate::proto::wire::RefuseCode::ReseedNeeded, _))
    );
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    s.leader_view = Some(LeaderView {
        leader: l.node.clone(),
        connected: m.is_streaming(),
        leader_epoch: l.epoch,
        leader_lsn: l.last_lsn,
        durable: end.lsn,
        lag_seconds,
        diverged_at,
        reseed_needed,
    });
    s.status.upstream = Some(Upstream {
        leader_addr: leader.to_string(),
        leader: l.node.clone(),
        leader_http: l.http_url.clone(),
        connected: m.is_streaming(),
        leader_lsn: l.last_lsn,
        received: m.received(),
        durable: end.lsn,
        applied: m.applied(),
        lag_lsns: lsns_left,
        lag_seconds,
        stopped: m.stopped().map(String::from),
        diverged_at,
        reseed_needed,
        leader_epoch: l.epoch,
        connects: c.connects,
        disconnects: c.disconnects,
        checksum_failures: c.checksum_failures,
        disk_failures: c.disk_failures,
        bytes_received: c.bytes_received,
        sync,
    });
}
