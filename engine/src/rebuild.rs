//! Bringing an index up to the log: replaying a tail after a crash, or
//! rebuilding from nothing (missing or stale index, `reindex`, `verify`).

use std::path::Path;

use crate::dict::Dictionaries;
use crate::error::{Error, Result};
use crate::frame::{FRAME_HEADER_BYTES, decode_records};
use crate::index::{FrameToApply, Index, Tables, apply_frame};
use crate::keys::KeyExtractor;
use crate::log::Segments;
use crate::record::{OpKind, RecordRef};
use crate::recovery::read_segment;
use crate::segment::scan_segment;

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

/// Applies every frame after `after_lsn` (and, with `upto`, ending at or
/// before it) to `ix`, in transactions of bounded log size, the last one
/// durable. With `deep`, also decodes every body and checks its CRC.
pub(crate) fn apply_log(
    ix: &Index,
    segments: &Segments,
    extractor: &dyn KeyExtractor,
    dicts: &Dictionaries,
    after_lsn: u64,
    upto: Option<u64>,
    deep: bool,
) -> Result<ApplyStats> {
    let extract = crate::keys::extracts(extractor);
    let list = segments.list();
    let mut stats = ApplyStats::default();
    // Non-durable transactions, then one durable commit at the end.
    'segments: for (i, first) in list.iter().enumerate() {
        if list.get(i + 1).is_some_and(|next| *next <= after_lsn + 1) {
            continue;
        }
        if upto.is_some_and(|u| *first > u) {
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
            let mut tables = Tables::open(&tx)?;
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
                    dicts,
                    extract,
                )?;
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
    Ok(stats)
}

fn check_bodies(
    dicts: &Dictionaries,
    frame: &[u8],
    h: &crate::frame::FrameHeader,
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
                .decode(r.codec, r.dict_id, r.stored, r.raw_len, r.raw_crc)
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

/// Builds a fresh index at `path` from the whole log (up to `upto`).
pub(crate) fn rebuild_into(
    path: &Path,
    segments: &Segments,
    extractor: &dyn KeyExtractor,
    dicts: &Dictionaries,
    upto: Option<u64>,
    deep: bool,
) -> Result<(Index, ApplyStats)> {
    if path.exists() {
        std::fs::remove_file(path).map_err(|e| Error::io("remove old index", path, e))?;
    }
    let ix = Index::open(path)?;
    ix.initialise(extractor.name())?;
    let stats = apply_log(&ix, segments, extractor, dicts, 0, upto, deep)?;
    Ok((ix, stats))
}
