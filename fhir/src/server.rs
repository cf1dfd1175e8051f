//! The HTTP server: state, routes, and running it until a signal.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, OriginalUri, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use vigil_engine::{Batch, Committed, Options, Store};

use crate::config::Config;
use crate::outcome::FhirError;
use crate::{capability, history, interactions, search, transaction};

/// What every handler shares.
pub struct App {
    /// The store of a standalone server or a static role (see
    /// [`App::store`]); a standalone server's is briefly absent while
    /// [`App::recover_store`] reopens it.
    store: std::sync::RwLock<Option<Arc<Store>>>,
    /// The configuration the server runs with.
    pub config: Config,
    /// Base URL for links, without a trailing slash.
    pub base: String,
    /// Bearer-token checks, when configured.
    pub auth: Option<crate::auth::Authenticator>,
    /// Replication, when configured (started by [`run`]).
    pub replication: Option<crate::replication::Replication>,
    /// Time to acknowledge writes, for `/metrics`.
    pub commit_latency: crate::replication::CommitLatency,
    /// When each export job was last polled (429 when too often).
    pub export_polls: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Wakes the export worker at once when a job is accepted.
    pub export_wake: tokio::sync::Notify,
    /// Free-space samples of the data directory (growth rate, warnings).
    pub disk: crate::disk::DiskWatch,
}

impl App {
    /// Opens the store the configuration names (under automatic failover
    /// the failover loop opens it: see [`run`]).
    pub fn open(config: Config) -> Result<Self, ServeError> {
        let auth = crate::auth::Authenticator::from_config(&config.auth)?;
        let opts = Self::store_options(&config);
        let store = if config.replication.as_ref().is_some_and(|r| r.is_auto()) {
            None
        } else {
            Some(Arc::new(Store::open_with(&config.data, opts)?))
        };
        Ok(Self {
            store: std::sync::RwLock::new(store),
            base: config.base(),
            config,
            auth,
            replication: None,
            commit_latency: Default::default(),
            export_polls: Default::default(),
            export_wake: tokio::sync::Notify::new(),
            disk: Default::default(),
        })
    }

    /// The data directory's free space now, with the growth rate from the
    /// samples; `None` while no store is open or it cannot be measured.
    pub fn disk_report(&self) -> Option<crate::disk::DiskReport> {
        let space = self.store().ok()?.disk_space().ok()?;
        Some(self.disk.report(std::time::Instant::now(), space))
    }

    /// This node's name in its cluster (`standalone` without replication).
    pub fn node_name(&self) -> String {
        self.replication
            .as_ref()
            .map_or_else(|| "standalone".into(), |r| r.config.node.clone())
    }

    /// How the configuration says to open the store.
    pub fn store_options(config: &Config) -> Options {
        Options {
            resource_bytes_max: config.max_resource_bytes,
            key_buffer_entries: config.search_key_buffer_entries,
            disk_reserve_bytes: config.disk_reserve_bytes,
            extractor: Arc::new(search::SearchKeys),
            replica: config.replication.as_ref().is_some_and(|r| r.is_follower()),
            ..Options::default()
        }
    }

    /// The store now. Under automatic failover it is briefly absent while a
    /// rejoin cuts the log: 503 with Retry-After then.
    pub fn store(&self) -> Result<Arc<Store>, FhirError> {
        if let Some(s) = self.own_store() {
            return Ok(s);
        }
        let why = if self.replication.is_none() {
            "the store stopped after a disk failure and is being reopened; retry"
        } else {
            "this node is rejoining its cluster; retry"
        };
        self.replication
            .as_ref()
            .and_then(|r| r.cluster())
            .and_then(|c| c.store())
            .ok_or_else(|| {
                FhirError::new(StatusCode::SERVICE_UNAVAILABLE, "transient", why)
                    .with_retry_after(1)
            })
    }

