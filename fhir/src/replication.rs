//! The server's side of replication: the `[replication]` settings, a
//! follower that answers reads itself (saying how far behind it is) and
//! forwards writes to its leader, synchronous acknowledgement on a leader
//! with `max_lag_ms = 0`, and the `/status` and `/metrics` endpoints.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use vigil_net::runtime::cluster::{Cluster, WriteGuard, WriteRefused};
use vigil_net::runtime::node::{Node, NodeConfig, Role};

use crate::app::App;
use crate::config::ConfigError;
use crate::outcome::FhirError;

/// The response header giving a follower's replication lag, in seconds of
/// commit time, with the LSNs behind in `Vigil-Replication-Lag-Lsns`.
pub const LAG_HEADER: &str = "vigil-replication-lag";
/// LSNs a follower is behind its leader.
pub const LAG_LSNS_HEADER: &str = "vigil-replication-lag-lsns";
/// How long a forwarded write may take at the leader.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);

/// The `[replication]` table of the config file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    /// The cluster's name (every member's must match).
    pub cluster: String,
    /// This node's name; its certificate is `certs/NODE.pem`.
    pub node: String,
    /// Directory made by `vigil certs`.
    pub certs: PathBuf,
    /// `leader`, `follower`, or `auto` (automatic failover: whoever holds
    /// the lease leads; needs `peer`, `peer_addr`, `witness`, `witness_addr`).
    pub role: String,
    /// Auto: the other data node's name.
    #[serde(default)]
    pub peer: Option<String>,
    /// Auto: the other data node's replication address.
    #[serde(default)]
    pub peer_addr: Option<SocketAddr>,
    /// Auto: the witness's name.
    #[serde(default)]
    pub witness: Option<String>,
    /// Auto: the witness's address.
    #[serde(default)]
    pub witness_addr: Option<SocketAddr>,
    /// Auto: the node that takes the first lease of a new cluster
    /// (default: this node).
    #[serde(default)]
    pub preferred: Option<String>,
    /// Auto: lease duration in ms (renewed every sixth of it). Shorter
    /// fails over faster and risks needless failovers on a slow link.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// Leader (and auto): the UDP address followers connect to.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Follower: the leader's replication address.
    #[serde(default)]
    pub leader: Option<SocketAddr>,
    /// Follower: the name on the leader's certificate (default: `leader`'s IP).
    #[serde(default)]
    pub leader_name: Option<String>,
    /// The RPO promise in milliseconds: 0 is synchronous replication.
    #[serde(default)]
    pub max_lag_ms: Option<u64>,
    /// Synchronous mode: how long a write waits for the follower. Then,
    /// with `on_lag = "accept"`, the follower is recorded ineligible and
    /// the write acknowledged; with `"stall"`, the client gets 503 (the
    /// write is durable on the leader only).
    #[serde(default = "default_sync_timeout_ms")]
    pub sync_timeout_ms: u64,
    /// `accept` (default): a follower beyond `max_lag` is marked ineligible
    /// for promotion and writes go on; `stall`: writes get 503 with
    /// Retry-After until it is back within the bound.
    #[serde(default = "default_on_lag")]
    pub on_lag: String,
    /// What a leader does when its disk fills (free space below
    /// `disk_reserve_bytes`): keep leading and refuse writes (507), or,
    /// under automatic failover, hand leadership to the follower with a
    /// zero-loss switchover.
    #[serde(default)]
    pub on_disk_full: OnDiskFull,
    /// QUIC flow-control window in bytes (≥ bandwidth × round trip).
    #[serde(default = "default_window")]
    pub window_bytes: u64,
}

/// `[replication] on_disk_full`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDiskFull {
    /// Keep leading; client writes get 507 until space is freed.
    #[default]
    Refuse,
    /// Automatic failover only: a switchover to the follower (it must be
    /// connected and hold every write; tried again every
    /// [`DISK_FULL_SWITCHOVER_RETRY`] while the disk stays full).
    Switchover,
}

