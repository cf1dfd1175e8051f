//! Operator endpoints under automatic failover: `POST /admin/switchover`
//! (on the leader; a follower forwards it there) and
//! `POST /admin/promote?force=true` (on a follower, when the witness is
//! gone), `GET /admin/keys` and `POST /admin/keys/rewrap` (encryption at
//! rest), `POST /admin/backup` (a base backup to object storage). All sit behind the server's authorisation like every route.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::app::App;
use crate::http::outcome::FhirError;

fn cluster(app: &App) -> Result<&Arc<vigil_net::runtime::cluster::Cluster>, FhirError> {
    app.replication
        .as_ref()
        .and_then(|r| r.cluster())
        .ok_or_else(|| {
            FhirError::new(
                StatusCode::CONFLICT,
                "not-supported",
                "this node does not run automatic failover (replication role = \"auto\")",
            )
        })
}

fn json(v: &impl serde::Serialize) -> Response {
    match serde_json::to_vec_pretty(v) {
        Ok(b) => crate::http::json_response(StatusCode::OK, b),
        Err(e) => FhirError::internal(e.to_string()).into_response(),
    }
}

/// `POST /admin/switchover`: moves leadership to the follower with zero
/// loss and answers with what it did (writes paused, in milliseconds).
pub async fn switchover(State(app): State<Arc<App>>) -> Response {
    let c = match cluster(&app) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    match c.switchover().await {
        Ok(report) => json(&report),
        Err(e) => FhirError::new(StatusCode::CONFLICT, "conflict", e.to_string()).into_response(),
    }
}

/// `POST /admin/drill/crash`: for `vigil drill` against a running cluster,
/// the node ends its process at once, as a crash would (no flush, no
/// goodbye). 403 unless `[drills] enabled = true` and the request carries
/// the configured token in `X-Vigil-Drill-Token`.
pub async fn drill_crash(State(app): State<Arc<App>>, headers: axum::http::HeaderMap) -> Response {
    let d = &app.config.drills;
    let given = headers
        .get("x-vigil-drill-token")
        .and_then(|v| v.to_str().ok());
    match (&d.token, given) {
        _ if !d.enabled => FhirError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "drills are not enabled on this node ([drills] enabled = true)",
        )
        .into_response(),
        (Some(want), Some(got)) if want == got => {
            tracing::error!("DRILL: crashing on request");
            tokio::spawn(async {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                std::process::abort();
            });
            crate::http::json_response(StatusCode::ACCEPTED, br#"{"status":"crashing"}"#.to_vec())
        }
        _ => FhirError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a drill needs the token set in [drills] token, in X-Vigil-Drill-Token",
        )
        .into_response(),
    }
}

/// Query of `POST /admin/promote`.
#[derive(Debug, Deserialize)]
pub struct PromoteQuery {
    /// Must be `true`: a promotion without the witness is never implicit.
    #[serde(default)]
    pub force: bool,
}

/// `GET /admin/promote`: the loss window a forced promotion would risk now.
pub async fn loss_estimate(State(app): State<Arc<App>>) -> Response {
    match cluster(&app) {
        Ok(c) => json(&c.loss_estimate()),
        Err(e) => e.into_response(),
    }
}

/// `POST /admin/promote?force=true`: leads without the witness.
pub async fn promote(State(app): State<Arc<App>>, Query(q): Query<PromoteQuery>) -> Response {
    let c = match cluster(&app) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if !q.force {
        return FhirError::invalid(
            "a promotion outside the automatic protocol needs force=true (it may lose the writes this node lacks)",
        )
        .into_response();
    }
    match c.force_promote().await {
        Ok(est) => json(&est),
        Err(e) => FhirError::new(StatusCode::CONFLICT, "conflict", e.to_string()).into_response(),
    }
}

/// What `GET /admin/keys` and `POST /admin/keys/rewrap` answer.
#[derive(Debug, serde::Serialize)]
struct KeysReport {
    /// The key-encryption key named in `[encryption]`.
    kek: String,
    /// Data keys re-wrapped by this request (rewrap only).
    #[serde(skip_serializing_if = "Option::is_none")]
    rewrapped: Option<usize>,
    /// Every data key of the store: id, creation, the KEK version.
    data_keys: Vec<DataKeyView>,
}

#[derive(Debug, serde::Serialize)]
struct DataKeyView {
    id: String,
    created: String,
    kek: String,
    kek_version: u32,
    current: bool,
}

