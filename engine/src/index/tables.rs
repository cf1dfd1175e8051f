//! The index: redb tables derived from the log, never the source of truth.
//!
//! Every table is a function of the log and the key extractor. The live
//! writer and a rebuild run the same [`apply_frame`], so a rebuilt index
//! equals the live one table for table (checked by `verify`). The LSN the
//! index has applied is committed in the same redb transaction as the
//! entries; on open the log after it is replayed. Commits are non-durable
//! (no fsync) between periodic durable ones: after a crash redb returns to
//! its last durable commit and the replay redoes the rest.
//!
//! Search keys are the exception to "one transaction": they live in the
//! key store (`keystore`), a file of their own under in-memory runs, with
//! a watermark of their own (`keys_lsn`, never past this index's durable
//! LSN). A snapshot pairs the two consistently; a replay redoes keys from
//! `keys_lsn` and everything else from `applied_lsn`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    Table, TableDefinition, WriteTransaction,
};

use crate::error::{Error, Result};
use crate::index::INDEX_FORMAT_VERSION;
use crate::index::keys::KeyExtractor;
use crate::index::keys::runs::{Bytes, Merged, RunSet, Source, run_source};
use crate::index::keys::store::{FileSet, KeyStore, keys_path};
use crate::limits::{INDEX_KEY_BYTES_MAX, INDEX_KEYS_PER_VERSION_MAX};
use crate::log::codec::{Put, Reader};
use crate::log::dict::Dictionaries;
use crate::log::files::Segments;
use crate::log::frame::{FRAME_HEADER_BYTES, FrameHeader, decode_records};
use crate::log::record::{BodyCodec, OpKind, RecordRef, ResourceRef};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_TEXT: TableDefinition<&str, &str> = TableDefinition::new("meta_text");
/// (type, id, version) -> that version. Versions increase per resource
/// (densely within an epoch; a new epoch may jump ahead, see
/// `limits::EPOCH_VERSIONS`), so the newest is the last row of the
/// resource and the one before a version is the row before it.
const VERSIONS: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("versions");
/// (type, lsn) -> (id, version), for type history.
const TYPE_LSNS: TableDefinition<(&str, u64), (&str, u64)> = TableDefinition::new("type_lsns");
/// frame timestamp -> first LSN written at that timestamp (timestamps never
/// decrease in LSN order, so this maps `_since` to an LSN).
const TIMES: TableDefinition<u64, u64> = TableDefinition::new("times");
/// first LSN of each frame -> (segment first LSN, file offset); system
/// history and the change feed read records from the log through it.
const FRAMES: TableDefinition<u64, (u64, u64)> = TableDefinition::new("frames");
// The key store holds one more table, `keys`: (key, type, id) for the
// current live version of each resource as one byte string ([`key_row`],
// so that redb compares rows with one memcmp). A resource's keys are
// removed on its next version by extracting them again from the previous
// body (the extractor is deterministic and named in `meta`).
/// type -> (live resources, versions).
const TYPE_STATS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("type_stats");
/// dictionary id -> bytes.
const DICTS: TableDefinition<u32, &[u8]> = TableDefinition::new("dicts");
/// epoch -> LSN of its EpochStart record.
const EPOCHS: TableDefinition<u64, u64> = TableDefinition::new("epochs");

const META_FORMAT: &str = "format_version";
const META_APPLIED_LSN: &str = "applied_lsn";
const META_APPLIED_CRC: &str = "applied_frame_crc";
const META_EXTRACTOR: &str = "extractor";

/// Where one resource version is and what it is, as the index stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VersionEntry {
    pub version: u64,
    pub lsn: u64,
    pub timestamp_us: u64,
    pub op: OpKind,
    pub codec: BodyCodec,
    /// The stored body is sealed under a data key (kept in the codec
    /// byte's high bit, as in the log's record).
    pub sealed: bool,
    pub dict_id: u32,
    pub raw_len: u32,
    pub raw_crc: u32,
    pub segment: u64,
    pub offset: u64,
    pub stored_len: u32,
}

const VERSION_ENTRY_BYTES: usize = 58;
const CODEC_SEALED_BIT: u8 = 0x80;
/// A sealed dictionary's key in the `dicts` table: its id with this bit
/// set (ids stay below it, `crate::log::record::DICTIONARY_ID_LIMIT`).
const SEALED_DICTIONARY_BIT: u32 = crate::log::record::DICTIONARY_ID_LIMIT;

impl VersionEntry {
    fn encode(&self) -> [u8; VERSION_ENTRY_BYTES] {
        let mut v = Vec::with_capacity(VERSION_ENTRY_BYTES);
        v.put_u64(self.version);
        v.put_u64(self.lsn);
        v.put_u64(self.timestamp_us);
        v.put_u8(self.op as u8);
        v.put_u8(self.codec as u8 | if self.sealed { CODEC_SEALED_BIT } else { 0 });
        v.put_u32(self.dict_id);
        v.put_u32(self.raw_len);
        v.put_u32(self.raw_crc);
        v.put_u64(self.segment);
        v.put_u64(self.offset);
        v.put_u32(self.stored_len);
        let mut out = [0u8; VERSION_ENTRY_BYTES];
        out.copy_from_slice(&v);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = |e: crate::log::codec::DecodeError| Error::Corrupt(format!("index entry: {e}"));
        let mut r = Reader::new(bytes);
        let version = r.u64("version").map_err(bad)?;
        let lsn = r.u64("lsn").map_err(bad)?;
        let timestamp_us = r.u64("timestamp").map_err(bad)?;
        let op = match r.u8("op").map_err(bad)? {
            1 => OpKind::Create,
            2 => OpKind::Update,
            3 => OpKind::Delete,
            o => return Err(Error::Corrupt(format!("index entry: op {o}"))),
        };
        let codec_byte = r.u8("codec").map_err(bad)?;
        let codec = BodyCodec::from_u8(codec_byte & !CODEC_SEALED_BIT).map_err(bad)?;
        Ok(Self {
            version,
            lsn,
            timestamp_us,
            op,
            codec,
            sealed: codec_byte & CODEC_SEALED_BIT != 0,
            dict_id: r.u32("dict").map_err(bad)?,
            raw_len: r.u32("raw len").map_err(bad)?,
            raw_crc: r.u32("raw crc").map_err(bad)?,
            segment: r.u64("segment").map_err(bad)?,
            offset: r.u64("offset").map_err(bad)?,
            stored_len: r.u32("stored len").map_err(bad)?,
        })
    }

