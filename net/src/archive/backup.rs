//! Base backups on object storage, beside the continuous archive: a
//! backup uploads the pieces of the log the location lacks up to the
//! store's durable end, then a copy of the index (files, then the
//! manifest, create-only, last). A restore from the location lays the
//! newest fitting backup's index beside the log (`restore`), so a
//! restored store opens without indexing the whole log.
//!
//! Retention ([`prune_backups`]) deletes base backups outside
//! `keep_days` and beyond the `keep_backups` newest, never the newest.
//! It never deletes log pieces: the store keeps every version of every
//! resource, so every restore point needs the whole log from LSN 1, and
//! a base backup only spares re-indexing it.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use vigil_engine::Progress;
use vigil_engine::Store;
use vigil_engine::archive::{
    BACKUP_PREFIX, BaseBackup, PIECE_PREFIX, Piece, PieceName, plan_restore,
};

use super::uploader::{ArchiveConfig, ArchiveStatus, resume, upload_round};
use super::{ArchiveError, Created, Location, blocking, local_io as io};

/// Pieces verified at once (downloads in flight).
const VERIFY_AHEAD: usize = 3;
/// Index files compressed and uploaded, or downloaded, at once.
pub(crate) const FILES_AT_ONCE: usize = 4;
/// zstd level for index files: fast, and most of what higher levels get.
const COMPRESSION_LEVEL: i32 = 1;
/// Longest retention accepted, in days.
pub const KEEP_DAYS_MAX: u32 = 36_500;
/// Most base backups kept by count.
pub const KEEP_BACKUPS_MAX: u32 = 10_000;
/// A backup's files without a manifest (a backup cut short) are removed
/// by a prune once they are at least this old.
const ORPHAN_AGE_US: u64 = 24 * 3600 * 1_000_000;