/// How often a leader whose disk is full tries the switchover again.
pub const DISK_FULL_SWITCHOVER_RETRY: std::time::Duration = std::time::Duration::from_secs(15);

fn default_lease_ms() -> u64 {
    3_000
}
fn default_sync_timeout_ms() -> u64 {
    5_000
}
fn default_on_lag() -> String {
    "accept".into()
}
fn default_window() -> u64 {
    32 * 1024 * 1024
}

impl ReplicationConfig {
    /// Checks that the settings can work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(format!("[replication] {m}")));
        match self.role.as_str() {
            "leader" if self.listen.is_none() => bad("a leader needs listen = \"IP:PORT\"".into()),
            "follower" if self.leader.is_none() => {
                bad("a follower needs leader = \"IP:PORT\"".into())
            }
            "auto"
                if self.listen.is_none()
                    || self.peer.is_none()
                    || self.peer_addr.is_none()
                    || self.witness.is_none()
                    || self.witness_addr.is_none() =>
            {
                bad(
                    "role = \"auto\" needs listen, peer, peer_addr, witness and witness_addr"
                        .into(),
                )
            }
            "leader" | "follower" | "auto" => Ok(()),
            other => bad(format!(
                "role must be leader, follower or auto, not {other:?}"
            )),
        }?;
        if !(600..=600_000).contains(&self.lease_ms) {
            return bad("lease_ms must be 600..=600000".into());
        }
        if !matches!(self.on_lag.as_str(), "accept" | "stall") {
            return bad(format!(
                "on_lag must be accept or stall, not {:?}",
                self.on_lag
            ));
        }
        if self.on_disk_full == OnDiskFull::Switchover && !self.is_auto() {
            return bad(
                "on_disk_full = \"switchover\" needs role = \"auto\" (a static leader has no one to hand over to)"
                    .into(),
            );
        }
        if !(1..=600_000).contains(&self.sync_timeout_ms) {
            return bad("sync_timeout_ms must be 1..=600000".into());
        }
        if !(1 << 16..=1 << 30).contains(&self.window_bytes) {
            return bad("window_bytes must be 64 KiB..=1 GiB".into());
        }
        Ok(())
    }

    /// Whether this node follows another.
    pub fn is_follower(&self) -> bool {
        self.role == "follower"
    }

    /// Whether leadership is automatic (leases at a witness).
    pub fn is_auto(&self) -> bool {
        self.role == "auto"
    }

    /// The failover configuration for `role = "auto"`; `None` otherwise.
    pub fn cluster_config(
        &self,
        http_url: &str,
        data: &std::path::Path,
        store: vigil_engine::Options,
    ) -> Option<vigil_net::runtime::cluster::ClusterConfig> {
        let (Some(listen), Some(peer), Some(peer_addr), Some(witness), Some(witness_addr)) = (
            self.listen,
            self.peer.clone(),
            self.peer_addr,
            self.witness.clone(),
            self.witness_addr,
        ) else {
            return None;
        };
        Some(vigil_net::runtime::cluster::ClusterConfig {
            node: self.node_config(http_url),
            listen,
            peer: vigil_net::runtime::cluster::Member {
                name: peer,
                addr: peer_addr,
            },
            witness: vigil_net::runtime::cluster::Member {
                name: witness,
                addr: witness_addr,
            },
            lease: vigil_net::proto::lease::LeaseConfig::with_duration_ms(self.lease_ms),
            preferred: self.preferred.clone().unwrap_or_else(|| self.node.clone()),
            data: data.to_owned(),
            store,
        })
    }

    /// The replication node configuration.
    pub fn node_config(&self, http_url: &str) -> NodeConfig {
        let role = match (self.is_follower(), self.leader, self.listen) {
            (true, Some(leader), _) => Role::Follower {
                leader,
                leader_name: self
                    .leader_name
                    .clone()
                    .unwrap_or_else(|| leader.ip().to_string()),
            },
            (_, _, listen) => Role::Leader {
                listen: listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            },
        };
        let mut c = NodeConfig::new(
            &self.cluster,
            &self.node,
            self.certs.clone(),
            http_url,
            role,
        );
        c.window_bytes = self.window_bytes;
        c.max_lag = self.max_lag_ms.map(Duration::from_millis);
        c
    }
}

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
    let mut e = FhirError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "transient",
        "this node is changing role (failover in progress); retry",
    );
    e.retry_after = Some(1);
    e
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
pub fn admit_write(app: &App) -> Result<Option<WriteGuard>, FhirError> {
    let Some(r) = &app.replication else {
        return Ok(None);
    };
    let guard = match r.cluster() {
        Some(c) => Some(c.begin_write().map_err(refused)?),
        None => None,
    };
    if r.config.on_lag != "stall" || !r.is_leader() {
        return Ok(guard);
    }
    let followers = r.node().map(|n| n.followers()).unwrap_or_default();
    let lagging: Vec<_> = followers
        .iter()
        .filter(|f| !f.eligible || !f.connected)
        .map(|f| format!("{} ({:.1} s behind)", f.node, f.lag_seconds))
        .collect();
    if followers.is_empty() || !lagging.is_empty() {
        let mut e = FhirError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "transient",
            format!(
                "writes are stalled: no follower within max_lag {} ms ({}); retry",
                r.config.max_lag_ms.unwrap_or(0),
                if lagging.is_empty() {
                    "none connected".into()
                } else {
                    lagging.join(", ")
                }
            ),
        );
        e.retry_after = Some(1);
        return Err(e);
    }
    Ok(guard)
}