    pub(crate) fn is_live(&self) -> bool {
        self.op != OpKind::Delete
    }
}

/// A frame to apply, with where it lives and, for live commits, the
/// secondary keys already extracted by the committers (indexed by record).
pub(crate) struct FrameToApply<'a> {
    pub header: FrameHeader,
    pub segment: u64,
    pub offset: u64,
    /// The frame's bytes, header included.
    pub bytes: &'a [u8],
    pub keys: Option<&'a [Option<Vec<Vec<u8>>>]>,
}

/// The open redb index and its key store. Dropping it stops the key
/// store's flusher after a last flush of what is durable.
pub(crate) struct Index {
    db: Database,
    pub(crate) keys: Arc<KeyStore>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Index {
    fn drop(&mut self) {
        self.keys.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What the index says about itself.
pub(crate) struct IndexState {
    pub applied_lsn: u64,
    pub applied_crc: u64,
    pub format: u64,
    pub extractor: String,
}

/// Copies every row of `def` as `from` sees it into `to`.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &ReadTransaction,
    to: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<()> {
    let src = from.open_table(def)?;
    let mut dst = to.open_table(def)?;
    for row in src.iter()? {
        let (k, v) = row?;
        dst.insert(k.value(), v.value())?;
    }
    Ok(())
}

impl Index {
    /// Opens (or creates) the index file and its key store, holding up to
    /// `key_entries` key changes in memory before writing them to the
    /// key files. Readers see nothing until [`Index::start`].
    pub(crate) fn open(
        path: &Path,
        key_entries: usize,
        keys: Option<Arc<crate::crypt::datakeys::DataKeys>>,
    ) -> Result<Self> {
        let db = Database::builder()
            .set_cache_size(256 * 1024 * 1024)
            .create(path)?;
        let keys = Arc::new(KeyStore::open(&keys_path(path), key_entries, keys)?);
        // Built first, so that if a thread fails to start, dropping it
        // stops the one that did.
        let mut index = Self {
            db,
            keys,
            threads: Vec::new(),
        };
        for (name, work) in [
            ("vigil-keys-flush", KeyStore::run_flusher as fn(&KeyStore)),
            ("vigil-keys-merge", KeyStore::run_merger),
        ] {
            let keys = index.keys.clone();
            let thread = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || work(&keys))
                .map_err(|e| Error::io("start a key store thread", path, e))?;
            index.threads.push(thread);
        }
        // Create every table so read transactions never see a missing one.
        let tx = index.db.begin_write()?;
        {
            let _ = Tables::open(&index, &tx)?;
            let _ = tx.open_table(META_TEXT)?;
        }
        tx.commit()?;
        Ok(index)
    }

    /// Makes the index readable at its applied LSN. The key files must be
    /// at or below it and end on a frame of this log (else cleared first).
    pub(crate) fn start(&self) -> Result<()> {
        self.keys.start_at(self.state()?.applied_lsn);
        Ok(())
    }

    pub(crate) fn state(&self) -> Result<IndexState> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        let text = tx.open_table(META_TEXT)?;
        let get = |k: &str| -> Result<u64> { Ok(meta.get(k)?.map_or(0, |v| v.value())) };
        Ok(IndexState {
            applied_lsn: get(META_APPLIED_LSN)?,
            applied_crc: get(META_APPLIED_CRC)?,
            format: get(META_FORMAT)?,
            extractor: text
                .get(META_EXTRACTOR)?
                .map(|v| v.value().to_owned())
                .unwrap_or_default(),
        })
    }

    /// Writes a copy of this index at `path`, in a new directory on the
    /// store's filesystem (so key files are hard-linked): the index file
    /// holding every table as one read transaction sees it, and its key
    /// store as a reader in that transaction sees it (its files, and its
    /// runs in memory written as one more), both at the same frame: the
    /// store that opens the copy replays nothing for them. Returns the
    /// tables' applied LSN and the CRC of the frame ending there.
    pub(crate) fn snapshot_to(&self, path: &Path) -> Result<(u64, u32)> {
        let dest = path
            .parent()
            .ok_or_else(|| Error::Corrupt(format!("{} has no directory", path.display())))?;
        std::fs::create_dir(dest).map_err(|e| Error::io("create index snapshot", dest, e))?;
        let path = path.to_owned();
        let applied_crc = |rtx: &ReadTransaction| -> Result<u32> {
            let crc = rtx
                .open_table(META)?
                .get(META_APPLIED_CRC)?
                .map_or(0, |v| v.value());
            u32::try_from(crc).map_err(|_| {
                Error::Corrupt(format!("index applied-frame crc {crc} is not 32 bits"))
            })
        };
        let (rtx, lsn) = self.keys.snapshot_to(
            &keys_path(&path),
            || {
                let tx = self.db.begin_read()?;
                let lsn = tx
                    .open_table(META)?
                    .get(META_APPLIED_LSN)?
                    .map_or(0, |v| v.value());
                Ok((tx, lsn))
            },
            applied_crc,
        )?;
        let copy = Database::builder().create(&path)?;
        let mut wtx = copy.begin_write()?;
        wtx.set_durability(Durability::Immediate)?;
        copy_table(&rtx, &wtx, META)?;
        copy_table(&rtx, &wtx, META_TEXT)?;
        copy_table(&rtx, &wtx, VERSIONS)?;
        copy_table(&rtx, &wtx, TYPE_LSNS)?;
        copy_table(&rtx, &wtx, TIMES)?;
        copy_table(&rtx, &wtx, FRAMES)?;
        copy_table(&rtx, &wtx, TYPE_STATS)?;
        copy_table(&rtx, &wtx, DICTS)?;
        copy_table(&rtx, &wtx, EPOCHS)?;
        wtx.commit()?;
        let crc = applied_crc(&rtx)?;
        Ok((lsn, crc))
    }

    /// Stamps a fresh index with its format and extractor.
    pub(crate) fn initialise(&self, extractor: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            tx.open_table(META)?
                .insert(META_FORMAT, INDEX_FORMAT_VERSION)?;
            tx.open_table(META_TEXT)?
                .insert(META_EXTRACTOR, extractor)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn begin_write(&self, durable: bool) -> Result<WriteTransaction> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        Ok(tx)
    }

    pub(crate) fn begin_read(&self) -> Result<ReadTransaction> {
        Ok(self.db.begin_read()?)
    }

    /// Every dictionary the index holds: id, whether sealed, bytes as stored.
    pub(crate) fn dictionaries(&self) -> Result<Vec<(u32, bool, Vec<u8>)>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(DICTS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let key = k.value();
            out.push((
                key & !SEALED_DICTIONARY_BIT,
                key & SEALED_DICTIONARY_BIT != 0,
                v.value().to_vec(),
            ));
        }
        Ok(out)
    }
}

