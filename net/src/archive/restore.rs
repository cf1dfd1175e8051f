//! A store rebuilt from an archive: the pieces of the cluster's history
//! (`vigil_engine::archive::plan_restore`) downloaded in order (a few
//! ahead of the one being applied), each checked, and appended to a new
//! store up to the target LSN or commit time.
//!
//! When a base backup (`backups/`) ends at or before the target on that
//! history, the pieces are written as plain segment files laid out as the
//! backup's, and the backup's index is downloaded beside them: opening
//! the store then replays only the frames after the backup. Without one,
//! the store is indexed as the pieces are appended. Either way it serves
//! reads as soon as it is opened with the options given here.

use std::path::Path;

use futures_util::StreamExt;
use vigil_engine::archive::{
    ArchiveRestore, BACKUP_PREFIX, BaseBackup, PIECE_PREFIX, Piece, PieceName, plan_restore,
};
use vigil_engine::{Options, Progress, RestoreReport, RestoreTarget};

use super::backup::FILES_AT_ONCE;
use super::{ArchiveError, Location, blocking};

/// Pieces downloaded ahead of the one being applied.
const PIECES_AHEAD: usize = 3;
/// Where a base backup's index downloads inside the new store directory
/// until the log is known to hold its frame.
const STAGING: &str = "backup-index.tmp";
/// Most base backup manifests read to find one that fits a time target.
const MANIFESTS_READ_MAX: usize = 64;

/// What a restore from an archive did.
#[derive(Debug, Clone, Default)]
pub struct ArchiveRestoreReport {
    /// The restored log.
    pub restore: RestoreReport,
    /// Log bytes downloaded (pieces).
    pub log_bytes: u64,
    /// The base backup whose index was laid beside the log, if any.
    pub base_backup: Option<String>,
    /// Index bytes downloaded from it.
    pub index_bytes: u64,
    /// Why no base backup's index was used, when one was considered.
    pub index_note: Option<String>,
    /// Seconds until the log was written (downloads included).
    pub log_seconds: f64,
    /// Seconds until the base backup's index was downloaded and checked
    /// (beside the log, so overlapping it).
    pub index_seconds: f64,
}

