//! A store rebuilt from an archive: the pieces of the cluster's history
//! (`vigil_engine::archive::plan_restore`) downloaded in order, each
//! checked, and appended to a new store up to the target LSN or commit
//! time, which is indexed as it is appended (it serves reads as soon as
//! the restore returns).

use std::path::Path;
use std::sync::Arc;

use vigil_engine::archive::{ArchiveRestore, PIECE_PREFIX, Piece, PieceName, plan_restore};
use vigil_engine::crypt::Kek;
use vigil_engine::{Progress, RestoreReport, RestoreTarget};

use super::{ArchiveError, Location};

/// Restores the history archived at `location` into `to` (a new
/// directory) up to `target`. `kek` unwraps the data keys of an
/// encrypted store's pieces. `progress` is told the log bytes done of
/// those planned.
pub async fn restore_from_archive(
    location: &Location,
    to: &Path,
    kek: Option<Arc<dyn Kek>>,
    target: RestoreTarget,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<RestoreReport, ArchiveError> {
    let listed = location.list(PIECE_PREFIX).await?;
    let sizes: std::collections::HashMap<PieceName, u64> = listed
        .iter()
        .filter_map(|(n, size)| PieceName::parse(n).map(|p| (p, *size)))
        .collect();
    let names: Vec<PieceName> = sizes.keys().copied().collect();
    let plan = plan_restore(&names);
    let Some(last) = plan.last() else {
        return Err(ArchiveError::Engine(vigil_engine::Error::Restore(format!(
            "{location} holds no archive piece that starts the log ({} objects under {PIECE_PREFIX})",
            listed.len()
        ))));
    };
    if let RestoreTarget::Lsn(n) = target
        && n > last.last_lsn
    {
        return Err(ArchiveError::Engine(vigil_engine::Error::Restore(format!(
            "the archive at {location} holds lsn 1..={}, not {n}",
            last.last_lsn
        ))));
    }
    if let RestoreTarget::Time(t) = target {
        let end = last_time(location, last).await?;
        if t > end {
            return Err(ArchiveError::Engine(vigil_engine::Error::Restore(format!(
                "the archive at {location} ends at commit time {end} µs, before the time asked ({t} µs)"
            ))));
        }
    }
    let mut prog = Progress {
        bytes_done: 0,
        bytes_total: plan
            .iter()
            .map(|p| sizes.get(p).copied().unwrap_or(0))
            .sum(),
    };
    let dir = to.to_owned();
    let k = kek.clone();
    let mut restore = tokio::task::spawn_blocking(move || ArchiveRestore::create(&dir, k, target))
        .await
        .map_err(|e| ArchiveError::Task(e.to_string()))??;
    for name in &plan {
        let bytes = location.get(&name.object_name()).await?;
        prog.bytes_done += bytes.len() as u64;
        let (r, done) = tokio::task::spawn_blocking(move || {
            let piece = Piece::decode(&bytes)?;
            restore.apply(piece)?;
            let done = restore.is_done();
            Ok::<_, vigil_engine::Error>((restore, done))
        })
        .await
        .map_err(|e| ArchiveError::Task(e.to_string()))??;
        restore = r;
        progress(prog);
        if done {
            break;
        }
    }
    let report = tokio::task::spawn_blocking(move || restore.finish())
        .await
        .map_err(|e| ArchiveError::Task(e.to_string()))??;
    Ok(report)
}

/// Commit time of the last frame of the piece `name`.
async fn last_time(location: &Location, name: &PieceName) -> Result<u64, ArchiveError> {
    let bytes = location.get(&name.object_name()).await?;
    Ok(Piece::decode(&bytes)?.last_time_us)
}