/// What a backup to object storage did.
#[derive(Debug, Clone, Default)]
pub struct LocationBackupReport {
    /// The backup's name (`<lsn>-<taken>`).
    pub name: String,
    /// The frame its index ends at, and its commit time.
    pub lsn: u64,
    /// Commit time of that frame, µs.
    pub timestamp_us: u64,
    /// Pieces of log uploaded by this run (the location lacked them).
    pub pieces: u64,
    /// Log bytes uploaded.
    pub log_bytes: u64,
    /// Index files and bytes uploaded.
    pub files: usize,
    /// Index bytes uploaded.
    pub index_bytes: u64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Index snapshots are made in the store's directory under this prefix
/// (hard links need the same filesystem).
const SNAPSHOT_PREFIX: &str = "backup-";

/// Removes snapshot directories a backup cut short (a crash) left in the
/// store directory: they hold hard links to key files, and space.
fn remove_stale_snapshots(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(SNAPSHOT_PREFIX) && name.ends_with(".tmp") {
            tracing::info!(dir = %e.path().display(), "removing a base backup snapshot left behind");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Removes a snapshot directory when dropped (also on error).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Takes a base backup of `store` (running or not) into `location`: the
/// log the location lacks, up to the store's durable end, as archive
/// pieces, then a copy of the index. `progress` is told the bytes
/// uploaded (log, then index files before compression) of those to upload
/// (the log's share estimated from its LSNs until it is done).
pub async fn backup_to_location(
    store: Arc<Store>,
    location: &Location,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<LocationBackupReport, ArchiveError> {
    let taken = now_us();
    remove_stale_snapshots(store.dir());
    let snap = TempDir(store.dir().join(format!("{SNAPSHOT_PREFIX}{taken}.tmp")));
    let s = store.clone();
    let dest = snap.0.clone();
    let b = blocking(move || s.snapshot_index(&dest, taken)).await?;
    let (next, _) = resume(&store, location).await?;
    let index_total: u64 = b.files.iter().map(|f| f.bytes).sum();
    let log_total = {
        let (s, last) = (store.clone(), store.last_lsn().max(1));
        let on_disk = blocking(move || Ok(s.stats()?.log_bytes)).await?;
        on_disk.saturating_mul(last.saturating_sub(next) + 1) / last
    };
    let mut prog = Progress {
        bytes_done: 0,
        bytes_total: log_total + index_total,
    };
    let status = Mutex::new(ArchiveStatus::default());
    let end = upload_round(
        &store,
        location,
        &ArchiveConfig::default(),
        next,
        &status,
        &mut |bytes| {
            prog.bytes_done += bytes;
            prog.bytes_total = prog.bytes_total.max(prog.bytes_done + index_total);
            progress(prog);
        },
    )
    .await?;
    // The log is up: the rest is the index.
    prog.bytes_total = prog.bytes_done + index_total;
    if end <= b.lsn {
        return Err(ArchiveError::Engine(vigil_engine::Error::Backup(format!(
            "the log was archived up to lsn {}, short of the index's {}",
            end - 1,
            b.lsn
        ))));
    }
    let uploaded = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut b = b;
    // Each file compressed beside itself, then uploaded, a few at once.
    let jobs: Vec<(usize, PathBuf, String)> = b
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| (i, BaseBackup::local_path(&snap.0, f), b.file_object(f)))
        .collect();
    let mut uploads = futures_util::stream::iter(jobs)
        .map(|(i, local, object)| {
            let loc = location.clone();
            tokio::spawn(async move {
                let packed = local.with_extension("zst-upload");
                let (src, dst) = (local.clone(), packed.clone());
                let stored = tokio::task::spawn_blocking(move || compress_file(&src, &dst))
                    .await
                    .map_err(|e| ArchiveError::Task(e.to_string()))??;
                loc.put_file(&object, &packed).await?;
                let _ = std::fs::remove_file(&packed);
                Ok::<_, ArchiveError>((i, stored))
            })
        })
        .buffer_unordered(FILES_AT_ONCE);
    while let Some(done) = uploads.next().await {
        let (i, stored) = done.map_err(|e| ArchiveError::Task(e.to_string()))??;
        b.files[i].stored = stored;
        prog.bytes_done += b.files[i].bytes;
        progress(prog);
    }
    drop(uploads);
    let manifest = b.manifest_object();
    if location.put_new(&manifest, b.encode()).await? == Created::Existed {
        return Err(ArchiveError::Name {
            name: manifest,
            reason: "a backup of that name exists already".into(),
        });
    }
    Ok(LocationBackupReport {
        name: b.name(),
        lsn: b.lsn,
        timestamp_us: b.timestamp_us,
        pieces: uploaded.pieces,
        log_bytes: uploaded.bytes,
        files: b.files.len(),
        index_bytes: b.files.iter().map(|f| f.stored).sum(),
    })
}

/// Compresses `src` into `dst` as one zstd frame: the bytes written.
pub(crate) fn compress_file(
    src: &std::path::Path,
    dst: &std::path::Path,
) -> Result<u64, ArchiveError> {
    let input = std::fs::File::open(src).map_err(io("open", src))?;
    let output = std::fs::File::create(dst).map_err(io("create", dst))?;
    let mut enc = zstd::stream::write::Encoder::new(output, COMPRESSION_LEVEL)
        .map_err(io("compress", src))?;
    std::io::copy(
        &mut std::io::BufReader::with_capacity(1 << 20, input),
        &mut enc,
    )
    .map_err(io("compress", src))?;
    let out = enc.finish().map_err(io("compress", src))?;
    out.sync_all().map_err(io("fsync", dst))?;
    Ok(out.metadata().map_err(io("stat", dst))?.len())
}

/// What `/status` shows of a node's base backups.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct BaseBackupStatus {
    /// Time between scheduled backups, ms (0: none scheduled).
    pub interval_ms: u64,
    /// Whether a backup is being taken now.
    pub running: bool,
    /// The newest base backup at the location as this node knows it.
    pub last_name: Option<String>,
    /// The LSN its index ends at.
    pub last_lsn: u64,
    /// When it was taken, µs since the Unix epoch.
    pub last_taken_us: u64,
    /// Seconds the last backup this node took lasted.
    pub last_seconds: f64,
    /// Backups this node took since it started.
    pub taken: u64,
    /// Backups retention deleted since it started.
    pub pruned: u64,
    /// Failed backups or prunes since it started.
    pub errors: u64,
    /// The last failure, while it lasts (cleared by a success).
    pub last_error: Option<String>,
}

/// The newest base backup manifest at `location`: (name, lsn, taken µs).
pub async fn newest_backup(
    location: &Location,
) -> Result<Option<(String, u64, u64)>, ArchiveError> {
    Ok(location
        .list(BACKUP_PREFIX)
        .await?
        .into_iter()
        .filter_map(|(name, _)| BaseBackup::parse_manifest_object(&name))
        .max_by_key(|(_, taken)| *taken)
        .map(|(lsn, taken)| (BaseBackup::name_of(lsn, taken), lsn, taken)))
}

/// One base backup as a verify or a listing sees it.
#[derive(Debug, Clone)]
pub struct BackupSeen {
    /// Its name.
    pub name: String,
    /// The frame its index ends at.
    pub lsn: u64,
    /// That frame's commit time, µs.
    pub timestamp_us: u64,
    /// When it was taken, µs.
    pub taken_us: u64,
    /// Its files' bytes.
    pub bytes: u64,
    /// Whether its frame is on the archive's history (a restore can use it).
    pub on_history: bool,
}

/// What verifying a location found.
#[derive(Debug, Clone, Default)]
pub struct LocationVerify {
    /// Pieces of the history checked (every frame's CRC, the chain).
    pub pieces: u64,
    /// Their frames.
    pub frames: u64,
    /// Their log bytes.
    pub log_bytes: u64,
    /// The history's last LSN and the commit times of its first and last
    /// frames, µs.
    pub last_lsn: u64,
    /// Commit time of the first frame.
    pub first_time_us: u64,
    /// Commit time of the last frame.
    pub last_time_us: u64,
    /// Pieces on no restore's path (a deposed leader's lost frames).
    pub side_pieces: u64,
    /// Base backups, oldest first, each file checked (size and CRC).
    pub backups: Vec<BackupSeen>,
}

/// Checks everything at `location`: every piece of the history
/// (downloaded, every frame's CRC, the chain from LSN 1), every base
/// backup's manifest and files (sizes and CRCs), and that each backup's
/// frame is on the history. A damaged object is an error naming it.
pub async fn verify_location(
    location: &Location,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<LocationVerify, ArchiveError> {
    let listed = location.list(PIECE_PREFIX).await?;
    let sizes: HashMap<PieceName, u64> = listed
        .iter()
        .filter_map(|(n, size)| PieceName::parse(n).map(|p| (p, *size)))
        .collect();
    let names: Vec<PieceName> = sizes.keys().copied().collect();
    let plan = plan_restore(&names);
    if plan.is_empty() {
        return Err(ArchiveError::Engine(vigil_engine::Error::Restore(format!(
            "{location} holds no archive piece that starts the log"
        ))));
    }
    let mut backups = Vec::new();
    for (name, _) in location.list(BACKUP_PREFIX).await? {
        if BaseBackup::parse_manifest_object(&name).is_some() {
            let b = BaseBackup::decode(&location.get(&name).await?).map_err(|e| {
                ArchiveError::Name {
                    name: name.clone(),
                    reason: e.to_string(),
                }
            })?;
            backups.push(b);
        }
    }
    let wanted: HashSet<(u64, u32)> = backups.iter().map(|b| (b.lsn, b.crc)).collect();
    let mut found: HashSet<(u64, u32)> = HashSet::new();
    let mut v = LocationVerify {
        side_pieces: (names.len() - plan.len()) as u64,
        ..LocationVerify::default()
    };
    let mut prog = Progress {
        bytes_done: 0,
        bytes_total: plan.iter().map(|p| sizes[p]).sum::<u64>()
            + backups
                .iter()
                .flat_map(|b| b.files.iter().map(|f| f.bytes))
                .sum::<u64>(),
    };
    let mut downloads = futures_util::stream::iter(plan.iter().copied())
        .map(|name| {
            let loc = location.clone();
            tokio::spawn(async move {
                let bytes = loc.get(&name.object_name()).await?;
                let stored = bytes.len() as u64;
                let piece = Piece::decode_owned(bytes).map_err(|e| ArchiveError::Name {
                    name: name.object_name(),
                    reason: e.to_string(),
                })?;
                if piece.name != name {
                    return Err(ArchiveError::Name {
                        name: name.object_name(),
                        reason: format!("holds {}", piece.name.object_name()),
                    });
                }
                Ok::<_, ArchiveError>((stored, piece))
            })
        })
        .buffered(VERIFY_AHEAD);
    while let Some(done) = downloads.next().await {
        let (bytes, piece) = done.map_err(|e| ArchiveError::Task(e.to_string()))??;
        if v.pieces == 0 {
            v.first_time_us = piece.first_time_us;
        }
        v.pieces += 1;
        v.frames += u64::from(piece.frames);
        v.log_bytes += piece.log.len() as u64;
        v.last_lsn = piece.name.last_lsn;
        v.last_time_us = piece.last_time_us;
        for (lsn, crc, _) in piece.frame_ends() {
            if wanted.contains(&(lsn, crc)) {
                found.insert((lsn, crc));
            }
        }
        prog.bytes_done += bytes;
        progress(prog);
    }
    for b in backups {
        let mut bytes = 0;
        for f in &b.files {
            let object = b.file_object(f);
            let u = location
                .get_zstd(&object, None, f.stored.max(1), f.bytes)
                .await?;
            let got = (u.raw_bytes, u.raw_crc);
            if got != (f.bytes, f.crc) {
                return Err(ArchiveError::Name {
                    name: object,
                    reason: format!(
                        "{} bytes with CRC {:08x}, the manifest says {} bytes with CRC {:08x}",
                        got.0, got.1, f.bytes, f.crc
                    ),
                });
            }
            bytes += f.bytes;
            prog.bytes_done += f.bytes;
            progress(prog);
        }
        v.backups.push(BackupSeen {
            name: b.name(),
            lsn: b.lsn,
            timestamp_us: b.timestamp_us,
            taken_us: b.taken_us,
            bytes,
            on_history: found.contains(&(b.lsn, b.crc)),
        });
    }
    Ok(v)
}

/// How many base backups to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Keep every backup taken within this many days.
    pub keep_days: u32,
    /// Keep at least this many of the newest backups (1 at the least:
    /// the newest is always kept).
    pub keep_backups: u32,
}

/// What a prune did.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Backups deleted (names).
    pub deleted: Vec<String>,
    /// Backups kept.
    pub kept: Vec<String>,
    /// Objects of backups cut short (no manifest) deleted.
    pub orphans: u64,
}

/// Deletes the base backups at `location` that `keep` does not keep,
/// as of `now_us`: each manifest first (a backup without one does not
/// exist), then its files. Log pieces are never deleted.
pub async fn prune_backups(
    location: &Location,
    keep: Retention,
    now_us: u64,
) -> Result<PruneReport, ArchiveError> {
    let listed = location.list(BACKUP_PREFIX).await?;
    let mut manifests: Vec<(u64, u64, String)> = listed
        .iter()
        .filter_map(|(name, _)| {
            BaseBackup::parse_manifest_object(name).map(|(lsn, taken)| (taken, lsn, name.clone()))
        })
        .collect();
    // Newest first.
    manifests.sort_by(|a, b| b.cmp(a));
    let horizon = now_us.saturating_sub(u64::from(keep.keep_days) * 24 * 3600 * 1_000_000);
    let mut report = PruneReport::default();
    // Every backup listed with its manifest (kept or deleted now): what
    // is left of the others was cut short.
    let with_manifest: HashSet<String> = manifests
        .iter()
        .map(|(taken, lsn, _)| BaseBackup::name_of(*lsn, *taken))
        .collect();
    for (i, (taken, lsn, object)) in manifests.iter().enumerate() {
        let name = BaseBackup::name_of(*lsn, *taken);
        if i < keep.keep_backups.max(1) as usize || *taken >= horizon {
            report.kept.push(name);
            continue;
        }
        location.delete(object).await?;
        for (file, _) in &listed {
            if file.starts_with(&format!("{BACKUP_PREFIX}{name}/")) {
                location.delete(file).await?;
            }
        }
        report.deleted.push(name);
    }
    // Files of backups cut short: no manifest, and old.
    for (file, _) in &listed {
        let Some(rest) = file.strip_prefix(BACKUP_PREFIX) else {
            continue;
        };
        let Some((dir, _)) = rest.split_once('/') else {
            continue;
        };
        let taken = dir.split_once('-').and_then(|(_, t)| t.parse::<u64>().ok());
        if !with_manifest.contains(dir)
            && taken.is_some_and(|t| t.saturating_add(ORPHAN_AGE_US) < now_us)
        {
            location.delete(file).await?;
            report.orphans += 1;
        }
    }
    Ok(report)
}
