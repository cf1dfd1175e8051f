//! The continuous log archive of a serving node (`[archive] url`): while
//! this node leads (a standalone server always does), `vigil_net`'s
//! archiver uploads its durable log every `interval_ms`; when it stops
//! leading the archiver stops, and the node that leads next continues the
//! same archive. Its progress is in `/status` (`archive`) and `/metrics`
//! (`vigil_archive_*`). A shutdown uploads what is durable first. Base
//! backups beside it: [`backups`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use vigil_net::archive::{ArchiveConfig, ArchiveStatus, Archiver, Location};

use crate::app::App;

/// How often leadership and the store are looked at.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

pub mod backups;
pub mod view;

pub use view::ArchiveView;

pub(crate) fn leads(app: &App) -> bool {
    match &app.replication {
        Some(r) => r.is_leader() && r.cluster().is_none_or(|c| c.still_leading().is_ok()),
        None => true,
    }
}

/// Runs the archive while the node leads; returns at once when no
/// archive is configured.
pub async fn watch(app: Arc<App>) {
    let Some(url) = app.config.archive.url.clone() else {
        return;
    };
    let location = match Location::parse(&url) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("the archive is off: {e}");
            app.archive.show(Arc::new(Mutex::new(ArchiveStatus {
                url,
                last_error: Some(e.to_string()),
                errors: 1,
                ..ArchiveStatus::default()
            })));
            return;
        }
    };
    let config = ArchiveConfig {
        interval: Duration::from_millis(app.config.archive.interval_ms),
        ..ArchiveConfig::default()
    };
    loop {
        let store = if leads(&app) { app.store().ok() } else { None };
        let mut running = app.archive.running.lock().await;
        let same = match (&*running, &store) {
            (Some((_, a)), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            if let Some((a, _)) = running.take() {
                a.stop().await;
                tracing::info!("archive to {location}: stopped (this node no longer leads)");
            }
            if let Some(store) = store {
                let a = Archiver::start(store.clone(), location.clone(), config.clone());
                app.archive.show(a.status_handle());
                tracing::info!(
                    "archive to {location}: every {} ms",
                    config.interval.as_millis()
                );
                *running = Some((a, store));
            }
        }
        drop(running);
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
}