/// All tables of a write transaction, opened once per transaction.
pub(crate) struct Tables<'t> {
    meta: Table<'t, &'static str, u64>,
    versions: Table<'t, (&'static str, &'static str, u64), &'static [u8]>,
    type_lsns: Table<'t, (&'static str, u64), (&'static str, u64)>,
    times: Table<'t, u64, u64>,
    frames: Table<'t, u64, (u64, u64)>,
    scratch_row: Vec<u8>,
    /// This transaction's key changes: row -> present (newest wins).
    key_changes: BTreeMap<Vec<u8>, bool>,
    /// The main index's LSN after this transaction.
    applied_lsn: u64,
    /// The last frame whose keys this transaction applied: (LSN, CRC).
    keys_end: Option<(u64, u32)>,
    keys: Arc<KeyStore>,
    type_stats: Table<'t, &'static str, (u64, u64)>,
    dicts: Table<'t, u32, &'static [u8]>,
    epochs: Table<'t, u64, u64>,
    /// Per-type (live delta, versions delta), flushed once per transaction.
    stats: HashMap<String, (i64, u64)>,
    scratch_keys: Vec<Vec<u8>>,
}

impl<'t> Tables<'t> {
    pub(crate) fn open(ix: &Index, tx: &'t WriteTransaction) -> Result<Self> {
        let meta = tx.open_table(META)?;
        let applied_lsn = meta.get(META_APPLIED_LSN)?.map_or(0, |v| v.value());
        Ok(Self {
            meta,
            versions: tx.open_table(VERSIONS)?,
            type_lsns: tx.open_table(TYPE_LSNS)?,
            times: tx.open_table(TIMES)?,
            frames: tx.open_table(FRAMES)?,
            key_changes: BTreeMap::new(),
            applied_lsn,
            keys_end: None,
            keys: ix.keys.clone(),
            type_stats: tx.open_table(TYPE_STATS)?,
            dicts: tx.open_table(DICTS)?,
            epochs: tx.open_table(EPOCHS)?,
            stats: HashMap::new(),
            scratch_row: Vec::new(),
            scratch_keys: Vec::new(),
        })
    }

    /// Writes the per-type counters accumulated by [`apply_frame`] and
    /// publishes the key changes; the caller commits next.
    pub(crate) fn finish(mut self) -> Result<()> {
        for (ty, (live_delta, versions_delta)) in std::mem::take(&mut self.stats) {
            let (live, versions) = self
                .type_stats
                .get(ty.as_str())?
                .map_or((0, 0), |v| v.value());
            let live = live
                .checked_add_signed(live_delta)
                .ok_or_else(|| Error::Corrupt(format!("live count of {ty} below zero")))?;
            self.type_stats
                .insert(ty.as_str(), (live, versions + versions_delta))?;
        }
        let changes = std::mem::take(&mut self.key_changes)
            .into_iter()
            .map(|(row, present)| (Bytes::from(row), present))
            .collect::<Vec<_>>();
        assert!(
            changes.is_empty() || self.keys_end.is_some(),
            "key changes come from a frame"
        );
        let (run_end, crc) = self.keys_end.unwrap_or((self.applied_lsn, 0));
        self.keys.publish(self.applied_lsn, run_end, crc, changes)
    }
}

