//! Backup, verification and point-in-time restore of a store's log.
//!
//! A backup is a directory holding copies of the store's segments
//! (`wal/`, the same names and bytes, each cut at its last whole frame)
//! and a `BACKUP` file naming the last frame it holds. It is taken from the
//! segment files directly, without the store's lock: the log is
//! append-only, sealed segments never change, and the active one is read
//! up to its last frame whose checksum holds, so a backup of a running
//! store needs no pause and is consistent at an LSN (a frame is a whole
//! batch). Taken again into the same directory it copies only what is new,
//! after checking that the store still continues the backup's last frame.
//!
//! A restore copies the segments up to a chosen LSN or commit time, cutting
//! the segment that holds it at a frame boundary; the index is derived and
//! built when the restored store is first opened.
//!
//! An encrypted store's `data-keys` file (its data keys, wrapped under its
//! key-encryption key: nothing readable without that key) is copied after
//! the segments, so the copy holds the key of every sealed byte copied (a
//! key is durable before anything is sealed under it). The backup of an
//! encrypted store is as encrypted as the store, and its restore opens
//! with the same key-encryption key.

use std::io::Write;
use std::path::Path;

use crate::crypt::datakeys::{DATA_KEYS_FILE, decode_file};
use crate::error::{Error, Result};
use crate::log::recovery::read_segment;
use crate::log::segment::{list_segments, scan_segment, segment_file_name};

/// The manifest file of a backup directory.
pub const MANIFEST: &str = "BACKUP";
/// The segment directory, in a store and in a backup.
const WAL: &str = "wal";

/// Where a backup or restore stands, for progress lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Segment bytes handled so far.
    pub bytes_done: u64,
    /// Segment bytes in all.
    pub bytes_total: u64,
}

/// What a backup run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupReport {
    /// The LSN the backup is consistent at (its last record).
    pub last_lsn: u64,
    /// Commit time of that record, µs since the Unix epoch.
    pub last_timestamp_us: u64,
    /// The LSN it held before this run (0 for a new backup).
    pub previous_lsn: u64,
    /// Bytes written by this run.
    pub bytes_copied: u64,
    /// Segments written to (new or extended).
    pub segments_written: usize,
}

/// What verifying a backup found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupVerify {
    /// Segments checked.
    pub segments: usize,
    /// Frames checked (every CRC, dense LSNs, the segment chain).
    pub frames: u64,
    /// First LSN held.
    pub first_lsn: u64,
    /// Last LSN held.
    pub last_lsn: u64,
    /// Commit time of the first frame, µs.
    pub first_timestamp_us: u64,
    /// Commit time of the last frame, µs.
    pub last_timestamp_us: u64,
    /// Data keys in its `data-keys` file (0: the store was not encrypted).
    pub data_keys: usize,
}

/// Which state a restore produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreTarget {
    /// Everything the backup holds.
    Latest,
    /// The state after LSN `n` (frames whose records all lie at or below it).
    Lsn(u64),
    /// The state at commit time `t` (µs since the Unix epoch): frames
    /// committed at or before it.
    Time(u64),
}

/// What a restore produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// The restored store's last LSN.
    pub last_lsn: u64,
    /// Commit time of its last frame, µs.
    pub last_timestamp_us: u64,
    /// Segments written.
    pub segments: usize,
}

fn corrupt(path: &Path, offset: u64, detail: impl Into<String>) -> Error {
    Error::CorruptLog {
        segment: path.to_owned(),
        offset,
        detail: detail.into(),
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| Error::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))?;
    if let Some(dir) = path.parent() {
        crate::log::files::sync_dir(dir)?;
    }
    Ok(())
}

/// The manifest's content: (last lsn, crc of the frame ending there, its
/// timestamp).
fn read_manifest(dir: &Path) -> Result<Option<(u64, u32, u64)>> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read backup manifest", &path, e)),
    };
    let mut it = text.lines();
    let bad = || Error::Corrupt(format!("{} is not a Vigil backup manifest", path.display()));
    if it.next() != Some("vigil backup 1") {
        return Err(bad());
    }
    let mut field = |name: &str| -> Result<u64> {
        it.next()
            .and_then(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(bad)
    };
    let lsn = field("last_lsn")?;
    let crc = u32::try_from(field("last_crc")?).map_err(|_| bad())?;
    let ts = field("last_timestamp_us")?;
    Ok(Some((lsn, crc, ts)))
}

