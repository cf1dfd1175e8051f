//! Base backups taken by a serving node: on a schedule while it leads
//! (`[archive] backup_interval_ms`, counted from the newest backup at the
//! location, so restarts and failovers keep the rhythm), or on request
//! (`POST /admin/backup`); each followed by retention (`keep_days`,
//! `keep_backups`). One at a time per node. Failures are counted and
//! shown in `/status`, never fatal.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vigil_net::archive::{
    ArchiveError, Location, LocationBackupReport, Retention, backup_to_location, newest_backup,
    prune_backups,
};

use super::leads;
use crate::app::App;

/// How often the schedule looks at leadership and the clock.
const TICK: Duration = Duration::from_secs(1);
/// Wait after a failed scheduled backup before the next try.
const RETRY: Duration = Duration::from_secs(60);

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Seconds since `taken_us` (µs since the Unix epoch).
pub fn age_seconds(taken_us: u64) -> f64 {
    now_us().saturating_sub(taken_us) as f64 / 1e6
}

/// Why a requested backup was not taken.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Another backup is being taken on this node.
    #[error("a base backup is being taken on this node already; try again when it ends")]
    Busy,
    /// The store is not open.
    #[error("the store is not open: {0}")]
    Store(String),
    /// The location or the backup failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

/// Takes a base backup of this node's store into `location` now, then
/// applies retention there; its outcome is in the node's status.
pub async fn take(
    app: &Arc<App>,
    location: &Location,
) -> Result<LocationBackupReport, BackupError> {
    let Ok(_one) = app.archive.backup_running.try_lock() else {
        return Err(BackupError::Busy);
    };
    let store = app.store().map_err(|e| BackupError::Store(e.to_string()))?;
    app.archive.update_backups(|s| s.running = true);
    let started = Instant::now();
    let outcome = async {
        let r = backup_to_location(store, location, &mut |_| {}).await?;
        let keep = Retention {
            keep_days: app.config.archive.keep_days,
            keep_backups: app.config.archive.keep_backups,
        };
        let pruned = prune_backups(location, keep, now_us()).await?;
        Ok::<_, ArchiveError>((r, pruned.deleted.len() as u64))
    }
    .await;
    let seconds = started.elapsed().as_secs_f64();
    app.archive.update_backups(|s| {
        s.running = false;
        match &outcome {
            Ok((r, pruned)) => {
                s.last_name = Some(r.name.clone());
                s.last_lsn = r.lsn;
                s.last_taken_us = now_us();
                s.last_seconds = seconds;
                s.taken += 1;
                s.pruned += pruned;
                s.last_error = None;
            }
            Err(e) => {
                s.errors += 1;
                s.last_error = Some(e.to_string());
            }
        }
    });
    match outcome {
        Ok((r, _)) => {
            tracing::info!(
                "base backup {} to {location}: index at lsn {}, {:.1} MB, in {seconds:.1} s",
                r.name,
                r.lsn,
                r.index_bytes as f64 / 1e6
            );
            Ok(r)
        }
        Err(e) => {
            tracing::warn!("base backup to {location} failed: {e}");
            Err(e.into())
        }
    }
}

/// Takes base backups every `backup_interval_ms` while this node leads;
/// returns at once when there is no archive URL or no schedule.
pub async fn schedule(app: Arc<App>) {
    let interval_ms = app.config.archive.backup_interval_ms;
    let Some(url) = app.config.archive.url.clone() else {
        return;
    };
    app.archive.update_backups(|s| s.interval_ms = interval_ms);
    if interval_ms == 0 {
        return;
    }
    let Ok(location) = Location::parse(&url) else {
        // The archive task reports the bad URL.
        return;
    };
    let interval_us = interval_ms.saturating_mul(1000);
    // When the newest backup at the location was taken (learned when this
    // node starts leading); `None` until known.
    let mut newest: Option<u64> = None;
    let mut retry_at: Option<Instant> = None;
    loop {
        tokio::time::sleep(TICK).await;
        if !leads(&app) {
            newest = None;
            continue;
        }
        if retry_at.is_some_and(|t| Instant::now() < t) {
            continue;
        }
        if newest.is_none() {
            match newest_backup(&location).await {
                Ok(n) => {
                    let taken = n.as_ref().map_or(0, |(_, _, t)| *t);
                    if let Some((name, lsn, t)) = n {
                        app.archive.update_backups(|s| {
                            if s.last_taken_us < t {
                                s.last_name = Some(name);
                                s.last_lsn = lsn;
                                s.last_taken_us = t;
                            }
                        });
                    }
                    newest = Some(taken);
                }
                Err(e) => {
                    app.archive.update_backups(|s| {
                        s.errors += 1;
                        s.last_error = Some(e.to_string());
                    });
                    retry_at = Some(Instant::now() + RETRY);
                    continue;
                }
            }
        }
        let due = newest.is_some_and(|t| now_us() >= t.saturating_add(interval_us));
        let empty = app.store().map_or(true, |s| s.last_lsn() == 0);
        if !due || empty {
            continue;
        }
        match take(&app, &location).await {
            Ok(_) => {
                newest = Some(now_us());
                retry_at = None;
            }
            Err(BackupError::Busy) => {}
            Err(_) => retry_at = Some(Instant::now() + RETRY),
        }
    }
}
