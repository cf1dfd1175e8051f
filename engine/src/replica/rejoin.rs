//! Cutting a log back to where it agrees with the new leader's, keeping
//! what is cut.
//!
//! A node that led and lost its leadership may hold frames the new leader
//! never had (written after the last ones it shipped). Before it can
//! follow, its log must end where the two logs agree. [`Store::cut_log`]
//! does that, and keeps everything it removes: every lost resource version
//! as one NDJSON line (type, id, versionId, lastUpdated, LSN, epoch,
//! operation, CRC32 and length of the body, and the body itself) in
//! `quarantine/rejoin-lsn-N/versions.ndjson`, with the raw frames and a
//! manifest beside it. Nothing acknowledged is thrown away without a trace.
//!
//! Crash safety: the quarantine is written and fsynced before the log is
//! cut; a crash in between leaves the log whole and a later cut rewrites
//! the same quarantine. The index is rebuilt from the cut log when the
//! store is next opened (it finds itself ahead of the log).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::crypt::datakeys::QUARANTINE_DOMAIN;
use crate::error::{Error, Result};
use crate::index::tables::Snapshot;
use crate::log::record::OpKind;
use crate::log::recovery::{quarantine_as, truncate};
use crate::log::segment::list_segments;
use crate::store::Store;
use crate::store::options::Options;
use crate::store::read::Change;

/// Changes fetched per call while collecting what a cut removes.
const CHANGES_PER_CALL: usize = 1_000;

/// What [`Store::cut_log`] removed and where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutReport {
    /// The quarantine folder.
    pub quarantine: PathBuf,
    /// The first LSN removed.
    pub first_lsn: u64,
    /// The last LSN removed.
    pub last_lsn: u64,
    /// Resource versions removed (each a line of `versions.ndjson`).
    pub versions: usize,
}

/// Appends `s` as a JSON string.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Store {
    /// Cuts the log of the (closed) store in `dir` so that it ends at the
    /// last frame end at or before `after_lsn` (a leader's divergence point
    /// is the last LSN both logs *may* share, which need not end a frame
    /// here), and moves what was after it to quarantine. Returns `None`
    /// when nothing follows `after_lsn`. The store must not be open: this
    /// takes its lock.
    pub fn cut_log(dir: &Path, opts: Options, after_lsn: u64) -> Result<Option<CutReport>> {
        let opts = Options {
            replica: true,
            ..opts
        };
        let store = Store::open_with(dir, opts)?;
        let last = store.log_end().lsn;
        if after_lsn >= last {
            return Ok(None);
        }
        let after_lsn = if after_lsn > 0 && store.frame_ending_at(after_lsn)?.is_none() {
            // Inside a frame: that frame goes too.
            let (first, _, _) = Snapshot::new(&store.inner.index.current())?
                .frame_holding(after_lsn)?
                .ok_or_else(|| Error::Corrupt(format!("no frame holds lsn {after_lsn}")))?;
            first - 1
        } else {
            after_lsn
        };
        let first_lost = after_lsn + 1;
        let (frame, segment, offset) = Snapshot::new(&store.inner.index.current())?
            .frame_holding(first_lost)?
            .ok_or_else(|| Error::Corrupt(format!("no frame holds lsn {first_lost}")))?;
        assert_eq!(frame, first_lost, "a frame begins right after a frame end");
        // Every lost resource version, readable.
        let mut lines = String::new();
        let mut versions = 0usize;
        let mut cursor = after_lsn;
        loop {
            let batch = store.changes(cursor, CHANGES_PER_CALL)?;
            let Some(last_change) = batch.last() else {
                break;
            };
            cursor = last_change.lsn();
            for c in &batch {
                let Change::Resource { epoch, version: v } = c else {
                    continue;
                };
                lines.push_str("{\"resourceType\":");
                json_str(&mut lines, &v.resource_type);
                lines.push_str(",\"id\":");
                json_str(&mut lines, &v.id);
                let op = match v.op {
                    OpKind::Create => "create",
                    OpKind::Update => "update",
                    OpKind::Delete => "delete",
                };
                let _ = write!(
                    lines,
                    ",\"versionId\":\"{}\",\"lastUpdatedMicros\":{},\"lsn\":{},\"epoch\":{epoch},\"op\":\"{op}\",\"crc32\":{},\"bytes\":{}",
                    v.version,
                    v.last_updated_us,
                    v.lsn,
                    crc32fast::hash(&v.body),
                    v.body.len()
                );
                if v.op != OpKind::Delete && !v.body.is_empty() {
                    lines.push_str(",\"resource\":");
                    lines.push_str(&String::from_utf8_lossy(&v.body));
                }
                lines.push_str("}\n");
                versions += 1;
            }
            if batch.len() < CHANGES_PER_CALL {
                break;
            }
        }
        // An encrypted store's lost versions stay sealed (under its own
        // data keys; `vigil quarantine reapply --kek` opens them).
        let (versions_file, versions_bytes) = match store.inner.log.dicts.keys() {
            Some(k) => (
                "versions.ndjson.sealed",
                k.seal_value(QUARANTINE_DOMAIN, first_lost, lines.as_bytes())?,
            ),
            None => ("versions.ndjson", lines.into_bytes()),
        };
        let seg_path = store.inner.log.segments.path_of(segment);
        let log_dir = store.inner.log.segments.dir().to_owned();
        store.close()?;
        let later: Vec<(u64, PathBuf)> = list_segments(&log_dir)
            .map_err(|e| Error::io("list log", &log_dir, e))?
            .into_iter()
            .filter(|(first, _)| *first > segment)
            .collect();
        let root = dir.join("quarantine");
        let qdir = quarantine_as(&root, "rejoin", first_lost, &seg_path, offset, &later)?;
        let ndjson = qdir.join(versions_file);
        write_synced(&ndjson, &versions_bytes)?;
        let manifest = qdir.join("MANIFEST.txt");
        let mut m = std::fs::read_to_string(&manifest)
            .map_err(|e| Error::io("read manifest", &manifest, e))?;
        let _ = write!(
            m,
            "lost lsns: {first_lost}..={last}\nresource versions: {versions} ({versions_file})\n"
        );
        write_synced(&manifest, m.as_bytes())?;
        truncate(&seg_path, offset)?;
        crate::log::files::sync_dir(&log_dir)?;
        tracing::warn!(
            first_lost,
            last_lost = last,
            versions,
            quarantine = %qdir.display(),
            "log cut back to where it agrees with the leader; what was cut is in quarantine"
        );
        Ok(Some(CutReport {
            quarantine: qdir,
            first_lsn: first_lost,
            last_lsn: last,
            versions,
        }))
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| Error::io("create", path, e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io("write", path, e))?;
    f.sync_all().map_err(|source| Error::Fsync {
        path: path.to_owned(),
        source,
    })
}