/// Backs up the store in `store_dir` into `to` (created if needed), or
/// brings an earlier backup there up to date. Safe while the store runs.
/// `progress` is called as segments are handled.
pub fn backup(
    store_dir: &Path,
    to: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<BackupReport> {
    let src_wal = store_dir.join(WAL);
    let dst_wal = to.join(WAL);
    std::fs::create_dir_all(&dst_wal).map_err(|e| Error::io("create backup", &dst_wal, e))?;
    let previous = read_manifest(to)?;
    let segments = list_segments(&src_wal).map_err(|e| Error::io("list log", &src_wal, e))?;
    if segments.is_empty() {
        return Err(Error::Corrupt(format!(
            "{} holds no log segments: not a Vigil store",
            store_dir.display()
        )));
    }
    let mut sizes = Vec::with_capacity(segments.len());
    for (_, p) in &segments {
        sizes.push(
            std::fs::metadata(p)
                .map_err(|e| Error::io("stat", p, e))?
                .len(),
        );
    }
    let mut prog = Progress {
        bytes_done: 0,
        bytes_total: sizes.iter().sum(),
    };
    let mut report = BackupReport {
        previous_lsn: previous.map_or(0, |p| p.0),
        ..BackupReport::default()
    };
    let mut continues = previous.is_none();
    let mut last: Option<(u64, u32, u64)> = None;
    for (i, ((first_lsn, path), size)) in segments.iter().zip(&sizes).enumerate() {
        let bytes = read_segment(path)?;
        let scan = scan_segment(&bytes).map_err(|e| corrupt(path, 0, e.to_string()))?;
        let is_last = i + 1 == segments.len();
        if let Some(stop) = &scan.stop
            && !stop.zero_tail
            && (!is_last || stop.valid_frame_after)
        {
            return Err(corrupt(
                path,
                stop.offset,
                format!("{} (not copied into the backup)", stop.error),
            ));
        }
        if let (Some((lsn, crc, _)), false) = (previous, continues)
            && let Some(f) = scan.frames.iter().find(|f| f.header.end_lsn() - 1 == lsn)
        {
            if f.header.crc != crc {
                return Err(Error::Backup(format!(
                    "the store no longer continues this backup: its frame ending at lsn {lsn} differs (a failover or a restore cut it); back up into a new directory"
                )));
            }
            continues = true;
        }
        if let Some(f) = scan.frames.last() {
            last = Some((f.header.end_lsn() - 1, f.header.crc, f.header.timestamp_us));
        }
        let target = dst_wal.join(segment_file_name(*first_lsn));
        let have = std::fs::metadata(&target).map_or(0, |m| m.len());
        let want = scan.valid_len;
        if have < want {
            if have == 0 {
                write_durably(&target, &bytes[..want as usize])?;
            } else {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&target)
                    .map_err(|e| Error::io("open backup segment", &target, e))?;
                f.write_all(&bytes[have as usize..want as usize])
                    .map_err(|e| Error::io("append to backup segment", &target, e))?;
                f.sync_all()
                    .map_err(|e| Error::io("fsync backup segment", &target, e))?;
            }
            report.bytes_copied += want - have;
            report.segments_written += 1;
        } else if have > want {
            return Err(Error::Backup(format!(
                "{} holds more than the store's segment: back up into a new directory",
                target.display()
            )));
        }
        prog.bytes_done += size;
        progress(prog);
    }
    if !continues {
        return Err(Error::Backup(format!(
            "the store does not hold this backup's last lsn {}: back up into a new directory",
            report.previous_lsn
        )));
    }
    let (lsn, crc, ts) = last.ok_or_else(|| Error::Corrupt("the store holds no frame".into()))?;
    crate::log::files::sync_dir(&dst_wal)?;
    copy_data_keys(store_dir, to)?;
    write_durably(
        &to.join(MANIFEST),
        format!("vigil backup 1\nlast_lsn {lsn}\nlast_crc {crc}\nlast_timestamp_us {ts}\n")
            .as_bytes(),
    )?;
    report.last_lsn = lsn;
    report.last_timestamp_us = ts;
    Ok(report)
}

/// Checks every frame of the backup in `dir`: CRCs, dense LSNs across
/// segments, the segment chain, and that it ends where its manifest says.
pub fn verify_backup(dir: &Path, progress: &mut dyn FnMut(Progress)) -> Result<BackupVerify> {
    let wal = dir.join(WAL);
    let manifest = read_manifest(dir)?.ok_or_else(|| {
        Error::Corrupt(format!(
            "{} has no {MANIFEST}: not a Vigil backup",
            dir.display()
        ))
    })?;
    let segments = list_segments(&wal).map_err(|e| Error::io("list backup", &wal, e))?;
    let mut prog = Progress::default();
    for (_, p) in &segments {
        prog.bytes_total += std::fs::metadata(p)
            .map_err(|e| Error::io("stat", p, e))?
            .len();
    }
    let mut v = BackupVerify::default();
    let mut next_lsn: Option<u64> = None;
    let mut prev_crc = 0u32;
    for (first_lsn, path) in &segments {
        let bytes = read_segment(path)?;
        let scan = scan_segment(&bytes).map_err(|e| corrupt(path, 0, e.to_string()))?;
        if let Some(stop) = &scan.stop {
            return Err(corrupt(path, stop.offset, stop.error.to_string()));
        }
        if scan.header.first_lsn != *first_lsn {
            return Err(corrupt(path, 0, "header and file name disagree"));
        }
        if let Some(n) = next_lsn {
            if *first_lsn != n {
                return Err(corrupt(
                    path,
                    0,
                    format!("starts at lsn {first_lsn}, {n} expected"),
                ));
            }
            if scan.header.prev_tail_crc != prev_crc {
                return Err(corrupt(path, 0, "does not chain to the previous segment"));
            }
        } else {
            v.first_lsn = *first_lsn;
            v.first_timestamp_us = scan.frames.first().map_or(0, |f| f.header.timestamp_us);
        }
        for f in &scan.frames {
            v.frames += 1;
            v.last_lsn = f.header.end_lsn() - 1;
            v.last_timestamp_us = f.header.timestamp_us;
            prev_crc = f.header.crc;
        }
        next_lsn = Some(v.last_lsn + 1);
        v.segments += 1;
        prog.bytes_done += bytes.len() as u64;
        progress(prog);
    }
    if v.last_lsn != manifest.0 || prev_crc != manifest.1 {
        return Err(Error::Corrupt(format!(
            "the backup ends at lsn {} but its manifest says {}",
            v.last_lsn, manifest.0
        )));
    }
    let keys = dir.join(DATA_KEYS_FILE);
    match std::fs::read(&keys) {
        Ok(bytes) => {
            let file = decode_file(&bytes).map_err(|source| Error::Crypt {
                context: format!("reading {}", keys.display()),
                source,
            })?;
            v.data_keys = file.entries.len();
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("read data keys", &keys, e)),
    }
    Ok(v)
}

