//! Bringing an index up to the log: replaying a tail after a crash, or
//! rebuilding from nothing (missing or stale index, `reindex`, `verify`).

use std::path::Path;

use crate::error::{Error, Result};
use crate::index::keys::KeyExtractor;
use crate::index::tables::{FrameToApply, Index, Parts, Tables, apply_frame};
use crate::log::dict::Dictionaries;
use crate::log::files::Segments;
use crate::log::frame::{FRAME_HEADER_BYTES, decode_records};
use crate::log::record::{OpKind, RecordRef};
use crate::log::recovery::read_segment;
use crate::log::segment::scan_segment;

/// Log bytes applied per index transaction during replay and rebuild.
const REBUILD_TXN_LOG_BYTES: u64 = 4 * 1024 * 1024;

/// What a replay read and applied.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ApplyStats {
    pub segments: usize,
    pub frames: u64,
    pub records: u64,
    pub bodies: u64,
    pub bytes: u64,
}

/// Where a replay starts: the index's tables hold the log through
/// `tables`, its search keys through `keys` (the key files can trail).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplayFrom {
    pub tables: u64,
    pub keys: u64,
}

impl ReplayFrom {
    /// A replay of the whole log into an empty index.
    pub(crate) const START: ReplayFrom = ReplayFrom { tables: 0, keys: 0 };
}

/// Applies every frame after `from` (and, with `upto`, ending at or
/// before it) to `ix`, in transactions of bounded log size, the last one
/// durable: to the tables after `from.tables`, to the keys after
/// `from.keys`. With `deep`, also decodes every body and checks its CRC.
pub(crate) fn apply_log(
    ix: &Index,
    segments: &Segments,
    extractor: &dyn KeyExtractor,
    dicts: &Dictionaries,
    from: ReplayFrom,
    upto: Option<u64>,
    deep: bool,
) -> Result<ApplyStats> {
    let extract = crate::index::keys::extracts(extractor);
    let after_lsn = from.tables.min(from.keys);
    let mut applied = from.tables;
    let list = segments.list();
    let mut stats = ApplyStats::default();
    // Non-durable transactions, then one durable commit at the end.
    'segments: for (i, first) in list.iter().enumerate() {
        if list.get(i + 1).is_some_and(|next| *next <= after_lsn + 1) {
            continue;
        }
        // Past the LSN asked for (or, from an index already there, at
        // it): no segment is read.
        if upto.is_some_and(|u| *first > u || after_lsn >= u) {
            break;
        }
        let path = segments.path_of(*first);
        let bytes = read_segment(&path)?;
        let scan = scan_segment(&bytes).map_err(|e| Error::CorruptLog {
            segment: path.clone(),
            offset: 0,
            detail: e.0,
        })?;
        stats.segments += 1;
        let mut done = false;
        let mut frames = scan
            .frames
            .iter()
            .filter(|f| f.header.first_lsn > after_lsn)
            .peekable();
        // Bounded transactions bound the dirty pages redb holds in memory.
        while frames.peek().is_some() && !done {
            let tx = ix.begin_write(false)?;
            let mut tables = Tables::open(ix, &tx)?;
            let mut txn_bytes = 0u64;
            while let Some(f) = frames.next_if(|_| txn_bytes < REBUILD_TXN_LOG_BYTES) {
                let h = f.header;
                if upto.is_some_and(|u| h.end_lsn() - 1 > u) {
                    done = true;
                    break;
                }
                let frame_bytes = &bytes[f.offset as usize..(f.offset + h.frame_len()) as usize];
                apply_frame(
                    &mut tables,
                    &FrameToApply {
                        header: h,
                        segment: *first,
                        offset: f.offset,
                        bytes: frame_bytes,
                        keys: None,
                    },
                    extractor,
                    segments,
                    dicts,
                    Parts {
                        tables: h.first_lsn > from.tables,
                        keys: extract && h.first_lsn > from.keys,
                    },
                )?;
                applied = applied.max(h.end_lsn() - 1);
                stats.frames += 1;
                stats.records += u64::from(h.record_count);
                stats.bytes += h.frame_len();
                txn_bytes += h.frame_len();
                if deep {
                    stats.bodies += check_bodies(dicts, frame_bytes, &h, &path, f.offset)?;
                }
            }
            tables.finish()?;
            tx.commit()?;
            if ix.keys.due() {
                // Make what the runs hold durable so the flusher can take
                // it: a long replay holds bounded memory.
                ix.begin_write(true)?.commit()?;
                ix.keys.durable(applied);
            }
        }
        if done {
            break 'segments;
        }
        if let Some(stop) = scan.stop.as_ref().filter(|s| !s.zero_tail) {
            // The writer may be appending to the newest segment right now; a
            // partial frame past the LSN asked for is expected there.
            let needed_more = upto.is_some_and(|u| {
                scan.frames
                    .last()
                    .is_none_or(|f| f.header.end_lsn() - 1 < u)
            });
            if needed_more || i + 1 < list.len() {
                return Err(Error::CorruptLog {
                    segment: path,
                    offset: stop.offset,
                    detail: stop.error.to_string(),
                });
            }
        }
    }
    ix.begin_write(true)?.commit()?;
    ix.keys.durable(applied);
    Ok(stats)
}

fn check_bodies(
    dicts: &Dictionaries,
    frame: &[u8],
    h: &crate::log::frame::FrameHeader,
    path: &Path,
    offset: u64,
) -> Result<u64> {
    let recs = decode_records(h, &frame[FRAME_HEADER_BYTES..]).map_err(|e| Error::CorruptLog {
        segment: path.to_owned(),
        offset,
        detail: e.to_string(),
    })?;
    let mut n = 0;
    for (lsn, rec, _) in recs {
        if let RecordRef::Resource(r) = rec
            && r.op != OpKind::Delete
        {
            dicts
                .decode(r.codec, r.dict_id, r.sealed, r.stored, r.raw_len, r.raw_crc)
                .map_err(|detail| Error::ChecksumMismatch {
                    segment: path.to_owned(),
                    offset,
                    detail: format!("record at lsn {lsn}: {detail}"),
                })?;
            n += 1;
        }
    }
    Ok(n)
}

/// Builds a fresh index (and key files) at `path` from the whole log (up
/// to `upto`), holding up to `key_entries` key changes in memory.
pub(crate) fn rebuild_into(
    path: &Path,
    segments: &Segments,
    extractor: &dyn KeyExtractor,
    dicts: &Dictionaries,
    upto: Option<u64>,
    deep: bool,
    key_entries: usize,
) -> Result<(Index, ApplyStats)> {
    remove_index_files(path)?;
    let ix = Index::open(path, key_entries, dicts.keys().cloned())?;
    ix.initialise(extractor.name())?;
    ix.start()?;
    let stats = apply_log(
        &ix,
        segments,
        extractor,
        dicts,
        ReplayFrom::START,
        upto,
        deep,
    )?;
    Ok((ix, stats))
}

/// Removes the index file at `path` and its keys (the directory, and the
/// file index format 4 kept them in), if there.
pub(crate) fn remove_index_files(path: &Path) -> Result<()> {
    for p in [
        path.to_owned(),
        crate::index::keys::store::legacy_keys_path(path),
    ] {
        if p.exists() {
            std::fs::remove_file(&p).map_err(|e| Error::io("remove old index", &p, e))?;
        }
    }
    let keys = crate::index::keys::store::keys_path(path);
    if keys.exists() {
        std::fs::remove_dir_all(&keys).map_err(|e| Error::io("remove old index", &keys, e))?;
    }
    Ok(())
}