    fn own_store(&self) -> Option<Arc<Store>> {
        self.store.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A standalone server's store that stopped (an fsync, index commit or
    /// search-key write failed, the disk full) is closed and reopened once
    /// its file system has room again, so writes resume with no restart and
    /// no operator: the reopen recovers from what the log holds, and every
    /// acknowledged write is in it. Requests meanwhile get 503 with
    /// Retry-After. Returns whether the store was reopened now. Under
    /// automatic failover the cluster does it (a leader steps down first,
    /// see `Cluster::recover_store`); a static replication role is left
    /// stopped, for its operator or service manager to restart.
    pub async fn recover_store(&self) -> bool {
        if let Some(r) = &self.replication {
            return match r.cluster() {
                Some(c) => c.recover_store().await,
                None => false,
            };
        }
        if let Some(store) = self.own_store() {
            let Some(why) = store.stopped() else {
                return false;
            };
            if store.disk_space().is_ok_and(|d| !d.writable()) {
                return false; // no room yet: reopening would stop again
            }
            tracing::warn!("the store stopped ({why}); reopening it");
            *self.store.write().unwrap_or_else(|p| p.into_inner()) = None;
            let deadline = std::time::Instant::now() + STORE_RELEASE_TIMEOUT;
            let mut store = store;
            loop {
                match Arc::try_unwrap(store) {
                    Ok(s) => {
                        let _ = tokio::task::spawn_blocking(move || s.close()).await;
                        break;
                    }
                    Err(s) if std::time::Instant::now() < deadline => {
                        store = s;
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    // Requests still hold it: it closes when they end,
                    // and the open below (or the next try) follows.
                    Err(_) => break,
                }
            }
        }
        let (data, opts) = (self.config.data.clone(), Self::store_options(&self.config));
        match tokio::task::spawn_blocking(move || Store::open_with(&data, opts)).await {
            Ok(Ok(store)) => {
                *self.store.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(store));
                tracing::warn!("the store is open again: writes resume");
                true
            }
            Ok(Err(e)) => {
                tracing::error!("cannot reopen the store (tried again in a second): {e}");
                false
            }
            Err(e) => {
                tracing::error!("reopening the store failed: {e}");
                false
            }
        }
    }
}

/// How long a reopen waits for requests still using the stopped store.
const STORE_RELEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Operations above which a batch is prepared (compressed, indexed) on a
/// blocking thread rather than on the async worker.
const INLINE_PREPARE_OPS_MAX: usize = 16;

/// Commits a batch without parking a thread while the fsync runs: the
/// engine calls back when the frame is durable. Large batches are prepared
/// on a blocking thread so that compression does not stall the runtime.
pub async fn commit(app: &App, batch: Batch) -> Result<Committed, FhirError> {
    let started = std::time::Instant::now();
    let _admitted = crate::replication::admit_write(app)?;
    let committed = commit_locally(app, batch).await?;
    crate::replication::after_commit(app, committed.last_lsn).await?;
    crate::replication::before_ack(app)?;
    app.commit_latency.observe(started.elapsed());
    Ok(committed)
}

async fn commit_locally(app: &App, batch: Batch) -> Result<Committed, FhirError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let done = move |r: vigil_engine::Result<Committed>| {
        let _ = tx.send(r);
    };
    let store = app.store()?;
    if batch.ops.len() > INLINE_PREPARE_OPS_MAX {
        tokio::task::spawn_blocking(move || store.commit_with(batch, done))
            .await
            .map_err(|e| FhirError::internal(format!("commit task failed: {e}")))??;
    } else {
        store.commit_with(batch, done)?;
    }
    rx.await
        .map_err(|_| FhirError::from(vigil_engine::Error::Closed))?
        .map_err(FhirError::from)
}

/// Every route of the FHIR REST API.
pub fn router(app: Arc<App>) -> Router {
    let limit = app.config.max_body_bytes;
    Router::new()
        .route("/metadata", get(capability::metadata))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/health/leader", get(leader))
        .route("/status", get(crate::replication::status))
        .route("/metrics", get(crate::replication::metrics))
        .route("/admin/switchover", post(crate::admin::switchover))
        .route("/admin/drill/crash", post(crate::admin::drill_crash))
        .route(
            "/admin/promote",
            get(crate::admin::loss_estimate).post(crate::admin::promote),
        )
        .route("/", post(transaction::bundle))
        .route("/$export", get(crate::export::system))
        .route("/{type}/$export", get(crate::export::by_type))
        .route("/{type}/{id}/$export", get(crate::export::by_type))
        .route(
            "/$export-status/{id}",
            get(crate::export::status).delete(crate::export::cancel),
        )
        .route("/$export-file/{id}/{file}", get(crate::export::file))
        .route("/_history", get(history::system))
        .route(
            "/{type}",
            get(search::search_get)
                .post(interactions::create)
                .put(crate::conditional::conditional_update)
                .delete(crate::conditional::conditional_delete),
        )
        .route("/{type}/_search", post(search::search_post))
        .route("/{type}/_history", get(history::of_type))
        .route(
            "/{type}/{id}",
            get(interactions::read)
                .put(interactions::update)
                .delete(interactions::delete)
                .patch(crate::patch::patch),
        )
        .route("/{type}/{id}/_history", get(history::instance))
        .route("/{type}/{id}/_history/{vid}", get(interactions::vread))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::replication::sync_reads_layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::replication::follower_layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::auth::layer,
        ))
        .with_state(app)
}