/// A write this node may not take now: 503 with Retry-After.
fn refused(why: WriteRefused) -> FhirError {
    let mut e = FhirError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "transient",
        format!("{why}; retry"),
    );
    e.retry_after = Some(1);
    e
}

/// Just before acknowledging a write under automatic failover: the lease
/// must still hold, or the write is not acknowledged (it is durable here,
/// and a rejoin may cut it into quarantine).
pub fn before_ack(app: &App) -> Result<(), FhirError> {
    match app.replication.as_ref().and_then(|r| r.cluster()) {
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
pub async fn after_commit(app: &App, lsn: Option<u64>) -> Result<(), FhirError> {
    let (Some(r), Some(lsn)) = (&app.replication, lsn) else {
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
            let mut err = FhirError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                format!(
                    "the write is durable on the leader, but the follower's eligibility could not be recorded: {e}"
                ),
            );
            err.retry_after = Some(1);
            err
        });
    }
    let timeout = Duration::from_millis(r.config.sync_timeout_ms);
    // Wait only for a follower that can confirm: one that is connected and
    // still eligible (a lost one was recorded ineligible already).
    if node.has_eligible_follower() && node.wait_replicated(lsn, timeout).await {
        return Ok(());
    }
    if r.config.on_lag != "stall" {
        // DESIGN.md: with no follower keeping up, the leader goes on
        // accepting writes by default, after recording that the follower
        // lacks them (so it will not be promoted over them).
        return node.give_up_on(lsn).await.map_err(|e| {
            let mut err = FhirError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                format!(
                    "the write is durable on the leader, but the follower's eligibility could not be recorded: {e}"
                ),
            );
            err.retry_after = Some(1);
            err
        });
    }
    let mut e = FhirError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "transient",
        format!(
            "synchronous replication: no follower confirmed lsn {lsn} within {} ms; the write is durable on the leader only",
            r.config.sync_timeout_ms
        ),
    );
    e.retry_after = Some(1);
    Err(e)
}

