//! [`Store`]: the engine's public face. Opening, committing, reading.

pub(crate) mod options;
pub(crate) mod read;
pub(crate) mod state;

use options::{DictionaryPolicy, Options};
use state::{INDEX_FILE, IndexState, Inner, LogState};

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::KeyExtractor;
use crate::crypt::datakeys::{DataKeyStatus, DataKeys};
use crate::error::{Error, Result};
use crate::index::INDEX_FORMAT_VERSION;
use crate::index::rebuild::{ReplayFrom, apply_log, rebuild_into};
use crate::index::tables::{Index, Listed, Snapshot, entry_of};
use crate::limits::{
    COMMIT_QUEUE_MAX, HISTORY_PAGE_MAX, KEY_BUFFER_ENTRIES_MAX, RESOURCE_BYTES_MAX,
    SEGMENT_BYTES_MIN, SEGMENT_BYTES_TARGET,
};
use crate::log::dict::{Dictionaries, Encoded};
use crate::log::files::{Appender, Segments};
use crate::log::frame::{
    FRAME_HEADER_BYTES, FrameHeader, check_frame, decode_records, parse_header,
};
use crate::log::record::{OpKind, RecordRef, Watermark};
use crate::log::recovery::{RecoverOptions, recover};
use crate::store::read::{
    Change, Current, HistoryCursor, HistoryPage, HistoryQuery, HistoryScope, PagePosition,
    StoreStats, TypeCount, VerifyReport, Version, VersionRead,
};
use crate::write::batch::{Action, Batch, Committed};
use crate::write::writer::{Control, PreparedBody, PreparedOp, Reply, Request, WriterState};

const LOCK_FILE: &str = "LOCK";
/// Frame locations fetched from the index per lookup while walking the log.
const FRAMES_PER_LOOKUP: usize = 64;
const LOG_DIR: &str = "wal";
const QUARANTINE_DIR: &str = "quarantine";

/// What happened while opening.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Bytes of a torn last frame that were cut off.
    pub torn_bytes_cut: u64,
    /// Frames whose CRC was checked.
    pub frames_checked: u64,
    /// Whether the index was rebuilt from the log (missing, damaged, stale).
    pub index_rebuilt: bool,
    /// Frames replayed into the index after its last durable commit.
    pub frames_replayed: u64,
    /// When repair cut the log: the first LSN lost and where it went.
    pub repaired: Option<(u64, PathBuf)>,
}

/// An open store. Share it between threads with `Arc`; every method takes
/// `&self`. Commits from many threads are grouped into shared fsyncs.
pub struct Store {
    pub(crate) inner: Arc<Inner>,
    tx: Option<SyncSender<Request>>,
    writer: Option<JoinHandle<()>>,
    report: OpenReport,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

impl Store {
    /// Opens the store in `dir` with default options, creating it if needed.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, Options::default())
    }