async fn live() -> Response {
    crate::http::json_response(StatusCode::OK, br#"{"status":"live"}"#.to_vec())
}

/// `GET /health/ready`: 200 when this node serves reads and takes writes
/// (a follower: forwards them); 503 when the store is not open, or when
/// its disk is below the reserve, so a load balancer stops sending writes
/// there (reads still work: `"reads": true`).
async fn ready(State(app): State<Arc<App>>) -> Response {
    let store = match app.store() {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    if let Some(why) = store.stopped() {
        let body = serde_json::json!({
            "status": "stopped",
            "reads": false,
            "reason": format!("the store stopped and reopens once its disk has room: {why}"),
        });
        return crate::http::json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::to_vec(&body).unwrap_or_default(),
        );
    }
    if let Err(e) = store.stats() {
        return FhirError::from(e).into_response();
    }
    match app.disk_report() {
        Some(d) if !d.writable => {
            let body = serde_json::json!({
                "status": "writes-unavailable",
                "reads": true,
                "reason": format!(
                    "the disk is full: {} bytes free, client writes stop at the reserve of {} bytes",
                    d.free_bytes, d.reserve_bytes
                ),
                "disk": d,
            });
            crate::http::json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::to_vec(&body).unwrap_or_default(),
            )
        }
        _ => crate::http::json_response(StatusCode::OK, br#"{"status":"ready"}"#.to_vec()),
    }
}

/// `GET /health/leader`: 200 only on the node that takes writes (a
/// standalone server or a replication leader), 503 on a follower, so a
/// load balancer or DNS health check routes clients to the leader.
async fn leader(State(app): State<Arc<App>>) -> Response {
    let fenced = app
        .replication
        .as_ref()
        .and_then(|r| r.cluster())
        .and_then(|c| c.still_leading().err());
    let store = app.store().ok();
    match &app.replication {
        Some(r) if !r.is_leader() || fenced.is_some() => {
            let body = serde_json::json!({
                "status": if r.is_leader() { "fenced" } else { "follower" },
                "leader": r.node().and_then(|n| n.leader_http()),
            });
            crate::http::json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::to_vec(&body).unwrap_or_default(),
            )
        }
        _ if store.as_ref().is_none_or(|s| s.is_read_only()) => crate::http::json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"status":"read-only"}"#.to_vec(),
        ),
        _ if store.as_ref().is_some_and(|s| s.stopped().is_some()) => crate::http::json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"status":"stopped"}"#.to_vec(),
        ),
        // A leader that cannot write is no place to send writes.
        _ if store
            .as_ref()
            .and_then(|s| s.disk_space().ok())
            .is_some_and(|d| !d.writable()) =>
        {
            crate::http::json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                br#"{"status":"disk-full"}"#.to_vec(),
            )
        }
        _ => crate::http::json_response(StatusCode::OK, br#"{"status":"leader"}"#.to_vec()),
    }
}

async fn unknown_route(OriginalUri(uri): OriginalUri) -> FhirError {
    FhirError::not_found(format!("no FHIR interaction at {}", uri.path()))
}

