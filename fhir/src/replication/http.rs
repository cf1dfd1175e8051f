//! What HTTP sees of replication: a follower that answers reads itself
//! (saying how far behind it is) and forwards writes to its leader, reads
//! held on a synchronous leader until the follower has what they saw, and
//! the `/status` and `/metrics` endpoints.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Full};

use vigil_net::runtime::replicated::CommitError;

use super::Replication;
use crate::app::App;
use crate::http::outcome::FhirError;

/// The response header giving a follower's replication lag, in seconds of
/// commit time, with the LSNs behind in `Vigil-Replication-Lag-Lsns`.
pub const LAG_HEADER: &str = "vigil-replication-lag";
/// LSNs a follower is behind its leader.
pub const LAG_LSNS_HEADER: &str = "vigil-replication-lag-lsns";
/// How long a forwarded write may take at the leader.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);

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
        return FhirError::from(CommitError::ChangingRole).into_response();
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
    let e = FhirError::unavailable(
        format!(
            "synchronous replication: no follower confirmed lsn {seen} within {} ms, so this read cannot be answered yet",
            r.config.sync_timeout_ms
        ),
        1,
    );
    e.into_response()
}

fn is_read(method: &Method, path: &str) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || (*method == Method::POST
            && (path.ends_with("/_search") || path.ends_with("/$everything")))
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
        let e = FhirError::unavailable(
            "this node is a follower and has not reached its leader yet; retry",
            1,
        );
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
        FhirError::unavailable(
            format!("this follower could not reach its leader at {leader}: {why}"),
            1,
        )
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
        if let Some(obj) = b.as_object_mut() {
            obj.insert("reindex".into(), crate::reindex::status(&app));
            if let Some(a) = app.archive.status() {
                let mut v = serde_json::to_value(&a)?;
                if let Some(o) = v.as_object_mut() {
                    let (lsns, age) = archive_lag(&a, store.as_deref());
                    o.insert("lag_lsns".into(), lsns.into());
                    o.insert("lag_seconds".into(), age.into());
                }
                obj.insert("archive".into(), v);
            }
            if let Some(b) = app.archive.backup_status() {
                obj.insert("backups".into(), serde_json::to_value(&b)?);
            }
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
        "Last visible LSN of this node: durable, indexed, and readable.",
        "",
        store.as_ref().map_or(0, |s| s.last_lsn()) as f64,
    );
    gauge(
        "vigil_epoch",
        "Epoch of this node's log.",
        "",
        store.as_ref().map_or(0, |s| s.epoch()) as f64,
    );
    if let Some(a) = app.archive.status() {
        let (lsns, age) = archive_lag(&a, store.as_deref());
        gauge(
            "vigil_archive_lsn",
            "Newest LSN in the log archive as this node knows it.",
            "",
            a.archived_lsn as f64,
        );
        gauge(
            "vigil_archive_lag_lsns",
            "Durable LSNs not yet in the log archive (while this node archives).",
            "",
            lsns as f64,
        );
        gauge(
            "vigil_archive_lag_seconds",
            "Age of the oldest durable write not yet in the log archive; 0 when all is archived.",
            "",
            age,
        );
        gauge(
            "vigil_archive_errors",
            "Failed archive rounds since the archive task started.",
            "",
            a.errors as f64,
        );
        gauge(
            "vigil_archive_active",
            "1 while this node archives its log.",
            "",
            f64::from(u8::from(a.active)),
        );
    }
    if let Some(b) = app.archive.backup_status() {
        gauge(
            "vigil_backup_lsn",
            "LSN the newest base backup's index ends at, as this node knows it.",
            "",
            b.last_lsn as f64,
        );
        let age = match b.last_taken_us {
            0 => -1.0,
            t => crate::archiving::backups::age_seconds(t),
        };
        gauge(
            "vigil_backup_age_seconds",
            "Age of the newest base backup; -1 when there is none.",
            "",
            age,
        );
        gauge(
            "vigil_backup_errors",
            "Failed base backups or prunes since the node started.",
            "",
            b.errors as f64,
        );
    }
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
    app.commit_latency.render(&mut m);
    let mut resp = m.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

/// How far the archive trails the log: LSNs, and the age of the oldest
/// write not yet archived (0 when everything is).
fn archive_lag(
    a: &vigil_net::archive::ArchiveStatus,
    store: Option<&vigil_engine::Store>,
) -> (u64, f64) {
    let Some(store) = store.filter(|_| a.active) else {
        return (0, 0.0);
    };
    let lsns = store.log_end().lsn.saturating_sub(a.archived_lsn);
    if lsns == 0 {
        return (0, 0.0);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    // The oldest write not yet archived: what a loss of the region now
    // would take with it beyond the archive.
    let oldest = store
        .frame_at(a.archived_lsn + 1)
        .ok()
        .flatten()
        .map_or(a.archived_time_us, |h| h.timestamp_us);
    (lsns, now.saturating_sub(oldest) as f64 / 1e6)
}
