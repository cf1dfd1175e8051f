//! Revocation while running: the `[encryption]` key-encryption key is
//! opened again every `check_interval_ms` (the key file read anew, the
//! token logged into anew) and must still unwrap the store's newest data
//! key. When it cannot — the key revoked, the file gone, the module
//! unreachable — the node stops serving FHIR requests (503 naming the key;
//! nothing is read or written, nothing lost), `/health/ready` answers 503,
//! and a leader under automatic failover hands leadership to its follower
//! (whose region's key is its own). When the key answers again, the node
//! serves again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::http::outcome::FhirError;

/// How often a leader whose key is withdrawn tries to hand over again.
const SWITCHOVER_RETRY: Duration = Duration::from_secs(30);

pub mod gate;

pub use gate::KeyGate;

/// The 503 every FHIR request gets while the key is withdrawn.
pub fn refusal(kek: &str, why: &str) -> FhirError {
    FhirError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "transient",
        format!(
            "the key-encryption key {kek} cannot be used ({why}): this node neither reads nor writes until it can; nothing was changed"
        ),
    )
}

/// Refuses FHIR requests while the key is withdrawn; health, status,
/// metrics and the operator endpoints still answer.
pub async fn layer(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let exempt = path.starts_with("/health")
        || path.starts_with("/admin")
        || path == "/status"
        || path == "/metrics"
        || path == "/metadata";
    match app.key_gate.withdrawn() {
        Some(why) if !exempt => {
            refusal(app.config.encryption.kek.as_deref().unwrap_or(""), &why).into_response()
        }
        _ => next.run(req).await,
    }
}

/// Checks the key every `check_interval_ms` while the server runs.
pub async fn watch(app: Arc<App>) {
    if app.config.encryption.kek.is_none() {
        return;
    }
    let every = Duration::from_millis(app.config.encryption.check_interval_ms);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_switchover: Option<Instant> = None;
    loop {
        tick.tick().await;
        let Ok(store) = app.store() else { continue };
        let encryption = app.config.encryption.clone();
        let was = app.key_gate.withdrawn();
        let was_withdrawn = was.is_some();
        let checked = tokio::task::spawn_blocking(move || {
            let kek = encryption
                .open_kek()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "no key is named".to_owned())?;
            store.check_kek(kek.as_ref()).map_err(|e| e.to_string())?;
            if was_withdrawn {
                // The store's own handle on the key may be from before it
                // went (a module initialised again ends its sessions):
                // the store takes this one (a re-wrap with nothing to
                // re-wrap, unless the key gained a version meanwhile).
                store
                    .rewrap_data_keys(kek)
                    .map_err(|e| format!("taking the key again: {e}"))?;
            }
            Ok::<(), String>(())
        })
        .await
        .unwrap_or_else(|e| Err(format!("the check's task failed: {e}")));
        match checked {
            Ok(()) => {
                if was.is_some() {
                    tracing::warn!("the key-encryption key answers again: serving again");
                    app.key_gate.set(None);
                }
            }
            Err(why) => {
                if was.is_none() {
                    tracing::error!(
                        "the key-encryption key cannot be used: no FHIR request is served until it can: {why}"
                    );
                }
                app.key_gate.set(Some(why));
                // The next check looks for the key anew (a token that
                // comes back is found only by a module initialised again).
                let encryption = app.config.encryption.clone();
                let _ = tokio::task::spawn_blocking(move || encryption.reconnect_kek()).await;
                hand_over(&app, &mut last_switchover).await;
            }
        }
    }
}

/// A leader whose key is withdrawn hands leadership to its follower
/// (zero loss: the follower first holds every write).
async fn hand_over(app: &App, last: &mut Option<Instant>) {
    let Some(cluster) = app.replication.as_ref().and_then(|r| r.cluster()) else {
        return;
    };
    if !cluster.is_leader() || last.is_some_and(|t| t.elapsed() < SWITCHOVER_RETRY) {
        return;
    }
    *last = Some(Instant::now());
    match cluster.switchover().await {
        Ok(rep) => tracing::warn!(
            new_leader = %rep.new_leader,
            handover_ms = rep.handover_ms,
            "leadership handed over: this node's key-encryption key cannot be used"
        ),
        Err(e) => tracing::error!(
            "this node's key-encryption key cannot be used and the switchover failed (tried again in {} s): {e}",
            SWITCHOVER_RETRY.as_secs()
        ),
    }
}