/// Restores the history archived at `location` into `to` (a new
/// directory) up to `target`. `opts` are the options the restored store
/// will be opened with (its key extractor: an index made with another is
/// rebuilt; its KEK, which unwraps the archive's data keys and must be
/// given when they hold any; its segment size). `progress` is told the
/// bytes done of those planned.
pub async fn restore_from_archive(
    location: &Location,
    to: &Path,
    opts: Options,
    target: RestoreTarget,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<ArchiveRestoreReport, ArchiveError> {
    let started = std::time::Instant::now();
    let listed = location.list(PIECE_PREFIX).await?;
    let sizes: std::collections::HashMap<PieceName, u64> = listed
        .iter()
        .filter_map(|(n, size)| PieceName::parse(n).map(|p| (p, *size)))
        .collect();
    let names: Vec<PieceName> = sizes.keys().copied().collect();
    let plan = plan_restore(&names);
    let Some(last) = plan.last() else {
        return Err(restore_error(format!(
            "{location} holds no archive piece that starts the log ({} objects under {PIECE_PREFIX})",
            listed.len()
        )));
    };
    if let RestoreTarget::Lsn(n) = target
        && n > last.last_lsn
    {
        return Err(restore_error(format!(
            "the archive at {location} holds lsn 1..={}, not {n}",
            last.last_lsn
        )));
    }
    // A time target is checked against the last piece's last commit time
    // (not in its name); that piece is then not downloaded again.
    let mut last_piece: Option<(PieceName, Vec<u8>)> = None;
    if let RestoreTarget::Time(t) = target {
        let bytes = location.get(&last.object_name()).await?;
        let end = Piece::decode(&bytes)?.last_time_us;
        if t > end {
            return Err(restore_error(format!(
                "the archive at {location} ends at commit time {end} µs, before the time asked ({t} µs)"
            )));
        }
        last_piece = Some((*last, bytes));
    }
    let base = choose_base_backup(location, target, last.last_lsn).await?;
    let mut report = ArchiveRestoreReport::default();
    let mut prog = Progress {
        bytes_done: 0,
        bytes_total: plan
            .iter()
            .map(|p| sizes.get(p).copied().unwrap_or(0))
            .sum::<u64>()
            + base
                .as_ref()
                .map_or(0, |b| b.files.iter().map(|f| f.stored).sum()),
    };
    let dir = to.to_owned();
    let b = base.clone();
    let mut restore = blocking(move || {
        let r = match &b {
            Some(b) => {
                let mut r = ArchiveRestore::create_log_only(
                    &dir,
                    opts.kek.clone(),
                    target,
                    b,
                    opts.segment_bytes,
                )?;
                r.import_keys(&b.keys, &format!("base backup {}", b.name()))?;
                r
            }
            None => ArchiveRestore::create(&dir, opts, target)?,
        };
        Ok(r)
    })
    .await?;
    // The backup's index downloads beside the log, into a staging
    // directory, laid in place once the log is known to hold its frame.
    let staging = to.join(STAGING);
    let index_download = base.clone().map(|b| {
        let loc = location.clone();
        let staging = staging.clone();
        AbortOnDrop(tokio::spawn(async move {
            let r = fetch_index(&loc, &b, &staging).await;
            r.map(|bytes| (bytes, started.elapsed().as_secs_f64()))
        }))
    });
    let mut downloads = futures_util::stream::iter(plan.iter().copied())
        .map(|name| {
            let loc = location.clone();
            let have = match &mut last_piece {
                Some((n, bytes)) if *n == name => Some(std::mem::take(bytes)),
                _ => None,
            };
            // Spawned, so downloads go on while a piece is applied.
            tokio::spawn(async move {
                match have {
                    Some(bytes) => Ok(bytes),
                    None => loc.get(&name.object_name()).await,
                }
            })
        })
        .buffered(PIECES_AHEAD);
    while let Some(bytes) = downloads.next().await {
        let bytes = bytes.map_err(|e| ArchiveError::Task(e.to_string()))??;
        prog.bytes_done += bytes.len() as u64;
        report.log_bytes += bytes.len() as u64;
        let (r, done) = blocking(move || {
            let piece = Piece::decode_owned(bytes)?;
            restore.apply(piece)?;
            let done = restore.is_done();
            Ok((restore, done))
        })
        .await?;
        restore = r;
        progress(prog);
        if done {
            break;
        }
    }
    drop(downloads);
    let fits = restore.index_fits();
    report.restore = blocking(move || restore.finish()).await?;
    report.log_seconds = started.elapsed().as_secs_f64();
    if let (Some(b), Some(mut download)) = (base, index_download) {
        if fits {
            let laid = match (&mut download.0).await {
                Ok(Ok((bytes, seconds))) => {
                    report.index_seconds = seconds;
                    lay_index(&b, &staging, to).map(|()| bytes)
                }
                Ok(Err(e)) => Err(e),
                Err(e) => Err(ArchiveError::Task(e.to_string())),
            };
            match laid {
                Ok(bytes) => {
                    report.index_bytes = bytes;
                    report.base_backup = Some(b.name());
                    prog.bytes_done += bytes;
                    progress(prog);
                }
                Err(e) => {
                    remove_index(to, &b);
                    report.index_note = Some(format!(
                        "base backup {} could not be used ({e}); the index is built from the log on first open",
                        b.name()
                    ));
                }
            }
        } else {
            drop(download);
            report.index_note = Some(format!(
                "base backup {} is not on the restored history (its frame at lsn {} is not in the log restored); the index is built from the log on first open",
                b.name(),
                b.lsn
            ));
        }
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(report)
}

/// The newest base backup that ends at or before `target` (and at or
/// before `last_lsn`, the archive's end), its manifest read and checked.
async fn choose_base_backup(
    location: &Location,
    target: RestoreTarget,
    last_lsn: u64,
) -> Result<Option<BaseBackup>, ArchiveError> {
    let mut found: Vec<(u64, u64, String)> = location
        .list(BACKUP_PREFIX)
        .await?
        .into_iter()
        .filter_map(|(name, _)| {
            BaseBackup::parse_manifest_object(&name).map(|(lsn, taken)| (lsn, taken, name))
        })
        .filter(|(lsn, _, _)| {
            *lsn <= last_lsn && !matches!(target, RestoreTarget::Lsn(n) if *lsn > n)
        })
        .collect();
    found.sort();
    for (_, _, name) in found.iter().rev().take(MANIFESTS_READ_MAX) {
        let b = match location.get(name).await.map(|b| BaseBackup::decode(&b)) {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::warn!(backup = %name, error = %e, "base backup manifest does not check; skipped");
                continue;
            }
            Err(e) => return Err(e),
        };
        if matches!(target, RestoreTarget::Time(t) if b.timestamp_us > t) {
            continue;
        }
        return Ok(Some(b));
    }
    Ok(None)
}

/// Downloads the base backup's files into `staging` (a few at once),
/// each decompressed and checked against the manifest's size and CRC:
/// the bytes downloaded.
async fn fetch_index(
    location: &Location,
    b: &BaseBackup,
    staging: &Path,
) -> Result<u64, ArchiveError> {
    let jobs: Vec<(String, std::path::PathBuf, u64, (u64, u32))> = b
        .files
        .iter()
        .map(|f| {
            (
                b.file_object(f),
                BaseBackup::local_path(staging, f),
                f.stored,
                (f.bytes, f.crc),
            )
        })
        .collect();
    let mut fetches = futures_util::stream::iter(jobs)
        .map(|(object, path, stored, want)| {
            let loc = location.clone();
            tokio::spawn(async move {
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent).await.map_err(|source| {
                        ArchiveError::Local {
                            what: "create",
                            path: parent.to_owned(),
                            source,
                        }
                    })?;
                }
                let u = loc
                    .get_zstd(&object, Some(&path), stored.max(1), want.0)
                    .await?;
                let got = (u.raw_bytes, u.raw_crc);
                if got != want {
                    return Err(ArchiveError::Name {
                        name: object,
                        reason: format!(
                            "{} bytes with CRC {:08x}, the manifest says {} bytes with CRC {:08x}",
                            got.0, got.1, want.0, want.1
                        ),
                    });
                }
                Ok(stored)
            })
        })
        .buffer_unordered(FILES_AT_ONCE);
    let mut total = 0;
    while let Some(done) = fetches.next().await {
        total += done.map_err(|e| ArchiveError::Task(e.to_string()))??;
    }
    Ok(total)
}

/// A task stopped when its handle goes (a restore that fails stops its
/// index download).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Moves the checked index files from `staging` into the store `to`.
fn lay_index(b: &BaseBackup, staging: &Path, to: &Path) -> Result<(), ArchiveError> {
    for f in &b.files {
        let (from, into) = (
            BaseBackup::local_path(staging, f),
            BaseBackup::local_path(to, f),
        );
        if let Some(parent) = into.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ArchiveError::Local {
                what: "create",
                path: parent.to_owned(),
                source,
            })?;
        }
        std::fs::rename(&from, &into).map_err(|source| ArchiveError::Local {
            what: "move into place",
            path: into.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Removes what [`lay_index`] may have moved in, so the store builds its
/// index from the log.
fn remove_index(to: &Path, b: &BaseBackup) {
    for f in &b.files {
        let _ = std::fs::remove_file(BaseBackup::local_path(to, f));
    }
}

fn restore_error(detail: String) -> ArchiveError {
    ArchiveError::Engine(vigil_engine::Error::Restore(detail))
}