/// A `keys` row: the key with each 0x00 written as 0x00 0xff, then 0x00
/// 0x01, the type, 0x00 and the id (neither holds a 0x00: a batch admits
/// only printable ASCII in both, `batch::validate_name`). Rows sort as
/// (key, type, id) tuples do, and every row of a key `k` lies in
/// `escaped_key(k)..escaped_key(k ++ [0])`, so a range of keys is the byte
/// range between their escaped forms.
fn key_row(key: &[u8], ty: &str, id: &str, out: &mut Vec<u8>) {
    debug_assert!(!ty.as_bytes().contains(&0) && !id.as_bytes().contains(&0));
    out.clear();
    escape_into(key, out);
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(ty.as_bytes());
    out.push(0);
    out.extend_from_slice(id.as_bytes());
}

fn escape_into(key: &[u8], out: &mut Vec<u8>) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
}

/// A key as it begins its rows (no terminator): a range bound.
fn escaped_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 4);
    escape_into(key, &mut out);
    out
}

/// The (key, type, id) of a `keys` row; `None` if it is not one.
fn split_key_row(row: &[u8]) -> Option<(Vec<u8>, &str, &str)> {
    let mut key = Vec::with_capacity(row.len());
    let mut i = 0;
    loop {
        match (row.get(i)?, row.get(i + 1)) {
            (0, Some(0xff)) => key.push(0),
            (0, Some(1)) => break,
            (0, _) => return None,
            (b, _) => {
                key.push(*b);
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    let rest = std::str::from_utf8(&row[i + 2..]).ok()?;
    let (ty, id) = rest.split_once('\0')?;
    Some((key, ty, id))
}

/// Which parts of the index a frame is applied to: a replay after a crash
/// redoes keys from the key files' LSN and the rest from the index's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parts {
    /// Versions, history, frames, times, stats, dictionaries, epochs.
    pub tables: bool,
    /// Search keys (only with an extractor that makes them).
    pub keys: bool,
}

/// Applies one frame to the index. The frame's CRC has been checked.
///
/// Bodies are decoded only when the extractor needs them and the committer
/// did not already provide the keys.
pub(crate) fn apply_frame(
    t: &mut Tables<'_>,
    frame: &FrameToApply<'_>,
    extractor: &dyn KeyExtractor,
    log: &Segments,
    dicts: &Dictionaries,
    parts: Parts,
) -> Result<()> {
    let h = &frame.header;
    let payload = &frame.bytes[FRAME_HEADER_BYTES..h.frame_len() as usize];
    let records = decode_records(h, payload)
        .map_err(|e| Error::Corrupt(format!("frame at lsn {}: {e}", h.first_lsn)))?;
    if parts.tables {
        t.frames
            .insert(h.first_lsn, (frame.segment, frame.offset))?;
        if t.times.get(h.timestamp_us)?.is_none() {
            t.times.insert(h.timestamp_us, h.first_lsn)?;
        }
    }
    for (i, (lsn, rec, body_offset)) in records.iter().enumerate() {
        match rec {
            RecordRef::Resource(r) => {
                let entry = entry_of(h, frame.segment, frame.offset, *lsn, r, *body_offset);
                let previous = match r.version {
                    1 => None,
                    v => t
                        .versions
                        .range((r.resource_type, r.id, 0)..(r.resource_type, r.id, v))?
                        .next_back()
                        .transpose()?
                        .map(|(_, old)| VersionEntry::decode(old.value()))
                        .transpose()?,
                };
                let was_live = previous.is_some_and(|e| e.is_live());
                if parts.tables {
                    t.versions.insert(
                        (r.resource_type, r.id, r.version),
                        entry.encode().as_slice(),
                    )?;
                    t.type_lsns
                        .insert((r.resource_type, *lsn), (r.id, r.version))?;
                    let delta = i64::from(entry.is_live()) - i64::from(was_live);
                    match t.stats.get_mut(r.resource_type) {
                        Some(stat) => {
                            stat.0 += delta;
                            stat.1 += 1;
                        }
                        None => {
                            t.stats.insert(r.resource_type.to_owned(), (delta, 1));
                        }
                    }
                }
                if (parts.tables || parts.keys)
                    && extractor.defining_type() == Some(r.resource_type)
                {
                    let body = match r.op {
                        OpKind::Delete => None,
                        _ => Some(decode_record_body(r, *lsn, dicts)?),
                    };
                    extractor.define(*lsn, r.id, body.as_deref());
                }
                if parts.keys {
                    let previous = previous.filter(|e| e.is_live());
                    let old = KeyVersion::Stored(previous.as_ref(), log);
                    let given = frame.keys.and_then(|k| k.get(i)).and_then(|k| k.as_ref());
                    let new = entry
                        .is_live()
                        .then_some(KeyVersion::Record(r, *lsn, given));
                    apply_keys(t, r.resource_type, r.id, old, new, extractor, dicts)?;
                }
            }
            RecordRef::Rekey { resource_type, id } if parts.keys => {
                rekey(t, *lsn, resource_type, id, extractor, log, dicts)?;
            }
            RecordRef::EpochStart { epoch } if parts.tables => {
                t.epochs.insert(*epoch, *lsn)?;
            }
            RecordRef::Dictionary { id, sealed, bytes } if parts.tables => {
                let key = if *sealed {
                    id | SEALED_DICTIONARY_BIT
                } else {
                    *id
                };
                t.dicts.insert(key, *bytes)?;
                dicts.install_stored(*id, *sealed, bytes)?;
            }
            RecordRef::EpochStart { .. }
            | RecordRef::Dictionary { .. }
            | RecordRef::Rekey { .. }
            | RecordRef::Checkpoint { .. } => {}
        }
    }
    let end = h.end_lsn() - 1;
    if parts.keys {
        t.keys_end = Some((end, h.crc));
    }
    if parts.tables {
        t.meta.insert(META_APPLIED_LSN, end)?;
        t.meta.insert(META_APPLIED_CRC, u64::from(h.crc))?;
        t.applied_lsn = end;
    }
    Ok(())
}

/// Where a version's keys come from.
enum KeyVersion<'a> {
    /// The record being applied at this LSN, with the keys its committer
    /// extracted, if it did (the extractor's fixed keys only).
    Record(&'a ResourceRef<'a>, u64, Option<&'a Vec<Vec<u8>>>),
    /// Extracted from the body the index entry points to in the log (no
    /// entry: the version had no keys).
    Stored(Option<&'a VersionEntry>, &'a Segments),
}

impl KeyVersion<'_> {
    /// The version's keys, normalised as they were stored: a new record's
    /// fixed keys and those the definitions at its LSN give it; for a
    /// stored version (about to be removed), its fixed keys and every key
    /// any definition could have given it.
    fn keys(
        &self,
        ty: &str,
        id: &str,
        extractor: &dyn KeyExtractor,
        dicts: &Dictionaries,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<()> {
        out.clear();
        match self {
            KeyVersion::Record(r, lsn, given) => {
                let defined = extractor.has_defined_keys(*lsn, ty);
                let body = match (given, defined) {
                    (Some(_), false) => None,
                    _ => Some(decode_record_body(r, *lsn, dicts)?),
                };
                match (given, &body) {
                    (Some(keys), _) => out.extend(keys.iter().cloned()),
                    (None, Some(body)) => extractor.keys(ty, body, out),
                    (None, None) => {}
                }
                if let (true, Some(body)) = (defined, &body) {
                    extractor.defined_keys(*lsn, ty, body, out);
                }
            }
            KeyVersion::Stored(None, _) => return Ok(()),
            KeyVersion::Stored(Some(e), log) => {
                let body = read_body(log, dicts, e)?;
                extractor.keys(ty, &body, out);
                if extractor.ever_defines(ty) {
                    extractor.defined_keys_ever(ty, &body, out);
                }
            }
        }
        normalise_keys(out, ty, id);
        Ok(())
    }
}

/// The newest version of a resource in the `versions` table (of a read
/// or a write transaction), live or deleted.
fn head_in(
    t: &impl ReadableTable<(&'static str, &'static str, u64), &'static [u8]>,
    ty: &str,
    id: &str,
) -> Result<Option<VersionEntry>> {
    t.range((ty, id, 0)..=(ty, id, u64::MAX))?
        .next_back()
        .transpose()?
        .map(|(_, v)| VersionEntry::decode(v.value()))
        .transpose()
}

/// Stages `keys` of resource `ty`/`id` as present or removed in this
/// transaction's key changes (the last staging of a row wins).
fn stage_keys(t: &mut Tables<'_>, ty: &str, id: &str, keys: &[Vec<u8>], present: bool) {
    for k in keys {
        key_row(k, ty, id, &mut t.scratch_row);
        t.key_changes.insert(t.scratch_row.clone(), present);
    }
}

/// The decoded body of a record being applied.
fn decode_record_body(r: &ResourceRef<'_>, lsn: u64, dicts: &Dictionaries) -> Result<Vec<u8>> {
    dicts
        .decode(r.codec, r.dict_id, r.sealed, r.stored, r.raw_len, r.raw_crc)
        .map_err(|e| Error::Corrupt(format!("record at lsn {lsn}: {e}")))
}

/// A rekey record at `lsn`: the current live version of the resource
/// loses every key a definition could have given it and gains those the
/// definitions at `lsn` give it; its fixed keys stay. A deleted or
/// unknown resource has nothing to rekey.
fn rekey(
    t: &mut Tables<'_>,
    lsn: u64,
    ty: &str,
    id: &str,
    extractor: &dyn KeyExtractor,
    log: &Segments,
    dicts: &Dictionaries,
) -> Result<()> {
    if !extractor.ever_defines(ty) {
        return Ok(());
    }
    let Some(head) = head_in(&t.versions, ty, id)?.filter(VersionEntry::is_live) else {
        return Ok(());
    };
    let body = read_body(log, dicts, &head)?;
    let (mut remove, mut insert) = (Vec::new(), Vec::new());
    extractor.rekey_keys(lsn, ty, &body, &mut remove, &mut insert);
    normalise_keys(&mut remove, ty, id);
    normalise_keys(&mut insert, ty, id);
    stage_keys(t, ty, id, &remove, false);
    stage_keys(t, ty, id, &insert, true);
    Ok(())
}

/// The body an index entry points to, read from the log and checked.
pub(crate) fn read_body(log: &Segments, dicts: &Dictionaries, e: &VersionEntry) -> Result<Vec<u8>> {
    if !e.is_live() {
        return Ok(Vec::new());
    }
    let stored = log.read_at(e.segment, e.offset, e.stored_len as usize)?;
    dicts
        .decode(e.codec, e.dict_id, e.sealed, &stored, e.raw_len, e.raw_crc)
        .map_err(|detail| Error::ChecksumMismatch {
            segment: log.path_of(e.segment),
            offset: e.offset,
            detail,
        })
}

/// Secondary keys of one record: the old version's rows are removed and
/// the new one's added (a row in both stays). `old` is the previous live
/// version (a create has none); `new` is `None` for a delete.
fn apply_keys(
    t: &mut Tables<'_>,
    ty: &str,
    id: &str,
    old: KeyVersion<'_>,
    new: Option<KeyVersion<'_>>,
    extractor: &dyn KeyExtractor,
    dicts: &Dictionaries,
) -> Result<()> {
    let mut keys = std::mem::take(&mut t.scratch_keys);
    old.keys(ty, id, extractor, dicts, &mut keys)?;
    stage_keys(t, ty, id, &keys, false);
    if let Some(new) = new {
        new.keys(ty, id, extractor, dicts, &mut keys)?;
        stage_keys(t, ty, id, &keys, true);
    }
    t.scratch_keys = keys;
    Ok(())
}

/// The index entry of a resource record at `lsn` in the frame at
/// `frame_offset` of `segment`, whose body starts `body_offset` bytes into
/// the payload.
pub(crate) fn entry_of(
    h: &FrameHeader,
    segment: u64,
    frame_offset: u64,
    lsn: u64,
    r: &ResourceRef<'_>,
    body_offset: usize,
) -> VersionEntry {
    VersionEntry {
        version: r.version,
        lsn,
        timestamp_us: h.timestamp_us,
        op: r.op,
        codec: r.codec,
        sealed: r.sealed,
        dict_id: r.dict_id,
        raw_len: r.raw_len,
        raw_crc: r.raw_crc,
        segment,
        offset: frame_offset + FRAME_HEADER_BYTES as u64 + body_offset as u64,
        stored_len: r.stored.len() as u32,
    }
}

/// Sorts, dedups and bounds the keys of one version.
pub(crate) fn normalise_keys(keys: &mut Vec<Vec<u8>>, resource_type: &str, id: &str) {
    let before = keys.len();
    keys.retain(|k| k.len() <= INDEX_KEY_BYTES_MAX);
    keys.sort();
    keys.dedup();
    keys.truncate(INDEX_KEYS_PER_VERSION_MAX);
    if keys.len() < before && before > INDEX_KEYS_PER_VERSION_MAX {
        tracing::warn!(
            resource_type,
            id,
            before,
            kept = keys.len(),
            "index keys dropped over the limit"
        );
    }
}

type FrameRow<'a> = std::result::Result<
    (
        redb::AccessGuard<'a, u64>,
        redb::AccessGuard<'a, (u64, u64)>,
    ),
    redb::StorageError,
>;

/// The first `limit` rows of the frames table from `rows`, as
/// (first LSN, segment, offset).
fn take_frames<'a>(
    rows: impl Iterator<Item = FrameRow<'a>>,
    limit: usize,
) -> Result<Vec<(u64, u64, u64)>> {
    let mut out = Vec::new();
    for row in rows.take(limit) {
        let (k, v) = row?;
        let (seg, off) = v.value();
        out.push((k.value(), seg, off));
    }
    Ok(out)
}

/// Read-side queries over one consistent snapshot: a read transaction of
/// the index, and the search keys at the same LSN (the runs published for
/// it over the key files).
pub(crate) struct Snapshot {
    tx: ReadTransaction,
    key_runs: Arc<RunSet>,
    key_files: Arc<FileSet>,
}

/// A resource version reference as listed by history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub resource_type: String,
    pub id: String,
    pub entry: VersionEntry,
}

