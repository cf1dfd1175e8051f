//! Operator endpoints under automatic failover: `POST /admin/switchover`
//! (on the leader; a follower forwards it there) and
//! `POST /admin/promote?force=true` (on a follower, when the witness is
//! gone). Both sit behind the server's authorisation like every route.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::outcome::FhirError;
use crate::server::App;

fn cluster(app: &App) -> Result<&Arc<vigil_net::cluster::Cluster>, FhirError> {
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