fn keys_report(app: &App, rewrapped: Option<usize>) -> Result<KeysReport, FhirError> {
    let store = app.store()?;
    let keys = store.data_keys().ok_or_else(not_encrypted)?;
    Ok(KeysReport {
        kek: app.config.encryption.kek.clone().unwrap_or_default(),
        rewrapped,
        data_keys: keys
            .into_iter()
            .map(|k| DataKeyView {
                id: format!("{:016x}", k.id),
                created: crate::instant::format_instant(k.created_us),
                kek: k.kek,
                kek_version: k.kek_version,
                current: k.current,
            })
            .collect(),
    })
}

fn not_encrypted() -> FhirError {
    FhirError::new(
        StatusCode::CONFLICT,
        "not-supported",
        "the store is not encrypted ([encryption] kek is not set)",
    )
}

/// `GET /admin/keys`: the store's data keys and the KEK version each is
/// wrapped under (never a key).
pub async fn keys(State(app): State<Arc<App>>) -> Response {
    match keys_report(&app, None) {
        Ok(r) => json(&r),
        Err(e) => e.into_response(),
    }
}

/// `POST /admin/keys/rewrap`: opens the `[encryption]` key-encryption key
/// again (so a version added by `vigil keys rotate` is seen) and re-wraps
/// every data key not under its current version, rewriting only the
/// store's `data-keys` file while writes go on. A KEK that cannot be
/// opened or cannot wrap: 503, nothing changed.
pub async fn keys_rewrap(State(app): State<Arc<App>>) -> Response {
    let store = match app.store() {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    if store.data_keys().is_none() {
        return not_encrypted().into_response();
    }
    let encryption = app.config.encryption.clone();
    let done = tokio::task::spawn_blocking(move || {
        let kek = encryption
            .open_kek()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "[encryption] kek is not set".to_owned())?;
        store.rewrap_data_keys(kek).map_err(|e| e.to_string())
    })
    .await;
    let unavailable = |why: String| {
        FhirError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "transient",
            format!("the data keys were not re-wrapped (nothing changed): {why}"),
        )
        .into_response()
    };
    match done {
        Ok(Ok(n)) => match keys_report(&app, Some(n)) {
            Ok(r) => json(&r),
            Err(e) => e.into_response(),
        },
        Ok(Err(why)) => unavailable(why),
        Err(e) => unavailable(e.to_string()),
    }
}

/// `POST /admin/backup`'s query.
#[derive(Debug, Deserialize)]
pub struct BackupQuery {
    /// Where to (default: `[archive] url`).
    to: Option<String>,
}

/// `POST /admin/backup[?to=URL]`: takes a base backup of this node's
/// store now into `to` (default the `[archive] url`): the log pieces the
/// location lacks, then a copy of the index; then applies the
/// `[archive]` retention there. Answers with what it did. No location:
/// 400; a backup already under way here: 409; storage failing: 503.
pub async fn backup(State(app): State<Arc<App>>, Query(q): Query<BackupQuery>) -> Response {
    let Some(url) = q.to.or_else(|| app.config.archive.url.clone()) else {
        return FhirError::new(
            StatusCode::BAD_REQUEST,
            "required",
            "no backup location: give ?to=URL (s3://bucket/prefix, az://…, gs://…, file:///path) or set [archive] url",
        )
        .into_response();
    };
    let location = match vigil_net::archive::Location::parse(&url) {
        Ok(l) => l,
        Err(e) => {
            return FhirError::new(StatusCode::BAD_REQUEST, "value", e.to_string()).into_response();
        }
    };
    use crate::archiving::backups::{BackupError, take};
    match take(&app, &location).await {
        Ok(r) => json(&serde_json::json!({
            "name": r.name,
            "url": url,
            "lsn": r.lsn,
            "timestamp_us": r.timestamp_us,
            "pieces_uploaded": r.pieces,
            "log_bytes_uploaded": r.log_bytes,
            "index_files": r.files,
            "index_bytes": r.index_bytes,
        })),
        Err(BackupError::Busy) => FhirError::new(
            StatusCode::CONFLICT,
            "conflict",
            BackupError::Busy.to_string(),
        )
        .into_response(),
        Err(e) => FhirError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "transient",
            format!("the base backup was not taken: {e}"),
        )
        .into_response(),
    }
}