/// Writes a store into `to` (which must not hold one) as it was at
/// `target`, from the backup in `from`. Open it afterwards to build its
/// index; it can serve as a new leader or seed a follower.
pub fn restore(
    from: &Path,
    to: &Path,
    target: RestoreTarget,
    progress: &mut dyn FnMut(Progress),
) -> Result<RestoreReport> {
    let verified = verify_backup(from, &mut |_| {})?;
    let keep = |lsn_end: u64, ts: u64| match target {
        RestoreTarget::Latest => true,
        RestoreTarget::Lsn(n) => lsn_end <= n,
        RestoreTarget::Time(t) => ts <= t,
    };
    match target {
        RestoreTarget::Lsn(n) if n > verified.last_lsn => {
            return Err(Error::Restore(format!(
                "the backup holds lsn {}..={}, not {n}",
                verified.first_lsn, verified.last_lsn
            )));
        }
        RestoreTarget::Time(t) if t > verified.last_timestamp_us => {
            return Err(Error::Restore(format!(
                "the backup ends at commit time {} µs, before the time asked",
                verified.last_timestamp_us
            )));
        }
        _ => {}
    }
    let dst_wal = to.join(WAL);
    if dst_wal.exists() {
        return Err(Error::Restore(format!(
            "{} already holds a store; restore into a new directory",
            to.display()
        )));
    }
    std::fs::create_dir_all(&dst_wal).map_err(|e| Error::io("create", &dst_wal, e))?;
    let src_wal = from.join(WAL);
    let segments = list_segments(&src_wal).map_err(|e| Error::io("list backup", &src_wal, e))?;
    let mut prog = Progress {
        bytes_done: 0,
        bytes_total: segments
            .iter()
            .map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum(),
    };
    let mut report = RestoreReport::default();
    for (first_lsn, path) in &segments {
        let bytes = read_segment(path)?;
        let scan = scan_segment(&bytes).map_err(|e| corrupt(path, 0, e.to_string()))?;
        let kept: Vec<_> = scan
            .frames
            .iter()
            .take_while(|f| keep(f.header.end_lsn() - 1, f.header.timestamp_us))
            .collect();
        let Some(last) = kept.last() else {
            break;
        };
        let end = (last.offset + last.header.frame_len()) as usize;
        write_durably(&dst_wal.join(segment_file_name(*first_lsn)), &bytes[..end])?;
        report.segments += 1;
        report.last_lsn = last.header.end_lsn() - 1;
        report.last_timestamp_us = last.header.timestamp_us;
        prog.bytes_done += bytes.len() as u64;
        progress(prog);
        if kept.len() < scan.frames.len() {
            break;
        }
    }
    if report.segments == 0 {
        return Err(Error::Restore(
            "nothing in the backup is at or before the point asked".into(),
        ));
    }
    crate::log::files::sync_dir(&dst_wal)?;
    copy_data_keys(from, to)?;
    Ok(report)
}

/// Copies the whole entries of `from`'s data-keys file (if it has one) to
/// `to`, durably; a damaged file is an error, nothing copied.
fn copy_data_keys(from: &Path, to: &Path) -> Result<()> {
    let src = from.join(DATA_KEYS_FILE);
    let bytes = match std::fs::read(&src) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("read data keys", &src, e)),
    };
    let file = decode_file(&bytes).map_err(|source| Error::Crypt {
        context: format!("reading {}", src.display()),
        source,
    })?;
    write_durably(&to.join(DATA_KEYS_FILE), &bytes[..file.valid_len as usize])?;
    crate::log::files::sync_dir(to)
}
