//! The HTTP server: every route, the health probes, the store watcher,
//! and running it all until a signal.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, OriginalUri, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::app::{App, ServeError};
use crate::config::Config;
use crate::http::outcome::FhirError;
use crate::{capability, history, interactions, search, transaction};

/// Every route of the FHIR REST API.
pub fn router(app: Arc<App>) -> Router {
    let limit = app.config.max_body_bytes;
    let collection = get(search::search_get)
        .post(interactions::create)
        .put(crate::conditional::conditional_update)
        .delete(crate::conditional::conditional_delete)
        .patch(crate::patch::conditional_patch);
    let instance = get(interactions::read)
        .put(interactions::update)
        .delete(interactions::delete)
        .patch(crate::patch::patch);
    let router = Router::new()
        .route("/metadata", get(capability::metadata))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/health/leader", get(leader))
        .route("/status", get(crate::replication::http::status))
        .route("/metrics", get(crate::replication::http::metrics))
        .route("/admin/switchover", post(crate::admin::switchover))
        .route("/admin/drill/crash", post(crate::admin::drill_crash))
        .route("/admin/keys", get(crate::admin::keys))
        .route("/admin/keys/rewrap", post(crate::admin::keys_rewrap))
        .route("/admin/backup", post(crate::admin::backup))
        .route(
            "/admin/promote",
            get(crate::admin::loss_estimate).post(crate::admin::promote),
        )
        .route("/", get(search::system_get).post(transaction::bundle))
        .route("/_search", post(search::system_post))
        .route(
            "/$export",
            get(crate::export::system).post(crate::export::system_post),
        )
        .route(
            "/{type}/$export",
            get(crate::export::by_type).post(crate::export::by_type_post),
        )
        .route(
            "/{type}/{id}/$export",
            get(crate::export::by_type).post(crate::export::by_type_post),
        )
        .route(
            "/.well-known/smart-configuration",
            get(crate::http::smart::well_known),
        )
        .route(
            crate::http::tokens::TOKEN_PATH,
            post(crate::http::smart::token),
        )
        .route(
            "/{type}/$validate",
            post(crate::validate::operation::type_level),
        )
        .route(
            "/{type}/{id}/$validate",
            post(crate::validate::operation::instance_level),
        )
        .route(
            "/{type}/$everything",
            get(search::everything::type_get).post(search::everything::type_post),
        )
        .route(
            "/{type}/{id}/$everything",
            get(search::everything::instance_get).post(search::everything::instance_post),
        )
        .route(
            "/$export-status/{id}",
            get(crate::export::status).delete(crate::export::cancel),
        )
        .route("/$export-file/{id}/{file}", get(crate::export::file))
        .route("/$reindex", post(crate::reindex::start_system))
        .route("/$reindex/{id}", get(crate::reindex::show))
        .route("/{type}/$reindex", post(crate::reindex::start_type))
        .route("/_history", get(history::system))
        .route("/{type}", collection.clone())
        // A trailing slash names the same collection or resource.
        .route("/{type}/", collection)
        .route("/{type}/{id}/", instance.clone())
        .route("/{type}/_search", post(search::search_post))
        .route("/{type}/_history", get(history::of_type))
        .route("/{type}/{id}", instance)
        .route("/{type}/{id}/_history", get(history::instance))
        .route("/{type}/{id}/_search", post(search::compartment_post))
        .route("/{type}/{id}/{compartment}", get(search::compartment_get))
        .route(
            "/{type}/{id}/{compartment}/_search",
            post(search::compartment_type_post),
        )
        .route("/{type}/{id}/_history/{vid}", get(interactions::vread))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::replication::http::sync_reads_layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::replication::http::follower_layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::keywatch::layer,
        ));
    let router = match app.auth.clone() {
        Some(auth) => router.layer(axum::middleware::from_fn_with_state(
            auth,
            crate::http::auth::layer,
        )),
        None => router,
    };
    // Outermost: every response, errors and refusals included, carries
    // the request id; CORS outside authorisation (a preflight carries no
    // credentials).
    router
        .layer(crate::http::context::EdgeLayer::new(app.clone()))
        .with_state(app)
}