async fn wrong_method(method: Method, OriginalUri(uri): OriginalUri) -> FhirError {
    FhirError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "not-supported",
        format!("{method} is not supported on {}", uri.path()),
    )
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store would not open.
    #[error("cannot open the store: {0}")]
    Store(#[from] vigil_engine::Error),
    /// Authorisation is misconfigured.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthSetupError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    /// Replication could not start.
    #[error("replication: {0}")]
    Replication(#[from] vigil_net::node::NetError),
}

/// Runs the server until SIGINT or SIGTERM; in-flight requests finish and
/// the store closes cleanly. Calls `on_ready` with the bound address.
pub async fn run(
    config: Config,
    on_ready: impl FnOnce(std::net::SocketAddr),
) -> Result<(), ServeError> {
    let addr = config.http;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener.local_addr()?;
    let mut config = config;
    config.http = bound;
    let mut app = App::open(config)?;
    if let Some(rc) = app.config.replication.clone()
        && let Some(cc) =
            rc.cluster_config(&app.base, &app.config.data, App::store_options(&app.config))
    {
        let cluster = vigil_net::cluster::Cluster::start(cc).await?;
        app.replication = Some(crate::replication::Replication::with_cluster(cluster, rc));
    } else if let Some(rc) = app.config.replication.clone() {
        let Some(store) = app.own_store() else {
            return Err(ServeError::Replication(vigil_net::node::NetError::Config(
                "no store".into(),
            )));
        };
        let node = vigil_net::node::Node::start(store, rc.node_config(&app.base)).await?;
        tracing::info!(
            role = %rc.role,
            node = %rc.node,
            replication = ?node.local_addr(),
            "replication started"
        );
        app.replication = Some(crate::replication::Replication::new(node, rc));
    }
    let app = Arc::new(app);
    let exports = tokio::spawn(crate::export::worker(app.clone()));
    let disk = tokio::spawn(watch_disk(app.clone()));
    tracing::info!(addr = %bound, data = %app.config.data.display(), "vigil serving FHIR R4");
    on_ready(bound);
    axum::serve(listener, router(app.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    exports.abort();
    let _ = exports.await;
    disk.abort();
    let _ = disk.await;
    if let Some(r) = &app.replication {
        r.shutdown().await;
    }
    tracing::info!("shutting down: closing the store");
    drop(app);
    Ok(())
}

/// How often a stopped store is looked for (and reopened, see
/// [`App::recover_store`]).
const STORE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Samples the data directory's free space every few seconds (for the
/// growth rate in `/status`), logs when it runs low, hands leadership over
/// when configured to, and reopens a stopped standalone store.
async fn watch_disk(app: Arc<App>) {
    let mut tick = tokio::time::interval(STORE_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_switchover: Option<std::time::Instant> = None;
    let mut last_sample: Option<std::time::Instant> = None;
    loop {
        tick.tick().await;
        app.recover_store().await;
        if last_sample.is_some_and(|t| t.elapsed() < crate::disk::SAMPLE_INTERVAL) {
            continue;
        }
        last_sample = Some(std::time::Instant::now());
        let Some(space) = app.store().ok().and_then(|s| s.disk_space().ok()) else {
            continue;
        };
        app.disk.sample(
            std::time::Instant::now(),
            space,
            app.config.disk_warn_bytes(),
        );
        if space.writable() {
            continue;
        }
        // A full leader hands over when configured to (zero loss: the
        // follower must hold every write first).
        let Some(r) = &app.replication else { continue };
        let Some(cluster) = r.cluster() else { continue };
        let due = last_switchover
            .is_none_or(|t| t.elapsed() >= crate::replication::DISK_FULL_SWITCHOVER_RETRY);
        if r.config.on_disk_full == crate::replication::OnDiskFull::Switchover
            && cluster.is_leader()
            && due
        {
            last_switchover = Some(std::time::Instant::now());
            tracing::warn!(
                free_bytes = space.free_bytes,
                reserve_bytes = space.reserve_bytes,
                "the disk is full: handing leadership to the follower (on_disk_full = switchover)"
            );
            match cluster.switchover().await {
                Ok(rep) => {
                    tracing::warn!(new_leader = %rep.new_leader, handover_ms = rep.handover_ms, "leadership handed over: this node's disk is full")
                }
                Err(e) => tracing::error!(
                    "the disk is full and the switchover failed (tried again in {} s): {e}",
                    crate::replication::DISK_FULL_SWITCHOVER_RETRY.as_secs()
                ),
            }
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