/// On a leader in synchronous mode: a read's answer is held until a
/// follower holds durably everything the read could have seen, so nothing
/// becomes visible to anyone before it is on the follower (a client never
/// reads a version a failover could lose).
pub async fn sync_reads_layer(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(r) = app
        .replication
        .as_ref()
        .filter(|r| r.is_leader() && r.config.max_lag_ms == Some(0))
    else {
        return next.run(req).await;
    };
    let Some(node) = r.node() else {
        return changing_role().into_response();
    };
    if !is_read(req.method(), req.uri().path()) || req.uri().path().starts_with("/health") {
        return next.run(req).await;
    }
    let resp = next.run(req).await;
    // Measured after the read: bounds the LSN of anything it returned.
    let seen = match app.store() {
        Ok(s) => s.log_end().lsn,
        Err(e) => return e.into_response(),
    };
    let timeout = Duration::from_millis(r.config.sync_timeout_ms);
    if !node.has_eligible_follower() || node.wait_replicated(seen, timeout).await {
        return resp;
    }
    let mut e = FhirError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "transient",
        format!(
            "synchronous replication: no follower confirmed lsn {seen} within {} ms, so this read cannot be answered yet",
            r.config.sync_timeout_ms
        ),
    );
    e.retry_after = Some(1);
    e.into_response()
}

fn is_read(method: &Method, path: &str) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || (*method == Method::POST && path.ends_with("/_search"))
}