    /// Opens the store in `dir`, creating it if needed.
    ///
    /// Takes the directory's lock (a second opener gets [`Error::Locked`]),
    /// recovers the log (cutting a torn tail, refusing mid-log corruption
    /// unless `repair` is set), brings the index up to the log (replaying
    /// its tail, or rebuilding it when it is missing, damaged or made by
    /// another format or extractor), and starts the writer.
    pub fn open_with(dir: impl AsRef<Path>, opts: Options) -> Result<Self> {
        let dir = dir.as_ref().to_owned();
        if opts.resource_bytes_max == 0 || opts.resource_bytes_max > RESOURCE_BYTES_MAX {
            return Err(Error::Invalid {
                what: "resource_bytes_max",
                value: opts.resource_bytes_max.to_string(),
                reason: format!("must be 1..={RESOURCE_BYTES_MAX}"),
            });
        }
        if !(1..=KEY_BUFFER_ENTRIES_MAX).contains(&opts.key_buffer_entries) {
            return Err(Error::Invalid {
                what: "key_buffer_entries",
                value: opts.key_buffer_entries.to_string(),
                reason: format!("must be 1..={KEY_BUFFER_ENTRIES_MAX}"),
            });
        }
        if !(1..=19).contains(&opts.zstd_level) {
            return Err(Error::Invalid {
                what: "zstd_level",
                value: opts.zstd_level.to_string(),
                reason: "must be 1..=19".into(),
            });
        }
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_TARGET).contains(&opts.segment_bytes) {
            return Err(Error::Invalid {
                what: "segment_bytes",
                value: opts.segment_bytes.to_string(),
                reason: format!("must be {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_TARGET}"),
            });
        }
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create store directory", &dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io("open lock file", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked { path: lock_path });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io("lock store", &lock_path, e));
            }
        }
        // The keys first: a KEK that cannot unwrap stops the open before
        // recovery changes anything.
        let data_keys = match &opts.kek {
            Some(kek) => Some(Arc::new(DataKeys::open(&dir, kek.clone())?)),
            None if DataKeys::present(&dir) => return Err(Error::KeyNeeded { dir }),
            None => None,
        };
        let log_dir = dir.join(LOG_DIR);
        let fresh_dir = !log_dir.exists();
        std::fs::create_dir_all(&log_dir)
            .map_err(|e| Error::io("create log directory", &log_dir, e))?;
        if fresh_dir {
            crate::log::files::sync_dir(&dir)?;
        }
        let quarantine = dir.join(QUARANTINE_DIR);
        let rec = recover(
            &log_dir,
            &RecoverOptions {
                verify_all: opts.verify_on_open,
                repair: opts.repair,
                unsynced_tail: opts.replica,
                quarantine_dir: &quarantine,
            },
        )?;
        let segments = Arc::new(Segments::new(&log_dir));
        for s in &rec.segments {
            segments.add(*s)?;
        }
        let dicts = Arc::new(Dictionaries::new(opts.zstd_level, data_keys));
        let mut report = OpenReport {
            torn_bytes_cut: rec.torn_bytes_cut,
            frames_checked: rec.frames_checked,
            repaired: rec.repaired.clone(),
            ..OpenReport::default()
        };
        let index_path = dir.join(INDEX_FILE);
        let end_lsn = rec.next_lsn - 1;
        let index = open_index(&index_path, &segments, &opts, &dicts, end_lsn, &mut report)?;
        let epoch = rec.last_frame.map_or(0, |f| f.epoch);
        let opts_replica = opts.replica;
        let inner = Arc::new(Inner {
            dir,
            opts,
            log: LogState {
                segments: segments.clone(),
                dicts,
                tail: crate::log::tail::Tail::default(),
                epoch: AtomicU64::new(epoch),
                ends: crate::log::ends::LogEnds::new(crate::log::ends::LogEnd {
                    lsn: end_lsn,
                    epoch: rec.last_frame.map_or(0, |f| f.epoch),
                    crc: rec.last_frame.map_or(0, |f| f.crc),
                    timestamp_us: rec.last_frame.map_or(0, |f| f.timestamp_us),
                }),
            },
            index: IndexState::new(index, end_lsn),
            failure: Mutex::new(None),
            read_only: AtomicBool::new(opts_replica),
            lsn_moved: (Mutex::new(()), Condvar::new()),
            _lock: lock,
        });
        let appender = match rec.segments.last() {
            Some(last) => Appender::resume(
                segments,
                inner.opts.segment_bytes,
                *last,
                rec.tail_len,
                rec.last_crc,
            )?,
            None => Appender::create(segments, inner.opts.segment_bytes, 1, 0)?,
        };
        let (tx, rx) = sync_channel(COMMIT_QUEUE_MAX);
        let state = WriterState::new(
            inner.clone(),
            appender,
            rec.next_lsn,
            epoch,
            rec.last_frame.map_or(0, |f| f.timestamp_us),
        )
        .map_err(|e| Error::io("start index applier thread", &inner.dir, e))?;
        let writer = std::thread::Builder::new()
            .name("vigil-wal-writer".into())
            .spawn(move || state.run(rx))
            .map_err(|e| Error::io("start writer thread", &inner.dir, e))?;
        let store = Store {
            inner,
            tx: Some(tx),
            writer: Some(writer),
            report,
        };
        if epoch == 0 && !opts_replica {
            // A new store begins epoch 1 with an EpochStart record at LSN 1.
            store.begin_epoch(1)?;
        }
        tracing::info!(
            dir = %store.inner.dir.display(),
            last_lsn = store.last_lsn(),
            epoch = store.epoch(),
            torn_bytes_cut = store.report.torn_bytes_cut,
            index_rebuilt = store.report.index_rebuilt,
            frames_replayed = store.report.frames_replayed,
            "store open"
        );
        Ok(store)
    }

    /// What opening found and did.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// The data keys of an encrypted store: each one's id, creation, and
    /// the KEK version it is wrapped under (`None`: not encrypted).
    pub fn data_keys(&self) -> Option<Vec<DataKeyStatus>> {
        self.inner.log.dicts.keys().map(|k| k.status())
    }

    /// Whether `kek` still unwraps this encrypted store's data keys (see
    /// [`DataKeys::check`]); a store that is not encrypted is
    /// [`Error::Invalid`]. Changes nothing.
    pub fn check_kek(&self, kek: &dyn crate::crypt::Kek) -> Result<()> {
        let keys = self.inner.log.dicts.keys().ok_or_else(|| Error::Invalid {
            what: "encryption",
            value: self.inner.dir.display().to_string(),
            reason: "the store is not encrypted".into(),
        })?;
        keys.check(kek)
    }

    /// Re-wraps the data keys under `kek`'s current version (or under
    /// another KEK), rewriting only the store's `data-keys` file, beside
    /// running writes. Returns how many were re-wrapped; a store that is
    /// not encrypted is [`Error::Invalid`].
    pub fn rewrap_data_keys(&self, kek: Arc<dyn crate::crypt::Kek>) -> Result<usize> {
        self.inner.check_alive()?;
        let keys = self.inner.log.dicts.keys().ok_or_else(|| Error::Invalid {
            what: "encryption",
            value: self.inner.dir.display().to_string(),
            reason: "the store is not encrypted: it has no data keys to re-wrap".into(),
        })?;
        keys.rewrap(kek)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The highest durable, visible LSN, at least that of every write
    /// acknowledged before the call (it waits for the index to show them).
    pub fn last_lsn(&self) -> u64 {
        self.inner
            .await_acked()
            .unwrap_or_else(|_| self.inner.visible_lsn())
    }

    /// Why the store stopped, if it did: a failed fsync (the fsyncgate
    /// rule), a failed index commit or search-key write. Every commit and
    /// read fails from then on; closing and reopening recovers from what
    /// the log holds.
    pub fn stopped(&self) -> Option<String> {
        let failure = self
            .inner
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if failure.is_some() {
            return failure;
        }
        // A failed search-key write stops the store when it happens, not
        // only when the next write's indexing meets it.
        let keys = self.inner.index.current().keys.failure()?;
        let why = format!("writing search keys failed: {keys}");
        self.inner.poison(why.clone());
        Some(why)
    }

    /// Free space on the store's file system now, with the reserve below
    /// which client writes are refused.
    pub fn disk_space(&self) -> Result<crate::DiskSpace> {
        crate::disk::space(&self.inner.dir, self.inner.opts.disk_reserve_bytes)
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.inner.log.epoch.load(Ordering::Acquire)
    }

    /// Waits until the visible (durable and indexed) LSN is above `after`
    /// or `timeout` passes, and returns it then: for waiting until reads
    /// show a write. Shipping what is durable uses
    /// [`Store::wait_for_log_end`] instead.
    pub fn wait_for_lsn(&self, after: u64, timeout: std::time::Duration) -> u64 {
        self.inner.wait_for_lsn(after, timeout)
    }

    /// Waits until the durable end of the log is above `after` or `timeout`
    /// passes, and returns that end: what a leader can ship, which may be
    /// ahead of what reads see ([`Store::last_lsn`]) while the index
    /// applies it.
    pub fn wait_for_log_end(
        &self,
        after: u64,
        timeout: std::time::Duration,
    ) -> crate::log::ends::LogEnd {
        let inner = &self.inner;
        inner
            .log
            .ends
            .wait_durable_above(after, timeout, || inner.check_alive().is_err())
    }

    /// Whether local commits are refused (see [`Options::replica`]).
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only.load(Ordering::Acquire)
    }

    /// Refuses (`true`) or accepts (`false`) local commits from now on;
    /// commits already queued are not affected. A replica that becomes a
    /// leader clears it before writing its `EpochStart`.
    pub fn set_read_only(&self, read_only: bool) {
        self.inner.read_only.store(read_only, Ordering::Release);
    }

    pub(crate) fn send(&self, req: Request) -> Result<()> {
        self.inner.check_alive()?;
        self.tx
            .as_ref()
            .ok_or(Error::Closed)?
            .send(req)
            .map_err(|_| self.failure_or_closed())
    }

    fn failure_or_closed(&self) -> Error {
        self.inner.check_alive().err().unwrap_or(Error::Closed)
    }

    pub(crate) fn wait<T>(&self, rx: Receiver<Result<T>>) -> Result<T> {
        rx.recv().map_err(|_| self.failure_or_closed())?
    }

    /// Commits a batch atomically and durably.
    ///
    /// Returns once the batch's frame is fsynced (every read that begins
    /// after that sees it: the index applies it behind the acknowledgement
    /// and reads wait for what was acknowledged before them), or
    /// fails without having written anything (a failed precondition fails
    /// the whole batch with [`Error::VersionConflict`]). Bodies are
    /// compressed and index keys extracted (unless given with the op,
    /// [`Op::with_keys`](crate::Op::with_keys)) on the calling thread, so many
    /// committers use many cores; the single writer only sequences and
    /// writes.
    pub fn commit(&self, batch: Batch) -> Result<Committed> {
        let (reply, rx) = sync_channel(1);
        self.submit(batch, Reply::Channel(reply))?;
        self.wait(rx)
    }

    /// Like [`Store::commit`], but returns at once and calls `done` with the
    /// result (on the writer's thread, so `done` must be quick: hand the
    /// result to a channel). For async servers, which must not park a
    /// thread per commit. `done` is called exactly once unless this
    /// returns an error, in which case it is never called.
    pub fn commit_with(
        &self,
        batch: Batch,
        done: impl FnOnce(Result<Committed>) + Send + 'static,
    ) -> Result<()> {
        self.submit(batch, Reply::Callback(Box::new(done)))
    }

    /// Validates and prepares a batch on the calling thread (compression,
    /// key extraction) and queues it for the writer.
    fn submit(&self, batch: Batch, reply: Reply<Committed>) -> Result<()> {
        self.inner.check_alive()?;
        if self.is_read_only() {
            return Err(Error::ReadOnly);
        }
        batch.validate(u64::from(self.inner.opts.resource_bytes_max))?;
        let use_dict = self.inner.opts.dictionary != DictionaryPolicy::Off;
        let mut ops = Vec::with_capacity(batch.ops.len());
        for op in batch.ops {
            let rekey = op.action == Action::Rekey;
            let put = match op.action {
                Action::Put(raw) => {
                    let raw_crc = crc32fast::hash(&raw);
                    let enc: Encoded = self.inner.log.dicts.encode(&raw, raw_crc, use_dict)?;
                    let extractor = self.inner.opts.extractor.as_ref();
                    let mut keys = match op.keys {
                        Some(given) => {
                            debug_assert!(
                                {
                                    let mut mine = Vec::new();
                                    extractor.keys(&op.resource_type, &raw, &mut mine);
                                    crate::index::tables::normalise_keys(
                                        &mut mine,
                                        &op.resource_type,
                                        &op.id,
                                    );
                                    let mut theirs = given.clone();
                                    crate::index::tables::normalise_keys(
                                        &mut theirs,
                                        &op.resource_type,
                                        &op.id,
                                    );
                                    mine == theirs
                                },
                                "keys given for {}/{} differ from the extractor's",
                                op.resource_type,
                                op.id
                            );
                            given
                        }
                        None => {
                            let mut keys = Vec::new();
                            extractor.keys(&op.resource_type, &raw, &mut keys);
                            keys
                        }
                    };
                    crate::index::tables::normalise_keys(&mut keys, &op.resource_type, &op.id);
                    Some(PreparedBody {
                        raw_crc,
                        raw,
                        enc,
                        keys,
                    })
                }
                Action::Delete | Action::Rekey => None,
            };
            ops.push(PreparedOp {
                rekey,
                resource_type: op.resource_type,
                id: op.id,
                expect: op.expect,
                put,
            });
        }
        self.send(Request::Commit { ops, reply })
    }

    fn control(&self, op: Control) -> Result<()> {
        let (reply, rx) = sync_channel(1);
        self.send(Request::Control {
            op,
            reply: Reply::Channel(reply),
        })?;
        self.wait(rx)
    }

    /// Starts a new leadership epoch: writes an `EpochStart` record, after
    /// which every frame carries `epoch`. An epoch not above the current
    /// one is refused with [`Error::EpochFenced`].
    pub fn begin_epoch(&self, epoch: u64) -> Result<()> {
        self.control(Control::BeginEpoch(epoch))
    }

    /// Writes a checkpoint record with the index's applied LSN and the
    /// given follower watermarks.
    pub fn checkpoint(&self, watermarks: Vec<Watermark>) -> Result<()> {
        if watermarks.len() > crate::limits::CHECKPOINT_WATERMARKS_MAX {
            return Err(Error::Invalid {
                what: "watermarks",
                value: watermarks.len().to_string(),
                reason: format!("at most {}", crate::limits::CHECKPOINT_WATERMARKS_MAX),
            });
        }
        for w in &watermarks {
            crate::write::batch::validate_name(
                "watermark name",
                &w.name,
                crate::limits::WATERMARK_NAME_BYTES_MAX,
            )?;
        }
        self.control(Control::Checkpoint(watermarks))
    }

    /// Rebuilds the index from the log now, then swaps it in. Commits wait
    /// while it runs; reads continue on the old index.
    pub fn reindex(&self) -> Result<()> {
        self.control(Control::Reindex)
    }

    /// A read snapshot holding every write acknowledged before the call.
    fn snapshot(&self) -> Result<Snapshot> {
        self.inner.check_alive()?;
        self.inner.await_acked()?;
        Snapshot::new(&self.inner.index.current())
    }

    fn version_of(&self, l: &Listed) -> Result<Version> {
        Ok(Version {
            resource_type: l.resource_type.clone(),
            id: l.id.clone(),
            version: l.entry.version,
            lsn: l.entry.lsn,
            last_updated_us: l.entry.timestamp_us,
            op: l.entry.op,
            body: self.inner.read_body(&l.entry)?,
        })
    }

    /// The current version of a resource.
    pub fn get(&self, resource_type: &str, id: &str) -> Result<Current> {
        let snap = self.snapshot()?;
        Ok(match snap.head(resource_type, id)? {
            None => Current::NeverExisted,
            Some(e) if !e.is_live() => Current::Deleted {
                version: e.version,
                last_updated_us: e.timestamp_us,
            },
            Some(entry) => Current::Live(self.version_of(&Listed {
                resource_type: resource_type.to_owned(),
                id: id.to_owned(),
                entry,
            })?),
        })
    }

    /// The newest version's number, time and operation, without reading its
    /// body: `(version, last_updated_us, op)`, or `None` if the resource
    /// never existed.
    pub fn head(&self, resource_type: &str, id: &str) -> Result<Option<(u64, u64, OpKind)>> {
        Ok(self
            .snapshot()?
            .head(resource_type, id)?
            .map(|e| (e.version, e.timestamp_us, e.op)))
    }

    /// One version of a resource, by number.
    pub fn get_version(&self, resource_type: &str, id: &str, version: u64) -> Result<VersionRead> {
        let snap = self.snapshot()?;
        if let Some(entry) = snap.version(resource_type, id, version)? {
            return Ok(if entry.is_live() {
                VersionRead::Live(self.version_of(&Listed {
                    resource_type: resource_type.to_owned(),
                    id: id.to_owned(),
                    entry,
                })?)
            } else {
                VersionRead::Deleted {
                    last_updated_us: entry.timestamp_us,
                }
            });
        }
        Ok(match snap.head(resource_type, id)? {
            Some(h) => VersionRead::NoSuchVersion { newest: h.version },
            None => VersionRead::NeverExisted,
        })
    }

    /// A page of history, newest first, pinned to an LSN for stable paging.
    pub fn history(&self, q: &HistoryQuery) -> Result<HistoryPage> {
        if q.count == 0 || q.count > HISTORY_PAGE_MAX {
            return Err(Error::Invalid {
                what: "history page size",
                value: q.count.to_string(),
                reason: format!("must be 1..={HISTORY_PAGE_MAX}"),
            });
        }
        let snap = self.snapshot()?;
        let snapshot_lsn = match q.cursor {
            Some(c) => c.snapshot_lsn,
            None => snap.applied_lsn()?,
        };
        let since_lsn = match q.since_us {
            None => 0,
            Some(since) => snap.lsn_at_or_after(since)?.unwrap_or(u64::MAX),
        };
        // The LSN window of this page, and whether it is read upwards.
        let (lo, hi, ascending) = match q.cursor.map(|c| c.position) {
            None => (since_lsn, snapshot_lsn, false),
            Some(PagePosition::Before(b)) => {
                (since_lsn, b.saturating_sub(1).min(snapshot_lsn), false)
            }
            Some(PagePosition::After(a)) => {
                (since_lsn.max(a.saturating_add(1)), snapshot_lsn, true)
            }
        };
        let mut listed = if lo > hi {
            Vec::new()
        } else {
            let want = q.count + 1;
            match &q.scope {
                HistoryScope::System => self.system_history(&snap, lo, hi, want, ascending)?,
                HistoryScope::Type(t) => snap.type_history(t, lo, hi, want, ascending)?,
                HistoryScope::Instance(t, id) => {
                    snap.instance_history(t, id, lo, hi, want, ascending)?
                }
            }
        };
        let more = listed.len() > q.count;
        listed.truncate(q.count);
        if ascending {
            listed.reverse();
        }
        let entries = listed
            .iter()
            .map(|l| self.version_of(l))
            .collect::<Result<Vec<_>>>()?;
        // Older versions exist past the last entry when a descending read
        // found more, or always after an upward page (it was reached from
        // an older one); newer ones before the first entry likewise.
        let (older, newer) = match q.cursor.map(|c| c.position) {
            None => (more, false),
            Some(PagePosition::Before(_)) => (more, true),
            Some(PagePosition::After(_)) => (true, more),
        };
        let at = |position| HistoryCursor {
            snapshot_lsn,
            position,
        };
        Ok(HistoryPage {
            next: entries
                .last()
                .filter(|_| older)
                .map(|v| at(PagePosition::Before(v.lsn))),
            previous: entries
                .first()
                .filter(|_| newer)
                .map(|v| at(PagePosition::After(v.lsn))),
            entries,
            snapshot_lsn,
        })
    }

    /// Records after `after_lsn`, oldest first, at most `limit`: the feed
    /// that replication, export and backup read. Only durable records are
    /// returned.
    pub fn changes(&self, after_lsn: u64, limit: usize) -> Result<Vec<Change>> {
        let snap = self.snapshot()?;
        let end = snap.applied_lsn()?;
        let mut out = Vec::new();
        if after_lsn >= end || limit == 0 {
            return Ok(out);
        }
        self.each_frame(&snap, after_lsn + 1, true, |h, seg, off, recs| {
            for (lsn, rec, _) in recs {
                if lsn <= after_lsn {
                    continue;
                }
                if lsn > end || out.len() >= limit {
                    return Ok(false);
                }
                out.push(self.change_of(lsn, h.epoch, h.timestamp_us, rec, seg, off)?);
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// Reads and checks the frame the index says starts at `first` LSN.
    fn read_frame(&self, first: u64, seg: u64, off: u64) -> Result<(FrameHeader, Vec<u8>)> {
        let head = self
            .inner
            .log
            .segments
            .read_at(seg, off, FRAME_HEADER_BYTES)?;
        let h = parse_header(&head).map_err(|e| self.frame_error(seg, off, e.to_string()))?;
        if h.first_lsn != first {
            return Err(Error::Corrupt(format!(
                "the index places the frame of lsn {first} where the log has lsn {}",
                h.first_lsn
            )));
        }
        let bytes = self
            .inner
            .log
            .segments
            .read_at(seg, off, h.frame_len() as usize)?;
        check_frame(&bytes).map_err(|e| self.frame_error(seg, off, e.to_string()))?;
        Ok((h, bytes))
    }

    /// Resource versions of all types with `lo <= lsn <= hi`, newest first
    /// (or oldest first when `ascending`), at most `limit`, read from the
    /// log frame by frame.
    fn system_history(
        &self,
        snap: &Snapshot,
        lo: u64,
        hi: u64,
        limit: usize,
        ascending: bool,
    ) -> Result<Vec<Listed>> {
        let mut out = Vec::new();
        let start = if ascending { lo } else { hi };
        self.each_frame(snap, start, ascending, |h, seg, off, recs| {
            let recs: Box<dyn Iterator<Item = _>> = if ascending {
                Box::new(recs.into_iter())
            } else {
                Box::new(recs.into_iter().rev())
            };
            for (lsn, rec, body_offset) in recs {
                let (skip, stop) = if ascending {
                    (lsn < lo, lsn > hi)
                } else {
                    (lsn > hi, lsn < lo)
                };
                if skip {
                    continue;
                }
                if stop || out.len() >= limit {
                    return Ok(false);
                }
                if let RecordRef::Resource(r) = rec {
                    out.push(Listed {
                        resource_type: r.resource_type.to_owned(),
                        id: r.id.to_owned(),
                        entry: entry_of(h, seg, off, lsn, &r, body_offset),
                    });
                }
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// Reads frames one by one from the frame holding `from` (upwards, in
    /// LSN order) or from the newest frame starting at or before `from`
    /// (downwards), calling `visit` with each frame's header, segment,
    /// offset and records until it returns `false` or the frames run out.
    fn each_frame(
        &self,
        snap: &Snapshot,
        from: u64,
        upwards: bool,
        mut visit: impl FnMut(&FrameHeader, u64, u64, Vec<(u64, RecordRef<'_>, usize)>) -> Result<bool>,
    ) -> Result<()> {
        let mut batch: Vec<(u64, u64, u64)> = if upwards {
            snap.frame_holding(from)?.into_iter().collect()
        } else {
            snap.frames_back_from(from, FRAMES_PER_LOOKUP)?
        };
        while let Some(&(edge, _, _)) = batch.last() {
            for (first, seg, off) in std::mem::take(&mut batch) {
                let (h, bytes) = self.read_frame(first, seg, off)?;
                let recs = decode_records(&h, &bytes[FRAME_HEADER_BYTES..])
                    .map_err(|e| self.frame_error(seg, off, e.to_string()))?;
                if !visit(&h, seg, off, recs)? {
                    return Ok(());
                }
            }
            batch = if upwards {
                snap.frames_after(edge, FRAMES_PER_LOOKUP)?
            } else if edge <= 1 {
                Vec::new()
            } else {
                snap.frames_back_from(edge - 1, FRAMES_PER_LOOKUP)?
            };
        }
        Ok(())
    }

    fn frame_error(&self, seg: u64, off: u64, detail: String) -> Error {
        Error::ChecksumMismatch {
            segment: self.inner.log.segments.path_of(seg),
            offset: off,
            detail,
        }
    }

    fn change_of(
        &self,
        lsn: u64,
        epoch: u64,
        ts: u64,
        rec: RecordRef<'_>,
        seg: u64,
        off: u64,
    ) -> Result<Change> {
        Ok(match rec {
            RecordRef::Resource(r) => {
                let body = if r.op == OpKind::Delete {
                    Vec::new()
                } else {
                    self.inner
                        .log
                        .dicts
                        .decode(r.codec, r.dict_id, r.sealed, r.stored, r.raw_len, r.raw_crc)
                        .map_err(|d| self.frame_error(seg, off, d))?
                };
                Change::Resource {
                    epoch,
                    version: Version {
                        resource_type: r.resource_type.to_owned(),
                        id: r.id.to_owned(),
                        version: r.version,
                        lsn,
                        last_updated_us: ts,
                        op: r.op,
                        body,
                    },
                }
            }
            RecordRef::EpochStart { epoch } => Change::EpochStart { lsn, epoch },
            RecordRef::Checkpoint {
                index_lsn,
                watermarks,
            } => Change::Checkpoint {
                lsn,
                index_lsn,
                watermarks,
            },
            RecordRef::Dictionary { id, .. } => Change::Dictionary { lsn, id },
            RecordRef::Rekey { resource_type, id } => Change::Rekey {
                lsn,
                resource_type: resource_type.to_owned(),
                id: id.to_owned(),
            },
        })
    }

    /// Live resources whose secondary keys equal `key`, as `(type, id)`.
    pub fn lookup(&self, key: &[u8], limit: usize) -> Result<Vec<(String, String)>> {
        let mut hi = key.to_vec();
        hi.push(0);
        Ok(self
            .snapshot()?
            .lookup_range(key, &hi, None, limit)?
            .into_iter()
            .filter(|(k, _, _)| k == key)
            .map(|(_, t, id)| (t, id))
            .collect())
    }

    /// Live resources with a key in `lo..hi` (bytewise), optionally of one
    /// type, in key order: `(key, type, id)`, at most `limit`. A resource
    /// with several keys in the range appears once per key.
    pub fn lookup_range(
        &self,
        lo: &[u8],
        hi: &[u8],
        resource_type: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, String, String)>> {
        self.snapshot()?.lookup_range(lo, hi, resource_type, limit)
    }

    /// The key extractor this store was opened with.
    pub fn extractor(&self) -> &Arc<dyn KeyExtractor> {
        &self.inner.opts.extractor
    }

    /// Ids of live resources of `resource_type` after `after` (all from
    /// the first with `None`), in id order, at most `limit`: a walk over a
    /// type in pages, as a rekey of every resource needs.
    pub fn live_ids(
        &self,
        resource_type: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        self.snapshot()?.live_ids(resource_type, after, limit)
    }

    /// How many live resources of `resource_type` the index holds (0 for a
    /// type never written): one row read, cheap enough for a query plan.
    pub fn live_count(&self, resource_type: &str) -> Result<u64> {
        Ok(self.snapshot()?.type_stat(resource_type)?.0)
    }

    /// Counts per type, versions, sizes.
    pub fn stats(&self) -> Result<StoreStats> {
        let snap = self.snapshot()?;
        let mut types: Vec<TypeCount> = snap
            .type_stats()?
            .into_iter()
            .map(|(resource_type, live, versions)| TypeCount {
                resource_type,
                live,
                versions,
            })
            .collect();
        types.sort_by(|a, b| a.resource_type.cmp(&b.resource_type));
        let index_path = self.inner.index_path();
        let (log_bytes, log_bytes_allocated) = self.inner.log.segments.bytes_on_disk()?;
        Ok(StoreStats {
            versions: types.iter().map(|t| t.versions).sum(),
            types,
            last_lsn: self.last_lsn(),
            epoch: self.epoch(),
            log_bytes,
            log_bytes_allocated,
            index_bytes: std::fs::metadata(&index_path)
                .map_err(|e| Error::io("stat index", &index_path, e))?
                .len()
                + crate::index::keys::files::dir_bytes(&crate::index::keys::store::keys_path(
                    &index_path,
                )),
            dictionaries: self.inner.log.dicts.count(),
        })
    }

    /// `epoch -> LSN of its EpochStart`, oldest first.
    pub fn epochs(&self) -> Result<Vec<(u64, u64)>> {
        self.snapshot()?.epochs()
    }

    /// Checks every frame's CRC and records, every body's CRC, the segment
    /// chain, and that the index equals a fresh rebuild from the log (up to
    /// the LSN the index had applied when the check began). Runs beside
    /// commits and reads.
    pub fn verify(&self) -> Result<VerifyReport> {
        let live = self.snapshot()?;
        let index_lsn = live.applied_lsn()?;
        let tmp = tempdir_in(&self.inner.dir)?;
        let fresh_path = tmp.join(INDEX_FILE);
        let dicts = Dictionaries::new(
            self.inner.opts.zstd_level,
            self.inner.log.dicts.keys().cloned(),
        );
        let stats = rebuild_into(
            &fresh_path,
            &self.inner.log.segments,
            self.inner.opts.extractor.as_ref(),
            &dicts,
            Some(index_lsn),
            true,
            self.inner.opts.key_buffer_entries,
        );
        let result = stats.and_then(|(fresh, stats)| {
            live.compare(&fresh)?;
            Ok(VerifyReport {
                segments: stats.segments,
                frames: stats.frames,
                records: stats.records,
                bodies: stats.bodies,
                bytes: stats.bytes,
                index_lsn,
            })
        });
        let _ = std::fs::remove_dir_all(&tmp);
        result
    }

    /// Stops the writer after the commits already queued, makes the index
    /// durable and releases the lock.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        let result = match self.tx.take() {
            Some(tx) => {
                let (reply, rx) = sync_channel(1);
                match tx.send(Request::Control {
                    op: Control::Shutdown,
                    reply: Reply::Channel(reply),
                }) {
                    Ok(()) => rx.recv().unwrap_or(Ok(())),
                    Err(_) => Ok(()),
                }
            }
            None => Ok(()),
        };
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        result
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!("closing the store on drop failed: {e}");
        }
    }
}

fn tempdir_in(dir: &Path) -> Result<PathBuf> {
    for n in 0..1000u32 {
        let p = dir.join(format!("verify-{}-{n}.tmp", std::process::id()));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("create verify directory", &p, e)),
        }
    }
    Err(Error::Invalid {
        what: "verify directory",
        value: dir.display().to_string(),
        reason: "no free temporary name".into(),
    })
}

/// Opens the index and brings it up to `end_lsn`, rebuilding when needed.
fn open_index(
    path: &Path,
    segments: &Segments,
    opts: &Options,
    dicts: &Dictionaries,
    end_lsn: u64,
    report: &mut OpenReport,
) -> Result<Index> {
    let extractor = opts.extractor.as_ref();
    // The definitions are told again: from this index, or by a rebuild.
    extractor.forget_definitions();
    let why_rebuild = match Index::open(path, opts.key_buffer_entries, dicts.keys().cloned()) {
        Err(e) => Some(format!("cannot open: {e}")),
        Ok(ix) => {
            let st = ix.state()?;
            let fresh = st.format == 0 && st.applied_lsn == 0;
            if fresh {
                ix.initialise(extractor.name())?;
            }
            let why = if !fresh && st.format != INDEX_FORMAT_VERSION {
                Some(format!(
                    "index format {} is not {INDEX_FORMAT_VERSION}",
                    st.format
                ))
            } else if !fresh && st.extractor != extractor.name() {
                Some(format!(
                    "made with key extractor {:?}, now {:?}",
                    st.extractor,
                    extractor.name()
                ))
            } else if st.applied_lsn > end_lsn {
                Some(format!(
                    "index at lsn {} is ahead of the log ({end_lsn})",
                    st.applied_lsn
                ))
            } else if st.applied_lsn > 0
                && !applied_frame_matches(&ix, segments, st.applied_lsn, st.applied_crc)?
            {
                Some(format!(
                    "the frame at index lsn {} is not the one indexed",
                    st.applied_lsn
                ))
            } else {
                None
            };
            match why {
                Some(w) => Some(w),
                None => {
                    for (id, sealed, bytes) in ix.dictionaries()? {
                        dicts.install_stored(id, sealed, &bytes)?;
                    }
                    tell_definitions(&ix, segments, dicts, extractor, st.applied_lsn)?;
                    // The key files must be of this format and end on a frame
                    // of this log, at or below the index; else its keys are
                    // rebuilt.
                    let keys = ix.keys.at()?;
                    if keys.lsn > st.applied_lsn
                        || (keys.lsn > 0
                            && (keys.format != INDEX_FORMAT_VERSION
                                || !applied_frame_matches(&ix, segments, keys.lsn, keys.crc)?))
                    {
                        tracing::warn!(
                            keys_lsn = keys.lsn,
                            index_lsn = st.applied_lsn,
                            "the search key files do not match the log; rebuilding the keys"
                        );
                        ix.keys.clear()?;
                    }
                    // Without keys to make, the key store stays empty.
                    let from = ReplayFrom {
                        tables: st.applied_lsn,
                        keys: match crate::index::keys::extracts(extractor) {
                            true => ix.keys.at()?.lsn,
                            false => st.applied_lsn,
                        },
                    };
                    ix.start()?;
                    // The log ends at `end_lsn`: an index already there
                    // reads no segment.
                    let stats =
                        apply_log(&ix, segments, extractor, dicts, from, Some(end_lsn), true)?;
                    report.frames_replayed = stats.frames;
                    // A missing index was created empty and replayed whole.
                    report.index_rebuilt = fresh && end_lsn > 0;
                    if report.index_rebuilt {
                        tracing::warn!(index = %path.display(), "index was missing; rebuilt from the log");
                    }
                    return Ok(ix);
                }
            }
        }
    };
    let why = why_rebuild.unwrap_or_default();
    tracing::warn!(index = %path.display(), "rebuilding the index from the log: {why}");
    report.index_rebuilt = true;
    let (ix, _) = rebuild_into(
        path,
        segments,
        extractor,
        dicts,
        None,
        false,
        opts.key_buffer_entries,
    )?;
    Ok(ix)
}

/// Tells the extractor every version of its defining type the index
/// holds (through `applied`), in LSN order, before the log is replayed.
fn tell_definitions(
    ix: &Index,
    segments: &Segments,
    dicts: &Dictionaries,
    extractor: &dyn KeyExtractor,
    applied: u64,
) -> Result<()> {
    let Some(ty) = extractor.defining_type() else {
        return Ok(());
    };
    let snap = Snapshot::tables_only(ix)?;
    for l in snap.type_history(ty, 0, applied, usize::MAX, true)? {
        let body = match l.entry.is_live() {
            true => Some(crate::index::tables::read_body(segments, dicts, &l.entry)?),
            false => None,
        };
        extractor.define(l.entry.lsn, &l.id, body.as_deref());
    }
    Ok(())
}

fn applied_frame_matches(ix: &Index, segments: &Segments, applied: u64, crc: u64) -> Result<bool> {
    let snap = Snapshot::tables_only(ix)?;
    let Some((_, seg, off)) = snap.frame_holding(applied)? else {
        return Ok(false);
    };
    let Ok(head) = segments.read_at(seg, off, FRAME_HEADER_BYTES) else {
        return Ok(false);
    };
    Ok(match parse_header(&head) {
        Ok(h) => h.end_lsn() == applied + 1 && u64::from(h.crc) == crc,
        Err(_) => false,
    })
}