async fn live() -> Response {
    crate::http::json_response(StatusCode::OK, br#"{"status":"live"}"#.to_vec())
}

/// `GET /health/ready`: 200 when this node serves reads and takes writes
/// (a follower: forwards them); 503 when the store is not open, or when
/// its disk is below the reserve, so a load balancer stops sending writes
/// there (reads still work: `"reads": true`). With `?max_lag_ms=N`, a
/// follower is ready only while it hears its leader and is at most N ms of
/// commit time behind it (a load balancer's check for routing reads).
async fn ready(
    State(app): State<Arc<App>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let store = match app.store() {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    if let Some(limit) = q.get("max_lag_ms") {
        let Ok(limit) = limit.parse::<u64>() else {
            return FhirError::invalid(format!(
                "max_lag_ms must be a whole number of milliseconds, not {limit:?}"
            ))
            .into_response();
        };
        if let Some(lagging) = lag_beyond(&app, limit) {
            return crate::http::json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::to_vec(&lagging).unwrap_or_default(),
            );
        }
    }
    if let Some(why) = app.key_gate.withdrawn() {
        let body = serde_json::json!({
            "status": "key-withdrawn",
            "reads": false,
            "reason": crate::keywatch::refusal(
                app.config.encryption.kek.as_deref().unwrap_or(""),
                &why
            )
            .to_string(),
        });
        return crate::http::json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::to_vec(&body).unwrap_or_default(),
        );
    }
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

/// Why this node is not within `limit_ms` of its leader, if it is not: a
/// follower that does not hear its leader, or lags more. A leader or a
/// standalone server is never behind.
fn lag_beyond(app: &App, limit_ms: u64) -> Option<serde_json::Value> {
    let r = app.replication.as_ref()?;
    if r.is_leader() {
        return None;
    }
    let view = r.node().and_then(|n| n.leader_view());
    let (connected, lag_s) = view
        .as_ref()
        .map_or((false, f64::INFINITY), |v| (v.connected, v.lag_seconds));
    let lag_ms = lag_s * 1000.0;
    if connected && lag_ms <= limit_ms as f64 {
        return None;
    }
    Some(serde_json::json!({
        "status": "lagging",
        "reads": true,
        "connected": connected,
        "lag_ms": if lag_ms.is_finite() { serde_json::json!(lag_ms.round() as u64) } else { serde_json::Value::Null },
        "reason": if connected {
            format!("{:.0} ms behind the leader, more than max_lag_ms={limit_ms}", lag_ms)
        } else {
            "not connected to the leader: how far behind it is cannot be known".to_owned()
        },
    }))
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
    if app.config.validation != crate::validate::Mode::Off {
        // The R4 schema is read and compiled once; not on the first write.
        std::thread::spawn(crate::validate::warm);
    }
    if let Some(rc) = app.config.replication.clone()
        && let Some(cc) = rc.cluster_config(
            &app.base,
            &app.config.data,
            App::store_options(&app.config)?,
        )
    {
        let cluster = vigil_net::runtime::cluster::Cluster::start(cc).await?;
        app.replication = Some(crate::replication::Replication::with_cluster(cluster, rc));
    } else if let Some(rc) = app.config.replication.clone() {
        let Some(store) = app.own_store() else {
            return Err(ServeError::Replication(
                vigil_net::runtime::error::NetError::Config("no store".into()),
            ));
        };
        let node = vigil_net::runtime::node::Node::start(store, rc.node_config(&app.base)).await?;
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
    let reindex = tokio::spawn(crate::reindex::worker(app.clone()));
    let disk = tokio::spawn(watch_disk(app.clone()));
    let keys = tokio::spawn(crate::keywatch::watch(app.clone()));
    let archive = tokio::spawn(crate::archiving::watch(app.clone()));
    let backups = tokio::spawn(crate::archiving::backups::schedule(app.clone()));
    tracing::info!(addr = %bound, data = %app.config.data.display(), "vigil serving FHIR R4");
    on_ready(bound);
    axum::serve(listener, router(app.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    exports.abort();
    let _ = exports.await;
    reindex.abort();
    let _ = reindex.await;
    disk.abort();
    let _ = disk.await;
    keys.abort();
    let _ = keys.await;
    archive.abort();
    backups.abort();
    let _ = archive.await;
    app.archive.finish().await;
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
            .is_none_or(|t| t.elapsed() >= crate::config::replication::DISK_FULL_SWITCHOVER_RETRY);
        if r.config.on_disk_full == crate::config::replication::OnDiskFull::Switchover
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
                    crate::config::replication::DISK_FULL_SWITCHOVER_RETRY.as_secs()
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