/// On a follower: serves reads locally with the lag headers, and forwards
/// every write to the leader, relaying its answer unchanged.
pub async fn follower_layer(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(r) = app.replication.as_ref().filter(|r| !r.is_leader()) else {
        return next.run(req).await;
    };
    let path = req.uri().path().to_owned();
    if (is_read(req.method(), &path) && !path.ends_with("/$export"))
        || path.starts_with("/health")
        || path == "/status"
        || path == "/admin/promote"
        || path == "/admin/drill/crash"
    {
        let st = r.node().map(|n| n.status());
        let mut resp = next.run(req).await;
        if let Some(u) = st.and_then(|s| s.upstream) {
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&format!("{:.3}", u.lag_seconds)) {
                h.insert(LAG_HEADER, v);
            }
            h.insert(LAG_LSNS_HEADER, HeaderValue::from(u.lag_lsns));
        }
        return resp;
    }
    match forward(r, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn forward(r: &Replication, req: Request) -> Result<Response, FhirError> {
    let Some(leader) = r.node().and_then(|n| n.leader_http()) else {
        let mut e = FhirError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "transient",
            "this node is a follower and has not reached its leader yet; retry",
        );
        e.retry_after = Some(1);
        return Err(e);
    };
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| FhirError::invalid(format!("cannot read the request body: {e}")))?
        .to_bytes();
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{pq}", leader.trim_end_matches('/'));
    let mut out = axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(&url);
    for (k, v) in &parts.headers {
        if k != header::HOST && k != header::CONNECTION && k != header::TRANSFER_ENCODING {
            out = out.header(k, v);
        }
    }
    let out = out
        .body(Full::new(body))
        .map_err(|e| FhirError::internal(format!("cannot build the forwarded request: {e}")))?;
    let unavailable = |why: String| {
        let mut e = FhirError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "transient",
            format!("this follower could not reach its leader at {leader}: {why}"),
        );
        e.retry_after = Some(1);
        e
    };
    let resp = tokio::time::timeout(FORWARD_TIMEOUT, r.client.request(out))
        .await
        .map_err(|_| unavailable("timed out".into()))?
        .map_err(|e| unavailable(e.to_string()))?;
    let (mut parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .to_bytes();
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts.headers.insert(
        "vigil-forwarded-to",
        HeaderValue::from_str(&leader).unwrap_or(HeaderValue::from_static("leader")),
    );
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// `GET /status`: role, epoch, last LSN and replication, as JSON.
pub async fn status(State(app): State<Arc<App>>) -> Response {
    let store = app.store().ok();
    let body = match &app.replication {
        Some(r) => {
            let mut st = r.node().map(|n| n.status()).unwrap_or_default();
            let v = r.cluster().map(|c| c.status());
            if let Some(l) = &v {
                st.role = l.role.clone();
                st.node = r.config.node.clone();
                st.cluster = r.config.cluster.clone();
            }
            serde_json::to_value(st).and_then(|mut j| {
                if let (Some(obj), Some(l)) = (j.as_object_mut(), v) {
                    obj.insert("leadership".into(), serde_json::to_value(l)?);
                    let q = crate::quarantine::list(&app.config.data).unwrap_or_default();
                    obj.insert("quarantine".into(), serde_json::to_value(q)?);
                }
                Ok(j)
            })
        }
        None => serde_json::to_value(vigil_net::status::ReplicationStatus {
            role: "standalone".into(),
            epoch: store.as_ref().map_or(0, |s| s.epoch()),
            last_lsn: store.as_ref().map_or(0, |s| s.last_lsn()),
            ..Default::default()
        }),
    };
    let body = body.and_then(|mut b| {
        if let (Some(obj), Some(d)) = (b.as_object_mut(), app.disk_report()) {
            obj.insert("disk".into(), serde_json::to_value(d)?);
        }
        Ok(b)
    });
    match body.and_then(|b| serde_json::to_vec_pretty(&b)) {
        Ok(b) => crate::http::json_response(StatusCode::OK, b),
        Err(e) => FhirError::internal(e.to_string()).into_response(),
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    use std::fmt::Write;
    let mut m = String::new();
    let mut gauge = |name: &str, help: &str, labels: &str, v: f64| {
        if !m.contains(&format!("# TYPE {name} ")) {
            let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} gauge");
        }
        let _ = writeln!(m, "{name}{labels} {v}");
    };
    let store = app.store().ok();
    gauge(
        "vigil_last_lsn",
        "Last durable LSN of this node.",
        "",
        store.as_ref().map_or(0, |s| s.last_lsn()) as f64,
    );
    gauge(
        "vigil_epoch",
        "Epoch of this node's log.",
        "",
        store.as_ref().map_or(0, |s| s.epoch()) as f64,
    );
    if let Some(d) = app.disk_report() {
        gauge(
            "vigil_disk_free_bytes",
            "Free bytes on the data directory's file system.",
            "",
            d.free_bytes as f64,
        );
        gauge(
            "vigil_disk_reserve_bytes",
            "Free bytes below which client writes are refused (507).",
            "",
            d.reserve_bytes as f64,
        );
        gauge(
            "vigil_disk_writable",
            "1 while client writes fit above the disk reserve.",
            "",
            f64::from(u8::from(d.writable)),
        );
        gauge(
            "vigil_disk_growth_bytes_per_second",
            "How fast free disk space shrinks, over the last minutes.",
            "",
            d.growth_bytes_per_second,
        );
        if let Some(s) = d.seconds_to_reserve {
            gauge(
                "vigil_disk_seconds_to_reserve",
                "At the current growth, seconds until writes stop at the reserve.",
                "",
                s,
            );
        }
    }
    if let Some(Ok(s)) = store.as_ref().map(|s| s.stats()) {
        gauge(
            "vigil_log_bytes",
            "Bytes of log data on disk.",
            "",
            s.log_bytes as f64,
        );
        gauge(
            "vigil_resource_versions",
            "Resource versions stored.",
            "",
            s.versions as f64,
        );
    }
    if let Some(l) = app
        .replication
        .as_ref()
        .and_then(|r| r.cluster())
        .map(|c| c.status())
    {
        gauge(
            "vigil_is_leader",
            "1 on the node that may acknowledge writes now.",
            "",
            f64::from(u8::from(l.may_write)),
        );
        gauge(
            "vigil_lease_renewals_total",
            "Lease rounds that reached a majority.",
            "",
            l.lease_renewals as f64,
        );
        gauge(
            "vigil_lease_lapses_total",
            "Times the lease lapsed and writes were fenced.",
            "",
            l.lease_lapses as f64,
        );
        gauge(
            "vigil_elections_won_total",
            "Epochs this node won.",
            "",
            l.elections_won as f64,
        );
    }
    if let Some(r) = &app.replication {
        let st = r.node().map(|n| n.status()).unwrap_or_default();
        for f in &st.followers {
            let l = format!("{{follower=\"{}\"}}", f.node);
            gauge(
                "vigil_follower_received_lsn",
                "Highest LSN the follower received.",
                &l,
                f.received as f64,
            );
            gauge(
                "vigil_follower_durable_lsn",
                "Highest LSN the follower fsynced.",
                &l,
                f.durable as f64,
            );
            gauge(
                "vigil_follower_applied_lsn",
                "Highest LSN the follower indexed.",
                &l,
                f.applied as f64,
            );
            gauge(
                "vigil_follower_lag_lsns",
                "LSNs the follower lacks durably.",
                &l,
                f.lag_lsns as f64,
            );
            gauge(
                "vigil_follower_lag_seconds",
                "Age of the oldest write the follower lacks.",
                &l,
                f.lag_seconds,
            );
            gauge(
                "vigil_follower_eligible",
                "1 if the follower is within max_lag.",
                &l,
                f64::from(u8::from(f.eligible)),
            );
            gauge(
                "vigil_follower_connected",
                "1 while a session is open.",
                &l,
                f64::from(u8::from(f.connected)),
            );
            gauge(
                "vigil_replication_bytes_sent_total",
                "Log bytes shipped.",
                &l,
                f.bytes_sent as f64,
            );
            gauge(
                "vigil_replication_raw_bytes_sent_total",
                "Uncompressed resource bytes in what was shipped.",
                &l,
                f.raw_bytes_sent as f64,
            );
            if f.raw_bytes_sent > 0 {
                gauge(
                    "vigil_replication_compression_ratio",
                    "Log bytes shipped per uncompressed resource byte.",
                    &l,
                    f.bytes_sent as f64 / f.raw_bytes_sent as f64,
                );
            }
            gauge(
                "vigil_replication_chunks_sent_total",
                "Frames messages shipped.",
                &l,
                f.chunks_sent as f64,
            );
            gauge(
                "vigil_replication_refetches_total",
                "Chunks sent again after failing checks.",
                &l,
                f.refetches as f64,
            );
            gauge(
                "vigil_replication_sessions_total",
                "Sessions opened.",
                &l,
                f.sessions as f64,
            );
        }
        if let Some(u) = &st.upstream {
            gauge(
                "vigil_upstream_leader_lsn",
                "The leader's last LSN as last heard.",
                "",
                u.leader_lsn as f64,
            );
            gauge(
                "vigil_upstream_durable_lsn",
                "Highest LSN fsynced here.",
                "",
                u.durable as f64,
            );
            gauge(
                "vigil_upstream_lag_lsns",
                "LSNs behind the leader.",
                "",
                u.lag_lsns as f64,
            );
            gauge(
                "vigil_upstream_connected",
                "1 while frames flow.",
                "",
                f64::from(u8::from(u.connected)),
            );
            gauge(
                "vigil_upstream_reconnects_total",
                "Connections lost.",
                "",
                u.disconnects as f64,
            );
            gauge(
                "vigil_upstream_checksum_failures_total",
                "Chunks that failed checks on receipt.",
                "",
                u.checksum_failures as f64,
            );
            gauge(
                "vigil_upstream_bytes_received_total",
                "Log bytes received.",
                "",
                u.bytes_received as f64,
            );
        }
    }
    let h = &app.commit_latency;
    let _ = writeln!(
        m,
        "# HELP vigil_commit_seconds Time to acknowledge a write.\n# TYPE vigil_commit_seconds histogram"
    );
    for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
        let _ = writeln!(
            m,
            "vigil_commit_seconds_bucket{{le=\"{b}\"}} {}",
            h.buckets[i].load(Ordering::Relaxed)
        );
    }
    let count = h.count.load(Ordering::Relaxed);
    let _ = writeln!(m, "vigil_commit_seconds_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(
        m,
        "vigil_commit_seconds_sum {}\nvigil_commit_seconds_count {count}",
        h.sum_us.load(Ordering::Relaxed) as f64 / 1e6
    );
    let mut resp = m.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}