impl Snapshot {
    pub(crate) fn new(index: &Index) -> Result<Self> {
        let (tx, key_runs, key_files) = index.keys.snapshot(|| {
            let tx = index.begin_read()?;
            let lsn = tx
                .open_table(META)?
                .get(META_APPLIED_LSN)?
                .map_or(0, |v| v.value());
            Ok((tx, lsn))
        })?;
        Ok(Self {
            tx,
            key_runs,
            key_files,
        })
    }

    /// A snapshot of the index tables alone (its keys read as empty), for
    /// checks made while opening, before [`Index::start`].
    pub(crate) fn tables_only(index: &Index) -> Result<Self> {
        Ok(Self {
            tx: index.begin_read()?,
            key_runs: Arc::new(RunSet::default()),
            key_files: index.keys.files(),
        })
    }

    /// The `keys` rows with `lo <= row < hi` (`hi = None`: to the end),
    /// the runs merged over the file, removals dropped.
    fn key_rows(
        &self,
        lo: &[u8],
        hi: Option<&[u8]>,
    ) -> Result<impl Iterator<Item = Result<Vec<u8>>> + '_> {
        let mut sources: Vec<Source<'_, Error>> = Vec::new();
        for file in &self.key_files.files {
            sources.push(Box::new(file.range(lo, hi)));
        }
        for run in &self.key_runs.runs {
            let entries = match hi {
                Some(hi) => run.range(lo, hi),
                None => &run.entries[run.entries.partition_point(|(k, _)| k.as_ref() < lo)..],
            };
            sources.push(run_source(entries));
        }
        Ok(Merged::new(sources).filter_map(|row| match row {
            Ok((k, true)) => Some(Ok(k)),
            Ok((_, false)) => None,
            Err(e) => Some(Err(e)),
        }))
    }

    /// Compares every table of this snapshot with another index; the first
    /// difference is an error.
    pub(crate) fn compare(&self, other: &Index) -> Result<()> {
        let a = &self.tx;
        let b = other.db.begin_read()?;
        macro_rules! same {
            ($def:expr, $name:literal) => {{
                let ta = a.open_table($def)?;
                let tb = b.open_table($def)?;
                if ta.len()? != tb.len()? {
                    return Err(Error::IndexMismatch(format!(
                        "table {} has {} rows, a rebuild has {}",
                        $name,
                        ta.len()?,
                        tb.len()?
                    )));
                }
                for (ra, rb) in ta.iter()?.zip(tb.iter()?) {
                    let (ka, va) = ra?;
                    let (kb, vb) = rb?;
                    if ka.value() != kb.value() || va.value() != vb.value() {
                        return Err(Error::IndexMismatch(format!(
                            "table {} differs from a rebuild at key {:?}",
                            $name,
                            ka.value()
                        )));
                    }
                }
            }};
        }
        same!(META, "meta");
        same!(META_TEXT, "meta_text");
        same!(VERSIONS, "versions");
        same!(TYPE_LSNS, "type_lsns");
        same!(TIMES, "times");
        same!(FRAMES, "frames");
        same!(TYPE_STATS, "type_stats");
        same!(DICTS, "dicts");
        same!(EPOCHS, "epochs");
        let other = Snapshot::new(other)?;
        let mut ra = self.key_rows(&[], None)?;
        let mut rb = other.key_rows(&[], None)?;
        loop {
            match (ra.next().transpose()?, rb.next().transpose()?) {
                (None, None) => break,
                (a, b) if a == b => continue,
                (a, b) => {
                    return Err(Error::IndexMismatch(format!(
                        "table keys differs from a rebuild: {a:?} against {b:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn applied_lsn(&self) -> Result<u64> {
        Ok(self
            .tx
            .open_table(META)?
            .get(META_APPLIED_LSN)?
            .map_or(0, |v| v.value()))
    }

    /// The newest version of a resource, live or deleted.
    pub(crate) fn head(&self, resource_type: &str, id: &str) -> Result<Option<VersionEntry>> {
        head_in(&self.tx.open_table(VERSIONS)?, resource_type, id)
    }

    /// Ids of live resources of `resource_type` after `after`, in id
    /// order, at most `limit` (a deleted resource's rows are skipped):
    /// one scan of its `versions` rows, whose last per id is the head.
    pub(crate) fn live_ids(
        &self,
        resource_type: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let t = self.tx.open_table(VERSIONS)?;
        // Every id sorts at or after `after\u{1}` once past `after` (ids
        // are printable ASCII).
        let from = after.map(|a| format!("{a}\u{1}")).unwrap_or_default();
        let mut out: Vec<String> = Vec::new();
        // The id whose rows are being read, and whether its last was live.
        let mut current: Option<(String, bool)> = None;
        for row in t.range((resource_type, from.as_str(), 0)..)? {
            let (k, v) = row?;
            let (ty, id, _) = k.value();
            if ty != resource_type {
                break;
            }
            if let Some((done, live)) = current.take_if(|(c, _)| c != id) {
                if live {
                    out.push(done);
                }
                if out.len() >= limit {
                    return Ok(out);
                }
            }
            let live = VersionEntry::decode(v.value())?.is_live();
            match &mut current {
                Some((_, l)) => *l = live,
                None => current = Some((id.to_owned(), live)),
            }
        }
        if let Some((id, true)) = current
            && out.len() < limit
        {
            out.push(id);
        }
        Ok(out)
    }

    pub(crate) fn version(
        &self,
        resource_type: &str,
        id: &str,
        version: u64,
    ) -> Result<Option<VersionEntry>> {
        let t = self.tx.open_table(VERSIONS)?;
        t.get((resource_type, id, version))?
            .map(|v| VersionEntry::decode(v.value()))
            .transpose()
    }

    /// The first LSN written at or after `since_us`, or `None` if none was.
    pub(crate) fn lsn_at_or_after(&self, since_us: u64) -> Result<Option<u64>> {
        let t = self.tx.open_table(TIMES)?;
        let first = t.range(since_us..)?.next().transpose()?;
        Ok(first.map(|(_, v)| v.value()))
    }

    /// Versions of one resource with `lo <= lsn <= hi`, newest first (or
    /// oldest first when `ascending`).
    pub(crate) fn instance_history(
        &self,
        resource_type: &str,
        id: &str,
        lo: u64,
        hi: u64,
        limit: usize,
        ascending: bool,
    ) -> Result<Vec<Listed>> {
        let t = self.tx.open_table(VERSIONS)?;
        let rows = t.range((resource_type, id, 0)..=(resource_type, id, u64::MAX))?;
        let rows: Box<dyn Iterator<Item = _>> = if ascending {
            Box::new(rows)
        } else {
            Box::new(rows.rev())
        };
        let mut out = Vec::new();
        for row in rows {
            let (_, v) = row?;
            let entry = VersionEntry::decode(v.value())?;
            let (skip, stop) = if ascending {
                (entry.lsn < lo, entry.lsn > hi)
            } else {
                (entry.lsn > hi, entry.lsn < lo)
            };
            if skip {
                continue;
            }
            if stop || out.len() >= limit {
                break;
            }
            out.push(Listed {
                resource_type: resource_type.to_owned(),
                id: id.to_owned(),
                entry,
            });
        }
        Ok(out)
    }

    /// Versions of one type with `lo <= lsn <= hi`, newest first (or
    /// oldest first when `ascending`).
    pub(crate) fn type_history(
        &self,
        resource_type: &str,
        lo: u64,
        hi: u64,
        limit: usize,
        ascending: bool,
    ) -> Result<Vec<Listed>> {
        let t = self.tx.open_table(TYPE_LSNS)?;
        let rows = t.range((resource_type, lo)..=(resource_type, hi))?;
        let rows: Box<dyn Iterator<Item = _>> = if ascending {
            Box::new(rows)
        } else {
            Box::new(rows.rev())
        };
        let mut refs = Vec::new();
        for row in rows.take(limit) {
            let (_, v) = row?;
            let (id, version) = v.value();
            refs.push((resource_type.to_owned(), id.to_owned(), version));
        }
        self.resolve(refs)
    }

    /// Frames starting at or before `lsn`, newest first, at most `limit`:
    /// (first LSN, segment, offset).
    pub(crate) fn frames_back_from(&self, lsn: u64, limit: usize) -> Result<Vec<(u64, u64, u64)>> {
        let t = self.tx.open_table(FRAMES)?;
        take_frames(t.range(..=lsn)?.rev(), limit)
    }

    fn resolve(&self, refs: Vec<(String, String, u64)>) -> Result<Vec<Listed>> {
        let mut out = Vec::with_capacity(refs.len());
        for (ty, id, version) in refs {
            let entry = self.version(&ty, &id, version)?.ok_or_else(|| {
                Error::Corrupt(format!(
                    "index lists {ty}/{id} version {version} but lacks it"
                ))
            })?;
            out.push(Listed {
                resource_type: ty,
                id,
                entry,
            });
        }
        Ok(out)
    }

    /// `(type, id)` of live resources with `lo <= key < hi`, in key order,
    /// optionally of one type, at most `limit`.
    pub(crate) fn lookup_range(
        &self,
        lo: &[u8],
        hi: &[u8],
        resource_type: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, String, String)>> {
        let mut out = Vec::new();
        if lo >= hi {
            return Ok(out);
        }
        let (lo, hi) = (escaped_key(lo), escaped_key(hi));
        for row in self.key_rows(&lo, Some(&hi))? {
            if out.len() >= limit {
                break;
            }
            let k = row?;
            let (key, ty, id) =
                split_key_row(&k).ok_or_else(|| Error::Corrupt(format!("keys row {k:?}")))?;
            if resource_type.is_some_and(|want| want != ty) {
                continue;
            }
            out.push((key, ty.to_owned(), id.to_owned()));
        }
        Ok(out)
    }

    /// `type -> (live resources, versions)`.
    pub(crate) fn type_stats(&self) -> Result<Vec<(String, u64, u64)>> {
        let t = self.tx.open_table(TYPE_STATS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let (live, versions) = v.value();
            out.push((k.value().to_owned(), live, versions));
        }
        Ok(out)
    }

    /// `(live resources, versions)` of one type; zeros for a type never
    /// written.
    pub(crate) fn type_stat(&self, ty: &str) -> Result<(u64, u64)> {
        let t = self.tx.open_table(TYPE_STATS)?;
        Ok(t.get(ty)?.map_or((0, 0), |v| v.value()))
    }

    /// The frame holding `lsn`: (frame first LSN, segment, offset).
    pub(crate) fn frame_holding(&self, lsn: u64) -> Result<Option<(u64, u64, u64)>> {
        let t = self.tx.open_table(FRAMES)?;
        let row = t.range(..=lsn)?.next_back().transpose()?;
        Ok(row.map(|(k, v)| {
            let (seg, off) = v.value();
            (k.value(), seg, off)
        }))
    }

    /// Frames starting after `lsn`, oldest first, at most `limit`.
    pub(crate) fn frames_after(&self, lsn: u64, limit: usize) -> Result<Vec<(u64, u64, u64)>> {
        let t = self.tx.open_table(FRAMES)?;
        take_frames(t.range(lsn.saturating_add(1)..)?, limit)
    }

    /// `epoch -> LSN of its EpochStart`, oldest first.
    pub(crate) fn epochs(&self) -> Result<Vec<(u64, u64)>> {
        let t = self.tx.open_table(EPOCHS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push((k.value(), v.value()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn row(k: &[u8], ty: &str, id: &str) -> Vec<u8> {
        let mut out = Vec::new();
        key_row(k, ty, id, &mut out);
        out
    }

    proptest! {
        // Keys drawn from a tiny alphabet with 0x00, 0x01 and 0xff, so
        // prefixes, separators and the escape byte collide often.
        #[test]
        fn key_rows_sort_and_range_as_tuples(
            rows in proptest::collection::vec(
                (proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(b'a'), Just(0xff)], 0..5),
                 prop_oneof![Just("A"), Just("B")],
                 prop_oneof![Just("x"), Just("y1")]),
                1..12),
            lo in proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(b'a'), Just(0xff)], 0..4),
            hi in proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(b'a'), Just(0xff)], 0..4),
        ) {
            let mut by_tuple = rows.clone();
            by_tuple.sort();
            let mut by_bytes = rows.clone();
            by_bytes.sort_by_key(|(k, t, i)| row(k, t, i));
            prop_assert_eq!(&by_tuple, &by_bytes);
            for (k, t, i) in &rows {
                let r = row(k, t, i);
                let (k2, t2, i2) = split_key_row(&r).expect("splits");
                prop_assert_eq!((&k2, t2, i2), (k, *t, *i));
                let in_keys = lo.as_slice() <= k.as_slice() && k.as_slice() < hi.as_slice();
                let in_rows = escaped_key(&lo) <= r && r < escaped_key(&hi);
                prop_assert_eq!(in_keys, in_rows, "key {:?} lo {:?} hi {:?}", k, lo, hi);
            }
        }
    }

    #[test]
    fn a_row_that_is_not_one_is_refused() {
        assert!(split_key_row(b"abc").is_none());
        assert!(split_key_row(&[b'a', 0, 2, b'T', 0, b'i']).is_none());
        assert!(split_key_row(&[b'a', 0, 1, b'T']).is_none());
    }

    #[test]
    fn version_entries_roundtrip() {
        let e = VersionEntry {
            version: 3,
            lsn: 99,
            timestamp_us: 5,
            op: OpKind::Update,
            codec: BodyCodec::ZstdDict,
            sealed: false,
            dict_id: 2,
            raw_len: 10,
            raw_crc: 11,
            segment: 1,
            offset: 76,
            stored_len: 7,
        };
        assert_eq!(VersionEntry::decode(&e.encode()).expect("decodes"), e);
        let sealed = VersionEntry { sealed: true, ..e };
        assert_eq!(
            VersionEntry::decode(&sealed.encode()).expect("decodes"),
            sealed
        );
    }
}
